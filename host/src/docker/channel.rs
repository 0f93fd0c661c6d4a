//! One exec channel per agent container: a bash loop started by a single `docker exec` at
//! sandbox start and fed over its attached stdin/stdout, so a command costs a write and a read
//! on an open connection instead of an exec's create/start/attach/inspect round trips. Nothing
//! of ours is installed in the image: the loop and the per-command wrapper travel as arguments.
//!
//! Protocol (text headers, length-prefixed bodies, so binary output survives):
//! - server → host once: `CBENCH-CHANNEL 1\n`
//! - host → server: `REQ <id> <login|plain> <cap> <lines>\n` then the script, `<lines>` lines
//! - server → host: `RES <id> <exit code> <output size>\n` then `min(size, cap)` output bytes
//!
//! Each command runs through the same wrapper as a plain exec (own session, group kill, sweep
//! of escaped processes — sparing the channel itself), with stdout+stderr merged into a file in
//! the container; a timeout kills the command's group with a separate exec, as before. If the
//! channel dies, the sandbox falls back to one exec per command and says so once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::container::{Shell, EXEC_WRAPPER};
use super::{DockerError, Engine};
use crate::sandbox::ExecOutput;

/// The server loop. `$1` is the wrapper's text (kept in the server's own arguments, where no
/// command can change it).
const CHANNEL_SERVER: &str = r#"exec 3>&1 1>/dev/null
o=/tmp/cbench/channel.out
echo "CBENCH-CHANNEL 1" >&3
while IFS=' ' read -r tag id mode cap lines; do
  [ "$tag" = REQ ] || { echo "ERR unexpected frame" >&3; exit 1; }
  [ -d /tmp/cbench ] || mkdir -p /tmp/cbench
  s="/tmp/cbench/ch-$id.sh"
  n=0
  while [ "$n" -lt "$lines" ]; do
    IFS= read -r line || { echo "ERR short request" >&3; exit 1; }
    printf '%s\n' "$line"
    n=$((n + 1))
  done > "$s"
  CBENCH_KEEP_PID=$$ sh -c "$1" cbench-exec "$s" "$mode" uploaded > "$o" 2>&1 < /dev/null 3>&-
  code=$?
  size=$(( $(wc -c < "$o") ))
  echo "RES $id $code $size" >&3
  if [ "$size" -le "$cap" ]; then cat "$o" >&3; else head -c "$cap" "$o" >&3; fi
done"#;

/// How long the channel may take to say hello before the sandbox uses plain execs.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the answer once a timed-out command's group was killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// Why the channel stopped working (the sandbox then uses plain execs).
#[derive(Debug, thiserror::Error)]
#[error("exec channel: {reason}")]
pub struct ChannelBroken {
    pub reason: String,
    /// The command reached the container (it may have run): it must not be run again.
    pub sent: bool,
}

fn broken(reason: impl Into<String>) -> ChannelBroken {
    ChannelBroken {
        reason: reason.into(),
        sent: false,
    }
}

/// An open channel into one container. One command at a time (callers hold it exclusively).
pub struct ExecChannel {
    engine: Arc<Engine>,
    container: String,
    input: Input,
    output: Output,
    buffer: Vec<u8>,
    next_id: u64,
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
                        "bash".to_string(),
                        "-c".to_string(),
                        CHANNEL_SERVER.to_string(),
                        "cbench-channel".to_string(),
                        EXEC_WRAPPER.to_string(),
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
        let mut channel = ExecChannel {
            engine: engine.clone(),
            container: container.to_string(),
            input,
            output,
            buffer: Vec::new(),
            next_id: 0,
        };
        let hello = tokio::time::timeout(HELLO_TIMEOUT, channel.read_line())
            .await
            .map_err(|_| broken("no hello within 10 s"))??;
        if hello != "CBENCH-CHANNEL 1" {
            return Err(broken(format!("unexpected hello `{hello}`")));
        }
        Ok(channel)
    }

    /// Reads more bytes from the exec's stdout into the buffer; stderr is the server's own
    /// (bash errors), which only matter when it dies.
    async fn fill(&mut self) -> Result<(), ChannelBroken> {
        loop {
            match self.output.next().await {
                Some(Ok(LogOutput::StdOut { message })) => {
                    self.buffer.extend_from_slice(&message);
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

    async fn read_line(&mut self) -> Result<String, ChannelBroken> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            self.fill().await?;
        }
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, ChannelBroken> {
        while self.buffer.len() < n {
            self.fill().await?;
        }
        Ok(self.buffer.drain(..n).collect())
    }

    /// Runs `script` like `Container::run_script` does, over the channel.
    pub async fn run(
        &mut self,
        script: &str,
        shell: Shell,
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, ChannelBroken> {
        self.next_id += 1;
        let id = self.next_id;
        let mut body = script.to_string();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        let lines = body.matches('\n').count();
        let mode = match shell {
            Shell::Login => "login",
            Shell::Plain => "plain",
        };
        let request = format!("REQ {id} {mode} {cap} {lines}\n{body}");
        self.input
            .write_all(request.as_bytes())
            .await
            .map_err(|e| broken(format!("writing: {e}")))?;
        self.input
            .flush()
            .await
            .map_err(|e| broken(format!("writing: {e}")))?;
        self.answer(id, timeout, cap).await.map_err(|mut e| {
            e.sent = true;
            e
        })
    }

    /// Reads the answer to command `id`, killing it at its deadline.
    async fn answer(
        &mut self,
        id: u64,
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, ChannelBroken> {
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let header = loop {
            let limit = if timed_out {
                Instant::now() + KILL_GRACE
            } else {
                deadline
            };
            match tokio::time::timeout_at(limit.into(), self.read_line()).await {
                Ok(line) => break line?,
                Err(_) if timed_out => {
                    return Err(broken("no answer after killing a timed-out command"))
                }
                Err(_) => {
                    timed_out = true;
                    kill(self.engine.clone(), self.container.clone(), id).await;
                }
            }
        };
        let fields: Vec<&str> = header.split(' ').collect();
        let (code, size) = match fields.as_slice() {
            ["RES", got, code, size] if *got == id.to_string() => (
                code.parse::<i32>()
                    .map_err(|_| broken(format!("bad exit code in `{header}`")))?,
                size.parse::<usize>()
                    .map_err(|_| broken(format!("bad size in `{header}`")))?,
            ),
            _ => return Err(broken(format!("unexpected answer `{header}`"))),
        };
        let output = self.read_exact(size.min(cap)).await?;
        Ok(ExecOutput {
            exit_code: if timed_out { -1 } else { code },
            output: String::from_utf8_lossy(&output).into_owned(),
            timed_out,
            truncated: size > cap,
        })
    }
}

/// Kills the process group of command `id` (its wrapper wrote the pgid) with a plain exec.
async fn kill(engine: Arc<Engine>, container: String, id: u64) {
    let pidfile = format!("/tmp/cbench/ch-{id}.sh.pid");
    let api = engine.api();
    let result: Result<(), DockerError> = async {
        let exec = api
            .create_exec(
                &container,
                CreateExecOptions {
                    cmd: Some(vec![
                        "sh".to_string(),
                        "-c".to_string(),
                        r#"pid=$(cat "$1" 2>/dev/null) && kill -9 "-$pid" 2>/dev/null; true"#
                            .to_string(),
                        "cbench-kill".to_string(),
                        pidfile,
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
