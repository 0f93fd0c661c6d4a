//! The `scripted:<file>` model: replies read from a JSON file, for tests.
//!
//! The file is either a list of replies used by every agent, or an object
//! mapping agent ids (or `*`) to lists. A reply is a string (plain content) or
//! `{"content": "...", "bash": "cmd"}` (`bash` becomes a tool call when tools are
//! offered, a ```bash block otherwise), or `{"content", "tool_calls": [{"name", "arguments"}]}`;
//! either may add `"delay_ms": N` to take N ms to answer, as a model thinks.

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;

use super::{
    bash_reply, builtin_completion, AgentBrief, Completion, CompletionRequest, LlmError,
    LlmSession, Model, ModelError, ToolCall,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Reply {
    Text(String),
    Full(FullReply),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullReply {
    #[serde(default)]
    content: String,
    bash: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ScriptedToolCall>,
    /// How long the reply takes (a model's think time), ms.
    #[serde(default)]
    delay_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct ScriptedToolCall {
    name: String,
    arguments: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScriptFile {
    Shared(Vec<Reply>),
    PerAgent(HashMap<String, Vec<Reply>>),
}

/// A model that plays back a script.
pub struct Scripted {
    id: String,
    path: PathBuf,
    per_agent: HashMap<String, Vec<Reply>>,
}

impl Scripted {
    /// Loads and validates the script file.
    pub fn load(id: &str, path: PathBuf) -> Result<Scripted, ModelError> {
        let bad = |reason: String| ModelError::BadScript {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let file: ScriptFile = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a list of replies or an object of lists: {e}")))?;
        let per_agent = match file {
            ScriptFile::Shared(replies) => HashMap::from([("*".to_string(), replies)]),
            ScriptFile::PerAgent(map) => map,
        };
        Ok(Scripted {
            id: id.to_string(),
            path,
            per_agent,
        })
    }
}

impl Model for Scripted {
    fn id(&self) -> &str {
        &self.id
    }

    /// Scripted replies stand in for a model: their cost is unknown, never $0.
    fn priced(&self) -> bool {
        false
    }

    fn session(&self, brief: &AgentBrief) -> Box<dyn LlmSession> {
        let replies = self
            .per_agent
            .get(&brief.agent_id)
            .or_else(|| self.per_agent.get("*"))
            .cloned()
            .unwrap_or_default();
        Box::new(ScriptedSession {
            agent_id: brief.agent_id.clone(),
            path: self.path.clone(),
            replies,
            next: 0,
        })
    }
}

struct ScriptedSession {
    agent_id: String,
    path: PathBuf,
    replies: Vec<Reply>,
    next: usize,
}

#[async_trait]
impl LlmSession for ScriptedSession {
    async fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        let Some(reply) = self.replies.get(self.next).cloned() else {
            return Err(LlmError::Provider(format!(
                "scripted model {}: no reply left for {} after {} replies",
                self.path.display(),
                self.agent_id,
                self.replies.len()
            )));
        };
        self.next += 1;
        let call_id = format!("scripted-{}-{}", self.agent_id, self.next);
        let (content, tool_calls) = match reply {
            Reply::Text(text) => (text, Vec::new()),
            Reply::Full(full) => {
                if full.delay_ms > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(full.delay_ms)).await;
                }
                match full.bash {
                    Some(command) => bash_reply(request, &full.content, &command, call_id),
                    None => {
                        let calls = full
                            .tool_calls
                            .into_iter()
                            .enumerate()
                            .map(|(i, c)| ToolCall {
                                id: format!("{call_id}-{i}"),
                                name: c.name,
                                arguments: match c.arguments {
                                    serde_json::Value::String(s) => s,
                                    other => other.to_string(),
                                },
                            })
                            .collect();
                        (full.content, calls)
                    }
                }
            }
        };
        Ok(builtin_completion(request, content, tool_calls))
    }
}
