//! A strict local stand-in for Google's token endpoint (the JWT-bearer grant checked with the
//! test key's public half, the refresh-token grant), a VM's metadata server, the Cloud Storage
//! JSON API and the Cloud Batch API. Every Storage and Batch call must carry a token it issued
//! and still honours; names must arrive as the real services route them.
//!
//! Batch jobs either step one state per read (QUEUED, RUNNING, SUCCEEDED or FAILED), or, when
//! a [`TaskRunner`] is set, really run: every task is handed to the runner with its `gcs`
//! volumes materialised as directories (read-only ones as copies the runner must mount
//! read-only), what a task wrote to a writable volume is stored back as objects, a task past
//! `maxRunDuration` is stopped with Batch's exit code 50005, and deleting a running job stops
//! its tasks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use cbench_gcp::credentials::SCOPE_CLOUD_PLATFORM;
use cbench_gcp::AdcEnv;
use ring::signature;
use serde_json::{json, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../llm/tests/fixtures");
pub const SA_EMAIL: &str = "cbench-batch@test-project.iam.gserviceaccount.com";
pub const REFRESH_TOKEN: &str = "1//user-refresh-token-s3cret";

/// What the fake holds and how it misbehaves on request.
#[derive(Default)]
pub struct Fake {
    /// Tokens it issued and still honours.
    pub live_tokens: HashSet<String>,
    pub issued: u32,
    pub grants: Vec<String>,
    pub buckets: BTreeMap<String, Value>,
    pub objects: BTreeMap<(String, String), Vec<u8>>,
    /// Storage calls to answer 503 before serving.
    pub fail_next: u32,
    /// Every Storage and Batch request: method and path.
    pub requests: Vec<String>,
    /// Batch jobs by name, as created (plus `name` and `status`).
    pub jobs: BTreeMap<String, Value>,
    /// Job creates to apply and then answer 503 (the reply lost on the way back).
    pub fail_after_apply: u32,
    /// Jobs end FAILED instead of SUCCEEDED.
    pub fail_jobs: bool,
    /// Runs the jobs' tasks for real (else jobs step one state per read).
    pub runner: Option<TaskRunner>,
    /// Every task handed to the runner: job name, index and its mounts.
    pub task_runs: Vec<(String, u32, Vec<Mount>)>,
    /// Jobs being run, to stop when deleted.
    running: HashMap<String, tokio::task::AbortHandle>,
    operations: u32,
}

/// One `gcs` volume of a task as the runner must mount it.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The directory holding the prefix's objects.
    pub host_dir: PathBuf,
    /// Where the task sees it.
    pub mount_path: String,
    /// Mounted with `-o ro`.
    pub read_only: bool,
}

/// One task of a job, as the fake hands it to a [`TaskRunner`].
#[derive(Debug, Clone)]
pub struct TaskRun {
    /// `projects/P/locations/R/jobs/ID`.
    pub job: String,
    /// `BATCH_TASK_INDEX`.
    pub index: u32,
    /// The container runnable's image, entrypoint and commands.
    pub image: String,
    pub entrypoint: String,
    pub commands: Vec<String>,
    /// The task's environment (the spec's variables plus `BATCH_TASK_INDEX`/`BATCH_TASK_COUNT`).
    pub env: BTreeMap<String, String>,
    /// Its volumes.
    pub mounts: Vec<Mount>,
    /// `blockExternalNetwork`.
    pub block_network: bool,
    /// `computeResource`.
    pub cpu_milli: u64,
    pub memory_mib: u64,
}

/// What a runner says about one task: its exit code, or why it could not run.
pub type TaskOutcome = Result<i64, String>;

/// Runs one task; dropping the future must stop it (the fake drops it at `maxRunDuration` and
/// when the job is deleted).
pub type TaskRunner =
    Arc<dyn Fn(TaskRun) -> Pin<Box<dyn Future<Output = TaskOutcome> + Send>> + Send + Sync>;

/// Batch's exit code of a task stopped at its `maxRunDuration`.
pub const EXIT_CODE_TIMEOUT: i64 = 50005;

type Shared = Arc<Mutex<Fake>>;

pub struct Server {
    pub base: String,
    pub addr: SocketAddr,
    pub state: Shared,
}

