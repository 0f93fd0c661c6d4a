//! Dataset discovery in the CooperBench layout, subsets and selection filters.
//!
//! Layout: `<root>/<repo>_task/task<id>/feature<N>/{feature.md, feature.patch, tests.patch}`
//! plus `run_tests.sh` per task and `<root>/subsets/<name>.json`.

pub mod fetch;
pub mod listing;
pub mod metadata;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use metadata::RepoSource;

/// A dataset problem that stops the run; always names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(
        "dataset directory {0} does not exist (give --dataset-dir, or download the dataset there: \
         `cbench dataset fetch --dataset-dir {0}`)"
    )]
    Missing(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("subset file {path} is not valid: {reason}")]
    BadSubset { path: PathBuf, reason: String },
    #[error("subset `{name}` not found: no file {path}; {known}")]
    UnknownSubset {
        name: String,
        path: PathBuf,
        /// The subsets there are.
        known: String,
    },
    #[error("subset {path} names {repo}/task{task}, which is not in the dataset")]
    SubsetTaskMissing {
        path: PathBuf,
        repo: String,
        task: u64,
    },
    #[error("feature {feature} does not exist in {task_dir}")]
    UnknownFeature { feature: u32, task_dir: PathBuf },
    #[error("nothing selected: {0}")]
    EmptySelection(String),
}

/// One feature of a task.
#[derive(Debug, Clone)]
pub struct Feature {
    /// The feature number (`feature<N>`).
    pub id: u32,
    /// The feature directory.
    pub dir: PathBuf,
}

impl Feature {
    /// Agent-facing description.
    pub fn description_path(&self) -> PathBuf {
        self.dir.join("feature.md")
    }
    /// Gold implementation.
    pub fn gold_patch_path(&self) -> PathBuf {
        self.dir.join("feature.patch")
    }
    /// Hidden tests.
    pub fn tests_patch_path(&self) -> PathBuf {
        self.dir.join("tests.patch")
    }
}

/// One task: a repository at a base commit with several features.
#[derive(Debug, Clone)]
pub struct Task {
    /// Repository directory name, e.g. `cbench_textkit_task`.
    pub repo: String,
    /// Numeric task id (0 is valid).
    pub id: u64,
    /// The task directory.
    pub dir: PathBuf,
    /// Features sorted by id.
    pub features: Vec<Feature>,
    /// Where the base repository comes from.
    pub source: RepoSource,
}

impl Task {
    /// The feature with this id.
    pub fn feature(&self, id: u32) -> Option<&Feature> {
        self.features.iter().find(|f| f.id == id)
    }
    /// The task's test entry point: `run_tests.sh <repo> <tests.patch> [<feature.patch>]`.
    pub fn test_runner(&self) -> PathBuf {
        self.dir.join("run_tests.sh")
    }
    /// The task's container image under `prefix` (e.g. `akhatua/cooperbench-`).
    pub fn image(&self, prefix: &str) -> String {
        metadata::image_name(prefix, &self.repo, self.id)
    }
    /// `repo/task<id>` for messages.
    pub fn label(&self) -> String {
        format!("{}/task{}", self.repo, self.id)
    }
}

/// A group of features of one task run together (2 in a pair).
#[derive(Debug, Clone)]
pub struct Pair {
    pub task: Arc<Task>,
    /// Feature ids, ascending; agent k gets `features[k-1]`.
    pub features: Vec<u32>,
}

impl Pair {
    /// `features_<a>_<b>`.
    pub fn dir_name(&self) -> String {
        let ids: Vec<String> = self.features.iter().map(u32::to_string).collect();
        format!("features_{}", ids.join("_"))
    }
    /// Where this pair's logs go under a run directory.
    pub fn log_dir(&self, run_dir: &Path) -> PathBuf {
        run_dir
            .join(&self.task.repo)
            .join(crate::layout::task_dir_name(self.task.id))
            .join(self.dir_name())
    }
    /// Feature records in agent order.
    pub fn feature_records(&self) -> Vec<&Feature> {
        self.features
            .iter()
            .filter_map(|id| self.task.feature(*id))
            .collect()
    }
}

/// Which part of the dataset to use (`-s -r -t -f`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub subset: Option<String>,
    pub repo: Option<String>,
    pub task: Option<u64>,
    pub features: Option<Vec<u32>>,
}

/// A discovered dataset.
#[derive(Debug)]
pub struct Dataset {
    pub root: PathBuf,
    pub tasks: Vec<Arc<Task>>,
}

#[derive(Deserialize)]
struct SubsetFile {
    tasks: Vec<SubsetTask>,
}

