//! `cbench run`'s arguments and their validation into run configurations (one per plugin).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::*;
use crate::eval::merge::MergePolicy;
use crate::llm::Setting;
use crate::plugin::PluginLimits;
use crate::runner::{LlmConfig, RunConfig};
use crate::sandbox::patch::PatchLimits;

/// CooperBench's default model, and so cbench's.
pub const DEFAULT_MODEL: &str = "vertex_ai/gemini-3-flash-preview";

/// Default `--max-agent-secs`: 4 hours, far beyond a step-limited agent's run (100 steps of a
/// 3-minute command and a slow model), so only a runaway agent meets it.
pub const DEFAULT_MAX_AGENT_SECS: u64 = 4 * 60 * 60;

/// `--merge-policy`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MergePolicyArg {
    /// Retry a conflicting merge with `merge=union` (CooperBench 0.0.14, the paper).
    Union,
    /// Grade the lead agent's patch alone when the merge conflicts (CooperBench 0.0.29).
    Lead,
}

impl From<MergePolicyArg> for MergePolicy {
    fn from(p: MergePolicyArg) -> MergePolicy {
        match p {
            MergePolicyArg::Union => MergePolicy::Union,
            MergePolicyArg::Lead => MergePolicy::Lead,
        }
    }
}

/// `--isolation`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IsolationArg {
    Auto,
    Bwrap,
    None,
}

