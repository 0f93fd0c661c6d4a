//! The Redis bus (`--redis URL`): CooperBench's key protocol — one list per inbox,
//! `run:<run_id>:<agent>:inbox`, RPUSH of JSON `{from, to, content, timestamp}` — namespaced per
//! pair execution (`run_id` = run name, pair and a nonce) so concurrent runs never mix, plus what
//! CooperBench lacks:
//!
//! - liveness: a finished agent is in `run:<id>:finished`; a send to it is `peer-finished`,
//!   decided atomically with the push (a Lua script), never a silent loss;
//! - `wait` blocks on the server (BLPOP on the agent's `…:wake` list);
//! - exactly once across outages: every send carries an id (`run:<id>:sent`), so a send retried
//!   after a lost reply is not delivered twice; a reader keeps a cursor (`…:read`) and never
//!   pops, so a lost reply loses nothing;
//! - outages: every operation is retried with backoff while Redis is unreachable, up to a bound,
//!   after which the agent sees an error and the pair is an infrastructure error;
//! - cleanup: the pair's keys are deleted when it ends, and expire after a day regardless.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, RedisResult, Script};
use serde::{Deserialize, Serialize};

use super::{now_ms, BusUnavailable, Message, SendError};

/// How long a bus keeps retrying while Redis is unreachable before giving up.
pub const DEFAULT_OUTAGE_LIMIT: Duration = Duration::from_secs(60);
/// Keys of a pair expire after this long even if cbench dies before deleting them.
const KEY_TTL_SECS: u64 = 24 * 3600;
/// First and longest wait between retries during an outage.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why Redis could not be used at the start of a run.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("--redis {url}: not a Redis URL: {reason} (example: redis://localhost:6379)")]
    BadUrl { url: String, reason: String },
    #[error("--redis {url}: cannot reach Redis: {reason} (is redis-server running there?)")]
    Unreachable { url: String, reason: String },
}

/// The message as stored in Redis: CooperBench's fields plus an id for exactly-once delivery.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    from: String,
    to: String,
    content: String,
    timestamp: u64,
    #[serde(default)]
    id: String,
}

/// A URL safe to print: the password, if any, replaced.
pub fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// One Redis server for a whole run: the client and a reconnecting connection shared by
/// every pair's bus.
#[derive(Clone)]
pub struct RedisHub {
    client: Client,
    manager: ConnectionManager,
    url: String,
    run_name: String,
    outage_limit: Duration,
}

impl RedisHub {
    /// Connects (and pings) before any work starts, so a wrong URL or a stopped server is a
    /// clear error naming it.
    pub async fn connect(url: &str, run_name: &str) -> Result<RedisHub, RedisSetupError> {
        let client = Client::open(url).map_err(|e| RedisSetupError::BadUrl {
            url: shown(url),
            reason: e.to_string(),
        })?;
        let unreachable = |reason: String| RedisSetupError::Unreachable {
            url: shown(url),
            reason,
        };
        // Reconnect quickly and give up fast: our own retry loop (`retrying`) decides how long
        // an outage may last. The crate's default factor (100, fed to backon as the growth
        // factor over a 1 s minimum) waits 100 s before a second reconnect.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(10))
            .set_factor(2)
            .set_max_delay(500)
            .set_number_of_retries(1);
        let connect = ConnectionManager::new_with_config(client.clone(), config);
        let mut manager = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| unreachable("no answer in 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut manager)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if pong != "PONG" {
            return Err(unreachable(format!("PING answered `{pong}`")));
        }
        Ok(RedisHub {
            client,
            manager,
            url: shown(url),
            run_name: run_name.to_string(),
            outage_limit: DEFAULT_OUTAGE_LIMIT,
        })
    }

    /// The same hub with another outage bound (tests, impatient users).
    pub fn with_outage_limit(mut self, limit: Duration) -> RedisHub {
        self.outage_limit = limit;
        self
    }

    /// The URL, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A bus for one pair execution, in its own key namespace.
    pub fn bus(&self, pair_key: &str, agents: &[String], enabled: bool) -> RedisBus {
        let nonce = format!(
            "{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        RedisBus {
            inner: Arc::new(Inner {
                hub: self.clone(),
                run_id: format!("{}:{pair_key}:{nonce}", self.run_name),
                agents: agents.to_vec(),
                enabled,
            }),
        }
    }

    /// The channel `cbench watch` follows for this run.
    pub fn events_channel(run_name: &str) -> String {
        format!("cbench:{run_name}:events")
    }

