//! Bad inputs end in a clear error naming the thing at fault, with a non-zero exit.

use crate::support::{cbench, cbench_with_env, plugins, text, write_temp, Run};

fn assert_refused(run: &Run, needles: &[&str]) {
    assert_eq!(run.output.status.code(), Some(2), "{}", text(&run.output));
    let err = String::from_utf8_lossy(&run.output.stderr);
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in:\n{err}");
    }
}

#[test]
fn unknown_model_is_named() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start("m", &["--agent", &agent, "-m", "mystery-model-9"]);
    assert_refused(
        &run,
        &["unknown model `mystery-model-9`", "anthropic/<model>"],
    );
    // A typo gets the name it meant.
    let run = Run::start("m", &["--agent", &agent, "-m", "orcale"]);
    assert_refused(&run, &["unknown model `orcale` (did you mean `oracle`?)"]);
    let run = Run::start("m", &["--agent", &agent, "-m", "opnai/gpt-4o"]);
    assert_refused(&run, &["(did you mean `openai/gpt-4o`?)"]);
}

#[test]
fn missing_agent_file_and_dataset_dir_are_named() {
    let run = Run::start("a", &["--agent", "/nonexistent/agent.wasm", "-m", "oracle"]);
    assert_refused(&run, &["--agent /nonexistent/agent.wasm"]);

    let agent = plugins().mini_swe.display().to_string();
    let out = cbench(&[
        "run",
        "-q",
        "--agent",
        &agent,
        "-m",
        "oracle",
        "--dataset-dir",
        "/nonexistent/ds",
        "--log-dir",
        "/tmp/cbench-never",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("/nonexistent/ds"), "{}", text(&out));
}

#[test]
fn bad_backend_settings_and_bad_script_are_named() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "b",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "--backend",
            "gcp",
            "--gcp-region",
            "US Central",
        ],
    );
    assert_refused(&run, &["--gcp-region \"US Central\""]);

    let dir = tempfile::tempdir().unwrap();
    let script = write_temp(dir.path(), "broken.json", "{ nope");
    let run = Run::start(
        "s",
        &["--agent", &agent, "-m", &format!("scripted:{script}")],
    );
    assert_refused(&run, &["broken.json"]);
}

#[test]
fn eval_of_an_unknown_run_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = cbench(&[
        "eval",
        "-n",
        "never-ran",
        "--log-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("run `never-ran` not found"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_mistyped_name_gets_the_closest_real_one() {
    // A run: every command that reads one names the closest run in the log dir.
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "head-to-head",
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
    run.assert_ok();
    let logs = run.logs.path().to_str().unwrap();
    for args in [
        vec!["report", "-n", "head-to-hed"],
        vec!["view", "-n", "head-to-hed"],
        vec!["eval", "-n", "head-to-hed"],
        vec!["compare", "head-to-head", "head-to-hed"],
    ] {
        let out = cbench(&[&args[..], &["--log-dir", logs]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("run `head-to-hed` not found")
                && text(&out).contains("(did you mean `head-to-head`?)"),
            "{args:?}: {}",
            text(&out)
        );
    }
    // `dataset list` on the bundled dataset with `extra`.
    let list = |extra: &[&str]| {
        let data = crate::support::dataset();
        let mut args = vec!["dataset", "list", "--dataset-dir", data.to_str().unwrap()];
        args.extend_from_slice(extra);
        cbench(&args)
    };
    // Counts read as words ("1 repo", not "1 repos").
    let out = list(&[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("1 repo · 1 task · 5 features · 10 pairs"),
        "{}",
        text(&out)
    );
    for (extra, says) in [
        // The repo exists, the task does not: the tasks there are named.
        (
            &["-r", "cbench_textkit", "-t", "9"][..],
            "(the tasks there: cbench_textkit_task/task1)",
        ),
        // An unknown subset names the subsets there are.
        (
            &["-s", "smok"],
            "its subsets: smoke (did you mean `smoke`?)",
        ),
        // A repo of the dataset.
        (
            &["-r", "cbench_txtkit"],
            "(did you mean `cbench_textkit_task`?)",
        ),
    ] {
        let out = list(extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{extra:?}: {}", text(&out));
    }
    // A plugin name.
    let plugin_dir = plugins().mini_swe.parent().unwrap().to_str().unwrap();
    let out = cbench_with_env(
        &["plugin", "inspect", "mini_sw"],
        &[("CBENCH_PLUGIN_PATH", plugin_dir)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let found = cbench_with_env(
        &["plugin", "inspect", "mini_swe"],
        &[("CBENCH_PLUGIN_PATH", plugin_dir)],
    );
    assert!(found.status.success(), "{}", text(&found));
    assert!(
        text(&out).contains("did you mean `mini_swe`?"),
        "{}",
        text(&out)
    );
    // A dataset that is not there says how to get it.
    let out = cbench(&["dataset", "list", "--dataset-dir", "/nonexistent/dataset"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("`cbench dataset fetch --dataset-dir /nonexistent/dataset`"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_os_error_is_said_once() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "os",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "--agent-config",
            "/nonexistent/cfg.json",
        ],
    );
    assert_refused(
        &run,
        &["/nonexistent/cfg.json", "No such file or directory"],
    );
    let err = String::from_utf8_lossy(&run.output.stderr);
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");

    let logs = tempfile::tempdir().unwrap();
    let out = cbench(&[
        "report",
        "-n",
        "nothing-here",
        "--log-dir",
        &logs.path().display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line, no repetition: {err}");
}

#[test]
fn a_coop_run_is_no_solo_baseline() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "coop-base",
        &["--agent", &agent, "-m", "oracle", "-f", "1,2"],
    );
    run.assert_ok();
    let log_dir = run.logs.path().display().to_string();
    let out = cbench(&[
        "report",
        "-n",
        "coop-base",
        "--log-dir",
        &log_dir,
        "--baseline",
        "coop-base",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("it is a coop run") && err.contains("solo"),
        "{err}"
    );
}

#[test]
fn a_plugin_built_against_an_unversioned_wit_package_is_told_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    // A component whose WIT package line has no `@version` exports the bare interface name.
    let plugin = write_temp(
        dir.path(),
        "unversioned.wasm",
        r#"(component (instance $i) (export "cooperbench:agent/agent" (instance $i)))"#,
    );
    let run = Run::start("unversioned", &["--agent", &plugin, "-m", "oracle"]);
    assert_refused(
        &run,
        &[
            "without a version",
            "package cooperbench:agent@<version>",
            "0.1.0",
        ],
    );
    let err = String::from_utf8_lossy(&run.output.stderr);
    assert!(!err.contains("(exports: cooperbench:agent/agent)"), "{err}");
}

/// `cbench models | head -1`: a reader that goes away ends cbench as SIGPIPE ends any Unix
/// tool (exit 141), not with a panic and its backtrace.
#[test]
fn a_closed_output_pipe_is_a_quiet_exit_not_a_panic() {
    for args in [&["models"][..], &["plugin", "list"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(crate::support::cbench_bin())
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
    }
}

#[test]
fn the_default_model_says_it_was_the_default() {
    let agent = plugins().mini_swe.display().to_string();
    // No -m and no Google credentials: the error says the model was the default, and the way out.
    let run = Run::start_with_env(
        "no-model",
        &["--agent", &agent, "-f", "1,2"],
        &[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")],
    );
    assert_eq!(run.output.status.code(), Some(2), "{}", text(&run.output));
    let said = text(&run.output);
    assert!(
        said.contains("no -m given: the default model vertex_ai/")
            && said.contains("`-m oracle` runs offline"),
        "{said}"
    );
}
