//! The control plane (`modal.client.ModalClient`): one connection to the first server URL that
//! answers, every call carrying the SDK's metadata and credentials, unary calls retried as the
//! SDK retries them (docs/design/cloud-backends.md §A, §B).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::ModalConfig;
use crate::error::{is_transient, ModalError};
use crate::proto::client as pb;
use crate::proto::client::modal_client_client::ModalClientClient;

/// The control-plane stub with cbench's metadata on every call.
pub(crate) type Api = ModalClientClient<InterceptedService<Channel, Headers>>;

/// `GenericStatus` values (api.proto).
pub mod status {
    pub const PENDING: i32 = 0;
    pub const SUCCESS: i32 = 1;
    pub const FAILURE: i32 = 2;
    pub const TERMINATED: i32 = 3;
    pub const TIMEOUT: i32 = 4;
    pub const INIT_FAILURE: i32 = 5;
    pub const INTERNAL_FAILURE: i32 = 6;
    pub const IDLE_TIMEOUT: i32 = 7;
    pub const MEMORY_MANAGER_EVICTION: i32 = 8;

    /// A status in words, for errors.
    pub fn describe(status: i32) -> &'static str {
        match status {
            PENDING => "still pending",
            SUCCESS => "succeeded",
            FAILURE => "failed",
            TERMINATED => "was terminated",
            TIMEOUT => "timed out",
            INIT_FAILURE => "failed to start",
            INTERNAL_FAILURE => "failed inside Modal",
            IDLE_TIMEOUT => "stopped when idle",
            MEMORY_MANAGER_EVICTION => "was evicted for memory",
            _ => "ended with an unknown status",
        }
    }
}

/// The image builder version when neither the server nor `MODAL_IMAGE_BUILDER_VERSION` says.
const DEFAULT_BUILDER_VERSION: &str = "2025.06";
/// How long one `ImageJoinStreaming` long-poll lasts (the SDK's value).
const JOIN_TIMEOUT_SECS: f32 = 55.0;
/// Retries of a transient unary failure, and the first backoff (doubling, capped at 1 s).
const UNARY_RETRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// gRPC metadata added to every call of a channel.
#[derive(Clone)]
pub(crate) struct Headers(Arc<Vec<(AsciiMetadataKey, AsciiMetadataValue)>>);

impl Headers {
    /// From (name, value) pairs; a value that cannot travel in a header is an error naming it.
    pub(crate) fn new(pairs: Vec<(&'static str, String)>) -> Result<Headers, ModalError> {
        let mut headers = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let value =
                AsciiMetadataValue::try_from(value).map_err(|_| ModalError::HeaderValue(name))?;
            headers.push((AsciiMetadataKey::from_static(name), value));
        }
        Ok(Headers(Arc::new(headers)))
    }
}

impl tonic::service::Interceptor for Headers {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        for (name, value) in self.0.iter() {
            request.metadata_mut().insert(name.clone(), value.clone());
        }
        Ok(request)
    }
}

/// Opens an HTTP/2 channel to `url` with the SDK's keepalive and window settings (TLS for https).
pub(crate) async fn connect_channel(url: &str) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| error_chain(&e))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(64 << 20)
        .initial_connection_window_size(64 << 20);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_webpki_roots())
            .map_err(|e| error_chain(&e))?;
    }
    endpoint.connect().await.map_err(|e| error_chain(&e))
}

/// An error and its causes on one line (tonic's own message is just "transport error"). A
/// cause whose words are already on the line is left out: hyper and std often repeat the
/// same "Connection refused" a level apart.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}

