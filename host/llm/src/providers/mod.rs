//! Real LLM providers behind LiteLLM-style model strings: `gpt-4o` / `openai/<model>`
//! (OpenAI, or any OpenAI-compatible server with a base URL), `anthropic/<model>`,
//! `gemini/<model>`, `vertex_ai/<model>` (service-account OAuth), `azure/<deployment>`,
//! `bedrock/<model>` (SigV4), and the OpenAI-compatible hosts of [`catalog`].
//! Keys come from the environment or `.env`; they never appear in errors or records.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod openai;
pub mod sigv4;
pub mod transport;
pub mod vertex;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

use super::prices::{Price, PriceTable};
use super::{
    AgentBrief, Completion, CompletionRequest, LlmError, LlmSession, Model, ModelError, TokenUsage,
    ToolCall,
};
use transport::{Auth, RetryPolicy, StaticHeaders, Transport};

/// A wire format (request and reply shapes plus authentication).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI chat completions with a bearer key.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini API (`generativelanguage.googleapis.com`) with an API key.
    Gemini,
    /// Vertex AI's Gemini API: the Gemini body, a service account's OAuth token.
    Vertex,
    /// Azure OpenAI: the OpenAI body at a deployment URL, an `api-key` header.
    Azure,
    /// Amazon Bedrock Converse, signed with AWS SigV4.
    Bedrock,
}

impl Wire {
    /// A short name for listings.
    pub fn name(self) -> &'static str {
        match self {
            Wire::OpenAi => "openai",
            Wire::Anthropic => "anthropic",
            Wire::Gemini => "gemini",
            Wire::Vertex => "vertex_ai",
            Wire::Azure => "azure",
            Wire::Bedrock => "bedrock",
        }
    }
}

/// A parsed model string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub wire: Wire,
    /// The model name sent to the provider (a deployment for Azure, a model id for Bedrock).
    pub model: String,
    /// Variables that may hold the key, in the order they are read (empty: none is read).
    pub key_vars: &'static [&'static str],
    /// Whether a missing key is an error.
    pub key_required: bool,
    /// Variables overriding the base URL, in the order they are read.
    pub base_vars: &'static [&'static str],
    /// The base URL when nothing overrides it (None: one must be given, or the wire derives it).
    pub default_base: Option<&'static str>,
    /// The base must end in `/v1`: LiteLLM's variables for these hosts hold the bare origin.
    pub ensure_v1: bool,
}

/// An environment variable a provider reads, with the alternatives read in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvVar {
    /// The names, the usual one first (the order they are read in is the provider's: see
    /// [`ModelSpec::key_vars`]; Vertex reads its explicit credentials before ADC).
    pub names: &'static [&'static str],
    /// Whether the model cannot be used without it.
    pub required: bool,
    /// What it holds.
    pub purpose: &'static str,
}

impl EnvVar {
    /// The first of the names that is set in `credentials`, never its value.
    pub fn set_in(&self, credentials: &Credentials) -> Option<&'static str> {
        self.names.iter().copied().find(|n| credentials.is_set(n))
    }
}

/// One accepted form of model string, for `cbench models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderForm {
    /// `vertex_ai/<model>`, or a bare pattern like `claude-…`.
    pub form: String,
    pub wire: Wire,
    /// A model string of this form.
    pub example: &'static str,
    /// The variables read (keys, base URLs, region, project, ...).
    pub vars: Vec<EnvVar>,
    /// Anything else worth knowing (e.g. `--api-base` overrides every base URL).
    pub note: &'static str,
}

/// A provider reached through a `prefix/` model string.
struct Provider {
    prefix: &'static str,
    wire: Wire,
    key_vars: &'static [&'static str],
    key_required: bool,
    base_vars: &'static [&'static str],
    default_base: Option<&'static str>,
    ensure_v1: bool,
    example: &'static str,
    /// Variables besides the key and the base URL.
    extra: &'static [EnvVar],
    note: &'static str,
}

const OPENAI_KEY: &[&str] = &["OPENAI_API_KEY"];
const OPENAI_BASE: &[&str] = &["OPENAI_BASE_URL"];

