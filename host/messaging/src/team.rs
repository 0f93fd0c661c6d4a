//! The team setting's shared state (CooperBench 0.0.29's `team_harness`): a task list with
//! atomic claim and owner-only updates, and typed requests between agents, kept by the host
//! for one pair. Every change is appended to an audit log (CooperBench's `task-log` event
//! shapes), from which the team metrics are computed. The rules are enforced here, so an
//! agent cannot get around them (CooperBench's own checks can be bypassed by talking to
//! Redis directly; a plugin has no such path).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::now_ms;

/// Most tasks one team's list may hold (seeded ones included).
pub const MAX_TASKS: usize = 256;
/// Most requests one team may make.
pub const MAX_REQUESTS: usize = 1024;
/// Longest title, note or body, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Most changes (tasks, claims, updates, requests, answers) one team may make: the audit log,
/// the events and the trajectories stay bounded whatever an agent loops on.
pub const MAX_CHANGES: usize = 5_000;
/// Longest request kind, in bytes (a word: letters, digits, `_ . : -`).
pub const MAX_KIND_BYTES: usize = 64;
/// Longest task or request id an agent may name, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// An agent's role in the team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeamRole {
    Lead,
    Member,
}

/// Where a task stands (CooperBench's status names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    InProgress,
    Blocked,
    Done,
}

impl TaskStatus {
    /// The name in logs and files.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Done => "done",
        }
    }
}

/// One entry of the task list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamTask {
    pub id: String,
    pub title: String,
    pub owner: Option<String>,
    pub status: TaskStatus,
    pub note: String,
    pub created_by: String,
    /// Set only while the owner was suggested by its creator and has not claimed it.
    #[serde(skip)]
    claimed: bool,
}

/// A typed request between agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRequest {
    pub id: String,
    pub sender: String,
    pub recipient: String,
    pub kind: String,
    pub body: String,
    pub timestamp_ms: u64,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamResponse {
    pub request_id: String,
    pub sender: String,
    pub body: String,
    pub timestamp_ms: u64,
}

/// Why a team call failed; the agent sees this.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TeamError {
    #[error("this mechanism is not available (not the team setting, or switched off)")]
    Disabled,
    #[error("no task or request `{0}`")]
    NotFound(String),
    #[error("task already claimed by `{0}`")]
    ClaimedBy(String),
    #[error("task reserved for `{0}` (its suggested owner; only they may claim it)")]
    ReservedFor(String),
    #[error("only the task's owner may update it (owner: {})", .0.as_deref().unwrap_or("nobody"))]
    NotOwner(Option<String>),
    #[error("only the lead may create tasks")]
    NotLead,
    #[error("request `{0}` is not addressed to you or was already answered")]
    NotYours(String),
    #[error("{0}")]
    InvalidArgument(String),
}

/// Which mechanisms the user left on (CooperBench's `--team-no-*` flags turn them off); in
/// files under CooperBench's names (`team_features` in its result.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamMechanisms {
    pub task_list: bool,
    pub scratchpad: bool,
    /// `messaging.wait` blocks (CooperBench's `mcp`: its `wait_for_message` tool).
    #[serde(rename = "mcp")]
    pub wait_for_message: bool,
    pub auto_refresh: bool,
    pub protocol: bool,
}

impl Default for TeamMechanisms {
    fn default() -> Self {
        TeamMechanisms {
            task_list: true,
            protocol: true,
            scratchpad: true,
            wait_for_message: true,
            auto_refresh: true,
        }
    }
}

/// One event of the audit log (`task_log.json`), in CooperBench's `task-log` shape:
/// `kind` is create, claim, update, request or response; `ts` is seconds since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamEvent {
    pub kind: String,
    pub by: String,
    pub ts: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_kind: Option<String>,
}

