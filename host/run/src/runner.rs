//! Orchestration: run every selected pair (coop or solo) with the plugin, write
//! the logs, grade, and summarise. Pairs already complete on disk are resumed.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::backend::Backend;
use crate::dataset::{Dataset, Pair};
use crate::eval::Grader;
use crate::fsutil::{read_json, write_json_atomic};
use crate::llm::budget::RunBudget;
use crate::llm::Setting;
use crate::plugin::PluginHost;
use crate::progress::Progress;
use crate::repos::UpstreamRepos;
use crate::summary::{summarize, RunSummary};

pub use crate::config::{LlmConfig, RunConfig};
use crate::context::RunContext;
use crate::error::run_dir_io;
pub use crate::error::RunError;
pub use crate::evalrun::{eval_run, EvalConfig};
pub use crate::record::{AgentRecord, PairRecord, PairResult};
pub use crate::runrecord::RunRecord;
use crate::runrecord::{prepare_run_dir, run_record};
pub use crate::steps::hidden_paths;
use crate::steps::{collect, only_verified, write_report};

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
                pair: crate::dataset::pair_label(pair),
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
        at: crate::clock::now_rfc3339(),
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
        at: crate::clock::now_rfc3339(),
    });
    ctx.progress.finish();
    summary.print(&ctx.progress);
    write_report(&run_dir, &ctx.progress)?;
    Ok(summary)
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
