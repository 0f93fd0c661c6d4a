//! Sandboxes: where an agent's commands run and where its patch comes from.
//!
//! Owns the backends (local: bubblewrap, cgroups, confinement; docker: containers through
//! `cbench-docker`; modal: remote sandboxes through `cbench-modal`), the host's copies of base repositories, the pinned host git, the team
//! remote and patch snapshots. Treats everything a sandbox holds as data. The confinement it
//! defines also holds graders' test runs (`cbench-eval` uses it), but it decides no grade and
//! knows nothing of plugins or models.

use cbench_core::dataset;
use cbench_core::process;

pub mod base;
pub mod beneath;
pub mod cgroup;
pub mod confine;
pub mod disk;
pub mod docker;
pub mod git;
pub mod launch;
pub mod local;
pub mod local_shell;
pub mod modal;
pub mod patch;
pub mod pending;
pub mod pool;
pub mod repos;
pub mod scratchpad;
pub mod team;

use std::time::Duration;

use async_trait::async_trait;

pub use cbench_core::exec::ExecOutput;

/// A sandbox failure; names what failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox I/O failed ({what}): {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Command(String),
    #[error("invalid path `{0}`: must be relative and stay inside the repository")]
    InvalidPath(String),
    #[error(transparent)]
    Docker(#[from] cbench_docker::DockerError),
    #[error(transparent)]
    Modal(#[from] cbench_modal::ModalError),
    #[error(transparent)]
    Gcp(#[from] cbench_gcp::GcpError),
    /// Over one of the sandbox's limits (its disk, or its memory when running out took the
    /// container down): the agent's doing, it ends `LimitsExceeded`.
    #[error("{0}")]
    LimitExceeded(String),
}

/// One agent's isolated working copy of a task repository at its base commit.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// Runs `command` in a fresh bash in the repository root.
    async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SandboxError>;
    /// Reads a file relative to the repository root.
    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError>;
    /// Writes a file relative to the repository root.
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError>;
    /// Copies the work tree, without `.git`, into `writer` as data: what the patch is
    /// computed from (see [`patch`]). Nothing the agent configured runs or is followed.
    async fn snapshot(&self, writer: patch::SnapshotWriter) -> Result<(), patch::PatchError>;
    /// Ends every process the agent's commands left (the agent is done), before its patch is
    /// taken: none may change the tree afterwards. Remote sandboxes end theirs when closed.
    async fn stop_commands(&self) {}
    /// Releases what the sandbox holds (containers); dropping also releases it, later.
    async fn close(&self) -> Result<(), SandboxError> {
        Ok(())
    }
    /// The docker sandbox behind this one, for measurements comparing its exec paths.
    fn as_docker(&self) -> Option<&docker::DockerSandbox> {
        None
    }
}

/// Rejects absolute paths and `..` so file access stays inside the repository.
pub fn checked_relative_path(path: &str) -> Result<&std::path::Path, SandboxError> {
    let p = std::path::Path::new(path);
    let escapes = p.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if path.is_empty() || escapes {
        return Err(SandboxError::InvalidPath(path.to_string()));
    }
    Ok(p)
}

/// Wraps an I/O error with what was being done.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}