impl Server {
    pub async fn start() -> Server {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/token", post(token))
            .route(
                "/computeMetadata/v1/project/project-id",
                get(metadata_project),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(metadata_token),
            )
            .route("/storage/v1/b", post(create_bucket))
            .route("/storage/v1/b/{bucket}", get(get_bucket))
            .route("/storage/v1/b/{bucket}/o", get(list_objects))
            .route(
                "/storage/v1/b/{bucket}/o/{object}",
                axum::routing::delete(delete_object),
            )
            .route("/upload/storage/v1/b/{bucket}/o", post(upload_object))
            .route(
                "/download/storage/v1/b/{bucket}/o/{object}",
                get(download_object),
            )
            .route(
                "/v1/projects/{project}/locations/{region}/jobs",
                post(create_job).get(list_jobs),
            )
            .route(
                "/v1/projects/{project}/locations/{region}/jobs/{job}",
                get(get_job).delete(delete_job),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            base: format!("http://{addr}"),
            addr,
            state,
        }
    }

    pub fn fake(&self) -> std::sync::MutexGuard<'_, Fake> {
        self.state.lock().unwrap()
    }

    /// Jobs run their tasks with `runner` from now on.
    pub fn run_tasks_with(&self, runner: TaskRunner) {
        self.fake().runner = Some(runner);
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn google_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}

fn issue(fake: &mut Fake, grant: &str) -> Response {
    fake.issued += 1;
    let token = format!("ya29.test-token-{}", fake.issued);
    fake.live_tokens.insert(token.clone());
    fake.grants.push(grant.to_string());
    Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

/// Google's token endpoint: the JWT-bearer grant (signature, issuer, audience, scope, expiry
/// checked) and the refresh-token grant.
/// (axum's `Form` refuses a body that is not `application/x-www-form-urlencoded`.)
async fn token(
    State(state): State<Shared>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let refuse = |e: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": e})),
        )
            .into_response()
    };
    let mut fake = state.lock().unwrap();
    match field("grant_type").as_str() {
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let jwt = field("assertion");
            let parts: Vec<&str> = jwt.split('.').collect();
            let [_, claims, sig] = parts[..] else {
                return refuse("not a JWT");
            };
            let signed = format!("{}.{}", parts[0], parts[1]);
            let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
                return refuse("bad signature encoding");
            };
            if signature::UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                public_key_der(),
            )
            .verify(signed.as_bytes(), &sig)
            .is_err()
            {
                return refuse("Invalid JWT Signature.");
            }
            let claims: Value = URL_SAFE_NO_PAD
                .decode(claims)
                .ok()
                .and_then(|c| serde_json::from_slice(&c).ok())
                .unwrap_or(Value::Null);
            if claims["iss"] != SA_EMAIL {
                return refuse("Invalid grant: account not found");
            }
            if claims["scope"] != SCOPE_CLOUD_PLATFORM
                || !claims["aud"]
                    .as_str()
                    .is_some_and(|a| a.ends_with("/token"))
                || claims["exp"].as_u64().unwrap_or(0) <= now_secs()
            {
                return refuse("bad claims");
            }
            issue(&mut fake, "service_account")
        }
        "refresh_token" => {
            if field("refresh_token") != REFRESH_TOKEN
                || field("client_id") != "user-client"
                || field("client_secret") != "user-secret"
            {
                return refuse("Token has been expired or revoked.");
            }
            issue(&mut fake, "authorized_user")
        }
        _ => refuse("unsupported grant_type"),
    }
}

fn metadata_ok(headers: &HeaderMap) -> bool {
    headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google")
}

async fn metadata_project(headers: HeaderMap) -> Response {
    if !metadata_ok(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    ([("metadata-flavor", "Google")], "vm-project").into_response()
}

async fn metadata_token(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if !metadata_ok(&headers)
        || query.get("scopes").map(String::as_str) != Some(SCOPE_CLOUD_PLATFORM)
    {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut fake = state.lock().unwrap();
    let mut response = issue(&mut fake, "metadata");
    response
        .headers_mut()
        .insert("metadata-flavor", "Google".parse().unwrap());
    response
}

/// Every Storage and Batch call: a live bearer token, then a planned failure if any.
fn gate(fake: &mut Fake, headers: &HeaderMap, line: String) -> Option<Response> {
    fake.requests.push(line);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !fake.live_tokens.contains(token) {
        return Some(google_error(
            StatusCode::UNAUTHORIZED,
            "Invalid Credentials",
        ));
    }
    if fake.fail_next > 0 {
        fake.fail_next -= 1;
        return Some(google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Backend Error",
        ));
    }
    None
}

async fn create_bucket(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers, "POST /storage/v1/b".into()) {
        return r;
    }
    if query.get("project").map(String::as_str) != Some("test-project") {
        return google_error(StatusCode::BAD_REQUEST, "Invalid project");
    }
    let name = body["name"].as_str().unwrap_or_default().to_string();
    if fake.buckets.contains_key(&name) {
        return google_error(
            StatusCode::CONFLICT,
            "Your previous request to create the named bucket succeeded and you already own it.",
        );
    }
    fake.buckets.insert(name, body.clone());
    Json(body).into_response()
}

