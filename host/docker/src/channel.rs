//! One exec channel per agent container: the shell server of `cbench_core::channel` started by
//! a single `docker exec` at sandbox start, so a command costs a write and a read on an open
//! connection instead of an exec's create/start/attach/inspect round trips. Nothing of ours is
//! installed in the image: the loop travels as an argument. A timeout kills the command's group
//! with a separate exec. If the channel dies, the sandbox falls back to one exec per command and
//! says so once.
//!
//! The bytes travel over two FIFOs in a host directory mounted read-only into the container
//! when the engine runs on this machine (`FifoPair`): the exec's attached streams pass every
//! byte through the engine and its shim, two more processes to wake per direction, and queue
//! behind whatever else the engine is doing (starting a grading container costs a command
//! ~2 ms). The server opens them before any command of the agent ran, proves they connect
//! (the host's `GO` must arrive through them), and the host unlinks them at once, so commands
//! find an empty read-only directory. Where they do not connect (an engine in a VM, a user
//! namespace that cannot open them) the attached streams carry the channel as before.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use cbench_core::channel::{
    broken, send_flushed, Channel, ChannelBroken, Sealed, Transport, CHANNEL_BOOT, CHANNEL_SERVER,
    HELLO_TIMEOUT,
};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWrite;
use tokio::net::unix::pipe;

use super::container::{BindMount, Shell};
use super::{DockerError, Engine};
use crate::exec::ExecOutput;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// Where a `FifoPair` appears in the container.
pub const FIFO_MOUNT: &str = "/run/cbench-channel";

/// Switches the server to the FIFOs at `FIFO_MOUNT` when they are there and connect: it says
/// `fifo` on its attached stdout, and moves to them only if the host's `GO` arrives through
/// them within two seconds (opened read-write, so no open blocks on a FIFO nobody serves).
const FIFO_PRELUDE: &str = r#"f=/run/cbench-channel
if [ -p "$f/in" ] && [ -p "$f/out" ] && { exec 4<>"$f/in" 6<>"$f/out"; } 2>/dev/null; then
  echo "CBENCH-CHANNEL 2 fifo"
  if IFS= read -r -t 2 go <&4 && [ "$go" = GO ]; then exec 0<&4 1>&6; fi
  exec 4<&- 6>&-
fi
"#;

/// The attached server's first line when it found the FIFOs.
const FIFO_OFFER: &[u8] = b"CBENCH-CHANNEL 2 fifo\n";

/// Every `FifoPair` directory of this process (removed by `remove_fifo_dirs` when a signal
/// ends the process before the sandboxes holding them are dropped).
static LIVE_FIFO_DIRS: std::sync::Mutex<Vec<std::path::PathBuf>> =
    std::sync::Mutex::new(Vec::new());

/// How the FIFO directories' names start (then the creating process's pid and a dash).
pub const FIFO_DIR_PREFIX: &str = "cbench-channel-";

