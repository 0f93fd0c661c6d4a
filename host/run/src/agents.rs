//! One agent of a pair: what it is granted and told before it starts, and what the host
//! records of it when it ends (trajectory, patch, status).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::Instrument;

use crate::context::RunContext;
use crate::dataset::Pair;
use crate::events::PairEvents;
use crate::fsutil::{sha256_hex, write_atomic, write_json_atomic};
use crate::layout::PLUGIN_OUTPUT_FILE;
use crate::llm::budget::AgentBudget;
use crate::llm::{AgentBrief, FeatureBrief, Setting};
use crate::messaging::team::TeamBoard;
use crate::messaging::MessageBus;
use crate::plugin::{
    AgentEnv, AgentRun, AgentStatus, AgentTask, Capability, LoadedPlugin, PluginIdentity, TeamInfo,
};
use crate::progress::Progress;
use crate::record::AgentRecord;
use crate::sandbox::base::BaseRepo;
use crate::sandbox::patch::{self, PatchError};
use crate::sandbox::{Sandbox, SandboxError};
use crate::trajectory::Recorder;

/// The pair an agent belongs to, as its environment needs it.
pub(crate) struct Team<'a> {
    /// Every agent's id, in order.
    pub(crate) ids: &'a [String],
    /// The run grants the team remote (`--git`, coop).
    pub(crate) git: bool,
    pub(crate) bus: &'a MessageBus,
    /// The team setting's board; none in solo and coop.
    pub(crate) board: Option<&'a TeamBoard>,
    /// Where the team's scratchpad is inside the sandboxes; none when off.
    pub(crate) scratchpad: Option<String>,
}

/// An agent that was started: what the host needs to record it when it ends.
pub(crate) struct Started {
    pub(crate) agent_id: String,
    pub(crate) identity: PluginIdentity,
    pub(crate) granted: Vec<Capability>,
    pub(crate) feature_ids: Vec<u32>,
    pub(crate) sandbox: Arc<dyn Sandbox>,
}

/// Agent k of a mixed team runs the team's k-th plugin.
pub(crate) fn plugin_of(ctx: &RunContext, k: usize) -> &LoadedPlugin {
    match k.checked_sub(1).and_then(|m| ctx.team.get(m)) {
        Some(member) => member,
        None => &ctx.plugin,
    }
}

/// Agent `k`'s environment and the capabilities it was granted.
pub(crate) async fn environment(
    ctx: &RunContext,
    pair: &Pair,
    progress: &Progress,
    team: &Team<'_>,
    k: usize,
    feature_ids: &[u32],
    sandbox: Arc<dyn Sandbox>,
) -> Result<(AgentEnv, Vec<Capability>), String> {
    let setting = ctx.cfg.setting;
    let agent_id = &team.ids[k];
    let plugin = plugin_of(ctx, k);
    // A capability needs the user's grant (run options) and the plugin's declaration.
    let agent_git = team.git && plugin.identity.requests(Capability::Git);
    let bus = team.bus;
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
    // The run refused a plugin without the team capability before any pair started.
    let team_info = match team.board {
        Some(board) if plugin.identity.requests(Capability::Team) => {
            granted.push(Capability::Team);
            board.role(agent_id).map(|role| TeamInfo {
                role,
                lead: board.lead().to_string(),
                mechanisms: board.mechanisms(),
                scratchpad: team.scratchpad.clone(),
            })
        }
        _ => None,
    };
    let (briefs, feature_text) = feature_texts(pair, feature_ids, setting)?;
    let teammates: Vec<String> = team
        .ids
        .iter()
        .filter(|x| *x != agent_id)
        .cloned()
        .collect();
    let brief = AgentBrief {
        agent_id: agent_id.clone(),
        teammates: teammates.clone(),
        setting,
        features: briefs,
        messaging_enabled: agent_messaging,
        pair_key: pair.log_dir(Path::new("")).display().to_string(),
    };
    let recorder = Recorder::new(agent_id, feature_ids, &ctx.cfg.model);
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
            team: team_info.clone(),
        },
        sandbox,
        llm: ctx.model.session(&brief),
        bus: bus.clone(),
        team: team.board.filter(|_| team_info.is_some()).cloned(),
        recorder: if ctx.model.priced() {
            recorder
        } else {
            recorder.unpriced()
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
    Ok((env, granted))
}

