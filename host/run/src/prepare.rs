//! Everything before a run's first pair: validation against the dataset, the lock, the
//! backend, the plugins, the run directory and the header.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::backend::Backend;
use crate::config::RunConfig;
use crate::context::RunContext;
use crate::dataset::{Dataset, Pair};
use crate::error::{run_dir_io, RunError};
use crate::eval::Grader;
use crate::fsutil::read_json;
use crate::llm::budget::RunBudget;
use crate::llm::Setting;
use crate::plugin::{Capability, LoadTimings, LoadedPlugin, PluginHost};
use crate::progress::Progress;
use crate::record::PairRecord;
use crate::repos::UpstreamRepos;
use crate::runrecord::{prepare_run_dir, run_record};
use crate::steps::{hidden_paths, only_verified};

/// Limits and progress shared by the runs of one `cbench run --agent a --agent b`.
pub(crate) struct SharedSlots {
    pub(crate) progress: Progress,
    pub(crate) agent_slots: Arc<Semaphore>,
    pub(crate) eval_slots: Arc<Semaphore>,
}

/// A run ready to start its pairs.
pub(crate) struct Prepared {
    pub(crate) ctx: Arc<RunContext>,
    pub(crate) pairs: Vec<Pair>,
    pub(crate) started: Instant,
}

/// The pairs a run will work on.
struct Selected {
    pairs: Vec<Pair>,
    /// How many the selection named before `--exclude-unverified`.
    before_verified: usize,
    /// The verified.json's sha256, for config.json.
    verified_items: Option<String>,
}

/// Prepares the run `cfg` describes (with `shared` limits when several runs share a terminal).
pub(crate) async fn prepare(
    cfg: RunConfig,
    shared: Option<&SharedSlots>,
) -> Result<Prepared, RunError> {
    let started = Instant::now();
    let selected = select_pairs(&cfg)?;
    let model = cfg.llm.model(&cfg.model)?;
    if let Some(path) = &cfg.lock {
        let lock = crate::runrecord::run_lock(&cfg, &selected.pairs)?;
        if crate::pins::write_or_verify(path, &lock)? {
            eprintln!("wrote the lock {}", path.display());
        }
    }
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
    backend.preflight(&selected.pairs).await?;
    let redis = match &cfg.redis {
        Some(url) => Some(
            crate::messaging::RedisHub::connect(url, &cfg.name)
                .await?
                .with_outage_limit(cfg.redis_outage),
        ),
        None => None,
    };
    refuse_other_plugin_bytes(&cfg, &run_dir)?;
    let (plugin, team) = load_plugins(&cfg, &selected.pairs).await?;

    // Before anything of the run is touched: a second live invocation is refused.
    let lock = match (&cfg.pair_task, cfg.shard) {
        (Some(task), _) => crate::runlock::RunLock::acquire_task(&run_dir, &cfg.name, task.index)?,
        (None, Some(shard)) => crate::runlock::RunLock::acquire_shard(&run_dir, &cfg.name, shard)?,
        (None, None) => crate::runlock::RunLock::acquire(&run_dir, &cfg.name)?,
    };
    let mut record = run_record(&cfg, &plugin.identity, &backend);
    if !team.is_empty() {
        record.team = std::iter::once(plugin.identity.clone())
            .chain(team.iter().map(|m| m.identity.clone()))
            .collect();
    }
    record.verified_items_sha256 = selected.verified_items.clone();
    let resuming = run_dir.join("config.json").exists() && !cfg.force;
    prepare_run_dir(&cfg, &run_dir, &record, &lock)?;
    let events = crate::events::EventLog::open(&run_dir, redis.clone());
    events.emit(crate::events::Event::RunStarted {
        run: cfg.name.clone(),
        pairs: selected.pairs.len(),
        shard: cfg.shard.map(|s| s.to_string()),
        at: crate::clock::now_rfc3339(),
    });
    let work_dir = crate::leftovers::scratch_dir("run", &cfg.name)
        .map_err(run_dir_io(&std::env::temp_dir()))?;

    let progress = match shared {
        Some(s) => s.progress.clone(),
        None => Progress::with_status(cfg.quiet, selected.pairs.len(), "pairs"),
    };
    progress.line(&header(&cfg, &plugin, &team, &selected, &backend));
    if resuming {
        // Said once, up front: the pairs that ran are kept, not run again.
        let done = selected
            .pairs
            .iter()
            .filter(|p| {
                read_json::<PairRecord>(&p.log_dir(&run_dir).join("result.json"))
                    .is_ok_and(|r| r.infra_failure().is_none())
            })
            .count();
        progress.line(&format!(
            "  resuming run {}: the agents of {done} of {} pairs already ran (kept; only the rest run, and what is not graded is graded; --force starts over)",
            cfg.name,
            selected.pairs.len()
        ));
    }
    expect_sandboxes(&cfg, &selected.pairs, &run_dir, &backend);

    let pairs = selected.pairs;
    let eval_slots = match shared {
        Some(s) => s.eval_slots.clone(),
        None => Arc::new(Semaphore::new(cfg.eval_concurrency.max(1))),
    };
    let ctx = Arc::new(RunContext {
        bases: backend.base_repos(
            &work_dir.path().join("bases"),
            UpstreamRepos {
                cache_dir: cfg.cache_dir.clone(),
                mirror_dir: cfg.repo_cache.clone(),
            },
        ),
        grader: Grader::new(cfg.test_timeout, cfg.merge_policy, backend.grading())
            .with_spare_slots(eval_slots.clone())
            .closing_in_background(),
        agent_slots: match shared {
            Some(s) => s.agent_slots.clone(),
            None => Arc::new(Semaphore::new(cfg.concurrency.max(1))),
        },
        eval_slots,
        label_prefix: shared.map(|_| cfg.name.clone()),
        started: AtomicUsize::new(0),
        total: pairs.len(),
        run_budget: cfg.llm.max_run_cost_usd.map(RunBudget::new),
        redis,
        events,
        cfg,
        backend,
        run_dir,
        work_dir,
        plugin,
        team,
        model,
        progress,
        closing: Default::default(),
        _lock: lock,
    });
    Ok(Prepared {
        ctx,
        pairs,
        started,
    })
}

