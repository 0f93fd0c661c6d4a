//! The mini_swe loop, driven by the scripted model through the real binary.

use serde_json::{json as j, Value};

use crate::support::{json, plugins, write_temp, Run};

const SUBMIT: &str = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";

/// Runs mini_swe on pair 1,3 with a script (and optional agent config).
fn scripted(name: &str, script: Value, agent_config: Option<Value>, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let script_path = write_temp(dir.path(), "script.json", &script.to_string());
    let model = format!("scripted:{script_path}");
    let agent = plugins().mini_swe.display().to_string();
    let mut args = vec!["--agent", agent.as_str(), "-m", model.as_str(), "-f", "1,3"];
    let cfg_path;
    if let Some(cfg) = agent_config {
        cfg_path = write_temp(dir.path(), "agent.json", &cfg.to_string());
        args.extend_from_slice(&["--agent-config", cfg_path.as_str()]);
    }
    args.extend_from_slice(extra);
    let run = Run::start(name, &args);
    run.assert_ok();
    run
}

fn trajectory(run: &Run, agent: &str) -> Value {
    json(&run.pair(1, 3).join(agent).join("trajectory.json"))
}

fn agent_record(run: &Run, index: usize) -> Value {
    json(&run.pair(1, 3).join("result.json"))["agents"][index].clone()
}

