//! Sandbox backends as the runner sees them: which one and its settings, how an
//! agent's sandbox is made, how grading runs, and what is cleaned up at the end.

use std::path::Path;
use std::sync::Arc;

use crate::dataset::Pair;
use crate::docker::container::ContainerSpec;
use crate::docker::{cleanup, images, Engine, ResourceLimits, RunLabels};
use crate::eval::gcp_bench::{self, GcpGrading};
use crate::eval::testbench::{DockerGrading, GradingBackend};
use crate::repos::{BaseRepos, ImageBases, UpstreamRepos};
use crate::sandbox::confine::{Confinement, LocalOptions};
use crate::sandbox::docker::{DockerSandbox, REPO_DIR};
use crate::sandbox::local::LocalSandbox;
use crate::sandbox::modal::{self as modal, ModalImages, ModalSandbox};
use crate::sandbox::pool::{PoolStats, PoolTemplate, SandboxPool};
use crate::sandbox::scratchpad::{Scratchpad, SCRATCHPAD_DIR};
use crate::sandbox::{Sandbox, SandboxError};
use crate::team::{self, GitServer, PairRemote};
use tokio::sync::OnceCell;

/// `--backend` and its settings, validated.
#[derive(Debug, Clone)]
pub enum BackendChoice {
    Local(LocalOptions),
    Docker(DockerOptions),
    Modal(ModalOptions),
    Gcp(GcpOptions),
}

impl BackendChoice {
    /// `local`, `docker`, `modal` or `gcp`.
    pub fn name(&self) -> &'static str {
        match self {
            BackendChoice::Local(_) => "local",
            BackendChoice::Docker(_) => "docker",
            BackendChoice::Modal(_) => "modal",
            BackendChoice::Gcp(_) => "gcp",
        }
    }

    /// The backend agents' sandboxes are made on (gcp grades only: its agents run elsewhere).
    pub fn agents(&self) -> &BackendChoice {
        match self {
            BackendChoice::Gcp(gcp) => &gcp.agents,
            other => other,
        }
    }
}

/// Settings of the gcp backend: agents on `--agent-backend` (docker or modal), every test
/// run a Cloud Batch job.
#[derive(Debug, Clone)]
pub struct GcpOptions {
    /// Where the agents' sandboxes are made.
    pub agents: Box<BackendChoice>,
    /// The Batch grading settings.
    pub grading: crate::eval::gcp_bench::GcpSettings,
}

/// Settings of the modal backend.
#[derive(Debug, Clone)]
pub struct ModalOptions {
    /// Task images are the registry tags `<prefix><repo>:task<id>`.
    pub image_prefix: String,
    /// CPUs and memory (MiB) of every sandbox.
    pub cpus: f64,
    pub memory_mib: u32,
    /// Agents' sandboxes without network (`--agent-network none`, the default).
    pub block_agent_network: bool,
    /// Graders without network (`--grading-network none`).
    pub block_grading_network: bool,
    /// The Modal app sandboxes are created in (`--modal-app`).
    pub app: String,
}

/// The Modal app of `--modal-app`'s default.
pub const DEFAULT_MODAL_APP: &str = "cbench";

/// How long an agent's Modal sandbox may live (CooperBench's value); Modal ends it then
/// even if cbench is gone.
const MODAL_AGENT_SANDBOX_SECS: u32 = 10_800;

/// Settings of the docker backend.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Task images are `<prefix><repo>:task<id>`.
    pub image_prefix: String,
    pub limits: ResourceLimits,
    /// Agents' containers: `none` (default) or `bridge`.
    pub agent_network: String,
    /// Grading containers: `bridge` (default; runners install packages) or `none`.
    pub grading_network: String,
    /// Image of the `--git` server (needs `git daemon`); default: the first task's image.
    pub git_image: Option<String>,
    /// Agents' containers kept started ahead per image (`--docker-pool`; 0: none).
    pub pool: usize,
}

