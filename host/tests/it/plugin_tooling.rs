//! Author tooling and the plugin's outer contract: `cbench plugin inspect`, checks before
//! compiling, imports the host refuses, the bounded compile cache, captured plugin output.

use std::path::Path;
use std::time::Instant;

use crate::support::{cbench_with_env, json, plugins, text, write_temp, Run};

/// `plugin`'s bytes with every occurrence of `from` replaced by `to` (same length).
fn patched(plugin: &Path, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(plugin).unwrap();
    let mut i = 0;
    let mut hits = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from.as_bytes() {
            bytes[i..i + from.len()].copy_from_slice(to.as_bytes());
            hits += 1;
        }
        i += 1;
    }
    assert!(hits > 0, "`{from}` not found in {}", plugin.display());
    bytes
}

/// A different build of the same plugin: a custom section changes its hash, not its behaviour.
fn rebuild(plugin: &Path, n: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(plugin).unwrap();
    let name = format!("rebuild-{n}");
    let payload = format!("build {n}");
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name.as_bytes());
    section.extend_from_slice(payload.as_bytes());
    bytes.push(0); // custom section id
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    bytes
}

fn cache_entries(cache: &Path) -> Vec<std::fs::DirEntry> {
    match std::fs::read_dir(cache.join("components")) {
        Ok(read) => read.map(|e| e.unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn inspect_shows_the_contract_without_compiling() {
    let cache = tempfile::tempdir().unwrap();
    let env = [("CBENCH_CACHE_DIR", cache.path().to_str().unwrap())];
    let plugin = plugins().mini_swe.display().to_string();
    let out = cbench_with_env(&["plugin", "inspect", &plugin], &env);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "contract cooperbench:agent@0.3.0 (served by this host)",
        "exports  cooperbench:agent/agent@0.3.0",
        "✓ cooperbench:agent/llm@0.3.0",
        "✓ wasi:cli/stdout@",
        "verdict  ✓ cbench can run it",
        "add --compile",
    ] {
        assert!(shown.contains(expected), "`{expected}` missing:\n{shown}");
    }
    assert!(
        cache_entries(cache.path()).is_empty(),
        "inspect compiled it"
    );

    let out = cbench_with_env(&["plugin", "inspect", "--compile", "--json", &plugin], &env);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["name"], "mini_swe");
    assert_eq!(report["wit_package"], "cooperbench:agent@0.3.0");
    assert_eq!(report["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(cache_entries(cache.path()).len(), 1);
    // Once compiled, a plain inspect names it from the cache: no "add --compile".
    let out = cbench_with_env(&["plugin", "inspect", &plugin], &env);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("agent    mini_swe ") && !shown.contains("add --compile"),
        "{shown}"
    );
}

#[test]
fn a_wrong_wit_version_is_refused_in_well_under_a_second_and_nothing_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let env = [("CBENCH_CACHE_DIR", cache.path().to_str().unwrap())];
    let future = dir.path().join("future.wasm");
    std::fs::write(
        &future,
        patched(
            &plugins().mini_swe,
            "cooperbench:agent/agent@0.3.0",
            "cooperbench:agent/agent@0.9.0",
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = cbench_with_env(&["plugin", "inspect", future.to_str().unwrap()], &env);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(took.as_secs_f64() < 1.0, "inspect took {took:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("NOT served by this host"), "{shown}");
    assert!(
        shown.contains("✗ refused") && shown.contains("cooperbench:agent@0.9.0"),
        "{shown}"
    );

    // `run` refuses it before compiling: the cache stays empty.
    let run = Run::start_with_env(
        "future-plugin",
        &["--agent", future.to_str().unwrap(), "-m", "oracle"],
        &env,
    );
    assert_eq!(run.output.status.code(), Some(2), "{}", text(&run.output));
    assert!(
        cache_entries(cache.path()).is_empty(),
        "a refused plugin was compiled and cached"
    );
}

#[test]
fn an_import_the_host_does_not_provide_is_refused_naming_it_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    // What a default ComponentizeJS build looks like from outside: it imports wasi:http.
    let plugin = write_temp(
        dir.path(),
        "needs-http.wat",
        r#"(component
             (import "wasi:http/outgoing-handler@0.2.3" (instance))
             (instance $i)
             (export "cooperbench:agent/agent@0.1.0" (instance $i)))"#,
    );
    let run = Run::start("needs-http", &["--agent", &plugin, "-m", "oracle"]);
    assert_eq!(run.output.status.code(), Some(2), "{}", text(&run.output));
    let err = String::from_utf8_lossy(&run.output.stderr);
    assert!(err.contains("needs-http.wat"), "{err}");
    assert!(err.contains("`wasi:http/outgoing-handler@0.2.3`"), "{err}");
    assert!(err.contains("-d http"), "{err}");
    assert!(
        !run.dir().exists(),
        "nothing is written for a refused plugin"
    );

    let out = crate::support::cbench(&["plugin", "inspect", &plugin]);
    assert_eq!(out.status.code(), Some(1));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("✗ wasi:http/outgoing-handler@0.2.3"),
        "{shown}"
    );
}

#[test]
fn the_compile_cache_stays_under_its_cap_across_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cap_mb = 2u64;
    let env = [
        ("CBENCH_CACHE_DIR", cache.path().to_str().unwrap()),
        ("CBENCH_CACHE_MAX_MB", "2"),
    ];
    let mut newest = None;
    for n in 0..6 {
        let path = dir.path().join(format!("mini_swe-{n}.wasm"));
        std::fs::write(&path, rebuild(&plugins().mini_swe, n)).unwrap();
        let out = cbench_with_env(
            &["plugin", "inspect", "--compile", path.to_str().unwrap()],
            &env,
        );
        assert!(out.status.success(), "rebuild {n}: {}", text(&out));
        let entries = cache_entries(cache.path());
        let total: u64 = entries.iter().map(|e| e.metadata().unwrap().len()).sum();
        assert!(
            total <= cap_mb << 20,
            "after rebuild {n}: {total} bytes in {} entries",
            entries.len()
        );
        newest = Some(cbench::fsutil::sha256_hex(&std::fs::read(&path).unwrap()));
        let newest = newest.as_deref().unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e.file_name().to_string_lossy().starts_with(newest)),
            "the plugin just compiled was evicted"
        );
    }
    assert!(newest.is_some());
    assert!(
        cache_entries(cache.path()).len() >= 2,
        "the cap should hold a few builds"
    );

    let out = cbench_with_env(&["cache", "prune", "--all"], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed"),
        "{}",
        text(&out)
    );
    assert!(cache_entries(cache.path()).is_empty());
}

