//! One container: created from an image with limits and labels, kept alive by a
//! tiny shell loop, driven by exec; files cross as tar archives (no argv limits).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use futures_util::StreamExt;

mod oneshot;
mod transfer;

use super::{is_not_found, DockerError, Engine, ResourceLimits};
use crate::exec::ExecOutput;
pub use oneshot::OneShot;
pub use transfer::{tar_archive, TarEntry};

/// How long to wait for the output stream to end after a timed-out command's group was killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

pub use cbench_core::exec::Shell;
use cbench_core::exec::{
    wrapper_argv, Sweep, INLINE_SCRIPT_MAX, KEEP_ALIVE, SCRIPT_DIR as SCRATCH,
};

/// What to create.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub image: String,
    pub labels: HashMap<String, String>,
    pub limits: ResourceLimits,
    /// `none`, `bridge`, or the name of a user-defined network.
    pub network: String,
    /// Extra environment for every process.
    pub env: Vec<String>,
    /// Working directory of the keep-alive process (execs set their own).
    pub working_dir: String,
    /// Drop every capability (agents: root in the container can then not mount,
    /// trace, or override file permissions).
    pub drop_capabilities: bool,
    /// Named volumes mounted read-write: (volume, path in the container).
    pub volumes: Vec<(String, String)>,
}

/// A host directory mounted into a container.
#[derive(Debug, Clone)]
pub struct BindMount {
    /// The directory on the engine's host.
    pub source: std::path::PathBuf,
    /// Where it appears in the container.
    pub target: String,
    /// Whether the container may only read it.
    pub read_only: bool,
}

/// A started container; removed (with its anonymous volumes) by `remove`, or on drop.
pub struct Container {
    engine: Arc<Engine>,
    id: String,
    removed: AtomicBool,
    next_script: AtomicU64,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("id", &self.id).finish()
    }
}

impl Container {
    /// Creates and starts a container from `spec`. A missing image is `MissingImage`.
    pub async fn start(
        engine: &Arc<Engine>,
        spec: &ContainerSpec,
    ) -> Result<Container, DockerError> {
        Container::start_with_binds(engine, spec, &[]).await
    }

    /// `start`, with host directories bind-mounted into the container.
    pub async fn start_with_binds(
        engine: &Arc<Engine>,
        spec: &ContainerSpec,
        binds: &[BindMount],
    ) -> Result<Container, DockerError> {
        let main = vec!["sh".into(), "-c".into(), KEEP_ALIVE.into()];
        let container = Container::create(engine, spec, binds, main, false).await?;
        container.start_created(&spec.image).await?;
        Ok(container)
    }

