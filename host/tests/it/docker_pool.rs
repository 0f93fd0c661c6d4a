//! The docker backend's pool of pre-started agent containers, the sandbox start overlapping the
//! agent's first steps, and the grading container opened while agents finish: a pooled container
//! is a full sandbox (history hidden, channel open), the pool is bounded by what the run still
//! needs and removed at run end, a run with the pool grades as one without, and a sandbox that
//! cannot start is an infrastructure error, not an agent's failure.

use std::time::Duration;

use cbench::backend::{Backend, BackendChoice, DockerOptions};
use cbench::dataset::{Dataset, Selection};
use cbench::docker::{ResourceLimits, LABEL_ROLE, LABEL_RUN_ID};
use cbench::repos::UpstreamRepos;

use crate::docker_backend::eval_without_timing;
use crate::support::{containers_labelled, dataset, docker, json, patch_of, plugins, text, Run};

fn options(pool: usize) -> DockerOptions {
    crate::support::docker_options(pool)
}

#[test]
fn a_pooled_container_is_a_full_sandbox_and_the_pool_is_removed_at_run_end() {
    let engine = docker();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let pairs = Dataset::discover(&dataset())
            .expect("dataset")
            .select(&Selection {
                features: Some(vec![1, 2]),
                ..Selection::default()
            })
            .expect("selection");
        let pair = &pairs[0];
        let backend = Backend::resolve(&BackendChoice::Docker(options(2)), "it-pool", &[])
            .await
            .expect("docker backend");
        backend.preflight(&pairs).await.expect("preflight");
        // Three sandboxes to come: the first starts on demand, then at most two wait ready.
        backend.expect_sandboxes(pair, 3);
        let scratch = tempfile::tempdir().unwrap();
        let bases = backend.base_repos(
            &scratch.path().join("bases"),
            UpstreamRepos {
                cache_dir: scratch.path().join("cache"),
                mirror_dir: None,
            },
        );
        let first = backend
            .sandbox(pair, "agent1", &bases, scratch.path(), None)
            .await
            .expect("first sandbox");
        let mut waited = 0;
        while backend.pool_stats().unwrap().ready < 2 {
            waited += 1;
            assert!(waited < 300, "the pool never filled: {:?}", backend.pool_stats());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let second = backend
            .sandbox(pair, "agent2", &bases, scratch.path(), None)
            .await
            .expect("pooled sandbox");
        let stats = backend.pool_stats().unwrap();
        assert_eq!((stats.taken, stats.missed), (1, 1), "{stats:?}");
        // Only one more sandbox is expected: the pool does not refill past it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = backend.pool_stats().unwrap();
        assert_eq!((stats.started, stats.ready), (2, 1), "{stats:?}");

        // The pooled one is an agent's sandbox like any other.
        let out = second
            .exec(
                "git rev-parse HEAD; git branch -a --format='%(refname)'; git status --porcelain | wc -l",
                Duration::from_secs(30),
            )
            .await
            .expect("exec");
        let base = first
            .exec("git rev-parse HEAD", Duration::from_secs(30))
            .await
            .expect("exec");
        assert_eq!(out.output, format!("{}refs/heads/main\n0\n", base.output));
        second
            .write_file("pooled.txt", b"from a pooled container\n")
            .await
            .expect("write");
        let base = bases.get(&pair.task).await.expect("base");
        assert!(patch_of(second.as_ref(), &base)
            .await
            .expect("diff")
            .contains("+from a pooled container"));
        assert!(patch_of(first.as_ref(), &base)
            .await
            .expect("diff")
            .is_empty());

        let run_id = {
            let id = second.as_docker().expect("docker").container().id().to_string();
            let info = engine.api().inspect_container(&id, None).await.expect("inspect");
            let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
            assert_eq!(labels.get(LABEL_ROLE).map(String::as_str), Some("pool"));
            labels.get(LABEL_RUN_ID).cloned().expect("run id label")
        };
        assert_eq!(containers_labelled(engine, LABEL_RUN_ID, &run_id).await.len(), 3);
        backend.cleanup().await.expect("cleanup");
        assert!(
            containers_labelled(engine, LABEL_RUN_ID, &run_id).await.is_empty(),
            "containers of the run are left"
        );
    });
}

