//! LLM mediation: the model a run uses (`-m`: providers over HTTP, `oracle`, scripted and replayed
//! sessions), prices and budgets, per-agent sessions, and the trajectories they record.
//!
//! Owns every byte an agent exchanges with a model. May read the logs layout (replay) but
//! knows nothing of sandboxes, plugins or grading.

use cbench_core::layout;
pub use cbench_core::setting::Setting;

pub mod budget;
pub mod oracle;
pub mod prices;
pub mod providers;
pub mod replay;
pub mod scripted;
pub mod trajectory;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Speaker of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON object text.
    pub arguments: String,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    /// JSON Schema text.
    pub parameters_schema: String,
}

/// A completion request.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionRequest {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolDefinition>,
    /// The plugin's per-request generation settings (WIT 0.2.0 and later).
    #[serde(default, skip_serializing_if = "RequestOptions::is_empty")]
    pub options: RequestOptions,
}

/// Most stop sequences a request may carry (the smallest limit among the providers: OpenAI's).
pub const MAX_STOP_SEQUENCES: usize = 4;

/// Per-request generation settings a plugin asks for. The run's own settings
/// (`--temperature`, `--max-output-tokens`) take precedence; see `providers::Sampling::merged`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

impl RequestOptions {
    /// No option set.
    pub fn is_empty(&self) -> bool {
        self == &RequestOptions::default()
    }

    /// Refuses options no provider accepts, naming the option.
    pub fn validate(&self) -> Result<(), String> {
        if self.stop.len() > MAX_STOP_SEQUENCES {
            return Err(format!(
                "{} stop sequences; at most {MAX_STOP_SEQUENCES} are allowed",
                self.stop.len()
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err("an empty stop sequence".into());
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) || t.is_nan() {
                return Err(format!("temperature {t} is outside 0..=2"));
            }
        }
        if self.max_output_tokens == Some(0) {
            return Err("max-output-tokens of 0".into());
        }
        Ok(())
    }
}

/// Token counts as the provider reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl TokenUsage {
    /// Adds another call's usage.
    pub fn add(&mut self, other: &TokenUsage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
    }
}

/// The model's reply.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: TokenUsage,
    /// None when the price is unknown.
    pub cost_usd: Option<f64>,
    /// Attempts that failed and were retried before this reply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<providers::transport::RetryNote>,
    /// Why the model stopped, in the provider's words (`stop`, `length`, `end_turn`, …); None
    /// for built-in models and providers that do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// The reply was cut at the output-token cap: a malformed action may just be unfinished.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Why a completion failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LlmError {
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("provider error: {0}")]
    Provider(String),
    /// The provider could not be used (unreachable, 5xx/429 after every retry, timeouts,
    /// a rejected key): an infrastructure failure, never the agent's.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// Problems resolving `-m MODEL`.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model `{0}`{hint}: use `oracle`, `scripted:<file>`, `replay:<run dir>` or a provider model: {forms} (`cbench models` lists them with their variables)", hint = providers::did_you_mean(.0), forms = providers::forms_summary())]
    Unknown(String),
    #[error("model `{model}`: no API key: set {var} in the environment or in ./.env")]
    MissingKey { model: String, var: String },
    #[error("model `{model}`: no server address: set {var} or --api-base")]
    NoBaseUrl { model: String, var: String },
    #[error("model `{model}`: no {what}: set {var} in the environment or in ./.env")]
    MissingSetting {
        model: String,
        what: &'static str,
        var: String,
    },
    #[error("model `{model}`: {var}: {reason}")]
    BadSetting {
        model: String,
        var: String,
        reason: String,
    },
    /// A credentials file that cannot be used; `source` is its path (or `inline JSON`),
    /// never its content.
    #[error("model `{model}`: {var} ({source_name}): {reason}")]
    BadCredentials {
        model: String,
        var: &'static str,
        source_name: String,
        reason: String,
    },
    #[error("model `{model}`: base URL `{url}` must start with http:// or https://")]
    BadBaseUrl { model: String, url: String },
    #[error("{path}: cannot read: {reason}")]
    EnvFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Prices(#[from] prices::PriceError),
    #[error("replay:{path}: {reason}")]
    BadReplay { path: PathBuf, reason: String },
    #[error("scripted model file {path}: {reason}")]
    BadScript { path: PathBuf, reason: String },
}

