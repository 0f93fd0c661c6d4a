//! `--backend gcp` against the GCP fake (crate cbench-gcp-fake: token endpoint, Cloud Storage
//! and Cloud Batch on loopback, each Batch task run here as a docker container of its image with
//! its `gcs` volumes bind-mounted): a run graded on Batch grades exactly as the local backend
//! does and leaves no job or object; every test run is a job of its own whose inputs are
//! read-only and hold nothing of another run; timeouts, caps, failed and cancelled jobs keep
//! docker's semantics or are infrastructure errors; bad credentials stop the run before any
//! work; `cbench cleanup --backend gcp` removes what a dead run left and spares a live one;
//! `cbench doctor --backend gcp` walks the whole path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use cbench::eval::gcp_bench::{GcpEnv, GcpGrading, GcpSettings};
use cbench_gcp::AdcEnv;
use cbench_gcp_fake::{service_account_file, Server, TaskRun, TaskRunner, SA_EMAIL};

use crate::support::{
    cbench_with_env, docker, json, pair_grades, plugins, text, Run, BUNDLED_IMAGE,
};

/// The fake with a docker task runner, its key file and the environment cbench needs for it.
struct Gcp {
    runtime: tokio::runtime::Runtime,
    server: Server,
    _keys: tempfile::TempDir,
    key: String,
    /// Tasks fail as if Batch lost their VM while set.
    lose_vms: Arc<AtomicBool>,
    /// Tasks never finish while set (until their job is deleted).
    hang: Arc<AtomicBool>,
    /// The value of `RUNNER_LABEL` on this fake's containers (tests run side by side).
    instance: String,
}

/// Containers the fake's runner made carry this label, so a failed test leaves none behind.
const RUNNER_LABEL: &str = "cbench-test-gcp-fake";

fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Gcp {
    fn start() -> Gcp {
        docker();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let server = runtime.block_on(Server::start());
        let keys = tempfile::tempdir().unwrap();
        let key = service_account_file(keys.path(), &server, SA_EMAIL);
        let lose_vms = Arc::new(AtomicBool::new(false));
        let hang = Arc::new(AtomicBool::new(false));
        let docker = runtime.block_on(async {
            bollard::Docker::connect_with_defaults().expect("docker for the GCP fake")
        });
        let instance = format!("{}-{}", std::process::id(), server.addr.port());
        server.run_tasks_with(docker_runner(
            docker,
            lose_vms.clone(),
            hang.clone(),
            instance.clone(),
        ));
        Gcp {
            runtime,
            server,
            _keys: keys,
            key,
            lose_vms,
            hang,
            instance,
        }
    }

    /// The variables pointing cbench at the fake.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GOOGLE_APPLICATION_CREDENTIALS".into(), self.key.clone()),
            ("STORAGE_EMULATOR_HOST".into(), self.server.base.clone()),
            ("CBENCH_GCP_BATCH_URL".into(), self.server.base.clone()),
            (
                "GCE_METADATA_HOST".into(),
                format!("127.0.0.1:{}", unused_port()),
            ),
            ("CLOUDSDK_CONFIG".into(), "/nonexistent/gcloud".into()),
        ]
    }

    fn gcp_env(&self) -> GcpEnv {
        GcpEnv {
            adc: AdcEnv {
                application_credentials: Some(self.key.clone()),
                gcloud_config_dir: None,
                metadata_host: format!("127.0.0.1:{}", unused_port()),
                project: None,
            },
            storage_url: Some(self.server.base.clone()),
            batch_url: Some(self.server.base.clone()),
        }
    }

    fn objects(&self) -> Vec<String> {
        self.server
            .fake()
            .objects
            .keys()
            .map(|(b, n)| format!("{b}/{n}"))
            .collect()
    }

    fn jobs(&self) -> Vec<String> {
        self.server.fake().jobs.keys().cloned().collect()
    }
}

/// Removes a task's container however its run ends (finished, timed out, job deleted).
struct RemoveOnDrop(bollard::Docker, String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let (docker, id) = (self.0.clone(), self.1.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                    )
                    .await;
            });
        }
    }
}

