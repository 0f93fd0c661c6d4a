//! How an agent's patch is computed, without trusting anything the agent touched.
//!
//! 1. **Snapshot**: the sandbox copies its work tree into a fresh host-owned directory as
//!    plain data: regular files (bytes and the executable bit), symlinks as links (their
//!    target text, never followed), directories. Every `.git` is left out, so the agent's
//!    repository (config, hooks, index, `core.worktree`, alternates) plays no part. The local
//!    backend reads the tree through directory handles with `O_NOFOLLOW` on every component;
//!    docker streams the engine's archive of the tree (nothing runs in the container).
//!    Every path written lies beneath the snapshot root and is created with no-follow,
//!    exclusive semantics, so a crafted name or link cannot redirect a host write.
//! 2. **Diff**: git runs on the host with the host's own copy of the base as its git
//!    directory (objects borrowed as alternates, new objects and the index in a scratch
//!    directory) and the snapshot as its work tree: `read-tree <base>`, `add -A`,
//!    `diff --cached --binary <base>`, with the pinned configuration of [`super::git`].
//! 3. **Limits**: a new or changed file larger than the patch limit, too many files or too
//!    many new bytes, or a patch text over the limit reject the patch (the agent fails, with
//!    the reason); the host never holds more than the limit of patch text in memory.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use tokio::io::AsyncReadExt;

use super::base::BaseRepo;
use super::git;
use super::io;
use super::{Sandbox, SandboxError};

/// Default cap on one agent's patch text (10 MiB): far above any real feature's patch
/// (CooperBench's largest gold patch is well under 1 MiB), far below what hurts the host.
pub const DEFAULT_MAX_PATCH_BYTES: u64 = 10 << 20;
/// Most files and directories a snapshot may hold (a checked-out `node_modules` is ~100k).
const MAX_ENTRIES: u64 = 2_000_000;
/// Deepest directory nesting read.
const MAX_DEPTH: usize = 256;

/// Caps applied while a patch is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchLimits {
    /// Largest patch text, and largest new or changed file the patch records.
    pub max_patch_bytes: u64,
    /// Most bytes a snapshot copies (ignored files included: git decides what counts after);
    /// the sandbox's disk limit bounds a tree anyway.
    pub max_snapshot_bytes: u64,
}

impl Default for PatchLimits {
    fn default() -> Self {
        PatchLimits {
            max_patch_bytes: DEFAULT_MAX_PATCH_BYTES,
            max_snapshot_bytes: super::disk::DEFAULT_DISK_BYTES,
        }
    }
}

/// Why no patch could be computed.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// What the agent left cannot make a patch: its failure, recorded with this reason.
    #[error("{0}")]
    Rejected(String),
    /// cbench could not compute it (host I/O, the engine): an infrastructure error.
    #[error(transparent)]
    Infra(#[from] SandboxError),
}

impl From<cbench_docker::DockerError> for PatchError {
    fn from(e: cbench_docker::DockerError) -> Self {
        PatchError::Infra(SandboxError::Docker(e))
    }
}

/// Writes a snapshot of a work tree beneath a host-owned directory, within the limits.
pub struct SnapshotWriter {
    root: OwnedFd,
    limits: PatchLimits,
    copied_bytes: u64,
    entries: u64,
}

/// A host-side failure writing the snapshot (not the agent's doing).
fn host_io(what: String) -> impl FnOnce(rustix::io::Errno) -> PatchError {
    move |e| {
        PatchError::Infra(SandboxError::Io {
            what,
            source: e.into(),
        })
    }
}

impl SnapshotWriter {
    /// A writer into the empty directory `dest`.
    pub fn new(dest: &Path, limits: PatchLimits) -> Result<Self, PatchError> {
        let root = rustix::fs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(host_io(format!("opening {}", dest.display())))?;
        Ok(SnapshotWriter {
            root,
            limits,
            copied_bytes: 0,
            entries: 0,
        })
    }

