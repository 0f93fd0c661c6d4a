//! Vertex AI's Gemini API (`POST {base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`):
//! the Gemini body and reply, authorised by an OAuth access token that a service account
//! obtains with a self-signed RS256 JWT (the "JWT bearer" grant), as LiteLLM does through
//! google-auth.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::transport::Auth;
use super::{alternatives, base_url, secret_header, Endpoint, ModelSpec, ProviderOptions};
use crate::{LlmError, ModelError};

/// Where the service-account key may be given, the usual variable first.
pub const CREDENTIAL_VARS: &[&str] = &[
    "GOOGLE_APPLICATION_CREDENTIALS",
    "VERTEXAI_CREDENTIALS",
    "VERTEX_CREDENTIALS",
];
/// The read order of [`CREDENTIAL_VARS`], LiteLLM's: its explicit Vertex credentials (a
/// path or the JSON itself) before Application Default Credentials.
const READ_ORDER: &[&str] = &[
    "VERTEXAI_CREDENTIALS",
    "VERTEX_CREDENTIALS",
    "GOOGLE_APPLICATION_CREDENTIALS",
];
/// The OAuth scope of Vertex AI calls.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint when the key file names none.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// LiteLLM's default location.
const DEFAULT_LOCATION: &str = "us-central1";
/// A cached token is replaced when less than this is left of it, so a request (and its
/// retries) never starts with a token about to expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long a self-signed assertion is valid (Google's maximum).
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// A service-account key, parsed.
struct ServiceAccount {
    client_email: String,
    private_key_id: Option<String>,
    key: RsaKeyPair,
    token_uri: String,
    project_id: Option<String>,
}

/// Names the credentials in errors: `GOOGLE_APPLICATION_CREDENTIALS (/path/key.json)`.
#[derive(Clone)]
struct Origin {
    var: &'static str,
    /// The path, or `inline JSON`; never the content.
    source: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.var, self.source)
    }
}

/// The endpoint of a `vertex_ai/` model: the key file is read and checked now, the first
/// token is fetched with the first request.
pub(crate) fn endpoint(
    id: &str,
    spec: &ModelSpec,
    options: &ProviderOptions,
) -> Result<Endpoint, ModelError> {
    let creds = &options.credentials;
    let (var, value) = creds
        .first(READ_ORDER)
        .ok_or_else(|| ModelError::MissingSetting {
            model: id.to_string(),
            what: "Google service-account credentials",
            var: alternatives(CREDENTIAL_VARS),
        })?;
    let (text, origin) = if var != "GOOGLE_APPLICATION_CREDENTIALS" && value.starts_with('{') {
        (
            value.to_string(),
            Origin {
                var,
                source: "inline JSON".into(),
            },
        )
    } else {
        let origin = Origin {
            var,
            source: value.to_string(),
        };
        let text = std::fs::read_to_string(Path::new(value))
            .map_err(|e| bad(id, &origin, format!("cannot read the key file: {e}")))?;
        (text, origin)
    };
    let account = parse_account(&text).map_err(|reason| bad(id, &origin, reason))?;
    let project = creds
        .first(&["VERTEXAI_PROJECT", "VERTEX_PROJECT"])
        .map(|(_, v)| v.to_string())
        .or_else(|| account.project_id.clone())
        .ok_or_else(|| ModelError::MissingSetting {
            model: id.to_string(),
            what: "Google Cloud project (the key file has no project_id)",
            var: "VERTEXAI_PROJECT (or VERTEX_PROJECT)".into(),
        })?;
    let location = creds
        .first(&["VERTEXAI_LOCATION", "VERTEX_LOCATION"])
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| DEFAULT_LOCATION.to_string());
    let host = if location == "global" {
        "https://aiplatform.googleapis.com".to_string()
    } else {
        format!("https://{location}-aiplatform.googleapis.com")
    };
    let base = base_url(id, spec, options, Some(host))?;
    let url = format!(
        "{base}/v1/projects/{}/locations/{}/publishers/google/models/{}:generateContent",
        super::uri_encode(&project),
        super::uri_encode(&location),
        spec.model
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default();
    Ok(Endpoint {
        url,
        auth: Box::new(TokenSource {
            account,
            origin,
            project,
            client,
            token: Mutex::new(None),
        }),
        secrets: Vec::new(),
    })
}

fn bad(id: &str, origin: &Origin, reason: String) -> ModelError {
    ModelError::BadCredentials {
        model: id.to_string(),
        var: origin.var,
        source_name: origin.source.clone(),
        reason,
    }
}

