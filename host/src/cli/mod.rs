//! Command-line arguments, and their validation into configurations before any work starts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backend::{BackendChoice, DockerOptions, ModalOptions};
use crate::dataset::Selection;
use crate::docker::ResourceLimits;
use crate::llm::providers::transport::RetryPolicy;
use crate::plugin::PluginHost;
use crate::runner::EvalConfig;
use crate::sandbox::cgroup::ProcessLimits;
use crate::sandbox::confine::{IsolationMode, LocalOptions};

mod dataset;
mod engine;
pub mod gold;
mod plugin;
mod results;
mod run;
pub mod scaffold;
pub use dataset::*;
pub use engine::*;
pub use plugin::*;
pub use results::*;
pub use run::*;

/// cbench: cooperative coding-agent benchmark with WebAssembly agent plugins.
#[derive(Debug, Parser)]
#[command(name = "cbench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line as clap does (printing help, version or the error and exiting),
    /// except that a mistyped command is only matched to a command it resembles: clap's fuzzy
    /// hint once offered `compare` for CooperBench's `prepare`.
    pub fn parse_or_exit<I, T>(args: I) -> Cli
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        use clap::CommandFactory;
        let e = match Cli::try_parse_from(args) {
            Ok(cli) => return cli,
            Err(e) => e,
        };
        if e.kind() == ErrorKind::InvalidSubcommand {
            if let (Some(ContextValue::String(given)), Some(ContextValue::Strings(hints))) = (
                e.get(ContextKind::InvalidSubcommand),
                e.get(ContextKind::SuggestedSubcommand),
            ) {
                let close: Vec<&String> =
                    hints.iter().filter(|hint| resembles(given, hint)).collect();
                if close.len() < hints.len() {
                    let tip = match close.as_slice() {
                        [] => "`cbench --help` lists the commands".to_string(),
                        [one] => format!("a similar subcommand exists: '{one}'"),
                        several => format!(
                            "similar subcommands exist: {}",
                            several
                                .iter()
                                .map(|h| format!("'{h}'"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    clap::Error::raw(
                        ErrorKind::InvalidSubcommand,
                        format!("unrecognized subcommand '{given}'\n\n  tip: {tip}"),
                    )
                    .format(&mut Cli::command())
                    .exit();
                }
            }
        }
        e.exit()
    }
}

/// Whether `typed` is plausibly a typo of `command`: a couple of edits (a swap counts one),
/// fewer for short words.
fn resembles(typed: &str, command: &str) -> bool {
    let shortest = typed.chars().count().min(command.chars().count());
    strsim::osa_distance(typed, command) <= (shortest / 3).clamp(1, 2)
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
    /// Download the dataset (CooperBench's `prepare`; the same as `cbench dataset fetch`).
    Prepare(DatasetFetchArgs),
    /// Model strings `-m` accepts, and the environment variables each provider reads (which
    /// are set; never their values).
    Models(ModelsArgs),
    /// A run submitted with --engine slurm|kubernetes: pairs graded, and its jobs in the queue.
    Status(RunNameArgs),
    /// Cancel the scheduler's jobs of a run submitted with --engine slurm|kubernetes.
    Cancel(RunNameArgs),
    /// One array task of a run (what `--engine slurm` submits; not for direct use).
    #[command(hide = true)]
    RunPair(RunPairArgs),
    /// Bring runs written by other tools into the cbench layout.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Validate a selection with its gold patches: own tests, and naive merges of every pair.
    Gold(GoldArgs),
    /// Metrics of a run (optionally against a solo baseline run); writes report.json.
    Report(ReportArgs),
    /// Why coordination failed in a run's coop pairs: unanswered questions, broken or
    /// unverifiable promises, partner-state integration failures, silent pairs; writes each
    /// pair's analysis.json (also done after every graded run).
    Analyze(AnalyzeArgs),
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
    /// Follow a live run from another terminal: pairs starting and finishing, messages as sent.
    Watch(WatchArgs),
    /// Plugin author tooling: scaffold a plugin, inspect a .wasm.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// The compiled-plugin cache: its size, and pruning it.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Remove what crashed or killed cbench runs left: scratch dirs, cgroups, containers, networks.
    Cleanup(CleanupArgs),
    /// Smoke-test a backend with your credentials, step by step (Modal: connect, app, image,
    /// sandbox, a command, a file, terminate).
    Doctor(DoctorArgs),
}

/// Raw `cbench doctor` arguments.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The backend to check.
    #[arg(long, value_enum)]
    pub backend: DoctorBackendArg,
    /// A task image (registry tag) to build and start a sandbox from.
    #[arg(long, default_value = "akhatua/cooperbench-pallets-click:task2068")]
    pub image: String,
    /// The Modal app to use.
    #[arg(long, default_value = "cbench")]
    pub modal_app: String,
    /// Where to check with `--backend gcp`.
    #[command(flatten)]
    pub gcp: GcpArgs,
}

/// `cbench doctor --backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DoctorBackendArg {
    /// Modal (credentials from MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or ~/.modal.toml).
    Modal,
    /// Google Cloud Batch and Storage (Application Default Credentials).
    Gcp,
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
    /// Also terminate Modal sandboxes (in `--modal-app`), found by cbench's tags.
    #[arg(long, value_enum)]
    pub backend: Option<CleanupBackendArg>,
    /// The Modal app to sweep (with `--backend modal`).
    #[arg(long, default_value = "cbench")]
    pub modal_app: String,
    /// Where to sweep with `--backend gcp`.
    #[command(flatten)]
    pub gcp: GcpArgs,
}

