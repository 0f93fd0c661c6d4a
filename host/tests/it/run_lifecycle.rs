//! A run is one thing for its whole life: one live invocation at a time, the same
//! result-affecting options, signals and kills that leave nothing behind, and
//! infrastructure failures that the next invocation retries (and nothing else).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cbench::docker::LABEL_RUN;
use serde_json::{json as j, Value};

use crate::mock_llm::{MockLlm, Reply};
use crate::support::{
    cache_dir, cbench, containers_labelled, dataset, docker, json, plugins, text, write_temp, Run,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Starts `cbench run` in the background: every agent runs `command` (a long sleep).
fn start_hanging(name: &str, logs: &Path, script_dir: &Path, extra: &[&str]) -> Child {
    start_hanging_in(name, logs, script_dir, extra, &std::env::temp_dir())
}

/// `start_hanging` with `tmp` as the run's temp dir.
fn start_hanging_in(
    name: &str,
    logs: &Path,
    script_dir: &Path,
    extra: &[&str],
    tmp: &Path,
) -> Child {
    let script = write_temp(
        script_dir,
        "hang.json",
        &j!({"*": [{"bash": "sleep 600"}, {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]})
            .to_string(),
    );
    let mut args = vec![
        "run".to_string(),
        "-q".into(),
        "-n".into(),
        name.into(),
        "--log-dir".into(),
        logs.display().to_string(),
        "--dataset-dir".into(),
        dataset().display().to_string(),
        "--agent".into(),
        plugins().mini_swe.display().to_string(),
        "-m".into(),
        format!("scripted:{script}"),
        "--command-timeout".into(),
        "900".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(env!("CARGO_BIN_EXE_cbench"))
        .args(&args)
        .env("CBENCH_CACHE_DIR", cache_dir())
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting cbench")
}

/// `cbench run -q -n NAME --log-dir LOG_DIR` on the bundled dataset with mini_swe and `model`.
fn run_cmd(log_dir: &str, name: &str, model: &str, extra: &[&str]) -> std::process::Output {
    let data = dataset().display().to_string();
    let agent = plugins().mini_swe.display().to_string();
    let mut args = vec![
        "run",
        "-q",
        "-n",
        name,
        "--log-dir",
        log_dir,
        "--dataset-dir",
        &data,
        "--agent",
        &agent,
        "-m",
        model,
    ];
    args.extend_from_slice(extra);
    cbench(&args)
}

/// Scratch directories of run `name` in the temp dir.
fn scratch_dirs(name: &str) -> Vec<PathBuf> {
    dirs_named(&std::env::temp_dir(), &format!("cbench-run-{name}-"))
}

/// The entries of `dir` whose names start with `prefix`.
fn dirs_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits until the run's agents sit in their first command.
fn wait_for_agents(run_dir: &Path, pairs: usize) {
    wait_for("the agents' first commands", || {
        // The lock names its owner once the run directory is prepared.
        run_dir.join("config.json").is_file()
            && scratch_sandboxes(run_dir).is_some_and(|n| n >= pairs * 2)
    });
}

fn scratch_sandboxes(run_dir: &Path) -> Option<usize> {
    let name = run_dir.file_name()?.to_string_lossy().into_owned();
    let dir = scratch_dirs(&name).into_iter().next()?;
    Some(std::fs::read_dir(dir.join("sandboxes")).ok()?.count())
}

#[test]
fn a_second_invocation_on_a_live_run_is_refused_with_its_owner() {
    let logs = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let name = format!("locked-{}", std::process::id());
    let child = start_hanging(&name, logs.path(), scripts.path(), &["-f", "1,2"]);
    let run_dir = logs.path().join(&name);
    wait_for_agents(&run_dir, 1);
    let log_dir = logs.path().display().to_string();
    let again = run_cmd(&log_dir, &name, "oracle", &["-f", "1,2"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("in use by another cbench") && err.contains(&format!("pid {}", child.id())),
        "{err}"
    );
    let eval = cbench(&["eval", "-q", "-n", &name, "--log-dir", &log_dir]);
    assert_eq!(eval.status.code(), Some(2), "{}", text(&eval));
    assert!(String::from_utf8_lossy(&eval.stderr).contains("in use by another cbench"));

    // SIGHUP (a closed terminal) stops it like Ctrl-C: exit 130, nothing left behind.
    signal(&child, libc::SIGHUP);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(scratch_dirs(&name).is_empty(), "{:?}", scratch_dirs(&name));
    // The lock went with its process: the run can be resumed at once (same options;
    // the script file now submits at once).
    let quick = write_temp(
        scripts.path(),
        "hang.json",
        &j!({"*": [{"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]}).to_string(),
    );
    let resumed = run_cmd(
        &log_dir,
        &name,
        &format!("scripted:{quick}"),
        &["-f", "1,2", "--command-timeout", "900"],
    );
    assert!(resumed.status.success(), "{}", text(&resumed));
}

#[test]
fn sighup_on_docker_leaves_no_container_and_no_scratch_dir() {
    let engine = docker();
    let logs = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let name = format!("hup-{}", std::process::id());
    // The run's own temp dir: the agents' exec channels keep their FIFO directories there.
    let tmp = tempfile::tempdir().unwrap();
    let child = start_hanging_in(
        &name,
        logs.path(),
        scripts.path(),
        &["--backend", "docker", "-f", "1,2"],
        tmp.path(),
    );
    let rt = runtime();
    wait_for("two agent containers", || {
        rt.block_on(containers_labelled(engine, LABEL_RUN, &name))
            .len()
            >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, libc::SIGHUP);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let left = rt.block_on(containers_labelled(engine, LABEL_RUN, &name));
    assert!(left.is_empty(), "containers left: {left:?}");
    let scratch = dirs_named(tmp.path(), &format!("cbench-run-{name}-"));
    assert!(scratch.is_empty(), "{scratch:?}");
    let fifos = dirs_named(tmp.path(), "cbench-channel-");
    assert!(fifos.is_empty(), "exec channel directories left: {fifos:?}");
}

#[test]
fn after_kill_9_cleanup_or_the_resume_leaves_nothing_behind() {
    let engine = docker();
    let rt = runtime();
    let logs = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let name = format!("killed-{}", std::process::id());
    let kill_mid_run = || {
        let mut child = start_hanging(
            &name,
            logs.path(),
            scripts.path(),
            &["--backend", "docker", "-f", "1,2"],
        );
        wait_for("two agent containers", || {
            rt.block_on(containers_labelled(engine, LABEL_RUN, &name))
                .len()
                >= 2
        });
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        assert!(
            !scratch_dirs(&name).is_empty(),
            "kill -9 left no scratch dir?"
        );
        let channel_dirs = format!("cbench-channel-{}-", child.id());
        assert!(
            !dirs_named(&std::env::temp_dir(), &channel_dirs).is_empty(),
            "kill -9 left no exec channel directory?"
        );
        assert!(!rt
            .block_on(containers_labelled(engine, LABEL_RUN, &name))
            .is_empty());
        channel_dirs
    };

    let channel_dirs = kill_mid_run();
    let out = cbench(&["cleanup", "-n", &name]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 1 scratch dir(s)"),
        "{}",
        text(&out)
    );
    assert!(scratch_dirs(&name).is_empty());
    assert!(rt
        .block_on(containers_labelled(engine, LABEL_RUN, &name))
        .is_empty());
    let left = dirs_named(&std::env::temp_dir(), &channel_dirs);
    assert!(left.is_empty(), "exec channel directories left: {left:?}");

    // Killed again; this time the next run of the same name cleans up first.
    let channel_dirs = kill_mid_run();
    let quick = write_temp(
        scripts.path(),
        "hang.json",
        &j!({"*": [{"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]}).to_string(),
    );
    let log_dir = logs.path().display().to_string();
    let out = run_cmd(
        &log_dir,
        &name,
        &format!("scripted:{quick}"),
        &[
            "--command-timeout",
            "900",
            "--backend",
            "docker",
            "-f",
            "1,2",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(scratch_dirs(&name).is_empty(), "{:?}", scratch_dirs(&name));
    assert!(rt
        .block_on(containers_labelled(engine, LABEL_RUN, &name))
        .is_empty());
    let left = dirs_named(&std::env::temp_dir(), &channel_dirs);
    assert!(left.is_empty(), "exec channel directories left: {left:?}");
}

/// Every pair of the bundled task against an OpenAI-compatible mock of the oracle;
/// `down_for`: prompts naming this feature's text get HTTP 503 (the provider is down for them).
fn run_against_provider(name: &str, logs: &Path, mock: &MockLlm) -> std::process::Output {
    let log_dir = logs.display().to_string();
    let data = dataset().display().to_string();
    let agent = plugins().mini_swe.display().to_string();
    crate::support::cbench_with_env(
        &[
            "run",
            "-q",
            "-n",
            name,
            "--log-dir",
            &log_dir,
            "--dataset-dir",
            &data,
            "--agent",
            &agent,
            "-m",
            "openai/outage-test",
            "--api-base",
            &mock.base_url,
            "--llm-retries",
            "1",
            "--llm-backoff-ms",
            "10",
        ],
        &[("OPENAI_API_KEY", "sk-test")],
    )
}

#[test]
fn a_provider_outage_is_an_infrastructure_error_that_the_next_run_retries_exactly() {
    let logs = tempfile::tempdir().unwrap();
    let name = "outage";
    let feature3 =
        std::fs::read_to_string(dataset().join("cbench_textkit_task/task1/feature3/feature.md"))
            .unwrap();
    let oracle = crate::providers::oracle_handler();
    let marker = feature3.trim().to_string();
    let down = MockLlm::with_handler(move |req| {
        let names_feature3 = req.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["content"].as_str().is_some_and(|c| c.contains(&marker)));
        if names_feature3 {
            Reply::status(503, r#"{"error":{"message":"overloaded"}}"#)
        } else {
            oracle(req)
        }
    });
    let first = run_against_provider(name, logs.path(), &down);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let run_dir = logs.path().join(name);
    let summary = json(&run_dir.join("summary.json"));
    assert_eq!(summary["infra_errors"], 4, "{summary:#}");
    assert_eq!(summary["graded"], 6, "{summary:#}");
    // Each 503 was retried once before the agent gave up.
    assert!(summary["llm_retries"].as_u64().unwrap() >= 4, "{summary:#}");
    let tokens_before = summary["token_usage"]["total_tokens"].as_u64().unwrap();
    let pair = |a: u32, b: u32| run_dir.join(format!("cbench_textkit_task/task1/features_{a}_{b}"));
    let result = json(&pair(1, 3).join("result.json"));
    assert_eq!(result["agents"][1]["status"], "InfraError", "{result:#}");
    assert!(
        result["agents"][1]["error"]
            .as_str()
            .unwrap()
            .contains("LLM provider unavailable: HTTP 503"),
        "{result:#}"
    );
    assert_eq!(result["agents"][0]["status"], "Submitted");
    assert!(
        !pair(1, 3).join("eval.json").exists(),
        "an outage was graded"
    );
    let kept: Value = json(&pair(1, 2).join("result.json"));
    let report = json(&run_dir.join("report.json"));
    assert_eq!(report["infra_errors"], 4, "{report:#}");

    // The provider is back: exactly the four pairs of feature 3 run again (2 agents × 2 calls).
    let up = MockLlm::with_handler(crate::providers::oracle_handler());
    let second = run_against_provider(name, logs.path(), &up);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(up.received().len(), 4 * 2 * 2);
    let summary = json(&run_dir.join("summary.json"));
    assert_eq!(summary["infra_errors"], 0, "{summary:#}");
    assert_eq!(summary["graded"], 10, "{summary:#}");
    // What the stopped attempts spent still counts: the totals are the first invocation's
    // plus what the redone pairs spent now.
    let redone: Vec<Value> = [(1, 3), (2, 3), (3, 4), (3, 5)]
        .iter()
        .map(|&(a, b)| json(&pair(a, b).join("result.json")))
        .collect();
    let spent_now: u64 = redone
        .iter()
        .flat_map(|r| r["agents"].as_array().unwrap().clone())
        .map(|a| a["token_usage"]["total_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(summary["redone_attempts"], 4, "{summary:#}");
    assert_eq!(
        summary["token_usage"]["total_tokens"].as_u64().unwrap(),
        tokens_before + spent_now,
        "{summary:#}"
    );
    let old = &redone[0]["superseded"][0];
    assert!(
        old["infra_error"].as_str().unwrap().contains("HTTP 503")
            && old["token_usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{old:#}"
    );
    // The report and the overview page say so too.
    let log_dir = logs.path().display().to_string();
    let out = crate::support::cbench(&["report", "-n", name, "--log-dir", &log_dir]);
    assert!(
        text(&out).contains(
            "infrastructure errors: 0 · attempts redone after them: 4 · LLM requests retried: "
        ),
        "{}",
        text(&out)
    );
    let out = crate::support::cbench(&["view", "-n", name, "--log-dir", &log_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let (index, log) = crate::presentation::browse(
        &format!("file://{}", run_dir.join("view/index.html").display()),
        None,
    );
    assert!(
        crate::presentation::console_errors(&log).is_empty(),
        "{log}"
    );
    assert!(
        index.contains("attempts redone after infrastructure errors (counted in cost)")
            && index.contains("LLM requests retried"),
        "{index}"
    );
    assert_eq!(summary["overall_successes"], 9, "{summary:#}");
    assert!(
        summary["run_duration_s"].as_f64().unwrap() > summary["duration_s"].as_f64().unwrap(),
        "{summary:#}"
    );
    assert_eq!(
        json(&pair(1, 2).join("result.json")),
        kept,
        "a finished pair ran again"
    );
    assert_eq!(
        json(&pair(1, 3).join("result.json"))["agents"][1]["status"],
        "Submitted"
    );
}

#[test]
fn a_resume_that_changes_a_result_affecting_option_is_refused_by_name() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "identity",
        &["--agent", &agent, "-m", "oracle", "-f", "1,2"],
    );
    run.assert_ok();
    let config_before = std::fs::read_to_string(run.dir().join("config.json")).unwrap();
    let log_dir = run.logs.path().display().to_string();
    let data = dataset().display().to_string();
    for (extra, option, values) in [
        (
            vec!["-f", "1,2", "--max-steps", "5"],
            "--max-steps",
            "(100 → 5)",
        ),
        (vec!["-f", "1,3"], "-f/--features", "(1,2 → 1,3)"),
        (
            vec!["-f", "1,2", "--merge-policy", "lead"],
            "--merge-policy",
            "(union → lead)",
        ),
    ] {
        let mut args = vec![
            "run",
            "-q",
            "-n",
            "identity",
            "--log-dir",
            &log_dir,
            "--dataset-dir",
            &data,
            "--agent",
            &agent,
            "-m",
            "oracle",
        ];
        args.extend(extra);
        let out = cbench(&args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(option) && err.contains(values), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(run.dir().join("config.json")).unwrap(),
        config_before,
        "a refused resume touched config.json"
    );
    // Options that do not change results may change; the resume is recorded.
    let out = run_cmd(&log_dir, "identity", "oracle", &["-f", "1,2", "-c", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let config = json(&run.dir().join("config.json"));
    assert_eq!(
        config["resumed_at"].as_array().unwrap().len(),
        1,
        "{config:#}"
    );
}

#[test]
fn eval_under_another_merge_policy_regrades_and_says_so() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start("policy", &["--agent", &agent, "-m", "oracle", "-f", "1,2"]);
    run.assert_ok();
    let eval = json(&run.pair(1, 2).join("eval.json"));
    assert_eq!(eval["merge_policy"], "union", "{eval:#}");
    assert_eq!(eval["merge_strategy"], "union", "{eval:#}");
    let log_dir = run.logs.path().display().to_string();
    let out = cbench(&[
        "eval",
        "-q",
        "-n",
        "policy",
        "--log-dir",
        &log_dir,
        "--merge-policy",
        "lead",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let eval = json(&run.pair(1, 2).join("eval.json"));
    assert_eq!(eval["merge_policy"], "lead", "{eval:#}");
    assert_eq!(eval["merged"]["merge_policy"], "lead", "{eval:#}");
    assert_eq!(json(&run.dir().join("config.json"))["merge_policy"], "lead");
}

#[test]
fn an_agent_is_stopped_at_its_wall_time_limit_wherever_it_is() {
    // agent1 waits on a long command; the limit stops it there, not at its next model call.
    let dir = tempfile::tempdir().unwrap();
    let script = crate::support::write_temp(
        dir.path(),
        "slow.json",
        &j!({
            "agent1": [{"bash": "sleep 300"}, {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}],
            "agent2": [{"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]
        })
        .to_string(),
    );
    let agent = plugins().mini_swe.display().to_string();
    let started = Instant::now();
    let run = crate::support::Run::start(
        "walled",
        &[
            "--agent",
            &agent,
            "-m",
            &format!("scripted:{script}"),
            "-f",
            "1,2",
            "--max-agent-secs",
            "2",
        ],
    );
    run.assert_ok();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the limit did not stop the command: {:?}",
        started.elapsed()
    );
    let result = json(&run.pair(1, 2).join("result.json"));
    let agent1 = &result["agents"][0];
    assert_eq!(agent1["status"], "LimitsExceeded", "{agent1:#}");
    assert!(
        agent1["error"]
            .as_str()
            .unwrap()
            .contains("wall-time limit of 2 s reached (--max-agent-secs)"),
        "{agent1:#}"
    );
    assert_eq!(result["agents"][1]["status"], "Submitted");
    // Graded, and no infrastructure error: the limit is the agent's.
    let summary = json(&run.dir().join("summary.json"));
    assert_eq!(summary["infra_errors"], 0, "{summary:#}");
    assert_eq!(summary["graded"], 1, "{summary:#}");
    // Without the flag, the documented default is on record; 0 means none.
    let config = json(&run.dir().join("config.json"));
    assert_eq!(config["max_agent_secs"], 2.0);
    let default = crate::support::Run::start(
        "default-wall",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "-f",
            "1,2",
            "--no-auto-eval",
        ],
    );
    default.assert_ok();
    assert_eq!(
        json(&default.dir().join("config.json"))["max_agent_secs"],
        14400.0
    );
    let none = crate::support::Run::start(
        "no-wall",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "-f",
            "1,2",
            "--no-auto-eval",
            "--max-agent-secs",
            "0",
        ],
    );
    none.assert_ok();
    assert!(json(&none.dir().join("config.json"))["max_agent_secs"].is_null());
}
