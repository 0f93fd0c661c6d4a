//! Contract versions side by side: plugins built against `cooperbench:agent@0.1.0` and
//! `@0.2.0` long ago run in the same binary as current plugins and grade identically, and what
//! 0.2.0 added —
//! capabilities that need both the plugin's declaration and the user's grant, `exec` with a
//! working directory and environment, `broadcast` — does what the .wit says.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{
    cbench, dataset, json, pair_grades, plugins, run_dirs, text, write_temp, Run,
};

/// A frozen build of mini_swe against an older contract, checked against its recorded sha256
/// (never rebuilt; see tests/fixtures/README.md).
fn fixture(version: &str, sha256: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/mini_swe-wit-{version}.wasm"));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        cbench::fsutil::sha256_hex(&bytes),
        sha256,
        "the {version} fixture must never be rebuilt"
    );
    path
}

#[test]
fn plugins_built_against_0_1_0_0_2_0_and_0_3_0_run_in_one_binary_and_grade_identically() {
    let old = fixture(
        "0.1.0",
        "623683ed20e38105a78a67e42a83762d5f9562ab78689882920b8b217c0b78ae",
    );
    let previous = fixture(
        "0.2.0",
        "7d281ad334b21a361113c7198cd8a481268c09358f28dc173a5c37334ff09174",
    );
    for setting in ["coop", "solo"] {
        let logs = tempfile::tempdir().unwrap();
        let log_dir = logs.path().display().to_string();
        let data = dataset().display().to_string();
        let out = cbench(&[
            "run",
            "-q",
            "-n",
            "versions",
            "--log-dir",
            &log_dir,
            "--dataset-dir",
            &data,
            "--agent",
            old.to_str().unwrap(),
            "--agent",
            previous.to_str().unwrap(),
            "--agent",
            plugins().mini_swe.to_str().unwrap(),
            "-m",
            "oracle",
            "--setting",
            setting,
        ]);
        assert!(out.status.success(), "{setting}: {}", text(&out));
        let dirs = run_dirs(logs.path());
        assert_eq!(dirs.len(), 3, "{dirs:?}");
        let mut versions = Vec::new();
        for dir in &dirs {
            let first = pair_grades(dir);
            assert_eq!(first.len(), 10, "{setting}: {}", dir.display());
            let result = json(&dir.join("cbench_textkit_task/task1/features_1_2/result.json"));
            versions.push(
                result["plugin"]["wit_version"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        versions.sort();
        assert_eq!(versions, ["0.1.0", "0.2.0", "0.3.0"], "{setting}");
        let a = pair_grades(&dirs[0]);
        for other in &dirs[1..] {
            assert_eq!(
                a,
                pair_grades(other),
                "{setting}: the contract versions graded differently"
            );
        }
        assert!(
            a.iter().any(|(_, _, v)| v["overall_success"] == true),
            "{setting}: the oracle should pass some pairs: {a:?}"
        );
    }
}

/// Runs the probe on pair 1,3 with per-agent modes and extra options; returns the run.
fn probe(name: &str, modes: &str, extra: &[&str]) -> Run {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = write_temp(cfg_dir.path(), "modes.txt", modes);
    let agent = plugins().probe.display().to_string();
    let mut args = vec![
        "--agent",
        agent.as_str(),
        "-m",
        "oracle",
        "-f",
        "1,3",
        "--agent-config",
        cfg.as_str(),
        "--no-auto-eval",
    ];
    args.extend_from_slice(extra);
    let run = Run::start(name, &args);
    run.assert_ok();
    run
}

fn agents(run: &Run) -> Vec<Value> {
    json(&run.pair(1, 3).join("result.json"))["agents"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_capability_needs_the_plugins_declaration_and_the_users_grant() {
    // The user allows git; the probe declares only messaging: no team remote for it.
    let run = probe("caps-probe", "git-remote", &["--git"]);
    for agent in agents(&run) {
        assert_eq!(
            agent["capabilities_granted"],
            serde_json::json!(["messaging"]),
            "{agent:#}"
        );
        assert_eq!(
            agent["summary"], "git-enabled=false messaging-enabled=true remotes=[]",
            "{agent:#}"
        );
    }
    // The user forbids messaging: declared or not, nobody gets it.
    let run = probe(
        "caps-probe-quiet",
        "git-remote",
        &["--git", "--no-messaging"],
    );
    for agent in agents(&run) {
        assert_eq!(
            agent["capabilities_granted"],
            serde_json::json!([]),
            "{agent:#}"
        );
        assert_eq!(
            agent["summary"],
            "git-enabled=false messaging-enabled=false remotes=[]"
        );
    }
    // mini_swe declares both and gets both when the user allows them.
    let mini = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "caps-mini",
        &[
            "--agent",
            &mini,
            "-m",
            "oracle",
            "-f",
            "1,3",
            "--git",
            "--no-auto-eval",
        ],
    );
    run.assert_ok();
    for agent in agents(&run) {
        assert_eq!(
            agent["capabilities_granted"],
            serde_json::json!(["messaging", "git"]),
            "{agent:#}"
        );
    }
}

#[test]
fn exec_takes_a_working_directory_and_environment_that_cannot_escape() {
    let run = probe("exec-options", "exec-options", &[]);
    let summary = agents(&run)[0]["summary"].as_str().unwrap().to_string();
    for expected in [
        "in sub: ok 0 deeper",
        "env: ok 0 it's $HOME",
        "env gone: ok 0 []",
        "escape: err SandboxError::InvalidArgument(\"workdir `../..` leaves the repository\")",
        "bad name: err SandboxError::InvalidArgument(\"environment variable name `A=B; rm -rf .` is not a shell identifier\")",
    ] {
        assert!(
            summary.contains(expected),
            "`{expected}` missing in:\n{summary}"
        );
    }
    let trajectory = json(&run.pair(1, 3).join("agent1/trajectory.json"));
    let text = trajectory.to_string();
    assert!(
        text.contains("\"workdir\":\"sub/deeper\""),
        "the workdir is recorded"
    );
    assert!(text.contains("\"GREETING\""), "the environment is recorded");
}

#[test]
fn broadcast_reaches_every_teammate_still_working() {
    let run = probe("broadcast", "broadcast", &[]);
    let a = agents(&run);
    assert_eq!(
        a[0]["summary"], "reached=[\"agent2\"] heard=[\"agent2: hello all from agent2\"]",
        "{a:#?}"
    );
    assert_eq!(
        a[1]["summary"], "reached=[\"agent1\"] heard=[\"agent1: hello all from agent1\"]",
        "{a:#?}"
    );
    let conversation = json(&run.pair(1, 3).join("conversation.json"));
    assert_eq!(
        conversation.as_array().unwrap().len(),
        2,
        "{conversation:#}"
    );
}
