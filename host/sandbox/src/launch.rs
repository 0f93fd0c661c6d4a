//! How a confined process is started and waited for: the launcher (bash, or bubblewrap around
//! it) with a scrubbed environment, its own process group, the sandbox's cgroup and file size
//! limit; a script run to completion with a timeout and merged, capped output. Agents' commands
//! (one bubblewrap per command, when the persistent shell cannot run), the persistent shell
//! itself and graders' test runs all start this way.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;

use super::cgroup::SandboxCgroup;
use super::io;
use super::{ExecOutput, SandboxError};

/// How long to wait for output still buffered after the command's group was killed.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// How a script is launched: the launcher (`bash`, or bwrap around it), where, with
/// which environment, for how long, and in which cgroup.
pub struct Launch<'a> {
    pub launcher: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    pub timeout: Duration,
    pub output_cap: usize,
    /// Limits the script's processes; every one of them is killed when it ends.
    pub cgroup: Option<&'a SandboxCgroup>,
    /// `RLIMIT_FSIZE` of the script's processes: no file grows past it.
    pub file_size_limit: Option<u64>,
}

/// `launcher… args…` as `launch` describes it: its own process group, the given environment
/// only, joined to the cgroup and under the file size limit; killed when dropped.
pub fn confined_command(launch: &Launch<'_>, args: &[&str]) -> Result<Command, SandboxError> {
    let Some((program, launcher_args)) = launch.launcher.split_first() else {
        return Err(SandboxError::Command(
            "no program to run the script with".into(),
        ));
    };
    let mut command = Command::new(program);
    command
        .args(launcher_args)
        .args(args)
        .current_dir(launch.cwd)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // Nothing cbench inherited from whatever started it (a CI runner's descriptors, a wrapper's
    // open files) reaches the confined process: every descriptor past stdio closes at exec.
    let highest = open_files_limit();
    // SAFETY: close_range(2) and fcntl(2) are async-signal-safe and touch no memory.
    unsafe {
        command.pre_exec(move || {
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            if libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            ) == 0
            {
                return Ok(());
            }
            // Kernels before 5.11: one descriptor at a time.
            for fd in 3..highest {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
    if let Some(cgroup) = launch.cgroup {
        let join = cgroup.joiner();
        // SAFETY: the hook only makes async-signal-safe system calls (see `joiner`).
        unsafe {
            command.pre_exec(join);
        }
    }
    if let Some(bytes) = launch.file_size_limit {
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        // SAFETY: setrlimit(2) is async-signal-safe and reads only `limit`, copied in.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Ok(command)
}

/// The highest descriptor number this process may hold, plus one (bounded: a huge limit would
/// make the pre-5.11 fallback loop long).
fn open_files_limit() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) fills the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if known {
        limit.rlim_cur.min(1 << 16) as libc::c_int
    } else {
        1 << 16
    }
}

/// Runs `launcher… script args…` in its own process group with a timeout; merged,
/// capped output. When it ends, whatever it started ends too (its process group, and
/// with a cgroup every process in it, `setsid` ones included).
pub async fn run_script(
    launch: &Launch<'_>,
    script: &Path,
    args: &[&str],
) -> Result<ExecOutput, SandboxError> {
    let (timeout, output_cap) = (launch.timeout, launch.output_cap);
    let (reader, writer) = std::io::pipe().map_err(io("creating output pipe"))?;
    let writer_err = writer.try_clone().map_err(io("creating output pipe"))?;
    let script_arg = script.as_os_str().to_str().ok_or_else(|| {
        SandboxError::Command(format!("script path {} is not UTF-8", script.display()))
    })?;
    let mut argv = vec![script_arg];
    argv.extend_from_slice(args);
    let mut command = confined_command(launch, &argv)?;
    command
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer_err));
    let program = launch
        .launcher
        .first()
        .map(String::as_str)
        .unwrap_or("bash");
    let mut child = command.spawn().map_err(io(format!("starting {program}")))?;
    // The builder still holds our copies of the pipe's write end; until they are
    // closed the reader never sees end-of-file and every command waits out DRAIN_GRACE.
    drop(command);
    let pgid = child.id().map(|id| id as i32);
    // If this future is dropped (Ctrl-C, an aborted pair), the whole group dies with it.
    let _group = pgid.map(GroupGuard);

    let captured = Arc::new(Mutex::new(Captured::default()));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    {
        let captured = captured.clone();
        std::thread::spawn(move || {
            drain(reader, &captured, output_cap);
            let _ = done_tx.send(());
        });
    }

    let (exit_code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (status.code().unwrap_or(-1), false),
        Ok(Err(e)) => return Err(io("waiting for command")(e)),
        Err(_) => (-1, true),
    };
    // Each command is a fresh shell: whatever it left behind (background jobs,
    // a timed-out pipeline) dies with it.
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    if let Some(cgroup) = launch.cgroup {
        cgroup.end_all().await;
    }
    if timed_out {
        let _ = child.wait().await;
    }
    let _ = tokio::time::timeout(DRAIN_GRACE, done_rx).await;
    let captured = match captured.lock() {
        Ok(mut c) => std::mem::take(&mut *c),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    Ok(ExecOutput {
        exit_code,
        output: String::from_utf8_lossy(&captured.bytes).into_owned(),
        timed_out,
        truncated: captured.truncated,
    })
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

fn drain(mut reader: std::io::PipeReader, captured: &Mutex<Captured>, cap: usize) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let Ok(mut c) = captured.lock() else { return };
                let room = cap.saturating_sub(c.bytes.len());
                if n > room {
                    c.truncated = true;
                }
                let keep = n.min(room);
                c.bytes.extend_from_slice(&buf[..keep]);
            }
        }
    }
}

/// Kills a process group when dropped.
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}