async fn get_bucket(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(bucket): UrlPath<String>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers, format!("GET /storage/v1/b/{bucket}")) {
        return r;
    }
    if fake.buckets.contains_key(&bucket) {
        Json(json!({"name": bucket})).into_response()
    } else {
        google_error(
            StatusCode::NOT_FOUND,
            "The specified bucket does not exist.",
        )
    }
}

async fn upload_object(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(bucket): UrlPath<String>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers, format!("POST upload {bucket}")) {
        return r;
    }
    if query.get("uploadType").map(String::as_str) != Some("media") {
        return google_error(StatusCode::BAD_REQUEST, "uploadType");
    }
    if !fake.buckets.contains_key(&bucket) {
        return google_error(
            StatusCode::NOT_FOUND,
            "The specified bucket does not exist.",
        );
    }
    let Some(name) = query.get("name").cloned() else {
        return google_error(StatusCode::BAD_REQUEST, "Required parameter: name");
    };
    if !valid_object_name(&name) {
        return google_error(StatusCode::BAD_REQUEST, "Invalid object name");
    }
    fake.objects
        .insert((bucket.clone(), name.clone()), body.to_vec());
    Json(json!({"bucket": bucket, "name": name, "size": body.len().to_string()})).into_response()
}

async fn download_object(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((bucket, object)): UrlPath<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers, format!("GET download {object}")) {
        return r;
    }
    if query.get("alt").map(String::as_str) != Some("media") {
        return google_error(StatusCode::BAD_REQUEST, "alt=media");
    }
    let Some(bytes) = fake.objects.get(&(bucket, object)) else {
        return google_error(StatusCode::NOT_FOUND, "No such object");
    };
    // `Range: bytes=0-N` (the only form cbench sends): 206 with bytes 0..=N, 416 when empty.
    match headers.get("range").and_then(|r| r.to_str().ok()) {
        None => bytes.clone().into_response(),
        Some(range) => {
            let Some(last) = range
                .strip_prefix("bytes=0-")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                return google_error(StatusCode::BAD_REQUEST, "unsupported Range");
            };
            if bytes.is_empty() {
                return google_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "Requested range not satisfiable",
                );
            }
            let end = (last + 1).min(bytes.len());
            (
                StatusCode::PARTIAL_CONTENT,
                [(
                    "content-range",
                    format!("bytes 0-{}/{}", end - 1, bytes.len()),
                )],
                bytes[..end].to_vec(),
            )
                .into_response()
        }
    }
}

/// Two names a page, so paging is exercised.
async fn list_objects(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(bucket): UrlPath<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers, format!("GET list {bucket}")) {
        return r;
    }
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    let names: Vec<String> = fake
        .objects
        .keys()
        .filter(|(b, n)| *b == bucket && n.starts_with(&prefix))
        .map(|(_, n)| n.clone())
        .collect();
    // `delimiter=/`: the "folders" right under the prefix, all on one page.
    if let Some(delimiter) = query.get("delimiter") {
        if delimiter != "/" {
            return google_error(StatusCode::BAD_REQUEST, "unsupported delimiter");
        }
        let folders: std::collections::BTreeSet<String> = names
            .iter()
            .filter_map(|n| {
                let rest = &n[prefix.len()..];
                rest.find('/').map(|i| format!("{prefix}{}", &rest[..=i]))
            })
            .collect();
        return Json(json!({"kind": "storage#objects", "prefixes": folders})).into_response();
    }
    let start: usize = query
        .get("pageToken")
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = names
        .iter()
        .skip(start)
        .take(2)
        .map(|n| json!({"name": n}))
        .collect();
    let mut body = json!({"kind": "storage#objects"});
    if !page.is_empty() {
        body["items"] = json!(page);
    }
    if start + 2 < names.len() {
        body["nextPageToken"] = json!(format!("page-{}", start + 2));
    }
    Json(body).into_response()
}

