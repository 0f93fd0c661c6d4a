//! `cbench plugin new`: a scaffolded plugin in each language builds with its own build.sh and
//! runs as it is; a Python plugin's prints and traceback reach its agent's log.

use std::path::Path;
use std::process::Command;

use crate::support::{cbench, dataset, json, text, workspace};

/// `cbench plugin new NAME --lang LANG -o DIR/NAME`, then its build.sh; returns the .wasm.
fn scaffold_and_build(
    dir: &Path,
    name: &str,
    lang: &str,
    edit: impl FnOnce(&Path),
) -> std::path::PathBuf {
    let plugin_dir = dir.join(name);
    let out = cbench(&[
        "plugin",
        "new",
        name,
        "--lang",
        lang,
        "-o",
        plugin_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("{name}.wasm")) && said.contains("build.sh"),
        "{said}"
    );
    edit(&plugin_dir);
    let build = Command::new(plugin_dir.join("build.sh"))
        // Rust: share compiled dependencies between test runs.
        .env(
            "CARGO_TARGET_DIR",
            workspace()
                .join("target")
                .join("test-plugins")
                .join("scaffold"),
        )
        .output()
        .expect("running build.sh");
    assert!(
        build.status.success(),
        "{lang} build.sh failed: {}",
        text(&build)
    );
    let wasm = plugin_dir.join(format!("{name}.wasm"));
    assert!(
        wasm.is_file(),
        "{lang}: build.sh did not write {}",
        wasm.display()
    );
    wasm
}

fn run_oracle(logs: &Path, name: &str, wasm: &Path, extra: &[&str]) -> serde_json::Value {
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
        "--agent",
        wasm.to_str().unwrap(),
        "-m",
        "oracle",
        "-f",
        "1,2",
    ];
    args.extend_from_slice(extra);
    let out = cbench(&args);
    assert!(out.status.success(), "{name}: {}", text(&out));
    json(
        &logs
            .join(name)
            .join("cbench_textkit_task/task1/features_1_2/result.json"),
    )
}

#[test]
fn a_new_plugin_in_every_language_builds_and_runs_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    for lang in ["rust", "python", "js"] {
        let name = format!("scout_{lang}");
        let wasm = scaffold_and_build(dir.path(), &name, lang, |_| {});
        let inspect = cbench(&["plugin", "inspect", wasm.to_str().unwrap()]);
        assert!(inspect.status.success(), "{lang}: {}", text(&inspect));
        let result = run_oracle(logs.path(), &name, &wasm, &[]);
        assert_eq!(result["plugin"]["name"], name.as_str(), "{result:#}");
        assert_eq!(result["plugin"]["wit_version"], "0.3.0");
        for agent in result["agents"].as_array().unwrap() {
            assert_eq!(agent["status"], "Submitted", "{lang}: {agent:#}");
            assert_eq!(
                agent["capabilities_granted"],
                serde_json::json!(["messaging"])
            );
        }
        let eval = json(
            &logs
                .path()
                .join(&name)
                .join("cbench_textkit_task/task1/features_1_2/eval.json"),
        );
        assert_eq!(eval["overall_success"], true, "{lang}: {eval:#}");
    }
}

#[test]
fn a_python_plugin_that_prints_and_raises_shows_both_in_its_agents_log() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    // agent1 raises without the kit (componentize-py prints the traceback and traps); agent2
    // raises inside the kit's @agent_run (the traceback is printed, the error returned).
    let wasm = scaffold_and_build(dir.path(), "boom", "python", |plugin| {
        let app = plugin.join("app.py");
        let source = std::fs::read_to_string(&app).unwrap().replace(
            "    @agent_run\n    def run(self, task):\n",
            "    def run(self, task):\n        print(f\"boom: starting {task.agent_id}\")\n        \
             if task.agent_id == \"agent1\":\n            {}[\"missing-key\"]\n        \
             return self.kit_run(task)\n\n    @agent_run\n    def kit_run(self, task):\n        \
             {}[\"kit-key\"]\n",
        );
        assert!(source.contains("kit_run"), "the template changed shape");
        std::fs::write(&app, source).unwrap();
    });
    let result = run_oracle(logs.path(), "boom", &wasm, &["--no-auto-eval"]);
    let pair = logs
        .path()
        .join("boom/cbench_textkit_task/task1/features_1_2");
    let raw = &result["agents"][0];
    assert_eq!(raw["status"], "Error", "{raw:#}");
    let error = raw["error"].as_str().unwrap();
    assert!(
        error.contains("plugin trapped") && error.contains("last plugin output"),
        "{error}"
    );
    assert!(error.contains("KeyError: 'missing-key'"), "{error}");
    let log = std::fs::read_to_string(pair.join("agent1/plugin_output.log")).unwrap();
    assert!(log.contains("boom: starting agent1"), "{log}");
    assert!(
        log.contains("Traceback (most recent call last)")
            && log.contains("KeyError: 'missing-key'"),
        "{log}"
    );

    let kit = &result["agents"][1];
    assert_eq!(kit["status"], "Error", "{kit:#}");
    assert_eq!(
        kit["error"], "plugin returned an error: KeyError: 'kit-key'",
        "{kit:#}"
    );
    let log = std::fs::read_to_string(pair.join("agent2/plugin_output.log")).unwrap();
    assert!(log.contains("boom: starting agent2"), "{log}");
    assert!(
        log.contains("Traceback (most recent call last)") && log.contains("in kit_run"),
        "{log}"
    );
}
