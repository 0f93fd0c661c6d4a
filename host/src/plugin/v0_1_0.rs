//! Bindings for WIT `cooperbench:agent@0.1.0` and the host side of its imports.
//! Every import pauses the compute clock and never panics.

use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

use super::{new_store, AgentStatus, HostState, PluginLimits, PluginOutcome};
use crate::llm;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent-plugin",
    imports: { default: async },
    exports: { default: async },
});

use cooperbench::agent::llm as wit_llm;
use cooperbench::agent::messaging as wit_messaging;
use cooperbench::agent::sandbox as wit_sandbox;
use cooperbench::agent::trajectory as wit_trajectory;
use cooperbench::agent::types as wit;

/// Pre-linked instance factory for this version.
pub type Pre = AgentPluginPre<HostState>;

/// Links WASI and the cbench imports for this version.
pub fn prepare(engine: &Engine, component: &Component) -> wasmtime::Result<Pre> {
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    AgentPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    AgentPluginPre::new(linker.instantiate_pre(component)?)
}

/// Calls `info()` on a throwaway instance with default limits and no capabilities.
pub async fn info(engine: &Engine, pre: &Pre) -> Result<(String, String), String> {
    let mut store = new_store(engine, HostState::new(PluginLimits::default(), None));
    store.data().clock.start();
    let instance = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| super::describe_trap(store.data(), &e))?;
    let info = instance
        .cooperbench_agent_agent()
        .call_info(&mut store)
        .await
        .map_err(|e| super::describe_trap(store.data(), &e))?;
    Ok((info.name, info.version))
}

/// Instantiates and runs the agent. Outer error: trap; inner error: the plugin's own `err`.
pub(crate) async fn run(
    pre: &Pre,
    store: &mut Store<HostState>,
) -> wasmtime::Result<Result<PluginOutcome, String>> {
    let task = {
        let Some(caps) = store.data().agent.as_ref() else {
            return Ok(Err("host error: no agent capabilities".into()));
        };
        to_wit_task(&caps.task)
    };
    let instance = pre.instantiate_async(&mut *store).await?;
    let result = instance
        .cooperbench_agent_agent()
        .call_run(&mut *store, &task)
        .await?;
    Ok(result.map(|o| PluginOutcome {
        status: match o.status {
            wit::ExitStatus::Submitted => AgentStatus::Submitted,
            wit::ExitStatus::StepLimitReached => AgentStatus::StepLimitReached,
            wit::ExitStatus::LimitsExceeded => AgentStatus::LimitsExceeded,
        },
        steps: o.steps,
        summary: o.summary,
    }))
}

fn to_wit_task(t: &super::AgentTask) -> wit::Task {
    wit::Task {
        agent_id: t.agent_id.clone(),
        teammates: t.teammates.clone(),
        setting: match t.setting {
            llm::Setting::Solo => wit::Setting::Solo,
            llm::Setting::Coop => wit::Setting::Coop,
        },
        feature_text: t.feature_text.clone(),
        limits: wit::Limits {
            max_steps: t.max_steps,
            command_timeout_ms: t.command_timeout.as_millis().min(u32::MAX as u128) as u32,
        },
        git_enabled: t.git_enabled,
        messaging_enabled: t.messaging_enabled,
        agent_config: t.agent_config.clone(),
    }
}

fn role_in(r: wit::Role) -> llm::Role {
    match r {
        wit::Role::System => llm::Role::System,
        wit::Role::User => llm::Role::User,
        wit::Role::Assistant => llm::Role::Assistant,
        wit::Role::Tool => llm::Role::Tool,
    }
}

fn tool_call_in(c: wit::ToolCall) -> llm::ToolCall {
    llm::ToolCall {
        id: c.id,
        name: c.name,
        arguments: c.arguments,
    }
}

fn tool_call_out(c: llm::ToolCall) -> wit::ToolCall {
    wit::ToolCall {
        id: c.id,
        name: c.name,
        arguments: c.arguments,
    }
}

fn request_in(r: wit_llm::CompletionRequest) -> llm::CompletionRequest {
    llm::CompletionRequest {
        messages: r
            .messages
            .into_iter()
            .map(|m| llm::ChatMessage {
                role: role_in(m.role),
                content: m.content,
                tool_calls: m.tool_calls.into_iter().map(tool_call_in).collect(),
                tool_call_id: m.tool_call_id,
            })
            .collect(),
        tools: r
            .tools
            .into_iter()
            .map(|t| llm::ToolDefinition {
                name: t.name,
                description: t.description,
                parameters_schema: t.parameters_schema,
            })
            .collect(),
    }
}

const NO_AGENT: &str = "no agent is running in this instance";

impl wit::Host for HostState {}

