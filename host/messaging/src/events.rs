//! A run's live events — pairs starting and finishing, messages as they are sent — appended to
//! `<run>/events.jsonl` (one JSON object per line, flushed per event) and, with `--redis`,
//! published on `cbench:<run>:events`. `cbench watch` follows either from another terminal or
//! machine. Writing events never fails a run: a full disk or a gone Redis only costs the watcher.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::{Message, RedisHub};

/// The file events are appended to, in the run directory.
pub const EVENTS_FILE: &str = "events.jsonl";

/// One event of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// An invocation started working on the run (one per shard).
    RunStarted {
        run: String,
        pairs: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<String>,
        at: String,
    },
    /// A pair's agents are starting.
    PairStarted { pair: String, at: String },
    /// A message was delivered.
    Message { pair: String, message: Message },
    /// The team setting's task list or requests changed (one audit-log event).
    Team {
        pair: String,
        event: crate::team::TeamEvent,
    },
    /// A pair is done: `success`, `failed`, `infra error` or `not graded`.
    PairFinished {
        pair: String,
        outcome: String,
        duration_s: f64,
        at: String,
    },
    /// The invocation finished (every pair of its selection ran).
    RunFinished {
        run: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<String>,
        at: String,
    },
}

/// Where a run's events go.
pub struct EventLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    redis: Option<RedisHub>,
}

impl EventLog {
    /// Appends to `<run_dir>/events.jsonl` (created if missing) and publishes to `redis`.
    pub fn open(run_dir: &Path, redis: Option<RedisHub>) -> Arc<EventLog> {
        let path = run_dir.join(EVENTS_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| {
                tracing::warn!("no live events for `cbench watch`: {}: {e}", path.display())
            })
            .ok();
        Arc::new(EventLog {
            path,
            file: Mutex::new(file),
            redis,
        })
    }

    /// Records `event`: one line, written whole (O_APPEND), then published.
    pub fn emit(&self, event: Event) {
        let Ok(mut line) = serde_json::to_string(&event) else {
            return;
        };
        line.push('\n');
        {
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = file.as_mut() {
                if let Err(e) = f.write_all(line.as_bytes()) {
                    tracing::warn!(
                        "{}: {e}; `cbench watch` will miss events",
                        self.path.display()
                    );
                    *file = None;
                }
            }
        }
        if let Some(hub) = &self.redis {
            let hub = hub.clone();
            let value = serde_json::to_value(&event).unwrap_or_default();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { hub.publish(&value).await });
            }
        }
    }
}

/// A pair's view of the event log (what agents' messages are tagged with).
#[derive(Clone)]
pub struct PairEvents {
    pub log: Arc<EventLog>,
    pub pair: String,
}

impl PairEvents {
    /// Records a change of the team's task list or requests.
    pub fn team(&self, event: &crate::team::TeamEvent) {
        self.log.emit(Event::Team {
            pair: self.pair.clone(),
            event: event.clone(),
        });
    }

    /// Records a delivered message.
    pub fn message(&self, message: &Message) {
        self.log.emit(Event::Message {
            pair: self.pair.clone(),
            message: message.clone(),
        });
    }
}

/// `HH:MM:SS` of an RFC 3339 time (or of a Unix time in milliseconds).
fn clock(at: &str) -> String {
    at.get(11..19).unwrap_or(at).to_string()
}

fn clock_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

impl Event {
    /// The line `cbench watch` prints for it: agents' words (messages, test names) are shown,
    /// never obeyed by the terminal (escape sequences, carriage returns and bidi overrides are
    /// written out).
    pub fn render(&self) -> String {
        cbench_core::progress::printable(&self.render_raw())
    }

    fn render_raw(&self) -> String {
        match self {
            Event::RunStarted {
                run,
                pairs,
                shard,
                at,
            } => format!(
                "{} run {run} started: {pairs} pairs{}",
                clock(at),
                shard
                    .as_ref()
                    .map(|s| format!(" (shard {s})"))
                    .unwrap_or_default()
            ),
            Event::PairStarted { pair, at } => format!("{} ▶ {pair}", clock(at)),
            Event::Message { pair, message } => {
                let flat: String = message
                    .content
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let excerpt: String = flat.chars().take(160).collect();
                let more = if flat.chars().count() > 160 {
                    "…"
                } else {
                    ""
                };
                format!(
                    "{} {pair} · {} → {}: \"{excerpt}{more}\"",
                    clock_ms(message.timestamp),
                    message.from,
                    message.to
                )
            }
            Event::Team { pair, event } => {
                format!(
                    "{} {pair} · {}",
                    clock_ms((event.ts * 1000.0) as u64),
                    event.describe()
                )
            }
            Event::PairFinished {
                pair,
                outcome,
                duration_s,
                at,
            } => {
                let mark = match outcome.as_str() {
                    "success" => "✓",
                    "not graded" => "·",
                    _ => "✗",
                };
                format!("{} {mark} {pair} {outcome} ({duration_s:.1}s)", clock(at))
            }
            Event::RunFinished { run, shard, at } => format!(
                "{} run {run} finished{}",
                clock(at),
                shard
                    .as_ref()
                    .map(|s| format!(" (shard {s})"))
                    .unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_json_line_each_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), None);
        log.emit(Event::PairStarted {
            pair: "r/task1 features_1_2".into(),
            at: "2026-12-01T08:00:00.000Z".into(),
        });
        let events = PairEvents {
            log: log.clone(),
            pair: "r/task1 features_1_2".into(),
        };
        events.message(&Message {
            from: "agent1".into(),
            to: "agent2".into(),
            content: "I edit\nstrings.py".into(),
            timestamp: 1_764_576_000_000,
        });
        let text = std::fs::read_to_string(dir.path().join(EVENTS_FILE)).unwrap();
        let lines: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].render(), "08:00:00 ▶ r/task1 features_1_2");
        assert!(lines[1]
            .render()
            .ends_with("r/task1 features_1_2 · agent1 → agent2: \"I edit strings.py\""));
    }

    #[test]
    fn an_agents_escape_codes_are_shown_not_obeyed_by_watch() {
        let hostile = Event::Message {
            pair: "r/task1 features_1_2".into(),
            message: Message {
                from: "agent1".into(),
                to: "agent2".into(),
                content:
                    "\u{1b}[2J\u{1b}]0;TITLE\u{7}\u{1b}]8;;file:///etc/passwd\u{7}link \u{202e}evil"
                        .into(),
                timestamp: 1_764_576_000_000,
            },
        };
        let line = hostile.render();
        assert!(
            !line.contains('\u{1b}') && !line.contains('\u{7}') && !line.contains('\u{202e}'),
            "{line:?}"
        );
        assert!(
            line.contains("\\u{1b}[2J") && line.contains("\\u{202e}evil"),
            "{line}"
        );
    }
}
