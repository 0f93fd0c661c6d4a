//! `--backend modal` against the fake Modal (tests/it/fake_modal.rs: the pinned protos served
//! by tonic, each sandbox a local docker container): a run grades exactly as the local backend
//! does, every sandbox it made is tagged and terminated, commands keep docker's semantics
//! through the command router (merged and capped output, exit codes, timeouts that kill the
//! whole group, stdin and files), transient failures are retried and broken streams resumed,
//! a sandbox Modal kills is an infrastructure error, bad credentials and unreachable servers
//! stop the run before anything is written, and `cbench cleanup --backend modal` terminates
//! what a dead run left.

use std::sync::Arc;
use std::time::Duration;

use cbench::sandbox::modal::ModalSandbox;
use cbench::sandbox::Sandbox;
use cbench_modal::{ExecRequest, ModalClient, ModalConfig, RemoteSandbox, SandboxDefinition};

use crate::fake_modal::{FakeModal, TOKEN_ID, TOKEN_SECRET};
use crate::support::{
    cbench_with_env, docker, json, pair_grades, plugins, text, Run, BUNDLED_IMAGE,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn env_of(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A client of `fake` with its credentials.
async fn client(
    fake: &FakeModal,
    secret: &str,
) -> Result<Arc<ModalClient>, cbench_modal::ModalError> {
    let url = fake.control_url.clone();
    let secret = secret.to_string();
    let config = ModalConfig::resolve(
        |k| match k {
            "MODAL_SERVER_URL" => Some(url.clone()),
            "MODAL_TOKEN_ID" => Some(TOKEN_ID.into()),
            "MODAL_TOKEN_SECRET" => Some(secret.clone()),
            "MODAL_CONFIG_PATH" => Some("/nonexistent/modal.toml".into()),
            _ => None,
        },
        None,
    )
    .expect("a config");
    ModalClient::connect(config).await
}

fn definition(image_id: &str, tags: Vec<(String, String)>) -> SandboxDefinition {
    SandboxDefinition {
        image_id: image_id.to_string(),
        entrypoint_args: cbench::sandbox::modal::keep_alive(),
        cpus: 1.0,
        memory_mib: 512,
        timeout_secs: 600,
        workdir: "/workspace/repo".into(),
        block_network: true,
        tags,
    }
}

#[test]
fn a_run_on_modal_grades_exactly_like_local_and_leaves_nothing_running() {
    let fake = FakeModal::start();
    let home = tempfile::tempdir().unwrap();
    let env = fake.env(home.path());
    let agent = plugins().mini_swe.display().to_string();
    // Every pair of the bundled task (one of them fails), four at a time.
    let common = ["--agent", &agent, "-m", "oracle", "-c", "4"];
    let local = Run::start("modal-parity-local", &common);
    local.assert_ok();
    let mut args = common.to_vec();
    args.extend(["--backend", "modal", "--cpus", "1.5", "--memory", "1g"]);
    let remote = Run::start_with_env("modal-parity", &args, &env_of(&env));
    remote.assert_ok();
    assert_eq!(json(&remote.dir().join("config.json"))["backend"], "modal");
    let (l, m) = (pair_grades(&local.dir()), pair_grades(&remote.dir()));
    assert_eq!(l.len(), 10);
    assert_eq!(l, m, "modal grades differ from local");
    assert!(
        m.iter().any(|(_, _, v)| v["overall_success"] == false),
        "the run should include a failing pair: {m:#?}"
    );
    // Every sandbox carries the run's tags, agents have no network and the limits asked
    // for, and none is left running.
    let sandboxes = fake.sandboxes();
    let tag = |tags: &Vec<(String, String)>, k: &str| {
        tags.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    };
    let agents: Vec<_> = sandboxes
        .iter()
        .filter(|(_, tags, _)| tag(tags, "cbench.role").is_some_and(|r| r.starts_with("agent")))
        .collect();
    assert_eq!(agents.len(), 20, "{sandboxes:#?}");
    for (id, tags, definition) in &sandboxes {
        if tag(tags, "cbench.role").as_deref() == Some("base-export") {
            continue;
        }
        assert_eq!(
            tag(tags, "cbench.run").as_deref(),
            Some("modal-parity"),
            "{id}"
        );
        assert_eq!(tag(tags, "cbench.managed").as_deref(), Some("1"), "{id}");
        let resources = definition.resources.clone().unwrap_or_default();
        assert_eq!(
            (resources.milli_cpu, resources.memory_mb),
            (1500, 1024),
            "{id}"
        );
    }
    for (id, _, definition) in &agents {
        let network = definition.network_access.clone().unwrap_or_default();
        assert_eq!(
            network.network_access_type, 2,
            "agent sandbox {id} must be BLOCKED"
        );
        assert_eq!(
            definition.entrypoint_args,
            cbench::sandbox::modal::keep_alive()
        );
    }
    assert!(
        sandboxes
            .iter()
            .any(|(_, tags, _)| tag(tags, "cbench.role").as_deref() == Some("grader")),
        "grading runs on Modal too"
    );
    assert_eq!(fake.live_sandboxes(), Vec::<String>::new());
    // Images as CooperBench makes them: the registry tag, then its entrypoint cleared.
    let calls = fake.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.rpc == "ImageGetOrCreate" && c.detail.contains("cleared=true")),
        "{calls:#?}"
    );
}

