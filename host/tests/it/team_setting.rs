//! The team setting (CooperBench 0.0.29's `--setting team`): a lead and members coordinate
//! through the host's task list and typed requests, and the host enforces the rules a plugin
//! might try to break — only the owner updates a task, only the lead creates one, one claim
//! wins. Played through mini_swe's real loop with a scripted model.

use serde_json::Value;

use crate::support::{cbench, json, plugins, text, write_temp, Run};

const SUBMIT: &str = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";

fn bash(command: &str) -> Value {
    serde_json::json!({ "bash": command })
}

/// Runs the bundled task's features 1,2,3 as a team of mini_swe agents under `script`.
fn team_run(name: &str, script: &Value, extra: &[&str]) -> Run {
    let mut args = vec!["-f", "1,2,3"];
    args.extend_from_slice(extra);
    let run = start_team(name, script, &args);
    run.assert_ok();
    run
}

/// Starts a team-setting run of mini_swe under the scripted model `script`, with `args`.
fn start_team(name: &str, script: &Value, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(dir.path(), "script.json", &script.to_string());
    let model = format!("scripted:{path}");
    let agent = plugins().mini_swe.display().to_string();
    let mut all = vec!["--agent", &agent, "-m", &model, "--setting", "team"];
    all.extend_from_slice(args);
    Run::start(name, &all)
}

fn pair_dir(run: &Run) -> std::path::PathBuf {
    run.dir().join("cbench_textkit_task/task1/features_1_2_3")
}