/// Every `prefix/` form. Variable names and default addresses follow LiteLLM's
/// `get_llm_provider` (precedence included), so a LiteLLM `.env` works unchanged.
const PROVIDERS: &[Provider] = &[
    Provider {
        prefix: "openai",
        wire: Wire::OpenAi,
        key_vars: OPENAI_KEY,
        key_required: true,
        base_vars: OPENAI_BASE,
        default_base: Some("https://api.openai.com/v1"),
        ensure_v1: false,
        example: "openai/gpt-4o",
        extra: &[],
        note: "any OpenAI-compatible server with OPENAI_BASE_URL or --api-base (no key needed there)",
    },
    Provider {
        prefix: "anthropic",
        wire: Wire::Anthropic,
        key_vars: &["ANTHROPIC_API_KEY"],
        key_required: true,
        base_vars: &["ANTHROPIC_BASE_URL"],
        default_base: Some("https://api.anthropic.com"),
        ensure_v1: false,
        example: "anthropic/claude-sonnet-4-5",
        extra: &[],
        note: "",
    },
    Provider {
        prefix: "gemini",
        wire: Wire::Gemini,
        key_vars: &["GEMINI_API_KEY"],
        key_required: true,
        base_vars: &["GEMINI_BASE_URL"],
        default_base: Some("https://generativelanguage.googleapis.com"),
        ensure_v1: false,
        example: "gemini/gemini-2.5-flash",
        extra: &[],
        note: "",
    },
    Provider {
        prefix: "vertex_ai",
        wire: Wire::Vertex,
        // Listed with the usual one first; `vertex` reads them in LiteLLM's order.
        key_vars: vertex::CREDENTIAL_VARS,
        key_required: true,
        base_vars: &["VERTEXAI_API_BASE"],
        default_base: None,
        ensure_v1: false,
        example: "vertex_ai/gemini-3-flash-preview",
        extra: &[
            EnvVar {
                names: &["VERTEXAI_PROJECT", "VERTEX_PROJECT"],
                required: false,
                purpose: "Google Cloud project (default: the key file's project_id)",
            },
            EnvVar {
                names: &["VERTEXAI_LOCATION", "VERTEX_LOCATION"],
                required: false,
                purpose: "region, e.g. us-central1 (the default) or global",
            },
        ],
        note: "GOOGLE_APPLICATION_CREDENTIALS: a service-account key file; VERTEXAI_CREDENTIALS may hold the path or the JSON itself",
    },
    Provider {
        prefix: "azure",
        wire: Wire::Azure,
        key_vars: &["AZURE_API_KEY", "AZURE_OPENAI_API_KEY"],
        key_required: true,
        base_vars: &["AZURE_API_BASE"],
        default_base: None,
        ensure_v1: false,
        example: "azure/my-gpt-4o-deployment",
        extra: &[EnvVar {
            names: &["AZURE_API_VERSION"],
            required: false,
            purpose: "api-version query parameter",
        }],
        note: "the part after azure/ is the deployment name; AZURE_API_BASE is https://<resource>.openai.azure.com",
    },
    Provider {
        prefix: "bedrock",
        wire: Wire::Bedrock,
        key_vars: &["AWS_ACCESS_KEY_ID"],
        key_required: true,
        base_vars: &["AWS_BEDROCK_RUNTIME_ENDPOINT"],
        default_base: None,
        ensure_v1: false,
        example: "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
        extra: &[
            EnvVar {
                names: &["AWS_SECRET_ACCESS_KEY"],
                required: true,
                purpose: "secret access key (signs requests; never sent)",
            },
            EnvVar {
                names: &["AWS_SESSION_TOKEN"],
                required: false,
                purpose: "session token of temporary credentials",
            },
            EnvVar {
                names: bedrock::REGION_VARS,
                required: true,
                purpose: "AWS region, e.g. us-east-1",
            },
        ],
        note: "the Converse API; bedrock/converse/<model> is the same",
    },
    Provider {
        prefix: "openrouter",
        wire: Wire::OpenAi,
        key_vars: &["OPENROUTER_API_KEY"],
        key_required: true,
        base_vars: &["OPENROUTER_BASE_URL", "OPENROUTER_API_BASE"],
        default_base: Some("https://openrouter.ai/api/v1"),
        ensure_v1: false,
        example: "openrouter/meta-llama/llama-3.3-70b-instruct",
        extra: &[],
        note: "",
    },
    Provider {
        prefix: "together_ai",
        wire: Wire::OpenAi,
        key_vars: &[
            "TOGETHER_API_KEY",
            "TOGETHER_AI_API_KEY",
            "TOGETHERAI_API_KEY",
            "TOGETHER_AI_TOKEN",
        ],
        key_required: true,
        base_vars: &["TOGETHER_AI_API_BASE"],
        default_base: Some("https://api.together.xyz/v1"),
        ensure_v1: false,
        example: "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
        extra: &[],
        note: "",
    },
    Provider {
        prefix: "groq",
        wire: Wire::OpenAi,
        key_vars: &["GROQ_API_KEY"],
        key_required: true,
        base_vars: &["GROQ_API_BASE"],
        default_base: Some("https://api.groq.com/openai/v1"),
        ensure_v1: false,
        example: "groq/llama-3.3-70b-versatile",
        extra: &[],
        note: "",
    },
    Provider {
        prefix: "deepseek",
        wire: Wire::OpenAi,
        key_vars: &["DEEPSEEK_API_KEY"],
        key_required: true,
        base_vars: &["DEEPSEEK_API_BASE"],
        // DeepSeek's documented OpenAI-compatible base (LiteLLM defaults to its /beta twin,
        // which only adds prefix completion, unused here).
        default_base: Some("https://api.deepseek.com/v1"),
        ensure_v1: false,
        example: "deepseek/deepseek-chat",
        extra: &[],
        note: "",
    },
    Provider {
        prefix: "mistral",
        wire: Wire::OpenAi,
        key_vars: &["MISTRAL_API_KEY"],
        key_required: true,
        base_vars: &["MISTRAL_API_BASE"],
        default_base: Some("https://api.mistral.ai/v1"),
        ensure_v1: true,
        example: "mistral/mistral-large-latest",
        extra: &[],
        note: "",
    },
    Provider {
        prefix: "fireworks_ai",
        wire: Wire::OpenAi,
        key_vars: &[
            "FIREWORKS_API_KEY",
            "FIREWORKS_AI_API_KEY",
            "FIREWORKSAI_API_KEY",
            "FIREWORKS_AI_TOKEN",
        ],
        key_required: true,
        base_vars: &["FIREWORKS_AI_API_BASE", "FIREWORKS_API_BASE"],
        default_base: Some("https://api.fireworks.ai/inference/v1"),
        ensure_v1: false,
        example: "fireworks_ai/accounts/fireworks/models/llama-v3p3-70b-instruct",
        extra: &[],
        note: "a bare model name gets accounts/fireworks/models/ in front",
    },
    Provider {
        prefix: "xai",
        wire: Wire::OpenAi,
        key_vars: &["XAI_API_KEY"],
        key_required: true,
        base_vars: &["XAI_API_BASE"],
        default_base: Some("https://api.x.ai/v1"),
        ensure_v1: true,
        example: "xai/grok-4",
        extra: &[],
        note: "",
    },
    Provider {
        prefix: "ollama",
        wire: Wire::OpenAi,
        key_vars: &[],
        key_required: false,
        base_vars: &["OLLAMA_BASE_URL", "OLLAMA_API_BASE"],
        default_base: Some("http://localhost:11434/v1"),
        ensure_v1: true,
        example: "ollama/qwen2.5-coder",
        extra: &[],
        note: "Ollama's OpenAI-compatible endpoint",
    },
    Provider {
        prefix: "ollama_chat",
        wire: Wire::OpenAi,
        key_vars: &[],
        key_required: false,
        base_vars: &["OLLAMA_BASE_URL", "OLLAMA_API_BASE"],
        default_base: Some("http://localhost:11434/v1"),
        ensure_v1: true,
        example: "ollama_chat/qwen2.5-coder",
        extra: &[],
        note: "the same as ollama/",
    },
    Provider {
        prefix: "hosted_vllm",
        wire: Wire::OpenAi,
        key_vars: &["HOSTED_VLLM_API_KEY", "OPENAI_API_KEY"],
        key_required: false,
        base_vars: &["HOSTED_VLLM_API_BASE", "OPENAI_BASE_URL"],
        default_base: None,
        ensure_v1: false,
        example: "hosted_vllm/Qwen/Qwen2.5-Coder-32B-Instruct",
        extra: &[],
        note: "a vLLM server: give its address",
    },
];

