//! Messaging over Redis (`--redis`): the same behaviour as the in-process bus, CooperBench's key
//! protocol, nothing lost across a Redis restart, an outage past its bound is an infrastructure
//! error that the next run of the same name retries, and no key is left behind.

use std::path::Path;
use std::time::{Duration, Instant};

use cbench::messaging::{MessageBus, RedisHub, SendError};
use serde_json::Value;

use crate::support::{cbench, dataset, json, pair_grades, plugins, text, write_temp, RedisServer};

/// Both buses for agents 1 and 2 (the Redis one on `server`).
async fn both_buses(server: &RedisServer, enabled: bool) -> Vec<(&'static str, MessageBus)> {
    let agents = vec!["agent1".to_string(), "agent2".to_string()];
    let hub = RedisHub::connect(&server.url(), "bus-test").await.unwrap();
    vec![
        ("in-process", MessageBus::local(&agents, enabled)),
        (
            "redis",
            MessageBus::Redis(hub.bus("pair/1_2", &agents, enabled)),
        ),
    ]
}

#[tokio::test]
async fn both_buses_behave_the_same() {
    let server = RedisServer::start();
    for (name, bus) in both_buses(&server, true).await {
        // A message sent before the peer looks is kept, and read once.
        bus.send("agent1", "agent2", "early").await.unwrap();
        let got = bus.receive("agent2").await.unwrap();
        assert_eq!(got.len(), 1, "{name}");
        assert_eq!(
            (got[0].from.as_str(), got[0].content.as_str()),
            ("agent1", "early"),
            "{name}"
        );
        assert!(
            bus.receive("agent2").await.unwrap().is_empty(),
            "{name}: read twice"
        );
        // Unknown recipients and oneself are refused.
        assert_eq!(
            bus.send("agent1", "agent9", "x").await,
            Err(SendError::UnknownRecipient("agent9".into())),
            "{name}"
        );
        // wait wakes on a send, and times out empty.
        let waiter = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.wait("agent1", Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        bus.send("agent2", "agent1", "ping").await.unwrap();
        let woke = waiter.await.unwrap().unwrap();
        assert_eq!(woke[0].content, "ping", "{name}");
        let started = Instant::now();
        assert!(bus
            .wait("agent1", Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty());
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{name}: wait returned early"
        );
        // A finished peer is refused, not silently lost.
        bus.mark_finished("agent2").await.unwrap();
        assert_eq!(
            bus.send("agent1", "agent2", "late").await,
            Err(SendError::PeerFinished("agent2".into())),
            "{name}"
        );
        // The conversation is every delivered message, in order.
        let conversation: Vec<String> = bus
            .conversation()
            .await
            .unwrap()
            .into_iter()
            .map(|m| format!("{}>{}:{}", m.from, m.to, m.content))
            .collect();
        assert_eq!(
            conversation,
            ["agent1>agent2:early", "agent2>agent1:ping"],
            "{name}"
        );
        bus.close().await;
    }
    for (name, bus) in both_buses(&server, false).await {
        assert_eq!(
            bus.send("agent1", "agent2", "x").await,
            Err(SendError::Disabled),
            "{name}"
        );
    }
    assert!(
        server.keys("run:*").is_empty(),
        "closed buses leave no keys: {:?}",
        server.keys("*")
    );
}

#[tokio::test]
async fn messages_use_cooperbenchs_key_protocol() {
    let server = RedisServer::start();
    let agents = vec!["agent1".to_string(), "agent2".to_string()];
    let hub = RedisHub::connect(&server.url(), "proto").await.unwrap();
    let MessageBus::Redis(bus) =
        MessageBus::Redis(hub.bus("repo/task1/features_1_2", &agents, true))
    else {
        unreachable!()
    };
    bus.send("agent1", "agent2", "hello").await.unwrap();
    let inbox = format!("run:{}:agent2:inbox", bus.run_id());
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(&inbox)
        .arg(0)
        .arg(-1)
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(raw.len(), 1, "{:?}", server.keys("*"));
    let stored: Value = serde_json::from_str(&raw[0]).unwrap();
    assert_eq!(stored["from"], "agent1");
    assert_eq!(stored["to"], "agent2");
    assert_eq!(stored["content"], "hello");
    assert!(stored["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(
        bus.run_id().starts_with("proto:repo/task1/features_1_2:"),
        "{}",
        bus.run_id()
    );
    // A second pair of the same run has its own namespace.
    let other = hub.bus("repo/task1/features_1_2", &agents, true);
    assert_ne!(other.run_id(), bus.run_id());
    bus.close().await;
}

fn run_with(logs: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    let log_dir = logs.display().to_string();
    let data = dataset().display().to_string();
    let mut args = vec![
        "run",
        "-q",
        "-n",
        name,
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &data,
    ];
    args.extend_from_slice(extra);
    cbench(&args)
}

/// conversation.json of every pair, timestamps removed.
fn conversations(run_dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (pair, _, _) in pair_grades(run_dir) {
        let mut c = json(&run_dir.join(&pair).join("conversation.json"));
        for m in c.as_array_mut().unwrap() {
            m.as_object_mut().unwrap().remove("timestamp");
        }
        out.push((pair, c));
    }
    out
}

#[test]
fn the_bundled_coop_run_over_redis_grades_and_talks_like_the_in_process_bus() {
    let server = RedisServer::start();
    let logs = tempfile::tempdir().unwrap();
    let mini = plugins().mini_swe.display().to_string();
    let url = server.url();
    let out = run_with(
        logs.path(),
        "local-bus",
        &["--agent", &mini, "-m", "oracle"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run_with(
        logs.path(),
        "redis-bus",
        &["--agent", &mini, "-m", "oracle", "--redis", &url],
    );
    assert!(out.status.success(), "{}", text(&out));
    let (local, redis) = (logs.path().join("local-bus"), logs.path().join("redis-bus"));
    assert_eq!(pair_grades(&local), pair_grades(&redis));
    let (a, b) = (conversations(&local), conversations(&redis));
    assert_eq!(a.len(), 10);
    assert!(
        a.iter().all(|(_, c)| c.as_array().unwrap().len() == 2),
        "{a:?}"
    );
    // The oracle's two announcements may land in either order: compare as sets per pair.
    for ((pa, ca), (pb, cb)) in a.iter().zip(&b) {
        assert_eq!(pa, pb);
        let mut ca: Vec<String> = ca
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        let mut cb: Vec<String> = cb
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        ca.sort();
        cb.sort();
        assert_eq!(ca, cb, "{pa}");
    }
    assert!(
        server.keys("run:*").is_empty(),
        "a finished run leaves no keys: {:?}",
        server.keys("*")
    );
}

#[test]
fn a_redis_restart_between_two_messages_loses_nothing() {
    let mut server = RedisServer::start();
    let logs = tempfile::tempdir().unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = write_temp(cfg_dir.path(), "modes.txt", "slow-chat");
    let probe = plugins().probe.display().to_string();
    let log_dir = logs.path().display().to_string();
    let data = dataset().display().to_string();
    let url = server.url();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cbench"))
        .args([
            "run",
            "-q",
            "-n",
            "restart",
            "--log-dir",
            &log_dir,
            "--dataset-dir",
            &data,
        ])
        .args([
            "--agent",
            &probe,
            "-m",
            "oracle",
            "-f",
            "1,3",
            "--no-auto-eval",
        ])
        .args(["--agent-config", &cfg, "--redis", &url])
        .env("CBENCH_CACHE_DIR", crate::support::cache_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Restart Redis once the first message is in its log, while agent1 pauses.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the first message never reached Redis"
        );
        let logged: Vec<String> = server.keys("run:restart:*:log");
        if !logged.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    std::thread::sleep(Duration::from_millis(1500));
    server.restart();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let pair = logs
        .path()
        .join("restart/cbench_textkit_task/task1/features_1_3");
    let result = json(&pair.join("result.json"));
    assert_eq!(
        result["agents"][1]["summary"], "heard one | two",
        "{result:#}"
    );
    assert_eq!(
        result["agents"][0]["summary"], "sent one, two; got [\"ack\"]",
        "{result:#}"
    );
    let conversation = json(&pair.join("conversation.json"));
    let contents: Vec<&str> = conversation
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["one", "two", "ack"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is back"),
        "{}",
        text(&out)
    );
}

#[test]
fn redis_down_past_the_bound_is_an_infrastructure_error_the_next_run_retries() {
    let mut server = RedisServer::start();
    let logs = tempfile::tempdir().unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = write_temp(cfg_dir.path(), "modes.txt", "slow-chat");
    let probe = plugins().probe.display().to_string();
    let log_dir = logs.path().display().to_string();
    let data = dataset().display().to_string();
    let url = server.url();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "-q",
            "-n",
            "outage",
            "--log-dir",
            &log_dir,
            "--dataset-dir",
            &data,
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
            &url,
            "--redis-outage-secs",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cbench"))
        .args(args(&[]))
        .env("CBENCH_CACHE_DIR", crate::support::cache_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.keys("run:outage:*:log").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first message never reached Redis"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let summary = json(&logs.path().join("outage/summary.json"));
    assert_eq!(summary["infra_errors"], 1, "{summary:#}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unreachable"),
        "{}",
        text(&out)
    );

    server.restart();
    let rerun: Vec<String> = args(&[]);
    let rerun: Vec<&str> = rerun.iter().map(String::as_str).collect();
    let out = cbench(&rerun);
    assert!(out.status.success(), "{}", text(&out));
    let result = json(
        &logs
            .path()
            .join("outage/cbench_textkit_task/task1/features_1_3/result.json"),
    );
    assert_eq!(
        result["agents"][1]["summary"], "heard one | two",
        "{result:#}"
    );
}

#[test]
fn an_unreachable_or_malformed_redis_is_refused_before_anything_runs() {
    let logs = tempfile::tempdir().unwrap();
    let mini = plugins().mini_swe.display().to_string();
    let out = run_with(
        logs.path(),
        "no-redis",
        &[
            "--agent",
            &mini,
            "-m",
            "oracle",
            "--redis",
            "redis://127.0.0.1:1",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--redis redis://127.0.0.1:1: cannot reach Redis"),
        "{err}"
    );
    assert!(!logs.path().join("no-redis").exists(), "nothing is written");
    let out = run_with(
        logs.path(),
        "bad-redis",
        &[
            "--agent",
            &mini,
            "-m",
            "oracle",
            "--redis",
            "localhost:6379",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Redis URL"),
        "{}",
        text(&out)
    );
}
