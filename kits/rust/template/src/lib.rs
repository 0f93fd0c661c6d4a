//! __NAME__: a cbench agent plugin in Rust.
//!
//! Build:  ./build.sh            (writes __NAME__.wasm)
//! Run:    cbench run --agent __NAME__.wasm -m oracle
//! Check:  cbench plugin inspect __NAME__.wasm
//!
//! Report failures by returning `Err(..)` from `run`; a panic traps and ends the agent with
//! status Error (what it printed is kept in the agent's plugin_output.log).

wit_bindgen::generate!({
    path: "wit",
    world: "agent-plugin",
});

use cooperbench::agent::llm::{self, CompletionRequest, LlmError, RequestOptions};
use cooperbench::agent::messaging;
use cooperbench::agent::sandbox::{self, ExecRequest};
use cooperbench::agent::types::{
    AgentInfo, Capability, ChatMessage, ExitStatus, Outcome, Role, Task, ToolDefinition,
};
use exports::cooperbench::agent::agent::Guest;

const SUBMIT_SENTINEL: &str = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";

fn message(role: Role, content: String, tool_call_id: Option<String>) -> ChatMessage {
    ChatMessage {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id,
    }
}

fn bash_tool() -> ToolDefinition {
    ToolDefinition {
        name: "bash".into(),
        description: "Run one bash command in a fresh shell at the repository root.".into(),
        parameters_schema: r#"{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}"#.into(),
    }
}

struct Plugin;

impl Guest for Plugin {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "__NAME__".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // Messaging to talk to teammates; add Capability::Git for the shared `team` remote.
            capabilities: vec![Capability::Messaging],
        }
    }

    fn run(task: Task) -> Result<Outcome, String> {
        let system = format!(
            "You are a software engineer working in a git repository. Call the `bash` tool with \
             one command per reply. When the work is done, run `echo {SUBMIT_SENTINEL}`."
        );
        let mut messages = vec![
            message(Role::System, system, None),
            message(Role::User, task.feature_text.clone(), None),
        ];
        for step in 1..=task.limits.max_steps {
            for m in messaging::receive() {
                let text = format!("[Message from {}]: {}", m.sender, m.content);
                messages.push(message(Role::User, text, None));
            }
            let request = CompletionRequest {
                messages: messages.clone(),
                tools: vec![bash_tool()],
                options: RequestOptions {
                    max_output_tokens: None,
                    temperature: None,
                    stop: Vec::new(),
                },
            };
            let reply = match llm::complete(&request) {
                Ok(reply) => reply,
                Err(LlmError::LimitExceeded(why)) => {
                    return Ok(Outcome {
                        status: ExitStatus::LimitsExceeded,
                        steps: step,
                        summary: why,
                    })
                }
                Err(e) => return Err(format!("LLM call failed: {e:?}")),
            };
            messages.push(ChatMessage {
                role: Role::Assistant,
                content: reply.content.clone(),
                tool_calls: reply.tool_calls.clone(),
                tool_call_id: None,
            });
            if reply.tool_calls.is_empty() {
                let nudge = "Call the bash tool with one command.".to_string();
                messages.push(message(Role::User, nudge, None));
                continue;
            }
            for call in &reply.tool_calls {
                let command = serde_json::from_str::<serde_json::Value>(&call.arguments)
                    .ok()
                    .and_then(|v| v.get("command")?.as_str().map(str::to_string))
                    .unwrap_or_default();
                let request = ExecRequest {
                    command,
                    timeout_ms: 0,
                    workdir: None,
                    env: Vec::new(),
                };
                let out = sandbox::exec(&request).map_err(|e| format!("sandbox failed: {e:?}"))?;
                if out.exit_code == 0 && out.output.trim().starts_with(SUBMIT_SENTINEL) {
                    return Ok(Outcome {
                        status: ExitStatus::Submitted,
                        steps: step,
                        summary: "submitted".into(),
                    });
                }
                let text = format!("exit code {}\n{}", out.exit_code, out.output);
                messages.push(message(Role::Tool, text, Some(call.id.clone())));
            }
        }
        Ok(Outcome {
            status: ExitStatus::StepLimitReached,
            steps: task.limits.max_steps,
            summary: "out of steps".into(),
        })
    }
}

export!(Plugin);
