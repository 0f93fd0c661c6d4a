//! What a person reads: the documented logs layout, progress lines that name their pair on a
//! terminal and in a pipe, and the HTML report as a browser draws it.

use std::process::Command;

use crate::support::{cache_dir, cbench, dataset, plugins, text, Run};

/// Lines a reader must be able to attribute to one pair.
fn pair_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.contains(" → ") || l.contains("Complete in") || l.contains("ended with"))
        .collect()
}

fn assert_every_line_names_its_pair(output: &str) {
    let lines = pair_lines(output);
    assert!(lines.len() >= 30, "expected 10 pairs' lines in:\n{output}");
    for line in lines {
        assert!(
            line.contains("cbench_textkit_task/task1 features_"),
            "line does not name its pair: {line:?}"
        );
    }
}

#[test]
fn piped_output_says_the_run_is_alive_while_agents_think() {
    // Both agents spend seconds on one step: without a status line, a line says how it stands.
    let dir = tempfile::tempdir().unwrap();
    let step = serde_json::json!([{"bash": "sleep 2"}, {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]);
    let script = crate::support::write_temp(
        dir.path(),
        "script.json",
        &serde_json::json!({"agent1": step, "agent2": step}).to_string(),
    );
    let out = crate::support::cbench_with_env(
        &[
            "run",
            "-n",
            "heartbeat",
            "--log-dir",
            &dir.path().join("logs").display().to_string(),
            "--dataset-dir",
            &dataset().display().to_string(),
            "--agent",
            &plugins().mini_swe.display().to_string(),
            "-m",
            &format!("scripted:{script}"),
            "-f",
            "1,2",
        ],
        &[("CBENCH_PROGRESS_EVERY_SECS", "0.5")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let beat = stdout
        .lines()
        .find(|l| l.starts_with("· still running: 0/1 pairs done"))
        .unwrap_or_else(|| panic!("no heartbeat in:\n{stdout}"));
    assert!(
        beat.contains("2 agents running") && beat.contains("elapsed"),
        "{beat}"
    );
    // None after the summary.
    let summary_at = stdout.find("Summary: heartbeat").expect("a summary");
    assert!(!stdout[summary_at..].contains("still running"), "{stdout}");
    // The pair's time is its own, split into agents and grading.
    let verdict = stdout
        .lines()
        .find(|l| l.contains("Complete in"))
        .expect("a verdict line");
    assert!(
        verdict.contains("(agents ") && verdict.contains(" · grading "),
        "{verdict}"
    );
    // The last lines say where the results are and how to look at them.
    assert!(
        stdout.contains(&format!(
            "Results: {}",
            dir.path().join("logs/heartbeat").display()
        )) && stdout.contains("look at them: cbench view -n heartbeat --log-dir "),
        "{stdout}"
    );
}

#[test]
fn piped_progress_names_every_pair_and_has_no_escape_codes() {
    let logs = tempfile::tempdir().unwrap();
    let out = cbench(&[
        "run",
        "-n",
        "piped-progress",
        "--log-dir",
        &logs.path().display().to_string(),
        "--dataset-dir",
        &dataset().display().to_string(),
        "--agent",
        &plugins().mini_swe.display().to_string(),
        "-m",
        "oracle",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_every_line_names_its_pair(&stdout);
    assert!(
        !out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b),
        "escape codes in piped output:\n{}",
        text(&out)
    );
    // A failed pair is never shown with a tick.
    let failed = stdout
        .lines()
        .find(|l| l.contains("features_4_5") && l.contains("Complete in"))
        .unwrap_or_else(|| panic!("no verdict for 4,5 in:\n{stdout}"));
    assert!(
        failed.contains("✗") && failed.contains("failed"),
        "{failed}"
    );
    let passed = stdout
        .lines()
        .find(|l| l.contains("features_1_2") && l.contains("Complete in"))
        .unwrap_or_else(|| panic!("no verdict for 1,2 in:\n{stdout}"));
    assert!(
        passed.contains("✓") && passed.contains("success"),
        "{passed}"
    );
}

#[test]
fn terminal_progress_shows_a_live_status_and_names_every_pair() {
    let logs = tempfile::tempdir().unwrap();
    let command = format!(
        "{bin} run -n tty --log-dir {logs} --dataset-dir {data} --agent {agent} -m oracle",
        bin = env!("CARGO_BIN_EXE_cbench"),
        logs = logs.path().display(),
        data = dataset().display(),
        agent = plugins().mini_swe.display(),
    );
    // util-linux `script` gives the command a pseudo-terminal and copies what it draws.
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("CBENCH_CACHE_DIR", cache_dir())
        .env_remove("CBENCH_DATASET_DIR")
        .output()
        .expect("running script(1): util-linux is needed for the terminal test");
    assert!(out.status.success(), "{}", text(&out));
    let drawn = String::from_utf8_lossy(&out.stdout);
    // The status line: counts, successes, agents running, spend, ETA.
    for part in ["/10 pairs", "succeeded", "agents running", "spent", "ETA"] {
        assert!(
            drawn.contains(part),
            "no `{part}` in the status line:\n{drawn}"
        );
    }
    assert!(drawn.contains('\x1b'), "a terminal gets a live status line");
    // Before any pair finishes there is nothing to estimate from: no "ETA 0s".
    for at_start in drawn
        .split(['\r', '\x1b'])
        .filter(|s| s.contains(" 0/10 pairs") && s.contains("ETA"))
    {
        assert!(
            at_start.contains("ETA –") && !at_start.contains("ETA 0s"),
            "{at_start}"
        );
    }
    // Every scrolling line still names its pair once the drawing codes are removed (lines are
    // then separated by the padding that clears the status line, not by newlines).
    let plain =
        String::from_utf8_lossy(&strip_ansi_escapes::strip(drawn.as_bytes())).replace('\r', "\n");
    let segments: Vec<&str> = plain
        .split("   ")
        .map(str::trim)
        .filter(|s| s.contains(" → ") || s.contains("Complete in"))
        .collect();
    assert!(segments.len() >= 30, "{plain}");
    for line in segments {
        assert!(
            line.contains("cbench_textkit_task/task1 features_"),
            "line does not name its pair: {line:?}"
        );
    }
}

#[test]
fn runs_use_the_documented_layout_and_earlier_runs_are_migrated_once() {
    let run = Run::start(
        "layout",
        &[
            "--agent",
            &plugins().mini_swe.display().to_string(),
            "-m",
            "oracle",
            "-f",
            "1,2",
        ],
    );
    run.assert_ok();
    let documented = run.dir().join("cbench_textkit_task/task1/features_1_2");
    for file in [
        "agent1/trajectory.json",
        "agent2/patch.diff",
        "eval.json",
        "result.json",
    ] {
        assert!(documented.join(file).is_file(), "missing {file}");
    }
    // The earlier layout: <repo>/<id>/…
    let legacy = run.dir().join("cbench_textkit_task/1");
    std::fs::rename(run.dir().join("cbench_textkit_task/task1"), &legacy).unwrap();
    let log_dir = run.logs.path().display().to_string();
    let report = cbench(&["report", "-n", "layout", "--log-dir", &log_dir, "--json"]);
    assert!(report.status.success(), "{}", text(&report));
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(json["graded"], 1, "report reads the earlier layout: {json}");
    assert!(legacy.is_dir(), "report never moves files");

    // A resume moves it, says so once (plain text in a pipe), and keeps the results.
    let resume = cbench(&[
        "run",
        "-n",
        "layout",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &dataset().display().to_string(),
        "--agent",
        &plugins().mini_swe.display().to_string(),
        "-m",
        "oracle",
        "-f",
        "1,2",
    ]);
    assert!(resume.status.success(), "{}", text(&resume));
    let stderr = String::from_utf8_lossy(&resume.stderr);
    assert!(
        stderr.contains("moved 1 task directory") && stderr.contains("<repo>/task<id>/"),
        "{}",
        text(&resume)
    );
    assert!(
        !resume.stderr.contains(&0x1b),
        "escape codes in a pipe: {stderr}"
    );
    assert!(
        String::from_utf8_lossy(&resume.stdout).contains("agents already ran; resuming"),
        "{}",
        text(&resume)
    );
    assert!(documented.join("eval.json").is_file() && !legacy.exists());
}

/// The Chromium binary (Debian's `chromium`; `CBENCH_CHROMIUM` overrides).
fn chromium() -> String {
    std::env::var("CBENCH_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Loads `url` in headless Chromium; returns the DOM after scripts ran and the browser's log.
pub(crate) fn browse(url: &str, screenshot: Option<&std::path::Path>) -> (String, String) {
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--enable-logging=stderr".into(),
        "--v=0".into(),
        "--virtual-time-budget=5000".into(),
        "--window-size=1400,1800".into(),
    ];
    match screenshot {
        Some(png) => args.push(format!("--screenshot={}", png.display())),
        None => args.push("--dump-dom".into()),
    }
    args.push(url.to_string());
    let out = Command::new(chromium())
        .args(&args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "starting {} ({e}): the HTML report is tested in a real browser; install Debian's \
                 chromium (scripts/test.sh does) or set CBENCH_CHROMIUM",
                chromium()
            )
        });
    assert!(
        out.status.success(),
        "chromium failed on {url}:\n{}",
        text(&out)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Page errors: every console message (the report logs nothing) and uncaught exceptions.
pub(crate) fn console_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

#[test]
fn the_html_report_draws_in_a_browser_with_every_pair_and_both_trajectories() {
    let run = Run::start(
        "viewed",
        &[
            "--agent",
            &plugins().mini_swe.display().to_string(),
            "-m",
            "oracle",
        ],
    );
    run.assert_ok();
    let log_dir = run.logs.path().display().to_string();
    let out = cbench(&["view", "-n", "viewed", "--log-dir", &log_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let view = run.dir().join("view");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&view.join("index.html").display().to_string()),
        "cbench view prints where the report is: {}",
        text(&out)
    );
    // Self-contained: nothing is fetched from the network.
    for file in ["index.html", "pair.html", "view.js", "view.css"] {
        let content = std::fs::read_to_string(view.join(file)).unwrap();
        assert!(
            !content.contains("http://") && !content.contains("https://"),
            "{file} links out"
        );
    }

    let index = format!("file://{}", view.join("index.html").display());
    let (dom, log) = browse(&index, None);
    assert!(
        console_errors(&log).is_empty(),
        "console errors: {:?}",
        console_errors(&log)
    );
    assert!(
        !dom.contains("data-error"),
        "a script error was caught on the page"
    );
    assert!(
        dom.contains("data-rendered-ms"),
        "the overview never finished drawing:\n{dom}"
    );
    assert_eq!(
        dom.matches("class=\"pair-row\"").count(),
        10,
        "one row per pair"
    );
    assert!(dom.contains("10 of 10 pairs"));
    // A plot is drawn: bars with a width, per repository and merge outcome.
    assert!(dom.contains("Success per repository") && dom.contains("Merge outcomes"));
    let drawn_bars = dom
        .split("<rect class=\"bar")
        .skip(1)
        .filter(|b| !b.contains("width=\"0.0\""))
        .count();
    assert!(drawn_bars >= 3, "no bars drawn:\n{dom}");
    assert!(dom.contains("cbench_textkit_task/task1/features_4_5") && dom.contains("badge failed"));

    let pair = format!(
        "file://{}?p=cbench_textkit_task__task1__features_1_2",
        view.join("pair.html").display()
    );
    let (dom, log) = browse(&pair, None);
    assert!(
        console_errors(&log).is_empty(),
        "console errors: {:?}",
        console_errors(&log)
    );
    assert!(
        dom.contains("data-rendered-ms"),
        "the pair page never finished drawing:\n{dom}"
    );
    for agent in ["agent1", "agent2"] {
        assert!(
            dom.contains(&format!("class=\"step\" data-agent=\"{agent}\"")),
            "no steps of {agent}:\n{dom}"
        );
    }
    assert_eq!(
        dom.matches("class=\"message\"").count(),
        2,
        "both messages on the timeline"
    );
    assert!(dom.contains("I am agent1; I will change"));
    assert!(
        dom.contains("reverse_words") && dom.contains("class=\"add\""),
        "patches highlighted"
    );
    assert!(
        dom.contains("merged (union)"),
        "the merged verdict is shown"
    );

    // A pair the run does not have is said so on the page, not a blank screen.
    let missing = format!("file://{}?p=nope", view.join("pair.html").display());
    let (dom, _) = browse(&missing, None);
    assert!(dom.contains("No data for pair nope"), "{dom}");

    // Screenshots for people (kept under target/tmp/view-screenshots).
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("view-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    for (name, url) in [("overview.png", &index), ("pair.png", &pair)] {
        let png = shots.join(name);
        let _ = std::fs::remove_file(&png);
        browse(url, Some(&png));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes", png.display());
    }
}

#[test]
fn the_atif_export_holds_every_agent_step_by_step() {
    let run = Run::start(
        "exported",
        &[
            "--agent",
            &plugins().mini_swe.display().to_string(),
            "-m",
            "oracle",
            "-f",
            "1,2",
        ],
    );
    run.assert_ok();
    let log_dir = run.logs.path().display().to_string();
    let out = cbench(&[
        "export",
        "-n",
        "exported",
        "--log-dir",
        &log_dir,
        "--format",
        "atif",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let file = run
        .dir()
        .join("export/atif/cbench_textkit_task/task1/features_1_2/agent1/trajectory.json");
    let atif = crate::support::json(&file);
    assert_eq!(atif["schema_version"], "ATIF-v1.4");
    assert_eq!(atif["agent"]["name"], "mini_swe");
    let steps = atif["steps"].as_array().unwrap();
    for (k, step) in steps.iter().enumerate() {
        assert_eq!(step["step_id"], k + 1, "step ids are 1, 2, …");
        assert!(["system", "user", "agent"].contains(&step["source"].as_str().unwrap()));
        assert!(step["message"].is_string());
    }
    assert_eq!(steps[0]["source"], "system");
    assert_eq!(steps[1]["source"], "user");
    // Each tool call's result is found by its id in the step's observation.
    let with_calls: Vec<&serde_json::Value> = steps
        .iter()
        .filter(|s| s["tool_calls"].is_array())
        .collect();
    assert!(!with_calls.is_empty());
    for step in &with_calls[..with_calls.len() - 1] {
        let id = &step["tool_calls"][0]["tool_call_id"];
        let results = step["observation"]["results"].as_array().unwrap();
        assert!(
            results.iter().any(|r| &r["source_call_id"] == id),
            "{step:#}"
        );
        assert!(step["tool_calls"][0]["arguments"].is_object());
    }
    assert_eq!(atif["final_metrics"]["total_steps"], steps.len());
    assert!(
        atif["final_metrics"]["total_prompt_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    let bad = cbench(&["export", "-n", "nope", "--log-dir", &log_dir]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("run `nope` not found"));
}

#[test]
fn a_read_only_run_is_still_reported_and_viewed_elsewhere() {
    let run = Run::start(
        "shared",
        &[
            "--agent",
            &plugins().mini_swe.display().to_string(),
            "-m",
            "oracle",
            "-f",
            "1,2",
        ],
    );
    run.assert_ok();
    let log_dir = run.logs.path().display().to_string();
    let run_dir = run.dir().display().to_string();
    let elsewhere = tempfile::tempdir().unwrap();
    let view_dir = elsewhere.path().join("view").display().to_string();
    // A colleague's run on a read-only share: bwrap mounts the run directory read-only.
    let read_only = |args: &[&str]| {
        Command::new("bwrap")
            .args(["--dev-bind", "/", "/", "--ro-bind", &run_dir, &run_dir])
            .arg(env!("CARGO_BIN_EXE_cbench"))
            .args(args)
            .env("CBENCH_CACHE_DIR", cache_dir())
            .output()
            .expect("bwrap")
    };
    let out = read_only(&["report", "-n", "shared", "--log-dir", &log_dir, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["graded"], 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("report.json not saved"));

    let out = read_only(&["view", "-n", "shared", "--log-dir", &log_dir]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--output DIR"),
        "{}",
        text(&out)
    );
    let out = read_only(&[
        "view",
        "-n",
        "shared",
        "--log-dir",
        &log_dir,
        "-o",
        &view_dir,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(elsewhere.path().join("view/data/run.js").is_file());
}

#[test]
fn agent_output_is_shown_as_text_never_run_as_markup() {
    // A hostile agent prints markup that would run script if the report inserted it as HTML.
    let scripts = tempfile::tempdir().unwrap();
    let payload = r#"<img src=x onerror="document.body.setAttribute('data-pwned','1')"><script>document.body.setAttribute('data-pwned','2')</script>"#;
    let script = crate::support::write_temp(
        scripts.path(),
        "xss.json",
        &serde_json::json!({"*": [
            {"bash": format!("echo '{payload}'")},
            {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}
        ]})
        .to_string(),
    );
    let run = Run::start(
        "hostile-output",
        &[
            "--agent",
            &plugins().mini_swe.display().to_string(),
            "-m",
            &format!("scripted:{script}"),
            "-f",
            "1,2",
        ],
    );
    run.assert_ok();
    let log_dir = run.logs.path().display().to_string();
    let out = cbench(&["view", "-n", "hostile-output", "--log-dir", &log_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let page = format!(
        "file://{}?p=cbench_textkit_task__task1__features_1_2",
        run.dir().join("view/pair.html").display()
    );
    let (dom, log) = browse(&page, None);
    assert!(
        dom.contains("data-rendered-ms"),
        "the pair page never finished drawing:\n{dom}"
    );
    // Had the markup run, the body would carry the attribute (`data-pwned="1"` or `"2"`).
    assert!(
        !dom.contains("data-pwned=\""),
        "agent output ran as markup:\n{dom}"
    );
    assert!(
        dom.contains("&lt;img src=x onerror="),
        "the output is shown as text:\n{dom}"
    );
    assert!(
        console_errors(&log).is_empty(),
        "{:?}",
        console_errors(&log)
    );
}

#[test]
fn two_empty_patches_are_nothing_to_merge_not_a_clean_merge() {
    let dir = tempfile::tempdir().unwrap();
    let script = crate::support::write_temp(
        dir.path(),
        "submit.json",
        r#"{"*": [{"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]}"#,
    );
    let model = format!("scripted:{script}");
    let run = Run::start(
        "empty-patches",
        &[
            "--agent",
            &plugins().mini_swe.display().to_string(),
            "-m",
            &model,
            "-f",
            "1,2",
        ],
    );
    run.assert_ok();
    let log_dir = run.logs.path().display().to_string();
    let out = cbench(&["view", "-n", "empty-patches", "--log-dir", &log_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let data = std::fs::read_to_string(run.dir().join("view/data/run.js")).unwrap();
    assert!(
        data.contains("\"merge_outcome\":\"nothing to merge\""),
        "{data}"
    );
}
