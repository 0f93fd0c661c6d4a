//! Amazon Bedrock's Converse API (`POST {base}/model/{model id}/converse`), signed with
//! AWS SigV4 on every attempt (the signature covers the body and the time).

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::sigv4::Signer;
use super::transport::Auth;
use super::{
    alternatives, base_url, malformed, uri_encode, Endpoint, ModelSpec, ProviderOptions, Reply,
    Sampling,
};
use crate::{CompletionRequest, LlmError, ModelError, Role, TokenUsage, ToolCall};

/// Where the region is read from, in LiteLLM's order.
pub const REGION_VARS: &[&str] = &["AWS_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION"];

/// The endpoint of a `bedrock/` model; the keys and the region must be set.
pub(crate) fn endpoint(
    id: &str,
    spec: &ModelSpec,
    options: &ProviderOptions,
) -> Result<Endpoint, ModelError> {
    let creds = &options.credentials;
    let missing = |what: &'static str, vars: &[&str]| ModelError::MissingSetting {
        model: id.to_string(),
        what,
        var: alternatives(vars),
    };
    let (_, access_key_id) = creds
        .first(&["AWS_ACCESS_KEY_ID"])
        .ok_or_else(|| missing("AWS access key", &["AWS_ACCESS_KEY_ID"]))?;
    let (_, secret_access_key) = creds
        .first(&["AWS_SECRET_ACCESS_KEY"])
        .ok_or_else(|| missing("AWS secret key", &["AWS_SECRET_ACCESS_KEY"]))?;
    let session_token = creds
        .first(&["AWS_SESSION_TOKEN"])
        .map(|(_, v)| v.to_string());
    let (_, region) = creds
        .first(REGION_VARS)
        .ok_or_else(|| missing("AWS region", REGION_VARS))?;
    let derived = format!("https://bedrock-runtime.{region}.amazonaws.com");
    let base = base_url(id, spec, options, Some(derived))?;
    // Model ids carry `:` (and ARNs `/`): one encoded path segment.
    let url = format!("{base}/model/{}/converse", uri_encode(&spec.model));
    let parsed = reqwest::Url::parse(&url).map_err(|e| ModelError::BadBaseUrl {
        model: id.to_string(),
        url: format!("{base} ({e})"),
    })?;
    let secrets = std::iter::once(secret_access_key.to_string())
        .chain(session_token.clone())
        .collect();
    Ok(Endpoint {
        url,
        auth: Box::new(SigV4Auth {
            url: parsed,
            signer: Signer {
                access_key_id: access_key_id.to_string(),
                secret_access_key: secret_access_key.to_string(),
                session_token,
                region: region.to_string(),
                service: "bedrock".into(),
            },
        }),
        secrets,
    })
}

/// Signs each attempt anew: a retried request keeps a valid signature however long the
/// backoff (AWS rejects signatures older than five minutes).
struct SigV4Auth {
    url: reqwest::Url,
    signer: Signer,
}

#[async_trait]
impl Auth for SigV4Auth {
    async fn headers(&self, _url: &str, body: &[u8]) -> Result<HeaderMap, LlmError> {
        self.signer
            .sign(&self.url, "application/json", body, chrono::Utc::now())
            .map_err(|e| LlmError::Unavailable(format!("cannot sign the Bedrock request: {e}")))
    }

    fn hint(&self) -> Option<String> {
        Some(format!(
            "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY{} and the region {} (from {})",
            if self.signer.session_token.is_some() {
                ", AWS_SESSION_TOKEN"
            } else {
                ""
            },
            self.signer.region,
            REGION_VARS.join(" / ")
        ))
    }
}

/// Converse rejects blank text blocks; these stand in for empty turns.
const EMPTY_TEXT: &str = "(empty)";
const EMPTY_OUTPUT: &str = "(no output)";

/// The Converse body: system text apart, tool results as user turns, consecutive turns
/// of one role joined (Converse requires alternation).
pub fn request_body(request: &CompletionRequest, sampling: Sampling) -> Value {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &request.messages {
        let (role, blocks) = match m.role {
            Role::System => {
                if !m.content.trim().is_empty() {
                    system.push(json!({"text": m.content}));
                }
                continue;
            }
            Role::User => (
                "user",
                vec![json!({"text": non_blank(&m.content, EMPTY_TEXT)})],
            ),
            Role::Tool => (
                "user",
                vec![json!({"toolResult": {
                    "toolUseId": m.tool_call_id.clone().unwrap_or_default(),
                    "content": [{"text": non_blank(&m.content, EMPTY_OUTPUT)}],
                }})],
            ),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.trim().is_empty() {
                    blocks.push(json!({"text": m.content}));
                }
                for c in &m.tool_calls {
                    let input =
                        serde_json::from_str::<Value>(&c.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(
                        json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": input}}),
                    );
                }
                if blocks.is_empty() {
                    blocks.push(json!({"text": EMPTY_TEXT}));
                }
                ("assistant", blocks)
            }
        };
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = json!({"messages": messages});
    if !system.is_empty() {
        body["system"] = json!(system);
    }
    let mut inference = serde_json::Map::new();
    if let Some(n) = sampling.max_output_tokens {
        inference.insert("maxTokens".into(), json!(n));
    }
    if let Some(t) = sampling.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if !request.options.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(request.options.stop));
    }
    if !inference.is_empty() {
        body["inferenceConfig"] = Value::Object(inference);
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({"toolSpec": {
                    "name": t.name,
                    "description": t.description,
                    "inputSchema": {"json": serde_json::from_str::<Value>(&t.parameters_schema)
                        .unwrap_or_else(|_| json!({"type": "object"}))},
                }})
            })
            .collect();
        body["toolConfig"] = json!({"tools": tools});
    }
    body
}

fn non_blank<'a>(text: &'a str, stand_in: &'a str) -> &'a str {
    if text.trim().is_empty() {
        stand_in
    } else {
        text
    }
}

/// The reply: text blocks joined, `toolUse` blocks as tool calls, usage with cache tokens
/// (Converse's `inputTokens` excludes the cached ones).
pub fn parse_reply(v: &Value) -> Result<Reply, LlmError> {
    let blocks = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("no output.message.content array"))?;
    let mut text = Vec::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push(t);
        }
        if let Some(call) = block.get("toolUse") {
            tool_calls.push(ToolCall {
                id: call
                    .get("toolUseId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: call
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| malformed("a toolUse block without a name"))?
                    .to_string(),
                arguments: call
                    .get("input")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
            });
        }
    }
    let stop = v.get("stopReason").and_then(Value::as_str).unwrap_or("");
    if text.is_empty()
        && tool_calls.is_empty()
        && matches!(stop, "guardrail_intervened" | "content_filtered")
    {
        return Err(LlmError::Provider(format!("the reply was blocked: {stop}")));
    }
    let number = |key: &str| {
        v.pointer(&format!("/usage/{key}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Reply {
        content: text.join(""),
        tool_calls,
        finish_reason: (!stop.is_empty()).then(|| stop.to_string()),
        usage: TokenUsage {
            input_tokens: number("inputTokens"),
            output_tokens: number("outputTokens"),
            cache_read_tokens: number("cacheReadInputTokens"),
            cache_write_tokens: number("cacheWriteInputTokens"),
        },
    })
}
