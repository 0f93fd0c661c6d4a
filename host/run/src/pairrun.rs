//! One pair of a run: its lock, its sandboxes and team remote, its agents run at once (each
//! agent's own steps are `agents`), conversation.json and result.json, grading, and the pair's
//! progress lines.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use tracing::Instrument;

use crate::dataset::Pair;
use crate::eval::testbench::TestBench;
use crate::eval::{inputs_hash, EvalReport, GradedPatch, Grader};
use crate::events::Event;
use crate::fsutil::{read_json, write_json_atomic};
use crate::layout::{TEAM_LOG_FILE, TEAM_TASKS_FILE};
use crate::llm::Setting;
use crate::messaging::team::TeamBoard;
use crate::messaging::MessageBus;
use crate::plugin::{AgentRun, Capability};
use crate::progress::{human_duration, Outcome, Progress};
use crate::repos::BaseRepos;
use crate::sandbox::pending::pending;
use crate::sandbox::{Sandbox, SandboxError};
use crate::trajectory::now_rfc3339;

use crate::agents;
use crate::context::RunContext;
use crate::record::{
    agent_features, agent_ids, PairRecord, PairResult, SupersededAttempt, TeamRecord,
};

/// Runs one pair (or resumes it), grades it, and reports it on the run's progress.
pub(crate) async fn run_pair(ctx: &RunContext, pair: Pair) -> PairResult {
    let pair_dir = pair.log_dir(&ctx.run_dir);
    let label = match &ctx.label_prefix {
        Some(run) => format!("{run} · {}", crate::dataset::pair_label(&pair)),
        None => crate::dataset::pair_label(&pair),
    };
    let progress = ctx.progress.for_item(&label);
    let started = Instant::now();
    // Invocations sharing a log dir (shards, a stray second run) never run a pair twice.
    let key = crate::shard::pair_key(&pair).replace('/', "__");
    let _pair_lock = match crate::runlock::RunLock::acquire_pair(&ctx.run_dir, &ctx.cfg.name, &key)
    {
        Ok(lock) => lock,
        Err(e) => {
            progress.line(&format!("✗ Skipped: {e}"));
            progress.finished(Outcome::InfraError);
            return PairResult {
                pair_dir,
                record: None,
                eval: None,
                infra_error: Some(e.to_string()),
            };
        }
    };
    let span = tracing::info_span!("pair", pair = %label);
    let result = run_pair_reporting(ctx, &pair, &label, pair_dir, &progress)
        .instrument(span)
        .await;
    let outcome = match (&result.infra_error, &result.eval) {
        (Some(_), _) => Outcome::InfraError,
        (None, Some(ev)) if ev.overall_success => Outcome::Success,
        (None, Some(_)) => Outcome::Failure,
        (None, None) => Outcome::Ungraded,
    };
    ctx.events.emit(Event::PairFinished {
        pair: crate::dataset::pair_label(&pair),
        outcome: match outcome {
            Outcome::Success => "success",
            Outcome::Failure => "failed",
            Outcome::InfraError => "infra error",
            Outcome::Ungraded => "not graded",
        }
        .into(),
        duration_s: started.elapsed().as_secs_f64(),
        at: now_rfc3339(),
    });
    progress.finished(outcome);
    result
}