    /// The parent directory of `rel` (opened beneath the root, no symlink anywhere) and
    /// the final name; `None` for paths that are skipped (`.git`, empty).
    fn parent_of<'a>(&self, rel: &'a Path) -> Result<Option<(OwnedFd, &'a OsStr)>, PatchError> {
        let mut names = Vec::new();
        for component in rel.components() {
            match component {
                Component::Normal(name) if name == ".git" => return Ok(None),
                Component::Normal(name) => names.push(name),
                Component::CurDir => {}
                _ => {
                    return Err(PatchError::Rejected(format!(
                        "the work tree holds an entry with an invalid path: {}",
                        rel.display()
                    )))
                }
            }
        }
        let Some((name, dirs)) = names.split_last() else {
            return Ok(None);
        };
        let parent: PathBuf = if dirs.is_empty() {
            PathBuf::from(".")
        } else {
            dirs.iter().collect()
        };
        let fd = rustix::fs::openat2(
            &self.root,
            &parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| {
            PatchError::Rejected(format!(
                "the work tree holds {} beneath something that is not a directory ({e})",
                rel.display()
            ))
        })?;
        Ok(Some((fd, name)))
    }

    fn count(&mut self, rel: &Path) -> Result<(), PatchError> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(PatchError::Rejected(format!(
                "the work tree holds more than {MAX_ENTRIES} files and directories (at {})",
                rel.display()
            )));
        }
        Ok(())
    }

    /// A directory at `rel`.
    pub fn dir(&mut self, rel: &Path) -> Result<(), PatchError> {
        let Some((parent, name)) = self.parent_of(rel)? else {
            return Ok(());
        };
        self.count(rel)?;
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(host_io(format!("creating {}", rel.display()))(e)),
        }
    }

    /// A symbolic link at `rel` pointing at `target` (recorded, never followed).
    pub fn symlink(&mut self, rel: &Path, target: &[u8]) -> Result<(), PatchError> {
        let Some((parent, name)) = self.parent_of(rel)? else {
            return Ok(());
        };
        self.count(rel)?;
        let target = <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(target);
        match rustix::fs::symlinkat(target, &parent, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(host_io(format!("creating link {}", rel.display()))(e)),
        }
    }

    /// A regular file at `rel` of `size` bytes read from `content`.
    pub fn file(
        &mut self,
        rel: &Path,
        size: u64,
        executable: bool,
        content: &mut dyn Read,
    ) -> Result<(), PatchError> {
        let Some((parent, name)) = self.parent_of(rel)? else {
            return Ok(());
        };
        self.count(rel)?;
        self.copied_bytes += size;
        if self.copied_bytes > self.limits.max_snapshot_bytes {
            return Err(PatchError::Rejected(format!(
                "the work tree holds more than {} bytes (at {})",
                self.limits.max_snapshot_bytes,
                rel.display()
            )));
        }
        let mode = if executable { 0o755 } else { 0o644 };
        let fd = match rustix::fs::openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => fd,
            // A second entry for the same path (only a hand-made archive has one).
            Err(rustix::io::Errno::EXIST) => return Ok(()),
            Err(e) => return Err(host_io(format!("creating {}", rel.display()))(e)),
        };
        let mut out = std::fs::File::from(fd);
        let mut limited = content.take(size);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(PatchError::Rejected(format!(
                        "reading {} from the work tree failed: {e}",
                        rel.display()
                    )))
                }
            };
            out.write_all(&buf[..n]).map_err(|source| {
                PatchError::Infra(SandboxError::Io {
                    what: format!("writing the snapshot of {}", rel.display()),
                    source,
                })
            })?;
        }
        Ok(())
    }

    /// The regular file `name` of the directory `dir` (a tree on the same filesystem) at
    /// `rel`, hard-linked rather than copied; false when it cannot be linked (copy it then).
    /// git only reads what it records, and the agent's processes are gone by now.
    pub fn link(
        &mut self,
        rel: &Path,
        dir: &OwnedFd,
        name: &std::ffi::CStr,
    ) -> Result<bool, PatchError> {
        let Some((parent, final_name)) = self.parent_of(rel)? else {
            return Ok(true);
        };
        match rustix::fs::linkat(dir, name, &parent, final_name, AtFlags::empty()) {
            Ok(()) => {
                self.count(rel)?;
                Ok(true)
            }
            Err(rustix::io::Errno::EXIST) => Ok(true),
            Err(_) => Ok(false),
        }
    }

    /// A hard link to an earlier entry (archives carry them): the same bytes, copied.
    pub fn hard_link(&mut self, rel: &Path, earlier: &Path) -> Result<(), PatchError> {
        if self.parent_of(earlier)?.is_none() {
            return Ok(());
        }
        let source = rustix::fs::openat2(
            &self.root,
            earlier,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| {
            PatchError::Rejected(format!(
                "{} links to {}, which is not a file of the tree ({e})",
                rel.display(),
                earlier.display()
            ))
        })?;
        let stat = rustix::fs::fstat(&source)
            .map_err(host_io(format!("reading {}", earlier.display())))?;
        let executable = stat.st_mode & 0o111 != 0;
        let mut file = std::fs::File::from(source);
        self.file(rel, stat.st_size as u64, executable, &mut file)
    }
}