#[test]
fn a_plugin_that_prints_then_traps_leaves_both_in_its_log() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = write_temp(
        cfg_dir.path(),
        "modes.txt",
        "agent1=print-and-panic;agent2=noop",
    );
    let agent = plugins().probe.display().to_string();
    // Not quiet: the progress lines are what is checked.
    let run = Run::start_loud(
        "print-and-panic",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "-f",
            "1,3",
            "--agent-config",
            &cfg,
            "--no-auto-eval",
        ],
    );
    run.assert_ok();
    let result = json(&run.pair(1, 3).join("result.json"));
    let failed = &result["agents"][0];
    assert_eq!(failed["status"], "Error", "{failed:#}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("plugin trapped"), "{error}");
    assert!(error.contains("last plugin output"), "{error}");
    assert!(
        error.contains("deliberate failure after printing"),
        "{error}"
    );
    // The terminal names the file that holds the traceback.
    let log_path = run.pair(1, 3).join("agent1").join("plugin_output.log");
    let said = text(&run.output);
    assert!(
        said.contains(&format!(
            "its output (and any traceback): {}",
            log_path.display()
        )),
        "{said}"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("probe stdout: starting agent1"), "{log}");
    assert!(log.contains("probe stderr: about to fail"), "{log}");
    assert!(log.contains("deliberate failure after printing"), "{log}");
    // An agent that printed nothing gets no log file.
    assert!(!run
        .pair(1, 3)
        .join("agent2")
        .join("plugin_output.log")
        .exists());
}

/// A plugin's first use is a compile (~45 s for a Python plugin): the run says so and how long
/// it took, instead of waiting in silence; a cached plugin, or `-q`, says nothing.
#[test]
fn a_plugins_first_use_says_it_is_compiling_and_later_uses_do_not() {
    let logs = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let quiet_cache = tempfile::tempdir().unwrap();
    let plugin = plugins().mini_swe.to_str().unwrap().to_string();
    let data = crate::support::dataset().display().to_string();
    let log_dir = logs.path().display().to_string();
    let run = |name: &str, cache: &Path, quiet: bool| {
        let mut args = vec![
            "run",
            "-n",
            name,
            "--log-dir",
            &log_dir,
            "--dataset-dir",
            &data,
            "--agent",
            &plugin,
            "-m",
            "oracle",
            "-f",
            "1,2",
            "--no-auto-eval",
        ];
        if quiet {
            args.push("-q");
        }
        let out = cbench_with_env(&args, &[("CBENCH_CACHE_DIR", cache.to_str().unwrap())]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = run("first", cache.path(), false);
    assert!(
        first.contains(&format!("compiling plugin {plugin} (its first use"))
            && first.contains(&format!("compiled plugin {plugin} in ")),
        "{first}"
    );
    let second = run("second", cache.path(), false);
    assert!(!second.contains("compil"), "{second}");
    let quiet = run("quiet", quiet_cache.path(), true);
    assert!(!quiet.contains("compil"), "{quiet}");
}
