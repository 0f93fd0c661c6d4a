//! Orchestration: run every selected pair (coop or solo) with the plugin, write
//! the logs, grade, and summarise. Pairs already complete on disk are resumed.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::backend::{Backend, BackendChoice};
use crate::dataset::{Dataset, DatasetError, Pair, Selection};
use crate::eval::merge::MergePolicy;
use crate::eval::{EvalReport, Grader};
use crate::fsutil::{read_json, sha256_hex, write_json_atomic, FsError};
use crate::llm::budget::RunBudget;
use crate::llm::{self, Model, ModelError, Setting};
use crate::plugin::{
    AgentStatus, LoadedPlugin, PluginError, PluginHost, PluginIdentity, PluginLimits,
};
use crate::progress::Progress;
use crate::repos::{BaseRepos, UpstreamRepos};
use crate::summary::{summarize, RunSummary};
use crate::trajectory::TokenTotals;

pub use crate::evalrun::{eval_run, EvalConfig};
pub use crate::runrecord::RunRecord;
use crate::runrecord::{prepare_run_dir, run_record};

/// A validated `cbench run` configuration.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub name: String,
    pub agent: PathBuf,
    /// `--team`: one plugin per agent, agent k gets the k-th (`agent` is the first); empty when
    /// every agent runs `agent`.
    pub team: Vec<PathBuf>,
    pub model: String,
    pub setting: Setting,
    pub selection: Selection,
    pub concurrency: usize,
    pub eval_concurrency: usize,
    pub dataset_dir: PathBuf,
    pub log_dir: PathBuf,
    pub force: bool,
    pub messaging: bool,
    /// `--redis URL`: messages go through Redis instead of the in-process bus.
    pub redis: Option<String>,
    /// `--shard I/N`: run only this shard's pairs (other invocations run the rest).
    pub shard: Option<crate::shard::Shard>,
    /// How long Redis may stay unreachable before a pair is an infrastructure error.
    pub redis_outage: Duration,
    pub auto_eval: bool,
    /// The `--agent-config` file and its text.
    pub agent_config: Option<(PathBuf, String)>,
    pub max_steps: u32,
    pub command_timeout: Duration,
    pub test_timeout: Duration,
    pub plugin_limits: PluginLimits,
    /// `--max-patch-mb`: caps on what an agent's tree may turn into a patch.
    pub patch_limits: crate::sandbox::patch::PatchLimits,
    pub cache_dir: PathBuf,
    /// What to do when the naive merge conflicts.
    pub merge_policy: MergePolicy,
    /// `--repo-cache`: local copies of upstream repositories as `<owner>/<name>`.
    pub repo_cache: Option<PathBuf>,
    /// `--exclude-unverified`: a verified.json; only pairs of verified features run.
    pub exclude_unverified: Option<PathBuf>,
    /// Where agents and graders run.
    pub backend: BackendChoice,
    /// `--git`: a shared `team` remote per pair.
    pub git: bool,
    /// LLM providers and budgets.
    pub llm: LlmConfig,
    pub quiet: bool,
    /// `--lock`: written, or verified when it exists, before the run starts.
    pub lock: Option<PathBuf>,
}

/// LLM provider settings and budgets of a run.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub api_base: Option<String>,
    /// `--max-output-tokens`, `--temperature`.
    pub sampling: crate::llm::providers::Sampling,
    pub max_connections: usize,
    /// `--prices`: a user's price table over the built-in one.
    pub prices: Option<PathBuf>,
    pub retry: crate::llm::providers::transport::RetryPolicy,
    pub max_cost_usd: Option<f64>,
    pub max_tokens: Option<u64>,
    pub max_agent_wall: Option<Duration>,
    pub max_run_cost_usd: Option<f64>,
}

impl LlmConfig {
    /// Resolves `-m` with these settings (keys from the environment and ./.env).
    pub fn model(&self, spec: &str) -> Result<Arc<dyn Model>, ModelError> {
        let prices = match &self.prices {
            Some(path) => crate::llm::prices::PriceTable::with_overrides(path)?,
            None => crate::llm::prices::PriceTable::builtin(),
        };
        let options = crate::llm::providers::ProviderOptions {
            api_base: self.api_base.clone(),
            retry: self.retry,
            max_connections: self.max_connections,
            prices,
            credentials: crate::llm::providers::Credentials::load(Path::new("."))?,
            sampling: self.sampling,
        };
        llm::resolve_with(spec, &options)
    }
}

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

