//! `cbench run --engine kubernetes`: the run's pairs still to do as one Indexed Job (pod `i`
//! runs and grades pair `i` of the submission into the shared log directory, at most -c at
//! once), followed from the Job's status, with `cbench status` / `cbench cancel` (the Job
//! deleted with its pods) and reruns that resubmit exactly the missing pairs. The cluster is
//! reached through the user's kubeconfig (`KUBECONFIG`, `~/.kube/config`, or in-cluster).

pub mod job;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::{Deserialize, Serialize};

use cbench_core::fsutil::{read_json, write_json_atomic};
use cbench_core::progress::Progress;
use cbench_run::cluster::{self, QueueState};
use cbench_run::config::RunConfig;
use cbench_run::error::RunError;
use cbench_run::summary::RunSummary;

/// Waiting reasons a pod never gets past by itself: the image or its configuration is wrong.
const NEVER_STARTS: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Why the Kubernetes engine could not do its part: an infrastructure error.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "kubernetes: no usable cluster configuration ({0}); set KUBECONFIG or run inside a cluster"
    )]
    Config(String),
    #[error("kubernetes: {action} failed: {reason}")]
    Api { action: String, reason: String },
    #[error("kubernetes: {0}")]
    Other(String),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// How the Job is submitted.
#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    /// Namespace (default: the kubeconfig context's, else `default`).
    pub namespace: Option<String>,
    /// The cbench image the pods run (`scripts/cbench-image.sh` builds one).
    pub image: String,
    /// The ReadWriteMany PersistentVolumeClaim holding the log directory.
    pub claim: String,
    /// A Secret whose keys become the pods' environment (model API keys).
    pub secret: Option<String>,
    pub service_account: Option<String>,
    pub cpus: Option<u32>,
    pub mem: Option<String>,
    /// Per-pod time limit, seconds.
    pub deadline_seconds: Option<i64>,
    /// Return once submitted.
    pub detach: bool,
    /// How often the submitter looks at the Job.
    pub poll: Duration,
}

/// A submitted Job, as `cbench status` and `cbench cancel` find it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmittedJob {
    pub job: String,
    pub namespace: String,
    /// Manifest positions of the pairs its indices stand for.
    pub indices: Vec<usize>,
    pub submitted_at: String,
}

fn engine_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("kubernetes")
}

/// The Jobs submitted for this run so far.
pub fn jobs(run_dir: &Path) -> Vec<SubmittedJob> {
    read_json(&engine_dir(run_dir).join("jobs.json")).unwrap_or_default()
}

/// The client and namespace from the user's configuration.
async fn connect(namespace: Option<&str>) -> Result<(kube::Client, String), KubeError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| KubeError::Config(e.to_string()))?;
    let ns = namespace
        .map(str::to_string)
        .unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|e| KubeError::Config(format!("the API server at {server}: {e}")))?;
    Ok((client, ns))
}

fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeError {
    let action = action.into();
    move |e| KubeError::Api {
        action,
        reason: error_text(&e),
    }
}

