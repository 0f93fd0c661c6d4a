//! A CooperBench user's day, as their documentation and CooperBench's own code have it: the
//! quickstart's commands verbatim (`cooperbench` → `cbench`) against the bundled task under the
//! quickstart's repository name, with mock servers playing `gpt-4o` (OpenAI) and the default
//! `vertex_ai/gemini-3-flash-preview` (Vertex AI, service-account token and all); agents by
//! CooperBench's names; `eval`'s filters; and a run written by CooperBench 0.0.14's own code
//! (host/tests/fixtures, scripts/make-cooperbench-fixture.py) imported, reported, viewed,
//! regraded and compared with a cbench run of the same pairs.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::mock_llm::{MockLlm, Received, Reply};
use crate::support::{cbench_in, dataset, json, plugins, text, workspace};

/// The bundled task's features: (id, description, gold patch).
fn gold() -> Vec<(u32, String, String)> {
    let task = dataset().join("cbench_textkit_task/task1");
    (1..=5)
        .map(|id| {
            let dir = task.join(format!("feature{id}"));
            (
                id,
                std::fs::read_to_string(dir.join("feature.md")).unwrap(),
                std::fs::read_to_string(dir.join("feature.patch")).unwrap(),
            )
        })
        .collect()
}

/// An oracle behind a real wire: the next command for an agent whose task is `task` after
/// `replies` replies: each feature the task names, its gold patch in turn, then submit.
fn oracle_command(task: &str, replies: usize) -> Option<String> {
    let features: Vec<(u32, String, String)> = gold()
        .into_iter()
        .filter(|(_, text, _)| task.contains(text.trim()))
        .collect();
    if features.is_empty() {
        return None;
    }
    Some(match features.get(replies) {
        Some((id, _, patch)) => cbench::llm::oracle::apply_command(&cbench::llm::FeatureBrief {
            id: *id,
            gold_patch: patch.clone(),
        }),
        None => "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT".into(),
    })
}

/// `gpt-4o` on OpenAI's wire.
fn openai_oracle(req: &Received) -> Reply {
    if req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some("Bearer sk-test")
    {
        return Reply::status(401, r#"{"error":{"message":"bad key"}}"#);
    }
    let messages = req.body["messages"].as_array().cloned().unwrap_or_default();
    let task = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let replies = messages.iter().filter(|m| m["role"] == "assistant").count();
    let Some(command) = oracle_command(&task, replies) else {
        return Reply::status(400, r#"{"error":{"message":"no feature in the prompt"}}"#);
    };
    Reply::ok(json!({
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "On it.",
            "tool_calls": [{"id": format!("call_{replies}"), "type": "function",
                "function": {"name": "bash", "arguments": json!({"command": command}).to_string()}}]}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100}
    }))
}

/// Vertex AI: the service account's token endpoint, then Gemini's wire at Vertex's path.
fn vertex_oracle(req: &Received) -> Reply {
    if req.path.ends_with("/token") {
        return Reply::ok(
            json!({"access_token": "vertex-test-token", "expires_in": 3600, "token_type": "Bearer"}),
        );
    }
    let expected_path = "/v1/projects/compat-project/locations/us-central1/publishers/google/models/gemini-3-flash-preview:generateContent";
    if req.path != expected_path {
        return Reply::status(404, &format!("unexpected path {}", req.path));
    }
    if req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some("Bearer vertex-test-token")
    {
        return Reply::status(401, r#"{"error":{"message":"no token"}}"#);
    }
    let contents = req.body["contents"].as_array().cloned().unwrap_or_default();
    let task = contents
        .iter()
        .filter(|c| c["role"] == "user")
        .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("\n");
    let replies = contents.iter().filter(|c| c["role"] == "model").count();
    let Some(command) = oracle_command(&task, replies) else {
        return Reply::status(400, r#"{"error":{"message":"no feature in the prompt"}}"#);
    };
    Reply::ok(json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "On it."},
            {"functionCall": {"name": "bash", "args": {"command": command}}}]},
            "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 1000, "candidatesTokenCount": 100, "totalTokenCount": 1100}
    }))
}

