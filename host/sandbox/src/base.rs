//! The host's copy of a task repository at its base commit: made once, copied into every
//! sandbox and grader.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::git::git;
use crate::{io, SandboxError};

/// A task repository committed once at a fixed date; sandboxes and graders copy it.
#[derive(Debug, Clone)]
pub struct BaseRepo {
    /// The repository directory (has `.git`).
    pub path: PathBuf,
    /// The base commit id.
    pub commit: String,
}

impl BaseRepo {
    /// Creates a git repo in `dest` from a plain source tree with one reproducible commit.
    pub async fn from_source_tree(source: &Path, dest: &Path) -> Result<BaseRepo, SandboxError> {
        if !source.is_dir() {
            return Err(SandboxError::Command(format!(
                "task repository {} does not exist",
                source.display()
            )));
        }
        copy_tree(source, dest).await?;
        git(dest, &["init", "-q", "-b", "main"], &[]).await?;
        git(dest, &["add", "-A"], &[]).await?;
        git(dest, &["commit", "-q", "--no-gpg-sign", "-m", "base"], &[]).await?;
        let commit = git(dest, &["rev-parse", "HEAD"], &[])
            .await?
            .trim()
            .to_string();
        Ok(BaseRepo {
            path: dest.to_path_buf(),
            commit,
        })
    }

    /// Copies the repository (with its `.git`) to `dest`.
    pub async fn checkout_to(&self, dest: &Path) -> Result<(), SandboxError> {
        copy_tree(&self.path, dest).await
    }
}

/// `cp -a src/. dest`: preserves modes and symlinks, which a hand-written copy tends not to.
pub async fn copy_tree(src: &Path, dest: &Path) -> Result<(), SandboxError> {
    tokio::fs::create_dir_all(dest)
        .await
        .map_err(io(format!("creating {}", dest.display())))?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dest)
        .status()
        .await
        .map_err(io("running cp"))?;
    if !status.success() {
        return Err(SandboxError::Command(format!(
            "copying {} to {} failed",
            src.display(),
            dest.display()
        )));
    }
    Ok(())
}
