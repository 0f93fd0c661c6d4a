//! The docker backend: one container per agent from the task's image, the
//! repository at `/workspace/repo`, commands through one long-lived exec channel (a plain exec
//! per command if the channel breaks), files as tar archives.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tracing::Instrument;

use super::disk::DiskWatch;
use super::patch::{snapshot_tar, PatchError, SnapshotWriter};
use super::{checked_relative_path, ExecOutput, Sandbox, SandboxError};
use crate::local::DEFAULT_OUTPUT_CAP;
use crate::team::GitServer;
use cbench_docker::channel::{ExecChannel, FifoPair};
use cbench_docker::container::{
    writable_layer_bytes, writable_layer_dir, Container, ContainerSpec, Shell, TarEntry,
};
use cbench_docker::{DockerError, Engine};

/// Where task images keep the repository.
pub const REPO_DIR: &str = "/workspace/repo";

/// Environment of agents' commands (the image's own environment stays underneath).
pub(crate) const AGENT_ENV: [&str; 9] = [
    "TERM=dumb",
    "PAGER=cat",
    "GIT_PAGER=cat",
    "LANG=C.UTF-8",
    "PYTHONDONTWRITEBYTECODE=1",
    "GIT_AUTHOR_NAME=cbench",
    "GIT_AUTHOR_EMAIL=cbench@localhost",
    "GIT_COMMITTER_NAME=cbench",
    "GIT_COMMITTER_EMAIL=cbench@localhost",
];

/// CooperBench images clone upstream and check out the base, so branches, remote
/// refs and later tags still point at the project's future (possibly the very
/// feature). Like the local backend, agents get `main` at the base and nothing after
/// it. (Unreachable objects stay: a `gc` per container would cost too much.)
pub(crate) const HIDE_LATER_HISTORY: &str = r#"set -e
cd /workspace/repo
git checkout -q -B main HEAD
git for-each-ref --format='%(refname)' refs/heads refs/remotes | grep -vx refs/heads/main | xargs -r -n1 git update-ref -d
git tag --no-merged HEAD | xargs -r -n1 git tag -d >/dev/null
for r in $(git remote); do git remote remove "$r"; done
git reflog expire --expire=now --all"#;

/// Exits 3 naming what an image lacks to host an agent (checked once per sandbox).
pub(crate) const CAN_HOST_AGENT: &str = "for t in bash setsid git; do command -v $t >/dev/null || { echo \"missing: $t\"; exit 3; }; done; cd /workspace/repo && git rev-parse HEAD";

/// One agent's container.
pub struct DockerSandbox {
    container: Container,
    env: Vec<String>,
    output_cap: usize,
    /// The team server that admitted this container's address (`--git`).
    team_client: Option<(Arc<GitServer>, String)>,
    /// The exec channel; `None` once it broke (or never opened): plain execs then.
    channel: tokio::sync::Mutex<Option<ExecChannel>>,
    /// The writable layer's size against the disk limit.
    disk: DiskWatch,
    /// Why no more commands run, once the agent's commands took the container down (out of
    /// memory, its init killed with it).
    ended: std::sync::Mutex<Option<String>>,
    /// When the last command ended.
    last_ended: std::sync::Mutex<Option<SystemTime>>,
    /// The channel's FIFO directory, emptied once the channel opened; it lives as long as the
    /// container, whose archive reads need every mount's source.
    fifos: Option<FifoPair>,
}

/// How a command reaches the container (for measurements and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecPath {
    /// The long-lived exec channel.
    Channel,
    /// One docker exec per command.
    PlainExec,
}

impl DockerSandbox {
    /// Starts a container from `spec` and checks it has what the harness needs.
    /// `image_path` is the image's PATH, restored after a login shell's profile resets it.
    pub async fn create(
        engine: &Arc<Engine>,
        spec: &ContainerSpec,
        image_path: Option<&str>,
        extra_env: &[String],
    ) -> Result<DockerSandbox, SandboxError> {
        let (container, fifos) = start_with_fifos(engine, spec).await?;
        let (code, out) = container
            .exec_argv(&["sh", "-c", CAN_HOST_AGENT], &[])
            .await?;
        if code != 0 {
            return Err(SandboxError::Command(format!(
                "image {} cannot host an agent: {} (it needs bash, setsid, git and a git repository at {REPO_DIR})",
                spec.image,
                out.trim()
            )));
        }
        let (code, hidden) = container
            .exec_argv(&["sh", "-c", HIDE_LATER_HISTORY], &[])
            .await?;
        if code != 0 {
            return Err(SandboxError::Command(format!(
                "image {}: removing refs after the base commit failed: {}",
                spec.image,
                hidden.trim()
            )));
        }
        let mut env: Vec<String> = AGENT_ENV.iter().map(|s| s.to_string()).collect();
        if let Some(path) = image_path {
            env.push(format!("CBENCH_IMAGE_PATH={path}"));
        }
        env.extend(extra_env.iter().cloned());
        let container_id = container.id().to_string();
        let channel = match ExecChannel::open(
            container.engine(),
            container.id(),
            REPO_DIR,
            &env,
            fifos.as_ref(),
        )
        .await
        {
            Ok(channel) => Some(channel),
            Err(e) => {
                tracing::warn!(
                    "container {}: {e}; using one docker exec per command",
                    container.id()
                );
                None
            }
        };
        Ok(DockerSandbox {
            container,
            env,
            output_cap: DEFAULT_OUTPUT_CAP,
            team_client: None,
            channel: tokio::sync::Mutex::new(channel),
            disk: layer_watch(engine.clone(), container_id, spec.limits.disk_bytes).await,
            ended: std::sync::Mutex::new(None),
            last_ended: std::sync::Mutex::new(None),
            fifos,
        })
    }

