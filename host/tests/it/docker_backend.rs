//! The docker backend against the real engine: containers from the bundled task's
//! image, exec with timeouts and limits, tar transfer, grading parity with the local
//! backend, the `--git` team remote, and cleanup after a signal.

use std::time::{Duration, Instant};

use cbench::docker::container::ContainerSpec;
use cbench::docker::{ResourceLimits, RunLabels, LABEL_RUN};
use cbench::sandbox::docker::{DockerSandbox, REPO_DIR};
use cbench::sandbox::Sandbox;
use serde_json::Value;

use crate::support::{
    bundled_image_base, containers_labelled, docker, json, patch_of, plugins, text, write_temp,
    Run, BUNDLED_IMAGE,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A started container of the bundled task for `agent`.
async fn sandbox(run: &RunLabels, agent: &str) -> DockerSandbox {
    DockerSandbox::create(docker(), &spec(run, agent), None, &[])
        .await
        .expect("starting a sandbox container")
}

fn spec(run: &RunLabels, agent: &str) -> ContainerSpec {
    ContainerSpec {
        image: BUNDLED_IMAGE.into(),
        labels: run.object("cbench_textkit_task/task1", "test", agent),
        limits: ResourceLimits {
            cpus: 1.0,
            memory_bytes: 256 << 20,
            pids: 256,
            ..Default::default()
        },
        network: "none".into(),
        env: Vec::new(),
        working_dir: REPO_DIR.into(),
        drop_capabilities: true,
        volumes: Vec::new(),
    }
}

#[test]
fn a_timed_out_command_is_killed_with_its_whole_process_group() {
    let engine = docker();
    runtime().block_on(async {
        let labels = RunLabels::new("it-docker-timeout");
        let sandbox = sandbox(&labels, "agent1").await;
        let started = Instant::now();
        let out = sandbox
            .exec(
                "sleep 300 & (sleep 301; echo never) & echo started; sleep 302",
                Duration::from_secs(1),
            )
            .await
            .expect("exec");
        assert!(out.timed_out, "{out:?}");
        assert_eq!(out.exit_code, -1);
        assert!(out.output.contains("started"), "{out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the timeout took {:?}",
            started.elapsed()
        );
        // Nothing of the command is left running in the container.
        let ps = sandbox
            .exec(
                "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done",
                Duration::from_secs(10),
            )
            .await
            .expect("listing processes");
        for n in ["sleep 300", "sleep 301", "sleep 302"] {
            assert!(!ps.output.contains(n), "`{n}` still runs:\n{}", ps.output);
        }
        // A background job also dies when its command ends normally.
        sandbox
            .exec("sleep 303 & echo bye", Duration::from_secs(10))
            .await
            .expect("exec");
        let ps = sandbox
            .exec(
                "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done",
                Duration::from_secs(10),
            )
            .await
            .expect("listing processes");
        assert!(!ps.output.contains("sleep 303"), "{}", ps.output);
        sandbox.close().await.expect("close");
        assert!(
            containers_labelled(engine, cbench::docker::LABEL_RUN_ID, &labels.run_id)
                .await
                .is_empty()
        );
    });
}

#[test]
fn output_is_merged_and_capped_and_exit_codes_come_through() {
    docker();
    runtime().block_on(async {
        let labels = RunLabels::new("it-docker-exec");
        let sandbox = sandbox(&labels, "agent1").await;
        let out = sandbox
            .exec("echo out; echo err >&2; exit 7", Duration::from_secs(10))
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 7);
        assert_eq!(out.output, "out\nerr\n");
        // A 200 KB command (too long for one argv string) still runs: it travels as a file.
        let long = format!(": '{}'; echo long-ok", "y".repeat(200_000));
        let out = sandbox
            .exec(&long, Duration::from_secs(30))
            .await
            .expect("exec");
        assert_eq!((out.exit_code, out.output.as_str()), (0, "long-ok\n"));
        // 3 MB of output: capped at 1 MiB, flagged, and the command still ends.
        let out = sandbox
            .exec(
                "head -c 3000000 /dev/zero | tr '\\0' x",
                Duration::from_secs(30),
            )
            .await
            .expect("exec");
        assert!(out.truncated);
        assert_eq!(out.output.len(), 1 << 20);
        assert_eq!(out.exit_code, 0);
        sandbox.close().await.expect("close");
    });
}

