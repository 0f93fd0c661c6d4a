//! Grading (see docs/grading.md): each agent's patch alone against its own features' tests,
//! then the merged tree against every feature's tests; gold-patch checks and dataset
//! verification.
//!
//! Owns merges, test benches (local and docker), test-output parsers and eval.json. Takes
//! patches as text: it never runs a plugin or an agent's sandbox.

use cbench_core::clock;
use cbench_core::dataset;
use cbench_core::exec;
use cbench_core::fsutil;
use cbench_core::layout;
use cbench_core::progress;
use cbench_core::setting;
use cbench_docker as docker;
use cbench_sandbox as sandbox;
use cbench_sandbox::repos;

pub mod gcp_bench;
pub mod gold;
mod inputs;
pub mod merge;
pub mod modal_bench;
mod pair_runs;
pub mod parse;
mod report;
pub mod test_files;
pub mod testbench;
pub mod tooling;
pub mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::dataset::{Feature, Pair, Task};
use crate::sandbox::base::BaseRepo;
use crate::sandbox::SandboxError;
use crate::setting::Setting;
pub use inputs::{inputs_hash, task_inputs_hash};
use merge::MergePolicy;
use pair_runs::write_patch;
pub use report::{AgentGrade, EvalReport, FeatureGrade, MergedGrade};
use testbench::{GradingBackend, TestBench};

/// Version of the grading procedure; part of the input hash so a changed
/// procedure re-grades old runs.
/// 4: local graders run confined, with an allow-listed environment and a private home.
/// 6: files that would replace the test tooling are dropped from patches (`tooling`).
pub const GRADING_VERSION: &str = "cbench-grading-6";
/// Output kept from one test run.
const TEST_OUTPUT_CAP: usize = 4 << 20;

/// A grading failure that is the harness's fault (not the agents').
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("grading {pair}: {source}")]
    Sandbox { pair: String, source: SandboxError },
    #[error("grading {pair}: cannot read {path}: {source}")]
    Read {
        pair: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("grading {pair}: {source}")]
    Write {
        pair: String,
        source: crate::fsutil::FsError,
    },
    /// The grading environment itself cannot run the feature's tests: never an agent failure.
    #[error(
        "grading {pair}: {task} feature {feature} is not gradable here: its base with its own \
         tests produces no test summary in this environment ({why}; see {log})"
    )]
    NotGradable {
        pair: String,
        task: String,
        feature: u32,
        why: String,
        log: String,
    },
}

/// One agent's patch as graded.
#[derive(Debug, Clone)]
pub struct GradedPatch {
    pub agent_id: String,
    pub feature_ids: Vec<u32>,
    pub patch: String,
}

pub(crate) fn pair_label(pair: &Pair) -> String {
    format!("{} {}", pair.task.label(), pair.dir_name())
}

/// Whether a feature's base with its tests yields a test summary here; why not and its log.
type Baseline = Result<(), (String, String)>;

/// Grades pairs against a base repository in scratch space.
pub struct Grader {
    pub test_timeout: Duration,
    pub policy: MergePolicy,
    /// Where test runs happen.
    pub backend: GradingBackend,
    /// Per task and feature: whether the base with its tests yields a test summary here
    /// (checked once, the first time a patch's run yields none).
    baselines: tokio::sync::Mutex<HashMap<(String, u32), Baseline>>,
    /// The run's grading slots (`--eval-concurrency`): a pair grading on this machine runs
    /// more of its test runs at once on the slots no other pair holds right now.
    spare_slots: Option<Arc<tokio::sync::Semaphore>>,
    /// Test benches being closed after their pair's grade was returned (`None`: a grade
    /// returns only once its bench is closed).
    closing: Option<cbench_core::background::Background>,
}

/// How many test runs grading `pair` makes at most: every feature on its agent's patch and
/// (coop) on the merged tree. Fewer when a patch is filtered away.
pub fn most_test_runs(pair: &Pair, setting: Setting) -> usize {
    let merged = if setting.one_agent_per_feature() {
        pair.features.len()
    } else {
        0
    };
    pair.features.len() + merged
}

impl Grader {
    /// A grader running tests on `backend`.
    pub fn new(test_timeout: Duration, policy: MergePolicy, backend: GradingBackend) -> Grader {
        Grader {
            test_timeout,
            policy,
            backend,
            baselines: Default::default(),
            spare_slots: None,
            closing: None,
        }
    }

    /// Returns each pair's grade before its test bench is closed (its used containers
    /// removed); the caller awaits [`Grader::closed`] before it ends.
    pub fn closing_in_background(mut self) -> Grader {
        self.closing = Some(Default::default());
        self
    }

