//! config.json: what a run was asked to do, and which of it may not change while the
//! run lives (options that change results are its identity; a resume with another
//! value is refused by name), and `cbench verify` of the plugins it records.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendChoice};
use crate::clock::now_rfc3339;
use crate::config::RunConfig;
use crate::error::{run_dir_io, RunError};
use crate::eval::merge::MergePolicy;
use crate::fsutil::{read_json, sha256_hex, write_json_atomic};
use crate::llm::Setting;
use crate::plugin::PluginIdentity;

/// config.json: what the run was asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub name: String,
    pub setting: Setting,
    pub model: String,
    pub agent: PluginIdentity,
    /// A mixed team's plugins, by role (agent1 first); empty when every agent runs `agent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub team: Vec<PluginIdentity>,
    pub dataset_dir: String,
    pub subset: Option<String>,
    pub repo: Option<String>,
    pub task: Option<u64>,
    pub features: Option<Vec<u32>>,
    pub backend: String,
    /// How agents are confined and limited, as the run header says.
    pub isolation: String,
    /// `--isolation` as given (`auto`, `bwrap`, `none`); local backend only.
    #[serde(default)]
    pub isolation_mode: String,
    /// Graders' network: `bridge` (containers; the host's on the local backend) or `none`.
    #[serde(default)]
    pub grading_network: String,
    pub concurrency: usize,
    pub eval_concurrency: usize,
    pub messaging: bool,
    /// `in-process`, or the Redis URL (password hidden) messages went through.
    #[serde(default)]
    pub message_bus: String,
    #[serde(default)]
    pub git: bool,
    /// The team setting's mechanisms, under CooperBench's name (absent in other settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_features: Option<crate::messaging::team::TeamMechanisms>,
    /// `--team-lead K` in the team setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_lead: Option<usize>,
    pub auto_eval: bool,
    pub agent_config: Option<String>,
    /// sha256 of the `--agent-config` text (the path may stay while the content changes).
    #[serde(default)]
    pub agent_config_sha256: Option<String>,
    pub max_steps: u32,
    pub command_timeout_s: f64,
    pub plugin_memory_mb: usize,
    pub plugin_compute_s: f64,
    /// Caps on what an agent leaves and sends (absent in runs made before they existed:
    /// those ran with today's defaults' worth of room or more).
    #[serde(default)]
    pub max_patch_bytes: Option<u64>,
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    #[serde(default)]
    pub max_messages: Option<u32>,
    pub merge_policy: MergePolicy,
    /// Per-agent LLM budgets and the run's cost cap (None: unlimited).
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_agent_secs: Option<f64>,
    #[serde(default)]
    pub max_run_cost_usd: Option<f64>,
    /// Per-call output cap and temperature sent to the provider (None: its default).
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    /// `--api-base`, scheme, host and port only (None: each provider's own endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    pub created_at: String,
    /// `--exclude-unverified`: the verified.json the pairs were filtered by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_unverified: Option<String>,
    /// Its sha256 (the same path with other content is another selection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_items_sha256: Option<String>,
    /// The run's pairs when no selection describes them (an imported run), as
    /// `<repo>/task<id> features_<a>_<b>`; empty: the selection's pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only_pairs: Vec<String>,
    /// When later invocations resumed the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed_at: Vec<String>,
    pub cbench_version: String,
}

