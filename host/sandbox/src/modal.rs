//! The modal backend: one Modal sandbox per agent from the task's image (registry tag), the
//! repository at `/workspace/repo`, every command a fresh login shell through the sandbox's
//! command router (the same wrapper as docker: own session, killed with its group on timeout,
//! leftovers swept), files through stdin and stdout of `cat`, the tree as a tar stream.
//!
//! Unlike docker, nothing outside the sandbox can read its files: the snapshot is a `tar` run
//! inside it. Its output is parsed as hostile data (the same limits and checks as docker's
//! archive), and a forged archive can only claim a tree the agent could have written anyway.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cbench_core::exec::{wrapper_argv, Shell, Sweep, INLINE_SCRIPT_MAX, SCRIPT_DIR};
use cbench_modal::{ExecRequest, ModalClient, RemoteSandbox, SandboxDefinition};

use super::docker::{AGENT_ENV, CAN_HOST_AGENT, HIDE_LATER_HISTORY, REPO_DIR};
use super::local::DEFAULT_OUTPUT_CAP;
use super::patch::{snapshot_tar, PatchError, SnapshotWriter};
use super::{checked_relative_path, ExecOutput, Sandbox, SandboxError};

/// How long a new sandbox may take to be scheduled and start (image pulls included).
pub const START_WAIT: Duration = Duration::from_secs(600);
/// Largest file `read_file` returns.
const READ_CAP: usize = 64 << 20;
/// Largest archive of a work tree (held in memory while it is parsed).
const SNAPSHOT_CAP: usize = 512 << 20;
/// How long archiving an agent's work tree may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Room for the wrapper's own errors (the command's stderr is merged into stdout).
const WRAPPER_STDERR_CAP: usize = 16 << 10;
/// Deadline of the harness's own short commands (checks, kills, file transfers).
const HARNESS_TIMEOUT: Duration = Duration::from_secs(120);

/// The main process of every sandbox cbench makes: the keep-alive docker containers run (it
/// ignores the signals an agent can send it, so where it is the sandbox's init an agent cannot
/// end its own sandbox and void its pair).
pub fn keep_alive() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        cbench_core::exec::KEEP_ALIVE.into(),
    ]
}

/// Task images as Modal images (built once per registry tag and process).
pub struct ModalImages {
    client: Arc<ModalClient>,
    app_id: String,
    built:
        tokio::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::OnceCell<String>>>>,
}

impl ModalImages {
    /// Images of app `app_id`.
    pub fn new(client: Arc<ModalClient>, app_id: &str) -> ModalImages {
        ModalImages {
            client,
            app_id: app_id.to_string(),
            built: Default::default(),
        }
    }

    /// Modal's image id of registry tag `tag` (built on first use; concurrent users wait).
    pub async fn get(&self, tag: &str) -> Result<String, SandboxError> {
        let cell = self
            .built
            .lock()
            .await
            .entry(tag.to_string())
            .or_default()
            .clone();
        let id = cell
            .get_or_try_init(|| self.client.image_from_registry(&self.app_id, tag))
            .await?;
        Ok(id.clone())
    }

    /// The client the images were built with.
    pub fn client(&self) -> &Arc<ModalClient> {
        &self.client
    }

    /// The app sandboxes are created in.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }
}

/// Directories CooperBench puts before an agent's PATH on Modal (its agents found that Modal's
/// exec does not inherit the image's `ENV PATH`); the PATH a plain exec sees follows them.
const TOOLCHAIN_PATH: &str =
    "/usr/local/cargo/bin:/usr/local/go/bin:/root/.cargo/bin:/root/go/bin:/usr/local/bin";

/// One agent's Modal sandbox.
pub struct ModalSandbox {
    remote: RemoteSandbox,
    env: Vec<(String, String)>,
    output_cap: usize,
}

