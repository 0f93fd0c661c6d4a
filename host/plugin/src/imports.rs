//! The host side of every import, in host types, for all WIT versions: each binding module
//! (`v0_1_0`, `v0_2_0`) only converts its generated types to and from these. Every function
//! pauses the compute clock, records what the agent did, and never panics.

use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{AgentCapabilities, AgentStatus, HostState};
use crate::exec::ExecOutput;
use crate::llm;
use crate::messaging::{Message, SendError};

const NO_AGENT: &str = "no agent is running in this instance";

/// A command as the newest contract describes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecCall {
    pub command: String,
    pub timeout_ms: u32,
    pub workdir: Option<String>,
    pub env: Vec<(String, String)>,
}

/// Why a sandbox import failed, in the contract's terms.
#[derive(Debug, Clone)]
pub(crate) enum SandboxCallError {
    Failed(String),
    InvalidArgument(String),
}

/// An `llm.complete` failure as plugins see it (an unavailable provider is `Provider`).
#[derive(Debug, Clone)]
pub(crate) enum CompleteError {
    LimitExceeded(String),
    Provider(String),
    InvalidRequest(String),
}

/// `llm.complete`: enforces the step limit and budgets, asks the model, records the call.
pub(crate) async fn complete(
    state: &mut HostState,
    request: llm::CompletionRequest,
) -> Result<llm::Completion, CompleteError> {
    let _paused = state.clock.pause();
    let Some(caps) = state.agent.as_mut() else {
        return Err(CompleteError::InvalidRequest(NO_AGENT.into()));
    };
    if let Err(why) = request.options.validate() {
        return Err(CompleteError::InvalidRequest(why));
    }
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
        caps.recorder
            .llm_call(&request, &result, Instant::now(), state.clock.spent());
        caps.limit_hit.get_or_insert((status, why.clone()));
        return Err(CompleteError::LimitExceeded(why));
    }
    let started = Instant::now();
    let span = tracing::info_span!(
        "model_call",
        agent = %caps.task.agent_id,
        call = caps.recorder.llm_calls()
    );
    let result = caps.llm.complete(&request).instrument(span).await;
    caps.recorder
        .llm_call(&request, &result, started, state.clock.spent());
    if result.is_err() {
        let retries = caps.llm.take_failed_retries();
        caps.recorder.failed_call_retries(retries);
    }
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
        Ok(c) => Ok(c),
        Err(llm::LlmError::LimitExceeded(m)) => Err(CompleteError::LimitExceeded(m)),
        Err(llm::LlmError::Provider(m)) => Err(CompleteError::Provider(m)),
        Err(llm::LlmError::Unavailable(m)) => {
            caps.progress.line(&format!(
                "  {}: LLM call {} failed: {m}",
                caps.task.agent_id,
                caps.recorder.llm_calls()
            ));
            caps.infra_failure
                .get_or_insert_with(|| format!("LLM provider unavailable: {m}"));
            Err(CompleteError::Provider(m))
        }
        Err(llm::LlmError::InvalidRequest(m)) => Err(CompleteError::InvalidRequest(m)),
    }
}

/// Quotes `text` for bash as one word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Checks a working directory: relative, inside the repository after resolving `..`.
fn validate_workdir(workdir: &str) -> Result<String, String> {
    let path = std::path::Path::new(workdir);
    if path.is_absolute() {
        return Err(format!(
            "workdir `{workdir}` must be relative to the repository root"
        ));
    }
    let mut depth: i64 = 0;
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(format!("workdir `{workdir}` leaves the repository"));
        }
    }
    Ok(workdir.to_string())
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The bash source that runs `call.command` in its working directory with its environment.
/// A fresh shell per command makes this exactly "cd, export, run" with nothing carried over.
fn wrapped_command(call: &ExecCall) -> Result<String, String> {
    let mut prefix = String::new();
    if let Some(dir) = &call.workdir {
        let dir = validate_workdir(dir)?;
        prefix.push_str(&format!("cd -- {} || exit 1\n", shell_quote(&dir)));
    }
    for (name, value) in &call.env {
        if !valid_env_name(name) {
            return Err(format!(
                "environment variable name `{name}` is not a shell identifier"
            ));
        }
        prefix.push_str(&format!("export {name}={}\n", shell_quote(value)));
    }
    Ok(format!("{prefix}{}", call.command))
}

