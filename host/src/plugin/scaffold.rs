//! `cbench plugin new`: a new plugin from a language kit.

use crate::cli::PluginNewArgs;

/// Why a plugin could not be scaffolded.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("plugin name `{0}`: use letters, digits and `_`, starting with a letter")]
    BadName(String),
    #[error(
        "cbench plugin new: not available in this build yet (the language kits are being written)"
    )]
    NotYetAvailable,
}

/// What `create` wrote.
pub struct Created;

impl Created {
    /// What to tell the user.
    pub fn render(&self) -> String {
        String::new()
    }
}

/// Creates the plugin directory.
pub fn create(args: &PluginNewArgs) -> Result<Created, ScaffoldError> {
    let _ = args;
    Err(ScaffoldError::NotYetAvailable)
}
