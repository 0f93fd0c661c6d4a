//! Atomic file writes and small filesystem helpers.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Error writing or reading a result file; names the file.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Writes `bytes` to `path` via a temporary file and rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let err = |source| FsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    // Created 0666 minus the umask, like any file the user writes (tempfile's default is 0600).
    let mut tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), FsError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| FsError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads and parses a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, FsError> {
    let bytes = std::fs::read(path).map_err(|source| FsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| FsError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod permission_tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn results_are_readable_like_any_other_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        super::write_atomic(&path, b"{}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // Whatever the umask, the group and others are not locked out by cbench itself.
        let umask = process_umask();
        assert_eq!(mode, 0o666 & !umask, "mode {mode:o}, umask {umask:o}");
    }

    /// The process umask, read from /proc (no libc call needed).
    fn process_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).unwrap()
    }
}

/// Removes a directory tree an agent may have shaped: any depth (a recursive removal in this
/// process overflows its stack on a tree thousands of levels deep), directories it made
/// unreadable, links never followed. GNU `rm` walks the tree by directory descriptors; when
/// a plain removal leaves something, owner permissions are restored and it is tried again.
/// `path` itself must be a directory the host made (it is checked not to be a link).
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let rm = |p: &Path| {
        std::process::Command::new("rm")
            .args(["-rf", "--one-file-system", "--"])
            .arg(p)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return std::fs::remove_file(path),
        Ok(_) => {}
    }
    rm(path)?;
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    // Directories made unreadable (chmod 000) stop a non-root removal: restore the owner's
    // rights (chmod -R never follows a link met inside the tree) and try once more.
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwx", "--"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    rm(path)?;
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(_) => Err(std::io::Error::other(format!(
            "{} could not be removed entirely",
            path.display()
        ))),
    }
}

/// Creates `path` (and parents) readable by its owner only: what agents leave there (a
/// setuid file, say) is out of other local users' reach.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod remove_tree_tests {
    use super::*;

    #[test]
    fn a_tree_deeper_than_any_stack_and_unreadable_parts_are_removed() {
        use std::os::unix::fs::PermissionsExt;
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("tree");
        std::fs::create_dir(&root).unwrap();
        // 20,000 levels, made relative to each level (paths past PATH_MAX).
        let status = std::process::Command::new("python3")
            .args([
                "-c",
                "import os\nfor _ in range(20000):\n os.mkdir('d'); os.chdir('d')\nopen('f','w').write('x')",
            ])
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(status.success());
        let locked = root.join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::write(locked.join("x"), "x").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let target = outer.path().join("keep");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, root.join("link")).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