/// A working directory as a CooperBench user has it: `./dataset` holding the bundled task as
/// `llama_index_task/task8394` (features 1 and 2) and a `lite` subset of it.
fn user_dir(root: &Path) -> PathBuf {
    let task_from = dataset().join("cbench_textkit_task/task1");
    let task = root.join("dataset/llama_index_task/task8394");
    std::fs::create_dir_all(&task).unwrap();
    for entry in [
        "Dockerfile",
        "runner.sh",
        "run_tests.sh",
        "repo",
        "feature1",
        "feature2",
    ] {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(task_from.join(entry))
            .arg(task.join(entry))
            .status()
            .unwrap();
        assert!(status.success());
    }
    std::fs::create_dir_all(root.join("dataset/subsets")).unwrap();
    std::fs::write(
        root.join("dataset/subsets/lite.json"),
        json!({"name": "lite", "description": "one pair", "stats": {"tasks": 1, "pairs": 1, "repos": 1},
               "tasks": [{"repo": "llama_index_task", "task_id": 8394, "pairs": [[1, 2]]}]})
        .to_string(),
    )
    .unwrap();
    root.to_path_buf()
}

/// The environment of the user's shell: keys and endpoints of the mock providers, and the
/// installed plugins.
fn user_env(openai: &MockLlm, vertex: &MockLlm, keys: &Path) -> Vec<(String, String)> {
    let key_file = keys.join("service-account.json");
    let private_key = std::fs::read_to_string(
        workspace().join("host/llm/tests/fixtures/test-service-account-key.pem"),
    )
    .unwrap();
    std::fs::write(
        &key_file,
        json!({"type": "service_account", "project_id": "compat-project",
               "private_key_id": "test", "private_key": private_key,
               "client_email": "compat@compat-project.iam.gserviceaccount.com",
               "token_uri": format!("{}/token", vertex.base_url)})
        .to_string(),
    )
    .unwrap();
    let plugin_dir = plugins().mini_swe.parent().unwrap().to_path_buf();
    vec![
        ("OPENAI_API_KEY".into(), "sk-test".into()),
        ("OPENAI_BASE_URL".into(), openai.base_url.clone()),
        (
            "GOOGLE_APPLICATION_CREDENTIALS".into(),
            key_file.display().to_string(),
        ),
        ("VERTEXAI_API_BASE".into(), vertex.base_url.clone()),
        (
            "CBENCH_PLUGIN_PATH".into(),
            plugin_dir.display().to_string(),
        ),
    ]
}

/// Runs a documented `cooperbench …` line with `cbench` in its place, in `dir`.
fn documented(dir: &Path, line: &str, env: &[(String, String)]) -> std::process::Output {
    let args: Vec<&str> = line
        .strip_prefix("cooperbench ")
        .expect("a cooperbench command")
        .split_whitespace()
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = cbench_in(dir, &args, &env);
    assert!(out.status.success(), "`{line}` failed:\n{}", text(&out));
    out
}

fn overall_success(dir: &Path, run: &str) -> bool {
    json(&dir.join(format!(
        "logs/{run}/llama_index_task/task8394/features_1_2/eval.json"
    )))["overall_success"]
        == true
}

