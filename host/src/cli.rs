//! Command-line arguments, and their validation into configurations before any work starts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backend::{BackendChoice, DockerOptions};
use crate::dataset::Selection;
use crate::docker::ResourceLimits;
use crate::eval::merge::MergePolicy;
use crate::llm::providers::transport::RetryPolicy;
use crate::llm::Setting;
use crate::plugin::{PluginHost, PluginLimits};
use crate::runner::{EvalConfig, LlmConfig, RunConfig};
use crate::sandbox::cgroup::ProcessLimits;
use crate::sandbox::confine::{IsolationMode, LocalOptions};

/// cbench: cooperative coding-agent benchmark with WebAssembly agent plugins.
#[derive(Debug, Parser)]
#[command(name = "cbench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run agents on the selected pairs, then grade them.
    Run(Box<RunArgs>),
    /// (Re-)grade an existing run; pairs whose eval.json matches their patches are kept.
    Eval(EvalArgs),
    /// Measure plugin load, instantiation and host round-trips.
    Bench(BenchArgs),
    /// Inspect the dataset.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Validate a selection with its gold patches: own tests, and naive merges of every pair.
    Gold(GoldArgs),
    /// Metrics of a run (optionally against a solo baseline run); writes report.json.
    Report(ReportArgs),
    /// Check a run's recorded plugin hashes against the files on disk.
    Verify(VerifyArgs),
    /// Compare runs head to head on the pairs graded in every run (paired tests, intervals).
    Compare(CompareArgs),
    /// Write a static HTML report of a run (plots, a table of pairs, trajectories side by side).
    View(ViewArgs),
    /// Export a run's trajectories for other tools (Harbor's ATIF).
    Export(ExportArgs),
    /// Task images for the docker backend.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Remove what crashed or killed cbench runs left: scratch dirs, cgroups, containers, networks.
    Cleanup(CleanupArgs),
}

/// `cbench images …`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build the selected tasks' images from their Dockerfiles.
    Build(ImagesBuildArgs),
}

/// Raw `cbench images build` arguments.
#[derive(Debug, Args)]
pub struct ImagesBuildArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Image name prefix (registry/user/repo-prefix).
    #[arg(long, default_value = crate::dataset::metadata::DEFAULT_IMAGE_PREFIX)]
    pub image_prefix: String,
    /// Base image passed as the BASE_IMAGE build argument (bundled tasks build offline
    /// from it; it needs git and python3 — scripts/docker-base.sh makes one).
    #[arg(long)]
    pub base_image: Option<String>,
    /// Rebuild images that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Raw `cbench cleanup` arguments.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Only objects of runs with this name.
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// Also objects of cbench processes that are still running.
    #[arg(long)]
    pub all: bool,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Sandboxes in temp dirs on this machine (bwrap when installed).
    Local,
    /// One container per agent from the task's image; graders in containers too.
    Docker,
    /// Modal sandboxes (not in this build).
    Modal,
    /// GCP VMs (not in this build).
    Gcp,
}

/// Docker-backend settings (shared by `run` and `eval`).
#[derive(Debug, Args)]
pub struct DockerArgs {
    /// Image name prefix: images are `<prefix><repo>:task<id>`.
    #[arg(long, default_value = crate::dataset::metadata::DEFAULT_IMAGE_PREFIX)]
    pub image_prefix: String,
    /// CPUs per container.
    #[arg(long, default_value_t = 2.0)]
    pub cpus: f64,
    /// Memory per sandbox (container, or local cgroup), e.g. 512m, 8g; no swap beyond it.
    #[arg(long, default_value = "8g")]
    pub memory: String,
    /// Processes per sandbox (container, or local cgroup).
    #[arg(long, default_value_t = 4096)]
    pub pids_limit: i64,
    /// Network of agents' containers.
    #[arg(long, value_enum, default_value = "none")]
    pub agent_network: NetworkArg,
    /// Network of graders (real runners install packages): `bridge` (containers; the
    /// host's network on the local backend) or `none`.
    #[arg(long, value_enum, default_value = "bridge")]
    pub grading_network: NetworkArg,
    /// Image of the `--git` server (needs `git daemon`; default: the first task's image).
    #[arg(long)]
    pub git_image: Option<String>,
}

