//! The local backend: a per-agent copy of the task repo in a temp dir, commands
//! run with `bash` under a scrubbed environment, in their own process group.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

pub use super::base::{copy_tree, BaseRepo};
use super::cgroup::SandboxCgroup;
pub use super::confine::{Confinement, Isolation, IsolationMode, Mounts};
use super::git::BASE_COMMIT_ENV;
use super::io;
pub use super::launch::{confined_command, run_script, Launch};
use super::local_shell::{salvage_output, LocalShell};
use super::patch::{snapshot_local, PatchError, SnapshotWriter};
use super::{beneath, checked_relative_path, ExecOutput, Sandbox, SandboxError};

/// The sandbox's directories its commands may write (each bound on its own: the sandbox
/// root itself, where the host keeps `scripts/`, is not).
const AGENT_DIRS: [&str; 3] = ["repo", "home", "tmp"];
/// The host-owned directory of command scripts, shown read-only.
const SCRIPTS_DIR: &str = "scripts";
/// The persistent shell's scratch directory (its command and output files), bound at
/// `/tmp/cbench`; the agent's commands can write it.
const CHANNEL_DIR: &str = "chan";

/// Host-side cap on one command's captured output (the agent truncates further).
pub const DEFAULT_OUTPUT_CAP: usize = 1 << 20;
/// One agent's local sandbox. The temp dir (repo, home, tmp) is removed on drop.
pub struct LocalSandbox {
    isolation: Isolation,
    /// Limits every process of the sandbox and ends them all after each command.
    cgroup: Option<SandboxCgroup>,
    /// Directories outside the sandbox its commands may write (the team remote's objects
    /// and refs).
    writable: Vec<PathBuf>,
    /// Directories outside the sandbox its commands may read (the team remote).
    readonly: Vec<PathBuf>,
    /// Extra environment (the agent's id for the team remote's hook).
    extra_env: Vec<(String, String)>,
    /// The team's scratchpad (the team setting), bound read-write.
    scratchpad: Option<PathBuf>,
    root: tempfile::TempDir,
    output_cap: usize,
    next_script: AtomicU64,
    /// The sandbox's disk use against its limit.
    disk: super::disk::DiskWatch,
    /// No file a command writes may grow past this (the disk limit).
    file_size_limit: u64,
    /// The persistent confined shell commands run in (bwrap only; started on first use and
    /// again after a command past its deadline ended it).
    shell: tokio::sync::Mutex<Option<LocalShell>>,
    /// The shell could not be started here: one bubblewrap per command instead.
    shell_unavailable: AtomicBool,
    /// The agent is done: its processes were ended and no shell starts again.
    stopped: AtomicBool,
}

impl LocalSandbox {
    /// Copies `base` into a fresh temp dir under `parent`.
    pub async fn create(
        base: &BaseRepo,
        parent: &Path,
        confinement: &Confinement,
    ) -> Result<LocalSandbox, SandboxError> {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        let root = tempfile::Builder::new()
            .prefix("sandbox-")
            .tempdir_in(parent)
            .map_err(io("creating sandbox dir"))?;
        for dir in ["home", "tmp", SCRIPTS_DIR, CHANNEL_DIR] {
            std::fs::create_dir_all(root.path().join(dir)).map_err(io("creating sandbox dirs"))?;
        }
        base.checkout_to(&root.path().join("repo")).await?;
        // The channel's directory holds each command's output: disk the agent fills too.
        let agent_dirs = AGENT_DIRS
            .iter()
            .chain([&CHANNEL_DIR])
            .map(|d| root.path().join(d))
            .collect();
        Ok(LocalSandbox {
            isolation: confinement.isolation.clone(),
            cgroup: confinement.cgroup()?,
            writable: Vec::new(),
            readonly: Vec::new(),
            extra_env: Vec::new(),
            scratchpad: None,
            root,
            output_cap: DEFAULT_OUTPUT_CAP,
            next_script: AtomicU64::new(0),
            disk: super::disk::DiskWatch::local(confinement.limits.disk_bytes, agent_dirs),
            file_size_limit: confinement.limits.disk_bytes,
            shell: tokio::sync::Mutex::new(None),
            shell_unavailable: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        })
    }

    /// Lets commands fetch from and push to `bare` (the pair's team remote) and names the
    /// agent to its hook. Only objects and refs are writable: its config and hooks are not.
    pub fn with_team_remote(mut self, bare: &Path, agent_id: &str) -> LocalSandbox {
        self.readonly.push(bare.to_path_buf());
        for dir in crate::team::PUSH_WRITABLE {
            self.writable.push(bare.join(dir));
        }
        // What the agent pushes is disk it fills too.
        let mut watched = self.disk.dirs().to_vec();
        watched.push(bare.to_path_buf());
        self.disk = super::disk::DiskWatch::local(self.disk.limit(), watched);
        self.extra_env
            .push(("CBENCH_AGENT_ID".into(), agent_id.to_string()));
        self
    }

