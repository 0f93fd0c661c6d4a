//! CooperBench run directories (0.0.14 and 0.0.29, written by `cooperbench run`/`evaluate`):
//! `<run>/{coop,solo,team}/<repo>/<task_id>/f<a>_f<b>/` with `agent<feature>.patch`,
//! `agent<feature>_traj.json` (solo: `solo.patch`, `solo_traj.json`), `conversation.json`,
//! `result.json` and `eval.json` (runner/coop.py, runner/solo.py, eval/evaluate.py), into
//! cbench's `<log-dir>/<name>/<repo>/task<id>/features_<a>_<b>/`.
//!
//! CooperBench grades only the merged tree (coop) or the solo patch; its verdicts are kept as
//! they are (`grading_version: cooperbench`), with no per-agent grade, until `cbench eval`
//! regrades the run the cbench way. The original files are kept beside each pair
//! (`cooperbench/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::eval::merge::{MergePolicy, MergeStrategy};
use crate::eval::{AgentGrade, EvalReport, FeatureGrade, MergedGrade};
use crate::fsutil::{sha256_hex, write_atomic, write_json_atomic};
use crate::run::record::{AgentRecord, PairRecord};
use crate::run::runrecord::RunRecord;
use crate::trajectories::{convert, AgentFacts};
use crate::trajectory::TokenTotals;
use crate::{io, layout, ImportError};
use cbench_core::identity::PluginIdentity;
use cbench_core::message::Message;
use cbench_core::setting::Setting;
use cbench_plugin::AgentStatus;

/// The grading version an imported verdict carries (cbench's own differs, so `compare`
/// says when it pits CooperBench's grading against cbench's).
pub const IMPORTED_GRADING: &str = "cooperbench";

/// What `cbench import cooperbench` was asked to do.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The CooperBench run directory.
    pub dir: PathBuf,
    /// Name of the imported run (default: CooperBench's run name, else the directory's).
    pub name: Option<String>,
    pub log_dir: PathBuf,
    /// Recorded as the run's dataset, for `cbench eval`.
    pub dataset_dir: PathBuf,
    /// Replace an earlier import of the same name.
    pub force: bool,
}

/// One cbench run an import wrote (a CooperBench directory holding coop and solo pairs
/// becomes two runs).
#[derive(Debug, Clone)]
pub struct ImportedRun {
    pub name: String,
    pub path: PathBuf,
    pub setting: String,
    pub pairs: usize,
    pub graded: usize,
}

/// A pair directory found in the CooperBench run.
struct FoundPair {
    setting: String,
    repo: String,
    task: u64,
    features: Vec<u32>,
    path: PathBuf,
}

/// Largest file an import reads (CooperBench's biggest trajectories are a few MiB).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// A regular file's bytes; a symlink is refused, never followed (a run directory from elsewhere
/// could point one at the user's files), and so is anything over [`MAX_FILE_BYTES`].
fn read_regular(path: &Path) -> Result<Vec<u8>, ImportError> {
    let bad = |reason: String| ImportError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(bad("not a regular file (symlinks are not followed)".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(bad(format!(
            "{} bytes, over the {} MiB an import reads",
            meta.len(),
            MAX_FILE_BYTES >> 20
        )));
    }
    std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))
}