/// A container network.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NetworkArg {
    None,
    Bridge,
}

impl NetworkArg {
    fn name(self) -> String {
        match self {
            NetworkArg::None => "none".into(),
            NetworkArg::Bridge => "bridge".into(),
        }
    }
}

impl DockerArgs {
    /// Validates the docker settings.
    pub fn validate(&self) -> Result<DockerOptions, CliError> {
        if !(self.cpus.is_finite() && self.cpus > 0.0) {
            return Err(CliError::Cpus(self.cpus));
        }
        let memory = parse_size(&self.memory)
            .filter(|m| *m >= 6 << 20)
            .ok_or_else(|| CliError::Memory(self.memory.clone()))?;
        if self.pids_limit <= 0 {
            return Err(CliError::Zero {
                flag: "--pids-limit",
            });
        }
        Ok(DockerOptions {
            image_prefix: self.image_prefix.clone(),
            limits: ResourceLimits {
                cpus: self.cpus,
                memory_bytes: memory,
                pids: self.pids_limit,
            },
            agent_network: self.agent_network.name(),
            grading_network: self.grading_network.name(),
            git_image: self.git_image.clone(),
        })
    }
}

/// `512m`, `8g`, `1048576` → bytes.
fn parse_size(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, shift) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 10),
        'm' => (&t[..t.len() - 1], 20),
        'g' => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: i64 = digits.parse().ok()?;
    n.checked_mul(1i64 << shift).filter(|v| *v > 0)
}

fn backend_choice(
    backend: BackendArg,
    isolation: IsolationArg,
    docker: &DockerArgs,
) -> Result<BackendChoice, CliError> {
    match backend {
        BackendArg::Local => {
            let limits = docker.validate()?.limits;
            Ok(BackendChoice::Local(LocalOptions {
                mode: match isolation {
                    IsolationArg::Auto => IsolationMode::Auto,
                    IsolationArg::Bwrap => IsolationMode::Bwrap,
                    IsolationArg::None => IsolationMode::None,
                },
                limits: ProcessLimits {
                    pids: limits.pids as u64,
                    memory_bytes: limits.memory_bytes as u64,
                },
                grading_network: matches!(docker.grading_network, NetworkArg::Bridge),
            }))
        }
        BackendArg::Docker => Ok(BackendChoice::Docker(docker.validate()?)),
        BackendArg::Modal => Err(CliError::Backend("modal".into())),
        BackendArg::Gcp => Err(CliError::Backend("gcp".into())),
    }
}

/// `--setting`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SettingArg {
    Coop,
    Solo,
}

/// Which part of the dataset (shared by `run`, `dataset list`, `gold`).
#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Subset from <dataset>/subsets/<name>.json.
    #[arg(long, short = 's')]
    pub subset: Option<String>,
    /// Repository (directory name, with or without `_task`).
    #[arg(long, short = 'r')]
    pub repo: Option<String>,
    /// Task id (0 is a task id like any other).
    #[arg(long, short = 't')]
    pub task: Option<u64>,
    /// Feature ids, e.g. `1,2` (3 or 4 ids make one group of that many agents).
    #[arg(long, short = 'f', value_delimiter = ',')]
    pub features: Option<Vec<u32>>,
    /// Dataset root (env CBENCH_DATASET_DIR).
    #[arg(long, env = "CBENCH_DATASET_DIR", default_value = "dataset")]
    pub dataset_dir: PathBuf,
}

impl SelectionArgs {
    /// Validates the filters.
    pub fn validate(&self) -> Result<Selection, CliError> {
        if let Some(f) = &self.features {
            let mut unique = f.clone();
            unique.sort_unstable();
            unique.dedup();
            if unique.len() < 2 || unique.len() != f.len() {
                return Err(CliError::Features(f.clone()));
            }
        }
        Ok(Selection {
            subset: self.subset.clone(),
            repo: self.repo.clone(),
            task: self.task,
            features: self.features.clone(),
        })
    }
}

