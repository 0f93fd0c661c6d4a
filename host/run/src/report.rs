//! Metrics of a run read back from its files (`cbench report`, and the end of
//! `run`/`eval`): success rates, coordination failures, merge statistics, a
//! per-repo table, and against a solo baseline the coordination deficit with a
//! 95% bootstrap interval.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::eval::merge::MergeStrategy;
use crate::eval::EvalReport;
use crate::fsutil::{read_json, FsError};
use crate::summary::RunSummary;

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("run directory {0} does not exist")]
    MissingRun(PathBuf),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("--baseline {}: it is a {setting} run; the coordination deficit compares a coop run against a solo run of the same pairs", path.display())]
    BaselineNotSolo { path: PathBuf, setting: String },
    #[error("cannot read {path}: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    NoPairs(#[from] crate::layout::NoPairs),
}

/// One graded pair as the report sees it.
#[derive(Debug, Clone)]
struct PairOutcome {
    repo: String,
    overall: bool,
    agents_ok: usize,
    agents: usize,
    coordination_failure: bool,
    union_rescued: bool,
    merged: Option<(bool, bool, MergeStrategy, bool)>, // success, conflict, strategy, apply_failed
}

/// A rate with its numerator and denominator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rate {
    pub count: usize,
    pub of: usize,
    pub rate: Option<f64>,
}

impl Rate {
    fn new(count: usize, of: usize) -> Rate {
        Rate {
            count,
            of,
            rate: (of > 0).then(|| count as f64 / of as f64),
        }
    }

    fn show(&self) -> String {
        match self.rate {
            Some(r) => format!("{}/{} ({:.1}%)", self.count, self.of, r * 100.0),
            None => format!("{}/{}", self.count, self.of),
        }
    }
}

/// One line of the per-repo table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoLine {
    pub repo: String,
    pub pairs: usize,
    pub overall: Rate,
}

/// Coop against solo on the pairs both runs graded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deficit {
    pub baseline: String,
    pub matched_pairs: usize,
    pub coop_rate: f64,
    pub solo_rate: f64,
    /// 1 − coop/solo; None when the solo rate is 0.
    pub deficit: Option<f64>,
    /// 95% percentile bootstrap interval over matched pairs.
    pub ci95: Option<(f64, f64)>,
}

/// report.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub run: String,
    pub pairs: usize,
    pub graded: usize,
    pub overall: Rate,
    pub failures: usize,
    /// Pairs the infrastructure stopped (summary.json): reported, never folded into failures.
    pub infra_errors: usize,
    /// Pairs whose agents ran but that are not graded yet (`--no-auto-eval`, or grading
    /// interrupted): neither failures nor infrastructure errors.
    #[serde(default)]
    pub not_graded: usize,
    /// Attempts at pairs the infrastructure stopped and a later invocation redid.
    #[serde(default)]
    pub redone_attempts: usize,
    /// LLM requests the host retried.
    #[serde(default)]
    pub llm_retries: u64,
    pub individual: Rate,
    /// Both (all) agents succeeded alone but the merged tree failed.
    pub coordination_failures: Rate,
    pub naive_merge_conflicts: Rate,
    /// Conflicted pairs the union merge turned into a passing merged tree.
    pub union_rescues: Rate,
    pub apply_failures: Rate,
    pub per_repo: Vec<RepoLine>,
    pub baseline: Option<Deficit>,
    /// A mixed team's roles: which plugin held each agent id, and how it did alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleLine>,
    /// Why coordination failed: the failure modes flagged over the coop pairs (cbench-analyze).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<cbench_analyze::RunAnalysis>,
    /// The team setting's metrics over the run's team pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<crate::teamreport::TeamSummary>,
}

/// One role of a mixed team.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleLine {
    pub agent_id: String,
    pub plugin: String,
    pub individual: Rate,
}

/// (attempts redone after infrastructure errors, LLM requests retried) over the run's pairs.
fn incidents(run_dir: &Path) -> (usize, u64) {
    let Ok(pairs) = crate::layout::pair_dirs(run_dir) else {
        return (0, 0);
    };
    pairs
        .iter()
        .filter_map(|p| read_json::<crate::record::PairRecord>(&p.path.join("result.json")).ok())
        .fold((0, 0), |(redone, retries), r| {
            (
                redone + r.superseded.len(),
                retries
                    + r.agents
                        .iter()
                        .map(|a| u64::from(a.llm_retries))
                        .sum::<u64>()
                    + r.superseded.iter().map(|s| s.llm_retries).sum::<u64>(),
            )
        })
}

