//! A container whose main process runs one command, given once the container is up, as
//! `docker run IMAGE COMMAND` would run it (pid 1, stdout and stderr merged): started ahead
//! (the start is the slow part), it waits on its stdin for the command's last arguments, and
//! the container ends with the command. No exec per run, and an exited container is removed
//! for a fraction of what a running one costs.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{capture, BindMount, Captured, Container, ContainerSpec};
use crate::exec::ExecOutput;
use crate::{DockerError, Engine};

/// Reads the arguments line, then runs `$@` with them in `$0` (the working directory).
const ONE_SHOT: &str = r#"IFS= read -r line || exit 97
cd "$0" || exit 98
exec "$@" $line 2>&1"#;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// A started container waiting for its command's arguments.
pub struct OneShot {
    container: Container,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Output,
}

impl Container {
    /// Starts a container from `spec` that will run `command` (plus the arguments `OneShot::run`
    /// gives) in `workdir`.
    pub async fn start_one_shot(
        engine: &Arc<Engine>,
        spec: &ContainerSpec,
        command: &[String],
        workdir: &str,
    ) -> Result<OneShot, DockerError> {
        let mut main = vec![
            "sh".to_string(),
            "-c".to_string(),
            ONE_SHOT.to_string(),
            workdir.to_string(),
        ];
        main.extend(command.iter().cloned());
        let container = Container::create(engine, spec, &[] as &[BindMount], main, true).await?;
        // Attached before it starts, so nothing it prints is missed.
        let attached = engine
            .api()
            .attach_container(
                &container.id,
                Some(
                    bollard::query_parameters::AttachContainerOptionsBuilder::default()
                        .stream(true)
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .build(),
                ),
            )
            .await
            .map_err(DockerError::api(format!(
                "attaching to a container from {}",
                spec.image
            )))?;
        container.start_created(&spec.image).await?;
        Ok(OneShot {
            container,
            input: attached.input,
            output: attached.output,
        })
    }
}

impl OneShot {
    /// The container (to copy files in before `run`, or to remove it).
    pub fn container(&self) -> &Container {
        &self.container
    }

    /// Runs the command with `args` appended (plain words: letters, digits, `.`, `_`, `-`),
    /// its output capped at `cap` bytes, the whole container killed past `timeout`. The
    /// container is handed back to be removed.
    pub async fn run(
        self,
        args: &[String],
        timeout: Duration,
        cap: usize,
    ) -> Result<(Container, ExecOutput), DockerError> {
        let OneShot {
            container,
            mut input,
            mut output,
        } = self;
        if let Some(bad) = args.iter().find(|a| {
            a.is_empty()
                || !a
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        }) {
            return Err(DockerError::Other(format!(
                "a one-shot container's argument must be a plain word, not `{bad}`"
            )));
        }
        let line = format!("{}\n", args.join(" "));
        let sent = async {
            input.write_all(line.as_bytes()).await?;
            input.flush().await?;
            input.shutdown().await
        }
        .await;
        sent.map_err(|e| DockerError::Other(format!("starting the command: {e}")))?;
        drop(input);
        let Captured {
            bytes: captured,
            truncated,
            timed_out,
        } = capture(&mut output, timeout, cap, || async {
            if let Err(e) = container.kill().await {
                tracing::warn!("killing timed-out container {}: {e}", container.id);
            }
        })
        .await?;
        let exit_code = if timed_out {
            -1
        } else {
            exit_code(&container).await?
        };
        Ok((
            container,
            ExecOutput {
                exit_code,
                output: String::from_utf8_lossy(&captured).into_owned(),
                timed_out,
                truncated,
            },
        ))
    }
}

/// The exit code of a container whose main process ended.
async fn exit_code(container: &Container) -> Result<i32, DockerError> {
    let mut waiting = container.engine.api().wait_container(&container.id, None);
    match waiting.next().await {
        Some(Ok(answer)) => Ok(answer.status_code as i32),
        // The client reports a non-zero exit as an error carrying the code.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code as i32),
        Some(Err(e)) => Err(DockerError::api("waiting for a container")(e)),
        None => Err(DockerError::Other(
            "the engine said nothing of how the container ended".into(),
        )),
    }
}
