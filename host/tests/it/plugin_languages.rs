//! Any language: the same mini_swe loop in Rust, Python (componentize-py) and JavaScript
//! (componentize-qjs), built with the kits, behaves identically — same patches and grades with
//! the oracle on every bundled pair (coop and solo), and the same transcript, actions and
//! observations step by step with a scripted model that exercises every rule of the loop.

use std::path::Path;

use serde_json::Value;

use crate::support::{
    cbench, dataset, json, kit_plugins, pair_grades, plugins, run_dirs, text, write_temp,
};

/// Runs the three plugins as arms of one command; returns the logs dir.
fn three_arms(setting: &str, model: &str, extra: &[&str]) -> tempfile::TempDir {
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().display().to_string();
    let data = dataset().display().to_string();
    let (rust, kits) = (plugins(), kit_plugins());
    let mut args = vec![
        "run",
        "-q",
        "-n",
        "lang",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &data,
        "--agent",
        rust.mini_swe.to_str().unwrap(),
        "--agent",
        kits.python.to_str().unwrap(),
        "--agent",
        kits.js.to_str().unwrap(),
        "-m",
        model,
        "--setting",
        setting,
    ];
    args.extend_from_slice(extra);
    let out = cbench(&args);
    assert!(out.status.success(), "{setting}: {}", text(&out));
    logs
}

fn plugin_name(run_dir: &Path) -> String {
    let config = json(&run_dir.join("config.json"));
    let agent = config["agent"].as_str().unwrap_or_default().to_string();
    Path::new(&agent)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn rust_python_and_javascript_mini_swe_grade_identically_with_the_oracle() {
    for setting in ["coop", "solo"] {
        let logs = three_arms(setting, "oracle", &[]);
        let dirs = run_dirs(logs.path());
        assert_eq!(dirs.len(), 3, "{dirs:?}");
        let reference = pair_grades(&dirs[0]);
        assert_eq!(reference.len(), 10, "{setting}: all bundled pairs");
        assert!(
            reference
                .iter()
                .any(|(_, _, v)| v["overall_success"] == true),
            "{setting}: the oracle should pass some pairs"
        );
        for dir in &dirs[1..] {
            assert_eq!(
                pair_grades(dir),
                reference,
                "{setting}: {} graded differently from {}",
                plugin_name(dir),
                plugin_name(&dirs[0])
            );
        }
    }
}

/// What an agent did and saw, without timings: every request's new messages, every action
/// with its arguments and observation, and how it ended.
fn behaviour(agent_dir: &Path) -> Value {
    let t = json(&agent_dir.join("trajectory.json"));
    let calls: Vec<Value> = t["llm_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            serde_json::json!({
                "total": c["request_total_messages"],
                "new": c["request_new_messages"],
            })
        })
        .collect();
    let steps: Vec<Value> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| serde_json::json!([s["action"], s["args"], s["observation"]]))
        .collect();
    serde_json::json!({
        "calls": calls,
        "steps": steps,
        "status": t["status"],
        "summary": t["summary"],
        "error": t["error"],
    })
}

#[test]
fn rust_python_and_javascript_mini_swe_take_the_same_actions_with_a_scripted_model() {
    // Every rule of the loop: format errors of each kind, a text block, a message lifted out of
    // a command (refused: no messaging), non-ASCII output long enough to be cut, a failing
    // command, a change to the tree, and the submit command.
    let script = serde_json::json!([
        "I will look around first.",
        {"content": "Two at once:\n```bash\nls\n```\n```bash\npwd\n```"},
        {"content": "", "tool_calls": [{"name": "python", "arguments": {"code": "1"}}]},
        {"content": "", "tool_calls": [{"name": "bash", "arguments": {"cmd": "ls"}}]},
        {"content": "Long output.", "bash": "for i in $(seq 1 1500); do printf 'héllo wörld ✓ 🦀 '; done"},
        {"content": "Tell the teammate.", "bash": "send_message agent2 <<'MSG'\nI edit NOTES.md\nMSG\necho after-message"},
        {"content": "This fails.", "bash": "echo failing >&2; exit 3"},
        {"content": "As a block:\n```bash\necho from-a-block > block.txt && cat block.txt\n```"},
        {"content": "Change something.", "bash": "printf 'notes\\n' >> NOTES.md && git status --short"},
        {"content": "Done.", "bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(dir.path(), "script.json", &script.to_string());
    let model = format!("scripted:{file}");
    let logs = three_arms(
        "coop",
        &model,
        &["-f", "1,2", "--no-messaging", "--no-auto-eval"],
    );
    let dirs = run_dirs(logs.path());
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    let pair = "cbench_textkit_task/task1/features_1_2";
    for agent in ["agent1", "agent2"] {
        let reference = behaviour(&dirs[0].join(pair).join(agent));
        let steps = reference["steps"].as_array().unwrap();
        let observations: String = steps.iter().map(|s| s[2].to_string()).collect();
        assert_eq!(reference["status"], "Submitted", "{reference:#}");
        assert_eq!(
            reference["calls"].as_array().unwrap().len(),
            10,
            "{reference:#}"
        );
        let format_errors = steps.iter().filter(|s| s[0] == "format-error").count();
        assert_eq!(format_errors, 4, "{reference:#}");
        let transcript = reference["calls"].to_string();
        assert!(
            transcript.contains("characters elided"),
            "long output is cut"
        );
        assert!(
            transcript.contains("NOT sent: messaging is disabled"),
            "{transcript}"
        );
        assert!(
            transcript.contains("<exit_code>3</exit_code>"),
            "{transcript}"
        );
        assert!(observations.contains("from-a-block"), "{observations}");
        for other in &dirs[1..] {
            let theirs = behaviour(&other.join(pair).join(agent));
            assert_eq!(
                theirs,
                reference,
                "{agent}: {} behaved differently from {}",
                plugin_name(other),
                plugin_name(&dirs[0])
            );
        }
    }
    let patches: Vec<Vec<String>> = dirs
        .iter()
        .map(|d| pair_grades_patches(&d.join(pair)))
        .collect();
    assert_eq!(patches[0], patches[1]);
    assert_eq!(patches[0], patches[2]);
}

fn pair_grades_patches(pair_dir: &Path) -> Vec<String> {
    json(&pair_dir.join("result.json"))["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["patch_sha256"].as_str().unwrap().to_string())
        .collect()
}
