//! The team setting's scratchpad (CooperBench 0.0.29's `/workspace/shared`): one directory
//! shared by the agents of one pair and no other, for notes, plans and partial diffs. Never
//! graded and never read by the host: it is removed when the pair's agents end.
//!
//! It holds at most `SCRATCHPAD_BYTES`, and what is there is nobody's disk limit (so one
//! agent cannot end a teammate by filling it). On docker it is a named tmpfs volume of that
//! size, mounted at `SCRATCHPAD_DIR` in each agent container: the kernel refuses writes past
//! it. Locally it is a fresh directory bound read-write into each agent's sandbox at its own
//! path; the host measures it after every command and empties it once it is over the cap (or
//! cannot be measured) — which any agent could do with `rm` anyway.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cbench_docker::Engine;

use super::SandboxError;

/// Where docker agents see the scratchpad (CooperBench's path).
pub const SCRATCHPAD_DIR: &str = "/workspace/shared";
/// The most a scratchpad holds (docker: memory-backed).
pub const SCRATCHPAD_BYTES: u64 = 64 << 20;

/// One pair's scratchpad.
pub enum Scratchpad {
    /// A host directory (removed on drop).
    Local(tempfile::TempDir),
    /// A named tmpfs volume.
    Docker { engine: Arc<Engine>, volume: String },
}

impl Scratchpad {
    /// A fresh directory under `parent` (the run's scratch space, never the run directory).
    pub fn local(parent: &Path) -> Result<Scratchpad, SandboxError> {
        std::fs::create_dir_all(parent).map_err(|source| SandboxError::Io {
            what: format!("creating {}", parent.display()),
            source,
        })?;
        let dir = tempfile::Builder::new()
            .prefix("scratchpad-")
            .tempdir_in(parent)
            .map_err(|source| SandboxError::Io {
                what: "creating a scratchpad".into(),
                source,
            })?;
        Ok(Scratchpad::Local(dir))
    }

    /// A fresh tmpfs volume named `volume`, labelled as the run's.
    pub async fn docker(
        engine: &Arc<Engine>,
        volume: String,
        labels: HashMap<String, String>,
    ) -> Result<Scratchpad, SandboxError> {
        cbench_docker::volumes::create_tmpfs(engine, &volume, labels, SCRATCHPAD_BYTES).await?;
        Ok(Scratchpad::Docker {
            engine: engine.clone(),
            volume,
        })
    }

    /// The host directory of a local scratchpad.
    pub fn host_dir(&self) -> Option<PathBuf> {
        match self {
            Scratchpad::Local(dir) => Some(dir.path().to_path_buf()),
            Scratchpad::Docker { .. } => None,
        }
    }

    /// Where the agents see it.
    pub fn path_in_sandbox(&self) -> String {
        match self {
            Scratchpad::Local(dir) => dir.path().display().to_string(),
            Scratchpad::Docker { .. } => SCRATCHPAD_DIR.to_string(),
        }
    }

    /// Removes it (after every sandbox that mounted it is gone).
    pub async fn remove(&self) -> Result<(), SandboxError> {
        match self {
            Scratchpad::Local(dir) => {
                let path = dir.path().to_path_buf();
                let what = format!("removing {}", path.display());
                // Any depth, unreadable parts, links never followed.
                tokio::task::spawn_blocking(move || cbench_core::fsutil::remove_tree(&path))
                    .await
                    .map_err(|e| SandboxError::Command(format!("{what}: {e}")))?
                    .map_err(|source| SandboxError::Io { what, source })
            }
            Scratchpad::Docker { engine, volume } => {
                Ok(cbench_docker::volumes::remove(engine, volume).await?)
            }
        }
    }
}

/// Empties the local scratchpad `dir` when it holds more than `SCRATCHPAD_BYTES` (or cannot be
/// measured); whether it did. Its entries are removed, never followed; `dir` stays.
pub(crate) fn empty_if_over_cap(dir: &Path) -> bool {
    if super::disk::usage(dir, SCRATCHPAD_BYTES) <= SCRATCHPAD_BYTES {
        return false;
    }
    tracing::warn!(
        "the team scratchpad {} passed its {} MiB: emptied",
        dir.display(),
        SCRATCHPAD_BYTES >> 20
    );
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let Err(e) = cbench_core::fsutil::remove_tree(&entry.path()) {
                tracing::warn!("emptying the scratchpad: {e}");
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratchpad_over_its_cap_is_emptied_and_one_under_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.md"), "plan").unwrap();
        assert!(!empty_if_over_cap(dir.path()));
        assert!(dir.path().join("notes.md").exists());
        let big = std::fs::File::create(dir.path().join("big")).unwrap();
        // Allocated, not sparse: usage counts blocks.
        std::io::Write::write_all(
            &mut &big,
            &vec![1u8; (SCRATCHPAD_BYTES + (1 << 20)) as usize],
        )
        .unwrap();
        assert!(empty_if_over_cap(dir.path()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(dir.path().is_dir());
    }
}
