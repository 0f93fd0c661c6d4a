//! One exec channel per agent container: a bash loop started by a single `docker exec` at
//! sandbox start and fed over its attached stdin/stdout, so a command costs a write and a read
//! on an open connection instead of an exec's create/start/attach/inspect round trips. Nothing
//! of ours is installed in the image: the loop travels as an argument.
//!
//! Protocol (text headers, length-prefixed bodies, so binary output survives):
//! - server → host once: `CBENCH-CHANNEL 2 sealed|unsealed\n`
//! - host → server: `REQ <id> <login|plain> <cap> <lines>\n` then the script, `<lines>` lines
//! - server → host: `RES <id> <exit code> <output size>\n` then `min(size, cap)` output bytes
//!
//! Each command runs as a plain exec's does (a fresh `bash -l` in its own session, group kill,
//! sweep of escaped processes — sparing the channel itself), with stdout+stderr merged into a
//! file in the container; a timeout kills the command's group with a separate exec. The next
//! command's login shell is started ahead (see `CHANNEL_SERVER`). If the channel dies, the
//! sandbox falls back to one exec per command and says so once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::container::Shell;
use super::{DockerError, Engine};
use crate::exec::ExecOutput;

/// The server loop. Each command runs in a fresh `bash -l` in its own session, as a plain exec's
/// does; the login shell of the *next* command is started as soon as the previous one is
/// answered, runs its profile while the agent waits for its model, then blocks reading a go
/// from a pipe only the server holds (fd 5, its path unlinked) before it sources the script, so
/// a command's round trip starts no process. When a command ends its group is killed and every
/// other process but init and the server is swept (nothing a command starts outlives it or is
/// alive between commands to tamper with the next one), whatever a command wrote into the pipe
/// is drained, and the scratch files are made plain files again (a command may have replaced
/// them with links) before the next shell opens them. A command gets neither the protocol
/// descriptor nor the server's stdin. The container's keep-alive `sleep` (a child of init when
/// the channel starts, before any command ran) is spared: killing it makes init start another
/// one during every sweep.
const CHANNEL_SERVER: &str = r#"exec 3>&1 1>/dev/null
d=/tmp/cbench s=/tmp/cbench/channel.sh o=/tmp/cbench/channel.out p=/tmp/cbench/channel.pid
w=
ready() {
  if [ -L "$d" ] || [ ! -d "$d" ]; then rm -rf "$d"; mkdir -p "$d"; fi
  for x in "$s" "$o" "$p"; do
    if [ -L "$x" ] || { [ -e "$x" ] && [ ! -f "$x" ]; }; then rm -rf "$x"; fi
  done
}
launch() {
  if [ "$1" = ahead ]; then
    setsid bash -l -c "export PATH=\"\${CBENCH_IMAGE_PATH:+\$CBENCH_IMAGE_PATH:}\$PATH\"; IFS= read -r -u 5 __cbench_go; exec 5<&-; unset __cbench_go; . \"\$0\"" "$s" </dev/null >"$o" 2>&1 3>&- &
  elif [ "$1" = login ]; then
    setsid bash -l -c "export PATH=\"\${CBENCH_IMAGE_PATH:+\$CBENCH_IMAGE_PATH:}\$PATH\"; . \"\$0\"" "$s" </dev/null >"$o" 2>&1 3>&- 5<&- &
  else
    setsid bash "$s" </dev/null >"$o" 2>&1 3>&- 5<&- &
  fi
  w=$!
}
alive() {
  st=
  { read -r st < "/proc/$w/stat"; } 2>/dev/null
  st="${st##*) }"
  case "$st" in R*|S*|D*) return 0 ;; esac
  return 1
}
mkdir -p "$d" && rm -f "$d/channel.fifo" && mkfifo -m 600 "$d/channel.fifo" && exec 5<>"$d/channel.fifo" && rm -f "$d/channel.fifo" || { echo "ERR no pipe" >&3; exit 1; }
seal=$1
keep=
for x in /proc/[0-9]*; do
  q="${x#/proc/}"
  [ "$q" = 1 ] || [ "$q" = "$$" ] && continue
  { read -r st < "$x/stat"; } 2>/dev/null || continue
  set -- ${st##*) }
  [ "$2" = 1 ] && keep="$keep $q "
done
ready
launch ahead
echo "CBENCH-CHANNEL 2 $seal" >&3
while IFS=' ' read -r tag id mode cap lines; do
  [ "$tag" = REQ ] || { echo "ERR unexpected frame" >&3; exit 1; }
  n=0
  while [ "$n" -lt "$lines" ]; do
    IFS= read -r line || { echo "ERR short request" >&3; exit 1; }
    printf '%s\n' "$line"
    n=$((n + 1))
  done > "$s"
  if [ "$mode" = login ] && [ -n "$w" ] && alive; then
    echo "$id $w" > "$p"
    echo go >&5
  else
    if [ -n "$w" ]; then kill -9 "$w" 2>/dev/null; wait "$w" 2>/dev/null; fi
    launch "$mode"
    echo "$id $w" > "$p"
  fi
  wait "$w"
  code=$?
  kill -9 "-$w" 2>/dev/null
  k=0
  while [ "$k" -lt 100 ]; do
    left=
    for x in /proc/[0-9]*; do
      q="${x#/proc/}"
      [ "$q" = 1 ] || [ "$q" = "$$" ] || [ ! -r "$x/stat" ] && continue
      case "$keep" in *" $q "*) continue ;; esac
      { read -r st < "$x/stat"; } 2>/dev/null || continue
      case "${st##*) }" in Z*) continue ;; esac
      kill -9 "$q" 2>/dev/null && left=1
    done
    [ -z "$left" ] && break
    k=$((k + 1))
  done
  w=
  while read -r -t 0 -u 5; do read -r -t 0.01 -u 5 -N 4096 _; done
  size=0
  [ -s "$o" ] && size=$(( $(wc -c < "$o") ))
  echo "RES $id $code $size" >&3
  if [ "$size" -gt 0 ]; then
    if [ "$size" -le "$cap" ]; then cat "$o" >&3; else head -c "$cap" "$o" >&3; fi
  fi
  ready
  launch ahead
