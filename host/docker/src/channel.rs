//! One exec channel per agent container: the shell server of `cbench_core::channel` started by
//! a single `docker exec` at sandbox start and fed over its attached stdin/stdout, so a command
//! costs a write and a read on an open connection instead of an exec's
//! create/start/attach/inspect round trips. Nothing of ours is installed in the image: the loop
//! travels as an argument. A timeout kills the command's group with a separate exec. If the
//! channel dies, the sandbox falls back to one exec per command and says so once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use cbench_core::channel::{
    broken, send_flushed, Channel, ChannelBroken, Sealed, Transport, CHANNEL_BOOT, CHANNEL_SERVER,
};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWrite;

use super::container::Shell;
use super::{DockerError, Engine};
use crate::exec::ExecOutput;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// An open channel into one container. One command at a time (callers hold it exclusively).
pub struct ExecChannel {
    channel: Channel<DockerTransport>,
}

/// The attached exec's streams, and how to reach the container for a kill.
struct DockerTransport {
    engine: Arc<Engine>,
    container: String,
    input: Input,
    output: Output,
}

impl ExecChannel {
    /// Starts the server in `container` (working dir `workdir`, extra `env`) and waits for its
    /// hello.
    pub async fn open(
        engine: &Arc<Engine>,
        container: &str,
        workdir: &str,
        env: &[String],
    ) -> Result<ExecChannel, ChannelBroken> {
        let api = engine.api();
        let exec = api
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(vec![
                        "sh".to_string(),
                        "-c".to_string(),
                        CHANNEL_BOOT.to_string(),
                        "cbench-channel-boot".to_string(),
                        CHANNEL_SERVER.to_string(),
                    ]),
                    env: Some(env.to_vec()),
                    working_dir: Some(workdir.to_string()),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| broken(format!("creating the exec: {e}")))?;
        let StartExecResults::Attached { output, input } = api
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| broken(format!("starting the exec: {e}")))?
        else {
            return Err(broken("the exec started detached"));
        };
        let transport = DockerTransport {
            engine: engine.clone(),
            container: container.to_string(),
            input,
            output,
        };
        let (channel, sealed) = Channel::open(transport).await?;
        if sealed == Sealed::No {
            tracing::warn!(
                "container {container}: the exec channel could not copy bash into /tmp/cbench; \
                 its descriptors are reachable through /proc by the agent's commands"
            );
        }
        Ok(ExecChannel { channel })
    }

    /// Runs `script` like `Container::run_script` does, over the channel.
    pub async fn run(
        &mut self,
        script: &str,
        shell: Shell,
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, ChannelBroken> {
        self.channel.run(script, shell, timeout, cap).await
    }
}

#[async_trait::async_trait]
impl Transport for DockerTransport {
    /// Reads the exec's stdout; stderr is the server's own (bash errors), which only matter
    /// when it dies.
    async fn read_more(&mut self, buffer: &mut Vec<u8>) -> Result<(), ChannelBroken> {
        loop {
            match self.output.next().await {
                Some(Ok(LogOutput::StdOut { message })) => {
                    buffer.extend_from_slice(&message);
                    return Ok(());
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    tracing::debug!(
                        "exec channel stderr in {}: {}",
                        self.container,
                        String::from_utf8_lossy(&message).trim()
                    );
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(broken(format!("reading: {e}"))),
                None => return Err(broken("the channel closed")),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ChannelBroken> {
        send_flushed(&mut self.input, bytes).await
    }

    async fn kill(&mut self, id: u64) {
        kill(self.engine.clone(), self.container.clone(), id).await;
    }
}

/// Kills the process group of command `id` (the server wrote `<id> <pgid>` when it started it)
/// with a plain exec; a stale record of another command is left alone.
async fn kill(engine: Arc<Engine>, container: String, id: u64) {
    let api = engine.api();
    let result: Result<(), DockerError> = async {
        let exec = api
            .create_exec(
                &container,
                CreateExecOptions {
                    cmd: Some(vec![
                        "sh".to_string(),
                        "-c".to_string(),
                        r#"read -r i g < /tmp/cbench/channel.pid && [ "$i" = "$1" ] && kill -9 "-$g" 2>/dev/null; true"#
                            .to_string(),
                        "cbench-kill".to_string(),
                        id.to_string(),
                    ]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(DockerError::api("creating the kill exec"))?;
        if let StartExecResults::Attached { mut output, .. } = api
            .start_exec(&exec.id, None)
            .await
            .map_err(DockerError::api("starting the kill exec"))?
        {
            while output.next().await.is_some() {}
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!("could not kill a timed-out command in {container}: {e}");
    }
}
