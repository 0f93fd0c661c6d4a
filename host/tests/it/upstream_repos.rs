//! Real upstream repositories on the local backend: a task whose Dockerfile
//! names `https://github.com/acme/widget` at a base commit, served from a
//! `--repo-cache` directory the test builds with git.

use std::path::Path;
use std::process::Command;

use cbench::repos::UpstreamRepos;

use crate::support::{cbench, cbench_with_env, dataset, json, plugins, text};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An "upstream" repo whose first commit is the bundled textkit tree (tagged
/// v0.1) followed by a later commit (tagged v0.2). Returns (base, later).
pub(crate) fn upstream(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let tree = dataset().join("cbench_textkit_task/task1/repo");
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", tree.display()))
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "base"]);
    git(dir, &["tag", "v0.1"]);
    let base = git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("FUTURE.md"), "from the future\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "later"]);
    git(dir, &["tag", "v0.2"]);
    let later = git(dir, &["rev-parse", "HEAD"]);
    (base, later)
}

/// A dataset with one task pointing at acme/widget, features 1 and 3 of the bundled task.
fn dataset_for(root: &Path, base: &str) {
    let task = root.join("acme_widget_task/task7");
    std::fs::create_dir_all(&task).unwrap();
    std::fs::write(
        task.join("Dockerfile"),
        format!("FROM python:3.11-slim\nWORKDIR /workspace\nRUN git clone https://github.com/acme/widget.git repo && \\\n    cd repo && \\\n    git checkout {base}\n"),
    )
    .unwrap();
    let bundled = dataset().join("cbench_textkit_task/task1");
    std::fs::copy(bundled.join("run_tests.sh"), task.join("run_tests.sh")).unwrap();
    for (from, to) in [(1, 1), (3, 2)] {
        let dest = task.join(format!("feature{to}"));
        std::fs::create_dir_all(&dest).unwrap();
        for f in ["feature.md", "feature.patch", "tests.patch"] {
            std::fs::copy(bundled.join(format!("feature{from}")).join(f), dest.join(f)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_prepared_base_has_no_history_after_the_base_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, later) = upstream(&tmp.path().join("mirror/acme/widget"));
    let repos = UpstreamRepos {
        cache_dir: tmp.path().join("cache"),
        mirror_dir: Some(tmp.path().join("mirror")),
    };
    let prepared = repos
        .prepare("https://github.com/acme/widget.git", &base)
        .await
        .unwrap();
    assert_eq!(git(&prepared, &["rev-parse", "HEAD"]), base);
    assert_eq!(git(&prepared, &["tag"]), "v0.1");
    assert_eq!(git(&prepared, &["remote"]), "");
    assert_eq!(
        git(&prepared, &["log", "--all", "--oneline"])
            .lines()
            .count(),
        1
    );
    let probe = Command::new("git")
        .args(["cat-file", "-e", &later])
        .current_dir(&prepared)
        .status()
        .unwrap();
    assert!(
        !probe.success(),
        "the later commit is still in the object store"
    );
    assert!(!prepared.join("FUTURE.md").exists());

    // A missing mirror is named, with where it was expected.
    let err = repos
        .prepare("https://github.com/acme/nope.git", &base)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("acme/nope"), "{err}");
}

#[tokio::test]
async fn a_clone_missing_objects_after_the_base_still_prepares_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror/acme/widget");
    let (base, later) = upstream(&mirror);
    // As in a `--filter=blob:none` clone or a damaged snapshot: a blob of a later commit is
    // gone, so the whole history can be neither cloned nor garbage-collected.
    let blob = git(&mirror, &["rev-parse", &format!("{later}:FUTURE.md")]);
    std::fs::remove_file(
        mirror
            .join(".git/objects")
            .join(&blob[..2])
            .join(&blob[2..]),
    )
    .unwrap();
    let repos = UpstreamRepos {
        cache_dir: tmp.path().join("cache"),
        mirror_dir: Some(tmp.path().join("mirror")),
    };
    let prepared = repos
        .prepare("https://github.com/acme/widget.git", &base)
        .await
        .unwrap();
    assert_eq!(git(&prepared, &["rev-parse", "HEAD"]), base);
    assert_eq!(git(&prepared, &["tag"]), "v0.1");
    assert_eq!(git(&prepared, &["status", "--porcelain"]), "");
    assert!(prepared.join("textkit/strings.py").is_file());
    assert!(!prepared.join("FUTURE.md").exists());
    // A base commit the clone does not hold is still an error naming it.
    let err = UpstreamRepos {
        cache_dir: tmp.path().join("cache2"),
        mirror_dir: Some(tmp.path().join("mirror")),
    }
    .prepare(
        "https://github.com/acme/widget.git",
        "0123456789012345678901234567890123456789",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("0123456789"), "{err}");
}

