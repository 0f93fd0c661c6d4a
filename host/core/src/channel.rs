//! The exec channel's protocol, shared by every backend that keeps one shell server alive per
//! sandbox (a docker container's attached exec, a local sandbox's bubblewrap): the server loop,
//! how it is started sealed, and the host's side of the framing. A backend supplies the
//! transport (bytes in, bytes out, how to kill a command past its deadline).
//!
//! Protocol (text headers, length-prefixed bodies, so binary output survives):
//! - server → host once: `CBENCH-CHANNEL 2 sealed|unsealed\n`
//! - host → server: `REQ <id> <login|plain> <cap> <lines>\n` then the script, `<lines>` lines
//! - server → host: `RES <id> <exit code> <output size>\n` then `min(size, cap)` output bytes;
//!   or, when the request's cap is `-` (a host that can read the sandbox's files itself),
//!   `RES <id> <exit code> @<file>\n`: the output is in `<file>` under `/tmp/cbench`, left alone
//!   until the command after next (two output files alternate).
//!
//! Each command runs in a fresh `bash -l` in its own session, its group killed and every other
//! process of the sandbox but init and the server swept when it ends, with stdout+stderr merged
//! into a file under `/tmp/cbench`. The next command's login shell is started ahead (see
//! `CHANNEL_SERVER`). The sweep assumes the server sees only its sandbox's processes (a
//! container, a PID namespace): never start it where it shares `/proc` with the host.

use std::time::{Duration, Instant};

use crate::exec::{ExecOutput, Shell};

