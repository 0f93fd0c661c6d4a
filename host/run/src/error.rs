//! Why a run could not start or its results could not be written.

use std::path::{Path, PathBuf};

use crate::dataset::DatasetError;
use crate::fsutil::FsError;
use crate::llm::ModelError;
use crate::plugin::PluginError;

/// A run-level failure (the run could not start or its results could not be written).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("--exclude-unverified {path}: no selected pair has all its features verified there")]
    NothingVerified { path: PathBuf },
    #[error("run `{name}` not found: {path} does not exist")]
    UnknownRun { name: String, path: PathBuf },
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    /// A run submitted to a scheduler (its manifest, its tasks), whichever the scheduler.
    #[error("{0}")]
    Cluster(String),
    #[error("run `{run}`: array task {index} was submitted for {key}, but the selection now gives {found} there (the dataset or the selection changed since the manifest was written; submit again)")]
    ManifestStale {
        run: String,
        index: usize,
        key: String,
        found: String,
    },
    #[error("run `{name}`: none of its pairs matches the -s/-r/-t/-f filters given to eval")]
    NothingToEvaluate { name: String },
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Lock(#[from] crate::runlock::LockError),
    #[error(transparent)]
    Layout(#[from] crate::layout::MigrationError),
    #[error(transparent)]
    Pin(#[from] crate::pins::PinError),
    #[error(transparent)]
    TaskInputs(#[from] crate::eval::EvalError),
    #[error(transparent)]
    Redis(#[from] crate::messaging::redis::RedisSetupError),
    #[error("plugin {path} ({name} {version}, WIT {wit}) does not declare the `team` capability, so it would ignore its role and the task list: --setting team needs a plugin built against WIT 0.3.0 or later that declares `team` (the Rust mini_swe does from 0.3.0 on; an older installed copy is replaced by ./scripts/setup.sh, and `cbench plugin list` shows which file a name picks)")]
    NotATeamPlugin {
        path: String,
        name: String,
        version: String,
        wit: String,
    },
    #[error("--team-lead {lead}, but pair {pair} has {agents} agents")]
    TeamLeadOutOfRange {
        lead: usize,
        pair: String,
        agents: usize,
    },
    #[error("--team has {team} plugins but pair {pair} has {agents} agents: give one plugin per agent (select pairs of that size with -f)")]
    TeamSize {
        team: usize,
        pair: String,
        agents: usize,
    },
    #[error("run `{name}` already exists in {dir} with a different {option} ({old} → {new}); results made with both would be mixed: rerun with the same value, --force to start over, or -n for a new name")]
    OptionChanged {
        name: String,
        dir: PathBuf,
        option: &'static str,
        old: String,
        new: String,
    },
    #[error("cannot prepare run directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Wraps an I/O error on the run directory (or a file in it) as `RunError::Io`.
pub(crate) fn run_dir_io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why the scheduler could not be used: an infrastructure error, named before the run starts.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "slurm: `{tool}` could not run ({reason}); is Slurm installed on this machine and on PATH?"
    )]
    Missing { tool: String, reason: String },
    #[error("slurm: `{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("slurm: {0}")]
    Other(String),
}
