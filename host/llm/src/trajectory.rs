//! trajectory.json: what an agent did, in CooperBench's shape plus our extras
//! (LLM calls with usage and cost, status).

pub use cbench_core::clock::now_rfc3339;
use serde::{Deserialize, Serialize};

use crate::{ChatMessage, Completion, CompletionRequest, TokenUsage, ToolCall};

/// One recorded action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub action: String,
    pub args: serde_json::Value,
    pub observation: String,
    pub timestamp: String,
    /// Time the host spent carrying the action out (the sandbox command included), ms; absent
    /// for actions that do not wait on anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// LLM calls made before this action (it follows the reply of call `after_call - 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_call: Option<u32>,
}

/// Token totals in CooperBench's names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenTotals {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

/// The model's answer as recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordedResponse {
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped, in the provider's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Cut at the output-token cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One LLM call. The request is stored as the messages added since the previous
/// call (the transcript only grows), which keeps trajectories linear in size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlmCall {
    pub index: u32,
    pub timestamp: String,
    pub duration_ms: u64,
    pub request_total_messages: usize,
    pub request_new_messages: Vec<ChatMessage>,
    pub tools: Vec<String>,
    pub response: Option<RecordedResponse>,
    pub usage: TokenUsage,
    pub cost_usd: Option<f64>,
    pub error: Option<String>,
    /// Attempts the host retried (429, 5xx, timeouts) before this call's outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<crate::providers::transport::RetryNote>,
    /// Where the time went between the previous call's reply and this request (absent on the
    /// first call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepTime>,
}

/// One agent step's time outside the model, split: from the previous model reply reaching the
/// plugin to its next request reaching the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTime {
    /// The whole interval (wall), ms.
    pub total_ms: f64,
    /// Sandbox commands and file transfers the agent waited for (wall), ms.
    pub commands_ms: f64,
    /// The plugin's own compute (CPU time of its thread), ms.
    pub plugin_ms: f64,
    /// The rest: the host's work for the plugin (imports, recording, messages) and any wait for
    /// a core, ms.
    pub host_ms: f64,
}

/// The whole trajectory file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Trajectory {
    pub agent_id: String,
    /// The agent's feature (coop); the first feature in solo.
    pub feature_id: Option<u32>,
    pub feature_ids: Vec<u32>,
    pub model: String,
    pub start_time: String,
    pub end_time: String,
    pub steps: Vec<Step>,
    pub token_usage: TokenTotals,
    /// None when any call's price was unknown.
    pub cost_usd: Option<f64>,
    pub llm_calls: Vec<LlmCall>,
    pub status: String,
    pub error: Option<String>,
    pub summary: Option<String>,
}

/// Builds a trajectory while the agent runs.
#[derive(Debug, Default)]
pub struct Recorder {
    pub trajectory: Trajectory,
    messages_seen: usize,
    usage: TokenUsage,
    cost_known: bool,
    cost: f64,
    /// When the last model reply went back to the plugin, and the plugin's compute by then.
    last_reply: Option<(std::time::Instant, std::time::Duration)>,
}

impl Recorder {
    /// Starts a trajectory for `agent_id`.
    pub fn new(agent_id: &str, feature_ids: &[u32], model: &str) -> Recorder {
        Recorder {
            trajectory: Trajectory {
                agent_id: agent_id.to_string(),
                feature_id: feature_ids.first().copied(),
                feature_ids: feature_ids.to_vec(),
                model: model.to_string(),
                start_time: now_rfc3339(),
                cost_usd: Some(0.0),
                ..Trajectory::default()
            },
            cost_known: true,
            ..Recorder::default()
        }
    }

    /// Marks the cost unknown from the start (the model has no price).
    pub fn unpriced(mut self) -> Recorder {
        self.cost_known = false;
        self.trajectory.cost_usd = None;
        self
    }

    /// Records an action and its observation.
    pub fn step(&mut self, action: &str, args: serde_json::Value, observation: String) {
        self.trajectory.steps.push(Step {
            action: action.to_string(),
            args,
            observation,
            timestamp: now_rfc3339(),
            duration_ms: None,
            after_call: Some(self.trajectory.llm_calls.len() as u32),
        });
    }

