//! The bundled dataset through the real binary with the oracle model.

use crate::support::{cbench, json, plugins, text, Run};

/// The designed merge situations: (pair, strategy, merged success).
const DESIGN: &[((u32, u32), &str, bool)] = &[
    ((1, 2), "union", true),
    ((1, 3), "naive", true),
    ((1, 4), "naive", true),
    ((1, 5), "naive", true),
    ((2, 3), "naive", true),
    ((2, 4), "naive", true),
    ((2, 5), "naive", true),
    ((3, 4), "naive", true),
    ((3, 5), "naive", true),
    ((4, 5), "union", false),
];

#[test]
fn coop_oracle_run_grades_every_pair_as_designed() {
    let agent = plugins().mini_swe.display().to_string();
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().display().to_string();
    let dataset = crate::support::dataset().display().to_string();
    // Not quiet: the progress output is part of the contract.
    let out = cbench(&[
        "run",
        "--agent",
        &agent,
        "-m",
        "oracle",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &dataset,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "cbench run: coop-msa-oracle-full",
        "[Task 1/10]",
        "[Task 10/10]",
        "Agent 1 → Agent 2: \"",
        "✓ Complete in",
        "Summary: coop-msa-oracle-full",
        "overall successes: 9",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }

    let run_dir = logs.path().join("coop-msa-oracle-full");
    for ((a, b), strategy, merged_ok) in DESIGN {
        let pair = run_dir
            .join("cbench_textkit_task/task1")
            .join(format!("features_{a}_{b}"));
        let eval = json(&pair.join("eval.json"));
        let what = format!("pair {a},{b}: {eval:#}");
        assert_eq!(eval["agent1"]["success"], true, "{what}");
        assert_eq!(eval["agent2"]["success"], true, "{what}");
        assert_eq!(eval["merged"]["merge_strategy"], *strategy, "{what}");
        assert_eq!(
            eval["merged"]["merge_conflict"],
            *strategy == "union",
            "{what}"
        );
        assert_eq!(eval["merged"]["success"], *merged_ok, "{what}");
        assert_eq!(eval["overall_success"], *merged_ok, "{what}");
        for agent in ["agent1", "agent2"] {
            let traj = json(&pair.join(agent).join("trajectory.json"));
            assert_eq!(traj["agent_id"], agent);
            assert!(traj["steps"].as_array().is_some_and(|s| !s.is_empty()));
            assert!(traj["token_usage"]["total_tokens"]
                .as_u64()
                .is_some_and(|t| t > 0));
            let patch = std::fs::read_to_string(pair.join(agent).join("patch.diff")).unwrap();
            assert!(
                patch.starts_with("diff --git"),
                "{agent} patch of {a},{b}: {patch}"
            );
        }
        let conversation = json(&pair.join("conversation.json"));
        assert_eq!(
            conversation.as_array().map(Vec::len),
            Some(2),
            "each oracle agent announces once"
        );
        let result = json(&pair.join("result.json"));
        assert_eq!(result["plugin"]["name"], "mini_swe");
        assert_eq!(result["plugin"]["wit_version"], "0.3.0");
        assert_eq!(result["plugin"]["sha256"].as_str().map(str::len), Some(64));
        assert_eq!(result["agents"][0]["status"], "Submitted");
    }
    let summary = json(&run_dir.join("summary.json"));
    assert_eq!(summary["pairs"], 10);
    assert_eq!(summary["overall_successes"], 9);
    assert_eq!(summary["merge_conflicts"], 2);
    assert_eq!(summary["union_rescues"], 1);
    assert_eq!(summary["infra_errors"], 0);
    assert!(json(&run_dir.join("config.json"))["agent"]["sha256"].is_string());
}

#[test]
fn solo_oracle_applies_both_features_and_reports_what_did_not_apply() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "solo",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "--setting",
            "solo",
            "-s",
            "smoke",
        ],
    );
    run.assert_ok();
    let clean = json(&run.pair(1, 3).join("eval.json"));
    assert_eq!(clean["solo"]["success"], true, "{clean:#}");
    assert_eq!(clean["overall_success"], true);
    assert!(clean["merged"].is_null());
    // 4 and 5 rewrite the same line: the second gold patch cannot apply on the first.
    let clash = json(&run.pair(4, 5).join("eval.json"));
    assert_eq!(clash["overall_success"], false);
    let traj = json(&run.pair(4, 5).join("solo/trajectory.json"));
    let last = traj["llm_calls"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap();
    assert!(
        last["response"]["content"]
            .as_str()
            .unwrap()
            .contains("feature 5 did not apply"),
        "{last:#}"
    );
    assert!(run.pair(4, 5).join("solo/patch.diff").is_file());
}

