//! HTTP to a provider: a connection limit per provider, a per-request timeout, and
//! retries of 429 / 5xx / timeouts with exponential backoff and jitter that honour
//! Retry-After, bounded in attempts and in total wait. Other failures are final.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::LlmError;

/// When and how often to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Cap of one backoff (and of an honoured Retry-After).
    pub max_backoff: Duration,
    /// Cap of all backoff waiting for one call (time spent in requests does not count,
    /// so a timed-out request is retried like a 503).
    pub max_total_wait: Duration,
    /// Timeout of one attempt (connect to last byte).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_total_wait: Duration::from_secs(300),
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// A retried attempt, for the trajectory and the progress output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryNote {
    /// The attempt that failed (1 = the first).
    pub attempt: u32,
    /// `HTTP 429`, `HTTP 503`, `timeout`, `connection failed`.
    pub reason: String,
    /// How long the host waited before the next attempt.
    pub waited_ms: u64,
    /// How long the failed attempt itself took (apart from the call's successful attempt).
    #[serde(default)]
    pub duration_ms: u64,
}

/// What a final failure was.
#[derive(Debug)]
pub struct Failure {
    pub error: LlmError,
    pub retries: Vec<RetryNote>,
}

/// The credentials of a provider, put on every attempt of a request (a SigV4 signature
/// covers the body and the time, a cached access token may have been refreshed).
#[async_trait]
pub trait Auth: Send + Sync {
    /// The headers of one attempt of POSTing `body` (the exact bytes sent) to `url`.
    async fn headers(&self, url: &str, body: &[u8]) -> Result<HeaderMap, LlmError>;

    /// Called after a 401: drops cached credentials; true when one more attempt may succeed.
    async fn refresh(&self) -> bool {
        false
    }

    /// What the user should check when the provider rejects the credentials (401/403).
    fn hint(&self) -> Option<String> {
        None
    }
}

/// Headers that are the same on every request (API-key providers).
pub struct StaticHeaders {
    /// The headers, secrets marked sensitive.
    pub headers: HeaderMap,
    /// Appended to a 401/403, e.g. `check OPENAI_API_KEY`.
    pub hint: Option<String>,
}

#[async_trait]
impl Auth for StaticHeaders {
    async fn headers(&self, _url: &str, _body: &[u8]) -> Result<HeaderMap, LlmError> {
        Ok(self.headers.clone())
    }

    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

/// One provider's HTTP client and connection slots.
pub struct Transport {
    client: reqwest::Client,
    slots: Semaphore,
    policy: RetryPolicy,
    /// Text that must never leave in an error (API keys, tokens).
    secrets: Vec<String>,
}

enum Attempt {
    Done(Value),
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 401/403: the credentials were refused.
    Rejected {
        code: u16,
        message: String,
    },
    Fail(LlmError),
}

impl Transport {
    /// A transport allowing `max_connections` requests at once.
    pub fn new(policy: RetryPolicy, max_connections: usize, secret: Option<String>) -> Transport {
        Transport::with_secrets(policy, max_connections, secret.into_iter().collect())
    }

