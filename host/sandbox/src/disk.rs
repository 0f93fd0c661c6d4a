//! The disk limit of one sandbox, watched between commands. Neither backend can give every
//! sandbox a filesystem of its own size here (no privileges to mount one locally; docker's
//! `--storage-opt size` needs overlay2 on xfs with project quotas), so the host measures what
//! the sandbox holds after each command — in the background, while the agent's model thinks —
//! and refuses the next command once it is over. Locally each file is also capped at the limit
//! while it is written (`RLIMIT_FSIZE`), so one command cannot fill the host's disk alone.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use super::SandboxError;

pub use cbench_docker::DEFAULT_DISK_BYTES;

/// A measurement of the sandbox's disk use in bytes (`None`: could not be measured).
type Measure = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<u64>> + Send>> + Send + Sync>;

/// Watches one sandbox's disk use against its limit.
pub struct DiskWatch {
    limit: u64,
    measure: Measure,
    /// The host directories measured (local watches only).
    dirs: Vec<PathBuf>,
    /// The measurement started after the last command.
    pending: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Option<u64>>>>,
    /// Why commands are refused, once the limit was passed (for good).
    exceeded: std::sync::Mutex<Option<String>>,
}

impl DiskWatch {
    /// Watches with `measure`, refusing commands once it reports more than `limit` bytes.
    pub fn new(limit: u64, measure: Measure) -> DiskWatch {
        DiskWatch {
            limit,
            measure,
            dirs: Vec::new(),
            pending: tokio::sync::Mutex::new(None),
            exceeded: std::sync::Mutex::new(None),
        }
    }

    /// Local directories, measured by a walk that never follows a link.
    pub fn local(limit: u64, dirs: Vec<PathBuf>) -> DiskWatch {
        let measured = dirs.clone();
        let dirs = Arc::new(dirs);
        let mut watch = DiskWatch::new(
            limit,
            Arc::new(move || {
                let dirs = dirs.clone();
                Box::pin(async move {
                    tokio::task::spawn_blocking(move || {
                        Some(
                            dirs.iter()
                                .map(|d| usage(d, limit))
                                .fold(0u64, u64::saturating_add),
                        )
                    })
                    .await
                    .ok()
                    .flatten()
                })
            }),
        );
        watch.dirs = measured;
        watch
    }

    /// The host directories a local watch measures.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Before a command: an error once a measurement was over the limit.
    pub async fn check(&self) -> Result<(), SandboxError> {
        if let Some(why) = self.exceeded() {
            return Err(SandboxError::DiskLimit(why));
        }
        let Some(handle) = self.pending.lock().await.take() else {
            return Ok(());
        };
        match handle.await.ok().flatten() {
            Some(used) if used > self.limit => {
                let why = if used == UNMEASURABLE {
                    "the sandbox holds a directory the host cannot measure (made unreadable, or \
                     nested past the 4096-byte path limit), so its disk use cannot be held to \
                     --disk; no more commands run"
                        .to_string()
                } else {
                    format!(
                        "the sandbox holds {} MiB on disk, over its limit of {} MiB (--disk); no \
                         more commands run",
                        used >> 20,
                        self.limit >> 20
                    )
                };
                if let Ok(mut exceeded) = self.exceeded.lock() {
                    *exceeded = Some(why.clone());
                }
                Err(SandboxError::DiskLimit(why))
            }
            _ => Ok(()),
        }
    }

    fn exceeded(&self) -> Option<String> {
        self.exceeded.lock().ok().and_then(|e| e.clone())
    }

    /// After a command: measures in the background.
    pub async fn measure_later(&self) {
        let measure = (self.measure)();
        *self.pending.lock().await = Some(tokio::spawn(measure));
    }
}

/// What `usage` reports for a tree it cannot walk: over any limit, since what it cannot
/// see it cannot bound.
const UNMEASURABLE: u64 = u64::MAX;

/// Bytes allocated under `dir` (links not followed; every entry at least 4 KiB), counting
/// stops once past `stop_at`. A directory that cannot be read (made unreadable, or a path
/// past PATH_MAX) makes the tree `UNMEASURABLE`; one that vanished meanwhile counts nothing.
pub(crate) fn usage(dir: &std::path::Path, stop_at: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return UNMEASURABLE,
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            // An empty file still costs an inode and a directory entry: each entry counts at
            // least a block, so a flood of empty files reaches the limit too.
            total += (meta.blocks() * 512).max(4096);
            if total > stop_at {
                return total;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sandbox_over_its_limit_refuses_the_next_command() {
        let dir = tempfile::tempdir().unwrap();
        let watch = DiskWatch::local(1 << 20, vec![dir.path().to_path_buf()]);
        watch.measure_later().await;
        watch
            .check()
            .await
            .expect("an empty sandbox is under its limit");
        std::fs::write(dir.path().join("big"), vec![7u8; 2 << 20]).unwrap();
        watch.measure_later().await;
        let err = watch.check().await.unwrap_err().to_string();
        assert!(err.contains("over its limit of 1 MiB"), "{err}");
        // For good: removing the file does not bring the sandbox back.
        std::fs::remove_file(dir.path().join("big")).unwrap();
        watch.measure_later().await;
        assert!(watch.check().await.is_err());
    }

    #[tokio::test]
    async fn a_tree_nested_past_the_path_limit_cannot_hide_its_size() {
        let dir = tempfile::tempdir().unwrap();
        // 90 levels of 60-character names: past PATH_MAX, where a path walk cannot read.
        let status = std::process::Command::new("python3")
            .args([
                "-c",
                "import os
for _ in range(90):
 os.mkdir('d'*60); os.chdir('d'*60)
open('f','w').write('x')",
            ])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let watch = DiskWatch::local(1 << 30, vec![dir.path().to_path_buf()]);
        watch.measure_later().await;
        let err = watch.check().await.unwrap_err().to_string();
        assert!(err.contains("cannot measure"), "{err}");
        cbench_core::fsutil::remove_tree(dir.path()).unwrap();
    }
}
