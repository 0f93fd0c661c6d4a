//! `cbench compare RUN_A RUN_B …`: runs head to head on the pairs graded in every run, refusing
//! runs that are not comparable (other task inputs, grading version, merge policy or setting).
//! Per run: rates with Wilson intervals, spend, plugin identity; per pair of runs: the paired
//! table, the exact McNemar p-value, a paired bootstrap interval of the difference, the same per
//! repository, and the pairs where they disagree.

pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::eval::EvalReport;
use crate::fsutil::{read_json, FsError};
use crate::identity::PluginIdentity;
use crate::layout::PairDir;
use crate::runner::PairRecord;
use crate::stats::{bootstrap95, mcnemar_exact, wilson95, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED};
use cbench_analyze::FailureMode;

/// Why runs could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("compare needs at least two runs (got {0})")]
    TooFew(usize),
    #[error("run `{name}` not found: {path} has no config.json")]
    UnknownRun { name: String, path: PathBuf },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("cannot read the pairs of {path}: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("these runs are not comparable:\n  - {}\n(--allow-mismatch compares them anyway and prints the mismatch)", .0.join("\n  - "))]
    Mismatch(Vec<String>),
    #[error(transparent)]
    NoPairs(#[from] crate::layout::NoPairs),
    #[error("no pair was graded in every run ({0}): nothing to compare")]
    NothingInCommon(String),
}

/// A rate with its Wilson 95% interval.
#[derive(Debug, Clone, Serialize)]
pub struct RateCi {
    pub count: usize,
    pub of: usize,
    pub rate: Option<f64>,
    pub ci95: Option<(f64, f64)>,
}

impl RateCi {
    fn new(count: usize, of: usize) -> RateCi {
        RateCi {
            count,
            of,
            rate: (of > 0).then(|| count as f64 / of as f64),
            ci95: wilson95(count, of),
        }
    }
}

/// Why a run's pairs were left out of the comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeftOut {
    /// In another run, not in this one.
    pub not_run: usize,
    pub infrastructure_error: usize,
    pub not_graded: usize,
    /// Graded here, but not in every other run.
    pub missing_elsewhere: usize,
}

/// One role of a run's teams (agent1, agent2, …) and the plugin that held it.
#[derive(Debug, Clone, Serialize)]
pub struct RoleLine {
    pub agent_id: String,
    pub plugin: String,
    pub plugin_sha256: String,
    pub individual: RateCi,
}

/// One run's side of the comparison, over the compared pairs.
#[derive(Debug, Clone, Serialize)]
pub struct RunSide {
    pub name: String,
    pub model: String,
    pub setting: String,
    pub plugin: Option<PluginIdentity>,
    /// A mixed team's plugins by role (empty: every agent ran `plugin`).
    pub team: Vec<PluginIdentity>,
    pub overall: RateCi,
    pub individual: RateCi,
    pub naive_merge_conflicts: RateCi,
    pub union_rescues: RateCi,
    pub coordination_failures: RateCi,
    pub tokens: u64,
    pub cost_usd: Option<f64>,
    pub cost_per_success_usd: Option<f64>,
    pub steps: u64,
    pub wall_s: f64,
    pub roles: Vec<RoleLine>,
    pub left_out: LeftOut,
    /// Per failure mode (`cbench analyze`), the compared coop pairs it was flagged in.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failure_modes: BTreeMap<FailureMode, RateCi>,
    /// The team setting's metrics over the compared pairs (none outside the team setting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_metrics: Option<crate::runner::TeamSummary>,
}

/// A paired table and its tests.
#[derive(Debug, Clone, Serialize)]
pub struct Paired {
    pub pairs: usize,
    pub both: usize,
    pub only_a: usize,
    pub only_b: usize,
    pub neither: usize,
    /// Success rate of A minus that of B.
    pub difference: f64,
    /// Paired percentile bootstrap 95% interval of the difference.
    pub ci95: Option<(f64, f64)>,
    /// Exact McNemar test (binomial on the discordant pairs).
    pub mcnemar_p: f64,
}

impl Paired {
    fn of(outcomes: &[(bool, bool)]) -> Paired {
        let count = |f: fn(&(bool, bool)) -> bool| outcomes.iter().filter(|o| f(o)).count();
        let (only_a, only_b) = (count(|o| o.0 && !o.1), count(|o| !o.0 && o.1));
        let difference = |s: &[(bool, bool)]| {
            let n = s.len() as f64;
            let a = s.iter().filter(|o| o.0).count() as f64;
            let b = s.iter().filter(|o| o.1).count() as f64;
            (n > 0.0).then(|| (a - b) / n)
        };
        Paired {
            pairs: outcomes.len(),
            both: count(|o| o.0 && o.1),
            only_a,
            only_b,
            neither: count(|o| !o.0 && !o.1),
            difference: difference(outcomes).unwrap_or(0.0),
            ci95: bootstrap95(outcomes, difference),
            mcnemar_p: mcnemar_exact(only_a, only_b),
        }
    }
}

