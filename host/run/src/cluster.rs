//! What every scheduler engine shares (`--engine slurm`, `--engine kubernetes`): the run's
//! pairs resolved once into `<run>/manifest.json`, which pairs are still to do, following the
//! pair directories while the scheduler runs them, and the run's summary and report written
//! from every pair on disk — the same ones a single machine writes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::{run_dir_io, RunError};
use crate::fsutil::{read_json, sha256_hex, write_json_atomic};
use crate::progress::{Outcome, Progress};
use crate::record::{PairRecord, PairResult};
use crate::summary::{summarize, RunSummary};

/// The variable every task gets: the sha256 of the manifest it was submitted with.
pub const MANIFEST_HASH_VAR: &str = "CBENCH_MANIFEST_SHA256";

/// `manifest.json`: the run's pairs in array order, and the command every task runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub run: String,
    /// The scheduler the run was submitted to (`slurm`, `kubernetes`).
    #[serde(default = "slurm_engine")]
    pub engine: String,
    /// The `cbench` arguments of the run (from `run` on), which each task parses again.
    pub argv: Vec<String>,
    /// The directory relative paths in `argv` are relative to (tasks start there).
    pub cwd: String,
    /// Pair keys; a task's index is its position.
    pub pairs: Vec<String>,
    /// sha256 of the agent plugin, checked by every task before it runs.
    pub plugin_sha256: String,
    pub created_at: String,
}

/// Manifests written before the field existed were Slurm's.
fn slurm_engine() -> String {
    "slurm".into()
}

/// The scheduler's view of one submission while it is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueState {
    pub pending: usize,
    pub running: usize,
    /// Why a task can never start (the scheduler's own words), when one cannot.
    pub never_starts: Option<String>,
}

/// The run's pairs (keys) and the manifest describing them, ready to submit.
pub struct Prepared {
    pub run_dir: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    /// Indices of the pairs still to do.
    pub todo: Vec<usize>,
    /// Whether this submission created the run directory (removed again if submitting fails).
    pub fresh: bool,
}

impl Prepared {
    /// sha256 of the manifest as written.
    pub fn manifest_sha256(&self) -> Result<String, RunError> {
        let bytes = std::fs::read(&self.manifest_path).map_err(run_dir_io(&self.manifest_path))?;
        Ok(sha256_hex(&bytes))
    }