/// Raw `cbench run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Agent plugin: a .wasm path or a plugin name found on the plugin search path
    /// (`cbench plugin list`; CooperBench's `mini_swe_agent`/`mini_swe_agent_v2` mean
    /// mini_swe), optionally pinned: `<path or name>@sha256:<hex>`. Given more than once, every
    /// plugin runs the same selection as its own run (pairs interleaved), then the runs are
    /// compared.
    #[arg(long, short = 'a', value_name = "PLUGIN", default_value = crate::plugin::search::DEFAULT_AGENT)]
    pub agent: Vec<String>,
    /// A mixed team: agent k runs the k-th plugin (`a.wasm,b.wasm`; pins allowed).
    #[arg(
        long,
        value_name = "PLUGINS",
        value_delimiter = ',',
        conflicts_with = "agent"
    )]
    pub team: Vec<String>,
    /// Write, or when it exists verify, a lock of what makes runs comparable (plugin hashes,
    /// model, dataset content, grading version, merge policy, budgets).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Model, by its LiteLLM name (`gpt-4o`, `anthropic/<m>`, `vertex_ai/<m>`, `bedrock/<m>`,
    /// `azure/<deployment>`, … — `cbench models` lists every form and its variables), or
    /// `oracle` (replays the gold patches), `scripted:<file>`, `replay:<run dir>`.
    #[arg(long, short = 'm', default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Run name (default: <setting>-<agent>-<model>-<subset>).
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// coop: one agent per feature; solo: one agent for all features; team: coop with a lead
    /// and members sharing a task list, typed requests and a scratchpad (the plugin must declare
    /// `team`).
    #[arg(long, value_enum, default_value = "coop")]
    pub setting: SettingArg,
    /// Pairs run at once.
    #[arg(long, short = 'c', default_value_t = 30)]
    pub concurrency: usize,
    /// Pairs graded at once.
    #[arg(long, default_value_t = 10)]
    pub eval_concurrency: usize,
    /// Where runs are written.
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// Sandbox backend.
    #[arg(long, value_enum, default_value = "local")]
    pub backend: BackendArg,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// Run only pairs whose every feature `cbench dataset verify` verified (its verified.json).
    #[arg(long, value_name = "VERIFIED_JSON")]
    pub exclude_unverified: Option<PathBuf>,
    /// What grading does when the agents' patches conflict.
    #[arg(long, value_enum, default_value = "union")]
    pub merge_policy: MergePolicyArg,
    /// Local-backend confinement: bwrap when installed (auto), always bwrap, or none.
    #[arg(long, value_enum, default_value = "auto")]
    pub isolation: IsolationArg,
    /// Discard an existing run of the same name and start over.
    #[arg(long)]
    pub force: bool,
    /// Agents cannot message each other.
    #[arg(long)]
    pub no_messaging: bool,
    /// Send messages through Redis with CooperBench's key protocol (e.g. redis://localhost:6379),
    /// so `cbench watch` and other processes see them; default: the in-process bus.
    #[arg(long, env = "REDIS_URL", value_name = "URL")]
    pub redis: Option<String>,
    /// Run only shard I of N (0-based) of the selection: N invocations (machines) sharing one
    /// --log-dir produce the run one invocation would; each pair is run exactly once.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::shard::Shard>,
    /// How long a pair keeps retrying while Redis is unreachable before it is an
    /// infrastructure error (run again by the next run of the same name), seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub redis_outage_secs: u64,
    /// Give each coop pair a shared git remote named `team` (fetch; push your own branch).
    #[arg(long)]
    pub git: bool,
    /// Team setting: which agent leads (agent K; CooperBench's lead is the first).
    #[arg(
        long,
        default_value_t = 1,
        value_name = "K",
        help_heading = "Team setting"
    )]
    pub team_lead: usize,
    /// Team setting ablation: no shared task list.
    #[arg(long, help_heading = "Team setting")]
    pub team_no_task_list: bool,
    /// Team setting ablation: no typed requests between agents.
    #[arg(long, help_heading = "Team setting")]
    pub team_no_protocol: bool,
    /// Team setting ablation: `messaging.wait` returns at once (CooperBench's `wait_for_message`).
    #[arg(long, help_heading = "Team setting")]
    pub team_no_mcp: bool,
    /// Team setting ablation: plugins are asked not to show the task list before each call.
    #[arg(long, help_heading = "Team setting")]
    pub team_no_auto_refresh: bool,
    /// Team setting ablation: no directory shared by the team's sandboxes.
    #[arg(long, help_heading = "Team setting")]
    pub team_no_scratchpad: bool,
    /// Do not grade after the agents finish.
    #[arg(long)]
    pub no_auto_eval: bool,
    /// File handed to the plugin as its configuration.
    #[arg(long)]
    pub agent_config: Option<PathBuf>,
    /// LLM calls per agent.
    #[arg(long, default_value_t = 100)]
    pub max_steps: u32,
    /// Default per-command timeout, seconds.
    #[arg(long, default_value_t = 180)]
    pub command_timeout: u64,
    /// Timeout of one test run while grading, seconds.
    #[arg(long, default_value_t = 900)]
    pub test_timeout: u64,
    /// Memory cap per plugin instance (all its memories together), MiB.
    #[arg(long, default_value_t = 512)]
    pub plugin_memory_mb: usize,
    /// CPU time a plugin may spend in its own code (host calls excluded), in total, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub plugin_compute_secs: f64,
    /// Largest patch an agent may leave, and largest new or changed file in its tree, in MiB;
    /// over it the patch is rejected and the agent fails.
    #[arg(long, default_value_t = 10, value_name = "MIB")]
    pub max_patch_mb: u64,
    /// Largest message an agent may send, in KiB; a longer one is refused (not sent).
    #[arg(long, default_value_t = 64, value_name = "KIB")]
    pub max_message_kb: u64,
    /// Most messages one agent may send (a broadcast counts one per teammate).
    #[arg(long, default_value_t = crate::plugin::DEFAULT_MAX_MESSAGES)]
    pub max_messages: u32,
    #[command(flatten)]
    pub caches: CacheArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also write a trace of the run (every agent step's model call, plugin time, host work and
    /// sandbox command, sandbox starts, grading) to FILE in Chrome's trace format: open it at
    /// ui.perfetto.dev or chrome://tracing
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// LLM provider settings and the budgets the host enforces.
#[derive(Debug, Args)]
pub struct LlmArgs {
    /// Base URL of the provider (overrides OPENAI_BASE_URL / ANTHROPIC_BASE_URL / GEMINI_BASE_URL
    /// and the other providers' variables; `--base-url` as in CooperBench 0.0.29).
    #[arg(long, visible_alias = "base-url", value_name = "URL")]
    pub api_base: Option<String>,
    /// Requests in flight to the provider at once.
    #[arg(long, default_value_t = 16)]
    pub max_connections: usize,
    /// Price table adding to / replacing the built-in one (data/prices.json shape).
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Retries of one LLM call on 429, 5xx and timeouts.
    #[arg(long, default_value_t = 6)]
    pub llm_retries: u32,
    /// First retry's backoff, milliseconds (doubles each retry, with jitter; Retry-After wins).
    #[arg(long, default_value_t = 1000)]
    pub llm_backoff_ms: u64,
    /// Longest total backoff between retries of one call, seconds (request time not counted).
    #[arg(long, default_value_t = 300)]
    pub llm_max_wait: u64,
    /// Timeout of one LLM request, seconds.
    #[arg(long, default_value_t = 600)]
    pub llm_timeout: u64,
    /// Cost limit per agent, USD (0 = none).
    #[arg(long, default_value_t = 3.0)]
    pub max_cost: f64,
    /// Token limit per agent (input + output + cache).
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Wall-time limit per agent, seconds (0 = none): an agent still running then is stopped
    /// wherever it is (its own code, a command, a model call) and ends LimitsExceeded.
    #[arg(long, default_value_t = DEFAULT_MAX_AGENT_SECS)]
    pub max_agent_secs: u64,
    /// Cost cap of the whole run, USD.
    #[arg(long)]
    pub max_run_cost: Option<f64>,
    /// Output-token cap of every LLM call (default: the provider's; Anthropic 8192).
    #[arg(long)]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature of every LLM call (default: the provider's).
    #[arg(long)]
    pub temperature: Option<f64>,
}

impl LlmArgs {
    /// Validates the LLM settings.
    pub fn validate(&self) -> Result<LlmConfig, CliError> {
        if self.max_connections == 0 {
            return Err(CliError::Zero {
                flag: "--max-connections",
            });
        }
        if self.llm_timeout == 0 {
            return Err(CliError::Zero {
                flag: "--llm-timeout",
            });
        }
        for (flag, value) in [
            ("--max-cost", Some(self.max_cost)),
            ("--max-run-cost", self.max_run_cost),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(CliError::Money { flag });
            }
        }
        if self.max_output_tokens == Some(0) {
            return Err(CliError::Zero {
                flag: "--max-output-tokens",
            });
        }
        if self
            .temperature
            .is_some_and(|t| !(t.is_finite() && (0.0..=2.0).contains(&t)))
        {
            return Err(CliError::Temperature(self.temperature.unwrap_or_default()));
        }
        Ok(LlmConfig {
            sampling: crate::llm::providers::Sampling {
                max_output_tokens: self.max_output_tokens,
                temperature: self.temperature,
            },
            api_base: self.api_base.clone(),
            max_connections: self.max_connections,
            prices: self.prices.clone(),
            retry: RetryPolicy {
                max_retries: self.llm_retries,
                initial_backoff: Duration::from_millis(self.llm_backoff_ms),
                max_backoff: Duration::from_secs(60),
                max_total_wait: Duration::from_secs(self.llm_max_wait),
                request_timeout: Duration::from_secs(self.llm_timeout),
            },
            max_cost_usd: (self.max_cost > 0.0).then_some(self.max_cost),
            max_tokens: self.max_tokens,
            max_agent_wall: (self.max_agent_secs > 0)
                .then(|| Duration::from_secs(self.max_agent_secs)),
            max_run_cost_usd: self.max_run_cost,
        })
    }
}