/// `cbench cleanup --backend`: what to sweep besides local leftovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CleanupBackendArg {
    /// Containers and networks in the Docker engine (the default).
    Docker,
    /// Sandboxes in Modal.
    Modal,
    /// Batch jobs and bucket objects in Google Cloud.
    Gcp,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Sandboxes in temp dirs on this machine (bwrap when installed).
    Local,
    /// One container per agent from the task's image; graders in containers too.
    Docker,
    /// Modal sandboxes from the tasks' registry images (credentials as Modal's own tools read
    /// them: MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or ~/.modal.toml); graders on Modal too.
    Modal,
    /// Agents on `--agent-backend` (docker or modal), every test run a Google Cloud Batch job
    /// (credentials: Application Default Credentials).
    Gcp,
}

/// Docker-backend settings (shared by `run` and `eval`).
#[derive(Debug, Args)]
pub struct DockerArgs {
    /// Image name prefix: images are `<prefix><repo>:task<id>`.
    #[arg(long, default_value = crate::dataset::metadata::DEFAULT_IMAGE_PREFIX)]
    pub image_prefix: String,
    /// CPUs per sandbox (container, or local cgroup when the cpu controller is available).
    #[arg(long, default_value_t = 2.0)]
    pub cpus: f64,
    /// Memory per sandbox (container, or local cgroup), e.g. 512m, 8g; no swap beyond it.
    #[arg(long, default_value = "8g")]
    pub memory: String,
    /// Processes per sandbox (container, or local cgroup).
    #[arg(long, default_value_t = 4096)]
    pub pids_limit: i64,
    /// Disk an agent's sandbox may fill (its tree, home and temp files locally; its writable
    /// layer on docker), e.g. 2g: watched between commands, over it no more commands run and
    /// the agent ends LimitsExceeded.
    #[arg(long, default_value = "10g")]
    pub disk: String,
    /// Network of agents' containers.
    #[arg(long, value_enum, default_value = "none")]
    pub agent_network: NetworkArg,
    /// Network of graders (real runners install packages): `bridge` (containers; the
    /// host's network on the local backend) or `none`. Default: bridge; none with
    /// `--backend gcp` (there, tests with network reach the Batch VM's metadata server).
    #[arg(long, value_enum)]
    pub grading_network: Option<NetworkArg>,
    /// Image of the `--git` server (needs `git daemon`; default: the first task's image).
    #[arg(long)]
    pub git_image: Option<String>,
    /// Agents' containers kept started ahead per task image, so a pair's agents do not wait
    /// for a container start (0: start each on demand). Not used with `--git`.
    #[arg(long, default_value_t = 2)]
    pub docker_pool: usize,
    /// The Modal app sandboxes are created in (`--backend modal`; created if missing).
    #[arg(long, default_value = "cbench")]
    pub modal_app: String,
    /// With `--backend gcp`: where the agents' sandboxes are made (graders are Batch jobs).
    #[arg(long, value_enum, default_value = "docker")]
    pub agent_backend: AgentBackendArg,
    #[command(flatten)]
    pub gcp: GcpArgs,
}

