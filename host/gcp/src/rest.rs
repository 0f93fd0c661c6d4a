//! One authorised REST call to a Google API: a bearer token from a [`TokenSource`] on every
//! request, a 401 answered by refreshing the token once, 429, 5xx and connection failures
//! retried with backoff, and other refusals final, with Google's own message.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::credentials::is_loopback_http;
use crate::{GcpError, TokenSource};

/// Attempts per call for transient failures (429, 5xx, no connection).
const ATTEMPTS: u32 = 4;
/// A listing longer than this many pages is refused (a server paging forever).
const MAX_PAGES: usize = 10_000;
/// First backoff; doubled per attempt.
const BACKOFF: Duration = Duration::from_millis(250);

/// An authorised client of one Google API endpoint.
pub(crate) struct RestClient {
    service: &'static str,
    base: String,
    tokens: Arc<TokenSource>,
    client: reqwest::Client,
}

impl RestClient {
    /// A client of `base` for `service` (named in errors). Plain http is accepted only on this
    /// machine: every request carries a bearer token.
    pub(crate) fn new(
        service: &'static str,
        tokens: Arc<TokenSource>,
        base: &str,
    ) -> Result<RestClient, GcpError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || is_loopback_http(&base)) {
            return Err(GcpError::Invalid(format!(
                "{service} endpoint {base}: not https:// (nor a loopback address); access tokens are never sent in the clear"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default();
        Ok(RestClient {
            service,
            base,
            tokens,
            client,
        })
    }

    /// The endpoint, without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request with a bearer token: a 401 refreshes the token once, 429, 5xx and
    /// connection failures are retried, and statuses in `accepted` (e.g. 404) are returned
    /// as answers rather than errors.
    pub(crate) async fn call<F>(
        &self,
        what: &str,
        accepted: &[u16],
        build: F,
    ) -> Result<reqwest::Response, GcpError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let token = self.tokens.token().await?;
            let sent = build(&self.client).bearer_auth(&token).send().await;
            let transient = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if response.status().is_success() || accepted.contains(&status) {
                        return Ok(response);
                    }
                    if status == 401 && !refreshed {
                        refreshed = true;
                        self.tokens.invalidate().await;
                        attempt -= 1;
                        continue;
                    }
                    let message = google_message(&response.text().await.unwrap_or_default());
                    if !(status == 429 || (500..600).contains(&status)) {
                        let hint = match status {
                            401 | 403 => format!(
                                " (credentials from {}; do they have access?)",
                                self.tokens.origin()
                            ),
                            _ => String::new(),
                        };
                        return Err(GcpError::Api {
                            what: what.to_string(),
                            reason: format!("HTTP {status}: {message}{hint}"),
                            status: Some(status),
                        });
                    }
                    format!("HTTP {status}: {message}")
                }
                Err(e) if e.is_timeout() => "timed out".to_string(),
                Err(e) if e.is_connect() => format!("cannot connect to {}", self.base),
                Err(e) => format!("the request failed: {e}"),
            };
            if attempt >= ATTEMPTS {
                return Err(GcpError::Api {
                    what: what.to_string(),
                    reason: format!("{transient} (after {attempt} attempts)"),
                    status: None,
                });
            }
            tracing::debug!(service = self.service, %what, %transient, attempt, "retrying a Google API call");
            tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
        }
    }
    /// Every page of a list call: the `name` of each entry of `items_key`, following
    /// `nextPageToken` (`build` gets the page token, None for the first page) until it ends or
    /// repeats one.
    pub(crate) async fn names_in_pages<F>(
        &self,
        what: &str,
        items_key: &str,
        max_names: usize,
        build: F,
    ) -> Result<Vec<String>, GcpError>
    where
        F: Fn(&reqwest::Client, Option<&str>) -> reqwest::RequestBuilder,
    {
        let mut names = Vec::new();
        let mut page: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let response = self.call(what, &[], |c| build(c, page.as_deref())).await?;
            let body: Value = response.json().await.map_err(|e| GcpError::Api {
                what: what.to_string(),
                reason: format!("the listing is not JSON: {e}"),
                status: None,
            })?;
            if let Some(items) = body.get(items_key).and_then(Value::as_array) {
                names.extend(
                    items
                        .iter()
                        // Objects and jobs are `{"name": …}`; a listing's `prefixes` are strings.
                        .filter_map(|i| i.get("name").and_then(Value::as_str).or(i.as_str()))
                        .map(str::to_string),
                );
            }
            if names.len() >= max_names {
                names.truncate(max_names);
                return Ok(names);
            }
            // A token seen before would page forever; so would a listing without end.
            match body.get("nextPageToken").and_then(Value::as_str) {
                Some(token) if !token.is_empty() && seen.insert(token.to_string()) => {
                    if seen.len() > MAX_PAGES {
                        return Err(GcpError::Api {
                            what: what.to_string(),
                            reason: format!("more than {MAX_PAGES} pages"),
                            status: None,
                        });
                    }
                    page = Some(token.to_string());
                }
                _ => return Ok(names),
            }
        }
    }
}

/// Google's `{"error": {"message": …}}`, else a short snippet of the body.
fn google_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match v.pointer("/error/message").and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => body.trim().chars().take(200).collect(),
    }
}
