//! `cbench run --engine slurm` on a real Slurm cluster (scripts/test.sh starts a one-node one
//! with scripts/slurm-local.sh and exports SLURM_CONF): one array task per pair, grades equal to
//! a local run, `%P` respected, a cancelled task reported and resubmitted, detach/status/cancel,
//! and a site without a scheduler refused before anything is written.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{cache_dir, cbench_bin, dataset, json, plugins, text};

/// The cluster's configuration; these tests need one.
fn slurm_conf() -> String {
    let conf = std::env::var("SLURM_CONF").unwrap_or_default();
    assert!(
        !conf.is_empty() && Path::new(&conf).is_file(),
        "the Slurm tests need a cluster: SLURM_CONF must name its slurm.conf (scripts/test.sh starts one with scripts/slurm-local.sh)"
    );
    conf
}

fn cbench_at(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(cbench_bin())
        .current_dir(dir)
        .args(args)
        .env("CBENCH_CACHE_DIR", cache_dir())
        .env("SLURM_CONF", slurm_conf())
        .env_remove("CBENCH_DATASET_DIR")
        .envs(env.iter().copied())
        .output()
        .expect("running cbench")
}

/// Per pair: (key, overall success, each agent's success).
fn grades(run_dir: &Path) -> Vec<(String, Value, Vec<Value>)> {
    let mut out = Vec::new();
    for pair in cbench::layout::pair_dirs(run_dir).unwrap() {
        let eval = json(&pair.path.join("eval.json"));
        out.push((
            pair.key(),
            eval["overall_success"].clone(),
            ["agent1", "agent2"]
                .iter()
                .map(|a| eval[a]["success"].clone())
                .collect(),
        ));
    }
    out
}

fn squeue(job: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "-j", job, "-o", "%i %T"])
        .env("SLURM_CONF", slurm_conf())
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn job_of(run_dir: &Path) -> String {
    json(&run_dir.join("slurm/jobs.json"))
        .as_array()
        .and_then(|j| j.last())
        .and_then(|j| j["job_id"].as_str())
        .expect("a submitted job")
        .to_string()
}