/// One agent's line in result.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRecord {
    pub agent_id: String,
    pub feature_ids: Vec<u32>,
    pub status: AgentStatus,
    pub error: Option<String>,
    pub summary: Option<String>,
    pub steps: u32,
    pub token_usage: TokenTotals,
    pub cost_usd: Option<f64>,
    pub wall_s: f64,
    pub plugin_compute_s: f64,
    pub patch_sha256: String,
    pub patch_bytes: usize,
    /// The plugin this agent ran (a mixed team's members differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginIdentity>,
    /// Capabilities the agent had: declared by its plugin and allowed by the run.
    #[serde(default)]
    pub capabilities_granted: Vec<crate::plugin::Capability>,
}

/// result.json: the per-pair record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairRecord {
    pub run_name: String,
    pub repo: String,
    pub task_id: u64,
    pub features: Vec<u32>,
    pub setting: Setting,
    pub model: String,
    pub plugin: PluginIdentity,
    pub agents: Vec<AgentRecord>,
    pub messages: usize,
    pub started_at: String,
    pub finished_at: String,
    pub duration_s: f64,
}

impl PairRecord {
    /// Why the infrastructure stopped an agent of this pair, if it did.
    pub fn infra_failure(&self) -> Option<String> {
        self.agents
            .iter()
            .find(|a| a.status == AgentStatus::InfraError)
            .map(|a| {
                format!(
                    "{}: {}",
                    a.agent_id,
                    a.error.as_deref().unwrap_or("infrastructure error")
                )
            })
    }
}

/// What happened to one pair in this invocation.
#[derive(Debug, Clone)]
pub struct PairResult {
    pub pair_dir: PathBuf,
    pub record: Option<PairRecord>,
    pub eval: Option<EvalReport>,
    /// A harness failure: the pair was not run or not graded.
    pub infra_error: Option<String>,
}

pub(crate) struct RunContext {
    pub(crate) cfg: RunConfig,
    pub(crate) backend: Backend,
    pub(crate) run_dir: PathBuf,
    pub(crate) work_dir: tempfile::TempDir,
    pub(crate) plugin: LoadedPlugin,
    /// The other members of a mixed team (agent2, agent3, …); empty when every agent runs `plugin`.
    pub(crate) team: Vec<LoadedPlugin>,
    pub(crate) model: Arc<dyn Model>,
    pub(crate) bases: BaseRepos,
    pub(crate) grader: Grader,
    pub(crate) progress: Progress,
    pub(crate) agent_slots: Arc<Semaphore>,
    pub(crate) eval_slots: Arc<Semaphore>,
    /// The run's name in front of every pair's lines when several runs share the terminal.
    pub(crate) label_prefix: Option<String>,
    pub(crate) started: AtomicUsize,
    pub(crate) total: usize,
    pub(crate) run_budget: Option<Arc<RunBudget>>,
    /// The Redis server messages go through (`--redis`); the in-process bus when `None`.
    pub(crate) redis: Option<crate::messaging::RedisHub>,
    /// Live events for `cbench watch`.
    pub(crate) events: Arc<crate::events::EventLog>,
    /// Held until the run's last pair is written: one live invocation per run.
    pub(crate) _lock: crate::runlock::RunLock,
}

pub(crate) fn run_dir_io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs the benchmark described by `cfg`.
pub async fn run(cfg: RunConfig) -> Result<RunSummary, RunError> {
    let prepared = prepare(cfg, None).await?;
    let mut set = tokio::task::JoinSet::new();
    for (i, pair) in prepared.pairs.iter().cloned().enumerate() {
        let ctx = prepared.ctx.clone();
        set.spawn(async move { (i, crate::pairrun::run_pair(&ctx, pair).await) });
    }
    let results = collect(set).await;
    finish(prepared, results).await
}

