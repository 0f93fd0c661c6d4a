//! mini_swe: a mini-swe-agent style loop as a cbench plugin.
//!
//! Bash is the only action. Each command runs in a fresh shell in the repo.
//! The agent submits by running a command whose first output line is the
//! submit sentinel. Coop agents talk with `send_message <id> <<'MSG' … MSG`
//! inside a command; the plugin lifts those out and sends them via the host. In the team
//! setting, CooperBench's `coop-task-*` / `coop-request` verbs are lifted out the same way.

mod action;
mod prompts;
mod team;

wit_bindgen::generate!({
    path: "../../wit",
    world: "agent-plugin",
});

use cooperbench::agent::llm::{self, CompletionRequest, LlmError, RequestOptions};
use cooperbench::agent::messaging;
use cooperbench::agent::sandbox;
use cooperbench::agent::sandbox::ExecRequest;
use cooperbench::agent::trajectory;
use cooperbench::agent::types::{
    AgentInfo, Capability, ChatMessage, ExitStatus, Outcome, Role, Task, TeamInfo, ToolCall,
    ToolDefinition,
};
use exports::cooperbench::agent::agent::Guest;

use action::{parse_action, split_messages, Action, ActionSource};

/// First output line that ends the run.
pub const SUBMIT_SENTINEL: &str = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";
/// Observations longer than this many characters are cut.
const OUTPUT_LIMIT_CHARS: usize = 10_000;
/// Characters kept from each end of a cut observation.
const OUTPUT_KEEP_CHARS: usize = 5_000;

/// Plugin configuration, read from the `--agent-config` JSON text.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Step limit; defaults to the host's `limits.max-steps`.
    step_limit: Option<u32>,
    /// Offer the bash tool to the model (default true). Text ```bash blocks always work.
    use_tools: Option<bool>,
    /// Per-command timeout in milliseconds; 0 = host default.
    command_timeout_ms: Option<u32>,
    /// Sampling temperature asked of the model (the run's `--temperature` wins).
    temperature: Option<f32>,
    /// Output cap per reply (the run's `--max-output-tokens` wins when smaller).
    max_output_tokens: Option<u32>,
    /// Stop sequences (at most 4).
    stop: Option<Vec<String>>,
}

struct MiniSwe;

impl Guest for MiniSwe {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "mini_swe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec![Capability::Messaging, Capability::Git, Capability::Team],
        }
    }

    fn run(task: Task) -> Result<Outcome, String> {
        let config: Config = if task.agent_config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(&task.agent_config)
                .map_err(|e| format!("mini_swe: invalid agent config: {e}"))?
        };
        Agent::new(task, config).run()
    }
}

export!(MiniSwe);

struct Agent {
    step_limit: u32,
    options: RequestOptions,
    tools: Vec<ToolDefinition>,
    command_timeout_ms: u32,
    messages: Vec<ChatMessage>,
    agent_id: String,
    team: Option<TeamInfo>,
    /// The task-list summary last shown to the model (auto-refresh shows it again only when
    /// it changed, so an idle list does not fill the context).
    last_summary: Option<String>,
}

