//! The run directory's documented layout: `<run>/<repo>/task<id>/features_<a>_<b>/`.
//!
//! Runs written before the layout matched CooperBench's documentation used `<repo>/<id>/…`; they
//! are read as they are (report, view, replay) and migrated once, with a message, by the commands
//! that write into a run (`run`, `eval`).

/// Per agent: what the plugin printed to stdout/stderr (bounded), written only when it printed.
pub const PLUGIN_OUTPUT_FILE: &str = "plugin_output.log";
/// The team setting's audit log in a pair directory: CooperBench's `task-log` events as a JSON
/// list, under CooperBench's file name.
pub const TEAM_LOG_FILE: &str = "task_log.json";
/// The team setting's task list when the last agent ended (CooperBench's file name).
pub const TEAM_TASKS_FILE: &str = "tasks.json";

use std::path::{Path, PathBuf};

/// `task<id>`: a task's directory name under its repository.
pub fn task_dir_name(task_id: u64) -> String {
    format!("task{task_id}")
}

/// One pair directory found in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairDir {
    /// Repository directory name (`llama_index_task`).
    pub repo: String,
    /// Task id (`8394`).
    pub task: u64,
    /// `features_1_2`.
    pub features: String,
    /// Where it is on disk (either layout).
    pub path: PathBuf,
}

impl PairDir {
    /// `repo/task<id>/features_…`: the pair's key in every cbench output.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.repo,
            task_dir_name(self.task),
            self.features
        )
    }

    /// Feature ids from the directory name (`features_1_2` → `[1, 2]`).
    pub fn feature_ids(&self) -> Vec<u32> {
        self.features
            .strip_prefix("features_")
            .unwrap_or_default()
            .split('_')
            .filter_map(|n| n.parse().ok())
            .collect()
    }
}

/// Task id of a task directory name, in either layout (`task12` or the earlier `12`).
fn task_id_of(name: &str) -> Option<(u64, bool)> {
    let (digits, legacy) = match name.strip_prefix("task") {
        Some(rest) => (rest, false),
        None => (name, true),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|id| (id, legacy))
}