/// Bare model names and the provider they mean.
const BARE: &[(&[&str], &str, &str, &str)] = &[
    (
        &["gpt-", "o1", "o3", "o4", "chatgpt-"],
        "gpt-… / o1… / o3… / o4… / chatgpt-…",
        "openai",
        "gpt-4o",
    ),
    (&["claude-"], "claude-…", "anthropic", "claude-sonnet-4-5"),
    (&["gemini-"], "gemini-…", "gemini", "gemini-2.5-pro"),
];

impl Provider {
    fn spec(&self, model: String) -> ModelSpec {
        ModelSpec {
            wire: self.wire,
            model,
            key_vars: self.key_vars,
            key_required: self.key_required,
            base_vars: self.base_vars,
            default_base: self.default_base,
            ensure_v1: self.ensure_v1,
        }
    }

    fn vars(&self) -> Vec<EnvVar> {
        let mut vars = Vec::new();
        if !self.key_vars.is_empty() {
            vars.push(EnvVar {
                names: self.key_vars,
                required: self.key_required,
                purpose: match self.wire {
                    Wire::Vertex => "service-account credentials",
                    Wire::Bedrock => "access key id",
                    _ => "API key",
                },
            });
        }
        vars.push(EnvVar {
            names: self.base_vars,
            // Vertex and Bedrock derive their address from the location / region.
            required: self.default_base.is_none()
                && !matches!(self.wire, Wire::Vertex | Wire::Bedrock),
            purpose: "base URL (--api-base overrides it)",
        });
        vars.extend_from_slice(self.extra);
        vars
    }
}

