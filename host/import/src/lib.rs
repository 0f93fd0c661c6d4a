//! Runs other tools wrote, read into cbench's layout so `report`, `view`, `compare` and `eval`
//! work on them: today CooperBench's own run directories (0.0.14 and 0.0.29).
//!
//! Owns reading foreign run directories and writing their cbench equivalent. Reads nothing but
//! the directory it is given and the dataset's selection; runs no agent and grades nothing
//! (`cbench eval` regrades an imported run the cbench way).

use cbench_core::{fsutil, layout};
use cbench_eval as eval;
use cbench_llm::trajectory;
use cbench_run as run;

pub mod cooperbench;
mod trajectories;

use std::path::PathBuf;

/// Why an import failed, naming the directory or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{dir}: not a CooperBench run directory: expected {expected}")]
    NotARun { dir: PathBuf, expected: String },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("{path}: a run of that name exists already (use --force to replace it, or -n to name the import)")]
    Exists { path: PathBuf },
    #[error("{path} is a run cbench ran, not an earlier import: --force only replaces imports (import under another name with -n)")]
    NotAnImport { path: PathBuf },
    #[error("{0}")]
    InUse(String),
    #[error(
        "run name `{0}` may only contain letters, digits, `.`, `_` and `-`, and not start with `.`"
    )]
    Name(String),
    #[error(transparent)]
    Fs(#[from] fsutil::FsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImportError {
    let what = what.into();
    move |source| ImportError::Io { what, source }
}
