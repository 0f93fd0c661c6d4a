//! `cbench analyze` (and the analysis after every graded run) flags each failure mode
//! CooperBench documents in scripted pairs planted with it — a question never answered, a
//! promise the sender's own patch breaks, a promise nothing can check, a merged tree that fails
//! where each patch passed alone, a pair that never spoke — and flags nothing in a pair that
//! coordinated cleanly, even though most of these pairs succeed.

use serde_json::{json as j, Value};

use crate::presentation::{browse, console_errors};
use crate::support::{cbench, json, plugins, text, write_temp, Run};

const SUBMIT: &str = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";

/// Appends `code` to textkit/strings.py.
fn append(code: &str) -> String {
    format!("cat >> textkit/strings.py <<'PY'\n{code}\nPY")
}

fn send(to: &str, text: &str) -> String {
    format!("send_message {to} <<'MSG'\n{text}\nMSG")
}

const REVERSE_WORDS: &str = "\n\ndef reverse_words(text):\n    \"\"\"Reverse the order of the words in ``text``.\"\"\"\n    return \" \".join(reversed(text.split()))";
const COUNT_VOWELS: &str = "\n\ndef count_vowels(text):\n    \"\"\"Count the vowels (a, e, i, o, u; any case) in ``text``.\"\"\"\n    return sum(1 for ch in text.lower() if ch in \"aeiou\")";

/// Runs pair (1, 2) of the bundled task with `script` and returns the run and its analysis.
fn run_pair(name: &str, script: Value) -> (Run, Value) {
    let dir = tempfile::tempdir().unwrap();
    let model = format!(
        "scripted:{}",
        write_temp(dir.path(), "script.json", &script.to_string())
    );
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(name, &["--agent", &agent, "-m", &model, "-f", "1,2"]);
    run.assert_ok();
    // Written by the run itself, after grading.
    let analysis = json(&run.pair(1, 2).join("analysis.json"));
    (run, analysis)
}

