//! Harbor's Agent Trajectory Interchange Format, ATIF-v1.4 (the version Harbor's viewer and
//! validator read): one file per agent at `<out>/<repo>/task<id>/features_…/<agent>/trajectory.json`.
//!
//! Mapping: the first LLM call's system and user messages become `system` / `user` steps; every
//! LLM call becomes one `agent` step (the model's reply, its tool calls, token metrics and cost),
//! observed by the tool results the next call sent back (`source_call_id` = the call's id) and
//! any other new messages (teammates' messages, format errors). What the agent did after its last
//! LLM call (recorded actions) is the last step's observation. cbench's own fields (status,
//! plugin, pair, features) go under `extra`.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::fsutil::{read_json, write_json_atomic, FsError};
use crate::llm::{ChatMessage, Role};
use crate::trajectory::{LlmCall, Trajectory};

/// The ATIF version written.
pub const SCHEMA_VERSION: &str = "ATIF-v1.4";

/// Why an export failed, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("run `{name}` not found: {path} has no config.json")]
    UnknownRun { name: String, path: PathBuf },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("cannot read the pairs of {path}: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes every agent's trajectory of the run in `run_dir` as ATIF under `out_dir`;
/// returns how many files were written.
pub fn export(name: &str, run_dir: &Path, out_dir: &Path) -> Result<usize, ExportError> {
    let config_path = run_dir.join("config.json");
    if !config_path.is_file() {
        return Err(ExportError::UnknownRun {
            name: name.to_string(),
            path: run_dir.to_path_buf(),
        });
    }
    let config: Value = read_json(&config_path)?;
    let walk = |source| ExportError::Walk {
        path: run_dir.to_path_buf(),
        source,
    };
    let mut written = 0;
    for pair in crate::layout::pair_dirs(run_dir).map_err(walk)? {
        for entry in std::fs::read_dir(&pair.path).map_err(walk)? {
            let agent_dir = entry.map_err(walk)?.path();
            let path = agent_dir.join("trajectory.json");
            if !path.is_file() {
                continue;
            }
            let trajectory: Trajectory = read_json(&path)?;
            let session = format!("{name}/{}/{}", pair.key(), trajectory.agent_id);
            let atif = to_atif(&trajectory, &session, &config);
            let target = out_dir
                .join(&pair.repo)
                .join(crate::layout::task_dir_name(pair.task))
                .join(&pair.features)
                .join(&trajectory.agent_id)
                .join("trajectory.json");
            write_json_atomic(&target, &atif)?;
            written += 1;
        }
    }
    Ok(written)
}

fn tool_calls(calls: &[crate::llm::ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                // ATIF wants an object; a model's malformed arguments are kept as text.
                let arguments = match serde_json::from_str::<Value>(&c.arguments) {
                    Ok(Value::Object(o)) => Value::Object(o),
                    _ => json!({ "raw": c.arguments }),
                };
                json!({
                    "tool_call_id": c.id,
                    "function_name": c.name,
                    "arguments": arguments,
                })
            })
            .collect(),
    )
}

/// The results a call's reply got: what the next request added (tool results and messages).
fn observation_from(messages: &[ChatMessage]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m.role != Role::Assistant && m.role != Role::System)
        .map(|m| {
            let mut result = Map::new();
            if let Some(id) = &m.tool_call_id {
                result.insert("source_call_id".into(), json!(id));
            }
            result.insert("content".into(), json!(m.content));
            Value::Object(result)
        })
        .collect()
}

fn metrics(call: &LlmCall) -> Value {
    let u = &call.usage;
    let mut m = json!({
        // ATIF counts every input token in prompt_tokens, cache hits included.
        "prompt_tokens": u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
        "completion_tokens": u.output_tokens,
        "cached_tokens": u.cache_read_tokens,
    });
    if let Some(cost) = call.cost_usd {
        m["cost_usd"] = json!(cost);
    }
    if u.cache_write_tokens > 0 {
        m["extra"] = json!({ "cache_creation_input_tokens": u.cache_write_tokens });
    }
    m
}