/// Whether `path` is a regular file (a symlink is not).
fn is_regular(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

fn read_value(path: &Path) -> Result<Value, ImportError> {
    let bytes = read_regular(path)?;
    serde_json::from_slice(&bytes).map_err(|e| ImportError::BadFile {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A decimal number as CooperBench writes one (`12`, never `012` or `+12`).
fn canonical_number(text: &str) -> Option<u64> {
    let n: u64 = text.parse().ok()?;
    (n.to_string() == text).then_some(n)
}

/// `f1_f2` → [1, 2]: at least two distinct features in increasing order, as CooperBench
/// names its pair directories.
fn features_of(name: &str) -> Option<Vec<u32>> {
    let ids: Option<Vec<u32>> = name
        .split('_')
        .map(|p| u32::try_from(canonical_number(p.strip_prefix('f')?)?).ok())
        .collect();
    ids.filter(|ids| ids.len() >= 2 && ids.windows(2).all(|w| w[0] < w[1]))
}

/// Repository directory names become cbench directory and file names: kept to CooperBench's
/// own (`llama_index_task`).
fn valid_repo(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Every pair with a result.json, in the layout of either version (and the legacy one,
/// `<run>/<repo>/<task>/…`, whose setting its result.json names).
fn find_pairs(dir: &Path, skipped: &mut Vec<String>) -> Result<Vec<FoundPair>, ImportError> {
    let mut pairs = Vec::new();
    for setting in ["coop", "solo", "team"] {
        walk_pairs(Some(setting), &dir.join(setting), &mut pairs, skipped)?;
    }
    if pairs.is_empty() {
        walk_pairs(None, dir, &mut pairs, skipped)?;
    }
    Ok(pairs)
}

/// Subdirectories of `dir`; anything else there (files aside) is noted in `skipped`.
fn dirs_noting(dir: &Path, skipped: &mut Vec<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.filter_map(Result::ok) {
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.push(entry.path()),
            Ok(t) if t.is_symlink() => skipped.push(format!(
                "{}: a symlink (not followed)",
                entry.path().display()
            )),
            _ => {}
        }
    }
    out.sort();
    out
}

/// Pairs under `root/<repo>/<task_id>/f<a>_f<b>/` holding a result.json; directories that
/// look like neither are noted in `skipped`.
fn walk_pairs(
    setting: Option<&str>,
    root: &Path,
    pairs: &mut Vec<FoundPair>,
    skipped: &mut Vec<String>,
) -> Result<(), ImportError> {
    for repo in dirs_noting(root, skipped) {
        if !valid_repo(&name_of(&repo)) {
            skipped.push(format!(
                "{}: not a repository name (letters, digits, `.`, `_`, `-`)",
                repo.display()
            ));
            continue;
        }
        for task in dirs_noting(&repo, skipped) {
            let Some(task_id) = canonical_number(&name_of(&task)) else {
                skipped.push(format!("{}: not a task id", task.display()));
                continue;
            };
            for pair in dirs_noting(&task, skipped) {
                let Some(features) = features_of(&name_of(&pair)) else {
                    skipped.push(format!(
                        "{}: not a pair directory (f<a>_f<b>, increasing ids)",
                        pair.display()
                    ));
                    continue;
                };
                let result = pair.join("result.json");
                if !is_regular(&result) {
                    skipped.push(format!(
                        "{}: no result.json (the agents never finished)",
                        pair.display()
                    ));
                    continue;
                }
                let setting = match setting {
                    Some(s) => s.to_string(),
                    None => read_value(&result)?
                        .get("setting")
                        .and_then(Value::as_str)
                        .unwrap_or("coop")
                        .to_string(),
                };
                pairs.push(FoundPair {
                    setting,
                    repo: name_of(&repo),
                    task: task_id,
                    features,
                    path: pair,
                });
            }
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// What an import wrote, and what it left out and why.
#[derive(Debug, Clone)]
pub struct Imported {
    pub runs: Vec<ImportedRun>,
    /// Entries of the CooperBench directory that are not pairs it could read.
    pub skipped: Vec<String>,
}

/// Imports the CooperBench run at `opts.dir`; one cbench run per setting it holds.
pub fn import(opts: &ImportOptions) -> Result<Imported, ImportError> {
    if !opts.dir.is_dir() {
        return Err(ImportError::NotARun {
            dir: opts.dir.clone(),
            expected: "a directory".into(),
        });
    }
    let config_path = opts.dir.join("config.json");
    let config = if std::fs::symlink_metadata(&config_path).is_ok() {
        read_value(&config_path)?
    } else {
        Value::Null
    };
    let mut skipped = Vec::new();
    let found = find_pairs(&opts.dir, &mut skipped)?;
    let mut seen: std::collections::BTreeMap<(String, String, u64, Vec<u32>), &Path> =
        std::collections::BTreeMap::new();
    for p in &found {
        let key = (
            p.setting.clone(),
            p.repo.clone(),
            p.task,
            p.features.clone(),
        );
        if let Some(first) = seen.insert(key, &p.path) {
            return Err(ImportError::BadFile {
                path: p.path.clone(),
                reason: format!("the same pair as {}", first.display()),
            });
        }
    }
    if found.is_empty() {
        return Err(ImportError::NotARun {
            dir: opts.dir.clone(),
            expected: "pair directories <setting>/<repo>/<task_id>/f<a>_f<b>/ holding result.json (as `cooperbench run` writes them)".into(),
        });
    }
    let base_name = opts
        .name
        .clone()
        .or_else(|| {
            config
                .get("run_name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| name_of(&opts.dir));
    let mut settings: Vec<String> = found.iter().map(|p| p.setting.clone()).collect();
    settings.sort();
    settings.dedup();
    let mut imported = Vec::new();
    for setting in &settings {
        let name = if settings.len() == 1 {
            base_name.clone()
        } else {
            format!("{base_name}-{setting}")
        };
        if !valid_name(&name) {
            return Err(ImportError::Name(name));
        }
        let pairs: Vec<&FoundPair> = found.iter().filter(|p| &p.setting == setting).collect();
        imported.push(import_setting(opts, &config, &name, setting, &pairs)?);
    }
    Ok(Imported {
        runs: imported,
        skipped,
    })
}

/// Writes one setting's pairs as the cbench run `name`: into a staging directory first, which
/// then replaces the run in one rename, so a failed import leaves any earlier one whole.
fn import_setting(
    opts: &ImportOptions,
    config: &Value,
    name: &str,
    setting: &str,
    pairs: &[&FoundPair],
) -> Result<ImportedRun, ImportError> {
    let target = opts.log_dir.join(name);
    let _lock = if target.exists() {
        if !opts.force {
            return Err(ImportError::Exists { path: target });
        }
        // --force replaces an earlier import only, never a run cbench ran, and never one in use.
        let config: Value =
            crate::fsutil::read_json(&target.join("config.json")).unwrap_or(Value::Null);
        if config.get("backend").and_then(Value::as_str) != Some("imported") {
            return Err(ImportError::NotAnImport { path: target });
        }
        Some(
            crate::run::runlock::RunLock::acquire(&target, name)
                .map_err(|e| ImportError::InUse(e.to_string()))?,
        )
    } else {
        None
    };
    std::fs::create_dir_all(&opts.log_dir)
        .map_err(io(format!("creating {}", opts.log_dir.display())))?;
    let staging = opts
        .log_dir
        .join(format!(".import-{name}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(format!("clearing {}", staging.display())))?;
    }
    let result = write_run(opts, config, name, setting, pairs, &staging);
    let (graded, count) = match result {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if target.exists() {
        let old = opts
            .log_dir
            .join(format!(".replaced-{name}-{}", std::process::id()));
        std::fs::rename(&target, &old).map_err(io(format!("moving {} aside", target.display())))?;
        std::fs::rename(&staging, &target).map_err(io(format!("placing {}", target.display())))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&staging, &target).map_err(io(format!("placing {}", target.display())))?;
    }
    Ok(ImportedRun {
        name: name.to_string(),
        path: target,
        setting: setting.to_string(),
        pairs: count,
        graded,
    })
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// CooperBench's agent status as cbench's (it has no infrastructure status of its own).
fn status_of(text: &str) -> (AgentStatus, Option<String>) {
    match text {
        "Submitted" => (AgentStatus::Submitted, None),
        "LimitsExceeded" => (AgentStatus::LimitsExceeded, None),
        "StepLimitReached" | "StepLimitExceeded" => (AgentStatus::StepLimitReached, None),
        "Error" => (AgentStatus::Error, None),
        other => (
            AgentStatus::Error,
            Some(format!("CooperBench status `{other}`")),
        ),
    }
}

fn write_run(
    opts: &ImportOptions,
    config: &Value,
    name: &str,
    setting: &str,
    pairs: &[&FoundPair],
    staging: &Path,
) -> Result<(usize, usize), ImportError> {
    let framework = str_at(config, "agent_framework")
        .map(str::to_string)
        .or_else(|| {
            pairs.first().and_then(|p| {
                read_value(&p.path.join("result.json"))
                    .ok()
                    .and_then(|r| str_at(&r, "agent_framework").map(str::to_string))
            })
        })
        .unwrap_or_else(|| "cooperbench-agent".into());
    let model = str_at(config, "model").unwrap_or("unknown").to_string();
    let ours = if setting == "solo" {
        Setting::Solo
    } else {
        Setting::Coop
    };
    let plugin = PluginIdentity {
        path: format!("cooperbench:{framework}"),
        sha256: "not-recorded-by-cooperbench".into(),
        name: framework.clone(),
        version: "CooperBench".into(),
        wit_version: "none".into(),
        capabilities: Vec::new(),
    };
    let mut graded = 0;
    let mut labels = Vec::new();
    let mut policy = MergePolicy::Union;
    for pair in pairs {
        let features_dir = format!(
            "features_{}",
            pair.features
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join("_")
        );
        let pair_dir = staging
            .join(&pair.repo)
            .join(layout::task_dir_name(pair.task))
            .join(&features_dir);
        labels.push(format!(
            "{}/{} {features_dir}",
            pair.repo,
            layout::task_dir_name(pair.task)
        ));
        match write_pair(pair, ours, &plugin, name, &model, &pair_dir)? {
            Graded::No => {}
            Graded::Under(p) => {
                graded += 1;
                if p == Some(MergePolicy::Lead) {
                    policy = MergePolicy::Lead;
                }
            }
        }
    }
    let now = cbench_core::clock::now_rfc3339();
    let record = RunRecord {
        name: name.to_string(),
        setting: ours,
        model,
        agent: plugin,
        team: Vec::new(),
        dataset_dir: std::path::absolute(&opts.dataset_dir)
            .unwrap_or_else(|_| opts.dataset_dir.clone())
            .display()
            .to_string(),
        subset: None,
        repo: None,
        task: None,
        features: None,
        backend: "imported".into(),
        isolation: format!("imported from CooperBench ({})", opts.dir.display()),
        isolation_mode: String::new(),
        grading_network: String::new(),
        concurrency: config
            .get("concurrency")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize,
        eval_concurrency: 0,
        messaging: setting != "solo",
        message_bus: "cooperbench".into(),
        git: false,
        team_features: None,
        team_lead: None,
        auto_eval: true,
        agent_config: None,
        agent_config_sha256: None,
        max_steps: 0,
        command_timeout_s: 0.0,
        plugin_memory_mb: 0,
        plugin_compute_s: 0.0,
        max_patch_bytes: None,
        max_message_bytes: None,
        max_messages: None,
        merge_policy: policy,
        max_cost_usd: None,
        max_tokens: None,
        max_agent_secs: None,
        max_run_cost_usd: None,
        max_output_tokens: None,
        temperature: None,
        api_base: None,
        created_at: str_at(config, "started_at")
            .map(str::to_string)
            .unwrap_or_else(|| now.clone()),
        exclude_unverified: None,
        verified_items_sha256: None,
        only_pairs: labels,
        resumed_at: Vec::new(),
        cbench_version: format!("{} (import)", env!("CARGO_PKG_VERSION")),
    };
    write_json_atomic(&staging.join("config.json"), &record)?;
    Ok((graded, pairs.len()))
}

/// Whether CooperBench graded a pair, and under which merge policy (none in solo).
enum Graded {
    No,
    Under(Option<MergePolicy>),
}

/// Writes one pair.
fn write_pair(
    pair: &FoundPair,
    setting: Setting,
    plugin: &PluginIdentity,
    run_name: &str,
    model: &str,
    pair_dir: &Path,
) -> Result<Graded, ImportError> {
    std::fs::create_dir_all(pair_dir).map_err(io(format!("creating {}", pair_dir.display())))?;
    let result_path = pair.path.join("result.json");
    let result = read_value(&result_path)?;
    let started = str_at(&result, "started_at")
        .unwrap_or_default()
        .to_string();
    let ended = str_at(&result, "ended_at").unwrap_or_default().to_string();
    let duration = result
        .get("duration_seconds")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    // (agent id, its result entry, patch file, trajectory file)
    let agents: Vec<(String, Value, String, String)> = if setting == Setting::Solo {
        vec![(
            "solo".into(),
            result.get("agent").cloned().unwrap_or(Value::Null),
            "solo.patch".into(),
            "solo_traj.json".into(),
        )]
    } else {
        let mut entries: Vec<(String, Value)> = result
            .get("agents")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        // result.json lists agents in the order they finished; agent1 first here.
        entries.sort_by_key(|(id, _)| {
            id.trim_start_matches("agent")
                .parse::<u32>()
                .unwrap_or(u32::MAX)
        });
        entries
            .into_iter()
            .map(|(id, v)| {
                let feature = v.get("feature_id").and_then(Value::as_u64).unwrap_or(0);
                (
                    id,
                    v,
                    format!("agent{feature}.patch"),
                    format!("agent{feature}_traj.json"),
                )
            })
            .collect()
    };
    if agents.is_empty() {
        return Err(ImportError::BadFile {
            path: result_path,
            reason: "names no agents (`agents` / `agent`)".into(),
        });
    }
    // Agent ids become directory names: only `agent<N>` and `solo`, as CooperBench writes them.
    if let Some((bad, ..)) = agents.iter().find(|(id, ..)| {
        id != "solo"
            && !id.strip_prefix("agent").is_some_and(|n| {
                !n.is_empty() && n.len() <= 3 && n.chars().all(|c| c.is_ascii_digit())
            })
    }) {
        return Err(ImportError::BadFile {
            path: result_path,
            reason: format!("agent id {bad:?} is not `agent<N>` or `solo`"),
        });
    }
    if setting == Setting::Coop {
        let mut features: Vec<u64> = agents
            .iter()
            .filter_map(|(_, info, ..)| info.get("feature_id").and_then(Value::as_u64))
            .collect();
        features.sort_unstable();
        let expected: Vec<u64> = pair.features.iter().map(|f| u64::from(*f)).collect();
        if features != expected {
            return Err(ImportError::BadFile {
                path: result_path,
                reason: format!(
                    "its agents work on features {features:?}, but the pair is {expected:?}"
                ),
            });
        }
    }
    let mut records = Vec::new();
    for (k, (agent_id, info, patch_file, traj_file)) in agents.iter().enumerate() {
        let feature_ids = if setting == Setting::Solo {
            pair.features.clone()
        } else {
            info.get("feature_id")
                .and_then(Value::as_u64)
                .map(|f| vec![f as u32])
                .unwrap_or_else(|| pair.features.get(k).map(|f| vec![*f]).unwrap_or_default())
        };
        let agent_dir = pair_dir.join(agent_id);
        std::fs::create_dir_all(&agent_dir)
            .map_err(io(format!("creating {}", agent_dir.display())))?;
        let patch_path = pair.path.join(patch_file);
        // An agent that left no patch has none; any other unreadable patch is an error.
        let mut patch = if std::fs::symlink_metadata(&patch_path).is_err() {
            Vec::new()
        } else {
            read_regular(&patch_path)?
        };
        // CooperBench strips the patch's last newline, which `git apply` needs.
        if patch.last().is_some_and(|b| *b != b'\n') {
            patch.push(b'\n');
        }
        write_atomic(&agent_dir.join("patch.diff"), &patch)?;
        let (status, status_note) = status_of(str_at(info, "status").unwrap_or("Error"));
        let error = str_at(info, "error").map(str::to_string).or(status_note);
        // A cost that is not a non-negative number is unknown.
        let cost = info
            .get("cost")
            .and_then(Value::as_f64)
            .filter(|c| c.is_finite() && *c >= 0.0);
        let traj_path = pair.path.join(traj_file);
        let mut tokens = TokenTotals {
            prompt_tokens: info
                .get("input_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            completion_tokens: info
                .get("output_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            total_tokens: 0,
            cache_read_tokens: info
                .get("cache_read_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            cache_write_tokens: info
                .get("cache_write_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        };
        if std::fs::symlink_metadata(&traj_path).is_ok() {
            let traj = read_value(&traj_path)?;
            let messages = traj
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let converted = convert(
                &messages,
                AgentFacts {
                    agent_id: agent_id.clone(),
                    feature_ids: feature_ids.clone(),
                    model: str_at(&traj, "model").unwrap_or(model).to_string(),
                    status: status.as_str().to_string(),
                    error: error.clone(),
                    cost,
                    start_time: started.clone(),
                    end_time: ended.clone(),
                },
            );
            // mini_swe_agent_v2 leaves result.json's token fields at 0; its messages carry them.
            if tokens.prompt_tokens + tokens.completion_tokens == 0 {
                tokens = converted.token_usage.clone();
            }
            write_json_atomic(&agent_dir.join("trajectory.json"), &converted)?;
        }
        tokens.total_tokens = tokens.prompt_tokens + tokens.completion_tokens;
        records.push(AgentRecord {
            agent_id: agent_id.clone(),
            feature_ids,
            status,
            error,
            summary: None,
            steps: info.get("steps").and_then(Value::as_u64).unwrap_or(0) as u32,
            token_usage: tokens,
            cost_usd: cost,
            wall_s: duration,
            plugin_compute_s: 0.0,
            patch_sha256: sha256_hex(&patch),
            patch_bytes: patch.len(),
            plugin: None,
            capabilities_granted: Vec::new(),
            // CooperBench's records do not say.
            llm_retries: 0,
        });
    }
    let record = PairRecord {
        run_name: run_name.to_string(),
        repo: pair.repo.clone(),
        task_id: pair.task,
        features: pair.features.clone(),
        setting,
        model: str_at(&result, "model").unwrap_or(model).to_string(),
        plugin: plugin.clone(),
        agents: records,
        messages: result
            .get("messages_sent")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize,
        started_at: started.clone(),
        finished_at: ended,
        duration_s: duration,
        superseded: Vec::new(),
        team: None,
    };
    write_json_atomic(&pair_dir.join("result.json"), &record)?;
    let conversation_path = pair.path.join("conversation.json");
    let conversation: Vec<Message> = if std::fs::symlink_metadata(&conversation_path).is_ok() {
        conversation(&read_value(&conversation_path)?, &started)
    } else {
        Vec::new()
    };
    write_json_atomic(&pair_dir.join("conversation.json"), &conversation)?;
    keep_originals(&pair.path, &pair_dir.join("cooperbench"))?;
    let eval_path = pair.path.join("eval.json");
    if std::fs::symlink_metadata(&eval_path).is_err() {
        return Ok(Graded::No);
    }
    let eval = read_value(&eval_path)?;
    if eval.is_null() {
        return Ok(Graded::No);
    }
    let report = eval_report(&eval, pair, setting, pair_dir, &eval_path)?;
    let policy = report.merge_policy;
    write_json_atomic(&pair_dir.join("eval.json"), &report)?;
    Ok(Graded::Under(policy))
}

/// CooperBench's conversation (`{from, to, message, timestamp}`, timestamps often null) as
/// cbench's messages; an unknown time is the pair's start.
fn conversation(value: &Value, started: &str) -> Vec<Message> {
    let start_ms = chrono::NaiveDateTime::parse_from_str(started, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|t| t.and_utc().timestamp_millis().max(0) as u64)
        .unwrap_or(0);
    value
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .map(|m| Message {
                    from: str_at(m, "from").unwrap_or_default().to_string(),
                    to: str_at(m, "to").unwrap_or_default().to_string(),
                    content: str_at(m, "message")
                        .or_else(|| str_at(m, "content"))
                        .unwrap_or_default()
                        .to_string(),
                    timestamp: match m.get("timestamp") {
                        Some(Value::Number(n)) => n
                            .as_f64()
                            .map(|s| {
                                if s > 1e12 {
                                    s as u64
                                } else {
                                    (s * 1000.0) as u64
                                }
                            })
                            .unwrap_or(start_ms),
                        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                            .map(|t| t.timestamp_millis().max(0) as u64)
                            .unwrap_or(start_ms),
                        _ => start_ms,
                    },
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Copies the pair's regular files as they were (no symlink is followed).
fn keep_originals(from: &Path, to: &Path) -> Result<(), ImportError> {
    std::fs::create_dir_all(to).map_err(io(format!("creating {}", to.display())))?;
    for entry in std::fs::read_dir(from)
        .map_err(io(format!("reading {}", from.display())))?
        .filter_map(Result::ok)
    {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let bytes = read_regular(&entry.path())?;
            write_atomic(&to.join(entry.file_name()), &bytes)?;
        }
    }
    Ok(())
}

/// CooperBench's eval.json as cbench's: its verdict on the merged tree (coop) or the solo
/// patch, per feature, with the test output kept as the feature's log.
fn eval_report(
    value: &Value,
    pair: &FoundPair,
    setting: Setting,
    pair_dir: &Path,
    eval_path: &Path,
) -> Result<EvalReport, ImportError> {
    let bad = |reason: String| ImportError::BadFile {
        path: eval_path.to_path_buf(),
        reason,
    };
    if !value.is_object() {
        return Err(bad("not a JSON object".into()));
    }
    let tree = if setting == Setting::Solo {
        "solo"
    } else {
        "merged"
    };
    let mut features = Vec::new();
    for (k, feature_id) in pair.features.iter().enumerate() {
        let key = format!("feature{}", k + 1);
        let Some(f) = value.get(&key) else {
            return Err(bad(format!("no `{key}` (feature {feature_id})")));
        };
        if !f.is_object() {
            return Err(bad(format!("`{key}` is not an object")));
        }
        let log = format!("eval_logs/{tree}_feature{feature_id}.log");
        let output = str_at(f, "test_output")
            .or_else(|| str_at(f, "output"))
            .unwrap_or_default();
        let logs = pair_dir.join("eval_logs");
        std::fs::create_dir_all(&logs).map_err(io(format!("creating {}", logs.display())))?;
        write_atomic(&pair_dir.join(&log), output.as_bytes())?;
        let passed = f
            .get("passed")
            .and_then(Value::as_bool)
            .ok_or_else(|| bad(format!("`{key}.passed` is not true or false")))?;
        let count = |key: &str| f.get(key).and_then(Value::as_u64).unwrap_or(0) as u32;
        features.push(FeatureGrade {
            feature_id: *feature_id,
            tests_passed: count("tests_passed"),
            tests_failed: count("tests_failed"),
            success: passed,
            exit_code: f.get("exit_code").and_then(Value::as_i64).unwrap_or(-1) as i32,
            error: None,
            log,
        });
    }
    // The verdict is the features' own; a `both_passed` that says otherwise is refused.
    let both = features.iter().all(|f| f.success);
    if let Some(said) = value.get("both_passed") {
        if said.as_bool() != Some(both) {
            return Err(bad(format!(
                "`both_passed` is {said}, but the features say {both}"
            )));
        }
    }
    let error = str_at(value, "error").map(str::to_string);
    let passed: u32 = features.iter().map(|f| f.tests_passed).sum();
    let failed: u32 = features.iter().map(|f| f.tests_failed).sum();
    let mut agents = BTreeMap::new();
    let (merged, strategy, policy) = if setting == Setting::Solo {
        agents.insert(
            "solo".to_string(),
            AgentGrade {
                tests_passed: passed,
                tests_failed: failed,
                success: both,
                error: error.clone(),
                feature_ids: pair.features.clone(),
                features,
                dropped_test_files: Vec::new(),
            },
        );
        (None, None, None)
    } else {
        let merge = value.get("merge").cloned().unwrap_or(Value::Null);
        if !(merge.is_object() || merge.is_null()) {
            return Err(bad("`merge` is not an object".into()));
        }
        let status = str_at(&merge, "status").unwrap_or("");
        let (strategy, policy) = match (status, str_at(&merge, "strategy")) {
            (_, Some("union")) => (MergeStrategy::Union, MergePolicy::Union),
            (_, Some("solo-agent1")) => (MergeStrategy::Lead, MergePolicy::Lead),
            ("error" | "missing_input", _) => (MergeStrategy::Failed, MergePolicy::Union),
            // 0.0.29 has no union step: a conflict stays one.
            ("conflicts", _) => (MergeStrategy::Failed, MergePolicy::Lead),
            _ => (MergeStrategy::Naive, MergePolicy::Union),
        };
        let apply_failed: Vec<String> = value
            .get("apply_status")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.as_str() == Some("failed"))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let merged = MergedGrade {
            tests_passed: passed,
            tests_failed: failed,
            success: both,
            merge_conflict: matches!(status, "conflicts" | "error"),
            merge_strategy: strategy,
            merge_policy: policy,
            apply_failed,
            conflict_files: Vec::new(),
            error: error.clone(),
            features,
        };
        (Some(merged), Some(strategy), Some(policy))
    };
    Ok(EvalReport {
        setting,
        feature_ids: pair.features.clone(),
        agents,
        merged,
        overall_success: both,
        merge_strategy: strategy,
        merge_policy: policy,
        // Matches no patch: `cbench eval` regrades the pair.
        inputs_sha256: format!("{IMPORTED_GRADING}-import"),
        grading_version: Some(IMPORTED_GRADING.to_string()),
        task_inputs_sha256: None,
        evaluated_at: str_at(value, "evaluated_at")
            .unwrap_or_default()
            .to_string(),
        duration_s: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_directory_names_parse_as_cooperbench_writes_them() {
        assert_eq!(features_of("f1_f2"), Some(vec![1, 2]));
        assert_eq!(features_of("f3_f10_f12"), Some(vec![3, 10, 12]));
        assert_eq!(features_of("f1"), None);
        assert_eq!(features_of("features_1_2"), None);
    }

    #[test]
    fn symlinks_and_path_like_agent_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pair = dir.path().join("run/coop/r_task/1/f1_f2");
        std::fs::create_dir_all(&pair).unwrap();
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "the user's secret\n").unwrap();
        std::os::unix::fs::symlink(&secret, pair.join("agent1.patch")).unwrap();
        let result = serde_json::json!({"agents": {
                "agent1": {"feature_id": 1, "status": "Submitted"},
                "agent2": {"feature_id": 2, "status": "Submitted"}}});
        std::fs::write(pair.join("result.json"), result.to_string()).unwrap();
        let opts = ImportOptions {
            dir: dir.path().join("run"),
            name: Some("x".into()),
            log_dir: dir.path().join("logs"),
            dataset_dir: "dataset".into(),
            force: false,
        };
        let err = import(&opts).unwrap_err().to_string();
        assert!(err.contains("symlinks are not followed"), "{err}");
        assert!(!dir.path().join("logs/x").exists());

        std::fs::remove_file(pair.join("agent1.patch")).unwrap();
        let result = serde_json::json!({"agents": {
            "../../escape": {"feature_id": 1, "status": "Submitted"},
            "agent2": {"feature_id": 2, "status": "Submitted"}}});
        std::fs::write(pair.join("result.json"), result.to_string()).unwrap();
        let err = import(&opts).unwrap_err().to_string();
        assert!(err.contains("is not `agent<N>` or `solo`"), "{err}");
        assert!(!dir.path().join("escape").exists());
        assert!(!dir.path().join("logs/x").exists());
    }

    /// A copy of the CooperBench 0.0.14 fixture's coop run.
    fn fixture_copy(dir: &Path) -> PathBuf {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../tests/fixtures/cooperbench-0.0.14/coop-msa_v2-gemini-3-flash-fixture-cbench-textkit-1",
        );
        let to = dir.join("run");
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&from)
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success());
        to
    }

    fn options(dir: &Path, run: &Path, force: bool) -> ImportOptions {
        ImportOptions {
            dir: run.to_path_buf(),
            name: Some("imp".into()),
            log_dir: dir.join("logs"),
            dataset_dir: "dataset".into(),
            force,
        }
    }

    #[test]
    fn look_alike_pair_directories_are_left_out_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let run = fixture_copy(dir.path());
        let task = run.join("coop/cbench_textkit_task");
        let copy = |from: &str, to: &str| {
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(task.join(from))
                .arg(task.join(to))
                .status()
                .unwrap();
            assert!(status.success());
        };
        copy("1/f1_f2", "1/f01_f02");
        copy("1/f1_f2", "1/f2_f1");
        copy("1/f1_f2", "1/f1_f1");
        copy("1", "01");
        let imported = import(&options(dir.path(), &run, false)).unwrap();
        assert_eq!(imported.runs[0].pairs, 2, "{:?}", imported.skipped);
        for name in ["f01_f02", "f2_f1", "f1_f1", "/01"] {
            assert!(
                imported.skipped.iter().any(|s| s.contains(name)),
                "{name}: {:?}",
                imported.skipped
            );
        }
    }

    #[test]
    fn force_replaces_only_an_earlier_import_and_inconsistent_verdicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = fixture_copy(dir.path());
        let native = dir.path().join("logs/imp");
        std::fs::create_dir_all(&native).unwrap();
        std::fs::write(native.join("config.json"), r#"{"backend": "local"}"#).unwrap();
        let err = import(&options(dir.path(), &run, true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an earlier import"), "{err}");
        std::fs::remove_dir_all(&native).unwrap();
        import(&options(dir.path(), &run, false)).unwrap();
        import(&options(dir.path(), &run, true)).unwrap();

        let eval_path = run.join("coop/cbench_textkit_task/1/f1_f2/eval.json");
        let mut eval: Value = serde_json::from_slice(&std::fs::read(&eval_path).unwrap()).unwrap();
        eval["feature1"]["passed"] = Value::Bool(false);
        std::fs::write(&eval_path, eval.to_string()).unwrap();
        let err = import(&options(dir.path(), &run, true))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`both_passed` is true, but the features say false"),
            "{err}"
        );
        eval["feature1"]["passed"] = Value::String("yes".into());
        std::fs::write(&eval_path, eval.to_string()).unwrap();
        let err = import(&options(dir.path(), &run, true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not true or false"), "{err}");
        // The earlier import is still whole.
        assert!(dir.path().join("logs/imp/config.json").is_file());
    }

    #[test]
    fn a_directory_without_pairs_says_what_it_expected() {
        let dir = tempfile::tempdir().unwrap();
        let err = import(&ImportOptions {
            dir: dir.path().to_path_buf(),
            name: None,
            log_dir: dir.path().join("logs"),
            dataset_dir: "dataset".into(),
            force: false,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a CooperBench run directory"), "{err}");
        assert!(err.contains("f<a>_f<b>"), "{err}");
    }
}
