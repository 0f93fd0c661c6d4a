//! What a plugin can and cannot do, proven with the misbehaving `probe` plugin.

use cbench::plugin::PluginHost;

use crate::support::{json, plugins, text, write_temp, Run};

/// Runs the probe on pair 1,3 with per-agent modes; returns the run.
fn probe_run(name: &str, modes: &str, extra: &[&str]) -> Run {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = write_temp(cfg_dir.path(), "modes.txt", modes);
    let agent = plugins().probe.display().to_string();
    let mut args = vec![
        "--agent",
        agent.as_str(),
        "-m",
        "oracle",
        "-f",
        "1,3",
        "--agent-config",
        cfg.as_str(),
    ];
    args.extend_from_slice(extra);
    let run = Run::start(name, &args);
    run.assert_ok();
    run
}

fn agent(run: &Run, index: usize) -> serde_json::Value {
    json(&run.pair(1, 3).join("result.json"))["agents"][index].clone()
}

#[test]
fn a_plugin_sees_no_host_files_env_args_or_network() {
    let run = probe_run("isolation", "read-host-file", &[]);
    let a = agent(&run, 0);
    assert_eq!(a["status"], "Submitted", "{a:#}");
    let report = a["summary"].as_str().unwrap();
    for line in [
        "/etc/passwd: Err",
        "/etc/hostname: Err",
        "/proc/self/environ: Err",
        ".: Err",
        "env vars: 0",
        "args: 0",
        "tcp: Err",
    ] {
        assert!(report.contains(line), "expected `{line}` in:\n{report}");
    }
}

#[test]
fn a_spinning_plugin_is_stopped_at_its_deadline_while_its_teammate_finishes() {
    let run = probe_run(
        "spin",
        "agent1=spin;agent2=noop",
        &["--plugin-compute-secs", "1"],
    );
    let spinner = agent(&run, 0);
    assert_eq!(spinner["status"], "Error", "{spinner:#}");
    assert!(
        spinner["error"]
            .as_str()
            .unwrap()
            .contains("compute deadline of 1.0s"),
        "{spinner:#}"
    );
    assert!(
        spinner["plugin_compute_s"].as_f64().unwrap() < 5.0,
        "{spinner:#}"
    );
    assert_eq!(agent(&run, 1)["status"], "Submitted");
    assert!(
        run.pair(1, 3).join("eval.json").is_file(),
        "the pair is still graded"
    );
}

#[test]
fn waiting_inside_host_calls_does_not_count_as_compute() {
    let run = probe_run(
        "waits",
        "agent1=wait-in-host;agent2=noop",
        &["--plugin-compute-secs", "1"],
    );
    let waiter = agent(&run, 0);
    assert_eq!(waiter["status"], "Submitted", "{waiter:#}");
    assert!(waiter["wall_s"].as_f64().unwrap() >= 2.9, "{waiter:#}");
}

#[test]
fn a_plugin_exhausting_its_memory_cap_fails_alone() {
    let run = probe_run(
        "hog",
        "agent1=hog-memory;agent2=noop",
        &["--plugin-memory-mb", "64"],
    );
    let hog = agent(&run, 0);
    assert_eq!(hog["status"], "Error", "{hog:#}");
    assert!(
        hog["error"]
            .as_str()
            .unwrap()
            .contains("memory cap of 64 MiB"),
        "{hog:#}"
    );
    assert_eq!(agent(&run, 1)["status"], "Submitted");
}

#[test]
fn two_plugin_instances_exchange_messages_through_the_host() {
    let run = probe_run("chat", "chat", &[]);
    assert!(agent(&run, 0)["summary"]
        .as_str()
        .unwrap()
        .contains("heard agent2: hello from agent2"));
    assert!(agent(&run, 1)["summary"]
        .as_str()
        .unwrap()
        .contains("heard agent1: hello from agent1"));
    let conversation = json(&run.pair(1, 3).join("conversation.json"));
    let senders: Vec<&str> = conversation
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["from"].as_str().unwrap())
        .collect();
    assert_eq!(senders.len(), 2, "{conversation:#}");
    assert!(senders.contains(&"agent1") && senders.contains(&"agent2"));
}

#[tokio::test]
async fn a_second_load_comes_from_the_compiled_cache() {
    let cache = tempfile::tempdir().unwrap();
    let host = PluginHost::new(cache.path()).unwrap();
    let (first, t1) = host.load(&plugins().mini_swe).await.unwrap();
    let (second, t2) = host.load(&plugins().mini_swe).await.unwrap();
    assert!(!t1.from_cache);
    assert!(t2.from_cache);
    assert_eq!(first.identity, second.identity);
    assert_eq!(first.identity.name, "mini_swe");
    // A fresh host (new process, same engine config) also hits the cache.
    drop(host);
    let (_, t3) = PluginHost::new(cache.path())
        .unwrap()
        .load(&plugins().mini_swe)
        .await
        .unwrap();
    assert!(t3.from_cache);
}

#[test]
fn invalid_wasm_and_wrong_wit_versions_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    let run = Run::start("junk", &["--agent", junk.to_str().unwrap(), "-m", "oracle"]);
    assert_eq!(run.output.status.code(), Some(2), "{}", text(&run.output));
    let err = text(&run.output);
    assert!(
        err.contains("junk.wasm") && err.contains("not a valid WebAssembly component"),
        "{err}"
    );

    // Same plugin, export renamed to a future WIT version (same length keeps the binary valid).
    let bytes = std::fs::read(&plugins().mini_swe).unwrap();
    let from = b"cooperbench:agent/agent@0.3.0";
    let to = b"cooperbench:agent/agent@0.9.0";
    let mut patched = bytes.clone();
    let mut i = 0;
    while i + from.len() <= patched.len() {
        if &patched[i..i + from.len()] == from {
            patched[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
    assert_ne!(patched, bytes);
    let future = dir.path().join("future.wasm");
    std::fs::write(&future, patched).unwrap();
    let run = Run::start(
        "future",
        &["--agent", future.to_str().unwrap(), "-m", "oracle"],
    );
    assert_eq!(run.output.status.code(), Some(2), "{}", text(&run.output));
    let err = text(&run.output);
    assert!(
        err.contains("future.wasm")
            && err.contains("cooperbench:agent@0.9.0")
            && err.contains("cooperbench:agent@0.1.0"),
        "{err}"
    );
    assert!(
        !run.dir().exists(),
        "nothing is written for a refused plugin"
    );
}

#[test]
fn plugins_are_built_without_debug_info() {
    // The `plugin` profile strips the standard library's debug info too (it was 94% of the file).
    for path in [&plugins().mini_swe, &plugins().probe] {
        let bytes = std::fs::read(path).unwrap();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(
            !has(b".debug_info") && !has(b".debug_line"),
            "{} carries DWARF sections",
            path.display()
        );
        assert!(
            bytes.len() < 1 << 20,
            "{} is {} bytes",
            path.display(),
            bytes.len()
        );
    }
}