    /// A transport that redacts each of `secrets` from the errors it returns.
    pub fn with_secrets(
        policy: RetryPolicy,
        max_connections: usize,
        secrets: Vec<String>,
    ) -> Transport {
        let client = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .build()
            .unwrap_or_default();
        Transport {
            client,
            slots: Semaphore::new(max_connections.max(1)),
            policy,
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    /// POSTs `body` as JSON to `url` with `headers`; the parsed JSON reply, and the retries it took.
    pub async fn post_json(
        &self,
        url: &str,
        headers: HeaderMap,
        body: &Value,
    ) -> Result<(Value, Vec<RetryNote>), Failure> {
        self.post(
            url,
            body,
            &StaticHeaders {
                headers,
                hint: None,
            },
        )
        .await
    }

    /// POSTs `body` as JSON to `url`, asking `auth` for the headers of each attempt.
    pub async fn post(
        &self,
        url: &str,
        body: &Value,
        auth: &dyn Auth,
    ) -> Result<(Value, Vec<RetryNote>), Failure> {
        // Serialised once: a signature covers these exact bytes on every attempt.
        let bytes = serde_json::to_vec(body).map_err(|e| Failure {
            error: LlmError::InvalidRequest(format!("cannot serialise the request: {e}")),
            retries: Vec::new(),
        })?;
        let started = Instant::now();
        let mut waited = Duration::ZERO;
        let mut retries: Vec<RetryNote> = Vec::new();
        let mut backoff = self.policy.initial_backoff;
        let mut attempt = 1u32;
        let mut refreshed = false;
        loop {
            let headers = match auth.headers(url, &bytes).await {
                Ok(h) => h,
                Err(error) => return Err(Failure { error, retries }),
            };
            let attempt_started = Instant::now();
            let outcome = {
                let _slot = self.slots.acquire().await;
                self.attempt(url, headers, &bytes).await
            };
            let attempt_ms = attempt_started.elapsed().as_millis() as u64;
            let (reason, retry_after) = match outcome {
                Attempt::Done(value) => return Ok((value, retries)),
                Attempt::Fail(error) => return Err(Failure { error, retries }),
                Attempt::Rejected { code, message } => {
                    // An access token may have expired early or been revoked: one fresh try.
                    if code == 401 && !refreshed && auth.refresh().await {
                        refreshed = true;
                        retries.push(RetryNote {
                            attempt,
                            reason: "HTTP 401; credentials refreshed".into(),
                            waited_ms: 0,
                            duration_ms: attempt_ms,
                        });
                        attempt += 1;
                        continue;
                    }
                    let hint = auth.hint().map(|h| format!(" ({h})")).unwrap_or_default();
                    // A rejected key is the user's setup, not the agent.
                    let error = LlmError::Unavailable(format!("HTTP {code}: {message}{hint}"));
                    return Err(Failure { error, retries });
                }
                Attempt::Retry {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };
            let wait = retry_after
                .unwrap_or_else(|| jittered(backoff))
                .min(self.policy.max_backoff);
            let spent = started.elapsed();
            if attempt > self.policy.max_retries || waited + wait > self.policy.max_total_wait {
                let earlier: Vec<&str> = retries.iter().map(|r| r.reason.as_str()).collect();
                let error = LlmError::Unavailable(format!(
                    "{reason} after {attempt} attempt(s) over {:.1} s{}; giving up",
                    spent.as_secs_f64(),
                    if earlier.is_empty() {
                        String::new()
                    } else {
                        format!(" (earlier: {})", earlier.join(", "))
                    }
                ));
                retries.push(RetryNote {
                    attempt,
                    reason,
                    waited_ms: 0,
                    duration_ms: attempt_ms,
                });
                return Err(Failure { error, retries });
            }
            tracing::info!("{url}: {reason}; retrying in {} ms", wait.as_millis());
            retries.push(RetryNote {
                attempt,
                reason,
                waited_ms: wait.as_millis() as u64,
                duration_ms: attempt_ms,
            });
            tokio::time::sleep(wait).await;
            waited += wait;
            backoff = backoff.saturating_mul(2);
            attempt += 1;
        }
    }

    async fn attempt(&self, url: &str, mut headers: HeaderMap, body: &[u8]) -> Attempt {
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        let response = match self
            .client
            .post(url)
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return self.transport_failure(&e),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) => return self.transport_failure(&e),
        };
        if status.is_success() {
            return match serde_json::from_str::<Value>(&text) {
                Ok(v) => Attempt::Done(v),
                Err(e) => Attempt::Fail(LlmError::Provider(format!(
                    "malformed JSON in the provider's reply ({e}): {}",
                    self.redact(&snippet(&text))
                ))),
            };
        }
        let message = self.redact(&provider_message(&text));
        let code = status.as_u16();
        if code == 429 || status.is_server_error() {
            return Attempt::Retry {
                reason: format!("HTTP {code}"),
                retry_after,
            };
        }
        let lower = message.to_ascii_lowercase();
        let context = [
            "context length",
            "context_length",
            "too long",
            "maximum context",
            "too many tokens",
            "context size",
        ]
        .iter()
        .any(|m| lower.contains(m));
        if context {
            return Attempt::Fail(LlmError::Provider(format!(
                "context length exceeded (HTTP {code}): {message}"
            )));
        }
        if matches!(code, 401 | 403) {
            return Attempt::Rejected { code, message };
        }
        Attempt::Fail(if code == 404 {
            // An unknown model or deployment is the user's setup, not the agent.
            LlmError::Unavailable(format!("HTTP {code}: {message}"))
        } else {
            LlmError::Provider(format!("HTTP {code}: {message}"))
        })
    }

    fn transport_failure(&self, e: &reqwest::Error) -> Attempt {
        let reason = if e.is_timeout() {
            format!(
                "timeout after {:.0} s",
                self.policy.request_timeout.as_secs_f64()
            )
        } else if e.is_connect() {
            "connection failed".to_string()
        } else {
            format!("transport error: {}", self.redact(&e.to_string()))
        };
        Attempt::Retry {
            reason,
            retry_after: None,
        }
    }

    /// Removes the secret from text that may end up in logs or errors.
    pub fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), "[redacted]"))
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// Half to full of `backoff`, so concurrent agents do not retry in lockstep.
fn jittered(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    // xorshift of the clock's nanoseconds: enough spread, no dependency.
    let mut x = u64::from(nanos) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let fraction = 0.5 + (x % 1000) as f64 / 2000.0;
    backoff.mul_f64(fraction)
}

/// The provider's own error message (`error.message`, `message`, or the body).
fn provider_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Wrapped {
        error: Option<Value>,
        message: Option<String>,
    }
    if let Ok(w) = serde_json::from_str::<Wrapped>(body) {
        if let Some(err) = w.error {
            if let Some(m) = err.get("message").and_then(Value::as_str) {
                return m.to_string();
            }
            if let Some(s) = err.as_str() {
                return s.to_string();
            }
        }
        if let Some(m) = w.message {
            return m;
        }
    }
    snippet(body)
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() > 300 {
        format!("{}…", t.chars().take(300).collect::<String>())
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        for _ in 0..100 {
            let j = jittered(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(500) && j <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn provider_messages_are_extracted() {
        assert_eq!(
            provider_message(r#"{"error":{"message":"bad key","type":"auth"}}"#),
            "bad key"
        );
        assert_eq!(
            provider_message(r#"{"type":"error","error":{"type":"x","message":"overloaded"}}"#),
            "overloaded"
        );
        assert_eq!(provider_message("plain text"), "plain text");
    }
}