#[test]
fn a_run_taking_pooled_containers_grades_as_one_without() {
    docker();
    let agent = plugins().mini_swe.display().to_string();
    let args = |pool: &'static str| {
        vec![
            "--agent".to_string(),
            agent.clone(),
            "-m".into(),
            "oracle".into(),
            "--backend".into(),
            "docker".into(),
            "-s".into(),
            "smoke".into(),
            "-c".into(),
            "1".into(),
            "--docker-pool".into(),
            pool.into(),
        ]
    };
    let run = |name: &str, pool: &'static str| {
        let args = args(pool);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Run::start_with_env(name, &args, &[("RUST_LOG", "cbench=info")])
    };
    let pooled = run("pool-on", "2");
    pooled.assert_ok();
    let log = text(&pooled.output);
    let taken: usize = log
        .split("container pool: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pool line in\n{log}"));
    assert!(taken >= 1, "no agent got a pre-started container:\n{log}");
    let unpooled = run("pool-off", "0");
    unpooled.assert_ok();
    assert!(!text(&unpooled.output).contains("container pool:"));
    for (a, b) in [(1, 2), (1, 3), (4, 5)] {
        let strip = |run: &Run| eval_without_timing(&run.pair(a, b).join("eval.json"));
        assert_eq!(strip(&pooled), strip(&unpooled), "pair {a},{b}");
    }
}

#[test]
fn a_sandbox_that_cannot_start_is_an_infrastructure_error_not_an_agent_failure() {
    let engine = docker();
    // An image without setsid passes the preflight (it exists) but cannot host an agent.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let spec = cbench::docker::container::ContainerSpec {
            image: crate::support::BUNDLED_IMAGE.into(),
            labels: std::collections::HashMap::from([(
                "cbench.it".to_string(),
                "no-setsid".to_string(),
            )]),
            limits: ResourceLimits::default(),
            network: "none".into(),
            env: Vec::new(),
            working_dir: "/".into(),
            drop_capabilities: false,
            volumes: Vec::new(),
        };
        let c = cbench::docker::container::Container::start(engine, &spec)
            .await
            .expect("container");
        let (code, out) = c
            .exec_argv(&["sh", "-c", "rm -f \"$(command -v setsid)\""], &[])
            .await
            .expect("exec");
        assert_eq!(code, 0, "{out}");
        let commit = engine
            .api()
            .commit_container(
                bollard::query_parameters::CommitContainerOptionsBuilder::default()
                    .container(c.id())
                    .repo("cbench-it-nosetsid/cooperbench-cbench-textkit")
                    .tag("task1")
                    .build(),
                bollard::models::ContainerConfig::default(),
            )
            .await;
        c.remove().await.expect("remove");
        commit.expect("commit");
    });
    let agent = plugins().mini_swe.display().to_string();
    let run = Run::start(
        "no-setsid",
        &[
            "--agent",
            &agent,
            "-m",
            "oracle",
            "--backend",
            "docker",
            "--image-prefix",
            "cbench-it-nosetsid/cooperbench-",
            "-f",
            "1,2",
        ],
    );
    let out = text(&run.output);
    assert!(!run.output.status.success(), "{out}");
    // Nothing was recorded as the agents' doing, and a rerun would run the pair again.
    assert!(!run.pair(1, 2).join("eval.json").exists(), "{out}");
    let summary = json(&run.dir().join("summary.json"));
    assert_eq!(summary["infra_errors"], 1, "{summary:#}");
    assert_eq!(summary["overall_successes"], 0, "{summary:#}");
    let why = summary.to_string();
    assert!(
        why.contains("creating the sandbox of agent") && why.contains("setsid"),
        "{summary:#}"
    );
}