/// A pair on which two runs disagree.
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    pub key: String,
    /// The pair page id in each run's `cbench view`.
    pub page_id: String,
    pub a_success: bool,
    pub b_success: bool,
}

/// Two runs head to head.
#[derive(Debug, Clone, Serialize)]
pub struct Pairwise {
    pub a: String,
    pub b: String,
    pub overall: Paired,
    pub per_repo: BTreeMap<String, Paired>,
    pub disagreements: Vec<Disagreement>,
    /// Per failure mode, flagged in A against flagged in B over the compared coop pairs (the
    /// "difference" is A's rate minus B's: positive when A fails that way more often).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failure_modes: BTreeMap<FailureMode, Paired>,
    /// The result in one plain sentence: which run did better and whether it is significant.
    pub verdict: String,
}

/// Fewer paired pairs than this and the interval and test say little: the verdict says so.
pub const SMALL_SAMPLE: usize = 10;
/// The significance level of the verdict sentence.
const ALPHA: f64 = 0.05;

/// One sentence: which run succeeded more often over the paired pairs, by how much, and
/// whether the exact McNemar test finds it significant at 5%.
fn verdict_sentence(a: &str, b: &str, p: &Paired) -> String {
    let (ok_a, ok_b) = (p.both + p.only_a, p.both + p.only_b);
    let mut out = if p.only_a == p.only_b {
        format!(
            "{a} and {b} succeeded on the same number of pairs ({ok_a}/{n} each){}",
            if p.only_a == 0 {
                ", and on the same pairs".to_string()
            } else {
                format!(", each on {} the other failed", p.only_a)
            },
            n = p.pairs
        )
    } else {
        let (better, worse) = if p.only_a > p.only_b { (a, b) } else { (b, a) };
        format!(
            "{better} did better than {worse}: {ok_a}/{n} against {ok_b}/{n} ({:.1} points), {} at the 5% level (exact McNemar p = {:.3})",
            p.difference.abs() * 100.0,
            if p.mcnemar_p < ALPHA {
                "significant"
            } else {
                "not significant"
            },
            p.mcnemar_p,
            n = p.pairs
        )
    };
    out.push('.');
    if p.pairs < SMALL_SAMPLE {
        out.push_str(&format!(
            " Only {} paired pair{}: too few for the interval or the test to mean much.",
            p.pairs,
            if p.pairs == 1 { "" } else { "s" }
        ));
    }
    out
}

/// Options of config.json that change what agents do, with the flag that sets them.
const COMPARED_OPTIONS: [(&str, &str); 18] = [
    ("model", "-m"),
    ("setting", "--setting"),
    ("max_steps", "--max-steps"),
    ("command_timeout_s", "--command-timeout"),
    ("temperature", "--temperature"),
    ("max_output_tokens", "--max-output-tokens"),
    ("max_cost_usd", "--max-cost"),
    ("max_tokens", "--max-tokens"),
    ("max_agent_secs", "--max-agent-secs"),
    ("agent_config_sha256", "--agent-config (sha256)"),
    ("messaging", "--no-messaging (messaging)"),
    ("git", "--git"),
    ("team_features", "--team-no-* (team features)"),
    ("merge_policy", "--merge-policy"),
    ("backend", "--backend"),
    ("grading_network", "--grading-network"),
    ("max_messages", "--max-messages"),
    ("plugin_memory_mb", "--plugin-memory"),
];

/// The options that differ between the runs: `--max-steps: a 40, b 1`.
fn differing_options(runs: &[LoadedRun]) -> Vec<String> {
    COMPARED_OPTIONS
        .iter()
        .filter_map(|(key, flag)| {
            let values: Vec<String> = runs.iter().map(|r| config_str(&r.config, key)).collect();
            values.iter().any(|v| v != &values[0]).then(|| {
                let listed: Vec<String> = runs
                    .iter()
                    .zip(&values)
                    .map(|(r, v)| format!("{} {v}", r.name))
                    .collect();
                format!("{flag}: {}", listed.join(", "))
            })
        })
        .collect()
}