/// Every observation an agent was given for its team commands, in order.
fn observations(run: &Run, agent: &str) -> Vec<(String, String)> {
    let trajectory = json(&pair_dir(run).join(agent).join("trajectory.json"));
    trajectory["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"].as_str().unwrap_or("").starts_with("team_"))
        .map(|s| {
            (
                s["action"].as_str().unwrap().to_string(),
                s["observation"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn log(run: &Run) -> Vec<Value> {
    json(&pair_dir(run).join("task_log.json"))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_team_coordinates_through_the_hosts_task_list_and_the_rules_hold() {
    let script = serde_json::json!({
        "agent1": [
            bash("coop-task-create 'Shared: document the new helpers'"),
            bash("sleep 3"),
            bash("coop-pending"),
            bash("coop-respond r1 'yes, go ahead'"),
            bash(SUBMIT),
        ],
        "agent2": [
            bash("coop-task-list --mine"),
            bash("coop-task-claim t1"),
            bash("sleep 1"),
            bash("coop-task-claim t4"),
            bash("coop-task-update t1 done -n 'feature 2 in'"),
            bash(SUBMIT),
        ],
        "agent3": [
            bash("coop-task-claim t3"),
            bash("coop-task-update t1 blocked -n 'taking over'"),
            bash("coop-task-create 'my own task'"),
            bash("coop-request agent1 plan-approval 'may I edit textkit/numbers.py?'"),
            bash("sleep 1"),
            bash("coop-task-claim t4"),
            bash("coop-await r1 20"),
            bash("echo chained && coop-pending"),
            bash(SUBMIT),
        ],
    });
    let run = team_run("team-rules", &script, &["--no-auto-eval"]);
    let result = json(&pair_dir(&run).join("result.json"));
    assert_eq!(result["setting"], "team");
    for agent in result["agents"].as_array().unwrap() {
        assert_eq!(
            agent["capabilities_granted"],
            serde_json::json!(["messaging", "team"]),
            "{agent:#}"
        );
        assert_eq!(agent["status"], "Submitted", "{agent:#}");
    }

    // Owner-only update and lead-only create, refused by the host with reasons the agent saw.
    let third = observations(&run, "agent3");
    assert!(
        third[0].0 == "team_claim"
            && third[0]
                .1
                .contains("task reserved for `agent1` (its suggested owner"),
        "{third:?}"
    );
    assert!(
        third[1].0 == "team_update"
            && third[1]
                .1
                .contains("only the task's owner may update it (owner: agent2)"),
        "{third:?}"
    );
    assert!(
        third[2].0 == "team_create" && third[2].1.contains("only the lead may create tasks"),
        "{third:?}"
    );
    // A team command chained in a shell line reaches bash; the model is told why it failed.
    let chained = json(&pair_dir(&run).join("agent3/trajectory.json")).to_string();
    assert!(
        chained.contains("put each on a line of its own"),
        "no hint for a chained team command"
    );
    let answer = third
        .iter()
        .find(|(action, _)| action == "team_await_response")
        .expect("agent3 waited for its answer");
    assert!(
        answer.1.contains("agent1 answered: yes, go ahead"),
        "{third:?}"
    );

    // One claim of the contested task won; the loser was told who has it.
    let events = log(&run);
    let claims_of_t4: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "claim" && e["task_id"] == "t4")
        .collect();
    assert_eq!(claims_of_t4.len(), 1, "{events:#?}");
    let winner = claims_of_t4[0]["by"].as_str().unwrap();
    let loser = if winner == "agent2" {
        "agent3"
    } else {
        "agent2"
    };
    assert!(
        observations(&run, loser).iter().any(
            |(a, o)| a == "team_claim" && o.contains(&format!("already claimed by `{winner}`"))
        ),
        "{:?}",
        observations(&run, loser)
    );

    // The audit log has CooperBench's event kinds, and the metrics come from it.
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "create").count(),
        4,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"request") && kinds.contains(&"response"),
        "{kinds:?}"
    );
    assert_eq!(result["lead_agent"], "agent1");
    assert_eq!(result["team_features"]["mcp"], true);
    let tasks = json(&pair_dir(&run).join("tasks.json"));
    assert_eq!(tasks[0]["status"], "done", "{tasks:#}");
    let metrics = &result["metrics"];
    assert_eq!(metrics["tasks_total"], 4, "{metrics:#}");
    assert_eq!(metrics["tasks_done"], 1, "{metrics:#}");
    assert_eq!(metrics["unowned_at_end"], 0, "{metrics:#}");
    assert!(metrics["claims_per_agent"]["agent2"].as_u64().unwrap() >= 1);
    assert_eq!(
        metrics["updates_per_agent"],
        serde_json::json!({"agent2": 1})
    );
    assert_eq!(
        (metrics["requests"].as_u64(), metrics["responses"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(metrics["time_to_first_claim_seconds"].as_f64().unwrap() >= 0.0);

    // Auto-refresh: the member saw the seeded list (its own task marked) before a model call.
    let trajectory = json(&pair_dir(&run).join("agent2/trajectory.json"));
    let seen = trajectory.to_string();
    assert!(
        seen.contains("[Team task list]")
            && seen.contains("owner=agent2 (you own): Implement feature 2"),
        "agent2 never saw the task list"
    );

    // `cbench watch` follows the task list live: every change is a line of events.jsonl.
    let logs = run.logs.path().to_str().unwrap();
    let out = cbench(&["watch", "-n", "team-rules", "--log-dir", logs]);
    let watched = text(&out);
    assert!(
        watched.contains("agent3 asked agent1 [plan-approval] (r1)")
            && watched.contains("agent2 set t1 to done: \"feature 2 in\"")
            && watched.contains("host created t1 \"Implement feature 2\" for agent2"),
        "{watched}"
    );

    // The report and the pair page show the team's figures and its task list.
    let out = cbench(&["report", "-n", "team-rules", "--log-dir", logs]);
    let report = text(&out);
    assert!(
        report.contains("team (1 pair):")
            && report.contains("tasks done 1/4 · unowned at end 0")
            && report.contains("requests 1 (answered 1)"),
        "{report}"
    );
    let out = cbench(&["view", "-n", "team-rules", "--log-dir", logs]);
    assert!(out.status.success(), "{}", text(&out));
    let page = format!(
        "file://{}?p=cbench_textkit_task__task1__features_1_2_3",
        run.dir().join("view/pair.html").display()
    );
    let (pair, log) = crate::presentation::browse(&page, None);
    assert!(
        crate::presentation::console_errors(&log).is_empty(),
        "{log}"
    );
    assert!(
        pair.contains("tasks done 1/4") && pair.contains("Shared: document the new helpers"),
        "{pair}"
    );
    let index = format!("file://{}", run.dir().join("view/index.html").display());
    let (overview, log) = crate::presentation::browse(&index, None);
    assert!(
        crate::presentation::console_errors(&log).is_empty(),
        "{log}"
    );
    assert!(
        overview.contains("team (lead agent1; off: none)"),
        "the header does not show the team: {overview}"
    );
}

#[test]
fn each_team_no_flag_switches_off_exactly_its_mechanism() {
    let script = serde_json::json!({
        "*": [
            bash("coop-task-list"),
            bash("coop-pending"),
            bash("coop-request agent1 ping 'are you there?'"),
            bash(SUBMIT),
        ],
    });
    let run = team_run("team-no-list", &script, &["--team-no-task-list"]);
    let first = observations(&run, "agent2");
    // tasks() and pending() are polls, not recorded as actions: look at what the model was told.
    let told = json(&pair_dir(&run).join("agent2/trajectory.json")).to_string();
    assert!(
        told.contains("team command failed: not available in this run"),
        "the task list answered though switched off: {first:?}"
    );
    assert!(
        told.contains("no requests waiting for your answer"),
        "the protocol should stay on"
    );
    assert!(
        !told.contains("[Team task list]"),
        "auto-refresh showed a switched-off list"
    );
    let config = json(&run.dir().join("config.json"));
    assert_eq!(config["team_features"]["task_list"], false);
    assert_eq!(config["team_features"]["protocol"], true);
    let kinds: Vec<Value> = log(&run).iter().map(|e| e["kind"].clone()).collect();
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| k == "request"),
        "without a task list nothing is seeded, created or claimed; the requests still go: {kinds:?}"
    );

    let full = team_run("team-full", &script, &[]);
    let logs = tempfile::tempdir().unwrap();
    for r in [&run, &full] {
        let name = r.dir().file_name().unwrap().to_owned();
        std::fs::rename(r.dir(), logs.path().join(name)).unwrap();
    }
    let out = cbench(&[
        "compare",
        "team-full",
        "team-no-list",
        "--log-dir",
        logs.path().to_str().unwrap(),
    ]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("--team-no-* (team features): team-full {")
            && said.contains("mechanisms off             none"),
        "{said}"
    );

    // Typed requests are speaking: a team that only used them is not a silent pair.
    let modes = |run_name: &str| {
        json(
            &logs
                .path()
                .join(run_name)
                .join("cbench_textkit_task/task1/features_1_2_3/analysis.json"),
        )["modes"]
            .clone()
    };
    assert_eq!(modes("team-full"), serde_json::json!([]));

    let run = team_run("team-no-protocol", &script, &["--team-no-protocol"]);
    let told = json(&pair_dir(&run).join("agent2/trajectory.json")).to_string();
    assert!(
        told.contains("[Team task list]"),
        "the task list should stay on"
    );
    assert!(
        told.contains("team command failed: not available in this run"),
        "the protocol answered though switched off"
    );
    // No request went through and nobody messaged: silent.
    assert_eq!(
        json(&pair_dir(&run).join("analysis.json"))["modes"],
        serde_json::json!(["silent_pair"])
    );
}

#[test]
fn a_plugin_without_the_team_capability_and_a_stray_team_flag_are_refused() {
    // mini_swe built against WIT 0.2.0 cannot declare `team`.
    let old = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mini_swe-wit-0.2.0.wasm")
        .display()
        .to_string();
    let run = Run::start(
        "team-old",
        &[
            "--agent",
            &old,
            "-m",
            "oracle",
            "--setting",
            "team",
            "-f",
            "1,2",
        ],
    );
    assert!(!run.output.status.success());
    let said = text(&run.output);
    assert!(
        said.contains("mini_swe-wit-0.2.0.wasm")
            && said.contains("does not declare the `team` capability"),
        "{said}"
    );
    let run = Run::start(
        "team-stray",
        &["--agent", &old, "-m", "oracle", "--team-no-mcp"],
    );
    assert_eq!(run.output.status.code(), Some(2), "{}", text(&run.output));
    assert!(
        text(&run.output)
            .contains("--team-no-mcp switches off a mechanism of the team setting, which this run does not use"),
        "{}",
        text(&run.output)
    );
}

/// Every agent of every pair leaves a mark in its team's scratchpad, waits, and counts the
/// marks it sees; one also plants a link to a host file there. Returns the run.
fn scratchpad_run(name: &str, target: &std::path::Path, extra: &[&str]) -> Run {
    let script = serde_json::json!({
        "*": [
            bash("mktemp -p \"$CBENCH_SCRATCHPAD\" mark.XXXXXX >/dev/null && echo marked"),
            bash(&format!("ln -s {} \"$CBENCH_SCRATCHPAD/link-$RANDOM\" && echo linked", target.display())),
            bash("sleep 3"),
            bash("echo SEEN=$(ls \"$CBENCH_SCRATCHPAD\" | grep -c '^mark')"),
            bash(SUBMIT),
        ],
    });
    let mut args = vec!["--no-auto-eval", "-c", "10"];
    args.extend_from_slice(extra);
    let run = start_team(name, &script, &args);
    run.assert_ok();
    run
}

/// Checks every agent of every pair saw exactly its own pair's two marks, that nothing of the
/// scratchpad reached a patch, and that the host's cleanup did not follow the planted links.
fn assert_shared_within_each_pair_only(run: &Run, target: &std::path::Path) {
    let mut agents = 0;
    for a in 1..=5 {
        for b in a + 1..=5 {
            for agent in ["agent1", "agent2"] {
                let dir = run.pair(a, b).join(agent);
                let told = json(&dir.join("trajectory.json")).to_string();
                assert!(told.contains("linked"), "{a},{b} {agent}: {told}");
                assert!(
                    told.contains("SEEN=2"),
                    "{a},{b} {agent} did not see exactly its pair's two marks: {told}"
                );
                let patch = std::fs::read_to_string(dir.join("patch.diff")).unwrap();
                assert!(patch.is_empty(), "{a},{b} {agent}: {patch}");
                agents += 1;
            }
        }
    }
    assert_eq!(agents, 20);
    assert_eq!(
        std::fs::read_to_string(target).unwrap(),
        "keep me",
        "removing a scratchpad followed an agent's link"
    );
}

#[test]
fn the_scratchpad_is_shared_within_a_pair_invisible_to_other_pairs_and_never_graded() {
    let keep = tempfile::tempdir().unwrap();
    let target = keep.path().join("precious.txt");
    std::fs::write(&target, "keep me").unwrap();
    let run = scratchpad_run("team-scratch", &target, &[]);
    assert_shared_within_each_pair_only(&run, &target);

    // Switched off: no directory, and the plugin is not told of one.
    let run = scratchpad_run(
        "team-no-scratch",
        &target,
        &["--team-no-scratchpad", "-f", "1,2"],
    );
    let told = json(&run.pair(1, 2).join("agent1/trajectory.json")).to_string();
    assert!(
        !told.contains("SEEN=2") && !told.contains("shared by the whole team"),
        "{told}"
    );
}

#[test]
fn the_docker_scratchpad_is_shared_within_a_pair_only_and_removed() {
    crate::support::docker();
    let keep = tempfile::tempdir().unwrap();
    let target = keep.path().join("precious.txt");
    std::fs::write(&target, "keep me").unwrap();
    let run = scratchpad_run("team-scratch-docker", &target, &["--backend", "docker"]);
    assert_shared_within_each_pair_only(&run, &target);
    let told = json(&run.pair(1, 2).join("agent1/trajectory.json")).to_string();
    assert!(told.contains("/workspace/shared"), "{told}");
    // The volumes went with their pairs.
    let volumes = std::process::Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            "label=cbench.run=team-scratch-docker",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&volumes.stdout).trim().is_empty(),
        "left behind: {}",
        String::from_utf8_lossy(&volumes.stdout)
    );
}