    /// Waits for the test benches still closing.
    pub async fn closed(&self) {
        if let Some(closing) = &self.closing {
            closing.finished().await;
        }
    }

    /// Lets a pair's test runs use the grading slots of `slots` no pair holds (each pair holds
    /// one while it grades).
    pub fn with_spare_slots(mut self, slots: Arc<tokio::sync::Semaphore>) -> Grader {
        self.spare_slots = Some(slots);
        self
    }

    /// Grades one pair and returns eval.json's content; runner logs go to `pair_dir/eval_logs`.
    pub async fn grade(
        &self,
        pair: &Pair,
        setting: Setting,
        base: &BaseRepo,
        scratch_parent: &Path,
        pair_dir: &Path,
        patches: &[GradedPatch],
    ) -> Result<EvalReport, EvalError> {
        self.grade_on_bench(pair, setting, base, scratch_parent, pair_dir, patches, None)
            .await
    }

    /// Opens `pair`'s test bench (on docker: starts its grading container), e.g. while the
    /// pair's agents are still finishing.
    pub async fn open_bench(&self, pair: &Pair) -> Result<TestBench, SandboxError> {
        TestBench::open(&self.backend, pair).await
    }

    /// `grade`, on a bench opened ahead by `open_bench` when given (else one opened here).
    #[allow(clippy::too_many_arguments)]
    pub async fn grade_on_bench(
        &self,
        pair: &Pair,
        setting: Setting,
        base: &BaseRepo,
        scratch_parent: &Path,
        pair_dir: &Path,
        patches: &[GradedPatch],
        opened: Option<Result<TestBench, SandboxError>>,
    ) -> Result<EvalReport, EvalError> {
        let started = Instant::now();
        let label = pair_label(pair);
        let sandbox_err = |source| EvalError::Sandbox {
            pair: label.clone(),
            source,
        };
        let inputs_sha256 = inputs_hash(pair, setting, self.policy, patches)?;
        // Agents' own edits to test files would collide with the hidden tests; files that would
        // stand in for the test tooling could report a pass without running them.
        let filtered: Vec<(GradedPatch, Vec<String>)> = patches
            .iter()
            .map(|p| {
                let (patch, dropped) = test_files::drop_test_files(&p.patch);
                (GradedPatch { patch, ..p.clone() }, dropped)
            })
            .collect();
        std::fs::create_dir_all(scratch_parent).map_err(|e| {
            sandbox_err(SandboxError::Io {
                what: format!("creating {}", scratch_parent.display()),
                source: e,
            })
        })?;
        let scratch = tempfile::Builder::new()
            .prefix("grade-")
            .tempdir_in(scratch_parent)
            .map_err(|e| {
                sandbox_err(SandboxError::Io {
                    what: "creating grading scratch dir".into(),
                    source: e,
                })
            })?;
        let features = pair.feature_records();
        let bench = match opened {
            Some(opened) => opened,
            None => TestBench::open(&self.backend, pair).await,
        }
        .map_err(&sandbox_err)?;
        let result = self
            .grade_on(
                &bench, pair, setting, base, &scratch, pair_dir, &filtered, &features,
            )
            .await;
        // Closed on success and failure alike; a failed close loses no grade.
        let close = {
            let label = label.clone();
            async move {
                if let Err(e) = bench.close().await {
                    tracing::warn!("{label}: {e}");
                }
            }
        };
        match &self.closing {
            Some(closing) => {
                // A root span: the grade it follows has returned.
                let span = tracing::info_span!(parent: None, "bench_close");
                closing.spawn(close.instrument(span));
            }
            None => close.await,
        }
        let (agents, merged) = result?;
        let agents_ok = !agents.is_empty() && agents.values().all(|a: &AgentGrade| a.success);
        let overall_success = agents_ok && merged.as_ref().is_none_or(|m| m.success);
        Ok(EvalReport {
            setting,
            feature_ids: pair.features.clone(),
            merge_strategy: merged.as_ref().map(|m| m.merge_strategy),
            merge_policy: Some(self.policy),
            agents,
            merged,
            overall_success,
            inputs_sha256,
            grading_version: Some(GRADING_VERSION.to_string()),
            task_inputs_sha256: Some(task_inputs_hash(pair)?),
            evaluated_at: crate::clock::now_rfc3339(),
            duration_s: started.elapsed().as_secs_f64(),
        })
    }

