//! Which model string names which provider: the table of LiteLLM prefixes (wire, key and
//! base-URL variables, defaults), parsing `-m`, and the catalog `cbench models` prints.

use super::{bedrock, vertex, Credentials};

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

/// ` (did you mean `x`?)` for a mistyped model string: `orcale` → `oracle`,
/// `opnai/gpt-4o` → `openai/gpt-4o`; nothing when no name is close.
pub fn did_you_mean(spec: &str) -> String {
    let guess = match spec.split_once('/') {
        Some((prefix, rest)) => {
            cbench_core::suggest::closest(prefix, PROVIDERS.iter().map(|p| p.prefix))
                .map(|p| format!("{p}/{rest}"))
        }
        None => cbench_core::suggest::closest(spec, ["oracle"]).map(str::to_string),
    };
    guess
        .map(|g| format!(" (did you mean `{g}`?)"))
        .unwrap_or_default()
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
