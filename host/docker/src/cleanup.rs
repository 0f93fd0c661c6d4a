//! Removing what runs leave behind: by run id at the end of every run (also after an
//! error or a signal), and `cbench cleanup` for leftovers of crashed runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};

use super::container::remove_container;
use super::{DockerError, Engine, LABEL_MANAGED, LABEL_OWNER, LABEL_RUN, LABEL_RUN_ID};

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub containers: usize,
    pub networks: usize,
    /// Team scratchpads (tmpfs volumes).
    pub volumes: usize,
}

impl Swept {
    /// Whether anything was removed.
    pub fn any(&self) -> bool {
        self.containers + self.networks + self.volumes > 0
    }
}

impl std::fmt::Display for Swept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} container(s), {} network(s) and {} volume(s)",
            self.containers, self.networks, self.volumes
        )
    }
}

/// Which objects a sweep removes.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Everything of one invocation (its own cleanup).
    RunId(String),
    /// Everything of runs with this name whose cbench process is gone.
    RunName(String),
    /// Everything cbench made whose process is gone.
    Orphans,
    /// Everything cbench made, running or not.
    All,
}

/// Removes the containers, then the networks and volumes, that `scope` selects.
pub async fn sweep(engine: &Engine, scope: &Scope) -> Result<Swept, DockerError> {
    // Exec channel directories of killed processes (not labelled: they live on this host).
    super::channel::remove_stale_fifo_dirs();
    let label = match scope {
        Scope::RunId(id) => format!("{LABEL_RUN_ID}={id}"),
        Scope::RunName(name) => format!("{LABEL_RUN}={name}"),
        Scope::Orphans | Scope::All => LABEL_MANAGED.to_string(),
    };
    let filters = HashMap::from([("label".to_string(), vec![label])]);
    let keep_live = matches!(scope, Scope::RunName(_) | Scope::Orphans);
    let selected = |labels: Option<&HashMap<String, String>>| {
        !keep_live
            || labels
                .and_then(|l| l.get(LABEL_OWNER))
                .is_none_or(|o| cbench_core::process::owner_is_gone(o))
    };
    let api = engine.api();
    let mut swept = Swept::default();
    let containers = api
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(DockerError::api("listing containers"))?;
    for c in containers {
        let Some(id) = c.id.as_deref() else { continue };
        if selected(c.labels.as_ref()) {
            remove_container(api, id).await?;
            swept.containers += 1;
        }
    }
    let networks = api
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(DockerError::api("listing networks"))?;
    for n in networks {
        let Some(id) = n.id.as_deref() else { continue };
        if selected(n.labels.as_ref()) {
            match api.remove_network(id).await {
                Ok(()) => swept.networks += 1,
                Err(e) if super::is_not_found(&e) => {}
                Err(e) => return Err(DockerError::api(format!("removing network {id}"))(e)),
            }
        }
    }
    let volumes = api
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(DockerError::api("listing volumes"))?;
    for v in volumes.volumes.unwrap_or_default() {
        if selected(Some(&v.labels)) {
            super::volumes::remove(engine, &v.name).await?;
            swept.volumes += 1;
        }
    }
    Ok(swept)
}

/// Invocations of this process that have Docker objects: swept on a signal.
static ACTIVE: Mutex<Vec<(Arc<Engine>, String)>> = Mutex::new(Vec::new());

/// Records that run id `run_id` may leave objects in `engine`.
pub fn register(engine: &Arc<Engine>, run_id: &str) {
    if let Ok(mut active) = ACTIVE.lock() {
        active.push((engine.clone(), run_id.to_string()));
    }
}

/// Sweeps every registered invocation (after Ctrl-C / SIGTERM). Sweeps twice: a
/// container whose creation was in flight when the run was dropped appears late.
pub async fn sweep_registered() -> Result<Swept, DockerError> {
    let active: Vec<(Arc<Engine>, String)> = match ACTIVE.lock() {
        Ok(a) => a.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let mut total = Swept::default();
    for round in 0..2 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for (engine, run_id) in &active {
            let swept = sweep(engine, &Scope::RunId(run_id.clone())).await?;
            total.containers += swept.containers;
            total.networks += swept.networks;
        }
    }
    super::channel::remove_fifo_dirs();
    Ok(total)
}
