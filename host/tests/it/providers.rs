//! Each provider against a local mock speaking its wire format: completions with
//! usage and cost, tool calls, retries (429 storms, persistent 5xx, timeouts),
//! fail-fast errors, malformed replies; keys never leak.

use std::time::Duration;

use cbench::llm::prices::PriceTable;
use cbench::llm::providers::transport::RetryPolicy;
use cbench::llm::providers::{Credentials, ProviderOptions};
use cbench::llm::{
    AgentBrief, ChatMessage, Completion, CompletionRequest, LlmError, Role, Setting, ToolDefinition,
};
use serde_json::{json, Value};

use crate::mock_llm::{MockLlm, Reply};

pub(crate) const KEY: &str = "sk-cbench-test-SECRET-4242";

/// One provider's wire format, as the mock must speak it.
pub(crate) struct Wire {
    pub(crate) model: &'static str,
    pub(crate) key_var: &'static str,
    /// How the request path ends.
    pub(crate) path_suffix: &'static str,
    /// Header carrying the key, and its expected value.
    pub(crate) auth: (&'static str, fn() -> String),
    pub(crate) text_reply: fn(&str) -> Value,
    pub(crate) tool_reply: fn(&str) -> Value,
    /// Expected cost of the fixed usage every reply reports.
    pub(crate) cost: f64,
}

pub(crate) fn wires() -> Vec<Wire> {
    vec![
        Wire {
            model: "openai/gpt-4o",
            key_var: "OPENAI_API_KEY",
            path_suffix: "/v1/chat/completions",
            auth: ("authorization", || format!("Bearer {KEY}")),
            text_reply: |text| {
                json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0,
                    "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1200, "completion_tokens": 80,
                              "prompt_tokens_details": {"cached_tokens": 200}}})
            },
            tool_reply: |cmd| {
                json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "bash",
                    "arguments": json!({"command": cmd}).to_string()}}]}, "finish_reason": "tool_calls"}],
                    "usage": {"prompt_tokens": 1200, "completion_tokens": 80,
                              "prompt_tokens_details": {"cached_tokens": 200}}})
            },
            cost: (1000.0 * 2.50 + 80.0 * 10.00 + 200.0 * 1.25) / 1e6,
        },
        Wire {
            model: "anthropic/claude-sonnet-4-5",
            key_var: "ANTHROPIC_API_KEY",
            path_suffix: "/v1/messages",
            auth: ("x-api-key", || KEY.to_string()),
            text_reply: |text| {
                json!({"id": "msg_1", "type": "message", "role": "assistant",
                    "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 1000, "output_tokens": 80,
                              "cache_read_input_tokens": 200, "cache_creation_input_tokens": 50}})
            },
            tool_reply: |cmd| {
                json!({"id": "msg_1", "type": "message", "role": "assistant",
                    "content": [{"type": "text", "text": "Running it."},
                                {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": cmd}}],
                    "stop_reason": "tool_use",
                    "usage": {"input_tokens": 1000, "output_tokens": 80,
                              "cache_read_input_tokens": 200, "cache_creation_input_tokens": 50}})
            },
            cost: (1000.0 * 3.00 + 80.0 * 15.00 + 200.0 * 0.30 + 50.0 * 3.75) / 1e6,
        },
        Wire {
            model: "gemini/gemini-2.5-pro",
            key_var: "GEMINI_API_KEY",
            path_suffix: "/v1beta/models/gemini-2.5-pro:generateContent",
            auth: ("x-goog-api-key", || KEY.to_string()),
            text_reply: |text| {
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP"}],
                    "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 60,
                                      "thoughtsTokenCount": 20, "cachedContentTokenCount": 200}})
            },
            tool_reply: |cmd| {
                json!({"candidates": [{"content": {"role": "model", "parts": [
                    {"functionCall": {"name": "bash", "args": {"command": cmd}}}]}, "finishReason": "STOP"}],
                    "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 60,
                                      "thoughtsTokenCount": 20, "cachedContentTokenCount": 200}})
            },
            cost: (1000.0 * 1.25 + 80.0 * 10.00 + 200.0 * 0.31) / 1e6,
        },
    ]
}