/// Text of the messages added to the transcript before LLM call `call`.
fn new_messages(traj: &Value, call: usize) -> String {
    traj["llm_calls"][call]["request_new_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_reply_without_an_action_gets_a_format_error_and_counts_as_a_step() {
    let run = scripted(
        "format",
        j!(["I believe I am finished.", {"bash": SUBMIT}]),
        None,
        &[],
    );
    let traj = trajectory(&run, "agent1");
    assert_eq!(traj["llm_calls"].as_array().unwrap().len(), 2);
    assert!(traj["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["action"] == "format-error"));
    assert!(new_messages(&traj, 1).contains("Format error"), "{traj:#}");
    let rec = agent_record(&run, 0);
    assert_eq!(rec["status"], "Submitted");
    assert_eq!(rec["steps"], 2);
}

#[test]
fn the_step_limit_ends_the_run() {
    let script = j!(std::iter::repeat_n(j!({"bash": "echo again"}), 10).collect::<Vec<_>>());
    let run = scripted("steps", script.clone(), None, &["--max-steps", "3"]);
    assert_eq!(agent_record(&run, 0)["status"], "StepLimitReached");
    assert_eq!(
        trajectory(&run, "agent1")["llm_calls"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let run = scripted("steps-cfg", script, Some(j!({"step_limit": 2})), &[]);
    assert_eq!(agent_record(&run, 0)["status"], "StepLimitReached");
    assert_eq!(
        trajectory(&run, "agent1")["llm_calls"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn long_output_is_cut_to_both_ends_with_the_elided_count() {
    let run = scripted(
        "truncate",
        j!([{"bash": "head -c 12000 /dev/zero | tr '\\0' a"}, {"bash": SUBMIT}]),
        None,
        &[],
    );
    let shown = new_messages(&trajectory(&run, "agent1"), 1);
    assert!(
        shown.contains("<output cut: 2000 characters elided>"),
        "{shown}"
    );
    assert_eq!(
        shown.matches('a').count(),
        10_000 + "<output cut: 2000 characters elided>".matches('a').count()
    );
}

#[test]
fn only_a_first_output_line_sentinel_with_exit_zero_submits() {
    let run = scripted(
        "sentinel",
        j!([
            {"bash": format!("echo hi; {SUBMIT}")},
            {"bash": format!("{SUBMIT}; false")},
            {"bash": SUBMIT},
            {"bash": "echo never reached"}
        ]),
        None,
        &[],
    );
    assert_eq!(
        trajectory(&run, "agent1")["llm_calls"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(agent_record(&run, 0)["status"], "Submitted");
}

#[test]
fn text_only_models_use_a_bash_block() {
    let run = scripted(
        "text",
        j!([{"bash": "echo from-a-block"}, {"bash": SUBMIT}]),
        Some(j!({"use_tools": false})),
        &[],
    );
    let traj = trajectory(&run, "agent1");
    assert_eq!(traj["llm_calls"][0]["tools"], j!([]));
    assert!(traj["llm_calls"][0]["response"]["content"]
        .as_str()
        .unwrap()
        .contains("```bash"));
    assert!(new_messages(&traj, 1).contains("from-a-block"));
    assert_eq!(agent_record(&run, 0)["status"], "Submitted");
}

#[test]
fn the_patch_is_the_hosts_diff_even_when_the_agent_never_prints_one() {
    let run = scripted(
        "hostdiff",
        j!([
            {"bash": "printf 'def hello():\\n    return 1\\n' > textkit/hello.py && echo '# touched' >> textkit/numbers.py"},
            {"bash": SUBMIT}
        ]),
        None,
        &[],
    );
    let patch = std::fs::read_to_string(run.pair(1, 3).join("agent1/patch.diff")).unwrap();
    assert!(
        patch.contains("b/textkit/hello.py") && patch.contains("new file mode"),
        "{patch}"
    );
    assert!(patch.contains("+# touched"), "{patch}");
    let traj = trajectory(&run, "agent1");
    assert!(
        !traj.to_string().contains("diff --git"),
        "the agent never printed a patch"
    );
}

#[test]
fn send_message_is_intercepted_delivered_and_the_rest_of_the_command_runs() {
    let run = scripted(
        "messages",
        j!({
            "agent1": [
                {"bash": "send_message agent2 <<'MSG'\nI take numbers.py\nMSG\necho rest-ran"},
                {"bash": "send_message agent9 <<'MSG'\nanyone?\nMSG"},
                {"bash": SUBMIT}
            ],
            "agent2": [{"bash": "sleep 2"}, {"bash": SUBMIT}]
        }),
        None,
        &[],
    );
    let a1 = trajectory(&run, "agent1");
    let after_send = new_messages(&a1, 1);
    assert!(
        after_send.contains("Message sent to agent2") && after_send.contains("rest-ran"),
        "{after_send}"
    );
    assert!(new_messages(&a1, 2).contains("NOT sent"), "{a1:#}");
    // Delivered before whichever LLM call came first after the send.
    let a2 = trajectory(&run, "agent2");
    let seen_by_a2 = (0..2)
        .map(|i| new_messages(&a2, i))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        seen_by_a2.contains("[Message from agent1]: I take numbers.py"),
        "{a2:#}"
    );
    let conversation = json(&run.pair(1, 3).join("conversation.json"));
    assert_eq!(conversation[0]["content"], "I take numbers.py");
    assert_eq!(conversation.as_array().unwrap().len(), 1);
}

/// An agent's message (and any text of its shown on the terminal) cannot drive the user's
/// terminal: escape sequences, carriage returns and bells are printed as `\u{…}`.
#[test]
fn an_agents_escape_sequences_are_shown_not_obeyed_by_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let script = j!({
        "agent1": [
            {"bash": "send_message agent2 <<'MSG'\nhi\u{1b}]0;owned\u{7}\u{1b}[2J\rthere\nMSG"},
            {"bash": SUBMIT}
        ],
        "agent2": [{"bash": "sleep 1"}, {"bash": SUBMIT}]
    });
    let model = format!(
        "scripted:{}",
        write_temp(dir.path(), "script.json", &script.to_string())
    );
    let logs = dir.path().join("logs").display().to_string();
    let agent = plugins().mini_swe.display().to_string();
    let dataset = crate::support::dataset().display().to_string();
    let out = crate::support::cbench(&[
        "run",
        "-n",
        "escapes",
        "--agent",
        &agent,
        "-m",
        &model,
        "-f",
        "1,3",
        "--log-dir",
        &logs,
        "--dataset-dir",
        &dataset,
    ]);
    assert!(out.status.success(), "{}", crate::support::text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hi\\u{1b}]0;owned"), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{7}') && !stdout.contains('\r'),
        "{stdout:?}"
    );
    // The message itself is delivered as sent.
    let pair = dir
        .path()
        .join("logs/escapes/cbench_textkit_task/task1/features_1_3");
    let conversation = json(&pair.join("conversation.json"));
    assert!(conversation[0]["content"]
        .as_str()
        .unwrap()
        .contains("\u{1b}[2J"));
}
