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

use crate::cluster::{self, QueueState, MANIFEST_HASH_VAR};
use crate::config::RunConfig;
pub use crate::error::SlurmError;
use crate::error::{run_dir_io, RunError};
use crate::fsutil::{read_json, write_atomic, write_json_atomic};
use crate::progress::Progress;
use crate::summary::RunSummary;

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

/// The jobs submitted for this run so far.
pub fn jobs(run_dir: &Path) -> Vec<SubmittedJob> {
    read_json(&slurm_dir(run_dir).join("jobs.json")).unwrap_or_default()
}

/// Submits the run's pairs still to do as arrays (chunked at the site's `MaxArraySize`) and,
/// unless detached, follows them to the end; returns the run's summary (None when detached).
pub async fn submit(
    cfg: RunConfig,
    argv: Vec<String>,
    opts: SlurmOptions,
) -> Result<Option<RunSummary>, RunError> {
    let started = Instant::now();
    // Before anything is written: the scheduler answers.
    tool("sinfo", &["-h".into(), "-o".into(), "%P".into()]).map_err(RunError::Slurm)?;
    let max_array = max_array_size();
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
    let prepared = cluster::prepare(&cfg, "slurm", argv, "slurm")?;
    let slurm = slurm_dir(&run_dir);
    let keys = prepared.manifest.pairs.clone();
    let todo = prepared.todo.clone();
    let progress = Progress::with_status(cfg.quiet, keys.len(), "pairs");
    progress.line(&format!(
        "cbench run: {} · engine: slurm · pairs: {} ({} to run) · at most {} at once",
        cfg.name,
        keys.len(),
        todo.len(),
        cfg.concurrency
    ));
    let mut submitted: Vec<String> = Vec::new();
    if !todo.is_empty() {
        // The tasks run this cbench, or the one CBENCH_EXE names (the Python API's, which
        // runs inside the interpreter).
        let exe = match std::env::var_os("CBENCH_EXE") {
            Some(exe) => PathBuf::from(exe),
            None => std::env::current_exe().map_err(run_dir_io(Path::new("cbench")))?,
        };
        let script = slurm.join("task.sh");
        let text = format!(
            "#!/bin/sh\n# One pair of run {name}: written by cbench run --engine slurm.\nexec {exe} run-pair --manifest {manifest} --index \"$SLURM_ARRAY_TASK_ID\" \"$@\"\n",
            name = cfg.name,
            exe = shell_quote(&exe.display().to_string()),
            manifest = shell_quote(&prepared.manifest_path.display().to_string()),
        );
        write_atomic(&script, text.as_bytes())?;
        let manifest_sha = prepared.manifest_sha256()?;
        // Sites cap an array's indices (below MaxArraySize): each array numbers its tasks from
        // 0 and passes the pairs they stand for; larger runs go as several arrays.
        for chunk in todo.chunks(max_array) {
            let mut args = sbatch_args(&cfg, &opts, &slurm, chunk, &manifest_sha, &script);
            // One array after the other, so -c holds for the whole run.
            if let Some(previous) = submitted.last() {
                args.insert(1, format!("--dependency=afterany:{previous}"));
            }
            let job_id = match tool("sbatch", &args) {
                Ok(out) => out.trim().split(';').next().unwrap_or_default().to_string(),
                Err(e) => {
                    for job in &submitted {
                        let _ = tool("scancel", std::slice::from_ref(job));
                    }
                    prepared.discard_if_fresh();
                    return Err(RunError::Slurm(e));
                }
            };
            if job_id.is_empty() {
                return Err(RunError::Slurm(SlurmError::Other(
                    "sbatch printed no job id".into(),
                )));
            }
            let mut all = jobs(&run_dir);
            all.push(SubmittedJob {
                job_id: job_id.clone(),
                indices: chunk.to_vec(),
                submitted_at: crate::clock::now_rfc3339(),
            });
            write_json_atomic(&slurm.join("jobs.json"), &all)?;
            progress.line(&format!(
                "submitted Slurm job {job_id}: {} array task{} (output in {})",
                chunk.len(),
                if chunk.len() == 1 { "" } else { "s" },
                slurm.display()
            ));
            submitted.push(job_id);
        }
        let name = &cfg.name;
        let jobs_text = submitted.join(", ");
        if opts.detach {
            progress.line(&format!(
                "detached: `cbench status -n {name}` shows it, `cbench cancel -n {name}` cancels it; `cbench run` with the same arguments writes the summary once it is done"
            ));
            return Ok(None);
        }
        crate::interrupt::set_note(format!(
            "detached: Slurm job {jobs_text} keeps running; `cbench status -n {name}` follows it, `cbench cancel -n {name}` cancels it"
        ));
        crate::interrupt::set_cancel(crate::interrupt::Cancel {
            question: format!("Slurm job {jobs_text} goes on without this process; cancel it too?"),
            args: cluster::cancel_args(&cfg),
        });
        let label = format!("Slurm job {jobs_text}");
        let result = cluster::follow(&label, &run_dir, &keys, &todo, &progress, opts.poll, || {
            let jobs = submitted.clone();
            async move { combined_queue(&jobs).map_err(RunError::Slurm) }
        })
        .await;
        match result {
            Ok(()) => {}
            Err(cluster::FollowEnd::Error(e)) => return Err(e),
            Err(cluster::FollowEnd::NeverStarts(reason)) => {
                for job in &submitted {
                    let _ = tool("scancel", std::slice::from_ref(job));
                }
                return Err(RunError::Slurm(SlurmError::Other(format!(
                    "job {jobs_text} can never start here: Slurm says {reason} (the partition cannot give what --engine-cpus/--engine-mem/--engine-time/--partition ask for); cancelled it"
                ))));
            }
        }
    }
    let all_jobs = jobs(&run_dir);
    let summary = cluster::finish(&cfg, &prepared, started, &progress, |i| {
        let job = all_jobs
            .iter()
            .rev()
            .find(|j| submitted.contains(&j.job_id) && j.indices.contains(&i))?;
        let task = job.indices.iter().position(|&p| p == i)?;
        task_state(&job.job_id, task)
    })?;
    Ok(Some(summary))
}