impl wit_llm::Host for HostState {
    async fn complete(
        &mut self,
        request: wit_llm::CompletionRequest,
    ) -> Result<wit_llm::Completion, wit_llm::LlmError> {
        let _paused = self.clock.pause();
        let Some(caps) = self.agent.as_mut() else {
            return Err(wit_llm::LlmError::InvalidRequest(NO_AGENT.into()));
        };
        let request = request_in(request);
        let limit = if caps.recorder.llm_calls() >= caps.task.max_steps as usize {
            Some((
                AgentStatus::StepLimitReached,
                format!("step limit of {} LLM calls reached", caps.task.max_steps),
            ))
        } else {
            caps.budget
                .exhausted(
                    caps.recorder.known_cost(),
                    &caps.recorder.usage(),
                    caps.started,
                )
                .map(|why| (AgentStatus::LimitsExceeded, why))
        };
        if let Some((status, why)) = limit {
            let result = Err(llm::LlmError::LimitExceeded(why.clone()));
            caps.recorder.llm_call(&request, &result, Duration::ZERO);
            caps.limit_hit.get_or_insert((status, why.clone()));
            return Err(wit_llm::LlmError::LimitExceeded(why));
        }
        let started = Instant::now();
        let result = caps.llm.complete(&request).await;
        caps.recorder.llm_call(&request, &result, started.elapsed());
        if let Ok(c) = &result {
            if let (Some(run), Some(cost)) = (&caps.budget.run, c.cost_usd) {
                run.add(cost);
            }
            if !c.retries.is_empty() {
                let reasons: Vec<String> = c.retries.iter().map(|r| r.reason.clone()).collect();
                caps.progress.line(&format!(
                    "  {}: LLM call {} retried {}× ({})",
                    caps.task.agent_id,
                    caps.recorder.llm_calls(),
                    c.retries.len(),
                    reasons.join(", ")
                ));
            }
        }
        match result {
            Ok(c) => Ok(wit_llm::Completion {
                content: c.content,
                tool_calls: c.tool_calls.into_iter().map(tool_call_out).collect(),
                usage: wit::TokenUsage {
                    input_tokens: c.usage.input_tokens,
                    output_tokens: c.usage.output_tokens,
                    cache_read_tokens: c.usage.cache_read_tokens,
                    cache_write_tokens: c.usage.cache_write_tokens,
                },
                cost_usd: c.cost_usd,
            }),
            Err(llm::LlmError::LimitExceeded(m)) => Err(wit_llm::LlmError::LimitExceeded(m)),
            Err(llm::LlmError::Provider(m)) => Err(wit_llm::LlmError::Provider(m)),
            Err(llm::LlmError::Unavailable(m)) => {
                caps.progress.line(&format!(
                    "  {}: LLM call {} failed: {m}",
                    caps.task.agent_id,
                    caps.recorder.llm_calls()
                ));
                caps.infra_failure
                    .get_or_insert_with(|| format!("LLM provider unavailable: {m}"));
                Err(wit_llm::LlmError::Provider(m))
            }
            Err(llm::LlmError::InvalidRequest(m)) => Err(wit_llm::LlmError::InvalidRequest(m)),
        }
    }
}

impl wit_sandbox::Host for HostState {
    async fn exec(
        &mut self,
        command: String,
        timeout_ms: u32,
    ) -> Result<wit_sandbox::ExecOutput, wit_sandbox::SandboxError> {
        let _paused = self.clock.pause();
        let Some(caps) = self.agent.as_mut() else {
            return Err(wit_sandbox::SandboxError::Failed(NO_AGENT.into()));
        };
        let timeout = if timeout_ms == 0 {
            caps.task.command_timeout
        } else {
            Duration::from_millis(timeout_ms.into())
        };
        let args =
            serde_json::json!({ "command": command, "timeout_ms": timeout.as_millis() as u64 });
        match caps.sandbox.exec(&command, timeout).await {
            Ok(out) => {
                caps.recorder.step(
                    "bash",
                    args,
                    format!(
                        "exit_code={}{}{}\n{}",
                        out.exit_code,
                        if out.timed_out { " timed_out" } else { "" },
                        if out.truncated { " truncated" } else { "" },
                        out.output
                    ),
                );
                Ok(wit_sandbox::ExecOutput {
                    exit_code: out.exit_code,
                    output: out.output,
                    timed_out: out.timed_out,
                    truncated: out.truncated,
                })
            }
            Err(e) => {
                // The command could not be run at all (not a failing command): the sandbox broke.
                caps.infra_failure
                    .get_or_insert_with(|| format!("sandbox failed: {e}"));
                caps.recorder
                    .step("bash", args, format!("sandbox error: {e}"));
                Err(wit_sandbox::SandboxError::Failed(e.to_string()))
            }
        }
    }

