//! Which plugin an agent ran, as every record names it (the wasm host is `cbench-plugin`).

use serde::{Deserialize, Serialize};

/// Identity of a loaded plugin, recorded in every result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PluginIdentity {
    pub path: String,
    pub sha256: String,
    pub name: String,
    pub version: String,
    pub wit_version: String,
    /// What the plugin declared it uses (0.1.0 plugins: everything).
    #[serde(default)]
    pub capabilities: Vec<Capability>,
}

/// Something a plugin may use only when it declares it and the user allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Messaging,
    Git,
    /// Taking part in the team setting (WIT 0.3.0 and later).
    Team,
}

impl PluginIdentity {
    /// Whether the plugin declared `capability`.
    pub fn requests(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}
