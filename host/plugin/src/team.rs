//! The host side of the `team` imports (WIT 0.3.0), in host types: each call goes to the
//! pair's `TeamBoard` as the calling agent (a plugin cannot act as another agent), and is
//! recorded as an action in the agent's trajectory. Never panics.

use std::time::Duration;

use serde_json::json;

use super::HostState;
use crate::messaging::team::{
    TaskStatus, TeamError, TeamRequest, TeamResponse, TeamRole, TeamTask,
};

/// Longest `await-response` wait honoured in one call.
const MAX_AWAIT: Duration = Duration::from_secs(600);

/// Runs `call` on the board as the calling agent and records it; `disabled` outside a team.
fn on_board<T>(
    state: &mut HostState,
    action: &str,
    args: serde_json::Value,
    call: impl FnOnce(&crate::messaging::team::TeamBoard, &str) -> Result<T, TeamError>,
    describe: impl FnOnce(&T) -> String,
) -> Result<T, TeamError> {
    let _paused = state.clock.pause();
    let Some(caps) = state.agent.as_mut() else {
        return Err(TeamError::Disabled);
    };
    let Some(board) = caps.team.as_ref() else {
        return Err(TeamError::Disabled);
    };
    let result = call(board, &caps.task.agent_id);
    let observation = match &result {
        Ok(value) => describe(value),
        Err(e) => format!("refused: {e}"),
    };
    caps.recorder.step(action, args, observation);
    result
}

fn describe_task(t: &TeamTask) -> String {
    format!(
        "{} [{}] {} (owner: {})",
        t.id,
        t.status.as_str(),
        t.title,
        t.owner.as_deref().unwrap_or("none")
    )
}

/// `team.role`.
pub(crate) fn role(state: &mut HostState) -> Result<TeamRole, TeamError> {
    let _paused = state.clock.pause();
    let caps = state.agent.as_ref().ok_or(TeamError::Disabled)?;
    let board = caps.team.as_ref().ok_or(TeamError::Disabled)?;
    board.role(&caps.task.agent_id).ok_or(TeamError::Disabled)
}

/// `team.tasks` (not recorded: plugins poll it, e.g. for auto-refresh).
pub(crate) fn tasks(state: &mut HostState) -> Result<Vec<TeamTask>, TeamError> {
    let _paused = state.clock.pause();
    let caps = state.agent.as_ref().ok_or(TeamError::Disabled)?;
    caps.team.as_ref().ok_or(TeamError::Disabled)?.tasks()
}

/// `team.claim`.
pub(crate) fn claim(state: &mut HostState, id: String) -> Result<TeamTask, TeamError> {
    on_board(
        state,
        "team_claim",
        json!({ "task": id }),
        |b, me| b.claim(me, &id),
        describe_task,
    )
}

/// `team.update`.
pub(crate) fn update(
    state: &mut HostState,
    id: String,
    status: TaskStatus,
    note: String,
) -> Result<TeamTask, TeamError> {
    on_board(
        state,
        "team_update",
        json!({ "task": id, "status": status.as_str(), "note": note }),
        |b, me| b.update(me, &id, status, &note),
        describe_task,
    )
}

/// `team.create` (lead only).
pub(crate) fn create(
    state: &mut HostState,
    title: String,
    owner: Option<String>,
) -> Result<TeamTask, TeamError> {
    on_board(
        state,
        "team_create",
        json!({ "title": title, "owner": owner }),
        |b, me| b.create(me, &title, owner.as_deref()),
        describe_task,
    )
}

/// `team.request`.
pub(crate) fn request(
    state: &mut HostState,
    to: String,
    kind: String,
    body: String,
) -> Result<String, TeamError> {
    on_board(
        state,
        "team_request",
        json!({ "to": to, "kind": kind, "body": body }),
        |b, me| b.request(me, &to, &kind, &body),
        |id| format!("request {id} sent"),
    )
}

/// `team.respond`.
pub(crate) fn respond(state: &mut HostState, id: String, body: String) -> Result<(), TeamError> {
    on_board(
        state,
        "team_respond",
        json!({ "request": id, "body": body }),
        |b, me| b.respond(me, &id, &body),
        |_| "answered".into(),
    )
}

/// `team.pending` (not recorded: a poll).
pub(crate) fn pending(state: &mut HostState) -> Result<Vec<TeamRequest>, TeamError> {
    let _paused = state.clock.pause();
    let caps = state.agent.as_ref().ok_or(TeamError::Disabled)?;
    let board = caps.team.as_ref().ok_or(TeamError::Disabled)?;
    board.pending(&caps.task.agent_id)
}

/// `team.await-response`: waits (clock paused) up to `timeout_ms`, at most `MAX_AWAIT`.
pub(crate) async fn await_response(
    state: &mut HostState,
    id: String,
    timeout_ms: u32,
) -> Result<Option<TeamResponse>, TeamError> {
    let _paused = state.clock.pause();
    let caps = state.agent.as_mut().ok_or(TeamError::Disabled)?;
    let board = caps.team.clone().ok_or(TeamError::Disabled)?;
    let timeout = Duration::from_millis(timeout_ms.into()).min(MAX_AWAIT);
    let result = board
        .await_response(&caps.task.agent_id, &id, timeout)
        .await;
    let observation = match &result {
        Ok(Some(r)) => format!("{} answered: {}", r.sender, r.body),
        Ok(None) => format!("no answer within {} ms", timeout.as_millis()),
        Err(e) => format!("refused: {e}"),
    };
    caps.recorder
        .step("team_await_response", json!({ "request": id }), observation);
    result
}
