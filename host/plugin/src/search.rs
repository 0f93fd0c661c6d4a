//! Plugins by name: `--agent mini_swe` finds `mini_swe.wasm` on the plugin search path
//! (`$CBENCH_PLUGIN_PATH`, `./plugins/`, where `setup.sh` installed the plugins, and the
//! checkout the binary was built in), so a run works from any directory. The variable comes
//! first: what the user set explicitly is not overridden by the directory they stand in. CooperBench's agent
//! names resolve to the plugin that stands in for them.

use std::path::{Path, PathBuf};

/// The plugin `cbench run` uses when `--agent` is not given.
pub const DEFAULT_AGENT: &str = "mini_swe";

/// CooperBench's agent names and the cbench plugin that stands in for each.
pub const COOPERBENCH_AGENTS: &[(&str, &str)] = &[
    ("mini_swe_agent", "mini_swe"),
    ("mini_swe_agent_v2", "mini_swe"),
];

/// Variable listing extra plugin directories, `:`-separated.
pub const PLUGIN_PATH_VAR: &str = "CBENCH_PLUGIN_PATH";

/// Why a plugin name or path does not lead to a file.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SearchError {
    #[error("{flag} {name}: no plugin of that name; looked for {file} in {searched} (set {PLUGIN_PATH_VAR}, or give a path to a .wasm file){known}")]
    UnknownName {
        flag: &'static str,
        name: String,
        file: String,
        searched: String,
        known: String,
    },
    #[error("{flag} {path}: file not found")]
    MissingFile { flag: &'static str, path: PathBuf },
    #[error("{flag} {path}: not a regular file (a FIFO, a device, or a link to nothing)")]
    NotAFile { flag: &'static str, path: PathBuf },
    #[error("{flag} {path}: is a directory, not a plugin; give its built .wasm file (e.g. {path}.wasm) or a plugin name")]
    Directory { flag: &'static str, path: PathBuf },
}

/// Where a search-path directory came from (shown by `cbench plugin list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `./plugins` of the working directory.
    WorkingDirectory,
    /// An entry of `$CBENCH_PLUGIN_PATH`.
    Variable,
    /// `setup.sh`'s install directory (`$XDG_DATA_HOME/cbench/plugins`).
    Installed,
    /// `plugins/` of the checkout the running binary was built in.
    Checkout,
}

/// The ordered directories a plugin name is looked up in; the first match wins.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPath {
    pub dirs: Vec<(PathBuf, Origin)>,
}

/// A plugin argument turned into a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub path: PathBuf,
    /// The CooperBench agent name given, when it stood for a cbench plugin.
    pub stands_in_for: Option<String>,
}

/// A plugin file found on the search path.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Found {
    pub name: String,
    pub path: PathBuf,
    pub origin: Origin,
    /// An earlier directory has a plugin of the same name, which is the one a name resolves to.
    pub shadowed: bool,
}

/// `$XDG_DATA_HOME/cbench/plugins`, else `~/.local/share/cbench/plugins`: where `setup.sh`
/// installs the plugins it builds.
pub fn installed_dir() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local").join("share"))
        })?;
    Some(data.join("cbench").join("plugins"))
}

/// `plugins/` of the checkout when the running binary sits in its `target/<profile>/`.
fn checkout_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?;
    let target = profile_dir.parent()?;
    if target.file_name()? != "target" {
        return None;
    }
    Some(target.parent()?.join("plugins"))
}

