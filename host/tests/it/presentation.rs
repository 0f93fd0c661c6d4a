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
