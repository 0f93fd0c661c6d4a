//! What the HTML report shows, read back from a run's files: one overview (header, totals, a
//! row per pair) and, per pair, its trajectories, conversation, patches, test logs and verdicts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::eval::EvalReport;
use crate::fsutil::read_json;
use crate::layout::PairDir;
use crate::runner::PairRecord;
use crate::summary::RunSummary;

/// Longest observation, patch or log kept in a pair page; the files keep everything.
const TEXT_CAP_BYTES: usize = 64 * 1024;

/// The overview page's data.
#[derive(Debug, Serialize)]
pub struct RunOverview {
    /// config.json as written (name, setting, model, plugin identity, backend, budgets…).
    pub config: Value,
    /// report.json's metrics (`cbench report`), with the baseline's deficit when given.
    pub report: crate::report::Report,
    /// summary.json (tokens, cost, durations), when present.
    pub summary: Option<RunSummary>,
    /// One row per pair, sorted by key.
    pub pairs: Vec<PairRow>,
}

/// One pair in the overview table.
#[derive(Debug, Serialize)]
pub struct PairRow {
    /// File-safe id of the pair page (`repo__task1__features_1_2`).
    pub id: String,
    /// `repo/task<id>/features_…`.
    pub key: String,
    pub repo: String,
    pub task: u64,
    pub features: Vec<u32>,
    /// `success`, `failed`, `infra` (not run or not graded) or `ungraded`.
    pub verdict: &'static str,
    pub agents: Vec<AgentRow>,
    /// `naive`, `union`, `lead`; None when nothing was merged.
    pub merge_strategy: Option<String>,
    /// `clean`, `union-rescued`, `lead-only`, `conflict`, `apply-failure`, `nothing to merge`
    /// (every patch empty), or None (solo, ungraded).
    pub merge_outcome: Option<&'static str>,
    pub steps: u32,
    pub tokens: u64,
    pub cost_usd: Option<f64>,
    pub wall_s: Option<f64>,
    pub messages: usize,
    pub infra_error: Option<String>,
    /// A pair page exists (the pair has a directory).
    pub has_page: bool,
    /// Coordination failure modes flagged (`cbench analyze`), by name.
    pub modes: Vec<&'static str>,
}

/// One agent of a row.
#[derive(Debug, Serialize)]
pub struct AgentRow {
    pub id: String,
    pub status: String,
    pub success: Option<bool>,
    pub steps: u32,
    pub tokens: u64,
    pub cost_usd: Option<f64>,
}

/// The pair page's id for a key: the key with `/` as `__`, and when other characters had to be
/// replaced too, a short hash of the key, so that two keys never share a page.
pub fn page_id(key: &str) -> String {
    let plain = key.replace('/', "__");
    let clean: String = plain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == plain {
        clean
    } else {
        let hash = crate::fsutil::sha256_hex(key.as_bytes());
        format!("{clean}-{}", &hash[..8])
    }
}

/// Reads the overview of the run in `run_dir`.
pub fn overview(
    run_dir: &Path,
    baseline: Option<&Path>,
    pair_dirs: &[PairDir],
) -> Result<RunOverview, crate::report::ReportError> {
    let config: Value = read_json(&run_dir.join("config.json"))?;
    let report = crate::report::build(run_dir, baseline)?;
    let summary = read_json::<RunSummary>(&run_dir.join("summary.json")).ok();
    let mut pairs: BTreeMap<String, PairRow> =
        pair_dirs.iter().map(|p| (p.key(), pair_row(p))).collect();
    // Pairs that failed before their directory existed are known from summary.json only.
    for p in summary.iter().flat_map(|s| s.per_pair.iter()) {
        if pairs.contains_key(&p.pair) {
            continue;
        }
        let parts: Vec<&str> = p.pair.split('/').collect();
        let (repo, task, features) = match parts[..] {
            [repo, task, features] => (
                repo.to_string(),
                task.trim_start_matches("task").parse().unwrap_or(0),
                features,
            ),
            _ => continue,
        };
        let feature_ids = features
            .trim_start_matches("features_")
            .split('_')
            .filter_map(|f| f.parse().ok())
            .collect();
        let key = format!("{repo}/{}/{features}", crate::layout::task_dir_name(task));
        pairs.insert(
            key.clone(),
            PairRow {
                id: page_id(&key),
                key,
                repo,
                task,
                features: feature_ids,
                verdict: "infra",
                agents: Vec::new(),
                merge_strategy: None,
                merge_outcome: None,
                steps: 0,
                tokens: 0,
                cost_usd: None,
                wall_s: None,
                messages: 0,
                infra_error: p.infra_error.clone(),
                has_page: false,
                modes: Vec::new(),
            },
        );
    }
    Ok(RunOverview {
        config,
        report,
        summary,
        pairs: pairs.into_values().collect(),
    })
}