impl ModalSandbox {
    /// Creates the sandbox from `definition` and checks it can host an agent (bash, setsid,
    /// git, the repository), then hides the history after the base as docker does.
    pub async fn create(
        client: Arc<ModalClient>,
        app_id: &str,
        definition: &SandboxDefinition,
    ) -> Result<ModalSandbox, SandboxError> {
        let remote = RemoteSandbox::create(client, app_id, definition, START_WAIT).await?;
        let mut sandbox = ModalSandbox {
            remote,
            env: Vec::new(),
            output_cap: DEFAULT_OUTPUT_CAP,
        };
        for (script, what) in [
            (CAN_HOST_AGENT, "cannot host an agent (it needs bash, setsid, git and a git repository at /workspace/repo)"),
            (HIDE_LATER_HISTORY, "removing refs after the base commit failed"),
        ] {
            let out = harness_exec(&sandbox.remote, &["sh", "-c", script], None).await?;
            if out.0 != 0 {
                let _ = sandbox.remote.terminate().await;
                return Err(SandboxError::Command(format!(
                    "modal sandbox {} from {}: {what}: {}",
                    sandbox.remote.id(),
                    definition.image_id,
                    String::from_utf8_lossy(&out.1).trim()
                )));
            }
        }
        // The PATH a plain exec sees (the image's, where Modal passes it on), restored after a
        // login shell's profile resets it.
        let (_, path) =
            harness_exec(&sandbox.remote, &["sh", "-c", "printf %s \"$PATH\""], None).await?;
        let path = String::from_utf8_lossy(&path).trim().to_string();
        sandbox.env = agent_env(Some(&format!("{TOOLCHAIN_PATH}:{path}")));
        Ok(sandbox)
    }

    /// The remote sandbox (for tests and measurements).
    pub fn remote(&self) -> &RemoteSandbox {
        &self.remote
    }
}

/// The environment of agents' commands, as on docker.
fn agent_env(image_path: Option<&str>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = AGENT_ENV
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(path) = image_path {
        env.push(("CBENCH_IMAGE_PATH".into(), path.to_string()));
    }
    env
}

/// Runs one of the harness's own commands: (exit code, stdout then stderr).
async fn harness_exec(
    remote: &RemoteSandbox,
    argv: &[&str],
    stdin: Option<Vec<u8>>,
) -> Result<(i32, Vec<u8>), SandboxError> {
    let reply = remote
        .exec(&ExecRequest {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            timeout: HARNESS_TIMEOUT,
            stdin,
            stdout_cap: 64 << 10,
            stderr_cap: 64 << 10,
            ..Default::default()
        })
        .await?;
    let Some(code) = reply.exit_code else {
        return Err(SandboxError::Command(format!(
            "modal sandbox {}: `{}` did not finish within {} s",
            remote.id(),
            argv.first().unwrap_or(&""),
            HARNESS_TIMEOUT.as_secs()
        )));
    };
    let mut output = reply.stdout;
    output.extend_from_slice(&reply.stderr);
    Ok((code, output))
}

/// Writes `contents` to the absolute `path` in the sandbox (parents created), through stdin.
pub async fn write_remote_file(
    remote: &RemoteSandbox,
    path: &str,
    contents: &[u8],
) -> Result<(), SandboxError> {
    let (code, out) = harness_exec(
        remote,
        &[
            "sh",
            "-c",
            r#"mkdir -p "$(dirname "$1")" && cat > "$1""#,
            "cbench-write",
            path,
        ],
        Some(contents.to_vec()),
    )
    .await?;
    if code != 0 {
        return Err(SandboxError::Command(format!(
            "modal sandbox {}: writing {path}: {}",
            remote.id(),
            String::from_utf8_lossy(&out).trim()
        )));
    }
    Ok(())
}