/// A resolved backend for one invocation.
#[allow(clippy::large_enum_variant)] // one per invocation; boxing buys nothing
pub enum Backend {
    Local(Confinement),
    Docker {
        engine: Arc<Engine>,
        options: DockerOptions,
        labels: RunLabels,
        /// The run's `--git` server, started for the first pair that needs it.
        git_server: OnceCell<Arc<GitServer>>,
        /// Agents' containers started ahead.
        pool: Arc<SandboxPool>,
    },
    Modal {
        images: Arc<ModalImages>,
        options: ModalOptions,
        labels: RunLabels,
    },
    /// Agents on another backend, grading on Cloud Batch.
    Gcp {
        agents: Box<Backend>,
        grading: GcpGrading,
    },
}

impl Backend {
    /// Checks the backend is usable (bwrap present, Docker reachable) before any work
    /// starts; `hidden`: paths no local command may see (dataset, logs, caches).
    /// What a dead earlier invocation of `run_name` left behind is removed first.
    pub async fn resolve(
        choice: &BackendChoice,
        run_name: &str,
        hidden: &[std::path::PathBuf],
    ) -> Result<Backend, SandboxError> {
        let swept = crate::leftovers::sweep(Some(run_name));
        if swept.scratch_dirs > 0 {
            tracing::info!(
                "removed {} scratch dir(s) of a dead invocation of {run_name}",
                swept.scratch_dirs
            );
        }
        match choice {
            BackendChoice::Local(options) => {
                let mut confinement = Confinement::resolve(*options)?;
                confinement.isolation.hide(hidden);
                Ok(Backend::Local(confinement))
            }
            BackendChoice::Docker(options) => {
                let engine = Engine::connect().await?;
                let labels = RunLabels::new(run_name);
                let swept =
                    cleanup::sweep(&engine, &cleanup::Scope::RunName(run_name.into())).await?;
                if swept.any() {
                    tracing::info!("removed {swept} of a dead invocation of {run_name}");
                }
                cleanup::register(&engine, &labels.run_id);
                Ok(Backend::Docker {
                    engine,
                    options: options.clone(),
                    labels,
                    git_server: OnceCell::new(),
                    pool: SandboxPool::new(options.pool),
                })
            }
            BackendChoice::Modal(options) => {
                let config = cbench_modal::ModalConfig::from_env()?;
                let client = cbench_modal::ModalClient::connect(config).await?;
                let app_id = client.app(&options.app).await?;
                let labels = RunLabels::new(run_name);
                let swept =
                    modal::sweep(&client, &app_id, &cleanup::Scope::RunName(run_name.into()))
                        .await?;
                if swept > 0 {
                    tracing::info!(
                        "terminated {swept} Modal sandbox(es) of a dead invocation of {run_name}"
                    );
                }
                modal::register(&client, &app_id, &labels.run_id);
                Ok(Backend::Modal {
                    images: Arc::new(ModalImages::new(client, &app_id)),
                    options: options.clone(),
                    labels,
                })
            }
            BackendChoice::Gcp(options) => {
                let agents = Box::pin(Backend::resolve(&options.agents, run_name, hidden)).await?;
                let run_id = agents.run_id().unwrap_or_default().to_string();
                let grading = GcpGrading::connect(
                    &gcp_bench::GcpEnv::from_process(),
                    options.grading.clone(),
                    run_name,
                    &run_id,
                    &crate::docker::owner(),
                )
                .await?;
                let swept =
                    gcp_bench::sweep(&grading.clients, &cleanup::Scope::RunName(run_name.into()))
                        .await?;
                if swept > 0 {
                    tracing::info!(
                        "deleted the Batch jobs and objects of {swept} dead invocation(s) of {run_name}"
                    );
                }
                gcp_bench::register(&grading.clients);
                Ok(Backend::Gcp {
                    agents: Box::new(agents),
                    grading,
                })
            }
        }
    }

