//! Vertex AI's Gemini API (`POST {base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`):
//! the Gemini body and reply, authorised by an OAuth access token that a service account
//! obtains with a self-signed RS256 JWT (the "JWT bearer" grant), as LiteLLM does through
//! google-auth. The key file, the assertion and the token request are cbench-gcp's.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cbench_gcp::token::{request_token, Token, TokenError};
use cbench_gcp::ServiceAccount;
use reqwest::header::{HeaderMap, AUTHORIZATION};
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
/// LiteLLM's default location.
const DEFAULT_LOCATION: &str = "us-central1";
/// A cached token is replaced when less than this is left of it, so a request (and its
/// retries) never starts with a token about to expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

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
    let account = ServiceAccount::parse(&text).map_err(|reason| bad(id, &origin, reason))?;
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
    let client = cbench_gcp::token::token_client();
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

/// Access tokens of one service account, cached until five minutes before they expire.
struct TokenSource {
    account: ServiceAccount,
    origin: Origin,
    project: String,
    client: reqwest::Client,
    token: Mutex<Option<Token>>,
}

impl TokenSource {
    /// A fresh access token (5xx and connection failures are retried twice; a refusal is
    /// final and names the credentials).
    async fn fetch(&self) -> Result<Token, LlmError> {
        let uri = &self.account.token_uri;
        request_token(uri, || {
            let assertion = self
                .account
                .assertion(SCOPE)
                .map_err(|_| TokenError::Signing)?;
            let request = self.client.post(uri).form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ]);
            Ok((request, vec![assertion]))
        })
        .await
        .map_err(|e| {
            LlmError::Unavailable(match e {
                TokenError::Refused {
                    status, message, ..
                } => format!(
                    "{}: the token endpoint {uri} refused the service account (HTTP {status}: {message}); check the key file",
                    self.origin
                ),
                other => format!("{}: {other}", self.origin),
            })
        })
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
        let err = ServiceAccount::parse(r#"{"type":"authorized_user","refresh_token":"s3cret"}"#)
            .err()
            .unwrap_or_default();
        assert!(err.contains("authorized_user"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = ServiceAccount::parse(
            r#"{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA-not-a-key\n-----END PRIVATE KEY-----\n"}"#,
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("private_key"), "{err}");
        assert!(!err.contains("AAAA"), "{err}");
        let err = ServiceAccount::parse("{not json").err().unwrap_or_default();
        assert!(err.contains("not JSON"), "{err}");
    }
}
