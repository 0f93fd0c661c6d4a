//! Real LLM providers behind LiteLLM-style model strings: `gpt-4o` / `openai/<model>`
//! (OpenAI, or any OpenAI-compatible server with a base URL), `anthropic/<model>`,
//! `gemini/<model>`, `vertex_ai/<model>` (service-account OAuth), `azure/<deployment>`,
//! `bedrock/<model>` (SigV4), and the OpenAI-compatible hosts of [`catalog`].
//! Keys come from the environment or `.env`; they never appear in errors or records.

pub mod anthropic;
pub mod bedrock;
mod catalog;
mod credentials;
pub mod gemini;
pub mod openai;
pub mod sigv4;
pub mod transport;
pub mod vertex;

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

use super::prices::{Price, PriceTable};
use super::{
    AgentBrief, Completion, CompletionRequest, LlmError, LlmSession, Model, ModelError, TokenUsage,
    ToolCall,
};
use transport::{Auth, RetryPolicy, StaticHeaders, Transport};

pub use catalog::*;
pub use credentials::Credentials;

/// An API base as it may be recorded and shown: scheme, host and port only (a path, query or
/// credentials can carry secrets: a proxy token, a key in the query).
pub fn api_base_host(base: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
            (Some(host), None) => format!("{}://{host}", url.scheme()),
            (None, _) => "(no host)".into(),
        },
        Err(_) => "(not a URL)".into(),
    }
}

/// How provider models are set up for a run.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// `--api-base`: overrides every base URL.
    pub api_base: Option<String>,
    pub retry: RetryPolicy,
    /// Requests in flight per provider (`--max-connections`).
    pub max_connections: usize,
    pub prices: PriceTable,
    pub credentials: Credentials,
    /// Per-call sampling settings the host puts in every request.
    pub sampling: Sampling,
}

/// `--max-output-tokens` and `--temperature`: the same for every call of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sampling {
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f64>,
}

impl Sampling {
    /// The settings of one request: the run's temperature replaces the plugin's, and the
    /// smaller output cap wins, so the user's settings keep runs comparable.
    pub fn merged(self, options: &super::RequestOptions) -> Sampling {
        Sampling {
            max_output_tokens: match (self.max_output_tokens, options.max_output_tokens) {
                (Some(run), Some(plugin)) => Some(run.min(plugin)),
                (run, plugin) => run.or(plugin),
            },
            temperature: self.temperature.or(options.temperature),
        }
    }
}

/// A model served by a provider.
pub struct ProviderModel {
    id: String,
    inner: Arc<Inner>,
}

struct Inner {
    spec: ModelSpec,
    url: String,
    auth: Box<dyn Auth>,
    transport: Transport,
    price: Option<Price>,
    sampling: Sampling,
}

/// Where a model is reached and how requests are authenticated.
pub(crate) struct Endpoint {
    pub url: String,
    pub auth: Box<dyn Auth>,
    /// Text to redact from every error (keys, tokens).
    pub secrets: Vec<String>,
}

/// The base URL: `--api-base`, else the first variable set, else the default.
pub(crate) fn base_url(
    id: &str,
    spec: &ModelSpec,
    options: &ProviderOptions,
    derived: Option<String>,
) -> Result<String, ModelError> {
    let base = options
        .api_base
        .clone()
        .or_else(|| {
            options
                .credentials
                .first(spec.base_vars)
                .map(|(_, v)| v.to_string())
        })
        .or(derived)
        .or_else(|| spec.default_base.map(str::to_string))
        .ok_or_else(|| ModelError::NoBaseUrl {
            model: id.to_string(),
            var: alternatives(spec.base_vars),
        })?;
    let mut base = base.trim().trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ModelError::BadBaseUrl {
            model: id.to_string(),
            url: base,
        });
    }
    if spec.ensure_v1 && !base.ends_with("/v1") {
        base.push_str("/v1");
    }
    Ok(base)
}