/// `cbench dataset …`.
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// What a selection contains: repos, tasks, features, pairs.
    List(DatasetListArgs),
    /// Download the dataset from the Hugging Face hub (resumable, every file verified).
    Fetch(DatasetFetchArgs),
    /// Which items can grade agents: tests fail on the base, pass with the gold patch and
    /// with the task's combined gold patch, the same way every time.
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

/// Where compiled plugins and prepared repositories are cached, and local repository copies.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Cache for compiled plugins and prepared repositories (default ~/.cache/cbench; env CBENCH_CACHE_DIR).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Clone upstream repositories from DIR/<owner>/<name> instead of the network.
    #[arg(long, value_name = "DIR")]
    pub repo_cache: Option<PathBuf>,
}

impl CacheArgs {
    /// The cache directory, defaulted.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(PluginHost::default_cache_dir)
    }
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

/// Raw `cbench gold` arguments.
#[derive(Debug, Args)]
pub struct GoldArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// No per-pair / per-feature progress lines (the report is still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Only check merges; do not run any tests.
    #[arg(long)]
    pub no_tests: bool,
    /// A gold_conflict_report.json to compare with; differences make the exit code 1.
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    /// Where to write the report (default <log-dir>/gold/gold_conflict_report.json).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Directory holding the runs (`logs/<run>/…`).
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// Checks run at once.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub concurrency: usize,
    /// Seconds one feature's test run may take before it counts as an infrastructure error.
    #[arg(long, default_value_t = 900)]
    pub test_timeout: u64,
    #[command(flatten)]
    pub caches: CacheArgs,
}

/// `--merge-policy`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MergePolicyArg {
    /// Retry a conflicting merge with `merge=union` (CooperBench 0.0.14, the paper).
    Union,
    /// Grade the lead agent's patch alone when the merge conflicts (CooperBench 0.0.29).
    Lead,
}

impl From<MergePolicyArg> for MergePolicy {
    fn from(p: MergePolicyArg) -> MergePolicy {
        match p {
            MergePolicyArg::Union => MergePolicy::Union,
            MergePolicyArg::Lead => MergePolicy::Lead,
        }
    }
}

/// `--isolation`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IsolationArg {
    Auto,
    Bwrap,
    None,
}