/// Runs several plugins on the same selection as runs of their own, with their pairs
/// interleaved (pair 1 of every run, then pair 2, …) under one concurrency limit, so a slow
/// hour of the provider or the machine hits every plugin alike. Returns each run's summary.
pub async fn run_many(cfgs: Vec<RunConfig>) -> Result<Vec<RunSummary>, RunError> {
    let Some(first) = cfgs.first() else {
        return Ok(Vec::new());
    };
    let shared = SharedSlots {
        progress: Progress::with_status(first.quiet, 0, "pairs"),
        agent_slots: Arc::new(Semaphore::new(first.concurrency.max(1))),
        eval_slots: Arc::new(Semaphore::new(first.eval_concurrency.max(1))),
    };
    let mut prepared = Vec::new();
    for cfg in cfgs {
        prepared.push(prepare(cfg, Some(&shared)).await?);
    }
    shared
        .progress
        .set_total(prepared.iter().map(|p| p.pairs.len()).sum());
    let mut set = tokio::task::JoinSet::new();
    let longest = prepared.iter().map(|p| p.pairs.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (r, run) in prepared.iter().enumerate() {
            if let Some(pair) = run.pairs.get(i).cloned() {
                let ctx = run.ctx.clone();
                set.spawn(async move { (r, i, crate::pairrun::run_pair(&ctx, pair).await) });
            }
        }
    }
    let mut per_run: Vec<Vec<(usize, PairResult)>> = prepared.iter().map(|_| Vec::new()).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((r, i, result)) => per_run[r].push((i, result)),
            Err(e) => tracing::error!("a pair task failed: {e}"),
        }
    }
    shared.progress.finish();
    let mut summaries = Vec::new();
    for (run, results) in prepared.into_iter().zip(per_run) {
        summaries.push(finish(run, results).await?);
    }
    Ok(summaries)
}

/// Limits and progress shared by the runs of one `cbench run --agent a --agent b`.
struct SharedSlots {
    progress: Progress,
    agent_slots: Arc<Semaphore>,
    eval_slots: Arc<Semaphore>,
}

/// A run ready to start its pairs.
struct Prepared {
    ctx: Arc<RunContext>,
    pairs: Vec<Pair>,
    started: Instant,
}