#[test]
fn oracle_runs_on_an_upstream_task_from_a_repo_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = upstream(&tmp.path().join("mirror/acme/widget"));
    dataset_for(&tmp.path().join("ds"), &base);
    let agent = plugins().mini_swe.display().to_string();
    let p = |s: &str| tmp.path().join(s).display().to_string();
    let out = cbench(&[
        "run",
        "-q",
        "-n",
        "upstream",
        "--agent",
        &agent,
        "-m",
        "oracle",
        "-r",
        "acme_widget",
        "-t",
        "7",
        "--repo-cache",
        &p("mirror"),
        "--dataset-dir",
        &p("ds"),
        "--log-dir",
        &p("logs"),
        "--cache-dir",
        &p("cache"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let eval = json(
        &tmp.path()
            .join("logs/upstream/acme_widget_task/task7/features_1_2/eval.json"),
    );
    assert_eq!(eval["overall_success"], true, "{eval:#}");
    assert_eq!(eval["merged"]["merge_strategy"], "naive");

    let listing = cbench(&["dataset", "list", "--json", "--dataset-dir", &p("ds")]);
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(
        listing["per_task"][0]["upstream_url"],
        "https://github.com/acme/widget.git"
    );
    assert_eq!(listing["per_task"][0]["base_commit"], base.as_str());
    assert_eq!(
        listing["per_task"][0]["image"],
        "akhatua/cooperbench-acme-widget:task7"
    );
}

/// A runner shaped like the real tasks' run_tests.sh: a uv venv, pytest from PyPI, and the
/// `tests/test_feature*.py` selection. (PyPI is reachable on our machines and in CI.)
const UV_RUNNER: &str = r#"#!/bin/bash
set -e
REPO_PATH="$1"; TEST_PATCH="$(realpath "$2")"; FEATURE_PATCH="$3"
[[ -n "$FEATURE_PATCH" ]] && FEATURE_PATCH="$(realpath "$FEATURE_PATCH")"
cd "$REPO_PATH"
if [[ -n "$FEATURE_PATCH" ]]; then
    git apply --ignore-whitespace --ignore-space-change "$FEATURE_PATCH" || git apply --3way "$FEATURE_PATCH"
fi
git apply --ignore-whitespace --ignore-space-change "$TEST_PATCH" || git apply --3way "$TEST_PATCH"
uv venv --python python3 -q .venv
uv pip install --python .venv/bin/python -q pytest
echo "credentials visible: $(env | grep -c not-for-tests || true)"
.venv/bin/python -m pytest tests/test_feature*.py -v 2>&1
"#;

#[test]
fn a_uv_venv_runner_with_pytest_grades_on_the_local_backend() {
    assert!(
        Command::new("uv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "uv is required for this test (pip install uv)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = upstream(&tmp.path().join("mirror/acme/widget"));
    dataset_for(&tmp.path().join("ds"), &base);
    std::fs::write(
        tmp.path().join("ds/acme_widget_task/task7/run_tests.sh"),
        UV_RUNNER,
    )
    .unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let p = |s: &str| tmp.path().join(s).display().to_string();
    let out = cbench_with_env(
        &[
            "run",
            "-q",
            "-n",
            "uv",
            "--agent",
            &agent,
            "-m",
            "oracle",
            "--repo-cache",
            &p("mirror"),
            "--dataset-dir",
            &p("ds"),
            "--log-dir",
            &p("logs"),
            "--cache-dir",
            &p("cache"),
        ],
        &[("EXAMPLE_API_KEY", "not-for-tests")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let pair = tmp
        .path()
        .join("logs/uv/acme_widget_task/task7/features_1_2");
    let eval = json(&pair.join("eval.json"));
    assert_eq!(eval["overall_success"], true, "{eval:#}");
    // pytest's counts: feature 1 has 3 tests, feature 3 (here feature 2) has 3.
    assert_eq!(eval["agent1"]["tests_passed"], 3, "{eval:#}");
    assert_eq!(eval["merged"]["tests_passed"], 6, "{eval:#}");
    let log = std::fs::read_to_string(pair.join("eval_logs/merged_feature1.log")).unwrap();
    assert!(log.contains("passed in"), "{log}");
    assert!(log.contains("credentials visible: 0"), "{log}");
}
