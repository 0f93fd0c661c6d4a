//! Cloud Batch through its REST API (`batch/v1`): a job of N copies of one container task is
//! created, watched, listed by label and deleted. Field names follow the proto3 JSON mapping
//! Google's clients send (int64 fields as strings, durations as `"<n>s"`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::rest::RestClient;
use crate::{GcpError, TokenSource};

/// Cloud Batch's endpoint.
pub const DEFAULT_BATCH_URL: &str = "https://batch.googleapis.com";

/// A job: `task_count` copies of one task, each a container of `image` running `script` with
/// `/bin/bash -c` (Batch gives each its `BATCH_TASK_INDEX`).
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The container image every task runs.
    pub image: String,
    /// The script each task runs.
    pub script: String,
    /// How many tasks.
    pub task_count: u32,
    /// How many run at once.
    pub parallelism: u32,
    /// CPU per task, in thousandths of a core.
    pub cpu_milli: u32,
    /// Memory per task.
    pub memory_mib: u32,
    /// A task running longer is stopped and fails.
    pub max_run_duration: Duration,
    /// Environment variables of every task.
    pub env: BTreeMap<String, String>,
    /// Cloud Storage prefixes mounted into every task (Batch mounts them with gcsfuse).
    pub volumes: Vec<GcsVolume>,
    /// Labels on the job (cbench's run labels, for cleanup).
    pub labels: BTreeMap<String, String>,
    /// Cut the containers off the network.
    pub block_network: bool,
    /// The region the VMs run in (`us-central1`).
    pub region: String,
    /// The service account the VMs run as (its token is what the tasks could reach through
    /// the metadata server); the project's default Compute Engine account when None.
    pub service_account: Option<String>,
}

/// A Cloud Storage prefix mounted into the tasks.
#[derive(Debug, Clone)]
pub struct GcsVolume {
    /// `bucket/prefix`.
    pub remote_path: String,
    /// Where it appears in the container.
    pub mount_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A job's state (`JobStatus.State`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for resources.
    Queued,
    /// Resources allocated.
    Scheduled,
    /// Tasks running.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// At least one task failed.
    Failed,
    /// Being deleted.
    DeletionInProgress,
    /// Being cancelled.
    CancellationInProgress,
    /// Cancelled.
    Cancelled,
    /// A state this client does not know (named as Batch sent it).
    Other(String),
}

impl JobState {
    fn parse(state: &str) -> JobState {
        match state {
            "QUEUED" => JobState::Queued,
            "SCHEDULED" => JobState::Scheduled,
            "RUNNING" => JobState::Running,
            "SUCCEEDED" => JobState::Succeeded,
            "FAILED" => JobState::Failed,
            "DELETION_IN_PROGRESS" => JobState::DeletionInProgress,
            "CANCELLATION_IN_PROGRESS" => JobState::CancellationInProgress,
            "CANCELLED" => JobState::Cancelled,
            other => JobState::Other(other.to_string()),
        }
    }

    /// The job will not change any more.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Where a job stands.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// Its state.
    pub state: JobState,
    /// Tasks that succeeded, over all task groups.
    pub succeeded: u64,
    /// Tasks that failed.
    pub failed: u64,
    /// The description of the job's last status event (why it failed, typically).
    pub last_event: Option<String>,
}

/// A Cloud Batch client for one set of credentials.
pub struct Batch {
    rest: RestClient,
}

impl Batch {
    /// A client of `base_url` (Batch's own when None).
    pub fn new(tokens: Arc<TokenSource>, base_url: Option<&str>) -> Result<Batch, GcpError> {
        Ok(Batch {
            rest: RestClient::new("Cloud Batch", tokens, base_url.unwrap_or(DEFAULT_BATCH_URL))?,
        })
    }

    /// Creates job `job_id` in `project`; returns its name
    /// (`projects/P/locations/R/jobs/ID`). Job ids are chosen fresh by the caller, so an
    /// "already exists" after a retried create is this create's own first attempt.
    pub async fn create_job(
        &self,
        project: &str,
        job_id: &str,
        spec: &JobSpec,
    ) -> Result<String, GcpError> {
        check_job_id(job_id)?;
        check_segment("project", project)?;
        check_segment("region", &spec.region)?;
        let parent = format!("projects/{project}/locations/{}", spec.region);
        let url = format!("{}/v1/{parent}/jobs", self.rest.base());
        let body = job_body(spec);
        let what = format!("creating Batch job {job_id} in {parent}");
        self.rest
            .call(&what, &[409], |c| {
                c.post(&url).query(&[("jobId", job_id)]).json(&body)
            })
            .await?;
        Ok(format!("{parent}/jobs/{job_id}"))
    }

