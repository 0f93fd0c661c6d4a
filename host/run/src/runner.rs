//! `cbench run`: prepare (`prepare`), run every selected pair with bounded concurrency, several
//! runs interleaved on one terminal, then the summary and report. Pairs already complete on
//! disk are resumed.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::fsutil::{read_json, write_json_atomic};
use crate::progress::Progress;
use crate::summary::{summarize, RunSummary};

pub use crate::config::{LlmConfig, RunConfig};
pub use crate::error::RunError;
pub use crate::evalrun::{eval_run, EvalConfig};
use crate::prepare::{prepare, Prepared, SharedSlots};
pub use crate::record::{AgentRecord, PairRecord, PairResult};
pub use crate::runrecord::RunRecord;
pub use crate::steps::hidden_paths;
use crate::steps::{collect, write_report};
pub use crate::teamreport::{summarize_records as summarize_team, TeamSummary};

/// Runs the benchmark described by `cfg`.
pub async fn run(cfg: RunConfig) -> Result<RunSummary, RunError> {
    let prepared = prepare(cfg, None).await?;
    let mut set = tokio::task::JoinSet::new();
    for (i, pair) in prepared.pairs.iter().cloned().enumerate() {
        let ctx = prepared.ctx.clone();
        set.spawn(async move { (i, crate::pairrun::run_pair(&ctx, pair).await) });
    }
    let results = collect(set).await;
    finish(prepared, results).await
}

/// Runs several plugins on the same selection as runs of their own, with their pairs
/// interleaved (pair 1 of every run, then pair 2, …) under one concurrency limit, so a slow
/// hour of the provider or the machine hits every plugin alike. Returns each run's summary.
pub async fn run_many(cfgs: Vec<RunConfig>) -> Result<Vec<RunSummary>, RunError> {
    let Some(first) = cfgs.first() else {
        return Ok(Vec::new());
    };
    let shared = SharedSlots {
        progress: Progress::with_status(first.quiet, 0, "pairs"),
        agent_slots: Arc::new(Semaphore::new(first.concurrency.max(1))),
        eval_slots: Arc::new(Semaphore::new(first.eval_concurrency.max(1))),
    };
    let mut prepared = Vec::new();
    for cfg in cfgs {
        prepared.push(prepare(cfg, Some(&shared)).await?);
    }
    shared
        .progress
        .set_total(prepared.iter().map(|p| p.pairs.len()).sum());
    let mut set = tokio::task::JoinSet::new();
    let longest = prepared.iter().map(|p| p.pairs.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (r, run) in prepared.iter().enumerate() {
            if let Some(pair) = run.pairs.get(i).cloned() {
                let ctx = run.ctx.clone();
                set.spawn(async move { (r, i, crate::pairrun::run_pair(&ctx, pair).await) });
            }
        }
    }
    let mut per_run: Vec<Vec<(usize, PairResult)>> = prepared.iter().map(|_| Vec::new()).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((r, i, result)) => per_run[r].push((i, result)),
            Err(e) => tracing::error!("a pair task failed: {e}"),
        }
    }
    shared.progress.finish();
    let mut summaries = Vec::new();
    for (run, results) in prepared.into_iter().zip(per_run) {
        summaries.push(finish(run, results).await?);
    }
    Ok(summaries)
}

/// After the last pair: cleanup, summary.json, the summary and report on the terminal.
async fn finish(
    prepared: Prepared,
    mut results: Vec<(usize, PairResult)>,
) -> Result<RunSummary, RunError> {
    let Prepared { ctx, started, .. } = prepared;
    let run_dir = ctx.run_dir.clone();
    // Every pair has ended (or failed): nothing of this run may stay behind.
    if let Some(pool) = ctx.backend.pool_stats().filter(|p| p.started > 0) {
        tracing::info!(
            "container pool: {} agent(s) got a pre-started container, {} waited for one; {} started ahead",
            pool.taken,
            pool.missed,
            pool.started
        );
    }
    ctx.closed_sandboxes().await;
    ctx.grader.closed().await;
    if let Err(e) = ctx.backend.cleanup().await {
        ctx.progress.line(&format!("  ✗ cleanup: {e}"));
    }
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<PairResult> = results.into_iter().map(|(_, r)| r).collect();
    let mut summary = summarize(
        &ctx.cfg.name,
        &results,
        started.elapsed(),
        ctx.cfg.auto_eval,
    );
    // A shard's summary covers its pairs only; `cbench report` reads the merged run.
    let summary_file = match (&ctx.cfg.pair_task, ctx.cfg.shard) {
        // An array task's pair is summarised with the others when the array ends.
        (Some(task), _) => format!("slurm/summary-task-{}.json", task.index),
        (None, Some(s)) => format!("summary-shard-{}-of-{}.json", s.index, s.count),
        (None, None) => "summary.json".to_string(),
    };
    summary.continue_from(
        read_json::<RunSummary>(&run_dir.join(&summary_file))
            .ok()
            .as_ref(),
    );
    if let Some(parent) = run_dir.join(&summary_file).parent() {
        std::fs::create_dir_all(parent).map_err(crate::error::run_dir_io(parent))?;
    }
    write_json_atomic(&run_dir.join(summary_file), &summary)?;
    ctx.events.emit(crate::events::Event::RunFinished {
        run: ctx.cfg.name.clone(),
        shard: ctx.cfg.shard.map(|s| s.to_string()),
        at: crate::clock::now_rfc3339(),
    });
    ctx.progress.finish();
    summary.print(&ctx.progress);
    write_report(&run_dir, &ctx.progress)?;
    Ok(summary)
}
