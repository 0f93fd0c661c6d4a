//! Credentials as LiteLLM users keep them: the process environment over `./.env`. Values are
//! handed to the providers that need them and never shown.

use std::collections::HashMap;
use std::path::Path;

use crate::ModelError;

/// Process environment over the `.env` file of the working directory.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    vars: HashMap<String, String>,
}

impl Credentials {
    /// Reads `dir/.env` (if present) and the process environment (which wins).
    pub fn load(dir: &Path) -> Result<Credentials, ModelError> {
        let mut vars = HashMap::new();
        let path = dir.join(".env");
        if path.is_file() {
            let entries = dotenvy::from_path_iter(&path).map_err(|e| ModelError::EnvFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            for entry in entries {
                let (k, v) = entry.map_err(|e| ModelError::EnvFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                vars.insert(k, v);
            }
        }
        vars.extend(std::env::vars());
        Ok(Credentials { vars })
    }

    /// From explicit variables (tests).
    pub fn from_vars(vars: &[(&str, &str)]) -> Credentials {
        Credentials {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Whether `var` is set to something other than blanks (its value is never exposed).
    pub fn is_set(&self, var: &str) -> bool {
        self.get(var).is_some()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The first of `names` that is set, and its value.
    pub(crate) fn first(&self, names: &[&'static str]) -> Option<(&'static str, &str)> {
        names
            .iter()
            .find_map(|n| self.get(n).map(|v| (*n, v.trim())))
    }
}