/// Raw `cbench run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Agent plugin (.wasm component), optionally pinned: `path@sha256:<hex>`. Given more than
    /// once, every plugin runs the same selection as its own run (pairs interleaved), then the
    /// runs are compared.
    #[arg(
        long,
        short = 'a',
        value_name = "PLUGIN",
        required_unless_present = "team"
    )]
    pub agent: Vec<String>,
    /// A mixed team: agent k runs the k-th plugin (`a.wasm,b.wasm`; pins allowed).
    #[arg(
        long,
        value_name = "PLUGINS",
        value_delimiter = ',',
        conflicts_with = "agent"
    )]
    pub team: Vec<String>,
    /// Write, or when it exists verify, a lock of what makes runs comparable (plugin hashes,
    /// model, dataset content, grading version, merge policy, budgets).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Model: `gpt-4o`, `openai/<m>`, `anthropic/<m>`, `gemini/<m>`, `openrouter/<m>`, `ollama/<m>`, `hosted_vllm/<m>`, `replay:<run dir>`, `oracle`, `scripted:<file>`.
    #[arg(long, short = 'm')]
    pub model: String,
    /// Run name (default: <setting>-<agent>-<model>-<subset>).
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// coop: one agent per feature; solo: one agent for all features.
    #[arg(long, value_enum, default_value = "coop")]
    pub setting: SettingArg,
    /// Pairs run at once.
    #[arg(long, short = 'c', default_value_t = 30)]
    pub concurrency: usize,
    /// Pairs graded at once.
    #[arg(long, default_value_t = 10)]
    pub eval_concurrency: usize,
    /// Where runs are written.
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// Sandbox backend.
    #[arg(long, value_enum, default_value = "local")]
    pub backend: BackendArg,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// Run only pairs whose every feature `cbench dataset verify` verified (its verified.json).
    #[arg(long, value_name = "VERIFIED_JSON")]
    pub exclude_unverified: Option<PathBuf>,
    /// What grading does when the agents' patches conflict.
    #[arg(long, value_enum, default_value = "union")]
    pub merge_policy: MergePolicyArg,
    /// Local-backend confinement: bwrap when installed (auto), always bwrap, or none.
    #[arg(long, value_enum, default_value = "auto")]
    pub isolation: IsolationArg,
    /// Discard an existing run of the same name and start over.
    #[arg(long)]
    pub force: bool,
    /// Agents cannot message each other.
    #[arg(long)]
    pub no_messaging: bool,
    /// Give each coop pair a shared git remote named `team` (fetch; push your own branch).
    #[arg(long)]
    pub git: bool,
    /// Do not grade after the agents finish.
    #[arg(long)]
    pub no_auto_eval: bool,
    /// File handed to the plugin as its configuration.
    #[arg(long)]
    pub agent_config: Option<PathBuf>,
    /// LLM calls per agent.
    #[arg(long, default_value_t = 100)]
    pub max_steps: u32,
    /// Default per-command timeout, seconds.
    #[arg(long, default_value_t = 180)]
    pub command_timeout: u64,
    /// Timeout of one test run while grading, seconds.
    #[arg(long, default_value_t = 900)]
    pub test_timeout: u64,
    /// Memory cap per plugin instance (all its memories together), MiB.
    #[arg(long, default_value_t = 512)]
    pub plugin_memory_mb: usize,
    /// Time a plugin may spend computing between host calls, in total, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub plugin_compute_secs: f64,
    #[command(flatten)]
    pub caches: CacheArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// LLM provider settings and the budgets the host enforces.
#[derive(Debug, Args)]
pub struct LlmArgs {
    /// Base URL of the provider (overrides OPENAI_BASE_URL / ANTHROPIC_BASE_URL / GEMINI_BASE_URL).
    #[arg(long, value_name = "URL")]
    pub api_base: Option<String>,
    /// Requests in flight to the provider at once.
    #[arg(long, default_value_t = 16)]
    pub max_connections: usize,
    /// Price table adding to / replacing the built-in one (data/prices.json shape).
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Retries of one LLM call on 429, 5xx and timeouts.
    #[arg(long, default_value_t = 6)]
    pub llm_retries: u32,
    /// First retry's backoff, milliseconds (doubles each retry, with jitter; Retry-After wins).
    #[arg(long, default_value_t = 1000)]
    pub llm_backoff_ms: u64,
    /// Longest total backoff between retries of one call, seconds (request time not counted).
    #[arg(long, default_value_t = 300)]
    pub llm_max_wait: u64,
    /// Timeout of one LLM request, seconds.
    #[arg(long, default_value_t = 600)]
    pub llm_timeout: u64,
    /// Cost limit per agent, USD (0 = none).
    #[arg(long, default_value_t = 3.0)]
    pub max_cost: f64,
    /// Token limit per agent (input + output + cache).
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Wall-time limit per agent, seconds.
    #[arg(long)]
    pub max_agent_secs: Option<u64>,
    /// Cost cap of the whole run, USD.
    #[arg(long)]
    pub max_run_cost: Option<f64>,
    /// Output-token cap of every LLM call (default: the provider's; Anthropic 8192).
    #[arg(long)]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature of every LLM call (default: the provider's).
    #[arg(long)]
    pub temperature: Option<f64>,
}

