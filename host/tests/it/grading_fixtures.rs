//! Fixture tasks that reproduce what the real dataset's runners do and once gave
//! wrong verdicts: a runner that needs its `agent_workspace` folder, one that forces
//! coloured pytest output, a gold patch that fails its tests, and a base repository
//! that cannot be prepared.

use std::path::{Path, PathBuf};

use cbench::dataset::Dataset;
use cbench::repos::{BaseRepos, UpstreamRepos};

use crate::support::{cbench, dataset, json, text};

/// A copy of the bundled task under `root` whose runner is `runner` (a bash script).
fn fixture(root: &Path, runner: &str) -> PathBuf {
    fixture_task(root, 1, runner)
}

/// The bundled task copied to `root` as task `id`, with `runner`.
fn fixture_task(root: &Path, id: u32, runner: &str) -> PathBuf {
    let task = root.join(format!("cbench_textkit_task/task{id}"));
    std::fs::create_dir_all(&task).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!(
            "{}/.",
            dataset().join("cbench_textkit_task/task1").display()
        ))
        .arg(&task)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(task.join("run_tests.sh"), runner).unwrap();
    task
}

/// The bundled runner's patch handling, then `tests` (the command that runs the tests).
fn runner_with(prelude: &str, tests: &str) -> String {
    format!(
        r#"#!/bin/bash
set -e
REPO_PATH="$1"; TEST_PATCH="$(realpath "$2")"; FEATURE_PATCH="$3"
[[ -n "$FEATURE_PATCH" ]] && FEATURE_PATCH="$(realpath "$FEATURE_PATCH")"
{prelude}
cd "$REPO_PATH"
if [[ -n "$FEATURE_PATCH" && -s "$FEATURE_PATCH" ]]; then git apply "$FEATURE_PATCH"; fi
git apply "$TEST_PATCH"
export PYTHONDONTWRITEBYTECODE=1
{tests}
"#
    )
}

const UNITTEST: &str = "python3 -m unittest discover -s tests -t . -v";

/// `cbench gold` on features 1 and 3 of the fixture dataset at `root`.
fn gold(root: &Path) -> (std::process::Output, serde_json::Value) {
    let logs = root.join("logs");
    let data = root.display().to_string();
    let log_dir = logs.display().to_string();
    let out = cbench(&[
        "gold",
        "--dataset-dir",
        &data,
        "--log-dir",
        &log_dir,
        "-f",
        "1,3",
    ]);
    let report = json(&logs.join("gold/gold_conflict_report.json"));
    (out, report)
}

