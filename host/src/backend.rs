//! Sandbox backends as the runner sees them: which one and its settings, how an
//! agent's sandbox is made, how grading runs, and what is cleaned up at the end.

use std::path::Path;
use std::sync::Arc;

use crate::dataset::Pair;
use crate::docker::container::ContainerSpec;
use crate::docker::{cleanup, images, Engine, ResourceLimits, RunLabels};
use crate::eval::testbench::{DockerGrading, GradingBackend};
use crate::repos::{BaseRepos, ImageBases, UpstreamRepos};
use crate::sandbox::docker::{DockerSandbox, REPO_DIR};
use crate::sandbox::local::{Isolation, IsolationMode, LocalSandbox};
use crate::sandbox::{Sandbox, SandboxError};

/// `--backend` and its settings, validated.
#[derive(Debug, Clone)]
pub enum BackendChoice {
    Local(IsolationMode),
    Docker(DockerOptions),
}

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
}

/// A resolved backend for one invocation.
pub enum Backend {
    Local(Isolation),
    Docker {
        engine: Arc<Engine>,
        options: DockerOptions,
        labels: RunLabels,
    },
}

impl Backend {
    /// Checks the backend is usable (bwrap present, Docker reachable) before any work starts.
    pub async fn resolve(choice: &BackendChoice, run_name: &str) -> Result<Backend, SandboxError> {
        match choice {
            BackendChoice::Local(mode) => Ok(Backend::Local(Isolation::resolve(*mode)?)),
            BackendChoice::Docker(options) => {
                let engine = Engine::connect().await?;
                let labels = RunLabels::new(run_name);
                cleanup::register(&engine, &labels.run_id);
                Ok(Backend::Docker {
                    engine,
                    options: options.clone(),
                    labels,
                })
            }
        }
    }

    /// `local` or `docker`, for config.json.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
            Backend::Docker { .. } => "docker",
        }
    }

    /// How agents are confined, for config.json and the header.
    pub fn isolation(&self) -> String {
        match self {
            Backend::Local(isolation) => isolation.name().to_string(),
            Backend::Docker { options, .. } => format!(
                "container ({} CPUs, {} MiB, {} pids, network {})",
                options.limits.cpus,
                options.limits.memory_bytes >> 20,
                options.limits.pids,
                options.agent_network
            ),
        }
    }

    /// Where graders run.
    pub fn grading(&self) -> GradingBackend {
        match self {
            Backend::Local(_) => GradingBackend::Local,
            Backend::Docker {
                engine,
                options,
                labels,
            } => GradingBackend::Docker(DockerGrading {
                engine: engine.clone(),
                image_prefix: options.image_prefix.clone(),
                limits: options.limits,
                labels: labels.clone(),
                network: options.grading_network.clone(),
            }),
        }
    }

    /// Base repositories: prepared on the host (local) or copied out of the images (docker).
    pub fn base_repos(&self, scratch: &Path, upstream: UpstreamRepos) -> BaseRepos {
        let bases = BaseRepos::new(scratch, upstream);
        match self {
            Backend::Local(_) => bases,
            Backend::Docker {
                engine,
                options,
                labels,
            } => bases.from_images(ImageBases {
                engine: engine.clone(),
                image_prefix: options.image_prefix.clone(),
                labels: labels.clone(),
            }),
        }
    }

    /// A fresh sandbox for `agent_id` of `pair`.
    pub async fn sandbox(
        &self,
        pair: &Pair,
        agent_id: &str,
        bases: &BaseRepos,
        work_dir: &Path,
    ) -> Result<Arc<dyn Sandbox>, SandboxError> {
        match self {
            Backend::Local(isolation) => {
                let base = bases.get(&pair.task).await?;
                Ok(Arc::new(
                    LocalSandbox::create(&base, &work_dir.join("sandboxes"), isolation).await?,
                ))
            }
            Backend::Docker {
                engine,
                options,
                labels,
            } => {
                let image = pair.task.image(&options.image_prefix);
                let info = images::inspect(engine, &image, &pair.task).await?;
                let spec = ContainerSpec {
                    image,
                    labels: labels.object(&pair.task.label(), &pair.dir_name(), agent_id),
                    limits: options.limits,
                    network: options.agent_network.clone(),
                    env: Vec::new(),
                    working_dir: REPO_DIR.into(),
                };
                Ok(Arc::new(
                    DockerSandbox::create(engine, &spec, info.path_env.as_deref(), &[]).await?,
                ))
            }
        }
    }

    /// Removes every object of this invocation (a no-op locally: temp dirs go on drop).
    pub async fn cleanup(&self) -> Result<(), SandboxError> {
        if let Backend::Docker { engine, labels, .. } = self {
            cleanup::sweep(engine, &cleanup::Scope::RunId(labels.run_id.clone())).await?;
        }
        Ok(())
    }
}
