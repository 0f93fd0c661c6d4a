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
            return Err(SandboxError::LimitExceeded(why));
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
                Err(SandboxError::LimitExceeded(why))
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

/// Deepest directory `usage` walks; a deeper tree is `UNMEASURABLE` (each directory is opened
/// one component at a time from the top, so depth costs its square).
const MAX_DEPTH: usize = 512;

/// Bytes allocated under `dir` (every entry at least 4 KiB; a file with several names counted
/// once), counting stops once past `stop_at`. The tree is the sandbox's, changing while it is
/// walked: every directory is opened one component at a time, relative to its parent's
/// descriptor and never through a link, so a directory swapped for a link mid-walk leads
/// nowhere outside it. A directory that cannot be opened or read that way (made unreadable,
/// swapped for a link or a file, past `MAX_DEPTH`) makes the tree `UNMEASURABLE`; one that
/// vanished meanwhile counts nothing.
pub(crate) fn usage(dir: &std::path::Path, stop_at: u64) -> u64 {
    use rustix::fs::Mode;
    let root = match rustix::fs::open(dir, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return 0,
        Err(_) => return UNMEASURABLE,
    };
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    // Directories still to read, as the names leading to them from `dir`.
    let mut pending: Vec<Vec<std::ffi::CString>> = vec![Vec::new()];
    while let Some(names) = pending.pop() {
        if names.len() > MAX_DEPTH {
            return UNMEASURABLE;
        }
        let fd = match open_beneath(&root, &names) {
            Ok(Some(fd)) => fd,
            Ok(None) => continue,
            Err(()) => return UNMEASURABLE,
        };
        let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
            return UNMEASURABLE;
        };
        for entry in entries {
            let Ok(entry) = entry else {
                return UNMEASURABLE;
            };
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let Ok(stat) = rustix::fs::statat(&fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let is_dir = rustix::fs::FileType::from_raw_mode(stat.st_mode)
                == rustix::fs::FileType::Directory;
            // Another name of a file already counted adds nothing.
            if !is_dir && stat.st_nlink > 1 && !seen.insert((stat.st_dev, stat.st_ino)) {
                continue;
            }
            // An empty file still costs an inode and a directory entry: each entry counts at
            // least a block, so a flood of empty files reaches the limit too.
            total = total.saturating_add(((stat.st_blocks as u64) * 512).max(4096));
            if total > stop_at {
                return total;
            }
            if is_dir {
                let mut deeper = names.clone();
                deeper.push(name.to_owned());
                pending.push(deeper);
            }
        }
    }
    total
}

fn dir_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the directory `names` leads to under `root`, one name at a time, never through a
/// link: `None` when it vanished, an error when something on the way is no longer a directory
/// (a link or a file put in its place) or cannot be opened.
fn open_beneath(
    root: &rustix::fd::OwnedFd,
    names: &[std::ffi::CString],
) -> Result<Option<rustix::fd::OwnedFd>, ()> {
    use rustix::fd::AsFd;
    let mut current: Option<rustix::fd::OwnedFd> = None;
    for name in names {
        let parent = match &current {
            Some(fd) => fd.as_fd(),
            None => root.as_fd(),
        };
        match rustix::fs::openat(
            parent,
            name.as_c_str(),
            dir_flags(),
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => current = Some(fd),
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(_) => return Err(()),
        }
    }
    match current {
        Some(fd) => Ok(Some(fd)),
        None => rustix::fs::openat(root, c".", dir_flags(), rustix::fs::Mode::empty())
            .map(Some)
            .map_err(|_| ()),
    }
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
        // 90 levels of 60-character names: past PATH_MAX, where a walk by path cannot read.
        let status = std::process::Command::new("python3")
            .args([
                "-c",
                "import os
for _ in range(90):
 os.mkdir('d'*60); os.chdir('d'*60)
open('f','wb').write(b'x' * (2 << 20))",
            ])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let watch = DiskWatch::local(1 << 20, vec![dir.path().to_path_buf()]);
        watch.measure_later().await;
        let err = watch.check().await.unwrap_err().to_string();
        assert!(err.contains("over its limit of 1 MiB"), "{err}");
        cbench_core::fsutil::remove_tree(dir.path()).unwrap();
    }

    #[test]
    fn a_tree_deeper_than_the_walk_goes_is_unmeasurable() {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import os\nfor _ in range({}):\n os.mkdir('d'); os.chdir('d')",
                    MAX_DEPTH + 2
                ),
            ])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(usage(dir.path(), u64::MAX - 1), UNMEASURABLE);
        cbench_core::fsutil::remove_tree(dir.path()).unwrap();
    }

    /// A file with several names takes its room once (as `du` counts it).
    #[test]
    fn hard_links_count_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![7u8; 2 << 20]).unwrap();
        for k in 0..4 {
            std::fs::hard_link(dir.path().join("f"), dir.path().join(format!("f{k}"))).unwrap();
        }
        let used = usage(dir.path(), u64::MAX - 1);
        assert!((2 << 20..3 << 20).contains(&used), "{used}");
    }

    /// The walk never reads through a link, however the tree changes under it: a directory it
    /// is about to open that became a link is an error, not the link's target.
    #[test]
    fn the_walk_never_opens_a_directory_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![7u8; 4 << 20]).unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let root = rustix::fs::open(dir.path(), dir_flags(), rustix::fs::Mode::empty()).unwrap();
        let names = [c"a".to_owned(), c"b".to_owned()];
        assert!(matches!(open_beneath(&root, &names), Ok(Some(_))));
        // As if swapped between the walk's look at `a/b` and its opening of it.
        std::fs::remove_dir(dir.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a/b")).unwrap();
        assert!(open_beneath(&root, &names).is_err());
        // And a link already there is counted as a link, its target never walked.
        assert!(usage(dir.path(), u64::MAX - 1) < 1 << 20);
    }
}