    /// Runs the task's runner with `feature`'s tests on a fresh copy of the base plus `patch`;
    /// the runner's output goes to `log_root/eval_logs/<name>.log`.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_feature_tests(
        &self,
        bench: &TestBench,
        task: &Task,
        label: &str,
        base: &BaseRepo,
        scratch: &Path,
        pair_dir: &Path,
        feature: &Feature,
        patch: &Path,
        name: &str,
    ) -> Result<FeatureGrade, EvalError> {
        let (out, log) = self
            .run_logged(
                bench, task, label, base, scratch, pair_dir, feature, patch, name,
            )
            .await?;
        let counts = parse::parse_test_output(&out.output);
        if counts.is_none() && !out.timed_out && !patch_is_empty(patch) {
            // Before blaming the patch: can this environment run these tests at all?
            self.check_baseline(bench, task, label, base, scratch, pair_dir, feature)
                .await?;
        }
        let (passed, failed) = counts.map(|c| (c.passed, c.failed)).unwrap_or((0, 0));
        let success = out.exit_code == 0 && !out.timed_out && passed >= 1;
        let error = if out.timed_out {
            Some(format!(
                "tests timed out after {}s",
                self.test_timeout.as_secs()
            ))
        } else if counts.is_none() {
            Some(format!(
                "test runner exited with code {} without a test summary (see {log})",
                out.exit_code
            ))
        } else if success {
            None
        } else if let Some(failure) = parse::first_failure(&out.output) {
            Some(failure)
        } else if passed == 0 {
            Some("no test passed".into())
        } else {
            Some(format!("test runner exited with code {}", out.exit_code))
        };
        Ok(FeatureGrade {
            feature_id: feature.id,
            tests_passed: passed,
            tests_failed: failed,
            success,
            exit_code: out.exit_code,
            error,
            log,
        })
    }
}

impl Grader {
    /// Runs the runner with `feature`'s tests on the base plus `patch`; its output goes to
    /// `pair_dir/eval_logs/<name>.log` (returned, relative to `pair_dir`).
    #[allow(clippy::too_many_arguments)]
    async fn run_logged(
        &self,
        bench: &TestBench,
        task: &Task,
        label: &str,
        base: &BaseRepo,
        scratch: &Path,
        pair_dir: &Path,
        feature: &Feature,
        patch: &Path,
        name: &str,
    ) -> Result<(crate::exec::ExecOutput, String), EvalError> {
        let out = bench
            .run(
                task,
                base,
                scratch,
                feature,
                patch,
                name,
                self.test_timeout,
                TEST_OUTPUT_CAP,
            )
            .await
            .map_err(|source| EvalError::Sandbox {
                pair: label.to_string(),
                source,
            })?;
        let log = format!("eval_logs/{name}.log");
        crate::fsutil::write_atomic(&pair_dir.join(&log), out.output.as_bytes()).map_err(
            |source| EvalError::Write {
                pair: label.to_string(),
                source,
            },
        )?;
        Ok((out, log))
    }

    /// Runs `feature`'s tests on the bare base once per task and feature (cached): when that
    /// yields no test summary either, the environment cannot grade the feature and no patch
    /// is to blame.
    #[allow(clippy::too_many_arguments)]
    async fn check_baseline(
        &self,
        bench: &TestBench,
        task: &Task,
        label: &str,
        base: &BaseRepo,
        scratch: &Path,
        pair_dir: &Path,
        feature: &Feature,
    ) -> Result<(), EvalError> {
        let key = (task.label(), feature.id);
        let mut baselines = self.baselines.lock().await;
        if !baselines.contains_key(&key) {
            let empty = scratch.join(format!("baseline_feature{}.patch", feature.id));
            write_patch(&empty, "").map_err(|source| EvalError::Sandbox {
                pair: label.to_string(),
                source,
            })?;
            let name = format!("baseline_feature{}", feature.id);
            let (out, log) = self
                .run_logged(
                    bench, task, label, base, scratch, pair_dir, feature, &empty, &name,
                )
                .await?;
            let verdict = if parse::parse_test_output(&out.output).is_some() {
                Ok(())
            } else if out.timed_out {
                Err(("the runner timed out".to_string(), log))
            } else {
                Err((format!("runner exit code {}", out.exit_code), log))
            };
            baselines.insert(key.clone(), verdict);
        }
        match baselines.get(&key) {
            Some(Err((why, log))) => Err(EvalError::NotGradable {
                pair: label.to_string(),
                task: task.label(),
                feature: feature.id,
                why: why.clone(),
                log: log.clone(),
            }),
            _ => Ok(()),
        }
    }
}

fn patch_is_empty(patch: &Path) -> bool {
    std::fs::metadata(patch)
        .map(|m| m.len() == 0)
        .unwrap_or(true)
}
