//! Head to head: comparing runs pair by pair (with statistics checked against SciPy), refusing
//! runs that are not comparable, several plugins in one command, mixed teams, and pins.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::presentation::{browse, console_errors};
use crate::support::{cbench, dataset, json, plugins, text};

/// `cbench run -q` into `logs` with `extra` arguments; asserts it succeeded.
fn run_ok(logs: &Path, name: &str, extra: &[&str]) {
    let log_dir = logs.display().to_string();
    let data = dataset().display().to_string();
    let mut args = vec![
        "run",
        "-q",
        "-n",
        name,
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &data,
    ];
    args.extend_from_slice(extra);
    let out = cbench(&args);
    assert!(out.status.success(), "{}", text(&out));
}

fn compare_json(logs: &Path, runs: &[&str], extra: &[&str]) -> Value {
    let log_dir = logs.display().to_string();
    let mut args = vec!["compare", "--log-dir", &log_dir, "--json"];
    args.extend_from_slice(runs);
    args.extend_from_slice(extra);
    let out = cbench(&args);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn mini_swe() -> String {
    plugins().mini_swe.display().to_string()
}

/// Copies a run's directory (for a replay script that differs from it).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Makes agent1 of a recorded pair claim to apply its feature without doing it: the command
/// prints what the real one printed, so a replay does not diverge, but nothing changes.
fn sabotage_agent1(recorded_run: &Path, features: &str, feature: u32) {
    let path = recorded_run
        .join("cbench_textkit_task/task1")
        .join(features)
        .join("agent1/trajectory.json");
    let mut trajectory = json(&path);
    let mut changed = 0;
    for call in trajectory["llm_calls"].as_array_mut().unwrap() {
        for tool_call in call["response"]["tool_calls"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            let arguments = tool_call["arguments"].as_str().unwrap_or_default();
            if arguments.contains("CBENCH_ORACLE_PATCH_EOF") {
                tool_call["arguments"] = Value::String(
                    serde_json::json!({ "command": format!("echo 'applied feature {feature}'") })
                        .to_string(),
                );
                changed += 1;
            }
        }
    }
    assert_eq!(changed, 1, "{}", path.display());
    std::fs::write(&path, serde_json::to_string(&trajectory).unwrap()).unwrap();
}

#[test]
fn a_run_compared_with_itself_differs_by_nothing() {
    let logs = tempfile::tempdir().unwrap();
    run_ok(
        logs.path(),
        "same",
        &["--agent", &mini_swe(), "-m", "oracle"],
    );
    let c = compare_json(logs.path(), &["same", "same"], &[]);
    assert_eq!(c["compared_pairs"], 10);
    let p = &c["pairwise"][0]["overall"];
    assert_eq!(
        (p["both"].as_u64(), p["neither"].as_u64()),
        (Some(9), Some(1))
    );
    assert_eq!(
        (p["only_a"].as_u64(), p["only_b"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(p["difference"], 0.0);
    assert_eq!(p["mcnemar_p"], 1.0);
    assert_eq!(p["ci95"], serde_json::json!([0.0, 0.0]));
    assert!(c["pairwise"][0]["disagreements"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn runs_that_differ_on_known_pairs_give_the_exact_paired_statistics() {
    let logs = tempfile::tempdir().unwrap();
    // Without messaging a replay cannot depend on when a teammate's message arrives (with it,
    // a message that lands one call earlier than recorded makes the replay diverge).
    run_ok(
        logs.path(),
        "arm-a",
        &["--agent", &mini_swe(), "-m", "oracle", "--no-messaging"],
    );
    // Arm B replays arm A except that agent1 of 1_3 and 2_4 only pretends to work.
    let script = logs.path().join("script-b");
    copy_dir(&logs.path().join("arm-a"), &script);
    sabotage_agent1(&script, "features_1_3", 1);
    sabotage_agent1(&script, "features_2_4", 2);
    let replay = format!("replay:{}", script.display());
    run_ok(
        logs.path(),
        "arm-b",
        &["--agent", &mini_swe(), "-m", &replay, "--no-messaging"],
    );

    let c = compare_json(logs.path(), &["arm-a", "arm-b"], &[]);
    let side = |k: usize| &c["runs"][k]["overall"];
    assert_eq!(
        (side(0)["count"].as_u64(), side(1)["count"].as_u64()),
        (Some(9), Some(7))
    );
    // Reference values, SciPy 1.17.1:
    //   binomtest(9, 10).proportion_ci(method='wilson') → (0.5958499732047615, 0.9821237869049271)
    //   binomtest(7, 10).proportion_ci(method='wilson') → (0.39677814746114526, 0.892208732593699)
    //   binomtest(0, 2).pvalue → 0.5   (exact McNemar on 2 discordant pairs, both for A)
    //   binom.ppf([0.025, 0.975], 10, 0.2) / 10 → [0.0, 0.5]: the paired bootstrap's percentiles
    //   (the resampled difference is K/10 with K ~ Bin(10, 2/10)).
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    assert!(close(&side(0)["ci95"][0], 0.595_849_973_204_761_5), "{c:#}");
    assert!(close(&side(0)["ci95"][1], 0.982_123_786_904_927_1), "{c:#}");
    assert!(
        close(&side(1)["ci95"][0], 0.396_778_147_461_145_26),
        "{c:#}"
    );
    assert!(close(&side(1)["ci95"][1], 0.892_208_732_593_699), "{c:#}");
    let p = &c["pairwise"][0]["overall"];
    assert_eq!(
        [&p["both"], &p["only_a"], &p["only_b"], &p["neither"]].map(|v| v.as_u64().unwrap()),
        [7, 2, 0, 1]
    );
    assert!(close(&p["difference"], 0.2));
    assert!(close(&p["mcnemar_p"], 0.5));
    assert!(
        close(&p["ci95"][0], 0.0) && close(&p["ci95"][1], 0.5),
        "{p}"
    );
    let per_repo = &c["pairwise"][0]["per_repo"]["cbench_textkit_task"];
    assert_eq!(per_repo["only_a"], 2);
    let disagreements: Vec<&str> = c["pairwise"][0]["disagreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        disagreements,
        [
            "cbench_textkit_task/task1/features_1_3",
            "cbench_textkit_task/task1/features_2_4"
        ]
    );

    // The terminal table says the same, and the page links each disagreement to both runs.
    let log_dir = logs.path().display().to_string();
    let out = cbench(&["compare", "arm-a", "arm-b", "--log-dir", &log_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "both 7 · only A 2 · only B 0 · neither 1",
        "McNemar exact p = 0.5000",
        "10000 resamples",
        "features_1_3 A ✓ B ✗",
    ] {
        assert!(
            table.contains(expected),
            "missing `{expected}` in:\n{table}"
        );
    }
    let page = logs.path().join("compare/arm-a__vs__arm-b/index.html");
    let (dom, log) = browse(&format!("file://{}", page.display()), None);
    assert!(
        console_errors(&log).is_empty(),
        "{:?}",
        console_errors(&log)
    );
    assert_eq!(dom.matches("class=\"disagreement\"").count(), 2, "{dom}");
    for run in ["arm-a", "arm-b"] {
        let link = format!("{run}/view/pair.html?p=cbench_textkit_task__task1__features_1_3");
        assert!(dom.contains(&link), "no link to {link}:\n{dom}");
        assert!(logs
            .path()
            .join(run)
            .join("view/data/pairs/cbench_textkit_task__task1__features_1_3.js")
            .is_file());
    }
}

#[test]
fn runs_that_are_not_comparable_are_refused_by_name() {
    let logs = tempfile::tempdir().unwrap();
    run_ok(
        logs.path(),
        "coop",
        &["--agent", &mini_swe(), "-m", "oracle", "-f", "1,2"],
    );
    run_ok(
        logs.path(),
        "solo",
        &[
            "--agent",
            &mini_swe(),
            "-m",
            "oracle",
            "-f",
            "1,2",
            "--setting",
            "solo",
        ],
    );
    let log_dir = logs.path().display().to_string();
    let out = cbench(&["compare", "coop", "solo", "--log-dir", &log_dir]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("setting differs: coop coop, solo solo"),
        "{err}"
    );
    assert!(err.contains("--allow-mismatch"), "{err}");
    // Accepted on request, and said with the result.
    let c = compare_json(logs.path(), &["coop", "solo"], &["--allow-mismatch"]);
    assert!(c["mismatches"][0]
        .as_str()
        .unwrap()
        .contains("setting differs"));

    // Another dataset (a task input changed) or another grading procedure.
    let copy = logs.path().join("coop-other-data");
    copy_dir(&logs.path().join("coop"), &copy);
    let eval_path = copy.join("cbench_textkit_task/task1/features_1_2/eval.json");
    let mut eval = json(&eval_path);
    eval["task_inputs_sha256"] = Value::String("0".repeat(64));
    eval["grading_version"] = Value::String("cbench-grading-3".into());
    std::fs::write(&eval_path, eval.to_string()).unwrap();
    let out = cbench(&["compare", "coop", "coop-other-data", "--log-dir", &log_dir]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("task inputs") && err.contains("features_1_2"),
        "{err}"
    );
    assert!(
        err.contains("grading version") && err.contains("cbench-grading-3"),
        "{err}"
    );
}

#[test]
fn two_agents_in_one_command_make_two_runs_and_a_comparison() {
    let logs = tempfile::tempdir().unwrap();
    let other = logs.path().join("other_agent.wasm");
    std::fs::copy(&plugins().mini_swe, &other).unwrap();
    let log_dir = logs.path().display().to_string();
    let data = dataset().display().to_string();
    let out = cbench(&[
        "run",
        "-n",
        "duel",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &data,
        "--agent",
        &mini_swe(),
        "--agent",
        &other.display().to_string(),
        "-m",
        "oracle",
        "-f",
        "1,2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for run in ["duel-msa", "duel-other_agent"] {
        assert!(
            logs.path()
                .join(run)
                .join("cbench_textkit_task/task1/features_1_2/eval.json")
                .is_file(),
            "{run} keeps the documented layout:\n{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "{run} · cbench_textkit_task/task1 features_1_2 · "
            )),
            "lines name the run and the pair:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("Comparison: duel-msa vs duel-other_agent"),
        "{stdout}"
    );
    assert!(logs
        .path()
        .join("compare/duel-msa__vs__duel-other_agent/index.html")
        .is_file());
}

#[test]
fn a_mixed_team_records_each_agents_plugin() {
    let logs = tempfile::tempdir().unwrap();
    let team = format!("{},{}", mini_swe(), plugins().probe.display());
    let (log_dir, data) = (
        logs.path().display().to_string(),
        dataset().display().to_string(),
    );
    // Not quiet: the header is checked. The API base carries what must never be recorded.
    let out = cbench(&[
        "run",
        "-n",
        "mixed",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &data,
        "--team",
        &team,
        "-m",
        "oracle",
        "-f",
        "1,2",
        "--temperature",
        "0.2",
        "--max-output-tokens",
        "512",
        "--api-base",
        "http://user:hunter2@127.0.0.1:9/v1?key=sk-secret",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = stdout.lines().take(3).collect();
    let header = header.join("\n");
    // Every member of a mixed team is named with its version and build.
    assert!(
        header.contains("agent: team mini_swe ") && header.contains(" + probe "),
        "{header}"
    );
    assert_eq!(header.matches("(sha256 ").count(), 2, "{header}");
    assert!(
        header
            .contains("llm: temperature 0.2 · max output tokens 512 · API base http://127.0.0.1:9"),
        "{header}"
    );
    assert!(
        !stdout.contains("hunter2") && !stdout.contains("sk-secret"),
        "{stdout}"
    );
    let run = logs.path().join("mixed");
    let config_text = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(
        !config_text.contains("hunter2") && !config_text.contains("sk-secret"),
        "{config_text}"
    );
    let config = json(&run.join("config.json"));
    assert_eq!(config["api_base"], "http://127.0.0.1:9");
    assert_eq!(config["temperature"], 0.2);
    assert_eq!(config["max_output_tokens"], 512);
    // The overview page's header says the same.
    let out = cbench(&["view", "-n", "mixed", "--log-dir", &log_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let (index, log) = crate::presentation::browse(
        &format!("file://{}", run.join("view/index.html").display()),
        None,
    );
    assert!(
        crate::presentation::console_errors(&log).is_empty(),
        "{log}"
    );
    assert!(
        index.contains("temperature 0.2 · max output tokens 512 · API base http://127.0.0.1:9")
            && index.contains("agent2 = probe ")
            && !index.contains("hunter2"),
        "{index}"
    );
    let result = json(&run.join("cbench_textkit_task/task1/features_1_2/result.json"));
    assert_eq!(result["agents"][0]["plugin"]["name"], "mini_swe");
    assert_eq!(result["agents"][1]["plugin"]["name"], "probe");
    assert_ne!(
        result["agents"][0]["plugin"]["sha256"],
        result["agents"][1]["plugin"]["sha256"]
    );
    assert_eq!(config["team"][1]["name"], "probe");
    // The comparison breaks results down by role.
    let c = compare_json(logs.path(), &["mixed", "mixed"], &[]);
    let roles = &c["runs"][0]["roles"];
    assert_eq!(roles[0]["plugin"], "mini_swe");
    assert_eq!(roles[1]["plugin"], "probe");
    assert_eq!(roles[0]["individual"]["count"], 1, "{c:#}");
    assert_eq!(roles[1]["individual"]["count"], 0, "{c:#}");
    let out = cbench(&["report", "-n", "mixed", "--log-dir", &log_dir, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["roles"][1]["plugin"], "probe", "{report:#}");
    assert_eq!(report["roles"][0]["individual"]["count"], 1, "{report:#}");

    // One plugin per agent, or nothing starts.
    let three = format!("{team},{}", mini_swe());
    let out = cbench(&[
        "run",
        "-n",
        "bad-team",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &data,
        "--team",
        &three,
        "-m",
        "oracle",
        "-f",
        "1,2",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--team has 3 plugins"));
    assert!(!logs.path().join("bad-team").exists());
}

#[test]
fn pins_and_locks_refuse_other_bytes_before_anything_starts() {
    let logs = tempfile::tempdir().unwrap();
    let plugin: PathBuf = logs.path().join("agent.wasm");
    std::fs::copy(&plugins().mini_swe, &plugin).unwrap();
    let real = cbench::fsutil::sha256_hex(&std::fs::read(&plugin).unwrap());
    let wrong = "0".repeat(64);
    let log_dir = logs.path().display().to_string();
    let data = dataset().display().to_string();
    let pinned = format!("{}@sha256:{wrong}", plugin.display());
    let out = cbench(&[
        "run",
        "-n",
        "pinned",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &data,
        "--agent",
        &pinned,
        "-m",
        "oracle",
        "-f",
        "1,2",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&real) && err.contains(&wrong),
        "both hashes named: {err}"
    );
    assert!(!logs.path().join("pinned").exists(), "nothing started");

    // The right pin runs; --lock records the series and refuses a changed budget.
    let lock = logs.path().join("series.lock").display().to_string();
    let pinned = format!("{}@sha256:{real}", plugin.display());
    run_ok(
        logs.path(),
        "locked",
        &[
            "--agent", &pinned, "-m", "oracle", "-f", "1,2", "--lock", &lock,
        ],
    );
    let locked = json(Path::new(&lock));
    assert_eq!(locked["plugins"]["agent.wasm"], real.as_str());
    assert_eq!(locked["pairs"], 1);
    let out = cbench(&[
        "run",
        "-n",
        "locked-2",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &data,
        "--agent",
        &pinned,
        "-m",
        "oracle",
        "-f",
        "1,2",
        "--lock",
        &lock,
        "--max-steps",
        "7",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("budgets: locked") && err.contains("max_steps"),
        "{err}"
    );
    assert!(!logs.path().join("locked-2").exists());

    // verify: the recorded plugin against the file on disk.
    let out = cbench(&["verify", "-n", "locked", "--log-dir", &log_dir]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&plugin, b"not the same plugin").unwrap();
    let out = cbench(&["verify", "-n", "locked", "--log-dir", &log_dir]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the file changed"));
}
