//! One agent as the plugin host sees it: the task and environment it is given, and how its
//! run ended.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::llm::{LlmSession, Setting};
use crate::messaging::team::{TeamBoard, TeamMechanisms, TeamRole};
use crate::messaging::MessageBus;
use crate::progress::Progress;
use crate::sandbox::Sandbox;
use crate::trajectory::{Recorder, Trajectory};
use crate::PluginLimits;

/// The task record given to the plugin (host-side form).
#[derive(Debug, Clone)]
pub struct AgentTask {
    pub agent_id: String,
    pub teammates: Vec<String>,
    pub setting: Setting,
    pub feature_text: String,
    pub max_steps: u32,
    pub command_timeout: Duration,
    pub git_enabled: bool,
    pub messaging_enabled: bool,
    pub agent_config: String,
    /// The team setting as this agent sees it; none in solo and coop.
    pub team: Option<TeamInfo>,
}

/// An agent's place in the team setting.
#[derive(Debug, Clone)]
pub struct TeamInfo {
    pub role: TeamRole,
    pub lead: String,
    pub mechanisms: TeamMechanisms,
    /// Where the scratchpad is inside this agent's sandbox; none when off.
    pub scratchpad: Option<String>,
}

/// Everything one agent instance is given by the runner.
pub struct AgentEnv {
    pub task: AgentTask,
    pub sandbox: Arc<dyn Sandbox>,
    pub llm: Box<dyn LlmSession>,
    pub bus: MessageBus,
    /// The team setting's shared board (task list and requests); none in solo and coop.
    pub team: Option<TeamBoard>,
    pub recorder: Recorder,
    pub progress: Progress,
    /// Where delivered messages are announced live (`cbench watch`).
    pub events: Option<crate::events::PairEvents>,
    pub limits: PluginLimits,
    /// LLM budget the host enforces.
    pub budget: crate::llm::budget::AgentBudget,
}

/// How an agent's run ended (the host's view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentStatus {
    Submitted,
    StepLimitReached,
    LimitsExceeded,
    Error,
    /// Ended by the infrastructure (provider down, sandbox broken): not a result; the
    /// next run of the same name runs the pair again.
    InfraError,
}

impl AgentStatus {
    /// The name used in files.
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentStatus::Submitted => "Submitted",
            AgentStatus::StepLimitReached => "StepLimitReached",
            AgentStatus::LimitsExceeded => "LimitsExceeded",
            AgentStatus::Error => "Error",
            AgentStatus::InfraError => "InfraError",
        }
    }
}

/// What the host knows after `run` returned (or trapped).
#[derive(Debug)]
pub struct AgentRun {
    pub status: AgentStatus,
    pub error: Option<String>,
    pub summary: Option<String>,
    pub steps: u32,
    pub trajectory: Trajectory,
    pub compute: Duration,
    pub wall: Duration,
    /// What the plugin printed to stdout and stderr (bounded).
    pub plugin_output: String,
}