pub(crate) fn options(mock: &MockLlm, wire: &Wire, retry: RetryPolicy) -> ProviderOptions {
    // OpenAI-compatible base URLs include the API version segment.
    let base = if wire.model.starts_with("openai/") {
        format!("{}/v1", mock.base_url)
    } else {
        mock.base_url.clone()
    };
    ProviderOptions {
        api_base: Some(base),
        retry,
        max_connections: 4,
        prices: PriceTable::builtin(),
        credentials: Credentials::from_vars(&[(wire.key_var, KEY)]),
        sampling: Default::default(),
    }
}

pub(crate) fn fast_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        max_total_wait: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
    }
}

pub(crate) fn request(with_tools: bool) -> CompletionRequest {
    let message = |role, content: &str| ChatMessage {
        role,
        content: content.into(),
        tool_calls: Vec::new(),
        tool_call_id: None,
    };
    CompletionRequest {
        messages: vec![
            message(Role::System, "You are a careful engineer."),
            message(Role::User, "List the files."),
        ],
        tools: if with_tools {
            vec![ToolDefinition {
                name: "bash".into(),
                description: "Run a command.".into(),
                parameters_schema: r#"{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}"#.into(),
            }]
        } else {
            Vec::new()
        },
        options: Default::default(),
    }
}

/// A solo agent's brief (providers do not look at it).
pub(crate) fn brief() -> AgentBrief {
    AgentBrief {
        agent_id: "agent1".into(),
        teammates: Vec::new(),
        setting: Setting::Solo,
        features: Vec::new(),
        messaging_enabled: false,
        pair_key: String::new(),
    }
}

pub(crate) fn complete(
    mock: &MockLlm,
    wire: &Wire,
    retry: RetryPolicy,
    req: &CompletionRequest,
) -> Result<Completion, LlmError> {
    let model = cbench::llm::resolve_with(wire.model, &options(mock, wire, retry))
        .unwrap_or_else(|e| panic!("{}: {e}", wire.model));
    let brief = brief();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async { model.session(&brief).complete(req).await })
}

#[test]
fn every_provider_returns_text_with_usage_and_cost() {
    for wire in wires() {
        let mock = MockLlm::scripted(vec![Reply::ok((wire.text_reply)("Hello there."))]);
        let c = complete(&mock, &wire, fast_retries(0), &request(false))
            .unwrap_or_else(|e| panic!("{}: {e}", wire.model));
        assert_eq!(c.content, "Hello there.", "{}", wire.model);
        assert_eq!(c.usage.input_tokens, 1000, "{}", wire.model);
        assert_eq!(c.usage.output_tokens, 80, "{}", wire.model);
        assert_eq!(c.usage.cache_read_tokens, 200, "{}", wire.model);
        let cost = c.cost_usd.expect("priced");
        assert!(
            (cost - wire.cost).abs() < 1e-12,
            "{}: {cost} vs {}",
            wire.model,
            wire.cost
        );
        assert!(c.retries.is_empty());
        let got = &mock.received()[0];
        assert!(
            got.path.ends_with(wire.path_suffix),
            "{}: {}",
            wire.model,
            got.path
        );
        let (header, value) = wire.auth;
        assert_eq!(
            got.headers.get(header).and_then(|v| v.to_str().ok()),
            Some(value().as_str()),
            "{}",
            wire.model
        );
        // The system prompt and the user turn both reached the provider.
        let body = got.body.to_string();
        assert!(
            body.contains("You are a careful engineer."),
            "{}: {body}",
            wire.model
        );
        assert!(body.contains("List the files."), "{}: {body}", wire.model);
    }
}