/// The features' briefs (for the model's session) and the text the agent is given: its one
/// feature (coop), or every feature under a heading (solo).
fn feature_texts(
    pair: &Pair,
    feature_ids: &[u32],
    setting: Setting,
) -> Result<(Vec<FeatureBrief>, String), String> {
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
    let text = match setting {
        Setting::Coop | Setting::Team => texts.first().map(|(_, t)| t.clone()).unwrap_or_default(),
        Setting::Solo => texts
            .iter()
            .map(|(id, t)| format!("## Feature {id}\n\n{}", t.trim()))
            .collect::<Vec<_>>()
            .join("\n\n---\n\n"),
    };
    Ok((briefs, text))
}

/// Records an agent that ended: its trajectory first, then its patch (taken from a snapshot
/// of its tree against the host's own base), then its sandbox is closed in the background.
pub(crate) async fn finish(
    ctx: &RunContext,
    base: &Result<Arc<BaseRepo>, String>,
    pair_dir: &Path,
    progress: &Progress,
    started: Started,
    run: AgentRun,
) -> Result<AgentRecord, String> {
    let Started {
        agent_id,
        identity,
        granted,
        feature_ids,
        sandbox,
    } = started;
    let dir = pair_dir.join(&agent_id);
    // What the agent did is on record before anything it left is looked at.
    write_json_atomic(&dir.join("trajectory.json"), &run.trajectory).map_err(|e| e.to_string())?;
    if !run.plugin_output.is_empty() {
        write_atomic(&dir.join(PLUGIN_OUTPUT_FILE), run.plugin_output.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    // Nothing the agent left running changes the tree now: its sandbox's processes ended with
    // it (`run_agents_on`).
    let patch_scratch = ctx.work_dir.path().join("patches");
    let patch = match base {
        Ok(base) => {
            patch::compute(sandbox.as_ref(), base, &patch_scratch, ctx.cfg.patch_limits)
                .instrument(tracing::info_span!("patch_compute"))
                .await
        }
        Err(e) => Err(PatchError::Infra(SandboxError::Command(e.clone()))),
    };
    ctx.close_later(agent_id.clone(), sandbox);
    let (patch, mut status, mut error) = match patch {
        Ok(patch) => (patch, run.status, run.error.clone()),
        // What the agent left cannot make a patch: its failure, with the reason; the
        // pair is graded (with an empty patch), never re-run.
        Err(PatchError::Rejected(why)) => (
            String::new(),
            AgentStatus::Error,
            Some(format!("patch rejected: {why}")),
        ),
        Err(PatchError::Infra(e)) => return Err(format!("computing the patch of {agent_id}: {e}")),
    };
    if run.status == AgentStatus::InfraError {
        // An infrastructure stop stays one, whatever the tree looks like.
        status = AgentStatus::InfraError;
        error = run.error.clone().or(error);
    }
    write_atomic(&dir.join("patch.diff"), patch.as_bytes()).map_err(|e| e.to_string())?;
    if let Some(err) = &error {
        // What the plugin printed (a Python traceback, a JS stack) says more than its error.
        let output = if run.plugin_output.is_empty() {
            String::new()
        } else {
            format!(
                "\n  its output (and any traceback): {}",
                dir.join(PLUGIN_OUTPUT_FILE).display()
            )
        };
        progress.line(&format!("{agent_id} ended with an error: {err}{output}"));
    }
    Ok(AgentRecord {
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
        llm_retries: run
            .trajectory
            .llm_calls
            .iter()
            .map(|c| c.retries.len() as u32)
            .sum(),
    })
}
