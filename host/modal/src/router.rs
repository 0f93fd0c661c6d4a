//! A sandbox's task command router (`modal.task_command_router.TaskCommandRouter`): commands
//! started by a client-chosen exec id, stdin written by offset, stdout and stderr read as two
//! resumable streams, the exit status awaited (docs/design/cloud-backends.md §C).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::client::{connect_channel, keyed, with_retries, Headers, ModalClient};
use crate::error::{is_transient, ModalError};
use crate::proto::task_command_router as pb;
use crate::proto::task_command_router::task_command_router_client::TaskCommandRouterClient;

type RouterApi = TaskCommandRouterClient<InterceptedService<Channel, Headers>>;

/// Stdin travels in chunks of this size (each one `TaskExecStdinWrite`).
const STDIN_CHUNK: usize = 1 << 20;
/// Reopening a broken output stream: at most this many times in a row (the SDK's limit).
const STREAM_RETRIES: u32 = 10;
/// The router kills a command this long after the caller's own deadline (a backstop: the
/// caller stops waiting at its deadline and kills the command's process group itself).
const SERVER_TIMEOUT_SLACK: Duration = Duration::from_secs(10);
/// One `TaskExecWait` attempt's deadline (the SDK's); it is retried until the command ends.
const WAIT_ATTEMPT: Duration = Duration::from_secs(60);

/// One command to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// argv (no shell).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Absolute; the sandbox's workdir when unset.
    pub workdir: Option<String>,
    pub timeout: Duration,
    /// Bytes for the command's stdin, then end of file; `None`: stdin is never written.
    pub stdin: Option<Vec<u8>>,
    /// At most this many bytes of stdout are kept (the rest is read and dropped).
    pub stdout_cap: usize,
    /// At most this many bytes of stderr are kept.
    pub stderr_cap: usize,
}

/// What one command did.
#[derive(Debug, Clone, Default)]
pub struct ExecReply {
    /// The exit code (a signal `n` is `128 + n`); `None` when the deadline passed first.
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// stdout past its cap was dropped.
    pub stdout_truncated: bool,
    /// stderr past its cap was dropped.
    pub stderr_truncated: bool,
}

/// A connection to one task's command router.
pub struct CommandRouter {
    client: Arc<ModalClient>,
    task_id: String,
    url: String,
    api: tokio::sync::RwLock<RouterApi>,
}

impl CommandRouter {
    /// Asks the control plane for the task's router and connects to it. Plain http is
    /// accepted only when the control plane itself is on loopback (as the SDK rules).
    pub async fn connect(
        client: Arc<ModalClient>,
        task_id: &str,
    ) -> Result<CommandRouter, ModalError> {
        let (url, jwt) = client.router_access(task_id).await?;
        let api = Self::open(&client, &url, &jwt).await?;
        Ok(CommandRouter {
            client,
            task_id: task_id.to_string(),
            url,
            api: tokio::sync::RwLock::new(api),
        })
    }

    async fn open(client: &ModalClient, url: &str, jwt: &str) -> Result<RouterApi, ModalError> {
        let refused = |reason: String| ModalError::Router {
            url: url.to_string(),
            reason,
        };
        let allowed = url.starts_with("https://")
            || (url.starts_with("http://") && cbench_core::net::is_loopback_url(client.url()));
        if !allowed {
            return Err(refused(
                "the router must be https (plain http only with a control plane on loopback)"
                    .into(),
            ));
        }
        // The router sees only the bearer token, never the control plane's credentials.
        let headers = Headers::new(vec![("authorization", format!("Bearer {jwt}"))])?;
        let channel = connect_channel(url).await.map_err(refused)?;
        Ok(TaskCommandRouterClient::with_interceptor(channel, headers)
            .max_decoding_message_size(100 << 20))
    }

    /// Fetches a fresh token (after `UNAUTHENTICATED`) and reconnects.
    async fn refresh(&self) -> Result<(), ModalError> {
        let (url, jwt) = self.client.router_access(&self.task_id).await?;
        if url != self.url {
            tracing::debug!("modal: task {} router moved to {url}", self.task_id);
        }
        *self.api.write().await = Self::open(&self.client, &url, &jwt).await?;
        Ok(())
    }

    fn unauthenticated(&self, status: &tonic::Status) -> ModalError {
        ModalError::Router {
            url: self.url.clone(),
            reason: format!("the router refused its token: {}", status.message()),
        }
    }