/// `mini_swe` → `msa` (as in CooperBench's run names); other plugins keep their file stem.
fn agent_abbreviation(agent: &std::path::Path) -> String {
    let stem = agent
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "agent".into());
    match stem.as_str() {
        "mini_swe" | "mini_swe_agent" => "msa".into(),
        _ => stem,
    }
}

/// CooperBench's abbreviation of its own agent names in run names.
fn cooperbench_abbreviation(agent: &str) -> String {
    match agent {
        "mini_swe_agent" => "msa".into(),
        "mini_swe_agent_v2" => "msa_v2".into(),
        other => other.into(),
    }
}

/// The selection part of a default run name: `full`, `lite`, `full-llama_index_task-task8394-f1_2`.
/// Narrowing filters are in it, so a run of another selection never joins an earlier one.
fn selection_label(selection: &SelectionArgs) -> String {
    let mut label = selection
        .subset
        .as_deref()
        .map(sanitize)
        .unwrap_or_else(|| "full".into());
    if let Some(repo) = &selection.repo {
        label.push('-');
        // Repository names are directory names: kept as they are when valid in a run name.
        if repo
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            label.push_str(repo);
        } else {
            label.push_str(&sanitize(repo));
        }
    }
    if let Some(task) = selection.task {
        label.push_str(&format!("-task{task}"));
    }
    if let Some(features) = &selection.features {
        let ids: Vec<String> = features.iter().map(u32::to_string).collect();
        label.push_str(&format!("-f{}", ids.join("_")));
    }
    label
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl RunArgs {
    /// Validates the arguments into one run configuration per `--agent` (one for `--team`);
    /// pinned plugins are hashed here, before anything starts.
    pub fn validate(self) -> Result<Vec<RunConfig>, CliError> {
        if self.force && self.shard.is_some() {
            return Err(CliError::ForceWithShard);
        }
        let backend = backend_choice(self.backend, self.isolation, &self.docker)?;
        if self.git && matches!(backend.agents(), BackendChoice::Modal(_)) {
            return Err(CliError::GitOnModal);
        }
        let team = self
            .team
            .iter()
            .map(|spec| crate::pins::PluginSpec::parse("--team", spec)?.verify())
            .collect::<Result<Vec<_>, _>>()?;
        let agents = if team.is_empty() {
            self.agent
                .iter()
                .map(|spec| crate::pins::PluginSpec::parse("--agent", spec)?.verify())
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![team[0].clone()]
        };
        let team: Vec<PathBuf> = team.into_iter().map(|r| r.path).collect();
        if team.len() == 1 {
            return Err(CliError::TeamOfOne);
        }
        if !team.is_empty() && matches!(self.setting, SettingArg::Solo) {
            return Err(CliError::SoloTeam);
        }
        let selection = self.selection.validate()?;
        for (flag, value) in [
            ("-c/--concurrency", self.concurrency as u64),
            ("--eval-concurrency", self.eval_concurrency as u64),
            ("--max-steps", self.max_steps.into()),
            ("--command-timeout", self.command_timeout),
            ("--test-timeout", self.test_timeout),
            ("--plugin-memory-mb", self.plugin_memory_mb as u64),
            ("--max-patch-mb", self.max_patch_mb),
            ("--max-message-kb", self.max_message_kb),
        ] {
            if value == 0 {
                return Err(CliError::Zero { flag });
            }
        }
        if !(self.plugin_compute_secs.is_finite() && self.plugin_compute_secs > 0.0) {
            return Err(CliError::ComputeSecs);
        }
        let agent_config = match self.agent_config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| CliError::AgentConfig {
                        path: path.clone(),
                        source,
                    })?;
                Some((path, text))
            }
            None => None,
        };
        let setting = match self.setting {
            SettingArg::Coop => Setting::Coop,
            SettingArg::Solo => Setting::Solo,
            SettingArg::Team => Setting::Team,
        };
        let ablations = [
            ("--team-no-task-list", self.team_no_task_list),
            ("--team-no-protocol", self.team_no_protocol),
            ("--team-no-mcp", self.team_no_mcp),
            ("--team-no-auto-refresh", self.team_no_auto_refresh),
            ("--team-no-scratchpad", self.team_no_scratchpad),
        ];
        if let Some((flag, _)) = ablations.iter().find(|(_, on)| *on) {
            if setting != Setting::Team {
                return Err(CliError::TeamFlagOutsideTeam(flag));
            }
        }
        if self.team_lead != 1 && setting != Setting::Team {
            return Err(CliError::TeamLeadOutsideTeam);
        }
        if self.team_lead == 0 {
            return Err(CliError::TeamLeadZero);
        }
        if self.team_lead != 1 && matches!(self.merge_policy, MergePolicyArg::Lead) {
            return Err(CliError::LeadPolicyWithOtherLead(self.team_lead));
        }
        if setting == Setting::Team
            && !self.team_no_scratchpad
            && matches!(backend.agents(), crate::backend::BackendChoice::Modal(_))
        {
            return Err(CliError::ScratchpadOnModal);
        }
        let team_mechanisms = crate::messaging::team::TeamMechanisms {
            task_list: !self.team_no_task_list,
            protocol: !self.team_no_protocol,
            scratchpad: !self.team_no_scratchpad,
            wait_for_message: !self.team_no_mcp,
            auto_refresh: !self.team_no_auto_refresh,
        };
        if let Some(n) = &self.name {
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                || n.starts_with('.')
            {
                return Err(CliError::Name(n.clone()));
            }
        }
        let abbreviation = |path: &std::path::Path| {
            if team.is_empty() {
                agent_abbreviation(path)
            } else {
                team.iter()
                    .map(|p| agent_abbreviation(p))
                    .collect::<Vec<_>>()
                    .join("+")
            }
        };
        let mut names: Vec<String> = agents
            .iter()
            .map(|resolved| (&resolved.path, resolved.stands_in_for.as_deref()))
            .map(|(agent, stands_in_for)| match (&self.name, agents.len()) {
                (Some(n), 1) => n.clone(),
                (Some(n), _) => format!("{n}-{}", abbreviation(agent)),
                // `-git` where CooperBench puts it, so a `--git` rerun is a run of its own.
                (None, _) => format!(
                    "{setting}-{}{}-{}-{}",
                    stands_in_for
                        .map(cooperbench_abbreviation)
                        .unwrap_or_else(|| abbreviation(agent)),
                    if self.git { "-git" } else { "" },
                    sanitize(&self.model),
                    selection_label(&self.selection),
                ),
            })
            .collect();
        // Two plugins with one file stem still get runs of their own.
        for k in 1..names.len() {
            if names[..k].contains(&names[k]) {
                names[k] = format!("{}-{}", names[k], k + 1);
            }
        }
        let base = RunConfig {
            exclude_unverified: self.exclude_unverified.clone(),
            name: String::new(),
            agent: PathBuf::new(),
            stands_in_for: None,
            pair_task: None,
            team: team.clone(),
            model: self.model,
            setting,
            selection,
            concurrency: self.concurrency,
            eval_concurrency: self.eval_concurrency,
            dataset_dir: self.selection.dataset_dir,
            log_dir: self.log_dir,
            force: self.force,
            messaging: !self.no_messaging,
            redis: self.redis.clone(),
            shard: self.shard,
            redis_outage: Duration::from_secs(self.redis_outage_secs.max(1)),
            git: self.git,
            team_mechanisms,
            team_lead: self.team_lead,
            auto_eval: !self.no_auto_eval,
            agent_config,
            max_steps: self.max_steps,
            command_timeout: Duration::from_secs(self.command_timeout),
            test_timeout: Duration::from_secs(self.test_timeout),
            plugin_limits: PluginLimits {
                memory_bytes: self.plugin_memory_mb << 20,
                compute: Duration::from_secs_f64(self.plugin_compute_secs),
                max_message_bytes: usize::try_from(self.max_message_kb.saturating_mul(1024))
                    .unwrap_or(usize::MAX),
                max_messages: self.max_messages,
            },
            patch_limits: PatchLimits {
                max_patch_bytes: self.max_patch_mb.saturating_mul(1 << 20),
                // The tree: what the agent may add (its disk limit) on top of its base.
                max_snapshot_bytes: match backend.agents() {
                    crate::backend::BackendChoice::Local(o) => o.limits.disk_bytes,
                    crate::backend::BackendChoice::Docker(d) => d.limits.disk_bytes,
                    // The archive a Modal sandbox sends is capped on its own (512 MiB).
                    crate::backend::BackendChoice::Modal(_)
                    | crate::backend::BackendChoice::Gcp(_) => {
                        crate::sandbox::disk::DEFAULT_DISK_BYTES
                    }
                }
                .saturating_mul(2),
            },
            cache_dir: self.caches.cache_dir(),
            repo_cache: self.caches.repo_cache,
            merge_policy: self.merge_policy.into(),
            backend,
            llm: self.llm.validate()?,
            quiet: self.quiet,
            lock: self.lock,
        };
        Ok(agents
            .into_iter()
            .zip(names)
            .map(|(resolved, name)| RunConfig {
                name,
                agent: resolved.path,
                stands_in_for: resolved.stands_in_for,
                ..base.clone()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_follow_the_documented_pattern() {
        assert_eq!(
            agent_abbreviation(std::path::Path::new("plugins/mini_swe.wasm")),
            "msa"
        );
        assert_eq!(sanitize("openai/gpt-4o"), "openai-gpt-4o");
        let mut selection = SelectionArgs {
            subset: None,
            repo: None,
            task: None,
            features: None,
            dataset_dir: "dataset".into(),
        };
        assert_eq!(selection_label(&selection), "full");
        selection.repo = Some("llama_index_task".into());
        selection.task = Some(8394);
        selection.features = Some(vec![1, 2]);
        assert_eq!(
            selection_label(&selection),
            "full-llama_index_task-task8394-f1_2"
        );
    }
}
