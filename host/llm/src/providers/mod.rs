//! Real LLM providers behind LiteLLM-style model strings: `gpt-4o` / `openai/<model>`
//! (OpenAI, or any OpenAI-compatible server with a base URL), `anthropic/<model>`,
//! `gemini/<model>`, plus `openrouter/<model>`, `ollama/<model>`, `hosted_vllm/<model>`.
//! Keys come from the environment or `.env`; they never appear in errors or records.

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod transport;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use super::prices::{Price, PriceTable};
use super::{
    AgentBrief, Completion, CompletionRequest, LlmError, LlmSession, Model, ModelError, TokenUsage,
    ToolCall,
};
use transport::{RetryPolicy, Transport};

/// A wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
}

/// A parsed model string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub wire: Wire,
    /// The model name sent to the provider.
    pub model: String,
    /// Environment variable holding the key (None: the server needs none).
    pub key_var: Option<&'static str>,
    /// Whether a missing key is an error.
    pub key_required: bool,
    /// Environment variable overriding the base URL.
    pub base_var: &'static str,
    /// The base URL when nothing overrides it (None: one must be given).
    pub default_base: Option<&'static str>,
}

/// Parses a model string; None when no provider matches.
pub fn parse_spec(spec: &str) -> Option<ModelSpec> {
    let (prefix, name) = match spec.split_once('/') {
        Some((p, n)) if !n.is_empty() => (Some(p), n),
        _ => (None, spec),
    };
    let openai = |model: &str| ModelSpec {
        wire: Wire::OpenAi,
        model: model.to_string(),
        key_var: Some("OPENAI_API_KEY"),
        key_required: true,
        base_var: "OPENAI_BASE_URL",
        default_base: Some("https://api.openai.com/v1"),
    };
    let spec = match prefix {
        Some("openai") => openai(name),
        Some("anthropic") => ModelSpec {
            wire: Wire::Anthropic,
            model: name.to_string(),
            key_var: Some("ANTHROPIC_API_KEY"),
            key_required: true,
            base_var: "ANTHROPIC_BASE_URL",
            default_base: Some("https://api.anthropic.com"),
        },
        Some("gemini") => ModelSpec {
            wire: Wire::Gemini,
            model: name.to_string(),
            key_var: Some("GEMINI_API_KEY"),
            key_required: true,
            base_var: "GEMINI_BASE_URL",
            default_base: Some("https://generativelanguage.googleapis.com"),
        },
        Some("openrouter") => ModelSpec {
            key_var: Some("OPENROUTER_API_KEY"),
            base_var: "OPENROUTER_BASE_URL",
            default_base: Some("https://openrouter.ai/api/v1"),
            ..openai(name)
        },
        Some("ollama") => ModelSpec {
            key_var: None,
            key_required: false,
            base_var: "OLLAMA_BASE_URL",
            default_base: Some("http://localhost:11434/v1"),
            ..openai(name)
        },
        Some("hosted_vllm") => ModelSpec {
            key_required: false,
            default_base: None,
            ..openai(name)
        },
        Some(_) => return None,
        None if ["gpt-", "o1", "o3", "o4", "chatgpt-"]
            .iter()
            .any(|p| name.starts_with(p)) =>
        {
            openai(name)
        }
        None if name.starts_with("claude-") => parse_spec(&format!("anthropic/{name}"))?,
        None if name.starts_with("gemini-") => parse_spec(&format!("gemini/{name}"))?,
        None => return None,
    };
    Some(spec)
}

/// Process environment over the `.env` file of the working directory.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    vars: HashMap<String, String>,
}

