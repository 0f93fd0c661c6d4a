//! Grading on Cloud Batch (`--backend gcp`): every test run is a Batch job of its own, one
//! container task of the task's image (the agent's code never runs on the VM itself), its
//! inputs (the feature's tests and the patch) mounted read-only from that run's own prefix
//! of the bucket, its output written to a second prefix of its own, the job and both prefixes
//! deleted after the run whatever happened. CooperBench's shape (one job per image, every task
//! reading a shared manifest and writing into a shared results folder) is not copied: there,
//! any task's tests can rewrite any other task's result (docs/design/cloud-backends.md §H).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cbench_gcp::batch::{GcsVolume, JobSpec, JobState};
use cbench_gcp::credentials::{discover, SCOPE_CLOUD_PLATFORM};
use cbench_gcp::{AdcEnv, Batch, GcpError, Storage, TokenSource};

use crate::dataset::{Feature, Pair};
use crate::docker::cleanup::Scope;
use crate::sandbox::docker::REPO_DIR;
use crate::sandbox::{ExecOutput, SandboxError};
use cbench_core::exec::shell_quote;

/// Where CooperBench's images keep the test runner (run by path: the job sets the entrypoint).
const RUNNER: &str = "/usr/local/bin/runner.sh";
/// Where a test run's inputs and outputs appear in its container.
const IN_DIR: &str = "/mnt/disks/cbench-in";
const OUT_DIR: &str = "/mnt/disks/cbench-out";
/// Every object cbench writes lives under this prefix of the bucket.
pub const OBJECT_ROOT: &str = "cbench";
/// Labels on every Batch job (Batch allows lowercase letters, digits, `-` and `_` only).
pub const LABEL_MANAGED: &str = "cbench-managed";
pub const LABEL_RUN_ID: &str = "cbench-run-id";
/// A test run's job may run this much longer than the test timeout before Batch stops it
/// (the in-container `timeout` ends the tests first; this is the backstop).
const RUN_SLACK: Duration = Duration::from_secs(300);
/// How long a job may wait for Batch to give it a VM before cbench gives up on it.
const QUEUE_ALLOWANCE: Duration = Duration::from_secs(3600);
/// The output files a run leaves, each read with a cap.
const SMALL_FILE_CAP: usize = 64;
/// CooperBench's region for Batch.
pub const DEFAULT_REGION: &str = "us-central1";

/// `--backend gcp`'s grading settings, validated by the CLI.
#[derive(Debug, Clone)]
pub struct GcpSettings {
    /// `--gcp-project`; else the credentials' project.
    pub project: Option<String>,
    /// `--gcp-region`.
    pub region: String,
    /// `--gcp-bucket`; else `cbench-eval-<project>` (created when missing).
    pub bucket: Option<String>,
    /// Task images are `<prefix><repo>:task<id>`, pulled by Batch's VMs.
    pub image_prefix: String,
    pub cpu_milli: u32,
    pub memory_mib: u32,
    /// `blockExternalNetwork` on the test containers (`--grading-network none`).
    pub block_network: bool,
}

/// The clients and places of one invocation's Batch grading.
pub struct GcpClients {
    storage: Storage,
    batch: Batch,
    project: String,
    region: String,
    bucket: String,
    run_id: String,
    origin: String,
}

impl GcpClients {
    /// The project jobs run in.
    pub fn project(&self) -> &str {
        &self.project
    }
    /// The bucket inputs and outputs pass through.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
    /// The region jobs run in.
    pub fn region(&self) -> &str {
        &self.region
    }
    /// Where the credentials came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Grading on Batch, as the runner hands it to the grader.
#[derive(Clone)]
pub struct GcpGrading {
    pub clients: Arc<GcpClients>,
    pub settings: GcpSettings,
}

impl std::fmt::Debug for GcpGrading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpGrading")
            .field("project", &self.clients.project)
            .field("bucket", &self.clients.bucket)
            .field("region", &self.clients.region)
            .finish()
    }
}

