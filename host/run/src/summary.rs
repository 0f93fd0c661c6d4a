//! summary.json: what one `run` or `eval` invocation did, and its closing lines.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::eval::merge::MergeStrategy;
use crate::plugin::AgentStatus;
use crate::progress::{human_duration, Progress};
use crate::record::{add_tokens, PairResult};
use crate::trajectory::TokenTotals;

/// One pair's line in summary.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairSummary {
    pub pair: String,
    pub overall_success: Option<bool>,
    pub merge_strategy: Option<MergeStrategy>,
    pub agent_statuses: Vec<AgentStatus>,
    /// Tokens and cost of each agent of the pair.
    #[serde(default)]
    pub agents: Vec<AgentSpend>,
    pub infra_error: Option<String>,
}

/// One agent's LLM spend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSpend {
    pub agent_id: String,
    pub token_usage: TokenTotals,
    /// None when a call's price was unknown.
    pub cost_usd: Option<f64>,
}

/// summary.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: String,
    pub pairs: usize,
    pub graded: usize,
    pub overall_successes: usize,
    /// Over graded pairs; unmergeable pairs count as failures.
    pub overall_success_rate: Option<f64>,
    pub individual_successes: usize,
    pub individual_attempts: usize,
    pub merge_conflicts: usize,
    pub union_rescues: usize,
    pub agent_errors: usize,
    /// Pairs the harness could not run or grade; never folded into failures.
    pub infra_errors: usize,
    /// Earlier attempts at pairs that the infrastructure stopped and a later invocation redid;
    /// their tokens and cost are in the totals.
    #[serde(default)]
    pub redone_attempts: usize,
    /// LLM requests the host retried (rate limits, server errors, timeouts).
    #[serde(default)]
    pub llm_retries: u64,
    pub token_usage: TokenTotals,
    pub cost_usd: Option<f64>,
    /// This invocation's wall time.
    pub duration_s: f64,
    /// Wall time of every invocation of the run so far (resumes and evals add theirs).
    #[serde(default)]
    pub run_duration_s: f64,
    pub per_pair: Vec<PairSummary>,
}

impl RunSummary {
    /// Adds the wall time of the run's earlier invocations (from their summary.json).
    pub fn continue_from(&mut self, previous: Option<&RunSummary>) {
        if let Some(p) = previous {
            self.run_duration_s = p.run_duration_s.max(p.duration_s) + self.duration_s;
        }
    }
}

/// Aggregates the pairs of one invocation. With `expect_grades`, an ungraded pair is an infra error.
pub fn summarize(
    run: &str,
    results: &[PairResult],
    duration: Duration,
    expect_grades: bool,
) -> RunSummary {
    let mut s = RunSummary {
        run: run.to_string(),
        pairs: results.len(),
        graded: 0,
        overall_successes: 0,
        overall_success_rate: None,
        individual_successes: 0,
        individual_attempts: 0,
        merge_conflicts: 0,
        union_rescues: 0,
        agent_errors: 0,
        infra_errors: 0,
        redone_attempts: 0,
        llm_retries: 0,
        token_usage: TokenTotals::default(),
        cost_usd: Some(0.0),
        duration_s: duration.as_secs_f64(),
        run_duration_s: duration.as_secs_f64(),
        per_pair: Vec::new(),
    };
    for r in results {
        let pair = r
            .pair_dir
            .iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|c| c.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let ungraded = expect_grades && r.eval.is_none();
        if r.infra_error.is_some() || r.record.is_none() || ungraded {
            s.infra_errors += 1;
        }
        let mut statuses = Vec::new();
        let mut spends = Vec::new();
        if let Some(rec) = &r.record {
            for a in &rec.agents {
                statuses.push(a.status);
                spends.push(AgentSpend {
                    agent_id: a.agent_id.clone(),
                    token_usage: a.token_usage.clone(),
                    cost_usd: a.cost_usd,
                });
                if a.status == AgentStatus::Error {
                    s.agent_errors += 1;
                }
                s.llm_retries += u64::from(a.llm_retries);
                add_tokens(&mut s.token_usage, &a.token_usage);
                s.cost_usd = s.cost_usd.zip(a.cost_usd).map(|(x, y)| x + y);
            }
            // Attempts the infrastructure stopped were paid for too.
            for old in &rec.superseded {
                s.redone_attempts += 1;
                s.llm_retries += old.llm_retries;
                add_tokens(&mut s.token_usage, &old.token_usage);
                s.cost_usd = s.cost_usd.zip(old.cost_usd).map(|(x, y)| x + y);
            }
        }
        if let Some(ev) = &r.eval {
            s.graded += 1;
            s.overall_successes += usize::from(ev.overall_success);
            for a in ev.agents.values() {
                s.individual_attempts += 1;
                s.individual_successes += usize::from(a.success);
            }
            if let Some(m) = &ev.merged {
                s.merge_conflicts += usize::from(m.merge_conflict);
                s.union_rescues +=
                    usize::from(m.merge_strategy == MergeStrategy::Union && m.success);
            }
        }
        s.per_pair.push(PairSummary {
            pair,
            overall_success: r.eval.as_ref().map(|e| e.overall_success),
            merge_strategy: r.eval.as_ref().and_then(|e| e.merge_strategy),
            agent_statuses: statuses,
            agents: spends,
            infra_error: r.infra_error.clone(),
        });
    }
    if s.graded > 0 {
        s.overall_success_rate = Some(s.overall_successes as f64 / s.graded as f64);
    }
    s
}

impl RunSummary {
    /// The closing lines: pairs, overall successes, merge conflicts, duration.
    pub fn print(&self, progress: &Progress) {
        let rate = self
            .overall_success_rate
            .map(|r| format!(" ({:.1}%)", r * 100.0))
            .unwrap_or_default();
        let cost = self
            .cost_usd
            .map(|c| format!("${c:.4}"))
            .unwrap_or_else(|| "unknown".into());
        progress.line(&format!(
            "\nSummary: {run}\n  pairs: {pairs} · graded: {graded} · overall successes: {ok}{rate}\n  individual successes: {ind}/{att} · merge conflicts: {conf} (union rescued {resc})\n  agent errors: {aerr} · infrastructure errors: {ierr} · LLM requests retried: {retries}{redone}\n  tokens: {tok} · cost: {cost} · duration: {dur}{so_far}",
            retries = self.llm_retries,
            redone = if self.redone_attempts > 0 {
                format!(
                    " · redone after infrastructure errors: {} (their tokens and cost are counted)",
                    self.redone_attempts
                )
            } else {
                String::new()
            },
            so_far = if self.run_duration_s > self.duration_s + 0.05 {
                format!(
                    " (this invocation; the run so far: {})",
                    human_duration(Duration::from_secs_f64(self.run_duration_s))
                )
            } else {
                String::new()
            },
            run = self.run,
            pairs = self.pairs,
            graded = self.graded,
            ok = self.overall_successes,
            ind = self.individual_successes,
            att = self.individual_attempts,
            conf = self.merge_conflicts,
            resc = self.union_rescues,
            aerr = self.agent_errors,
            ierr = self.infra_errors,
            tok = self.token_usage.total_tokens,
            dur = human_duration(Duration::from_secs_f64(self.duration_s)),
        ));
    }
}