    /// Lets commands read and write the pair's scratchpad `dir` (the team setting). It is not
    /// this agent's disk (a teammate's writes must not end this agent): it has a cap of its own,
    /// checked after each command, past which it is emptied.
    pub fn with_scratchpad(mut self, dir: &Path) -> LocalSandbox {
        self.writable.push(dir.to_path_buf());
        self.scratchpad = Some(dir.to_path_buf());
        self
    }

    /// The repository directory.
    pub fn repo(&self) -> PathBuf {
        self.root.path().join("repo")
    }

    /// Where the host writes command scripts: never writable by commands.
    fn scripts_dir(&self) -> PathBuf {
        self.root.path().join(SCRIPTS_DIR)
    }

    /// The repository directory, opened without following a link.
    fn repo_handle(&self) -> Result<std::os::fd::OwnedFd, SandboxError> {
        beneath::open_dir(self.root.path(), "repo").map_err(io("opening the work tree"))
    }

    /// What commands may touch: the agent's directories and the extra ones granted.
    fn mounts(&self) -> Mounts {
        let mut writable: Vec<PathBuf> = AGENT_DIRS
            .iter()
            .map(|dir| self.root.path().join(dir))
            .collect();
        writable.extend(self.writable.iter().cloned());
        Mounts {
            writable,
            readonly: self.readonly.clone(),
            ..Mounts::default()
        }
    }

    /// Starts the persistent shell now (a sandbox's start, while its agent's plugin loads), so
    /// the first command does not wait for it. Without bubblewrap commands run one by one.
    pub async fn start_shell(&self) {
        let mut shell = self.shell.lock().await;
        if shell.is_none() {
            *shell = self.open_shell().await;
        }
    }

    /// Whether commands currently run in the persistent shell (one is open).
    pub async fn uses_shell(&self) -> bool {
        self.shell.lock().await.is_some()
    }

    /// Opens the shell, or says once why commands will each start their own bubblewrap.
    async fn open_shell(&self) -> Option<LocalShell> {
        // The server sweeps every process it can see after each command: only ever inside a
        // PID namespace of its own.
        if !matches!(self.isolation, Isolation::Bwrap(_))
            || self.shell_unavailable.load(Ordering::Relaxed)
            || self.stopped.load(Ordering::Relaxed)
        {
            return None;
        }
        let mounts = Mounts {
            channel_dir: Some(self.root.path().join(CHANNEL_DIR)),
            ..self.mounts()
        };
        let launcher = self.isolation.server_launcher(&self.repo(), &mounts);
        let env = self.env();
        let repo = self.repo();
        let launch = Launch {
            launcher: &launcher,
            cwd: &repo,
            env: &env,
            timeout: Duration::ZERO,
            output_cap: self.output_cap,
            cgroup: self.cgroup.as_ref(),
            file_size_limit: Some(self.file_size_limit),
        };
        match LocalShell::open(&launch, &self.root.path().join(CHANNEL_DIR)).await {
            Ok(shell) => Some(shell),
            Err(e) => {
                self.shell_unavailable.store(true, Ordering::Relaxed);
                tracing::warn!(
                    "sandbox {}: the persistent shell did not start ({e}); each command starts \
                     its own bubblewrap",
                    self.root.path().display()
                );
                None
            }
        }
    }