/// Runs a unary call, retrying transient failures as the SDK does; a rejected credential is
/// `on_unauthenticated`'s error.
pub(crate) async fn with_retries<S: Clone, T, Fut>(
    rpc: &'static str,
    stub: &S,
    call: impl Fn(S, AsciiMetadataValue) -> Fut,
    on_unauthenticated: impl Fn(&tonic::Status) -> ModalError,
) -> Result<T, ModalError>
where
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    // One key per logical call, the same on every retry (the SDK's `x-idempotency-key`): a
    // create whose reply was lost is not made twice.
    let key =
        AsciiMetadataValue::try_from(uuid::Uuid::new_v4().to_string()).expect("a UUID is ASCII");
    let mut delay = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        match call(stub.clone(), key.clone()).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return Err(on_unauthenticated(&status))
            }
            Err(status) if is_transient(status.code()) && attempt < UNARY_RETRIES => {
                attempt += 1;
                tracing::debug!("modal {rpc}: {status}; retry {attempt} in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(status) => return Err(ModalError::rpc(rpc, &status)),
        }
    }
}

/// Deadline of one unary call (the server long-polls for at most 55 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// `message` as one attempt of a logical call: its idempotency key and a deadline.
pub(crate) fn keyed<M>(message: M, key: &AsciiMetadataValue) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-idempotency-key", key.clone());
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// A sandbox's tags: `(name, value)`.
pub type Tags = Vec<(String, String)>;

/// What one sandbox is made of.
#[derive(Debug, Clone)]
pub struct SandboxDefinition {
    pub image_id: String,
    /// The sandbox's main process (the image's entrypoint is cleared); Modal ends the sandbox
    /// when it exits.
    pub entrypoint_args: Vec<String>,
    /// CPUs (fractional) and memory in MiB; 0 leaves the choice to Modal.
    pub cpus: f64,
    pub memory_mib: u32,
    /// Modal ends the sandbox after this long, whatever happens to cbench.
    pub timeout_secs: u32,
    pub workdir: String,
    /// No network at all (`NetworkAccess BLOCKED`) or Modal's default (open).
    pub block_network: bool,
    pub tags: Tags,
}

/// A sandbox as `SandboxList` describes it.
#[derive(Debug, Clone)]
pub struct ListedSandbox {
    pub id: String,
    pub tags: Tags,
    /// `Some(status)` once it ended.
    pub ended: Option<i32>,
}

/// A connection to Modal's control plane, credentials checked.
pub struct ModalClient {
    config: ModalConfig,
    url: String,
    api: Api,
    builder_version: String,
}

impl std::fmt::Debug for ModalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModalClient")
            .field("url", &self.url)
            .field("config", &self.config)
            .finish()
    }
}