impl LlmArgs {
    /// Validates the LLM settings.
    pub fn validate(&self) -> Result<LlmConfig, CliError> {
        if self.max_connections == 0 {
            return Err(CliError::Zero {
                flag: "--max-connections",
            });
        }
        if self.llm_timeout == 0 {
            return Err(CliError::Zero {
                flag: "--llm-timeout",
            });
        }
        for (flag, value) in [
            ("--max-cost", Some(self.max_cost)),
            ("--max-run-cost", self.max_run_cost),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(CliError::Money { flag });
            }
        }
        if self.max_output_tokens == Some(0) {
            return Err(CliError::Zero {
                flag: "--max-output-tokens",
            });
        }
        if self
            .temperature
            .is_some_and(|t| !(t.is_finite() && (0.0..=2.0).contains(&t)))
        {
            return Err(CliError::Temperature(self.temperature.unwrap_or_default()));
        }
        Ok(LlmConfig {
            sampling: crate::llm::providers::Sampling {
                max_output_tokens: self.max_output_tokens,
                temperature: self.temperature,
            },
            api_base: self.api_base.clone(),
            max_connections: self.max_connections,
            prices: self.prices.clone(),
            retry: RetryPolicy {
                max_retries: self.llm_retries,
                initial_backoff: Duration::from_millis(self.llm_backoff_ms),
                max_backoff: Duration::from_secs(60),
                max_total_wait: Duration::from_secs(self.llm_max_wait),
                request_timeout: Duration::from_secs(self.llm_timeout),
            },
            max_cost_usd: (self.max_cost > 0.0).then_some(self.max_cost),
            max_tokens: self.max_tokens,
            max_agent_wall: self.max_agent_secs.map(Duration::from_secs),
            max_run_cost_usd: self.max_run_cost,
        })
    }
}

/// Raw `cbench eval` arguments.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run name.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Directory holding the runs (`logs/<run>/…`).
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// Override the dataset directory recorded in the run's config.json.
    #[arg(long)]
    pub dataset_dir: Option<PathBuf>,
    /// Re-grade every pair even when eval.json is current.
    #[arg(long)]
    pub force: bool,
    /// Pairs graded at once.
    #[arg(long, default_value_t = 10)]
    pub eval_concurrency: usize,
    /// Seconds one feature's test run may take before it counts as an infrastructure error.
    #[arg(long, default_value_t = 900)]
    pub test_timeout: u64,
    #[command(flatten)]
    pub caches: CacheArgs,
    /// Override the run's merge policy.
    #[arg(long, value_enum)]
    pub merge_policy: Option<MergePolicyArg>,
    /// Where graders run (default: the backend the run used).
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// No progress output (the summary files are still written).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Raw `cbench bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Agent plugin to measure.
    #[arg(long, short = 'a')]
    pub agent: PathBuf,
    /// Repetitions for each measurement.
    #[arg(long, default_value_t = 200)]
    pub iterations: u32,
    /// Compiled-plugin cache (default: $CBENCH_CACHE_DIR or ~/.cache/cbench).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Also measure sandbox start, exec round-trip and per-pair grading on these backends
    /// (`local`, `docker`), with the first pair of the dataset selection's first task.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub backends: Vec<BackendArg>,
    /// Dataset for the backend measurements.
    #[arg(long, env = "CBENCH_DATASET_DIR", default_value = "dataset")]
    pub dataset_dir: PathBuf,
    #[command(flatten)]
    pub docker: DockerArgs,
}

impl BenchArgs {
    /// The backends to measure, validated.
    pub fn backend_choices(&self) -> Result<Vec<BackendChoice>, CliError> {
        self.backends
            .iter()
            .map(|b| backend_choice(*b, IsolationArg::Auto, &self.docker))
            .collect()
    }
}