impl SearchPath {
    /// The search path of this process: `./plugins`, `$CBENCH_PLUGIN_PATH`, the install
    /// directory, the checkout's `plugins/`.
    pub fn from_env() -> SearchPath {
        let mut dirs = Vec::new();
        if let Some(list) = std::env::var_os(PLUGIN_PATH_VAR) {
            dirs.extend(
                std::env::split_paths(&list)
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|p| (p, Origin::Variable)),
            );
        }
        dirs.push((PathBuf::from("plugins"), Origin::WorkingDirectory));
        dirs.extend(installed_dir().map(|d| (d, Origin::Installed)));
        dirs.extend(checkout_dir().map(|d| (d, Origin::Checkout)));
        SearchPath { dirs }
    }

    /// Turns `--agent`'s value (a path or a name, without any `@sha256:` pin) into a file.
    /// A value with a `/` or ending in `.wasm` is a path; otherwise an existing file of that
    /// name is taken as it is, and anything else is a plugin name.
    pub fn resolve(&self, flag: &'static str, spec: &str) -> Result<Resolved, SearchError> {
        let as_path = Path::new(spec);
        let looks_like_path = spec.contains('/') || spec.ends_with(".wasm");
        if looks_like_path || as_path.is_file() {
            if as_path.is_dir() {
                return Err(SearchError::Directory {
                    flag,
                    path: as_path.to_path_buf(),
                });
            }
            if !as_path.is_file() {
                let exists = std::fs::symlink_metadata(as_path).is_ok();
                return Err(if exists {
                    SearchError::NotAFile {
                        flag,
                        path: as_path.to_path_buf(),
                    }
                } else {
                    SearchError::MissingFile {
                        flag,
                        path: as_path.to_path_buf(),
                    }
                });
            }
            return Ok(Resolved {
                path: as_path.to_path_buf(),
                stands_in_for: None,
            });
        }
        let (name, stands_in_for) = match COOPERBENCH_AGENTS.iter().find(|(cb, _)| *cb == spec) {
            Some((cb, ours)) => (*ours, Some(cb.to_string())),
            None => (spec, None),
        };
        let file = format!("{name}.wasm");
        for (dir, _) in &self.dirs {
            let candidate = dir.join(&file);
            if std::fs::symlink_metadata(&candidate).is_ok() && !candidate.is_file() {
                return Err(SearchError::NotAFile {
                    flag,
                    path: candidate,
                });
            }
            if candidate.is_file() {
                // Absolute, so the run's record names the same file from any directory.
                let path = std::path::absolute(&candidate).unwrap_or(candidate);
                return Ok(Resolved {
                    path,
                    stands_in_for,
                });
            }
        }
        if as_path.is_dir() {
            return Err(SearchError::Directory {
                flag,
                path: as_path.to_path_buf(),
            });
        }
        let known: Vec<String> = self
            .list()
            .into_iter()
            .filter(|f| !f.shadowed)
            .map(|f| f.name.escape_debug().to_string())
            .collect();
        Err(SearchError::UnknownName {
            flag,
            name: spec.to_string(),
            file,
            searched: self
                .dirs
                .iter()
                .map(|(d, _)| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            known: if known.is_empty() {
                "; no plugins are installed there (./scripts/setup.sh builds them)".into()
            } else {
                let guess = crate::suggest::closest(name, known.iter().map(String::as_str))
                    .map(|g| format!("; did you mean `{g}`?"))
                    .unwrap_or_default();
                format!("{guess}; plugins found: {}", known.join(", "))
            },
        })
    }

    /// Every `*.wasm` on the search path, in lookup order, names sorted within a directory.
    pub fn list(&self) -> Vec<Found> {
        let mut found: Vec<Found> = Vec::new();
        let mut seen_dirs: Vec<PathBuf> = Vec::new();
        for (dir, origin) in &self.dirs {
            // The same directory reached twice (e.g. run from the checkout) is listed once.
            let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            if seen_dirs.contains(&canonical) {
                continue;
            }
            seen_dirs.push(canonical);
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut here: Vec<(String, PathBuf)> = entries
                .filter_map(Result::ok)
                // As resolution sees them: a link to a plugin is one.
                .filter(|e| e.path().is_file())
                .filter_map(|e| {
                    let path = e.path();
                    let name = path
                        .file_name()?
                        .to_str()?
                        .strip_suffix(".wasm")?
                        .to_string();
                    Some((name, path))
                })
                .collect();
            here.sort();
            for (name, path) in here {
                let shadowed = found.iter().any(|f| f.name == name);
                found.push(Found {
                    name,
                    path,
                    origin: *origin,
                    shadowed,
                });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(dirs: &[&Path]) -> SearchPath {
        SearchPath {
            dirs: dirs
                .iter()
                .map(|d| (d.to_path_buf(), Origin::Variable))
                .collect(),
        }
    }

    #[test]
    fn names_resolve_in_order_and_cooperbench_names_stand_in() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        std::fs::write(second.path().join("mini_swe.wasm"), b"x").unwrap();
        std::fs::write(second.path().join("other.wasm"), b"x").unwrap();
        std::fs::write(first.path().join("other.wasm"), b"y").unwrap();
        let search = path_of(&[first.path(), second.path()]);
        let r = search.resolve("--agent", "mini_swe").unwrap();
        assert_eq!(r.path, second.path().join("mini_swe.wasm"));
        assert_eq!(r.stands_in_for, None);
        let r = search.resolve("--agent", "mini_swe_agent_v2").unwrap();
        assert_eq!(r.path, second.path().join("mini_swe.wasm"));
        assert_eq!(r.stands_in_for.as_deref(), Some("mini_swe_agent_v2"));
        assert_eq!(
            search.resolve("--agent", "other").unwrap().path,
            first.path().join("other.wasm")
        );
        let listed = search.list();
        assert_eq!(listed.len(), 3);
        assert!(listed
            .iter()
            .any(|f| f.name == "other" && f.shadowed && f.path.starts_with(second.path())));
    }

    #[test]
    fn an_unknown_name_lists_where_it_looked_and_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mini_swe.wasm"), b"x").unwrap();
        let err = path_of(&[dir.path()])
            .resolve("--agent", "nosuch")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nosuch.wasm"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("plugins found: mini_swe"), "{err}");
    }

    #[test]
    fn paths_stay_paths_and_directories_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let search = path_of(&[dir.path()]);
        let missing = dir.path().join("gone.wasm");
        assert!(matches!(
            search.resolve("--agent", missing.to_str().unwrap()),
            Err(SearchError::MissingFile { .. })
        ));
        let err = search
            .resolve("--agent", dir.path().to_str().unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("is a directory, not a plugin"),
            "{err}"
        );
    }
}
