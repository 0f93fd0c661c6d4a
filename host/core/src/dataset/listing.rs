//! `cbench dataset list`: what a selection contains, and (`--stats`) the task
//! characteristics computed from the gold patches: lines changed and files
//! modified per feature, and per pair the files both features touch.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Pair, RepoSource};

/// Files and changed lines of a unified diff.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PatchStats {
    /// Added plus removed lines.
    pub lines_changed: usize,
    /// Paths touched (new path for renames).
    pub files: Vec<String>,
}

/// Counts a unified diff's changed lines and files.
pub fn patch_stats(patch: &str) -> PatchStats {
    let mut stats = PatchStats::default();
    let mut in_hunk = false;
    for line in patch.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            in_hunk = false;
            // `a/<path> b/<path>`: take the b side.
            if let Some(pos) = rest.rfind(" b/") {
                let path = rest[pos + 3..].to_string();
                if !stats.files.contains(&path) {
                    stats.files.push(path);
                }
            }
        } else if line.starts_with("@@") {
            in_hunk = true;
        } else if in_hunk && (line.starts_with('+') || line.starts_with('-')) {
            stats.lines_changed += 1;
        }
    }
    stats
}

/// One feature's line in the listing.
#[derive(Debug, Serialize)]
pub struct FeatureListing {
    pub id: u32,
    #[serde(flatten)]
    pub stats: Option<PatchStats>,
}

/// One pair's line in the listing.
#[derive(Debug, Serialize)]
pub struct PairListing {
    pub features: Vec<u32>,
    /// Files every feature of the group touches (feature independence); with --stats.
    pub shared_files: Option<Vec<String>>,
}

/// One task's entry.
#[derive(Debug, Serialize)]
pub struct TaskListing {
    pub repo: String,
    pub task_id: u64,
    pub image: String,
    pub upstream_url: Option<String>,
    pub base_commit: Option<String>,
    pub bundled: bool,
    pub features: Vec<FeatureListing>,
    pub pairs: Vec<PairListing>,
}

/// The whole listing (`--json` prints this).
#[derive(Debug, Serialize)]
pub struct Listing {
    pub repos: usize,
    pub tasks: usize,
    pub features: usize,
    pub pairs: usize,
    pub per_task: Vec<TaskListing>,
}

/// Builds the listing of `pairs`; reads gold patches when `with_stats`.
pub fn list(pairs: &[Pair], image_prefix: &str, with_stats: bool) -> Listing {
    let mut by_task: BTreeMap<(String, u64), Vec<&Pair>> = BTreeMap::new();
    for p in pairs {
        by_task
            .entry((p.task.repo.clone(), p.task.id))
            .or_default()
            .push(p);
    }
    let mut per_task = Vec::new();
    let mut repos = BTreeSet::new();
    let mut feature_count = 0;
    for ((repo, task_id), group) in by_task {
        repos.insert(repo.clone());
        let task = &group[0].task;
        let used: BTreeSet<u32> = group
            .iter()
            .flat_map(|p| p.features.iter().copied())
            .collect();
        feature_count += used.len();
        let stats: BTreeMap<u32, PatchStats> = if with_stats {
            used.iter()
                .filter_map(|id| task.feature(*id))
                .map(|f| {
                    let text = std::fs::read_to_string(f.gold_patch_path()).unwrap_or_else(|e| {
                        tracing::warn!("cannot read {}: {e}", f.gold_patch_path().display());
                        String::new()
                    });
                    (f.id, patch_stats(&text))
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        let (upstream_url, base_commit) = match &task.source {
            RepoSource::Upstream { url, commit } => (Some(url.clone()), Some(commit.clone())),
            _ => (None, None),
        };
        per_task.push(TaskListing {
            image: task.image(image_prefix),
            bundled: matches!(task.source, RepoSource::Bundled(_)),
            upstream_url,
            base_commit,
            features: used
                .iter()
                .map(|id| FeatureListing {
                    id: *id,
                    stats: stats.get(id).cloned(),
                })
                .collect(),
            pairs: group
                .iter()
                .map(|p| PairListing {
                    features: p.features.clone(),
                    shared_files: with_stats.then(|| shared_files(&p.features, &stats)),
                })
                .collect(),
            repo,
            task_id,
        });
    }
    Listing {
        repos: repos.len(),
        tasks: per_task.len(),
        features: feature_count,
        pairs: pairs.len(),
        per_task,
    }
}

fn shared_files(features: &[u32], stats: &BTreeMap<u32, PatchStats>) -> Vec<String> {
    let mut sets = features.iter().map(|id| {
        stats
            .get(id)
            .map(|s| s.files.iter().cloned().collect::<BTreeSet<_>>())
            .unwrap_or_default()
    });
    let Some(first) = sets.next() else {
        return Vec::new();
    };
    sets.fold(first, |acc, s| acc.intersection(&s).cloned().collect())
        .into_iter()
        .collect()
}

impl Listing {
    /// Human-readable table.
    pub fn render(&self, with_stats: bool) -> String {
        use crate::progress::plural;
        let mut out = format!(
            "{} · {} · {} · {}\n",
            plural(self.repos, "repo", "repos"),
            plural(self.tasks, "task", "tasks"),
            plural(self.features, "feature", "features"),
            plural(self.pairs, "pair", "pairs"),
        );
        for t in &self.per_task {
            let origin = match (&t.upstream_url, &t.base_commit) {
                (Some(url), Some(commit)) => format!("{url} @ {}", &commit[..commit.len().min(12)]),
                _ if t.bundled => "bundled".to_string(),
                _ => "unknown origin".to_string(),
            };
            out.push_str(&format!(
                "  {}/task{}  features {}  pairs {}  {}  {}\n",
                t.repo,
                t.task_id,
                t.features.len(),
                t.pairs.len(),
                t.image,
                origin
            ));
            if with_stats {
                for f in &t.features {
                    if let Some(s) = &f.stats {
                        out.push_str(&format!(
                            "      feature{}: {} lines changed in {} file(s)\n",
                            f.id,
                            s.lines_changed,
                            s.files.len()
                        ));
                    }
                }
                for p in &t.pairs {
                    let shared = p.shared_files.as_deref().unwrap_or_default();
                    let ids: Vec<String> = p.features.iter().map(u32::to_string).collect();
                    out.push_str(&format!(
                        "      pair {}: {}\n",
                        ids.join(","),
                        if shared.is_empty() {
                            "no shared files".to_string()
                        } else {
                            format!("shares {}", shared.join(", "))
                        }
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_changed_lines_and_files() {
        let patch = "diff --git a/x.py b/x.py\nindex 1..2 100644\n--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n-a\n+b\n c\ndiff --git a/n.py b/n.py\nnew file mode 100644\n--- /dev/null\n+++ b/n.py\n@@ -0,0 +1 @@\n+new\n";
        assert_eq!(
            patch_stats(patch),
            PatchStats {
                lines_changed: 3,
                files: vec!["x.py".into(), "n.py".into()]
            }
        );
    }
}