/// Where the credentials and the services are.
#[derive(Debug, Clone)]
pub struct GcpEnv {
    /// What Application Default Credentials read.
    pub adc: AdcEnv,
    /// Cloud Storage's endpoint when not Google's: `STORAGE_EMULATOR_HOST` (the variable
    /// Google's storage clients read).
    pub storage_url: Option<String>,
    /// Cloud Batch's endpoint when not Google's: `CBENCH_GCP_BATCH_URL`.
    pub batch_url: Option<String>,
}

impl GcpEnv {
    /// This process's environment (plain http is accepted only to loopback, by the clients).
    pub fn from_process() -> GcpEnv {
        let endpoint = |var: &str| {
            let value = std::env::var(var).ok().filter(|v| !v.trim().is_empty())?;
            Some(if value.contains("://") {
                value
            } else {
                format!("http://{value}")
            })
        };
        GcpEnv {
            adc: AdcEnv::from_process(),
            storage_url: endpoint("STORAGE_EMULATOR_HOST"),
            batch_url: endpoint("CBENCH_GCP_BATCH_URL"),
        }
    }
}

/// The clients for `env`'s Application Default Credentials.
async fn clients_from_env(
    env: &GcpEnv,
    project: Option<&str>,
) -> Result<(Storage, Batch, String, String), GcpError> {
    let adc = discover(&env.adc, &cbench_gcp::token::token_client()).await?;
    let origin = adc.origin.clone();
    let project = match project.map(str::to_string).or_else(|| adc.project.clone()) {
        Some(p) => p,
        None => return Err(GcpError::NoProject { origin }),
    };
    let tokens = Arc::new(TokenSource::new(adc, SCOPE_CLOUD_PLATFORM));
    let storage = Storage::new(tokens.clone(), env.storage_url.as_deref())?;
    let batch = Batch::new(tokens, env.batch_url.as_deref())?;
    Ok((storage, batch, project, origin))
}

/// The bucket of `--gcp-bucket`'s default, as CooperBench names its own (`cooperbench-eval-…`).
pub fn default_bucket(project: &str) -> String {
    format!("cbench-eval-{project}")
}

/// The marker object saying which process owns an invocation's objects and jobs.
fn owner_object(run_id: &str) -> String {
    format!("{OBJECT_ROOT}/{run_id}/owner.json")
}

impl GcpGrading {
    /// Connects with the process's credentials, makes sure the bucket exists (creating it with
    /// a 7-day delete rule, as CooperBench does) and records this invocation's owner; every
    /// failure here is a clear error before any work.
    pub async fn connect(
        env: &GcpEnv,
        settings: GcpSettings,
        run_name: &str,
        run_id: &str,
        owner: &str,
    ) -> Result<GcpGrading, SandboxError> {
        let (storage, batch, project, origin) =
            clients_from_env(env, settings.project.as_deref()).await?;
        let bucket = settings
            .bucket
            .clone()
            .unwrap_or_else(|| default_bucket(&project));
        if !storage.bucket_exists(&bucket).await? {
            storage
                .create_bucket(&project, &bucket, &settings.region, 7)
                .await?;
            tracing::info!("created bucket gs://{bucket} in {project}");
        }
        let marker = serde_json::json!({"owner": owner, "run": run_name}).to_string();
        storage
            .upload(&bucket, &owner_object(run_id), Bytes::from(marker))
            .await?;
        Ok(GcpGrading {
            clients: Arc::new(GcpClients {
                storage,
                batch,
                project,
                region: settings.region.clone(),
                bucket,
                run_id: run_id.to_string(),
                origin,
            }),
            settings,
        })
    }

    /// Opens `pair`'s bench: its test runs use the pair's task image.
    pub fn bench(&self, pair: &Pair) -> GcpBench {
        GcpBench {
            grading: self.clone(),
            image: pair.task.image(&self.settings.image_prefix),
        }
    }
}

