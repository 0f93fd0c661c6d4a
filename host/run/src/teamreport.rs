//! The team setting over a run: CooperBench's per-pair team metrics (result.json `metrics`)
//! summed or summarised over the pairs, for `report`, `compare` and `view`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil::read_json;
use crate::record::PairRecord;

/// The team metrics of a run's team pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeamSummary {
    /// Pairs run in the team setting.
    pub pairs: usize,
    pub tasks_total: usize,
    pub tasks_done: usize,
    pub unowned_at_end: usize,
    /// Median over the pairs that claimed anything; None when no pair did.
    pub median_time_to_first_claim_s: Option<f64>,
    /// Pairs in which no task was ever claimed.
    pub pairs_without_claims: usize,
    /// Claims and updates by the lead and by the members, summed over pairs.
    pub claims_by_lead: usize,
    pub claims_by_members: usize,
    pub updates_by_lead: usize,
    pub updates_by_members: usize,
    pub requests: usize,
    pub responses: usize,
    /// The mechanisms that were on (from the first team pair; a run has one setting).
    pub features: Option<crate::messaging::team::TeamMechanisms>,
}

/// Sums the team metrics over the pairs of `run_dir`; None when no pair ran as a team.
pub fn summarize(run_dir: &Path) -> Option<TeamSummary> {
    let pairs = crate::layout::pair_dirs(run_dir).ok()?;
    let records: Vec<PairRecord> = pairs
        .iter()
        .filter_map(|pair| read_json::<PairRecord>(&pair.path.join("result.json")).ok())
        .collect();
    summarize_records(records.iter())
}

/// Sums the team metrics over `records`; None when none ran as a team.
pub fn summarize_records<'a>(records: impl Iterator<Item = &'a PairRecord>) -> Option<TeamSummary> {
    let mut summary = TeamSummary::default();
    let mut first_claims = Vec::new();
    for record in records {
        let Some(team) = &record.team else {
            continue;
        };
        let m = &team.metrics;
        summary.pairs += 1;
        summary.tasks_total += m.tasks_total;
        summary.tasks_done += m.tasks_done;
        summary.unowned_at_end += m.unowned_at_end;
        summary.requests += m.requests;
        summary.responses += m.responses;
        match m.time_to_first_claim_seconds {
            Some(t) => first_claims.push(t),
            None => summary.pairs_without_claims += 1,
        }
        let split = |counts: &BTreeMap<String, usize>| {
            let lead = counts.get(&team.lead_agent).copied().unwrap_or(0);
            (lead, counts.values().sum::<usize>() - lead)
        };
        let (lead, members) = split(&m.claims_per_agent);
        summary.claims_by_lead += lead;
        summary.claims_by_members += members;
        let (lead, members) = split(&m.updates_per_agent);
        summary.updates_by_lead += lead;
        summary.updates_by_members += members;
        summary.features.get_or_insert(team.team_features);
    }
    if summary.pairs == 0 {
        return None;
    }
    first_claims.sort_by(f64::total_cmp);
    summary.median_time_to_first_claim_s = median(&first_claims);
    Some(summary)
}

fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

impl TeamSummary {
    /// Which mechanisms were off, as the `--team-no-*` flags that turned them off.
    pub fn switched_off(&self) -> Vec<&'static str> {
        let Some(f) = &self.features else {
            return Vec::new();
        };
        [
            ("--team-no-task-list", f.task_list),
            ("--team-no-scratchpad", f.scratchpad),
            ("--team-no-mcp", f.wait_for_message),
            ("--team-no-auto-refresh", f.auto_refresh),
            ("--team-no-protocol", f.protocol),
        ]
        .into_iter()
        .filter(|(_, on)| !on)
        .map(|(flag, _)| flag)
        .collect()
    }

    /// The report's lines (indented by the caller).
    pub fn render(&self) -> String {
        let off = self.switched_off();
        let first_claim = match self.median_time_to_first_claim_s {
            Some(t) => format!("{t:.1}s"),
            None => "–".into(),
        };
        let task_list_on = self.features.is_none_or(|f| f.task_list);
        let tasks = if task_list_on {
            format!(
                "tasks done {}/{} · unowned at end {} · median time to first claim {first_claim} · pairs with no claim {}",
                self.tasks_done, self.tasks_total, self.unowned_at_end, self.pairs_without_claims
            )
        } else {
            "task list off".to_string()
        };
        format!(
            "team ({pairs} {noun}{off}):\n  {tasks}\n  claims: lead {cl} · members {cm} · updates: lead {ul} · members {um} · requests {req} (answered {resp})",
            pairs = self.pairs,
            noun = if self.pairs == 1 { "pair" } else { "pairs" },
            off = if off.is_empty() {
                String::new()
            } else {
                format!("; off: {}", off.join(" "))
            },
            cl = self.claims_by_lead,
            cm = self.claims_by_members,
            ul = self.updates_by_lead,
            um = self.updates_by_members,
            req = self.requests,
            resp = self.responses,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_and_an_odd_sample() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, 3.0, 9.0]), Some(3.0));
        assert_eq!(median(&[1.0, 3.0]), Some(2.0));
    }
}
