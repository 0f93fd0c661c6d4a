//! Plugins pinned by their bytes: `--agent path@sha256:<hex>`, the `--lock` file that makes later
//! runs prove they are comparable, and what `cbench verify` reports of each recorded plugin
//! (the check itself reads config.json: `runrecord::verify_run`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{read_json, sha256_hex, write_json_atomic, FsError};
use crate::plugin::search::{Resolved, SearchPath};

/// A refused pin, naming the file and both hashes.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Search(#[from] crate::plugin::search::SearchError),
    #[error("{flag} {path}: cannot read: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {spec}: a pin is `path@sha256:` and 64 hex digits")]
    BadPin { flag: &'static str, spec: String },
    #[error("{flag} {path}: its sha256 is {actual}, but it is pinned to {pinned}; the file changed (rebuild or re-pin)")]
    Mismatch {
        flag: &'static str,
        path: PathBuf,
        actual: String,
        pinned: String,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("--lock {path}: this run is not comparable with the locked ones:\n  - {}\n(remove or rename the lock file to start a new series)", .differences.join("\n  - "))]
    LockMismatch {
        path: PathBuf,
        differences: Vec<String>,
    },
}

/// A plugin as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// `--agent` or `--team`: named in errors.
    pub flag: &'static str,
    pub path: PathBuf,
    /// The sha256 it must have, lower-case hex.
    pub pinned: Option<String>,
}

impl PluginSpec {
    /// Parses `path` or `path@sha256:<hex>`.
    pub fn parse(flag: &'static str, spec: &str) -> Result<PluginSpec, PinError> {
        match spec.rsplit_once("@sha256:") {
            Some((path, hex)) => {
                let hex = hex.to_ascii_lowercase();
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) || path.is_empty()
                {
                    return Err(PinError::BadPin {
                        flag,
                        spec: spec.to_string(),
                    });
                }
                Ok(PluginSpec {
                    flag,
                    path: PathBuf::from(path),
                    pinned: Some(hex),
                })
            }
            None => Ok(PluginSpec {
                flag,
                path: PathBuf::from(spec),
                pinned: None,
            }),
        }
    }

    /// The file (a path as given, or a plugin name found on the search path) once it exists
    /// and, if pinned, hashes to its pin.
    pub fn verify(self) -> Result<Resolved, PinError> {
        self.verify_on(&SearchPath::from_env())
    }

    /// [`PluginSpec::verify`] with an explicit search path.
    pub fn verify_on(self, search: &SearchPath) -> Result<Resolved, PinError> {
        let resolved = search.resolve(self.flag, &self.path.to_string_lossy())?;
        if let Some(pinned) = &self.pinned {
            let actual = file_sha256(self.flag, &resolved.path)?;
            if &actual != pinned {
                return Err(PinError::Mismatch {
                    flag: self.flag,
                    path: resolved.path.clone(),
                    actual,
                    pinned: pinned.clone(),
                });
            }
        }
        Ok(resolved)
    }
}

fn file_sha256(flag: &'static str, path: &Path) -> Result<String, PinError> {
    std::fs::read(path)
        .map(|bytes| sha256_hex(&bytes))
        .map_err(|source| PinError::Read {
            flag,
            path: path.to_path_buf(),
            source,
        })
}

/// The `--lock` file: what runs must share to be compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLock {
    /// Plugin file name → sha256, for every plugin of the series.
    pub plugins: BTreeMap<String, String>,
    pub model: String,
    pub setting: String,
    /// Hash of every selected pair's task inputs (tests, runners, feature texts, gold patches).
    pub dataset_sha256: String,
    pub pairs: usize,
    pub grading_version: String,
    pub merge_policy: String,
    /// Budgets and limits that change results.
    pub budgets: BTreeMap<String, String>,
}

