//! Arguments of the commands that read a run's results: watch, verify, compare, view,
//! export, report.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Raw `cbench watch` arguments.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Run name.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Directory holding the runs (`logs/<run>/…`); events come from `<run>/events.jsonl`.
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// Follow the run's Redis channel instead (a run started with --redis, e.g. on another
    /// machine); live events only.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
}

/// Raw `cbench verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Run name.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Directory holding the runs (`logs/<run>/…`).
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
}

/// Raw `cbench compare` arguments.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Runs to compare (two or more names under --log-dir).
    #[arg(required = true, num_args = 2.., value_name = "RUN")]
    pub runs: Vec<String>,
    /// Directory holding the runs (`logs/<run>/…`).
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// Compare runs whose setting, merge policy, grading version or task inputs differ (the
    /// mismatch is printed with the result).
    #[arg(long)]
    pub allow_mismatch: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where to write the comparison page (default <log-dir>/compare/<A>__vs__<B>).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
}

/// Raw `cbench view` arguments.
#[derive(Debug, Args)]
pub struct ViewArgs {
    /// Run name.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Directory holding the runs (`logs/<run>/…`).
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// A solo run of the same pairs: adds the coordination deficit plot.
    #[arg(long, value_name = "SOLO_RUN")]
    pub baseline: Option<String>,
    /// Where to write the report (default <log-dir>/<run>/view).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Open the report in the desktop's browser once written.
    #[arg(long)]
    pub open: bool,
}

/// `cbench export --format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// Harbor's Agent Trajectory Interchange Format (ATIF v1.4), one file per agent.
    Atif,
}

/// Raw `cbench export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Run name.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Directory holding the runs (`logs/<run>/…`).
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "atif")]
    pub format: ExportFormat,
    /// Where to write (default <log-dir>/<run>/export/<format>).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
}

/// Raw `cbench analyze` arguments.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Run name.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Directory holding the runs (`logs/<run>/…`).
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// Print the run's analysis as JSON instead of the listing.
    #[arg(long)]
    pub json: bool,
    /// Also ask this model (any `-m` form) to label each coop pair with the failure modes and
    /// explain, citing message and step ids; its verdicts and cost go into analysis.json.
    #[arg(long, value_name = "MODEL")]
    pub judge: Option<String>,
    /// Judge calls in flight at once.
    #[arg(long, default_value_t = 4)]
    pub judge_concurrency: usize,
    #[command(flatten)]
    pub llm: crate::cli::LlmArgs,
}

/// Raw `cbench report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run name.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Directory holding the runs (`logs/<run>/…`).
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// A solo run of the same pairs: adds the coordination deficit with a 95% bootstrap interval.
    #[arg(long, value_name = "SOLO_RUN")]
    pub baseline: Option<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}