/// `--agent-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AgentBackendArg {
    Docker,
    Modal,
}

/// Google Cloud settings (`--backend gcp`, `cleanup`/`doctor --backend gcp`); credentials are
/// Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's
/// application-default login, or the metadata server on Google Cloud).
#[derive(Debug, Args)]
pub struct GcpArgs {
    /// The project Batch jobs run in (default: GOOGLE_CLOUD_PROJECT or the credentials').
    #[arg(long)]
    pub gcp_project: Option<String>,
    /// The region Batch jobs run in.
    #[arg(long, default_value = crate::eval::gcp_bench::DEFAULT_REGION)]
    pub gcp_region: String,
    /// The bucket test inputs and outputs pass through (default: cbench-eval-<project>,
    /// created with a 7-day delete rule when missing).
    #[arg(long)]
    pub gcp_bucket: Option<String>,
    /// The service account the Batch VMs run as (default: the project's Compute Engine
    /// default account); give one with access to the bucket only.
    #[arg(long)]
    pub gcp_service_account: Option<String>,
}

impl GcpArgs {
    /// Checks the names before any request (the clients check them again).
    pub fn validate(&self) -> Result<(), CliError> {
        let plain = |v: &str| {
            (1..=63).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if let Some(project) = &self.gcp_project {
            if !plain(project) {
                return Err(CliError::Gcp(format!(
                    "--gcp-project {project:?}: give a project id (lowercase letters, digits, `-`)"
                )));
            }
        }
        if !plain(&self.gcp_region) {
            return Err(CliError::Gcp(format!(
                "--gcp-region {:?}: give a region such as us-central1",
                self.gcp_region
            )));
        }
        if let Some(account) = &self.gcp_service_account {
            let plain = account.len() <= 254
                && account.split_once('@').is_some_and(|(user, domain)| {
                    !user.is_empty() && domain.contains('.') && !domain.starts_with('.')
                })
                && account
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"@.-_".contains(&b));
            if !plain {
                return Err(CliError::Gcp(format!(
                    "--gcp-service-account {account:?}: give a service account's email address"
                )));
            }
        }
        if let Some(bucket) = &self.gcp_bucket {
            cbench_gcp::storage::check_bucket_name(bucket)
                .map_err(|e| CliError::Gcp(format!("--gcp-bucket: {e}")))?;
        }
        Ok(())
    }
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
        let disk = parse_size(&self.disk)
            .filter(|d| *d >= 1 << 20)
            .ok_or_else(|| CliError::Disk(self.disk.clone()))?;
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
                disk_bytes: disk as u64,
            },
            agent_network: self.agent_network.name(),
            grading_network: self.grading_network.unwrap_or(NetworkArg::Bridge).name(),
            git_image: self.git_image.clone(),
            pool: self.docker_pool,
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
                    cpu_millis: (limits.cpus * 1000.0).round().max(1.0) as u64,
                    disk_bytes: limits.disk_bytes,
                },
                grading_network: !matches!(docker.grading_network, Some(NetworkArg::None)),
            }))
        }
        BackendArg::Docker => Ok(BackendChoice::Docker(docker.validate()?)),
        BackendArg::Modal => modal_choice(docker),
        BackendArg::Gcp => {
            docker.gcp.validate()?;
            let agents = match docker.agent_backend {
                AgentBackendArg::Docker => BackendChoice::Docker(docker.validate()?),
                AgentBackendArg::Modal => modal_choice(docker)?,
            };
            let limits = docker.validate()?.limits;
            Ok(BackendChoice::Gcp(crate::backend::GcpOptions {
                agents: Box::new(agents),
                grading: crate::eval::gcp_bench::GcpSettings {
                    project: docker.gcp.gcp_project.clone(),
                    region: docker.gcp.gcp_region.clone(),
                    bucket: docker.gcp.gcp_bucket.clone(),
                    image_prefix: docker.image_prefix.clone(),
                    cpu_milli: (limits.cpus * 1000.0).round().clamp(1.0, u32::MAX as f64) as u32,
                    memory_mib: (limits.memory_bytes >> 20).clamp(1, u32::MAX as i64) as u32,
                    block_network: !matches!(docker.grading_network, Some(NetworkArg::Bridge)),
                    service_account: docker.gcp.gcp_service_account.clone(),
                },
            }))
        }
    }
}

