//! Whether a pair's features go to one agent each (coop, team) or all to one agent (solo).

use serde::{Deserialize, Serialize};

/// Solo, coop or team (coop with a lead and members coordinating through the host's task
/// list and typed requests, CooperBench 0.0.29's `--setting team`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Setting {
    Solo,
    Coop,
    Team,
}

impl Setting {
    /// Whether each feature goes to its own agent (coop and team).
    pub fn one_agent_per_feature(&self) -> bool {
        !matches!(self, Setting::Solo)
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Setting::Solo => "solo",
            Setting::Coop => "coop",
            Setting::Team => "team",
        })
    }
}
