//! A fake Kubernetes API server for the Kubernetes engine's contract tests: the `batch/v1`
//! Job and `v1` Pod endpoints cbench uses, over plain HTTP on loopback, with bearer-token
//! auth, the API server's validation rules for a Job (the body must read as k8s-openapi's
//! `Job` and write back identically, so no field is unknown or mistyped), and a "kubelet" that
//! really runs each index of a created Job as a local process — the container's command and
//! args with `$(VAR)` expanded, its env, working directory and `JOB_COMPLETION_INDEX` — at
//! most `parallelism` at once. Image `IMAGE` provides `cbench` (the binary under test); any
//! other image never pulls. Deleting a Job stops its pods (SIGTERM, then SIGKILL after 15 s).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The image the fake kubelet can run.
pub const IMAGE: &str = "cbench:test";
/// The bearer token the fake accepts.
pub const TOKEN: &str = "fake-token-7f3a";

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub body: Option<Value>,
}

#[derive(Debug)]
struct Pod {
    name: String,
    index: usize,
    child: Option<Child>,
    /// (exit code, reason) once ended.
    ended: Option<(i32, String)>,
    /// A reason the container waits forever (image pull, missing secret).
    waiting: Option<(String, String)>,
    /// The reason a test gave when it killed the pod.
    killed_as: Option<String>,
}

#[derive(Debug)]
struct FakeJob {
    namespace: String,
    object: Value,
    pods: Vec<Pod>,
    deleted: bool,
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<String, FakeJob>,
    requests: Vec<Recorded>,
    /// Validation failures, for the tests to show.
    invalid: Vec<String>,
    /// The most pods of one Job ever running at once.
    most_running: usize,
    /// Secrets by name: their keys become env vars.
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// What the "image" sets in every pod's environment.
    image_env: Vec<(String, String)>,
    cbench: PathBuf,
    /// Where pods' output goes (`<pod>.log`; removed with the fake).
    logs: PathBuf,
}

/// The running fake.
pub struct FakeKube {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _logs: tempfile::TempDir,
}