#[derive(Deserialize)]
struct SubsetTask {
    repo: String,
    task_id: u64,
    pairs: Option<Vec<Vec<u32>>>,
}

fn read_dir_sorted(path: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        entries.push(entry.map_err(io)?.path());
    }
    entries.sort();
    Ok(entries)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Dataset {
    /// Discovers every task under `root`. Malformed feature or task directories are skipped
    /// with a warning that names them; unreadable directories are errors.
    pub fn discover(root: &Path) -> Result<Dataset, DatasetError> {
        if !root.is_dir() {
            return Err(DatasetError::Missing(root.to_path_buf()));
        }
        // Absolute paths: test runners are started from scratch directories.
        let root = &root.canonicalize().map_err(|source| DatasetError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let mut tasks = Vec::new();
        for repo_dir in read_dir_sorted(root)? {
            let repo = file_name(&repo_dir);
            if !repo_dir.is_dir() || !repo.ends_with("_task") {
                continue;
            }
            for task_dir in read_dir_sorted(&repo_dir)? {
                let name = file_name(&task_dir);
                let Some(id) = name
                    .strip_prefix("task")
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    if task_dir.is_dir() {
                        tracing::warn!("skipping {}: not a task<id> directory", task_dir.display());
                    }
                    continue;
                };
                let features = Self::discover_features(&task_dir)?;
                if features.len() < 2 {
                    tracing::warn!(
                        "skipping {}: fewer than two usable features",
                        task_dir.display()
                    );
                    continue;
                }
                let source = metadata::repo_source(&task_dir);
                if let RepoSource::Unknown(why) = &source {
                    tracing::warn!("{}: base repository unknown: {why}", task_dir.display());
                }
                tasks.push(Arc::new(Task {
                    repo: repo.clone(),
                    id,
                    dir: task_dir,
                    features,
                    source,
                }));
            }
        }
        tasks.sort_by(|a, b| (&a.repo, a.id).cmp(&(&b.repo, b.id)));
        Ok(Dataset {
            root: root.to_path_buf(),
            tasks,
        })
    }

    fn discover_features(task_dir: &Path) -> Result<Vec<Feature>, DatasetError> {
        let mut features = Vec::new();
        for dir in read_dir_sorted(task_dir)? {
            let name = file_name(&dir);
            let Some(number) = name.strip_prefix("feature") else {
                continue;
            };
            if !dir.is_dir() {
                continue;
            }
            let Ok(id) = number.parse::<u32>() else {
                tracing::warn!("skipping {}: feature number is not numeric", dir.display());
                continue;
            };
            let feature = Feature { id, dir };
            let missing: Vec<String> = [
                feature.description_path(),
                feature.gold_patch_path(),
                feature.tests_patch_path(),
            ]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
            if !missing.is_empty() {
                tracing::warn!("skipping feature: missing {}", missing.join(", "));
                continue;
            }
            features.push(feature);
        }
        features.sort_by_key(|f| f.id);
        Ok(features)
    }

    /// The pairs (or feature groups) a selection names, in a stable order.
    pub fn select(&self, selection: &Selection) -> Result<Vec<Pair>, DatasetError> {
        let subset = match &selection.subset {
            Some(name) => Some(self.load_subset(name)?),
            None => None,
        };
        let mut pairs = Vec::new();
        for task in &self.tasks {
            if selection
                .repo
                .as_ref()
                .is_some_and(|r| !repo_matches(r, &task.repo))
            {
                continue;
            }
            if selection.task.is_some_and(|t| t != task.id) {
                continue;
            }
            let candidate_groups: Vec<Vec<u32>> = match &subset {
                Some(map) => match map.get(&(task.repo.clone(), task.id)) {
                    Some(Some(groups)) => groups.clone(),
                    Some(None) => all_pairs(task),
                    None => continue,
                },
                None => all_pairs(task),
            };
            if let Some(wanted) = &selection.features {
                let mut wanted = wanted.clone();
                wanted.sort_unstable();
                for id in &wanted {
                    if task.feature(*id).is_none() {
                        return Err(DatasetError::UnknownFeature {
                            feature: *id,
                            task_dir: task.dir.clone(),
                        });
                    }
                }
                pairs.push(Pair {
                    task: task.clone(),
                    features: wanted,
                });
                continue;
            }
            for mut group in candidate_groups {
                group.sort_unstable();
                if let Some(missing) = group.iter().find(|id| task.feature(**id).is_none()) {
                    return Err(DatasetError::UnknownFeature {
                        feature: *missing,
                        task_dir: task.dir.clone(),
                    });
                }
                pairs.push(Pair {
                    task: task.clone(),
                    features: group,
                });
            }
        }
        if pairs.is_empty() {
            let hint = match (&selection.repo, selection.task) {
                (Some(wanted), _) if !self.tasks.iter().any(|t| repo_matches(wanted, &t.repo)) => {
                    crate::suggest::did_you_mean(wanted, self.tasks.iter().map(|t| t.repo.as_str()))
                }
                // A task id that no selected repo has: name the ones there are.
                (repo, Some(task))
                    if !self.tasks.iter().any(|t| {
                        t.id == task && repo.as_ref().is_none_or(|r| repo_matches(r, &t.repo))
                    }) =>
                {
                    let mut ids: Vec<String> = self
                        .tasks
                        .iter()
                        .filter(|t| repo.as_ref().is_none_or(|r| repo_matches(r, &t.repo)))
                        .map(|t| format!("{}/task{}", t.repo, t.id))
                        .collect();
                    let more = ids.len().saturating_sub(20);
                    ids.truncate(20);
                    format!(
                        " (the tasks there: {}{})",
                        ids.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    )
                }
                _ => String::new(),
            };
            return Err(DatasetError::EmptySelection(format!(
                "no pairs in {} match {}{hint}",
                self.root.display(),
                describe_selection(selection)
            )));
        }
        Ok(pairs)
    }

    /// Task → explicit groups (None = all pairs of the task).
    #[allow(clippy::type_complexity)]
    fn load_subset(
        &self,
        name: &str,
    ) -> Result<BTreeMap<(String, u64), Option<Vec<Vec<u32>>>>, DatasetError> {
        let path = self.root.join("subsets").join(format!("{name}.json"));
        if !path.is_file() {
            let mut known: Vec<String> = std::fs::read_dir(self.root.join("subsets"))
                .map(|entries| {
                    entries
                        .flatten()
                        .filter_map(|e| {
                            let file = e.file_name().to_string_lossy().into_owned();
                            file.strip_suffix(".json").map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            known.sort();
            return Err(DatasetError::UnknownSubset {
                name: name.to_string(),
                path,
                known: if known.is_empty() {
                    "this dataset has no subsets".into()
                } else {
                    format!(
                        "its subsets: {}{}",
                        known.join(", "),
                        crate::suggest::did_you_mean(name, known.iter().map(String::as_str))
                    )
                },
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| DatasetError::Io {
            path: path.clone(),
            source,
        })?;
        let file: SubsetFile =
            serde_json::from_str(&text).map_err(|e| DatasetError::BadSubset {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let mut map = BTreeMap::new();
        for t in file.tasks {
            if !self
                .tasks
                .iter()
                .any(|x| x.repo == t.repo && x.id == t.task_id)
            {
                return Err(DatasetError::SubsetTaskMissing {
                    path: path.clone(),
                    repo: t.repo,
                    task: t.task_id,
                });
            }
            if let Some(groups) = &t.pairs {
                if let Some(bad) = groups.iter().find(|g| g.len() < 2) {
                    return Err(DatasetError::BadSubset {
                        path: path.clone(),
                        reason: format!(
                            "pair {bad:?} of {}/task{} has fewer than two features",
                            t.repo, t.task_id
                        ),
                    });
                }
            }
            map.insert((t.repo, t.task_id), t.pairs);
        }
        Ok(map)
    }
}

/// `-r textkit` matches `cbench_textkit_task` as well as the full directory name.
fn repo_matches(wanted: &str, repo: &str) -> bool {
    repo == wanted || repo.strip_suffix("_task") == Some(wanted)
}

fn all_pairs(task: &Task) -> Vec<Vec<u32>> {
    let ids: Vec<u32> = task.features.iter().map(|f| f.id).collect();
    let mut groups = Vec::new();
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            groups.push(vec![*a, *b]);
        }
    }
    groups
}

fn describe_selection(s: &Selection) -> String {
    let mut parts = Vec::new();
    if let Some(x) = &s.subset {
        parts.push(format!("subset {x}"));
    }
    if let Some(x) = &s.repo {
        parts.push(format!("repo {x}"));
    }
    if let Some(x) = s.task {
        parts.push(format!("task {x}"));
    }
    if let Some(x) = &s.features {
        parts.push(format!("features {x:?}"));
    }
    if parts.is_empty() {
        "the whole dataset".into()
    } else {
        parts.join(", ")
    }
}

/// `llama_index_task/task8394 features_1_2`: how every progress line names its pair.
pub fn pair_label(pair: &Pair) -> String {
    format!(
        "{}/{} {}",
        pair.task.repo,
        crate::layout::task_dir_name(pair.task.id),
        pair.dir_name()
    )
}