async fn delete_object(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((bucket, object)): UrlPath<(String, String)>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers, format!("DELETE {object}")) {
        return r;
    }
    match fake.objects.remove(&(bucket, object)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => google_error(StatusCode::NOT_FOUND, "No such object"),
    }
}

fn private_key_pem() -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join("test-service-account-key.pem")).unwrap()
}

fn public_key_der() -> Vec<u8> {
    let pem = std::fs::read_to_string(Path::new(FIXTURES).join("test-service-account-key.pub.pem"))
        .unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).unwrap()
}

pub fn service_account_file(dir: &Path, server: &Server, email: &str) -> String {
    let path = dir.join("key.json");
    let key = json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "test-kid",
        "private_key": private_key_pem(),
        "client_email": email,
        "token_uri": format!("{}/token", server.base),
    });
    std::fs::write(&path, key.to_string()).unwrap();
    path.display().to_string()
}

/// ADC with nothing configured, and a metadata server address where nothing listens.
pub fn env_with(_server: &Server) -> AdcEnv {
    AdcEnv {
        application_credentials: None,
        gcloud_config_dir: None,
        metadata_host: format!("127.0.0.1:{}", unused_port()),
        project: None,
    }
}

fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the Batch fake insists on in a created `Job` (proto3 JSON: int64 fields as strings).
fn check_job(job: &Value) -> Result<u64, String> {
    let group = job.pointer("/taskGroups/0").ok_or("taskGroups[0]")?;
    let int64 = |path: &str| -> Result<u64, String> {
        group
            .pointer(path)
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or(format!("{path} must be an int64 string"))
    };
    let count = int64("/taskCount")?;
    let parallelism = int64("/parallelism")?;
    if count == 0 || parallelism == 0 || parallelism > count {
        return Err("taskCount >= parallelism >= 1".into());
    }
    if int64("/taskSpec/computeResource/cpuMilli")? == 0
        || int64("/taskSpec/computeResource/memoryMib")? == 0
    {
        return Err("computeResource must be positive".into());
    }
    let container = group
        .pointer("/taskSpec/runnables/0/container")
        .ok_or("a container runnable")?;
    if container["imageUri"].as_str().is_none_or(str::is_empty)
        || container["entrypoint"] != "/bin/bash"
        || container["commands"][0] != "-c"
    {
        return Err("container: imageUri, entrypoint /bin/bash, commands [-c, script]".into());
    }
    let duration = group["taskSpec"]["maxRunDuration"].as_str().unwrap_or("");
    if !(duration.ends_with('s') && duration[..duration.len() - 1].parse::<u64>().is_ok()) {
        return Err("maxRunDuration must be a duration like \"1800s\"".into());
    }
    // Label keys and values: lowercase letters, digits, `-` and `_`, keys starting with a letter.
    let label_ok = |s: &str, key: bool| {
        (1..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && (!key || s.as_bytes()[0].is_ascii_lowercase())
    };
    let labels = job["labels"].as_object().ok_or("labels")?;
    if !labels
        .iter()
        .all(|(k, v)| label_ok(k, true) && v.as_str().is_some_and(|v| label_ok(v, false)))
    {
        return Err("label keys and values must be lowercase letters, digits, - and _".into());
    }
    // A container's volumes are `HOST:CONTAINER[:ro|:rw]`, HOST a task volume's mountPath.
    let task_paths: Vec<&str> = group["taskSpec"]["volumes"]
        .as_array()
        .map(|v| v.iter().filter_map(|v| v["mountPath"].as_str()).collect())
        .unwrap_or_default();
    for volume in container["volumes"].as_array().into_iter().flatten() {
        let parts: Vec<&str> = volume.as_str().unwrap_or_default().split(':').collect();
        let ok = match parts[..] {
            [host, dest] | [host, dest, "ro" | "rw"] => {
                task_paths.contains(&host) && dest.starts_with('/')
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "container volume {volume} is not HOST:CONTAINER[:ro]"
            ));
        }
    }
    if job["allocationPolicy"]["location"]["allowedLocations"][0]
        .as_str()
        .is_none_or(|l| !l.starts_with("regions/"))
    {
        return Err("allocationPolicy.location.allowedLocations".into());
    }
    Ok(count)
}