/// `sandbox.exec`: runs a command in the agent's sandbox and records it.
pub(crate) async fn exec(
    state: &mut HostState,
    call: ExecCall,
) -> Result<ExecOutput, SandboxCallError> {
    let _paused = state.clock.pause();
    let Some(caps) = state.agent.as_mut() else {
        return Err(SandboxCallError::Failed(NO_AGENT.into()));
    };
    let timeout = if call.timeout_ms == 0 {
        caps.task.command_timeout
    } else {
        Duration::from_millis(call.timeout_ms.into())
    };
    let mut args =
        serde_json::json!({ "command": call.command, "timeout_ms": timeout.as_millis() as u64 });
    if let Some(dir) = &call.workdir {
        args["workdir"] = serde_json::json!(dir);
    }
    if !call.env.is_empty() {
        args["env"] = serde_json::json!(call
            .env
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect::<serde_json::Map<_, _>>());
    }
    let command = match wrapped_command(&call) {
        Ok(command) => command,
        Err(why) => {
            caps.recorder.step("bash", args, format!("refused: {why}"));
            return Err(SandboxCallError::InvalidArgument(why));
        }
    };
    let started = Instant::now();
    let span = tracing::info_span!("command", agent = %caps.task.agent_id);
    match caps.sandbox.exec(&command, timeout).instrument(span).await {
        Ok(out) => {
            caps.recorder.timed_step(
                "bash",
                args,
                format!(
                    "exit_code={}{}{}\n{}",
                    out.exit_code,
                    if out.timed_out { " timed_out" } else { "" },
                    if out.truncated { " truncated" } else { "" },
                    out.output
                ),
                started.elapsed(),
            );
            Ok(out)
        }
        Err(crate::sandbox::SandboxError::LimitExceeded(why)) => {
            // The agent filled its sandbox or ran it out of memory: its limit, not the
            // infrastructure's failure.
            caps.limit_hit
                .get_or_insert((AgentStatus::LimitsExceeded, why.clone()));
            caps.recorder.step("bash", args, format!("refused: {why}"));
            Err(SandboxCallError::Failed(why))
        }
        Err(e) => {
            // The command could not be run at all (not a failing command): the sandbox broke.
            caps.infra_failure
                .get_or_insert_with(|| format!("sandbox failed: {e}"));
            caps.recorder
                .step("bash", args, format!("sandbox error: {e}"));
            Err(SandboxCallError::Failed(e.to_string()))
        }
    }
}

fn sandbox_error(e: crate::sandbox::SandboxError) -> SandboxCallError {
    match e {
        crate::sandbox::SandboxError::InvalidPath(_) => {
            SandboxCallError::InvalidArgument(e.to_string())
        }
        other => SandboxCallError::Failed(other.to_string()),
    }
}

/// `sandbox.read-file`.
pub(crate) async fn read_file(
    state: &mut HostState,
    path: String,
) -> Result<Vec<u8>, SandboxCallError> {
    let _paused = state.clock.pause();
    let Some(caps) = state.agent.as_mut() else {
        return Err(SandboxCallError::Failed(NO_AGENT.into()));
    };
    let started = Instant::now();
    let result = caps.sandbox.read_file(&path).await;
    let observation = match &result {
        Ok(bytes) => format!("{} bytes", bytes.len()),
        Err(e) => e.to_string(),
    };
    caps.recorder.timed_step(
        "read_file",
        serde_json::json!({ "path": path }),
        observation,
        started.elapsed(),
    );
    result.map_err(sandbox_error)
}