/// `cbench compare`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub runs: Vec<RunSide>,
    /// Pairs graded in every run: what the comparison covers.
    pub compared_pairs: usize,
    /// Differences accepted with `--allow-mismatch` (empty when the runs are comparable).
    pub mismatches: Vec<String>,
    pub pairwise: Vec<Pairwise>,
    pub bootstrap_resamples: usize,
    pub bootstrap_seed: String,
    /// Options that differ between the runs (`--max-steps: a 40, b 1`); empty when none do.
    pub differing_options: Vec<String>,
}

/// One pair as a run has it.
#[derive(Debug, Clone)]
enum PairState {
    Graded {
        eval: Box<EvalReport>,
        record: Box<PairRecord>,
        /// The failure modes flagged (None: not a coop pair, or it could not be analysed).
        modes: Option<Vec<FailureMode>>,
    },
    Infra,
    NotGraded,
}

struct LoadedRun {
    name: String,
    config: Value,
    pairs: BTreeMap<String, (PairDir, PairState)>,
    /// Keys known only from summary.json (failed before their directory existed).
    infra_only: BTreeSet<String>,
}

fn load(log_dir: &Path, name: &str) -> Result<LoadedRun, CompareError> {
    let run_dir = log_dir.join(name);
    let config_path = run_dir.join("config.json");
    if !config_path.is_file() {
        return Err(CompareError::UnknownRun {
            name: name.to_string(),
            path: run_dir,
        });
    }
    let config: Value = read_json(&config_path)?;
    let dirs = crate::layout::required_pair_dirs(&run_dir)?;
    let mut pairs = BTreeMap::new();
    for dir in dirs {
        let record = read_json::<PairRecord>(&dir.path.join("result.json")).ok();
        let eval = read_json::<EvalReport>(&dir.path.join("eval.json")).ok();
        let state = match (record, eval) {
            (Some(r), _) if r.infra_failure().is_some() => PairState::Infra,
            (None, _) => PairState::Infra,
            (Some(r), Some(e)) => PairState::Graded {
                eval: Box::new(e),
                record: Box::new(r),
                modes: cbench_analyze::analyze_pair(&dir.path)
                    .ok()
                    .filter(|a| a.applicable)
                    .map(|a| a.modes),
            },
            (Some(_), None) => PairState::NotGraded,
        };
        pairs.insert(dir.key(), (dir, state));
    }
    let infra_only = read_json::<crate::summary::RunSummary>(&run_dir.join("summary.json"))
        .map(|s| {
            s.per_pair
                .into_iter()
                .filter(|p| p.infra_error.is_some())
                .map(|p| normalize_key(&p.pair))
                .filter(|k| !pairs.contains_key(k))
                .collect()
        })
        .unwrap_or_default();
    Ok(LoadedRun {
        name: name.to_string(),
        config,
        pairs,
        infra_only,
    })
}

/// summary.json keys of runs written before the documented layout used `<repo>/<id>/…`.
fn normalize_key(key: &str) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    match parts[..] {
        [repo, task, features] if task.chars().all(|c| c.is_ascii_digit()) => {
            format!("{repo}/task{task}/{features}")
        }
        _ => key.to_string(),
    }
}

fn config_str(config: &Value, field: &str) -> String {
    config
        .get(field)
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "(not recorded)".into())
}

/// What makes two runs incomparable, named.
fn mismatches(runs: &[LoadedRun], compared: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for field in ["setting", "merge_policy"] {
        let values: Vec<String> = runs.iter().map(|r| config_str(&r.config, field)).collect();
        if values.iter().any(|v| v != &values[0]) {
            let listed: Vec<String> = runs
                .iter()
                .zip(&values)
                .map(|(r, v)| format!("{} {v}", r.name))
                .collect();
            out.push(format!(
                "{} differs: {}",
                field.replace('_', " "),
                listed.join(", ")
            ));
        }
    }
    let graded = |run: &LoadedRun, key: &str| match run.pairs.get(key) {
        Some((_, PairState::Graded { eval, .. })) => Some(eval.as_ref().clone()),
        _ => None,
    };
    // Grading version: every compared pair of every run.
    let mut versions: Vec<BTreeSet<String>> = vec![BTreeSet::new(); runs.len()];
    let mut task_differs = Vec::new();
    for key in compared {
        let evals: Vec<EvalReport> = runs.iter().filter_map(|r| graded(r, key)).collect();
        for (k, e) in evals.iter().enumerate() {
            versions[k].insert(
                e.grading_version
                    .clone()
                    .unwrap_or_else(|| "(not recorded)".into()),
            );
        }
        let hashes: Vec<Option<&String>> = evals
            .iter()
            .map(|e| e.task_inputs_sha256.as_ref())
            .collect();
        if hashes.iter().any(Option::is_none) || hashes.iter().any(|h| h != &hashes[0]) {
            task_differs.push(key.clone());
        }
    }
    let all_versions: BTreeSet<&String> = versions.iter().flatten().collect();
    if all_versions.len() > 1 || all_versions.iter().any(|v| v.starts_with('(')) {
        let listed: Vec<String> = runs
            .iter()
            .zip(&versions)
            .map(|(r, v)| {
                format!(
                    "{} {}",
                    r.name,
                    v.iter().cloned().collect::<Vec<_>>().join("+")
                )
            })
            .collect();
        out.push(format!(
            "grading version differs or is not recorded: {} (`cbench eval -n RUN --force` regrades a run and records it)",
            listed.join(", ")
        ));
    }
    if !task_differs.is_empty() {
        out.push(format!(
            "task inputs (tests, runner, feature texts, gold patches) differ or are not recorded on {} pair(s), e.g. {}",
            task_differs.len(),
            task_differs[0]
        ));
    }
    out
}

