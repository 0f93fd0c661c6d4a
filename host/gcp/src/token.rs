//! OAuth access tokens for Application Default Credentials: a service account's JWT-bearer
//! grant, a user's refresh-token grant, or the metadata server's token; cached until shortly
//! before they expire, one request at a time however many callers wait.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::credentials::{Adc, Credentials};
use crate::GcpError;

/// A cached token is replaced when less than this is left of it, so a call (and its retries)
/// never starts with a token about to expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Attempts per token request (5xx, 429 and connection failures are retried).
const ATTEMPTS: u32 = 3;

/// Why a token request gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The endpoint answered with a refusal (4xx other than 429): final.
    #[error("the token endpoint {endpoint} refused the credentials (HTTP {status}: {message})")]
    Refused {
        /// The token endpoint.
        endpoint: String,
        /// Its HTTP status.
        status: u16,
        /// OAuth's `error: error_description`, or a short snippet, with secrets redacted.
        message: String,
    },
    /// No answer, or only server errors, after every attempt.
    #[error("no access token from {endpoint}: {reason} after {attempts} attempts")]
    Unreachable {
        /// The token endpoint.
        endpoint: String,
        /// The last failure: `HTTP 503`, `timeout`, `connection failed`.
        reason: String,
        /// How many requests were made.
        attempts: u32,
    },
    /// A success without a token in it.
    #[error("the token endpoint {endpoint} answered without an access_token")]
    NoAccessToken {
        /// The token endpoint.
        endpoint: String,
    },
    /// The assertion could not be signed.
    #[error("cannot sign a token request")]
    Signing,
}

/// An access token and when it stops working.
#[derive(Clone)]
pub struct Token {
    /// The bearer token.
    pub value: String,
    /// When it expires.
    pub expires: Instant,
}

/// One token request, retried on 5xx, 429 and connection failures. `attempt` builds each
/// request afresh (a new assertion each time) and returns the secrets the request carries,
/// which are redacted (as sent and form-encoded) from any error text.
pub async fn request_token<F>(endpoint: &str, mut attempt: F) -> Result<Token, TokenError>
where
    F: FnMut() -> Result<(reqwest::RequestBuilder, Vec<String>), TokenError>,
{
    let mut made = 0u32;
    loop {
        made += 1;
        let (request, secrets) = attempt()?;
        let transient = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                if status.is_success() {
                    return token_from(endpoint, &text);
                }
                if !(status.is_server_error() || status.as_u16() == 429) {
                    // Redacted before the message is cut to a snippet, so no part of a secret
                    // survives at the cut.
                    return Err(TokenError::Refused {
                        endpoint: endpoint.to_string(),
                        status: status.as_u16(),
                        message: oauth_message(&redact(&text, &secrets)),
                    });
                }
                format!("HTTP {}", status.as_u16())
            }
            Err(e) if e.is_timeout() => "timeout".to_string(),
            Err(_) => "connection failed".to_string(),
        };
        if made >= ATTEMPTS {
            return Err(TokenError::Unreachable {
                endpoint: endpoint.to_string(),
                reason: transient,
                attempts: made,
            });
        }
        tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(made - 1)).await;
    }
}

/// `text` with every secret, as sent and form-encoded, replaced by `[redacted]`.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        out = out.replace(secret.as_str(), "[redacted]");
        out = out.replace(&encoded, "[redacted]");
    }
    out
}

/// A token endpoint may say its tokens live this long at most (a larger `expires_in` is
/// taken as this, never an overflow).
const LONGEST_LIFETIME_SECS: u64 = 86_400;

/// The token in a token endpoint's (or the metadata server's) JSON reply.
fn token_from(endpoint: &str, text: &str) -> Result<Token, TokenError> {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let value = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::NoAccessToken {
            endpoint: endpoint.to_string(),
        })?;
    let lifetime = v
        .get("expires_in")
        .and_then(Value::as_u64)
        .unwrap_or(3600)
        .min(LONGEST_LIFETIME_SECS);
    Ok(Token {
        value: value.to_string(),
        expires: Instant::now() + Duration::from_secs(lifetime),
    })
}