/// Everything before the first pair: validation against the dataset, the lock, the backend,
/// the plugins, the run directory and the header.
async fn prepare(cfg: RunConfig, shared: Option<&SharedSlots>) -> Result<Prepared, RunError> {
    let started = Instant::now();
    let dataset = Dataset::discover(&cfg.dataset_dir)?;
    let mut pairs = dataset.select(&cfg.selection)?;
    if let Some(shard) = cfg.shard {
        pairs.retain(|p| shard.owns(p));
    }
    let selected = pairs.len();
    let (pairs, verified_items) = match &cfg.exclude_unverified {
        Some(path) => only_verified(pairs, path)?,
        None => (pairs, None),
    };
    let model = cfg.llm.model(&cfg.model)?;
    if let Some(path) = &cfg.lock {
        let lock = crate::runrecord::run_lock(&cfg, &pairs)?;
        if crate::pins::write_or_verify(path, &lock)? {
            eprintln!("wrote the lock {}", path.display());
        }
    }
    let run_budget = cfg.llm.max_run_cost_usd.map(RunBudget::new);
    let run_dir = cfg.log_dir.join(&cfg.name);
    let hidden = hidden_paths(
        &cfg.dataset_dir,
        &cfg.log_dir,
        &cfg.cache_dir,
        cfg.repo_cache.as_deref(),
    );
    let backend = Backend::resolve(&cfg.backend, &cfg.name, &hidden).await?;
    for warning in backend.warnings() {
        eprintln!("warning: {warning}");
    }
    backend.preflight(&pairs).await?;
    let redis = match &cfg.redis {
        Some(url) => Some(
            crate::messaging::RedisHub::connect(url, &cfg.name)
                .await?
                .with_outage_limit(cfg.redis_outage),
        ),
        None => None,
    };
    let host = PluginHost::new(&cfg.cache_dir)?;
    let (plugin, timings) = host.load(&cfg.agent).await?;
    tracing::info!(
        from_cache = timings.from_cache,
        load_ms = timings.load_ms,
        "loaded plugin {} {}",
        plugin.identity.name,
        plugin.identity.version
    );
    // A mixed team: agent k runs plugin k (the first is `plugin`).
    let mut team = Vec::new();
    for (k, path) in cfg.team.iter().enumerate() {
        if k == 0 {
            continue;
        }
        let (member, _) = host.load(path).await?;
        team.push(member);
    }
    if !cfg.team.is_empty() {
        let size = cfg.team.len();
        if let Some(pair) = pairs.iter().find(|p| p.features.len() != size) {
            return Err(RunError::TeamSize {
                team: size,
                pair: crate::pairrun::pair_label(pair),
                agents: pair.features.len(),
            });
        }
    }

    // Before anything of the run is touched: a second live invocation is refused.
    let lock = match cfg.shard {
        Some(shard) => crate::runlock::RunLock::acquire_shard(&run_dir, &cfg.name, shard)?,
        None => crate::runlock::RunLock::acquire(&run_dir, &cfg.name)?,
    };
    let mut record = run_record(&cfg, &plugin.identity, &backend);
    if !team.is_empty() {
        record.team = std::iter::once(plugin.identity.clone())
            .chain(team.iter().map(|m| m.identity.clone()))
            .collect();
    }
    record.verified_items_sha256 = verified_items;
    prepare_run_dir(&cfg, &run_dir, &record, &lock)?;
    let events = crate::events::EventLog::open(&run_dir, redis.clone());
    events.emit(crate::events::Event::RunStarted {
        run: cfg.name.clone(),
        pairs: pairs.len(),
        shard: cfg.shard.map(|s| s.to_string()),
        at: crate::trajectory::now_rfc3339(),
    });
    let work_dir = crate::leftovers::scratch_dir("run", &cfg.name)
        .map_err(run_dir_io(&std::env::temp_dir()))?;

    let progress = match shared {
        Some(s) => s.progress.clone(),
        None => Progress::with_status(cfg.quiet, pairs.len(), "pairs"),
    };
    progress.line(&format!(
        "cbench run: {name}\n  setting: {setting} · model: {model} · agent: {agent} {version} (sha256 {sha}…) · backend: {backend} ({isolation})\n  tasks: {tasks} · pairs: {pairs} · concurrency: {c}",
        name = cfg.name,
        setting = cfg.setting,
        model = cfg.model,
        agent = if team.is_empty() {
            plugin.identity.name.clone()
        } else {
            format!(
                "team {}",
                std::iter::once(&plugin)
                    .chain(&team)
                    .map(|m| m.identity.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" + ")
            )
        },
        version = plugin.identity.version,
        sha = &plugin.identity.sha256[..12],
        tasks = count_tasks(&pairs),
        pairs = if pairs.len() == selected {
            pairs.len().to_string()
        } else {
            format!(
                "{} ({} excluded: features not verified in {})",
                pairs.len(),
                selected - pairs.len(),
                cfg.exclude_unverified
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        },
        c = cfg.concurrency,
        backend = backend.name(),
        isolation = backend.isolation(),
    ));

    // The container pool starts ahead only what the pairs still to run will ask for.
    let git = cfg.git && cfg.setting == Setting::Coop;
    for pair in pairs.iter().filter(|_| !git) {
        let done = read_json::<PairRecord>(&pair.log_dir(&run_dir).join("result.json"))
            .ok()
            .filter(|r| r.infra_failure().is_none())
            .is_some();
        if !done {
            let agents = match cfg.setting {
                Setting::Solo => 1,
                Setting::Coop => pair.features.len(),
            };
            backend.expect_sandboxes(pair, agents);
        }
    }

    let ctx = Arc::new(RunContext {
        bases: backend.base_repos(
            &work_dir.path().join("bases"),
            UpstreamRepos {
                cache_dir: cfg.cache_dir.clone(),
                mirror_dir: cfg.repo_cache.clone(),
            },
        ),
        grader: Grader::new(cfg.test_timeout, cfg.merge_policy, backend.grading()),
        agent_slots: match shared {
            Some(s) => s.agent_slots.clone(),
            None => Arc::new(Semaphore::new(cfg.concurrency.max(1))),
        },
        eval_slots: match shared {
            Some(s) => s.eval_slots.clone(),
            None => Arc::new(Semaphore::new(cfg.eval_concurrency.max(1))),
        },
        label_prefix: shared.map(|_| cfg.name.clone()),
        started: AtomicUsize::new(0),
        total: pairs.len(),
        run_budget,
        redis,
        events,
        cfg,
        backend,
        run_dir: run_dir.clone(),
        work_dir,
        plugin,
        team,
        model,
        progress,
        _lock: lock,
    });
    Ok(Prepared {
        ctx,
        pairs,
        started,
    })
}

/// After the last pair: cleanup, summary.json, the summary and report on the terminal.
async fn finish(
    prepared: Prepared,
    mut results: Vec<(usize, PairResult)>,
) -> Result<RunSummary, RunError> {
    let Prepared { ctx, started, .. } = prepared;
    let run_dir = ctx.run_dir.clone();
    // Every pair has ended (or failed): nothing of this run may stay behind.
    if let Some(pool) = ctx.backend.pool_stats().filter(|p| p.started > 0) {
        tracing::info!(
            "container pool: {} agent(s) got a pre-started container, {} waited for one; {} started ahead",
            pool.taken,
            pool.missed,
            pool.started
        );
    }
    if let Err(e) = ctx.backend.cleanup().await {
        ctx.progress.line(&format!("  ✗ cleanup: {e}"));
    }
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<PairResult> = results.into_iter().map(|(_, r)| r).collect();
    let mut summary = summarize(
        &ctx.cfg.name,
        &results,
        started.elapsed(),
        ctx.cfg.auto_eval,
    );
    // A shard's summary covers its pairs only; `cbench report` reads the merged run.
    let summary_file = match ctx.cfg.shard {
        Some(s) => format!("summary-shard-{}-of-{}.json", s.index, s.count),
        None => "summary.json".to_string(),
    };
    summary.continue_from(
        read_json::<RunSummary>(&run_dir.join(&summary_file))
            .ok()
            .as_ref(),
    );
    write_json_atomic(&run_dir.join(summary_file), &summary)?;
    ctx.events.emit(crate::events::Event::RunFinished {
        run: ctx.cfg.name.clone(),
        shard: ctx.cfg.shard.map(|s| s.to_string()),
        at: crate::trajectory::now_rfc3339(),
    });
    ctx.progress.finish();
    summary.print(&ctx.progress);
    write_report(&run_dir, &ctx.progress)?;
    Ok(summary)
}

pub(crate) async fn collect(
    mut set: tokio::task::JoinSet<(usize, PairResult)>,
) -> Vec<(usize, PairResult)> {
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => results.push(r),
            Err(e) => tracing::error!("a pair task failed: {e}"),
        }
    }
    results
}

