//! `cbench dataset`: list, fetch and verify the dataset.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::*;

/// `cbench dataset …`.
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// What a selection contains: repos, tasks, features, pairs.
    List(DatasetListArgs),
    /// Download the dataset from the Hugging Face hub (resumable, every file verified).
    Fetch(DatasetFetchArgs),
    /// Which items can grade agents: tests fail on the base, pass with the gold patch and
    /// with the task's combined gold patch, the same way every time. Exit status: 0 all
    /// verified, 1 an item is unverified (a dataset defect), 3 none unverified but some could
    /// not be checked (a missing base repository or toolchain).
    Verify(DatasetVerifyArgs),
}

/// Raw `cbench dataset verify` arguments.
#[derive(Debug, Args)]
pub struct DatasetVerifyArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Runs of each check, to catch flaky tests.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where to write verified.json (default <log-dir>/verify/verified.json).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Runner logs go under <log-dir>/verify/.
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// Checks run at once.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub concurrency: usize,
    /// Timeout of one runner run, seconds.
    #[arg(long, default_value_t = 900)]
    pub test_timeout: u64,
    /// Confinement of the runner runs, as for a run's graders (`none`: unconfined).
    #[arg(long, value_enum, default_value = "auto")]
    pub isolation: IsolationArg,
    #[command(flatten)]
    pub caches: CacheArgs,
}

/// Raw `cbench dataset fetch` arguments.
#[derive(Debug, Args)]
pub struct DatasetFetchArgs {
    /// Where to put the dataset.
    #[arg(long, env = "CBENCH_DATASET_DIR", default_value = "dataset")]
    pub dataset_dir: PathBuf,
    /// The hub (env HF_ENDPOINT).
    #[arg(long, env = "HF_ENDPOINT", default_value = crate::dataset::fetch::DEFAULT_BASE_URL)]
    pub base_url: String,
    /// Dataset repository on the hub.
    #[arg(long, default_value = crate::dataset::fetch::DEFAULT_REPO_ID)]
    pub repo_id: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Downloads at once.
    #[arg(long, short = 'c', default_value_t = 8)]
    pub concurrency: usize,
    /// No per-file progress lines (the final count is still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Raw `cbench dataset list` arguments.
#[derive(Debug, Args)]
pub struct DatasetListArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Add lines changed and files per feature, and files shared per pair (from the gold patches).
    #[arg(long)]
    pub stats: bool,
    /// Image name prefix (registry/user/repo-prefix).
    #[arg(long, default_value = crate::dataset::metadata::DEFAULT_IMAGE_PREFIX)]
    pub image_prefix: String,
}
