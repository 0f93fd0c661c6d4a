//! Google Gemini (`POST {base}/v1beta/models/{model}:generateContent`).

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{malformed, Reply, Sampling};
use crate::{CompletionRequest, LlmError, Role, TokenUsage, ToolCall};

/// The request body. Gemini names function results by function name, so tool
/// results are matched to the calls that asked for them.
pub fn request_body(request: &CompletionRequest, sampling: Sampling) -> Value {
    let mut system = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    let mut contents: Vec<(String, Vec<Value>)> = Vec::new();
    for m in &request.messages {
        let (role, parts) = match m.role {
            Role::System => {
                system.push(json!({"text": m.content}));
                continue;
            }
            Role::User => ("user", vec![json!({"text": m.content})]),
            Role::Tool => {
                let id = m.tool_call_id.clone().unwrap_or_default();
                let name = call_names
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| "bash".into());
                (
                    "user",
                    vec![
                        json!({"functionResponse": {"name": name, "response": {"output": m.content}}}),
                    ],
                )
            }
            Role::Assistant => {
                let mut parts = Vec::new();
                if !m.content.is_empty() {
                    parts.push(json!({"text": m.content}));
                }
                for c in &m.tool_calls {
                    call_names.insert(c.id.clone(), c.name.clone());
                    let args =
                        serde_json::from_str::<Value>(&c.arguments).unwrap_or_else(|_| json!({}));
                    parts.push(json!({"functionCall": {"name": c.name, "args": args}}));
                }
                ("model", parts)
            }
        };
        match contents.last_mut() {
            Some((last, existing)) if last == role => existing.extend(parts),
            _ => contents.push((role.to_string(), parts)),
        }
    }
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    let mut body = json!({"contents": contents});
    let mut generation = serde_json::Map::new();
    if let Some(n) = sampling.max_output_tokens {
        generation.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = sampling.temperature {
        generation.insert("temperature".into(), json!(t));
    }
    if !request.options.stop.is_empty() {
        generation.insert("stopSequences".into(), json!(request.options.stop));
    }
    if !generation.is_empty() {
        body["generationConfig"] = Value::Object(generation);
    }
    if !system.is_empty() {
        body["systemInstruction"] = json!({"parts": system});
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({"name": t.name, "description": t.description,
                       "parameters": serde_json::from_str::<Value>(&t.parameters_schema)
                           .unwrap_or_else(|_| json!({"type": "object"}))})
            })
            .collect();
        body["tools"] = json!([{"functionDeclarations": declarations}]);
    }
    body
}

/// The reply of the first candidate; function calls get ids `call_<n>` (Gemini has none).
pub fn parse_reply(v: &Value) -> Result<Reply, LlmError> {
    let candidate = v.pointer("/candidates/0").ok_or_else(|| {
        match v
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str)
        {
            Some(reason) => LlmError::Provider(format!("the prompt was blocked: {reason}")),
            None => malformed("no candidates"),
        }
    })?;
    let mut text = Vec::new();
    let mut tool_calls = Vec::new();
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            // Thought summaries are not the answer.
            if part.get("thought").and_then(Value::as_bool) != Some(true) {
                text.push(t);
            }
        }
        if let Some(call) = part.get("functionCall") {
            tool_calls.push(ToolCall {
                id: call
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("call_{}", tool_calls.len())),
                name: call
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| malformed("a functionCall without a name"))?
                    .to_string(),
                arguments: call
                    .get("args")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
            });
        }
    }
    let number = |key: &str| {
        v.pointer(&format!("/usageMetadata/{key}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let prompt = number("promptTokenCount");
    let cached = number("cachedContentTokenCount");
    Ok(Reply {
        content: text.join(""),
        tool_calls,
        finish_reason: candidate
            .get("finishReason")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: TokenUsage {
            input_tokens: prompt.saturating_sub(cached),
            // Thinking tokens are billed as output.
            output_tokens: number("candidatesTokenCount") + number("thoughtsTokenCount"),
            cache_read_tokens: cached,
            cache_write_tokens: 0,
        },
    })
}