fn provider(prefix: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.prefix == prefix)
}

/// Every accepted form of provider model string, with the variables each reads.
pub fn catalog() -> Vec<ProviderForm> {
    let bare = BARE.iter().filter_map(|(_, form, prefix, example)| {
        let p = provider(prefix)?;
        Some(ProviderForm {
            form: form.to_string(),
            wire: p.wire,
            example,
            vars: p.vars(),
            note: "",
        })
    });
    let prefixed = PROVIDERS.iter().map(|p| ProviderForm {
        form: match p.wire {
            Wire::Azure => format!("{}/<deployment>", p.prefix),
            _ => format!("{}/<model>", p.prefix),
        },
        wire: p.wire,
        example: p.example,
        vars: p.vars(),
        note: p.note,
    });
    bare.chain(prefixed).collect()
}

/// The accepted forms as one line, for error messages.
pub fn forms_summary() -> String {
    catalog()
        .iter()
        .map(|f| format!("`{}`", f.form))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a model string; None when no provider matches.
pub fn parse_spec(spec: &str) -> Option<ModelSpec> {
    let (prefix, name) = match spec.split_once('/') {
        Some((p, n)) if !n.is_empty() => (Some(p), n),
        _ => (None, spec),
    };
    match prefix {
        Some(prefix) => {
            let p = provider(prefix)?;
            let model = match p.prefix {
                // LiteLLM's explicit route to the Converse API; `invoke/` (the older
                // per-vendor bodies) is not implemented.
                "bedrock" if name.starts_with("invoke/") => return None,
                "bedrock" => name.strip_prefix("converse/").unwrap_or(name).to_string(),
                // As LiteLLM does: Fireworks names serverless models by account path.
                "fireworks_ai" if !name.starts_with("accounts/") => {
                    format!("accounts/fireworks/models/{name}")
                }
                _ => name.to_string(),
            };
            (!model.is_empty()).then(|| p.spec(model))
        }
        None => BARE
            .iter()
            .find(|(starts, ..)| starts.iter().any(|s| name.starts_with(s)))
            .and_then(|(_, _, prefix, _)| provider(prefix))
            .map(|p| p.spec(name.to_string())),
    }
}

/// `A` or `A (or B, C)`: the variables that may hold one setting.
pub(crate) fn alternatives(names: &[&str]) -> String {
    match names {
        [] => "an API key variable".into(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (or {})", rest.join(", ")),
    }
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

    /// Whether `var` is set to something other than blanks (its value is never exposed).
    pub fn is_set(&self, var: &str) -> bool {
        self.get(var).is_some()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The first of `names` that is set, and its value.
    fn first(&self, names: &[&'static str]) -> Option<(&'static str, &str)> {
        names
            .iter()
            .find_map(|n| self.get(n).map(|v| (*n, v.trim())))
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
            .map_err(|f| f.error)?;
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