/// Individual success per (agent id, plugin) over graded pairs, when a team mixed plugins.
fn roles(run_dir: &Path) -> Result<Vec<RoleLine>, ReportError> {
    let config: serde_json::Value = read_json(&run_dir.join("config.json")).unwrap_or_default();
    if config
        .get("team")
        .and_then(|t| t.as_array())
        .is_none_or(|t| t.is_empty())
    {
        return Ok(Vec::new());
    }
    let pairs = crate::layout::pair_dirs(run_dir).map_err(|source| ReportError::Walk {
        path: run_dir.to_path_buf(),
        source,
    })?;
    let mut tally: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for pair in pairs {
        let (Ok(eval), Ok(record)) = (
            read_json::<EvalReport>(&pair.path.join("eval.json")),
            read_json::<crate::record::PairRecord>(&pair.path.join("result.json")),
        ) else {
            continue;
        };
        for a in &record.agents {
            let plugin = a.plugin.as_ref().unwrap_or(&record.plugin).name.clone();
            let e = tally.entry((a.agent_id.clone(), plugin)).or_default();
            e.0 += 1;
            e.1 += usize::from(eval.agents.get(&a.agent_id).is_some_and(|g| g.success));
        }
    }
    Ok(tally
        .into_iter()
        .map(|((agent_id, plugin), (n, ok))| RoleLine {
            agent_id,
            plugin,
            individual: Rate::new(ok, n),
        })
        .collect())
}

fn read_outcomes(run_dir: &Path) -> Result<(BTreeMap<String, PairOutcome>, usize), ReportError> {
    if !run_dir.is_dir() {
        return Err(ReportError::MissingRun(run_dir.to_path_buf()));
    }
    let mut outcomes = BTreeMap::new();
    let mut ungraded = 0;
    let pairs = crate::layout::required_pair_dirs(run_dir)?;
    for pair in pairs {
        let eval_path = pair.path.join("eval.json");
        if !eval_path.is_file() {
            ungraded += 1;
            continue;
        }
        let eval: EvalReport = read_json(&eval_path)?;
        let agents_ok = eval.agents_ok();
        outcomes.insert(
            pair.key(),
            PairOutcome {
                repo: pair.repo.clone(),
                overall: eval.overall_success,
                agents_ok,
                agents: eval.agents.len(),
                coordination_failure: eval.coordination_failure(),
                union_rescued: eval.union_rescued(),
                merged: eval.merged.as_ref().map(|m| {
                    (
                        m.success,
                        m.merge_conflict,
                        m.merge_strategy,
                        !m.apply_failed.is_empty(),
                    )
                }),
            },
        );
    }
    Ok((outcomes, ungraded))
}