    async fn read_file(&mut self, path: String) -> Result<Vec<u8>, wit_sandbox::SandboxError> {
        let _paused = self.clock.pause();
        let Some(caps) = self.agent.as_mut() else {
            return Err(wit_sandbox::SandboxError::Failed(NO_AGENT.into()));
        };
        let result = caps.sandbox.read_file(&path).await;
        let observation = match &result {
            Ok(bytes) => format!("{} bytes", bytes.len()),
            Err(e) => e.to_string(),
        };
        caps.recorder.step(
            "read_file",
            serde_json::json!({ "path": path }),
            observation,
        );
        result.map_err(sandbox_error_out)
    }

    async fn write_file(
        &mut self,
        path: String,
        contents: Vec<u8>,
    ) -> Result<(), wit_sandbox::SandboxError> {
        let _paused = self.clock.pause();
        let Some(caps) = self.agent.as_mut() else {
            return Err(wit_sandbox::SandboxError::Failed(NO_AGENT.into()));
        };
        let result = caps.sandbox.write_file(&path, &contents).await;
        let observation = match &result {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        caps.recorder.step(
            "write_file",
            serde_json::json!({ "path": path, "bytes": contents.len() }),
            observation,
        );
        result.map_err(sandbox_error_out)
    }
}

fn sandbox_error_out(e: crate::sandbox::SandboxError) -> wit_sandbox::SandboxError {
    match e {
        crate::sandbox::SandboxError::InvalidPath(_) => {
            wit_sandbox::SandboxError::InvalidArgument(e.to_string())
        }
        other => wit_sandbox::SandboxError::Failed(other.to_string()),
    }
}

fn message_out(m: crate::messaging::Message) -> wit_messaging::Message {
    wit_messaging::Message {
        sender: m.from,
        recipient: m.to,
        content: m.content,
        timestamp_ms: m.timestamp,
    }
}

impl wit_messaging::Host for HostState {
    async fn teammates(&mut self) -> Vec<String> {
        let _paused = self.clock.pause();
        self.agent
            .as_ref()
            .map(|c| c.task.teammates.clone())
            .unwrap_or_default()
    }

    async fn send(
        &mut self,
        to: String,
        content: String,
    ) -> Result<(), wit_messaging::MessagingError> {
        let _paused = self.clock.pause();
        let Some(caps) = self.agent.as_mut() else {
            return Err(wit_messaging::MessagingError::Disabled);
        };
        let result = caps.bus.send(&caps.task.agent_id, &to, &content);
        let observation = match &result {
            Ok(_) => "delivered".to_string(),
            Err(e) => e.to_string(),
        };
        caps.recorder.step(
            "send_message",
            serde_json::json!({ "to": to, "content": content }),
            observation,
        );
        match result {
            Ok(message) => {
                caps.progress.message(&message);
                Ok(())
            }
            Err(crate::messaging::SendError::UnknownRecipient(who)) => {
                Err(wit_messaging::MessagingError::UnknownRecipient(who))
            }
            Err(crate::messaging::SendError::PeerFinished(who)) => {
                Err(wit_messaging::MessagingError::PeerFinished(who))
            }
            Err(crate::messaging::SendError::Disabled) => {
                Err(wit_messaging::MessagingError::Disabled)
            }
        }
    }

    async fn receive(&mut self) -> Vec<wit_messaging::Message> {
        let _paused = self.clock.pause();
        let Some(caps) = self.agent.as_mut() else {
            return Vec::new();
        };
        let got = caps.bus.receive(&caps.task.agent_id);
        record_received(caps, &got);
        got.into_iter().map(message_out).collect()
    }

    async fn wait(&mut self, timeout_ms: u32) -> Vec<wit_messaging::Message> {
        let _paused = self.clock.pause();
        let Some(caps) = self.agent.as_mut() else {
            return Vec::new();
        };
        let got = caps
            .bus
            .wait(
                &caps.task.agent_id,
                Duration::from_millis(timeout_ms.into()),
            )
            .await;
        record_received(caps, &got);
        got.into_iter().map(message_out).collect()
    }
}

fn record_received(caps: &mut super::AgentCapabilities, got: &[crate::messaging::Message]) {
    for m in got {
        caps.recorder.step(
            "receive_message",
            serde_json::json!({ "from": m.from }),
            m.content.clone(),
        );
    }
}

impl wit_trajectory::Host for HostState {
    async fn event(&mut self, kind: String, detail: String) {
        let _paused = self.clock.pause();
        if let Some(caps) = self.agent.as_mut() {
            caps.recorder.step(&kind, serde_json::Value::Null, detail);
        }
    }
}
