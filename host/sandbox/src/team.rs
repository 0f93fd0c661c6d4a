//! `--git`: a shared remote named `team` per pair. Agents fetch from it and push
//! their own branch (`refs/heads/<agent-id>`, or below it); any other push is refused.
//!
//! Local backend: a bare repository on the host, seeded with the base; the pusher is
//! named by `CBENCH_AGENT_ID` in its environment, so which branch a push may update is a
//! convention between cooperating agents there; the repository's config and hooks are
//! read-only to every agent (only `objects/` and `refs/` are writable), so no agent can make
//! code run in another's push or fetch. Docker backend: one `git daemon` container per run
//! on a private internal network (never published on the host); a client is named by
//! its container's IP, which the agent cannot change, and may reach only its pair's
//! repository.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::models::NetworkCreateRequest;

use crate::base::BaseRepo;
use crate::git::git;
use crate::io;
use crate::SandboxError;
use cbench_docker::container::{Container, ContainerSpec, TarEntry};
use cbench_docker::{DockerError, Engine, ResourceLimits, RunLabels};

/// The remote's name in every agent's repository.
pub const REMOTE_NAME: &str = "team";
/// What a push writes in a local bare remote; the rest (config, hooks) is read-only to agents.
pub const PUSH_WRITABLE: [&str; 2] = ["objects", "refs"];
/// Where the git server keeps repositories, hooks and its client table.
const SERVER_ROOT: &str = "/srv/cbench-git";

/// `update` hook: only the pusher's own branch may change. The pusher is the
/// client table's entry for the connecting IP (docker), else `CBENCH_AGENT_ID` (local).
const UPDATE_HOOK: &str = r#"#!/bin/sh
ref="$1"
if [ -n "$REMOTE_ADDR" ]; then
  read -r key agent < "/srv/cbench-git/clients/$REMOTE_ADDR" || { echo "team: unknown client $REMOTE_ADDR" >&2; exit 1; }
else
  agent="$CBENCH_AGENT_ID"
fi
[ -n "$agent" ] || { echo "team: cannot tell who is pushing" >&2; exit 1; }
case "$ref" in
  "refs/heads/$agent"|"refs/heads/$agent/"*) exit 0 ;;
esac
echo "team: $agent may push only to its own branch (refs/heads/$agent), not $ref" >&2
exit 1
"#;

/// `git daemon --access-hook`: a client may reach only its own pair's repository.
const ACCESS_HOOK: &str = r#"#!/bin/sh
f="/srv/cbench-git/clients/$REMOTE_ADDR"
[ -f "$f" ] || exit 1
read -r key agent < "$f"
case "$2" in
  */"$key.git"|*/"$key.git/") exit 0 ;;
esac
exit 1
"#;

/// One pair's remote, as the sandboxes need it.
#[derive(Clone)]
pub enum PairRemote {
    /// A bare repository on the host (kept alive by the TempDir).
    Local {
        bare: PathBuf,
        _dir: Arc<tempfile::TempDir>,
    },
    /// A repository on the run's git server.
    Docker { server: Arc<GitServer>, key: String },
}

impl PairRemote {
    /// The URL agents fetch from and push to.
    pub fn url(&self) -> String {
        match self {
            PairRemote::Local { bare, .. } => bare.display().to_string(),
            PairRemote::Docker { server, key } => format!("git://{}/{key}.git", server.ip),
        }
    }
}

/// A bare clone of `base` (branch `main` = the base) with the update hook.
async fn seeded_bare_repo(base: &BaseRepo, dest: &Path) -> Result<(), SandboxError> {
    let parent = dest.parent().unwrap_or(dest);
    let dest_arg = dest.display().to_string();
    let base_arg = base.path.display().to_string();
    git(
        parent,
        &["clone", "-q", "--bare", &base_arg, &dest_arg],
        &[],
    )
    .await?;
    git(dest, &["remote", "remove", "origin"], &[]).await?;
    git(dest, &["update-ref", "refs/heads/main", &base.commit], &[]).await?;
    let hook = dest.join("hooks").join("update");
    std::fs::write(&hook, UPDATE_HOOK).map_err(io(format!("writing {}", hook.display())))?;
    set_executable(&hook)?;
    Ok(())
}

fn set_executable(path: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("making {} executable", path.display())))
}

/// Creates a local pair remote under `parent`.
pub async fn local_remote(base: &BaseRepo, parent: &Path) -> Result<PairRemote, SandboxError> {
    std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    let dir = tempfile::Builder::new()
        .prefix("team-")
        .tempdir_in(parent)
        .map_err(io("creating the team remote dir"))?;
    let bare = dir.path().join("team.git");
    seeded_bare_repo(base, &bare).await?;
    Ok(PairRemote::Local {
        bare,
        _dir: Arc::new(dir),
    })
}

/// The run's git daemon and its private network.
pub struct GitServer {
    container: Container,
    /// Name of the internal network agents join.
    pub network: String,
    /// The server's address on that network.
    pub ip: String,
}

