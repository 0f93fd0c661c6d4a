//! Bindings for WIT `cooperbench:agent@0.3.0` (`wit/agent.wit`, the current contract):
//! converts its types to the host's and calls `imports` (and `team` for the team setting).

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

use super::imports::{self, CompleteError, ExecCall, SandboxCallError};
use super::team as team_imports;
use super::{
    new_store, AgentStatus, Capability, HostState, PluginInfo, PluginLimits, PluginOutcome,
};
use crate::llm;
use crate::messaging::team::{self, TeamError};
use crate::messaging::SendError;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "agent-plugin",
    imports: { default: async },
    exports: { default: async },
});

use cooperbench::agent::llm as wit_llm;
use cooperbench::agent::messaging as wit_messaging;
use cooperbench::agent::sandbox as wit_sandbox;
use cooperbench::agent::team as wit_team;
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
                wit::Capability::Team => Capability::Team,
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
            llm::Setting::Coop => wit::Setting::Coop,
            llm::Setting::Team => wit::Setting::Team,
        },
        feature_text: t.feature_text.clone(),
        limits: wit::Limits {
            max_steps: t.max_steps,
            command_timeout_ms: t.command_timeout.as_millis().min(u32::MAX as u128) as u32,
        },
        git_enabled: t.git_enabled,
        messaging_enabled: t.messaging_enabled,
        agent_config: t.agent_config.clone(),
        team: t.team.as_ref().map(|team| wit::TeamInfo {
            role: role_out(team.role),
            lead: team.lead.clone(),
            task_list: team.mechanisms.task_list,
            protocol: team.mechanisms.protocol,
            scratchpad: team.scratchpad.clone(),
            wait_for_message: team.mechanisms.wait_for_message,
            auto_refresh: team.mechanisms.auto_refresh,
        }),
    }
}

fn role_out(r: team::TeamRole) -> wit::TeamRole {
    match r {
        team::TeamRole::Lead => wit::TeamRole::Lead,
        team::TeamRole::Member => wit::TeamRole::Member,
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
        finish_reason: c.finish_reason,
        truncated: c.truncated,
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
        // The contract has no variant of its own for it: the reason travels as text.
        SendError::OverLimit(why) => wit_messaging::MessagingError::Unavailable(why),
    }
}

fn status_in(s: wit_team::TaskStatus) -> team::TaskStatus {
    match s {
        wit_team::TaskStatus::Open => team::TaskStatus::Open,
        wit_team::TaskStatus::InProgress => team::TaskStatus::InProgress,
        wit_team::TaskStatus::Blocked => team::TaskStatus::Blocked,
        wit_team::TaskStatus::Done => team::TaskStatus::Done,
    }
}

fn task_out(t: team::TeamTask) -> wit_team::TeamTask {
    wit_team::TeamTask {
        status: match t.status {
            team::TaskStatus::Open => wit_team::TaskStatus::Open,
            team::TaskStatus::InProgress => wit_team::TaskStatus::InProgress,
            team::TaskStatus::Blocked => wit_team::TaskStatus::Blocked,
            team::TaskStatus::Done => wit_team::TaskStatus::Done,
        },
        id: t.id,
        title: t.title,
        owner: t.owner,
        note: t.note,
        created_by: t.created_by,
    }
}

fn team_error_out(e: TeamError) -> wit_team::TeamError {
    match e {
        TeamError::Disabled => wit_team::TeamError::Disabled,
        TeamError::NotFound(id) => wit_team::TeamError::NotFound(id),
        TeamError::ClaimedBy(who) => wit_team::TeamError::ClaimedBy(who),
        TeamError::ReservedFor(who) => wit_team::TeamError::ReservedFor(who),
        TeamError::NotOwner(who) => wit_team::TeamError::NotOwner(who),
        TeamError::NotLead => wit_team::TeamError::NotLead,
        TeamError::NotYours(id) => wit_team::TeamError::NotYours(id),
        TeamError::InvalidArgument(why) => wit_team::TeamError::InvalidArgument(why),
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

impl wit_team::Host for HostState {
    async fn role(&mut self) -> Result<wit::TeamRole, wit_team::TeamError> {
        team_imports::role(self)
            .map(role_out)
            .map_err(team_error_out)
    }

    async fn tasks(&mut self) -> Result<Vec<wit_team::TeamTask>, wit_team::TeamError> {
        team_imports::tasks(self)
            .map(|tasks| tasks.into_iter().map(task_out).collect())
            .map_err(team_error_out)
    }

    async fn claim(&mut self, id: String) -> Result<wit_team::TeamTask, wit_team::TeamError> {
        team_imports::claim(self, id)
            .map(task_out)
            .map_err(team_error_out)
    }

    async fn update(
        &mut self,
        id: String,
        status: wit_team::TaskStatus,
        note: String,
    ) -> Result<wit_team::TeamTask, wit_team::TeamError> {
        team_imports::update(self, id, status_in(status), note)
            .map(task_out)
            .map_err(team_error_out)
    }

    async fn create(
        &mut self,
        title: String,
        owner: Option<String>,
    ) -> Result<wit_team::TeamTask, wit_team::TeamError> {
        team_imports::create(self, title, owner)
            .map(task_out)
            .map_err(team_error_out)
    }

    async fn request(
        &mut self,
        to: String,
        kind: String,
        body: String,
    ) -> Result<String, wit_team::TeamError> {
        team_imports::request(self, to, kind, body).map_err(team_error_out)
    }

    async fn respond(&mut self, id: String, body: String) -> Result<(), wit_team::TeamError> {
        team_imports::respond(self, id, body).map_err(team_error_out)
    }

    async fn pending(&mut self) -> Result<Vec<wit_team::TeamRequest>, wit_team::TeamError> {
        team_imports::pending(self)
            .map(|requests| {
                requests
                    .into_iter()
                    .map(|r| wit_team::TeamRequest {
                        id: r.id,
                        sender: r.sender,
                        recipient: r.recipient,
                        kind: r.kind,
                        body: r.body,
                        timestamp_ms: r.timestamp_ms,
                    })
                    .collect()
            })
            .map_err(team_error_out)
    }

    async fn await_response(
        &mut self,
        id: String,
        timeout_ms: u32,
    ) -> Result<Option<wit_team::TeamResponse>, wit_team::TeamError> {
        team_imports::await_response(self, id, timeout_ms)
            .await
            .map(|answer| {
                answer.map(|r| wit_team::TeamResponse {
                    request_id: r.request_id,
                    sender: r.sender,
                    body: r.body,
                    timestamp_ms: r.timestamp_ms,
                })
            })
            .map_err(team_error_out)
    }
}