/// A header value holding a secret: marked sensitive so it is never logged.
pub(crate) fn secret_header(value: &str, id: &str, var: &str) -> Result<HeaderValue, ModelError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| ModelError::BadSetting {
        model: id.to_string(),
        var: var.to_string(),
        reason: "holds characters an HTTP header cannot carry".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (one path segment or
/// query value; `/` too is encoded).
pub(crate) fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// OpenAI, Anthropic, Gemini and Azure: a key in a fixed header.
fn api_key_endpoint(
    id: &str,
    spec: &ModelSpec,
    options: &ProviderOptions,
) -> Result<Endpoint, ModelError> {
    let base = base_url(id, spec, options, None)?;
    let custom_base = spec.default_base.is_none_or(|d| d != base);
    let key = options.credentials.first(spec.key_vars);
    // An OpenAI-compatible server at its own address may need no key.
    if key.is_none() && spec.key_required && !(spec.wire == Wire::OpenAi && custom_base) {
        return Err(ModelError::MissingKey {
            model: id.to_string(),
            var: alternatives(spec.key_vars),
        });
    }
    let mut headers = HeaderMap::new();
    let key_header = |name: HeaderName, value: String, headers: &mut HeaderMap| {
        if let Some((var, _)) = key {
            headers.insert(name, secret_header(&value, id, var)?);
        }
        Ok::<_, ModelError>(())
    };
    let k = key.map(|(_, v)| v).unwrap_or_default();
    let url = match spec.wire {
        Wire::OpenAi => {
            key_header(AUTHORIZATION, format!("Bearer {k}"), &mut headers)?;
            format!("{base}/chat/completions")
        }
        Wire::Anthropic => {
            key_header(
                HeaderName::from_static("x-api-key"),
                k.to_string(),
                &mut headers,
            )?;
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(anthropic::API_VERSION),
            );
            format!("{base}/v1/messages")
        }
        Wire::Gemini => {
            key_header(
                HeaderName::from_static("x-goog-api-key"),
                k.to_string(),
                &mut headers,
            )?;
            format!("{base}/v1beta/models/{}:generateContent", spec.model)
        }
        Wire::Azure => {
            key_header(
                HeaderName::from_static("api-key"),
                k.to_string(),
                &mut headers,
            )?;
            let version = options
                .credentials
                .get("AZURE_API_VERSION")
                .map(str::trim)
                .unwrap_or(AZURE_DEFAULT_API_VERSION);
            format!(
                "{base}/openai/deployments/{}/chat/completions?api-version={}",
                uri_encode(&spec.model),
                uri_encode(version)
            )
        }
        // `build` routes these to their own modules; never reached.
        Wire::Vertex | Wire::Bedrock => return Err(ModelError::Unknown(id.to_string())),
    };
    Ok(Endpoint {
        url,
        auth: Box::new(StaticHeaders {
            headers,
            hint: key.map(|(var, _)| format!("check {var}")),
        }),
        secrets: key.map(|(_, v)| v.to_string()).into_iter().collect(),
    })
}

/// The api-version when AZURE_API_VERSION is unset: LiteLLM's `AZURE_DEFAULT_API_VERSION`
/// at the time of writing (a preview version is what LiteLLM users get by default).
pub const AZURE_DEFAULT_API_VERSION: &str = "2025-02-01-preview";

/// Builds the provider model for `spec`, or says what is missing (before any sandbox starts).
pub fn build(
    id: &str,
    spec: ModelSpec,
    options: &ProviderOptions,
) -> Result<ProviderModel, ModelError> {
    let endpoint = match spec.wire {
        Wire::Vertex => vertex::endpoint(id, &spec, options)?,
        Wire::Bedrock => bedrock::endpoint(id, &spec, options)?,
        _ => api_key_endpoint(id, &spec, options)?,
    };
    let price = options
        .prices
        .lookup(id)
        .or_else(|| options.prices.lookup(&spec.model));
    if price.is_none() {
        eprintln!("warning: no price for model `{id}` in the price table: costs are reported as unknown (add it with --prices FILE)");
    }
    Ok(ProviderModel {
        id: id.to_string(),
        inner: Arc::new(Inner {
            transport: Transport::with_secrets(
                options.retry,
                options.max_connections,
                endpoint.secrets,
            ),
            spec,
            url: endpoint.url,
            auth: endpoint.auth,
            price,
            sampling: options.sampling,
        }),
    })
}

impl Model for ProviderModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn session(&self, _brief: &AgentBrief) -> Box<dyn LlmSession> {
        Box::new(ProviderSession {
            failed_retries: Vec::new(),
            inner: self.inner.clone(),
        })
    }

    fn priced(&self) -> bool {
        self.inner.price.is_some()
    }
}

struct ProviderSession {
    inner: Arc<Inner>,
    /// Attempts retried before the last call failed for good.
    failed_retries: Vec<transport::RetryNote>,
}

/// A provider's reply in host terms.
pub struct Reply {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: TokenUsage,
    /// Why the model stopped, in the provider's words.
    pub finish_reason: Option<String>,
}

/// A finish reason that means the reply was cut at the output-token cap, in any wire's words
/// (OpenAI `length`, Anthropic and Bedrock `max_tokens`, Gemini `MAX_TOKENS`).
pub fn cut_at_token_cap(finish_reason: &str) -> bool {
    matches!(finish_reason, "length" | "max_tokens" | "MAX_TOKENS")
}

fn malformed(what: &str) -> LlmError {
    LlmError::Provider(format!("unexpected reply shape: {what}"))
}

