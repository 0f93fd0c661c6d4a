//! `cbench gold`: validate a dataset selection with its own gold patches (as
//! SWE-bench's gold run does): each feature's gold patch against its own
//! tests, and every pair's gold patches through a naive merge. The report has
//! the shape of CooperBench's `gold_conflict_report.json`, with apply failures
//! reported as such instead of as clean merges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::dataset::{Pair, Task};
use crate::merge::{merge_patches, MergePolicy, MergeStrategy};
use crate::progress::{Outcome, Progress};
use crate::repos::BaseRepos;
use crate::sandbox::confine::Confinement;
use crate::Grader;

/// One pair's naive-merge check (CooperBench's `all_results` entry, plus `apply_failed`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PairCheck {
    pub repo: String,
    pub task_id: u64,
    pub f1: u32,
    pub f2: u32,
    pub has_conflict: bool,
    pub patch1_apply_failed: bool,
    pub patch2_apply_failed: bool,
    pub error: Option<String>,
}

/// One feature's gold patch against its own tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureCheck {
    pub repo: String,
    pub task_id: u64,
    pub feature_id: u32,
    pub success: bool,
    pub tests_passed: u32,
    pub tests_failed: u32,
    pub error: Option<String>,
}

/// Counts over all pairs (or one task's).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub total: usize,
    pub conflicts: usize,
    pub clean: usize,
    /// Pairs where a gold patch did not apply: neither clean nor a conflict.
    #[serde(default)]
    pub apply_failures: usize,
    pub errors: usize,
}

/// The report's summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub total_pairs: usize,
    pub conflicts: usize,
    pub clean_merges: usize,
    #[serde(default)]
    pub apply_failures: usize,
    pub errors: usize,
    pub conflict_rate: String,
    pub elapsed_seconds: f64,
    #[serde(default)]
    pub features_checked: usize,
    #[serde(default)]
    pub features_passing: usize,
}

/// gold_conflict_report.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoldReport {
    pub summary: Summary,
    pub per_task: BTreeMap<String, Counts>,
    pub conflict_pairs: Vec<BTreeMap<String, serde_json::Value>>,
    pub all_results: Vec<PairCheck>,
    #[serde(default)]
    pub feature_results: Vec<FeatureCheck>,
}

impl PairCheck {
    /// `clean`, `conflict`, `apply failed (feature 2)` or `error`.
    pub fn describe(&self) -> String {
        if self.error.is_some() {
            "error".to_string()
        } else if self.patch1_apply_failed || self.patch2_apply_failed {
            format!(
                "apply failed ({})",
                [
                    (self.patch1_apply_failed, self.f1),
                    (self.patch2_apply_failed, self.f2)
                ]
                .iter()
                .filter(|(failed, _)| *failed)
                .map(|(_, f)| format!("feature {f}"))
                .collect::<Vec<_>>()
                .join(", ")
            )
        } else if self.has_conflict {
            "conflict".to_string()
        } else {
            "clean".to_string()
        }
    }
}

/// What `gold` needs.
pub struct GoldConfig {
    pub run_tests: bool,
    pub concurrency: usize,
    pub test_timeout: Duration,
    /// Runner logs go under `<log_dir>/<repo>/<task>/feature<N>/`.
    pub log_dir: PathBuf,
    pub scratch: PathBuf,
    /// No per-pair / per-feature progress lines.
    pub quiet: bool,
    /// How test runs are confined (as graders are).
    pub confinement: Confinement,
}