async fn create_job(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((project, region)): UrlPath<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    Json(mut job): Json<Value>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers, "POST job".into()) {
        return r;
    }
    let Some(id) = query.get("jobId") else {
        return google_error(StatusCode::BAD_REQUEST, "jobId is required");
    };
    let id_ok = (1..=63).contains(&id.len())
        && id.as_bytes()[0].is_ascii_lowercase()
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return google_error(StatusCode::BAD_REQUEST, "Invalid job id");
    }
    if project != "test-project" {
        return google_error(
            StatusCode::FORBIDDEN,
            &format!("Permission denied on project {project}"),
        );
    }
    if let Err(e) = check_job(&job) {
        return google_error(StatusCode::BAD_REQUEST, &format!("Invalid job: {e}"));
    }
    let name = format!("projects/{project}/locations/{region}/jobs/{id}");
    if fake.jobs.contains_key(&name) {
        return google_error(
            StatusCode::CONFLICT,
            &format!("Resource '{name}' already exists"),
        );
    }
    job["name"] = json!(name);
    job["status"] = json!({"state": "QUEUED"});
    fake.jobs.insert(name.clone(), job.clone());
    if let Some(runner) = fake.runner.clone() {
        let handle = tokio::spawn(execute(state.clone(), name.clone(), job.clone(), runner));
        fake.running.insert(name, handle.abort_handle());
    }
    if fake.fail_after_apply > 0 {
        fake.fail_after_apply -= 1;
        return google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is currently unavailable.",
        );
    }
    Json(job).into_response()
}

/// Each read moves a job one step: QUEUED, RUNNING, then SUCCEEDED (or FAILED).
async fn get_job(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((project, region, id)): UrlPath<(String, String, String)>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers, format!("GET job {id}")) {
        return r;
    }
    let fail = fake.fail_jobs;
    let real = fake.runner.is_some();
    let name = format!("projects/{project}/locations/{region}/jobs/{id}");
    let Some(job) = fake.jobs.get_mut(&name) else {
        return google_error(StatusCode::NOT_FOUND, &format!("Job {name} not found"));
    };
    if real {
        return Json(job.clone()).into_response();
    }
    let count = check_job(job).unwrap_or(0);
    let next = match job["status"]["state"].as_str() {
        Some("QUEUED") => {
            json!({"state": "RUNNING", "taskGroups": {"group0": {"counts": {"RUNNING": count.to_string()}}}})
        }
        Some("RUNNING") if fail => json!({"state": "FAILED",
            "taskGroups": {"group0": {"counts": {"SUCCEEDED": (count - 1).to_string(), "FAILED": "1"}}},
            "statusEvents": [{"description": "Job state is set from QUEUED to SCHEDULED"},
                             {"description": "Job state is set from RUNNING to FAILED for job projects/x. Job failed due to task failure."}]}),
        Some("RUNNING") => {
            json!({"state": "SUCCEEDED", "taskGroups": {"group0": {"counts": {"SUCCEEDED": count.to_string()}}}})
        }
        _ => job["status"].clone(),
    };
    job["status"] = next;
    Json(job.clone()).into_response()
}