    /// Creates a container from `spec` whose main process is `main` (with its stdin open to one
    /// attach when `stdin` is set), not yet started.
    async fn create(
        engine: &Arc<Engine>,
        spec: &ContainerSpec,
        binds: &[BindMount],
        main: Vec<String>,
        stdin: bool,
    ) -> Result<Container, DockerError> {
        let api = engine.api();
        match api.inspect_image(&spec.image).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Err(DockerError::MissingImage {
                    image: spec.image.clone(),
                    hint: "cbench images build -r <repo> -t <task>".into(),
                })
            }
            Err(e) => return Err(DockerError::api(format!("inspecting image {}", spec.image))(e)),
        }
        let host_config = HostConfig {
            memory: Some(spec.limits.memory_bytes),
            // Equal to memory: no swap, so the cap is an OOM kill, not a slowdown.
            memory_swap: Some(spec.limits.memory_bytes),
            nano_cpus: Some((spec.limits.cpus * 1e9) as i64),
            pids_limit: Some(spec.limits.pids),
            // No file may grow past the disk limit while it is written (as locally): the limit
            // is otherwise checked only between commands. `u64::MAX`: no limit (graders).
            ulimits: (spec.limits.disk_bytes < u64::MAX).then(|| {
                let bytes = i64::try_from(spec.limits.disk_bytes).unwrap_or(i64::MAX);
                vec![bollard::models::ResourcesUlimits {
                    name: Some("fsize".into()),
                    soft: Some(bytes),
                    hard: Some(bytes),
                }]
            }),
            network_mode: Some(spec.network.clone()),
            cap_drop: spec.drop_capabilities.then(|| vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            // Nothing reads a container's log; kept, it is host disk any process inside could
            // fill by writing to init's stdout (/proc/1/fd/1).
            log_config: Some(bollard::models::HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            mounts: (!spec.volumes.is_empty() || !binds.is_empty()).then(|| {
                let volumes = spec
                    .volumes
                    .iter()
                    .map(|(volume, target)| bollard::models::Mount {
                        target: Some(target.clone()),
                        source: Some(volume.clone()),
                        typ: Some(bollard::models::MountType::VOLUME),
                        read_only: Some(false),
                        ..Default::default()
                    });
                let binds = binds.iter().map(|bind| bollard::models::Mount {
                    target: Some(bind.target.clone()),
                    source: Some(bind.source.display().to_string()),
                    typ: Some(bollard::models::MountType::BIND),
                    read_only: Some(bind.read_only),
                    ..Default::default()
                });
                volumes.chain(binds).collect()
            }),
            ..Default::default()
        };
        let networking_config = (!matches!(spec.network.as_str(), "none" | "bridge" | "host"))
            .then(|| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    spec.network.clone(),
                    EndpointSettings::default(),
                )])),
            });
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(main),
            cmd: Some(Vec::new()),
            open_stdin: stdin.then_some(true),
            stdin_once: stdin.then_some(true),
            attach_stdin: stdin.then_some(true),
            attach_stdout: stdin.then_some(true),
            attach_stderr: stdin.then_some(true),
            working_dir: Some(spec.working_dir.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            host_config: Some(host_config),
            networking_config,
            ..Default::default()
        };
        let created = api
            .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
            .await
            .map_err(DockerError::api(format!(
                "creating a container from {}",
                spec.image
            )))?;
        Ok(Container {
            engine: engine.clone(),
            id: created.id,
            removed: AtomicBool::new(false),
            next_script: AtomicU64::new(0),
        })
    }

    /// Starts a container `create` made (of `image`, for the error).
    async fn start_created(&self, image: &str) -> Result<(), DockerError> {
        self.engine
            .api()
            .start_container(&self.id, None)
            .await
            .map_err(DockerError::api(format!(
                "starting a container from {image}"
            )))
    }

    /// Creates (without starting) a container, e.g. to copy files out of an image.
    pub async fn create_stopped(
        engine: &Arc<Engine>,
        image: &str,
        labels: HashMap<String, String>,
    ) -> Result<Container, DockerError> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec!["true".into()]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = engine
            .api()
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    DockerError::MissingImage {
                        image: image.to_string(),
                        hint: "cbench images build -r <repo> -t <task>".into(),
                    }
                } else {
                    DockerError::api(format!("creating a container from {image}"))(e)
                }
            })?;
        Ok(Container {
            engine: engine.clone(),
            id: created.id,
            removed: AtomicBool::new(false),
            next_script: AtomicU64::new(0),
        })
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The engine the container runs on.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Runs `argv` to completion (no timeout, no cap): for short host-issued commands.
    pub async fn exec_argv(
        &self,
        argv: &[&str],
        env: &[String],
    ) -> Result<(i64, String), DockerError> {
        let api = self.engine.api();
        let exec = api
            .create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(argv.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                    env: Some(env.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(DockerError::api(format!("exec {}", argv.join(" "))))?;
        let mut text = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = api
            .start_exec(&exec.id, None)
            .await
            .map_err(DockerError::api(format!("exec {}", argv.join(" "))))?
        {
            while let Some(chunk) = output.next().await {
                match chunk {
                    Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }) => {
                        text.extend_from_slice(&message)
                    }
                    Ok(_) => {}
                    Err(e) => return Err(DockerError::api("reading exec output")(e)),
                }
            }
        }
        let code = self.exit_code(&exec.id).await?;
        Ok((
            code.unwrap_or(-1),
            String::from_utf8_lossy(&text).into_owned(),
        ))
    }

    async fn exit_code(&self, exec_id: &str) -> Result<Option<i64>, DockerError> {
        // The stream can end a moment before the engine records the exit code.
        for _ in 0..50 {
            let inspect = self
                .engine
                .api()
                .inspect_exec(exec_id)
                .await
                .map_err(DockerError::api("inspecting an exec"))?;
            if inspect.running != Some(true) {
                return Ok(inspect.exit_code);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(None)
    }

    /// Runs `script` with bash in `workdir`, in its own process group, with a timeout
    /// that kills the whole group, and merged stdout+stderr capped at `cap` bytes.
    pub async fn run_script(
        &self,
        script: &str,
        shell: Shell,
        workdir: &str,
        env: &[String],
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, DockerError> {
        let n = self.next_script.fetch_add(1, Ordering::Relaxed);
        let name = format!("cmd-{n}.sh");
        let path = format!("{SCRATCH}/{name}");
        let inline = script.len() <= INLINE_SCRIPT_MAX;
        if !inline {
            self.upload(
                "/",
                &[TarEntry::file(
                    &format!("{}/{name}", SCRATCH.trim_start_matches('/')),
                    script.as_bytes(),
                    0o644,
                )],
            )
            .await?;
        }
        let api = self.engine.api();
        let argv = wrapper_argv(&path, shell, inline.then_some(script), Sweep::All);
        let exec = api
            .create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(argv),
                    env: Some(env.to_vec()),
                    working_dir: Some(workdir.to_string()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(DockerError::api("creating an exec"))?;
        let StartExecResults::Attached { mut output, .. } = api
            .start_exec(&exec.id, None)
            .await
            .map_err(DockerError::api("starting an exec"))?
        else {
            return Err(DockerError::Other("exec started detached".into()));
        };
        let Captured {
            bytes: captured,
            truncated,
            timed_out,
        } = capture(&mut output, timeout, cap, || self.kill_script_group(&path)).await?;
        let exit_code = if timed_out {
            -1
        } else {
            self.exit_code(&exec.id).await?.unwrap_or(-1) as i32
        };
        Ok(ExecOutput {
            exit_code,
            output: String::from_utf8_lossy(&captured).into_owned(),
            timed_out,
            truncated,
        })
    }

    /// Kills the process group of the script at `path` (its wrapper wrote the pgid).
    async fn kill_script_group(&self, path: &str) {
        let pidfile = format!("{path}.pid");
        let result = self
            .exec_argv(
                &[
                    "sh",
                    "-c",
                    cbench_core::exec::KILL_GROUP,
                    "cbench-kill",
                    &pidfile,
                ],
                &[],
            )
            .await;
        if let Err(e) = result {
            tracing::warn!("could not kill a timed-out command in {}: {e}", self.id);
        }
    }

    /// Kills every process of the container (it stops; its files stay readable); a container
    /// already stopped or gone is fine.
    pub async fn kill(&self) -> Result<(), DockerError> {
        match self.engine.api().kill_container(&self.id, None).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::api(format!("killing container {}", self.id))(
                e,
            )),
        }
    }

    /// How the container stopped, if it stops within `within` (its init ended: the engine
    /// notes it a moment after the container's processes are gone); `None` while it runs or
    /// when the engine cannot say. `out_of_memory` counts only the kernel's out-of-memory kills
    /// since `since` (the engine's events: its `OOMKilled` flag stays set from any earlier
    /// kill, and is noted apart from the stop, in either order).
    pub async fn stopped_within(
        &self,
        within: std::time::Duration,
        since: std::time::SystemTime,
    ) -> Option<Stopped> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let state = self
                .engine
                .api()
                .inspect_container(&self.id, None)
                .await
                .ok()?
                .state?;
            if state.running == Some(false) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Some(Stopped {
            out_of_memory: self.oom_kills_since(since, OOM_EVENT_SETTLE).await,
        })
    }

    /// Whether the kernel killed a process of the container for memory since `since`, as the
    /// engine's events tell (waiting up to `settle` for the event to be noted).
    async fn oom_kills_since(
        &self,
        since: std::time::SystemTime,
        settle: std::time::Duration,
    ) -> bool {
        use futures_util::StreamExt;
        let stamp = |t: std::time::SystemTime| {
            let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
        };
        let filters = std::collections::HashMap::from([
            ("type", vec![String::from("container")]),
            ("container", vec![self.id.clone()]),
            ("event", vec![String::from("oom")]),
        ]);
        let options = bollard::query_parameters::EventsOptionsBuilder::new()
            .since(&stamp(since))
            .until(&stamp(std::time::SystemTime::now() + settle))
            .filters(&filters)
            .build();
        let mut events = std::pin::pin!(self.engine.api().events(Some(options)));
        // The stream ends at `until`; the first event is enough.
        matches!(events.next().await, Some(Ok(_)))
    }

    /// Stops every process of the container where it stands (the engine's freezer: no
    /// process runs again; the tree stays mounted, so reading it needs no remount), or kills
    /// them where the engine cannot pause (rootless cgroup v1).
    pub async fn freeze(&self) -> Result<(), DockerError> {
        match self.engine.api().pause_container(&self.id).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => {
                tracing::debug!("pausing container {}: {e}; killing it", self.id);
                self.kill().await
            }
        }
    }

    /// Force-removes the container and its anonymous volumes; idempotent.
    pub async fn remove(&self) -> Result<(), DockerError> {
        if self.removed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        remove_container(self.engine.api(), &self.id).await
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        // Dropped without `remove` (an error path, an aborted pair): remove in the
        // background; the run's label sweep at exit catches what this misses.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let api = self.engine.api().clone();
            let id = self.id.clone();
            handle.spawn(async move {
                if let Err(e) = remove_container(&api, &id).await {
                    tracing::warn!("{e}");
                }
            });
        }
    }
}

