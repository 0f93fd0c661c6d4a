//! Whether a pair's features go to one agent each (coop) or all to one agent (solo).

use serde::{Deserialize, Serialize};

/// Solo or coop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Setting {
    Solo,
    Coop,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Setting::Solo => "solo",
            Setting::Coop => "coop",
        })
    }
}
