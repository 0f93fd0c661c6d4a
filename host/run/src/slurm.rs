//! `cbench run --engine slurm`: one Slurm array task per pair. The run's pairs are resolved
//! once into `<run>/manifest.json`; `sbatch --array=…%P` starts `cbench run-pair --manifest M
//! --index $SLURM_ARRAY_TASK_ID` for each pair still to do, which runs and grades that pair into
//! the shared log directory with the in-process code; the submitter follows the array
//! (`squeue`), names the tasks Slurm killed (`scontrol`), and writes the run's summary and report
//! from every pair on disk. Slurm is driven through its command-line tools, found on `PATH`
//! (the site's `SLURM_CONF` applies).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
pub use crate::error::SlurmError;
use crate::error::{run_dir_io, RunError};
use crate::fsutil::{read_json, sha256_hex, write_atomic, write_json_atomic};
use crate::progress::{Outcome, Progress};
use crate::record::{PairRecord, PairResult};
use crate::summary::{summarize, RunSummary};

/// The variable sbatch gives every task: the sha256 of the manifest it was submitted with.
pub const MANIFEST_HASH_VAR: &str = "CBENCH_MANIFEST_SHA256";

/// Pending reasons Slurm will never clear by itself: the job asks for what the site cannot give.
const NEVER_STARTS: [&str; 8] = [
    "PartitionConfig",
    "PartitionTimeLimit",
    "PartitionNodeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "QOSMaxCpuPerJobLimit",
    "AssocMaxCpuPerJobLimit",
];

/// How the array is submitted.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    /// `--cpus-per-task`.
    pub cpus: Option<u32>,
    /// `--mem` (e.g. `8G`).
    pub mem: Option<String>,
    /// `--time` (e.g. `02:00:00`).
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Passed to `sbatch` as they are.
    pub extra: Vec<String>,
    /// Return once submitted.
    pub detach: bool,
    /// How often the submitter looks at the array.
    pub poll: Duration,
}

/// `manifest.json`: the run's pairs in array order, and the command every task runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub run: String,
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

/// A submitted array, as `cbench status` and `cbench cancel` find it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmittedJob {
    pub job_id: String,
    pub indices: Vec<usize>,
    pub submitted_at: String,
}

fn slurm_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("slurm")
}