    /// Publishes a run event on the run's channel (best effort: watching is optional).
    pub async fn publish(&self, event: &serde_json::Value) {
        let mut conn = self.manager.clone();
        let channel = RedisHub::events_channel(&self.run_name);
        let result: RedisResult<i64> = conn.publish(channel, event.to_string()).await;
        if let Err(e) = result {
            tracing::debug!("not published to Redis: {e}");
        }
    }
}

struct Inner {
    hub: RedisHub,
    run_id: String,
    agents: Vec<String>,
    enabled: bool,
}

/// A Redis bus for one pair. Cheap to clone.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

/// Pushes a message unless its id was already delivered (→ 1) or the recipient finished (→ 0).
const SEND_SCRIPT: &str = r#"
if redis.call('SISMEMBER', KEYS[5], ARGV[3]) == 1 then return 1 end
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return 0 end
redis.call('SADD', KEYS[5], ARGV[3])
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('RPUSH', KEYS[2], '1')
redis.call('RPUSH', KEYS[4], ARGV[2])
for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"#;

/// Returns the reader's cursor followed by every message after it (nothing is popped).
const READ_SCRIPT: &str = r#"
local from = tonumber(redis.call('GET', KEYS[2]) or '0')
local items = redis.call('LRANGE', KEYS[1], from, -1)
table.insert(items, 1, tostring(from))
return items
"#;

impl RedisBus {
    fn key(&self, agent: &str, what: &str) -> String {
        format!("run:{}:{agent}:{what}", self.inner.run_id)
    }

    fn pair_key(&self, what: &str) -> String {
        format!("run:{}:{what}", self.inner.run_id)
    }