/// Checks every pair in `pairs` (and, with `run_tests`, every feature they use).
pub async fn check(pairs: &[Pair], bases: Arc<BaseRepos>, cfg: &GoldConfig) -> GoldReport {
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    // Confined like a run's graders: a verdict here is the verdict grading would give.
    let grader = Arc::new(Grader::new(
        cfg.test_timeout,
        MergePolicy::Lead,
        crate::testbench::GradingBackend::Local(cfg.confinement.clone()),
    ));

    let feature_count = if cfg.run_tests {
        pairs
            .iter()
            .flat_map(|p| {
                p.features
                    .iter()
                    .map(|f| (p.task.repo.clone(), p.task.id, *f))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    } else {
        0
    };
    let progress = Progress::with_status(cfg.quiet, pairs.len() + feature_count, "checks");
    let mut merges = tokio::task::JoinSet::new();
    for (i, pair) in pairs.iter().enumerate() {
        let (pair, bases, slots, scratch) = (
            pair.clone(),
            bases.clone(),
            slots.clone(),
            cfg.scratch.clone(),
        );
        let progress = progress.for_item(&crate::dataset::pair_label(&pair));
        merges.spawn(async move {
            let _slot = slots.acquire().await;
            let check = check_pair(&pair, &bases, &scratch).await;
            progress.line(&format!("gold merge: {}", check.describe()));
            progress.finished(if check.error.is_some() {
                Outcome::InfraError
            } else {
                Outcome::Success
            });
            (i, check)
        });
    }
    let mut features = tokio::task::JoinSet::new();
    if cfg.run_tests {
        let mut seen = std::collections::BTreeSet::new();
        for pair in pairs {
            for id in &pair.features {
                if seen.insert((pair.task.repo.clone(), pair.task.id, *id)) {
                    let (task, bases, slots, grader) = (
                        pair.task.clone(),
                        bases.clone(),
                        slots.clone(),
                        grader.clone(),
                    );
                    let (scratch, log_dir, id) = (cfg.scratch.clone(), cfg.log_dir.clone(), *id);
                    let progress = progress.for_item(&format!(
                        "{}/{} feature{id}",
                        task.repo,
                        crate::layout::task_dir_name(task.id)
                    ));
                    features.spawn(async move {
                        let _slot = slots.acquire().await;
                        let check =
                            check_feature(&task, id, &bases, &grader, &scratch, &log_dir).await;
                        progress.line(&match (&check.error, check.success) {
                            (_, true) => format!(
                                "✓ gold patch passes its tests ({} passed)",
                                check.tests_passed
                            ),
                            (Some(e), false) => format!("✗ {e}"),
                            (None, false) => format!(
                                "✗ gold patch fails its own tests ({} passed, {} failed)",
                                check.tests_passed, check.tests_failed
                            ),
                        });
                        progress.finished(if check.success {
                            Outcome::Success
                        } else {
                            Outcome::Failure
                        });
                        check
                    });
                }
            }
        }
    }
    let mut all_results: Vec<(usize, PairCheck)> = merges.join_all().await;
    all_results.sort_by_key(|(i, _)| *i);
    let all_results: Vec<PairCheck> = all_results.into_iter().map(|(_, r)| r).collect();
    let mut feature_results = features.join_all().await;
    progress.finish();
    feature_results.sort_by(|a, b| {
        (&a.repo, a.task_id, a.feature_id).cmp(&(&b.repo, b.task_id, b.feature_id))
    });
    summarize(all_results, feature_results, started.elapsed())
}

async fn check_pair(pair: &Pair, bases: &BaseRepos, scratch: &Path) -> PairCheck {
    let (f1, f2) = (
        pair.features[0],
        *pair.features.get(1).unwrap_or(&pair.features[0]),
    );
    let mut check = PairCheck {
        repo: pair.task.repo.clone(),
        task_id: pair.task.id,
        f1,
        f2,
        has_conflict: false,
        patch1_apply_failed: false,
        patch2_apply_failed: false,
        error: None,
    };
    let result = async {
        let base = bases.get(&pair.task).await.map_err(|e| e.to_string())?;
        let mut patches = Vec::new();
        for (k, f) in pair.feature_records().into_iter().enumerate() {
            let path = f.gold_patch_path();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            patches.push((format!("agent{}", k + 1), text));
        }
        std::fs::create_dir_all(scratch).map_err(|e| e.to_string())?;
        let dir = tempfile::Builder::new()
            .prefix("gold-")
            .tempdir_in(scratch)
            .map_err(|e| e.to_string())?;
        // Lead policy: stop at the naive merge's verdict, no union retry.
        merge_patches(&base, dir.path(), &patches, MergePolicy::Lead)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(outcome) => {
            check.has_conflict = outcome.strategy == MergeStrategy::Lead;
            check.patch1_apply_failed = outcome.apply_failed.iter().any(|a| a == "agent1");
            check.patch2_apply_failed = outcome.apply_failed.iter().any(|a| a == "agent2");
        }
        Err(e) => check.error = Some(e),
    }
    check
}

async fn check_feature(
    task: &Task,
    id: u32,
    bases: &BaseRepos,
    grader: &Grader,
    scratch: &Path,
    log_dir: &Path,
) -> FeatureCheck {
    let mut check = FeatureCheck {
        repo: task.repo.clone(),
        task_id: task.id,
        feature_id: id,
        success: false,
        tests_passed: 0,
        tests_failed: 0,
        error: None,
    };
    let result = async {
        let feature = task
            .feature(id)
            .ok_or_else(|| format!("feature {id} missing"))?;
        let base = bases.get(task).await.map_err(|e| e.to_string())?;
        std::fs::create_dir_all(scratch).map_err(|e| e.to_string())?;
        let dir = tempfile::Builder::new()
            .prefix("gold-tests-")
            .tempdir_in(scratch)
            .map_err(|e| e.to_string())?;
        let logs = log_dir
            .join(&task.repo)
            .join(task.id.to_string())
            .join(format!("feature{id}"));
        let label = format!("{} feature{id}", task.label());
        grader
            .run_feature_tests(
                &crate::testbench::TestBench::Local(crate::sandbox::confine::Confinement::none()),
                task,
                &label,
                &base,
                dir.path(),
                &logs,
                feature,
                &feature.gold_patch_path(),
                "gold",
            )
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(g) => {
            check.success = g.success;
            check.tests_passed = g.tests_passed;
            check.tests_failed = g.tests_failed;
            check.error = g.error;
        }
        Err(e) => check.error = Some(e),
    }
    check
}

fn summarize(
    all_results: Vec<PairCheck>,
    feature_results: Vec<FeatureCheck>,
    elapsed: Duration,
) -> GoldReport {
    let mut per_task: BTreeMap<String, Counts> = BTreeMap::new();
    let mut total = Counts::default();
    let mut conflict_pairs = Vec::new();
    for r in &all_results {
        let c = per_task
            .entry(format!("{}/task{}", r.repo, r.task_id))
            .or_default();
        for counts in [&mut *c, &mut total] {
            counts.total += 1;
            if r.error.is_some() {
                counts.errors += 1;
            } else if r.patch1_apply_failed || r.patch2_apply_failed {
                counts.apply_failures += 1;
            } else if r.has_conflict {
                counts.conflicts += 1;
            } else {
                counts.clean += 1;
            }
        }
        if r.has_conflict && r.error.is_none() {
            conflict_pairs.push(BTreeMap::from([
                ("repo".to_string(), serde_json::json!(r.repo)),
                ("task_id".to_string(), serde_json::json!(r.task_id)),
                ("f1".to_string(), serde_json::json!(r.f1)),
                ("f2".to_string(), serde_json::json!(r.f2)),
            ]));
        }
    }
    let rate = if total.total > 0 {
        format!(
            "{:.1}%",
            100.0 * total.conflicts as f64 / total.total as f64
        )
    } else {
        "n/a".into()
    };
    GoldReport {
        summary: Summary {
            total_pairs: total.total,
            conflicts: total.conflicts,
            clean_merges: total.clean,
            apply_failures: total.apply_failures,
            errors: total.errors,
            conflict_rate: rate,
            elapsed_seconds: elapsed.as_secs_f64(),
            features_checked: feature_results.len(),
            features_passing: feature_results.iter().filter(|f| f.success).count(),
        },
        per_task,
        conflict_pairs,
        all_results,
        feature_results,
    }
}

/// Differences against a reference report, one line each (pairs present in both).
pub fn differences(ours: &GoldReport, reference: &GoldReport) -> Vec<String> {
    let key = |r: &PairCheck| (r.repo.clone(), r.task_id, r.f1.min(r.f2), r.f1.max(r.f2));
    let theirs: BTreeMap<_, &PairCheck> =
        reference.all_results.iter().map(|r| (key(r), r)).collect();
    let mut lines = Vec::new();
    for r in &ours.all_results {
        let Some(t) = theirs.get(&key(r)) else {
            lines.push(format!(
                "{}/task{} {},{}: not in the reference",
                r.repo, r.task_id, r.f1, r.f2
            ));
            continue;
        };
        let (a, b) = (r.describe(), t.describe());
        if a != b {
            lines.push(format!(
                "{}/task{} {},{}: ours {a}, reference {b}",
                r.repo, r.task_id, r.f1, r.f2
            ));
        }
    }
    lines
}

impl GoldReport {
    /// Terminal summary.
    pub fn render(&self) -> String {
        let s = &self.summary;
        let mut out = format!(
            "gold: {} pairs · {} conflicts ({}) · {} clean · {} apply failures · {} errors",
            s.total_pairs, s.conflicts, s.conflict_rate, s.clean_merges, s.apply_failures, s.errors
        );
        if s.features_checked > 0 {
            out.push_str(&format!(
                "\n      features: {}/{} gold patches pass their own tests",
                s.features_passing, s.features_checked
            ));
            for f in self.feature_results.iter().filter(|f| !f.success) {
                out.push_str(&format!(
                    "\n        ✗ {}/task{} feature{}: {}",
                    f.repo,
                    f.task_id,
                    f.feature_id,
                    f.error.as_deref().unwrap_or("tests failed")
                ));
            }
        }
        out
    }
}