impl ModalClient {
    /// Connects to the first of the configured URLs that answers and checks the credentials
    /// (`ClientHello`): unreachable or rejected is an error before any work.
    pub async fn connect(config: ModalConfig) -> Result<Arc<ModalClient>, ModalError> {
        let headers = Headers::new(config.metadata())?;
        let mut failures = Vec::new();
        for url in &config.server_urls {
            let channel = match connect_channel(url).await {
                Ok(channel) => channel,
                Err(reason) => {
                    failures.push(format!("{url}: {reason}"));
                    continue;
                }
            };
            let mut client = ModalClient {
                api: ModalClientClient::with_interceptor(channel, headers.clone())
                    .max_decoding_message_size(100 << 20),
                url: url.clone(),
                config: config.clone(),
                builder_version: String::new(),
            };
            let hello = with_retries(
                "ClientHello",
                &client.api,
                |mut api, key| async move { api.client_hello(keyed((), &key)).await },
                |status| client.rejected(status),
            )
            .await;
            let hello = match hello {
                Ok(hello) => hello,
                Err(ModalError::Rpc { code, message, .. }) if is_transient(code) => {
                    failures.push(format!("{url}: {code:?}: {message}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !hello.warning.is_empty() {
                tracing::warn!("modal: {}", hello.warning);
            }
            for warning in &hello.server_warnings {
                tracing::warn!("modal: {}", warning.message);
            }
            client.builder_version = std::env::var("MODAL_IMAGE_BUILDER_VERSION")
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| Some(hello.image_builder_version.clone()).filter(|v| !v.is_empty()))
                .unwrap_or_else(|| DEFAULT_BUILDER_VERSION.into());
            return Ok(Arc::new(client));
        }
        Err(ModalError::Unreachable {
            url: config.server_urls.join(","),
            reason: failures.join("; "),
        })
    }

    /// The control-plane URL in use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The resolved configuration.
    pub fn config(&self) -> &ModalConfig {
        &self.config
    }

    fn rejected(&self, status: &tonic::Status) -> ModalError {
        ModalError::Rejected {
            url: self.url.clone(),
            token_id: self.config.token_id.clone(),
            profile: self.config.profile.clone(),
            message: status.message().to_string(),
        }
    }

    async fn unary<T, Fut>(
        &self,
        rpc: &'static str,
        call: impl Fn(Api, AsciiMetadataValue) -> Fut,
    ) -> Result<T, ModalError>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        with_retries(rpc, &self.api, call, |status| self.rejected(status)).await
    }

    /// The app `name` in the configured environment, created if missing.
    pub async fn app(&self, name: &str) -> Result<String, ModalError> {
        let request = pb::AppGetOrCreateRequest {
            app_name: name.to_string(),
            environment_name: self.config.environment.clone(),
            object_creation_type: pb::ObjectCreationType::CreateIfMissing as i32,
        };
        let reply = self
            .unary("AppGetOrCreate", move |mut api, key| {
                let request = keyed(request.clone(), &key);
                async move { api.app_get_or_create(request).await }
            })
            .await?;
        Ok(reply.app_id)
    }

    /// The image of registry tag `tag` with its entrypoint cleared, as CooperBench builds it
    /// (`Image.from_registry(tag).entrypoint([])`: two layers), waiting for the build.
    pub async fn image_from_registry(&self, app_id: &str, tag: &str) -> Result<String, ModalError> {
        let base = pb::Image {
            dockerfile_commands: vec![format!("FROM {tag}")],
            ..Default::default()
        };
        let base_id = self.build_layer(app_id, tag, base).await?;
        let cleared = pb::Image {
            base_images: vec![pb::BaseImage {
                image_id: base_id,
                docker_tag: "base".into(),
            }],
            dockerfile_commands: vec!["FROM base".into(), "ENTRYPOINT []".into()],
            ..Default::default()
        };
        self.build_layer(app_id, tag, cleared).await
    }

    /// One `ImageGetOrCreate`, then `ImageJoinStreaming` until the build has a result.
    async fn build_layer(
        &self,
        app_id: &str,
        tag: &str,
        image: pb::Image,
    ) -> Result<String, ModalError> {
        let request = pb::ImageGetOrCreateRequest {
            image: Some(image),
            app_id: app_id.to_string(),
            builder_version: self.builder_version.clone(),
            ..Default::default()
        };
        let created = self
            .unary("ImageGetOrCreate", move |mut api, key| {
                let request = keyed(request.clone(), &key);
                async move { api.image_get_or_create(request).await }
            })
            .await?;
        let image_id = created.image_id;
        let mut result = created.result.filter(|r| r.status != status::PENDING);
        let mut last_entry_id = String::new();
        let mut stream_errors = 0;
        let mut log_tail = String::new();
        while result.is_none() {
            let request = pb::ImageJoinStreamingRequest {
                image_id: image_id.clone(),
                timeout: JOIN_TIMEOUT_SECS,
                last_entry_id: last_entry_id.clone(),
                include_logs_for_finished: true,
            };
            let mut api = self.api.clone();
            let opened = api.image_join_streaming(request).await;
            let mut stream = match opened {
                Ok(stream) => stream.into_inner(),
                Err(status) if status.code() == tonic::Code::Unauthenticated => {
                    return Err(self.rejected(&status))
                }
                Err(status) if is_transient(status.code()) && stream_errors < 2 => {
                    stream_errors += 1;
                    continue;
                }
                Err(status) => return Err(ModalError::rpc("ImageJoinStreaming", &status)),
            };
            // Drain the stream: logs may follow the result.
            while let Some(message) = stream.next().await {
                match message {
                    Ok(message) => {
                        for log in &message.task_logs {
                            append_tail(&mut log_tail, &log.data);
                        }
                        if !message.entry_id.is_empty() {
                            last_entry_id = message.entry_id;
                        }
                        if let Some(r) = message.result.filter(|r| r.status != status::PENDING) {
                            result = Some(r);
                        }
                    }
                    Err(status) if is_transient(status.code()) && stream_errors < 2 => {
                        stream_errors += 1;
                        break;
                    }
                    Err(status) => return Err(ModalError::rpc("ImageJoinStreaming", &status)),
                }
            }
        }
        let result = result.unwrap_or_default();
        if result.status == status::SUCCESS {
            return Ok(image_id);
        }
        let mut reason = format!("the image build {}", status::describe(result.status));
        if !result.exception.is_empty() {
            reason.push_str(&format!(": {}", result.exception.trim()));
        }
        if !log_tail.trim().is_empty() {
            reason.push_str(&format!("\nlast build output:\n{}", log_tail.trim_end()));
        }
        Err(ModalError::Image {
            image: tag.to_string(),
            reason,
        })
    }

    /// Creates a sandbox (it starts asynchronously); its id.
    pub async fn create_sandbox(
        &self,
        app_id: &str,
        definition: &SandboxDefinition,
    ) -> Result<String, ModalError> {
        let network = if definition.block_network {
            pb::network_access::NetworkAccessType::Blocked
        } else {
            pb::network_access::NetworkAccessType::Open
        };
        let request = pb::SandboxCreateRequest {
            app_id: app_id.to_string(),
            definition: Some(pb::Sandbox {
                entrypoint_args: definition.entrypoint_args.clone(),
                image_id: definition.image_id.clone(),
                resources: Some(pb::Resources {
                    milli_cpu: (definition.cpus * 1000.0).round() as u32,
                    memory_mb: definition.memory_mib,
                    ..Default::default()
                }),
                timeout_secs: definition.timeout_secs,
                workdir: Some(definition.workdir.clone()),
                network_access: Some(pb::NetworkAccess {
                    network_access_type: network as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            tags: definition
                .tags
                .iter()
                .map(|(name, value)| pb::SandboxTag {
                    tag_name: name.clone(),
                    tag_value: value.clone(),
                })
                .collect(),
            ..Default::default()
        };
        let reply = self
            .unary("SandboxCreate", move |mut api, key| {
                let request = keyed(request.clone(), &key);
                async move { api.sandbox_create(request).await }
            })
            .await?;
        Ok(reply.sandbox_id)
    }

    /// The sandbox's task id once it is scheduled; an error if it ended first or `wait` passed.
    pub async fn task_id(&self, sandbox_id: &str, wait: Duration) -> Result<String, ModalError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let request = pb::SandboxGetTaskIdRequest {
                sandbox_id: sandbox_id.to_string(),
                timeout: Some(10.0),
                wait_until_ready: false,
            };
            let reply = self
                .unary("SandboxGetTaskId", move |mut api, key| {
                    let request = keyed(request.clone(), &key);
                    async move { api.sandbox_get_task_id(request).await }
                })
                .await?;
            match (reply.task_id.filter(|t| !t.is_empty()), reply.task_result) {
                (Some(task_id), _) => return Ok(task_id),
                (None, Some(result)) => {
                    return Err(ModalError::Sandbox {
                        id: sandbox_id.to_string(),
                        reason: format!(
                            "it {} before it started{}",
                            status::describe(result.status),
                            if result.exception.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", result.exception)
                            }
                        ),
                    })
                }
                (None, None) if tokio::time::Instant::now() >= deadline => {
                    return Err(ModalError::Sandbox {
                        id: sandbox_id.to_string(),
                        reason: format!("not scheduled within {} s", wait.as_secs()),
                    })
                }
                (None, None) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// The URL and token of the task's command router.
    pub async fn router_access(&self, task_id: &str) -> Result<(String, String), ModalError> {
        let request = pb::TaskGetCommandRouterAccessRequest {
            task_id: task_id.to_string(),
        };
        let reply = self
            .unary("TaskGetCommandRouterAccess", move |mut api, key| {
                let request = keyed(request.clone(), &key);
                async move { api.task_get_command_router_access(request).await }
            })
            .await?;
        Ok((reply.url, reply.jwt))
    }

    /// How the sandbox ended, if it did within `timeout` (0: just look).
    pub async fn sandbox_result(
        &self,
        sandbox_id: &str,
        timeout: Duration,
    ) -> Result<Option<pb::GenericResult>, ModalError> {
        let request = pb::SandboxWaitRequest {
            sandbox_id: sandbox_id.to_string(),
            timeout: timeout.as_secs_f32(),
        };
        let reply = self
            .unary("SandboxWait", move |mut api, key| {
                let request = keyed(request.clone(), &key);
                async move { api.sandbox_wait(request).await }
            })
            .await?;
        Ok(reply.result.filter(|r| r.status != status::PENDING))
    }

    /// Terminates a sandbox; one already gone is fine.
    pub async fn terminate(&self, sandbox_id: &str) -> Result<(), ModalError> {
        let request = pb::SandboxTerminateRequest {
            sandbox_id: sandbox_id.to_string(),
        };
        match self
            .unary("SandboxTerminate", move |mut api, key| {
                let request = keyed(request.clone(), &key);
                async move { api.sandbox_terminate(request).await }
            })
            .await
        {
            Err(e) if e.is_gone() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The app's running sandboxes carrying at least `tags`, every page.
    pub async fn list(&self, app_id: &str, tags: &Tags) -> Result<Vec<ListedSandbox>, ModalError> {
        let mut listed = Vec::new();
        let mut before = 0.0;
        loop {
            let request = pb::SandboxListRequest {
                app_id: app_id.to_string(),
                before_timestamp: before,
                environment_name: self.config.environment.clone(),
                include_finished: false,
                tags: tags
                    .iter()
                    .map(|(name, value)| pb::SandboxTag {
                        tag_name: name.clone(),
                        tag_value: value.clone(),
                    })
                    .collect(),
            };
            let page = self
                .unary("SandboxList", move |mut api, key| {
                    let request = keyed(request.clone(), &key);
                    async move { api.sandbox_list(request).await }
                })
                .await?;
            let Some(last) = page.sandboxes.last() else {
                return Ok(listed);
            };
            if before != 0.0 && last.created_at >= before {
                // A server that ignores the cursor would page forever.
                return Ok(listed);
            }
            before = last.created_at;
            for info in page.sandboxes {
                listed.push(ListedSandbox {
                    ended: info
                        .task_info
                        .and_then(|t| t.result)
                        .map(|r| r.status)
                        .filter(|s| *s != status::PENDING),
                    tags: info
                        .tags
                        .into_iter()
                        .map(|t| (t.tag_name, t.tag_value))
                        .collect(),
                    id: info.id,
                });
            }
        }
    }
}

/// Keeps the last 4 KiB of a build's log.
fn append_tail(tail: &mut String, data: &str) {
    const KEEP: usize = 4096;
    tail.push_str(data);
    if tail.len() > KEEP {
        let mut cut = tail.len() - KEEP;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1
                .as_deref()
                .map(|l| l as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let refused = Layer("Connection refused (os error 111)", None);
        let tcp = Layer(
            "tcp connect error: Connection refused (os error 111)",
            Some(Box::new(refused)),
        );
        let e = Layer("transport error", Some(Box::new(tcp)));
        assert_eq!(
            error_chain(&e),
            "transport error: tcp connect error: Connection refused (os error 111)"
        );
    }
}
