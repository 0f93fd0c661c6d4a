//! Cloud Batch: a job is created in the shape Batch checks (int64 fields as strings, a
//! container runnable, durations), watched to its end with task counts, found by its label,
//! and deleted; a create whose reply was lost is not created twice; names that could reach
//! another URL are refused before any request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cbench_gcp::batch::{GcsVolume, JobSpec, JobState};
use cbench_gcp::credentials::{discover, SCOPE_CLOUD_PLATFORM};
use cbench_gcp::{Batch, TokenSource};

use crate::fake::{env_with, service_account_file, Server, SA_EMAIL};

async fn batch_for(server: &Server) -> (Batch, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_with(server);
    env.application_credentials = Some(service_account_file(dir.path(), server, SA_EMAIL));
    let adc = discover(&env, &reqwest::Client::new()).await.unwrap();
    let tokens = Arc::new(TokenSource::new(adc, SCOPE_CLOUD_PLATFORM));
    (Batch::new(tokens, Some(&server.base)).unwrap(), dir)
}

fn spec(run: &str) -> JobSpec {
    JobSpec {
        image: "us-docker.pkg.dev/p/r/cooperbench-textkit:task1".into(),
        script: "bash /usr/local/bin/runner.sh".into(),
        task_count: 3,
        parallelism: 2,
        cpu_milli: 2000,
        memory_mib: 4096,
        max_run_duration: Duration::from_secs(900),
        env: BTreeMap::from([("CBENCH_UNIT".into(), "u1".into())]),
        volumes: vec![GcsVolume {
            remote_path: "bucket/run/u1/in".into(),
            mount_path: "/mnt/disks/in".into(),
            read_only: true,
        }],
        labels: BTreeMap::from([("cbench-run".into(), run.into())]),
        block_network: true,
        region: "us-central1".into(),
        service_account: Some("cbench-batch@test-project.iam.gserviceaccount.com".into()),
    }
}

#[tokio::test]
async fn a_job_is_created_watched_to_its_end_found_by_label_and_deleted() {
    let server = Server::start().await;
    let (batch, _keys) = batch_for(&server).await;
    let name = batch
        .create_job("test-project", "cbench-eval-1", &spec("run-a"))
        .await
        .expect("created");
    assert_eq!(
        name,
        "projects/test-project/locations/us-central1/jobs/cbench-eval-1"
    );
    batch
        .create_job("test-project", "cbench-eval-2", &spec("run-b"))
        .await
        .unwrap();
    let stored = server.fake().jobs[&name].clone();
    let container = &stored["taskGroups"][0]["taskSpec"]["runnables"][0]["container"];
    assert_eq!(container["blockExternalNetwork"], true);
    assert_eq!(container["commands"][1], "bash /usr/local/bin/runner.sh");
    assert_eq!(
        stored["taskGroups"][0]["taskSpec"]["volumes"][0]["mountOptions"][0],
        "-o ro"
    );
    // Queued, running, then done with every task counted.
    let mut seen = Vec::new();
    loop {
        let status = batch.job_status(&name).await.unwrap().expect("the job");
        seen.push(status.state.clone());
        if status.state.is_final() {
            assert_eq!((status.succeeded, status.failed), (3, 0));
            break;
        }
    }
    assert_eq!(
        seen,
        vec![JobState::Running, JobState::Succeeded],
        "each read of the fake moves the job one step"
    );
    // Found by its run's label (one job a page), not the other run's.
    let listed = batch
        .list_jobs("test-project", "us-central1", ("cbench-run", "run-a"))
        .await
        .unwrap();
    assert_eq!(listed, vec![name.clone()]);
    let other = batch
        .list_jobs("test-project", "us-central1", ("cbench-run", "run-b"))
        .await
        .unwrap();
    assert_eq!(
        other,
        vec!["projects/test-project/locations/us-central1/jobs/cbench-eval-2"]
    );
    assert!(batch.delete_job(&name).await.unwrap());
    assert!(!batch.delete_job(&name).await.unwrap());
    assert!(batch.job_status(&name).await.unwrap().is_none());
}

#[tokio::test]
async fn a_lost_create_reply_makes_one_job_and_a_failed_job_says_why() {
    let server = Server::start().await;
    let (batch, _keys) = batch_for(&server).await;
    // The job is made, then the reply is lost: the retry's "already exists" is this create.
    server.fake().fail_after_apply = 1;
    let name = batch
        .create_job("test-project", "cbench-eval-lost", &spec("run-c"))
        .await
        .expect("the retried create");
    assert_eq!(server.fake().jobs.len(), 1);
    server.fake().fail_jobs = true;
    let status = loop {
        let status = batch.job_status(&name).await.unwrap().unwrap();
        if status.state.is_final() {
            break status;
        }
    };
    assert_eq!(status.state, JobState::Failed);
    assert_eq!((status.succeeded, status.failed), (2, 1));
    assert!(
        status
            .last_event
            .as_deref()
            .is_some_and(|e| e.contains("task failure")),
        "{status:?}"
    );
    // A job the fake refuses is an error naming the job and Batch's message.
    let mut broken = spec("run-c");
    broken.image.clear();
    let err = batch
        .create_job("test-project", "cbench-eval-broken", &broken)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cbench-eval-broken") && err.contains("HTTP 400") && err.contains("imageUri"),
        "{err}"
    );
    // Ids and names that could reach another URL never leave the machine.
    let before = server.fake().requests.len();
    for id in ["../jobs/x", "Upper", "x?y=1"] {
        assert!(
            batch
                .create_job("test-project", id, &spec("run-c"))
                .await
                .is_err(),
            "{id}"
        );
    }
    assert!(batch
        .job_status("projects/test-project/locations/us-central1/jobs/a/../../b")
        .await
        .is_err());
    // A label value that would widen the cleanup filter to other runs' jobs.
    assert!(batch
        .list_jobs(
            "test-project",
            "us-central1",
            ("cbench-run", r#"x" OR labels.cbench-run!="x"#)
        )
        .await
        .is_err());
    assert_eq!(server.fake().requests.len(), before);
}