async fn run_pair_reporting(
    ctx: &RunContext,
    pair: &Pair,
    label: &str,
    pair_dir: PathBuf,
    progress: &Progress,
) -> PairResult {
    let slot = ctx.agent_slots.acquire().await;
    let i = ctx.started.fetch_add(1, Ordering::Relaxed) + 1;
    let started = Instant::now();
    // A pair whose agents the infrastructure stopped is run again; any other outcome is final.
    let previous = read_json::<PairRecord>(&pair_dir.join("result.json")).ok();
    // What an attempt the infrastructure stopped had spent stays in the new record's totals.
    let superseded = previous
        .as_ref()
        .and_then(|r| {
            r.infra_failure()
                .map(|why| SupersededAttempt::from_record(r, why))
        })
        .unwrap_or_default();
    let resumed = previous.filter(|r| r.infra_failure().is_none());
    ctx.progress.line(&format!(
        "[Task {i}/{total}] {label}{note}",
        total = ctx.total,
        note = if resumed.is_some() {
            " (agents already ran; resuming)"
        } else {
            ""
        },
    ));
    let mut agents_took = None;
    let (record, opened) = match resumed {
        Some(r) => (r, None),
        None => {
            let agents = match ctx.cfg.setting {
                Setting::Solo => 1,
                Setting::Coop | Setting::Team => pair.features.len(),
            } as isize;
            progress.agents_running(agents);
            ctx.events.emit(Event::PairStarted {
                pair: crate::dataset::pair_label(pair),
                at: now_rfc3339(),
            });
            let ran = run_agents(ctx, pair, &pair_dir, progress, superseded).await;
            agents_took = Some(started.elapsed());
            progress.agents_running(-agents);
            match ran {
                Ok((r, opened)) => {
                    progress.spent(r.agents.iter().filter_map(|a| a.cost_usd).sum());
                    (r, opened)
                }
                Err(e) => {
                    progress.line(&format!("✗ Failed: {e}"));
                    return PairResult {
                        pair_dir,
                        record: None,
                        eval: None,
                        infra_error: Some(e),
                    };
                }
            }
        }
    };
    drop(slot);
    let infra = record.infra_failure();
    let mut result = PairResult {
        pair_dir: pair_dir.clone(),
        record: Some(record),
        eval: None,
        infra_error: None,
    };
    if let Some(why) = infra {
        close_unused(opened).await;
        progress.line(&format!(
            "✗ Infrastructure error (not graded; a rerun of this run retries it): {why}"
        ));
        result.infra_error = Some(why);
        return result;
    }
    let mut grading_took = None;
    if ctx.cfg.auto_eval {
        let _eval_slot = ctx.eval_slots.acquire().await;
        progress.grading(1);
        let grading_started = Instant::now();
        let graded = grade_pair_dir(ctx, pair, &pair_dir, false, opened).await;
        grading_took = Some(grading_started.elapsed());
        progress.grading(-1);
        match graded {
            Ok(report) => result.eval = Some(report),
            Err(e) => result.infra_error = Some(e),
        }
    } else {
        close_unused(opened).await;
    }
    // The pair's own time (from its start, not the run's), split into its two parts.
    let parts: Vec<String> = [("agents", agents_took), ("grading", grading_took)]
        .into_iter()
        .filter_map(|(what, took)| took.map(|t| format!("{what} {}", human_duration(t))))
        .collect();
    let took = if parts.is_empty() {
        human_duration(started.elapsed())
    } else {
        format!(
            "{} ({})",
            human_duration(started.elapsed()),
            parts.join(" · ")
        )
    };
    let verdict = match (&result.eval, &result.infra_error) {
        (_, Some(e)) => format!("✗ Grading failed: {e}"),
        (Some(ev), None) => format!(
            "{mark} Complete in {took} — {what}{merge}",
            mark = if ev.overall_success { "✓" } else { "✗" },
            what = if ev.overall_success {
                "success"
            } else {
                "failed"
            },
            merge = ev
                .merge_strategy
                .map(|s| format!(
                    " (merge: {})",
                    serde_json::to_value(s)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ))
                .unwrap_or_default()
        ),
        (None, None) => format!("· Complete in {took} (not graded: --no-auto-eval)"),
    };
    progress.line(&verdict);
    result
}

/// A pair whose agents ran: its record, and its test bench when grading follows (opened while
/// the agents finished).
type Finished = (PairRecord, Option<Result<TestBench, SandboxError>>);

/// Runs the agents of one pair and writes their trajectories, patches, conversation and
/// result.json; the pair's bus is released whatever happened.
async fn run_agents(
    ctx: &RunContext,
    pair: &Pair,
    pair_dir: &Path,
    progress: &Progress,
    superseded: Vec<SupersededAttempt>,
) -> Result<Finished, String> {
    let setting = ctx.cfg.setting;
    let ids = agent_ids(setting, pair.feature_records().len());
    let messaging = ctx.cfg.messaging && setting.one_agent_per_feature();
    let bus = match &ctx.redis {
        Some(hub) => MessageBus::Redis(hub.bus(
            &pair.log_dir(Path::new("")).display().to_string(),
            &ids,
            messaging,
        )),
        None => MessageBus::local(&ids, messaging),
    };
    let board = (setting == Setting::Team).then(|| seeded_board(ctx, pair, &ids));
    let ran = run_agents_on(
        ctx,
        pair,
        pair_dir,
        progress,
        bus.clone(),
        board,
        superseded,
    )
    .await;
    bus.close().await;
    ran
}

