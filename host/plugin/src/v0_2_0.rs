//! Bindings for WIT `cooperbench:agent@0.2.0` (frozen, `wit/0.2.0/`):
//! converts its types to the host's and calls `imports`.

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

use super::imports::{self, CompleteError, ExecCall, SandboxCallError};
use super::{
    new_store, AgentStatus, Capability, HostState, PluginInfo, PluginLimits, PluginOutcome,
};
use crate::llm;
use crate::messaging::SendError;

wasmtime::component::bindgen!({
    path: "../../wit/0.2.0",
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
pub async fn info(engine: &Engine, pre: &Pre) -> Result<PluginInfo, String> {
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
    Ok(PluginInfo {
        name: info.name,
        version: info.version,
        capabilities: info
            .capabilities
            .into_iter()
            .map(|c| match c {
                wit::Capability::Messaging => Capability::Messaging,
                wit::Capability::Git => Capability::Git,
            })
            .collect(),
    })
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
            // Not reached: the team setting needs the `team` capability, which this contract
            // cannot declare.
            llm::Setting::Coop | llm::Setting::Team => wit::Setting::Coop,
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
        options: llm::RequestOptions {
            max_output_tokens: r.options.max_output_tokens,
            temperature: r.options.temperature.map(f64::from),
            stop: r.options.stop,
        },
    }
}

fn completion_out(c: llm::Completion) -> wit_llm::Completion {
    wit_llm::Completion {
        content: c.content,
        tool_calls: c.tool_calls.into_iter().map(tool_call_out).collect(),
        usage: wit::TokenUsage {
            input_tokens: c.usage.input_tokens,
            output_tokens: c.usage.output_tokens,
            cache_read_tokens: c.usage.cache_read_tokens,
            cache_write_tokens: c.usage.cache_write_tokens,
        },
        cost_usd: c.cost_usd,
    }
}

fn sandbox_error_out(e: SandboxCallError) -> wit_sandbox::SandboxError {
    match e {
        SandboxCallError::Failed(m) => wit_sandbox::SandboxError::Failed(m),
        SandboxCallError::InvalidArgument(m) => wit_sandbox::SandboxError::InvalidArgument(m),
    }
}

fn messaging_error_out(e: SendError) -> wit_messaging::MessagingError {
    match e {
        SendError::UnknownRecipient(who) => wit_messaging::MessagingError::UnknownRecipient(who),
        SendError::PeerFinished(who) => wit_messaging::MessagingError::PeerFinished(who),
        SendError::Disabled => wit_messaging::MessagingError::Disabled,
        SendError::Unavailable(why) => wit_messaging::MessagingError::Unavailable(why),
        // 0.2.0 has no variant of its own for it: the reason travels as text.
        SendError::OverLimit(why) => wit_messaging::MessagingError::Unavailable(why),
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

impl wit::Host for HostState {}

impl wit_llm::Host for HostState {
    async fn complete(
        &mut self,
        request: wit_llm::CompletionRequest,
    ) -> Result<wit_llm::Completion, wit_llm::LlmError> {
        imports::complete(self, request_in(request))
            .await
            .map(completion_out)
            .map_err(|e| match e {
                CompleteError::LimitExceeded(m) => wit_llm::LlmError::LimitExceeded(m),
                CompleteError::Provider(m) => wit_llm::LlmError::Provider(m),
                CompleteError::InvalidRequest(m) => wit_llm::LlmError::InvalidRequest(m),
            })
    }
}

impl wit_sandbox::Host for HostState {
    async fn exec(
        &mut self,
        request: wit_sandbox::ExecRequest,
    ) -> Result<wit_sandbox::ExecOutput, wit_sandbox::SandboxError> {
        let call = ExecCall {
            command: request.command,
            timeout_ms: request.timeout_ms,
            workdir: request.workdir,
            env: request.env,
        };
        imports::exec(self, call)
            .await
            .map(|out| wit_sandbox::ExecOutput {
                exit_code: out.exit_code,
                output: out.output,
                timed_out: out.timed_out,
                truncated: out.truncated,
            })
            .map_err(sandbox_error_out)
    }

    async fn read_file(&mut self, path: String) -> Result<Vec<u8>, wit_sandbox::SandboxError> {
        imports::read_file(self, path)
            .await
            .map_err(sandbox_error_out)
    }

    async fn write_file(
        &mut self,
        path: String,
        contents: Vec<u8>,
    ) -> Result<(), wit_sandbox::SandboxError> {
        imports::write_file(self, path, contents)
            .await
            .map_err(sandbox_error_out)
    }
}

impl wit_messaging::Host for HostState {
    async fn teammates(&mut self) -> Vec<String> {
        imports::teammates(self)
    }

    async fn send(
        &mut self,
        to: String,
        content: String,
    ) -> Result<(), wit_messaging::MessagingError> {
        imports::send(self, to, content)
            .await
            .map_err(messaging_error_out)
    }

    async fn broadcast(
        &mut self,
        content: String,
    ) -> Result<Vec<String>, wit_messaging::MessagingError> {
        imports::broadcast(self, content)
            .await
            .map_err(messaging_error_out)
    }

    async fn receive(&mut self) -> Vec<wit_messaging::Message> {
        imports::receive(self)
            .await
            .into_iter()
            .map(message_out)
            .collect()
    }

    async fn wait(&mut self, timeout_ms: u32) -> Vec<wit_messaging::Message> {
        imports::wait(self, timeout_ms)
            .await
            .into_iter()
            .map(message_out)
            .collect()
    }
}

impl wit_trajectory::Host for HostState {
    async fn event(&mut self, kind: String, detail: String) {
        imports::event(self, kind, detail)
    }
}