#[test]
fn the_quickstart_commands_run_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let openai = MockLlm::with_handler(openai_oracle);
    let vertex = MockLlm::with_handler(vertex_oracle);
    let env = user_env(&openai, &vertex, tmp.path());

    // README: a coop run of one repository with gpt-4o, then eval (and eval --force).
    let coop = user_dir(&tmp.path().join("coop"));
    documented(
        &coop,
        "cooperbench run -n my-experiment -r llama_index_task -m gpt-4o",
        &env,
    );
    assert!(overall_success(&coop, "my-experiment"));
    documented(&coop, "cooperbench eval -n my-experiment", &env);
    documented(&coop, "cooperbench eval -n my-experiment --force", &env);
    // __init__.py's docstring.
    documented(
        &coop,
        "cooperbench run -n my-exp -r llama_index_task -m gpt-4o",
        &env,
    );
    documented(&coop, "cooperbench eval -n my-exp", &env);
    assert!(overall_success(&coop, "my-exp"));

    // README's solo line (its own directory: a cbench run name holds one setting).
    let solo = user_dir(&tmp.path().join("solo"));
    documented(
        &solo,
        "cooperbench run -n my-experiment -r llama_index_task -m gpt-4o --setting solo",
        &env,
    );
    assert!(
        overall_success(&solo, "my-experiment"),
        "the solo agent implements both features"
    );

    // cli.py's docstring: CooperBench's default model (Vertex AI), and an auto-named run.
    let defaults = user_dir(&tmp.path().join("defaults"));
    let out = documented(
        &defaults,
        "cooperbench run -n my-experiment --setting solo -r llama_index_task",
        &env,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("model: vertex_ai/gemini-3-flash-preview"),
        "{}",
        text(&out)
    );
    assert!(overall_success(&defaults, "my-experiment"));
    assert!(vertex.received().iter().any(|r| r.path == "/token"));
    documented(&defaults, "cooperbench run --setting solo -s lite", &env);
    let auto = "solo-msa-vertex-ai-gemini-3-flash-preview-lite";
    assert!(
        defaults
            .join("logs")
            .join(auto)
            .join("summary.json")
            .is_file(),
        "auto-named run {auto}: {:?}",
        std::fs::read_dir(defaults.join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    documented(&defaults, "cooperbench eval -n my-experiment --force", &env);

    // `cooperbench prepare`: the dataset from the (mock) Hugging Face hub into ./dataset.
    let prepare = tmp.path().join("prepare");
    std::fs::create_dir_all(&prepare).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (hub, _state) = runtime.block_on(crate::dataset_fetch::start_hub());
    let mut prepare_env = env.clone();
    prepare_env.push(("HF_ENDPOINT".into(), hub));
    documented(&prepare, "cooperbench prepare", &prepare_env);
    assert!(prepare.join("dataset/subsets/lite.json").is_file());
}

#[test]
fn agents_resolve_by_name_and_cooperbench_names_stand_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = user_dir(tmp.path());
    let plugin_dir = plugins().mini_swe.parent().unwrap().display().to_string();
    let env = [("CBENCH_PLUGIN_PATH", plugin_dir.as_str())];
    let out = cbench_in(&dir, &["plugin", "list"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("mini_swe         mini_swe 0.3.0"),
        "{listed}"
    );
    assert!(
        listed.contains("mini_swe_agent_v2 (CooperBench) → mini_swe"),
        "{listed}"
    );

    let out = cbench_in(
        &dir,
        &[
            "run",
            "-a",
            "mini_swe_agent_v2",
            "-m",
            "oracle",
            "-r",
            "llama_index_task",
            "--git",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("standing in for CooperBench's mini_swe_agent_v2"),
        "{said}"
    );
    // CooperBench's auto-name: `-git` after the agent, so a --git rerun is a run of its own.
    assert!(
        dir.join("logs/coop-msa_v2-git-oracle-full-llama_index_task/config.json")
            .is_file(),
        "{said}"
    );

    // A name pinned to its bytes runs; a wrong pin names both hashes.
    let sha = cbench::fsutil::sha256_hex(&std::fs::read(&plugins().mini_swe).unwrap());
    let pinned = format!("mini_swe@sha256:{sha}");
    let out = cbench_in(
        &dir,
        &["run", "-n", "pinned", "-a", &pinned, "-m", "oracle", "-q"],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let wrong = format!("mini_swe@sha256:{}", "0".repeat(64));
    let out = cbench_in(
        &dir,
        &["run", "-n", "wrong-pin", "-a", &wrong, "-m", "oracle"],
        &env,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains(&sha), "{}", text(&out));

    let out = cbench_in(&dir, &["run", "-a", "no_such_agent", "-m", "oracle"], &env);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--agent no_such_agent: no plugin of that name"),
        "{err}"
    );
    assert!(err.contains("plugins found: mini_swe"), "{err}");
    let out = cbench_in(&dir, &["run", "-a", "dataset", "-m", "oracle"], &env);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a directory, not a plugin"),
        "{}",
        text(&out)
    );
}

#[test]
fn eval_filters_grade_only_the_pairs_they_select() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let run = |args: &[&str]| cbench_in(tmp.path(), args, &[]);
    let out = run(&[
        "run",
        "-n",
        "filtered",
        "-a",
        &plugin,
        "-m",
        "oracle",
        "-s",
        "smoke",
        "--dataset-dir",
        &ds,
        "--no-auto-eval",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["eval", "-n", "filtered", "-f", "1,2", "-c", "2", "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    let task = tmp.path().join("logs/filtered/cbench_textkit_task/task1");
    assert!(task.join("features_1_2/eval.json").is_file());
    assert!(!task.join("features_1_3/eval.json").exists());
    assert!(!task.join("features_4_5/eval.json").exists());
    // The union-rescued conflict names its file.
    let merged = &json(&task.join("features_1_2/eval.json"))["merged"];
    assert_eq!(merged["conflict_files"], json!(["textkit/strings.py"]));

    let out = run(&["eval", "-n", "filtered", "-f", "2,3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("none of its pairs matches the -s/-r/-t/-f filters"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_failing_test_is_named_in_eval_json() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let run = |args: &[&str]| cbench_in(tmp.path(), args, &[]);
    let out = run(&[
        "run",
        "-n",
        "broken",
        "-a",
        &plugin,
        "-m",
        "oracle",
        "-f",
        "1,3",
        "--dataset-dir",
        &ds,
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // agent1's patch, as if it had reversed the characters instead of the words.
    let pair = tmp
        .path()
        .join("logs/broken/cbench_textkit_task/task1/features_1_3");
    let patch = std::fs::read_to_string(pair.join("agent1/patch.diff")).unwrap();
    let broken = patch.replace(r#"" ".join(reversed(text.split()))"#, r#"text[::-1]"#);
    assert_ne!(patch, broken, "the gold patch changed; update this test");
    std::fs::write(pair.join("agent1/patch.diff"), broken).unwrap();
    let out = run(&["eval", "-n", "broken", "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    let eval = json(&pair.join("eval.json"));
    let error = eval["agent1"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("AssertionError in test_"),
        "agent1's error: {error:?}"
    );
    assert_eq!(eval["agent2"]["error"], Value::Null);
    assert!(eval["merged"]["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("AssertionError in test_")));
}

#[test]
fn the_oracle_solo_agent_implements_overlapping_features() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let out = cbench_in(
        tmp.path(),
        &[
            "run",
            "-n",
            "solo12",
            "-a",
            &plugin,
            "-m",
            "oracle",
            "-f",
            "1,2",
            "--setting",
            "solo",
            "--dataset-dir",
            &ds,
            "-q",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let eval = json(
        &tmp.path()
            .join("logs/solo12/cbench_textkit_task/task1/features_1_2/eval.json"),
    );
    assert_eq!(eval["overall_success"], true, "{eval:#}");
}

/// The CooperBench 0.0.14 run in the fixtures (written by its own code).
fn fixture(setting: &str) -> PathBuf {
    workspace().join(format!(
        "host/tests/fixtures/cooperbench-0.0.14/{setting}-msa_v2-gemini-3-flash-fixture-cbench-textkit-1"
    ))
}

#[test]
fn a_cooperbench_run_imports_reports_views_regrades_and_compares() {
    let tmp = tempfile::tempdir().unwrap();
    // The bundled dataset with the fixture's pairs as a subset.
    let ds = tmp.path().join("dataset");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(dataset())
        .arg(&ds)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        ds.join("subsets/fixture.json"),
        json!({"name": "fixture", "tasks": [{"repo": "cbench_textkit_task", "task_id": 1, "pairs": [[1, 2], [3, 4]]}]})
            .to_string(),
    )
    .unwrap();
    let ds_arg = ds.display().to_string();
    let run = |args: &[&str]| cbench_in(tmp.path(), args, &[]);
    let imported = "coop-msa_v2-gemini-3-flash-fixture-cbench-textkit-1";

    // Read as it is, a CooperBench directory is named for what it is.
    let raw = fixture("coop");
    let out = run(&[
        "report",
        "-n",
        imported,
        "--log-dir",
        &raw.parent().unwrap().display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is a CooperBench run directory")
            && text(&out).contains("cbench import cooperbench"),
        "{}",
        text(&out)
    );

    let out = run(&[
        "import",
        "cooperbench",
        &raw.display().to_string(),
        "--dataset-dir",
        &ds_arg,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 pairs, 2 graded by CooperBench"),
        "{}",
        text(&out)
    );
    let again = run(&["import", "cooperbench", &raw.display().to_string()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).contains("--force"), "{}", text(&again));

    let run_dir = tmp.path().join("logs").join(imported);
    let pair = run_dir.join("cbench_textkit_task/task1/features_1_2");
    for file in [
        "agent1/patch.diff",
        "agent1/trajectory.json",
        "agent2/patch.diff",
        "conversation.json",
        "result.json",
        "eval.json",
        "cooperbench/agent1.patch",
    ] {
        assert!(pair.join(file).is_file(), "{file} missing");
    }
    let trajectory = json(&pair.join("agent1/trajectory.json"));
    assert!(trajectory["steps"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));
    assert!(trajectory["token_usage"]["prompt_tokens"].as_u64() > Some(0));
    let conversation = json(&pair.join("conversation.json"));
    assert_eq!(conversation[0]["from"], "agent1");
    assert_eq!(
        json(&pair.join("eval.json"))["grading_version"],
        "cooperbench"
    );

    let out = run(&["report", "-n", imported]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("overall success: 2/2"),
        "{}",
        text(&out)
    );
    let out = run(&["view", "-n", imported]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(run_dir.join("view/index.html").is_file() || text(&out).contains("index.html"));

    // A cbench plugin on the same pairs, then the head to head once both are graded by cbench.
    let out = run(&[
        "run",
        "-n",
        "cbench-oracle",
        "-a",
        &plugins().mini_swe.display().to_string(),
        "-m",
        "oracle",
        "-s",
        "fixture",
        "--dataset-dir",
        &ds_arg,
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["eval", "-n", imported, "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(
        json(&pair.join("eval.json"))["grading_version"],
        "cooperbench",
        "regraded the cbench way"
    );
    let out = run(&["compare", "cbench-oracle", imported]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("2 pairs graded in every run"), "{said}");
    assert!(said.contains("mini_swe_agent_v2 CooperBench"), "{said}");

    // The solo run of the fixture: one agent, graded alone.
    let out = run(&[
        "import",
        "cooperbench",
        &fixture("solo").display().to_string(),
        "-n",
        "cb-solo",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["report", "-n", "cb-solo"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("individual success: 2/2"),
        "{}",
        text(&out)
    );
}

#[test]
fn models_says_which_variables_are_set_and_never_their_values() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("OPENAI_API_KEY", "sk-zq9v-openai"),
        ("AWS_SECRET_ACCESS_KEY", "zq9v-aws"),
        ("AWS_ACCESS_KEY_ID", "AKIDzq9v"),
        ("AWS_REGION", "us-east-1"),
    ];
    let out = cbench_in(tmp.path(), &["models"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(!said.contains("zq9v"), "{said}");
    assert!(said.contains("✓ OPENAI_API_KEY set"), "{said}");
    assert!(said.contains("vertex_ai/<model>"), "{said}");
    let out = cbench_in(tmp.path(), &["models", "--json"], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("zq9v"), "{}", text(&out));
    let forms: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bedrock = forms
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["form"] == "bedrock/<model>")
        .expect("bedrock is listed");
    assert_eq!(bedrock["ready"], true, "{bedrock:#}");
}