done"#;

/// Starts the server from an execute-only copy of bash. A process that executes a file it
/// cannot read is not dumpable, so commands (root in the container, but without
/// CAP_SYS_PTRACE or CAP_DAC_OVERRIDE) cannot open the server's descriptors through
/// `/proc/<pid>/fd` to inject requests or forge answers; its children exec readable binaries
/// and are ordinary processes again. Where the copy cannot be made, the server runs unsealed.
const CHANNEL_BOOT: &str = r#"b=/tmp/cbench/channel-bash
mkdir -p /tmp/cbench && rm -f "$b" && cp "$(command -v bash)" "$b" && chmod 0111 "$b" && exec "$b" -c "$1" cbench-channel sealed
exec bash -c "$1" cbench-channel unsealed"#;

/// How long the channel may take to say hello before the sandbox uses plain execs.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer's output may take to arrive after its header.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest header line the server sends (`RES <id> <code> <size>` is far shorter).
const MAX_HEADER: usize = 256;
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
        match hello.strip_prefix("CBENCH-CHANNEL 2 ") {
            Some("sealed") => {}
            Some("unsealed") => tracing::warn!(
                "container {container}: the exec channel could not copy bash into /tmp/cbench; \
                 its descriptors are reachable through /proc by the agent's commands"
            ),
            _ => return Err(broken(format!("unexpected hello `{hello}`"))),
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

    /// One header line; a longer "line" means something else wrote into the channel's
    /// descriptor (a command can reach it through `/proc`), so the channel is given up rather
    /// than buffering without bound.
    async fn read_line(&mut self) -> Result<String, ChannelBroken> {
        loop {
            let window = &self.buffer[..self.buffer.len().min(MAX_HEADER)];
            if let Some(end) = window.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if self.buffer.len() >= MAX_HEADER {
                return Err(broken(format!(
                    "no frame header in the first {MAX_HEADER} bytes (something else wrote into the channel)"
                )));
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
        // Nothing writes the output file once the command's processes are swept, so the body
        // follows at once; a stalled one means a broken channel, not a slow command.
        let output = tokio::time::timeout(BODY_TIMEOUT, self.read_exact(size.min(cap)))
            .await
            .map_err(|_| broken("the output did not follow its header"))??;
        Ok(ExecOutput {
            exit_code: if timed_out { -1 } else { code },
            output: String::from_utf8_lossy(&output).into_owned(),
            timed_out,
            truncated: size > cap,
        })
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
