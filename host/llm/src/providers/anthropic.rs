//! Anthropic Messages (`POST {base}/v1/messages`).

use serde_json::{json, Value};

use super::{malformed, Reply, Sampling};
use crate::{CompletionRequest, LlmError, Role, TokenUsage, ToolCall};

/// The API version header value.
pub const API_VERSION: &str = "2023-06-01";
/// Reply budget per call (the API requires one).
const MAX_TOKENS: u32 = 8192;

/// The request body: system text apart, tool results as user turns, consecutive
/// turns of one role joined (the API requires alternation).
pub fn request_body(model: &str, request: &CompletionRequest, sampling: Sampling) -> Value {
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for m in &request.messages {
        let (role, blocks) = match m.role {
            Role::System => {
                system.push(m.content.clone());
                continue;
            }
            Role::User => ("user", vec![json!({"type": "text", "text": m.content})]),
            Role::Tool => (
                "user",
                vec![json!({"type": "tool_result",
                            "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                            "content": m.content})],
            ),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for c in &m.tool_calls {
                    let input =
                        serde_json::from_str::<Value>(&c.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                ("assistant", blocks)
            }
        };
        match turns.last_mut() {
            Some((last, existing)) if last == role => existing.extend(blocks),
            _ => turns.push((role.to_string(), blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let max_tokens = sampling.max_output_tokens.unwrap_or(MAX_TOKENS);
    let mut body = json!({"model": model, "max_tokens": max_tokens, "messages": messages});
    if let Some(t) = sampling.temperature {
        body["temperature"] = json!(t);
    }
    if !request.options.stop.is_empty() {
        body["stop_sequences"] = json!(request.options.stop);
    }
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"name": t.name, "description": t.description,
                       "input_schema": serde_json::from_str::<Value>(&t.parameters_schema)
                           .unwrap_or_else(|_| json!({"type": "object"}))})
            })
            .collect();
    }
    body
}

/// The reply: text blocks joined, `tool_use` blocks as tool calls, usage with cache tokens.
pub fn parse_reply(v: &Value) -> Result<Reply, LlmError> {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("no content array"))?;
    let mut text = Vec::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| malformed("a tool_use block without a name"))?
                    .to_string(),
                arguments: block
                    .get("input")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
            }),
            _ => {}
        }
    }
    let number = |key: &str| {
        v.pointer(&format!("/usage/{key}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Reply {
        content: text.join(""),
        tool_calls,
        finish_reason: v
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: TokenUsage {
            input_tokens: number("input_tokens"),
            output_tokens: number("output_tokens"),
            cache_read_tokens: number("cache_read_input_tokens"),
            cache_write_tokens: number("cache_creation_input_tokens"),
        },
    })
}