/// The fields of a service-account key file. Errors name fields, never their values.
fn parse_account(text: &str) -> Result<ServiceAccount, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "not JSON (line {}, column {}): expected a service-account key file",
            e.line(),
            e.column()
        )
    })?;
    let field = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    match field("type").as_deref() {
        Some("service_account") => {}
        Some(other) => {
            // Named only when it is one of Google's own types: the file's text is not echoed.
            let known = [
                "authorized_user",
                "external_account",
                "impersonated_service_account",
            ];
            let shown = if known.contains(&other) {
                other
            } else {
                "another"
            };
            return Err(format!(
                "credentials of type `{shown}`; only service-account keys (`service_account`) are supported"
            ));
        }
        None => return Err("no `type` field: expected a service-account key file".into()),
    }
    let client_email = field("client_email").ok_or("no `client_email` field")?;
    let pem = field("private_key").ok_or("no `private_key` field")?;
    let der = pem_body(&pem).ok_or("`private_key` is not a PEM `PRIVATE KEY` block")?;
    let key = RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("`private_key` is not a usable PKCS#8 RSA key ({e})"))?;
    let token_uri = field("token_uri").unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
    // The signed assertion is a bearer credential for its audience: never sent in the clear,
    // except to a server on this machine (a test's, a proxy's).
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| {
            token_uri
                .strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if !(token_uri.starts_with("https://") || loopback) {
        return Err("`token_uri` is not https:// (nor a loopback address)".into());
    }
    Ok(ServiceAccount {
        client_email,
        private_key_id: field("private_key_id"),
        key,
        token_uri,
        project_id: field("project_id"),
    })
}

/// The DER bytes of a PEM `-----BEGIN PRIVATE KEY-----` block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = pem[start..].find("-----END PRIVATE KEY-----")? + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

struct Token {
    value: String,
    expires: Instant,
}

/// Access tokens of one service account, cached until five minutes before they expire.
struct TokenSource {
    account: ServiceAccount,
    origin: Origin,
    project: String,
    client: reqwest::Client,
    token: Mutex<Option<Token>>,
}

impl TokenSource {
    /// The signed JWT asserting the service account's identity.
    fn assertion(&self) -> Result<String, LlmError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.account.private_key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.account.client_email,
            "scope": SCOPE,
            "aud": self.account.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.account.key.public().modulus_len()];
        self.account
            .key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| {
                LlmError::Unavailable(format!("{}: cannot sign a token request", self.origin))
            })?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// A fresh access token from the token endpoint (5xx and connection failures are
    /// retried twice; a refusal is final and names the credentials).
    async fn fetch(&self) -> Result<Token, LlmError> {
        let uri = &self.account.token_uri;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let assertion = self.assertion()?;
            let sent = self
                .client
                .post(uri)
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ])
                .send()
                .await;
            let transient = match sent {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status.is_success() {
                        return self.token_from(&text);
                    }
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        return Err(LlmError::Unavailable(format!(
                            "{}: the token endpoint {uri} refused the service account (HTTP {}: {}); check the key file",
                            self.origin,
                            status.as_u16(),
                            oauth_message(&text).replace(&assertion, "[redacted]")
                        )));
                    }
                    format!("HTTP {}", status.as_u16())
                }
                Err(e) if e.is_timeout() => "timeout".to_string(),
                Err(_) => "connection failed".to_string(),
            };
            if attempt >= 3 {
                return Err(LlmError::Unavailable(format!(
                    "{}: no access token from {uri}: {transient} after {attempt} attempts",
                    self.origin
                )));
            }
            tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt - 1)).await;
        }
    }

    fn token_from(&self, text: &str) -> Result<Token, LlmError> {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let value = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                LlmError::Unavailable(format!(
                    "{}: the token endpoint {} answered without an access_token",
                    self.origin, self.account.token_uri
                ))
            })?;
        let lifetime = v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
        Ok(Token {
            value: value.to_string(),
            expires: Instant::now() + Duration::from_secs(lifetime),
        })
    }
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

#[async_trait]
impl Auth for TokenSource {
    async fn headers(&self, _url: &str, _body: &[u8]) -> Result<HeaderMap, LlmError> {
        // Held across the fetch so concurrent agents wait for one token request.
        let mut cached = self.token.lock().await;
        let fresh = cached
            .as_ref()
            .is_some_and(|t| t.expires > Instant::now() + REFRESH_MARGIN);
        if !fresh {
            *cached = Some(self.fetch().await?);
        }
        let token = cached
            .as_ref()
            .map(|t| t.value.as_str())
            .unwrap_or_default();
        let mut headers = HeaderMap::new();
        let value = secret_header(&format!("Bearer {token}"), "vertex_ai", self.origin.var)
            .map_err(|e| LlmError::Unavailable(e.to_string()))?;
        headers.insert(AUTHORIZATION, value);
        Ok(headers)
    }

    async fn refresh(&self) -> bool {
        *self.token.lock().await = None;
        true
    }

    fn hint(&self) -> Option<String> {
        Some(format!(
            "check the service account of {} and its access to project {}",
            self.origin, self.project
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_errors_name_fields_never_values() {
        let err = parse_account(r#"{"type":"authorized_user","refresh_token":"s3cret"}"#)
            .err()
            .unwrap_or_default();
        assert!(err.contains("authorized_user"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = parse_account(
            r#"{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA-not-a-key\n-----END PRIVATE KEY-----\n"}"#,
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("private_key"), "{err}");
        assert!(!err.contains("AAAA"), "{err}");
        let err = parse_account("{not json").err().unwrap_or_default();
        assert!(err.contains("not JSON"), "{err}");
    }
}
