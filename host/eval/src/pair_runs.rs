//! A pair's test runs: planned (each agent's patch on its own features, then in coop the
//! merged tree on every feature), run each on a fresh tree or container, the merge computed
//! beside the agents' own runs, and summed up per agent and for the merged tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use tracing::Instrument;

use crate::dataset::{Feature, Pair};
use crate::merge::{merge_patches, MergeStrategy};
use crate::sandbox::base::BaseRepo;
use crate::sandbox::SandboxError;
use crate::setting::Setting;
use crate::testbench::TestBench;
use crate::{pair_label, AgentGrade, EvalError, FeatureGrade, GradedPatch, Grader, MergedGrade};

/// One test run of a pair, planned before any runs.
struct PlannedRun<'a> {
    /// The agent whose patch it runs (index into the pair's patches); None: the merged tree.
    agent: Option<usize>,
    feature: &'a Feature,
    patch: PathBuf,
    /// `agent1_feature3`, `merged_feature3`: its log's name.
    name: String,
}

impl Grader {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn grade_on(
        &self,
        bench: &TestBench,
        pair: &Pair,
        setting: Setting,
        base: &BaseRepo,
        scratch: &tempfile::TempDir,
        pair_dir: &Path,
        filtered: &[(GradedPatch, Vec<String>)],
        features: &[&Feature],
    ) -> Result<(BTreeMap<String, AgentGrade>, Option<MergedGrade>), EvalError> {
        let label = pair_label(pair);
        let sandbox_err = |source| EvalError::Sandbox {
            pair: label.clone(),
            source,
        };
        // Every agent's features, then (coop) every feature on the merged tree.
        let planned = filtered
            .iter()
            .map(|(p, _)| p.feature_ids.len())
            .sum::<usize>()
            + if setting.one_agent_per_feature() {
                features.len()
            } else {
                0
            };
        bench.expect_runs(planned).await;
        // The agents' own test runs need no merge: they start while the merge is computed, and
        // (coop) the merged tree's runs wait for it.
        let mut runs: Vec<PlannedRun> = Vec::new();
        for (i, (p, _)) in filtered.iter().enumerate() {
            let patch_file = scratch.path().join(format!("{}.patch", p.agent_id));
            write_patch(&patch_file, &p.patch).map_err(&sandbox_err)?;
            for f in features.iter().filter(|f| p.feature_ids.contains(&f.id)) {
                runs.push(PlannedRun {
                    agent: Some(i),
                    feature: f,
                    patch: patch_file.clone(),
                    name: format!("{}_feature{}", p.agent_id, f.id),
                });
            }
        }
        let merged_file = scratch.path().join("merged.patch");
        if setting.one_agent_per_feature() {
            for f in features {
                runs.push(PlannedRun {
                    agent: None,
                    feature: f,
                    patch: merged_file.clone(),
                    name: format!("merged_feature{}", f.id),
                });
            }
        }
        let inputs: Vec<(String, String)> = filtered
            .iter()
            .map(|(p, _)| (p.agent_id.clone(), p.patch.clone()))
            .collect();
        let merge = async {
            if !setting.one_agent_per_feature() {
                return None;
            }
            let outcome = async {
                let outcome = merge_patches(base, scratch.path(), &inputs, self.policy).await?;
                if outcome.strategy != MergeStrategy::Failed {
                    write_patch(&merged_file, &outcome.diff)?;
                }
                Ok::<_, SandboxError>(outcome)
            }
            .instrument(tracing::info_span!("merge"))
            .await;
            Some(Arc::new(outcome))
        }
        .boxed()
        .shared();
        // Futures do nothing until awaited: the runs start below. A merged tree's run is
        // skipped (None) when there is no merged tree.
        let pending: Vec<_> = runs
            .iter()
            .map(|planned| {
                let merge = merge.clone();
                let label = &label;
                async move {
                    if planned.agent.is_none() {
                        match merge.await.as_deref() {
                            Some(Ok(outcome)) if outcome.strategy != MergeStrategy::Failed => {}
                            _ => return Ok(None),
                        }
                    }
                    // The span starts when the run does, not when it is planned.
                    let span = tracing::info_span!("test_run", run = %planned.name);
                    self.run_feature_tests(
                        bench,
                        &pair.task,
                        label,
                        base,
                        scratch.path(),
                        pair_dir,
                        planned.feature,
                        &planned.patch,
                        &planned.name,
                    )
                    .instrument(span)
                    .await
                    .map(Some)
                }
            })
            .collect();
        // Remote benches run each test run on a machine of its own: all at once. Here, as many
        // at once as the pair's own grading slot plus the slots idle now (each run is a fresh
        // tree or container of its own), stopping at the first error. The merge is driven
        // beside them from the start.
        let collect = async {
            let mut results = Vec::with_capacity(runs.len());
            if bench.runs_in_parallel() {
                for result in futures_util::future::join_all(pending).await {
                    results.push(result?);
                }
            } else {
                let mut extra = Vec::new();
                if let Some(slots) = &self.spare_slots {
                    while extra.len() + 1 < runs.len() {
                        match slots.clone().try_acquire_owned() {
                            Ok(permit) => extra.push(permit),
                            Err(_) => break,
                        }
                    }
                }
                let mut ordered = futures_util::stream::iter(pending).buffered(1 + extra.len());
                while let Some(result) = ordered.next().await {
                    results.push(result?);
                }
            }
            Ok::<_, EvalError>(results)
        };
        let (merged_outcome, results) = tokio::join!(merge, collect);
        let outcome = match merged_outcome.as_deref() {
            Some(Err(e)) => return Err(sandbox_err(SandboxError::Command(e.to_string()))),
            Some(Ok(outcome)) => Some(outcome.clone()),
            None => None,
        };
        let results = results?;
        let mut agent_grades: Vec<Vec<FeatureGrade>> = vec![Vec::new(); filtered.len()];
        let mut merged_grades = Vec::new();
        for (planned, grade) in runs.iter().zip(results) {
            let Some(grade) = grade else { continue };
            match planned.agent {
                Some(i) => agent_grades[i].push(grade),
                None => merged_grades.push(grade),
            }
        }
        let mut agents = BTreeMap::new();
        for ((p, dropped), grades) in filtered.iter().zip(agent_grades) {
            let mut grade = summarize_agent(&p.feature_ids, grades);
            grade.dropped_test_files = dropped.clone();
            agents.insert(p.agent_id.clone(), grade);
        }

        let merged = match outcome {
            Some(outcome) => {
                let grades = merged_grades;
                let passed: u32 = grades.iter().map(|g| g.tests_passed).sum();
                let failed: u32 = grades.iter().map(|g| g.tests_failed).sum();
                let all_pass = !grades.is_empty() && grades.iter().all(|g| g.success);
                if outcome.strategy != MergeStrategy::Failed {
                    crate::fsutil::write_atomic(
                        &pair_dir.join("merged.diff"),
                        outcome.diff.as_bytes(),
                    )
                    .map_err(|source| EvalError::Write {
                        pair: label.clone(),
                        source,
                    })?;
                }
                Some(MergedGrade {
                    tests_passed: passed,
                    tests_failed: failed,
                    success: outcome.strategy != MergeStrategy::Failed && all_pass,
                    merge_conflict: outcome.conflict,
                    merge_strategy: outcome.strategy,
                    merge_policy: self.policy,
                    apply_failed: outcome.apply_failed,
                    conflict_files: outcome.conflict_files,
                    error: outcome
                        .error
                        .or_else(|| grades.iter().find_map(|g| g.error.clone())),
                    features: grades,
                })
            }
            None => None,
        };
        Ok((agents, merged))
    }
}

pub(crate) fn write_patch(path: &Path, patch: &str) -> Result<(), SandboxError> {
    std::fs::write(path, patch).map_err(|source| SandboxError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

fn summarize_agent(feature_ids: &[u32], grades: Vec<FeatureGrade>) -> AgentGrade {
    AgentGrade {
        tests_passed: grades.iter().map(|g| g.tests_passed).sum(),
        tests_failed: grades.iter().map(|g| g.tests_failed).sum(),
        success: !grades.is_empty() && grades.iter().all(|g| g.success),
        error: grades.iter().find_map(|g| g.error.clone()),
        feature_ids: feature_ids.to_vec(),
        features: grades,
        dropped_test_files: Vec::new(),
    }
}