/// A bad command line; names the flag.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--backend {0}: not available in this build (use `local` or `docker`)")]
    Backend(String),
    #[error("--cpus {0}: must be a positive number")]
    Cpus(f64),
    #[error("--temperature {0}: give a number from 0 to 2")]
    Temperature(f64),
    #[error("--memory {0}: give a size of at least 6m, like 512m or 8g")]
    Memory(String),
    #[error(transparent)]
    Pin(#[from] crate::pins::PinError),
    #[error("--team needs one plugin per agent (at least two); for one plugin use --agent")]
    TeamOfOne,
    #[error("--team is for coop runs (one agent per feature); --setting solo has a single agent")]
    SoloTeam,
    #[error("--agent-config {path}: cannot read: {source}")]
    AgentConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("-f: give at least two distinct feature ids (got {0:?})")]
    Features(Vec<u32>),
    #[error("{flag} must be greater than zero")]
    Zero { flag: &'static str },
    #[error("--plugin-compute-secs must be a positive number of seconds")]
    ComputeSecs,
    #[error("{flag} must be a non-negative amount of US dollars")]
    Money { flag: &'static str },
    #[error("run name `{0}` may only contain letters, digits, `.`, `_` and `-`")]
    Name(String),
}

/// `mini_swe` → `msa` (as in CooperBench's run names); other plugins keep their file stem.
fn agent_abbreviation(agent: &std::path::Path) -> String {
    let stem = agent
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "agent".into());
    match stem.as_str() {
        "mini_swe" | "mini_swe_agent" => "msa".into(),
        _ => stem,
    }
}

/// The selection part of a default run name: `full`, `lite`, `full-llama_index_task-task8394-f1_2`.
/// Narrowing filters are in it, so a run of another selection never joins an earlier one.
fn selection_label(selection: &SelectionArgs) -> String {
    let mut label = selection
        .subset
        .as_deref()
        .map(sanitize)
        .unwrap_or_else(|| "full".into());
    if let Some(repo) = &selection.repo {
        label.push('-');
        // Repository names are directory names: kept as they are when valid in a run name.
        if repo
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            label.push_str(repo);
        } else {
            label.push_str(&sanitize(repo));
        }
    }
    if let Some(task) = selection.task {
        label.push_str(&format!("-task{task}"));
    }
    if let Some(features) = &selection.features {
        let ids: Vec<String> = features.iter().map(u32::to_string).collect();
        label.push_str(&format!("-f{}", ids.join("_")));
    }
    label
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl RunArgs {
    /// Validates the arguments into one run configuration per `--agent` (one for `--team`);
    /// pinned plugins are hashed here, before anything starts.
    pub fn validate(self) -> Result<Vec<RunConfig>, CliError> {
        let backend = backend_choice(self.backend, self.isolation, &self.docker)?;
        let team = self
            .team
            .iter()
            .map(|spec| crate::pins::PluginSpec::parse("--team", spec)?.verify())
            .collect::<Result<Vec<_>, _>>()?;
        let agents = if team.is_empty() {
            self.agent
                .iter()
                .map(|spec| crate::pins::PluginSpec::parse("--agent", spec)?.verify())
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![team[0].clone()]
        };
        if team.len() == 1 {
            return Err(CliError::TeamOfOne);
        }
        if !team.is_empty() && matches!(self.setting, SettingArg::Solo) {
            return Err(CliError::SoloTeam);
        }
        let selection = self.selection.validate()?;
        for (flag, value) in [
            ("-c/--concurrency", self.concurrency as u64),
            ("--eval-concurrency", self.eval_concurrency as u64),
            ("--max-steps", self.max_steps.into()),
            ("--command-timeout", self.command_timeout),
            ("--test-timeout", self.test_timeout),
            ("--plugin-memory-mb", self.plugin_memory_mb as u64),
        ] {
            if value == 0 {
                return Err(CliError::Zero { flag });
            }
        }
        if !(self.plugin_compute_secs.is_finite() && self.plugin_compute_secs > 0.0) {
            return Err(CliError::ComputeSecs);
        }
        let agent_config = match self.agent_config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| CliError::AgentConfig {
                        path: path.clone(),
                        source,
                    })?;
                Some((path, text))
            }
            None => None,
        };
        let setting = match self.setting {
            SettingArg::Coop => Setting::Coop,
            SettingArg::Solo => Setting::Solo,
        };
        if let Some(n) = &self.name {
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                || n.starts_with('.')
            {
                return Err(CliError::Name(n.clone()));
            }
        }
        let abbreviation = |path: &std::path::Path| {
            if team.is_empty() {
                agent_abbreviation(path)
            } else {
                team.iter()
                    .map(|p| agent_abbreviation(p))
                    .collect::<Vec<_>>()
                    .join("+")
            }
        };
        let mut names: Vec<String> = agents
            .iter()
            .map(|agent| match (&self.name, agents.len()) {
                (Some(n), 1) => n.clone(),
                (Some(n), _) => format!("{n}-{}", abbreviation(agent)),
                (None, _) => format!(
                    "{setting}-{}-{}-{}",
                    abbreviation(agent),
                    sanitize(&self.model),
                    selection_label(&self.selection)
                ),
            })
            .collect();
        // Two plugins with one file stem still get runs of their own.
        for k in 1..names.len() {
            if names[..k].contains(&names[k]) {
                names[k] = format!("{}-{}", names[k], k + 1);
            }
        }
        let base = RunConfig {
            exclude_unverified: self.exclude_unverified.clone(),
            name: String::new(),
            agent: PathBuf::new(),
            team: team.clone(),
            model: self.model,
            setting,
            selection,
            concurrency: self.concurrency,
            eval_concurrency: self.eval_concurrency,
            dataset_dir: self.selection.dataset_dir,
            log_dir: self.log_dir,
            force: self.force,
            messaging: !self.no_messaging,
            git: self.git,
            auto_eval: !self.no_auto_eval,
            agent_config,
            max_steps: self.max_steps,
            command_timeout: Duration::from_secs(self.command_timeout),
            test_timeout: Duration::from_secs(self.test_timeout),
            plugin_limits: PluginLimits {
                memory_bytes: self.plugin_memory_mb << 20,
                compute: Duration::from_secs_f64(self.plugin_compute_secs),
            },
            cache_dir: self.caches.cache_dir(),
            repo_cache: self.caches.repo_cache,
            merge_policy: self.merge_policy.into(),
            backend,
            llm: self.llm.validate()?,
            quiet: self.quiet,
            lock: self.lock,
        };
        Ok(agents
            .into_iter()
            .zip(names)
            .map(|(agent, name)| RunConfig {
                name,
                agent,
                ..base.clone()
            })
            .collect())
    }
}