    /// Removes the run again when this submission created it (the scheduler refused it).
    pub fn discard_if_fresh(&self) {
        if self.fresh {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

/// The directory of pair `key`.
pub fn pair_dir(run_dir: &Path, key: &str) -> PathBuf {
    run_dir.join(key)
}

/// Whether the pair still has work: never ran, stopped by the infrastructure, or (with
/// grading on) not graded.
pub fn still_to_do(pair_dir: &Path, auto_eval: bool) -> bool {
    match read_json::<PairRecord>(&pair_dir.join("result.json")) {
        Err(_) => true,
        Ok(record) if record.infra_failure().is_some() => true,
        Ok(_) => auto_eval && !pair_dir.join("eval.json").is_file(),
    }
}

/// Resolves the run's pairs, writes (or checks) its manifest and lists the pairs to submit.
/// `engine_dir` (e.g. `<run>/slurm`) is created for the engine's own files.
pub fn prepare(
    cfg: &RunConfig,
    engine: &str,
    argv: Vec<String>,
    engine_dir: &str,
) -> Result<Prepared, RunError> {
    let pairs = crate::prepare::run_pairs(cfg)?;
    let run_dir = cfg.log_dir.join(&cfg.name);
    if cfg.force && run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).map_err(run_dir_io(&run_dir))?;
    }
    let fresh = !run_dir.exists();
    let own = run_dir.join(engine_dir);
    std::fs::create_dir_all(&own).map_err(run_dir_io(&own))?;
    let plugin_bytes = std::fs::read(&cfg.agent).map_err(run_dir_io(&cfg.agent))?;
    let cwd = std::env::current_dir().map_err(run_dir_io(Path::new(".")))?;
    let keys: Vec<String> = pairs.iter().map(crate::shard::pair_key).collect();
    // Tasks never start over: a rerun of the name resubmits what is missing.
    let argv: Vec<String> = argv.into_iter().filter(|a| a != "--force").collect();
    let manifest = Manifest {
        run: cfg.name.clone(),
        engine: engine.to_string(),
        argv,
        cwd: cwd.display().to_string(),
        pairs: keys.clone(),
        plugin_sha256: sha256_hex(&plugin_bytes),
        created_at: crate::clock::now_rfc3339(),
    };
    let manifest_path = run_dir.join("manifest.json");
    if let Ok(earlier) = read_json::<Manifest>(&manifest_path) {
        if earlier.pairs != manifest.pairs
            || earlier.plugin_sha256 != manifest.plugin_sha256
            || earlier.engine != manifest.engine
        {
            if fresh {
                let _ = std::fs::remove_dir_all(&run_dir);
            }
            return Err(RunError::Cluster(format!(
                "run `{}` was submitted for other pairs, another plugin or another engine ({}, engine {}); use another name or --force",
                manifest.run,
                manifest_path.display(),
                earlier.engine
            )));
        }
    }
    write_json_atomic(&manifest_path, &manifest)?;
    let todo: Vec<usize> = (0..keys.len())
        .filter(|i| still_to_do(&pair_dir(&run_dir, &keys[*i]), cfg.auto_eval))
        .collect();
    Ok(Prepared {
        manifest_path: std::path::absolute(&manifest_path).unwrap_or(manifest_path),
        run_dir,
        manifest,
        todo,
        fresh,
    })
}

/// How a graded pair ended, for the progress line.
pub fn outcome(pair_dir: &Path) -> Outcome {
    match read_json::<crate::eval::EvalReport>(&pair_dir.join("eval.json")) {
        Ok(e) if e.overall_success => Outcome::Success,
        Ok(_) => Outcome::Failure,
        Err(_) => Outcome::InfraError,
    }
}

/// Follows a submission until the scheduler no longer lists it, a line per pair as it
/// finishes. `queue` asks the scheduler (None once the submission has left the queue); a task
/// that can never start ends the follow with that reason.
pub async fn follow<F, Fut>(
    label: &str,
    run_dir: &Path,
    keys: &[String],
    todo: &[usize],
    progress: &Progress,
    poll: Duration,
    mut queue: F,
) -> Result<(), FollowEnd>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<QueueState>, RunError>>,
{
    let mut reported = vec![false; keys.len()];
    let mut last = None;
    for (i, key) in keys.iter().enumerate() {
        if !todo.contains(&i) {
            reported[i] = true;
            progress.finished(outcome(&pair_dir(run_dir, key)));
        }
    }
    loop {
        let state = queue().await.map_err(FollowEnd::Error)?;
        if let Some(reason) = state.as_ref().and_then(|s| s.never_starts.clone()) {
            return Err(FollowEnd::NeverStarts(reason));
        }
        for &i in todo {
            let dir = pair_dir(run_dir, &keys[i]);
            let finished = dir.join("eval.json").is_file()
                || (state.is_none() && dir.join("result.json").is_file());
            if !reported[i] && finished {
                reported[i] = true;
                let outcome = outcome(&dir);
                let mark = if outcome == Outcome::Success {
                    "✓"
                } else {
                    "✗"
                };
                progress.line(&format!("{mark} {}", keys[i]));
                progress.finished(outcome);
            }
        }
        match &state {
            None => return Ok(()),
            Some(s) if last.as_ref() != Some(&(s.pending, s.running)) => {
                progress.line(&format!(
                    "{label}: {} running, {} pending",
                    s.running, s.pending
                ));
                last = Some((s.pending, s.running));
            }
            Some(_) => {}
        }
        tokio::time::sleep(poll).await;
    }
}

/// Why following a submission stopped early.
#[derive(Debug)]
pub enum FollowEnd {
    /// A task can never start; the scheduler's reason.
    NeverStarts(String),
    /// The scheduler could not be asked.
    Error(RunError),
}

/// Writes the run's summary and report from every pair on disk, as one run. A pair without a
/// result is an infrastructure error with `why_missing(index)`'s words.
pub fn finish(
    cfg: &RunConfig,
    prepared: &Prepared,
    started: Instant,
    progress: &Progress,
    mut why_missing: impl FnMut(usize) -> Option<String>,
) -> Result<RunSummary, RunError> {
    let run_dir = &prepared.run_dir;
    let mut results = Vec::new();
    for (i, key) in prepared.manifest.pairs.iter().enumerate() {
        let dir = pair_dir(run_dir, key);
        let record = read_json::<PairRecord>(&dir.join("result.json")).ok();
        let eval = read_json(&dir.join("eval.json")).ok();
        let mut infra_error = record.as_ref().and_then(PairRecord::infra_failure);
        if record.is_none() {
            let why = why_missing(i).unwrap_or_else(|| "it never ran".into());
            infra_error = Some(format!("{key}: task {i} ended without a result: {why}"));
        }
        results.push(PairResult {
            pair_dir: dir,
            record,
            eval,
            infra_error,
        });
    }
    for r in results.iter().filter_map(|r| r.infra_error.as_ref()) {
        progress.line(&format!("✗ {r}"));
    }
    let mut summary = summarize(&cfg.name, &results, started.elapsed(), cfg.auto_eval);
    summary.continue_from(
        read_json::<RunSummary>(&run_dir.join("summary.json"))
            .ok()
            .as_ref(),
    );
    write_json_atomic(&run_dir.join("summary.json"), &summary)?;
    progress.finish();
    summary.print(progress);
    crate::steps::write_report(run_dir, progress)?;
    Ok(summary)
}

/// `run {name}: 3/4 pairs graded`, and how many are missing.
pub fn graded(run_dir: &Path, manifest: &Manifest) -> (String, usize) {
    let done = manifest
        .pairs
        .iter()
        .filter(|k| pair_dir(run_dir, k).join("eval.json").is_file())
        .count();
    (
        format!(
            "run {}: {done}/{} pairs graded\n",
            manifest.run,
            manifest.pairs.len()
        ),
        manifest.pairs.len() - done,
    )
}

/// `cancel -n RUN --log-dir DIR`: the arguments that cancel this run's scheduled work.
pub fn cancel_args(cfg: &RunConfig) -> Vec<String> {
    vec![
        "cancel".into(),
        "-n".into(),
        cfg.name.clone(),
        "--log-dir".into(),
        cfg.log_dir.display().to_string(),
    ]
}

/// The manifest of a run submitted to a scheduler.
pub fn read_manifest(log_dir: &Path, name: &str) -> Result<Manifest, RunError> {
    let run_dir = log_dir.join(name);
    read_json(&run_dir.join("manifest.json")).map_err(|_| {
        RunError::Cluster(format!(
            "run `{name}` was not submitted to a scheduler (--engine slurm|kubernetes): {} has no manifest.json",
            run_dir.display()
        ))
    })
}

/// The manifest a task reads, and the task's pair. `index` is the pair's position, or, with
/// `subset`, the position in that list of pair positions (a resubmission of some pairs).
pub fn task_of(
    manifest_path: &Path,
    index: usize,
    subset: Option<&[usize]>,
) -> Result<(Manifest, crate::config::PairTask), RunError> {
    let manifest: Manifest = read_json(manifest_path)?;
    let position = match subset {
        Some(list) => *list.get(index).ok_or_else(|| {
            RunError::Cluster(format!(
                "task index {index} is outside the {} pairs submitted",
                list.len()
            ))
        })?,
        None => index,
    };
    let key = manifest.pairs.get(position).cloned().ok_or_else(|| {
        RunError::Cluster(format!(
            "{}: no pair at index {position} ({} pairs)",
            manifest_path.display(),
            manifest.pairs.len()
        ))
    })?;
    let task = crate::config::PairTask {
        index: position,
        count: manifest.pairs.len(),
        key,
    };
    Ok((manifest, task))
}

/// `0-3,5,7`: indices as sbatch takes them (and `run-pair --pairs`).
pub fn index_ranges(indices: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Reads `0-3,5,7` back into indices.
pub fn parse_ranges(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("`{part}` is not an index or a range like 3-7");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if b < a || b - a > 1_000_000 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_written_as_ranges_and_read_back() {
        let list = [0, 1, 2, 3, 5, 7, 8];
        assert_eq!(index_ranges(&list), "0-3,5,7-8");
        assert_eq!(parse_ranges("0-3,5,7-8").unwrap(), list);
        assert_eq!(index_ranges(&[4]), "4");
        assert_eq!(index_ranges(&[]), "");
        assert!(parse_ranges("3-1").is_err());
        assert!(parse_ranges("x").is_err());
    }
}
