//! `cbench run --engine kubernetes` against a fake API server (fake_kube.rs) whose kubelet
//! really runs each index of the Job: grades equal to a local run, -c as the Job's parallelism,
//! a pod killed by the node reported with its reason and resubmitted, detach/status/cancel
//! (the Job deleted, its pods stopped), and a cluster that cannot be reached, refuses the
//! credentials or can never start the pods named in a clear error. No real cluster runs here.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake_kube::{FakeKube, IMAGE};
use crate::support::{cache_dir, cbench_bin, dataset, json, pair_grades, plugins, text};

/// The fake's "image": this machine's tools (its environment, which version shims such as
/// pyenv's read, without cbench's and Kubernetes' own variables) and the test cache.
fn fake() -> FakeKube {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !k.starts_with("CBENCH_") && !k.starts_with("KUBE"))
        .collect();
    env.push(("CBENCH_CACHE_DIR".into(), cache_dir().display().to_string()));
    FakeKube::start(cbench_bin(), env)
}

fn cbench_at(dir: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(cbench_bin())
        .current_dir(dir)
        .args(args)
        .env("CBENCH_CACHE_DIR", cache_dir())
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        .env_remove("CBENCH_DATASET_DIR")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("running cbench")
}

/// `cbench run -n NAME` of `selection` with the kubernetes engine and `extra` flags.
fn run_args<'a>(
    name: &'a str,
    agent: &'a str,
    model: &'a str,
    ds: &'a str,
    selection: &[&'a str],
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "-n",
        name,
        "-a",
        agent,
        "-m",
        model,
        "--dataset-dir",
        ds,
    ];
    args.extend(selection);
    args.extend([
        "--engine",
        "kubernetes",
        "--k8s-image",
        IMAGE,
        "--k8s-claim",
        "cbench-runs",
    ]);
    args.extend(extra);
    args
}

fn created_jobs(fake: &FakeKube) -> Vec<Value> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.status == 201)
        .filter_map(|r| r.body)
        .collect()
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_indexed_job_grades_like_a_local_run_at_most_c_pods_at_once() {
    let fake = fake();
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(tmp.path(), "bench");
    let agent = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let local = {
        let mut args = vec![
            "run",
            "-n",
            "local",
            "-a",
            &agent,
            "-m",
            "oracle",
            "--dataset-dir",
            &ds,
            "-s",
            "smoke",
            "-q",
        ];
        args.retain(|a| !a.is_empty());
        cbench_at(tmp.path(), &kubeconfig, &args)
    };
    assert!(local.status.success(), "{}", text(&local));
    let args = run_args("k8s", &agent, "oracle", &ds, &["-s", "smoke"], &["-c", "2"]);
    let out = cbench_at(tmp.path(), &kubeconfig, &args);
    assert!(out.status.success(), "{}\n{}", text(&out), fake.logs());
    assert!(fake.invalid().is_empty(), "{:?}", fake.invalid());
    let logs = tmp.path().join("logs");
    assert_eq!(
        pair_grades(&logs.join("k8s")),
        pair_grades(&logs.join("local"))
    );
    let summary = |run: &str| {
        let s = json(&logs.join(run).join("summary.json"));
        (
            s["pairs"].clone(),
            s["overall_successes"].clone(),
            s["infra_errors"].clone(),
        )
    };
    assert_eq!(summary("k8s"), summary("local"));
    // One Job: an index per pair, -c as its parallelism, never exceeded.
    let jobs = created_jobs(&fake);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let spec = &jobs[0]["spec"];
    let pairs = summary("local").0.as_u64().unwrap();
    assert_eq!(spec["completions"].as_u64(), Some(pairs));
    assert_eq!(spec["parallelism"], 2);
    assert_eq!(spec["completionMode"], "Indexed");
    assert!(
        fake.most_running() >= 1 && fake.most_running() <= 2,
        "{}",
        fake.most_running()
    );
    // The log directory is the user's claim, mounted where the submitter sees it; the pod is
    // user-namespaced with /proc unmasked, as bubblewrap needs (see the image test below).
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["hostUsers"], false);
    assert_eq!(
        pod["containers"][0]["securityContext"]["procMount"],
        "Unmasked"
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "Unconfined"
    );
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "cbench-runs"
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"]
            .as_str()
            .map(Path::new),
        Some(std::path::absolute(&logs).unwrap().as_path())
    );
    // Every request carried the token, went to the kubeconfig's namespace, and was one the
    // engine is meant to make; pods are only ever listed for one Job.
    for r in fake.requests() {
        assert!(
            r.status != 401 && !(r.status == 404 && r.method != "GET"),
            "{r:?}"
        );
        assert!(
            r.path.starts_with("/apis/batch/v1/namespaces/bench/jobs")
                || r.path == "/api/v1/namespaces/bench/pods",
            "{r:?}"
        );
        if r.path.ends_with("/pods") {
            assert!(r.query.contains("labelSelector=job-name%3D"), "{r:?}");
        }
    }
    // Nothing left to do: a rerun submits nothing.
    let out = cbench_at(tmp.path(), &kubeconfig, &args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(0 to run)"), "{}", text(&out));
    assert_eq!(created_jobs(&fake).len(), 1);
}

