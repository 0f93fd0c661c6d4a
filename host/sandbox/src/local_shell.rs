//! A local sandbox's persistent confined shell: one bubblewrap for the sandbox's lifetime
//! running the exec channel's server (`cbench_core::channel`), fed over its stdin/stdout, as a
//! docker container's channel is. A command then costs a write and a read instead of a
//! bubblewrap, a namespace and a login shell started in its round trip: the server starts the
//! next command's login shell ahead, while the agent waits for its model.
//!
//! Same semantics as one bubblewrap per command: each command is a fresh `bash -l` in its own
//! session, and when it ends every other process of the sandbox but bubblewrap's init and the
//! server is killed (the server sees only its own PID namespace). Two differences: the private
//! `/tmp` lives as long as the shell (as a container's does), and a command past its deadline
//! ends the whole shell (the next command starts a new one); its output so far is read back from
//! the channel's directory, a host directory bound at `/tmp/cbench`.

use std::path::{Path, PathBuf};

use cbench_core::channel::{
    broken, send_flushed, Channel, ChannelBroken, Sealed, Transport, OUTPUT_FILES,
};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::beneath;
use super::launch::{confined_command, Launch};
use crate::ExecOutput;

/// Where the channel keeps its scratch files inside the sandbox (the server script's `$d`).
pub const CHANNEL_DIR_INSIDE: &str = "/tmp/cbench";

/// How much of the server's stderr is logged (at debug level).
const STDERR_LOGGED: usize = 64 * 1024;

/// An open persistent shell.
pub struct LocalShell {
    channel: Channel<BwrapTransport>,
    /// The channel directory on the host, where each command's output is read from.
    dir: PathBuf,
}

/// The bubblewrap's pipes and the process group that ends it.
struct BwrapTransport {
    _child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    pgid: Option<i32>,
}

impl LocalShell {
    /// Starts the server under `launch` (bubblewrap with the channel directory bound) and waits
    /// for its hello.
    pub async fn open(launch: &Launch<'_>, dir: &Path) -> Result<LocalShell, ChannelBroken> {
        let mut command = confined_command(
            launch,
            &[
                "-c",
                cbench_core::channel::CHANNEL_BOOT,
                "cbench-channel-boot",
                cbench_core::channel::CHANNEL_SERVER,
            ],
        )
        .map_err(|e| broken(e.to_string()))?;
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| broken(format!("starting bubblewrap: {e}")))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(broken("bubblewrap's pipes were not set up"));
        };
        // The server's own errors (bash, bubblewrap): the first few KiB go to the debug log, the
        // rest is drained unread (whatever writes there, nothing is kept without bound).
        tokio::spawn(async move {
            let mut stderr = stderr;
            let mut chunk = vec![0u8; 8 * 1024];
            let mut logged = 0usize;
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if logged < STDERR_LOGGED {
                    logged += n;
                    tracing::debug!(
                        "local shell stderr: {}",
                        String::from_utf8_lossy(&chunk[..n]).trim()
                    );
                }
            }
        });
        let pgid = child.id().map(|id| id as i32);
        let transport = BwrapTransport {
            _child: child,
            stdin,
            stdout,
            pgid,
        };
        let (channel, sealed) = Channel::open(transport).await?;
        if sealed == Sealed::No {
            tracing::warn!(
                "local shell: could not copy bash into {CHANNEL_DIR_INSIDE}; its descriptors are \
                 reachable through /proc by the agent's commands"
            );
        }
        Ok(LocalShell {
            channel,
            dir: dir.to_path_buf(),
        })
    }

    /// Runs `script` in a fresh login shell; its output (at most `cap` bytes) is read from the
    /// channel directory, so no process of the sandbox has to send it.
    pub async fn run(
        &mut self,
        script: &str,
        timeout: std::time::Duration,
        cap: usize,
    ) -> Result<ExecOutput, ChannelBroken> {
        let (exit_code, timed_out, file) = self
            .channel
            .run_output_in_file(script, cbench_core::exec::Shell::Login, timeout)
            .await?;
        let (output, truncated) = read_output(&self.dir, file, cap);
        Ok(ExecOutput {
            exit_code,
            output,
            timed_out,
            truncated,
        })
    }

    /// Ends the shell and everything in it now.
    pub fn kill(&mut self) {
        self.channel.transport_mut().kill_now();
    }
}

/// What a command past its deadline printed, read from the channel directory `dir` (host side)
/// once its shell is dead: the output file the server named for it in `channel.pid` (`<id>
/// <group> <file>`), else the one written last (file times are coarse: a command that wrote
/// nothing within a few ms of the last one's output could be handed that output).
pub fn salvage_output(dir: &Path, cap: usize) -> (String, bool) {
    let (pid_file, _) = read_output(dir, "channel.pid", 256);
    if let Some(named) = pid_file
        .split_whitespace()
        .nth(2)
        .and_then(|name| OUTPUT_FILES.into_iter().find(|f| *f == name))
    {
        return read_output(dir, named, cap);
    }
    let modified = |file: &str| {
        std::fs::symlink_metadata(dir.join(file))
            .and_then(|m| m.modified())
            .ok()
    };
    let newest = OUTPUT_FILES.into_iter().max_by_key(|f| modified(f));
    match newest {
        Some(file) => read_output(dir, file, cap),
        None => (String::new(), false),
    }
}

/// At most `cap` bytes of output file `file` of the channel directory `dir`, never through a
/// link (the agent's commands can replace it): empty when it is not a plain file.
fn read_output(dir: &Path, file: &str, cap: usize) -> (String, bool) {
    let read = || -> std::io::Result<(Vec<u8>, bool)> {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| std::io::Error::other("channel directory has no name"))?;
        let handle = beneath::open_dir(parent, name)?;
        beneath::read_capped(&handle, Path::new(file), cap)
    };
    match read() {
        Ok((bytes, truncated)) => (String::from_utf8_lossy(&bytes).into_owned(), truncated),
        Err(e) => {
            tracing::debug!("reading command output {file}: {e}");
            (String::new(), false)
        }
    }
}

impl BwrapTransport {
    /// SIGKILLs bubblewrap's process group; `--die-with-parent` then ends its namespace.
    fn kill_now(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) on the process group we started; no memory is touched.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

#[async_trait::async_trait]
impl Transport for BwrapTransport {
    async fn read_more(&mut self, buffer: &mut Vec<u8>) -> Result<(), ChannelBroken> {
        let mut chunk = vec![0u8; 64 * 1024];
        match self.stdout.read(&mut chunk).await {
            Ok(0) => Err(broken("the shell exited")),
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(broken(format!("reading: {e}"))),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ChannelBroken> {
        send_flushed(&mut self.stdin, bytes).await
    }

    /// The server's processes live in a PID namespace the host cannot address by the pid the
    /// server reports, so a command past its deadline ends the whole shell.
    async fn kill(&mut self, _id: u64) {
        self.kill_now();
    }
}

impl Drop for BwrapTransport {
    fn drop(&mut self) {
        self.kill_now();
    }
}