fn is_success(state: &PairState) -> bool {
    matches!(state, PairState::Graded { eval, .. } if eval.overall_success)
}

fn side(run: &LoadedRun, compared: &[String], left_out: LeftOut) -> RunSide {
    let mut successes = 0;
    let (mut agents, mut agents_ok) = (0, 0);
    let (mut merged, mut conflicts, mut rescued, mut coordination) = (0, 0, 0, 0);
    let (mut tokens, mut steps, mut wall) = (0u64, 0u64, 0.0f64);
    let mut cost = Some(0.0f64);
    let mut roles: BTreeMap<String, (String, String, usize, usize)> = BTreeMap::new();
    let identity = serde_json::from_value::<PluginIdentity>(
        run.config.get("agent").cloned().unwrap_or(Value::Null),
    )
    .ok();
    let team: Vec<PluginIdentity> = run
        .config
        .get("team")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    let mut analysed = 0;
    let mut mode_counts: BTreeMap<FailureMode, usize> = BTreeMap::new();
    for key in compared {
        let Some((
            _,
            PairState::Graded {
                eval,
                record,
                modes,
            },
        )) = run.pairs.get(key)
        else {
            continue;
        };
        if let Some(modes) = modes {
            analysed += 1;
            for mode in modes {
                *mode_counts.entry(*mode).or_default() += 1;
            }
        }
        successes += usize::from(eval.overall_success);
        agents += eval.agents.len();
        agents_ok += eval.agents_ok();
        if let Some(m) = &eval.merged {
            merged += 1;
            conflicts += usize::from(m.merge_conflict);
        }
        rescued += usize::from(eval.union_rescued());
        coordination += usize::from(eval.coordination_failure());
        wall += record.duration_s;
        for a in &record.agents {
            tokens += a.token_usage.total_tokens;
            steps += u64::from(a.steps);
            cost = match (cost, a.cost_usd) {
                (Some(t), Some(c)) => Some(t + c),
                _ => None,
            };
            let plugin = a.plugin.as_ref().unwrap_or(&record.plugin);
            let role = roles
                .entry(a.agent_id.clone())
                .or_insert_with(|| (plugin.name.clone(), plugin.sha256.clone(), 0, 0));
            role.2 += 1;
            role.3 += usize::from(eval.agents.get(&a.agent_id).is_some_and(|g| g.success));
        }
    }
    let conflicts_rate = RateCi::new(conflicts, merged);
    RunSide {
        name: run.name.clone(),
        model: config_str(&run.config, "model"),
        setting: config_str(&run.config, "setting"),
        plugin: identity,
        team,
        overall: RateCi::new(successes, compared.len()),
        individual: RateCi::new(agents_ok, agents),
        naive_merge_conflicts: conflicts_rate,
        union_rescues: RateCi::new(rescued, conflicts),
        coordination_failures: RateCi::new(coordination, merged),
        tokens,
        cost_usd: cost,
        cost_per_success_usd: cost.and_then(|c| (successes > 0).then(|| c / successes as f64)),
        steps,
        wall_s: wall,
        roles: roles
            .into_iter()
            .map(|(agent_id, (plugin, sha, n, ok))| RoleLine {
                agent_id,
                plugin,
                plugin_sha256: sha,
                individual: RateCi::new(ok, n),
            })
            .collect(),
        left_out,
        team_metrics: crate::runner::summarize_team(compared.iter().filter_map(|key| {
            match run.pairs.get(key) {
                Some((_, PairState::Graded { record, .. })) => Some(record.as_ref()),
                _ => None,
            }
        })),
        failure_modes: if analysed == 0 {
            BTreeMap::new()
        } else {
            FailureMode::ALL
                .iter()
                .map(|m| {
                    (
                        *m,
                        RateCi::new(mode_counts.get(m).copied().unwrap_or(0), analysed),
                    )
                })
                .collect()
        },
    }
}