    /// The namespace of this pair's keys (`run:<run_id>:…`).
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// Whether sends are delivered.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Runs `op` until it succeeds, retrying with backoff while Redis is unreachable, up to the
    /// hub's outage bound.
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, BusUnavailable>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let started = Instant::now();
        let limit = self.inner.hub.outage_limit;
        let mut delay = BACKOFF_FIRST;
        let mut warned = false;
        loop {
            // No single attempt may outlive the outage bound.
            let budget = limit.saturating_sub(started.elapsed()).max(BACKOFF_MAX);
            let attempt = tokio::time::timeout(budget, op(self.inner.hub.manager.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "no answer",
                    )))
                });
            match attempt {
                Ok(v) => {
                    if warned {
                        tracing::warn!(
                            "Redis at {} is back: {what} went through",
                            self.inner.hub.url
                        );
                    }
                    return Ok(v);
                }
                Err(e) if started.elapsed() < limit => {
                    if !warned {
                        tracing::warn!(
                            "Redis at {}: {what} failed ({e}); retrying for up to {}s",
                            self.inner.hub.url,
                            limit.as_secs()
                        );
                        warned = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
                Err(e) => {
                    return Err(BusUnavailable(format!(
                        "Redis at {}: {what} failed for {}s: {e}",
                        self.inner.hub.url,
                        started.elapsed().as_secs()
                    )))
                }
            }
        }
    }

    /// Delivers `content` from `from` to `to`.
    pub async fn send(&self, from: &str, to: &str, content: &str) -> Result<Message, SendError> {
        if !self.inner.enabled {
            return Err(SendError::Disabled);
        }
        if to == from || !self.inner.agents.iter().any(|a| a == to) {
            return Err(SendError::UnknownRecipient(to.to_string()));
        }
        let message = Message {
            from: from.to_string(),
            to: to.to_string(),
            content: content.to_string(),
            timestamp: now_ms(),
        };
        let id = format!("{}-{}-{}", from, message.timestamp, rand_suffix());
        let stored = Stored {
            from: message.from.clone(),
            to: message.to.clone(),
            content: message.content.clone(),
            timestamp: message.timestamp,
            id: id.clone(),
        };
        let json =
            serde_json::to_string(&stored).map_err(|e| SendError::Unavailable(e.to_string()))?;
        let keys = [
            self.key(to, "inbox"),
            self.key(to, "wake"),
            self.pair_key("finished"),
            self.pair_key("log"),
            self.pair_key("sent"),
        ];
        let script = Script::new(SEND_SCRIPT);
        let delivered: i64 = self
            .retrying("send", |mut conn| {
                let mut invocation = script.prepare_invoke();
                for k in &keys {
                    invocation.key(k);
                }
                invocation.arg(to).arg(&json).arg(&id).arg(KEY_TTL_SECS);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await
            .map_err(|e| SendError::Unavailable(e.0))?;
        if delivered == 0 {
            return Err(SendError::PeerFinished(to.to_string()));
        }
        Ok(message)
    }

    /// Takes everything in `agent`'s inbox that it has not read yet.
    pub async fn receive(&self, agent: &str) -> Result<Vec<Message>, BusUnavailable> {
        let inbox = self.key(agent, "inbox");
        let cursor = self.key(agent, "read");
        let script = Script::new(READ_SCRIPT);
        let items: Vec<String> = self
            .retrying("receive", |mut conn| {
                let mut invocation = script.prepare_invoke();
                invocation.key(&inbox).key(&cursor);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let Some((from, rest)) = items.split_first() else {
            return Ok(Vec::new());
        };
        if rest.is_empty() {
            return Ok(Vec::new());
        }
        let next = from.parse::<u64>().unwrap_or(0) + rest.len() as u64;
        // An absolute cursor: setting it twice (a retry after a lost reply) is harmless.
        self.retrying("receive", |mut conn| {
            let cursor = cursor.clone();
            async move { conn.set_ex::<_, _, ()>(cursor, next, KEY_TTL_SECS).await }
        })
        .await?;
        Ok(rest.iter().filter_map(|raw| parse(raw)).collect())
    }

    /// Waits up to `timeout` for at least one message, blocking on the server.
    pub async fn wait(
        &self,
        agent: &str,
        timeout: Duration,
    ) -> Result<Vec<Message>, BusUnavailable> {
        let deadline = Instant::now() + timeout;
        let wake = self.key(agent, "wake");
        loop {
            let got = self.receive(agent).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !got.is_empty() || left.is_zero() {
                return Ok(got);
            }
            // BLPOP blocks its connection: use one of its own, not the shared one.
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Duration::from_secs(5))
                .set_response_timeout(left + Duration::from_secs(5));
            let blocked: RedisResult<Option<(String, String)>> = async {
                let mut conn = self
                    .inner
                    .hub
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                conn.blpop(&wake, left.as_secs_f64().max(0.001)).await
            }
            .await;
            match blocked {
                Ok(Some(_)) => {
                    // Tokens of messages about to be read now would only cause empty wake-ups.
                    let _ = self
                        .retrying("wait", |mut conn| {
                            let wake = wake.clone();
                            async move { conn.del::<_, ()>(wake).await }
                        })
                        .await;
                }
                Ok(None) => return self.receive(agent).await,
                Err(e) => {
                    // Redis went away mid-wait: the retrying receive above decides whether it
                    // comes back in time.
                    tracing::debug!("BLPOP interrupted: {e}");
                    tokio::time::sleep(BACKOFF_FIRST).await;
                }
            }
        }
    }

    /// Marks `agent` finished: later sends to it are refused instead of lost.
    pub async fn mark_finished(&self, agent: &str) -> Result<(), BusUnavailable> {
        let finished = self.pair_key("finished");
        self.retrying("marking an agent finished", |mut conn| {
            let finished = finished.clone();
            async move {
                redis::pipe()
                    .sadd(&finished, agent)
                    .ignore()
                    .expire(&finished, KEY_TTL_SECS as i64)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            }
        })
        .await
    }

    /// Every delivered message, in the order Redis accepted them.
    pub async fn conversation(&self) -> Result<Vec<Message>, BusUnavailable> {
        let log = self.pair_key("log");
        let items: Vec<String> = self
            .retrying("reading the conversation", |mut conn| {
                let log = log.clone();
                async move { conn.lrange(log, 0, -1).await }
            })
            .await?;
        Ok(items.iter().filter_map(|raw| parse(raw)).collect())
    }

    /// Deletes the pair's keys (they would expire anyway).
    pub async fn close(&self) {
        let mut keys = vec![
            self.pair_key("finished"),
            self.pair_key("log"),
            self.pair_key("sent"),
        ];
        for agent in &self.inner.agents {
            for what in ["inbox", "wake", "read"] {
                keys.push(self.key(agent, what));
            }
        }
        let result = self
            .retrying("deleting the pair's keys", |mut conn| {
                let keys = keys.clone();
                async move { conn.del::<_, ()>(keys).await }
            })
            .await;
        if let Err(e) = result {
            tracing::warn!("{e}; the keys expire within a day");
        }
    }
}

fn parse(raw: &str) -> Option<Message> {
    match serde_json::from_str::<Stored>(raw) {
        Ok(s) => Some(Message {
            from: s.from,
            to: s.to,
            content: s.content,
            timestamp: s.timestamp,
        }),
        Err(e) => {
            tracing::warn!("ignoring a malformed message in Redis: {e}");
            None
        }
    }
}

/// A short value unlikely to repeat within one millisecond of one sender.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed) ^ u64::from(std::process::id()) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(shown("redis://localhost:6379"), "redis://localhost:6379");
    }
}
