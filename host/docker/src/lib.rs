//! The Docker Engine (through bollard): connection, the labels every object of a
//! run carries, containers with exec and tar transfer, task images, and cleanup.
//!
//! The container mechanics agents' and graders' containers share (a keep-alive init that
//! ignores signals, dropped capabilities, resource limits, the exec channel, tar transfer).
//! It decides nothing: what an agent may do is `cbench-sandbox`, how a grade is computed is
//! `cbench-eval`, and it never reads a run's records or runs a plugin.

use cbench_core::dataset;
use cbench_core::exec;
use cbench_core::fsutil;

pub mod channel;
pub mod cleanup;
pub mod container;
pub mod images;
pub mod volumes;

/// Default disk limit per sandbox: room for a repository, its virtualenv and build outputs.
pub const DEFAULT_DISK_BYTES: u64 = 10 << 30;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Every object cbench creates carries this label (value `1`).
pub const LABEL_MANAGED: &str = "cbench.managed";
/// The run's name.
pub const LABEL_RUN: &str = "cbench.run";
/// This invocation's id (a resumed run gets a new one).
pub const LABEL_RUN_ID: &str = "cbench.run-id";
/// `<host>:<pid>` of the cbench process that created the object.
pub const LABEL_OWNER: &str = "cbench.owner";
/// `<repo>/task<id>`.
pub const LABEL_TASK: &str = "cbench.task";
/// `features_<a>_<b>`.
pub const LABEL_PAIR: &str = "cbench.pair";
/// `agent1`, `solo`, `pool`, `grader`, `git-server`, `team-network`, `base-export`.
pub const LABEL_ROLE: &str = "cbench.role";

/// A Docker failure; names the object or step at fault.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {endpoint}: {reason} (is dockerd running? DOCKER_HOST selects another engine)")]
    Unreachable { endpoint: String, reason: String },
    #[error("image `{image}` is not in the Docker engine: build it with `{hint}` (or pull it where a registry is reachable)")]
    MissingImage { image: String, hint: String },
    #[error("docker: {what}: {source}")]
    Api {
        what: String,
        source: bollard::errors::Error,
    },
    /// A path inside a container does not exist (what the agent deleted, say).
    #[error("docker: {0}: no such file in the container")]
    NoSuchPath(String),
    #[error("docker: {0}")]
    Other(String),
}

impl DockerError {
    /// Wraps a bollard error with what was being done.
    pub fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        let what = what.into();
        move |source| DockerError::Api { what, source }
    }
}

/// True when bollard reports HTTP 404 (no such container / image / network).
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A connected engine, API version negotiated.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: bollard::Docker,
    endpoint: String,
}

impl Engine {
    /// Connects through `DOCKER_HOST` (default the local socket) and negotiates the API version.
    pub async fn connect() -> Result<Arc<Engine>, DockerError> {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let unreachable = |reason: String| DockerError::Unreachable {
            endpoint: endpoint.clone(),
            reason,
        };
        let docker =
            bollard::Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Arc::new(Engine { docker, endpoint }))
    }

    /// The bollard client.
    pub fn api(&self) -> &bollard::Docker {
        &self.docker
    }

    /// Where the engine was reached.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// The labels shared by every object of one `cbench run` / `cbench eval` invocation.
#[derive(Debug, Clone)]
pub struct RunLabels {
    /// The run's name.
    pub run: String,
    /// This invocation's id.
    pub run_id: String,
}

impl RunLabels {
    /// Labels for a run named `run` with a fresh invocation id.
    pub fn new(run: &str) -> RunLabels {
        RunLabels {
            run: run.to_string(),
            run_id: new_run_id(),
        }
    }

    /// The full label set of one object.
    pub fn object(&self, task: &str, pair: &str, role: &str) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "1".to_string()),
            (LABEL_RUN.to_string(), self.run.clone()),
            (LABEL_RUN_ID.to_string(), self.run_id.clone()),
            (LABEL_OWNER.to_string(), owner()),
            (LABEL_ROLE.to_string(), role.to_string()),
        ]);
        if !task.is_empty() {
            labels.insert(LABEL_TASK.to_string(), task.to_string());
        }
        if !pair.is_empty() {
            labels.insert(LABEL_PAIR.to_string(), pair.to_string());
        }
        labels
    }
}

/// `<hostname>:<pid>` of this process.
pub fn owner() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

pub use cbench_core::process::hostname;

/// 12 hex digits from the clock and the pid: unique enough to tell invocations apart.
fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let digest = crate::fsutil::sha256_hex(format!("{nanos}-{}", std::process::id()).as_bytes());
    digest[..12].to_string()
}

/// CPU, memory and process limits of every container (agents and graders).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceLimits {
    /// CPUs (fractions allowed).
    pub cpus: f64,
    /// Memory in bytes; swap is disabled (memory-swap = memory), so the cap is real.
    pub memory_bytes: i64,
    /// Maximum number of processes.
    pub pids: i64,
    /// Disk an agent's container may fill (its writable layer), watched between commands,
    /// and the largest file any of its processes may write (`u64::MAX`: no cap).
    pub disk_bytes: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            cpus: 2.0,
            memory_bytes: 8 << 30,
            pids: 4096,
            disk_bytes: crate::DEFAULT_DISK_BYTES,
        }
    }
}
