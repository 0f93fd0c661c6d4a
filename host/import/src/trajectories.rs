//! A CooperBench trajectory (`agent<f>_traj.json`, `solo_traj.json`: mini-swe-agent's message
//! list) as a cbench trajectory: one step per command with its observation, one LLM call per
//! model reply with the usage and cost the provider reported.

use serde_json::Value;

use crate::trajectory::{LlmCall, RecordedResponse, Step, TokenTotals, Trajectory};
use cbench_llm::{ChatMessage, Role, TokenUsage, ToolCall};

/// What the pair's result.json says of the agent, for fields the messages do not carry.
pub(crate) struct AgentFacts {
    pub agent_id: String,
    pub feature_ids: Vec<u32>,
    pub model: String,
    pub status: String,
    pub error: Option<String>,
    pub cost: Option<f64>,
    pub start_time: String,
    pub end_time: String,
}

/// Unix seconds (mini-swe-agent's `extra.timestamp`) as RFC 3339.
fn unix_to_rfc3339(seconds: f64) -> Option<String> {
    let whole = seconds.floor();
    let nanos = ((seconds - whole) * 1e9) as u32;
    chrono::DateTime::from_timestamp(whole as i64, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        // Content blocks (`[{type: text, text}]`) as their texts.
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The tool calls of an assistant message in OpenAI's shape.
fn tool_calls(message: &Value) -> Vec<ToolCall> {
    message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: c.get("id").map(text).unwrap_or_default(),
                    name: c
                        .pointer("/function/name")
                        .map(text)
                        .unwrap_or_else(|| "bash".into()),
                    arguments: c
                        .pointer("/function/arguments")
                        .map(text)
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The commands an assistant message ran: mini-swe-agent's parsed `extra.actions`, else the
/// tool calls' `command` arguments.
fn commands(message: &Value, calls: &[ToolCall]) -> Vec<(String, String)> {
    if let Some(actions) = message.pointer("/extra/actions").and_then(Value::as_array) {
        return actions
            .iter()
            .map(|a| {
                (
                    a.get("tool_call_id").map(text).unwrap_or_default(),
                    a.get("command").map(text).unwrap_or_default(),
                )
            })
            .collect();
    }
    calls
        .iter()
        .map(|c| {
            let command = serde_json::from_str::<Value>(&c.arguments)
                .ok()
                .and_then(|a| a.get("command").map(text))
                .unwrap_or_else(|| c.arguments.clone());
            (c.id.clone(), command)
        })
        .collect()
}

fn chat_message(message: &Value) -> Option<ChatMessage> {
    let role = match message.get("role").and_then(Value::as_str)? {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => return None,
    };
    Some(ChatMessage {
        role,
        content: message.get("content").map(text).unwrap_or_default(),
        tool_calls: tool_calls(message),
        tool_call_id: message.get("tool_call_id").map(text),
    })
}

/// mini-swe-agent v2 renders a command's result as JSON (`{"returncode": 0, "output": "…"}`);
/// shown as cbench shows its own observations, other text as it is.
fn readable(observation: &str) -> String {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(observation) else {
        return observation.to_string();
    };
    match (fields.get("returncode"), fields.get("output")) {
        (Some(code), Some(Value::String(output))) if fields.len() <= 3 => {
            format!("<exit_code>{code}</exit_code>\n<output>\n{output}</output>")
        }
        _ => observation.to_string(),
    }
}

/// Converts mini-swe-agent's `messages` into a cbench trajectory.
pub(crate) fn convert(messages: &[Value], facts: AgentFacts) -> Trajectory {
    let mut steps: Vec<Step> = Vec::new();
    let mut calls: Vec<LlmCall> = Vec::new();
    let mut totals = TokenTotals::default();
    let mut pending: Vec<ChatMessage> = Vec::new();
    let mut seen = 0usize;
    // Commands awaiting their observation, by tool call id.
    let mut awaiting: Vec<(String, usize)> = Vec::new();
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let timestamp = message
            .pointer("/extra/timestamp")
            .and_then(Value::as_f64)
            .and_then(unix_to_rfc3339)
            .unwrap_or_default();
        if role == "assistant" {
            let usage_value = message
                .pointer("/extra/response/usage")
                .cloned()
                .unwrap_or(Value::Null);
            let usage = TokenUsage {
                input_tokens: u64_at(&usage_value, "prompt_tokens"),
                output_tokens: u64_at(&usage_value, "completion_tokens"),
                cache_read_tokens: usage_value
                    .pointer("/prompt_tokens_details/cached_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                cache_write_tokens: 0,
            };
            totals.prompt_tokens += usage.input_tokens;
            totals.completion_tokens += usage.output_tokens;
            totals.cache_read_tokens += usage.cache_read_tokens;
            let call_tools = tool_calls(message);
            calls.push(LlmCall {
                index: calls.len() as u32,
                timestamp: timestamp.clone(),
                duration_ms: 0,
                request_total_messages: seen,
                request_new_messages: std::mem::take(&mut pending),
                tools: vec!["bash".into()],
                response: Some({
                    // mini-swe-agent keeps the provider's raw reply under extra.response.
                    let finish_reason = message
                        .pointer("/extra/response/choices/0/finish_reason")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    RecordedResponse {
                        content: message.get("content").map(text).unwrap_or_default(),
                        tool_calls: call_tools.clone(),
                        truncated: finish_reason
                            .as_deref()
                            .is_some_and(cbench_llm::providers::cut_at_token_cap),
                        finish_reason,
                    }
                }),
                usage,
                cost_usd: message.pointer("/extra/cost").and_then(Value::as_f64),
                error: None,
                retries: Vec::new(),
                // CooperBench records no timing of its own to split.
                step: None,
            });
            for (call_id, command) in commands(message, &call_tools) {
                awaiting.push((call_id, steps.len()));
                steps.push(Step {
                    action: "bash".into(),
                    args: serde_json::json!({ "command": command }),
                    observation: String::new(),
                    timestamp: timestamp.clone(),
                    duration_ms: None,
                    after_call: Some(calls.len() as u32),
                });
            }
        } else if role == "tool" {
            let id = message.get("tool_call_id").map(text).unwrap_or_default();
            let observation = readable(&message.get("content").map(text).unwrap_or_default());
            let slot = awaiting
                .iter()
                .position(|(call_id, _)| *call_id == id)
                .or_else(|| (!awaiting.is_empty()).then_some(0));
            if let Some(i) = slot {
                let (_, step) = awaiting.remove(i);
                steps[step].observation = observation;
            }
        } else if role == "user" {
            // A format error or a teammate's message answers the commands still waiting.
            for (_, step) in awaiting.drain(..) {
                if steps[step].observation.is_empty() {
                    steps[step].observation = message.get("content").map(text).unwrap_or_default();
                }
            }
        }
        if let Some(chat) = chat_message(message) {
            if chat.role != Role::Assistant {
                pending.push(chat);
            }
            seen += 1;
        }
    }
    totals.total_tokens = totals.prompt_tokens + totals.completion_tokens;
    let summary = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("exit"))
        .and_then(|m| m.pointer("/extra/submission").map(text))
        .filter(|s| !s.is_empty());
    Trajectory {
        agent_id: facts.agent_id,
        feature_id: facts.feature_ids.first().copied(),
        feature_ids: facts.feature_ids,
        model: facts.model,
        start_time: facts.start_time,
        end_time: facts.end_time,
        steps,
        token_usage: totals,
        cost_usd: facts.cost,
        llm_calls: calls,
        status: facts.status,
        error: facts.error,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_meet_their_observations_and_usage_adds_up() {
        let messages: Vec<Value> = serde_json::from_str(
            r#"[
              {"role": "system", "content": "sys"},
              {"role": "user", "content": "task"},
              {"role": "assistant", "content": "look", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"ls\"}"}}],
               "extra": {"actions": [{"tool_name": "bash", "tool_call_id": "c1", "command": "ls"}], "response": {"usage": {"prompt_tokens": 10, "completion_tokens": 3}}, "cost": 0.5, "timestamp": 1700000000.5}},
              {"role": "tool", "tool_call_id": "c1", "content": "{\"returncode\": 0, \"output\": \"a.py\\n\"}"},
              {"role": "assistant", "content": "no action here", "extra": {"response": {"usage": {"prompt_tokens": 20, "completion_tokens": 4}}}},
              {"role": "user", "content": "format error"},
              {"role": "exit", "content": "", "extra": {"exit_status": "Submitted", "submission": "done"}}
            ]"#,
        )
        .unwrap();
        let t = convert(
            &messages,
            AgentFacts {
                agent_id: "agent1".into(),
                feature_ids: vec![3],
                model: "m".into(),
                status: "Submitted".into(),
                error: None,
                cost: Some(1.0),
                start_time: String::new(),
                end_time: String::new(),
            },
        );
        assert_eq!(t.steps.len(), 1);
        assert_eq!(t.steps[0].args["command"], "ls");
        assert_eq!(
            t.steps[0].observation,
            "<exit_code>0</exit_code>\n<output>\na.py\n</output>"
        );
        assert_eq!(t.steps[0].timestamp, "2023-11-14T22:13:20.500Z");
        assert_eq!(t.llm_calls.len(), 2);
        assert_eq!(t.llm_calls[0].request_new_messages.len(), 2);
        assert_eq!(t.llm_calls[1].request_new_messages.len(), 1);
        assert_eq!(t.token_usage.prompt_tokens, 30);
        assert_eq!(t.token_usage.total_tokens, 37);
        assert_eq!(t.summary.as_deref(), Some("done"));
        assert_eq!(t.feature_id, Some(3));
    }
}