    /// Records an action that took `took` (a command, a file transfer).
    pub fn timed_step(
        &mut self,
        action: &str,
        args: serde_json::Value,
        observation: String,
        took: std::time::Duration,
    ) {
        self.step(action, args, observation);
        if let Some(last) = self.trajectory.steps.last_mut() {
            // 0.01 ms resolution: enough to tell a 2 ms command from a 20 ms one.
            last.duration_ms = Some((took.as_secs_f64() * 1e5).round() / 100.0);
        }
    }

    /// Records an LLM call made at `started` (when the plugin had used `plugin_compute`) and
    /// its accounting, with the step that led to it.
    pub fn llm_call(
        &mut self,
        request: &CompletionRequest,
        result: &Result<Completion, crate::LlmError>,
        started: std::time::Instant,
        plugin_compute: std::time::Duration,
    ) {
        let duration = started.elapsed();
        let step = self.last_reply.map(|(reply, compute_then)| {
            let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
            let total_ms = ms(started.saturating_duration_since(reply));
            let index = self.trajectory.llm_calls.len() as u32;
            let commands_ms: f64 = self
                .trajectory
                .steps
                .iter()
                .rev()
                .take_while(|s| s.after_call == Some(index))
                .filter_map(|s| s.duration_ms)
                .sum();
            let plugin_ms = ms(plugin_compute.saturating_sub(compute_then));
            StepTime {
                total_ms,
                commands_ms: (commands_ms * 100.0).round() / 100.0,
                plugin_ms,
                host_ms: ((total_ms - commands_ms - plugin_ms).max(0.0) * 100.0).round() / 100.0,
            }
        });
        let new_from = self.messages_seen.min(request.messages.len());
        let mut call = LlmCall {
            index: self.trajectory.llm_calls.len() as u32,
            timestamp: now_rfc3339(),
            duration_ms: duration.as_millis() as u64,
            request_total_messages: request.messages.len(),
            request_new_messages: request.messages[new_from..].to_vec(),
            tools: request.tools.iter().map(|t| t.name.clone()).collect(),
            response: None,
            usage: TokenUsage::default(),
            cost_usd: None,
            error: None,
            retries: Vec::new(),
            step,
        };
        match result {
            Ok(c) => {
                call.retries = c.retries.clone();
                call.response = Some(RecordedResponse {
                    content: c.content.clone(),
                    tool_calls: c.tool_calls.clone(),
                    finish_reason: c.finish_reason.clone(),
                    truncated: c.truncated,
                });
                call.usage = c.usage;
                call.cost_usd = c.cost_usd;
                self.usage.add(&c.usage);
                match c.cost_usd {
                    Some(cost) => self.cost += cost,
                    None => self.cost_known = false,
                }
                // The reply becomes part of the next request's transcript.
                self.messages_seen = request.messages.len() + 1;
            }
            Err(e) => {
                call.error = Some(e.to_string());
                self.messages_seen = request.messages.len();
            }
        }
        self.trajectory.llm_calls.push(call);
        self.last_reply = Some((std::time::Instant::now(), plugin_compute));
    }

    /// Adds the attempts retried before the last call failed for good to that call.
    pub fn failed_call_retries(&mut self, retries: Vec<crate::providers::transport::RetryNote>) {
        if let Some(last) = self.trajectory.llm_calls.last_mut() {
            if last.error.is_some() {
                last.retries.extend(retries);
            }
        }
    }

    /// Number of LLM calls so far.
    pub fn llm_calls(&self) -> usize {
        self.trajectory.llm_calls.len()
    }

    /// Totals so far.
    pub fn usage(&self) -> TokenUsage {
        self.usage
    }

    /// Cost of the calls whose price is known.
    pub fn known_cost(&self) -> f64 {
        self.cost
    }

    /// Closes the trajectory with the agent's final status.
    pub fn finish(
        mut self,
        status: &str,
        error: Option<String>,
        summary: Option<String>,
    ) -> Trajectory {
        let t = &mut self.trajectory;
        t.end_time = now_rfc3339();
        t.status = status.to_string();
        t.error = error;
        t.summary = summary;
        // CooperBench's fields: prompt tokens include cached ones (as providers report
        // them); the cache split is kept beside.
        let u = &self.usage;
        let prompt = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens;
        t.token_usage = TokenTotals {
            prompt_tokens: prompt,
            completion_tokens: u.output_tokens,
            total_tokens: prompt + u.output_tokens,
            cache_read_tokens: self.usage.cache_read_tokens,
            cache_write_tokens: self.usage.cache_write_tokens,
        };
        t.cost_usd = self.cost_known.then_some(self.cost);
        self.trajectory
    }
}