/// Copies the tree under the directory `name` of the host-owned directory `parent` into
/// `writer`, never following a link (local backend; blocking).
pub fn snapshot_local(
    parent: &Path,
    name: &str,
    writer: &mut SnapshotWriter,
) -> Result<(), PatchError> {
    let parent_fd = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(host_io(format!("opening {}", parent.display())))?;
    let tree = rustix::fs::openat(
        &parent_fd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        PatchError::Rejected(format!(
            "the work tree is gone or no longer a directory ({e})"
        ))
    })?;
    walk(&tree, Path::new(""), 0, writer)
}

fn walk(
    dir: &OwnedFd,
    rel: &Path,
    depth: usize,
    writer: &mut SnapshotWriter,
) -> Result<(), PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError::Rejected(format!(
            "the work tree nests directories more than {MAX_DEPTH} deep (at {})",
            rel.display()
        )));
    }
    let unreadable = |what: &Path, e: rustix::io::Errno| {
        PatchError::Rejected(format!(
            "cannot read {} in the work tree: {e}",
            what.display()
        ))
    };
    let entries = rustix::fs::Dir::read_from(dir.as_fd()).map_err(|e| unreadable(rel, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| unreadable(rel, e))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || name == b".git" {
            continue;
        }
        names.push(entry.file_name().to_owned());
    }
    names.sort();
    for name in names {
        let path = rel.join(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
            name.to_bytes(),
        ));
        let stat = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| unreadable(&path, e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                let sub = rustix::fs::openat(
                    dir,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| unreadable(&path, e))?;
                writer.dir(&path)?;
                walk(&sub, &path, depth + 1, writer)?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, &name, Vec::new())
                    .map_err(|e| unreadable(&path, e))?;
                writer.symlink(&path, target.as_bytes())?;
            }
            FileType::RegularFile => {
                if writer.link(&path, dir, &name)? {
                    continue;
                }
                let fd = rustix::fs::openat(
                    dir,
                    &name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| unreadable(&path, e))?;
                let stat = rustix::fs::fstat(&fd).map_err(|e| unreadable(&path, e))?;
                if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                    continue;
                }
                let mut file = std::fs::File::from(fd);
                writer.file(
                    &path,
                    stat.st_size as u64,
                    stat.st_mode & 0o111 != 0,
                    &mut file,
                )?;
            }
            // Sockets, FIFOs and devices are not content git records.
            _ => {}
        }
    }
    Ok(())
}

/// Copies a tar archive of the tree (its top directory stripped) into `writer` (docker).
pub fn snapshot_tar(archive: &mut dyn Read, writer: &mut SnapshotWriter) -> Result<(), PatchError> {
    let bad = |e: std::io::Error| {
        PatchError::Infra(SandboxError::Command(format!(
            "reading the archive of the work tree: {e}"
        )))
    };
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let rel: PathBuf = path.components().skip(1).collect();
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            writer.dir(&rel)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            writer.symlink(&rel, &target)?;
        } else if kind.is_hard_link() {
            let Some(target) = entry.link_name().map_err(bad)? else {
                continue;
            };
            let earlier: PathBuf = target.components().skip(1).collect();
            writer.hard_link(&rel, &earlier)?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let size = entry.size();
            let mode = entry.header().mode().unwrap_or(0o644);
            writer.file(&rel, size, mode & 0o111 != 0, &mut entry)?;
        }
    }
    Ok(())
}

