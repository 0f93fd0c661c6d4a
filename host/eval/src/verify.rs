//! `cbench dataset verify`: which dataset items can grade an agent at all. Per
//! feature, the hidden tests must fail on the base, pass with the gold patch, and
//! pass with the task's combined gold patch (`combined.patch`, when the task has
//! one); each check runs `--repeat` times to catch flaky tests, and a runner whose
//! verdict is the same with and without the patch is flagged (it grades nothing).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::dataset::{Pair, Task};
use crate::merge::MergePolicy;
use crate::repos::BaseRepos;
use crate::sandbox::confine::Confinement;
use crate::testbench::{GradingBackend, TestBench};
use crate::Grader;

/// What to verify and how.
pub struct VerifyConfig {
    pub repeat: u32,
    pub concurrency: usize,
    pub test_timeout: Duration,
    /// Runner logs go under `<log_dir>/<repo>/<task>/feature<N>/`.
    pub log_dir: PathBuf,
    pub scratch: PathBuf,
    /// How runner runs are confined (as graders are).
    pub confinement: Confinement,
}

/// One runner run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunOutcome {
    pub success: bool,
    pub tests_passed: u32,
    pub tests_failed: u32,
    pub error: Option<String>,
}

/// One feature's verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureVerdict {
    pub repo: String,
    pub task_id: u64,
    pub feature_id: u32,
    /// Base + tests, each repeat (should fail).
    pub base: Vec<RunOutcome>,
    /// Gold patch + tests, each repeat (should pass).
    pub gold: Vec<RunOutcome>,
    /// Combined gold of the task + tests, each repeat (should pass); empty without combined.patch.
    pub combined: Vec<RunOutcome>,
    /// What is wrong; empty when the item can grade agents.
    pub problems: Vec<String>,
    pub verified: bool,
    /// The checks could not run (the problem is this machine's, not the item's).
    #[serde(default)]
    pub unchecked: bool,
}

/// verified.json: the items and whether a score on them means anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    pub repeat: u32,
    pub features: Vec<FeatureVerdict>,
    pub verified: usize,
    /// Checked, and found unable to grade agents.
    pub unverified: usize,
    /// Could not be checked here (base repository, toolchain): nothing is known about them.
    #[serde(default)]
    pub unchecked: usize,
}

/// Verifies every feature used by `pairs`.
pub async fn verify(pairs: &[Pair], bases: Arc<BaseRepos>, cfg: &VerifyConfig) -> VerifyReport {
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    // Confined like a run's graders, as in `gold`: what verifies here grades the same.
    let grader = Arc::new(Grader::new(
        cfg.test_timeout,
        MergePolicy::Lead,
        GradingBackend::Local(cfg.confinement.clone()),
    ));
    let mut seen = BTreeSet::new();
    let mut jobs = tokio::task::JoinSet::new();
    for pair in pairs {
        for id in &pair.features {
            if !seen.insert((pair.task.repo.clone(), pair.task.id, *id)) {
                continue;
            }
            let (task, bases, slots, grader) = (
                pair.task.clone(),
                bases.clone(),
                slots.clone(),
                grader.clone(),
            );
            let (scratch, log_dir, id, repeat) = (
                cfg.scratch.clone(),
                cfg.log_dir.clone(),
                *id,
                cfg.repeat.max(1),
            );
            let bench = TestBench::Local(cfg.confinement.clone());
            jobs.spawn(async move {
                let _slot = slots.acquire().await;
                let places = (scratch.as_path(), log_dir.as_path());
                verify_feature(&task, id, repeat, &bases, &grader, &bench, places).await
            });
        }
    }
    let mut features = jobs.join_all().await;
    features.sort_by(|a, b| {
        (&a.repo, a.task_id, a.feature_id).cmp(&(&b.repo, b.task_id, b.feature_id))
    });
    let verified = features.iter().filter(|f| f.verified).count();
    let unchecked = features.iter().filter(|f| f.unchecked).count();
    VerifyReport {
        repeat: cfg.repeat.max(1),
        unverified: features.len() - verified - unchecked,
        unchecked,
        verified,
        features,
    }
}

/// The checks of one feature, in order (base, gold, combined), `repeat` times.
async fn verify_feature(
    task: &Task,
    id: u32,
    repeat: u32,
    bases: &BaseRepos,
    grader: &Grader,
    bench: &TestBench,
    (scratch, log_dir): (&Path, &Path),
) -> FeatureVerdict {
    let mut verdict = FeatureVerdict {
        repo: task.repo.clone(),
        task_id: task.id,
        feature_id: id,
        base: Vec::new(),
        gold: Vec::new(),
        combined: Vec::new(),
        problems: Vec::new(),
        verified: false,
        unchecked: false,
    };
    let prepared = async {
        let feature = task
            .feature(id)
            .ok_or_else(|| format!("feature {id} missing"))?
            .clone();
        let base = bases.get(task).await.map_err(|e| e.to_string())?;
        std::fs::create_dir_all(scratch).map_err(|e| e.to_string())?;
        let dir = tempfile::Builder::new()
            .prefix("verify-")
            .tempdir_in(scratch)
            .map_err(|e| e.to_string())?;
        let empty = dir.path().join("empty.patch");
        std::fs::write(&empty, "").map_err(|e| e.to_string())?;
        Ok::<_, String>((feature, base, dir, empty))
    }
    .await;
    let (feature, base, dir, empty) = match prepared {
        Ok(p) => p,
        Err(e) => {
            verdict.problems.push(format!("cannot verify: {e}"));
            verdict.unchecked = true;
            return verdict;
        }
    };
    let combined = task.dir.join("combined.patch");
    let logs = log_dir
        .join(&task.repo)
        .join(task.id.to_string())
        .join(format!("feature{id}"));
    let label = format!("{} feature{id}", task.label());
    for k in 1..=repeat {
        let mut variants = vec![("base", empty.clone()), ("gold", feature.gold_patch_path())];
        if combined.is_file() {
            variants.push(("combined", combined.clone()));
        }
        for (variant, patch) in variants {
            let outcome = match grader
                .run_feature_tests(
                    bench,
                    task,
                    &label,
                    &base,
                    dir.path(),
                    &logs,
                    &feature,
                    &patch,
                    &format!("{variant}-{k}"),
                )
                .await
            {
                Ok(g) => RunOutcome {
                    success: g.success,
                    tests_passed: g.tests_passed,
                    tests_failed: g.tests_failed,
                    error: g.error,
                },
                Err(e) => RunOutcome {
                    success: false,
                    tests_passed: 0,
                    tests_failed: 0,
                    error: Some(e.to_string()),
                },
            };
            match variant {
                "base" => verdict.base.push(outcome),
                "gold" => verdict.gold.push(outcome),
                _ => verdict.combined.push(outcome),
            }
        }
    }
    verdict.problems = problems(&verdict);
    verdict.verified = verdict.problems.is_empty();
    verdict
}