    /// Where job `name` stands; None when it does not exist (any more).
    pub async fn job_status(&self, name: &str) -> Result<Option<JobStatus>, GcpError> {
        check_job_name(name)?;
        let url = format!("{}/v1/{name}", self.rest.base());
        let what = format!("reading Batch job {name}");
        let response = self.rest.call(&what, &[404], |c| c.get(&url)).await?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        let job: Value = response.json().await.map_err(|e| GcpError::Api {
            what: what.clone(),
            reason: format!("the job is not JSON: {e}"),
            status: None,
        })?;
        Ok(Some(status_of(&job)))
    }

    /// The names of the jobs in `project`/`region` carrying label `key=value`, every page.
    pub async fn list_jobs(
        &self,
        project: &str,
        region: &str,
        (key, value): (&str, &str),
    ) -> Result<Vec<String>, GcpError> {
        check_segment("project", project)?;
        check_segment("region", region)?;
        check_label(key)?;
        check_label(value)?;
        let url = format!(
            "{}/v1/projects/{project}/locations/{region}/jobs",
            self.rest.base()
        );
        // Checked above: nothing in a label can widen the filter.
        let filter = format!("labels.{key}=\"{value}\"");
        let what = format!("listing Batch jobs in {project}/{region} labelled {key}={value}");
        self.rest
            .names_in_pages(&what, "jobs", usize::MAX, |c, page| {
                let mut query = vec![("filter", filter.as_str())];
                if let Some(token) = page {
                    query.push(("pageToken", token));
                }
                c.get(&url).query(&query)
            })
            .await
    }

    /// Deletes job `name` (Batch stops its tasks); false when it was not there. The deletion
    /// is a long-running operation Batch finishes on its own.
    pub async fn delete_job(&self, name: &str) -> Result<bool, GcpError> {
        check_job_name(name)?;
        let url = format!("{}/v1/{name}", self.rest.base());
        let what = format!("deleting Batch job {name}");
        let response = self.rest.call(&what, &[404], |c| c.delete(&url)).await?;
        Ok(response.status().is_success())
    }
}

/// The `Job` of a spec, in proto3 JSON.
fn job_body(spec: &JobSpec) -> Value {
    let volumes: Vec<Value> = spec
        .volumes
        .iter()
        .map(|v| {
            let mut volume = json!({
                "gcs": {"remotePath": v.remote_path},
                "mountPath": v.mount_path,
            });
            if v.read_only {
                volume["mountOptions"] = json!(["-o ro"]);
            }
            volume
        })
        .collect();
    // Named on the container too, so the bind mounts themselves are read-only where asked
    // (Batch mounts every volume into the container read-write when none are named).
    let container_volumes: Vec<String> = spec
        .volumes
        .iter()
        .map(|v| {
            let ro = if v.read_only { ":ro" } else { "" };
            format!("{0}:{0}{ro}", v.mount_path)
        })
        .collect();
    let mut allocation =
        json!({"location": {"allowedLocations": [format!("regions/{}", spec.region)]}});
    if let Some(email) = &spec.service_account {
        allocation["serviceAccount"] = json!({"email": email});
    }
    json!({
        "taskGroups": [{
            "taskCount": spec.task_count.to_string(),
            "parallelism": spec.parallelism.max(1).to_string(),
            "taskSpec": {
                "runnables": [{
                    "container": {
                        "imageUri": spec.image,
                        "entrypoint": "/bin/bash",
                        "commands": ["-c", spec.script],
                        "volumes": container_volumes,
                        "blockExternalNetwork": spec.block_network,
                    },
                }],
                "computeResource": {
                    "cpuMilli": spec.cpu_milli.to_string(),
                    "memoryMib": spec.memory_mib.to_string(),
                },
                "maxRunDuration": format!("{}s", spec.max_run_duration.as_secs().max(1)),
                "environment": {"variables": spec.env},
                "volumes": volumes,
            },
        }],
        "allocationPolicy": allocation,
        "labels": spec.labels,
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    })
}