/// The dataset's pairs this run (or shard, or array task) selects, less unverified ones when
/// asked.
fn select_pairs(cfg: &RunConfig) -> Result<Selected, RunError> {
    let dataset = Dataset::discover(&cfg.dataset_dir)?;
    let mut pairs = dataset.select(&cfg.selection)?;
    if let Some(shard) = cfg.shard {
        pairs.retain(|p| shard.owns(p));
    }
    let before_verified = pairs.len();
    let (mut pairs, verified_items) = match &cfg.exclude_unverified {
        Some(path) => only_verified(pairs, path)?,
        None => (pairs, None),
    };
    if let Some(task) = &cfg.pair_task {
        sort_by_key(&mut pairs);
        let found = pairs.get(task.index).map(crate::shard::pair_key);
        if pairs.len() != task.count || found.as_deref() != Some(task.key.as_str()) {
            return Err(RunError::ManifestStale {
                run: cfg.name.clone(),
                index: task.index,
                key: task.key.clone(),
                found: found.unwrap_or_else(|| "no pair".into()),
            });
        }
        pairs = vec![pairs.swap_remove(task.index)];
    }
    Ok(Selected {
        pairs,
        before_verified: if cfg.pair_task.is_some() {
            1
        } else {
            before_verified
        },
        verified_items,
    })
}

/// The run's pairs in the order a scheduler's array numbers them: by key.
pub fn sort_by_key(pairs: &mut [Pair]) {
    pairs.sort_by_cached_key(crate::shard::pair_key);
}

/// Every pair `cfg` selects (no shard or task), in array order: what a manifest lists.
pub fn run_pairs(cfg: &RunConfig) -> Result<Vec<Pair>, RunError> {
    let whole = RunConfig {
        shard: None,
        pair_task: None,
        ..cfg.clone()
    };
    let mut pairs = select_pairs(&whole)?.pairs;
    sort_by_key(&mut pairs);
    Ok(pairs)
}

/// Loads a plugin; its first use (a compile: ~45 s for a Python plugin) is announced, and how
/// long it took, so the wait is not silent.
async fn load_saying_so(
    host: &PluginHost,
    path: &std::path::Path,
    quiet: bool,
) -> Result<(LoadedPlugin, LoadTimings), RunError> {
    let announce = !quiet && !host.is_cached(path);
    if announce {
        eprintln!(
            "compiling plugin {} (its first use on this machine; cached afterwards)…",
            path.display()
        );
    }
    let loaded = host.load(path).await?;
    if announce {
        eprintln!(
            "compiled plugin {} in {:.1} s",
            path.display(),
            loaded.1.load_ms / 1e3
        );
    }
    Ok(loaded)
}