fn pair_row(dir: &PairDir) -> PairRow {
    let key = dir.key();
    let record = read_json::<PairRecord>(&dir.path.join("result.json"));
    let eval = read_json::<EvalReport>(&dir.path.join("eval.json")).ok();
    let mut row = PairRow {
        id: page_id(&key),
        key,
        repo: dir.repo.clone(),
        task: dir.task,
        features: dir.feature_ids(),
        verdict: "ungraded",
        agents: Vec::new(),
        merge_strategy: None,
        merge_outcome: None,
        steps: 0,
        tokens: 0,
        cost_usd: Some(0.0),
        wall_s: None,
        messages: 0,
        infra_error: None,
        has_page: true,
        modes: analysis(&dir.path)
            .map(|a| a.modes.iter().map(|m| m.name()).collect())
            .unwrap_or_default(),
    };
    match &record {
        Ok(r) => {
            row.wall_s = Some(r.duration_s);
            row.messages = r.messages;
            for a in &r.agents {
                row.steps += a.steps;
                row.tokens += a.token_usage.total_tokens;
                row.cost_usd = match (row.cost_usd, a.cost_usd) {
                    (Some(total), Some(c)) => Some(total + c),
                    _ => None,
                };
                row.agents.push(AgentRow {
                    id: a.agent_id.clone(),
                    status: a.status.as_str().to_string(),
                    success: eval
                        .as_ref()
                        .and_then(|e| e.agents.get(&a.agent_id))
                        .map(|g| g.success),
                    steps: a.steps,
                    tokens: a.token_usage.total_tokens,
                    cost_usd: a.cost_usd,
                });
            }
            if let Some(why) = r.infra_failure() {
                row.verdict = "infra";
                row.infra_error = Some(why);
            }
        }
        Err(e) => {
            row.verdict = "infra";
            row.cost_usd = None;
            row.infra_error = Some(format!("the agents never finished: {e}"));
        }
    }
    if row.verdict != "infra" {
        if let Some(e) = &eval {
            row.verdict = if e.overall_success {
                "success"
            } else {
                "failed"
            };
            row.merge_strategy = e.merge_strategy.map(|s| s.as_str().to_string());
            // Every patch empty: nothing was merged, which is not a clean merge.
            let nothing = !row.agents.is_empty()
                && row.agents.iter().all(|a| {
                    std::fs::metadata(dir.path.join(&a.id).join("patch.diff"))
                        .map(|m| m.len() == 0)
                        .unwrap_or(true)
                });
            row.merge_outcome = e.merged.as_ref().map(|m| {
                if nothing {
                    "nothing to merge"
                } else if !m.apply_failed.is_empty() {
                    "apply-failure"
                } else if !m.merge_conflict {
                    "clean"
                } else if m.merge_strategy == crate::eval::merge::MergeStrategy::Lead {
                    "lead-only"
                } else if m.success {
                    "union-rescued"
                } else {
                    "conflict"
                }
            });
        }
    }
    row
}

/// The pair's coordination analysis: computed from its files (cheap), with the judge's
/// verdict kept from analysis.json while the files are unchanged. None when not graded.
fn analysis(dir: &Path) -> Option<cbench_analyze::PairAnalysis> {
    let mut pairs = vec![cbench_analyze::Analyzed {
        key: String::new(),
        dir: dir.to_path_buf(),
        analysis: cbench_analyze::analyze_pair(dir).ok()?,
    }];
    cbench_analyze::keep_verdicts(&mut pairs);
    pairs.pop().map(|p| p.analysis)
}

/// Text cut to the view's cap, on a character boundary, saying where the rest is.
fn capped(text: &str, whole_in: &str) -> String {
    if text.len() <= TEXT_CAP_BYTES {
        return text.to_string();
    }
    let mut end = TEXT_CAP_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n… [{} more bytes in {whole_in}]",
        &text[..end],
        text.len() - end
    )
}

