//! One run over several processes and terminals: `--shard I/N` invocations sharing a log dir
//! make exactly the run one invocation makes, and `cbench watch` follows a live run from its
//! log dir or from Redis.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    cache_dir, cbench, dataset, json, pair_grades, plugins, text, write_temp, RedisServer,
};

fn run_command(logs: &Path, name: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cbench"));
    cmd.args(["run", "-q", "-n", name])
        .arg("--log-dir")
        .arg(logs)
        .arg("--dataset-dir")
        .arg(dataset())
        .args(extra)
        .env("CBENCH_CACHE_DIR", cache_dir())
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn report(logs: &Path, name: &str) -> Value {
    let out = cbench(&[
        "report",
        "-n",
        name,
        "--log-dir",
        logs.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let mut report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report.as_object_mut().unwrap().remove("run");
    report
}

#[test]
fn shards_sharing_a_log_dir_make_the_run_one_process_makes() {
    let logs = tempfile::tempdir().unwrap();
    let mini = plugins().mini_swe.display().to_string();
    let args = |shard: &str| {
        vec![
            "--agent".to_string(),
            mini.clone(),
            "-m".into(),
            "oracle".into(),
            "--shard".into(),
            shard.into(),
        ]
    };
    let shards: Vec<_> = ["0/2", "1/2"]
        .iter()
        .map(|s| {
            run_command(
                logs.path(),
                "sharded",
                &args(s).iter().map(String::as_str).collect::<Vec<_>>(),
            )
            .spawn()
            .unwrap()
        })
        .collect();
    for shard in shards {
        let out = shard.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let single = run_command(logs.path(), "single", &["--agent", &mini, "-m", "oracle"])
        .output()
        .unwrap();
    assert!(single.status.success(), "{}", text(&single));

    let run_dir = logs.path().join("sharded");
    // Every pair exactly once: one start event each, and the shards' pairs are disjoint.
    let mut starts: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(run_dir.join("events.jsonl"))
        .unwrap()
        .lines()
    {
        let event: Value = serde_json::from_str(line).unwrap();
        if event["kind"] == "pair_started" {
            *starts
                .entry(event["pair"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(starts.len(), 10, "{starts:?}");
    assert!(
        starts.values().all(|&n| n == 1),
        "a pair ran twice: {starts:?}"
    );
    let counts: Vec<u64> = ["summary-shard-0-of-2.json", "summary-shard-1-of-2.json"]
        .iter()
        .map(|f| json(&run_dir.join(f))["pairs"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 10, "{counts:?}");
    assert!(
        counts.iter().all(|&c| c > 0),
        "both shards had work: {counts:?}"
    );
    // The merged run is the single-process run: same grades, same report.
    assert_eq!(
        pair_grades(&run_dir),
        pair_grades(&logs.path().join("single"))
    );
    assert_eq!(
        report(logs.path(), "sharded"),
        report(logs.path(), "single")
    );
    // Resuming a shard finds its pairs done.
    let again = run_command(
        logs.path(),
        "sharded",
        &args("1/2").iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .output()
    .unwrap();
    assert!(again.status.success(), "{}", text(&again));
    let events = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap();
    assert_eq!(
        events.matches("pair_started").count(),
        10,
        "a resumed shard ran a pair again"
    );
}

/// `cbench watch -n name --log-dir logs`, its output piped.
fn watch_command(logs: &Path, name: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cbench"));
    cmd.args(["watch", "-n", name, "--log-dir"])
        .arg(logs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The first line `child` writes on stderr (within 60 s).
fn first_stderr_line(child: &mut std::process::Child) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining, so the child never blocks on a full pipe.
        for _ in lines {}
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("nothing on stderr within 60 s")
}

#[test]
fn ctrl_c_stops_watching_not_the_run() {
    let logs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(logs.path().join("watchd")).unwrap();
    std::fs::write(logs.path().join("watchd/config.json"), "{}").unwrap();
    std::fs::write(logs.path().join("watchd/events.jsonl"), "").unwrap();
    let mut watch = watch_command(logs.path(), "watched")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut waiting = String::new();
    stderr.read_line(&mut waiting).unwrap();
    // A typo gets the closest run's name while it waits.
    assert!(
        waiting.contains("waiting for run `watched`")
            && waiting.contains("(did you mean `watchd`?)"),
        "{waiting}"
    );
    // SAFETY: signalling a child this test spawned.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = watch.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains("stopped watching (SIGINT); the run itself is not affected")
            && !rest.contains("stopping; results"),
        "{rest}"
    );
}

/// Reads `child`'s stdout lines until it exits (or the deadline passes, which fails).
fn lines_until_exit(child: &mut std::process::Child, deadline: Duration) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let until = Instant::now() + deadline;
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => lines.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                assert!(
                    Instant::now() < until,
                    "watch did not end by itself; it printed:\n{}",
                    lines.join("\n")
                );
            }
        }
    }
    assert!(child.wait().unwrap().success());
    lines
}

#[test]
fn watch_follows_a_live_run_from_its_log_dir_and_ends_with_it() {
    let logs = tempfile::tempdir().unwrap();
    let mini = plugins().mini_swe.display().to_string();
    // watch is started first: it waits for the run to appear.
    let mut watch = watch_command(logs.path(), "watched").spawn().unwrap();
    let said = first_stderr_line(&mut watch);
    assert!(
        said.starts_with("waiting for run `watched` to start in")
            && said.contains("Ctrl-C stops watching, never the run"),
        "{said}"
    );
    let mut run = run_command(
        logs.path(),
        "watched",
        &["--agent", &mini, "-m", "oracle", "--concurrency", "2"],
    )
    .spawn()
    .unwrap();
    let lines = lines_until_exit(&mut watch, Duration::from_secs(120));
    assert!(run.wait().unwrap().success());
    let shown = lines.join("\n");
    assert_eq!(
        lines.iter().filter(|l| l.contains(" ▶ ")).count(),
        10,
        "{shown}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(" ✓ ") || l.contains(" ✗ "))
            .count(),
        10,
        "{shown}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains(" → ")).count(),
        20,
        "{shown}"
    );
    assert!(
        shown.contains("✗ cbench_textkit_task/task1 features_4_5 failed"),
        "{shown}"
    );
    assert!(
        lines.last().unwrap().ends_with("run watched finished"),
        "{shown}"
    );
}

#[test]
fn watch_follows_a_run_over_redis_from_anywhere() {
    let server = RedisServer::start();
    let logs = tempfile::tempdir().unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = write_temp(cfg_dir.path(), "modes.txt", "slow-chat");
    let probe = plugins().probe.display().to_string();
    // The watcher needs no log dir: it starts first, on the Redis channel only.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_cbench"))
        .args([
            "watch",
            "-n",
            "remote",
            "--log-dir",
            "/nonexistent",
            "--redis",
            &server.url(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("cbench:remote:events")
        .query::<Vec<(String, u64)>>(&mut server.connection())
        .unwrap()[0]
        .1
        == 0
    {
        assert!(Instant::now() < deadline, "watch never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = run_command(
        logs.path(),
        "remote",
        &[
            "--agent",
            &probe,
            "-m",
            "oracle",
            "-f",
            "1,3",
            "--no-auto-eval",
            "--agent-config",
            &cfg,
            "--redis",
            &server.url(),
        ],
    )
    .output()
    .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let lines = lines_until_exit(&mut watch, Duration::from_secs(60));
    let shown = lines.join("\n");
    for expected in [
        "run remote started: 1 pairs",
        "▶ cbench_textkit_task/task1 features_1_3",
        "agent1 → agent2: \"one\"",
        "agent1 → agent2: \"two\"",
        "agent2 → agent1: \"ack\"",
        "· cbench_textkit_task/task1 features_1_3 not graded",
        "run remote finished",
    ] {
        assert!(shown.contains(expected), "`{expected}` missing:\n{shown}");
    }
}