fn gold_successes(report: &serde_json::Value) -> Vec<bool> {
    report["feature_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["success"].as_bool().unwrap())
        .collect()
}

#[test]
fn a_runner_that_needs_its_agent_workspace_folder_sees_one() {
    let root = tempfile::tempdir().unwrap();
    // jinja's and outlines' runners refuse to run outside `agent_workspace/<repo>`.
    let prelude = r#"[[ "$(basename "$(dirname "$(realpath "$REPO_PATH")")")" == agent_workspace ]] \
    || { echo "not in an agent workspace: $REPO_PATH"; exit 1; }"#;
    fixture(root.path(), &runner_with(prelude, UNITTEST));
    let (out, report) = gold(root.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(gold_successes(&report), vec![true, true], "{report:#}");
}

#[test]
fn forced_colour_pytest_output_is_graded_by_its_counts() {
    let root = tempfile::tempdir().unwrap();
    // A pytest-style summary in colour, as Pillow's `--color=yes` prints it.
    let tests = r#"python3 - <<'PY'
import sys, unittest
suite = unittest.defaultTestLoader.discover("tests", top_level_dir=".")
result = unittest.TextTestRunner(stream=open("/dev/null", "w")).run(suite)
failed = len(result.failures) + len(result.errors)
passed = result.testsRun - failed
colour = "\x1b[31m" if failed else "\x1b[32m"
counts = (f"{failed} failed, " if failed else "") + f"{passed} passed"
print(f"{colour}{'=' * 30} \x1b[1m{counts}\x1b[0m{colour} in 0.05s {'=' * 30}\x1b[0m")
sys.exit(1 if failed else 0)
PY"#;
    fixture(root.path(), &runner_with("", tests));
    let (out, report) = gold(root.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(gold_successes(&report), vec![true, true], "{report:#}");
    let passed = report["feature_results"][0]["tests_passed"]
        .as_u64()
        .unwrap();
    assert!(passed > 0, "{report:#}");
}

#[test]
fn gold_exits_1_when_a_gold_patch_fails_its_own_tests() {
    let root = tempfile::tempdir().unwrap();
    let task = fixture(root.path(), &runner_with("", UNITTEST));
    // Feature 3's "gold" patch now implements nothing.
    std::fs::write(
        task.join("feature3/feature.patch"),
        "diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644\n--- /dev/null\n+++ b/NOTES.md\n@@ -0,0 +1 @@\n+nothing\n",
    )
    .unwrap();
    let (out, report) = gold(root.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 of 2 gold patch(es) failed"),
        "{}",
        text(&out)
    );
    assert_eq!(gold_successes(&report), vec![true, false], "{report:#}");
}

#[tokio::test]
async fn a_base_that_cannot_be_prepared_fails_once_with_its_reason() {
    let root = tempfile::tempdir().unwrap();
    // A real upstream repository, kept aside for now.
    let aside = root.path().join("aside");
    let (base, _) = crate::upstream_repos::upstream(&aside);
    let task = root.path().join("acme_widget_task/task7");
    std::fs::create_dir_all(task.join("feature1")).unwrap();
    std::fs::create_dir_all(task.join("feature2")).unwrap();
    std::fs::write(
        task.join("Dockerfile"),
        format!("FROM python:3.11-slim\nRUN git clone https://github.com/acme/widget.git repo && cd repo && git checkout {base}\n"),
    )
    .unwrap();
    std::fs::copy(
        dataset().join("cbench_textkit_task/task1/run_tests.sh"),
        task.join("run_tests.sh"),
    )
    .unwrap();
    for (from, to) in [(1, 1), (3, 2)] {
        for f in ["feature.md", "feature.patch", "tests.patch"] {
            std::fs::copy(
                dataset()
                    .join(format!("cbench_textkit_task/task1/feature{from}"))
                    .join(f),
                task.join(format!("feature{to}")).join(f),
            )
            .unwrap();
        }
    }
    let dataset = Dataset::discover(root.path()).unwrap();
    let task = dataset.tasks.first().cloned().expect("the fixture task");
    let mirror = root.path().join("mirror");
    let bases = BaseRepos::new(
        &root.path().join("bases"),
        UpstreamRepos {
            cache_dir: root.path().join("cache"),
            mirror_dir: Some(mirror.clone()),
        },
    );
    let first = bases
        .get(&task)
        .await
        .expect_err("no mirror: preparation fails");
    let first = first.to_string();
    assert!(
        first.contains("acme_widget_task/task7: the base repository could not be prepared")
            && first.contains("acme/widget"),
        "{first}"
    );
    // Even once the mirror is in place, the task is not prepared again in this
    // invocation: every pair and feature gets the first reason at once.
    std::fs::create_dir_all(mirror.join("acme")).unwrap();
    std::fs::rename(&aside, mirror.join("acme/widget")).unwrap();
    let second = bases.get(&task).await.expect_err("the failure is kept");
    assert_eq!(second.to_string(), first);
    // A new invocation (a rerun) prepares it.
    let again = BaseRepos::new(
        &root.path().join("bases2"),
        UpstreamRepos {
            cache_dir: root.path().join("cache"),
            mirror_dir: Some(mirror),
        },
    );
    assert_eq!(again.get(&task).await.expect("prepared").commit, base);
}

#[test]
fn dataset_verify_flags_broken_tests_runners_that_ignore_the_patch_and_flaky_tests() {
    let root = tempfile::tempdir().unwrap();
    // task1: sound, but feature 3's hidden tests do not apply.
    let sound = fixture_task(root.path(), 1, &runner_with("", UNITTEST));
    std::fs::write(
        sound.join("feature3/tests.patch"),
        "diff --git a/missing.py b/missing.py\n--- a/missing.py\n+++ b/missing.py\n@@ -1 +1 @@\n-a\n+b\n",
    )
    .unwrap();
    // task2: a runner that applies nothing and always reports success (typst's local runner).
    fixture_task(
        root.path(),
        2,
        "#!/bin/bash\necho 'Ran 3 tests in 0.001s'\necho\necho OK\n",
    );
    // task3: every third run of a feature fails whatever it tests.
    let flaky = r#"COUNT="$(realpath "$2").count"
n=$(( $(cat "$COUNT" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$COUNT"
if [ $(( n % 3 )) = 2 ]; then echo "Ran 1 test in 0.01s"; echo; echo "FAILED (failures=1)"; exit 1; fi"#;
    fixture_task(root.path(), 3, &runner_with(flaky, UNITTEST));

    let data = root.path().display().to_string();
    let logs = root.path().join("logs").display().to_string();
    let out = cbench(&[
        "dataset",
        "verify",
        "--dataset-dir",
        &data,
        "--log-dir",
        &logs,
        "--repeat",
        "2",
        "-c",
        "4",
        // The flaky runner keeps a count beside its tests patch, which a confined runner
        // cannot write (no state survives a confined run): this checks flakiness detection.
        "--isolation",
        "none",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&root.path().join("logs/verify/verified.json"));
    let problems = |task: u64, feature: u32| -> String {
        report["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["task_id"] == task && f["feature_id"] == feature)
            .map(|f| f["problems"].to_string())
            .unwrap_or_else(|| panic!("no verdict for task{task} feature{feature}: {report:#}"))
    };
    for f in [1, 2, 4, 5] {
        assert_eq!(problems(1, f), "[]", "{report:#}");
    }
    assert!(
        problems(1, 3).contains("the gold patch fails its own tests"),
        "{report:#}"
    );
    for f in 1..=5 {
        let p = problems(2, f);
        assert!(
            p.contains("independent of the patch") && p.contains("pass without the feature"),
            "{p}"
        );
        assert!(
            problems(3, f).contains("flaky: gold + tests passed 1 of 2"),
            "{report:#}"
        );
    }
    assert_eq!(report["verified"], 4);
    assert_eq!(report["unverified"], 11);
    assert_eq!(report["unchecked"], 0);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("verified: 4 of 15 features"), "{table}");
    assert!(
        table.contains(
            "combined: with the task's combined.patch (must pass; - where the task has none)"
        ),
        "{table}"
    );
}

#[test]
fn items_that_could_not_be_checked_are_not_called_dataset_defects() {
    let root = tempfile::tempdir().unwrap();
    let task = fixture_task(root.path(), 1, &runner_with("", UNITTEST));
    // No bundled tree and no upstream in the Dockerfile: the base cannot be prepared.
    std::fs::remove_dir_all(task.join("repo")).unwrap();
    std::fs::write(task.join("Dockerfile"), "FROM scratch\n").unwrap();
    let data = root.path().display().to_string();
    let logs = root.path().join("logs").display().to_string();
    let out = cbench(&[
        "dataset",
        "verify",
        "--dataset-dir",
        &data,
        "--log-dir",
        &logs,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("verified: 0 of 5 features (0 unverified, 5 could not be checked")
            && said.contains("warning: 5 of 5 features could not be checked (not a dataset defect"),
        "{said}"
    );
}

#[test]
fn a_run_can_keep_to_the_verified_items() {
    let root = tempfile::tempdir().unwrap();
    let task = fixture_task(root.path(), 1, &runner_with("", UNITTEST));
    std::fs::write(
        task.join("feature3/tests.patch"),
        "diff --git a/missing.py b/missing.py\n--- a/missing.py\n+++ b/missing.py\n@@ -1 +1 @@\n-a\n+b\n",
    )
    .unwrap();
    let data = root.path().display().to_string();
    let logs = root.path().join("logs").display().to_string();
    let out = cbench(&[
        "dataset",
        "verify",
        "--dataset-dir",
        &data,
        "--log-dir",
        &logs,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let verified = root
        .path()
        .join("logs/verify/verified.json")
        .display()
        .to_string();
    let agent = crate::support::plugins().mini_swe.display().to_string();
    let out = cbench(&[
        "run",
        "-q",
        "-n",
        "verified-only",
        "--dataset-dir",
        &data,
        "--log-dir",
        &logs,
        "--agent",
        &agent,
        "-m",
        "oracle",
        "--exclude-unverified",
        &verified,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let run = root.path().join("logs/verified-only");
    // Feature 3 is in 4 of the 10 pairs.
    assert_eq!(json(&run.join("summary.json"))["pairs"], 6);
    assert!(!run.join("cbench_textkit_task/task1/features_1_3").exists());
    let config = json(&run.join("config.json"));
    assert_eq!(config["exclude_unverified"], verified.as_str());
    // eval grades the same pairs, not the excluded ones as "never ran".
    let out = cbench(&["eval", "-q", "-n", "verified-only", "--log-dir", &logs]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&run.join("summary.json"))["infra_errors"], 0);
}
