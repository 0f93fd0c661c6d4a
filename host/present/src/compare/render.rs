//! The comparison as a terminal table.

use super::{Comparison, Paired, RateCi, RunSide};

fn pct(r: Option<f64>) -> String {
    r.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "–".into())
}

fn rate(r: &RateCi) -> String {
    format!("{}/{} {}", r.count, r.of, pct(r.rate))
}

fn rate_ci(r: &RateCi) -> String {
    match r.ci95 {
        Some((lo, hi)) => format!("{} [{:.1}, {:.1}]", rate(r), lo * 100.0, hi * 100.0),
        None => rate(r),
    }
}

fn money(v: Option<f64>) -> String {
    v.map(|c| format!("${c:.4}"))
        .unwrap_or_else(|| "unknown".into())
}

fn short_sha(sha: &str) -> String {
    sha.chars().take(12).collect::<String>() + "…"
}

fn plugin_of(run: &RunSide) -> String {
    if !run.team.is_empty() {
        return run
            .team
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect::<Vec<_>>()
            .join(" + ");
    }
    run.plugin
        .as_ref()
        .map(|p| format!("{} {} (WIT {})", p.name, p.version, p.wit_version))
        .unwrap_or_else(|| "(not recorded)".into())
}

fn signed_pts(v: f64) -> String {
    format!("{:+.1} pts", v * 100.0)
}

fn paired_line(p: &Paired) -> String {
    // With no discordant pair every resample is the same: an interval of width 0 is not
    // certainty, so it is not printed as one.
    let ci = match p.ci95 {
        _ if p.only_a + p.only_b == 0 => "– (no pair where they differ)".to_string(),
        Some((lo, hi)) => format!("[{}, {}]", signed_pts(lo), signed_pts(hi)),
        None => "–".into(),
    };
    format!(
        "both {} · only A {} · only B {} · neither {} · A − B {} 95% CI {ci} · McNemar exact p = {:.4}",
        p.both,
        p.only_a,
        p.only_b,
        p.neither,
        signed_pts(p.difference),
        p.mcnemar_p
    )
}

/// How one row of the per-run table shows a run.
type Cell = Box<dyn Fn(&RunSide) -> String>;