#[test]
fn a_pod_killed_by_the_node_is_reported_with_its_reason_and_the_rerun_resubmits_only_it() {
    let fake = fake();
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(tmp.path(), "bench");
    let agent = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let script = tmp.path().join("model.json");
    std::fs::write(
        &script,
        r#"{"agent1": [{"bash": "sleep 60"}, {"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}],
            "*": [{"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]}"#,
    )
    .unwrap();
    let model = format!("scripted:{}", script.display());
    let args: Vec<String> = run_args("killed", &agent, &model, &ds, &["-f", "1,2"], &[])
        .into_iter()
        .map(str::to_string)
        .collect();
    let follower = {
        let (dir, kc, args) = (tmp.path().to_path_buf(), kubeconfig.clone(), args.clone());
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cbench_at(&dir, &kc, &args)
        })
    };
    wait_for("the pod to start", 60, || {
        fake.jobs().first().is_some_and(|j| fake.is_running(j, 0))
    });
    let job = fake.jobs()[0].clone();
    // Let the agent reach its long command, then the node kills the pod.
    std::thread::sleep(Duration::from_secs(3));
    fake.kill(&job, 0, "OOMKilled");
    let out = follower.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("features_1_2") && said.contains("OOMKilled"),
        "{said}"
    );
    assert!(said.contains("infrastructure errors: 1"), "{said}");

    std::fs::write(
        &script,
        r#"[{"bash": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}]"#,
    )
    .unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cbench_at(tmp.path(), &kubeconfig, &args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(1 to run)"), "{}", text(&out));
    let jobs = created_jobs(&fake);
    assert_eq!(jobs.len(), 2);
    assert_ne!(jobs[0]["metadata"]["name"], jobs[1]["metadata"]["name"]);
    assert_eq!(jobs[1]["spec"]["completions"], 1);
    assert!(tmp
        .path()
        .join("logs/killed/cbench_textkit_task/task1/features_1_2/eval.json")
        .is_file());
}