#[test]
fn a_one_megabyte_patch_round_trips_through_tar() {
    docker();
    runtime().block_on(async {
        let labels = RunLabels::new("it-docker-tar");
        let writer = sandbox(&labels, "agent1").await;
        // 1.2 MB of distinct lines, written through the API (no argv anywhere).
        let big: String = (0..80_000).map(|i| format!("line {i:08}\n")).collect();
        writer
            .write_file("data/big.txt", big.as_bytes())
            .await
            .expect("write");
        let scratch = tempfile::tempdir().unwrap();
        let base = bundled_image_base(scratch.path()).await;
        let patch = patch_of(&writer, &base).await.expect("diff");
        assert!(patch.len() > 1_000_000, "patch is {} bytes", patch.len());
        assert!(patch.contains("+line 00079999"));

        let reader = sandbox(&labels, "agent2").await;
        reader
            .write_file("incoming.patch", patch.as_bytes())
            .await
            .expect("upload the patch");
        let applied = reader
            .exec(
                "git apply incoming.patch && rm incoming.patch && wc -l < data/big.txt",
                Duration::from_secs(60),
            )
            .await
            .expect("apply");
        assert_eq!(applied.exit_code, 0, "{}", applied.output);
        assert_eq!(applied.output.trim(), "80000");
        assert_eq!(
            reader.read_file("data/big.txt").await.expect("read back"),
            big.as_bytes()
        );
        assert_eq!(patch_of(&reader, &base).await.expect("diff"), patch);
        writer.close().await.expect("close");
        reader.close().await.expect("close");
    });
}

#[test]
fn agents_do_not_see_history_after_the_base() {
    docker();
    runtime().block_on(async {
        let labels = RunLabels::new("it-docker-refs");
        let sandbox = sandbox(&labels, "agent1").await;
        let out = sandbox
            .exec(
                "git for-each-ref --format='%(refname)'; git remote; git symbolic-ref HEAD",
                Duration::from_secs(10),
            )
            .await
            .expect("exec");
        assert_eq!(out.output, "refs/heads/main\nrefs/heads/main\n", "{out:?}");
        sandbox.close().await.expect("close");
    });
}