pub(crate) fn run_record(cfg: &RunConfig, plugin: &PluginIdentity, backend: &Backend) -> RunRecord {
    RunRecord {
        name: cfg.name.clone(),
        setting: cfg.setting,
        model: cfg.model.clone(),
        agent: plugin.clone(),
        team: Vec::new(),
        dataset_dir: cfg.dataset_dir.display().to_string(),
        subset: cfg.selection.subset.clone(),
        repo: cfg.selection.repo.clone(),
        task: cfg.selection.task,
        features: cfg.selection.features.clone(),
        backend: backend.name().into(),
        isolation: backend.isolation(),
        isolation_mode: match &cfg.backend {
            BackendChoice::Local(o) => format!("{:?}", o.mode).to_lowercase(),
            BackendChoice::Docker(_) => "container".into(),
            BackendChoice::Modal(_) => "modal-sandbox".into(),
            BackendChoice::Gcp(g) => match g.agents.as_ref() {
                BackendChoice::Modal(_) => "modal-sandbox".into(),
                _ => "container".into(),
            },
        },
        grading_network: match &cfg.backend {
            BackendChoice::Local(o) if !o.grading_network => "none".into(),
            BackendChoice::Local(_) => "bridge".into(),
            BackendChoice::Docker(d) => d.grading_network.clone(),
            BackendChoice::Modal(m) if m.block_grading_network => "none".into(),
            BackendChoice::Modal(_) => "bridge".into(),
            BackendChoice::Gcp(g) if g.grading.block_network => "none".into(),
            BackendChoice::Gcp(_) => "bridge".into(),
        },
        concurrency: cfg.concurrency,
        eval_concurrency: cfg.eval_concurrency,
        messaging: cfg.messaging,
        message_bus: cfg
            .redis
            .as_deref()
            .map(crate::messaging::redis::shown)
            .unwrap_or_else(|| "in-process".into()),
        git: cfg.git,
        team_lead: (cfg.setting == crate::llm::Setting::Team).then_some(cfg.team_lead),
        team_features: (cfg.setting == crate::llm::Setting::Team).then_some(cfg.team_mechanisms),
        auto_eval: cfg.auto_eval,
        agent_config: cfg
            .agent_config
            .as_ref()
            .map(|(p, _)| p.display().to_string()),
        agent_config_sha256: cfg
            .agent_config
            .as_ref()
            .map(|(_, text)| sha256_hex(text.as_bytes())),
        max_steps: cfg.max_steps,
        command_timeout_s: cfg.command_timeout.as_secs_f64(),
        plugin_memory_mb: cfg.plugin_limits.memory_bytes >> 20,
        plugin_compute_s: cfg.plugin_limits.compute.as_secs_f64(),
        max_patch_bytes: Some(cfg.patch_limits.max_patch_bytes),
        max_message_bytes: Some(cfg.plugin_limits.max_message_bytes),
        max_messages: Some(cfg.plugin_limits.max_messages),
        merge_policy: cfg.merge_policy,
        max_cost_usd: cfg.llm.max_cost_usd,
        max_tokens: cfg.llm.max_tokens,
        max_agent_secs: cfg.llm.max_agent_wall.map(|d| d.as_secs_f64()),
        max_run_cost_usd: cfg.llm.max_run_cost_usd,
        max_output_tokens: cfg.llm.sampling.max_output_tokens,
        temperature: cfg.llm.sampling.temperature,
        api_base: cfg
            .llm
            .api_base
            .as_deref()
            .map(crate::llm::providers::api_base_host),
        created_at: now_rfc3339(),
        resumed_at: Vec::new(),
        exclude_unverified: cfg
            .exclude_unverified
            .as_ref()
            .map(|p| p.display().to_string()),
        verified_items_sha256: None,
        only_pairs: Vec::new(),
        cbench_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Options that change results, as (flag, value): a run keeps them for life.
fn identity(r: &RunRecord) -> Vec<(&'static str, String)> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "(none)".into());
    vec![
        ("--setting", r.setting.to_string()),
        ("-m/--model", r.model.clone()),
        ("--agent (plugin sha256)", r.agent.sha256.clone()),
        (
            "--team (plugin sha256s)",
            opt((!r.team.is_empty()).then(|| {
                r.team
                    .iter()
                    .map(|p| p.sha256.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })),
        ),
        ("--backend", r.backend.clone()),
        ("--dataset-dir", r.dataset_dir.clone()),
        ("-s/--subset", opt(r.subset.clone())),
        ("-r/--repo", opt(r.repo.clone())),
        ("-t/--task", opt(r.task.map(|t| t.to_string()))),
        (
            "-f/--features",
            opt(r.features.as_ref().map(|f| {
                f.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })),
        ),
        ("--no-messaging", (!r.messaging).to_string()),
        ("--git", r.git.to_string()),
        ("--team-lead", opt(r.team_lead.map(|k| k.to_string()))),
        (
            "--team-no-*",
            opt(r
                .team_features
                .as_ref()
                .map(|m| serde_json::to_string(m).unwrap_or_default())),
        ),
        ("--agent-config", opt(r.agent_config_sha256.clone())),
        ("--max-steps", r.max_steps.to_string()),
        ("--command-timeout", r.command_timeout_s.to_string()),
        ("--plugin-memory-mb", r.plugin_memory_mb.to_string()),
        ("--plugin-compute-secs", r.plugin_compute_s.to_string()),
        (
            "--max-patch-mb",
            r.max_patch_bytes
                .unwrap_or(crate::sandbox::patch::DEFAULT_MAX_PATCH_BYTES)
                .div_ceil(1 << 20)
                .to_string(),
        ),
        (
            "--max-message-kb",
            r.max_message_bytes
                .unwrap_or(crate::plugin::DEFAULT_MAX_MESSAGE_BYTES)
                .div_ceil(1 << 10)
                .to_string(),
        ),
        (
            "--max-messages",
            r.max_messages
                .unwrap_or(crate::plugin::DEFAULT_MAX_MESSAGES)
                .to_string(),
        ),
        (
            "--merge-policy",
            format!("{:?}", r.merge_policy).to_lowercase(),
        ),
        ("--max-cost", opt(r.max_cost_usd.map(|v| v.to_string()))),
        ("--max-tokens", opt(r.max_tokens.map(|v| v.to_string()))),
        (
            "--max-agent-secs",
            opt(r.max_agent_secs.map(|v| v.to_string())),
        ),
        (
            "--max-run-cost",
            opt(r.max_run_cost_usd.map(|v| v.to_string())),
        ),
        (
            "--isolation",
            if r.isolation_mode.is_empty() {
                "(not recorded: a run of an older cbench)".into()
            } else {
                r.isolation_mode.clone()
            },
        ),
        (
            "--grading-network",
            if r.grading_network.is_empty() {
                "bridge".into()
            } else {
                r.grading_network.clone()
            },
        ),
        (
            "--max-output-tokens",
            opt(r.max_output_tokens.map(|v| v.to_string())),
        ),
        ("--temperature", opt(r.temperature.map(|v| v.to_string()))),
        (
            "--exclude-unverified",
            opt(r.exclude_unverified.as_ref().map(|p| {
                format!(
                    "{p} (sha256 {})",
                    r.verified_items_sha256.as_deref().unwrap_or("?")
                )
            })),
        ),
    ]
}

/// Refuses to mix results of different configurations under one name (unless --force).
/// A resumed run keeps its config.json (creation time included) and records the
/// invocation; only options that do not change results (concurrency) may differ.
pub(crate) fn prepare_run_dir(
    cfg: &RunConfig,
    run_dir: &Path,
    record: &RunRecord,
    lock: &crate::runlock::RunLock,
) -> Result<(), RunError> {
    let config_path = run_dir.join("config.json");
    let mut record = record.clone();
    if config_path.exists() {
        if cfg.force {
            // Everything but the lock we hold (removing it would let a second run in).
            for entry in std::fs::read_dir(run_dir).map_err(run_dir_io(run_dir))? {
                let entry = entry.map_err(run_dir_io(run_dir))?;
                let path = entry.path();
                if path == lock.path() {
                    continue;
                }
                let removed = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(run_dir_io(&path))?;
            }
        } else {
            let old: RunRecord = read_json(&config_path)?;
            for ((option, old_value), (_, new_value)) in
                identity(&old).into_iter().zip(identity(&record))
            {
                if old_value != new_value {
                    return Err(RunError::OptionChanged {
                        name: cfg.name.clone(),
                        dir: run_dir.to_path_buf(),
                        option,
                        old: old_value,
                        new: new_value,
                    });
                }
            }
            record.created_at = old.created_at;
            record.resumed_at = old.resumed_at;
            record.resumed_at.push(now_rfc3339());
        }
    }
    std::fs::create_dir_all(run_dir).map_err(run_dir_io(run_dir))?;
    migrate_layout(&cfg.name, run_dir)?;
    write_json_atomic(&config_path, &record)?;
    Ok(())
}

/// Moves a run written with the earlier `<repo>/<id>/` layout to `<repo>/task<id>/`, saying so.
pub(crate) fn migrate_layout(name: &str, run_dir: &Path) -> Result<(), RunError> {
    let moved = crate::layout::migrate_legacy(run_dir)?;
    if moved > 0 {
        tracing::warn!(
            "run `{name}`: moved {moved} task director{} from <repo>/<id>/ to the documented <repo>/task<id>/ layout",
            if moved == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}

/// The `--lock` content of a run: what another run must share to be compared with it.
pub(crate) fn run_lock(
    cfg: &RunConfig,
    pairs: &[crate::dataset::Pair],
) -> Result<crate::pins::RunLock, RunError> {
    let mut plugins = std::collections::BTreeMap::new();
    let members: Vec<&std::path::PathBuf> = if cfg.team.is_empty() {
        vec![&cfg.agent]
    } else {
        cfg.team.iter().collect()
    };
    for path in members {
        let bytes = std::fs::read(path).map_err(run_dir_io(path))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        plugins.insert(name, sha256_hex(&bytes));
    }
    let mut dataset = sha2::Sha256::new();
    for pair in pairs {
        use sha2::Digest;
        dataset.update(pair.log_dir(Path::new("")).display().to_string().as_bytes());
        dataset.update(crate::eval::task_inputs_hash(pair)?.as_bytes());
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "(none)".into());
    let budgets = std::collections::BTreeMap::from([
        ("max_steps".to_string(), cfg.max_steps.to_string()),
        (
            "command_timeout_s".to_string(),
            cfg.command_timeout.as_secs_f64().to_string(),
        ),
        (
            "plugin_memory_mb".to_string(),
            (cfg.plugin_limits.memory_bytes >> 20).to_string(),
        ),
        (
            "plugin_compute_s".to_string(),
            cfg.plugin_limits.compute.as_secs_f64().to_string(),
        ),
        (
            "max_cost_usd".to_string(),
            opt(cfg.llm.max_cost_usd.map(|v| v.to_string())),
        ),
        (
            "max_tokens".to_string(),
            opt(cfg.llm.max_tokens.map(|v| v.to_string())),
        ),
        (
            "max_agent_secs".to_string(),
            opt(cfg.llm.max_agent_wall.map(|v| v.as_secs_f64().to_string())),
        ),
        (
            "max_run_cost_usd".to_string(),
            opt(cfg.llm.max_run_cost_usd.map(|v| v.to_string())),
        ),
        (
            "max_output_tokens".to_string(),
            opt(cfg.llm.sampling.max_output_tokens.map(|v| v.to_string())),
        ),
        (
            "temperature".to_string(),
            opt(cfg.llm.sampling.temperature.map(|v| v.to_string())),
        ),
    ]);
    use sha2::Digest;
    Ok(crate::pins::RunLock {
        plugins,
        model: cfg.model.clone(),
        setting: cfg.setting.to_string(),
        dataset_sha256: hex::encode(dataset.finalize()),
        pairs: pairs.len(),
        grading_version: crate::eval::GRADING_VERSION.to_string(),
        merge_policy: cfg.merge_policy.as_str().to_string(),
        budgets,
    })
}

/// `cbench verify -n RUN`: the run's recorded plugins against the files on disk.
pub fn verify_run(run_dir: &Path) -> Result<Vec<crate::pins::PluginCheck>, crate::fsutil::FsError> {
    let record: RunRecord = read_json(&run_dir.join("config.json"))?;
    let mut recorded = vec![("agent".to_string(), record.agent.clone())];
    for (k, member) in record.team.iter().enumerate().skip(1) {
        recorded.push((
            format!("team member {} (agent{})", k + 1, k + 1),
            member.clone(),
        ));
    }
    Ok(recorded
        .into_iter()
        .map(|(role, identity)| crate::pins::PluginCheck {
            role,
            actual_sha256: std::fs::read(&identity.path).ok().map(|b| sha256_hex(&b)),
            path: identity.path,
            recorded_sha256: identity.sha256,
        })
        .collect())
}