fn message(role: Role, content: String) -> ChatMessage {
    ChatMessage {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}

impl Agent {
    fn new(task: Task, config: Config) -> Self {
        let tools = if config.use_tools.unwrap_or(true) {
            vec![prompts::bash_tool()]
        } else {
            Vec::new()
        };
        let messages = vec![
            message(Role::System, prompts::system_prompt(&task)),
            message(Role::User, prompts::task_prompt(&task)),
        ];
        Agent {
            step_limit: config.step_limit.unwrap_or(task.limits.max_steps),
            options: RequestOptions {
                max_output_tokens: config.max_output_tokens,
                temperature: config.temperature,
                stop: config.stop.clone().unwrap_or_default(),
            },
            command_timeout_ms: config.command_timeout_ms.unwrap_or(0),
            tools,
            messages,
            agent_id: task.agent_id.clone(),
            team: task.team.clone(),
            last_summary: None,
        }
    }

    fn run(mut self) -> Result<Outcome, String> {
        let mut steps = 0;
        while steps < self.step_limit {
            self.deliver_incoming_messages();
            self.refresh_task_list();
            steps += 1;
            let request = CompletionRequest {
                messages: self.messages.clone(),
                tools: self.tools.clone(),
                options: self.options.clone(),
            };
            let completion = match llm::complete(&request) {
                Ok(c) => c,
                Err(LlmError::LimitExceeded(why)) => {
                    return Ok(Outcome {
                        status: ExitStatus::LimitsExceeded,
                        steps,
                        summary: format!("stopped by the host: {why}"),
                    })
                }
                Err(LlmError::Provider(why)) => return Err(format!("LLM provider failed: {why}")),
                Err(LlmError::InvalidRequest(why)) => {
                    return Err(format!("LLM request rejected: {why}"))
                }
            };
            self.messages.push(ChatMessage {
                role: Role::Assistant,
                content: completion.content.clone(),
                tool_calls: completion.tool_calls.clone(),
                tool_call_id: None,
            });
            let action = match parse_action(&completion.content, &completion.tool_calls) {
                Ok(action) => action,
                Err(problem) if completion.truncated => {
                    // Cut at the output-token cap: not a format mistake, so say what happened.
                    trajectory::event("truncated-reply", &problem);
                    self.reply_format_error(&completion.tool_calls, &prompts::cut_reply(&problem));
                    continue;
                }
                Err(problem) => {
                    trajectory::event("format-error", &problem);
                    self.reply_format_error(
                        &completion.tool_calls,
                        &prompts::format_error(&problem),
                    );
                    continue;
                }
            };
            if let Some(summary) = self.execute(&action)? {
                return Ok(Outcome {
                    status: ExitStatus::Submitted,
                    steps,
                    summary,
                });
            }
        }
        Ok(Outcome {
            status: ExitStatus::StepLimitReached,
            steps,
            summary: format!("step limit of {} reached", self.step_limit),
        })
    }

    /// Teammates' messages become user turns before each LLM call.
    fn deliver_incoming_messages(&mut self) {
        for m in messaging::receive() {
            self.messages.push(message(
                Role::User,
                format!("[Message from {}]: {}", m.sender, m.content),
            ));
        }
    }

    /// Auto-refresh (team setting): the task list's summary before a model call when it
    /// changed since the model last saw it.
    fn refresh_task_list(&mut self) {
        let Some(info) = &self.team else {
            return;
        };
        if !info.auto_refresh || !info.task_list {
            return;
        }
        let Ok(tasks) = cooperbench::agent::team::tasks() else {
            return;
        };
        let text = team::summary(&tasks, &self.agent_id);
        if self.last_summary.as_deref() != Some(text.as_str()) {
            self.messages.push(message(Role::User, text.clone()));
            self.last_summary = Some(text);
        }
    }

    /// Every tool call must be answered, so a format error goes to each of them.
    fn reply_format_error(&mut self, tool_calls: &[ToolCall], text: &str) {
        let text = text.to_string();
        if tool_calls.is_empty() {
            self.messages.push(message(Role::User, text));
        } else {
            for call in tool_calls {
                self.messages.push(ChatMessage {
                    role: Role::Tool,
                    content: text.clone(),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(call.id.clone()),
                });
            }
        }
    }

    /// Runs one action. Returns the submission summary when the agent submitted.
    fn execute(&mut self, action: &Action) -> Result<Option<String>, String> {
        let (outgoing, command) = split_messages(&action.command);
        let (verbs, command) = if self.team.is_some() {
            team::split_verbs(&command)
        } else {
            (Vec::new(), command)
        };
        let mut notes = Vec::new();
        for m in &outgoing {
            match messaging::send(&m.to, &m.body) {
                Ok(()) => notes.push(format!("Message sent to {}.", m.to)),
                Err(e) => notes.push(format!("Message to {} NOT sent: {}", m.to, describe(&e))),
            }
        }
        for verb in &verbs {
            notes.push(team::run(verb, &self.agent_id));
        }
        let mut observation = notes.join("\n");
        if !command.trim().is_empty() {
            // The team's shared directory, by name in every command (its path differs by backend).
            let env = self
                .team
                .as_ref()
                .and_then(|t| t.scratchpad.clone())
                .map(|dir| vec![("CBENCH_SCRATCHPAD".to_string(), dir)])
                .unwrap_or_default();
            let request = ExecRequest {
                command: command.clone(),
                timeout_ms: self.command_timeout_ms,
                workdir: None,
                env,
            };
            let output = match sandbox::exec(&request) {
                Ok(o) => o,
                Err(e) => return Err(format!("sandbox failed: {}", describe_sandbox(&e))),
            };
            if output.exit_code == 0 && first_line_is_sentinel(&output.output) {
                return Ok(Some(format!("submitted after running: {}", command.trim())));
            }
            if !observation.is_empty() {
                observation.push('\n');
            }
            observation.push_str(&prompts::observation(
                output.exit_code,
                output.timed_out,
                &truncate_middle(&output.output),
            ));
            if self.team.is_some() {
                if let Some(hint) = team::hint_for(output.exit_code, &output.output) {
                    observation.push('\n');
                    observation.push_str(hint);
                }
            }
        }
        if observation.is_empty() {
            observation = "(nothing to run)".into();
        }
        self.push_observation(action, observation);
        Ok(None)
    }

    fn push_observation(&mut self, action: &Action, observation: String) {
        match &action.source {
            ActionSource::ToolCall { id } => self.messages.push(ChatMessage {
                role: Role::Tool,
                content: observation,
                tool_calls: Vec::new(),
                tool_call_id: Some(id.clone()),
            }),
            ActionSource::TextBlock => self.messages.push(message(Role::User, observation)),
        }
    }
}

fn first_line_is_sentinel(output: &str) -> bool {
    output.trim_start().lines().next().map(str::trim) == Some(SUBMIT_SENTINEL)
}

/// Keeps the first and last 5,000 characters of long output and says how many were cut.
fn truncate_middle(output: &str) -> String {
    let total = output.chars().count();
    if total <= OUTPUT_LIMIT_CHARS {
        return output.to_string();
    }
    let head: String = output.chars().take(OUTPUT_KEEP_CHARS).collect();
    let tail: String = output.chars().skip(total - OUTPUT_KEEP_CHARS).collect();
    let elided = total - 2 * OUTPUT_KEEP_CHARS;
    format!("{head}\n<output cut: {elided} characters elided>\n{tail}")
}

fn describe(e: &messaging::MessagingError) -> String {
    match e {
        messaging::MessagingError::UnknownRecipient(who) => format!("no teammate named {who}"),
        messaging::MessagingError::PeerFinished(who) => format!("{who} has already finished"),
        messaging::MessagingError::Disabled => "messaging is disabled in this run".into(),
        messaging::MessagingError::Unavailable(why) => {
            format!("the message bus is unreachable: {why}")
        }
    }
}

fn describe_sandbox(e: &sandbox::SandboxError) -> String {
    match e {
        sandbox::SandboxError::Failed(m) | sandbox::SandboxError::InvalidArgument(m) => m.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_untouched() {
        assert_eq!(truncate_middle("abc"), "abc");
    }

    #[test]
    fn long_output_keeps_both_ends_and_counts_the_cut() {
        let text = "a".repeat(5_000) + &"b".repeat(2_345) + &"c".repeat(5_000);
        let cut = truncate_middle(&text);
        assert!(cut.starts_with(&"a".repeat(5_000)));
        assert!(cut.ends_with(&"c".repeat(5_000)));
        assert!(cut.contains("2345 characters elided"));
        assert!(!cut.contains('b'));
    }

    use crate::cooperbench::agent::types::Setting;

    fn coop_task(git_enabled: bool) -> Task {
        Task {
            agent_id: "agent1".into(),
            teammates: vec!["agent2".into()],
            setting: Setting::Coop,
            feature_text: "Add a thing.".into(),
            limits: cooperbench::agent::types::Limits {
                max_steps: 10,
                command_timeout_ms: 1_000,
            },
            git_enabled,
            messaging_enabled: true,
            agent_config: String::new(),
            team: None,
        }
    }

    #[test]
    fn the_team_remote_is_explained_only_when_enabled() {
        let with = prompts::system_prompt(&coop_task(true));
        assert!(with.contains("git push team HEAD:agent1"), "{with}");
        assert!(with.contains("git diff HEAD team/<teammate-id>"), "{with}");
        assert!(with.contains("Do not merge or cherry-pick"), "{with}");
        let without = prompts::system_prompt(&coop_task(false));
        assert!(!without.contains("team/"), "{without}");
    }

    #[test]
    fn sentinel_must_be_the_first_line() {
        assert!(first_line_is_sentinel(
            "\nCOMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\nrest"
        ));
        assert!(!first_line_is_sentinel(
            "x\nCOMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
        ));
    }
}