fn count_tasks(pairs: &[Pair]) -> usize {
    let mut tasks: Vec<(&str, u64)> = pairs
        .iter()
        .map(|p| (p.task.repo.as_str(), p.task.id))
        .collect();
    tasks.sort_unstable();
    tasks.dedup();
    tasks.len()
}

/// Keeps the pairs whose every feature `verified.json` at `path` lists as verified;
/// returns them and the file's sha256 for config.json.
pub(crate) fn only_verified(
    pairs: Vec<Pair>,
    path: &Path,
) -> Result<(Vec<Pair>, Option<String>), RunError> {
    let report: crate::dataset::verify::VerifyReport = read_json(path)?;
    let text = std::fs::read(path).map_err(run_dir_io(path))?;
    let verified: std::collections::BTreeSet<(String, u64, u32)> = report
        .features
        .iter()
        .filter(|f| f.verified)
        .map(|f| (f.repo.clone(), f.task_id, f.feature_id))
        .collect();
    let kept: Vec<Pair> = pairs
        .into_iter()
        .filter(|p| {
            p.features
                .iter()
                .all(|f| verified.contains(&(p.task.repo.clone(), p.task.id, *f)))
        })
        .collect();
    if kept.is_empty() {
        return Err(RunError::NothingVerified {
            path: path.to_path_buf(),
        });
    }
    Ok((kept, Some(sha256_hex(&text))))
}

/// Paths no local command may see: the dataset (hidden tests, gold patches), the
/// logs (other agents' work), cbench's cache, and the upstream mirrors (whose later
/// history holds the features' real implementations).
pub(crate) fn hidden_paths(
    dataset: &Path,
    logs: &Path,
    cache: &Path,
    mirrors: Option<&Path>,
) -> Vec<PathBuf> {
    let mut hidden = vec![
        dataset.to_path_buf(),
        logs.to_path_buf(),
        cache.to_path_buf(),
    ];
    hidden.extend(mirrors.map(Path::to_path_buf));
    hidden
}

/// Agent ids in order: `agent1..N` (coop) or `solo`.
pub(crate) fn agent_ids(setting: Setting, n: usize) -> Vec<String> {
    match setting {
        Setting::Solo => vec!["solo".into()],
        Setting::Coop => (1..=n).map(|k| format!("agent{k}")).collect(),
    }
}

/// Feature ids each agent works on, aligned with `agent_ids`.
pub(crate) fn agent_features(setting: Setting, pair: &Pair) -> Vec<Vec<u32>> {
    match setting {
        Setting::Solo => vec![pair.features.clone()],
        Setting::Coop => pair.features.iter().map(|f| vec![*f]).collect(),
    }
}

/// Writes report.json (metrics over every pair on disk, resumed ones included) and prints it.
pub(crate) fn write_report(run_dir: &Path, progress: &Progress) -> Result<(), RunError> {
    match crate::report::build(run_dir, None) {
        Ok(report) => {
            write_json_atomic(&run_dir.join("report.json"), &report)?;
            progress.line(&report.render());
        }
        // Metrics are a view of results already written; failing to build them loses nothing.
        Err(e) => tracing::warn!("no report.json: {e}"),
    }
    Ok(())
}
