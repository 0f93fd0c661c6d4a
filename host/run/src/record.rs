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
