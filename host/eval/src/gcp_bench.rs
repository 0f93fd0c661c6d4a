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
/// The result file a run leaves is read with this cap.
const SMALL_FILE_CAP: usize = 64;
/// Objects deleted after one test run at most (its tests may create millions).
const MAX_OBJECTS_DELETED: usize = 1000;
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
    /// `blockExternalNetwork` on the test containers (`--grading-network none`, gcp's default).
    pub block_network: bool,
    /// `--gcp-service-account`: what the jobs' VMs run as.
    pub service_account: Option<String>,
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
    // The tests may have left any number of objects: what is over the bound is left to
    // the bucket's delete rule rather than holding the pair's grading slot.
    match clients
        .storage
        .delete_prefix_at_most(&clients.bucket, prefix, MAX_OBJECTS_DELETED)
        .await
    {
        Ok((_, true)) => tracing::warn!(
            "gs://{}/{prefix}: over {MAX_OBJECTS_DELETED} objects; the rest go with the bucket's 7-day rule",
            clients.bucket
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("deleting gs://{}/{prefix}: {e}", clients.bucket),
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
            let spec = self.job_spec(image, &prefix, command, timeout);
            let job = clients
                .batch
                .create_job(&clients.project, &job_id, &spec)
                .await?;
            guard.job = Some(job.clone());
            tracing::debug!("Batch job {job} ({image}): {command}");
            let end = wait_for(clients, &job, timeout + RUN_SLACK + QUEUE_ALLOWANCE).await?;
            collect_output(clients, &prefix, end, timeout, cap).await
        }
        .await;
        guard.release().await;
        outcome
    }

    fn job_spec(&self, image: &str, prefix: &str, command: &str, timeout: Duration) -> JobSpec {
        let settings = &self.settings;
        let clients = &self.clients;
        // After the command, every other process in the container is killed and only bash
        // builtins run (the tests may have replaced any program), so nothing the tests left
        // can change the result file, and one they put in its place is not written through.
        let script = format!(
            "shopt -s nullglob\n\
             mkdir -p /patches && for f in {IN_DIR}/*; do cp -- \"$f\" /patches/ || exit {SETUP_FAILED}; done\n\
             cd {REPO_DIR} || exit {SETUP_FAILED}\n\
             started=$SECONDS\n\
             timeout -k 10 {secs} {command} > {OUT_DIR}/output 2>&1 < /dev/null\n\
             code=$?\n\
             elapsed=$((SECONDS - started))\n\
             kill -9 -1 2>/dev/null\n\
             result={OUT_DIR}/exit_code\n\
             if [[ -L $result || ( -e $result && ! -f $result ) ]]; then exit 0; fi\n\
             printf '%s %s\\n' \"$code\" \"$elapsed\" > \"$result\"\n\
             exit 0\n",
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
            service_account: settings.service_account.clone(),
        }
    }
}

/// How a test run's job ended, when it is not Batch's doing.
enum JobEnd {
    /// cbench's script ran to its end.
    Succeeded,
    /// The container ended with this code before the script did: something in it (the tests,
    /// e.g. by getting the script OOM-killed) ended it.
    ContainerExited(i32),
}

/// cbench's script's own exit code when it cannot start the tests (no repository, inputs not
/// copied): the image's or the bucket's fault, not the tests'.
const SETUP_FAILED: i32 = 86;