/// The server loop. Each command runs in a fresh `bash -l` in its own session, as a plain exec's
/// does, with SIGINT and SIGQUIT back at their defaults where `env` can (a background job of a
/// shell without job control ignores both for good; job control is no way out: under it, with
/// 100 agents at once, bash 5.2's server once looped forever on `wait_for: No record of
/// process`). The login shell of the *next* command is started as soon as the previous one is
/// answered, runs its profile while the agent waits for its model, then blocks reading a go
/// from a pipe only the server holds (fd 5, its path unlinked) before it sources the script, so
/// a command's round trip starts no process. When a command ends its group is killed and every
/// other process but init and the server is swept (nothing a command starts outlives it or is
/// alive between commands to tamper with the next one), whatever a command wrote into the pipe
/// is drained, and the scratch files are made plain files again (a command may have replaced
/// them with links) before the next shell opens them. A command gets neither the protocol
/// descriptor nor the server's stdin. A container's keep-alive `sleep`, where init has one (a child of init when
/// the channel starts, before any command ran) is spared: killing it makes init start another
/// one during every sweep.
///
/// The server holds each command's output file open (fd 7, shared with the command's stdout
/// and stderr, so its offset counts what the command wrote). An output of up to 64 KiB is sent
/// by bash itself (`mapfile` split at NULs, read through fd 7 whatever the path now names), so
/// the common answer starts no process either; a larger one goes through `wc` and `head`.
pub const CHANNEL_SERVER: &str = r#"exec 3>&1 1>/dev/null
d=/tmp/cbench s=/tmp/cbench/channel.sh o= p=/tmp/cbench/channel.pid
w=
ready() {
  if [ -L "$d" ] || [ ! -d "$d" ]; then rm -rf "$d"; mkdir -p "$d"; fi
  for x in "$s" "$d/channel.out" "$d/channel.out2" "$p"; do
    if [ -L "$x" ] || { [ -e "$x" ] && [ ! -f "$x" ]; }; then rm -rf "$x"; fi
  done
}
launch() {
  if [ "$o" = "$d/channel.out" ]; then o="$d/channel.out2"; else o="$d/channel.out"; fi
  exec 7>"$o"
  if [ "$1" = ahead ]; then
    setsid $ds bash -l -c "export PATH=\"\${CBENCH_IMAGE_PATH:+\$CBENCH_IMAGE_PATH:}\$PATH\"; IFS= read -r -u 5 __cbench_go; exec 5<&-; unset __cbench_go; . \"\$0\"" "$s" </dev/null >&7 2>&7 3>&- 7>&- &
  elif [ "$1" = login ]; then
    setsid $ds bash -l -c "export PATH=\"\${CBENCH_IMAGE_PATH:+\$CBENCH_IMAGE_PATH:}\$PATH\"; . \"\$0\"" "$s" </dev/null >&7 2>&7 3>&- 5<&- 7>&- &
  else
    setsid $ds bash "$s" </dev/null >&7 2>&7 3>&- 5<&- 7>&- &
  fi
  w=$!
}
send_small() {
  local LC_ALL=C parts part k total=0 trailing=0
  mapfile -d '' -t parts < "/proc/$$/fd/7"
  k=${#parts[@]}
  for part in "${parts[@]}"; do total=$((total + ${#part})); done
  [ "$k" -gt 0 ] && total=$((total + k - 1))
  [ "$((total + 1))" = "$1" ] && trailing=1
  # The file grew past what the command's descriptor wrote (written by path): not small.
  [ "$((total + trailing))" -le "$cap" ] || return 1
  echo "RES $id $code $((total + trailing))" >&3
  if [ "$k" -gt 0 ]; then
    [ "$k" -gt 1 ] && printf '%s\0' "${parts[@]:0:k-1}" >&3
    printf '%s' "${parts[k-1]}" >&3
    [ "$trailing" = 1 ] && printf '\0' >&3
  fi
  return 0
}
# The whole of a /proc/<pid>/stat in $st: a process may name itself with a newline and a fake
# state (`x) Z`), so the fields are read past the last `) ` of the whole file, never of its first line.
stat_of() {
  st=
  { while IFS= read -r l || [ -n "$l" ]; do st="$st$l "; done < "$1"; } 2>/dev/null
}
alive() {
  stat_of "/proc/$w/stat"
  st="${st##*) }"
  case "$st" in R*|S*|D*) return 0 ;; esac
  return 1
}
mkdir -p "$d" && rm -f "$d/channel.fifo" && mkfifo -m 600 "$d/channel.fifo" && exec 5<>"$d/channel.fifo" && rm -f "$d/channel.fifo" || { echo "ERR no pipe" >&3; exit 1; }
seal=$1
small=
[ "${BASH_VERSINFO[0]}" -ge 5 ] 2>/dev/null && small=65536
ds=
env --default-signal=INT,QUIT true 2>/dev/null && ds="env --default-signal=INT,QUIT"
keep=
for x in /proc/[0-9]*; do
  q="${x#/proc/}"
  [ "$q" = 1 ] || [ "$q" = "$$" ] && continue
  stat_of "$x/stat"
  [ -n "$st" ] || continue
  set -- ${st##*) }
  [ "$2" = 1 ] && keep="$keep $q "
done
ready
launch ahead
echo "CBENCH-CHANNEL 2 $seal" >&3
while IFS=' ' read -r tag id mode cap lines; do
  [ "$tag" = REQ ] || { echo "ERR unexpected frame" >&3; exit 1; }
  n=0
  { while [ "$n" -lt "$lines" ]; do
    IFS= read -r line || { echo "ERR short request" >&3; exit 1; }
    printf '%s\n' "$line"
    n=$((n + 1))
  done > "$s"; } 2>/dev/null
  # The script file could not be opened (a command took the scratch directory away, say by
  # `chmod 000 /tmp`): the request's lines are still read, so the next frame is one, and the
  # command is answered as not run.
  if [ "$n" -lt "$lines" ]; then
    while [ "$n" -lt "$lines" ]; do
      IFS= read -r line || { echo "ERR short request" >&3; exit 1; }
      n=$((n + 1))
    done
    [ "$cap" = - ] && { echo "ERR scratch directory unusable" >&3; exit 1; }
    m="cbench: the command did not run: the exec channel cannot write its scratch directory $d (a command changed its permissions or those of a directory above it)"
    [ "${#m}" -le "$cap" ] || m=
    echo "RES $id 126 ${#m}" >&3
    printf '%s' "$m" >&3
    ready 2>/dev/null
    continue
  fi
  if [ "$mode" = login ] && [ -n "$w" ] && alive; then
    echo "$id $w ${o##*/}" > "$p"
    echo go >&5
  else
    if [ -n "$w" ]; then kill -9 "$w" 2>/dev/null; wait "$w" 2>/dev/null; fi
    launch "$mode"
    echo "$id $w ${o##*/}" > "$p"
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
      stat_of "$x/stat"
      [ -n "$st" ] || continue
      set -- ${st##*) }
      # A zombie is done, unless it leads threads still running (its main thread exited).
      [ "$1" = Z ] && [ "${18:-1}" -le 1 ] && continue
      kill -9 "$q" 2>/dev/null && left=1
    done
    [ -z "$left" ] && break
    k=$((k + 1))
  done
  w=
  while read -r -t 0 -u 5; do read -r -t 0.01 -u 5 -N 4096 _; done
  pos=
  [ -n "$small" ] && { read -r _ pos < "/proc/$$/fdinfo/7"; } 2>/dev/null
  if [ "$cap" = - ]; then
    echo "RES $id $code @${o##*/}" >&3
  elif [ -n "$pos" ] && [ "$pos" -le "$small" ] && [ "$pos" -le "$cap" ] && send_small "$pos"; then
    :
  else
    size=0
    [ -s "$o" ] && size=$(( $(wc -c < "$o") ))
    echo "RES $id $code $size" >&3
    if [ "$size" -gt 0 ]; then
      # Exactly what the header says, whatever the file grew by since: never a byte more.
      if [ "$size" -le "$cap" ]; then head -c "$size" "$o" >&3; else head -c "$cap" "$o" >&3; fi
    fi
  fi
  ready
  launch ahead
done"#;

/// Starts the server from an execute-only copy of bash. A process that executes a file it
/// cannot read is not dumpable, so commands (root in the container, but without
/// CAP_SYS_PTRACE or CAP_DAC_OVERRIDE) cannot open the server's descriptors through
/// `/proc/<pid>/fd` to inject requests or forge answers; its children exec readable binaries
/// and are ordinary processes again. Where the copy cannot be made, the server runs unsealed.
pub const CHANNEL_BOOT: &str = r#"b=/tmp/cbench/channel-bash
mkdir -p /tmp/cbench && rm -f "$b" && cp "$(command -v bash)" "$b" && chmod 0111 "$b" && exec "$b" -c "$1" cbench-channel sealed
exec bash -c "$1" cbench-channel unsealed"#;

/// How long the channel may take to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer's output may take to arrive after its header.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest header line the server sends (`RES <id> <code> <size>` is far shorter).
const MAX_HEADER: usize = 256;
/// How long to wait for the answer once a timed-out command was killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The server's output files under `/tmp/cbench` (they alternate between commands).
pub const OUTPUT_FILES: [&str; 2] = ["channel.out", "channel.out2"];

/// A command's answer: its output, or where the server left it.
enum Answer {
    Output(ExecOutput),
    InFile {
        exit_code: i32,
        timed_out: bool,
        file: &'static str,
    },
}

/// Why the channel stopped working.
#[derive(Debug, thiserror::Error)]
#[error("exec channel: {reason}")]
pub struct ChannelBroken {
    /// What went wrong, for the log.
    pub reason: String,
    /// The command reached the server (it may have run): it must not be run again.
    pub sent: bool,
    /// The command had passed its deadline and was being killed when the channel broke.
    pub timed_out: bool,
}

/// A broken channel whose command never reached the server.
pub fn broken(reason: impl Into<String>) -> ChannelBroken {
    ChannelBroken {
        reason: reason.into(),
        sent: false,
        timed_out: false,
    }
}

/// Writes a request to the server's input and flushes it: a transport's `send` over a byte
/// stream.
pub async fn send_flushed<W>(input: &mut W, bytes: &[u8]) -> Result<(), ChannelBroken>
where
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::AsyncWriteExt;
    input
        .write_all(bytes)
        .await
        .map_err(|e| broken(format!("writing: {e}")))?;
    input
        .flush()
        .await
        .map_err(|e| broken(format!("writing: {e}")))
}

/// Whether the server could start from its execute-only copy of bash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// Commands cannot reach the server's descriptors.
    Yes,
    /// The copy could not be made: commands can open the server's descriptors through `/proc`.
    No,
}

/// How a backend moves the channel's bytes and stops a command.
#[async_trait::async_trait]
pub trait Transport: Send {
    /// Appends what the server wrote next to `buffer`; an error once it is gone.
    async fn read_more(&mut self, buffer: &mut Vec<u8>) -> Result<(), ChannelBroken>;
    /// Sends `bytes` to the server.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), ChannelBroken>;
    /// Kills command `id` (its deadline passed). The server answers for it once it is dead;
    /// a transport that can only kill the whole server ends the channel instead.
    async fn kill(&mut self, id: u64);
}

/// An open channel. One command at a time (callers hold it exclusively).
pub struct Channel<T> {
    transport: T,
    buffer: Vec<u8>,
    next_id: u64,
}

impl<T: Transport> Channel<T> {
    /// Waits for the server's hello on `transport`.
    pub async fn open(transport: T) -> Result<(Channel<T>, Sealed), ChannelBroken> {
        let mut channel = Channel {
            transport,
            buffer: Vec::new(),
            next_id: 0,
        };
        let hello = tokio::time::timeout(HELLO_TIMEOUT, channel.read_line())
            .await
            .map_err(|_| broken(format!("no hello within {} s", HELLO_TIMEOUT.as_secs())))??;
        let sealed = match hello.strip_prefix("CBENCH-CHANNEL 2 ") {
            Some("sealed") => Sealed::Yes,
            Some("unsealed") => Sealed::No,
            _ => return Err(broken(format!("unexpected hello `{hello}`"))),
        };
        Ok((channel, sealed))
    }

    /// The transport, for backends that need it after a break (to salvage output).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// One header line; a longer "line" means something else wrote into the channel's
    /// descriptor (a command can reach it through `/proc` when unsealed), so the channel is
    /// given up rather than buffering without bound.
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
            self.transport.read_more(&mut self.buffer).await?;
        }
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, ChannelBroken> {
        while self.buffer.len() < n {
            self.transport.read_more(&mut self.buffer).await?;
        }
        Ok(self.buffer.drain(..n).collect())
    }

    /// Runs `script` (in a login shell or a plain one) with a deadline; output capped at `cap`.
    pub async fn run(
        &mut self,
        script: &str,
        shell: Shell,
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, ChannelBroken> {
        match self.exchange(script, shell, timeout, Some(cap)).await? {
            Answer::Output(out) => Ok(out),
            Answer::InFile { .. } => Err(broken("the output was left in a file, not sent")),
        }
    }

    /// Runs `script` with a deadline, leaving its output in a file of the channel's directory
    /// for the host to read: its exit code (-1 past the deadline), whether it timed out, and
    /// the file's name (`channel.out` or `channel.out2`).
    pub async fn run_output_in_file(
        &mut self,
        script: &str,
        shell: Shell,
        timeout: Duration,
    ) -> Result<(i32, bool, &'static str), ChannelBroken> {
        match self.exchange(script, shell, timeout, None).await? {
            Answer::InFile {
                exit_code,
                timed_out,
                file,
            } => Ok((exit_code, timed_out, file)),
            Answer::Output(_) => Err(broken("the output was sent, not left in a file")),
        }
    }

    async fn exchange(
        &mut self,
        script: &str,
        shell: Shell,
        timeout: Duration,
        cap: Option<usize>,
    ) -> Result<Answer, ChannelBroken> {
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
        let cap_field = cap.map_or_else(|| "-".to_string(), |c| c.to_string());
        let request = format!("REQ {id} {mode} {cap_field} {lines}\n{body}");
        let deadline = Instant::now() + timeout;
        // A server that stops reading (stopped by a command's doing) must not hold the host
        // past the command's deadline.
        match tokio::time::timeout_at(deadline.into(), self.transport.send(request.as_bytes()))
            .await
        {
            Ok(sent) => sent?,
            Err(_) => {
                self.transport.kill(id).await;
                return Err(ChannelBroken {
                    reason: "the request could not be sent before the deadline".into(),
                    sent: true,
                    timed_out: true,
                });
            }
        }
        self.answer(id, deadline, cap).await.map_err(|mut e| {
            e.sent = true;
            e
        })
    }

    /// Reads the answer to command `id`, killing it at its deadline.
    async fn answer(
        &mut self,
        id: u64,
        deadline: Instant,
        cap: Option<usize>,
    ) -> Result<Answer, ChannelBroken> {
        let mut timed_out = false;
        let header = loop {
            let limit = if timed_out {
                Instant::now() + KILL_GRACE
            } else {
                deadline
            };
            match tokio::time::timeout_at(limit.into(), self.read_line()).await {
                Ok(Ok(line)) => break line,
                Ok(Err(mut e)) => {
                    e.timed_out = timed_out;
                    return Err(e);
                }
                Err(_) if timed_out => {
                    let mut e = broken("no answer after killing a timed-out command");
                    e.timed_out = true;
                    return Err(e);
                }
                Err(_) => {
                    timed_out = true;
                    self.transport.kill(id).await;
                }
            }
        };
        let fields: Vec<&str> = header.split(' ').collect();
        let (code, size) = match fields.as_slice() {
            ["RES", got, code, size] if *got == id.to_string() => (
                code.parse::<i32>()
                    .map_err(|_| broken(format!("bad exit code in `{header}`")))?,
                *size,
            ),
            _ => return Err(broken(format!("unexpected answer `{header}`"))),
        };
        let exit_code = if timed_out { -1 } else { code };
        let Some(cap) = cap else {
            let file = OUTPUT_FILES
                .into_iter()
                .find(|f| size.strip_prefix('@') == Some(*f))
                .ok_or_else(|| broken(format!("unexpected output file in `{header}`")))?;
            return Ok(Answer::InFile {
                exit_code,
                timed_out,
                file,
            });
        };
        let size = size
            .parse::<usize>()
            .map_err(|_| broken(format!("bad size in `{header}`")))?;
        // The server sends what its header says and no more (a process that escaped the sweep
        // and appends cannot add a frame); a stalled body means a broken channel.
        let output = tokio::time::timeout(BODY_TIMEOUT, self.read_exact(size.min(cap)))
            .await
            .map_err(|_| broken("the output did not follow its header"))??;
        Ok(Answer::Output(ExecOutput {
            exit_code,
            output: String::from_utf8_lossy(&output).into_owned(),
            timed_out,
            truncated: size > cap,
        }))
    }
}
