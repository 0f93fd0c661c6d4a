//! OpenAI chat completions (`POST {base}/chat/completions`): OpenAI itself and every
//! OpenAI-compatible server (vLLM, Ollama, LiteLLM proxy, OpenRouter).

use serde_json::{json, Value};

use super::{malformed, Reply, Sampling};
use crate::{CompletionRequest, LlmError, Role, TokenUsage, ToolCall};

/// The request body.
pub fn request_body(model: &str, request: &CompletionRequest, sampling: Sampling) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            let mut message = json!({"role": role, "content": m.content});
            if !m.tool_calls.is_empty() {
                message["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect();
            }
            if let Some(id) = &m.tool_call_id {
                message["tool_call_id"] = json!(id);
            }
            message
        })
        .collect();
    let mut body = json!({"model": model, "messages": messages});
    if let Some(n) = sampling.max_output_tokens {
        body["max_tokens"] = json!(n);
    }
    if let Some(t) = sampling.temperature {
        body["temperature"] = json!(t);
    }
    if !request.options.stop.is_empty() {
        body["stop"] = json!(request.options.stop);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": serde_json::from_str::<Value>(&t.parameters_schema)
                        .unwrap_or_else(|_| json!({"type": "object"})),
                }})
            })
            .collect();
    }
    body
}

/// The reply: text, tool calls, usage (`prompt_tokens` includes cached tokens; input
/// here is the uncached part so each token is priced once).
pub fn parse_reply(v: &Value) -> Result<Reply, LlmError> {
    let message = v
        .pointer("/choices/0/message")
        .ok_or_else(|| malformed("no choices[0].message"))?;
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut tool_calls = Vec::new();
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let function = call
            .get("function")
            .ok_or_else(|| malformed("a tool call without function"))?;
        tool_calls.push(ToolCall {
            id: call
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            name: function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("a tool call without a name"))?
                .to_string(),
            arguments: match function.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "{}".into(),
            },
        });
    }
    let usage = v.get("usage");
    let number = |path: &str| {
        usage
            .and_then(|u| u.pointer(path))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let prompt = number("/prompt_tokens");
    // DeepSeek reports its cache hits under its own name.
    let cached = match number("/prompt_tokens_details/cached_tokens") {
        0 => number("/prompt_cache_hit_tokens"),
        n => n,
    };
    Ok(Reply {
        content,
        tool_calls,
        finish_reason: v
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: TokenUsage {
            input_tokens: prompt.saturating_sub(cached),
            output_tokens: number("/completion_tokens"),
            cache_read_tokens: cached,
            cache_write_tokens: 0,
        },
    })
}