/// The state, task counts and last event of a `Job` (counts are int64: strings in JSON).
fn status_of(job: &Value) -> JobStatus {
    let status = job.get("status").unwrap_or(&Value::Null);
    let state = JobState::parse(
        status
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("STATE_UNSPECIFIED"),
    );
    let count = |group: &Value, key: &str| -> u64 {
        match group.pointer(&format!("/counts/{key}")) {
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            Some(v) => v.as_u64().unwrap_or(0),
            None => 0,
        }
    };
    let groups: Vec<&Value> = status
        .get("taskGroups")
        .and_then(Value::as_object)
        .map(|m| m.values().collect())
        .unwrap_or_default();
    let last_event = status
        .get("statusEvents")
        .and_then(Value::as_array)
        .and_then(|events| events.last())
        .and_then(|e| e.get("description"))
        .and_then(Value::as_str)
        .map(|s| s.chars().take(500).collect());
    JobStatus {
        state,
        succeeded: groups.iter().map(|g| count(g, "SUCCEEDED")).sum(),
        failed: groups.iter().map(|g| count(g, "FAILED")).sum(),
        last_event,
    }
}

/// Refuses a job id Batch would: 1-63 lowercase letters, digits and `-`, starting with a
/// letter and not ending with `-`.
pub fn check_job_id(id: &str) -> Result<(), GcpError> {
    let ok = lowercase_dashed(id)
        && id.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(GcpError::Invalid(format!(
            "`{id}` is not a Batch job id (1-63 lowercase letters, digits and `-`, starting with a letter, not ending with `-`)"
        )))
    }
}

/// A job name this client made: `projects/P/locations/R/jobs/ID`, nothing else in the URL.
fn check_job_name(name: &str) -> Result<(), GcpError> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = matches!(parts[..], ["projects", p, "locations", r, "jobs", id]
        if check_segment("project", p).is_ok() && check_segment("region", r).is_ok() && check_job_id(id).is_ok());
    if ok {
        Ok(())
    } else {
        Err(GcpError::Invalid(format!(
            "`{name}` is not a Batch job name (projects/P/locations/R/jobs/ID)"
        )))
    }
}

/// 1-63 lowercase letters, digits and `-`: one plain URL path segment.
fn lowercase_dashed(value: &str) -> bool {
    (1..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A label key or value as Batch allows them: lowercase letters, digits, `-` and `_` (so it
/// can sit in a filter's quotes without changing the filter).
pub fn check_label(value: &str) -> Result<(), GcpError> {
    let ok = (1..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(GcpError::Invalid(format!(
            "`{value}` is not a label key or value (lowercase letters, digits, `-` and `_`)"
        )))
    }
}

/// A project id or region: one plain path segment.
fn check_segment(what: &str, value: &str) -> Result<(), GcpError> {
    if lowercase_dashed(value) {
        Ok(())
    } else {
        Err(GcpError::Invalid(format!(
            "`{value}` is not a Google Cloud {what} (lowercase letters, digits and `-`)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_int64_strings_summed_over_task_groups() {
        let job = json!({"status": {"state": "RUNNING", "taskGroups": {
            "group0": {"counts": {"SUCCEEDED": "3", "FAILED": "1", "RUNNING": "2"}},
            "group1": {"counts": {"SUCCEEDED": 2}}},
            "statusEvents": [{"description": "first"}, {"description": "Job state is set from RUNNING to FAILED"}]}});
        let status = status_of(&job);
        assert_eq!(status.state, JobState::Running);
        assert_eq!((status.succeeded, status.failed), (5, 1));
        assert_eq!(
            status.last_event.as_deref(),
            Some("Job state is set from RUNNING to FAILED")
        );
        assert_eq!(
            status_of(&json!({})).state,
            JobState::Other("STATE_UNSPECIFIED".into())
        );
    }

    #[test]
    fn names_that_could_reach_another_url_are_refused() {
        assert!(check_job_id("cbench-eval-0a1b2c").is_ok());
        for bad in ["", "1abc", "abc-", "ABC", "a/b", "a?b", &"a".repeat(64)] {
            assert!(check_job_id(bad).is_err(), "{bad}");
        }
        assert!(check_job_name("projects/p-1/locations/us-central1/jobs/j1").is_ok());
        for bad in [
            "projects/p/locations/r/jobs/j/../../x",
            "projects/p/locations/r/jobs",
            "projects/p?x/locations/r/jobs/j",
        ] {
            assert!(check_job_name(bad).is_err(), "{bad}");
        }
    }
}