#[test]
fn an_array_run_grades_like_a_local_run_one_pair_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let common = [
        "-a",
        &agent,
        "-m",
        "oracle",
        "-s",
        "smoke",
        "--dataset-dir",
        &ds,
    ];
    let run = |name: &str, extra: &[&str]| {
        let mut args = vec!["run", "-n", name];
        args.extend(common);
        args.extend(extra);
        cbench_at(tmp.path(), &args, &[])
    };
    let out = run("local", &["-q"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run("array", &["--engine", "slurm", "-c", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("submitted Slurm job"), "{said}");
    let logs = tmp.path().join("logs");
    assert_eq!(grades(&logs.join("array")), grades(&logs.join("local")));
    let summary = |run: &str| {
        let s = json(&logs.join(run).join("summary.json"));
        (
            s["pairs"].clone(),
            s["overall_successes"].clone(),
            s["infra_errors"].clone(),
        )
    };
    assert_eq!(summary("array"), summary("local"));
    assert!(logs.join("array/manifest.json").is_file());
    // `%1`: no two pairs ever ran at once.
    let mut spans: Vec<(String, String)> = cbench::layout::pair_dirs(&logs.join("array"))
        .unwrap()
        .iter()
        .map(|p| {
            let r = json(&p.path.join("result.json"));
            (
                r["started_at"].as_str().unwrap().to_string(),
                r["finished_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "pairs overlapped: {spans:?}");
    }
    // Nothing left to do: a rerun submits nothing and says so.
    let out = run("array", &["--engine", "slurm", "-c", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(0 to run)"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_cancelled_task_is_reported_and_the_rerun_resubmits_only_it() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let script = tmp.path().join("model.json");
    // agent1 of pair (1,2) keeps its task busy; every other agent submits at once.
    std::fs::write(
        &script,
        r#"{"agent1": [{"bash": "sleep 60"}, {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}],
            "*": [{"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]}"#,
    )
    .unwrap();
    let model = format!("scripted:{}", script.display());
    let args = [
        "run",
        "-n",
        "killed",
        "-a",
        &agent,
        "-m",
        &model,
        "-f",
        "1,2",
        "--dataset-dir",
        &ds,
        "--engine",
        "slurm",
    ];
    let follower = {
        let dir = tmp.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cbench_at(&dir, &args, &[])
        })
    };
    let run_dir = tmp.path().join("logs/killed");
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        assert!(Instant::now() < deadline, "the task never started");
        if run_dir.join("slurm/jobs.json").is_file() {
            let job = job_of(&run_dir);
            if squeue(&job).iter().any(|l| l.ends_with("RUNNING")) {
                break job;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let the agent reach its long command, then cancel the task under it.
    std::thread::sleep(Duration::from_secs(3));
    let status = Command::new("scancel")
        .arg(format!("{job}_0"))
        .env("SLURM_CONF", slurm_conf())
        .status()
        .unwrap();
    assert!(status.success());
    let out = follower.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("features_1_2"), "{said}");
    assert!(said.contains("infrastructure errors: 1"), "{said}");

    // The rerun submits exactly that pair again; this time the agent finishes.
    std::fs::write(
        &script,
        r#"[{"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]"#,
    )
    .unwrap();
    let out = cbench_at(tmp.path(), &args, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(1 to run)"),
        "{}",
        text(&out)
    );
    assert!(run_dir
        .join("cbench_textkit_task/task1/features_1_2/eval.json")
        .is_file());
}

#[test]
fn detach_status_and_cancel_work_from_another_invocation() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    // `cbench run -n held` of the smoke subset through Slurm, with `extra` flags.
    let held = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "-n",
            "held",
            "-a",
            &agent,
            "-m",
            "oracle",
            "-s",
            "smoke",
            "--dataset-dir",
            &ds,
            "--engine",
            "slurm",
        ];
        args.extend(extra);
        cbench_at(tmp.path(), &args, &[])
    };
    let started = Instant::now();
    let out = held(&["--detach", "--sbatch-arg=--begin=now+600"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        text(&out).contains("cbench cancel -n held"),
        "{}",
        text(&out)
    );
    // A rerun while the array is queued would run its pairs twice: refused.
    let again = held(&["--detach"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("still queued"), "{}", text(&again));
    // So is one with other options (only the engine's may change).
    let changed = held(&["--setting", "solo"]);
    assert_eq!(changed.status.code(), Some(2), "{}", text(&changed));
    assert!(
        text(&changed).contains("was submitted with other options"),
        "{}",
        text(&changed)
    );
    let out = cbench_at(tmp.path(), &["status", "-n", "held"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("0/3 pairs graded") && said.contains("pending"),
        "{said}"
    );
    let job = job_of(&tmp.path().join("logs/held"));
    let out = cbench_at(tmp.path(), &["cancel", "-n", "held"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("cancelled Slurm job {job}")));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !squeue(&job).is_empty() {
        assert!(Instant::now() < deadline, "the job is still queued");
        std::thread::sleep(Duration::from_millis(200));
    }
    // No task ever ran: no pair directory, and nothing left in the queue.
    assert!(cbench::layout::pair_dirs(&tmp.path().join("logs/held"))
        .unwrap()
        .is_empty());
}

#[test]
fn a_site_without_a_scheduler_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let args = [
        "run",
        "-n",
        "nosched",
        "-a",
        &agent,
        "-m",
        "oracle",
        "-s",
        "smoke",
        "--dataset-dir",
        &ds,
        "--engine",
        "slurm",
    ];
    // No Slurm tools on PATH.
    let out = cbench_at(tmp.path(), &args, &[("PATH", "/nonexistent")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("`sinfo` could not run"),
        "{}",
        text(&out)
    );
    // A controller that does not answer.
    let conf = std::fs::read_to_string(slurm_conf()).unwrap();
    let dead: String = conf
        .lines()
        .map(|l| {
            if l.starts_with("SlurmctldPort=") {
                "SlurmctldPort=9".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dead_conf = tmp.path().join("dead.conf");
    std::fs::write(&dead_conf, dead).unwrap();
    let out = cbench_at(
        tmp.path(),
        &args,
        &[("SLURM_CONF", dead_conf.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("slurm: `sinfo"), "{}", text(&out));
    assert!(!tmp.path().join("logs/nosched").exists());
    // The engine owns the array, the job name, the output and the working directory.
    let mut owned = args.to_vec();
    owned.push("--sbatch-arg=--array=0-99");
    let out = cbench_at(tmp.path(), &owned, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cbench sets the array"),
        "{}",
        text(&out)
    );
    // What sbatch refuses leaves no run behind.
    let mut refused = args.to_vec();
    refused.push("--partition=nosuch");
    let out = cbench_at(tmp.path(), &refused, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("sbatch"), "{}", text(&out));
    assert!(!tmp.path().join("logs/nosched").exists());
}

#[test]
fn a_run_larger_than_the_sites_max_array_size_goes_as_several_arrays() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let config = Command::new("scontrol")
        .args(["show", "config"])
        .env("SLURM_CONF", slurm_conf())
        .output()
        .unwrap();
    let max: usize = String::from_utf8_lossy(&config.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("MaxArraySize"))
        .and_then(|v| v.trim().trim_start_matches('=').trim().parse().ok())
        .unwrap();
    assert!(
        max < 10,
        "this test needs MaxArraySize below the bundled dataset's 10 pairs (scripts/slurm-local.sh sets 4), got {max}"
    );
    let args = [
        "run",
        "-n",
        "big",
        "-a",
        &agent,
        "-m",
        "oracle",
        "--dataset-dir",
        &ds,
        "--engine",
        "slurm",
        "-c",
        "2",
    ];
    let out = cbench_at(tmp.path(), &args, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let run_dir = tmp.path().join("logs/big");
    let jobs = json(&run_dir.join("slurm/jobs.json"));
    let chunks: Vec<Vec<u64>> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            j["indices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(chunks.len(), 10usize.div_ceil(max), "{chunks:?}");
    assert!(chunks.iter().all(|c| c.len() <= max), "{chunks:?}");
    assert_eq!(chunks.concat(), (0..10).collect::<Vec<u64>>());
    let summary = json(&run_dir.join("summary.json"));
    assert_eq!(summary["pairs"], 10);
    assert_eq!(summary["infra_errors"], 0, "{}", text(&out));
    // -c 2 held across the arrays: never three pairs at once.
    let mut edges: Vec<(String, i32)> = Vec::new();
    for p in cbench::layout::pair_dirs(&run_dir).unwrap() {
        let r = json(&p.path.join("result.json"));
        edges.push((r["started_at"].as_str().unwrap().to_string(), 1));
        edges.push((r["finished_at"].as_str().unwrap().to_string(), -1));
    }
    edges.sort();
    let mut running = 0;
    for (_, d) in edges {
        running += d;
        assert!(running <= 2, "more than -c 2 pairs ran at once");
    }
}

/// Ctrl-C on a terminal while following asks whether to cancel the job too; "y" cancels it.
/// (Driven through a real pseudo-terminal by Python's `pty`.)
#[test]
fn ctrl_c_on_a_terminal_asks_and_yes_cancels_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("model.json");
    std::fs::write(
        &script,
        r#"[{"bash": "sleep 60"}, {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]"#,
    )
    .unwrap();
    let argv = serde_json::json!([
        cbench_bin(),
        "run",
        "-n",
        "asked",
        "-a",
        &plugins().mini_swe,
        "-m",
        format!("scripted:{}", script.display()),
        "-f",
        "1,2",
        "--dataset-dir",
        dataset(),
        "--engine",
        "slurm"
    ]);
    // Waits for the task to run, types Ctrl-C, then answers the question with "y".
    let driver = r#"
import json, os, pty, select, sys, time
argv = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
seen = b""
def until(needle, seconds):
    global seen
    end = time.time() + seconds
    while needle not in seen and time.time() < end:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            seen += data
    return needle in seen
ok = until(b"1 running", 60)
time.sleep(1)
os.write(fd, b"\x03")
asked = until(b"[y/N]", 20)
os.write(fd, b"y\n")
until(b"resubmits what is missing", 30)
_, status = os.waitpid(pid, 0)
sys.stdout.write(json.dumps({"running": ok, "asked": asked, "exit": os.waitstatus_to_exitcode(status), "seen": seen.decode(errors="replace")}))
"#;
    let out = Command::new("python3")
        .current_dir(tmp.path())
        .args(["-c", driver, &argv.to_string()])
        .env("CBENCH_CACHE_DIR", cache_dir())
        .env("SLURM_CONF", slurm_conf())
        .env_remove("CBENCH_DATASET_DIR")
        .output()
        .expect("python3");
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let seen = report["seen"].as_str().unwrap_or_default();
    assert_eq!(report["running"], true, "{seen}");
    assert_eq!(report["asked"], true, "{seen}");
    assert!(seen.contains("cancelled Slurm job"), "{seen}");
    assert_eq!(report["exit"], 130, "{seen}");
    let job = job_of(&tmp.path().join("logs/asked"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !squeue(&job).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the job is still queued after yes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