    /// A unary router call with the SDK's retries and one token refresh.
    async fn unary<Req: Clone, T, Fut>(
        &self,
        rpc: &'static str,
        request: Req,
        call: impl Fn(RouterApi, tonic::Request<Req>) -> Fut,
    ) -> Result<T, ModalError>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        for refreshed in [false, true] {
            let api = self.api.read().await.clone();
            let result = with_retries(
                rpc,
                &api,
                |api, key| call(api, keyed(request.clone(), &key)),
                |status| self.unauthenticated(status),
            )
            .await;
            match result {
                Err(ModalError::Router { .. }) if !refreshed => self.refresh().await?,
                other => return other,
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Runs one command: starts it, writes its stdin, reads its output until it ends or the
    /// deadline passes (then `exit_code` is `None`; the caller kills what it started).
    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecReply, ModalError> {
        let exec_id = uuid::Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + request.timeout;
        let start = pb::TaskExecStartRequest {
            task_id: self.task_id.clone(),
            exec_id: exec_id.clone(),
            command_args: request.argv.clone(),
            stdout_config: pb::TaskExecStdoutConfig::Pipe as i32,
            stderr_config: pb::TaskExecStderrConfig::Pipe as i32,
            timeout_secs: Some(
                (request.timeout + SERVER_TIMEOUT_SLACK)
                    .as_secs()
                    .min(u32::MAX as u64) as u32,
            ),
            workdir: request.workdir.clone(),
            env: request.env.iter().cloned().collect(),
            ..Default::default()
        };
        // The exec id is the idempotency key: retrying a start never runs the command twice.
        self.unary("TaskExecStart", start, |mut api, start| async move {
            api.task_exec_start(start).await
        })
        .await?;
        if let Some(stdin) = &request.stdin {
            self.write_stdin(&exec_id, stdin).await?;
        }
        let mut reply = ExecReply::default();
        let (mut stdout_truncated, mut stderr_truncated) = (false, false);
        let read_both = async {
            let out = self.read_stream(
                &exec_id,
                pb::TaskExecStdioFileDescriptor::Stdout,
                request.stdout_cap,
                &mut reply.stdout,
                &mut stdout_truncated,
            );
            let err = self.read_stream(
                &exec_id,
                pb::TaskExecStdioFileDescriptor::Stderr,
                request.stderr_cap,
                &mut reply.stderr,
                &mut stderr_truncated,
            );
            let (out, err) = futures_util::join!(out, err);
            out.and(err)
        };
        let finished = match tokio::time::timeout_at(deadline, read_both).await {
            Ok(read) => {
                read?;
                true
            }
            Err(_) => false,
        };
        reply.stdout_truncated = stdout_truncated;
        reply.stderr_truncated = stderr_truncated;
        if finished {
            reply.exit_code = self.wait(&exec_id, deadline).await?;
        }
        Ok(reply)
    }

    async fn write_stdin(&self, exec_id: &str, data: &[u8]) -> Result<(), ModalError> {
        let mut offset = 0usize;
        loop {
            let end = (offset + STDIN_CHUNK).min(data.len());
            let write = pb::TaskExecStdinWriteRequest {
                task_id: self.task_id.clone(),
                exec_id: exec_id.to_string(),
                offset: offset as u64,
                data: data[offset..end].to_vec(),
                eof: end == data.len(),
            };
            self.unary("TaskExecStdinWrite", write, |mut api, write| async move {
                api.task_exec_stdin_write(write).await
            })
            .await?;
            if end == data.len() {
                return Ok(());
            }
            offset = end;
        }
    }

    /// Reads one output stream to its end, reopening it at the byte it broke off.
    async fn read_stream(
        &self,
        exec_id: &str,
        fd: pb::TaskExecStdioFileDescriptor,
        cap: usize,
        kept: &mut Vec<u8>,
        truncated: &mut bool,
    ) -> Result<(), ModalError> {
        let mut offset = 0u64;
        let mut retries = 0;
        let mut refreshed = false;
        let mut backoff = Duration::from_millis(10);
        loop {
            let request = pb::TaskExecStdioReadRequest {
                task_id: self.task_id.clone(),
                exec_id: exec_id.to_string(),
                offset,
                file_descriptor: fd as i32,
            };
            let mut api = self.api.read().await.clone();
            let broken = match api.task_exec_stdio_read(request).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.next().await {
                            None => return Ok(()),
                            Some(Ok(message)) => {
                                if message.data.is_empty() {
                                    return Err(ModalError::Router {
                                        url: self.url.clone(),
                                        reason: "an empty output message (protocol error)".into(),
                                    });
                                }
                                offset += message.data.len() as u64;
                                let room = cap.saturating_sub(kept.len());
                                if message.data.len() > room {
                                    *truncated = true;
                                }
                                kept.extend_from_slice(
                                    &message.data[..message.data.len().min(room)],
                                );
                                retries = 0;
                                backoff = Duration::from_millis(10);
                            }
                            Some(Err(status)) => break status,
                        }
                    }
                }
                Err(status) => status,
            };
            if broken.code() == tonic::Code::Unauthenticated && !refreshed {
                refreshed = true;
                self.refresh().await?;
                continue;
            }
            if !is_transient(broken.code()) || retries >= STREAM_RETRIES {
                return Err(ModalError::rpc("TaskExecStdioRead", &broken));
            }
            retries += 1;
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    /// The command's exit status; `None` if the deadline passes first.
    async fn wait(
        &self,
        exec_id: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<i32>, ModalError> {
        use pb::task_exec_wait_response::ExitStatus;
        loop {
            let request = pb::TaskExecWaitRequest {
                task_id: self.task_id.clone(),
                exec_id: exec_id.to_string(),
            };
            let mut api = self.api.read().await.clone();
            let mut call = tonic::Request::new(request);
            call.set_timeout(WAIT_ATTEMPT);
            let attempt = tokio::time::timeout_at(deadline, api.task_exec_wait(call)).await;
            match attempt {
                Err(_) => return Ok(None),
                Ok(Ok(reply)) => {
                    return match reply.into_inner().exit_status {
                        Some(ExitStatus::Code(code)) => Ok(Some(code)),
                        Some(ExitStatus::Signal(signal)) => Ok(Some(128 + signal)),
                        None => Err(ModalError::Router {
                            url: self.url.clone(),
                            reason: "TaskExecWait answered without an exit status".into(),
                        }),
                    }
                }
                // A hanging call: retried until the command ends or the deadline passes.
                Ok(Err(status)) if is_transient(status.code()) => {
                    tokio::time::sleep(
                        Duration::from_secs(1)
                            .min(deadline.saturating_duration_since(tokio::time::Instant::now())),
                    )
                    .await;
                }
                Ok(Err(status)) if status.code() == tonic::Code::Unauthenticated => {
                    self.refresh().await?
                }
                Ok(Err(status)) => return Err(ModalError::rpc("TaskExecWait", &status)),
            }
        }
    }
}