/// The run's plugin and the other members of a mixed team (agent k runs plugin k).
async fn load_plugins(
    cfg: &RunConfig,
    pairs: &[Pair],
) -> Result<(LoadedPlugin, Vec<LoadedPlugin>), RunError> {
    let host = PluginHost::new(&cfg.cache_dir)?;
    let (plugin, timings) = load_saying_so(&host, &cfg.agent, cfg.quiet).await?;
    tracing::info!(
        from_cache = timings.from_cache,
        load_ms = timings.load_ms,
        "loaded plugin {} {}",
        plugin.identity.name,
        plugin.identity.version
    );
    let mut team = Vec::new();
    for path in cfg.team.iter().skip(1) {
        let (member, _) = load_saying_so(&host, path, cfg.quiet).await?;
        team.push(member);
    }
    if cfg.setting == Setting::Team {
        if let Some(pair) = pairs.iter().find(|p| p.features.len() < cfg.team_lead) {
            return Err(RunError::TeamLeadOutOfRange {
                lead: cfg.team_lead,
                pair: crate::dataset::pair_label(pair),
                agents: pair.features.len(),
            });
        }
        let refused = std::iter::once(&plugin)
            .chain(&team)
            .find(|p| !p.identity.requests(Capability::Team));
        if let Some(p) = refused {
            return Err(RunError::NotATeamPlugin {
                path: p.identity.path.clone(),
                name: p.identity.name.clone(),
                version: p.identity.version.clone(),
                wit: p.identity.wit_version.clone(),
            });
        }
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
    Ok((plugin, team))
}

/// A resume with another plugin file is refused before that plugin is compiled (a Python
/// plugin's first compile takes ~45 s); the full option check follows once it is loaded.
fn refuse_other_plugin_bytes(cfg: &RunConfig, run_dir: &std::path::Path) -> Result<(), RunError> {
    if cfg.force || !cfg.team.is_empty() {
        return Ok(());
    }
    let Ok(old) = read_json::<crate::runrecord::RunRecord>(&run_dir.join("config.json")) else {
        return Ok(());
    };
    let Ok(bytes) = std::fs::read(&cfg.agent) else {
        return Ok(());
    };
    let sha256 = crate::fsutil::sha256_hex(&bytes);
    if sha256 == old.agent.sha256 {
        return Ok(());
    }
    Err(RunError::OptionChanged {
        name: cfg.name.clone(),
        dir: run_dir.to_path_buf(),
        option: "--agent (plugin sha256)",
        old: old.agent.sha256,
        new: sha256,
    })
}

/// A setting as the header shows it: its value, or "provider default" when not given.
fn or_provider_default(value: Option<impl std::fmt::Display>) -> String {
    value
        .map(|v| v.to_string())
        .unwrap_or_else(|| "provider default".into())
}

/// The run's first lines: what runs, with what, on how many pairs.
fn header(
    cfg: &RunConfig,
    plugin: &LoadedPlugin,
    team: &[LoadedPlugin],
    selected: &Selected,
    backend: &Backend,
) -> String {
    let pairs = &selected.pairs;
    format!(
        "cbench run: {name}\n  setting: {setting} · model: {model} · agent: {agent}{stand_in} · backend: {backend} ({isolation})\n  llm: temperature {temperature} · max output tokens {max_output} · API base {api_base}\n  tasks: {tasks} · pairs: {pairs} · concurrency: {c}",
        temperature = or_provider_default(cfg.llm.sampling.temperature),
        max_output = or_provider_default(cfg.llm.sampling.max_output_tokens),
        api_base = or_provider_default(
            cfg.llm
                .api_base
                .as_deref()
                .map(crate::llm::providers::api_base_host)
        ),
        stand_in = cfg
            .stands_in_for
            .as_deref()
            .map(|cb| format!(" standing in for CooperBench's {cb}"))
            .unwrap_or_default(),
        name = cfg.name,
        setting = cfg.setting,
        model = cfg.model,
        // A mixed team names every member: which plugin, which version, which build.
        agent = {
            let shown = |p: &LoadedPlugin| {
                let id = &p.identity;
                format!(
                    "{} {} (sha256 {}…)",
                    id.name,
                    id.version,
                    id.sha256.get(..12).unwrap_or(&id.sha256)
                )
            };
            if team.is_empty() {
                shown(plugin)
            } else {
                format!(
                    "team {}",
                    std::iter::once(plugin)
                        .chain(team)
                        .map(shown)
                        .collect::<Vec<_>>()
                        .join(" + ")
                )
            }
        },
        tasks = count_tasks(pairs),
        pairs = if pairs.len() == selected.before_verified {
            pairs.len().to_string()
        } else {
            format!(
                "{} ({} excluded: features not verified in {})",
                pairs.len(),
                selected.before_verified - pairs.len(),
                cfg.exclude_unverified
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        },
        c = cfg.concurrency,
        backend = backend.name(),
        isolation = backend.isolation(),
    )
}

/// The container pool starts ahead only what the pairs still to run will ask for.
fn expect_sandboxes(cfg: &RunConfig, pairs: &[Pair], run_dir: &std::path::Path, backend: &Backend) {
    let git = cfg.git && cfg.setting.one_agent_per_feature();
    for pair in pairs.iter().filter(|_| !git) {
        let done = read_json::<PairRecord>(&pair.log_dir(run_dir).join("result.json"))
            .ok()
            .filter(|r| r.infra_failure().is_none())
            .is_some();
        if !done {
            let agents = match cfg.setting {
                Setting::Solo => 1,
                Setting::Coop | Setting::Team => pair.features.len(),
            };
            backend.expect_sandboxes(pair, agents);
        }
    }
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