/// What makes a feature unable to grade agents.
fn problems(v: &FeatureVerdict) -> Vec<String> {
    let mut problems = Vec::new();
    let flaky = |runs: &[RunOutcome]| runs.iter().any(|r| r.success != runs[0].success);
    for (name, runs) in [
        ("base", &v.base),
        ("gold", &v.gold),
        ("combined", &v.combined),
    ] {
        if !runs.is_empty() && flaky(runs) {
            let passes = runs.iter().filter(|r| r.success).count();
            problems.push(format!(
                "flaky: {name} + tests passed {passes} of {} runs",
                runs.len()
            ));
        }
    }
    if v.base.iter().any(|r| r.success) {
        problems.push("the tests pass without the feature (base + tests passes)".into());
    }
    if v.gold.iter().any(|r| !r.success) {
        let why = v
            .gold
            .iter()
            .find_map(|r| r.error.clone())
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        problems.push(format!("the gold patch fails its own tests{why}"));
    }
    if v.combined.iter().any(|r| !r.success) {
        problems.push("the task's combined gold patch fails this feature's tests".into());
    }
    let same = |a: &RunOutcome, b: &RunOutcome| {
        a.success == b.success
            && a.tests_passed == b.tests_passed
            && a.tests_failed == b.tests_failed
    };
    if let (Some(b), Some(g)) = (v.base.first(), v.gold.first()) {
        if same(b, g) && b.error.is_none() {
            problems.push(
                "verdict independent of the patch: base and gold give the same result (does the runner apply its arguments?)"
                    .into(),
            );
        }
    }
    problems
}

impl VerifyReport {
    /// A table for the terminal.
    pub fn render(&self) -> String {
        let cell = |runs: &[RunOutcome]| -> String {
            if runs.is_empty() {
                return "-".into();
            }
            let passes = runs.iter().filter(|r| r.success).count();
            match (passes, runs.len()) {
                (0, _) => "fail".into(),
                (p, n) if p == n => "pass".into(),
                (p, n) => format!("{p}/{n} pass"),
            }
        };
        let mut out = format!(
            "{:<40} {:>7}  {:<9} {:<9} {:<9} verdict\n",
            "task", "feature", "base", "gold", "combined"
        );
        for f in &self.features {
            out.push_str(&format!(
                "{:<40} {:>7}  {:<9} {:<9} {:<9} {}\n",
                format!("{}/task{}", f.repo, f.task_id),
                f.feature_id,
                cell(&f.base),
                cell(&f.gold),
                cell(&f.combined),
                if f.verified {
                    "ok".to_string()
                } else {
                    f.problems.join("; ")
                }
            ));
        }
        // What the columns mean, once, under the table.
        out.push_str(
            "base: tests on the base (must fail) · gold: with the feature's gold patch (must pass) · \
             combined: with the task's combined.patch (must pass; - where the task has none)\n",
        );
        out.push_str(&format!(
            "verified: {} of {} features ({} unverified, {} could not be checked; {} run(s) of each check)\n",
            self.verified,
            self.features.len(),
            self.unverified,
            self.unchecked,
            self.repeat
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(success: bool, passed: u32) -> RunOutcome {
        RunOutcome {
            success,
            tests_passed: passed,
            tests_failed: u32::from(!success),
            error: None,
        }
    }

    fn verdict(base: Vec<RunOutcome>, gold: Vec<RunOutcome>) -> FeatureVerdict {
        FeatureVerdict {
            repo: "r".into(),
            task_id: 1,
            feature_id: 1,
            base,
            gold,
            combined: Vec::new(),
            problems: Vec::new(),
            verified: false,
            unchecked: false,
        }
    }

    #[test]
    fn a_good_item_has_no_problem() {
        assert!(problems(&verdict(vec![run(false, 3)], vec![run(true, 4)])).is_empty());
    }

    #[test]
    fn a_runner_that_ignores_the_patch_is_flagged() {
        let p = problems(&verdict(vec![run(true, 5)], vec![run(true, 5)]));
        assert!(
            p.iter().any(|p| p.contains("pass without the feature")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("independent of the patch")),
            "{p:?}"
        );
    }

    #[test]
    fn flaky_checks_are_flagged() {
        let p = problems(&verdict(
            vec![run(false, 3), run(false, 3)],
            vec![run(true, 4), run(false, 3)],
        ));
        assert!(
            p.iter()
                .any(|p| p.contains("flaky: gold + tests passed 1 of 2")),
            "{p:?}"
        );
    }
}