fn modes(analysis: &Value) -> Vec<String> {
    analysis["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_pair_that_broke_its_promises_and_ignored_a_question_is_flagged_though_it_succeeded() {
    let (run, analysis) = run_pair(
        "analysis-planted",
        j!({
            // agent2 speaks first; agent1's question comes after, and agent2, though it
            // reads it, never answers.
            "agent1": [
                {"content": "Let me give agent2 a moment to say what it takes.", "bash": "sleep 1"},
                {"bash": append(REVERSE_WORDS)},
                {"bash": send("agent2", "Which lines of strings.py will you touch?")},
                {"bash": send("agent2", "I will add a test file tests/test_reverse.py. I'll also write a docstring.")},
                {"bash": SUBMIT}
            ],
            "agent2": [
                {"bash": send("agent1", "New file vowels.py, I won't touch strings.py.")},
                {"bash": append(COUNT_VOWELS)},
                {"bash": "sleep 3"},
                {"bash": SUBMIT}
            ]
        }),
    );
    assert_eq!(analysis["overall_success"], true, "{analysis:#}");
    assert_eq!(
        modes(&analysis),
        [
            "unanswered_question",
            "broken_promise",
            "unverifiable_promise"
        ],
        "{analysis:#}"
    );
    let question = &analysis["questions"][0];
    assert_eq!(question["from"], "agent1");
    assert_eq!(question["read"], true, "{analysis:#}");
    assert_eq!(question["answered_by"], Value::Null, "{analysis:#}");
    let claims = analysis["claims"].as_array().unwrap();
    let broken: Vec<&Value> = claims.iter().filter(|c| c["verdict"] == "broken").collect();
    assert_eq!(broken.len(), 2, "{analysis:#}");
    assert!(broken.iter().any(|c| c["from"] == "agent2"
        && c["evidence"]
            .as_str()
            .unwrap()
            .contains("textkit/strings.py")));
    assert!(broken.iter().any(|c| c["from"] == "agent1"
        && c["evidence"]
            .as_str()
            .unwrap()
            .contains("tests/test_reverse.py")));
    assert!(
        claims
            .iter()
            .any(|c| c["verdict"] == "unverifiable"
                && c["sentence"] == "I'll also write a docstring.")
    );

    // `cbench analyze` says so in words, and the report counts it.
    let out = cbench(&[
        "analyze",
        "-n",
        "analysis-planted",
        "--log-dir",
        run.logs.path().to_str().unwrap(),
    ]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for needle in [
        "(succeeded): unanswered question, broken promise, unverifiable promise",
        "unanswered: agent1 asked agent2 (message 1, read)",
        "Which lines of strings.py will you touch?",
        "broken: agent2",
        "its patch changes textkit/strings.py",
        "1 successful pair had a flagged failure mode anyway",
    ] {
        assert!(said.contains(needle), "`{needle}` in:\n{said}");
    }
    let report = json(&run.dir().join("report.json"));
    assert_eq!(
        report["coordination"]["modes"]["broken_promise"], 1,
        "{report:#}"
    );
    // A scripted model's cost is unknown, not $0.
    assert!(json(&run.dir().join("summary.json"))["cost_usd"].is_null());
    // Every command records how long the host spent on it.
    let trajectory = json(&run.pair(1, 2).join("agent1/trajectory.json"));
    let commands: Vec<&Value> = trajectory["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "bash")
        .collect();
    assert!(!commands.is_empty());
    for step in commands {
        let took = step["duration_ms"].as_f64().unwrap_or(-1.0);
        assert!(took >= 0.0, "{step:#}");
    }
    // The one that sleeps for a second took about that.
    assert!(
        trajectory["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["args"]["command"] == "sleep 1"
                && s["duration_ms"].as_f64().unwrap() >= 1000.0),
        "{trajectory:#}"
    );

    // The pages: the overview counts the modes and flags the pair; the pair page lists the
    // findings, marks the flagged messages on the timeline and shows the model's own words.
    let logs = run.logs.path().to_str().unwrap();
    let out = cbench(&["view", "-n", "analysis-planted", "--log-dir", logs]);
    assert!(out.status.success(), "{}", text(&out));
    let view = run.dir().join("view");
    let (index, log) = browse(
        &format!("file://{}", view.join("index.html").display()),
        None,
    );
    assert!(console_errors(&log).is_empty(), "{log}");
    for needle in [
        "Coordination failure modes (1 coop pair",
        "Coordination flags",
        "<span class=\"flag\">broken promise</span>",
    ] {
        assert!(index.contains(needle), "`{needle}` in the overview");
    }
    let page = format!(
        "file://{}?p=cbench_textkit_task__task1__features_1_2",
        view.join("pair.html").display()
    );
    let (pair, log) = browse(&page, None);
    assert!(console_errors(&log).is_empty(), "{log}");
    assert_eq!(
        pair.matches("class=\"message flagged\"").count(),
        3,
        "{pair}"
    );
    // A reply comes before the actions it led to, and they before the next reply, even when
    // they share a millisecond.
    let sent = pair
        .find("<span class=\"action\">send_message</span> · step 1")
        .expect("agent2's message step");
    let next_reply = pair
        .find("<span class=\"action\">model</span> · call 2")
        .expect("a second reply");
    assert!(sent < next_reply, "{pair}");
    // Tool calls are escaped once (text, not `&amp;quot;`), the command shown as itself.
    assert!(
        !pair.contains("&amp;quot;") && !pair.contains("&amp;lt;"),
        "{pair}"
    );
    for needle in [
        "bash send_message agent2 &lt;&lt;'MSG'",
        // One definition of a step everywhere: a model call; what it led to are actions.
        " steps · ",
        " actions · ",
        // Where each agent's time went.
        "time: model ",
        " · commands ",
        " · plugin and host ",
        "<h2>Coordination</h2>",
        "unanswered question (read): Which lines of strings.py will you touch?",
        "broken promise: its patch changes textkit/strings.py",
        "unverifiable promise: names no file or function to check",
        "<span class=\"action\">model</span> · call 1",
        "Let me give agent2 a moment to say what it takes.",
    ] {
        assert!(pair.contains(needle), "`{needle}` on the pair page");
    }
}

#[test]
fn a_merged_tree_failing_where_each_patch_passed_names_the_tests_and_the_changes() {
    // agent2 also replaces agent1's function when the package loads (another file: no
    // conflict, and harmless without agent1's patch).
    let sabotage = "cat >> textkit/__init__.py <<'PY'\nfrom textkit import strings as _strings\n_strings.reverse_words = lambda text: text\nPY";
    let (run, analysis) = run_pair(
        "analysis-integration",
        j!({
            "agent1": [
                {"bash": send("agent2", "I will add `reverse_words()` to textkit/strings.py.")},
                {"bash": append(REVERSE_WORDS)},
                {"bash": SUBMIT}
            ],
            "agent2": [
                {"bash": send("agent1", "I will add `count_vowels()` to textkit/strings.py.")},
                {"bash": append(COUNT_VOWELS)},
                {"bash": sabotage},
                {"bash": SUBMIT}
            ]
        }),
    );
    assert_eq!(analysis["overall_success"], false, "{analysis:#}");
    assert_eq!(
        modes(&analysis),
        ["partner_state_integration"],
        "{analysis:#}"
    );
    let integration = &analysis["integration"];
    assert_eq!(integration["failing_features"], j!([1]), "{analysis:#}");
    assert!(
        integration["failing_tests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().contains("reverse")),
        "{analysis:#}"
    );
    assert!(
        integration["symbols_in_failures"]["agent2"]
            .as_array()
            .unwrap()
            .contains(&j!("reverse_words")),
        "{analysis:#}"
    );
    // Both said they would change strings.py: each claim kept, each file shared.
    for claim in analysis["claims"].as_array().unwrap() {
        assert_eq!(claim["verdict"], "kept", "{claim:#}");
    }
    // The pair page's verdict table names the failing tests of the merged run, and none for
    // the runs that passed.
    let logs = run.logs.path().to_str().unwrap();
    let out = cbench(&["view", "-n", "analysis-integration", "--log-dir", logs]);
    assert!(out.status.success(), "{}", text(&out));
    let page = format!(
        "file://{}?p=cbench_textkit_task__task1__features_1_2",
        run.dir().join("view/pair.html").display()
    );
    let (dom, log) = browse(&page, None);
    assert!(console_errors(&log).is_empty(), "{log}");
    let merged_row = dom
        .split("<tr>")
        .find(|row| row.contains("merged ("))
        .unwrap_or_else(|| panic!("a merged row in {dom}"));
    assert!(
        merged_row.contains("test_reverses_word_order"),
        "{merged_row}"
    );
    let alone_row = dom
        .split("<tr>")
        .find(|row| row.contains("Agent 1 alone"))
        .unwrap();
    assert!(
        alone_row.contains("<td class=\"failing\"></td>"),
        "{alone_row}"
    );
}

#[test]
fn a_pair_that_answered_and_kept_its_word_is_not_flagged_and_a_silent_one_is() {
    let (_, clean) = run_pair(
        "analysis-clean",
        j!({
            "agent1": [
                {"bash": send("agent2", "I will add `reverse_words()` at the end of textkit/strings.py. Which function will you add?")},
                {"bash": append(REVERSE_WORDS)},
                // Long enough for the answer to arrive on a loaded machine (it comes after
                // agent2's one-second sleep, which starts only once its sandbox is up).
                {"bash": "sleep 4"},
                {"bash": SUBMIT}
            ],
            "agent2": [
                {"bash": "sleep 1"},
                {"bash": send("agent1", "I will add `count_vowels()` to textkit/strings.py.")},
                {"bash": append(COUNT_VOWELS)},
                {"bash": SUBMIT}
            ]
        }),
    );
    assert_eq!(clean["overall_success"], true, "{clean:#}");
    assert_eq!(modes(&clean), Vec::<String>::new(), "{clean:#}");
    assert_eq!(clean["questions"][0]["answered_by"], 1, "{clean:#}");

    let (_, silent) = run_pair(
        "analysis-silent",
        j!({
            "agent1": [{"bash": append(REVERSE_WORDS)}, {"bash": SUBMIT}],
            "agent2": [{"bash": append(COUNT_VOWELS)}, {"bash": SUBMIT}]
        }),
    );
    assert_eq!(modes(&silent), ["silent_pair"], "{silent:#}");
    assert_eq!(silent["messages"], 0);
}

#[test]
fn analyze_names_a_missing_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = cbench(&[
        "analyze",
        "-n",
        "nope",
        "--log-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("run `nope` not found"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_llm_judge_labels_each_pair_with_its_prompt_and_cost_recorded_apart() {
    use crate::mock_llm::{MockLlm, Reply};
    let (run, _) = run_pair(
        "analysis-judged",
        j!({
            "agent1": [
                {"bash": send("agent2", "I will add `reverse_words()` to textkit/strings.py.")},
                {"bash": append(REVERSE_WORDS)},
                {"bash": SUBMIT}
            ],
            "agent2": [{"bash": append(COUNT_VOWELS)}, {"bash": SUBMIT}]
        }),
    );
    let verdict = j!({"modes": ["unanswered_question"], "explanation": "agent2 never replied to m0 (agent2#1 went ahead)."});
    let reply = move |text: &str| {
        Reply::ok(
            j!({"id": "x", "object": "chat.completion", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 80,
                      "prompt_tokens_details": {"cached_tokens": 200}}}),
        )
    };
    let answer = format!("Here is my verdict: {verdict}");
    let mock = MockLlm::with_handler(move |_| reply(&answer));
    let logs = run.logs.path().to_str().unwrap().to_string();
    let api_base = format!("{}/v1", mock.base_url);
    let key = "sk-judge-test-SECRET";
    let judged = crate::support::cbench_with_env(
        &[
            "analyze",
            "-n",
            "analysis-judged",
            "--log-dir",
            &logs,
            "--judge",
            "openai/gpt-4o",
            "--api-base",
            &api_base,
        ],
        &[("OPENAI_API_KEY", key)],
    );
    let said = text(&judged);
    assert!(judged.status.success(), "{said}");
    assert!(
        said.contains("judge openai/gpt-4o: unanswered question"),
        "{said}"
    );
    assert!(said.contains("not counted in the agents'"), "{said}");
    assert!(!said.contains(key), "{said}");
    let analysis = json(&run.pair(1, 2).join("analysis.json"));
    let judge = &analysis["judge"];
    assert_eq!(judge["modes"], j!(["unanswered_question"]), "{analysis:#}");
    assert_eq!(judge["model"], "openai/gpt-4o");
    let cost = judge["cost_usd"].as_f64().unwrap();
    let expected = (1000.0 * 2.50 + 80.0 * 10.00 + 200.0 * 1.25) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost}");
    assert_eq!(judge["prompt_sha256"].as_str().unwrap().len(), 64);
    // The prompt is the repository's, with the pair's record in it; the agents' costs are
    // untouched.
    let request = &mock.received()[0].body;
    let system = request["messages"][0]["content"].as_str().unwrap();
    let prompt = request["messages"][1]["content"].as_str().unwrap();
    assert!(
        system.contains("CooperBench's common failure modes"),
        "{system}"
    );
    // The agents' words are quoted data, one line each. (Steps are numbered per agent; their
    // order between the agents is the run's.)
    for needle in [
        "m0 \"agent1\" → \"agent2\": \"I will add `reverse_words()` to textkit/strings.py.\"",
        "agent1#0 \"send_message\": \"I will add",
        "\"receive_message\": \"{\\\"from\\\":\\\"agent1\\\"}\"",
        "\"bash\": \"cat >> textkit/strings.py",
        "agent1: files textkit/strings.py",
    ] {
        assert!(prompt.contains(needle), "`{needle}` in {prompt}");
    }
    let run_analysis = json(&run.dir().join("analysis.json"));
    assert_eq!(run_analysis["judge"]["pairs"], 1, "{run_analysis:#}");
    assert!((run_analysis["judge"]["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12);
    // A later analysis (as after a regrade) keeps the verdict while the pair's files are the same.
    let again = cbench(&["analyze", "-n", "analysis-judged", "--log-dir", &logs]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        json(&run.pair(1, 2).join("analysis.json"))["judge"]["modes"],
        j!(["unanswered_question"])
    );
    assert_eq!(mock.received().len(), 1, "no second call");

    // A reply that is not the JSON asked for is recorded as such, with what it cost.
    let rambling = MockLlm::with_handler(move |_| {
        Reply::ok(
            j!({"choices": [{"index": 0, "message": {"role": "assistant",
            "content": "They seem fine to me."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}),
        )
    });
    let api_base = format!("{}/v1", rambling.base_url);
    let out = crate::support::cbench_with_env(
        &[
            "analyze",
            "-n",
            "analysis-judged",
            "--log-dir",
            &logs,
            "--judge",
            "openai/gpt-4o",
            "--api-base",
            &api_base,
        ],
        &[("OPENAI_API_KEY", key)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let judge = json(&run.pair(1, 2).join("analysis.json"))["judge"].clone();
    assert!(
        judge["error"].as_str().unwrap().contains("no JSON object"),
        "{judge:#}"
    );
    assert_eq!(judge["unparsed_reply"], "They seem fine to me.");
    assert!(judge["cost_usd"].as_f64().unwrap() > 0.0);

    // An unknown judge model is named before anything is read or sent.
    let out = cbench(&[
        "analyze",
        "-n",
        "analysis-judged",
        "--log-dir",
        &logs,
        "--judge",
        "mystery-9",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown model `mystery-9`"),
        "{}",
        text(&out)
    );
}

#[test]
fn compare_counts_each_mode_per_arm_with_a_paired_test() {
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().to_str().unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let dataset = crate::support::dataset().display().to_string();
    let arm = |name: &str, script: Value| {
        let path = write_temp(logs.path(), &format!("{name}.json"), &script.to_string());
        let model = format!("scripted:{path}");
        let out = cbench(&[
            "run",
            "-q",
            "-n",
            name,
            "--log-dir",
            log_dir,
            "--dataset-dir",
            &dataset,
            "--agent",
            &agent,
            "-m",
            &model,
            "-f",
            "1,2",
        ]);
        assert!(out.status.success(), "{}", text(&out));
    };
    arm(
        "talkative",
        j!({
            "agent1": [{"bash": send("agent2", "I will add `reverse_words()` to textkit/strings.py.")}, {"bash": append(REVERSE_WORDS)}, {"bash": SUBMIT}],
            "agent2": [{"bash": send("agent1", "I will add `count_vowels()` to textkit/strings.py.")}, {"bash": append(COUNT_VOWELS)}, {"bash": SUBMIT}]
        }),
    );
    arm(
        "quiet",
        j!({
            "agent1": [{"bash": append(REVERSE_WORDS)}, {"bash": SUBMIT}],
            "agent2": [{"bash": append(COUNT_VOWELS)}, {"bash": SUBMIT}]
        }),
    );
    let out = cbench(&["compare", "talkative", "quiet", "--log-dir", log_dir]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("failure modes flagged (cbench analyze):"),
        "{said}"
    );
    // One plain sentence, the sample called too small, and what differs between the arms.
    assert!(
        said.contains("talkative and quiet succeeded on the same number of pairs (1/1 each), and on the same pairs. Only 1 paired pair: too few for the interval or the test to mean much."),
        "{said}"
    );
    assert!(
        said.contains("options that differ:\n    -m: talkative scripted:"),
        "{said}"
    );
    assert!(
        said.contains("95% CI – (no pair where they differ)"),
        "{said}"
    );
    let silent = said
        .lines()
        .find(|l| l.trim_start().starts_with("silent pair") && l.contains("0/1"))
        .unwrap_or_else(|| panic!("a silent-pair row in:\n{said}"));
    assert!(silent.contains("1/1"), "{silent}");
    assert!(
        said.contains("silent pair: only A 0 · only B 1 · both 0 · McNemar exact p = 1.0000"),
        "{said}"
    );
    let json_out = cbench(&[
        "compare",
        "talkative",
        "quiet",
        "--log-dir",
        log_dir,
        "--json",
    ]);
    let comparison: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(
        comparison["runs"][1]["failure_modes"]["silent_pair"]["count"],
        1
    );
    assert_eq!(
        comparison["pairwise"][0]["failure_modes"]["silent_pair"]["only_b"],
        1
    );
    let page = logs.path().join("compare/talkative__vs__quiet/index.html");
    let (dom, log) = browse(&format!("file://{}", page.display()), None);
    assert!(console_errors(&log).is_empty(), "{log}");
    assert!(dom.contains("<h2>Coordination failure modes</h2>"), "{dom}");
}
