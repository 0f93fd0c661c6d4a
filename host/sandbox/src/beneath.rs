//! File access inside an agent's tree that cannot be redirected: every path is resolved
//! beneath a directory handle (`openat2` with `RESOLVE_BENEATH`), so `..`, absolute links and
//! `/proc` magic links fail instead of reaching a host file. Writes refuse links altogether.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

/// Largest file a plugin may read at once.
const MAX_READ_BYTES: u64 = 64 << 20;

/// Opens the directory `name` of the host-owned directory `parent`, not through a link.
pub fn open_dir(parent: &Path, name: &str) -> std::io::Result<OwnedFd> {
    let parent = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(rustix::fs::openat(
        &parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Reads the regular file `rel` beneath `root` (links that stay beneath it are followed).
pub fn read(root: &OwnedFd, rel: &Path) -> std::io::Result<Vec<u8>> {
    let fd = rustix::fs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::other("not a regular file"));
    }
    if stat.st_size as u64 > MAX_READ_BYTES {
        return Err(std::io::Error::other(format!(
            "{} bytes, over the {MAX_READ_BYTES}-byte limit of one read",
            stat.st_size
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_READ_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads at most `cap` bytes of the regular file `rel` beneath `root`; true when it held more.
pub fn read_capped(root: &OwnedFd, rel: &Path, cap: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let fd = rustix::fs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(cap as u64)
        .read_to_end(&mut bytes)?;
    Ok((bytes, stat.st_size as u64 > cap as u64))
}

/// Writes `bytes` to `rel` beneath `root`, creating missing directories; no component
/// may be a link.
pub fn write(root: &OwnedFd, rel: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let strict = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let names: Vec<_> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let Some((file, dirs)) = names.split_last() else {
        return Err(std::io::Error::other("empty path"));
    };
    let mut dir = rustix::fs::openat2(
        root,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        strict,
    )?;
    for name in dirs {
        match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = rustix::fs::openat2(
            &dir,
            *name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            strict,
        )?;
    }
    let fd = rustix::fs::openat2(
        &dir,
        *file,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
        strict,
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::other("not a regular file"));
    }
    std::fs::File::from(fd).write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_out_of_the_tree_are_neither_read_nor_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "host secret").unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside", tree.join("rel")).unwrap();
        std::os::unix::fs::symlink(dir.path(), tree.join("dirlink")).unwrap();
        std::fs::write(tree.join("sub/ok"), "fine").unwrap();
        std::os::unix::fs::symlink("sub/ok", tree.join("inner")).unwrap();
        let root = open_dir(dir.path(), "tree").unwrap();

        assert!(read(&root, Path::new("abs")).is_err());
        assert!(read(&root, Path::new("rel")).is_err());
        assert!(read(&root, Path::new("dirlink/outside")).is_err());
        assert_eq!(read(&root, Path::new("inner")).unwrap(), b"fine");

        assert!(write(&root, Path::new("abs"), b"x").is_err());
        assert!(write(&root, Path::new("dirlink/new"), b"x").is_err());
        assert!(write(&root, Path::new("inner"), b"x").is_err());
        assert_eq!(std::fs::read(&outside).unwrap(), b"host secret");
        assert!(!dir.path().join("new").exists());
        write(&root, Path::new("a/b/c.txt"), b"made").unwrap();
        assert_eq!(std::fs::read(tree.join("a/b/c.txt")).unwrap(), b"made");
    }
}