/// What a command printed (stdout and stderr merged, in order), and how it ended.
struct Captured {
    bytes: Vec<u8>,
    /// It printed more than the cap.
    truncated: bool,
    /// Its deadline passed (and `kill` ran).
    timed_out: bool,
}

/// Reads `output` until it ends, keeping at most `cap` bytes; once `timeout` passes, `kill`
/// runs and what follows within `DRAIN_GRACE` is kept too.
async fn capture<S, K, F>(
    output: &mut S,
    timeout: Duration,
    cap: usize,
    kill: K,
) -> Result<Captured, DockerError>
where
    S: futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
    K: FnOnce() -> F,
    F: std::future::Future<Output = ()>,
{
    let mut captured = Captured {
        bytes: Vec::new(),
        truncated: false,
        timed_out: false,
    };
    let deadline = Instant::now() + timeout;
    let mut kill = Some(kill);
    loop {
        let next = if captured.timed_out {
            tokio::time::timeout(DRAIN_GRACE, output.next()).await
        } else {
            tokio::time::timeout_at(deadline.into(), output.next()).await
        };
        match next {
            Ok(Some(Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }))) => {
                let room = cap.saturating_sub(captured.bytes.len());
                captured.truncated |= message.len() > room;
                captured
                    .bytes
                    .extend_from_slice(&message[..message.len().min(room)]);
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(DockerError::api("reading a command's output")(e)),
            Ok(None) => break,
            Err(_) if captured.timed_out => break,
            Err(_) => {
                captured.timed_out = true;
                if let Some(kill) = kill.take() {
                    kill().await;
                }
            }
        }
    }
    Ok(captured)
}