fn subdirs(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every pair directory of a run, in either layout, sorted by key. Never writes.
pub fn pair_dirs(run_dir: &Path) -> std::io::Result<Vec<PairDir>> {
    let mut out = Vec::new();
    for repo_dir in subdirs(run_dir)? {
        for task_dir in subdirs(&repo_dir)? {
            let Some((task, _)) = task_id_of(&name_of(&task_dir)) else {
                continue;
            };
            for pair_dir in subdirs(&task_dir)? {
                let features = name_of(&pair_dir);
                if !features.starts_with("features_") {
                    continue;
                }
                out.push(PairDir {
                    repo: name_of(&repo_dir),
                    task,
                    features,
                    path: pair_dir,
                });
            }
        }
    }
    out.sort_by_key(|p| (p.repo.clone(), p.task, p.features.clone()));
    Ok(out)
}

/// Pairs a command that reads results needs (report, view, compare): a directory with none is
/// an error naming what was expected, never an empty report.
pub fn required_pair_dirs(run_dir: &Path) -> Result<Vec<PairDir>, NoPairs> {
    let pairs = pair_dirs(run_dir).map_err(|source| NoPairs::Walk {
        path: run_dir.to_path_buf(),
        source,
    })?;
    if !pairs.is_empty() {
        return Ok(pairs);
    }
    let cooperbench = ["coop", "solo", "team"]
        .iter()
        .any(|s| run_dir.join(s).is_dir());
    Err(if cooperbench {
        NoPairs::CooperBench {
            path: run_dir.to_path_buf(),
        }
    } else {
        NoPairs::Empty {
            path: run_dir.to_path_buf(),
        }
    })
}

/// Why a run directory has no pair to read.
#[derive(Debug, thiserror::Error)]
pub enum NoPairs {
    #[error("{path}: no pairs: expected <repo>/task<id>/features_<a>_<b>/ directories (result.json, eval.json); the run has not run a pair yet, or this is not a cbench run")]
    Empty { path: PathBuf },
    #[error("{path} is a CooperBench run directory (<setting>/<repo>/<task_id>/f<a>_f<b>/), not a cbench run: bring it in with `cbench import cooperbench {path}`")]
    CooperBench { path: PathBuf },
    #[error("cannot read the pairs of {path}: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Finds a pair's directory in a run of either layout (the documented one when neither exists).
pub fn find_pair_dir(run_dir: &Path, repo: &str, task: u64, features: &str) -> PathBuf {
    let documented = run_dir.join(repo).join(task_dir_name(task)).join(features);
    if documented.exists() {
        return documented;
    }
    let legacy = run_dir.join(repo).join(task.to_string()).join(features);
    if legacy.exists() {
        legacy
    } else {
        documented
    }
}

/// Error of a layout migration, naming the directory at fault.
#[derive(Debug, thiserror::Error)]
#[error("migrating {} to the documented layout (<repo>/task<id>/…): {reason}", path.display())]
pub struct MigrationError {
    /// The task directory that could not be moved.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// Renames `<repo>/<id>/` task directories to `<repo>/task<id>/`; returns how many moved.
/// A run holding both names for one task is refused rather than merged.
pub fn migrate_legacy(run_dir: &Path) -> Result<usize, MigrationError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| MigrationError {
            path,
            reason: e.to_string(),
        }
    };
    if !run_dir.is_dir() {
        return Ok(0);
    }
    let mut moved = 0;
    for repo_dir in subdirs(run_dir).map_err(io(run_dir))? {
        for task_dir in subdirs(&repo_dir).map_err(io(&repo_dir))? {
            let Some((task, true)) = task_id_of(&name_of(&task_dir)) else {
                continue;
            };
            let target = repo_dir.join(task_dir_name(task));
            if target.exists() {
                return Err(MigrationError {
                    path: task_dir.clone(),
                    reason: format!(
                        "{} exists too; move or remove one of them",
                        target.display()
                    ),
                });
            }
            std::fs::rename(&task_dir, &target).map_err(io(&task_dir))?;
            moved += 1;
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch_pair(run: &Path, task_dir: &str, features: &str) {
        let dir = run.join("repo_task").join(task_dir).join(features);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("result.json"), "{}").unwrap();
    }

    #[test]
    fn both_layouts_are_read_under_the_documented_key() {
        let run = tempfile::tempdir().unwrap();
        touch_pair(run.path(), "task3", "features_1_2");
        touch_pair(run.path(), "7", "features_2_3");
        std::fs::create_dir_all(run.path().join("repo_task/notes")).unwrap();
        let keys: Vec<String> = pair_dirs(run.path())
            .unwrap()
            .iter()
            .map(PairDir::key)
            .collect();
        assert_eq!(
            keys,
            [
                "repo_task/task3/features_1_2",
                "repo_task/task7/features_2_3"
            ]
        );
    }

    #[test]
    fn migration_moves_legacy_task_dirs_once() {
        let run = tempfile::tempdir().unwrap();
        touch_pair(run.path(), "7", "features_2_3");
        assert_eq!(migrate_legacy(run.path()).unwrap(), 1);
        assert!(run
            .path()
            .join("repo_task/task7/features_2_3/result.json")
            .is_file());
        assert_eq!(migrate_legacy(run.path()).unwrap(), 0);
    }

    #[test]
    fn migration_refuses_a_task_present_under_both_names() {
        let run = tempfile::tempdir().unwrap();
        touch_pair(run.path(), "7", "features_1_2");
        touch_pair(run.path(), "task7", "features_2_3");
        let err = migrate_legacy(run.path()).unwrap_err().to_string();
        assert!(err.contains("task7 exists too"), "{err}");
    }
}

/// The runs under `log_dir`: its directories holding a config.json.
pub fn run_names(log_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(log_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("config.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