/// Runs `script` through the shared exec wrapper (own session, group killed on timeout,
/// leftovers carrying its marker swept), output merged and capped as on docker.
pub async fn run_remote_script(
    remote: &RemoteSandbox,
    script: &str,
    shell: Shell,
    env: &[(String, String)],
    timeout: Duration,
    cap: usize,
) -> Result<ExecOutput, SandboxError> {
    static NEXT_SCRIPT: AtomicU64 = AtomicU64::new(0);
    let path = format!(
        "{SCRIPT_DIR}/cmd-{}.sh",
        NEXT_SCRIPT.fetch_add(1, Ordering::Relaxed)
    );
    let inline = script.len() <= INLINE_SCRIPT_MAX;
    if !inline {
        match write_remote_file(remote, &path, script.as_bytes()).await {
            Ok(()) => {}
            // The sandbox refused the file (the agent's doing: a full disk, a file where the
            // script directory goes): the command cannot start, as an inline one would exit 126.
            Err(SandboxError::Command(why)) => {
                return Ok(ExecOutput {
                    exit_code: 126,
                    output: format!("cbench: the command could not be started: {why}\n"),
                    timed_out: false,
                    truncated: false,
                })
            }
            Err(e) => return Err(e),
        }
    }
    let reply = remote
        .exec(&ExecRequest {
            argv: wrapper_argv(&path, shell, inline.then_some(script), Sweep::Marked),
            env: env.to_vec(),
            workdir: Some(REPO_DIR.into()),
            timeout,
            stdin: None,
            stdout_cap: cap,
            stderr_cap: WRAPPER_STDERR_CAP,
        })
        .await?;
    // The wrapper's first stderr line is the command's process group, printed before the
    // command ran (so it cannot be forged); the rest is the wrapper's own errors.
    let stderr = String::from_utf8_lossy(&reply.stderr);
    let (pgid, wrapper_errors) = match stderr.split_once('\n') {
        Some((first, rest)) if first.starts_with("cbench-pgid:") => (
            first["cbench-pgid:".len()..]
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|p| *p > 1),
            rest.to_string(),
        ),
        _ => (None, stderr.to_string()),
    };
    let mut output = String::from_utf8_lossy(&reply.stdout).into_owned();
    output.push_str(&wrapper_errors);
    let truncated = reply.stdout_truncated;
    let Some(exit_code) = reply.exit_code else {
        // Killed by the id the wrapper printed, never by a file the command could rewrite.
        let killed = match pgid {
            Some(pgid) => harness_exec(
                remote,
                &[
                    "sh",
                    "-c",
                    r#"kill -9 "-$1""#,
                    "cbench-kill",
                    &pgid.to_string(),
                ],
                None,
            )
            .await
            .map(|_| ()),
            None => Err(SandboxError::Command(
                "the command's process group is unknown".into(),
            )),
        };
        if let Err(e) = killed {
            tracing::warn!(
                "could not kill a timed-out command in modal sandbox {}: {e}",
                remote.id()
            );
        }
        return Ok(ExecOutput {
            exit_code: -1,
            output,
            timed_out: true,
            truncated,
        });
    };
    Ok(ExecOutput {
        exit_code,
        output,
        timed_out: false,
        truncated,
    })
}