/// The site's `MaxArraySize` (array indices must stay below it); Slurm's default when unknown.
fn max_array_size() -> usize {
    tool("scontrol", &["show".into(), "config".into()])
        .ok()
        .and_then(|out| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix("MaxArraySize"))
                .and_then(|rest| {
                    rest.trim_start()
                        .trim_start_matches('=')
                        .trim()
                        .parse()
                        .ok()
                })
        })
        .unwrap_or(1001usize)
        .max(2)
}

/// The sbatch command line of one array.
fn sbatch_args(
    cfg: &RunConfig,
    opts: &SlurmOptions,
    slurm: &Path,
    indices: &[usize],
    manifest_sha: &str,
    script: &Path,
) -> Vec<String> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut args: Vec<String> = vec![
        "--parsable".into(),
        format!("--job-name=cbench-{}", cfg.name),
        format!("--chdir={}", cwd.display()),
        format!(
            "--output={}",
            std::path::absolute(slurm)
                .unwrap_or(slurm.to_path_buf())
                .join("%A_%a.out")
                .display()
        ),
        format!(
            "--array=0-{}%{}",
            indices.len().saturating_sub(1),
            cfg.concurrency.max(1)
        ),
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
    args.push(format!("--export=ALL,{MANIFEST_HASH_VAR}={manifest_sha}"));
    args.extend(opts.extra.iter().cloned());
    args.push(script.display().to_string());
    args.push(format!("--pairs={}", cluster::index_ranges(indices)));
    args
}

/// The queue state of several arrays as one (None once none is queued).
fn combined_queue(jobs: &[String]) -> Result<Option<QueueState>, SlurmError> {
    let mut total: Option<QueueState> = None;
    for job in jobs {
        if let Some((pending, running, stuck)) = queue_state(job)? {
            let t = total.get_or_insert(QueueState {
                pending: 0,
                running: 0,
                never_starts: None,
            });
            t.pending += pending;
            t.running += running;
            t.never_starts = t.never_starts.take().or(stuck);
        }
    }
    Ok(total)
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

/// `cbench status -n RUN`: the run's pairs done and its jobs' tasks in the queue.
pub fn status(log_dir: &Path, name: &str) -> Result<String, RunError> {
    let run_dir = log_dir.join(name);
    let manifest = cluster::read_manifest(log_dir, name)?;
    let (mut text, missing) = cluster::graded(&run_dir, &manifest);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_sh() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