impl EvalArgs {
    /// Validates the arguments into an eval configuration.
    pub fn validate(self) -> Result<EvalConfig, CliError> {
        if self.eval_concurrency == 0 {
            return Err(CliError::Zero {
                flag: "--eval-concurrency",
            });
        }
        Ok(EvalConfig {
            name: self.name,
            log_dir: self.log_dir,
            dataset_dir: self.dataset_dir,
            force: self.force,
            eval_concurrency: self.eval_concurrency,
            test_timeout: Duration::from_secs(self.test_timeout),
            cache_dir: self.caches.cache_dir(),
            repo_cache: self.caches.repo_cache,
            merge_policy: self.merge_policy.map(Into::into),
            backend: self
                .backend
                .map(|b| backend_choice(b, IsolationArg::Auto, &self.docker))
                .transpose()?,
            docker: self.docker.validate()?,
            quiet: self.quiet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_follow_the_documented_pattern() {
        assert_eq!(
            agent_abbreviation(std::path::Path::new("plugins/mini_swe.wasm")),
            "msa"
        );
        assert_eq!(sanitize("openai/gpt-4o"), "openai-gpt-4o");
        let mut selection = SelectionArgs {
            subset: None,
            repo: None,
            task: None,
            features: None,
            dataset_dir: "dataset".into(),
        };
        assert_eq!(selection_label(&selection), "full");
        selection.repo = Some("llama_index_task".into());
        selection.task = Some(8394);
        selection.features = Some(vec![1, 2]);
        assert_eq!(
            selection_label(&selection),
            "full-llama_index_task-task8394-f1_2"
        );
    }

    #[test]
    fn memory_sizes_parse_like_docker_flags() {
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("8g"), Some(8 << 30));
        assert_eq!(parse_size("8GB"), Some(8 << 30));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1g"), None);
    }
}