/// A command printing `alive` or `gone` for the process whose pid is in `pidfile` (a zombie
/// not yet reaped by the sandbox's init is gone).
fn alive(pidfile: &str) -> String {
    format!(
        r#"st=$(cat /proc/$(cat {pidfile})/stat 2>/dev/null); case "${{st##*) }}" in ""|Z*) echo gone ;; *) echo alive ;; esac"#
    )
}

#[test]
fn commands_keep_the_docker_semantics_through_the_command_router() {
    docker();
    let fake = FakeModal::start();
    runtime().block_on(async {
        let client = client(&fake, TOKEN_SECRET).await.expect("connecting");
        let app = client.app("cbench-test").await.unwrap();
        let image = client
            .image_from_registry(&app, BUNDLED_IMAGE)
            .await
            .unwrap();
        // A transient failure of the create is retried with the same request, and a create
        // whose reply was lost is retried with the same idempotency key: one sandbox, not two.
        fake.fail_next("SandboxCreate", 1);
        fake.fail_after_apply("SandboxCreate", 1);
        let sandbox = ModalSandbox::create(client.clone(), &app, &definition(&image, vec![]))
            .await
            .expect("a sandbox");
        let out = sandbox
            .exec("echo out; echo err >&2; exit 7", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!((out.exit_code, out.timed_out), (7, false));
        assert_eq!(out.output, "out\nerr\n");
        // Each command is a fresh login shell in the repository, with the image's tools.
        let out = sandbox
            .exec(
                "pwd; git rev-parse --is-inside-work-tree; echo $TERM",
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(out.output, "/workspace/repo\ntrue\ndumb\n");
        // A timed-out command is killed with its whole process group, including what it
        // started in the background.
        let started = std::time::Instant::now();
        let out = sandbox
            .exec(
                "sleep 300 & echo $! > /tmp/bg.pid; echo started; sleep 300",
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        assert!(out.timed_out && out.exit_code == -1, "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(out.output.contains("started"), "{out:?}");
        let out = sandbox
            .exec(&alive("/tmp/bg.pid"), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(out.output.trim(), "gone");
        // A process that left the group (setsid) is swept when its command ends.
        let out = sandbox
            .exec(
                "setsid sleep 300 & echo $! > /tmp/escaped.pid",
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(out.exit_code, 0, "{out:?}");
        let out = sandbox
            .exec(&alive("/tmp/escaped.pid"), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(out.output.trim(), "gone");
        // The sandbox's main process ignores what an agent can send it: the sandbox lives on.
        let out = sandbox
            .exec(
                "kill -TERM 1; kill -KILL 1; kill -HUP 1; echo sent",
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(out.output.trim(), "sent");
        let out = sandbox
            .exec("echo still-here", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(out.output.trim(), "still-here");
        // Output past the cap is cut, and a broken output stream resumes at its byte.
        fake.break_streams_after(100_000);
        let out = sandbox
            .exec(
                "head -c 3000000 /dev/zero | tr '\\0' x",
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert!(out.truncated, "{}", out.output.len());
        assert_eq!(out.output.len(), 1 << 20);
        assert!(out.output.bytes().all(|b| b == b'x'));
        // Files of any size and bytes round-trip (stdin with an explicit EOF, stdout).
        let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
        sandbox.write_file("data/blob.bin", &blob).await.unwrap();
        assert_eq!(sandbox.read_file("data/blob.bin").await.unwrap(), blob);
        assert!(sandbox.read_file("../etc/passwd").await.is_err());
        // A script longer than an argv may carry travels as a file.
        let long = format!("x='{}'; echo ${{#x}}", "y".repeat(100_000));
        let out = sandbox.exec(&long, Duration::from_secs(30)).await.unwrap();
        assert_eq!(out.output.trim(), "100000");
        sandbox.close().await.unwrap();
    });
    assert_eq!(fake.live_sandboxes(), Vec::<String>::new());
    assert_eq!(fake.sandboxes().len(), 1, "{:#?}", fake.sandboxes());
    let calls = fake.calls();
    assert!(calls.iter().any(|c| c.rpc == "SandboxTerminate"));
}

#[test]
fn a_sandbox_modal_kills_is_an_infrastructure_error_naming_why() {
    docker();
    let fake = FakeModal::start();
    let rt = runtime();
    let (sandbox, image) = rt.block_on(async {
        let client = client(&fake, TOKEN_SECRET).await.unwrap();
        let app = client.app("cbench-test").await.unwrap();
        let image = client
            .image_from_registry(&app, BUNDLED_IMAGE)
            .await
            .unwrap();
        let sandbox = RemoteSandbox::create(
            client,
            &app,
            &definition(&image, vec![]),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        (sandbox, image)
    });
    assert!(image.starts_with("im-"));
    fake.kill_sandbox(sandbox.id());
    let err = rt
        .block_on(sandbox.exec(&ExecRequest {
            argv: vec!["true".into()],
            timeout: Duration::from_secs(10),
            ..Default::default()
        }))
        .expect_err("the sandbox is gone");
    let text = err.to_string();
    assert!(
        text.contains(sandbox.id())
            && text.contains("failed inside Modal")
            && text.contains("worker lost"),
        "{text}"
    );
    // Through the Sandbox trait it is an error, never an exit code the agent would see.
    let err: cbench::sandbox::SandboxError = err.into();
    assert!(matches!(err, cbench::sandbox::SandboxError::Modal(_)));
}

#[test]
fn bad_credentials_unreachable_servers_and_missing_images_stop_the_run_before_any_work() {
    docker();
    let fake = FakeModal::start();
    let home = tempfile::tempdir().unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let run = |name: &str, env: &[(String, String)], extra: &[&str]| {
        let mut args = vec![
            "--agent",
            agent.as_str(),
            "-m",
            "oracle",
            "-f",
            "1,2",
            "--backend",
            "modal",
        ];
        args.extend_from_slice(extra);
        Run::start_with_env(name, &args, &env_of(env))
    };
    let mut wrong = fake.env(home.path());
    wrong.retain(|(k, _)| k != "MODAL_TOKEN_SECRET");
    wrong.push(("MODAL_TOKEN_SECRET".into(), "as-wrong".into()));
    let rejected = run("modal-rejected", &wrong, &[]);
    let said = text(&rejected.output);
    assert!(!rejected.output.status.success());
    assert!(
        said.contains("rejected token") && said.contains(TOKEN_ID),
        "{said}"
    );
    assert!(
        !said.contains("as-wrong"),
        "the secret is never printed: {said}"
    );
    assert!(!rejected.dir().join("config.json").exists());

    let mut none = fake.env(home.path());
    none.retain(|(k, _)| !k.starts_with("MODAL_TOKEN"));
    let missing = run("modal-nocreds", &none, &[]);
    let said = text(&missing.output);
    assert!(!missing.output.status.success());
    assert!(
        said.contains("no credentials") && said.contains("MODAL_TOKEN_ID"),
        "{said}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut unreachable = fake.env(home.path());
    unreachable.retain(|(k, _)| k != "MODAL_SERVER_URL");
    unreachable.push((
        "MODAL_SERVER_URL".into(),
        format!("http://127.0.0.1:{port}"),
    ));
    let down = run("modal-down", &unreachable, &[]);
    let said = text(&down.output);
    assert!(!down.output.status.success());
    assert!(
        said.contains("cannot reach") && said.contains(&port.to_string()),
        "{said}"
    );

    let no_image = run(
        "modal-noimage",
        &fake.env(home.path()),
        &["--image-prefix", "nosuch/cooperbench-"],
    );
    let said = text(&no_image.output);
    assert!(!no_image.output.status.success());
    assert!(
        said.contains("nosuch/cooperbench-cbench-textkit:task1")
            && said.contains("pull access denied"),
        "{said}"
    );
    assert_eq!(fake.sandboxes().len(), 0, "no sandbox was created");

    let git = run("modal-git", &fake.env(home.path()), &["--git"]);
    let said = text(&git.output);
    assert!(!git.output.status.success());
    assert!(
        said.contains("--git is not available with --backend modal"),
        "{said}"
    );
}

#[test]
fn cleanup_terminates_what_a_dead_run_left_and_spares_live_runs() {
    docker();
    let fake = FakeModal::start();
    let host = cbench::docker::hostname();
    let rt = runtime();
    let ids: Vec<String> = rt.block_on(async {
        let client = client(&fake, TOKEN_SECRET).await.unwrap();
        let app = client.app("cbench").await.unwrap();
        let image = client
            .image_from_registry(&app, BUNDLED_IMAGE)
            .await
            .unwrap();
        let mut ids = Vec::new();
        // Three of a dead process (more than one page of SandboxList), one of this live one.
        for (run, owner) in [
            ("dead-run", format!("{host}:999999999")),
            ("dead-run", format!("{host}:999999999")),
            ("dead-run", format!("{host}:999999999")),
            ("live-run", format!("{host}:{}", std::process::id())),
        ] {
            let tags = vec![
                ("cbench.managed".to_string(), "1".to_string()),
                ("cbench.run".to_string(), run.to_string()),
                ("cbench.owner".to_string(), owner),
            ];
            let sandbox = RemoteSandbox::create(
                client.clone(),
                &app,
                &definition(&image, tags),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
            ids.push(sandbox.id().to_string());
            // Left running, as a crashed run leaves them.
            std::mem::forget(sandbox);
        }
        ids
    });
    let home = tempfile::tempdir().unwrap();
    let out = cbench_with_env(
        &["cleanup", "--backend", "modal"],
        &env_of(&fake.env(home.path())),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("terminated 3 Modal sandbox(es)"),
        "{}",
        text(&out)
    );
    assert_eq!(fake.live_sandboxes(), vec![ids[3].clone()]);
    let out = cbench_with_env(
        &["cleanup", "--backend", "modal", "--all"],
        &env_of(&fake.env(home.path())),
    );
    assert!(
        text(&out).contains("terminated 1 Modal sandbox(es)"),
        "{}",
        text(&out)
    );
    assert_eq!(fake.live_sandboxes(), Vec::<String>::new());
}

#[test]
fn doctor_walks_the_whole_protocol_with_the_users_credentials() {
    docker();
    let fake = FakeModal::start();
    let home = tempfile::tempdir().unwrap();
    let env = fake.env(home.path());
    let out = cbench_with_env(
        &["doctor", "--backend", "modal", "--image", BUNDLED_IMAGE],
        &env_of(&env),
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for step in [
        "configuration",
        "credentials",
        "app",
        "image",
        "sandbox",
        "command",
        "file transfer",
        "terminate",
    ] {
        assert!(said.contains(&format!("ok    {step}")), "{step}: {said}");
    }
    assert!(
        said.contains(TOKEN_ID) && !said.contains(TOKEN_SECRET),
        "{said}"
    );
    assert!(
        said.contains("0 sandbox(es) of this check still listed"),
        "{said}"
    );
    assert_eq!(fake.live_sandboxes(), Vec::<String>::new());
    // A wrong secret stops at the credentials, saying which token was refused.
    let mut wrong = env.clone();
    wrong.retain(|(k, _)| k != "MODAL_TOKEN_SECRET");
    wrong.push(("MODAL_TOKEN_SECRET".into(), "as-wrong".into()));
    let out = cbench_with_env(&["doctor", "--backend", "modal"], &env_of(&wrong));
    assert!(!out.status.success());
    assert!(text(&out).contains("rejected token"), "{}", text(&out));
}

#[test]
fn ctrl_c_mid_run_terminates_every_sandbox_and_keeps_results() {
    docker();
    let fake = FakeModal::start();
    let home = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    // Every agent hangs in a long command until the signal.
    let hang = crate::support::write_temp(
        scripts.path(),
        "hang.json",
        &serde_json::json!({"*": [{"bash": "sleep 600"}]}).to_string(),
    );
    let logs = tempfile::tempdir().unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let model = format!("scripted:{hang}");
    let dataset = crate::support::dataset().display().to_string();
    let log_dir = logs.path().display().to_string();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cbench"))
        .args([
            "run",
            "-q",
            "-n",
            "modal-sigint",
            "--log-dir",
            &log_dir,
            "--dataset-dir",
            &dataset,
            "--agent",
            &agent,
            "-m",
            &model,
            "--backend",
            "modal",
            "--command-timeout",
            "900",
            "-f",
            "1,2",
        ])
        .envs(fake.env(home.path()))
        .env("CBENCH_CACHE_DIR", crate::support::cache_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting cbench");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // Both agents' sandboxes are up and their commands running.
    while fake
        .calls()
        .iter()
        .filter(|c| c.rpc == "TaskExecStart" && c.detail.contains("sleep 600"))
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "{:#?}", fake.calls());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!fake.live_sandboxes().is_empty());
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().expect("waiting for cbench");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert_eq!(
        fake.live_sandboxes(),
        Vec::<String>::new(),
        "{}",
        text(&out)
    );
    let config = json(&logs.path().join("modal-sigint").join("config.json"));
    assert_eq!(config["backend"], "modal");
}

#[test]
fn an_agent_cannot_turn_its_failures_into_infrastructure_errors_or_steer_the_kill() {
    use cbench::sandbox::patch::{PatchError, PatchLimits, SnapshotWriter};
    docker();
    let fake = FakeModal::start();
    runtime().block_on(async {
        let client = client(&fake, TOKEN_SECRET).await.unwrap();
        let app = client.app("cbench-test").await.unwrap();
        let image = client
            .image_from_registry(&app, BUNDLED_IMAGE)
            .await
            .unwrap();
        let sandbox = ModalSandbox::create(client.clone(), &app, &definition(&image, vec![]))
            .await
            .unwrap();
        // A process of the provider's (not started by any command) must outlive every kill.
        let provider = sandbox
            .remote()
            .exec(&ExecRequest {
                argv: ["sh", "-c", "sleep 4321 >/dev/null 2>&1 & echo $!"]
                    .map(String::from)
                    .to_vec(),
                timeout: Duration::from_secs(10),
                stdout_cap: 100,
                stderr_cap: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let provider_pid = String::from_utf8_lossy(&provider.stdout).trim().to_string();
        // The command points its pid file at init, then times out: the host kills its real
        // group (from the id the wrapper printed first), not `kill -9 -1`.
        let out = sandbox
            .exec(
                r#"echo 1 > "$0.pid"; sleep 300 & echo $! > /tmp/s300.pid; wait"#,
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        assert!(out.timed_out, "{out:?}");
        let check = sandbox
            .exec(
                &format!(
                    "{}; {}",
                    alive_as(&provider_pid),
                    alive_as("$(cat /tmp/s300.pid)")
                ),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(check.output, "alive\ngone\n", "{check:?}");
        // A `tar` that prints rubbish, or dies half-way, fails the agent, not the harness.
        for fake_tar in [
            "#!/bin/sh\necho not an archive\n",
            "#!/bin/sh\n/bin/tar.real \"$@\" | head -c 1536\n",
        ] {
            sandbox
                .exec(
                    "[ -e /bin/tar.real ] || cp /bin/tar /bin/tar.real",
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
            sandbox
                .write_file("fake-tar", fake_tar.as_bytes())
                .await
                .unwrap();
            let out = sandbox
                .exec(
                    "install -m 755 fake-tar /bin/tar && rm fake-tar",
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
            assert_eq!(out.exit_code, 0, "{out:?}");
            let dest = tempfile::tempdir().unwrap();
            let writer = SnapshotWriter::new(dest.path(), PatchLimits::default()).unwrap();
            match sandbox.snapshot(writer).await {
                Err(PatchError::Rejected(why)) => assert!(why.contains("archive"), "{why}"),
                other => panic!("a forged archive must be the agent's failure: {other:?}"),
            }
        }
        // A script directory the agent replaced by a file: its commands cannot start (exit
        // 126), long or short, and that is the agent's outcome, not an error of the harness.
        let out = sandbox
            .exec(
                "rm -rf /tmp/cbench; touch /tmp/cbench",
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(out.exit_code, 0, "{out:?}");
        for script in [
            "echo short".to_string(),
            format!("echo {}", "x".repeat(40_000)),
        ] {
            let out = sandbox
                .exec(&script, Duration::from_secs(30))
                .await
                .unwrap();
            assert_eq!(out.exit_code, 126, "{out:?}");
        }
        sandbox.close().await.unwrap();
    });
}

/// A command printing `alive` or `gone` for process `pid` (a zombie is gone).
fn alive_as(pid: &str) -> String {
    format!(
        r#"st=$(cat /proc/{pid}/stat 2>/dev/null); case "${{st##*) }}" in ""|Z*) echo gone ;; *) echo alive ;; esac"#
    )
}