#[test]
fn eval_regrades_a_changed_patch_and_keeps_current_grades() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "regrade",
        &["--agent", &agent, "-m", "oracle", "-s", "smoke"],
    );
    run.assert_ok();
    let untouched_before = json(&run.pair(1, 3).join("eval.json"));
    std::fs::write(run.pair(1, 2).join("agent1/patch.diff"), "").unwrap();

    let log_dir = run.logs.path().display().to_string();
    let out = cbench(&["eval", "-q", "-n", &run.name, "--log-dir", &log_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let regraded = json(&run.pair(1, 2).join("eval.json"));
    assert_eq!(
        regraded["agent1"]["success"], false,
        "an empty patch cannot pass: {regraded:#}"
    );
    assert_eq!(regraded["overall_success"], false);
    let untouched_after = json(&run.pair(1, 3).join("eval.json"));
    assert_eq!(
        untouched_before["evaluated_at"],
        untouched_after["evaluated_at"]
    );
}

#[test]
fn a_second_run_resumes_and_force_starts_over() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start("resume", &["--agent", &agent, "-m", "oracle", "-f", "1,3"]);
    run.assert_ok();
    let first = json(&run.pair(1, 3).join("result.json"));
    let log_dir = run.logs.path().display().to_string();
    let dataset = crate::support::dataset().display().to_string();
    let common = [
        "run",
        "-q",
        "-n",
        "resume",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &dataset,
        "--agent",
        &agent,
        "-m",
        "oracle",
        "-f",
        "1,3",
    ];
    let out = cbench(&common);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        json(&run.pair(1, 3).join("result.json"))["started_at"],
        first["started_at"]
    );
    // Not quiet, the resume says so once, up front, and the summary tells this invocation's
    // time from the run's.
    let loud: Vec<&str> = common.iter().copied().filter(|a| *a != "-q").collect();
    let out = cbench(&loud);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("resuming run resume: the agents of 1 of 1 pairs already ran")
            && said.contains("(this invocation; the run so far: "),
        "{said}"
    );

    let mut forced = common.to_vec();
    forced.push("--force");
    let out = cbench(&forced);
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(
        json(&run.pair(1, 3).join("result.json"))["started_at"],
        first["started_at"]
    );

    // Same name, another plugin: refused before that plugin is compiled (nothing lands in a
    // fresh compile cache).
    let cache = tempfile::tempdir().unwrap();
    let probe = plugins().probe.display().to_string();
    let mut other_plugin = common.to_vec();
    assert_eq!(other_plugin[8], "--agent");
    other_plugin[9] = &probe;
    let out = crate::support::cbench_with_env(
        &other_plugin,
        &[("CBENCH_CACHE_DIR", cache.path().to_str().unwrap())],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--agent (plugin sha256)"),
        "{}",
        text(&out)
    );
    assert!(
        !cache.path().join("components").exists()
            || std::fs::read_dir(cache.path().join("components"))
                .unwrap()
                .next()
                .is_none(),
        "the other plugin was compiled before the refusal"
    );

    // Same name, different model: refused instead of mixing results.
    let script = crate::support::write_temp(run.logs.path(), "s.json", "[]");
    let model = format!("scripted:{script}");
    let mut other = common.to_vec();
    other[11] = &model;
    let out = cbench(&other);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("different -m/--model (oracle → scripted:"),
        "{}",
        text(&out)
    );
}