/// The task's exit code in a failed job's last event (`… with exit code 137.`).
fn task_exit_code(event: &str) -> Option<i64> {
    let at = event.rfind("with exit code ")? + "with exit code ".len();
    let digits: String = event[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Polls job `job` until it ends (0.5 s, growing to 10 s between reads). A job Batch failed
/// (its exit codes 50000 and up: no VM, preemption, the run-time limit), cancelled or lost, one
/// whose script could not start the tests, and one that outlasts `limit` are infrastructure
/// errors in Batch's words.
async fn wait_for(
    clients: &GcpClients,
    job: &str,
    limit: Duration,
) -> Result<JobEnd, SandboxError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        let Some(status) = clients.batch.job_status(job).await? else {
            return Err(SandboxError::Command(format!(
                "Batch job {job} disappeared before it finished (deleted outside this run?)"
            )));
        };
        let event = status
            .last_event
            .as_deref()
            .unwrap_or("Batch gave no reason");
        match status.state {
            JobState::Succeeded => return Ok(JobEnd::Succeeded),
            JobState::Failed => {
                return match task_exit_code(event) {
                    Some(code) if code < 50_000 && code != SETUP_FAILED as i64 => {
                        Ok(JobEnd::ContainerExited(code as i32))
                    }
                    Some(code) if code == SETUP_FAILED as i64 => Err(SandboxError::Command(
                        format!(
                            "Batch job {job}: the test container could not start the tests (no repository at {REPO_DIR} in the image, or its inputs could not be copied): {event}"
                        ),
                    )),
                    _ => Err(SandboxError::Command(format!(
                        "Batch job {job} ended FAILED: {event}"
                    ))),
                };
            }
            JobState::Cancelled => {
                return Err(SandboxError::Command(format!(
                    "Batch job {job} was cancelled: {event}"
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
/// The container ran cbench's script, so results that are missing or malformed were removed
/// or replaced by the tests themselves (they can write to the output prefix while they run):
/// that makes the run a failure, never an infrastructure error.
async fn collect_output(
    clients: &GcpClients,
    prefix: &str,
    end: JobEnd,
    timeout: Duration,
    cap: usize,
) -> Result<ExecOutput, SandboxError> {
    let (output, truncated) = clients
        .storage
        .download_head(&clients.bucket, &format!("{prefix}out/output"), cap)
        .await?
        .unwrap_or_default();
    let mut output = String::from_utf8_lossy(&output).into_owned();
    if let JobEnd::ContainerExited(code) = end {
        output.push_str(&format!(
            "\n[cbench: the test container ended with exit code {code} before cbench's script finished]\n"
        ));
        return Ok(ExecOutput {
            exit_code: code,
            output,
            timed_out: false,
            truncated,
        });
    }
    let result = match clients
        .storage
        .download_head(
            &clients.bucket,
            &format!("{prefix}out/exit_code"),
            SMALL_FILE_CAP,
        )
        .await?
    {
        Some((bytes, false)) => parse_result(&String::from_utf8_lossy(&bytes)),
        _ => None,
    };
    let Some((code, elapsed)) = result else {
        output.push_str(
            "\n[cbench: this test run left no readable exit code: the tests removed or replaced cbench's result file]\n",
        );
        return Ok(ExecOutput {
            exit_code: -1,
            output,
            timed_out: false,
            truncated,
        });
    };
    // `timeout` exits 124 (137 after its kill) when it fired: only then, and only once the
    // time was up, is it a timeout (a runner may exit 124 or be OOM-killed on its own).
    let timed_out = (code == 124 || code == 137) && elapsed >= timeout.as_secs();
    Ok(ExecOutput {
        exit_code: if timed_out { -1 } else { code },
        output,
        timed_out,
        truncated,
    })
}

/// `<exit code> <seconds>`, as cbench's script writes it.
fn parse_result(text: &str) -> Option<(i32, u64)> {
    let mut fields = text.split_ascii_whitespace();
    let code = fields.next()?.parse().ok()?;
    let elapsed = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some((code, elapsed))
}

/// Deletes the jobs and objects of the invocations `scope` selects (a run's own; a run name's
/// dead ones; every dead one; all): how many invocations were swept. An invocation is dead
/// when the process its marker object names is gone from this machine.
pub async fn sweep(clients: &GcpClients, scope: &Scope) -> Result<usize, SandboxError> {
    let root = format!("{OBJECT_ROOT}/");
    let mut run_ids = Vec::new();
    match scope {
        Scope::RunId(id) => run_ids.push(id.clone()),
        _ => {
            let folders = clients
                .storage
                .list_prefixes(&clients.bucket, &root, MAX_SWEPT_RUNS)
                .await?;
            for folder in folders {
                let Some(id) = folder
                    .strip_prefix(&root)
                    .and_then(|rest| rest.strip_suffix('/'))
                else {
                    continue;
                };
                // Not a run id cbench made (anyone with the bucket can write there).
                if cbench_gcp::batch::check_label(id).is_err() {
                    tracing::warn!(
                        "gs://{}/{folder}: not a cbench run; left alone",
                        clients.bucket
                    );
                    continue;
                }
                let marker = clients
                    .storage
                    .download(&clients.bucket, &owner_object(id), 4096)
                    .await
                    .ok()
                    .flatten()
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
    // One invocation that cannot be swept does not keep the others: the first error is
    // reported after all were tried.
    let mut first_error = None;
    for id in &run_ids {
        if let Err(e) = sweep_run(clients, id).await {
            tracing::warn!("sweeping run {id}: {e}");
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(run_ids.len()),
    }
}

/// Invocations one sweep looks at, at most.
const MAX_SWEPT_RUNS: usize = 10_000;

/// Deletes one invocation's jobs and objects.
async fn sweep_run(clients: &GcpClients, id: &str) -> Result<(), SandboxError> {
    let jobs = clients
        .batch
        .list_jobs(&clients.project, &clients.region, (LABEL_RUN_ID, id))
        .await?;
    for job in jobs {
        clients.batch.delete_job(&job).await?;
    }
    let prefix = format!("{OBJECT_ROOT}/{id}/");
    let (_, more) = clients
        .storage
        .delete_prefix_at_most(&clients.bucket, &prefix, 100 * MAX_OBJECTS_DELETED)
        .await?;
    if more {
        tracing::warn!(
            "gs://{}/{prefix}: over {} objects; the rest go with the bucket's 7-day rule",
            clients.bucket,
            100 * MAX_OBJECTS_DELETED
        );
    }
    Ok(())
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
    fn results_and_batch_events_are_read_strictly() {
        assert_eq!(parse_result("0 12\n"), Some((0, 12)));
        assert_eq!(parse_result("124 600"), Some((124, 600)));
        for bad in ["", "0", "x 1", "0 1 2", "0 -1"] {
            assert_eq!(parse_result(bad), None, "{bad:?}");
        }
        let event = "Job state is set from RUNNING to FAILED for job projects/p/locations/r/jobs/j. Job failed due to task failure. Specifically, task with index 0 failed due to the following task event: \"Task state is updated from RUNNING to FAILED on zones/us-central1-a/instances/7 with exit code 137.\"";
        assert_eq!(task_exit_code(event), Some(137));
        assert_eq!(task_exit_code("no code here"), None);
    }

    #[test]
    fn job_ids_are_fresh_and_valid() {
        let a = fresh_job_id();
        let b = fresh_job_id();
        assert_ne!(a, b);
        cbench_gcp::batch::check_job_id(&a).expect("a valid id");
    }
}