/// Builds the report of the run in `run_dir` (and, optionally, against a solo baseline run).
pub fn build(run_dir: &Path, baseline_dir: Option<&Path>) -> Result<Report, ReportError> {
    let (outcomes, ungraded) = read_outcomes(run_dir)?;
    // Pairs that failed before their directory existed are only in summary.json.
    let summary_infra = read_json::<RunSummary>(&run_dir.join("summary.json"))
        .map(|s| {
            s.per_pair
                .iter()
                .filter(|p| p.infra_error.is_some())
                .count()
        })
        .unwrap_or(0);
    let infra_errors = summary_infra;
    let not_graded = ungraded.saturating_sub(summary_infra);
    let graded = outcomes.len();
    let successes = outcomes.values().filter(|o| o.overall).count();
    let agents: usize = outcomes.values().map(|o| o.agents).sum();
    let agents_ok: usize = outcomes.values().map(|o| o.agents_ok).sum();
    let merged: Vec<&(bool, bool, MergeStrategy, bool)> = outcomes
        .values()
        .filter_map(|o| o.merged.as_ref())
        .collect();
    let coordination = outcomes.values().filter(|o| o.coordination_failure).count();
    let conflicts = merged.iter().filter(|m| m.1).count();
    let rescued = outcomes.values().filter(|o| o.union_rescued).count();
    let apply_failed = merged.iter().filter(|m| m.3).count();
    let mut per_repo: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for o in outcomes.values() {
        let e = per_repo.entry(o.repo.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(o.overall);
    }
    let baseline = match baseline_dir {
        Some(dir) => Some(deficit(&outcomes, dir)?),
        None => None,
    };
    let incidents = incidents(run_dir);
    Ok(Report {
        run: run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pairs: graded + infra_errors + not_graded,
        graded,
        not_graded,
        overall: Rate::new(successes, graded),
        failures: graded - successes,
        infra_errors,
        redone_attempts: incidents.0,
        llm_retries: incidents.1,
        individual: Rate::new(agents_ok, agents),
        coordination_failures: Rate::new(coordination, merged.len()),
        naive_merge_conflicts: Rate::new(conflicts, merged.len()),
        union_rescues: Rate::new(rescued, conflicts),
        apply_failures: Rate::new(apply_failed, merged.len()),
        per_repo: per_repo
            .into_iter()
            .map(|(repo, (pairs, ok))| RepoLine {
                repo,
                pairs,
                overall: Rate::new(ok, pairs),
            })
            .collect(),
        baseline,
        roles: roles(run_dir)?,
        // A view of files already graded: one that cannot be read leaves the section out.
        coordination: match cbench_analyze::analyze_pairs(run_dir) {
            Ok(pairs) => Some(cbench_analyze::summarize(&pairs)).filter(|a| a.pairs > 0),
            Err(e) => {
                tracing::warn!("no coordination analysis: {e}");
                None
            }
        },
        team: crate::teamreport::summarize(run_dir),
    })
}

fn deficit(
    coop: &BTreeMap<String, PairOutcome>,
    baseline_dir: &Path,
) -> Result<Deficit, ReportError> {
    let config: serde_json::Value = read_json(&baseline_dir.join("config.json"))?;
    let setting = config
        .get("setting")
        .and_then(|s| s.as_str())
        .unwrap_or("unknown");
    if setting != "solo" {
        return Err(ReportError::BaselineNotSolo {
            path: baseline_dir.to_path_buf(),
            setting: setting.to_string(),
        });
    }
    let (solo, _) = read_outcomes(baseline_dir)?;
    let matched: Vec<(bool, bool)> = coop
        .iter()
        .filter_map(|(k, c)| solo.get(k).map(|s| (c.overall, s.overall)))
        .collect();
    let rates = |sample: &[(bool, bool)]| {
        let n = sample.len().max(1) as f64;
        let c = sample.iter().filter(|(c, _)| *c).count() as f64 / n;
        let s = sample.iter().filter(|(_, s)| *s).count() as f64 / n;
        (c, s)
    };
    let (coop_rate, solo_rate) = rates(&matched);
    let point = (solo_rate > 0.0).then(|| 1.0 - coop_rate / solo_rate);
    let ci95 = if point.is_none() {
        None
    } else {
        crate::stats::bootstrap95(&matched, |sample| {
            let (c, s) = rates(sample);
            (s > 0.0).then(|| 1.0 - c / s)
        })
    };
    Ok(Deficit {
        baseline: baseline_dir.display().to_string(),
        matched_pairs: matched.len(),
        coop_rate,
        solo_rate,
        deficit: point,
        ci95,
    })
}

impl Report {
    /// The terminal table.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Report: {run}\n  pairs: {pairs} · graded: {graded}{ungraded} · infrastructure errors: {infra}{incidents}\n  overall success: {overall} · failures: {fail}\n  individual success: {ind}\n",
            run = self.run,
            pairs = self.pairs,
            graded = self.graded,
            ungraded = if self.not_graded > 0 {
                format!(
                    " · not graded yet: {} (`cbench eval -n {}` grades them)",
                    self.not_graded, self.run
                )
            } else {
                String::new()
            },
            infra = self.infra_errors,
            incidents = {
                let mut parts = Vec::new();
                if self.redone_attempts > 0 {
                    parts.push(format!("attempts redone after them: {}", self.redone_attempts));
                }
                if self.llm_retries > 0 {
                    parts.push(format!("LLM requests retried: {}", self.llm_retries));
                }
                parts.iter().map(|p| format!(" · {p}")).collect::<String>()
            },
            overall = self.overall.show(),
            fail = self.failures,
            ind = self.individual.show(),
        );
        // Solo pairs merge nothing: the merge and coordination figures do not apply to them.
        if self.coordination_failures.of > 0 {
            out.push_str(&format!(
                "  coordination failures (all agents pass alone, merge fails): {coord}\n  naive-merge conflicts: {conf} · union rescues: {resc} · apply failures: {apply}\n",
                coord = self.coordination_failures.show(),
                conf = self.naive_merge_conflicts.show(),
                resc = self.union_rescues.show(),
                apply = self.apply_failures.show(),
            ));
        }
        out.push_str("  per repo:\n");
        for r in &self.per_repo {
            out.push_str(&format!(
                "    {:<36} {:>4} pairs  {}\n",
                r.repo,
                r.pairs,
                r.overall.show()
            ));
        }
        for role in &self.roles {
            out.push_str(&format!(
                "  role {} = {}: alone {}\n",
                role.agent_id,
                role.plugin,
                role.individual.show()
            ));
        }
        if let Some(d) = &self.baseline {
            let deficit = d
                .deficit
                .map(|x| format!("{:.1}%", x * 100.0))
                .unwrap_or_else(|| "undefined (solo rate 0)".into());
            let ci = d
                .ci95
                .map(|(lo, hi)| format!(" [95% CI {:.1}% – {:.1}%]", lo * 100.0, hi * 100.0))
                .unwrap_or_default();
            out.push_str(&format!(
                "  vs solo baseline {} ({} matched pairs): coop {:.1}% · solo {:.1}% · coordination deficit {deficit}{ci}\n    (deficit = 1 − coop ÷ solo: positive when the pair did worse than one agent doing both features, negative when better)\n",
                d.baseline,
                d.matched_pairs,
                d.coop_rate * 100.0,
                d.solo_rate * 100.0
            ));
        }
        if let Some(coordination) = &self.coordination {
            for line in coordination.render().lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        if let Some(team) = &self.team {
            for line in team.render().lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}
