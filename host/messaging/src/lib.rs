//! Messages between the agents of a pair: one behaviour, two buses. The in-process bus is the
//! default (an embedded run needs no server); `--redis URL` puts the same conversation in Redis
//! with CooperBench's key protocol, so other processes (`cbench watch`, other machines) can see
//! it. Both refuse a send to a finished peer (`peer-finished`, never a silent loss) and give
//! the run the conversation in the order the bus accepted the messages (conversation.json).
//!
//! Also the live event log of a run (`events`, what `cbench watch` follows). Knows nothing of
//! sandboxes, plugins or grading.

pub mod events;
mod local;
pub mod redis;
pub mod team;

use std::time::Duration;

pub use local::LocalBus;
pub use redis::{RedisBus, RedisHub};

pub use cbench_core::message::Message;

/// Why a send failed; the agent sees this.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SendError {
    #[error("no agent named `{0}` in this pair")]
    UnknownRecipient(String),
    #[error("`{0}` has already finished and will not read messages")]
    PeerFinished(String),
    #[error("messaging is disabled in this run")]
    Disabled,
    /// Over the run's message size or count limit (the agent's doing; nothing was sent).
    #[error("not sent: {0}")]
    OverLimit(String),
    /// The bus's server stayed unreachable past the outage bound: an infrastructure failure.
    #[error("the message bus is unreachable: {0}")]
    Unavailable(String),
}

/// The bus's server stayed unreachable past the outage bound.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("the message bus is unreachable: {0}")]
pub struct BusUnavailable(pub String);

/// The message bus of one pair. Cheap to clone.
#[derive(Clone)]
pub enum MessageBus {
    Local(LocalBus),
    Redis(RedisBus),
}

impl MessageBus {
    /// An in-process bus (the default).
    pub fn local(agents: &[String], enabled: bool) -> MessageBus {
        MessageBus::Local(LocalBus::new(agents, enabled))
    }

    /// Whether sends are delivered.
    pub fn enabled(&self) -> bool {
        match self {
            MessageBus::Local(b) => b.enabled(),
            MessageBus::Redis(b) => b.enabled(),
        }
    }

    /// Delivers `content` from `from` to `to`.
    pub async fn send(&self, from: &str, to: &str, content: &str) -> Result<Message, SendError> {
        match self {
            MessageBus::Local(b) => b.send(from, to, content),
            MessageBus::Redis(b) => b.send(from, to, content).await,
        }
    }

    /// Takes everything in `agent`'s inbox (never blocks on an empty inbox).
    pub async fn receive(&self, agent: &str) -> Result<Vec<Message>, BusUnavailable> {
        match self {
            MessageBus::Local(b) => Ok(b.receive(agent)),
            MessageBus::Redis(b) => b.receive(agent).await,
        }
    }

    /// Waits up to `timeout` for at least one message.
    pub async fn wait(
        &self,
        agent: &str,
        timeout: Duration,
    ) -> Result<Vec<Message>, BusUnavailable> {
        match self {
            MessageBus::Local(b) => Ok(b.wait(agent, timeout).await),
            MessageBus::Redis(b) => b.wait(agent, timeout).await,
        }
    }

    /// Marks `agent` finished: later sends to it are refused instead of lost.
    pub async fn mark_finished(&self, agent: &str) -> Result<(), BusUnavailable> {
        match self {
            MessageBus::Local(b) => {
                b.mark_finished(agent);
                Ok(())
            }
            MessageBus::Redis(b) => b.mark_finished(agent).await,
        }
    }

    /// Every delivered message, in the order the bus accepted them.
    pub async fn conversation(&self) -> Result<Vec<Message>, BusUnavailable> {
        match self {
            MessageBus::Local(b) => Ok(b.conversation()),
            MessageBus::Redis(b) => b.conversation().await,
        }
    }

    /// Releases what the bus holds outside this process (Redis keys of the pair).
    pub async fn close(&self) {
        if let MessageBus::Redis(b) = self {
            b.close().await;
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