#[async_trait]
impl LlmSession for ProviderSession {
    fn take_failed_retries(&mut self) -> Vec<transport::RetryNote> {
        std::mem::take(&mut self.failed_retries)
    }

    async fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        let inner = &self.inner;
        let sampling = inner.sampling.merged(&request.options);
        let body = match inner.spec.wire {
            Wire::OpenAi | Wire::Azure => {
                openai::request_body(&inner.spec.model, request, sampling)
            }
            Wire::Anthropic => anthropic::request_body(&inner.spec.model, request, sampling),
            Wire::Gemini | Wire::Vertex => gemini::request_body(request, sampling),
            Wire::Bedrock => bedrock::request_body(request, sampling),
        };
        let (value, retries) = inner
            .transport
            .post(&inner.url, &body, inner.auth.as_ref())
            .await
            .map_err(|f| {
                self.failed_retries = f.retries;
                f.error
            })?;
        let reply = match inner.spec.wire {
            Wire::OpenAi | Wire::Azure => openai::parse_reply(&value),
            Wire::Anthropic => anthropic::parse_reply(&value),
            Wire::Gemini | Wire::Vertex => gemini::parse_reply(&value),
            Wire::Bedrock => bedrock::parse_reply(&value),
        }?;
        Ok(Completion {
            cost_usd: inner.price.map(|p| p.cost(&reply.usage)),
            content: reply.content,
            tool_calls: reply.tool_calls,
            usage: reply.usage,
            truncated: reply.finish_reason.as_deref().is_some_and(cut_at_token_cap),
            finish_reason: reply.finish_reason,
            retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_base_is_shown_without_what_could_be_secret() {
        assert_eq!(
            api_base_host("https://user:pw@proxy.example:8443/v1/openai?key=sk-123"),
            "https://proxy.example:8443"
        );
        assert_eq!(
            api_base_host("http://127.0.0.1:8080/v1"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(api_base_host("sk-not-a-url"), "(not a URL)");
    }

    #[test]
    fn model_strings_name_their_provider() {
        let s = parse_spec("gpt-4o").unwrap();
        assert_eq!((s.wire, s.model.as_str()), (Wire::OpenAi, "gpt-4o"));
        let s = parse_spec("anthropic/claude-sonnet-4-5").unwrap();
        assert_eq!(
            (s.wire, s.model.as_str()),
            (Wire::Anthropic, "claude-sonnet-4-5")
        );
        assert_eq!(
            parse_spec("claude-sonnet-4-5").unwrap().wire,
            Wire::Anthropic
        );
        let s = parse_spec("gemini/gemini-2.5-pro").unwrap();
        assert_eq!((s.wire, s.model.as_str()), (Wire::Gemini, "gemini-2.5-pro"));
        let s = parse_spec("openrouter/meta-llama/llama-3-70b").unwrap();
        assert_eq!(
            (s.wire, s.model.as_str()),
            (Wire::OpenAi, "meta-llama/llama-3-70b")
        );
        assert_eq!(parse_spec("hosted_vllm/qwen").unwrap().default_base, None);
        assert_eq!(parse_spec("mystery-model"), None);
        assert_eq!(parse_spec("nosuch/model"), None);
    }

    #[test]
    fn keys_come_from_dotenv_with_the_environment_winning() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "CBENCH_TEST_DOTENV_ONLY=from-file\nPATH=not-the-real-path\n# a comment\n",
        )
        .unwrap();
        let creds = Credentials::load(dir.path()).unwrap();
        assert_eq!(creds.get("CBENCH_TEST_DOTENV_ONLY"), Some("from-file"));
        assert_ne!(creds.get("PATH"), Some("not-the-real-path"));
        std::fs::write(dir.path().join(".env"), "BROKEN LINE WITHOUT EQUALS\n").unwrap();
        let err = Credentials::load(dir.path()).expect_err("a bad .env is an error");
        assert!(err.to_string().contains(".env"), "{err}");
    }

    fn options(vars: &[(&str, &str)]) -> ProviderOptions {
        ProviderOptions {
            api_base: None,
            retry: RetryPolicy::default(),
            max_connections: 4,
            prices: PriceTable::builtin(),
            credentials: Credentials::from_vars(vars),
            sampling: Default::default(),
        }
    }

    #[test]
    fn a_missing_key_names_the_variable() {
        let spec = parse_spec("anthropic/claude-sonnet-4-5").unwrap();
        let err = build("anthropic/claude-sonnet-4-5", spec, &options(&[]))
            .err()
            .expect("no key");
        assert!(err.to_string().contains("ANTHROPIC_API_KEY"), "{err}");
        // An OpenAI-compatible server at its own address needs no key.
        let spec = parse_spec("openai/local").unwrap();
        assert!(build(
            "openai/local",
            spec,
            &options(&[("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")])
        )
        .is_ok());
    }
}