/// `error: error_description` of an OAuth error reply, else a short snippet.
fn oauth_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    match (field("error"), field("error_description")) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e.to_string(),
        _ => body.trim().chars().take(200).collect(),
    }
}

/// The HTTP client of token requests: redirects are not followed (a redirect would re-send the
/// form, secrets and all, wherever it points).
pub fn token_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// Access tokens of one set of credentials for one scope, cached.
pub struct TokenSource {
    adc: Adc,
    scope: String,
    client: reqwest::Client,
    cached: Mutex<Option<Token>>,
}

impl TokenSource {
    /// Tokens for `adc` with `scope` (service accounts and the metadata server; a user's
    /// refresh token carries the scopes gcloud asked for).
    pub fn new(adc: Adc, scope: &str) -> TokenSource {
        TokenSource {
            adc,
            scope: scope.to_string(),
            client: token_client(),
            cached: Mutex::new(None),
        }
    }

    /// Where the credentials came from.
    pub fn origin(&self) -> &str {
        &self.adc.origin
    }

    /// The credentials' project, when one is known.
    pub fn project(&self) -> Option<&str> {
        self.adc.project.as_deref()
    }

    /// A token with at least five minutes left, fetched when the cached one is older.
    pub async fn token(&self) -> Result<String, GcpError> {
        // Held across the fetch so concurrent callers wait for one token request.
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached
            .as_ref()
            .filter(|t| t.expires > Instant::now() + REFRESH_MARGIN)
        {
            return Ok(token.value.clone());
        }
        let token = self.fetch().await.map_err(|source| GcpError::Token {
            origin: self.adc.origin.clone(),
            source,
        })?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// Drops the cached token (the service answered 401 to it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<Token, TokenError> {
        match &self.adc.credentials {
            Credentials::ServiceAccount(account) => {
                request_token(&account.token_uri, || {
                    let assertion = account
                        .assertion(&self.scope)
                        .map_err(|_| TokenError::Signing)?;
                    let request = self.client.post(&account.token_uri).form(&[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                        ("assertion", assertion.as_str()),
                    ]);
                    Ok((request, vec![assertion]))
                })
                .await
            }
            Credentials::AuthorizedUser(user) => {
                request_token(&user.token_uri, || {
                    let request = self.client.post(&user.token_uri).form(&[
                        ("grant_type", "refresh_token"),
                        ("client_id", user.client_id.as_str()),
                        ("client_secret", user.client_secret.as_str()),
                        ("refresh_token", user.refresh_token.as_str()),
                    ]);
                    Ok((
                        request,
                        vec![user.refresh_token.clone(), user.client_secret.clone()],
                    ))
                })
                .await
            }
            Credentials::MetadataServer { base_url } => {
                let url = format!("{base_url}/instance/service-accounts/default/token");
                request_token(&url, || {
                    let request = self
                        .client
                        .get(&url)
                        .query(&[("scopes", self.scope.as_str())])
                        .header("Metadata-Flavor", "Google");
                    Ok((request, Vec::new()))
                })
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_token_lifetime_cannot_overflow_the_clock() {
        let token = token_from(
            "endpoint",
            r#"{"access_token":"t","expires_in":18446744073709551615}"#,
        )
        .ok()
        .map(|t| t.value);
        assert_eq!(token.as_deref(), Some("t"));
    }

    #[test]
    fn secrets_are_redacted_as_sent_and_form_encoded_before_any_snippet_is_cut() {
        let secret = "1//refresh+token/with=symbols".to_string();
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let echo = format!("bad request: refresh_token={encoded}&again={secret}");
        let said = oauth_message(&redact(&echo, std::slice::from_ref(&secret)));
        assert!(
            !said.contains("refresh") || said.contains("refresh_token=[redacted]"),
            "{said}"
        );
        assert!(
            !said.contains(&secret) && !said.contains(&encoded),
            "{said}"
        );
        // A long echo cut at 200 characters leaves no partial secret at the cut.
        let long = format!("{}{secret}", "x".repeat(190));
        let said = oauth_message(&redact(&long, std::slice::from_ref(&secret)));
        assert!(!said.contains("1//refr"), "{said}");
    }
}