impl TeamEvent {
    /// One line for people (`cbench watch`): `agent2 claimed t1`.
    pub fn describe(&self) -> String {
        // Every field an agent chose is one line here: a newline in it must not print what
        // looks like another event.
        let id = |x: &Option<String>| {
            x.as_deref()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let quoted = |x: &Option<String>| {
            let flat = id(x);
            let excerpt: String = flat.chars().take(120).collect();
            if flat.chars().count() > 120 {
                format!("\"{excerpt}…\"")
            } else {
                format!("\"{excerpt}\"")
            }
        };
        match self.kind.as_str() {
            "create" => format!(
                "{} created {} {}{}",
                self.by,
                id(&self.task_id),
                quoted(&self.title),
                self.owner
                    .as_ref()
                    .map(|o| format!(" for {o}"))
                    .unwrap_or_default()
            ),
            "claim" => format!("{} claimed {}", self.by, id(&self.task_id)),
            "update" => format!(
                "{} set {} to {}{}",
                self.by,
                id(&self.task_id),
                id(&self.status),
                match &self.note {
                    Some(n) if !n.is_empty() => format!(": {}", quoted(&self.note)),
                    _ => String::new(),
                }
            ),
            "request" => format!(
                "{} asked {} [{}] ({})",
                self.by,
                id(&self.to),
                id(&self.request_kind),
                id(&self.request_id)
            ),
            "response" => format!("{} answered {}", self.by, id(&self.request_id)),
            other => format!("{} {other}", self.by),
        }
    }

    fn new(kind: &str, by: &str) -> TeamEvent {
        TeamEvent {
            kind: kind.into(),
            by: by.into(),
            ts: now_ms() as f64 / 1000.0,
            task_id: None,
            title: None,
            owner: None,
            status: None,
            note: None,
            request_id: None,
            to: None,
            request_kind: None,
        }
    }
}

/// CooperBench's team metrics (`team_harness/metrics.py`), from the audit log and final list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamMetrics {
    pub tasks_total: usize,
    pub tasks_done: usize,
    pub unowned_at_end: usize,
    pub time_to_first_claim_seconds: Option<f64>,
    pub claims_per_agent: BTreeMap<String, usize>,
    pub updates_per_agent: BTreeMap<String, usize>,
    /// Beyond CooperBench's figures: requests made and answered.
    pub requests: usize,
    pub responses: usize,
}

impl TeamMetrics {
    /// Computes the metrics as CooperBench does: first claim measured from the first create.
    pub fn compute(events: &[TeamEvent], final_tasks: &[TeamTask]) -> TeamMetrics {
        let first = |kind: &str| {
            events
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.ts)
                .reduce(f64::min)
        };
        let per_agent = |kind: &str| {
            let mut counts = BTreeMap::new();
            for e in events.iter().filter(|e| e.kind == kind) {
                *counts.entry(e.by.clone()).or_insert(0) += 1;
            }
            counts
        };
        let time_to_first_claim_seconds = match (first("create"), first("claim")) {
            (Some(created), Some(claimed)) => Some(((claimed - created) * 1000.0).round() / 1000.0),
            _ => None,
        };
        TeamMetrics {
            tasks_total: final_tasks.len(),
            tasks_done: final_tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Done)
                .count(),
            unowned_at_end: final_tasks.iter().filter(|t| t.owner.is_none()).count(),
            time_to_first_claim_seconds,
            claims_per_agent: per_agent("claim"),
            updates_per_agent: per_agent("update"),
            requests: events.iter().filter(|e| e.kind == "request").count(),
            responses: events.iter().filter(|e| e.kind == "response").count(),
        }
    }
}

#[derive(Default)]
struct Board {
    tasks: Vec<TeamTask>,
    requests: Vec<TeamRequest>,
    /// Answers by request id; a request with an answer is no longer pending.
    responses: BTreeMap<String, TeamResponse>,
    log: Vec<TeamEvent>,
}

/// Told of every change after it is made (the run's live event log).
pub type TeamObserver = Arc<dyn Fn(&TeamEvent) + Send + Sync>;

/// The shared state of one team. Cheap to clone; every clone sees the same list.
#[derive(Clone)]
pub struct TeamBoard {
    board: Arc<Mutex<Board>>,
    answered: Arc<Notify>,
    agents: Arc<Vec<String>>,
    lead: String,
    mechanisms: TeamMechanisms,
    observer: Option<TeamObserver>,
}

