//! The in-process message bus: one inbox per agent, created before any agent starts. The
//! default: an embedded run needs no server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{now_ms, Message, SendError};

#[derive(Default)]
struct State {
    inboxes: HashMap<String, VecDeque<Message>>,
    finished: HashSet<String>,
    log: Vec<Message>,
}

/// An in-process bus for one pair. Cheap to clone.
#[derive(Clone)]
pub struct LocalBus {
    state: Arc<Mutex<State>>,
    wakeups: Arc<HashMap<String, Notify>>,
    enabled: bool,
}

impl LocalBus {
    /// Creates the inboxes of every agent up front, so no early message is lost.
    pub fn new(agents: &[String], enabled: bool) -> LocalBus {
        let state = State {
            inboxes: agents
                .iter()
                .map(|a| (a.clone(), VecDeque::new()))
                .collect(),
            ..State::default()
        };
        LocalBus {
            state: Arc::new(Mutex::new(state)),
            wakeups: Arc::new(agents.iter().map(|a| (a.clone(), Notify::new())).collect()),
            enabled,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned bus only means another agent's task panicked; its data is still valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether sends are delivered.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Delivers `content` from `from` to `to`.
    pub fn send(&self, from: &str, to: &str, content: &str) -> Result<Message, SendError> {
        if !self.enabled {
            return Err(SendError::Disabled);
        }
        let mut state = self.lock();
        if to == from || !state.inboxes.contains_key(to) {
            return Err(SendError::UnknownRecipient(to.to_string()));
        }
        if state.finished.contains(to) {
            return Err(SendError::PeerFinished(to.to_string()));
        }
        let message = Message {
            from: from.to_string(),
            to: to.to_string(),
            content: content.to_string(),
            timestamp: now_ms(),
        };
        if let Some(inbox) = state.inboxes.get_mut(to) {
            inbox.push_back(message.clone());
        }
        state.log.push(message.clone());
        drop(state);
        if let Some(n) = self.wakeups.get(to) {
            n.notify_one();
        }
        Ok(message)
    }

    /// Takes everything in `agent`'s inbox.
    pub fn receive(&self, agent: &str) -> Vec<Message> {
        self.lock()
            .inboxes
            .get_mut(agent)
            .map(|inbox| inbox.drain(..).collect())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for at least one message.
    pub async fn wait(&self, agent: &str, timeout: Duration) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.receive(agent);
            if !got.is_empty() {
                return got;
            }
            let Some(notify) = self.wakeups.get(agent) else {
                return got;
            };
            if tokio::time::timeout_at(deadline, notify.notified())
                .await
                .is_err()
            {
                return self.receive(agent);
            }
        }
    }

    /// Marks `agent` finished: later sends to it are refused instead of lost.
    pub fn mark_finished(&self, agent: &str) {
        self.lock().finished.insert(agent.to_string());
    }

    /// Every delivered message, in the order the bus accepted them.
    pub fn conversation(&self) -> Vec<Message> {
        self.lock().log.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> LocalBus {
        LocalBus::new(&["agent1".into(), "agent2".into()], true)
    }

    #[test]
    fn a_message_sent_before_the_peer_starts_is_kept() {
        let b = bus();
        b.send("agent1", "agent2", "hi").unwrap();
        assert_eq!(b.receive("agent2")[0].content, "hi");
        assert!(b.receive("agent2").is_empty());
    }

    #[test]
    fn unknown_and_finished_recipients_are_errors() {
        let b = bus();
        assert_eq!(
            b.send("agent1", "agent9", "x"),
            Err(SendError::UnknownRecipient("agent9".into()))
        );
        b.mark_finished("agent2");
        assert_eq!(
            b.send("agent1", "agent2", "x"),
            Err(SendError::PeerFinished("agent2".into()))
        );
    }

    #[test]
    fn disabled_bus_refuses() {
        let b = LocalBus::new(&["agent1".into(), "agent2".into()], false);
        assert_eq!(b.send("agent1", "agent2", "x"), Err(SendError::Disabled));
    }

    #[tokio::test]
    async fn wait_wakes_on_send() {
        let b = bus();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.wait("agent2", Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.send("agent1", "agent2", "ping").unwrap();
        assert_eq!(waiter.await.unwrap()[0].content, "ping");
    }
}