impl FakeKube {
    /// Starts the server; pods run `cbench` with `image_env` as their image's environment.
    pub fn start(cbench: PathBuf, image_env: Vec<(String, String)>) -> FakeKube {
        let logs = tempfile::Builder::new()
            .prefix("fake-kube-")
            .tempdir()
            .unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            cbench,
            image_env,
            logs: logs.path().to_path_buf(),
            ..Default::default()
        }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let state = inner.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        let kubelet = inner.clone();
        std::thread::spawn(move || kubelet_loop(kubelet));
        FakeKube {
            url: format!("http://{addr}"),
            inner,
            stop: Some(tx),
            _logs: logs,
        }
    }

    /// A kubeconfig naming this server, the token and `namespace`.
    pub fn kubeconfig(&self, dir: &std::path::Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: {namespace}\ncurrent-context: fake\nusers:\n- name: tester\n  user:\n    token: {TOKEN}\n",
            self.url
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn add_secret(&self, name: &str, keys: &[(&str, &str)]) {
        self.inner.lock().unwrap().secrets.insert(
            name.into(),
            keys.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn invalid(&self) -> Vec<String> {
        self.inner.lock().unwrap().invalid.clone()
    }

    pub fn most_running(&self) -> usize {
        self.inner.lock().unwrap().most_running
    }

    /// Every pod's output so far, for an assertion message.
    pub fn logs(&self) -> String {
        let inner = self.inner.lock().unwrap();
        let mut out = String::new();
        for job in inner.jobs.values() {
            for pod in &job.pods {
                let text = std::fs::read_to_string(inner.logs.join(format!("{}.log", pod.name)))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "--- pod {} ({:?}, {:?})\n{text}\n",
                    pod.name, pod.ended, pod.waiting
                ));
            }
        }
        out
    }

    /// Names of the Jobs that exist (not deleted).
    pub fn jobs(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        inner
            .jobs
            .iter()
            .filter(|(_, j)| !j.deleted)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Pods of any Job still running a process.
    pub fn running_pods(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        inner
            .jobs
            .values()
            .flat_map(|j| &j.pods)
            .filter(|p| p.child.is_some())
            .count()
    }

    /// Whether index `index` of `job` runs now.
    pub fn is_running(&self, job: &str, index: usize) -> bool {
        let inner = self.inner.lock().unwrap();
        inner
            .jobs
            .get(job)
            .is_some_and(|j| j.pods.iter().any(|p| p.index == index && p.child.is_some()))
    }

    /// Kills the process of index `index` as the node would (SIGKILL), recording `reason`
    /// (e.g. `OOMKilled`) as the container's termination reason.
    pub fn kill(&self, job: &str, index: usize, reason: &str) {
        let mut inner = self.inner.lock().unwrap();
        let job = inner.jobs.get_mut(job).expect("no such job");
        let pod = job
            .pods
            .iter_mut()
            .find(|p| p.index == index && p.child.is_some())
            .expect("the index is not running");
        if let Some(child) = pod.child.as_mut() {
            let _ = child.kill();
        }
        pod.killed_as = Some(reason.to_string());
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap();
        for job in inner.jobs.values_mut() {
            for pod in &mut job.pods {
                if let Some(mut child) = pod.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    });
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(code: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: HeaderMap = req.headers().clone();
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), 1 << 22)
        .await
        .unwrap_or_default();
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    let response = answer(&inner, &method, &path, &query, &headers, body.clone());
    inner.lock().unwrap().requests.push(Recorded {
        method: method.to_string(),
        path,
        query,
        status: response.status().as_u16(),
        body,
    });
    response
}

fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=b,c=d` against labels; only equality selectors are understood (anything else is a 400).
fn selects(selector: &str, labels: &Value) -> Result<bool, String> {
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let (k, v) = term
            .split_once('=')
            .ok_or_else(|| format!("unsupported selector term {term:?}"))?;
        if k.ends_with('!') || v.starts_with('=') {
            return Err(format!("unsupported selector term {term:?}"));
        }
        if labels.get(k).and_then(Value::as_str) != Some(v) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn answer(
    inner: &Arc<Mutex<Inner>>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {TOKEN}") {
        return status(401, "Unauthorized", "Unauthorized");
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.clone(), parts.as_slice()) {
        (Method::GET, ["apis", "batch", "v1", "namespaces", ns, "jobs"]) => {
            let selector = param(query, "labelSelector").unwrap_or_default();
            let inner = inner.lock().unwrap();
            let mut items = Vec::new();
            for job in inner
                .jobs
                .values()
                .filter(|j| !j.deleted && j.namespace == *ns)
            {
                match selects(&selector, &job.object["metadata"]["labels"]) {
                    Ok(true) => items.push(job_with_status(job)),
                    Ok(false) => {}
                    Err(e) => return status(400, "BadRequest", &e),
                }
            }
            ok(
                200,
                json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        (Method::POST, ["apis", "batch", "v1", "namespaces", ns, "jobs"]) => {
            let Some(body) = body else {
                return status(400, "BadRequest", "no body");
            };
            if let Err(problems) = validate_job(&body) {
                inner.lock().unwrap().invalid.extend(problems.clone());
                return status(422, "Invalid", &problems.join("; "));
            }
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
            let mut inner = inner.lock().unwrap();
            if inner.jobs.get(&name).is_some_and(|j| !j.deleted) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("jobs.batch \"{name}\" already exists"),
                );
            }
            let mut object = body.clone();
            object["metadata"]["namespace"] = json!(ns);
            object["metadata"]["uid"] = json!(format!("uid-{name}"));
            object["metadata"]["resourceVersion"] = json!("1");
            object["metadata"]["creationTimestamp"] = json!("2026-12-05T00:00:00Z");
            let job = FakeJob {
                namespace: ns.to_string(),
                object,
                pods: Vec::new(),
                deleted: false,
            };
            let reply = job_with_status(&job);
            inner.jobs.insert(name, job);
            ok(201, reply)
        }
        (Method::GET, ["apis", "batch", "v1", "namespaces", ns, "jobs", name]) => {
            let inner = inner.lock().unwrap();
            match inner
                .jobs
                .get(*name)
                .filter(|j| !j.deleted && j.namespace == *ns)
            {
                Some(job) => ok(200, job_with_status(job)),
                None => status(404, "NotFound", &format!("jobs.batch \"{name}\" not found")),
            }
        }
        (Method::DELETE, ["apis", "batch", "v1", "namespaces", ns, "jobs", name]) => {
            let policy = body
                .as_ref()
                .and_then(|b| b["propagationPolicy"].as_str())
                .map(str::to_string);
            let mut inner = inner.lock().unwrap();
            let Some(job) = inner
                .jobs
                .get_mut(*name)
                .filter(|j| !j.deleted && j.namespace == *ns)
            else {
                return status(404, "NotFound", &format!("jobs.batch \"{name}\" not found"));
            };
            // Without a propagation policy a Job's pods are orphaned (batch/v1 default).
            if policy.as_deref() != Some("Background") && policy.as_deref() != Some("Foreground") {
                inner.invalid.push(format!(
                    "DELETE {name} without propagationPolicy orphans its pods"
                ));
                return status(400, "BadRequest", "test fake: give a propagationPolicy");
            }
            job.deleted = true;
            for pod in &mut job.pods {
                if let Some(child) = &pod.child {
                    // SAFETY: kill(2) of a child we own and have not reaped.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                }
            }
            ok(
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                       "details": {"name": name, "group": "batch", "kind": "jobs", "uid": format!("uid-{name}")}}),
            )
        }
        (Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => {
            let selector = param(query, "labelSelector").unwrap_or_default();
            let inner = inner.lock().unwrap();
            let mut items = Vec::new();
            for (job_name, job) in inner.jobs.iter().filter(|(_, j)| j.namespace == *ns) {
                for pod in &job.pods {
                    let object = pod_object(job_name, ns, pod);
                    match selects(&selector, &object["metadata"]["labels"]) {
                        Ok(true) => items.push(object),
                        Ok(false) => {}
                        Err(e) => return status(400, "BadRequest", &e),
                    }
                }
            }
            ok(
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        _ => status(
            404,
            "NotFound",
            &format!("the fake does not serve {method} {path}"),
        ),
    }
}

fn pod_object(job: &str, ns: &str, pod: &Pod) -> Value {
    let (phase, state) = if let Some((reason, message)) = &pod.waiting {
        (
            "Pending",
            json!({"waiting": {"reason": reason, "message": message}}),
        )
    } else if let Some((code, reason)) = &pod.ended {
        (
            if *code == 0 { "Succeeded" } else { "Failed" },
            json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": "2026-12-05T00:00:00Z", "finishedAt": "2026-12-05T00:00:01Z"}}),
        )
    } else {
        (
            "Running",
            json!({"running": {"startedAt": "2026-12-05T00:00:00Z"}}),
        )
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": ns, "labels": {
            "job-name": job, "batch.kubernetes.io/job-name": job,
            "batch.kubernetes.io/job-completion-index": pod.index.to_string()}},
        "status": {"phase": phase, "containerStatuses": [{
            "name": "cbench", "image": IMAGE, "imageID": "", "ready": phase == "Running",
            "restartCount": 0, "state": state}]}
    })
}

/// The Job as the server shows it: its spec plus a status computed from its pods.
fn job_with_status(job: &FakeJob) -> Value {
    let completions = job.object["spec"]["completions"].as_u64().unwrap_or(0) as usize;
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    let mut active = 0;
    for pod in &job.pods {
        match &pod.ended {
            Some((0, _)) => succeeded.push(pod.index),
            Some(_) => failed.push(pod.index),
            None if pod.waiting.is_none() => active += 1,
            None => {}
        }
    }
    let mut object = job.object.clone();
    let mut st = json!({"active": active, "succeeded": succeeded.len(), "failed": failed.len(),
                        "startTime": "2026-12-05T00:00:00Z"});
    if !succeeded.is_empty() {
        st["completedIndexes"] = json!(cbench::cluster::index_ranges(&sorted(succeeded.clone())));
    }
    if !failed.is_empty() {
        st["failedIndexes"] = json!(cbench::cluster::index_ranges(&sorted(failed.clone())));
    }
    if succeeded.len() + failed.len() == completions {
        let (kind, reason) = if failed.is_empty() {
            ("Complete", "CompletionsReached")
        } else {
            ("Failed", "FailedIndexes")
        };
        st["conditions"] = json!([{"type": kind, "status": "True", "reason": reason,
                                   "lastTransitionTime": "2026-12-05T00:00:01Z"}]);
    }
    object["status"] = st;
    object
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort();
    v
}

/// Drops nulls, as the API server's decoder does with absent optional fields.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

fn label_value(text: &str) -> bool {
    text.len() <= 63
        && (text.is_empty()
            || (text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && text
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
                && text
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric())))
}

/// The API server's checks of a batch/v1 Job that cbench's Jobs could trip over.
fn validate_job(body: &Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    match serde_json::from_value::<k8s_openapi::api::batch::v1::Job>(body.clone()) {
        Err(e) => problems.push(format!("not a batch/v1 Job: {e}")),
        Ok(job) => {
            let back = without_nulls(&serde_json::to_value(&job).unwrap());
            if back != without_nulls(body) {
                problems.push(format!(
                    "fields the Job schema does not have, or of the wrong type: sent {body}, schema keeps {back}"
                ));
            }
        }
    }
    if body["apiVersion"] != "batch/v1" || body["kind"] != "Job" {
        problems.push("apiVersion/kind must be batch/v1 Job".into());
    }
    let name = body["metadata"]["name"].as_str().unwrap_or("");
    if !dns_label(name) {
        problems.push(format!("metadata.name {name:?}: must be a DNS-1123 label (an Indexed Job's pods are named after it)"));
    }
    for (k, v) in body["metadata"]["labels"].as_object().into_iter().flatten() {
        if !label_value(v.as_str().unwrap_or("!")) || k.len() > 316 {
            problems.push(format!("metadata.labels[{k}]: invalid label value {v}"));
        }
    }
    let spec = &body["spec"];
    let indexed = spec["completionMode"] == "Indexed";
    if !indexed {
        problems.push("spec.completionMode: cbench needs Indexed".into());
    }
    let completions = spec["completions"].as_i64();
    if indexed && completions.is_none_or(|c| !(1..=100_000).contains(&c)) {
        problems.push("spec.completions: required in Indexed mode, 1..=100000".into());
    }
    if spec["parallelism"].as_i64().is_none_or(|p| p < 0) {
        problems.push("spec.parallelism: must be ≥ 0".into());
    }
    let pod = &spec["template"]["spec"];
    let restart = pod["restartPolicy"].as_str().unwrap_or("");
    if restart != "Never" && restart != "OnFailure" {
        problems.push("spec.template.spec.restartPolicy: Never or OnFailure".into());
    }
    if !spec["backoffLimitPerIndex"].is_null() && (!indexed || restart != "Never") {
        problems.push(
            "spec.backoffLimitPerIndex: needs completionMode Indexed and restartPolicy Never"
                .into(),
        );
    }
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in pod["volumes"].as_array().into_iter().flatten() {
        let sources = v
            .as_object()
            .map_or(0, |o| o.keys().filter(|k| *k != "name").count());
        if sources != 1 {
            problems.push(format!("volume {}: exactly one source", v["name"]));
        }
    }
    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        problems.push("spec.template.spec.containers: required".into());
    }
    for c in &containers {
        if !dns_label(c["name"].as_str().unwrap_or("")) {
            problems.push(format!("container name {}: a DNS-1123 label", c["name"]));
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            problems.push("container image: required".into());
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let n = e["name"].as_str().unwrap_or("");
            if n.is_empty()
                || !n
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
                || n.starts_with(|ch: char| ch.is_ascii_digit())
            {
                problems.push(format!("env name {n:?}: invalid"));
            }
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or("");
            if !volumes.contains(&name) {
                problems.push(format!("volumeMount {name}: no such volume"));
            }
            if !m["mountPath"].as_str().unwrap_or("").starts_with('/') {
                problems.push(format!("volumeMount {name}: mountPath must be absolute"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// `$(VAR)` as the kubelet expands it in command and args (`$$` is a literal `$`).
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix("$(") {
            match inner.find(')') {
                Some(end) if env.contains_key(&inner[..end]) => {
                    out.push_str(&env[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = &tail[1..];
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Starts pods for Jobs with indices left (at most `parallelism` running), reaps ended ones.
fn kubelet_loop(inner: Arc<Mutex<Inner>>) {
    let mut sigterm_at: BTreeMap<u32, Instant> = BTreeMap::new();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let mut guard = inner.lock().unwrap();
        let Inner {
            jobs,
            most_running,
            secrets,
            image_env,
            cbench,
            logs,
            ..
        } = &mut *guard;
        for (name, job) in jobs.iter_mut() {
            for pod in &mut job.pods {
                let Some(child) = pod.child.as_mut() else {
                    continue;
                };
                if let Ok(Some(st)) = child.try_wait() {
                    use std::os::unix::process::ExitStatusExt;
                    let code = st.code().unwrap_or(128 + st.signal().unwrap_or(0));
                    let reason = pod.killed_as.clone().unwrap_or_else(|| {
                        if code == 0 { "Completed" } else { "Error" }.to_string()
                    });
                    pod.ended = Some((code, reason));
                    pod.child = None;
                } else if job.deleted {
                    // The grace period: a deleted Job's pod that ignores SIGTERM is killed.
                    let since = *sigterm_at.entry(child.id()).or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(15) {
                        let _ = child.kill();
                    }
                }
            }
            if job.deleted {
                continue;
            }
            let spec = &job.object["spec"];
            let completions = spec["completions"].as_u64().unwrap_or(0) as usize;
            let parallelism = spec["parallelism"].as_u64().unwrap_or(1) as usize;
            let running = job.pods.iter().filter(|p| p.child.is_some()).count();
            *most_running = (*most_running).max(running);
            let started: Vec<usize> = job.pods.iter().map(|p| p.index).collect();
            let Some(next) = (0..completions).find(|i| !started.contains(i)) else {
                continue;
            };
            if running >= parallelism {
                continue;
            }
            let container = &spec["template"]["spec"]["containers"][0];
            let mut pod = Pod {
                name: format!("{name}-{next}-x{next}"),
                index: next,
                child: None,
                ended: None,
                waiting: None,
                killed_as: None,
            };
            if container["image"] != IMAGE {
                pod.waiting = Some((
                    "ImagePullBackOff".into(),
                    format!("Back-off pulling image {}", container["image"]),
                ));
                job.pods.push(pod);
                continue;
            }
            let mut env: BTreeMap<String, String> = image_env.iter().cloned().collect();
            for from in container["envFrom"].as_array().into_iter().flatten() {
                let secret = from["secretRef"]["name"].as_str().unwrap_or("");
                match secrets.get(secret) {
                    Some(keys) => env.extend(keys.clone()),
                    None => {
                        pod.waiting = Some((
                            "CreateContainerConfigError".into(),
                            format!("secret \"{secret}\" not found"),
                        ));
                    }
                }
            }
            if pod.waiting.is_some() {
                job.pods.push(pod);
                continue;
            }
            for e in container["env"].as_array().into_iter().flatten() {
                if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                    env.insert(k.into(), v.into());
                }
            }
            env.insert("JOB_COMPLETION_INDEX".into(), next.to_string());
            let command: Vec<String> = container["command"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(container["args"].as_array().into_iter().flatten())
                .map(|v| expand(v.as_str().unwrap_or(""), &env))
                .collect();
            // The image's `cbench` is the binary under test.
            let program = if command.first().map(String::as_str) == Some("cbench") {
                cbench.clone()
            } else {
                PathBuf::from(command.first().cloned().unwrap_or_default())
            };
            let mut cmd = Command::new(program);
            cmd.args(&command[1.min(command.len())..])
                .env_clear()
                .envs(&env)
                .stdin(std::process::Stdio::null());
            // `kubectl logs`: the pod's output, kept for a failing test to show.
            let log = logs.join(format!("{}.log", pod.name));
            if let Ok(file) = std::fs::File::create(&log) {
                if let Ok(copy) = file.try_clone() {
                    cmd.stdout(file).stderr(copy);
                }
            }
            if let Some(dir) = container["workingDir"].as_str() {
                cmd.current_dir(dir);
            }
            match cmd.spawn() {
                Ok(child) => pod.child = Some(child),
                Err(e) => pod.ended = Some((128, format!("StartError: {e}"))),
            }
            job.pods.push(pod);
            let running = job.pods.iter().filter(|p| p.child.is_some()).count();
            *most_running = (*most_running).max(running);
        }
    }
}

#[test]
fn the_fake_expands_vars_as_the_kubelet_does() {
    let env: BTreeMap<String, String> =
        [("JOB_COMPLETION_INDEX".to_string(), "3".to_string())].into();
    assert_eq!(expand("--index=$(JOB_COMPLETION_INDEX)", &env), "--index=3");
    assert_eq!(
        expand("$$(JOB_COMPLETION_INDEX)", &env),
        "$(JOB_COMPLETION_INDEX)"
    );
    assert_eq!(expand("$(UNSET) $x", &env), "$(UNSET) $x");
}
