//! A fake Modal for the modal backend's contract tests: the control-plane RPCs cbench uses
//! (`modal.client.ModalClient`) and a task command router
//! (`modal.task_command_router.TaskCommandRouter`), served by tonic from the same pinned
//! protos on two loopback ports. It checks what the real service checks — the token id and
//! secret and client headers on every control-plane call, the per-task bearer token (and no
//! control-plane credentials) on every router call, known apps and images, sane sandbox
//! definitions — and runs each sandbox as a local docker container from the image's tag, so
//! commands really run: argv with env and workdir, stdin by offset with an explicit EOF,
//! stdout and stderr as separate streams read by offset, exit codes, a sandbox's own timeout.
//! Images build asynchronously (`ImageGetOrCreate` pending, then `ImageJoinStreaming` with
//! logs and the result), a tag the engine lacks fails its build as a failed pull would, and
//! an image whose entrypoint is not cleared runs it (as Modal does). Tests inject faults:
//! a transient error on the next call of an RPC, output streams that break once, a sandbox
//! killed under its commands.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tonic::{Code, Request, Response, Status};

use cbench_modal::proto::client as pb;
use cbench_modal::proto::client::modal_client_server::{ModalClient, ModalClientServer};
use cbench_modal::proto::task_command_router as tcr;
use cbench_modal::proto::task_command_router::task_command_router_server::{
    TaskCommandRouter, TaskCommandRouterServer,
};

/// The credentials the fake accepts.
pub const TOKEN_ID: &str = "ak-fake0123456789";
pub const TOKEN_SECRET: &str = "as-fake-secret-9f8e7d";
/// Label on every container the fake starts (removed when the fake is dropped).
const CONTAINER_LABEL: &str = "cbench-fake-modal";
/// Sandboxes per `SandboxList` page (small, so paging is exercised).
const LIST_PAGE: usize = 2;
/// Largest output chunk one stream message carries.
const CHUNK: usize = 16 << 10;

/// A sandbox's tags.
pub type Tags = Vec<(String, String)>;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Debug, Clone)]
struct FakeImage {
    /// The docker tag it runs.
    tag: String,
    entrypoint_cleared: bool,
    /// The build's outcome, once known.
    result: Option<pb::GenericResult>,
    logs: Vec<String>,
}

enum SandboxState {
    Starting,
    Running { container: String },
    Ended(pb::GenericResult),
}

struct FakeSandbox {
    app_id: String,
    task_id: String,
    jwt: String,
    created_at: f64,
    tags: Vec<(String, String)>,
    definition: pb::Sandbox,
    state: SandboxState,
}

#[derive(Default)]
struct ExecOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<i32>,
    /// The sandbox ended under the command.
    lost: bool,
}

struct FakeExec {
    output: Mutex<ExecOutput>,
    changed: tokio::sync::watch::Sender<u64>,
    stdin: tokio::sync::Mutex<Option<Pin<Box<dyn tokio::io::AsyncWrite + Send>>>>,
    stdin_written: Mutex<u64>,
    stdout_piped: bool,
    argv: Vec<String>,
}

#[derive(Default)]
struct Faults {
    /// RPC name → transient errors still to return.
    fail_next: HashMap<String, usize>,
    /// Output streams break (UNAVAILABLE) once after this many bytes.
    break_streams_after: Option<usize>,
    /// RPC name → calls still to apply and then answer UNAVAILABLE (a lost reply).
    fail_after_apply: HashMap<String, usize>,
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub rpc: &'static str,
    pub detail: String,
}

#[derive(Default)]
struct State {
    apps: BTreeMap<String, String>,
    images: HashMap<String, FakeImage>,
    image_by_spec: HashMap<Vec<u8>, String>,
    sandboxes: BTreeMap<String, FakeSandbox>,
    execs: HashMap<(String, String), Arc<FakeExec>>,
    /// `x-idempotency-key` of each create → the sandbox it made.
    created_by_key: HashMap<String, String>,
    calls: Vec<Call>,
    faults: Faults,
    next_id: u64,
}

/// The fake service (both ports), running on its own runtime thread.
pub struct FakeModal {
    shared: Arc<Shared>,
    pub control_url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    state: Mutex<State>,
    docker: bollard::Docker,
    router_url: Mutex<String>,
    instance: String,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn status(code: i32, exception: &str) -> pb::GenericResult {
    pb::GenericResult {
        status: code,
        exception: exception.to_string(),
        ..Default::default()
    }
}

impl Shared {
    fn id(&self, prefix: &str) -> String {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        // Modal's ids: a prefix and 22 alphanumerics.
        format!("{prefix}-{}{:0>14}", self.instance, state.next_id)
    }

    fn record(&self, rpc: &'static str, detail: String) {
        self.state.lock().unwrap().calls.push(Call { rpc, detail });
    }

