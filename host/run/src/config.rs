//! A validated `cbench run` configuration: what to run, where, with which model and limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::BackendChoice;
use crate::dataset::Selection;
use crate::eval::merge::MergePolicy;
use crate::llm::{self, Model, ModelError, Setting};
use crate::plugin::PluginLimits;

/// Pair `index` of the run's `count` pairs (sorted by key), which must be `key`: what the
/// manifest a scheduler's task was submitted with says it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairTask {
    pub index: usize,
    pub count: usize,
    pub key: String,
}

/// A validated `cbench run` configuration.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub name: String,
    pub agent: PathBuf,
    /// One task of a scheduler's array (`cbench run-pair`): only this pair of the run's pairs.
    pub pair_task: Option<PairTask>,
    /// The CooperBench agent name `--agent` gave (e.g. `mini_swe_agent_v2`) when a cbench
    /// plugin stands in for it; said once in the run's header.
    pub stands_in_for: Option<String>,
    /// `--team`: one plugin per agent, agent k gets the k-th (`agent` is the first); empty when
    /// every agent runs `agent`.
    pub team: Vec<PathBuf>,
    pub model: String,
    pub setting: Setting,
    pub selection: Selection,
    pub concurrency: usize,
    pub eval_concurrency: usize,
    pub dataset_dir: PathBuf,
    pub log_dir: PathBuf,
    pub force: bool,
    pub messaging: bool,
    /// `--redis URL`: messages go through Redis instead of the in-process bus.
    pub redis: Option<String>,
    /// `--shard I/N`: run only this shard's pairs (other invocations run the rest).
    pub shard: Option<crate::shard::Shard>,
    /// How long Redis may stay unreachable before a pair is an infrastructure error.
    pub redis_outage: Duration,
    pub auto_eval: bool,
    /// The `--agent-config` file and its text.
    pub agent_config: Option<(PathBuf, String)>,
    pub max_steps: u32,
    pub command_timeout: Duration,
    pub test_timeout: Duration,
    pub plugin_limits: PluginLimits,
    /// `--max-patch-mb`: caps on what an agent's tree may turn into a patch.
    pub patch_limits: crate::sandbox::patch::PatchLimits,
    pub cache_dir: PathBuf,
    /// What to do when the naive merge conflicts.
    pub merge_policy: MergePolicy,
    /// `--repo-cache`: local copies of upstream repositories as `<owner>/<name>`.
    pub repo_cache: Option<PathBuf>,
    /// `--exclude-unverified`: a verified.json; only pairs of verified features run.
    pub exclude_unverified: Option<PathBuf>,
    /// Where agents and graders run.
    pub backend: BackendChoice,
    /// `--git`: a shared `team` remote per pair.
    pub git: bool,
    /// `--setting team`: which coordination mechanisms are on (`--team-no-*` turn them off).
    pub team_mechanisms: crate::messaging::team::TeamMechanisms,
    /// `--team-lead K`: agent K leads the team (1-based; agent1 by default).
    pub team_lead: usize,
    /// LLM providers and budgets.
    pub llm: LlmConfig,
    pub quiet: bool,
    /// `--lock`: written, or verified when it exists, before the run starts.
    pub lock: Option<PathBuf>,
}

/// LLM provider settings and budgets of a run.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub api_base: Option<String>,
    /// `--max-output-tokens`, `--temperature`.
    pub sampling: crate::llm::providers::Sampling,
    pub max_connections: usize,
    /// `--prices`: a user's price table over the built-in one.
    pub prices: Option<PathBuf>,
    pub retry: crate::llm::providers::transport::RetryPolicy,
    pub max_cost_usd: Option<f64>,
    pub max_tokens: Option<u64>,
    pub max_agent_wall: Option<Duration>,
    pub max_run_cost_usd: Option<f64>,
}

impl LlmConfig {
    /// Resolves `-m` with these settings (keys from the environment and ./.env).
    pub fn model(&self, spec: &str) -> Result<Arc<dyn Model>, ModelError> {
        let prices = match &self.prices {
            Some(path) => crate::llm::prices::PriceTable::with_overrides(path)?,
            None => crate::llm::prices::PriceTable::builtin(),
        };
        let options = crate::llm::providers::ProviderOptions {
            api_base: self.api_base.clone(),
            retry: self.retry,
            max_connections: self.max_connections,
            prices,
            credentials: crate::llm::providers::Credentials::load(Path::new("."))?,
            sampling: self.sampling,
        };
        llm::resolve_with(spec, &options)
    }
}