    /// This invocation's id (docker and modal label their objects with it).
    fn run_id(&self) -> Option<&str> {
        match self {
            Backend::Docker { labels, .. } | Backend::Modal { labels, .. } => Some(&labels.run_id),
            Backend::Gcp { agents, .. } => agents.run_id(),
            Backend::Local(_) => None,
        }
    }

    /// Checks what the selected pairs need before anything starts (docker: every task image).
    pub async fn preflight(&self, pairs: &[Pair]) -> Result<(), SandboxError> {
        if let Backend::Gcp { agents, .. } = self {
            return Box::pin(agents.preflight(pairs)).await;
        }
        if let Backend::Modal {
            images, options, ..
        } = self
        {
            for pair in pairs {
                images.get(&pair.task.image(&options.image_prefix)).await?;
            }
        }
        if let Backend::Docker {
            engine, options, ..
        } = self
        {
            let mut seen = std::collections::BTreeSet::new();
            for pair in pairs {
                let image = pair.task.image(&options.image_prefix);
                if seen.insert(image.clone()) {
                    images::inspect(engine, &image, &pair.task).await?;
                }
            }
        }
        Ok(())
    }

    /// The run will need `count` agent sandboxes for `pair` (docker: the pool starts that
    /// image's containers ahead, up to its bound).
    pub fn expect_sandboxes(&self, pair: &Pair, count: usize) {
        if let Backend::Gcp { agents, .. } = self {
            return agents.expect_sandboxes(pair, count);
        }
        if let Backend::Docker { options, pool, .. } = self {
            pool.expect(&pair.task.image(&options.image_prefix), count);
        }
    }

    /// What the container pool did (docker), for the run's log.
    pub fn pool_stats(&self) -> Option<PoolStats> {
        match self {
            Backend::Docker { pool, .. } => Some(pool.stats()),
            Backend::Gcp { agents, .. } => agents.pool_stats(),
            Backend::Local(_) | Backend::Modal { .. } => None,
        }
    }

