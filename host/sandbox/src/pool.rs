//! Pre-started agent containers per task image. A pair's agent takes a ready container (started,
//! checked, later history hidden, exec channel open) instead of waiting for one, and the pool
//! starts the next ones in the background while the run still needs that image. Bounded per
//! image (`--docker-pool`), never more than the sandboxes the run still needs, and emptied at
//! run end (the run's label sweep removes whatever is still starting).
//!
//! A pooled container is labelled with the run, the invocation, its owner and the task (role
//! `pool`), not with a pair: Docker cannot relabel a container, and cleanup needs only the
//! run-level labels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::docker::DockerSandbox;
use cbench_docker::container::ContainerSpec;
use cbench_docker::Engine;

/// How a pooled container is made (the same for every agent of an image).
#[derive(Debug, Clone)]
pub struct PoolTemplate {
    pub engine: Arc<Engine>,
    pub spec: ContainerSpec,
    /// The image's PATH (see `DockerSandbox::create`).
    pub image_path: Option<String>,
}

#[derive(Default)]
struct ImagePool {
    ready: Vec<DockerSandbox>,
    starting: usize,
    /// Sandboxes of this image the run may still ask for.
    demand: usize,
    /// A background start failed: stop trying (the pair's own start reports the error).
    failed: bool,
}

/// What the pool did, for the run's log and the benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Sandboxes handed out ready.
    pub taken: usize,
    /// Sandboxes asked for when none was ready (started on demand).
    pub missed: usize,
    /// Containers the pool started.
    pub started: usize,
    /// Containers ready now, over all images.
    pub ready: usize,
}

/// The pool of one invocation.
pub struct SandboxPool {
    capacity: usize,
    images: Mutex<HashMap<String, ImagePool>>,
    closed: std::sync::atomic::AtomicBool,
    taken: AtomicUsize,
    missed: AtomicUsize,
    started: AtomicUsize,
}

impl SandboxPool {
    /// A pool keeping up to `capacity` ready containers per image (0: no pool).
    pub fn new(capacity: usize) -> Arc<SandboxPool> {
        Arc::new(SandboxPool {
            capacity,
            images: Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            taken: AtomicUsize::new(0),
            missed: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
        })
    }

    fn images(&self) -> std::sync::MutexGuard<'_, HashMap<String, ImagePool>> {
        // A poisoned lock only means a panic elsewhere; the map itself stays consistent.
        self.images.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The run will ask for `count` more sandboxes of `image`.
    pub fn expect(&self, image: &str, count: usize) {
        self.images().entry(image.to_string()).or_default().demand += count;
    }

    /// A ready sandbox of `image`, if one is waiting; either way one sandbox of the image is
    /// no longer expected.
    pub fn claim(&self, image: &str) -> Option<DockerSandbox> {
        let taken = {
            let mut images = self.images();
            let pool = images.entry(image.to_string()).or_default();
            pool.demand = pool.demand.saturating_sub(1);
            pool.ready.pop()
        };
        if taken.is_some() {
            self.taken.fetch_add(1, Ordering::Relaxed);
        } else if self.capacity > 0 {
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Starts containers of `template.spec.image` in the background until `capacity` are ready
    /// or starting, or as many as the run still expects.
    pub fn refill(self: &Arc<Self>, template: &PoolTemplate) {
        let image = template.spec.image.clone();
        let to_start = {
            let mut images = self.images();
            let pool = images.entry(image.clone()).or_default();
            let want = self.capacity.min(pool.demand);
            let have = pool.ready.len() + pool.starting;
            if pool.failed || self.closed.load(Ordering::SeqCst) || have >= want {
                0
            } else {
                pool.starting += want - have;
                want - have
            }
        };
        for _ in 0..to_start {
            let pool = self.clone();
            let template = template.clone();
            let image = image.clone();
            tokio::spawn(async move {
                let made = DockerSandbox::create(
                    &template.engine,
                    &template.spec,
                    template.image_path.as_deref(),
                    &[],
                )
                .await;
                pool.started.fetch_add(1, Ordering::Relaxed);
                let surplus = {
                    let mut images = pool.images();
                    let entry = images.entry(image.clone()).or_default();
                    entry.starting = entry.starting.saturating_sub(1);
                    match made {
                        Ok(sandbox)
                            if !pool.closed.load(Ordering::SeqCst)
                                && entry.ready.len() < entry.demand =>
                        {
                            entry.ready.push(sandbox);
                            None
                        }
                        Ok(sandbox) => Some(sandbox),
                        Err(e) => {
                            entry.failed = true;
                            tracing::warn!("pre-starting a container of {image}: {e}");
                            None
                        }
                    }
                };
                if let Some(sandbox) = surplus {
                    remove(sandbox).await;
                }
            });
        }
    }

    /// Removes every ready container and starts no more.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let ready: Vec<DockerSandbox> = self
            .images()
            .values_mut()
            .flat_map(|p| p.ready.drain(..))
            .collect();
        futures_util::future::join_all(ready.into_iter().map(remove)).await;
    }

    /// What the pool did so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            taken: self.taken.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            ready: self.images().values().map(|p| p.ready.len()).sum(),
        }
    }
}

async fn remove(sandbox: DockerSandbox) {
    if let Err(e) = sandbox.container().remove().await {
        tracing::warn!("removing a pooled container: {e}");
    }
}
