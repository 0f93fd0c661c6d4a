//! The team setting's scratchpad (CooperBench 0.0.29's `/workspace/shared`): one directory
//! shared by the agents of one pair and no other, for notes, plans and partial diffs. Never
//! graded and never read by the host: it is removed when the pair's agents end.
//!
//! Locally it is a fresh directory bound read-write into each agent's sandbox at its own
//! path, and it counts toward each agent's disk limit. On docker it is a named tmpfs volume
//! of `DOCKER_SCRATCHPAD_BYTES`, mounted at `SCRATCHPAD_DIR` in each agent container: the
//! kernel caps its size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cbench_docker::Engine;

use super::SandboxError;

/// Where docker agents see the scratchpad (CooperBench's path).
pub const SCRATCHPAD_DIR: &str = "/workspace/shared";
/// The size of a docker scratchpad (memory-backed).
pub const DOCKER_SCRATCHPAD_BYTES: u64 = 64 << 20;

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
        cbench_docker::volumes::create_tmpfs(engine, &volume, labels, DOCKER_SCRATCHPAD_BYTES)
            .await?;
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
                // remove_dir_all never follows a link an agent left there.
                tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&path))
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