fn check_text(what: &str, text: &str) -> Result<(), TeamError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(TeamError::InvalidArgument(format!(
            "{what} is {} bytes; the limit is {MAX_TEXT_BYTES}",
            text.len()
        )));
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), TeamError> {
    if id.len() > MAX_ID_BYTES {
        return Err(TeamError::InvalidArgument(format!(
            "ids are at most {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_kind(kind: &str) -> Result<(), TeamError> {
    let word = !kind.is_empty()
        && kind.len() <= MAX_KIND_BYTES
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if word {
        Ok(())
    } else {
        Err(TeamError::InvalidArgument(format!(
            "a request kind is one word of at most {MAX_KIND_BYTES} letters, digits or `_ . : -`"
        )))
    }
}

/// Refuses a change past `MAX_CHANGES` (seeding is not counted against the agents).
fn check_room(board: &Board) -> Result<(), TeamError> {
    if board.log.len() >= MAX_CHANGES {
        return Err(TeamError::InvalidArgument(format!(
            "this team made {MAX_CHANGES} changes to its task list and requests, the host's limit"
        )));
    }
    Ok(())
}

impl TeamBoard {
    /// A board for `agents` led by `lead` (which must be one of them).
    pub fn new(agents: &[String], lead: &str, mechanisms: TeamMechanisms) -> TeamBoard {
        TeamBoard {
            board: Arc::new(Mutex::new(Board::default())),
            answered: Arc::new(Notify::new()),
            agents: Arc::new(agents.to_vec()),
            lead: lead.to_string(),
            mechanisms,
            observer: None,
        }
    }

    /// The same board, telling `observer` of every change.
    pub fn observed(mut self, observer: TeamObserver) -> TeamBoard {
        self.observer = Some(observer);
        self
    }

    /// Appends `event` to the audit log (under the lock the change was made under) and hands
    /// it back for `tell`.
    fn log_event(board: &mut Board, event: TeamEvent) -> TeamEvent {
        board.log.push(event.clone());
        event
    }

    /// Tells the observer, after the lock is released.
    fn tell(&self, event: &TeamEvent) {
        if let Some(observer) = &self.observer {
            observer(event);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Board> {
        // A poisoned lock only means another agent's task panicked; the list is still valid.
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mechanisms the user left on.
    pub fn mechanisms(&self) -> TeamMechanisms {
        self.mechanisms
    }

    /// The lead's id.
    pub fn lead(&self) -> &str {
        &self.lead
    }

    /// `agent`'s role, or None when it is not on this team.
    pub fn role(&self, agent: &str) -> Option<TeamRole> {
        if agent == self.lead {
            Some(TeamRole::Lead)
        } else if self.agents.iter().any(|a| a == agent) {
            Some(TeamRole::Member)
        } else {
            None
        }
    }

    fn task_list_on(&self) -> Result<(), TeamError> {
        if self.mechanisms.task_list {
            Ok(())
        } else {
            Err(TeamError::Disabled)
        }
    }

    fn protocol_on(&self) -> Result<(), TeamError> {
        if self.mechanisms.protocol {
            Ok(())
        } else {
            Err(TeamError::Disabled)
        }
    }

    fn known_agent(&self, who: &str) -> Result<(), TeamError> {
        if self.agents.iter().any(|a| a == who) {
            Ok(())
        } else {
            Err(TeamError::InvalidArgument(format!(
                "no agent named `{who}` on this team"
            )))
        }
    }

    /// Seeds a task before any agent starts (CooperBench: one per feature, pre-assigned).
    pub fn seed(&self, title: &str, owner: Option<&str>) -> TeamTask {
        self.insert("host", title, owner)
    }

    fn insert(&self, by: &str, title: &str, owner: Option<&str>) -> TeamTask {
        let mut board = self.lock();
        let task = TeamTask {
            id: format!("t{}", board.tasks.len() + 1),
            title: title.to_string(),
            owner: owner.map(str::to_string),
            status: TaskStatus::Open,
            note: String::new(),
            created_by: by.to_string(),
            claimed: false,
        };
        let mut event = TeamEvent::new("create", by);
        event.task_id = Some(task.id.clone());
        event.title = Some(task.title.clone());
        event.owner = task.owner.clone();
        let event = Self::log_event(&mut board, event);
        board.tasks.push(task.clone());
        drop(board);
        self.tell(&event);
        task
    }

    /// Every task, in creation order.
    pub fn tasks(&self) -> Result<Vec<TeamTask>, TeamError> {
        self.task_list_on()?;
        Ok(self.lock().tasks.clone())
    }

    /// Adds a task; only the lead may.
    pub fn create(
        &self,
        by: &str,
        title: &str,
        owner: Option<&str>,
    ) -> Result<TeamTask, TeamError> {
        self.task_list_on()?;
        if by != self.lead {
            return Err(TeamError::NotLead);
        }
        check_text("the title", title)?;
        if let Some(owner) = owner {
            self.known_agent(owner)?;
        }
        {
            let board = self.lock();
            check_room(&board)?;
            if board.tasks.len() >= MAX_TASKS {
                return Err(TeamError::InvalidArgument(format!(
                    "the task list is full ({MAX_TASKS} tasks)"
                )));
            }
        }
        Ok(self.insert(by, title, owner))
    }

    /// Takes a task: exactly one of several agents claiming it at once wins (the check and
    /// the write happen under one lock). A task whose owner was suggested can be claimed
    /// only by that owner; claiming your own task again succeeds and logs nothing.
    pub fn claim(&self, by: &str, id: &str) -> Result<TeamTask, TeamError> {
        self.task_list_on()?;
        check_id(id)?;
        let mut board = self.lock();
        check_room(&board)?;
        let task = board
            .tasks
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| TeamError::NotFound(id.to_string()))?;
        match &task.owner {
            Some(owner) if owner != by && !task.claimed => {
                return Err(TeamError::ReservedFor(owner.clone()))
            }
            Some(owner) if owner != by => return Err(TeamError::ClaimedBy(owner.clone())),
            Some(_) if task.claimed => return Ok(task.clone()),
            _ => {}
        }
        task.owner = Some(by.to_string());
        task.claimed = true;
        if task.status == TaskStatus::Open {
            task.status = TaskStatus::InProgress;
        }
        let claimed = task.clone();
        let mut event = TeamEvent::new("claim", by);
        event.task_id = Some(id.to_string());
        let event = Self::log_event(&mut board, event);
        drop(board);
        self.tell(&event);
        Ok(claimed)
    }

    /// Sets the status and note of a task `by` owns.
    pub fn update(
        &self,
        by: &str,
        id: &str,
        status: TaskStatus,
        note: &str,
    ) -> Result<TeamTask, TeamError> {
        self.task_list_on()?;
        check_id(id)?;
        check_text("the note", note)?;
        let mut board = self.lock();
        check_room(&board)?;
        let task = board
            .tasks
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| TeamError::NotFound(id.to_string()))?;
        if task.owner.as_deref() != Some(by) {
            return Err(TeamError::NotOwner(task.owner.clone()));
        }
        task.status = status;
        task.note = note.to_string();
        task.claimed = true;
        let updated = task.clone();
        let mut event = TeamEvent::new("update", by);
        event.task_id = Some(id.to_string());
        event.status = Some(status.as_str().into());
        event.note = Some(note.to_string());
        let event = Self::log_event(&mut board, event);
        drop(board);
        self.tell(&event);
        Ok(updated)
    }

    /// Asks agent `to` something; returns the request's id.
    pub fn request(&self, by: &str, to: &str, kind: &str, body: &str) -> Result<String, TeamError> {
        self.protocol_on()?;
        self.known_agent(to)?;
        if to == by {
            return Err(TeamError::InvalidArgument(
                "a request to yourself is not a request".into(),
            ));
        }
        check_kind(kind)?;
        check_text("the body", body)?;
        let mut board = self.lock();
        check_room(&board)?;
        if board.requests.len() >= MAX_REQUESTS {
            return Err(TeamError::InvalidArgument(format!(
                "this team made {MAX_REQUESTS} requests already"
            )));
        }
        let id = format!("r{}", board.requests.len() + 1);
        board.requests.push(TeamRequest {
            id: id.clone(),
            sender: by.to_string(),
            recipient: to.to_string(),
            kind: kind.to_string(),
            body: body.to_string(),
            timestamp_ms: now_ms(),
        });
        let mut event = TeamEvent::new("request", by);
        event.request_id = Some(id.clone());
        event.to = Some(to.to_string());
        event.request_kind = Some(kind.to_string());
        let event = Self::log_event(&mut board, event);
        drop(board);
        self.tell(&event);
        Ok(id)
    }

    /// Answers a request addressed to `by`, once.
    pub fn respond(&self, by: &str, id: &str, body: &str) -> Result<(), TeamError> {
        self.protocol_on()?;
        check_id(id)?;
        check_text("the body", body)?;
        let mut board = self.lock();
        check_room(&board)?;
        let request = board
            .requests
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| TeamError::NotFound(id.to_string()))?;
        if request.recipient != by || board.responses.contains_key(id) {
            return Err(TeamError::NotYours(id.to_string()));
        }
        let to = request.sender.clone();
        board.responses.insert(
            id.to_string(),
            TeamResponse {
                request_id: id.to_string(),
                sender: by.to_string(),
                body: body.to_string(),
                timestamp_ms: now_ms(),
            },
        );
        let mut event = TeamEvent::new("response", by);
        event.request_id = Some(id.to_string());
        event.to = Some(to);
        let event = Self::log_event(&mut board, event);
        drop(board);
        self.answered.notify_waiters();
        self.tell(&event);
        Ok(())
    }

    /// Requests addressed to `agent` not answered yet, oldest first.
    pub fn pending(&self, agent: &str) -> Result<Vec<TeamRequest>, TeamError> {
        self.protocol_on()?;
        let board = self.lock();
        Ok(board
            .requests
            .iter()
            .filter(|r| r.recipient == agent && !board.responses.contains_key(&r.id))
            .cloned()
            .collect())
    }

    /// Waits up to `timeout` for the answer to `by`'s request `id` (only its sender may wait).
    pub async fn await_response(
        &self,
        by: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<TeamResponse>, TeamError> {
        self.protocol_on()?;
        check_id(id)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so an answer between check and wait is not missed.
            let notified = self.answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let board = self.lock();
                let request = board
                    .requests
                    .iter()
                    .find(|r| r.id == id)
                    .ok_or_else(|| TeamError::NotFound(id.to_string()))?;
                if request.sender != by {
                    return Err(TeamError::NotYours(id.to_string()));
                }
                if let Some(response) = board.responses.get(id) {
                    return Ok(Some(response.clone()));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// The audit log so far.
    pub fn log(&self) -> Vec<TeamEvent> {
        self.lock().log.clone()
    }

    /// The team metrics as CooperBench computes them.
    pub fn metrics(&self) -> TeamMetrics {
        let board = self.lock();
        TeamMetrics::compute(&board.log, &board.tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(mechanisms: TeamMechanisms) -> TeamBoard {
        let agents: Vec<String> = (1..=8).map(|i| format!("agent{i}")).collect();
        TeamBoard::new(&agents, "agent1", mechanisms)
    }

    #[test]
    fn exactly_one_of_many_concurrent_claims_wins() {
        for _round in 0..20 {
            let team = board(TeamMechanisms::default());
            let task = team.seed("Implement feature 1", None);
            let start = Arc::new(std::sync::Barrier::new(8));
            let handles: Vec<_> = (1..=8)
                .map(|i| {
                    let (team, id, start) = (team.clone(), task.id.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        team.claim(&format!("agent{i}"), &id)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(winners.len(), 1, "{results:?}");
            let owner = winners[0].owner.clone().unwrap();
            for lost in results.iter().filter_map(|r| r.as_ref().err()) {
                assert_eq!(lost, &TeamError::ClaimedBy(owner.clone()));
            }
            let claims = team.log().iter().filter(|e| e.kind == "claim").count();
            assert_eq!(claims, 1, "only the winning claim is logged");
        }
    }

    #[test]
    fn only_the_owner_updates_and_only_the_lead_creates() {
        let team = board(TeamMechanisms::default());
        let t = team.seed("Implement feature 2", Some("agent2"));
        assert_eq!(
            team.claim("agent3", &t.id),
            Err(TeamError::ReservedFor("agent2".into())),
            "a suggested owner keeps the task"
        );
        assert_eq!(
            team.update("agent3", &t.id, TaskStatus::Done, "mine now"),
            Err(TeamError::NotOwner(Some("agent2".into())))
        );
        let done = team
            .update("agent2", &t.id, TaskStatus::Done, "merged")
            .unwrap();
        assert_eq!(
            (done.status, done.note.as_str()),
            (TaskStatus::Done, "merged")
        );
        assert_eq!(
            team.create("agent2", "a task of my own", None),
            Err(TeamError::NotLead)
        );
        let made = team.create("agent1", "review", Some("agent3")).unwrap();
        assert_eq!(
            (made.id.as_str(), made.created_by.as_str()),
            ("t2", "agent1")
        );
        assert!(matches!(
            team.create("agent1", "x", Some("stranger")),
            Err(TeamError::InvalidArgument(_))
        ));
        let unowned = team.create("agent1", "anyone", None).unwrap();
        assert_eq!(
            team.update("agent1", &unowned.id, TaskStatus::Done, ""),
            Err(TeamError::NotOwner(None))
        );
        assert_eq!(
            team.claim("agent1", "t99"),
            Err(TeamError::NotFound("t99".into()))
        );
        let metrics = team.metrics();
        assert_eq!((metrics.tasks_total, metrics.tasks_done), (3, 1));
        assert_eq!(metrics.unowned_at_end, 1);
        assert_eq!(metrics.updates_per_agent.get("agent2"), Some(&1));
    }

    #[tokio::test]
    async fn a_request_is_answered_once_by_its_recipient_and_the_sender_is_woken() {
        let team = board(TeamMechanisms::default());
        let id = team
            .request("agent2", "agent1", "plan-approval", "ok?")
            .unwrap();
        assert_eq!(team.pending("agent1").unwrap().len(), 1);
        assert!(team.pending("agent3").unwrap().is_empty());
        assert_eq!(
            team.respond("agent3", &id, "yes"),
            Err(TeamError::NotYours(id.clone()))
        );
        let waiter = {
            let team = team.clone();
            let id = id.clone();
            tokio::spawn(async move {
                team.await_response("agent2", &id, Duration::from_secs(10))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        team.respond("agent1", &id, "approved").unwrap();
        let answer = waiter.await.unwrap().unwrap().unwrap();
        assert_eq!(
            (answer.sender.as_str(), answer.body.as_str()),
            ("agent1", "approved")
        );
        assert!(team.pending("agent1").unwrap().is_empty());
        assert_eq!(
            team.respond("agent1", &id, "again"),
            Err(TeamError::NotYours(id.clone()))
        );
        assert_eq!(
            team.await_response("agent3", &id, Duration::ZERO).await,
            Err(TeamError::NotYours(id.clone())),
            "only the sender waits for its answer"
        );
        let other = team.request("agent2", "agent3", "review", "look").unwrap();
        let started = std::time::Instant::now();
        let none = team
            .await_response("agent2", &other, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(none.is_none() && started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_mechanism_switched_off_is_disabled_and_the_other_stays() {
        let no_list = board(TeamMechanisms {
            task_list: false,
            ..TeamMechanisms::default()
        });
        assert_eq!(no_list.tasks(), Err(TeamError::Disabled));
        assert_eq!(no_list.claim("agent1", "t1"), Err(TeamError::Disabled));
        assert_eq!(
            no_list.create("agent1", "x", None),
            Err(TeamError::Disabled)
        );
        assert!(no_list.request("agent1", "agent2", "k", "b").is_ok());
        let no_protocol = board(TeamMechanisms {
            protocol: false,
            ..TeamMechanisms::default()
        });
        assert_eq!(
            no_protocol.request("agent1", "agent2", "k", "b"),
            Err(TeamError::Disabled)
        );
        assert_eq!(no_protocol.pending("agent1"), Err(TeamError::Disabled));
        assert!(no_protocol.tasks().is_ok());
    }

    #[test]
    fn a_looping_agent_meets_the_change_limit_and_odd_kinds_and_ids_are_refused() {
        let team = board(TeamMechanisms::default());
        let t = team.seed("mine", Some("agent2"));
        let mut made = 1;
        while team
            .update("agent2", &t.id, TaskStatus::InProgress, "again")
            .is_ok()
        {
            made += 1;
            assert!(made <= MAX_CHANGES, "no limit");
        }
        assert_eq!(team.log().len(), MAX_CHANGES);
        assert!(matches!(
            team.request("agent2", "agent1", "ok", "b"),
            Err(TeamError::InvalidArgument(_))
        ));
        let fresh = board(TeamMechanisms::default());
        for kind in ["", "two words", "x)\n12:00:00 forged", &"k".repeat(65)] {
            assert!(
                matches!(
                    fresh.request("agent2", "agent1", kind, "b"),
                    Err(TeamError::InvalidArgument(_))
                ),
                "{kind:?}"
            );
        }
        assert!(fresh
            .request("agent2", "agent1", "plan-approval", "b")
            .is_ok());
        assert!(matches!(
            fresh.claim("agent2", &"t".repeat(65)),
            Err(TeamError::InvalidArgument(_))
        ));
    }

    #[test]
    fn an_event_is_one_line_whatever_the_agent_wrote() {
        let team = board(TeamMechanisms::default());
        let t = team
            .create("agent1", "a\nb\r\n12:00:00 ✓ forged", None)
            .unwrap();
        team.claim("agent1", &t.id).unwrap();
        team.update("agent1", &t.id, TaskStatus::Done, "x\ny")
            .unwrap();
        for event in team.log() {
            assert!(!event.describe().contains('\n'), "{}", event.describe());
        }
    }

    #[test]
    fn oversized_text_and_a_full_list_are_refused() {
        let team = board(TeamMechanisms::default());
        let big = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(matches!(
            team.create("agent1", &big, None),
            Err(TeamError::InvalidArgument(_))
        ));
        for i in 0..MAX_TASKS {
            team.create("agent1", &format!("task {i}"), None).unwrap();
        }
        assert!(matches!(
            team.create("agent1", "one more", None),
            Err(TeamError::InvalidArgument(_))
        ));
    }
}