    /// Whether commands currently go through the channel.
    pub async fn exec_path(&self) -> ExecPath {
        if self.channel.lock().await.is_some() {
            ExecPath::Channel
        } else {
            ExecPath::PlainExec
        }
    }

    /// Whether the channel is open and its bytes go over the FIFOs, not through the engine.
    pub async fn channel_over_fifos(&self) -> bool {
        match self.channel.lock().await.as_mut() {
            Some(channel) => channel.over_fifos(),
            None => false,
        }
    }

    /// The host directory mounted for the channel's FIFOs (empty once the channel opened).
    pub fn fifo_dir(&self) -> Option<std::path::PathBuf> {
        self.fifos.as_ref().map(FifoPair::dir)
    }

    /// Runs `command` by one plain docker exec (what the channel replaces; also its fallback).
    /// Its sweep of leftover processes spares nothing, so it ends an open channel: for
    /// measurements after the agent's work.
    pub async fn exec_plain(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        Ok(self
            .container
            .run_script(
                command,
                Shell::Login,
                REPO_DIR,
                &self.env,
                timeout,
                self.output_cap,
            )
            .await?)
    }

    /// Runs `script` through the channel when it is open, else by a plain exec.
    async fn run(
        &self,
        script: &str,
        shell: Shell,
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, SandboxError> {
        // What ran since the last command ended is this command's doing or its login shell's
        // (the agent's profile, started then).
        let since = self
            .last_ended
            .lock()
            .ok()
            .and_then(|last| *last)
            .unwrap_or_else(SystemTime::now);
        let result = self.run_once(script, shell, timeout, cap, since).await;
        if let Ok(mut last) = self.last_ended.lock() {
            *last = Some(SystemTime::now());
        }
        result
    }

    async fn run_once(
        &self,
        script: &str,
        shell: Shell,
        timeout: Duration,
        cap: usize,
        since: SystemTime,
    ) -> Result<ExecOutput, SandboxError> {
        let mut channel = self.channel.lock().await;
        if let Some(open) = channel.as_mut() {
            match open.run(script, shell, timeout, cap).await {
                Ok(out) => return Ok(out),
                Err(e) => {
                    *channel = None;
                    tracing::warn!(
                        "container {}: {e}; later commands use one docker exec each",
                        self.container.id()
                    );
                    let wait = if e.sent {
                        // The container's end is what broke the channel, or it still runs.
                        Duration::from_secs(1)
                    } else {
                        Duration::ZERO
                    };
                    let output = match self.container.stopped_within(wait, since).await {
                        Some(stopped) if stopped.out_of_memory => {
                            return Err(SandboxError::LimitExceeded(self.ended_by_memory()));
                        }
                        Some(_) => format!(
                            "cbench: the container has stopped ({}); no later command can \
                             run.",
                            e.reason
                        ),
                        None => format!(
                            "cbench: the connection to the container broke while this command ran ({}); \
                             whether it completed is unknown. Later commands work as before.",
                            e.reason
                        ),
                    };
                    if e.sent {
                        // It may have run: running it again could do its effects twice.
                        return Ok(ExecOutput {
                            exit_code: -1,
                            output,
                            timed_out: false,
                            truncated: false,
                        });
                    }
                }
            }
        }
        drop(channel);
        match self
            .container
            .run_script(script, shell, REPO_DIR, &self.env, timeout, cap)
            .await
        {
            Ok(out) => Ok(out),
            Err(e) => match self.container.stopped_within(Duration::ZERO, since).await {
                Some(stopped) if stopped.out_of_memory => {
                    Err(SandboxError::LimitExceeded(self.ended_by_memory()))
                }
                _ => Err(e.into()),
            },
        }
    }

    /// Notes that the agent's commands ran the container out of memory and stopped it (a
    /// command can make init the killer's first choice by raising its score, then exhaust the
    /// memory): its own limit, and no more commands run. Returns why.
    fn ended_by_memory(&self) -> String {
        let why = "the container ran out of memory (--memory) and its init process was killed, \
                   which stopped it; no more commands run";
        if let Ok(mut ended) = self.ended.lock() {
            *ended = Some(why.to_string());
        }
        why.to_string()
    }

    /// Makes `close` withdraw `ip` from the team server's client table.
    pub fn with_team_client(mut self, server: Arc<GitServer>, ip: String) -> DockerSandbox {
        self.team_client = Some((server, ip));
        self
    }

    /// The container (for tests and measurements).
    pub fn container(&self) -> &Container {
        &self.container
    }
}

/// Starts a container from `spec` with the exec channel's FIFOs mounted when the engine is
/// on this machine (reached through a unix socket). An engine that cannot mount them (its host
/// is not this one's file system) gets the container without them: the channel then uses the
/// exec's attached streams.
async fn start_with_fifos(
    engine: &Arc<Engine>,
    spec: &ContainerSpec,
) -> Result<(Container, Option<FifoPair>), SandboxError> {
    let fifos = if engine.endpoint().starts_with("unix://") {
        FifoPair::create()
            .map_err(|e| tracing::debug!("creating the exec channel's FIFOs: {e}"))
            .ok()
    } else {
        None
    };
    let Some(pair) = fifos else {
        return Ok((Container::start(engine, spec).await?, None));
    };
    match Container::start_with_binds(engine, spec, &[pair.mount()]).await {
        Ok(container) => Ok((container, Some(pair))),
        Err(DockerError::MissingImage { image, hint }) => {
            Err(DockerError::MissingImage { image, hint }.into())
        }
        Err(e) => {
            tracing::debug!("starting a container with the exec channel's FIFOs: {e}; without");
            Ok((Container::start(engine, spec).await?, None))
        }
    }
}

/// Watches a container's writable layer, measured from outside the container (nothing in it
/// the agent could replace): walked on the host where the engine's layer is here (as a local
/// sandbox's tree is), else measured by the engine.
async fn layer_watch(engine: Arc<Engine>, id: String, limit: u64) -> DiskWatch {
    if let Some(upper) = writable_layer_dir(&engine, &id).await {
        return DiskWatch::local(limit, vec![upper]);
    }
    DiskWatch::new(
        limit,
        Arc::new(move || {
            let (engine, id) = (engine.clone(), id.clone());
            Box::pin(async move { writable_layer_bytes(&engine, &id).await.ok() })
        }),
    )
}

fn repo_path(rel: &std::path::Path) -> String {
    format!("{REPO_DIR}/{}", rel.display())
}

#[async_trait]
impl Sandbox for DockerSandbox {
    async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SandboxError> {
        if let Some(why) = self.ended.lock().ok().and_then(|ended| ended.clone()) {
            return Err(SandboxError::LimitExceeded(why));
        }
        self.disk
            .check()
            .instrument(tracing::info_span!("disk_check"))
            .await?;
        let out = self
            .run(command, Shell::Login, timeout, self.output_cap)
            .instrument(tracing::info_span!("channel_round_trip"))
            .await;
        self.disk
            .measure_later()
            .instrument(tracing::info_span!("after_command"))
            .await;
        out
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let rel = checked_relative_path(path)?;
        Ok(self.container.read_file(&repo_path(rel)).await?)
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let rel = checked_relative_path(path)?;
        let entry = TarEntry::file(&rel.display().to_string(), contents, 0o644);
        Ok(self.container.upload(REPO_DIR, &[entry]).await?)
    }

    async fn snapshot(&self, mut writer: SnapshotWriter) -> Result<(), PatchError> {
        // The engine's archive of the tree: nothing runs in the container, so whatever the
        // agent did to it (its shell, its tools, the exec channel) cannot steer the patch.
        match self
            .container
            .download_with(REPO_DIR, move |archive| snapshot_tar(archive, &mut writer))
            .await
        {
            Ok(snapshot) => snapshot,
            // The agent deleted or moved its repository: its tree is gone, its doing.
            Err(DockerError::NoSuchPath(path)) => Err(PatchError::Rejected(format!(
                "the work tree {path} is gone"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn as_docker(&self) -> Option<&DockerSandbox> {
        Some(self)
    }

    /// Freezes the container (its tree stays readable for the snapshot): nothing started from
    /// the agent's profile or left behind runs again.
    async fn stop_commands(&self) {
        *self.channel.lock().await = None;
        if let Err(e) = self.container.freeze().await {
            tracing::warn!("stopping container {}: {e}", self.container.id());
        }
    }

    async fn close(&self) -> Result<(), SandboxError> {
        self.container.remove().await?;
        if let Some((server, ip)) = &self.team_client {
            server.forget(ip).await;
        }
        Ok(())
    }
}
