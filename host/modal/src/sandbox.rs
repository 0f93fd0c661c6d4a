//! One Modal sandbox: created from an image with cbench's tags, its task and command router
//! found, commands run through the router, terminated on every exit path (explicitly, or in
//! the background when dropped; the run's tags let `cbench cleanup` find what a crash left).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::client::{status, ModalClient, SandboxDefinition};
use crate::error::ModalError;
use crate::router::{CommandRouter, ExecReply, ExecRequest};

/// A running sandbox.
pub struct RemoteSandbox {
    client: Arc<ModalClient>,
    id: String,
    router: CommandRouter,
    terminated: AtomicBool,
}

impl RemoteSandbox {
    /// Creates a sandbox in `app_id` and waits (at most `start_wait`) until commands can run;
    /// a sandbox that cannot start is terminated before the error returns.
    pub async fn create(
        client: Arc<ModalClient>,
        app_id: &str,
        definition: &SandboxDefinition,
        start_wait: Duration,
    ) -> Result<RemoteSandbox, ModalError> {
        let id = client.create_sandbox(app_id, definition).await?;
        let started = async {
            let task_id = client.task_id(&id, start_wait).await?;
            CommandRouter::connect(client.clone(), &task_id).await
        }
        .await;
        match started {
            Ok(router) => Ok(RemoteSandbox {
                client,
                id,
                router,
                terminated: AtomicBool::new(false),
            }),
            Err(e) => {
                if let Err(t) = client.terminate(&id).await {
                    tracing::warn!("modal: terminating sandbox {id} that did not start: {t}");
                }
                Err(e)
            }
        }
    }

    /// Modal's id of the sandbox (`sb-…`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs one command (see [`CommandRouter::exec`]). When the call fails because the
    /// sandbox itself ended (killed, evicted, timed out), the error says so.
    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecReply, ModalError> {
        match self.router.exec(request).await {
            Ok(reply) => Ok(reply),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// Replaces `e` by how the sandbox ended, if it has.
    async fn explain(&self, e: ModalError) -> ModalError {
        match self.client.sandbox_result(&self.id, Duration::ZERO).await {
            Ok(Some(result)) => ModalError::Sandbox {
                id: self.id.clone(),
                reason: format!(
                    "it {}{} (while: {e})",
                    status::describe(result.status),
                    if result.exception.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", result.exception.trim())
                    }
                ),
            },
            _ => e,
        }
    }

    /// Terminates the sandbox; idempotent.
    pub async fn terminate(&self) -> Result<(), ModalError> {
        if self.terminated.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.client.terminate(&self.id).await
    }
}

impl Drop for RemoteSandbox {
    fn drop(&mut self) {
        if self.terminated.swap(true, Ordering::SeqCst) {
            return;
        }
        // Dropped on an error path: terminate in the background; the run's tag sweep at
        // exit catches what this misses.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, id) = (self.client.clone(), self.id.clone());
            runtime.spawn(async move {
                if let Err(e) = client.terminate(&id).await {
                    tracing::warn!("modal: terminating dropped sandbox {id}: {e}");
                }
            });
        }
    }
}
