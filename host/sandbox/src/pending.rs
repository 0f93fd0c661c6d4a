//! A sandbox that is still starting: handed to the agent at once, so its plugin instantiates
//! and its first model request goes out while the container starts; every call waits for the
//! start, and a failed start fails every call with the start's error.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::Instrument;

use super::patch::{PatchError, SnapshotWriter};
use super::{ExecOutput, Sandbox, SandboxError};

type Started = Option<Result<Arc<dyn Sandbox>, String>>;

/// The receiving side: what the agent holds.
pub struct PendingSandbox {
    started: watch::Receiver<Started>,
}

/// The starting side: filled once by whoever starts the sandbox.
pub struct SandboxStart {
    tx: watch::Sender<Started>,
}

/// A sandbox to be started, and the handle that delivers it.
pub fn pending() -> (SandboxStart, Arc<PendingSandbox>) {
    let (tx, rx) = watch::channel(None);
    (
        SandboxStart { tx },
        Arc::new(PendingSandbox { started: rx }),
    )
}

impl SandboxStart {
    /// Delivers the started sandbox (or why it could not start) to every waiting call.
    pub fn finish(self, started: Result<Arc<dyn Sandbox>, String>) {
        self.tx.send_replace(Some(started));
    }
}

impl PendingSandbox {
    /// Waits until the start ended (started or failed).
    pub async fn wait_started(&self) {
        let mut rx = self.started.clone();
        let _ = rx.wait_for(Option::is_some).await;
    }

    async fn ready(&self) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let mut rx = self.started.clone();
        let started = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| SandboxError::Command("the sandbox was never started".into()))?;
        match started.as_ref() {
            Some(Ok(sandbox)) => Ok(sandbox.clone()),
            Some(Err(why)) => Err(SandboxError::Command(why.clone())),
            None => Err(SandboxError::Command(
                "the sandbox was never started".into(),
            )),
        }
    }
}

#[async_trait]
impl Sandbox for PendingSandbox {
    async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SandboxError> {
        let ready = self
            .ready()
            .instrument(tracing::info_span!("sandbox_wait"))
            .await?;
        ready.exec(command, timeout).await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        self.ready().await?.read_file(path).await
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        self.ready().await?.write_file(path, contents).await
    }

    async fn snapshot(&self, writer: SnapshotWriter) -> Result<(), PatchError> {
        self.ready().await?.snapshot(writer).await
    }

    async fn stop_commands(&self) {
        let started = match self.started.borrow().as_ref() {
            Some(Ok(sandbox)) => sandbox.clone(),
            _ => return,
        };
        started.stop_commands().await
    }

    async fn close(&self) -> Result<(), SandboxError> {
        let started = match self.started.borrow().as_ref() {
            Some(Ok(sandbox)) => sandbox.clone(),
            _ => return Ok(()),
        };
        started.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    #[async_trait]
    impl Sandbox for Echo {
        async fn exec(&self, command: &str, _: Duration) -> Result<ExecOutput, SandboxError> {
            Ok(ExecOutput {
                exit_code: 0,
                output: command.to_string(),
                timed_out: false,
                truncated: false,
            })
        }
        async fn read_file(&self, _: &str) -> Result<Vec<u8>, SandboxError> {
            Ok(Vec::new())
        }
        async fn write_file(&self, _: &str, _: &[u8]) -> Result<(), SandboxError> {
            Ok(())
        }
        async fn snapshot(&self, _: SnapshotWriter) -> Result<(), PatchError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_call_waits_for_the_start_and_a_failed_start_fails_every_call() {
        let (start, sandbox) = pending();
        let call = tokio::spawn({
            let sandbox = sandbox.clone();
            async move { sandbox.exec("echo hi", Duration::from_secs(1)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!call.is_finished(), "the call did not wait for the start");
        start.finish(Ok(Arc::new(Echo)));
        assert_eq!(call.await.unwrap().unwrap().output, "echo hi");

        let (start, sandbox) = pending();
        start.finish(Err("creating the container: no space left".into()));
        let err = sandbox.read_file("x").await.unwrap_err().to_string();
        assert!(err.contains("no space left"), "{err}");
        sandbox
            .close()
            .await
            .expect("closing a failed start is a no-op");

        let (start, sandbox) = pending();
        drop(start);
        assert!(sandbox.read_file("x").await.is_err());
    }
}