/// `--backend modal`'s settings (also `--agent-backend modal`).
fn modal_choice(docker: &DockerArgs) -> Result<BackendChoice, CliError> {
    let app = docker.modal_app.clone();
    if app.is_empty()
        || app.len() > 64
        || !app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(CliError::ModalApp(app));
    }
    let docker = docker.validate()?;
    if docker.limits.memory_bytes < 128 << 20 {
        return Err(CliError::Memory(format!(
            "{} (Modal sandboxes need at least 128m)",
            docker.limits.memory_bytes
        )));
    }
    Ok(BackendChoice::Modal(ModalOptions {
        image_prefix: docker.image_prefix,
        cpus: docker.limits.cpus,
        memory_mib: (docker.limits.memory_bytes >> 20).min(u32::MAX as i64) as u32,
        block_agent_network: docker.agent_network == "none",
        block_grading_network: docker.grading_network == "none",
        app,
    }))
}

/// `--setting`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SettingArg {
    Coop,
    Solo,
    // A lead and members with a shared task list, typed requests and a scratchpad
    // (CooperBench 0.0.29's team setting); the plugin must declare the `team` capability.
    Team,
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
        if let Some(name) = &self.subset {
            // A name under <dataset>/subsets/, never a path elsewhere.
            if name.is_empty()
                || name.starts_with('.')
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(CliError::Subset(name.clone()));
            }
        }
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

