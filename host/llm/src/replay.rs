//! `replay:<run dir>`: serves a previous run's recorded responses, call by call, to
//! the same agents of the same pairs. Deterministic and offline. When the plugin's
//! request differs from the recorded one (another plugin version, another sandbox
//! output), the reply is still the recorded one, and the divergence is reported on
//! the terminal and in the trajectory (as the call's `error`-free `divergence`).

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{AgentBrief, Completion, CompletionRequest, LlmError, LlmSession, Model, ModelError};
use crate::trajectory::{LlmCall, Trajectory};

/// The replay model.
pub struct Replay {
    id: String,
    run_dir: PathBuf,
}

impl Replay {
    /// Checks `run_dir` is a run directory.
    pub fn open(id: &str, run_dir: &Path) -> Result<Replay, ModelError> {
        if !run_dir.join("config.json").is_file() {
            return Err(ModelError::BadReplay {
                path: run_dir.to_path_buf(),
                reason: "not a run directory (no config.json)".into(),
            });
        }
        Ok(Replay {
            id: id.to_string(),
            run_dir: run_dir.to_path_buf(),
        })
    }
}

impl Model for Replay {
    fn id(&self) -> &str {
        &self.id
    }

    /// A replay costs nothing here, but what the replayed calls cost is not this run's to
    /// claim: its cost is unknown, never $0.
    fn priced(&self) -> bool {
        false
    }

    fn session(&self, brief: &AgentBrief) -> Box<dyn LlmSession> {
        let path = pair_dir_in(&self.run_dir, &brief.pair_key)
            .join(&brief.agent_id)
            .join("trajectory.json");
        let calls = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| {
                serde_json::from_str::<Trajectory>(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .map(|t| t.llm_calls);
        Box::new(ReplaySession {
            path,
            calls,
            next: 0,
            transcript: 0,
        })
    }
}

/// The recorded pair's directory, also in a run written with the earlier `<repo>/<id>/` layout.
fn pair_dir_in(run_dir: &Path, pair_key: &str) -> PathBuf {
    let parts: Vec<&str> = pair_key.split('/').collect();
    if let [repo, task, features] = parts[..] {
        if let Some(id) = task.strip_prefix("task").and_then(|t| t.parse().ok()) {
            return crate::layout::find_pair_dir(run_dir, repo, id, features);
        }
    }
    run_dir.join(pair_key)
}

struct ReplaySession {
    path: PathBuf,
    calls: Result<Vec<LlmCall>, String>,
    next: usize,
    /// Messages the recorded run had sent by the previous call.
    transcript: usize,
}

#[async_trait]
impl LlmSession for ReplaySession {
    async fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        let calls = self
            .calls
            .as_ref()
            .map_err(|e| LlmError::Provider(format!("replay: cannot read {e}")))?;
        // Calls that never reached the model (limits, errors) are not replies.
        while calls.get(self.next).is_some_and(|c| c.response.is_none()) {
            self.next += 1;
        }
        let Some(call) = calls.get(self.next) else {
            return Err(LlmError::Provider(format!(
                "replay diverged: the plugin asked for call {} but {} recorded only {} replies",
                self.next + 1,
                self.path.display(),
                calls.iter().filter(|c| c.response.is_some()).count()
            )));
        };
        self.next += 1;
        let new_from = self.transcript.min(request.messages.len());
        let tools: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
        let divergence = if request.messages.len() != call.request_total_messages
            || request.messages[new_from..] != call.request_new_messages[..]
            || tools != call.tools.iter().map(String::as_str).collect::<Vec<_>>()
        {
            Some(format!(
                "replay diverged at call {}: the request differs from the recorded one ({} messages now, {} then)",
                call.index + 1,
                request.messages.len(),
                call.request_total_messages
            ))
        } else {
            None
        };
        self.transcript = call.request_total_messages + 1;
        if let Some(why) = divergence {
            // Reported, not hidden: the call fails and the agent ends with this error.
            eprintln!("warning: {}: {why}", self.path.display());
            return Err(LlmError::Provider(why));
        }
        let response = call.response.clone().unwrap_or_default();
        Ok(Completion {
            content: response.content,
            tool_calls: response.tool_calls,
            usage: call.usage,
            cost_usd: Some(0.0),
            retries: Vec::new(),
            finish_reason: response.finish_reason,
            truncated: response.truncated,
        })
    }
}