#[test]
fn detach_status_and_cancel_delete_the_job_and_stop_its_pods() {
    let fake = fake();
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(tmp.path(), "bench");
    let agent = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let script = tmp.path().join("model.json");
    std::fs::write(&script, r#"[{"bash": "sleep 120"}, {"bash": "sleep 120"}]"#).unwrap();
    let model = format!("scripted:{}", script.display());
    let args = run_args("held", &agent, &model, &ds, &["-f", "1,2"], &["--detach"]);
    let started = Instant::now();
    let out = cbench_at(tmp.path(), &kubeconfig, &args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        text(&out).contains("cbench cancel -n held"),
        "{}",
        text(&out)
    );
    wait_for("the pod to start", 60, || fake.running_pods() == 1);
    // A rerun while the Job runs would run its pairs twice: refused.
    let again = cbench_at(tmp.path(), &kubeconfig, &args);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("still running"), "{}", text(&again));
    let out = cbench_at(tmp.path(), &kubeconfig, &["status", "-n", "held"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("0/1 pairs graded") && said.contains("1 running"),
        "{said}"
    );
    let job = fake.jobs()[0].clone();
    let out = cbench_at(tmp.path(), &kubeconfig, &["cancel", "-n", "held"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("cancelled Kubernetes Job {job}")),
        "{}",
        text(&out)
    );
    assert!(fake.jobs().is_empty());
    // The pod stops on SIGTERM as a run does, well inside the grace period.
    wait_for("the pod to stop", 14, || fake.running_pods() == 0);
    let out = cbench_at(tmp.path(), &kubeconfig, &["status", "-n", "held"]);
    assert!(text(&out).contains("resubmits"), "{}", text(&out));
}

#[test]
fn pods_that_can_never_start_end_the_run_with_kubernetes_reason() {
    let fake = fake();
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(tmp.path(), "bench");
    let agent = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let args = run_args(
        "nosecret",
        &agent,
        "oracle",
        &ds,
        &["-f", "1,2"],
        &["--k8s-secret", "llm-keys"],
    );
    let out = cbench_at(tmp.path(), &kubeconfig, &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("CreateContainerConfigError")
            && said.contains("secret \"llm-keys\" not found"),
        "{said}"
    );
    assert!(fake.jobs().is_empty(), "the Job was left behind");
    // With the Secret there, its keys reach the pod and the run goes through.
    fake.add_secret("llm-keys", &[("OPENAI_API_KEY", "sk-test")]);
    let out = cbench_at(tmp.path(), &kubeconfig, &args);
    assert!(out.status.success(), "{}", text(&out));
    // The key's value is never in the Job the cluster stores (only the Secret's name).
    for job in created_jobs(&fake) {
        assert!(!job.to_string().contains("sk-test"));
    }
}

#[test]
fn a_cluster_that_cannot_be_used_is_refused_before_anything_is_written() {
    let fake = fake();
    let tmp = tempfile::tempdir().unwrap();
    let agent = plugins().mini_swe.display().to_string();
    let ds = dataset().display().to_string();
    let args = run_args("refused", &agent, "oracle", &ds, &["-f", "1,2"], &[]);
    // Wrong token.
    let kubeconfig = fake.kubeconfig(tmp.path(), "bench");
    let wrong = tmp.path().join("wrong-token");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .replace("fake-token-7f3a", "stolen"),
    )
    .unwrap();
    let out = cbench_at(tmp.path(), &wrong, &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("kubernetes:") && text(&out).contains("Unauthorized"),
        "{}",
        text(&out)
    );
    // Nobody listening.
    let closed = tmp.path().join("closed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &closed,
        std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .replace(&fake.url, &format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    let out = cbench_at(tmp.path(), &closed, &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("kubernetes:"), "{}", text(&out));
    // No configuration at all.
    let out = cbench_at(tmp.path(), &tmp.path().join("absent"), &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no usable cluster configuration"),
        "{}",
        text(&out)
    );
    assert!(!tmp.path().join("logs/refused").exists());
    // The engine's required settings, and flags of another engine.
    let out = cbench_at(
        tmp.path(),
        &kubeconfig,
        &["run", "-m", "oracle", "--engine", "kubernetes"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--k8s-image"), "{}", text(&out));
    let mut slurmish = args.clone();
    slurmish.push("--partition=gpu");
    let out = cbench_at(tmp.path(), &kubeconfig, &slurmish);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--partition does not apply to --engine kubernetes"),
        "{}",
        text(&out)
    );
    assert!(created_jobs(&fake).is_empty());
}

/// The image scripts/cbench-image.sh builds runs a pair with the pod's security settings'
/// docker equivalents, and without them stops before any agent runs, saying why.
#[test]
fn the_cbench_image_runs_a_pair_with_the_pods_security_settings() {
    let image = format!("cbench-it-image:{}", std::process::id());
    let root = crate::support::workspace();
    let plugin_dir = plugins().mini_swe.parent().unwrap().to_path_buf();
    let out = Command::new(root.join("scripts/cbench-image.sh"))
        .arg(&image)
        .arg("--binary")
        .arg(cbench_bin())
        .arg("--plugins")
        .arg(&plugin_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let run = |security: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend(security);
        args.extend([
            image.as_str(),
            "cbench",
            "run",
            "-m",
            "oracle",
            "-f",
            "1,2",
            "-a",
            "mini_swe",
            "--dataset-dir",
            "/opt/cbench/dataset",
        ]);
        Command::new("docker").args(&args).output().unwrap()
    };
    let confined = run(&[
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "systempaths=unconfined",
    ]);
    let masked = run(&["--security-opt", "seccomp=unconfined"]);
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    assert!(confined.status.success(), "{}", text(&confined));
    assert!(
        text(&confined).contains("overall success: 1/1"),
        "{}",
        text(&confined)
    );
    assert_eq!(masked.status.code(), Some(2), "{}", text(&masked));
    assert!(
        text(&masked).contains("cannot build its sandbox") && text(&masked).contains("procMount"),
        "{}",
        text(&masked)
    );
}