#[test]
fn every_provider_says_when_a_reply_was_cut_at_the_token_cap() {
    for wire in wires() {
        // The same reply, once finished and once cut, in each wire's own words.
        let mut cut = (wire.text_reply)("Let me run\n```bash\nls -");
        let (pointer, finished, truncated) = match wire.key_var {
            "OPENAI_API_KEY" => ("/choices/0/finish_reason", "stop", "length"),
            "ANTHROPIC_API_KEY" => ("/stop_reason", "end_turn", "max_tokens"),
            _ => ("/candidates/0/finishReason", "STOP", "MAX_TOKENS"),
        };
        *cut.pointer_mut(pointer).unwrap() = json!(truncated);
        let mock = MockLlm::scripted(vec![Reply::ok((wire.text_reply)("Done.")), Reply::ok(cut)]);
        let model =
            cbench::llm::resolve_with(wire.model, &options(&mock, &wire, fast_retries(0))).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (whole, cut) = rt.block_on(async {
            let mut session = model.session(&brief());
            let whole = session.complete(&request(false)).await.unwrap();
            let cut = session.complete(&request(false)).await.unwrap();
            (whole, cut)
        });
        assert_eq!(
            whole.finish_reason.as_deref(),
            Some(finished),
            "{}",
            wire.model
        );
        assert!(!whole.truncated, "{}", wire.model);
        assert_eq!(
            cut.finish_reason.as_deref(),
            Some(truncated),
            "{}",
            wire.model
        );
        assert!(cut.truncated, "{}: a cut reply is marked", wire.model);
    }
}

