//! One live invocation per run: `cbench run`/`eval` hold an exclusive lock on
//! `<run dir>/.lock` (flock), so a second invocation on the same run is refused
//! instead of running every pair again. The kernel drops the lock when its process
//! dies, however it dies, so a stale lock is simply taken over.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The run is locked by another live invocation, or the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("run `{name}` is in use by another cbench ({owner}); wait for it to finish or stop it first")]
    Busy { name: String, owner: String },
    #[error("cannot lock run directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for the whole invocation; released when dropped or when the process dies.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run_dir` (created if missing) for run `name`.
    pub fn acquire(run_dir: &Path, name: &str) -> Result<RunLock, LockError> {
        RunLock::acquire_file(run_dir.join(".lock"), name)
    }

    /// Takes the lock of one shard of a run: shards of one run work side by side (their pairs
    /// are disjoint, and each pair has its own lock), but never two invocations of one shard.
    pub fn acquire_shard(
        run_dir: &Path,
        name: &str,
        shard: crate::shard::Shard,
    ) -> Result<RunLock, LockError> {
        RunLock::acquire_file(
            run_dir.join(format!(".lock-shard-{}-of-{}", shard.index, shard.count)),
            &format!("{name} (shard {shard})"),
        )
    }

    /// Takes the lock of one array task of a run (`cbench run-pair`): tasks of one run work side
    /// by side, never two invocations of one task.
    pub fn acquire_task(run_dir: &Path, name: &str, index: usize) -> Result<RunLock, LockError> {
        RunLock::acquire_file(
            run_dir.join(".tasklocks").join(format!("{index}.lock")),
            &format!("{name} (array task {index})"),
        )
    }

    /// Takes the lock of one pair (`key` is a file name) for as long as it runs, so a pair is
    /// never run twice at once by invocations sharing a log dir.
    pub fn acquire_pair(run_dir: &Path, name: &str, key: &str) -> Result<RunLock, LockError> {
        RunLock::acquire_file(
            run_dir.join(".pairlocks").join(format!("{key}.lock")),
            &format!("{name}, pair {key},"),
        )
    }

    fn acquire_file(path: PathBuf, name: &str) -> Result<RunLock, LockError> {
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock(2) on a file descriptor we own.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = owner.trim();
            return Err(LockError::Busy {
                name: name.to_string(),
                owner: if owner.is_empty() {
                    "owner unknown".into()
                } else {
                    owner.to_string()
                },
            });
        }
        let owner = format!(
            "pid {} on {}, since {}",
            std::process::id(),
            crate::process::hostname(),
            crate::clock::now_rfc3339()
        );
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(owner.as_bytes()).map_err(io)?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file (kept by `--force`, which clears the rest of the run directory).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub use crate::process::process_alive;