    /// An injected transient failure of `rpc`, if one is due.
    fn fault(&self, rpc: &str) -> Result<(), Status> {
        let mut state = self.state.lock().unwrap();
        if let Some(left) = state.faults.fail_next.get_mut(rpc) {
            if *left > 0 {
                *left -= 1;
                return Err(Status::unavailable(format!("injected: {rpc} unavailable")));
            }
        }
        Ok(())
    }

    fn check_control<T>(&self, rpc: &'static str, request: &Request<T>) -> Result<(), Status> {
        let md = request.metadata();
        let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
        if get("x-modal-token-id") != TOKEN_ID || get("x-modal-token-secret") != TOKEN_SECRET {
            self.record(rpc, "unauthenticated".into());
            return Err(Status::unauthenticated("Invalid token id or secret"));
        }
        // CLIENT_TYPE_CLIENT (the only type that authenticates with a token) and a version
        // the service still accepts.
        if get("x-modal-client-type") != "1" {
            return Err(Status::failed_precondition(format!(
                "x-modal-client-type {:?}: token credentials need CLIENT_TYPE_CLIENT (1)",
                get("x-modal-client-type")
            )));
        }
        let version: Vec<u32> = get("x-modal-client-version")
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        if version.len() != 3 || version < vec![1, 0, 0] {
            return Err(Status::failed_precondition(format!(
                "x-modal-client-version {:?}: this client is too old or unknown",
                get("x-modal-client-version")
            )));
        }
        self.fault(rpc)
    }

    /// The running sandbox whose task is `task_id`, after the router's bearer-token check.
    fn check_router<T>(
        &self,
        rpc: &'static str,
        request: &Request<T>,
        task_id: &str,
    ) -> Result<String, Status> {
        let md = request.metadata();
        if md.get("x-modal-token-secret").is_some() || md.get("x-modal-token-id").is_some() {
            return Err(Status::permission_denied(
                "control-plane credentials sent to a task router",
            ));
        }
        let bearer = md
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.fault(rpc)?;
        let state = self.state.lock().unwrap();
        let Some(sandbox) = state.sandboxes.values().find(|s| s.task_id == task_id) else {
            return Err(Status::not_found(format!("task {task_id} not found")));
        };
        if bearer != format!("Bearer {}", sandbox.jwt) {
            return Err(Status::unauthenticated("invalid or expired JWT"));
        }
        match &sandbox.state {
            SandboxState::Running { container } => Ok(container.clone()),
            SandboxState::Starting => Err(Status::unavailable("task is starting")),
            SandboxState::Ended(_) => {
                Err(Status::not_found(format!("task {task_id} has finished")))
            }
        }
    }