/// A feature as the model layer may see it (the oracle replays the gold patch).
#[derive(Debug, Clone)]
pub struct FeatureBrief {
    pub id: u32,
    pub gold_patch: String,
}

/// What a model session knows about its agent.
#[derive(Debug, Clone)]
pub struct AgentBrief {
    pub agent_id: String,
    pub teammates: Vec<String>,
    pub setting: Setting,
    pub features: Vec<FeatureBrief>,
    pub messaging_enabled: bool,
    /// The pair's log directory relative to the run (`<repo>/task<id>/features_<a>_<b>`).
    pub pair_key: String,
}

/// One agent's conversation with the model.
#[async_trait]
pub trait LlmSession: Send {
    /// The next reply.
    async fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, LlmError>;
    /// The attempts retried before the last `complete` failed for good (a success carries
    /// its own in [`Completion::retries`]).
    fn take_failed_retries(&mut self) -> Vec<providers::transport::RetryNote> {
        Vec::new()
    }
}

/// A model a run can use.
pub trait Model: Send + Sync {
    /// The model string as given by the user.
    fn id(&self) -> &str;
    /// A fresh session for one agent.
    fn session(&self, brief: &AgentBrief) -> Box<dyn LlmSession>;
    /// Whether calls have a known price (an unpriced model's cost is unknown, never 0).
    fn priced(&self) -> bool {
        true
    }
}

/// Resolves a `-m` string into a model.
pub fn resolve_with(
    spec: &str,
    options: &providers::ProviderOptions,
) -> Result<Arc<dyn Model>, ModelError> {
    if let Some(provider) = providers::parse_spec(spec) {
        return Ok(Arc::new(providers::build(spec, provider, options)?));
    }
    if spec == "oracle" {
        return Ok(Arc::new(oracle::Oracle));
    }
    if let Some(dir) = spec.strip_prefix("replay:") {
        return Ok(Arc::new(replay::Replay::open(spec, Path::new(dir))?));
    }
    if let Some(path) = spec.strip_prefix("scripted:") {
        return Ok(Arc::new(scripted::Scripted::load(
            spec,
            PathBuf::from(path),
        )?));
    }
    Err(ModelError::Unknown(spec.to_string()))
}

/// Rough token estimate (4 characters a token) for models that do not count.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Input-token estimate of a whole request.
pub fn estimate_request_tokens(request: &CompletionRequest) -> u64 {
    request
        .messages
        .iter()
        .map(|m| {
            estimate_tokens(&m.content)
                + m.tool_calls
                    .iter()
                    .map(|c| estimate_tokens(&c.arguments))
                    .sum::<u64>()
        })
        .sum()
}

/// A reply of a built-in model: free, with estimated token counts.
pub fn builtin_completion(
    request: &CompletionRequest,
    content: String,
    tool_calls: Vec<ToolCall>,
) -> Completion {
    let output_tokens = estimate_tokens(&content)
        + tool_calls
            .iter()
            .map(|c| estimate_tokens(&c.arguments))
            .sum::<u64>();
    Completion {
        usage: TokenUsage {
            input_tokens: estimate_request_tokens(request),
            output_tokens,
            ..TokenUsage::default()
        },
        content,
        tool_calls,
        cost_usd: Some(0.0),
        retries: Vec::new(),
        finish_reason: None,
        truncated: false,
    }
}

/// A reply carrying one bash command: a tool call when tools were offered, a ```bash block otherwise.
pub fn bash_reply(
    request: &CompletionRequest,
    thought: &str,
    command: &str,
    call_id: String,
) -> (String, Vec<ToolCall>) {
    if request.tools.iter().any(|t| t.name == "bash") {
        let arguments = serde_json::json!({ "command": command }).to_string();
        (
            thought.to_string(),
            vec![ToolCall {
                id: call_id,
                name: "bash".into(),
                arguments,
            }],
        )
    } else {
        (format!("{thought}\n\n```bash\n{command}\n```"), Vec::new())
    }
}