#[test]
fn a_reply_cut_at_the_token_cap_is_recorded_exported_and_shown() {
    use crate::support::{cbench, json, text};
    // Each agent's first reply is cut mid-command; then it submits.
    let server = MockLlm::with_handler(|req: &crate::mock_llm::Received| {
        let messages = req.body["messages"].as_array().cloned().unwrap_or_default();
        let first = !messages.iter().any(|m| m["role"] == "assistant");
        let message = if first {
            json!({"role": "assistant", "content": "I'll look around first:\n```bash\nls -"})
        } else {
            json!({"role": "assistant", "content": "Done.", "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "bash",
                "arguments": json!({"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}).to_string()}}]})
        };
        Reply::ok(json!({
            "choices": [{"index": 0, "message": message,
                         "finish_reason": if first { "length" } else { "tool_calls" }}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10}
        }))
    });
    let run = run_pair_against(&server, "cut", "openai/gpt-4o", &["--no-auto-eval"]);
    run.assert_ok();
    let trajectory = json(&run.pair(1, 2).join("agent1/trajectory.json"));
    let calls = trajectory["llm_calls"].as_array().unwrap();
    assert_eq!(
        calls[0]["response"]["finish_reason"], "length",
        "{trajectory:#}"
    );
    assert_eq!(calls[0]["response"]["truncated"], true);
    assert!(calls[1]["response"].get("truncated").is_none());
    // The plugin was told (WIT 0.3.0 `truncated`), so mini_swe answered the cut as a cut, not
    // as a format mistake of the model's.
    let told = calls[1]["request_new_messages"].to_string();
    assert!(
        told.contains("cut off at the output-token limit") && !told.contains("Format error"),
        "{told}"
    );
    assert!(
        trajectory["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["action"] == "truncated-reply"),
        "{trajectory:#}"
    );
    // ATIF keeps it on the step.
    let logs = run.logs.path().to_str().unwrap();
    let out = cbench(&["export", "-n", "cut", "--log-dir", logs]);
    assert!(out.status.success(), "{}", text(&out));
    let exported: String = all_text(&run.dir().join("export"))
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert!(
        exported.contains("\"finish_reason\":\"length\"")
            && exported.contains("\"truncated\":true"),
        "{exported}"
    );
    // The pair page marks the reply.
    let out = cbench(&["view", "-n", "cut", "--log-dir", logs]);
    assert!(out.status.success(), "{}", text(&out));
    let page = format!(
        "file://{}?p=cbench_textkit_task__task1__features_1_2",
        run.dir().join("view/pair.html").display()
    );
    let (pair, log) = crate::presentation::browse(&page, None);
    assert!(
        crate::presentation::console_errors(&log).is_empty(),
        "{log}"
    );
    assert_eq!(
        pair.matches("cut at the output-token cap (finish reason length)")
            .count(),
        2,
        "one per agent:\n{pair}"
    );
}

#[test]
fn every_provider_returns_tool_calls_and_receives_the_tool() {
    for wire in wires() {
        let mock = MockLlm::scripted(vec![Reply::ok((wire.tool_reply)("ls -la"))]);
        let c = complete(&mock, &wire, fast_retries(0), &request(true))
            .unwrap_or_else(|e| panic!("{}: {e}", wire.model));
        assert_eq!(c.tool_calls.len(), 1, "{}", wire.model);
        assert_eq!(c.tool_calls[0].name, "bash");
        let args: Value = serde_json::from_str(&c.tool_calls[0].arguments).unwrap();
        assert_eq!(args["command"], "ls -la", "{}", wire.model);
        assert!(!c.tool_calls[0].id.is_empty());
        let body = mock.received()[0].body.to_string();
        assert!(
            body.contains("\"bash\"") && body.contains("Run a command."),
            "{}: {body}",
            wire.model
        );
    }
}

#[test]
fn a_429_storm_recovers_honouring_retry_after() {
    for wire in wires() {
        let mut replies: Vec<Reply> = (0..3)
            .map(|_| {
                Reply::status(429, r#"{"error":{"message":"rate limited"}}"#)
                    .header("retry-after", "0")
            })
            .collect();
        replies.push(Reply::ok((wire.text_reply)("finally")));
        let mock = MockLlm::scripted(replies);
        // A long backoff that Retry-After: 0 overrides: the test stays fast only if it is honoured.
        let retry = RetryPolicy {
            initial_backoff: Duration::from_secs(30),
            ..fast_retries(5)
        };
        let started = std::time::Instant::now();
        let c = complete(&mock, &wire, retry, &request(false))
            .unwrap_or_else(|e| panic!("{}: {e}", wire.model));
        assert_eq!(c.content, "finally");
        assert_eq!(c.retries.len(), 3, "{}", wire.model);
        assert!(c.retries.iter().all(|r| r.reason == "HTTP 429"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "Retry-After was not honoured"
        );
        assert_eq!(mock.received().len(), 4);
    }
}

#[test]
fn a_persistent_500_exhausts_the_retries() {
    for wire in wires() {
        let replies = (0..10)
            .map(|_| Reply::status(500, r#"{"error":{"message":"internal"}}"#))
            .collect();
        let mock = MockLlm::scripted(replies);
        let err =
            complete(&mock, &wire, fast_retries(2), &request(false)).expect_err("must give up");
        let text = err.to_string();
        assert!(
            text.contains("HTTP 500 after 3 attempt(s)"),
            "{}: {text}",
            wire.model
        );
        assert_eq!(mock.received().len(), 3, "{}", wire.model);
    }
}

#[test]
fn a_401_fails_fast_with_the_providers_message_and_never_the_key() {
    for wire in wires() {
        // The provider echoes the key it got; the error must not.
        let body = json!({"error": {"message": format!("invalid api key {KEY}")}}).to_string();
        let mock = MockLlm::scripted(vec![Reply::status(401, &body)]);
        let err = complete(&mock, &wire, fast_retries(5), &request(false)).expect_err("401");
        let text = err.to_string();
        assert!(
            text.contains("HTTP 401: invalid api key"),
            "{}: {text}",
            wire.model
        );
        assert!(
            !text.contains(KEY),
            "{}: the key leaked: {text}",
            wire.model
        );
        assert_eq!(
            mock.received().len(),
            1,
            "{}: a 401 was retried",
            wire.model
        );
    }
}

#[test]
fn a_context_length_error_fails_fast_and_says_so() {
    for wire in wires() {
        let body =
            r#"{"error":{"message":"This model's maximum context length is 128000 tokens"}}"#;
        let mock = MockLlm::scripted(vec![Reply::status(400, body)]);
        let err = complete(&mock, &wire, fast_retries(5), &request(false)).expect_err("400");
        assert!(err.to_string().contains("context length exceeded"), "{err}");
        assert_eq!(mock.received().len(), 1);
    }
}

#[test]
fn malformed_json_is_a_clear_error() {
    for wire in wires() {
        let mock = MockLlm::scripted(vec![Reply::status(200, "{not json")]);
        let err = complete(&mock, &wire, fast_retries(0), &request(false)).expect_err("malformed");
        assert!(
            err.to_string().contains("malformed JSON"),
            "{}: {err}",
            wire.model
        );
        // Valid JSON of the wrong shape is also named.
        let mock = MockLlm::scripted(vec![Reply::ok(json!({"unexpected": true}))]);
        let err = complete(&mock, &wire, fast_retries(0), &request(false)).expect_err("shape");
        assert!(
            err.to_string().contains("unexpected reply shape"),
            "{}: {err}",
            wire.model
        );
    }
}

#[test]
fn a_slow_response_hits_the_timeout_and_is_retried() {
    for wire in wires() {
        let mock = MockLlm::scripted(vec![
            Reply::ok((wire.text_reply)("too late")).after(Duration::from_secs(3)),
            Reply::ok((wire.text_reply)("in time")),
        ]);
        let retry = RetryPolicy {
            request_timeout: Duration::from_millis(300),
            ..fast_retries(1)
        };
        let c = complete(&mock, &wire, retry, &request(false))
            .unwrap_or_else(|e| panic!("{}: {e}", wire.model));
        assert_eq!(c.content, "in time");
        assert_eq!(c.retries.len(), 1);
        assert!(
            c.retries[0].reason.starts_with("timeout"),
            "{:?}",
            c.retries
        );
        // And when every attempt is slow, the call fails with the timeout named.
        let mock = MockLlm::scripted(vec![
            Reply::ok((wire.text_reply)("late")).after(Duration::from_secs(3)),
            Reply::ok((wire.text_reply)("late")).after(Duration::from_secs(3)),
        ]);
        let err = complete(&mock, &wire, retry, &request(false)).expect_err("timeout");
        assert!(err.to_string().contains("timeout"), "{}: {err}", wire.model);
    }
}

#[test]
fn a_missing_key_is_a_clear_error_before_anything_runs() {
    let agent = crate::support::plugins().mini_swe.display().to_string();
    let logs = tempfile::tempdir().unwrap();
    let out = crate::support::cbench_with_env(
        &[
            "run",
            "-q",
            "--agent",
            &agent,
            "-m",
            "anthropic/claude-sonnet-4-5",
            "--log-dir",
            &logs.path().display().to_string(),
            "--dataset-dir",
            &crate::support::dataset().display().to_string(),
        ],
        &[("ANTHROPIC_API_KEY", "")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", crate::support::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ANTHROPIC_API_KEY"), "{stderr}");
    assert!(
        std::fs::read_dir(logs.path()).unwrap().next().is_none(),
        "something was written"
    );
}

/// An OpenAI-compatible server that plays the oracle for mini_swe: it finds the
/// feature in the task prompt, answers the first call with the gold patch and the
/// second with the submit command, and reports a fixed usage per call.
fn oracle_server() -> MockLlm {
    MockLlm::with_handler(oracle_handler())
}

/// The oracle server's answers, as a handler.
pub(crate) fn oracle_handler(
) -> impl Fn(&crate::mock_llm::Received) -> Reply + Send + Sync + 'static {
    let dataset = crate::support::dataset().join("cbench_textkit_task/task1");
    let features: Vec<(u32, String, String)> = (1..=5)
        .map(|id| {
            let dir = dataset.join(format!("feature{id}"));
            (
                id,
                std::fs::read_to_string(dir.join("feature.md")).unwrap(),
                std::fs::read_to_string(dir.join("feature.patch")).unwrap(),
            )
        })
        .collect();
    move |req: &crate::mock_llm::Received| {
        let messages = req.body["messages"].as_array().cloned().unwrap_or_default();
        let task = messages
            .iter()
            .filter(|m| m["role"] == "user")
            .find_map(|m| m["content"].as_str().map(str::to_string))
            .unwrap_or_default();
        let Some((id, _, patch)) = features
            .iter()
            .find(|(_, text, _)| task.contains(text.trim()))
        else {
            return Reply::status(400, r#"{"error":{"message":"no feature in the prompt"}}"#);
        };
        let replies_so_far = messages.iter().filter(|m| m["role"] == "assistant").count();
        let command = if replies_so_far == 0 {
            cbench::llm::oracle::apply_command(&cbench::llm::FeatureBrief {
                id: *id,
                gold_patch: patch.clone(),
            })
        } else {
            "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT".to_string()
        };
        Reply::ok(json!({
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "On it.",
                "tool_calls": [{"id": format!("call_{replies_so_far}"), "type": "function",
                    "function": {"name": "bash", "arguments": json!({"command": command}).to_string()}}]}}],
            "usage": {"prompt_tokens": 1500, "completion_tokens": 100,
                      "prompt_tokens_details": {"cached_tokens": 500}}
        }))
    }
}

fn pair_evals(run_dir: &std::path::Path) -> Vec<(String, Value)> {
    let mut evals = Vec::new();
    for a in 1..=5 {
        for b in a + 1..=5 {
            let name = format!("features_{a}_{b}");
            let mut eval = crate::support::json(
                &run_dir
                    .join("cbench_textkit_task/task1")
                    .join(&name)
                    .join("eval.json"),
            );
            let map = eval.as_object_mut().unwrap();
            map.remove("evaluated_at");
            map.remove("duration_s");
            evals.push((name, eval));
        }
    }
    evals
}

/// Every file under `dir`, as text.
fn all_text(dir: &std::path::Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
            }
        }
    }
    text
}

#[test]
fn the_openai_compatible_provider_grades_like_the_oracle_and_counts_every_token() {
    use crate::support::{json, plugins, text, Run};
    let agent = plugins().mini_swe.display().to_string();
    let oracle = Run::start(
        "oracle-baseline",
        &["--agent", &agent, "-m", "oracle", "--no-messaging"],
    );
    oracle.assert_ok();

    let server = oracle_server();
    let api_base = format!("{}/v1", server.base_url);
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().display().to_string();
    let dataset = crate::support::dataset().display().to_string();
    let run = |name: &str, model: &str| {
        crate::support::cbench_with_env(
            &[
                "run",
                "-n",
                name,
                "--log-dir",
                &log_dir,
                "--dataset-dir",
                &dataset,
                "--agent",
                &agent,
                "-m",
                model,
                "--no-messaging",
                "--api-base",
                &api_base,
            ],
            &[("OPENAI_API_KEY", KEY)],
        )
    };
    let out = run("via-openai", "openai/gpt-4o");
    assert!(out.status.success(), "{}", text(&out));
    let run_dir = logs.path().join("via-openai");
    assert_eq!(pair_evals(&run_dir), pair_evals(&oracle.dir()));

    // Tokens and cost: exactly what the server reported, summed per agent and per run.
    let calls = server.received().len() as u64;
    assert_eq!(calls, 40, "10 pairs × 2 agents × (patch + submit)");
    let summary = json(&run_dir.join("summary.json"));
    assert_eq!(
        summary["token_usage"]["prompt_tokens"],
        1500 * calls,
        "{summary:#}"
    );
    assert_eq!(summary["token_usage"]["completion_tokens"], 100 * calls);
    assert_eq!(summary["token_usage"]["cache_read_tokens"], 500 * calls);
    let per_call = (1000.0 * 2.50 + 100.0 * 10.00 + 500.0 * 1.25) / 1e6;
    let cost = summary["cost_usd"].as_f64().expect("priced");
    assert!((cost - per_call * calls as f64).abs() < 1e-9, "{cost}");
    let result = json(&run_dir.join("cbench_textkit_task/task1/features_1_2/result.json"));
    for a in result["agents"].as_array().unwrap() {
        assert_eq!(a["token_usage"]["prompt_tokens"], 3000, "{a:#}");
        assert!((a["cost_usd"].as_f64().unwrap() - 2.0 * per_call).abs() < 1e-9);
    }
    assert_eq!(
        summary["per_pair"][0]["agents"].as_array().unwrap().len(),
        2
    );

    // The key appears nowhere: not in any file of the run, nor on the terminal.
    assert!(
        !all_text(&run_dir).contains(KEY),
        "the API key was written to the run directory"
    );
    assert!(!text(&out).contains(KEY));

    // Replaying the recorded run reproduces every patch without the server.
    drop(server);
    let replayed = run("replayed", &format!("replay:{}", run_dir.display()));
    assert!(replayed.status.success(), "{}", text(&replayed));
    let replay_dir = logs.path().join("replayed");
    for a in 1..=5 {
        for b in a + 1..=5 {
            for who in ["agent1", "agent2"] {
                let rel = format!("cbench_textkit_task/task1/features_{a}_{b}/{who}/patch.diff");
                assert_eq!(
                    std::fs::read(run_dir.join(&rel)).unwrap(),
                    std::fs::read(replay_dir.join(&rel)).unwrap(),
                    "{rel}"
                );
            }
        }
    }
    assert_eq!(pair_evals(&replay_dir), pair_evals(&run_dir));
}

#[test]
fn a_replay_that_diverges_says_so() {
    use crate::support::{plugins, text, write_temp, Run};
    let agent = plugins().mini_swe.display().to_string();
    let recorded = Run::start(
        "to-replay",
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
    recorded.assert_ok();
    // The same pair with another agent configuration: the first request already differs.
    let scratch = tempfile::tempdir().unwrap();
    let config = write_temp(scratch.path(), "config.json", r#"{"use_tools": false}"#);
    let model = format!("replay:{}", recorded.dir().display());
    let replay = Run::start(
        "diverged",
        &[
            "--agent",
            &agent,
            "-m",
            &model,
            "-f",
            "1,2",
            "--no-auto-eval",
            "--agent-config",
            &config,
        ],
    );
    let out = text(&replay.output);
    assert!(out.contains("replay diverged at call 1"), "{out}");
    let result = crate::support::json(&replay.pair(1, 2).join("result.json"));
    let error = result["agents"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("replay diverged"), "{result:#}");
}

/// `cbench run` of pair 1,2 with mini_swe against `server` (OpenAI wire), plus `extra`.
fn run_pair_against(
    server: &MockLlm,
    name: &str,
    model: &str,
    extra: &[&str],
) -> crate::support::Run {
    let agent = crate::support::plugins().mini_swe.display().to_string();
    let base = format!("{}/v1", server.base_url);
    let mut args = vec![
        "--agent",
        &agent,
        "-m",
        model,
        "--no-messaging",
        "-f",
        "1,2",
        "--api-base",
        &base,
    ];
    args.extend_from_slice(extra);
    crate::support::Run::start_with_env(name, &args, &[("OPENAI_API_KEY", KEY)])
}

#[test]
fn the_host_stops_an_agent_at_its_cost_limit() {
    use crate::support::json;
    let server = oracle_server();
    // One call costs $0.004125: the second call is refused.
    let run = run_pair_against(&server, "capped", "openai/gpt-4o", &["--max-cost", "0.004"]);
    run.assert_ok();
    let result = json(&run.pair(1, 2).join("result.json"));
    for a in result["agents"].as_array().unwrap() {
        assert_eq!(a["status"], "LimitsExceeded", "{a:#}");
        assert!(
            a["error"].as_str().unwrap().contains("cost limit of $0.00"),
            "{a:#}"
        );
    }
    assert_eq!(
        server.received().len(),
        2,
        "one call per agent reached the provider"
    );

    // A run cost cap of $0 refuses every call before it reaches the provider.
    let run = run_pair_against(
        &server,
        "run-capped",
        "openai/gpt-4o",
        &["--max-run-cost", "0"],
    );
    run.assert_ok();
    let result = json(&run.pair(1, 2).join("result.json"));
    for a in result["agents"].as_array().unwrap() {
        assert_eq!(a["status"], "LimitsExceeded", "{a:#}");
        assert!(
            a["error"].as_str().unwrap().contains("the run's cost cap"),
            "{a:#}"
        );
    }
    assert_eq!(server.received().len(), 2, "no call passed the run's cap");
}

#[test]
fn retries_show_in_the_progress_output_and_the_trajectory() {
    use crate::support::{json, plugins, text};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let oracle = oracle_handler();
    let seen = AtomicUsize::new(0);
    // The very first request is rate limited once.
    let server = MockLlm::with_handler(move |req| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::status(429, r#"{"error":{"message":"slow down"}}"#).header("retry-after", "0")
        } else {
            oracle(req)
        }
    });
    let agent = plugins().mini_swe.display().to_string();
    let logs = tempfile::tempdir().unwrap();
    let out = crate::support::cbench_with_env(
        &[
            "run",
            "-n",
            "retried",
            "--log-dir",
            &logs.path().display().to_string(),
            "--dataset-dir",
            &crate::support::dataset().display().to_string(),
            "--agent",
            &agent,
            "-m",
            "openai/gpt-4o",
            "--no-messaging",
            "-f",
            "1,2",
            "--no-auto-eval",
            "--api-base",
            &format!("{}/v1", server.base_url),
        ],
        // Debug logs of every crate (reqwest, hyper included) must not carry the key either.
        &[("OPENAI_API_KEY", KEY), ("RUST_LOG", "debug")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(KEY), "the key reached the logs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("LLM call 1 retried 1× (HTTP 429)"),
        "{stdout}"
    );
    let pair = logs
        .path()
        .join("retried/cbench_textkit_task/task1/features_1_2");
    let retried: usize = ["agent1", "agent2"]
        .iter()
        .map(|a| {
            json(&pair.join(a).join("trajectory.json"))["llm_calls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["retries"][0]["reason"] == "HTTP 429")
                .count()
        })
        .sum();
    assert_eq!(retried, 1);
}

#[test]
fn max_connections_bounds_the_requests_in_flight() {
    let wire = &wires()[0];
    for (limit, expected) in [(1, 1), (3, 3)] {
        let replies = (0..6)
            .map(|_| Reply::ok((wire.text_reply)("ok")).after(Duration::from_millis(200)))
            .collect();
        let mock = MockLlm::scripted(replies);
        let options = ProviderOptions {
            max_connections: limit,
            ..options(&mock, wire, fast_retries(0))
        };
        let model = cbench::llm::resolve_with(wire.model, &options).unwrap();
        let brief = brief();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let calls: Vec<_> = (0..6)
                .map(|_| {
                    let mut session = model.session(&brief);
                    async move { session.complete(&request(false)).await }
                })
                .collect();
            let mut set = tokio::task::JoinSet::new();
            for call in calls {
                set.spawn(call);
            }
            while let Some(done) = set.join_next().await {
                done.unwrap().unwrap();
            }
        });
        assert_eq!(mock.max_in_flight(), expected, "--max-connections {limit}");
    }
}

#[test]
fn a_model_without_a_price_costs_unknown_not_zero() {
    use crate::support::{json, text, write_temp};
    let server = oracle_server();
    let model = "hosted_vllm/my-local-model";
    let run = run_pair_against(&server, "unpriced", model, &["--no-auto-eval"]);
    run.assert_ok();
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert!(
        stderr.contains("no price for model `hosted_vllm/my-local-model`"),
        "{stderr}"
    );
    let summary = json(&run.dir().join("summary.json"));
    assert!(summary["cost_usd"].is_null(), "{summary:#}");
    assert_eq!(
        summary["token_usage"]["completion_tokens"], 400,
        "{summary:#}"
    );

    // With a price file the same model is priced.
    let scratch = tempfile::tempdir().unwrap();
    let prices = write_temp(
        scratch.path(),
        "prices.json",
        r#"{"models": {"my-local-model": {"input": 1.0, "output": 2.0}}}"#,
    );
    let run = run_pair_against(
        &server,
        "priced",
        model,
        &["--no-auto-eval", "--prices", &prices],
    );
    run.assert_ok();
    let summary = json(&run.dir().join("summary.json"));
    // 4 calls × (1500 input tokens, cached ones at the input price, × $1 + 100 × $2) per million.
    let expected = 4.0 * (1500.0 * 1.0 + 100.0 * 2.0) / 1e6;
    assert!(
        (summary["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{summary:#}"
    );

    // A broken price file is named.
    let bad = write_temp(scratch.path(), "bad.json", r#"{"models": 3}"#);
    let run = run_pair_against(&server, "bad-prices", model, &["--prices", &bad]);
    assert_eq!(run.output.status.code(), Some(2), "{}", text(&run.output));
    assert!(
        text(&run.output).contains("bad.json"),
        "{}",
        text(&run.output)
    );
}