/// Closes the sandboxes that did start; returns the first start's error.
async fn close_started(started: Vec<Result<Arc<dyn Sandbox>, String>>) -> String {
    let mut first = None;
    for result in started {
        match result {
            Ok(sandbox) => {
                if let Err(e) = sandbox.close().await {
                    tracing::warn!("closing a sandbox: {e}");
                }
            }
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    first.unwrap_or_else(|| "a sandbox did not start".into())
}

/// The team setting's board, seeded as CooperBench 0.0.29 does: each member's feature as a
/// task suggested to it, and the lead's integration task (`runner/team.py`). With the task
/// list switched off, the board still carries the protocol and the roles.
fn seeded_board(ctx: &RunContext, pair: &Pair, ids: &[String]) -> TeamBoard {
    let mechanisms = ctx.cfg.team_mechanisms;
    // `--team-lead` was checked against every pair's size before the run started.
    let lead_index = ctx
        .cfg
        .team_lead
        .saturating_sub(1)
        .min(ids.len().saturating_sub(1));
    let lead = ids.get(lead_index).cloned().unwrap_or_default();
    let events = crate::events::PairEvents {
        log: ctx.events.clone(),
        pair: crate::dataset::pair_label(pair),
    };
    let board = TeamBoard::new(ids, &lead, mechanisms)
        .observed(std::sync::Arc::new(move |event| events.team(event)));
    if mechanisms.task_list {
        let mut features = pair.features.clone();
        features.sort_unstable();
        // Agent k implements the k-th feature; the lead's own feature is its integration task.
        for (k, (agent, feature)) in ids.iter().zip(&features).enumerate() {
            if k != lead_index {
                board.seed(&format!("Implement feature {feature}"), Some(agent));
            }
        }
        if let Some(own) = features.get(lead_index) {
            board.seed(
                &format!("Lead-only: integrate and submit feature {own}"),
                Some(&lead),
            );
        }
    }
    board
}

/// Runs the agents of one pair on `bus` (and, in the team setting, `board`).
async fn run_agents_on(
    ctx: &RunContext,
    pair: &Pair,
    pair_dir: &Path,
    progress: &Progress,
    bus: MessageBus,
    board: Option<TeamBoard>,
    superseded: Vec<SupersededAttempt>,
) -> Result<Finished, String> {
    let started_at = now_rfc3339();
    let started = Instant::now();
    let setting = ctx.cfg.setting;
    let ids = agent_ids(setting, pair.feature_records().len());
    let per_agent = agent_features(setting, pair);
    let _ = std::fs::remove_dir_all(pair_dir);

    let git = ctx.cfg.git && setting.one_agent_per_feature();
    // The team's shared directory, made before its sandboxes (they mount it) and removed after
    // they are gone; never graded.
    let scratchpad = match &board {
        Some(board) if board.mechanisms().scratchpad => Some(
            ctx.backend
                .scratchpad(pair, ctx.work_dir.path())
                .await
                .map_err(|e| format!("creating the team scratchpad: {e}"))?,
        ),
        _ => None,
    };
    let scratchpad_path = scratchpad.as_ref().map(|s| s.path_in_sandbox());
    let scratchpad = scratchpad.as_ref();
    let remote = if git {
        Some(
            ctx.backend
                .team_remote(pair, &ctx.bases, ctx.work_dir.path())
                .await
                .map_err(|e| format!("creating the team remote: {e}"))?,
        )
    } else {
        None
    };
    // Every agent's sandbox starts at once, and while it starts the agents already run: the
    // plugin instantiates and its first model request goes out; sandbox calls wait for the start.
    let (starters, handles): (Vec<_>, Vec<_>) = ids.iter().map(|_| pending()).unzip();
    let starts: Vec<_> = ids
        .iter()
        .enumerate()
        .zip(starters)
        .map(|((k, agent_id), start)| {
            let agent_git = git && agents::plugin_of(ctx, k).identity.requests(Capability::Git);
            let remote = remote.as_ref().filter(|_| agent_git);
            let span = tracing::info_span!("sandbox_start", agent = %agent_id);
            async move {
                let made = ctx
                    .backend
                    .sandbox_with(
                        pair,
                        agent_id,
                        &ctx.bases,
                        ctx.work_dir.path(),
                        remote,
                        scratchpad,
                    )
                    .instrument(span)
                    .await
                    .map_err(|e| format!("creating the sandbox of {agent_id}: {e}"));
                start.finish(made.clone());
                made
            }
        })
        .collect();
    let mut meta = Vec::new();
    let mut futures = Vec::new();
    for (k, (agent_id, feature_ids)) in ids.iter().zip(&per_agent).enumerate() {
        let sandbox: Arc<dyn Sandbox> = handles[k].clone();
        let team = agents::Team {
            ids: &ids,
            git,
            bus: &bus,
            board: board.as_ref(),
            scratchpad: scratchpad_path.clone(),
        };
        let (env, granted) =
            agents::environment(ctx, pair, progress, &team, k, feature_ids, sandbox.clone())
                .await?;
        let plugin = agents::plugin_of(ctx, k);
        meta.push(agents::Started {
            agent_id: agent_id.clone(),
            identity: plugin.identity.clone(),
            granted,
            feature_ids: feature_ids.clone(),
            sandbox,
        });
        // Each agent is a track of its own in a trace (a root span), not a slice of its pair's.
        let span = tracing::info_span!(parent: None, "agent", agent = %agent_id, pair = %crate::dataset::pair_label(pair));
        // The moment an agent ends, so do its sandbox's processes (what its profile started
        // after its last command included): not when its teammates end.
        let ended = handles[k].clone();
        futures.push(async move {
            let run = plugin.run_agent(env).instrument(span).await;
            ended
                .stop_commands()
                .instrument(tracing::info_span!("stop_commands", agent = %agent_id))
                .await;
            run
        });
    }
    // All agents run concurrently within this pair's task.
    let starts = join_all(starts);
    let agents_run = join_all(futures);
    tokio::pin!(starts, agents_run);
    let agents_phase = async {
        let (sandboxes_started, runs): (_, Vec<AgentRun>) = tokio::select! {
            started = &mut starts => {
                // A sandbox that cannot start makes the pair an infrastructure error at once
                // (its agents are stopped), never an agent failure.
                if started.iter().any(Result::is_err) {
                    return Err(close_started(started).await);
                }
                (started, agents_run.await)
            }
            runs = &mut agents_run => (starts.await, runs),
        };
        if sandboxes_started.iter().any(Result::is_err) {
            return Err(close_started(sandboxes_started).await);
        }
        Ok(runs)
    };
    // The host's own copy of the base (patches are computed against it, never the agent's) is
    // made while the agents run, not after.
    let base_early = ctx
        .bases
        .get(&pair.task)
        .instrument(tracing::info_span!("base_get"));
    // The pair's first grading container starts once its agents' sandboxes are up (not
    // before: the engine starts containers one at a time), so grading need not wait for it.
    let waiting: Vec<_> = handles.clone();
    let bench_early = async {
        if !ctx.cfg.auto_eval {
            return None;
        }
        for sandbox in &waiting {
            sandbox.wait_started().await;
        }
        let opened = ctx
            .grader
            .open_bench(pair)
            .instrument(tracing::info_span!("grading_bench_start"))
            .await;
        if let Ok(bench) = &opened {
            // The test runs' containers start ahead too.
            bench
                .expect_runs(crate::eval::most_test_runs(pair, ctx.cfg.setting))
                .await;
        }
        Some(opened)
    };
    // The patches are taken as soon as the agents end, while the grading container may still
    // be starting (the engine takes a few hundred ms for one).
    let finish = async move {
        let (base, runs) = tokio::join!(base_early, agents_phase);
        let runs = runs?;
        let base = base.map_err(|e| e.to_string());
        // Every agent's patch is taken at once (and its sandbox closed in the background).
        let finishing = meta.into_iter().zip(runs).map(|(started, run)| {
            let span = tracing::info_span!("patch_out", agent = %started.agent_id);
            agents::finish(ctx, &base, pair_dir, progress, started, run).instrument(span)
        });
        let records = join_all(finishing)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(scratchpad) = scratchpad {
            // A volume in use cannot be removed: every sandbox that mounted it closes first.
            ctx.closed_sandboxes().await;
            if let Err(e) = scratchpad.remove().await {
                tracing::warn!("removing the team scratchpad: {e}");
            }
        }
        let conversation = bus.conversation().await.map_err(|e| e.to_string())?;
        write_json_atomic(&pair_dir.join("conversation.json"), &conversation)
            .map_err(|e| e.to_string())?;
        let team = match &board {
            Some(board) => Some(team_record(board, pair_dir)?),
            None => None,
        };
        let record = PairRecord {
            run_name: ctx.cfg.name.clone(),
            repo: pair.task.repo.clone(),
            task_id: pair.task.id,
            features: pair.features.clone(),
            setting,
            model: ctx.cfg.model.clone(),
            plugin: ctx.plugin.identity.clone(),
            agents: records,
            messages: conversation.len(),
            started_at,
            finished_at: now_rfc3339(),
            duration_s: started.elapsed().as_secs_f64(),
            superseded,
            team,
        };
        write_json_atomic(&pair_dir.join("result.json"), &record).map_err(|e| e.to_string())?;
        Ok::<_, String>(record)
    };
    let (finished, opened) = tokio::join!(finish, bench_early);
    match finished {
        Ok(record) => Ok((record, opened)),
        Err(e) => {
            close_unused(opened).await;
            Err(e)
        }
    }
}

/// Writes the team's audit log and final task list under CooperBench's file names and returns
/// what result.json says of the team.
fn team_record(board: &TeamBoard, pair_dir: &Path) -> Result<TeamRecord, String> {
    write_json_atomic(&pair_dir.join(TEAM_LOG_FILE), &board.log()).map_err(|e| e.to_string())?;
    write_json_atomic(
        &pair_dir.join(TEAM_TASKS_FILE),
        &board.tasks().unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(TeamRecord {
        lead_agent: board.lead().to_string(),
        team_features: board.mechanisms(),
        metrics: board.metrics(),
    })
}

/// Reads the patches in `pair_dir` and (re-)grades unless eval.json already matches them.
async fn grade_pair_dir(
    ctx: &RunContext,
    pair: &Pair,
    pair_dir: &Path,
    force: bool,
    opened: Option<Result<TestBench, SandboxError>>,
) -> Result<EvalReport, String> {
    grade_with(
        &ctx.bases,
        &ctx.grader,
        ctx.work_dir.path(),
        ctx.cfg.setting,
        pair,
        pair_dir,
        force,
        opened,
    )
    .await
}

/// Closes a test bench opened ahead that grading did not use.
pub(crate) async fn close_unused(opened: Option<Result<TestBench, SandboxError>>) {
    if let Some(Ok(bench)) = opened {
        if let Err(e) = bench.close().await {
            tracing::warn!("closing an unused test bench: {e}");
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn grade_with(
    bases: &BaseRepos,
    grader: &Grader,
    work_dir: &Path,
    setting: Setting,
    pair: &Pair,
    pair_dir: &Path,
    force: bool,
    opened: Option<Result<TestBench, SandboxError>>,
) -> Result<EvalReport, String> {
    let ids = agent_ids(setting, pair.features.len());
    let per_agent = agent_features(setting, pair);
    let mut patches = Vec::new();
    for (agent_id, feature_ids) in ids.iter().zip(per_agent) {
        let path = pair_dir.join(agent_id).join("patch.diff");
        let patch = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        patches.push(GradedPatch {
            agent_id: agent_id.clone(),
            feature_ids,
            patch,
        });
    }
    let eval_path = pair_dir.join("eval.json");
    let hash = inputs_hash(pair, setting, grader.policy, &patches).map_err(|e| e.to_string())?;
    if !force {
        if let Ok(existing) = read_json::<EvalReport>(&eval_path) {
            if existing.inputs_sha256 == hash {
                close_unused(opened).await;
                return Ok(existing);
            }
        }
    }
    let base = match bases.get(&pair.task).await {
        Ok(base) => base,
        Err(e) => {
            close_unused(opened).await;
            return Err(e.to_string());
        }
    };
    let report = grader
        .grade_on_bench(
            pair,
            setting,
            &base,
            &work_dir.join("grading"),
            pair_dir,
            &patches,
            opened,
        )
        .instrument(tracing::info_span!("grade"))
        .await
        .map_err(|e| e.to_string())?;
    write_json_atomic(&eval_path, &report).map_err(|e| e.to_string())?;
    Ok(report)
}