#[test]
fn the_lead_can_be_any_agent_and_the_others_are_told_who_it_is() {
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "team-lead-2",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "--setting",
            "team",
            "-f",
            "1,2,3",
            "--team-lead",
            "2",
            "--no-auto-eval",
        ],
    );
    run.assert_ok();
    let result = json(&pair_dir(&run).join("result.json"));
    assert_eq!(result["lead_agent"], "agent2");
    let tasks = json(&pair_dir(&run).join("tasks.json"));
    let titles: Vec<(&str, &str)> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["title"].as_str().unwrap(), t["owner"].as_str().unwrap()))
        .collect();
    assert_eq!(
        titles,
        [
            ("Implement feature 1", "agent1"),
            ("Implement feature 3", "agent3"),
            ("Lead-only: integrate and submit feature 2", "agent2"),
        ]
    );
    let lead = json(&pair_dir(&run).join("agent2/trajectory.json")).to_string();
    assert!(lead.contains("You are agent2, the team lead."), "{lead}");
    let member = json(&pair_dir(&run).join("agent3/trajectory.json")).to_string();
    assert!(member.contains("the lead is agent2"), "{member}");

    let run = Run::start(
        "team-lead-4",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "--setting",
            "team",
            "-f",
            "1,2,3",
            "--team-lead",
            "4",
        ],
    );
    assert!(!run.output.status.success());
    assert!(
        text(&run.output).contains(
            "--team-lead 4, but pair cbench_textkit_task/task1 features_1_2_3 has 3 agents"
        ),
        "{}",
        text(&run.output)
    );
}

