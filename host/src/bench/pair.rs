//! `cbench bench --pair`: the bundled pair end to end — the `run` command, in this process —
//! with the built-in scripted model answering at once (or after `--pair-think-ms`) and giving
//! each agent K commands, and the figures issue 28 compares with CooperBench's own harness:
//! wall time per pair with grading, launch → first model request, the agent step (a model
//! reply → the next request: plugin, host and the command, as each trajectory's `step` records
//! it, split), the grading tail (the last model reply → the end) and the harness's peak RSS.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;

use crate::cli::{BenchArgs, Cli, Command};
use crate::trajectory::{StepTime, Trajectory};

/// One measured run of the pair.
struct PairRun {
    wall_s: f64,
    first_request_s: f64,
    steps: Vec<StepTime>,
    tail_s: f64,
}

/// Runs the pair `args.pair_runs` times per backend and setting and prints the medians.
pub async fn bench_pair(args: &BenchArgs, backends: &[&str]) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let submit = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";
    let mut replies: Vec<serde_json::Value> = (0..args.pair_commands)
        .map(|_| serde_json::json!({ "bash": "ls", "delay_ms": args.pair_think_ms }))
        .collect();
    replies.push(serde_json::json!({ "bash": submit, "delay_ms": args.pair_think_ms }));
    let script = scratch.path().join("instant.json");
    std::fs::write(&script, serde_json::json!({ "*": replies }).to_string())?;
    let model = match args.pair_think_ms {
        0 => "an instant model".to_string(),
        ms => format!("a model taking {ms} ms per reply"),
    };
    println!(
        "pair benchmark: the bundled pair (features 1,2) with {model}, {} commands per agent (`ls`), {} runs each, medians",
        args.pair_commands, args.pair_runs
    );
    for backend in backends {
        for setting in ["coop", "solo"] {
            let mut runs = Vec::new();
            for i in 0..args.pair_runs.max(1) {
                let logs = scratch.path().join(format!("logs-{backend}-{setting}-{i}"));
                runs.push(one_run(args, backend, setting, &script, &logs).await?);
            }
            report(backend, setting, &runs);
        }
    }
    println!(
        "  peak RSS of this process (all runs): {} MiB",
        peak_rss_mib()
    );
    Ok(())
}

async fn one_run(
    args: &BenchArgs,
    backend: &str,
    setting: &str,
    script: &Path,
    logs: &Path,
) -> anyhow::Result<PairRun> {
    let agent = args.agent.display().to_string();
    let dataset = args.dataset_dir.display().to_string();
    let model = format!("scripted:{}", script.display());
    let log_dir = logs.display().to_string();
    let argv = [
        "cbench",
        "run",
        "-q",
        "-n",
        "bench-pair",
        "--agent",
        &agent,
        "-m",
        &model,
        "-f",
        "1,2",
        "--setting",
        setting,
        "--backend",
        backend,
        "--dataset-dir",
        &dataset,
        "--log-dir",
        &log_dir,
    ];
    let Command::Run(run_args) = Cli::try_parse_from(argv)?.command else {
        anyhow::bail!("the pair benchmark's command line did not parse as `run`");
    };
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let code = crate::commands::run(run_args).await?;
    let wall_s = started.elapsed().as_secs_f64();
    let ended_at = chrono::Utc::now();
    anyhow::ensure!(
        code == std::process::ExitCode::SUCCESS,
        "the {backend} {setting} run of the pair failed; run it as `cbench {}` to see why",
        argv[1..].join(" ")
    );
    // Each call's request went out `duration_ms` before its recorded (reply) time.
    let mut requests = Vec::new();
    let mut replies = Vec::new();
    let mut steps = Vec::new();
    for path in trajectories(&logs.join("bench-pair"))? {
        let trajectory: Trajectory = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        for call in &trajectory.llm_calls {
            let Ok(reply) = chrono::DateTime::parse_from_rfc3339(&call.timestamp) else {
                continue;
            };
            let reply = reply.with_timezone(&chrono::Utc);
            replies.push(reply);
            requests.push(reply - chrono::TimeDelta::milliseconds(call.duration_ms as i64));
            steps.extend(call.step);
        }
    }
    let (Some(first), Some(last)) = (requests.iter().min(), replies.iter().max()) else {
        anyhow::bail!("the {backend} {setting} run recorded no model call");
    };
    let secs = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1e6;
    Ok(PairRun {
        wall_s,
        first_request_s: secs(*first - started_at).max(0.0),
        steps,
        tail_s: secs(ended_at - *last),
    })
}

/// Every `trajectory.json` under `dir`.
fn trajectories(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "trajectory.json") {
                found.push(path);
            }
        }
    }
    Ok(found)
}

fn report(backend: &str, setting: &str, runs: &[PairRun]) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let all: Vec<StepTime> = runs.iter().flat_map(|r| r.steps.clone()).collect();
    let of = |part: fn(&StepTime) -> f64| all.iter().map(part).collect::<Vec<f64>>();
    let total = of(|s| s.total_ms);
    println!(
        "  {backend:<7} {setting:<5} wall per pair incl. grading {:6.2} s · launch → first model request {:6.3} s · agent step p50 {:6.2} ms, p99 {:6.2} ms ({} steps; p50 of its command {:.2}, plugin {:.2}, host {:.2} ms) · after the last model reply {:5.2} s",
        median(runs.iter().map(|r| r.wall_s).collect()),
        median(runs.iter().map(|r| r.first_request_s).collect()),
        super::percentile(&total, 0.5),
        super::percentile(&total, 0.99),
        total.len(),
        super::percentile(&of(|s| s.commands_ms), 0.5),
        super::percentile(&of(|s| s.plugin_ms), 0.5),
        super::percentile(&of(|s| s.host_ms), 0.5),
        median(runs.iter().map(|r| r.tail_s).collect()),
    );
}

/// The process's peak resident set, MiB.
fn peak_rss_mib() -> u64 {
    // SAFETY: getrusage fills the struct it is given; nothing else is touched.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    (usage.ru_maxrss.max(0) as u64) / 1024
}
