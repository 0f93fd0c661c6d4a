//! Grading situations on the bundled task, through the library: every way a
//! merge can go, and what counts as success.

use std::path::PathBuf;
use std::time::Duration;

use cbench::dataset::{Dataset, Pair, Selection};
use cbench::eval::merge::{MergePolicy, MergeStrategy};
use cbench::eval::{EvalReport, GradedPatch, Grader};
use cbench::llm::Setting;
use cbench::repos::{BaseRepos, UpstreamRepos};

use crate::support::{dataset, json, plugins, Run};

fn pair(features: &[u32]) -> Pair {
    let ds = Dataset::discover(&dataset()).unwrap();
    ds.select(&Selection {
        features: Some(features.to_vec()),
        ..Selection::default()
    })
    .unwrap()
    .remove(0)
}

fn gold(pair: &Pair, index: usize) -> String {
    std::fs::read_to_string(pair.feature_records()[index].gold_patch_path()).unwrap()
}

async fn grade(pair: &Pair, patches: Vec<String>, policy: MergePolicy) -> EvalReport {
    let scratch = tempfile::tempdir().unwrap();
    let bases = BaseRepos::new(
        &scratch.path().join("bases"),
        UpstreamRepos {
            cache_dir: scratch.path().join("cache"),
            mirror_dir: None,
        },
    );
    let base = bases.get(&pair.task).await.unwrap();
    let graded: Vec<GradedPatch> = patches
        .into_iter()
        .enumerate()
        .map(|(i, patch)| GradedPatch {
            agent_id: format!("agent{}", i + 1),
            feature_ids: vec![pair.features[i]],
            patch,
        })
        .collect();
    let grader = Grader::new(
        Duration::from_secs(120),
        policy,
        // Graded as a run grades: confined (bwrap) and limited.
        cbench::eval::testbench::GradingBackend::Local(
            cbench::sandbox::confine::Confinement::resolve(
                cbench::sandbox::confine::LocalOptions {
                    mode: cbench::sandbox::confine::IsolationMode::Bwrap,
                    ..Default::default()
                },
            )
            .expect("bubblewrap is required (scripts/test.sh installs it)"),
        ),
    );
    let pair_dir: PathBuf = scratch.path().join("pair");
    grader
        .grade(
            pair,
            Setting::Coop,
            &base,
            &scratch.path().join("grading"),
            &pair_dir,
            &graded,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unresolvable_conflict_is_a_failure_not_an_exclusion() {
    let p = pair(&[1, 3]);
    // agent1 deletes numbers.py while agent2 (feature 3) edits it: union cannot resolve that.
    let delete = "diff --git a/textkit/numbers.py b/textkit/numbers.py\ndeleted file mode 100644\nindex 0000000..0000000\n--- a/textkit/numbers.py\n+++ /dev/null\n@@ -1,8 +0,0 @@\n-\"\"\"Number helpers.\"\"\"\n-\n-\n-def clamp(value, low, high):\n-    \"\"\"Limit ``value`` to the range [low, high].\"\"\"\n-    if low > high:\n-        raise ValueError(\"low must be <= high\")\n-    return max(low, min(value, high))\n";
    let report = grade(
        &p,
        vec![delete.to_string(), gold(&p, 1)],
        MergePolicy::Union,
    )
    .await;
    let merged = report.merged.as_ref().unwrap();
    assert_eq!(merged.merge_strategy, MergeStrategy::Failed, "{report:#?}");
    assert!(merged.merge_conflict);
    assert!(!merged.success);
    assert!(!report.overall_success);
}

#[tokio::test]
async fn a_patch_that_does_not_apply_is_reported_as_such() {
    let p = pair(&[1, 3]);
    let stale = gold(&p, 0).replace("     return not text.strip()", "     return text.isspace()");
    let report = grade(&p, vec![stale, gold(&p, 1)], MergePolicy::Union).await;
    let merged = report.merged.as_ref().unwrap();
    assert_eq!(
        merged.apply_failed,
        vec!["agent1".to_string()],
        "{report:#?}"
    );
    assert_eq!(merged.merge_strategy, MergeStrategy::Failed);
    assert!(!report.agents["agent1"].success);
    assert!(report.agents["agent2"].success);
    assert!(!report.overall_success);
}

#[tokio::test]
async fn an_empty_patch_fails_its_feature_and_merges_trivially() {
    let p = pair(&[1, 3]);
    let report = grade(&p, vec![String::new(), gold(&p, 1)], MergePolicy::Union).await;
    assert!(!report.agents["agent1"].success);
    let merged = report.merged.as_ref().unwrap();
    assert_eq!(merged.merge_strategy, MergeStrategy::Naive);
    let by_feature: Vec<(u32, bool)> = merged
        .features
        .iter()
        .map(|f| (f.feature_id, f.success))
        .collect();
    assert_eq!(by_feature, vec![(1, false), (3, true)]);
}

#[tokio::test]
async fn the_lead_policy_grades_agent1s_patch_alone_on_conflict() {
    let p = pair(&[4, 5]);
    let report = grade(&p, vec![gold(&p, 0), gold(&p, 1)], MergePolicy::Lead).await;
    let merged = report.merged.as_ref().unwrap();
    assert_eq!(merged.merge_strategy, MergeStrategy::Lead);
    assert_eq!(merged.merge_policy, MergePolicy::Lead);
    let by_feature: Vec<(u32, bool)> = merged
        .features
        .iter()
        .map(|f| (f.feature_id, f.success))
        .collect();
    assert_eq!(by_feature, vec![(4, true), (5, false)]);

    // No conflict: lead changes nothing.
    let clean = pair(&[1, 3]);
    let report = grade(
        &clean,
        vec![gold(&clean, 0), gold(&clean, 1)],
        MergePolicy::Lead,
    )
    .await;
    assert_eq!(
        report.merged.as_ref().unwrap().merge_strategy,
        MergeStrategy::Naive
    );
    assert!(report.overall_success);
}

#[tokio::test]
async fn agents_edits_to_test_files_are_dropped_before_grading() {
    let p = pair(&[1, 3]);
    let sneaky = format!(
        "{}diff --git a/tests/test_feature1.py b/tests/test_feature1.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/test_feature1.py\n@@ -0,0 +1 @@\n+raise SystemExit(0)\n",
        gold(&p, 0)
    );
    let report = grade(&p, vec![sneaky, gold(&p, 1)], MergePolicy::Union).await;
    assert_eq!(
        report.agents["agent1"].dropped_test_files,
        vec!["tests/test_feature1.py".to_string()]
    );
    assert!(report.agents["agent1"].success, "{report:#?}");
    assert!(report.overall_success);
}

#[test]
fn a_three_feature_run_merges_and_grades_every_feature() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start("three", &["--agent", &agent, "-m", "oracle", "-f", "1,2,3"]);
    run.assert_ok();
    let dir = run.dir().join("cbench_textkit_task/task1/features_1_2_3");
    let eval = json(&dir.join("eval.json"));
    for agent in ["agent1", "agent2", "agent3"] {
        assert_eq!(eval[agent]["success"], true, "{eval:#}");
        assert!(dir.join(agent).join("patch.diff").is_file());
    }
    let merged_features: Vec<u64> = eval["merged"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["feature_id"].as_u64().unwrap())
        .collect();
    assert_eq!(merged_features, vec![1, 2, 3]);
    assert_eq!(eval["merged"]["merge_strategy"], "union");
    assert_eq!(eval["overall_success"], true);
    // Each oracle agent announces to both teammates.
    assert_eq!(
        json(&dir.join("conversation.json"))
            .as_array()
            .unwrap()
            .len(),
        6
    );
}
