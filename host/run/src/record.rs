//! The records a pair leaves in its directory (result.json) and what one invocation learned
//! of it; which agents a pair has and which features each works on.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dataset::Pair;
use crate::eval::EvalReport;
use crate::llm::Setting;
use crate::plugin::{AgentStatus, PluginIdentity};
use crate::trajectory::TokenTotals;

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
    /// LLM requests the host retried (rate limits, server errors, timeouts) for this agent.
    #[serde(default)]
    pub llm_retries: u32,
}

/// An earlier attempt at a pair that the infrastructure stopped and a later invocation redid:
/// kept so that what it spent still counts (a paid run never undercounts).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupersededAttempt {
    pub finished_at: String,
    pub infra_error: String,
    pub token_usage: TokenTotals,
    /// None when a price was unknown.
    pub cost_usd: Option<f64>,
    /// LLM requests the host retried in that attempt.
    #[serde(default)]
    pub llm_retries: u64,
}

impl SupersededAttempt {
    /// What `record` (an attempt the infrastructure stopped) spent, and the attempts it had
    /// itself superseded.
    pub fn from_record(record: &PairRecord, why: String) -> Vec<SupersededAttempt> {
        let mut token_usage = TokenTotals::default();
        let mut cost_usd = Some(0.0);
        for a in &record.agents {
            add_tokens(&mut token_usage, &a.token_usage);
            cost_usd = cost_usd.zip(a.cost_usd).map(|(x, y)| x + y);
        }
        let mut all = record.superseded.clone();
        all.push(SupersededAttempt {
            finished_at: record.finished_at.clone(),
            infra_error: why,
            token_usage,
            cost_usd,
            llm_retries: record.agents.iter().map(|a| u64::from(a.llm_retries)).sum(),
        });
        all
    }
}

/// Adds `b` into `a`.
pub fn add_tokens(a: &mut TokenTotals, b: &TokenTotals) {
    a.prompt_tokens += b.prompt_tokens;
    a.completion_tokens += b.completion_tokens;
    a.total_tokens += b.total_tokens;
    a.cache_read_tokens += b.cache_read_tokens;
    a.cache_write_tokens += b.cache_write_tokens;
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
    /// Earlier attempts the infrastructure stopped, redone by this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<SupersededAttempt>,
    /// The team setting: the lead, the mechanisms that were on and CooperBench's team metrics,
    /// under CooperBench's keys (`lead_agent`, `team_features`, `metrics`); the audit log they
    /// come from is `task_log.json` beside this file, the final list `tasks.json`.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamRecord>,
}

/// What the team setting leaves in result.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamRecord {
    pub lead_agent: String,
    pub team_features: crate::messaging::team::TeamMechanisms,
    pub metrics: crate::messaging::team::TeamMetrics,
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

/// Agent ids in order: `agent1..N` (coop) or `solo`.
pub(crate) fn agent_ids(setting: Setting, n: usize) -> Vec<String> {
    match setting {
        Setting::Solo => vec!["solo".into()],
        Setting::Coop | Setting::Team => (1..=n).map(|k| format!("agent{k}")).collect(),
    }
}

/// Feature ids each agent works on, aligned with `agent_ids`.
pub(crate) fn agent_features(setting: Setting, pair: &Pair) -> Vec<Vec<u32>> {
    match setting {
        Setting::Solo => vec![pair.features.clone()],
        Setting::Coop | Setting::Team => pair.features.iter().map(|f| vec![*f]).collect(),
    }
}