/// Checks `archive` is a whole tar archive: a multiple of 512 bytes ending in the two zero
/// blocks that close an archive, every entry readable to its end.
fn whole_archive(archive: &[u8]) -> Result<(), String> {
    let closed = archive.len() >= 1024
        && archive.len().is_multiple_of(512)
        && archive[archive.len() - 1024..].iter().all(|b| *b == 0);
    if !closed {
        return Err(format!(
            "{} bytes without the end-of-archive blocks",
            archive.len()
        ));
    }
    let mut tar = tar::Archive::new(Cursor::new(archive));
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn repo_path(rel: &std::path::Path) -> String {
    format!("{REPO_DIR}/{}", rel.display())
}

#[async_trait]
impl Sandbox for ModalSandbox {
    async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SandboxError> {
        run_remote_script(
            &self.remote,
            command,
            Shell::Login,
            &self.env,
            timeout,
            self.output_cap,
        )
        .await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let rel = checked_relative_path(path)?;
        let full = repo_path(rel);
        let reply = self
            .remote
            .exec(&ExecRequest {
                argv: vec!["cat".into(), "--".into(), full.clone()],
                timeout: HARNESS_TIMEOUT,
                stdout_cap: READ_CAP,
                stderr_cap: 4 << 10,
                ..Default::default()
            })
            .await?;
        match reply.exit_code {
            Some(0) if !reply.stdout_truncated => Ok(reply.stdout),
            Some(0) => Err(SandboxError::Command(format!(
                "{path}: larger than {} MiB",
                READ_CAP >> 20
            ))),
            _ => Err(SandboxError::Command(format!(
                "reading {path}: {}",
                String::from_utf8_lossy(&reply.stderr).trim()
            ))),
        }
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let rel = checked_relative_path(path)?;
        write_remote_file(&self.remote, &repo_path(rel), contents).await
    }

    async fn snapshot(&self, mut writer: SnapshotWriter) -> Result<(), PatchError> {
        let reply = self
            .remote
            .exec(&ExecRequest {
                argv: [
                    "tar",
                    "-C",
                    "/workspace",
                    "--exclude=repo/.git",
                    "-cf",
                    "-",
                    "repo",
                ]
                .map(String::from)
                .to_vec(),
                timeout: SNAPSHOT_TIMEOUT,
                stdout_cap: SNAPSHOT_CAP,
                stderr_cap: 4 << 10,
                ..Default::default()
            })
            .await
            .map_err(SandboxError::from)?;
        let stderr = String::from_utf8_lossy(&reply.stderr);
        match reply.exit_code {
            // Only the agent's own sandbox is involved (a real tree archives in seconds): a
            // `tar` it replaced or starved is its doing, not a reason to run the pair again.
            None => Err(PatchError::Rejected(format!(
                "archiving the work tree did not finish in {} s",
                SNAPSHOT_TIMEOUT.as_secs()
            ))),
            Some(_) if reply.stdout_truncated => Err(PatchError::Rejected(format!(
                "the work tree's archive is over {} MiB",
                SNAPSHOT_CAP >> 20
            ))),
            // 1: a file changed while it was read (the archive is still whole); anything else:
            // it failed (the agent deleted or moved its repository, replaced `tar`): its doing.
            Some(code) if !(0..=1).contains(&code) => Err(PatchError::Rejected(format!(
                "archiving the work tree {REPO_DIR} failed (tar exit {code}): {}",
                stderr.trim()
            ))),
            Some(_) => {
                // The archive came out of the agent's sandbox: it is checked whole before any
                // of it is written, so a malformed or cut one is the agent's failure, and what
                // fails after that is the host's.
                let archive = reply.stdout;
                if let Err(why) = whole_archive(&archive) {
                    return Err(PatchError::Rejected(format!(
                        "the work tree's archive is not a whole tar archive: {why}"
                    )));
                }
                let mut archive = Cursor::new(archive);
                tokio::task::spawn_blocking(move || snapshot_tar(&mut archive, &mut writer))
                    .await
                    .map_err(|e| {
                        PatchError::Infra(SandboxError::Command(format!(
                            "reading the archive of the work tree: {e}"
                        )))
                    })?
            }
        }
    }

    async fn close(&self) -> Result<(), SandboxError> {
        Ok(self.remote.terminate().await?)
    }
}

/// The tags of every sandbox of one invocation: the docker labels' names and values, so one
/// vocabulary finds a run's objects on either backend.
pub fn tags_of(labels: std::collections::HashMap<String, String>) -> cbench_modal::Tags {
    let mut tags: cbench_modal::Tags = labels.into_iter().collect();
    tags.sort();
    tags
}

/// Terminates the sandboxes of `app_id` that `scope` selects (see the docker sweep's
/// scopes: a run's own, a run name's dead invocations, every dead one, everything); how many.
pub async fn sweep(
    client: &ModalClient,
    app_id: &str,
    scope: &cbench_docker::cleanup::Scope,
) -> Result<usize, SandboxError> {
    use cbench_docker::cleanup::Scope;
    use cbench_docker::{LABEL_MANAGED, LABEL_OWNER, LABEL_RUN, LABEL_RUN_ID};
    let filter = match scope {
        Scope::RunId(id) => (LABEL_RUN_ID.to_string(), id.clone()),
        Scope::RunName(name) => (LABEL_RUN.to_string(), name.clone()),
        Scope::Orphans | Scope::All => (LABEL_MANAGED.to_string(), "1".to_string()),
    };
    let keep_live = matches!(scope, Scope::RunName(_) | Scope::Orphans);
    let mut terminated = 0;
    for listed in client.list(app_id, &vec![filter]).await? {
        let owner = listed
            .tags
            .iter()
            .find(|(k, _)| k == LABEL_OWNER)
            .map(|(_, v)| v.as_str());
        if listed.ended.is_none()
            && (!keep_live || owner.is_none_or(cbench_core::process::owner_is_gone))
        {
            client.terminate(&listed.id).await?;
            terminated += 1;
        }
    }
    Ok(terminated)
}

/// Invocations of this process that have Modal sandboxes: swept on a signal.
static ACTIVE: std::sync::Mutex<Vec<(Arc<ModalClient>, String, String)>> =
    std::sync::Mutex::new(Vec::new());

/// Records that run id `run_id` may leave sandboxes in `app_id`.
pub fn register(client: &Arc<ModalClient>, app_id: &str, run_id: &str) {
    if let Ok(mut active) = ACTIVE.lock() {
        active.push((client.clone(), app_id.to_string(), run_id.to_string()));
    }
}

/// Terminates every registered invocation's sandboxes (after Ctrl-C / SIGTERM), twice: a
/// sandbox whose creation was in flight when the run was dropped appears late.
pub async fn sweep_registered() -> Result<usize, SandboxError> {
    let active = match ACTIVE.lock() {
        Ok(a) => a.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let mut total = 0;
    for round in 0..2 {
        if round > 0 && !active.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for (client, app_id, run_id) in &active {
            let scope = cbench_docker::cleanup::Scope::RunId(run_id.clone());
            total += sweep(client, app_id, &scope).await?;
        }
    }
    Ok(total)
}
