//! What a plugin's binary says it is (its WIT version, imports and exports), checked without
//! compiling it.

use std::path::Path;

use crate::inspect;
use crate::{PluginError, SUPPORTED_WIT_VERSIONS, WIT_PACKAGE};

/// A plugin's contract as read from its binary.
#[derive(Debug, Clone)]
pub struct Contract {
    /// The `cooperbench:agent` version it exports.
    pub wit_version: String,
    /// Its top-level imports and exports.
    pub interfaces: inspect::ComponentInterfaces,
}

/// Checks, without compiling, that `bytes` is an agent plugin of a WIT version this host
/// serves whose every import the host provides.
pub fn check_contract(path: &Path, bytes: &[u8]) -> Result<Contract, PluginError> {
    let interfaces =
        inspect::read_interfaces(bytes).map_err(|reason| PluginError::InvalidWasm {
            path: path.to_path_buf(),
            reason,
        })?;
    let wit_version = match interfaces.agent_export() {
        inspect::AgentExport::Versioned(v) => v,
        inspect::AgentExport::Unversioned => {
            return Err(PluginError::UnversionedWit {
                path: path.to_path_buf(),
                supported: supported_versions(),
            })
        }
        inspect::AgentExport::Missing => {
            return Err(PluginError::NotAnAgent {
                path: path.to_path_buf(),
                exports: if interfaces.exports.is_empty() {
                    "none".into()
                } else {
                    interfaces.exports.join(", ")
                },
            })
        }
    };
    if !SUPPORTED_WIT_VERSIONS.contains(&wit_version.as_str()) {
        return Err(PluginError::UnsupportedWitVersion {
            path: path.to_path_buf(),
            found: wit_version,
            supported: supported_versions(),
        });
    }
    let unprovided = interfaces.unprovided_imports(&wit_version);
    if !unprovided.is_empty() {
        return Err(PluginError::UnprovidedImports {
            path: path.to_path_buf(),
            version: wit_version,
            imports: unprovided
                .iter()
                .map(|u| format!("`{}` ({})", u.name, u.advice))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    Ok(Contract {
        wit_version,
        interfaces,
    })
}

/// `cooperbench:agent@0.2.0 and cooperbench:agent@0.1.0`.
pub(crate) fn supported_versions() -> String {
    SUPPORTED_WIT_VERSIONS
        .iter()
        .map(|v| format!("{WIT_PACKAGE}@{v}"))
        .collect::<Vec<_>>()
        .join(" and ")
}