/// The confinement of a run's local graders, for tools that run tests the same way
/// (`gold`, `dataset verify`): the dataset, logs and caches hidden.
pub fn grading_confinement(
    isolation: IsolationArg,
    dataset_dir: &std::path::Path,
    log_dir: &std::path::Path,
    caches: &CacheArgs,
) -> Result<crate::sandbox::confine::Confinement, crate::sandbox::SandboxError> {
    let mut confinement = crate::sandbox::confine::Confinement::resolve(LocalOptions {
        mode: match isolation {
            IsolationArg::Auto => IsolationMode::Auto,
            IsolationArg::Bwrap => IsolationMode::Bwrap,
            IsolationArg::None => IsolationMode::None,
        },
        ..LocalOptions::default()
    })?;
    confinement.isolation.hide(&crate::runner::hidden_paths(
        dataset_dir,
        log_dir,
        &caches.cache_dir(),
        caches.repo_cache.as_deref(),
    ));
    Ok(confinement)
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
    /// Confinement of the test runs: the same as a run's graders (`auto`: bwrap), so gold
    /// and grading cannot disagree; `none` runs them unconfined.
    #[arg(long, value_enum, default_value = "auto")]
    pub isolation: IsolationArg,
    #[command(flatten)]
    pub caches: CacheArgs,
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
    /// Only the run's pairs in this subset.
    #[arg(long, short = 's')]
    pub subset: Option<String>,
    /// Only the run's pairs of this repository.
    #[arg(long, short = 'r')]
    pub repo: Option<String>,
    /// Only the run's pairs of this task id.
    #[arg(long, short = 't')]
    pub task: Option<u64>,
    /// Only the run's pairs of these features, e.g. `1,2`.
    #[arg(long, short = 'f', value_delimiter = ',')]
    pub features: Option<Vec<u32>>,
    /// Re-grade every pair even when eval.json is current.
    #[arg(long)]
    pub force: bool,
    /// Pairs graded at once (`-c`/`--concurrency` as in CooperBench's `eval`).
    #[arg(long, short = 'c', visible_alias = "concurrency", default_value_t = 10)]
    pub eval_concurrency: usize,
    /// Seconds one feature's test run may take; over it the run is stopped and the feature fails.
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

/// A run by name.
#[derive(Debug, Args)]
pub struct RunNameArgs {
    /// Run name.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Directory holding the runs.
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
}

/// Raw `cbench run-pair` arguments.
#[derive(Debug, Args)]
pub struct RunPairArgs {
    /// The run's manifest.json.
    #[arg(long)]
    pub manifest: PathBuf,
    /// The task's index: the pair's position in the manifest, or in --pairs when given.
    #[arg(long)]
    pub index: usize,
    /// The manifest positions this submission's indices stand for (`0-3,7`).
    #[arg(long)]
    pub pairs: Option<String>,
}

/// Raw `cbench models` arguments.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `cbench import …`.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// A run directory written by CooperBench (0.0.14 or 0.0.29), into `<log-dir>/<name>/`
    /// in cbench's layout, so `report`, `view`, `compare` and `eval` work on it.
    Cooperbench(ImportCooperbenchArgs),
}

/// Raw `cbench import cooperbench` arguments.
#[derive(Debug, Args)]
pub struct ImportCooperbenchArgs {
    /// The CooperBench run directory (e.g. `logs/my-experiment`).
    pub dir: PathBuf,
    /// Name of the imported run (default: the run name in its config.json, else the
    /// directory's name; `<name>-coop` / `<name>-solo` when it holds both settings).
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// Directory to write the run into.
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// The dataset the run used (its tasks' tests grade a regrade).
    #[arg(long, env = "CBENCH_DATASET_DIR", default_value = "dataset")]
    pub dataset_dir: PathBuf,
    /// Replace an earlier import of the same name.
    #[arg(long)]
    pub force: bool,
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
    /// With --backends: also run this many agents at once on each backend (e.g. 10,50,100),
    /// each the plugin in its own sandbox, with a model taking --model-delay-ms per reply.
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<usize>,
    /// Commands per agent in the concurrency benchmark.
    #[arg(long, default_value_t = 5)]
    pub steps: u32,
    /// Time the concurrency benchmark's model takes per reply, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub model_delay_ms: u64,
    /// Spread each reply of the concurrency benchmark's model over --model-delay-ms ± this,
    /// milliseconds (0: every agent's reply comes at the same instant, a burst real models
    /// do not make)
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub model_jitter_ms: u64,
    /// Also measure the Redis message bus at URL (send → delivered, and a blocked `wait`
    /// woken by a send) next to the in-process bus.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Instead: run the bundled pair end to end (coop and solo, on --backends, default local)
    /// with an instant model and report wall, first request, step p50/p99, grading tail, RSS.
    #[arg(long)]
    pub pair: bool,
    /// Commands per agent in --pair.
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub pair_commands: u32,
    /// Runs per backend and setting in --pair (medians are reported).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub pair_runs: u32,
    /// How long the model takes per reply in --pair, ms (0: at once, so each command's login
    /// shell is still starting when it arrives; an agent's real model thinks far longer)
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub pair_think_ms: u64,
    /// Write a trace of the --pair runs to FILE (Chrome's trace format, as `run --trace`)
    #[arg(long, value_name = "FILE", requires = "pair")]
    pub trace: Option<PathBuf>,
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
    #[error("{0}")]
    Gcp(String),