impl Credentials {
    /// Reads `dir/.env` (if present) and the process environment (which wins).
    pub fn load(dir: &Path) -> Result<Credentials, ModelError> {
        let mut vars = HashMap::new();
        let path = dir.join(".env");
        if path.is_file() {
            let entries = dotenvy::from_path_iter(&path).map_err(|e| ModelError::EnvFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            for entry in entries {
                let (k, v) = entry.map_err(|e| ModelError::EnvFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                vars.insert(k, v);
            }
        }
        vars.extend(std::env::vars());
        Ok(Credentials { vars })
    }

    /// From explicit variables (tests).
    pub fn from_vars(vars: &[(&str, &str)]) -> Credentials {
        Credentials {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
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
    headers: HeaderMap,
    transport: Transport,
    price: Option<Price>,
    sampling: Sampling,
}

/// Builds the provider model for `spec`, or says what is missing (before any sandbox starts).
pub fn build(
    id: &str,
    spec: ModelSpec,
    options: &ProviderOptions,
) -> Result<ProviderModel, ModelError> {
    let base = options
        .api_base
        .clone()
        .or_else(|| options.credentials.get(spec.base_var).map(str::to_string))
        .or_else(|| spec.default_base.map(str::to_string))
        .ok_or_else(|| ModelError::NoBaseUrl {
            model: id.to_string(),
            var: spec.base_var,
        })?;
    let base = base.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ModelError::BadBaseUrl {
            model: id.to_string(),
            url: base,
        });
    }
    let custom_base = spec.default_base.is_none_or(|d| d != base);
    let key = spec
        .key_var
        .and_then(|var| options.credentials.get(var))
        .map(str::to_string);
    // An OpenAI-compatible server at its own address may need no key.
    if key.is_none() && spec.key_required && !(spec.wire == Wire::OpenAi && custom_base) {
        return Err(ModelError::MissingKey {
            model: id.to_string(),
            var: spec.key_var.unwrap_or("an API key variable"),
        });
    }
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let secret_header = |value: String| {
        let mut v = HeaderValue::from_str(&value).map_err(|_| ModelError::MissingKey {
            model: id.to_string(),
            var: spec.key_var.unwrap_or("the key"),
        })?;
        v.set_sensitive(true);
        Ok::<_, ModelError>(v)
    };
    let url = match spec.wire {
        Wire::OpenAi => {
            if let Some(k) = &key {
                headers.insert(AUTHORIZATION, secret_header(format!("Bearer {k}"))?);
            }
            format!("{base}/chat/completions")
        }
        Wire::Anthropic => {
            if let Some(k) = &key {
                headers.insert(
                    HeaderName::from_static("x-api-key"),
                    secret_header(k.clone())?,
                );
            }
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(anthropic::API_VERSION),
            );
            format!("{base}/v1/messages")
        }
        Wire::Gemini => {
            if let Some(k) = &key {
                headers.insert(
                    HeaderName::from_static("x-goog-api-key"),
                    secret_header(k.clone())?,
                );
            }
            format!("{base}/v1beta/models/{}:generateContent", spec.model)
        }
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
            transport: Transport::new(options.retry, options.max_connections, key),
            spec,
            url,
            headers,
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
            inner: self.inner.clone(),
        })
    }

    fn priced(&self) -> bool {
        self.inner.price.is_some()
    }
}

struct ProviderSession {
    inner: Arc<Inner>,
}

/// A provider's reply in host terms.
pub struct Reply {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: TokenUsage,
}

fn malformed(what: &str) -> LlmError {
    LlmError::Provider(format!("unexpected reply shape: {what}"))
}

#[async_trait]
impl LlmSession for ProviderSession {
    async fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        let inner = &self.inner;
        let sampling = inner.sampling.merged(&request.options);
        let body = match inner.spec.wire {
            Wire::OpenAi => openai::request_body(&inner.spec.model, request, sampling),
            Wire::Anthropic => anthropic::request_body(&inner.spec.model, request, sampling),
            Wire::Gemini => gemini::request_body(request, sampling),
        };
        let (value, retries) = inner
            .transport
            .post_json(&inner.url, inner.headers.clone(), &body)
            .await
            .map_err(|f| f.error)?;
        let reply = match inner.spec.wire {
            Wire::OpenAi => openai::parse_reply(&value),
            Wire::Anthropic => anthropic::parse_reply(&value),
            Wire::Gemini => gemini::parse_reply(&value),
        }?;
        Ok(Completion {
            cost_usd: inner.price.map(|p| p.cost(&reply.usage)),
            content: reply.content,
            tool_calls: reply.tool_calls,
            usage: reply.usage,
            retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