    /// `local`, `docker`, `modal` or `gcp`, for config.json.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
            Backend::Docker { .. } => "docker",
            Backend::Modal { .. } => "modal",
            Backend::Gcp { .. } => "gcp",
        }
    }

    /// How agents are confined, for config.json and the header.
    pub fn isolation(&self) -> String {
        match self {
            Backend::Gcp { agents, grading } => format!(
                "{}; graders: Cloud Batch jobs ({} milli-CPUs, {} MiB, network {}; project {}, {}, gs://{}; credentials from {})",
                agents.isolation(),
                grading.settings.cpu_milli,
                grading.settings.memory_mib,
                if grading.settings.block_network {
                    "blocked"
                } else {
                    "open"
                },
                grading.clients.project(),
                grading.clients.region(),
                grading.clients.bucket(),
                grading.clients.origin()
            ),
            Backend::Local(confinement) => confinement.describe(),
            Backend::Docker { options, .. } => format!(
                "container ({} CPUs, {} MiB, {} pids, network {})",
                options.limits.cpus,
                options.limits.memory_bytes >> 20,
                options.limits.pids,
                options.agent_network
            ),
            Backend::Modal {
                options, images, ..
            } => format!(
                "Modal sandbox ({} CPUs, {} MiB, network {}; app {}, {})",
                options.cpus,
                options.memory_mib,
                if options.block_agent_network {
                    "blocked"
                } else {
                    "open"
                },
                options.app,
                images.client().url()
            ),
        }
    }

    /// What the user must know before trusting this run's sandboxes (printed on every run).
    pub fn warnings(&self) -> Vec<String> {
        if let Backend::Gcp { agents, grading } = self {
            let mut warnings = agents.warnings();
            if !grading.settings.block_network {
                warnings.push(
                    "--grading-network bridge with --backend gcp: the tests (the agents' code) can \
                     reach the Batch VM's metadata server, and with it whatever the VMs' service \
                     account may do, including other test runs' objects in the bucket (give \
                     --gcp-service-account an account limited to the bucket, or grade without network)"
                        .to_string(),
                );
            }
            return warnings;
        }
        let Backend::Local(confinement) = self else {
            return Vec::new();
        };
        let mut warnings = Vec::new();
        if confinement.isolation == crate::sandbox::confine::Isolation::None {
            warnings.push(
                "--isolation none: agents' commands and graders run UNCONFINED on this machine: \
                 they can read your files, API keys and other sandboxes and reach your network"
                    .to_string(),
            );
        }
        if let Err(why) = &confinement.cgroups {
            warnings.push(format!(
                "--pids-limit and --memory are not enforced on the local backend: {why}"
            ));
        }
        warnings
    }

    /// Where graders run.
    pub fn grading(&self) -> GradingBackend {
        match self {
            Backend::Gcp { grading, .. } => GradingBackend::Gcp(grading.clone()),
            Backend::Local(confinement) => GradingBackend::Local(confinement.clone()),
            Backend::Docker {
                engine,
                options,
                labels,
                ..
            } => GradingBackend::Docker(DockerGrading {
                engine: engine.clone(),
                image_prefix: options.image_prefix.clone(),
                limits: options.limits,
                labels: labels.clone(),
                network: options.grading_network.clone(),
            }),
            Backend::Modal {
                images,
                options,
                labels,
            } => GradingBackend::Modal(crate::eval::modal_bench::ModalGrading {
                images: images.clone(),
                image_prefix: options.image_prefix.clone(),
                cpus: options.cpus,
                memory_mib: options.memory_mib,
                block_network: options.block_grading_network,
                labels: labels.clone(),
            }),
        }
    }

    /// Base repositories: prepared on the host (local) or copied out of the images (docker).
    pub fn base_repos(&self, scratch: &Path, upstream: UpstreamRepos) -> BaseRepos {
        if let Backend::Gcp { agents, .. } = self {
            return agents.base_repos(scratch, upstream);
        }
        let bases = BaseRepos::new(scratch, upstream);
        match self {
            Backend::Local(_) | Backend::Gcp { .. } => bases,
            Backend::Docker {
                engine,
                options,
                labels,
                ..
            } => bases.from_images(ImageBases {
                engine: engine.clone(),
                image_prefix: options.image_prefix.clone(),
                labels: labels.clone(),
            }),
            Backend::Modal {
                images,
                options,
                labels,
            } => bases.from_modal(crate::repos::ModalBases {
                images: images.clone(),
                image_prefix: options.image_prefix.clone(),
                labels: labels.clone(),
            }),
        }
    }

    /// The `--git` remote of `pair`, seeded with its base.
    pub async fn team_remote(
        &self,
        pair: &Pair,
        bases: &BaseRepos,
        work_dir: &Path,
    ) -> Result<PairRemote, SandboxError> {
        if let Backend::Gcp { agents, .. } = self {
            // Agents' remote: graders only ever see patches.
            return Box::pin(agents.team_remote(pair, bases, work_dir)).await;
        }
        let base = bases.get(&pair.task).await?;
        match self {
            Backend::Local(_) => team::local_remote(&base, &work_dir.join("team")).await,
            Backend::Gcp { .. } => Err(SandboxError::Command(
                "--backend gcp: no team remote of its own".into(),
            )),
            // Refused before the run starts (the CLI's validation); kept as an error here.
            Backend::Modal { .. } => Err(SandboxError::Command(
                "--git is not available with --backend modal".into(),
            )),
            Backend::Docker {
                engine,
                options,
                labels,
                git_server,
                ..
            } => {
                let server = git_server
                    .get_or_try_init(|| async {
                        let image = match &options.git_image {
                            Some(image) => image.clone(),
                            None => pair.task.image(&options.image_prefix),
                        };
                        GitServer::start(engine, labels, &image).await.map(Arc::new)
                    })
                    .await?
                    .clone();
                let key = format!(
                    "{}-task{}-{}",
                    pair.task.repo,
                    pair.task.id,
                    pair.dir_name()
                );
                server.add_repo(&key, &base, &work_dir.join("team")).await?;
                Ok(PairRemote::Docker { server, key })
            }
        }
    }

    /// A fresh sandbox for `agent_id` of `pair`, with the pair's team remote when given.
    pub async fn sandbox(
        &self,
        pair: &Pair,
        agent_id: &str,
        bases: &BaseRepos,
        work_dir: &Path,
        remote: Option<&PairRemote>,
    ) -> Result<Arc<dyn Sandbox>, SandboxError> {
        self.sandbox_with(pair, agent_id, bases, work_dir, remote, None)
            .await
    }

    /// The pair's scratchpad (the team setting), on the backends that have one.
    pub async fn scratchpad(
        &self,
        pair: &Pair,
        work_dir: &Path,
    ) -> Result<Scratchpad, SandboxError> {
        match self {
            Backend::Local(_) => Scratchpad::local(&work_dir.join("scratchpads")),
            Backend::Docker { engine, labels, .. } => {
                let volume = format!(
                    "cbench-{}-{}-task{}-{}-shared",
                    labels.run_id,
                    pair.task.repo,
                    pair.task.id,
                    pair.dir_name()
                );
                let tags = labels.object(&pair.task.label(), &pair.dir_name(), "scratchpad");
                Scratchpad::docker(engine, volume, tags).await
            }
            // Agents' sandboxes on gcp are on its agent backend.
            Backend::Gcp { agents, .. } => Box::pin(agents.scratchpad(pair, work_dir)).await,
            // Refused before the run starts (the CLI's validation); kept as an error here.
            Backend::Modal { .. } => Err(SandboxError::Command(
                "the team scratchpad is not available with modal agents (add --team-no-scratchpad)"
                    .into(),
            )),
        }
    }

    /// `sandbox`, with the pair's scratchpad mounted when given (local and docker).
    pub async fn sandbox_with(
        &self,
        pair: &Pair,
        agent_id: &str,
        bases: &BaseRepos,
        work_dir: &Path,
        remote: Option<&PairRemote>,
        scratchpad: Option<&Scratchpad>,
    ) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let sandbox: Arc<dyn Sandbox> = match self {
            Backend::Modal { .. } if scratchpad.is_some() => {
                return Err(SandboxError::Command(
                    "the team scratchpad is not available with modal agents".into(),
                ))
            }
            Backend::Gcp { agents, .. } => {
                return Box::pin(
                    agents.sandbox_with(pair, agent_id, bases, work_dir, remote, scratchpad),
                )
                .await
            }
            Backend::Local(confinement) => {
                let base = bases.get(&pair.task).await?;
                let mut sandbox =
                    LocalSandbox::create(&base, &work_dir.join("sandboxes"), confinement).await?;
                if let Some(PairRemote::Local { bare, .. }) = remote {
                    sandbox = sandbox.with_team_remote(bare, agent_id);
                }
                if let Some(dir) = scratchpad.and_then(Scratchpad::host_dir) {
                    sandbox = sandbox.with_scratchpad(&dir);
                }
                sandbox.start_shell().await;
                Arc::new(sandbox)
            }
            Backend::Docker {
                engine,
                options,
                labels,
                pool,
                ..
            } => {
                let image = pair.task.image(&options.image_prefix);
                let info = images::inspect(engine, &image, &pair.task).await?;
                let network = match remote {
                    Some(PairRemote::Docker { server, .. }) => server.network.clone(),
                    _ => options.agent_network.clone(),
                };
                let volumes: Vec<(String, String)> = match scratchpad {
                    Some(Scratchpad::Docker { volume, .. }) => {
                        vec![(volume.clone(), SCRATCHPAD_DIR.to_string())]
                    }
                    _ => Vec::new(),
                };
                let spec =
                    |role_labels: std::collections::HashMap<String, String>,
                     volumes: Vec<(String, String)>| ContainerSpec {
                        image: image.clone(),
                        labels: role_labels,
                        limits: options.limits,
                        network: network.clone(),
                        env: Vec::new(),
                        working_dir: REPO_DIR.into(),
                        drop_capabilities: true,
                        volumes,
                    };
                // The pool's containers join no team network and mount no scratchpad: with
                // either, start on demand.
                let shares = remote.is_some() || !volumes.is_empty();
                let pooled = (!shares).then(|| pool.claim(&image)).flatten();
                let mut sandbox = match pooled {
                    Some(ready) => {
                        tracing::debug!(
                            "{agent_id} of {} {}: pre-started container {}",
                            pair.task.label(),
                            pair.dir_name(),
                            ready.container().id()
                        );
                        ready
                    }
                    None => {
                        let spec = spec(
                            labels.object(&pair.task.label(), &pair.dir_name(), agent_id),
                            volumes,
                        );
                        DockerSandbox::create(engine, &spec, info.path_env.as_deref(), &[]).await?
                    }
                };
                // Started ahead for the pairs after this one, once this agent has its own
                // container (pre-starting while a run's first pairs start only slows them).
                if !shares {
                    pool.refill(&PoolTemplate {
                        engine: engine.clone(),
                        spec: spec(labels.object(&pair.task.label(), "", "pool"), Vec::new()),
                        image_path: info.path_env.clone(),
                    });
                }
                if let Some(PairRemote::Docker { server, key }) = remote {
                    let ip = team::container_ip(engine, sandbox.container().id(), &network).await?;
                    server.admit(&ip, key, agent_id).await?;
                    sandbox = sandbox.with_team_client(server.clone(), ip);
                }
                Arc::new(sandbox)
            }
            Backend::Modal {
                images,
                options,
                labels,
            } => {
                let image_id = images.get(&pair.task.image(&options.image_prefix)).await?;
                let definition = cbench_modal::SandboxDefinition {
                    image_id,
                    entrypoint_args: modal::keep_alive(),
                    cpus: options.cpus,
                    memory_mib: options.memory_mib,
                    timeout_secs: MODAL_AGENT_SANDBOX_SECS,
                    workdir: REPO_DIR.into(),
                    block_network: options.block_agent_network,
                    tags: modal::tags_of(labels.object(
                        &pair.task.label(),
                        &pair.dir_name(),
                        agent_id,
                    )),
                };
                Arc::new(
                    ModalSandbox::create(images.client().clone(), images.app_id(), &definition)
                        .await?,
                )
            }
        };
        if let Some(remote) = remote {
            let add = format!(
                "git remote add {} {}",
                team::REMOTE_NAME,
                crate::eval::testbench::shell_quote(&remote.url())
            );
            let out = sandbox
                .exec(&add, std::time::Duration::from_secs(60))
                .await?;
            if out.exit_code != 0 {
                return Err(SandboxError::Command(format!(
                    "adding the team remote for {agent_id}: {}",
                    out.output.trim()
                )));
            }
        }
        Ok(sandbox)
    }

    /// Removes every object of this invocation (a no-op locally: temp dirs go on drop).
    pub async fn cleanup(&self) -> Result<(), SandboxError> {
        if let Backend::Gcp { agents, grading } = self {
            let run_id = agents.run_id().unwrap_or_default().to_string();
            let graders = gcp_bench::sweep(&grading.clients, &cleanup::Scope::RunId(run_id)).await;
            Box::pin(agents.cleanup()).await?;
            return graders.map(|_| ());
        }
        if let Backend::Modal { images, labels, .. } = self {
            modal::sweep(
                images.client(),
                images.app_id(),
                &cleanup::Scope::RunId(labels.run_id.clone()),
            )
            .await?;
        }
        if let Backend::Docker {
            engine,
            labels,
            pool,
            ..
        } = self
        {
            pool.close().await;
            cleanup::sweep(engine, &cleanup::Scope::RunId(labels.run_id.clone())).await?;
        }
        Ok(())
    }
}