impl Comparison {
    /// The terminal table.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Comparison: {} · {} pairs graded in every run (intervals: Wilson 95% per run; paired bootstrap 95%, {} resamples, seed {})\n",
            self.runs
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(" vs "),
            self.compared_pairs,
            self.bootstrap_resamples,
            self.bootstrap_seed
        );
        for m in &self.mismatches {
            out.push_str(&format!("  ! mismatch (--allow-mismatch): {m}\n"));
        }
        if self.differing_options.is_empty() {
            out.push_str("  options: the same in every run\n");
        } else {
            out.push_str("  options that differ:\n");
            for o in &self.differing_options {
                out.push_str(&format!("    {o}\n"));
            }
        }
        let width = self
            .runs
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(30);
        let rows: Vec<(&str, Cell)> = vec![
            ("plugin", Box::new(plugin_of)),
            (
                "plugin sha256",
                Box::new(|r: &RunSide| {
                    if r.team.is_empty() {
                        r.plugin
                            .as_ref()
                            .map(|p| short_sha(&p.sha256))
                            .unwrap_or_default()
                    } else {
                        r.team
                            .iter()
                            .map(|p| short_sha(&p.sha256))
                            .collect::<Vec<_>>()
                            .join(" + ")
                    }
                }),
            ),
            ("model", Box::new(|r: &RunSide| r.model.clone())),
            (
                "overall success",
                Box::new(|r: &RunSide| rate_ci(&r.overall)),
            ),
            (
                "individual success",
                Box::new(|r: &RunSide| rate_ci(&r.individual)),
            ),
            (
                "naive-merge conflicts",
                Box::new(|r: &RunSide| rate(&r.naive_merge_conflicts)),
            ),
            (
                "union rescues",
                Box::new(|r: &RunSide| rate(&r.union_rescues)),
            ),
            (
                "coordination failures",
                Box::new(|r: &RunSide| rate(&r.coordination_failures)),
            ),
            ("tokens", Box::new(|r: &RunSide| r.tokens.to_string())),
            ("cost", Box::new(|r: &RunSide| money(r.cost_usd))),
            (
                "cost per success",
                Box::new(|r: &RunSide| money(r.cost_per_success_usd)),
            ),
            (
                "steps (model calls)",
                Box::new(|r: &RunSide| r.steps.to_string()),
            ),
            (
                "agent wall time",
                Box::new(|r: &RunSide| {
                    crate::progress::human_duration(std::time::Duration::from_secs_f64(
                        r.wall_s.max(0.0),
                    ))
                }),
            ),
            (
                "left out",
                Box::new(|r: &RunSide| {
                    let l = &r.left_out;
                    let parts: Vec<String> = [
                        (l.not_run, "not run"),
                        (l.infrastructure_error, "infra error"),
                        (l.not_graded, "not graded"),
                        (l.missing_elsewhere, "not in others"),
                    ]
                    .iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, what)| format!("{n} {what}"))
                    .collect();
                    if parts.is_empty() {
                        "none".into()
                    } else {
                        parts.join(", ")
                    }
                }),
            ),
        ];
        out.push_str(&format!("  {:<28}", ""));
        for r in &self.runs {
            out.push_str(&format!(" {:<width$}", r.name));
        }
        out.push('\n');
        for (label, value) in &rows {
            out.push_str(&format!("  {label:<28}"));
            for r in &self.runs {
                out.push_str(&format!(" {:<width$}", value(r)));
            }
            out.push('\n');
        }
        if self.runs.iter().any(|r| !r.failure_modes.is_empty()) {
            out.push_str("  failure modes flagged (cbench analyze):\n");
            for mode in cbench_analyze::FailureMode::ALL {
                out.push_str(&format!("    {:<26}", mode.name()));
                for r in &self.runs {
                    let shown = r
                        .failure_modes
                        .get(&mode)
                        .map(rate)
                        .unwrap_or_else(|| "–".into());
                    out.push_str(&format!(" {shown:<width$}"));
                }
                out.push('\n');
            }
        }
        if self.runs.iter().any(|r| r.team_metrics.is_some()) {
            out.push_str(
                "  team setting (CooperBench's team metrics, summed over the compared pairs):\n",
            );
            let team_rows: Vec<(&str, Cell)> = vec![
                (
                    "mechanisms off",
                    Box::new(|r: &RunSide| {
                        r.team_metrics.as_ref().map_or("–".into(), |t| {
                            let off = t.switched_off();
                            if off.is_empty() {
                                "none".into()
                            } else {
                                off.join(" ")
                            }
                        })
                    }),
                ),
                (
                    "tasks done",
                    Box::new(|r: &RunSide| {
                        r.team_metrics.as_ref().map_or("–".into(), |t| {
                            format!("{}/{}", t.tasks_done, t.tasks_total)
                        })
                    }),
                ),
                (
                    "claims lead/members",
                    Box::new(|r: &RunSide| {
                        r.team_metrics.as_ref().map_or("–".into(), |t| {
                            format!("{}/{}", t.claims_by_lead, t.claims_by_members)
                        })
                    }),
                ),
                (
                    "requests (answered)",
                    Box::new(|r: &RunSide| {
                        r.team_metrics.as_ref().map_or("–".into(), |t| {
                            format!("{} ({})", t.requests, t.responses)
                        })
                    }),
                ),
                (
                    "median first claim",
                    Box::new(|r: &RunSide| {
                        r.team_metrics
                            .as_ref()
                            .and_then(|t| t.median_time_to_first_claim_s)
                            .map_or("–".into(), |s| format!("{s:.1}s"))
                    }),
                ),
            ];
            for (label, value) in &team_rows {
                out.push_str(&format!("    {label:<26}"));
                for r in &self.runs {
                    out.push_str(&format!(" {:<width$}", value(r)));
                }
                out.push('\n');
            }
        }
        for r in self.runs.iter().filter(|r| !r.team.is_empty()) {
            let roles: Vec<String> = r
                .roles
                .iter()
                .map(|role| {
                    format!(
                        "{} = {} alone {}",
                        role.agent_id,
                        role.plugin,
                        rate_ci(&role.individual)
                    )
                })
                .collect();
            out.push_str(&format!("  roles of {}: {}\n", r.name, roles.join(" · ")));
        }
        for p in &self.pairwise {
            out.push_str(&format!(
                "\nA = {} vs B = {}\n  {}\n  {}\n",
                p.a,
                p.b,
                p.verdict,
                paired_line(&p.overall)
            ));
            if p.per_repo.len() > 1 {
                for (repo, paired) in &p.per_repo {
                    out.push_str(&format!("  {repo}: {}\n", paired_line(paired)));
                }
            }
            for (mode, paired) in p
                .failure_modes
                .iter()
                .filter(|(_, m)| m.only_a + m.only_b > 0)
            {
                out.push_str(&format!(
                    "  {}: only A {} · only B {} · both {} · McNemar exact p = {:.4}\n",
                    mode.name(),
                    paired.only_a,
                    paired.only_b,
                    paired.both,
                    paired.mcnemar_p
                ));
            }
            if p.disagreements.is_empty() {
                out.push_str("  no pair where they disagree\n");
            } else {
                out.push_str(&format!(
                    "  they disagree on {} pair(s):\n",
                    p.disagreements.len()
                ));
                for d in &p.disagreements {
                    out.push_str(&format!(
                        "    {} A {} B {}\n",
                        d.key,
                        if d.a_success { "✓" } else { "✗" },
                        if d.b_success { "✓" } else { "✗" }
                    ));
                }
            }
        }
        out
    }
}