/// `sandbox.write-file`.
pub(crate) async fn write_file(
    state: &mut HostState,
    path: String,
    contents: Vec<u8>,
) -> Result<(), SandboxCallError> {
    let _paused = state.clock.pause();
    let Some(caps) = state.agent.as_mut() else {
        return Err(SandboxCallError::Failed(NO_AGENT.into()));
    };
    let started = Instant::now();
    let result = caps.sandbox.write_file(&path, &contents).await;
    let observation = match &result {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    caps.recorder.timed_step(
        "write_file",
        serde_json::json!({ "path": path, "bytes": contents.len() }),
        observation,
        started.elapsed(),
    );
    result.map_err(sandbox_error)
}

/// `messaging.teammates`.
pub(crate) fn teammates(state: &mut HostState) -> Vec<String> {
    let _paused = state.clock.pause();
    state
        .agent
        .as_ref()
        .map(|c| c.task.teammates.clone())
        .unwrap_or_default()
}

/// `messaging.send`; refused when the agent was not granted messaging.
pub(crate) async fn send(
    state: &mut HostState,
    to: String,
    content: String,
) -> Result<(), SendError> {
    let _paused = state.clock.pause();
    let Some(caps) = state.agent.as_mut() else {
        return Err(SendError::Disabled);
    };
    send_one(caps, &to, &content).await
}

async fn send_one(caps: &mut AgentCapabilities, to: &str, content: &str) -> Result<(), SendError> {
    let result = if !caps.task.messaging_enabled {
        Err(SendError::Disabled)
    } else if content.len() > caps.max_message_bytes {
        Err(SendError::OverLimit(format!(
            "the message is {} bytes, over this run's limit of {} bytes per message",
            content.len(),
            caps.max_message_bytes
        )))
    } else if caps.messages_sent >= caps.max_messages {
        Err(SendError::OverLimit(format!(
            "this agent already sent this run's limit of {} messages",
            caps.max_messages
        )))
    } else {
        caps.messages_sent += 1;
        caps.bus.send(&caps.task.agent_id, to, content).await
    };
    if let Err(SendError::Unavailable(why)) = &result {
        caps.infra_failure.get_or_insert_with(|| why.clone());
    }
    let observation = match &result {
        Ok(_) => "delivered".to_string(),
        Err(e) => e.to_string(),
    };
    // A refused message is not kept (that is the point of the limit): only its size.
    let recorded = match &result {
        Err(SendError::OverLimit(_)) => serde_json::json!({ "to": to, "bytes": content.len() }),
        _ => serde_json::json!({ "to": to, "content": content }),
    };
    caps.recorder.step("send_message", recorded, observation);
    result.map(|message| {
        caps.progress.message(&message);
        if let Some(events) = &caps.events {
            events.message(&message);
        }
    })
}

/// `messaging.broadcast`: sends to every teammate still working; returns who it reached.
pub(crate) async fn broadcast(
    state: &mut HostState,
    content: String,
) -> Result<Vec<String>, SendError> {
    let _paused = state.clock.pause();
    let Some(caps) = state.agent.as_mut() else {
        return Err(SendError::Disabled);
    };
    if !caps.task.messaging_enabled {
        return Err(SendError::Disabled);
    }
    let mut reached = Vec::new();
    for mate in caps.task.teammates.clone() {
        match send_one(caps, &mate, &content).await {
            Ok(()) => reached.push(mate),
            Err(SendError::PeerFinished(_)) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(reached)
}

/// `messaging.receive`: never blocks on an empty inbox.
pub(crate) async fn receive(state: &mut HostState) -> Vec<Message> {
    let _paused = state.clock.pause();
    let Some(caps) = state.agent.as_mut() else {
        return Vec::new();
    };
    if !caps.task.messaging_enabled {
        return Vec::new();
    }
    let got = caps.bus.receive(&caps.task.agent_id).await;
    received(caps, got)
}

/// Records what arrived; a bus outage past its bound is the pair's infrastructure failure.
fn received(
    caps: &mut AgentCapabilities,
    got: Result<Vec<Message>, crate::messaging::BusUnavailable>,
) -> Vec<Message> {
    match got {
        Ok(got) => {
            record_received(caps, &got);
            got
        }
        Err(e) => {
            caps.infra_failure.get_or_insert_with(|| e.to_string());
            caps.recorder
                .step("receive_message", serde_json::Value::Null, e.to_string());
            Vec::new()
        }
    }
}

/// `messaging.wait`: blocks up to `timeout_ms` for at least one message.
pub(crate) async fn wait(state: &mut HostState, timeout_ms: u32) -> Vec<Message> {
    let _paused = state.clock.pause();
    let Some(caps) = state.agent.as_mut() else {
        return Vec::new();
    };
    if !caps.task.messaging_enabled {
        // Still waits, so a plugin polling in a loop does not spin.
        tokio::time::sleep(Duration::from_millis(timeout_ms.min(60_000).into())).await;
        return Vec::new();
    }
    let blocking = caps
        .task
        .team
        .as_ref()
        .is_none_or(|t| t.mechanisms.wait_for_message);
    if !blocking {
        // `--team-no-mcp`: CooperBench's ablation without `wait_for_message`; waiting is
        // then just a look at the inbox.
        let got = caps.bus.receive(&caps.task.agent_id).await;
        return received(caps, got);
    }
    let got = caps
        .bus
        .wait(
            &caps.task.agent_id,
            Duration::from_millis(timeout_ms.into()),
        )
        .await;
    received(caps, got)
}

fn record_received(caps: &mut AgentCapabilities, got: &[Message]) {
    for m in got {
        caps.recorder.step(
            "receive_message",
            serde_json::json!({ "from": m.from }),
            m.content.clone(),
        );
    }
}

/// `trajectory.event`.
pub(crate) fn event(state: &mut HostState, kind: String, detail: String) {
    let _paused = state.clock.pause();
    if let Some(caps) = state.agent.as_mut() {
        caps.recorder.step(&kind, serde_json::Value::Null, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_and_env_become_a_prefix_that_cannot_be_escaped() {
        let call = ExecCall {
            command: "pwd".into(),
            workdir: Some("src/it's".into()),
            env: vec![("GREETING".into(), "a 'b' $c".into())],
            ..ExecCall::default()
        };
        assert_eq!(
            wrapped_command(&call).unwrap(),
            "cd -- 'src/it'\\''s' || exit 1\nexport GREETING='a '\\''b'\\'' $c'\npwd"
        );
    }

    #[test]
    fn workdirs_outside_the_repository_and_bad_names_are_refused() {
        for dir in ["/etc", "..", "a/../../b"] {
            let call = ExecCall {
                workdir: Some(dir.into()),
                ..ExecCall::default()
            };
            assert!(wrapped_command(&call).is_err(), "{dir}");
        }
        assert!(validate_workdir("a/../b").is_ok());
        let call = ExecCall {
            env: vec![("X;rm -rf /".into(), "1".into())],
            ..ExecCall::default()
        };
        assert!(wrapped_command(&call)
            .unwrap_err()
            .contains("not a shell identifier"));
    }
}