/// The agent's patch: its sandbox's tree snapshotted under `scratch_parent` and diffed
/// against `base` by the host's own git (see the module documentation).
pub async fn compute(
    sandbox: &dyn Sandbox,
    base: &BaseRepo,
    scratch_parent: &Path,
    limits: PatchLimits,
) -> Result<String, PatchError> {
    std::fs::create_dir_all(scratch_parent)
        .map_err(io(format!("creating {}", scratch_parent.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("patch-")
        .tempdir_in(scratch_parent)
        .map_err(io("creating a patch scratch dir"))?;
    let tree = scratch.path().join("tree");
    std::fs::create_dir(&tree).map_err(io(format!("creating {}", tree.display())))?;
    let writer = SnapshotWriter::new(&tree, limits)?;
    sandbox.snapshot(writer).await?;
    diff_snapshot(base, &tree, scratch.path(), limits).await
}

/// `git diff` of the snapshot `tree` against the base commit, run by the host on its own
/// git directory; over `limits`, the patch is rejected.
pub async fn diff_snapshot(
    base: &BaseRepo,
    tree: &Path,
    scratch: &Path,
    limits: PatchLimits,
) -> Result<String, PatchError> {
    let git_dir = base.path.join(".git");
    let objects = scratch.join("objects");
    std::fs::create_dir_all(&objects).map_err(io("creating a scratch object directory"))?;
    let index = scratch.join("index").display().to_string();
    let objects = objects.display().to_string();
    let alternates = git_dir.join("objects").display().to_string();
    let git_dir = git_dir.display().to_string();
    let tree_arg = tree.display().to_string();
    let env = [
        ("GIT_DIR", git_dir.as_str()),
        ("GIT_WORK_TREE", tree_arg.as_str()),
        ("GIT_INDEX_FILE", index.as_str()),
        ("GIT_OBJECT_DIRECTORY", objects.as_str()),
        ("GIT_ALTERNATE_OBJECT_DIRECTORIES", alternates.as_str()),
    ];
    git::git(tree, &["read-tree", &base.commit], &env).await?;
    // What fails here depends on the tree's content (names git refuses): the agent's doing.
    git::git(tree, &["add", "-A"], &env)
        .await
        .map_err(|e| PatchError::Rejected(format!("the work tree cannot be recorded: {e}")))?;
    check_recorded_sizes(tree, &base.commit, &env, limits).await?;
    let mut child = git::command(
        tree,
        &[
            "diff",
            "--cached",
            "--binary",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            &base.commit,
        ],
        &env,
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .map_err(io("running git diff"))?;
    let cap = limits.max_patch_bytes;
    let mut patch = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take(cap + 1)
            .read_to_end(&mut patch)
            .await
            .map_err(io("reading git diff"))?;
    }
    if patch.len() as u64 > cap {
        let _ = child.kill().await;
        return Err(PatchError::Rejected(format!(
            "the patch is over the limit of {cap} bytes"
        )));
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(io("waiting for git diff"))?;
    if !out.status.success() {
        return Err(PatchError::Infra(SandboxError::Command(format!(
            "git diff of the snapshot failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))));
    }
    Ok(String::from_utf8_lossy(&patch).into_owned())
}

/// Rejects a patch that records a new or changed file over the limit, or new or changed
/// files adding up to more than 4 × the limit (ignored files were never recorded).
async fn check_recorded_sizes(
    tree: &Path,
    base: &str,
    env: &[(&str, &str)],
    limits: PatchLimits,
) -> Result<(), PatchError> {
    let raw = git::git(
        tree,
        &[
            "diff",
            "--cached",
            "--raw",
            "-z",
            "--no-renames",
            "--no-abbrev",
            base,
        ],
        env,
    )
    .await?;
    // `:old_mode new_mode old_id new_id status\0path\0` per changed entry.
    let mut fields = raw.split('\0');
    let mut changed: Vec<(String, String)> = Vec::new();
    while let (Some(meta), Some(path)) = (fields.next(), fields.next()) {
        let parts: Vec<&str> = meta.split_whitespace().collect();
        if let (Some(new_id), Some(status)) = (parts.get(3), parts.get(4)) {
            if !status.starts_with('D') {
                changed.push((new_id.to_string(), path.to_string()));
            }
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    let mut child = git::command(tree, &["cat-file", "--batch-check=%(objectsize)"], env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(io("running git cat-file"))?;
    let ids: String = changed.iter().map(|(id, _)| format!("{id}\n")).collect();
    let stdin = child.stdin.take();
    // Written while its answers are read: cat-file answers as it reads, and with tens of
    // thousands of files its answers fill the pipe before all ids are written.
    let write = async move {
        use tokio::io::AsyncWriteExt;
        match stdin {
            Some(mut stdin) => stdin.write_all(ids.as_bytes()).await,
            None => Ok(()),
        }
    };
    let (written, out) = tokio::join!(write, child.wait_with_output());
    let out = out.map_err(io("waiting for git cat-file"))?;
    written.map_err(io("writing to git cat-file"))?;
    let sizes = String::from_utf8_lossy(&out.stdout);
    let cap = limits.max_patch_bytes;
    let mut total = 0u64;
    for ((_, path), size) in changed.iter().zip(sizes.lines()) {
        let size: u64 = size.trim().parse().unwrap_or(0);
        if size > cap {
            return Err(PatchError::Rejected(format!(
                "{path} is a new or changed file of {size} bytes, over the patch limit of {cap} bytes"
            )));
        }
        total += size;
    }
    if total > cap.saturating_mul(4) {
        return Err(PatchError::Rejected(format!(
            "the new or changed files add up to {total} bytes, over 4 × the patch limit of {cap} bytes"
        )));
    }
    Ok(())
}