    /// Ends a sandbox: its container goes, its commands' streams end.
    async fn end_sandbox(self: &Arc<Self>, id: &str, result: pb::GenericResult) -> bool {
        let (container, task_id) = {
            let mut state = self.state.lock().unwrap();
            let Some(sandbox) = state.sandboxes.get_mut(id) else {
                return false;
            };
            if matches!(sandbox.state, SandboxState::Ended(_)) {
                return false;
            }
            let previous = std::mem::replace(&mut sandbox.state, SandboxState::Ended(result));
            let container = match previous {
                SandboxState::Running { container } => Some(container),
                _ => None,
            };
            (container, sandbox.task_id.clone())
        };
        if let Some(container) = container {
            let _ = self
                .docker
                .remove_container(
                    &container,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await;
        }
        let execs: Vec<Arc<FakeExec>> = {
            let state = self.state.lock().unwrap();
            state
                .execs
                .iter()
                .filter(|((t, _), _)| *t == task_id)
                .map(|(_, e)| e.clone())
                .collect()
        };
        for exec in execs {
            let mut out = exec.output.lock().unwrap();
            if out.exit.is_none() {
                out.lost = true;
            }
            drop(out);
            exec.changed.send_modify(|v| *v += 1);
        }
        true
    }

    /// Starts the sandbox's container (asynchronously after `SandboxCreate`, as Modal does).
    async fn start_container(self: Arc<Self>, id: String) {
        let (image, definition) = {
            let state = self.state.lock().unwrap();
            let Some(sandbox) = state.sandboxes.get(&id) else {
                return;
            };
            let image = state.images.get(&sandbox.definition.image_id).cloned();
            (image, sandbox.definition.clone())
        };
        let Some(image) = image else { return };
        let resources = definition.resources.clone().unwrap_or_default();
        let blocked = definition
            .network_access
            .as_ref()
            .map(|n| n.network_access_type == pb::network_access::NetworkAccessType::Blocked as i32)
            .unwrap_or(false);
        let body = ContainerCreateBody {
            image: Some(image.tag.clone()),
            entrypoint: image.entrypoint_cleared.then(Vec::new),
            cmd: Some(definition.entrypoint_args.clone()),
            working_dir: definition.workdir.clone(),
            labels: Some(HashMap::from([(
                CONTAINER_LABEL.to_string(),
                self.instance.clone(),
            )])),
            host_config: Some(HostConfig {
                network_mode: Some(if blocked { "none" } else { "bridge" }.into()),
                memory: (resources.memory_mb > 0).then_some((resources.memory_mb as i64) << 20),
                nano_cpus: (resources.milli_cpu > 0)
                    .then(|| resources.milli_cpu as i64 * 1_000_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
            .await;
        let started = match created {
            Ok(c) => self
                .docker
                .start_container(
                    &c.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map(|_| c.id)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        // A container whose process ended at once (an image entrypoint that exits) failed
        // to start, as a Modal sandbox whose entrypoint exits does.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let running = match &started {
            Ok(container) => self
                .docker
                .inspect_container(container, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|i| i.state)
                .and_then(|s| s.running)
                .unwrap_or(false),
            Err(_) => false,
        };
        let mut state = self.state.lock().unwrap();
        let Some(sandbox) = state.sandboxes.get_mut(&id) else {
            return;
        };
        if !matches!(sandbox.state, SandboxState::Starting) {
            return;
        }
        sandbox.state = match (started, running) {
            (Ok(container), true) => SandboxState::Running { container },
            (Ok(_), false) => SandboxState::Ended(status(5, "the sandbox's entrypoint exited")),
            (Err(e), _) => SandboxState::Ended(status(5, &e)),
        };
        // Modal ends the sandbox at its timeout whatever happens.
        let timeout = Duration::from_secs(definition.timeout_secs as u64);
        let shared = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            shared.end_sandbox(&id, status(4, "sandbox timeout")).await;
        });
    }
}

impl FakeModal {
    /// Starts both servers on loopback.
    pub fn start() -> FakeModal {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the fake Modal");
        // The engine the docker tests use (DOCKER_HOST), with the bundled image built (outside
        // the runtime: it runs one of its own).
        crate::support::docker();
        let docker = runtime.block_on(async {
            bollard::Docker::connect_with_defaults().expect("docker for the fake Modal")
        });
        let instance = format!("{:x}", now().to_bits() ^ std::process::id() as u64);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            docker,
            router_url: Mutex::new(String::new()),
            instance: format!("{:0>8}", &instance[instance.len().saturating_sub(8)..]),
        });
        let control = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let router = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let control_url = format!("http://{}", control.local_addr().unwrap());
        let router_url = format!("http://{}", router.local_addr().unwrap());
        *shared.router_url.lock().unwrap() = router_url.clone();
        for (listener, is_router) in [(control, false), (router, true)] {
            listener.set_nonblocking(true).unwrap();
            let shared = shared.clone();
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                // gRPC over cleartext HTTP/2 (as a loopback control plane is served).
                let app = if is_router {
                    axum::Router::new()
                        .fallback_service(TaskCommandRouterServer::new(Router(shared)))
                } else {
                    axum::Router::new().fallback_service(ModalClientServer::new(Control(shared)))
                };
                let result = axum::serve(listener, app).await;
                if let Err(e) = result {
                    eprintln!("fake modal server: {e}");
                }
            });
        }
        FakeModal {
            shared,
            control_url,
            runtime: Some(runtime),
        }
    }

    /// The environment a cbench process needs to use this fake (and no ~/.modal.toml).
    pub fn env(&self, home: &std::path::Path) -> Vec<(String, String)> {
        vec![
            ("MODAL_SERVER_URL".into(), self.control_url.clone()),
            ("MODAL_TOKEN_ID".into(), TOKEN_ID.into()),
            ("MODAL_TOKEN_SECRET".into(), TOKEN_SECRET.into()),
            ("HOME".into(), home.display().to_string()),
        ]
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.state.lock().unwrap().calls.clone()
    }