    #[error("--git is not available with --backend modal: the team remote would need a git server reachable from Modal sandboxes, which cbench cannot yet make as private as the docker one (use --backend docker or local)")]
    GitOnModal,
    #[error("--modal-app {0:?}: give a Modal app name (letters, digits, `-`, `_`, `.`)")]
    ModalApp(String),
    #[error("--disk {0}: give a size of at least 1m, e.g. 512m or 10g")]
    Disk(String),
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
    #[error("{0} switches off a mechanism of the team setting, which this run does not use (it needs --setting team)")]
    TeamFlagOutsideTeam(&'static str),
    #[error("--team-lead picks the lead of the team setting, which this run does not use (it needs --setting team)")]
    TeamLeadOutsideTeam,
    #[error("the team setting's scratchpad is a directory shared by the team's sandboxes, which cbench cannot make with modal agents yet: add --team-no-scratchpad, or use --backend docker or local")]
    ScratchpadOnModal,
    #[error("--team-lead counts agents from 1 (agent1 is --team-lead 1)")]
    TeamLeadZero,
    #[error("--merge-policy lead grades agent1's patch alone on a conflict, but --team-lead {0} makes agent{0} the lead: use --team-lead 1 with it, or --merge-policy union")]
    LeadPolicyWithOtherLead(usize),
    #[error("--agent-config {path}: cannot read: {source}")]
    AgentConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--sbatch-arg {0}: cbench sets the array, job name, output, working directory and script itself")]
    SbatchArg(String),
    #[error("--engine-time {0}: give a Slurm time such as 30, 02:00:00 or 1-00:00:00")]
    EngineTime(String),
    #[error("{flag} does not apply to --engine {engine}")]
    EngineFlag {
        flag: &'static str,
        engine: &'static str,
    },
    #[error("--engine kubernetes needs --k8s-image (the cbench image the pods run; scripts/cbench-image.sh builds one) and --k8s-claim (the ReadWriteMany PersistentVolumeClaim holding --log-dir)")]
    KubeNeeds,
    #[error("-s {0}: a subset is a name from <dataset>/subsets/ (letters, digits, `.`, `_`, `-`), not a path")]
    Subset(String),
    #[error("-f: give at least two distinct feature ids (got {0:?})")]
    Features(Vec<u32>),
    #[error("--force with --shard would delete the other shards' results; remove the run directory first, then start every shard")]
    ForceWithShard,
    #[error("{flag} must be greater than zero")]
    Zero { flag: &'static str },
    #[error("--plugin-compute-secs must be a positive number of seconds")]
    ComputeSecs,
    #[error("{flag} must be a non-negative amount of US dollars")]
    Money { flag: &'static str },
    #[error("run name `{0}` may only contain letters, digits, `.`, `_` and `-`, and may not start with `.`")]
    Name(String),
}

impl EvalArgs {
    /// Validates the arguments into an eval configuration.
    pub fn validate(self) -> Result<EvalConfig, CliError> {
        if self.eval_concurrency == 0 {
            return Err(CliError::Zero {
                flag: "--eval-concurrency",
            });
        }
        let narrowed = SelectionArgs {
            subset: self.subset.clone(),
            repo: self.repo.clone(),
            task: self.task,
            features: self.features.clone(),
            dataset_dir: PathBuf::new(),
        };
        let only = (self.subset.is_some()
            || self.repo.is_some()
            || self.task.is_some()
            || self.features.is_some())
        .then(|| narrowed.validate())
        .transpose()?;
        Ok(EvalConfig {
            only,
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
    fn typo_hints_only_name_commands_that_resemble_the_typo() {
        assert!(resembles("evla", "eval"));
        assert!(resembles("rnu", "run"));
        assert!(resembles("comapre", "compare"));
        assert!(!resembles("prepare", "compare"));
        assert!(!resembles("serve", "verify"));
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
