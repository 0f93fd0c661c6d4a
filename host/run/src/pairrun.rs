//! One pair of a run: its agents in their sandboxes (each with its plugin), the files they
//! leave (trajectories, patches, conversation, result.json), grading, and the pair's progress lines.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;

use crate::dataset::Pair;
use crate::eval::testbench::TestBench;
use crate::eval::{inputs_hash, EvalReport, GradedPatch, Grader};
use crate::events::{Event, PairEvents};
use crate::fsutil::{read_json, sha256_hex, write_atomic, write_json_atomic};
use crate::layout::PLUGIN_OUTPUT_FILE;
use crate::llm::budget::AgentBudget;
use crate::llm::{AgentBrief, FeatureBrief, Setting};
use crate::messaging::MessageBus;
use crate::plugin::{AgentEnv, AgentRun, AgentStatus, AgentTask, Capability};
use crate::progress::{human_duration, Outcome, Progress};
use crate::repos::BaseRepos;
use crate::sandbox::patch::{self, PatchError};
use crate::sandbox::pending::pending;
use crate::sandbox::{Sandbox, SandboxError};
use crate::trajectory::{now_rfc3339, Recorder};

use crate::context::RunContext;
use crate::record::{agent_features, agent_ids, AgentRecord, PairRecord, PairResult};

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
    let result = run_pair_reporting(ctx, &pair, &label, pair_dir, &progress).await;
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
    let resumed = read_json::<PairRecord>(&pair_dir.join("result.json"))
        .ok()
        .filter(|r| r.infra_failure().is_none());
    ctx.progress.line(&format!(
        "[Task {i}/{total}] {label}{note}",
        total = ctx.total,
        note = if resumed.is_some() {
            " (agents already ran; resuming)"
        } else {
            ""
        },
    ));
    let (record, opened) = match resumed {
        Some(r) => (r, None),
        None => {
            let agents = match ctx.cfg.setting {
                Setting::Solo => 1,
                Setting::Coop => pair.features.len(),
            } as isize;
            progress.agents_running(agents);
            ctx.events.emit(Event::PairStarted {
                pair: crate::dataset::pair_label(pair),
                at: now_rfc3339(),
            });
            let ran = run_agents(ctx, pair, &pair_dir, progress).await;
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
    if ctx.cfg.auto_eval {
        let _eval_slot = ctx.eval_slots.acquire().await;
        match grade_pair_dir(ctx, pair, &pair_dir, false, opened).await {
            Ok(report) => result.eval = Some(report),
            Err(e) => result.infra_error = Some(e),
        }
    } else {
        close_unused(opened).await;
    }
    let took = human_duration(started.elapsed());
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
) -> Result<Finished, String> {
    let setting = ctx.cfg.setting;
    let ids = agent_ids(setting, pair.feature_records().len());
    let messaging = ctx.cfg.messaging && setting == Setting::Coop;
    let bus = match &ctx.redis {
        Some(hub) => MessageBus::Redis(hub.bus(
            &pair.log_dir(Path::new("")).display().to_string(),
            &ids,
            messaging,
        )),
        None => MessageBus::local(&ids, messaging),
    };
    let ran = run_agents_on(ctx, pair, pair_dir, progress, bus.clone()).await;
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

/// Runs the agents of one pair on `bus`.
async fn run_agents_on(
    ctx: &RunContext,
    pair: &Pair,
    pair_dir: &Path,
    progress: &Progress,
    bus: MessageBus,
) -> Result<Finished, String> {
    let started_at = now_rfc3339();
    let started = Instant::now();
    let setting = ctx.cfg.setting;
    let features = pair.feature_records();
    let ids = agent_ids(setting, features.len());
    let per_agent = agent_features(setting, pair);
    let _ = std::fs::remove_dir_all(pair_dir);

    let git = ctx.cfg.git && setting == Setting::Coop;
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
    // Agent k of a mixed team runs the team's k-th plugin.
    let plugin_of = |k: usize| match k.checked_sub(1).and_then(|m| ctx.team.get(m)) {
        Some(member) => member,
        None => &ctx.plugin,
    };
    // Every agent's sandbox starts at once, and while it starts the agents already run: the
    // plugin instantiates and its first model request goes out; sandbox calls wait for the start.
    let (starters, handles): (Vec<_>, Vec<_>) = ids.iter().map(|_| pending()).unzip();
    let starts: Vec<_> = ids
        .iter()
        .enumerate()
        .zip(starters)
        .map(|((k, agent_id), start)| {
            let agent_git = git && plugin_of(k).identity.requests(Capability::Git);
            let remote = remote.as_ref().filter(|_| agent_git);
            async move {
                let made = ctx
                    .backend
                    .sandbox(pair, agent_id, &ctx.bases, ctx.work_dir.path(), remote)
                    .await
                    .map_err(|e| format!("creating the sandbox of {agent_id}: {e}"));
                start.finish(made.clone());
                made
            }
        })
        .collect();
    let mut running = Vec::new();
    for (k, (agent_id, feature_ids)) in ids.iter().zip(&per_agent).enumerate() {
        let plugin = plugin_of(k);
        let sandbox: Arc<dyn Sandbox> = handles[k].clone();
        // A capability needs the user's grant (run options) and the plugin's declaration.
        let agent_git = git && plugin.identity.requests(Capability::Git);
        let agent_messaging = bus.enabled() && plugin.identity.requests(Capability::Messaging);
        if bus.enabled() && !agent_messaging {
            // It will never read: a teammate's send says so instead of vanishing.
            bus.mark_finished(agent_id)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut granted = Vec::new();
        if agent_messaging {
            granted.push(Capability::Messaging);
        }
        if agent_git {
            granted.push(Capability::Git);
        }
        let mut briefs = Vec::new();
        let mut texts = Vec::new();
        for id in feature_ids {
            let Some(f) = pair.task.feature(*id) else {
                return Err(format!(
                    "feature {id} vanished from {}",
                    pair.task.dir.display()
                ));
            };
            let read = |p: PathBuf| {
                std::fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))
            };
            texts.push((f.id, read(f.description_path())?));
            briefs.push(FeatureBrief {
                id: f.id,
                gold_patch: read(f.gold_patch_path())?,
            });
        }
        let feature_text = match setting {
            Setting::Coop => texts.first().map(|(_, t)| t.clone()).unwrap_or_default(),
            Setting::Solo => texts
                .iter()
                .map(|(id, t)| format!("## Feature {id}\n\n{}", t.trim()))
                .collect::<Vec<_>>()
                .join("\n\n---\n\n"),
        };
        let teammates: Vec<String> = ids.iter().filter(|x| *x != agent_id).cloned().collect();
        let brief = AgentBrief {
            agent_id: agent_id.clone(),
            teammates: teammates.clone(),
            setting,
            features: briefs,
            messaging_enabled: agent_messaging,
            pair_key: pair.log_dir(Path::new("")).display().to_string(),
        };
        let env = AgentEnv {
            task: AgentTask {
                agent_id: agent_id.clone(),
                teammates,
                setting,
                feature_text,
                max_steps: ctx.cfg.max_steps,
                command_timeout: ctx.cfg.command_timeout,
                git_enabled: agent_git,
                messaging_enabled: agent_messaging,
                agent_config: ctx
                    .cfg
                    .agent_config
                    .as_ref()
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default(),
            },
            sandbox: sandbox.clone(),
            llm: ctx.model.session(&brief),
            bus: bus.clone(),
            recorder: if ctx.model.priced() {
                Recorder::new(agent_id, feature_ids, &ctx.cfg.model)
            } else {
                Recorder::new(agent_id, feature_ids, &ctx.cfg.model).unpriced()
            },
            progress: progress.clone(),
            events: Some(PairEvents {
                log: ctx.events.clone(),
                pair: crate::dataset::pair_label(pair),
            }),
            limits: ctx.cfg.plugin_limits,
            budget: AgentBudget {
                max_cost_usd: ctx.cfg.llm.max_cost_usd,
                max_tokens: ctx.cfg.llm.max_tokens,
                max_wall: ctx.cfg.llm.max_agent_wall,
                run: ctx.run_budget.clone(),
            },
        };
        running.push((
            (agent_id.clone(), plugin.identity.clone(), granted),
            feature_ids.clone(),
            sandbox,
            plugin.run_agent(env),
        ));
    }
    // All agents run concurrently within this pair's task.
    let (meta, futures): (Vec<_>, Vec<_>) = running
        .into_iter()
        .map(|(id, f, s, fut)| ((id, f, s), fut))
        .unzip();
    let starts = join_all(starts);
    let agents_run = join_all(futures);
    tokio::pin!(starts, agents_run);
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

    // The pair's grading container starts while the agents' patches are taken and their
    // containers removed.
    let open_ahead = async {
        if ctx.cfg.auto_eval {
            Some(ctx.grader.open_bench(pair).await)
        } else {
            None
        }
    };
    let finish = async move {
        // Patches are computed against the host's own copy of the base (never the agent's).
        let base = ctx.bases.get(&pair.task).await.map_err(|e| e.to_string());
        let patch_scratch = ctx.work_dir.path().join("patches");
        let mut agents = Vec::new();
        for (((agent_id, identity, granted), feature_ids, sandbox), run) in
            meta.into_iter().zip(runs)
        {
            let dir = pair_dir.join(&agent_id);
            // What the agent did is on record before anything it left is looked at.
            write_json_atomic(&dir.join("trajectory.json"), &run.trajectory)
                .map_err(|e| e.to_string())?;
            if !run.plugin_output.is_empty() {
                write_atomic(&dir.join(PLUGIN_OUTPUT_FILE), run.plugin_output.as_bytes())
                    .map_err(|e| e.to_string())?;
            }
            let patch = match &base {
                Ok(base) => {
                    patch::compute(sandbox.as_ref(), base, &patch_scratch, ctx.cfg.patch_limits)
                        .await
                }
                Err(e) => Err(PatchError::Infra(SandboxError::Command(e.clone()))),
            };
            if let Err(e) = sandbox.close().await {
                tracing::warn!("closing the sandbox of {agent_id}: {e}");
            }
            let (patch, mut status, mut error) = match patch {
                Ok(patch) => (patch, run.status, run.error.clone()),
                // What the agent left cannot make a patch: its failure, with the reason; the
                // pair is graded (with an empty patch), never re-run.
                Err(PatchError::Rejected(why)) => (
                    String::new(),
                    AgentStatus::Error,
                    Some(format!("patch rejected: {why}")),
                ),
                Err(PatchError::Infra(e)) => {
                    return Err(format!("computing the patch of {agent_id}: {e}"))
                }
            };
            if run.status == AgentStatus::InfraError {
                // An infrastructure stop stays one, whatever the tree looks like.
                status = AgentStatus::InfraError;
                error = run.error.clone().or(error);
            }
            write_atomic(&dir.join("patch.diff"), patch.as_bytes()).map_err(|e| e.to_string())?;
            if let Some(err) = &error {
                progress.line(&format!("{agent_id} ended with an error: {err}"));
            }
            agents.push(AgentRecord {
                agent_id,
                feature_ids,
                status,
                error,
                summary: run.summary,
                steps: run.steps,
                token_usage: run.trajectory.token_usage.clone(),
                cost_usd: run.trajectory.cost_usd,
                wall_s: run.wall.as_secs_f64(),
                plugin_compute_s: run.compute.as_secs_f64(),
                patch_sha256: sha256_hex(patch.as_bytes()),
                patch_bytes: patch.len(),
                plugin: Some(identity),
                capabilities_granted: granted,
            });
        }
        let conversation = bus.conversation().await.map_err(|e| e.to_string())?;
        write_json_atomic(&pair_dir.join("conversation.json"), &conversation)
            .map_err(|e| e.to_string())?;
        let record = PairRecord {
            run_name: ctx.cfg.name.clone(),
            repo: pair.task.repo.clone(),
            task_id: pair.task.id,
            features: pair.features.clone(),
            setting,
            model: ctx.cfg.model.clone(),
            plugin: ctx.plugin.identity.clone(),
            agents,
            messages: conversation.len(),
            started_at,
            finished_at: now_rfc3339(),
            duration_s: started.elapsed().as_secs_f64(),
        };
        write_json_atomic(&pair_dir.join("result.json"), &record).map_err(|e| e.to_string())?;
        Ok::<_, String>(record)
    };
    let (opened, finished) = tokio::join!(open_ahead, finish);
    match finished {
        Ok(record) => Ok((record, opened)),
        Err(e) => {
            close_unused(opened).await;
            Err(e)
        }
    }
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
        .await
        .map_err(|e| e.to_string())?;
    write_json_atomic(&eval_path, &report).map_err(|e| e.to_string())?;
    Ok(report)
}