    /// Ids of the sandboxes still running (or starting).
    pub fn live_sandboxes(&self) -> Vec<String> {
        let state = self.shared.state.lock().unwrap();
        state
            .sandboxes
            .iter()
            .filter(|(_, s)| !matches!(s.state, SandboxState::Ended(_)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every sandbox created: (id, tags, definition).
    pub fn sandboxes(&self) -> Vec<(String, Tags, pb::Sandbox)> {
        let state = self.shared.state.lock().unwrap();
        state
            .sandboxes
            .iter()
            .map(|(id, s)| (id.clone(), s.tags.clone(), s.definition.clone()))
            .collect()
    }

    /// The next `count` calls of `rpc` fail with UNAVAILABLE.
    pub fn fail_next(&self, rpc: &str, count: usize) {
        let mut state = self.shared.state.lock().unwrap();
        state.faults.fail_next.insert(rpc.to_string(), count);
    }

    /// The next `count` calls of `rpc` take effect, then answer UNAVAILABLE (the reply is lost).
    pub fn fail_after_apply(&self, rpc: &str, count: usize) {
        let mut state = self.shared.state.lock().unwrap();
        state.faults.fail_after_apply.insert(rpc.to_string(), count);
    }

    /// Output streams break once each after `bytes` bytes.
    pub fn break_streams_after(&self, bytes: usize) {
        self.shared.state.lock().unwrap().faults.break_streams_after = Some(bytes);
    }

    /// Ends sandbox `id` as Modal ends one it evicts or kills.
    pub fn kill_sandbox(&self, id: &str) {
        let shared = self.shared.clone();
        let id = id.to_string();
        self.runtime().block_on(async move {
            shared
                .end_sandbox(&id, status(6, "worker lost (killed by the test)"))
                .await
        });
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the fake's runtime")
    }
}

impl Drop for FakeModal {
    fn drop(&mut self) {
        let shared = self.shared.clone();
        if let Some(runtime) = self.runtime.take() {
            runtime.block_on(async move {
                let containers = shared
                    .docker
                    .list_containers(Some(
                        bollard::query_parameters::ListContainersOptionsBuilder::default()
                            .all(true)
                            .filters(&HashMap::from([(
                                "label".to_string(),
                                vec![format!("{CONTAINER_LABEL}={}", shared.instance)],
                            )]))
                            .build(),
                    ))
                    .await
                    .unwrap_or_default();
                for c in containers {
                    if let Some(id) = c.id {
                        let _ = shared
                            .docker
                            .remove_container(
                                &id,
                                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                            )
                            .await;
                    }
                }
            });
            runtime.shutdown_background();
        }
    }
}

struct Control(Arc<Shared>);

#[tonic::async_trait]
impl ModalClient for Control {
    async fn client_hello(
        &self,
        request: Request<()>,
    ) -> Result<Response<pb::ClientHelloResponse>, Status> {
        self.0.check_control("ClientHello", &request)?;
        self.0.record("ClientHello", String::new());
        Ok(Response::new(pb::ClientHelloResponse {
            image_builder_version: "2025.06".into(),
            ..Default::default()
        }))
    }

    async fn app_get_or_create(
        &self,
        request: Request<pb::AppGetOrCreateRequest>,
    ) -> Result<Response<pb::AppGetOrCreateResponse>, Status> {
        self.0.check_control("AppGetOrCreate", &request)?;
        let r = request.into_inner();
        if r.app_name.is_empty() {
            return Err(Status::invalid_argument("app_name is required"));
        }
        let existing = self.0.state.lock().unwrap().apps.get(&r.app_name).cloned();
        let app_id = match existing {
            Some(id) => id,
            None if r.object_creation_type == pb::ObjectCreationType::CreateIfMissing as i32 => {
                let id = self.0.id("ap");
                self.0
                    .state
                    .lock()
                    .unwrap()
                    .apps
                    .insert(r.app_name.clone(), id.clone());
                id
            }
            None => return Err(Status::not_found(format!("App '{}' not found", r.app_name))),
        };
        self.0.record("AppGetOrCreate", r.app_name);
        Ok(Response::new(pb::AppGetOrCreateResponse { app_id }))
    }

    async fn image_get_or_create(
        &self,
        request: Request<pb::ImageGetOrCreateRequest>,
    ) -> Result<Response<pb::ImageGetOrCreateResponse>, Status> {
        self.0.check_control("ImageGetOrCreate", &request)?;
        let r = request.into_inner();
        let image = r
            .image
            .ok_or_else(|| Status::invalid_argument("image is required"))?;
        if r.builder_version.is_empty() {
            return Err(Status::invalid_argument("builder_version is required"));
        }
        if !self
            .0
            .state
            .lock()
            .unwrap()
            .apps
            .values()
            .any(|a| *a == r.app_id)
        {
            return Err(Status::not_found(format!("app {} not found", r.app_id)));
        }
        let spec = image.encode_to_vec();
        if let Some(id) = self
            .0
            .state
            .lock()
            .unwrap()
            .image_by_spec
            .get(&spec)
            .cloned()
        {
            let result = self.0.state.lock().unwrap().images[&id].result.clone();
            return Ok(Response::new(pb::ImageGetOrCreateResponse {
                image_id: id,
                result,
                metadata: None,
            }));
        }
        let commands: Vec<&str> = image
            .dockerfile_commands
            .iter()
            .map(String::as_str)
            .collect();
        let (tag, entrypoint_cleared, exists) = match commands.as_slice() {
            [from] if from.starts_with("FROM ") && image.base_images.is_empty() => {
                let tag = from["FROM ".len()..].trim().to_string();
                let exists = self.0.docker.inspect_image(&tag).await.is_ok();
                (tag, false, exists)
            }
            ["FROM base", "ENTRYPOINT []"] => {
                let base = image
                    .base_images
                    .iter()
                    .find(|b| b.docker_tag == "base")
                    .ok_or_else(|| Status::invalid_argument("FROM base without a base image"))?;
                let state = self.0.state.lock().unwrap();
                let parent = state.images.get(&base.image_id).ok_or_else(|| {
                    Status::not_found(format!("image {} not found", base.image_id))
                })?;
                if parent.result.as_ref().map(|r| r.status) != Some(1) {
                    return Err(Status::failed_precondition("base image is not built"));
                }
                (parent.tag.clone(), true, true)
            }
            other => {
                return Err(Status::invalid_argument(format!(
                "the fake builds only `FROM <tag>` and `FROM base; ENTRYPOINT []`, not {other:?}"
            )))
            }
        };
        let id = self.0.id("im");
        let (result, logs) = if exists {
            (
                status(1, ""),
                vec![format!("Building image {id}\n"), format!("=> FROM {tag}\n")],
            )
        } else {
            (
                status(2, &format!("Image build for {id} failed. See build logs for more details.")),
                vec![
                    format!("Building image {id}\n"),
                    format!("pull access denied for {tag}, repository does not exist or may require authorization\n"),
                ],
            )
        };
        let mut state = self.0.state.lock().unwrap();
        state.image_by_spec.insert(spec, id.clone());
        state.images.insert(
            id.clone(),
            FakeImage {
                tag: tag.clone(),
                entrypoint_cleared,
                result: Some(result),
                logs,
            },
        );
        state.calls.push(Call {
            rpc: "ImageGetOrCreate",
            detail: format!("{id} {tag} cleared={entrypoint_cleared}"),
        });
        // A new build is pending: the client joins its stream for the logs and the result.
        Ok(Response::new(pb::ImageGetOrCreateResponse {
            image_id: id,
            result: Some(status(0, "")),
            metadata: None,
        }))
    }

    type ImageJoinStreamingStream = BoxStream<pb::ImageJoinStreamingResponse>;

    async fn image_join_streaming(
        &self,
        request: Request<pb::ImageJoinStreamingRequest>,
    ) -> Result<Response<Self::ImageJoinStreamingStream>, Status> {
        self.0.check_control("ImageJoinStreaming", &request)?;
        let r = request.into_inner();
        let image = self
            .0
            .state
            .lock()
            .unwrap()
            .images
            .get(&r.image_id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("image {} not found", r.image_id)))?;
        let skip: usize = r.last_entry_id.parse().unwrap_or(0);
        let mut messages = Vec::new();
        for (i, line) in image.logs.iter().enumerate() {
            if i + 1 > skip {
                messages.push(Ok(pb::ImageJoinStreamingResponse {
                    task_logs: vec![pb::TaskLogs {
                        data: line.clone(),
                        file_descriptor: pb::FileDescriptor::Stdout as i32,
                        ..Default::default()
                    }],
                    entry_id: (i + 1).to_string(),
                    ..Default::default()
                }));
            }
        }
        messages.push(Ok(pb::ImageJoinStreamingResponse {
            result: image.result.clone(),
            eof: true,
            ..Default::default()
        }));
        Ok(Response::new(Box::pin(futures_util::stream::iter(
            messages,
        ))))
    }

    async fn sandbox_create(
        &self,
        request: Request<pb::SandboxCreateRequest>,
    ) -> Result<Response<pb::SandboxCreateResponse>, Status> {
        self.0.check_control("SandboxCreate", &request)?;
        let key = request
            .metadata()
            .get("x-idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if let Some(id) = self.0.state.lock().unwrap().created_by_key.get(&key) {
            // A retry of a create that took effect: the same sandbox, not a second one.
            return Ok(Response::new(pb::SandboxCreateResponse {
                sandbox_id: id.clone(),
                metadata: None,
            }));
        }
        let r = request.into_inner();
        let definition = r
            .definition
            .ok_or_else(|| Status::invalid_argument("definition is required"))?;
        {
            let state = self.0.state.lock().unwrap();
            if !state.apps.values().any(|a| *a == r.app_id) {
                return Err(Status::not_found(format!("app {} not found", r.app_id)));
            }
            match state.images.get(&definition.image_id) {
                Some(image) if image.result.as_ref().map(|r| r.status) == Some(1) => {}
                _ => {
                    return Err(Status::failed_precondition(format!(
                        "image {} is not built",
                        definition.image_id
                    )))
                }
            }
        }
        if definition.timeout_secs == 0 || definition.timeout_secs > 86_400 {
            return Err(Status::invalid_argument(
                "timeout_secs must be in 1..=86400",
            ));
        }
        if definition
            .workdir
            .as_deref()
            .is_some_and(|w| !w.starts_with('/'))
        {
            return Err(Status::invalid_argument("workdir must be absolute"));
        }
        let id = self.0.id("sb");
        let task_id = self.0.id("ta");
        let jwt = format!("jwt.{task_id}.{}", self.0.id("k"));
        let tags: Vec<(String, String)> = r
            .tags
            .iter()
            .map(|t| (t.tag_name.clone(), t.tag_value.clone()))
            .collect();
        self.0.state.lock().unwrap().sandboxes.insert(
            id.clone(),
            FakeSandbox {
                app_id: r.app_id.clone(),
                task_id,
                jwt,
                created_at: now(),
                tags,
                definition,
                state: SandboxState::Starting,
            },
        );
        self.0.record("SandboxCreate", id.clone());
        tokio::spawn(self.0.clone().start_container(id.clone()));
        {
            let mut state = self.0.state.lock().unwrap();
            if !key.is_empty() {
                state.created_by_key.insert(key, id.clone());
            }
            if let Some(left) = state.faults.fail_after_apply.get_mut("SandboxCreate") {
                if *left > 0 {
                    *left -= 1;
                    return Err(Status::unavailable("injected: the reply was lost"));
                }
            }
        }
        Ok(Response::new(pb::SandboxCreateResponse {
            sandbox_id: id,
            metadata: None,
        }))
    }

    async fn sandbox_get_task_id(
        &self,
        request: Request<pb::SandboxGetTaskIdRequest>,
    ) -> Result<Response<pb::SandboxGetTaskIdResponse>, Status> {
        self.0.check_control("SandboxGetTaskId", &request)?;
        let r = request.into_inner();
        let wait = Duration::from_secs_f32(r.timeout.unwrap_or(0.0).clamp(0.0, 55.0));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let state = self.0.state.lock().unwrap();
                let sandbox = state.sandboxes.get(&r.sandbox_id).ok_or_else(|| {
                    Status::not_found(format!("sandbox {} not found", r.sandbox_id))
                })?;
                match &sandbox.state {
                    SandboxState::Running { .. } => {
                        return Ok(Response::new(pb::SandboxGetTaskIdResponse {
                            task_id: Some(sandbox.task_id.clone()),
                            task_result: None,
                        }))
                    }
                    SandboxState::Ended(result) => {
                        return Ok(Response::new(pb::SandboxGetTaskIdResponse {
                            task_id: None,
                            task_result: Some(result.clone()),
                        }))
                    }
                    SandboxState::Starting => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Response::new(pb::SandboxGetTaskIdResponse::default()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn task_get_command_router_access(
        &self,
        request: Request<pb::TaskGetCommandRouterAccessRequest>,
    ) -> Result<Response<pb::TaskGetCommandRouterAccessResponse>, Status> {
        self.0
            .check_control("TaskGetCommandRouterAccess", &request)?;
        let r = request.into_inner();
        let state = self.0.state.lock().unwrap();
        let sandbox = state
            .sandboxes
            .values()
            .find(|s| s.task_id == r.task_id)
            .ok_or_else(|| Status::not_found(format!("task {} not found", r.task_id)))?;
        Ok(Response::new(pb::TaskGetCommandRouterAccessResponse {
            jwt: sandbox.jwt.clone(),
            url: self.0.router_url.lock().unwrap().clone(),
        }))
    }

    async fn sandbox_wait(
        &self,
        request: Request<pb::SandboxWaitRequest>,
    ) -> Result<Response<pb::SandboxWaitResponse>, Status> {
        self.0.check_control("SandboxWait", &request)?;
        let r = request.into_inner();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs_f32(r.timeout.clamp(0.0, 55.0));
        loop {
            {
                let state = self.0.state.lock().unwrap();
                let sandbox = state.sandboxes.get(&r.sandbox_id).ok_or_else(|| {
                    Status::not_found(format!("sandbox {} not found", r.sandbox_id))
                })?;
                if let SandboxState::Ended(result) = &sandbox.state {
                    return Ok(Response::new(pb::SandboxWaitResponse {
                        result: Some(result.clone()),
                        metadata: None,
                    }));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Response::new(pb::SandboxWaitResponse::default()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn sandbox_terminate(
        &self,
        request: Request<pb::SandboxTerminateRequest>,
    ) -> Result<Response<pb::SandboxTerminateResponse>, Status> {
        self.0.check_control("SandboxTerminate", &request)?;
        let r = request.into_inner();
        let existing = {
            let state = self.0.state.lock().unwrap();
            let sandbox = state
                .sandboxes
                .get(&r.sandbox_id)
                .ok_or_else(|| Status::not_found(format!("sandbox {} not found", r.sandbox_id)))?;
            match &sandbox.state {
                SandboxState::Ended(result) => Some(result.clone()),
                _ => None,
            }
        };
        self.0.record("SandboxTerminate", r.sandbox_id.clone());
        if existing.is_none() {
            self.0
                .end_sandbox(&r.sandbox_id, status(3, "terminated by the client"))
                .await;
        }
        Ok(Response::new(pb::SandboxTerminateResponse {
            existing_result: existing,
        }))
    }

    async fn sandbox_list(
        &self,
        request: Request<pb::SandboxListRequest>,
    ) -> Result<Response<pb::SandboxListResponse>, Status> {
        self.0.check_control("SandboxList", &request)?;
        let r = request.into_inner();
        let state = self.0.state.lock().unwrap();
        let mut matching: Vec<(&String, &FakeSandbox)> = state
            .sandboxes
            .iter()
            .filter(|(_, s)| r.app_id.is_empty() || s.app_id == r.app_id)
            .filter(|(_, s)| r.include_finished || !matches!(s.state, SandboxState::Ended(_)))
            .filter(|(_, s)| r.before_timestamp == 0.0 || s.created_at < r.before_timestamp)
            .filter(|(_, s)| {
                r.tags
                    .iter()
                    .all(|t| s.tags.contains(&(t.tag_name.clone(), t.tag_value.clone())))
            })
            .collect();
        matching.sort_by(|a, b| b.1.created_at.total_cmp(&a.1.created_at));
        let sandboxes = matching
            .into_iter()
            .take(LIST_PAGE)
            .map(|(id, s)| pb::SandboxInfo {
                id: id.clone(),
                created_at: s.created_at,
                app_id: s.app_id.clone(),
                tags: s
                    .tags
                    .iter()
                    .map(|(k, v)| pb::SandboxTag {
                        tag_name: k.clone(),
                        tag_value: v.clone(),
                    })
                    .collect(),
                task_info: Some(pb::TaskInfo {
                    id: s.task_id.clone(),
                    result: match &s.state {
                        SandboxState::Ended(result) => Some(result.clone()),
                        _ => None,
                    },
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::SandboxListResponse { sandboxes }))
    }
}

struct Router(Arc<Shared>);

impl Router {
    fn exec(&self, task_id: &str, exec_id: &str) -> Result<Arc<FakeExec>, Status> {
        self.0
            .state
            .lock()
            .unwrap()
            .execs
            .get(&(task_id.to_string(), exec_id.to_string()))
            .cloned()
            .ok_or_else(|| Status::not_found(format!("exec {exec_id} not found")))
    }
}

#[tonic::async_trait]
impl TaskCommandRouter for Router {
    async fn task_exec_start(
        &self,
        request: Request<tcr::TaskExecStartRequest>,
    ) -> Result<Response<tcr::TaskExecStartResponse>, Status> {
        let task_id = request.get_ref().task_id.clone();
        let container = self.0.check_router("TaskExecStart", &request, &task_id)?;
        let r = request.into_inner();
        if r.exec_id.is_empty() || r.command_args.is_empty() {
            return Err(Status::invalid_argument(
                "exec_id and command_args are required",
            ));
        }
        if r.stderr_config == tcr::TaskExecStderrConfig::Stdout as i32 {
            return Err(Status::invalid_argument(
                "stderr_config STDOUT is not supported",
            ));
        }
        if r.command_args.iter().map(String::len).sum::<usize>() > 65_536 {
            return Err(Status::invalid_argument("command_args exceed 65536 bytes"));
        }
        let key = (task_id.clone(), r.exec_id.clone());
        if let Some(earlier) = self.0.state.lock().unwrap().execs.get(&key) {
            // The exec id is the idempotency key: a retried start runs nothing again, and
            // the same id with another command is a client bug.
            if earlier.argv != r.command_args {
                return Err(Status::already_exists(format!(
                    "exec {} was started with other arguments",
                    r.exec_id
                )));
            }
            return Ok(Response::new(tcr::TaskExecStartResponse {}));
        }
        let created = self
            .0
            .docker
            .create_exec(
                &container,
                CreateExecOptions {
                    cmd: Some(r.command_args.clone()),
                    env: Some(r.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                    working_dir: r.workdir.clone(),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Status::internal(format!("exec: {e}")))?;
        let started = self
            .0
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| Status::internal(format!("exec: {e}")))?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(Status::internal("exec started detached"));
        };
        let (changed, _) = tokio::sync::watch::channel(0);
        let exec = Arc::new(FakeExec {
            output: Mutex::new(ExecOutput::default()),
            changed,
            stdin: tokio::sync::Mutex::new(Some(input)),
            stdin_written: Mutex::new(0),
            stdout_piped: r.stdout_config == tcr::TaskExecStdoutConfig::Pipe as i32,
            argv: r.command_args.clone(),
        });
        self.0.state.lock().unwrap().execs.insert(key, exec.clone());
        self.0.record("TaskExecStart", r.command_args.join(" "));
        let docker = self.0.docker.clone();
        let exec_id = created.id.clone();
        let stderr_piped = r.stderr_config == tcr::TaskExecStderrConfig::Pipe as i32;
        let pump = exec.clone();
        tokio::spawn(async move {
            while let Some(chunk) = output.next().await {
                let Ok(chunk) = chunk else { break };
                let mut out = pump.output.lock().unwrap();
                match chunk {
                    bollard::container::LogOutput::StdOut { message } if pump.stdout_piped => {
                        out.stdout.extend_from_slice(&message)
                    }
                    bollard::container::LogOutput::StdErr { message } if stderr_piped => {
                        out.stderr.extend_from_slice(&message)
                    }
                    _ => {}
                }
                drop(out);
                pump.changed.send_modify(|v| *v += 1);
            }
            let code = docker
                .inspect_exec(&exec_id)
                .await
                .ok()
                .and_then(|i| i.exit_code)
                .unwrap_or(-1);
            let mut out = pump.output.lock().unwrap();
            if !out.lost {
                out.exit = Some(code as i32);
            }
            drop(out);
            pump.changed.send_modify(|v| *v += 1);
        });
        if let Some(secs) = r.timeout_secs {
            let exec = exec.clone();
            let docker = self.0.docker.clone();
            let exec_id = created.id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs as u64)).await;
                if exec.output.lock().unwrap().exit.is_none() {
                    if let Some(pid) = docker.inspect_exec(&exec_id).await.ok().and_then(|i| i.pid)
                    {
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
            });
        }
        Ok(Response::new(tcr::TaskExecStartResponse {}))
    }

    async fn task_exec_stdin_write(
        &self,
        request: Request<tcr::TaskExecStdinWriteRequest>,
    ) -> Result<Response<tcr::TaskExecStdinWriteResponse>, Status> {
        let task_id = request.get_ref().task_id.clone();
        self.0
            .check_router("TaskExecStdinWrite", &request, &task_id)?;
        let r = request.into_inner();
        let exec = self.exec(&task_id, &r.exec_id)?;
        let mut stdin = exec.stdin.lock().await;
        let written = *exec.stdin_written.lock().unwrap();
        if r.offset > written {
            return Err(Status::invalid_argument(format!(
                "stdin offset {} is past the {written} bytes written",
                r.offset
            )));
        }
        // A retried write overlaps what arrived: only the new bytes are written.
        let skip = (written - r.offset) as usize;
        if let Some(pipe) = stdin.as_mut() {
            if skip < r.data.len() {
                pipe.write_all(&r.data[skip..])
                    .await
                    .map_err(|e| Status::internal(format!("stdin: {e}")))?;
                *exec.stdin_written.lock().unwrap() += (r.data.len() - skip) as u64;
            }
            if r.eof {
                let _ = pipe.shutdown().await;
                *stdin = None;
            }
        } else if !r.data.is_empty() && skip < r.data.len() {
            return Err(Status::failed_precondition("stdin is closed"));
        }
        Ok(Response::new(tcr::TaskExecStdinWriteResponse {}))
    }

    type TaskExecStdioReadStream = BoxStream<tcr::TaskExecStdioReadResponse>;

    async fn task_exec_stdio_read(
        &self,
        request: Request<tcr::TaskExecStdioReadRequest>,
    ) -> Result<Response<Self::TaskExecStdioReadStream>, Status> {
        let task_id = request.get_ref().task_id.clone();
        self.0
            .check_router("TaskExecStdioRead", &request, &task_id)?;
        let r = request.into_inner();
        let exec = self.exec(&task_id, &r.exec_id)?;
        let stderr = r.file_descriptor == tcr::TaskExecStdioFileDescriptor::Stderr as i32;
        let break_after = {
            let state = self.0.state.lock().unwrap();
            // Each stream breaks at most once: the fault is used up by the first reader.
            if r.offset == 0 {
                state.faults.break_streams_after
            } else {
                None
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut offset = r.offset as usize;
            let mut sent = 0usize;
            let mut changed = exec.changed.subscribe();
            loop {
                let (chunk, finished) = {
                    let out = exec.output.lock().unwrap();
                    let buf = if stderr { &out.stderr } else { &out.stdout };
                    let end = buf.len().min(offset + CHUNK);
                    let chunk = (offset < end).then(|| buf[offset..end].to_vec());
                    (chunk, out.exit.is_some() || out.lost)
                };
                match chunk {
                    Some(data) => {
                        if break_after.is_some_and(|b| sent >= b) {
                            let _ = tx
                                .send(Err(Status::unavailable("injected: stream broke")))
                                .await;
                            return;
                        }
                        offset += data.len();
                        sent += data.len();
                        if tx
                            .send(Ok(tcr::TaskExecStdioReadResponse { data }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    None if finished => return,
                    None => {
                        if changed.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn task_exec_wait(
        &self,
        request: Request<tcr::TaskExecWaitRequest>,
    ) -> Result<Response<tcr::TaskExecWaitResponse>, Status> {
        let task_id = request.get_ref().task_id.clone();
        self.0.check_router("TaskExecWait", &request, &task_id)?;
        let r = request.into_inner();
        let exec = self.exec(&task_id, &r.exec_id)?;
        let mut changed = exec.changed.subscribe();
        loop {
            {
                let out = exec.output.lock().unwrap();
                if let Some(code) = out.exit {
                    return Ok(Response::new(tcr::TaskExecWaitResponse {
                        exit_status: Some(tcr::task_exec_wait_response::ExitStatus::Code(code)),
                    }));
                }
                if out.lost {
                    return Err(Status::new(Code::NotFound, "task has finished"));
                }
            }
            if changed.changed().await.is_err() {
                return Err(Status::internal("exec state lost"));
            }
        }
    }
}