impl RunLock {
    /// The differences from `other`, one line each.
    fn differences(&self, other: &RunLock) -> Vec<String> {
        let mut out = Vec::new();
        let mut field = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: locked {a}, now {b}"));
            }
        };
        for (name, sha) in &self.plugins {
            field(
                &format!("plugin {name}"),
                sha.clone(),
                other
                    .plugins
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "(not in this run)".into()),
            );
        }
        for (name, sha) in other
            .plugins
            .iter()
            .filter(|(n, _)| !self.plugins.contains_key(*n))
        {
            field(
                &format!("plugin {name}"),
                "(not locked)".into(),
                sha.clone(),
            );
        }
        field("model", self.model.clone(), other.model.clone());
        field("setting", self.setting.clone(), other.setting.clone());
        field(
            "dataset content",
            format!("{} ({} pairs)", self.dataset_sha256, self.pairs),
            format!("{} ({} pairs)", other.dataset_sha256, other.pairs),
        );
        field(
            "grading version",
            self.grading_version.clone(),
            other.grading_version.clone(),
        );
        field(
            "merge policy",
            self.merge_policy.clone(),
            other.merge_policy.clone(),
        );
        field(
            "budgets",
            format!("{:?}", self.budgets),
            format!("{:?}", other.budgets),
        );
        out
    }
}

/// Writes `lock` to `path`, or, when the file exists, refuses unless it is the same.
/// Plugins may be added to a series (a new contender) but never changed.
pub fn write_or_verify(path: &Path, lock: &RunLock) -> Result<bool, PinError> {
    if path.is_file() {
        let locked: RunLock = read_json(path)?;
        let mut expected = locked.clone();
        // A new plugin joins the series; a known one must keep its bytes.
        for (name, sha) in &lock.plugins {
            expected
                .plugins
                .entry(name.clone())
                .or_insert_with(|| sha.clone());
        }
        let mut now = lock.clone();
        for (name, sha) in &expected.plugins {
            now.plugins
                .entry(name.clone())
                .or_insert_with(|| sha.clone());
        }
        let differences = expected.differences(&now);
        if !differences.is_empty() {
            return Err(PinError::LockMismatch {
                path: path.to_path_buf(),
                differences,
            });
        }
        if expected != locked {
            write_json_atomic(path, &expected)?;
        }
        return Ok(false);
    }
    write_json_atomic(path, lock)?;
    Ok(true)
}

/// One recorded plugin of a run checked against the file at its recorded path.
#[derive(Debug, Clone, Serialize)]
pub struct PluginCheck {
    pub role: String,
    pub path: String,
    pub recorded_sha256: String,
    /// None when the file is gone.
    pub actual_sha256: Option<String>,
}

impl PluginCheck {
    /// The file is there with the recorded bytes.
    pub fn ok(&self) -> bool {
        self.actual_sha256.as_deref() == Some(self.recorded_sha256.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_bad_pins_are_named() {
        let hex = "ab".repeat(32);
        let spec = PluginSpec::parse("--agent", &format!("a@b.wasm@sha256:{hex}")).unwrap();
        assert_eq!(spec.path, PathBuf::from("a@b.wasm"));
        assert_eq!(spec.pinned.as_deref(), Some(hex.as_str()));
        assert_eq!(PluginSpec::parse("--agent", "x.wasm").unwrap().pinned, None);
        let err = PluginSpec::parse("--team", "x.wasm@sha256:123").unwrap_err();
        assert!(
            err.to_string().starts_with("--team x.wasm@sha256:123"),
            "{err}"
        );
    }

    #[test]
    fn a_lock_accepts_new_plugins_and_refuses_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cbench.lock");
        let lock = RunLock {
            plugins: BTreeMap::from([("a.wasm".into(), "1".into())]),
            model: "oracle".into(),
            setting: "coop".into(),
            dataset_sha256: "d".into(),
            pairs: 10,
            grading_version: "g".into(),
            merge_policy: "union".into(),
            budgets: BTreeMap::new(),
        };
        assert!(write_or_verify(&path, &lock).unwrap());
        let mut joined = lock.clone();
        joined.plugins = BTreeMap::from([("b.wasm".into(), "2".into())]);
        assert!(!write_or_verify(&path, &joined).unwrap());
        let mut changed = lock.clone();
        changed.plugins.insert("a.wasm".into(), "3".into());
        changed.model = "gpt-4o".into();
        let err = write_or_verify(&path, &changed).unwrap_err().to_string();
        assert!(err.contains("plugin a.wasm: locked 1, now 3"), "{err}");
        assert!(err.contains("model: locked oracle, now gpt-4o"), "{err}");
    }
}