#[test]
fn ctrl_c_stops_the_run_kills_its_commands_and_keeps_written_results() {
    let dir = tempfile::tempdir().unwrap();
    // A sleep length no other test uses, so the process check below is unambiguous.
    let script = crate::support::write_temp(
        dir.path(),
        "sleepy.json",
        r#"[{"bash": "sleep 4242"}, {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]"#,
    );
    let agent = plugins().mini_swe.display().to_string();
    let logs = dir.path().join("logs");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cbench"))
        .args([
            "run",
            "-q",
            "-n",
            "interrupted",
            "-f",
            "1,3",
            "--agent",
            &agent,
        ])
        .args(["-m", &format!("scripted:{script}")])
        .arg("--log-dir")
        .arg(&logs)
        .arg("--dataset-dir")
        .arg(crate::support::dataset())
        .env("CBENCH_CACHE_DIR", crate::support::cache_dir())
        .spawn()
        .unwrap();
    let config = logs.join("interrupted/config.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !config.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 4242"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "agent commands survived Ctrl-C: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    assert!(json(&config)["name"] == "interrupted", "config.json intact");
}

#[test]
fn the_pair_benchmark_runs_the_bundled_pair_and_counts_every_step() {
    let agent = plugins().mini_swe.display().to_string();
    let data = crate::support::dataset().display().to_string();
    let out = cbench(&[
        "bench",
        "--pair",
        "--pair-runs",
        "1",
        "--pair-commands",
        "2",
        "--pair-think-ms",
        "5",
        "--agent",
        &agent,
        "--dataset-dir",
        &data,
    ]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    // Two commands and a submit: three model calls per agent, two steps between them.
    for (setting, steps) in [("coop", 4), ("solo", 2)] {
        let line = said
            .lines()
            .find(|l| l.contains(&format!("local   {setting}")))
            .unwrap_or_else(|| panic!("no {setting} line: {said}"));
        for figure in [
            "wall per pair incl. grading",
            "launch → first model request",
            "after the last model reply",
        ] {
            assert!(line.contains(figure), "{line}");
        }
        // Every step is counted and split into the command, the plugin and the host.
        assert!(
            line.contains(&format!("({steps} steps; p50 of its command ")),
            "{line}"
        );
        assert!(
            line.contains(", plugin ") && line.contains(", host "),
            "{line}"
        );
    }
    assert!(said.contains("peak RSS of this process"), "{said}");
}

/// `run --trace FILE`: a Chrome trace of the run (each agent a track: its model calls and
/// commands, the shell round trip inside each command; the pair's patches, merge and test runs),
/// and every trajectory call after the first splits the step that led to it.
#[test]
fn a_traced_run_shows_every_step_and_the_trajectory_splits_it() {
    let scratch = tempfile::tempdir().unwrap();
    let script = crate::support::write_temp(
        scratch.path(),
        "script.json",
        r#"{"*": [{"bash": "ls", "delay_ms": 20}, {"bash": "sleep 0.05; ls", "delay_ms": 20},
                  {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]}"#,
    );
    let trace = scratch.path().join("run.trace.json");
    let trace_arg = trace.display().to_string();
    let agent = plugins().mini_swe.display().to_string();
    let model = format!("scripted:{script}");
    let run = Run::start(
        "traced",
        &[
            "--agent", &agent, "-m", &model, "-f", "1,2", "--trace", &trace_arg,
        ],
    );
    run.assert_ok();
    assert!(
        !scratch.path().join("run.trace.json.partial").exists(),
        "the partial trace was left behind"
    );
    let events = json(&trace);
    let events = events
        .as_array()
        .expect("a Chrome trace is an array of events");
    // Async spans: a begin ("b") and an end ("e") per span, matched by name within their root
    // span's id (spans of one name may overlap there: a pair's test runs).
    let mut open: std::collections::HashMap<(String, String), Vec<f64>> = Default::default();
    let mut spans: Vec<(String, String, f64)> = Vec::new();
    for e in events {
        let (Some(ph), Some(name)) = (e["ph"].as_str(), e["name"].as_str()) else {
            continue;
        };
        let key = (e["id"].to_string(), name.to_string());
        let ts = e["ts"].as_f64().unwrap_or_default();
        match ph {
            "b" => open.entry(key).or_default().push(ts),
            "e" => {
                let begun = open
                    .get_mut(&key)
                    .and_then(Vec::pop)
                    .expect("an end without a begin");
                let agent = e["args"]["agent"].as_str().unwrap_or_default().to_string();
                spans.push((name.to_string(), agent, ts - begun));
            }
            _ => {}
        }
    }
    let count = |name: &str| spans.iter().filter(|s| s.0 == name).count();
    // Two agents, three model calls and three commands each.
    assert_eq!(count("agent"), 2, "{spans:?}");
    assert_eq!(count("model_call"), 6, "{spans:?}");
    assert_eq!(count("command"), 6, "{spans:?}");
    assert_eq!(count("shell_round_trip"), 6, "{spans:?}");
    for name in ["pair", "sandbox_start", "patch_out", "grade", "merge"] {
        assert!(count(name) >= 1, "no {name} span: {spans:?}");
    }
    assert_eq!(count("test_run"), 4, "{spans:?}");
    // The model takes 20 ms per reply, and the scripted delay is inside its span.
    let slowest_model = spans
        .iter()
        .filter(|s| s.0 == "model_call")
        .map(|s| s.2)
        .fold(0.0, f64::max);
    assert!(slowest_model >= 20_000.0, "{slowest_model} µs");

    let trajectory = json(&run.pair(1, 2).join("agent1").join("trajectory.json"));
    let calls = trajectory["llm_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3);
    assert!(calls[0].get("step").is_none(), "{:?}", calls[0]);
    let step = &calls[2]["step"];
    let ms = |k: &str| {
        step[k]
            .as_f64()
            .unwrap_or_else(|| panic!("no {k} in {step}"))
    };
    // The second command slept 50 ms: that is command time, inside the step's total.
    assert!(ms("commands_ms") >= 50.0, "{step}");
    assert!(ms("total_ms") >= ms("commands_ms"), "{step}");
    assert!(ms("plugin_ms") >= 0.0 && ms("host_ms") >= 0.0, "{step}");
    let parts = ms("commands_ms") + ms("plugin_ms") + ms("host_ms");
    assert!((parts - ms("total_ms")).abs() < 0.05, "{step}");
}

/// A trace file that cannot be created is refused before anything runs.
#[test]
fn a_trace_file_in_a_missing_directory_is_a_clear_error() {
    let scratch = tempfile::tempdir().unwrap();
    let trace = scratch.path().join("no-such-dir").join("t.json");
    let trace_arg = trace.display().to_string();
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "untraced",
        &[
            "--agent", &agent, "-m", "oracle", "-f", "1,2", "--trace", &trace_arg,
        ],
    );
    assert_eq!(run.output.status.code(), Some(2), "{}", text(&run.output));
    let said = text(&run.output);
    assert!(
        said.contains("--trace") && said.contains("no-such-dir"),
        "{said}"
    );
    assert!(!run.dir().exists(), "the run started anyway");
}