fn oom_script(dir: &std::path::Path) -> String {
    write_temp(
        dir,
        "oom.json",
        &serde_json::json!({
            "agent1": [
                {"bash": "python3 -c 'b = bytearray(400 << 20); print(len(b))'; echo \"exit=$?\""},
                {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}
            ],
            "agent2": [{"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]
        })
        .to_string(),
    )
}

#[test]
fn the_memory_limit_is_an_oom_exit_the_agent_sees_and_the_run_goes_on() {
    docker();
    let scripts = tempfile::tempdir().unwrap();
    let script = oom_script(scripts.path());
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "docker-oom",
        &[
            "--agent",
            &agent,
            "-m",
            &format!("scripted:{script}"),
            "--backend",
            "docker",
            "--memory",
            "128m",
            "-f",
            "1,2",
        ],
    );
    run.assert_ok();
    let trajectory = json(&run.pair(1, 2).join("agent1/trajectory.json"));
    let observations: Vec<String> = trajectory["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["observation"].to_string())
        .collect();
    assert!(
        observations.iter().any(|o| o.contains("exit=137")),
        "no OOM kill (exit 137) in {observations:#?}"
    );
    let result = json(&run.pair(1, 2).join("result.json"));
    assert_eq!(result["agents"][0]["status"], "Submitted", "{result:#}");
    // Graded after the OOM: empty patches fail their tests, but grading ran.
    let eval = json(&run.pair(1, 2).join("eval.json"));
    assert_eq!(eval["agent1"]["success"], false, "{eval:#}");
    assert!(
        eval["agent1"]["tests_passed"].as_u64().unwrap() > 0,
        "{eval:#}"
    );
}

pub(crate) fn eval_without_timing(path: &std::path::Path) -> Value {
    let mut eval = json(path);
    let map = eval.as_object_mut().expect("eval.json is an object");
    map.remove("evaluated_at");
    map.remove("duration_s");
    eval
}

#[test]
fn docker_grades_the_bundled_dataset_exactly_as_local_does() {
    docker();
    let agent = plugins().mini_swe.display().to_string();
    let local = Run::start("parity-local", &["--agent", &agent, "-m", "oracle"]);
    local.assert_ok();
    let docker_run = Run::start(
        "parity-docker",
        &["--agent", &agent, "-m", "oracle", "--backend", "docker"],
    );
    docker_run.assert_ok();
    assert_eq!(
        json(&docker_run.dir().join("config.json"))["backend"],
        "docker"
    );
    let mut compared = 0;
    for a in 1..=5 {
        for b in a + 1..=5 {
            let l = eval_without_timing(&local.pair(a, b).join("eval.json"));
            let d = eval_without_timing(&docker_run.pair(a, b).join("eval.json"));
            assert_eq!(l, d, "pair {a},{b} differs");
            for agent in ["agent1", "agent2"] {
                assert_eq!(
                    std::fs::read(local.pair(a, b).join(agent).join("patch.diff")).unwrap(),
                    std::fs::read(docker_run.pair(a, b).join(agent).join("patch.diff")).unwrap(),
                    "patch of {agent} in pair {a},{b}"
                );
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 10);
    let summary = json(&docker_run.dir().join("summary.json"));
    assert_eq!(summary["overall_successes"], 9, "{summary:#}");
}

fn git_script(dir: &std::path::Path) -> String {
    write_temp(
        dir,
        "git.json",
        &serde_json::json!({
            "agent1": [
                {"bash": "echo hello-from-agent1 > NOTE.txt && git add NOTE.txt && git commit -qm note && git push -q team HEAD:agent1 && echo PUSHED"},
                {"bash": "git push team HEAD:agent2; echo \"push-to-agent2-exit=$?\""},
                {"bash": "git push team HEAD:main; echo \"push-to-main-exit=$?\""},
                {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}
            ],
            "agent2": [
                {"bash": "for i in $(seq 300); do git fetch -q team 2>/dev/null; git rev-parse -q --verify team/agent1 >/dev/null && break; sleep 0.1; done; git show team/agent1:NOTE.txt"},
                {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}
            ]
        })
        .to_string(),
    )
}

fn observations(run: &Run, agent: &str) -> String {
    let trajectory = json(&run.pair(1, 2).join(agent).join("trajectory.json"));
    trajectory["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["observation"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_team_remote_works(backend: &str) {
    let scripts = tempfile::tempdir().unwrap();
    let script = git_script(scripts.path());
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        &format!("git-{backend}"),
        &[
            "--agent",
            &agent,
            "-m",
            &format!("scripted:{script}"),
            "--backend",
            backend,
            "--git",
            "--no-auto-eval",
            "-f",
            "1,2",
        ],
    );
    run.assert_ok();
    let agent1 = observations(&run, "agent1");
    assert!(agent1.contains("PUSHED"), "{agent1}");
    assert!(agent1.contains("push-to-agent2-exit=1"), "{agent1}");
    assert!(agent1.contains("push-to-main-exit=1"), "{agent1}");
    assert!(
        agent1.contains("may push only to its own branch"),
        "{agent1}"
    );
    let agent2 = observations(&run, "agent2");
    assert!(agent2.contains("hello-from-agent1"), "{agent2}");
    assert_eq!(json(&run.dir().join("config.json"))["git"], true);
}

#[test]
fn with_git_agent2_fetches_agent1s_branch_on_docker() {
    docker();
    assert_team_remote_works("docker");
}

#[test]
fn with_git_agent2_fetches_agent1s_branch_locally() {
    assert_team_remote_works("local");
}

#[test]
fn sigint_mid_run_removes_every_container_and_keeps_results() {
    let engine = docker();
    let scripts = tempfile::tempdir().unwrap();
    // Every agent hangs in a long command until the signal.
    let hang = write_temp(
        scripts.path(),
        "hang.json",
        &serde_json::json!({"*": [{"bash": "sleep 600"}]}).to_string(),
    );
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().display().to_string();
    let dataset = crate::support::dataset().display().to_string();
    let agent = plugins().mini_swe.display().to_string();
    let name = format!("sigint-{}", std::process::id());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cbench"))
        .args([
            "run",
            "-q",
            "-n",
            &name,
            "--log-dir",
            &log_dir,
            "--dataset-dir",
            &dataset,
            "--agent",
            &agent,
            "-m",
            &format!("scripted:{hang}"),
            "--backend",
            "docker",
            "--command-timeout",
            "900",
            "-s",
            "smoke",
        ])
        .env("CBENCH_CACHE_DIR", crate::support::cache_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting cbench");
    let rt = runtime();
    // Wait until every agent container of the run is up (3 pairs × 2 agents).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = rt
            .block_on(containers_labelled(engine, LABEL_RUN, &name))
            .len();
        if n >= 6 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} containers came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let stopped = Instant::now();
    let out = child.wait_with_output().expect("waiting for cbench");
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "stopping took {:?}",
        stopped.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let left = rt.block_on(containers_labelled(engine, LABEL_RUN, &name));
    assert!(
        left.is_empty(),
        "containers left behind: {left:?}\n{}",
        text(&out)
    );
    // config.json was written before the agents started and is intact.
    let config = json(&logs.path().join(&name).join("config.json"));
    assert_eq!(config["backend"], "docker");
}

#[test]
fn cleanup_removes_containers_of_dead_runs_only() {
    let engine = docker();
    runtime().block_on(async {
        let live = RunLabels::new("it-cleanup-live");
        let dead = RunLabels::new("it-cleanup-dead");
        let mut dead_spec = spec(&dead, "agent1");
        // An owner pid that cannot exist on this host.
        dead_spec.labels.insert(
            cbench::docker::LABEL_OWNER.into(),
            format!("{}:4194305", cbench::docker::hostname()),
        );
        let live_box = cbench::docker::container::Container::start(engine, &spec(&live, "agent1"))
            .await
            .expect("live container");
        let dead_box = cbench::docker::container::Container::start(engine, &dead_spec)
            .await
            .expect("dead container");
        let out = crate::support::cbench(&["cleanup"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            containers_labelled(engine, cbench::docker::LABEL_RUN_ID, &dead.run_id)
                .await
                .is_empty(),
            "the crashed run's container is still there"
        );
        // This test process is alive: its container stays unless --all / -n.
        assert_eq!(
            containers_labelled(engine, cbench::docker::LABEL_RUN_ID, &live.run_id)
                .await
                .len(),
            1
        );
        live_box.remove().await.expect("remove");
        drop(dead_box);
    });
}

#[test]
fn a_missing_image_is_a_clear_error_before_anything_runs() {
    docker();
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "docker-missing-image",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "--backend",
            "docker",
            "--image-prefix",
            "nosuch/",
        ],
    );
    assert_eq!(run.output.status.code(), Some(2), "{}", text(&run.output));
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert!(stderr.contains("nosuch/cbench-textkit:task1"), "{stderr}");
    assert!(stderr.contains("cbench images build"), "{stderr}");
    assert!(!run.dir().exists(), "a run directory was created");
}

#[test]
fn a_failing_image_build_shows_what_the_build_printed() {
    docker();
    let root = tempfile::tempdir().unwrap();
    let task = root.path().join("cbench_textkit_task/task1");
    std::fs::create_dir_all(&task).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!(
            "{}/.",
            crate::support::dataset()
                .join("cbench_textkit_task/task1")
                .display()
        ))
        .arg(&task)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        task.join("Dockerfile"),
        "ARG BASE_IMAGE=cbench-base:bookworm\nFROM ${BASE_IMAGE}\nRUN echo the-step-that-breaks && exit 3\n",
    )
    .unwrap();
    let data = root.path().display().to_string();
    let base = std::env::var("CBENCH_BASE_IMAGE").unwrap_or_else(|_| "cbench-base:bookworm".into());
    let out = crate::support::cbench(&[
        "images",
        "build",
        "--dataset-dir",
        &data,
        "--image-prefix",
        "cbench-it-broken/",
        "--base-image",
        &base,
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("last build output") && stderr.contains("the-step-that-breaks"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_engine_is_a_clear_error() {
    let agent = plugins().mini_swe.display().to_string();
    let logs = tempfile::tempdir().unwrap();
    let out = crate::support::cbench_with_env(
        &[
            "run",
            "-q",
            "--agent",
            &agent,
            "-m",
            "oracle",
            "--backend",
            "docker",
            "--log-dir",
            &logs.path().display().to_string(),
            "--dataset-dir",
            &crate::support::dataset().display().to_string(),
        ],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{stderr}"
    );
}

#[test]
fn a_run_is_not_resumed_on_another_backend() {
    docker();
    let agent = plugins().mini_swe.display().to_string();
    let local = Run::start(
        "switch-backend",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "-f",
            "1,2",
            "--no-auto-eval",
        ],
    );
    local.assert_ok();
    let log_dir = local.logs.path().display().to_string();
    let dataset = crate::support::dataset().display().to_string();
    let out = crate::support::cbench(&[
        "run",
        "-q",
        "-n",
        "switch-backend",
        "--log-dir",
        &log_dir,
        "--dataset-dir",
        &dataset,
        "--agent",
        &agent,
        "-m",
        "oracle",
        "-f",
        "1,2",
        "--backend",
        "docker",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("different --backend (local → docker)"),
        "{}",
        text(&out)
    );
}

#[test]
fn containers_carry_labels_and_limits() {
    let engine = docker();
    runtime().block_on(async {
        let labels = RunLabels::new("it-docker-labels");
        let sandbox = sandbox(&labels, "agent1").await;
        let info = engine
            .api()
            .inspect_container(sandbox.container().id(), None)
            .await
            .expect("inspect");
        let config = info.config.expect("config");
        let container_labels = config.labels.expect("labels");
        for (key, value) in [
            (LABEL_RUN, "it-docker-labels"),
            (cbench::docker::LABEL_RUN_ID, labels.run_id.as_str()),
            (cbench::docker::LABEL_TASK, "cbench_textkit_task/task1"),
            (cbench::docker::LABEL_ROLE, "agent1"),
        ] {
            assert_eq!(
                container_labels.get(key).map(String::as_str),
                Some(value),
                "{key}"
            );
        }
        assert_eq!(config.working_dir.as_deref(), Some(REPO_DIR));
        let host = info.host_config.expect("host config");
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(host.memory_swap, Some(256 << 20));
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        sandbox.close().await.expect("close");
    });
}

#[test]
fn the_git_server_is_private_and_serves_each_pair_only_its_own_repository() {
    let engine = docker();
    runtime().block_on(async {
        let labels = RunLabels::new("it-docker-gitd");
        let server = cbench::team::GitServer::start(engine, &labels, BUNDLED_IMAGE)
            .await
            .expect("git server");
        // An internal network, and nothing published on the host.
        let network = engine
            .api()
            .inspect_network(&server.network, None)
            .await
            .expect("inspect network");
        assert_eq!(network.internal, Some(true));
        let scratch = tempfile::tempdir().unwrap();
        let base = cbench::sandbox::local::BaseRepo::from_source_tree(
            &crate::support::dataset().join("cbench_textkit_task/task1/repo"),
            &scratch.path().join("base"),
        )
        .await
        .expect("base");
        for key in ["pair-a", "pair-b"] {
            server
                .add_repo(key, &base, &scratch.path().join("team"))
                .await
                .expect("repo");
        }
        let mut client_spec = spec(&labels, "agent1");
        client_spec.network = server.network.clone();
        let client = cbench::docker::container::Container::start(engine, &client_spec)
            .await
            .expect("client");
        let ip = cbench::team::container_ip(engine, client.id(), &server.network)
            .await
            .expect("ip");
        let ls_remote = |key: &str| format!("git ls-remote git://{}/{key}.git", server.ip);
        let run = |cmd: String| {
            let client = &client;
            async move {
                client
                    .exec_argv(&["sh", "-c", &cmd], &[])
                    .await
                    .expect("exec")
            }
        };
        // Not admitted: refused.
        assert_ne!(run(ls_remote("pair-a")).await.0, 0);
        server.admit(&ip, "pair-a", "agent1").await.expect("admit");
        let (code, refs) = run(ls_remote("pair-a")).await;
        assert_eq!(code, 0, "{refs}");
        assert!(refs.contains("refs/heads/main"), "{refs}");
        // Another pair's repository stays closed.
        assert_ne!(run(ls_remote("pair-b")).await.0, 0);
        server.forget(&ip).await;
        assert_ne!(run(ls_remote("pair-a")).await.0, 0);
        client.remove().await.expect("remove");
        cbench::docker::cleanup::sweep(
            engine,
            &cbench::docker::cleanup::Scope::RunId(labels.run_id.clone()),
        )
        .await
        .expect("sweep");
    });
}

/// A grading container: started ahead, then runs one command as its main process.
async fn one_shot(run: &RunLabels, script: &str) -> cbench::docker::container::OneShot {
    let command: Vec<String> = ["sh", "-c", script, "runner"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cbench::docker::container::Container::start_one_shot(
        docker(),
        &spec(run, "grader"),
        &command,
        REPO_DIR,
    )
    .await
    .expect("a grading container")
}

#[test]
fn a_grading_container_runs_its_runner_as_pid_1_with_exit_code_cap_and_timeout() {
    docker();
    runtime().block_on(async {
        let run = RunLabels::new("it-one-shot");
        // As `docker run IMAGE runner.sh ARGS`: pid 1, in the repository, the arguments given
        // last, stdout and stderr merged.
        let grader = one_shot(
            &run,
            "echo \"pid=$$ dir=$PWD args=$*\"; echo err >&2; exit 3",
        )
        .await;
        let args = ["a.tests.patch".to_string(), "a.patch".to_string()];
        let (container, out) = grader
            .run(&args, Duration::from_secs(30), 1 << 20)
            .await
            .expect("a run");
        assert_eq!(
            (
                out.exit_code,
                out.output.as_str(),
                out.timed_out,
                out.truncated
            ),
            (
                3,
                "pid=1 dir=/workspace/repo args=a.tests.patch a.patch\nerr\n",
                false,
                false
            )
        );
        container.remove().await.expect("remove");

        let grader = one_shot(&run, "head -c 3000000 /dev/zero; exit 0").await;
        let (container, out) = grader
            .run(&[], Duration::from_secs(30), 1000)
            .await
            .expect("a run");
        assert_eq!(
            (out.exit_code, out.output.len(), out.truncated),
            (0, 1000, true)
        );
        container.remove().await.expect("remove");

        // Past its deadline the whole container is killed; what it printed is kept.
        let grader = one_shot(&run, "echo started; sleep 600").await;
        let started = Instant::now();
        let (container, out) = grader
            .run(&[], Duration::from_secs(2), 1 << 20)
            .await
            .expect("a run");
        assert!(out.timed_out && out.exit_code == -1, "{out:?}");
        assert_eq!(out.output, "started\n");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        container.remove().await.expect("remove");

        // Arguments are plain words, never shell text.
        let grader = one_shot(&run, "echo ran").await;
        let container_id = grader.container().id().to_string();
        let err = grader
            .run(
                &["x; touch /pwned".to_string()],
                Duration::from_secs(10),
                1 << 20,
            )
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("plain word"), "{err}");
        let _ = cbench::docker::container::remove_container(docker().api(), &container_id).await;
    });
}