/// How long the engine may take to note an out-of-memory kill after the stop it caused.
const OOM_EVENT_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// How a container stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The kernel's out-of-memory killer ended a process of it (the container's memory limit)
    /// in the time asked about.
    pub out_of_memory: bool,
}

/// Force-removes a container (and its anonymous volumes); a missing one is fine.
pub async fn remove_container(api: &bollard::Docker, id: &str) -> Result<(), DockerError> {
    match api
        .remove_container(
            id,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // "removal already in progress" from a concurrent sweep.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(e) => Err(DockerError::api(format!("removing container {id}"))(e)),
    }
}

/// The host directory holding container `id`'s writable layer, when this process can walk it
/// itself: an `overlay2` engine on this machine (its upper directory, named by a random layer
/// id, exists here). Walking it costs a fraction of a millisecond; asking the engine for the
/// size (`writable_layer_bytes`) costs 3–13 ms under load, which an instant model's next
/// command would wait for.
pub async fn writable_layer_dir(engine: &Engine, id: &str) -> Option<std::path::PathBuf> {
    let info = engine.api().inspect_container(id, None).await.ok()?;
    let driver = info.graph_driver?;
    if driver.name != "overlay2" {
        return None;
    }
    let upper = std::path::PathBuf::from(driver.data.get("UpperDir")?);
    let probe = upper.clone();
    let walkable = tokio::task::spawn_blocking(move || {
        probe.is_absolute()
            && std::fs::symlink_metadata(&probe).is_ok_and(|m| m.is_dir())
            && std::fs::read_dir(&probe).is_ok()
    })
    .await
    .unwrap_or(false);
    walkable.then_some(upper)
}

/// Bytes in container `id`'s writable layer (what it wrote beyond its image), as the engine
/// measures it.
pub async fn writable_layer_bytes(engine: &Engine, id: &str) -> Result<u64, DockerError> {
    let info = engine
        .api()
        .inspect_container(
            id,
            Some(
                bollard::query_parameters::InspectContainerOptionsBuilder::default()
                    .size(true)
                    .build(),
            ),
        )
        .await
        .map_err(DockerError::api(format!("measuring container {id}")))?;
    Ok(info.size_rw.unwrap_or(0).max(0) as u64)
}