/// One pair's Batch grading.
pub struct GcpBench {
    grading: GcpGrading,
    image: String,
}

/// A fresh job id: `cbench-eval-` and 16 hex digits.
fn fresh_job_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let seed = format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    format!(
        "cbench-eval-{}",
        &cbench_core::fsutil::sha256_hex(seed.as_bytes())[..16]
    )
}

/// Deletes a test run's job and objects when the run ends, also when its future is dropped
/// (a cancelled run): then the deletion is spawned.
struct UnitGuard {
    clients: Arc<GcpClients>,
    job: Option<String>,
    prefix: String,
    done: bool,
}

impl UnitGuard {
    async fn release(mut self) {
        self.done = true;
        release(&self.clients, self.job.take(), &self.prefix).await;
    }
}

impl Drop for UnitGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let clients = self.clients.clone();
            let job = self.job.take();
            let prefix = self.prefix.clone();
            handle.spawn(async move { release(&clients, job, &prefix).await });
        }
    }
}

async fn release(clients: &GcpClients, job: Option<String>, prefix: &str) {
    if let Some(job) = job {
        if let Err(e) = clients.batch.delete_job(&job).await {
            tracing::warn!("deleting Batch job {job}: {e}");
        }
    }
    if let Err(e) = clients.storage.delete_prefix(&clients.bucket, prefix).await {
        tracing::warn!("deleting gs://{}/{prefix}: {e}", clients.bucket);
    }
}

impl GcpBench {
    /// Runs `feature`'s tests with `patch` (a host file; empty = none) as a Batch job.
    pub async fn run(
        &self,
        feature: &Feature,
        patch: &Path,
        patch_is_empty: bool,
        name: &str,
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, SandboxError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(crate::sandbox::io(format!("reading {}", p.display())))
        };
        let tests_name = format!("{name}.tests.patch");
        let mut args = vec![tests_name.clone()];
        let mut inputs = vec![(tests_name, read(&feature.tests_patch_path())?)];
        if !patch_is_empty {
            let patch_name = format!("{name}.patch");
            args.push(patch_name.clone());
            inputs.push((patch_name, read(patch)?));
        }
        let command = format!(
            "bash {RUNNER} {}",
            args.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        self.grading
            .run_job(&self.image, inputs, &command, timeout, cap)
            .await
    }
}