/// Runs a Slurm tool; its stdout, or what it said on failure.
fn tool(program: &str, args: &[String]) -> Result<String, SlurmError> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| SlurmError::Missing {
            tool: program.to_string(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SlurmError::Failed {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A path inside single quotes for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `0-3,5,7`: array indices as sbatch takes them.
fn index_ranges(indices: &[usize]) -> String {
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

/// Whether the pair still has work: never ran, stopped by the infrastructure, or (with
/// grading on) not graded.
fn still_to_do(pair_dir: &Path, auto_eval: bool) -> bool {
    match read_json::<PairRecord>(&pair_dir.join("result.json")) {
        Err(_) => true,
        Ok(record) if record.infra_failure().is_some() => true,
        Ok(_) => auto_eval && !pair_dir.join("eval.json").is_file(),
    }
}

fn pair_dir(run_dir: &Path, key: &str) -> PathBuf {
    run_dir.join(key)
}

/// The jobs submitted for this run so far.
pub fn jobs(run_dir: &Path) -> Vec<SubmittedJob> {
    read_json(&slurm_dir(run_dir).join("jobs.json")).unwrap_or_default()
}

/// Writes the manifest, or checks that an earlier one (a resumed run) lists the same pairs.
fn write_manifest(run_dir: &Path, manifest: &Manifest) -> Result<PathBuf, RunError> {
    let path = run_dir.join("manifest.json");
    if let Ok(earlier) = read_json::<Manifest>(&path) {
        if earlier.pairs != manifest.pairs || earlier.plugin_sha256 != manifest.plugin_sha256 {
            return Err(RunError::Slurm(SlurmError::Other(format!(
                "run `{}` was submitted for other pairs or another plugin ({}); use another name or --force",
                manifest.run,
                path.display()
            ))));
        }
    }
    write_json_atomic(&path, manifest)?;
    Ok(path)
}

/// Submits the run's pairs still to do as one array and, unless detached, follows it to the
/// end; returns the run's summary (None when detached).
pub async fn submit(
    cfg: RunConfig,
    argv: Vec<String>,
    opts: SlurmOptions,
) -> Result<Option<RunSummary>, RunError> {
    let started = Instant::now();
    // Before anything is written: the scheduler answers.
    tool("sinfo", &["-h".into(), "-o".into(), "%P".into()]).map_err(RunError::Slurm)?;
    let pairs = crate::prepare::run_pairs(&cfg)?;
    let run_dir = cfg.log_dir.join(&cfg.name);
    // One array of a run at a time: a rerun while one is queued would run its pairs twice.
    for job in jobs(&run_dir) {
        if queued(&job.job_id).map_err(RunError::Slurm)?.is_some() {
            return Err(RunError::Slurm(SlurmError::Other(format!(
                "run `{name}` has Slurm job {} still queued: `cbench status -n {name}` shows it, `cbench cancel -n {name}` cancels it",
                job.job_id,
                name = cfg.name
            ))));
        }
    }
    if cfg.force && run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).map_err(run_dir_io(&run_dir))?;
    }
    // A run this submission creates is removed again if sbatch refuses it.
    let fresh = !run_dir.exists();
    let slurm = slurm_dir(&run_dir);
    std::fs::create_dir_all(&slurm).map_err(run_dir_io(&slurm))?;
    let plugin_bytes = std::fs::read(&cfg.agent).map_err(run_dir_io(&cfg.agent))?;
    let cwd = std::env::current_dir().map_err(run_dir_io(Path::new(".")))?;
    let keys: Vec<String> = pairs.iter().map(crate::shard::pair_key).collect();
    // Tasks never start over: a rerun of the name resubmits what is missing.
    let argv: Vec<String> = argv.into_iter().filter(|a| a != "--force").collect();
    let manifest = Manifest {
        run: cfg.name.clone(),
        argv,
        cwd: cwd.display().to_string(),
        pairs: keys.clone(),
        plugin_sha256: sha256_hex(&plugin_bytes),
        created_at: crate::clock::now_rfc3339(),
    };
    let manifest_path = write_manifest(&run_dir, &manifest)?;
    let todo: Vec<usize> = (0..keys.len())
        .filter(|i| still_to_do(&pair_dir(&run_dir, &keys[*i]), cfg.auto_eval))
        .collect();
    let progress = Progress::with_status(cfg.quiet, keys.len(), "pairs");
    progress.line(&format!(
        "cbench run: {} · engine: slurm · pairs: {} ({} to run) · at most {} at once",
        cfg.name,
        keys.len(),
        todo.len(),
        cfg.concurrency
    ));
    let mut job = None;
    if !todo.is_empty() {
        let exe = std::env::current_exe().map_err(run_dir_io(Path::new("cbench")))?;
        let script = slurm.join("task.sh");
        let text = format!(
            "#!/bin/sh\n# One pair of run {name}: written by cbench run --engine slurm.\nexec {exe} run-pair --manifest {manifest} --index \"$SLURM_ARRAY_TASK_ID\"\n",
            name = cfg.name,
            exe = shell_quote(&exe.display().to_string()),
            manifest = shell_quote(&std::path::absolute(&manifest_path).unwrap_or(manifest_path.clone()).display().to_string()),
        );
        write_atomic(&script, text.as_bytes())?;
        let mut args: Vec<String> = vec![
            "--parsable".into(),
            format!("--job-name=cbench-{}", cfg.name),
            format!("--chdir={}", cwd.display()),
            format!(
                "--output={}",
                std::path::absolute(&slurm)
                    .unwrap_or(slurm.clone())
                    .join("%A_%a.out")
                    .display()
            ),
            format!("--array={}%{}", index_ranges(&todo), cfg.concurrency.max(1)),
        ];
        if let Some(c) = opts.cpus {
            args.push(format!("--cpus-per-task={c}"));
        }
        if let Some(m) = &opts.mem {
            args.push(format!("--mem={m}"));
        }
        if let Some(t) = &opts.time {
            args.push(format!("--time={t}"));
        }
        if let Some(p) = &opts.partition {
            args.push(format!("--partition={p}"));
        }
        if let Some(a) = &opts.account {
            args.push(format!("--account={a}"));
        }
        args.push(format!(
            "--export=ALL,{MANIFEST_HASH_VAR}={}",
            sha256_hex(&std::fs::read(&manifest_path).map_err(run_dir_io(&manifest_path))?)
        ));
        args.extend(opts.extra.iter().cloned());
        args.push(script.display().to_string());
        let out = match tool("sbatch", &args) {
            Ok(out) => out,
            Err(e) => {
                if fresh {
                    let _ = std::fs::remove_dir_all(&run_dir);
                }
                return Err(RunError::Slurm(e));
            }
        };
        let job_id = out.trim().split(';').next().unwrap_or_default().to_string();
        if job_id.is_empty() {
            return Err(RunError::Slurm(SlurmError::Other(format!(
                "sbatch printed no job id: {out:?}"
            ))));
        }
        let mut all = jobs(&run_dir);
        all.push(SubmittedJob {
            job_id: job_id.clone(),
            indices: todo.clone(),
            submitted_at: crate::clock::now_rfc3339(),
        });
        write_json_atomic(&slurm.join("jobs.json"), &all)?;
        progress.line(&format!(
            "submitted Slurm job {job_id}: {} array task{} (output in {})",
            todo.len(),
            if todo.len() == 1 { "" } else { "s" },
            slurm.display()
        ));
        if opts.detach {
            progress.line(&format!(
                "detached: `cbench status -n {name}` shows it, `cbench cancel -n {name}` cancels it; `cbench run` with the same arguments writes the summary once it is done",
                name = cfg.name
            ));
            return Ok(None);
        }
        crate::interrupt::set_note(format!(
            "detached: Slurm job {job_id} keeps running; `cbench status -n {name}` follows it, `cbench cancel -n {name}` cancels it",
            name = cfg.name
        ));
        job = Some(job_id);
    }
    if let Some(job_id) = &job {
        follow(job_id, &run_dir, &keys, &todo, &progress, opts.poll).await?;
    }
    // Every pair on disk, as one run: the same summary and report a single machine writes.
    let mut results = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let dir = pair_dir(&run_dir, key);
        let record = read_json::<PairRecord>(&dir.join("result.json")).ok();
        let eval = read_json(&dir.join("eval.json")).ok();
        let mut infra_error = record.as_ref().and_then(PairRecord::infra_failure);
        if record.is_none() {
            let why = job
                .as_deref()
                .and_then(|j| task_state(j, i))
                .unwrap_or_else(|| "it never ran".into());
            infra_error = Some(format!(
                "{key}: array task {i} ended without a result: {why}"
            ));
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
    summary.print(&progress);
    crate::steps::write_report(&run_dir, &progress)?;
    Ok(Some(summary))
}

/// How Slurm says array task `index` of `job` ended (`State=TIMEOUT Reason=…`), while it still
/// remembers the job.
fn task_state(job: &str, index: usize) -> Option<String> {
    let out = tool(
        "scontrol",
        &[
            "show".into(),
            "job".into(),
            "-o".into(),
            format!("{job}_{index}"),
        ],
    )
    .ok()?;
    let field = |name: &str| {
        out.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let state = field("JobState")?;
    Some(match field("Reason").filter(|r| r != "None") {
        Some(reason) => format!("Slurm says {state} ({reason})"),
        None => format!("Slurm says {state}"),
    })
}

/// The array's tasks still known to `squeue` (one each, `-r`): (pending, running).
fn queued(job: &str) -> Result<Option<(usize, usize)>, SlurmError> {
    Ok(queue_state(job)?.map(|(pending, running, _)| (pending, running)))
}

/// (pending, running, and the reason of a pending task that will never start).
fn queue_state(job: &str) -> Result<Option<(usize, usize, Option<String>)>, SlurmError> {
    let args: Vec<String> = ["-h", "-r", "-j", job, "-o", "%T %r"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    match tool("squeue", &args) {
        Ok(out) => {
            let rows: Vec<(&str, &str)> = out
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| l.split_once(' ').unwrap_or((l, "")))
                .collect();
            if rows.is_empty() {
                return Ok(None);
            }
            let running = rows
                .iter()
                .filter(|(s, _)| *s == "RUNNING" || *s == "COMPLETING")
                .count();
            let stuck = rows
                .iter()
                .find(|(s, r)| *s == "PENDING" && NEVER_STARTS.contains(r))
                .map(|(_, r)| r.to_string());
            Ok(Some((rows.len() - running, running, stuck)))
        }
        // A job that has left the queue is no longer known.
        Err(SlurmError::Failed { stderr, .. }) if stderr.contains("Invalid job id") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Follows the array until it leaves the queue, a line per pair as it finishes.
async fn follow(
    job: &str,
    run_dir: &Path,
    keys: &[String],
    todo: &[usize],
    progress: &Progress,
    poll: Duration,
) -> Result<(), RunError> {
    let mut reported = vec![false; keys.len()];
    let mut last_queue = None;
    for (i, key) in keys.iter().enumerate() {
        if !todo.contains(&i) {
            reported[i] = true;
            progress.finished(outcome(&pair_dir(run_dir, key)));
        }
    }
    loop {
        let state = queue_state(job).map_err(RunError::Slurm)?;
        if let Some((_, _, Some(reason))) = &state {
            let _ = tool("scancel", &[job.to_string()]);
            return Err(RunError::Slurm(SlurmError::Other(format!(
                "job {job} can never start here: Slurm says {reason} (the partition cannot give what --engine-cpus/--engine-mem/--engine-time/--partition ask for); cancelled it"
            ))));
        }
        let queue = state.map(|(pending, running, _)| (pending, running));
        for &i in todo {
            let dir = pair_dir(run_dir, &keys[i]);
            let finished = dir.join("eval.json").is_file()
                || (queue.is_none() && dir.join("result.json").is_file());
            if !reported[i] && finished {
                reported[i] = true;
                let outcome = outcome(&dir);
                progress.line(&format!(
                    "{} {}",
                    if outcome == Outcome::Success {
                        "✓"
                    } else {
                        "✗"
                    },
                    keys[i]
                ));
                progress.finished(outcome);
            }
        }
        match queue {
            None => return Ok(()),
            Some((pending, running)) if last_queue != queue => {
                progress.line(&format!(
                    "Slurm job {job}: {running} running, {pending} pending"
                ));
                last_queue = Some((pending, running));
            }
            Some(_) => {}
        }
        tokio::time::sleep(poll).await;
    }
}

fn outcome(pair_dir: &Path) -> Outcome {
    match read_json::<crate::eval::EvalReport>(&pair_dir.join("eval.json")) {
        Ok(e) if e.overall_success => Outcome::Success,
        Ok(_) => Outcome::Failure,
        Err(_) => Outcome::InfraError,
    }
}

/// `cbench status -n RUN`: the run's pairs done and its jobs' tasks in the queue.
pub fn status(log_dir: &Path, name: &str) -> Result<String, RunError> {
    let run_dir = log_dir.join(name);
    let manifest: Manifest = read_json(&run_dir.join("manifest.json")).map_err(|_| {
        RunError::Slurm(SlurmError::Other(format!(
            "run `{name}` was not submitted to Slurm: {} has no manifest.json",
            run_dir.display()
        )))
    })?;
    let done = manifest
        .pairs
        .iter()
        .filter(|k| pair_dir(&run_dir, k).join("eval.json").is_file())
        .count();
    let mut text = format!("run {name}: {done}/{} pairs graded\n", manifest.pairs.len());
    let missing = manifest.pairs.len() - done;
    for job in jobs(&run_dir) {
        let line = match queue_state(&job.job_id).map_err(RunError::Slurm)? {
            Some((pending, running, stuck)) => format!(
                "{running} running, {pending} pending{}",
                stuck
                    .map(|r| format!(" (Slurm says {r}: it will never start; cancel it)"))
                    .unwrap_or_default()
            ),
            None if missing > 0 => format!(
                "no longer queued; {missing} pair(s) without a grade (see {}/*.out); `cbench run` with the same arguments resubmits them",
                slurm_dir(&run_dir).display()
            ),
            None => "finished".into(),
        };
        text.push_str(&format!(
            "  Slurm job {} ({} tasks, submitted {}): {line}\n",
            job.job_id,
            job.indices.len(),
            job.submitted_at
        ));
    }
    Ok(text)
}

/// `cbench cancel -n RUN`: cancels every job of the run still queued; the tasks stop the way
/// a SIGTERM stops a run (sandboxes removed, results already written kept).
pub fn cancel(log_dir: &Path, name: &str) -> Result<Vec<String>, RunError> {
    let run_dir = log_dir.join(name);
    let all = jobs(&run_dir);
    if all.is_empty() {
        return Err(RunError::Slurm(SlurmError::Other(format!(
            "run `{name}` has no Slurm job ({} has no slurm/jobs.json)",
            run_dir.display()
        ))));
    }
    let mut cancelled = Vec::new();
    for job in all {
        if queued(&job.job_id).map_err(RunError::Slurm)?.is_some() {
            tool("scancel", std::slice::from_ref(&job.job_id)).map_err(RunError::Slurm)?;
            cancelled.push(job.job_id);
        }
    }
    Ok(cancelled)
}

/// The manifest a task reads, and the task's pair.
pub fn task_of(
    manifest_path: &Path,
    index: usize,
) -> Result<(Manifest, crate::config::PairTask), RunError> {
    let manifest: Manifest = read_json(manifest_path)?;
    let key = manifest.pairs.get(index).cloned().ok_or_else(|| {
        RunError::Slurm(SlurmError::Other(format!(
            "{}: no pair at index {index} ({} pairs)",
            manifest_path.display(),
            manifest.pairs.len()
        )))
    })?;
    let task = crate::config::PairTask {
        index,
        count: manifest.pairs.len(),
        key,
    };
    Ok((manifest, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_indices_are_written_as_ranges() {
        assert_eq!(index_ranges(&[0, 1, 2, 3, 5, 7, 8]), "0-3,5,7-8");
        assert_eq!(index_ranges(&[4]), "4");
        assert_eq!(index_ranges(&[]), "");
    }

    #[test]
    fn paths_are_quoted_for_sh() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