/// One cbench trajectory as an ATIF document.
pub fn to_atif(t: &Trajectory, session_id: &str, config: &Value) -> Value {
    let mut steps: Vec<Value> = Vec::new();
    let mut push = |mut step: Value| {
        step["step_id"] = json!(steps.len() + 1);
        steps.push(step);
    };
    if let Some(first) = t.llm_calls.first() {
        for m in &first.request_new_messages {
            let source = match m.role {
                Role::System => "system",
                Role::User => "user",
                _ => continue,
            };
            push(json!({ "timestamp": first.timestamp, "source": source, "message": m.content }));
        }
    }
    let last_call_time = t.llm_calls.last().map(|c| c.timestamp.clone());
    for (k, call) in t.llm_calls.iter().enumerate() {
        let mut step = json!({
            "timestamp": call.timestamp,
            "source": "agent",
            "model_name": t.model,
            "message": call.response.as_ref().map(|r| r.content.clone()).unwrap_or_default(),
            "metrics": metrics(call),
        });
        if let Some(r) = &call.response {
            if !r.tool_calls.is_empty() {
                step["tool_calls"] = tool_calls(&r.tool_calls);
            }
        }
        let results = match t.llm_calls.get(k + 1) {
            Some(next) => observation_from(&next.request_new_messages),
            // After the last call: the actions the agent recorded from then on.
            None => t
                .steps
                .iter()
                .filter(|s| last_call_time.as_ref().is_some_and(|at| &s.timestamp >= at))
                .map(|s| json!({ "content": format!("{}: {}", s.action, s.observation) }))
                .collect(),
        };
        if !results.is_empty() {
            step["observation"] = json!({ "results": results });
        }
        let mut extra = Map::new();
        if let Some(e) = &call.error {
            extra.insert("error".into(), json!(e));
        }
        // Why the model stopped; a reply cut at the token cap is marked as such.
        if let Some(r) = &call.response {
            if let Some(reason) = &r.finish_reason {
                extra.insert("finish_reason".into(), json!(reason));
            }
            if r.truncated {
                extra.insert("truncated".into(), json!(true));
            }
        }
        if !extra.is_empty() {
            step["extra"] = Value::Object(extra);
        }
        push(step);
    }
    if t.llm_calls.is_empty() {
        // A plugin that acted without the model (scripted): its recorded actions, one step each.
        for (k, s) in t.steps.iter().enumerate() {
            let id = format!("step-{}", k + 1);
            push(json!({
                "timestamp": s.timestamp,
                "source": "agent",
                "message": "",
                "tool_calls": [{ "tool_call_id": id, "function_name": s.action, "arguments":
                    if s.args.is_object() { s.args.clone() } else { json!({ "value": s.args }) } }],
                "observation": { "results": [{ "source_call_id": id, "content": s.observation }] },
            }));
        }
    }
    let total_steps = steps.len();
    let agent = config.get("agent").cloned().unwrap_or(Value::Null);
    json!({
        "schema_version": SCHEMA_VERSION,
        "session_id": session_id,
        "agent": {
            "name": agent.get("name").cloned().unwrap_or(json!("cbench-agent")),
            "version": agent.get("version").cloned().unwrap_or(json!("unknown")),
            "model_name": t.model,
            "extra": { "plugin_sha256": agent.get("sha256"), "wit_version": agent.get("wit_version") },
        },
        "steps": steps,
        "notes": "Exported by cbench from trajectory.json; one agent of a cooperative pair.",
        "final_metrics": {
            "total_prompt_tokens": t.token_usage.prompt_tokens,
            "total_completion_tokens": t.token_usage.completion_tokens,
            "total_cached_tokens": t.token_usage.cache_read_tokens,
            "total_cost_usd": t.cost_usd,
            "total_steps": total_steps,
        },
        "extra": {
            "cbench_agent_id": t.agent_id,
            "feature_ids": t.feature_ids,
            "status": t.status,
            "error": t.error,
            "summary": t.summary,
            "start_time": t.start_time,
            "end_time": t.end_time,
            "setting": config.get("setting"),
            "run": config.get("name"),
        },
    })
}