/// The server's own message when it sent one.
fn error_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// Whether the Job has ended (its Complete or Failed condition is true).
fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// The Job's tasks in the queue, or None once it ended or is gone.
async fn queue_state(
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    name: &str,
) -> Result<Option<QueueState>, KubeError> {
    let job = match jobs.get(name).await {
        Ok(job) => job,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(api_error(format!("reading Job {name}"))(e)),
    };
    if finished(&job) {
        return Ok(None);
    }
    let completions = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(0);
    let status = job.status.unwrap_or_default();
    let running = status.active.unwrap_or(0);
    let ended = status.succeeded.unwrap_or(0) + status.failed.unwrap_or(0);
    let pending = (completions - ended - running).max(0) as usize;
    let mut never_starts = None;
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .map_err(api_error(format!("listing the pods of Job {name}")))?;
    for pod in listed.items {
        let waiting = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
            .find(|w| NEVER_STARTS.contains(&w.reason.as_deref().unwrap_or("")));
        if let Some(w) = waiting {
            never_starts = Some(format!(
                "{}{}",
                w.reason.clone().unwrap_or_default(),
                w.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(Some(QueueState {
        pending,
        running: running.max(0) as usize,
        never_starts,
    }))
}

/// How the pod of `index` ended, in Kubernetes' words (`OOMKilled, exit 137`).
async fn pod_end(pods: &Api<Pod>, name: &str, index: usize) -> Option<String> {
    let listed = pods
        .list(&ListParams::default().labels(&format!(
            "job-name={name},batch.kubernetes.io/job-completion-index={index}"
        )))
        .await
        .ok()?;
    let pod = listed.items.into_iter().last()?;
    let status = pod.status?;
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.clone());
    if let Some(t) = terminated {
        return Some(format!(
            "Kubernetes says {} (exit {})",
            t.reason.unwrap_or_else(|| "terminated".into()),
            t.exit_code
        ));
    }
    let reason = status.reason.or(status.phase)?;
    Some(format!(
        "Kubernetes says {reason}{}",
        status.message.map(|m| format!(": {m}")).unwrap_or_default()
    ))
}

/// Submits the run's pairs still to do as one Indexed Job and, unless detached, follows it to
/// the end; returns the run's summary (None when detached).
pub async fn submit(
    cfg: RunConfig,
    argv: Vec<String>,
    opts: KubeOptions,
) -> Result<Option<RunSummary>, KubeError> {
    let started = Instant::now();
    let (client, namespace) = connect(opts.namespace.as_deref()).await?;
    let run_dir = cfg.log_dir.join(&cfg.name);
    let earlier = jobs(&run_dir);
    // Before anything is written: the API server answers, and no Job of this run is running
    // (a second one would run its pairs twice).
    let job_api: Api<Job> = Api::namespaced(client.clone(), &namespace);
    job_api
        .list(&ListParams::default().labels(&format!(
            "{}={},{}={}",
            job::MANAGED_BY.0,
            job::MANAGED_BY.1,
            job::RUN_LABEL,
            job::dns_label(&cfg.name, 63)
        )))
        .await
        .map_err(api_error(format!("listing Jobs in namespace {namespace}")))?;
    for j in &earlier {
        let api: Api<Job> = Api::namespaced(client.clone(), &j.namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &j.namespace);
        if queue_state(&api, &pods, &j.job).await?.is_some() {
            return Err(KubeError::Other(format!(
                "run `{name}` has Job {} still running in namespace {}: `cbench status -n {name}` shows it, `cbench cancel -n {name}` cancels it",
                j.job,
                j.namespace,
                name = cfg.name
            )));
        }
    }
    let prepared = cluster::prepare(&cfg, "kubernetes", argv, "kubernetes")?;
    let keys = prepared.manifest.pairs.clone();
    let todo = prepared.todo.clone();
    let progress = Progress::with_status(cfg.quiet, keys.len(), "pairs");
    progress.line(&format!(
        "cbench run: {} · engine: kubernetes (namespace {namespace}) · pairs: {} ({} to run) · at most {} at once",
        cfg.name,
        keys.len(),
        todo.len(),
        cfg.concurrency
    ));
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut submitted = None;
    if !todo.is_empty() {
        let log_dir = std::path::absolute(&cfg.log_dir)
            .map_err(|e| KubeError::Other(format!("{}: {e}", cfg.log_dir.display())))?;
        let request = job::JobRequest {
            run: cfg.name.clone(),
            submission: earlier.len(),
            image: opts.image.clone(),
            claim: opts.claim.clone(),
            mount_path: log_dir.display().to_string(),
            working_dir: prepared.manifest.cwd.clone(),
            manifest_path: prepared.manifest_path.display().to_string(),
            manifest_sha256: prepared.manifest_sha256()?,
            pairs: todo.clone(),
            parallelism: cfg.concurrency,
            cpus: opts.cpus,
            mem: opts.mem.clone(),
            deadline_seconds: opts.deadline_seconds,
            secret: opts.secret.clone(),
            service_account: opts.service_account.clone(),
            docker_socket: matches!(cfg.backend, cbench_run::backend::BackendChoice::Docker(_)),
        };
        let spec = job::build(&request);
        let name = spec.metadata.name.clone().unwrap_or_default();
        if let Err(e) = job_api.create(&PostParams::default(), &spec).await {
            prepared.discard_if_fresh();
            return Err(api_error(format!(
                "creating Job {name} in namespace {namespace}"
            ))(e));
        }
        let mut all = earlier.clone();
        all.push(SubmittedJob {
            job: name.clone(),
            namespace: namespace.clone(),
            indices: todo.clone(),
            submitted_at: cbench_core::clock::now_rfc3339(),
        });
        write_json_atomic(&engine_dir(&run_dir).join("jobs.json"), &all).map_err(RunError::from)?;
        progress.line(&format!(
            "submitted Job {name} in namespace {namespace}: {} pod{} (`kubectl logs -n {namespace} job/{name}`)",
            todo.len(),
            if todo.len() == 1 { "" } else { "s" },
        ));
        let run = &cfg.name;
        if opts.detach {
            progress.line(&format!(
                "detached: `cbench status -n {run}` shows it, `cbench cancel -n {run}` cancels it; `cbench run` with the same arguments writes the summary once it is done"
            ));
            return Ok(None);
        }
        cbench_core::interrupt::set_note(format!(
            "detached: Job {name} keeps running; `cbench status -n {run}` follows it, `cbench cancel -n {run}` cancels it"
        ));
        cbench_core::interrupt::set_cancel(cbench_core::interrupt::Cancel {
            question: format!("Job {name} goes on without this process; cancel it too?"),
            args: cluster::cancel_args(&cfg),
        });
        let label = format!("Job {name}");
        let result = cluster::follow(&label, &run_dir, &keys, &todo, &progress, opts.poll, || {
            let (jobs, pods, name) = (job_api.clone(), pod_api.clone(), name.clone());
            async move {
                queue_state(&jobs, &pods, &name)
                    .await
                    .map_err(|e| RunError::Cluster(e.to_string()))
            }
        })
        .await;
        match result {
            Ok(()) => {}
            Err(cluster::FollowEnd::Error(e)) => return Err(e.into()),
            Err(cluster::FollowEnd::NeverStarts(reason)) => {
                let _ = job_api.delete(&name, &DeleteParams::background()).await;
                return Err(KubeError::Other(format!(
                    "Job {name} can never start: Kubernetes says {reason} (is --k8s-image right and pullable by the nodes, and does --k8s-secret exist?); deleted it"
                )));
            }
        }
        submitted = Some(name);
    }
    let mut reasons = std::collections::BTreeMap::new();
    if let Some(name) = &submitted {
        for (position, &pair) in todo.iter().enumerate() {
            let key = &keys[pair];
            if !cluster::pair_dir(&run_dir, key)
                .join("result.json")
                .is_file()
            {
                if let Some(why) = pod_end(&pod_api, name, position).await {
                    reasons.insert(pair, why);
                }
            }
        }
    }
    let summary = cluster::finish(&cfg, &prepared, started, &progress, |i| {
        reasons.get(&i).cloned()
    })?;
    Ok(Some(summary))
}

/// `cbench status -n RUN` of a Kubernetes run.
pub async fn status(log_dir: &Path, name: &str) -> Result<String, KubeError> {
    let run_dir = log_dir.join(name);
    let manifest = cluster::read_manifest(log_dir, name)?;
    let (mut text, missing) = cluster::graded(&run_dir, &manifest);
    let all = jobs(&run_dir);
    if all.is_empty() {
        return Ok(text);
    }
    let (client, _) = connect(None).await?;
    for j in all {
        let api: Api<Job> = Api::namespaced(client.clone(), &j.namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &j.namespace);
        let line = match queue_state(&api, &pods, &j.job).await? {
            Some(s) => format!(
                "{} running, {} pending{}",
                s.running,
                s.pending,
                s.never_starts
                    .map(|r| format!(" (Kubernetes says {r}: it will never start; cancel it)"))
                    .unwrap_or_default()
            ),
            None if missing > 0 => format!(
                "ended; {missing} pair(s) without a grade; `cbench run` with the same arguments resubmits them"
            ),
            None => "finished".into(),
        };
        text.push_str(&format!(
            "  Job {} in namespace {} ({} pods, submitted {}): {line}\n",
            j.job,
            j.namespace,
            j.indices.len(),
            j.submitted_at
        ));
    }
    Ok(text)
}

/// `cbench cancel -n RUN`: deletes every Job of the run still running, with its pods (they
/// stop as a SIGTERM stops a run: sandboxes removed, results already written kept).
pub async fn cancel(log_dir: &Path, name: &str) -> Result<Vec<String>, KubeError> {
    let run_dir = log_dir.join(name);
    let all = jobs(&run_dir);
    if all.is_empty() {
        return Err(KubeError::Other(format!(
            "run `{name}` has no Kubernetes Job ({} has no kubernetes/jobs.json)",
            run_dir.display()
        )));
    }
    let (client, _) = connect(None).await?;
    let mut cancelled = Vec::new();
    for j in all {
        let api: Api<Job> = Api::namespaced(client.clone(), &j.namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &j.namespace);
        if queue_state(&api, &pods, &j.job).await?.is_some() {
            match api.delete(&j.job, &DeleteParams::background()).await {
                Ok(_) => cancelled.push(j.job),
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(api_error(format!("deleting Job {}", j.job))(e)),
            }
        }
    }
    Ok(cancelled)
}