fn read_text(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Everything a pair page shows, as JSON.
pub fn pair_detail(dir: &PairDir, row: &PairRow) -> Value {
    let mut agents = Vec::new();
    let mut agent_dirs: Vec<_> = std::fs::read_dir(&dir.path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().join("trajectory.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    agent_dirs.sort();
    for agent in agent_dirs {
        let traj_path = dir.path.join(&agent).join("trajectory.json");
        let where_ = format!("{agent}/trajectory.json");
        let trajectory: Value = read_json(&traj_path).unwrap_or(Value::Null);
        let steps: Vec<Value> = trajectory
            .get("steps")
            .and_then(Value::as_array)
            .map(|steps| {
                steps
                    .iter()
                    .map(|s| {
                        json!({
                            "action": s.get("action").cloned().unwrap_or(Value::Null),
                            "args": s.get("args").cloned().unwrap_or(Value::Null),
                            "observation": capped(
                                s.get("observation").and_then(Value::as_str).unwrap_or(""),
                                &where_,
                            ),
                            "timestamp": s.get("timestamp").cloned().unwrap_or(Value::Null),
                            "duration_ms": s.get("duration_ms").cloned().unwrap_or(Value::Null),
                            "after_call": s.get("after_call").cloned().unwrap_or(Value::Null),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The model's own words: each call's reply (its text and tool calls), error and cost.
        let calls: Vec<Value> = trajectory
            .get("llm_calls")
            .and_then(Value::as_array)
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| {
                        let response = c.get("response").cloned().unwrap_or(Value::Null);
                        let tool_calls: Vec<Value> = response
                            .get("tool_calls")
                            .and_then(Value::as_array)
                            .map(|t| {
                                t.iter()
                                    .map(|call| {
                                        json!({
                                            "name": call.get("name").cloned().unwrap_or(Value::Null),
                                            "arguments": capped(
                                                call.get("arguments").and_then(Value::as_str).unwrap_or(""),
                                                &where_,
                                            ),
                                        })
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        json!({
                            "index": c.get("index").cloned().unwrap_or(Value::Null),
                            "timestamp": c.get("timestamp").cloned().unwrap_or(Value::Null),
                            "duration_ms": c.get("duration_ms").cloned().unwrap_or(Value::Null),
                            "content": capped(
                                response.get("content").and_then(Value::as_str).unwrap_or(""),
                                &where_,
                            ),
                            "tool_calls": tool_calls,
                            "error": c.get("error").cloned().unwrap_or(Value::Null),
                            "finish_reason": response.get("finish_reason").cloned().unwrap_or(Value::Null),
                            "truncated": response.get("truncated").and_then(Value::as_bool).unwrap_or(false),
                            "usage": c.get("usage").cloned().unwrap_or(Value::Null),
                            "retries": c.get("retries").cloned().unwrap_or(Value::Null),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let patch = read_text(&dir.path.join(&agent).join("patch.diff")).unwrap_or_default();
        agents.push(json!({
            "id": agent,
            "status": trajectory.get("status").cloned().unwrap_or(Value::Null),
            "error": trajectory.get("error").cloned().unwrap_or(Value::Null),
            "summary": trajectory.get("summary").cloned().unwrap_or(Value::Null),
            "start_time": trajectory.get("start_time").cloned().unwrap_or(Value::Null),
            "end_time": trajectory.get("end_time").cloned().unwrap_or(Value::Null),
            "token_usage": trajectory.get("token_usage").cloned().unwrap_or(Value::Null),
            "cost_usd": trajectory.get("cost_usd").cloned().unwrap_or(Value::Null),
            "steps": steps,
            "calls": calls,
            "patch": capped(&patch, &format!("{agent}/patch.diff")),
        }));
    }
    let conversation: Value = read_json(&dir.path.join("conversation.json")).unwrap_or(json!([]));
    let mut logs = BTreeMap::new();
    // The failing tests each run names (its whole log read, not the capped copy).
    let mut failing = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir.path.join("eval_logs")) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(text) = read_text(&entry.path()) {
                failing.insert(name.clone(), crate::eval::parse::failing_tests(&text));
                logs.insert(name.clone(), capped(&text, &format!("eval_logs/{name}")));
            }
        }
    }
    json!({
        "row": row,
        "agents": agents,
        "conversation": conversation,
        "merged_diff": read_text(&dir.path.join("merged.diff")).map(|t| capped(&t, "merged.diff")),
        "eval": read_json::<Value>(&dir.path.join("eval.json")).ok(),
        "analysis": analysis(&dir.path),
        // The team setting: the final task list and the audit log of every change to it.
        "team": read_json::<Value>(&dir.path.join(crate::layout::TEAM_TASKS_FILE))
            .ok()
            .map(|tasks| json!({
                "tasks": tasks,
                "log": read_json::<Value>(&dir.path.join(crate::layout::TEAM_LOG_FILE))
                    .unwrap_or(json!([])),
                "result": read_json::<Value>(&dir.path.join("result.json"))
                    .ok()
                    .map(|r| json!({
                        "lead_agent": r.get("lead_agent").cloned().unwrap_or(Value::Null),
                        "team_features": r.get("team_features").cloned().unwrap_or(Value::Null),
                        "metrics": r.get("metrics").cloned().unwrap_or(Value::Null),
                    })),
            })),
        "logs": logs,
        "failing": failing,
        "path": dir.path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differing_only_in_punctuation_get_their_own_pages() {
        assert_eq!(
            page_id("cbench_textkit_task/task1/features_1_2"),
            "cbench_textkit_task__task1__features_1_2"
        );
        let dotted = page_id("repo.x_task/task1/features_1_2");
        let plain = page_id("repo_x_task/task1/features_1_2");
        assert_ne!(dotted, plain);
        assert!(
            dotted.starts_with("repo_x_task__task1__features_1_2-"),
            "{dotted}"
        );
    }

    #[test]
    fn page_ids_are_file_names() {
        assert_eq!(
            page_id("llama_index_task/task8394/features_1_2"),
            "llama_index_task__task8394__features_1_2"
        );
        let odd = page_id("a b/../c");
        assert!(
            odd.starts_with("a_b______c-") && odd.len() == "a_b______c-".len() + 8,
            "{odd}"
        );
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let text = "é".repeat(TEXT_CAP_BYTES);
        let cut = capped(&text, "x.json");
        assert!(cut.ends_with("more bytes in x.json]"));
        assert!(cut.len() < text.len());
    }
}