    /// Runs `command` in the persistent shell; `None` when there is none (run it alone then).
    async fn run_in_shell(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Option<Result<ExecOutput, SandboxError>> {
        let mut guard = self.shell.lock().await;
        if guard.is_none() {
            *guard = self.open_shell().await;
        }
        let shell = guard.as_mut()?;
        match shell.run(command, timeout, self.output_cap).await {
            Ok(out) => Some(Ok(out)),
            Err(e) => {
                // The shell is gone or no longer trusted: end it and whatever it started; the
                // next command starts a new one.
                shell.kill();
                *guard = None;
                if let Some(cgroup) = &self.cgroup {
                    cgroup.end_all().await;
                }
                if e.timed_out {
                    let (output, truncated) =
                        salvage_output(&self.root.path().join(CHANNEL_DIR), self.output_cap);
                    return Some(Ok(ExecOutput {
                        exit_code: -1,
                        output,
                        timed_out: true,
                        truncated,
                    }));
                }
                tracing::warn!("sandbox {}: {e}", self.root.path().display());
                if !e.sent {
                    return None;
                }
                // It may have run: running it again could do its effects twice.
                Some(Ok(ExecOutput {
                    exit_code: -1,
                    output: format!(
                        "cbench: the sandbox's shell broke while this command ran ({}); whether \
                         it completed is unknown. Later commands work as before.",
                        e.reason
                    ),
                    timed_out: false,
                    truncated: false,
                }))
            }
        }
    }

    /// Runs `command` in a bubblewrap of its own (no persistent shell).
    async fn run_alone(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        let n = self.next_script.fetch_add(1, Ordering::Relaxed);
        let script = self.scripts_dir().join(format!("cmd-{n}.sh"));
        write_new(&script, command.as_bytes()).map_err(io("writing command script"))?;
        let mut mounts = self.mounts();
        mounts.readonly.insert(0, self.scripts_dir());
        let launcher = self.isolation.launcher(&self.repo(), &mounts, true);
        let env = self.env();
        let repo = self.repo();
        let launch = Launch {
            launcher: &launcher,
            cwd: &repo,
            env: &env,
            timeout,
            output_cap: self.output_cap,
            cgroup: self.cgroup.as_ref(),
            file_size_limit: Some(self.file_size_limit),
        };
        let result = run_script(&launch, &script, &[]).await;
        let _ = tokio::fs::remove_file(&script).await;
        result
    }

    fn env(&self) -> Vec<(String, String)> {
        let home = self.root.path().join("home").display().to_string();
        let tmp = self.root.path().join("tmp").display().to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", &home),
            ("TMPDIR", &tmp),
            ("LANG", "C.UTF-8"),
            ("TERM", "dumb"),
            ("PAGER", "cat"),
            ("GIT_PAGER", "cat"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
        ];
        env.extend(BASE_COMMIT_ENV[..4].iter().copied());
        env.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(self.extra_env.iter().cloned())
            .collect()
    }
}

impl Drop for LocalSandbox {
    fn drop(&mut self) {
        // Before the temp dir's own removal, which recurses and would overflow on the trees
        // thousands of levels deep an agent can make.
        if let Err(e) = cbench_core::fsutil::remove_tree(self.root.path()) {
            tracing::warn!("removing sandbox {}: {e}", self.root.path().display());
        }
    }
}

#[async_trait]
impl Sandbox for LocalSandbox {
    async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SandboxError> {
        // The command goes through a file, not argv, so its size is not limited by ARG_MAX.
        // The file lives in `scripts/`, which commands see read-only: they cannot plant a
        // link where the host writes next.
        self.disk
            .check()
            .instrument(tracing::info_span!("disk_check"))
            .await?;
        let result = match self
            .run_in_shell(command, timeout)
            .instrument(tracing::info_span!("shell_round_trip"))
            .await
        {
            Some(result) => result,
            None => {
                self.run_alone(command, timeout)
                    .instrument(tracing::info_span!("bwrap_per_command"))
                    .await
            }
        };
        let after = async {
            self.disk.measure_later().await;
            if let Some(dir) = &self.scratchpad {
                let dir = dir.clone();
                let _ =
                    tokio::task::spawn_blocking(move || super::scratchpad::empty_if_over_cap(&dir))
                        .await;
            }
        };
        after.instrument(tracing::info_span!("after_command")).await;
        result
    }

    /// Ends the shell and every process in the sandbox: what the last command's successor shell
    /// started from the agent's profile would otherwise keep changing the tree.
    async fn stop_commands(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        if let Some(mut shell) = self.shell.lock().await.take() {
            shell.kill();
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.end_all().await;
        }
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let rel = checked_relative_path(path)?.to_path_buf();
        let repo = self.repo_handle()?;
        tokio::task::spawn_blocking(move || beneath::read(&repo, &rel))
            .await
            .map_err(|e| SandboxError::Command(format!("reading {path}: {e}")))?
            .map_err(io(format!("reading {path}")))
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let rel = checked_relative_path(path)?.to_path_buf();
        let repo = self.repo_handle()?;
        let contents = contents.to_vec();
        tokio::task::spawn_blocking(move || beneath::write(&repo, &rel, &contents))
            .await
            .map_err(|e| SandboxError::Command(format!("writing {path}: {e}")))?
            .map_err(io(format!("writing {path}")))
    }

    async fn snapshot(&self, mut writer: SnapshotWriter) -> Result<(), PatchError> {
        let root = self.root.path().to_path_buf();
        tokio::task::spawn_blocking(move || snapshot_local(&root, "repo", &mut writer))
            .await
            .map_err(|e| PatchError::Infra(SandboxError::Command(format!("snapshot: {e}"))))?
    }
}

/// Creates `path` (which must not exist) and writes `bytes`; never follows a link.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?
        .write_all(bytes)
}