/// One job a page, so paging is exercised; `filter` is `labels.KEY="VALUE"`.
async fn list_jobs(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((project, region)): UrlPath<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers, "GET jobs".into()) {
        return r;
    }
    let filter = query.get("filter").cloned().unwrap_or_default();
    let Some((key, value)) = filter
        .strip_prefix("labels.")
        .and_then(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
    else {
        return google_error(StatusCode::BAD_REQUEST, "unsupported filter");
    };
    let prefix = format!("projects/{project}/locations/{region}/jobs/");
    let names: Vec<&String> = fake
        .jobs
        .iter()
        .filter(|(n, j)| n.starts_with(&prefix) && j["labels"][&key] == value.as_str())
        .map(|(n, _)| n)
        .collect();
    let start: usize = query
        .get("pageToken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut body = json!({});
    if let Some(name) = names.get(start) {
        body["jobs"] = json!([fake.jobs[*name]]);
    }
    if start + 1 < names.len() {
        body["nextPageToken"] = json!((start + 1).to_string());
    }
    Json(body).into_response()
}

/// Deleting answers a long-running operation, as Batch does.
async fn delete_job(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((project, region, id)): UrlPath<(String, String, String)>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = gate(&mut fake, &headers, format!("DELETE job {id}")) {
        return r;
    }
    let name = format!("projects/{project}/locations/{region}/jobs/{id}");
    if fake.jobs.remove(&name).is_none() {
        return google_error(StatusCode::NOT_FOUND, &format!("Job {name} not found"));
    }
    if let Some(running) = fake.running.remove(&name) {
        running.abort();
    }
    fake.operations += 1;
    Json(json!({"name": format!("projects/{project}/locations/{region}/operations/op-{}", fake.operations), "done": false}))
        .into_response()
}

/// Runs a job's tasks one after another with the fake's runner and records how it went.
async fn execute(state: Shared, name: String, job: Value, runner: TaskRunner) {
    let set_status = |status: Value| {
        if let Some(job) = state.lock().unwrap().jobs.get_mut(&name) {
            job["status"] = status;
        }
    };
    let group = &job["taskGroups"][0];
    let spec = &group["taskSpec"];
    let int64 = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let count = int64(&group["taskCount"]);
    let max_run = spec["maxRunDuration"]
        .as_str()
        .and_then(|d| d.strip_suffix('s'))
        .and_then(|d| d.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(3600));
    let Ok(scratch) = tempfile::tempdir() else {
        set_status(failed_status(&name, count, 0, "no scratch directory"));
        return;
    };
    let mounts = match materialise_volumes(&state, spec, scratch.path()) {
        Ok(mounts) => mounts,
        Err(e) => {
            set_status(failed_status(&name, count, 0, &e));
            return;
        }
    };
    let container = &spec["runnables"][0]["container"];
    let mut env: BTreeMap<String, String> = spec["environment"]["variables"]
        .as_object()
        .map(|vars| {
            vars.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    env.insert("BATCH_TASK_COUNT".into(), count.to_string());
    set_status(
        json!({"state": "RUNNING", "taskGroups": {"group0": {"counts": {"RUNNING": count.to_string()}}}}),
    );
    let mut succeeded = 0;
    for index in 0..count as u32 {
        env.insert("BATCH_TASK_INDEX".into(), index.to_string());
        let run = TaskRun {
            job: name.clone(),
            index,
            image: container["imageUri"].as_str().unwrap_or_default().into(),
            entrypoint: container["entrypoint"].as_str().unwrap_or_default().into(),
            commands: container["commands"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            env: env.clone(),
            mounts: container_mounts(container, &mounts),
            block_network: container["blockExternalNetwork"] == true,
            cpu_milli: int64(&spec["computeResource"]["cpuMilli"]),
            memory_mib: int64(&spec["computeResource"]["memoryMib"]),
        };
        state
            .lock()
            .unwrap()
            .task_runs
            .push((name.clone(), index, run.mounts.clone()));
        let outcome = match tokio::time::timeout(max_run, runner(run)).await {
            Ok(outcome) => outcome,
            Err(_) => Ok(EXIT_CODE_TIMEOUT),
        };
        store_back(&state, &mounts);
        match outcome {
            Ok(0) => succeeded += 1,
            Ok(code) => {
                let event = format!(
                    "Task state is updated from RUNNING to FAILED on zones/us-central1-a/instances/{index} with exit code {code}."
                );
                set_status(failed_status(&name, count, succeeded, &event));
                return;
            }
            Err(e) => {
                set_status(failed_status(&name, count, succeeded, &e));
                return;
            }
        }
    }
    set_status(json!({"state": "SUCCEEDED",
        "taskGroups": {"group0": {"counts": {"SUCCEEDED": count.to_string()}}},
        "statusEvents": [{"description": format!("Job state is set from RUNNING to SUCCEEDED for job {name}.")}]}));
}

/// The container's view of the task's volumes: the container's own `volumes` when named
/// (`HOST:CONTAINER[:ro]`), else every task volume at its own path (a read-only volume stays
/// read-only either way: it is read-only on the VM).
fn container_mounts(container: &Value, mounts: &[(Mount, BucketPrefix)]) -> Vec<Mount> {
    let Some(named) = container["volumes"].as_array() else {
        return mounts.iter().map(|(m, _)| m.clone()).collect();
    };
    named
        .iter()
        .filter_map(|v| {
            let parts: Vec<&str> = v.as_str()?.split(':').collect();
            let (host, dest) = (parts.first()?, parts.get(1)?);
            let (volume, _) = mounts.iter().find(|(m, _)| m.mount_path == *host)?;
            Some(Mount {
                host_dir: volume.host_dir.clone(),
                mount_path: dest.to_string(),
                read_only: volume.read_only || parts.get(2) == Some(&"ro"),
            })
        })
        .collect()
}

/// A FAILED status in Batch's words, the task's own event quoted.
fn failed_status(name: &str, count: u64, succeeded: u64, task_event: &str) -> Value {
    json!({"state": "FAILED",
        "taskGroups": {"group0": {"counts": {"SUCCEEDED": succeeded.to_string(), "FAILED": (count - succeeded).max(1).to_string()}}},
        "statusEvents": [{"description": "Job state is set from QUEUED to SCHEDULED"},
                         {"description": format!("Job state is set from RUNNING to FAILED for job {name}. Job failed due to task failure. Specifically, task with index 0 failed due to the following task event: \"{task_event}\"")}]})
}

/// A name Cloud Storage accepts: 1-1024 bytes of UTF-8, no carriage return or line feed.
fn valid_object_name(name: &str) -> bool {
    (1..=1024).contains(&name.len()) && !name.contains(['\r', '\n'])
}

/// A volume's bucket and prefix.
type BucketPrefix = (String, String);

/// The objects under each `gcs` volume's `bucket/prefix`, written into a directory of their
/// own; with the volume's bucket and prefix, to store a writable one back.
fn materialise_volumes(
    state: &Shared,
    spec: &Value,
    scratch: &Path,
) -> Result<Vec<(Mount, BucketPrefix)>, String> {
    let fake = state.lock().unwrap();
    let mut mounts = Vec::new();
    for (i, volume) in spec["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let remote = volume["gcs"]["remotePath"]
            .as_str()
            .ok_or("only gcs volumes are supported")?;
        let (bucket, prefix) = remote.split_once('/').unwrap_or((remote, ""));
        if !fake.buckets.contains_key(bucket) {
            return Err(format!("mounting gs://{remote}: the bucket does not exist"));
        }
        let options: Vec<&str> = volume["mountOptions"]
            .as_array()
            .map(|o| o.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if options.iter().any(|o| *o != "-o ro") {
            return Err(format!("unsupported mount options {options:?}"));
        }
        let dir = scratch.join(format!("volume-{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let prefix = prefix.trim_end_matches('/').to_string();
        for ((b, object), bytes) in &fake.objects {
            let Some(relative) = object.strip_prefix(&prefix).and_then(|r| {
                if prefix.is_empty() {
                    Some(r)
                } else {
                    r.strip_prefix('/')
                }
            }) else {
                continue;
            };
            if b != bucket
                || relative.is_empty()
                || relative.split('/').any(|s| s == ".." || s.is_empty())
            {
                continue;
            }
            let path = dir.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
        }
        mounts.push((
            Mount {
                host_dir: dir,
                mount_path: volume["mountPath"].as_str().unwrap_or_default().to_string(),
                read_only: !options.is_empty(),
            },
            (bucket.to_string(), prefix),
        ));
    }
    Ok(mounts)
}

/// Stores what tasks left in the writable volumes as objects (gcsfuse uploads on close).
fn store_back(state: &Shared, mounts: &[(Mount, BucketPrefix)]) {
    let mut fake = state.lock().unwrap();
    for (mount, (bucket, prefix)) in mounts.iter().filter(|(m, _)| !m.read_only) {
        let mut stack = vec![mount.host_dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    stack.push(path);
                } else if kind.is_file() {
                    let Ok(relative) = path.strip_prefix(&mount.host_dir) else {
                        continue;
                    };
                    // gcsfuse cannot store a name Cloud Storage refuses: the write fails there.
                    let Some(relative) = relative.to_str() else {
                        continue;
                    };
                    let object = if prefix.is_empty() {
                        relative.to_string()
                    } else {
                        format!("{prefix}/{relative}")
                    };
                    if !valid_object_name(&object) {
                        continue;
                    }
                    if let Ok(bytes) = std::fs::read(&path) {
                        fake.objects.insert((bucket.clone(), object), bytes);
                    }
                }
            }
        }
    }
}