impl GitServer {
    /// Creates the run's internal network and starts `git daemon` in `image` on it.
    pub async fn start(
        engine: &Arc<Engine>,
        labels: &RunLabels,
        image: &str,
    ) -> Result<GitServer, SandboxError> {
        let network = format!("cbench-{}-team", labels.run_id);
        engine
            .api()
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                // No route out and nothing published: only the run's containers meet here.
                internal: Some(true),
                labels: Some(labels.object("", "", "team-network")),
                ..Default::default()
            })
            .await
            .map_err(DockerError::api(format!("creating network {network}")))?;
        let spec = ContainerSpec {
            image: image.to_string(),
            labels: labels.object("", "", "git-server"),
            limits: ResourceLimits {
                cpus: 1.0,
                memory_bytes: 1 << 30,
                pids: 512,
                ..ResourceLimits::default()
            },
            network: network.clone(),
            env: Vec::new(),
            working_dir: "/".into(),
            drop_capabilities: false,
            volumes: Vec::new(),
        };
        let container = Container::start(engine, &spec).await?;
        container
            .upload(
                "/",
                &[
                    TarEntry::dir("srv/cbench-git/repos"),
                    TarEntry::dir("srv/cbench-git/clients"),
                    TarEntry::file("srv/cbench-git/hooks/update", UPDATE_HOOK.as_bytes(), 0o755),
                    TarEntry::file("srv/cbench-git/hooks/access", ACCESS_HOOK.as_bytes(), 0o755),
                ],
            )
            .await?;
        let (code, out) = container
            .exec_argv(
                &[
                    "git",
                    "daemon",
                    "--detach",
                    "--reuseaddr",
                    "--listen=0.0.0.0",
                    "--export-all",
                    "--enable=receive-pack",
                    &format!("--base-path={SERVER_ROOT}/repos"),
                    &format!("--access-hook={SERVER_ROOT}/hooks/access"),
                    &format!("--pid-file={SERVER_ROOT}/daemon.pid"),
                    &format!("{SERVER_ROOT}/repos"),
                ],
                &[],
            )
            .await?;
        if code != 0 {
            return Err(SandboxError::Command(format!(
                "--git: `git daemon` does not start in {image}: {} (give an image whose git has the daemon, e.g. Debian's)",
                out.trim()
            )));
        }
        let ip = container_ip(engine, container.id(), &network).await?;
        Ok(GitServer {
            container,
            network,
            ip,
        })
    }

    /// Adds the repository `<key>.git`, seeded with `base`, built on the host in `scratch`.
    pub async fn add_repo(
        &self,
        key: &str,
        base: &BaseRepo,
        scratch: &Path,
    ) -> Result<(), SandboxError> {
        std::fs::create_dir_all(scratch).map_err(io(format!("creating {}", scratch.display())))?;
        let dir = tempfile::Builder::new()
            .prefix("team-")
            .tempdir_in(scratch)
            .map_err(io("creating a scratch dir"))?;
        let bare = dir.path().join(format!("{key}.git"));
        seeded_bare_repo(base, &bare).await?;
        // Hooks live on the server; pushes need no per-repo enabling beyond --enable.
        git(
            &bare,
            &["config", "core.hooksPath", &format!("{SERVER_ROOT}/hooks")],
            &[],
        )
        .await?;
        let archive = dir.path().join("repo.tar");
        {
            let file = std::fs::File::create(&archive).map_err(io("creating an archive"))?;
            let mut tar = tar::Builder::new(file);
            tar.append_dir_all(format!("{key}.git"), &bare)
                .and_then(|_| tar.finish())
                .map_err(io(format!("archiving {}", bare.display())))?;
        }
        let bytes = std::fs::read(&archive).map_err(io("reading an archive"))?;
        self.container
            .upload_archive(&format!("{SERVER_ROOT}/repos"), bytes)
            .await?;
        Ok(())
    }

    /// Lets the container at `ip` reach repository `key` as `agent`.
    pub async fn admit(&self, ip: &str, key: &str, agent: &str) -> Result<(), SandboxError> {
        let entry = TarEntry::file(ip, format!("{key} {agent}\n").as_bytes(), 0o644);
        Ok(self
            .container
            .upload(&format!("{SERVER_ROOT}/clients"), &[entry])
            .await?)
    }

    /// Forgets `ip` (its container is gone; docker may hand the address to another).
    pub async fn forget(&self, ip: &str) {
        let path = format!("{SERVER_ROOT}/clients/{ip}");
        if let Err(e) = self.container.exec_argv(&["rm", "-f", &path], &[]).await {
            tracing::warn!("team server: forgetting {ip}: {e}");
        }
    }
}

/// The IPv4 address of container `id` on `network`.
pub async fn container_ip(
    engine: &Engine,
    id: &str,
    network: &str,
) -> Result<String, SandboxError> {
    let info = engine
        .api()
        .inspect_container(id, None)
        .await
        .map_err(DockerError::api(format!("inspecting container {id}")))?;
    info.network_settings
        .and_then(|s| s.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|e| e.ip_address)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| {
            SandboxError::Command(format!(
                "container {id} has no address on network {network}"
            ))
        })
}