/// Runs a Batch task as Batch runs a container runnable: the image with the given entrypoint
/// and commands, the volumes bind-mounted at their paths (read-only ones read-only), the
/// network cut when asked, the CPU and memory given.
fn docker_runner(
    docker: bollard::Docker,
    lose_vms: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
    instance: String,
) -> TaskRunner {
    Arc::new(move |task: TaskRun| {
        let docker = docker.clone();
        let instance = instance.clone();
        let lose_vms = lose_vms.clone();
        let hang = hang.clone();
        Box::pin(async move {
            if hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if lose_vms.load(Ordering::SeqCst) {
                return Err("Task state is updated from RUNNING to FAILED on zones/us-central1-a/instances/7 due to Spot VM preemption with exit code 50001.".into());
            }
            let binds = task
                .mounts
                .iter()
                .map(|m| {
                    format!(
                        "{}:{}{}",
                        m.host_dir.display(),
                        m.mount_path,
                        if m.read_only { ":ro" } else { "" }
                    )
                })
                .collect();
            let body = ContainerCreateBody {
                image: Some(task.image.clone()),
                entrypoint: Some(vec![task.entrypoint.clone()]),
                cmd: Some(task.commands.clone()),
                env: Some(task.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                labels: Some(HashMap::from([(RUNNER_LABEL.to_string(), instance)])),
                host_config: Some(HostConfig {
                    binds: Some(binds),
                    network_mode: Some(if task.block_network { "none" } else { "bridge" }.into()),
                    memory: Some((task.memory_mib as i64) << 20),
                    nano_cpus: Some(task.cpu_milli as i64 * 1_000_000),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let created = docker
                .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
                .await
                .map_err(|e| format!("CannotPullContainerError: {e}"))?;
            let _remove = RemoveOnDrop(docker.clone(), created.id.clone());
            docker
                .start_container(&created.id, None)
                .await
                .map_err(|e| e.to_string())?;
            use futures_util::StreamExt;
            let mut wait = docker.wait_container(&created.id, None);
            while wait.next().await.is_some() {}
            let state = docker
                .inspect_container(&created.id, None)
                .await
                .map_err(|e| e.to_string())?
                .state
                .unwrap_or_default();
            Ok(state.exit_code.unwrap_or(-1))
        })
    })
}

impl Drop for Gcp {
    fn drop(&mut self) {
        // Whatever a failed assertion left running.
        self.runtime.block_on(async {
            let Ok(docker) = bollard::Docker::connect_with_defaults() else {
                return;
            };
            let listed = docker
                .list_containers(Some(
                    bollard::query_parameters::ListContainersOptionsBuilder::default()
                        .all(true)
                        .filters(&HashMap::from([(
                            "label".to_string(),
                            vec![format!("{RUNNER_LABEL}={}", self.instance)],
                        )]))
                        .build(),
                ))
                .await
                .unwrap_or_default();
            for c in listed {
                if let Some(id) = c.id {
                    let _ = docker
                        .remove_container(
                            &id,
                            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                        )
                        .await;
                }
            }
        });
    }
}

fn env_of(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn a_run_graded_on_batch_grades_exactly_like_local_and_leaves_no_job_or_object() {
    let gcp = Gcp::start();
    let agent = plugins().mini_swe.display().to_string();
    // Every pair of the bundled task (one of them fails), four at a time.
    let common = ["--agent", &agent, "-m", "oracle", "-c", "4"];
    let local = Run::start("gcp-parity-local", &common);
    local.assert_ok();
    let mut args = common.to_vec();
    args.extend(["--backend", "gcp", "--cpus", "1.5", "--memory", "1g"]);
    let env = gcp.env();
    let remote = Run::start_with_env("gcp-parity", &args, &env_of(&env));
    remote.assert_ok();
    let config = json(&remote.dir().join("config.json"));
    assert_eq!(config["backend"], "gcp");
    assert_eq!(
        config["grading_network"], "none",
        "gcp grades without network by default"
    );
    assert!(
        config["isolation"]
            .as_str()
            .is_some_and(|i| i.contains("Cloud Batch") && i.contains("test-project")),
        "{config:#}"
    );
    let (l, g) = (pair_grades(&local.dir()), pair_grades(&remote.dir()));
    assert_eq!(l.len(), 10);
    assert_eq!(l, g, "grades on Batch differ from local");
    assert!(
        g.iter().any(|(_, _, v)| v["overall_success"] == false),
        "the run should include a failing pair: {g:#?}"
    );
    // Every test run was a job of its own, in the task image, with its inputs read-only from
    // a prefix no other job had, and its outputs in another prefix of its own.
    let fake = gcp.server.fake();
    assert!(
        fake.task_runs.len() >= 20,
        "{} test runs",
        fake.task_runs.len()
    );
    let mut inputs = std::collections::BTreeSet::new();
    for (job, index, mounts) in &fake.task_runs {
        assert_eq!(*index, 0);
        assert_eq!(mounts.len(), 2, "{job}");
        let (input, output) = (&mounts[0], &mounts[1]);
        assert!(input.read_only && !output.read_only, "{job}: {mounts:?}");
        assert!(
            inputs.insert(input.host_dir.clone()),
            "{job} shares its inputs"
        );
    }
    // The bucket was made with the 7-day delete rule; nothing is left in it, nor any job.
    let bucket = &fake.buckets["cbench-eval-test-project"];
    assert_eq!(
        bucket["lifecycle"]["rule"][0]["condition"]["age"], 7,
        "{bucket}"
    );
    drop(fake);
    assert_eq!(gcp.jobs(), Vec::<String>::new());
    assert_eq!(gcp.objects(), Vec::<String>::new());
}

/// Grading settings for the library-level checks.
fn settings(block_network: bool) -> GcpSettings {
    GcpSettings {
        project: None,
        region: "us-central1".into(),
        bucket: Some("cbench-test-bucket".into()),
        image_prefix: String::new(),
        cpu_milli: 1000,
        memory_mib: 512,
        block_network,
        service_account: None,
    }
}

#[test]
fn a_test_run_sees_only_its_own_inputs_read_only_and_keeps_docker_semantics() {
    let gcp = Gcp::start();
    let rt = &gcp.runtime;
    let grading = rt
        .block_on(GcpGrading::connect(
            &gcp.gcp_env(),
            settings(true),
            "gcp-lib",
            "0123456789ab",
            "nohost:1",
        ))
        .expect("connected");
    let run = |inputs: Vec<(String, Vec<u8>)>, command: &str, timeout: u64, cap: usize| {
        rt.block_on(grading.run_job(
            BUNDLED_IMAGE,
            inputs,
            command,
            Duration::from_secs(timeout),
            cap,
        ))
    };
    // The inputs arrive in /patches; the mounted copy cannot be changed, no other run's
    // objects are in reach, and the network is cut.
    let other = ("secret.patch".to_string(), b"another run's input".to_vec());
    let first = std::thread::scope(|s| {
        let slow = s.spawn(|| run(vec![other.clone()], "sleep 3", 60, 4096));
        std::thread::sleep(Duration::from_millis(500));
        let probe = run(
            vec![("mine.patch".into(), b"my input\n".to_vec())],
            "sh -c 'cat /patches/mine.patch; echo tamper > /mnt/disks/cbench-in/mine.patch && echo WROTE; \
             ls -R /mnt/disks; grep -rl \"another run\" / --include=*.patch 2>/dev/null; \
             (exec 3<>/dev/tcp/1.1.1.1/80) 2>/dev/null && echo NETWORK; echo end'",
            60,
            1 << 20,
        );
        slow.join().unwrap().expect("the slow run");
        probe
    })
    .expect("the probe ran");
    assert_eq!(first.exit_code, 0, "{}", first.output);
    assert!(first.output.starts_with("my input\n"), "{}", first.output);
    assert!(!first.output.contains("WROTE"), "{}", first.output);
    assert!(!first.output.contains("secret.patch"), "{}", first.output);
    assert!(!first.output.contains("NETWORK"), "{}", first.output);
    assert!(first.output.trim_end().ends_with("end"), "{}", first.output);

    // What the tests do to cbench's result files makes their run a failure, never an
    // infrastructure error, and nothing they leave running changes the result afterwards.
    let blocked = run(
        vec![],
        "sh -c 'echo 3 failed; mkdir /mnt/disks/cbench-out/exit_code; exit 1'",
        60,
        4096,
    )
    .expect("a graded failure, not an error");
    assert_eq!(blocked.exit_code, -1, "{blocked:?}");
    assert!(
        blocked.output.contains("left no readable exit code"),
        "{blocked:?}"
    );
    let late = run(
        vec![],
        r#"sh -c 'echo real; (sleep 1; while :; do echo "0 1" > /mnt/disks/cbench-out/exit_code; done) & sleep 2; exit 1'"#,
        60,
        4096,
    )
    .unwrap();
    assert_eq!(
        (late.exit_code, late.output.as_str()),
        (
            1, "real
"
        )
    );
    let own_124 = run(vec![], "sh -c 'exit 124'", 60, 4096).unwrap();
    assert!(
        !own_124.timed_out && own_124.exit_code == 124,
        "{own_124:?}"
    );

    // Exit codes, the output cap and timeouts as on docker.
    let failed = run(vec![], "sh -c 'echo no; exit 3'", 60, 4096).unwrap();
    assert_eq!((failed.exit_code, failed.output.as_str()), (3, "no\n"));
    let big = run(
        vec![],
        "sh -c 'head -c 100000 /dev/zero | tr \"\\0\" x'",
        60,
        1000,
    )
    .unwrap();
    assert!(
        big.truncated && big.output.len() == 1000,
        "{}",
        big.output.len()
    );
    let slow = run(vec![], "sh -c 'echo started; sleep 60'", 2, 4096).unwrap();
    assert!(slow.timed_out && slow.exit_code == -1, "{slow:?}");
    assert!(slow.output.contains("started"));

    // A job Batch fails (the VM lost) is an error naming Batch's reason, never an exit code.
    gcp.lose_vms.store(true, Ordering::SeqCst);
    let err = run(vec![], "true", 60, 4096).expect_err("an infrastructure error");
    let said = err.to_string();
    assert!(
        said.contains("Batch job") && said.contains("FAILED") && said.contains("preemption"),
        "{said}"
    );
    gcp.lose_vms.store(false, Ordering::SeqCst);

    // A run cancelled mid-job (its future dropped) still deletes its job and objects.
    rt.block_on(async {
        let cancelled = tokio::time::timeout(
            Duration::from_secs(2),
            grading.run_job(
                BUNDLED_IMAGE,
                vec![other.clone()],
                "sleep 30",
                Duration::from_secs(60),
                4096,
            ),
        )
        .await;
        assert!(cancelled.is_err(), "the run was still going");
    });
    let left_objects = || -> Vec<String> {
        gcp.objects()
            .into_iter()
            .filter(|o| !o.ends_with("/owner.json"))
            .collect()
    };
    // The deletions run after the drop, in the background: under the whole suite's load the
    // objects once outlived the job by more than the moment between the two checks.
    rt.block_on(async {
        for _ in 0..300 {
            if gcp.jobs().is_empty() && left_objects().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(gcp.jobs(), Vec::<String>::new());
    assert_eq!(left_objects(), Vec::<String>::new());

    // Tests that leave thousands of objects do not hold the grading slot: a bounded number
    // is deleted, the rest are left to the bucket's rule (and to the run's end).
    let flood = run(
        vec![],
        r#"bash -c 'for i in $(seq 1500); do : > /mnt/disks/cbench-out/f$i; done; : > "/mnt/disks/cbench-out/bad$(printf "\nx")name"; echo done'"#,
        120,
        4096,
    )
    .unwrap();
    assert_eq!(flood.exit_code, 0, "{flood:?}");
    let left = gcp.objects().len();
    assert!((400..=600).contains(&left), "{left} objects left");
    rt.block_on(cbench::eval::gcp_bench::sweep(
        &grading.clients,
        &cbench::docker::cleanup::Scope::RunId("0123456789ab".into()),
    ))
    .unwrap();
    assert_eq!(gcp.objects(), Vec::<String>::new());
}

#[test]
fn bad_credentials_and_unreachable_services_stop_the_run_before_any_work() {
    let gcp = Gcp::start();
    let agent = plugins().mini_swe.display().to_string();
    let run = |name: &str, env: &[(String, String)]| {
        let args = [
            "--agent",
            &agent,
            "-m",
            "oracle",
            "-f",
            "1,2",
            "--backend",
            "gcp",
        ];
        Run::start_with_env(name, &args, &env_of(env))
    };
    // A key the token endpoint does not know.
    let keys = tempfile::tempdir().unwrap();
    let stranger = service_account_file(
        keys.path(),
        &gcp.server,
        "stranger@test-project.iam.gserviceaccount.com",
    );
    let mut env = gcp.env();
    env.retain(|(k, _)| k != "GOOGLE_APPLICATION_CREDENTIALS");
    env.push(("GOOGLE_APPLICATION_CREDENTIALS".into(), stranger.clone()));
    let rejected = run("gcp-rejected", &env);
    let said = text(&rejected.output);
    assert!(!rejected.output.status.success());
    assert!(
        said.contains("GOOGLE_APPLICATION_CREDENTIALS") && said.contains(&stranger),
        "{said}"
    );
    assert!(!said.contains("PRIVATE KEY"), "{said}");
    assert!(!rejected.dir().join("config.json").exists());

    // No credentials anywhere.
    let mut none = gcp.env();
    none.retain(|(k, _)| k != "GOOGLE_APPLICATION_CREDENTIALS");
    let missing = run("gcp-nocreds", &none);
    let said = text(&missing.output);
    assert!(!missing.output.status.success());
    assert!(said.contains("no Google Cloud credentials"), "{said}");

    // Storage down.
    let port = unused_port();
    let mut down = gcp.env();
    down.retain(|(k, _)| k != "STORAGE_EMULATOR_HOST");
    down.push(("STORAGE_EMULATOR_HOST".into(), format!("127.0.0.1:{port}")));
    let unreachable = run("gcp-down", &down);
    let said = text(&unreachable.output);
    assert!(!unreachable.output.status.success());
    assert!(
        said.contains("cbench-eval-test-project") && said.contains(&port.to_string()),
        "{said}"
    );
    assert!(gcp.jobs().is_empty() && gcp.server.fake().task_runs.is_empty());

    // A bucket name Cloud Storage would refuse is refused before any request.
    let bad = cbench_with_env(
        &[
            "run",
            "--backend",
            "gcp",
            "--gcp-bucket",
            "Bad_Bucket!",
            "-m",
            "oracle",
            "--agent",
            &agent,
        ],
        &env_of(&gcp.env()),
    );
    let said = text(&bad);
    assert!(!bad.status.success());
    assert!(
        said.contains("--gcp-bucket") && said.contains("Bad_Bucket!"),
        "{said}"
    );
}

#[test]
fn cleanup_removes_what_a_dead_run_left_and_spares_a_live_one_and_doctor_walks_the_path() {
    let gcp = Gcp::start();
    let rt = &gcp.runtime;
    let host = cbench::docker::hostname();
    // A dead invocation (its process gone) and a live one (this test's), each with a job
    // running and an object.
    let dead = rt
        .block_on(GcpGrading::connect(
            &gcp.gcp_env(),
            settings(true),
            "gcp-dead",
            "deaddeaddead",
            &format!("{host}:{}", u32::MAX - 1),
        ))
        .unwrap();
    let live = rt
        .block_on(GcpGrading::connect(
            &gcp.gcp_env(),
            settings(true),
            "gcp-live",
            "11ve11ve11ve",
            &format!("{host}:{}", std::process::id()),
        ))
        .unwrap();
    for grading in [&dead, &live] {
        let grading = grading.clone();
        rt.spawn(async move {
            let _ = grading
                .run_job(
                    BUNDLED_IMAGE,
                    vec![("x.patch".into(), b"x".to_vec())],
                    "sleep 60",
                    Duration::from_secs(120),
                    64,
                )
                .await;
        });
    }
    for _ in 0..100 {
        if gcp.jobs().len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gcp.jobs().len(), 2);
    let env = gcp.env();
    let out = cbench_with_env(
        &[
            "cleanup",
            "--backend",
            "gcp",
            "--gcp-bucket",
            "cbench-test-bucket",
        ],
        &env_of(&env),
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("of 1 invocation(s)"), "{said}");
    let jobs = gcp.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(
        gcp.objects().iter().all(|o| !o.contains("deaddeaddead")),
        "{:?}",
        gcp.objects()
    );
    assert!(gcp.objects().iter().any(|o| o.contains("11ve11ve11ve")));
    // (`--all` would remove the live one too, and every live local run's scratch space with
    // it: not run here, beside other tests.) The live run's own end-of-run sweep:
    rt.block_on(cbench::eval::gcp_bench::sweep(
        &live.clients,
        &cbench::docker::cleanup::Scope::RunId("11ve11ve11ve".into()),
    ))
    .unwrap();
    assert_eq!(gcp.jobs(), Vec::<String>::new());

    // doctor: credentials, the bucket, one job of the image reading its input, cleanup.
    let out = cbench_with_env(
        &["doctor", "--backend", "gcp", "--image", BUNDLED_IMAGE],
        &env_of(&env),
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for step in ["credentials", "batch job", "cleanup"] {
        assert!(said.contains(step), "{step}: {said}");
    }
    assert!(said.contains("a 64 KiB input read intact"), "{said}");
    assert_eq!(gcp.jobs(), Vec::<String>::new());
    let left: Vec<String> = gcp
        .objects()
        .into_iter()
        .filter(|o| o.starts_with("cbench-eval-test-project/"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn a_job_batch_fails_makes_the_pair_an_infrastructure_error_not_a_grade() {
    let gcp = Gcp::start();
    gcp.lose_vms.store(true, Ordering::SeqCst);
    let agent = plugins().mini_swe.display().to_string();
    let env = gcp.env();
    let run = Run::start_with_env(
        "gcp-lost",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "-f",
            "1,2",
            "--backend",
            "gcp",
        ],
        &env_of(&env),
    );
    let out = text(&run.output);
    assert!(!run.output.status.success(), "{out}");
    // Nothing was recorded as the agents' doing, and a rerun would grade the pair again.
    assert!(!run.pair(1, 2).join("eval.json").exists(), "{out}");
    let summary = json(&run.dir().join("summary.json"));
    assert_eq!(summary["infra_errors"], 1, "{summary:#}");
    assert_eq!(summary["overall_successes"], 0, "{summary:#}");
    let why = summary.to_string();
    assert!(
        why.contains("Batch job") && why.contains("preemption"),
        "{summary:#}"
    );
    assert_eq!(gcp.jobs(), Vec::<String>::new());
    assert_eq!(gcp.objects(), Vec::<String>::new());
}

#[test]
fn ctrl_c_while_grading_on_batch_deletes_every_job_and_object() {
    let gcp = Gcp::start();
    gcp.hang.store(true, Ordering::SeqCst);
    let logs = tempfile::tempdir().unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let dataset = crate::support::dataset().display().to_string();
    let log_dir = logs.path().display().to_string();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cbench"))
        .args([
            "run",
            "-q",
            "-n",
            "gcp-sigint",
            "--log-dir",
            &log_dir,
            "--dataset-dir",
            &dataset,
            "--agent",
            &agent,
            "-m",
            "oracle",
            "--backend",
            "gcp",
            "-f",
            "1,2",
        ])
        .envs(gcp.env())
        .env("CBENCH_CACHE_DIR", crate::support::cache_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting cbench");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // The pair's test runs are jobs on Batch, hanging.
    while gcp.jobs().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no Batch job was created"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!gcp.objects().is_empty());
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().expect("waiting for cbench");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert_eq!(gcp.jobs(), Vec::<String>::new(), "{}", text(&out));
    assert_eq!(gcp.objects(), Vec::<String>::new(), "{}", text(&out));
    let config = json(&logs.path().join("gcp-sigint").join("config.json"));
    assert_eq!(config["backend"], "gcp");
}