/// Removes the FIFO directories in the temp dir whose creating process is gone (killed before
/// it could remove them); returns how many.
pub fn remove_stale_fifo_dirs() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(FIFO_DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Removes every channel FIFO directory this process still has (on Ctrl-C / SIGTERM, after
/// its containers were swept).
pub fn remove_fifo_dirs() {
    let dirs: Vec<_> = match LIVE_FIFO_DIRS.lock() {
        Ok(mut live) => live.drain(..).collect(),
        Err(_) => return,
    };
    for dir in dirs {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A private host directory holding the channel's two FIFOs, for one container.
pub struct FifoPair {
    /// Mode 0700: no other user of this machine reaches the FIFOs.
    outer: tempfile::TempDir,
}

impl FifoPair {
    /// Makes the directory and its FIFOs `in` and `out`.
    pub fn create() -> std::io::Result<FifoPair> {
        use std::os::unix::fs::PermissionsExt;
        // The creator's pid in the name: a later cleanup removes what a killed process left.
        let outer = tempfile::Builder::new()
            .prefix(&format!("{FIFO_DIR_PREFIX}{}-", std::process::id()))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        if let Ok(mut live) = LIVE_FIFO_DIRS.lock() {
            live.push(outer.path().to_path_buf());
        }
        let dir = outer.path().join("fifo");
        std::fs::create_dir(&dir)?;
        // The container's root has no capabilities (no DAC override), and the directory
        // belongs to whoever runs cbench: it needs search and read-write for others, which
        // only the container can use, since the outer directory is private.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        for name in ["in", "out"] {
            let path = dir.join(name);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        }
        Ok(FifoPair { outer })
    }

    /// The directory mounted into the container.
    pub fn dir(&self) -> std::path::PathBuf {
        self.outer.path().join("fifo")
    }

    /// The read-only mount that shows the FIFOs at `FIFO_MOUNT`.
    pub fn mount(&self) -> BindMount {
        BindMount {
            source: self.dir(),
            target: FIFO_MOUNT.to_string(),
            read_only: true,
        }
    }

    /// The host's ends: a writer of `in` (opened read-write, so it never waits for the
    /// server), a reader of `out`.
    fn open(&self) -> std::io::Result<(pipe::Sender, pipe::Receiver)> {
        let dir = self.dir();
        let sender = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(dir.join("in"))?;
        let receiver = pipe::OpenOptions::new().open_receiver(dir.join("out"))?;
        Ok((sender, receiver))
    }

    /// Removes the FIFOs: nothing can open them again.
    fn unlink(&self) {
        let dir = self.dir();
        for name in ["in", "out"] {
            if let Err(e) = std::fs::remove_file(dir.join(name)) {
                tracing::warn!("removing the exec channel's {name} FIFO: {e}");
            }
        }
    }
}

impl Drop for FifoPair {
    fn drop(&mut self) {
        if let Ok(mut live) = LIVE_FIFO_DIRS.lock() {
            live.retain(|d| d != self.outer.path());
        }
    }
}

/// An open channel into one container. One command at a time (callers hold it exclusively).
pub struct ExecChannel {
    channel: Channel<DockerTransport>,
}

/// The attached exec's streams (or the FIFOs, once the server moved to them), and how to
/// reach the container for a kill.
struct DockerTransport {
    engine: Arc<Engine>,
    container: String,
    input: Input,
    output: Output,
    fifos: Option<(pipe::Sender, pipe::Receiver)>,
    /// Bytes read while choosing the streams, handed out first.
    pending: Vec<u8>,
}

impl ExecChannel {
    /// Starts the server in `container` (working dir `workdir`, extra `env`) and waits for its
    /// hello; over `fifos` (mounted at `FIFO_MOUNT`) when they connect.
    pub async fn open(
        engine: &Arc<Engine>,
        container: &str,
        workdir: &str,
        env: &[String],
        fifos: Option<&FifoPair>,
    ) -> Result<ExecChannel, ChannelBroken> {
        let api = engine.api();
        let host_ends = match fifos.map(FifoPair::open).transpose() {
            Ok(ends) => ends,
            Err(e) => {
                tracing::debug!("container {container}: opening the channel's FIFOs: {e}");
                None
            }
        };
        let server = if host_ends.is_some() {
            format!("{FIFO_PRELUDE}{CHANNEL_SERVER}")
        } else {
            CHANNEL_SERVER.to_string()
        };
        let exec = api
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(vec![
                        "sh".to_string(),
                        "-c".to_string(),
                        CHANNEL_BOOT.to_string(),
                        "cbench-channel-boot".to_string(),
                        server,
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
        let mut transport = DockerTransport {
            engine: engine.clone(),
            container: container.to_string(),
            input,
            output,
            fifos: None,
            pending: Vec::new(),
        };
        if let Some(ends) = host_ends {
            let chosen = tokio::time::timeout(HELLO_TIMEOUT, transport.choose_streams(ends)).await;
            if let Some(fifos) = fifos {
                fifos.unlink();
            }
            chosen.map_err(|_| broken("no hello within the time limit"))??;
        }
        let (channel, sealed) = Channel::open(transport).await?;
        if sealed == Sealed::No {
            tracing::warn!(
                "container {container}: the exec channel could not copy bash into /tmp/cbench; \
                 its descriptors are reachable through /proc by the agent's commands"
            );
        }
        Ok(ExecChannel { channel })
    }

    /// Whether the channel's bytes go over the FIFOs (else the exec's attached streams).
    pub fn over_fifos(&mut self) -> bool {
        self.channel.transport_mut().fifos.is_some()
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

impl DockerTransport {
    /// Moves to the FIFOs if the server offers them and they carry our `GO` to it; whatever
    /// was read past the offer is kept for the hello.
    async fn choose_streams(
        &mut self,
        (mut sender, mut receiver): (pipe::Sender, pipe::Receiver),
    ) -> Result<(), ChannelBroken> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut seen = Vec::new();
        while seen.len() < FIFO_OFFER.len() && FIFO_OFFER.starts_with(&seen) {
            self.read_attached(&mut seen).await?;
        }
        if !seen.starts_with(FIFO_OFFER) {
            self.pending = seen;
            return Ok(());
        }
        let mut attached = seen.split_off(FIFO_OFFER.len());
        if !attached.is_empty() {
            // The server said more on its stdout: it did not take the FIFOs.
            self.pending = attached;
            return Ok(());
        }
        if sender.write_all(b"GO\n").await.is_err() {
            return Ok(());
        }
        let mut chunk = vec![0u8; 4096];
        tokio::select! {
            read = receiver.read(&mut chunk) => match read {
                Ok(n) if n > 0 => {
                    chunk.truncate(n);
                    self.pending = chunk;
                    self.fifos = Some((sender, receiver));
                    // The server's stderr still comes this way: drained, so it never blocks.
                    let mut output = std::mem::replace(&mut self.output, Box::pin(futures_util::stream::empty()));
                    let container = self.container.clone();
                    tokio::spawn(async move {
                        while let Some(Ok(message)) = output.next().await {
                            tracing::debug!("exec channel output in {container}: {message}");
                        }
                    });
                    Ok(())
                }
                _ => Err(broken("the channel's FIFO closed before the hello")),
            },
            more = self.read_attached(&mut attached) => {
                more?;
                self.pending = attached;
                Ok(())
            }
        }
    }

    /// Reads the exec's stdout; stderr is the server's own (bash errors), which only matter
    /// when it dies.
    async fn read_attached(&mut self, buffer: &mut Vec<u8>) -> Result<(), ChannelBroken> {
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
}

#[async_trait::async_trait]
impl Transport for DockerTransport {
    async fn read_more(&mut self, buffer: &mut Vec<u8>) -> Result<(), ChannelBroken> {
        use tokio::io::AsyncReadExt;
        if !self.pending.is_empty() {
            buffer.append(&mut self.pending);
            return Ok(());
        }
        let Some((_, receiver)) = self.fifos.as_mut() else {
            return self.read_attached(buffer).await;
        };
        // Straight into the channel's buffer (a pipe holds at most 64 KiB at a time).
        buffer.reserve(64 << 10);
        match receiver.read_buf(buffer).await {
            Ok(0) => Err(broken("the channel closed")),
            Ok(_) => Ok(()),
            Err(e) => Err(broken(format!("reading: {e}"))),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ChannelBroken> {
        match self.fifos.as_mut() {
            Some((sender, _)) => send_flushed(sender, bytes).await,
            None => send_flushed(&mut self.input, bytes).await,
        }
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
                        r#"read -r i g _ < /tmp/cbench/channel.pid && [ "$i" = "$1" ] && kill -9 "-$g" 2>/dev/null; true"#
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[test]
    fn the_fifos_are_reachable_only_through_a_private_directory_named_for_this_process() {
        let pair = FifoPair::create().expect("FIFOs");
        let outer = pair.outer.path().to_path_buf();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&outer), 0o700, "{}", outer.display());
        assert_eq!(mode(&pair.dir()), 0o711);
        for name in ["in", "out"] {
            let path = pair.dir().join(name);
            assert!(std::fs::metadata(&path).unwrap().file_type().is_fifo());
            assert_eq!(mode(&path), 0o666);
        }
        let name = outer.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("{FIFO_DIR_PREFIX}{}-", std::process::id())),
            "{name}"
        );
        // A live process's directories are not stale.
        remove_stale_fifo_dirs();
        assert!(outer.exists());
        drop(pair);
        assert!(!outer.exists());
    }
}