/// Compares the named runs under `log_dir`.
pub fn compare(
    log_dir: &Path,
    names: &[String],
    allow_mismatch: bool,
) -> Result<Comparison, CompareError> {
    if names.len() < 2 {
        return Err(CompareError::TooFew(names.len()));
    }
    let runs: Vec<LoadedRun> = names
        .iter()
        .map(|n| load(log_dir, n))
        .collect::<Result<_, _>>()?;
    let all_keys: BTreeSet<String> = runs
        .iter()
        .flat_map(|r| r.pairs.keys().chain(r.infra_only.iter()).cloned())
        .collect();
    let compared: Vec<String> = all_keys
        .iter()
        .filter(|k| {
            runs.iter()
                .all(|r| matches!(r.pairs.get(*k), Some((_, PairState::Graded { .. }))))
        })
        .cloned()
        .collect();
    if compared.is_empty() {
        return Err(CompareError::NothingInCommon(names.join(", ")));
    }
    let found = mismatches(&runs, &compared);
    if !found.is_empty() && !allow_mismatch {
        return Err(CompareError::Mismatch(found));
    }
    let sides = runs
        .iter()
        .map(|run| {
            let mut left = LeftOut::default();
            for key in all_keys.iter().filter(|k| !compared.contains(k)) {
                match run.pairs.get(key).map(|(_, s)| s) {
                    None if run.infra_only.contains(key) => left.infrastructure_error += 1,
                    None => left.not_run += 1,
                    Some(PairState::Infra) => left.infrastructure_error += 1,
                    Some(PairState::NotGraded) => left.not_graded += 1,
                    Some(PairState::Graded { .. }) => left.missing_elsewhere += 1,
                }
            }
            side(run, &compared, left)
        })
        .collect();
    let mut pairwise = Vec::new();
    for i in 0..runs.len() {
        for j in i + 1..runs.len() {
            pairwise.push(head_to_head(&runs[i], &runs[j], &compared));
        }
    }
    Ok(Comparison {
        runs: sides,
        compared_pairs: compared.len(),
        mismatches: found,
        pairwise,
        bootstrap_resamples: BOOTSTRAP_RESAMPLES,
        bootstrap_seed: format!("{BOOTSTRAP_SEED:#x}"),
        differing_options: differing_options(&runs),
    })
}

fn head_to_head(a: &LoadedRun, b: &LoadedRun, compared: &[String]) -> Pairwise {
    let mut outcomes = Vec::new();
    let mut per_repo: BTreeMap<String, Vec<(bool, bool)>> = BTreeMap::new();
    let mut disagreements = Vec::new();
    let mut flagged: BTreeMap<FailureMode, Vec<(bool, bool)>> = BTreeMap::new();
    for key in compared {
        let (Some((dir, sa)), Some((_, sb))) = (a.pairs.get(key), b.pairs.get(key)) else {
            continue;
        };
        if let (
            PairState::Graded {
                modes: Some(ma), ..
            },
            PairState::Graded {
                modes: Some(mb), ..
            },
        ) = (sa, sb)
        {
            for mode in FailureMode::ALL {
                flagged
                    .entry(mode)
                    .or_default()
                    .push((ma.contains(&mode), mb.contains(&mode)));
            }
        }
        let outcome = (is_success(sa), is_success(sb));
        outcomes.push(outcome);
        per_repo.entry(dir.repo.clone()).or_default().push(outcome);
        if outcome.0 != outcome.1 {
            disagreements.push(Disagreement {
                key: key.clone(),
                page_id: crate::view::data::page_id(key),
                a_success: outcome.0,
                b_success: outcome.1,
            });
        }
    }
    let overall = Paired::of(&outcomes);
    Pairwise {
        verdict: verdict_sentence(&a.name, &b.name, &overall),
        a: a.name.clone(),
        b: b.name.clone(),
        overall,
        per_repo: per_repo
            .into_iter()
            .map(|(repo, o)| (repo, Paired::of(&o)))
            .collect(),
        disagreements,
        failure_modes: flagged
            .into_iter()
            .map(|(mode, o)| (mode, Paired::of(&o)))
            .collect(),
    }
}