impl GcpGrading {
    /// Runs `command` in the repository of `image` as a Batch job of its own, `inputs` copied
    /// to `/patches` first; the job and its objects are deleted afterwards on every path.
    pub async fn run_job(
        &self,
        image: &str,
        inputs: Vec<(String, Vec<u8>)>,
        command: &str,
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, SandboxError> {
        let clients = &self.clients;
        let job_id = fresh_job_id();
        let prefix = format!("{OBJECT_ROOT}/{}/{job_id}/", clients.run_id);
        let mut guard = UnitGuard {
            clients: clients.clone(),
            job: None,
            prefix: prefix.clone(),
            done: false,
        };
        let outcome = async {
            for (file, bytes) in inputs {
                clients
                    .storage
                    .upload(
                        &clients.bucket,
                        &format!("{prefix}in/{file}"),
                        Bytes::from(bytes),
                    )
                    .await?;
            }
            let spec = self.job_spec(image, &prefix, command, timeout, cap);
            let job = clients
                .batch
                .create_job(&clients.project, &job_id, &spec)
                .await?;
            guard.job = Some(job.clone());
            tracing::debug!("Batch job {job} ({image}): {command}");
            wait_for(clients, &job, timeout + RUN_SLACK + QUEUE_ALLOWANCE).await?;
            collect_output(clients, &prefix, &job, cap).await
        }
        .await;
        guard.release().await;
        outcome
    }

    fn job_spec(
        &self,
        image: &str,
        prefix: &str,
        command: &str,
        timeout: Duration,
        cap: usize,
    ) -> JobSpec {
        let settings = &self.settings;
        let clients = &self.clients;
        // The command's output goes to the container's own disk first, so the capped copy and
        // its size land in the output prefix with the exit code, written last. An empty input
        // folder copies nothing (`nullglob`).
        let script = format!(
            "shopt -s nullglob\n\
             mkdir -p /patches && for f in {IN_DIR}/*; do cp -- \"$f\" /patches/ || exit 3; done\n\
             cd {REPO_DIR} || exit 3\n\
             timeout -k 10 {secs} {command} > /tmp/cbench-output 2>&1 < /dev/null\n\
             code=$?\n\
             head -c {cap} /tmp/cbench-output > {OUT_DIR}/output\n\
             wc -c < /tmp/cbench-output > {OUT_DIR}/size\n\
             echo \"$code\" > {OUT_DIR}/exit_code\n",
            secs = timeout.as_secs().max(1),
        );
        JobSpec {
            image: image.to_string(),
            script,
            task_count: 1,
            parallelism: 1,
            cpu_milli: settings.cpu_milli,
            memory_mib: settings.memory_mib,
            max_run_duration: timeout + RUN_SLACK,
            env: BTreeMap::new(),
            volumes: vec![
                GcsVolume {
                    remote_path: format!("{}/{prefix}in", clients.bucket),
                    mount_path: IN_DIR.into(),
                    read_only: true,
                },
                GcsVolume {
                    remote_path: format!("{}/{prefix}out", clients.bucket),
                    mount_path: OUT_DIR.into(),
                    read_only: false,
                },
            ],
            labels: BTreeMap::from([
                (LABEL_MANAGED.to_string(), "1".to_string()),
                (LABEL_RUN_ID.to_string(), clients.run_id.clone()),
            ]),
            block_network: settings.block_network,
            region: clients.region.clone(),
        }
    }
}

/// Polls job `job` until it ends (0.5 s, growing to 10 s between reads); a job that fails, is
/// cancelled, disappears or outlasts `limit` is an infrastructure error in Batch's words.
async fn wait_for(clients: &GcpClients, job: &str, limit: Duration) -> Result<(), SandboxError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        let Some(status) = clients.batch.job_status(job).await? else {
            return Err(SandboxError::Command(format!(
                "Batch job {job} disappeared before it finished (deleted outside this run?)"
            )));
        };
        match status.state {
            JobState::Succeeded => return Ok(()),
            JobState::Failed | JobState::Cancelled => {
                return Err(SandboxError::Command(format!(
                    "Batch job {job} ended {:?}: {}",
                    status.state,
                    status
                        .last_event
                        .as_deref()
                        .unwrap_or("Batch gave no reason")
                )))
            }
            _ => {}
        }
        if started.elapsed() > limit {
            return Err(SandboxError::Command(format!(
                "Batch job {job} had not finished after {} s (last state {:?})",
                limit.as_secs(),
                status.state
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_secs(10));
    }
}

/// The test run's exit code, capped output and whether it was cut, from its output prefix.
async fn collect_output(
    clients: &GcpClients,
    prefix: &str,
    job: &str,
    cap: usize,
) -> Result<ExecOutput, SandboxError> {
    let read = |file: &'static str, max: usize| {
        let name = format!("{prefix}out/{file}");
        async move {
            clients
                .storage
                .download(&clients.bucket, &name, max)
                .await
                .map(|bytes| bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
        }
    };
    let missing = |file: &str| {
        SandboxError::Command(format!(
            "Batch job {job} succeeded but left no {file} (the test container did not finish its script)"
        ))
    };
    let code = read("exit_code", SMALL_FILE_CAP)
        .await?
        .ok_or_else(|| missing("exit code"))?;
    let code: i32 = code
        .trim()
        .parse()
        .map_err(|_| SandboxError::Command(format!("Batch job {job}: exit code {code:?}")))?;
    let size: u64 = read("size", SMALL_FILE_CAP)
        .await?
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let output = read("output", cap)
        .await?
        .ok_or_else(|| missing("output"))?;
    // `timeout` exits 124 (137 after its kill): the tests ran out of time.
    let timed_out = code == 124 || code == 137;
    Ok(ExecOutput {
        exit_code: if timed_out { -1 } else { code },
        output,
        timed_out,
        truncated: size > cap as u64,
    })
}

/// Deletes the jobs and objects of the invocations `scope` selects (a run's own; a run name's
/// dead ones; every dead one; all): how many invocations were swept. An invocation is dead
/// when the process its marker object names is gone from this machine.
pub async fn sweep(clients: &GcpClients, scope: &Scope) -> Result<usize, SandboxError> {
    let mut run_ids = Vec::new();
    match scope {
        Scope::RunId(id) => run_ids.push(id.clone()),
        _ => {
            let names = clients
                .storage
                .list(&clients.bucket, &format!("{OBJECT_ROOT}/"))
                .await?;
            let mut seen = std::collections::BTreeSet::new();
            for name in names {
                let Some(id) = name
                    .strip_prefix(&format!("{OBJECT_ROOT}/"))
                    .and_then(|rest| rest.split('/').next())
                else {
                    continue;
                };
                if !seen.insert(id.to_string()) {
                    continue;
                }
                let marker = clients
                    .storage
                    .download(&clients.bucket, &owner_object(id), 4096)
                    .await?
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                let owner = marker.as_ref().and_then(|m| m["owner"].as_str());
                let run = marker.as_ref().and_then(|m| m["run"].as_str());
                let dead = owner.is_none_or(cbench_core::process::owner_is_gone);
                let selected = match scope {
                    Scope::RunName(name) => dead && run == Some(name.as_str()),
                    Scope::Orphans => dead,
                    _ => true,
                };
                if selected {
                    run_ids.push(id.to_string());
                }
            }
        }
    }
    for id in &run_ids {
        let jobs = clients
            .batch
            .list_jobs(&clients.project, &clients.region, (LABEL_RUN_ID, id))
            .await?;
        for job in jobs {
            clients.batch.delete_job(&job).await?;
        }
        clients
            .storage
            .delete_prefix(&clients.bucket, &format!("{OBJECT_ROOT}/{id}/"))
            .await?;
    }
    Ok(run_ids.len())
}

/// Connects for `cbench cleanup --backend gcp` / `doctor` (no owner marker is written).
pub async fn connect_for_cleanup(
    env: &GcpEnv,
    project: Option<&str>,
    region: &str,
    bucket: Option<&str>,
) -> Result<GcpClients, SandboxError> {
    let (storage, batch, project, origin) = clients_from_env(env, project).await?;
    let bucket = bucket
        .map(str::to_string)
        .unwrap_or_else(|| default_bucket(&project));
    Ok(GcpClients {
        storage,
        batch,
        project,
        region: region.to_string(),
        bucket,
        run_id: String::new(),
        origin,
    })
}

/// Invocations to sweep after Ctrl-C / SIGTERM.
static ACTIVE: std::sync::Mutex<Vec<Arc<GcpClients>>> = std::sync::Mutex::new(Vec::new());

/// Remembers this invocation's clients so a signal can sweep what it made.
pub fn register(clients: &Arc<GcpClients>) {
    if let Ok(mut active) = ACTIVE.lock() {
        active.push(clients.clone());
    }
}

/// Sweeps every registered invocation's jobs and objects (after Ctrl-C / SIGTERM).
pub async fn sweep_registered() -> Result<usize, SandboxError> {
    let active = match ACTIVE.lock() {
        Ok(a) => a.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let mut total = 0;
    for clients in &active {
        total += sweep(clients, &Scope::RunId(clients.run_id.clone())).await?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_fresh_and_valid() {
        let a = fresh_job_id();
        let b = fresh_job_id();
        assert_ne!(a, b);
        cbench_gcp::batch::check_job_id(&a).expect("a valid id");
    }
}