/// What `agent` was told after each command containing `needle`, in order.
fn told_after(run: &Run, agent: &str, needle: &str) -> Vec<String> {
    json(&run.pair(1, 2).join(agent).join("trajectory.json"))["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["args"]["command"].as_str().unwrap_or("").contains(needle))
        .map(|s| s["observation"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Runs one team pair (features 1,2) under `script` with `extra` options, ungraded.
fn attack_run(name: &str, script: &Value, extra: &[&str]) -> Run {
    let mut args = vec!["-f", "1,2", "--no-auto-eval"];
    args.extend_from_slice(extra);
    start_team(name, script, &args)
}

#[test]
fn a_tree_deeper_than_any_stack_in_the_scratchpad_or_home_does_not_bring_cbench_down() {
    let nest = |dir: &str| {
        bash(&format!(
            "cd \"{dir}\" && python3 -c \"import os\nfor _ in range(15000):\n os.mkdir('d'); os.chdir('d')\" && echo nested"
        ))
    };
    let script = serde_json::json!({
        "agent1": [nest("$CBENCH_SCRATCHPAD"), nest("$HOME"), bash(SUBMIT)],
        "agent2": [bash(SUBMIT)],
    });
    let run = attack_run("team-deep", &script, &[]);
    run.assert_ok();
    // cbench stood, recorded the pair, and emptied the scratchpad (it could not measure it);
    // the tree in agent1's own home is over what its disk limit can vouch for.
    let result = json(&run.pair(1, 2).join("result.json"));
    assert_eq!(result["agents"][1]["status"], "Submitted", "{result:#}");
    assert_eq!(
        result["agents"][0]["status"], "LimitsExceeded",
        "{result:#}"
    );
    let told = told_after(&run, "agent1", "os.mkdir");
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told.iter().all(|o| o.contains("nested")), "{told:?}");
}

#[test]
fn a_teammate_filling_the_scratchpad_ends_nobody_and_a_path_past_the_limit_hides_no_disk() {
    // agent1 writes past the scratchpad's 64 MiB; agent2 then still works and submits, and the
    // scratchpad was emptied. agent1 then hides 90 MB under a path past PATH_MAX in its home:
    // its next command is refused as over its disk limit.
    let script = serde_json::json!({
        "agent1": [
            bash("head -c 70000000 /dev/zero > \"$CBENCH_SCRATCHPAD/junk\" && echo filled"),
            bash("ls \"$CBENCH_SCRATCHPAD\" | wc -l | sed 's/^/LEFT=/'"),
            bash("python3 -c \"import os\nos.chdir(os.environ['HOME'])\nfor _ in range(90):\n os.mkdir('d'*60); os.chdir('d'*60)\nfor i in range(3):\n open(f'big{i}','wb').write(bytes(30_000_000))\" && echo hidden"),
            bash("echo still-running"),
            bash(SUBMIT),
        ],
        "agent2": [
            bash("sleep 3"),
            bash("echo teammate-fine"),
            bash(SUBMIT),
        ],
    });
    let run = attack_run("team-fill", &script, &["--disk", "80m"]);
    run.assert_ok();
    let result = json(&run.pair(1, 2).join("result.json"));
    assert_eq!(result["agents"][1]["status"], "Submitted", "{result:#}");
    let second = json(&run.pair(1, 2).join("agent2/trajectory.json")).to_string();
    assert!(second.contains("teammate-fine"), "{second}");
    assert_eq!(
        result["agents"][0]["status"], "LimitsExceeded",
        "{result:#}"
    );
    let first = json(&run.pair(1, 2).join("agent1/trajectory.json")).to_string();
    assert!(
        first.contains("filled") && first.contains("LEFT=0"),
        "the scratchpad was not emptied: {first}"
    );
    let after = told_after(&run, "agent1", "still-running");
    assert!(
        first.contains("hidden") && after.len() == 1 && after[0].starts_with("refused:"),
        "the hidden tree went unnoticed: {after:?}"
    );
    // Walked one directory at a time, the tree past PATH_MAX is measured like any other.
    assert!(
        result["agents"][0]["error"]
            .to_string()
            .contains("over its limit of 80 MiB"),
        "{result:#}"
    );
}
