//! What every pair of a prepared run shares while it runs.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::backend::Backend;
use crate::config::RunConfig;
use crate::eval::Grader;
use crate::llm::budget::RunBudget;
use crate::llm::Model;
use crate::plugin::LoadedPlugin;
use crate::progress::Progress;
use crate::repos::BaseRepos;

/// A prepared run's shared state: its configuration, backend, plugins, model, grader and slots.
pub(crate) struct RunContext {
    pub(crate) cfg: RunConfig,
    pub(crate) backend: Backend,
    pub(crate) run_dir: PathBuf,
    pub(crate) work_dir: tempfile::TempDir,
    pub(crate) plugin: LoadedPlugin,
    /// The other members of a mixed team (agent2, agent3, …); empty when every agent runs `plugin`.
    pub(crate) team: Vec<LoadedPlugin>,
    pub(crate) model: Arc<dyn Model>,
    pub(crate) bases: BaseRepos,
    pub(crate) grader: Grader,
    pub(crate) progress: Progress,
    pub(crate) agent_slots: Arc<Semaphore>,
    pub(crate) eval_slots: Arc<Semaphore>,
    /// The run's name in front of every pair's lines when several runs share the terminal.
    pub(crate) label_prefix: Option<String>,
    pub(crate) started: AtomicUsize,
    pub(crate) total: usize,
    pub(crate) run_budget: Option<Arc<RunBudget>>,
    /// The Redis server messages go through (`--redis`); the in-process bus when `None`.
    pub(crate) redis: Option<crate::messaging::RedisHub>,
    /// Live events for `cbench watch`.
    pub(crate) events: Arc<crate::events::EventLog>,
    /// Agents' sandboxes being closed after their patches were taken (awaited by
    /// `closed_sandboxes` before the run's cleanup).
    pub(crate) closing: cbench_core::background::Background,
    /// Held until the run's last pair is written: one live invocation per run.
    pub(crate) _lock: crate::runlock::RunLock,
}

impl RunContext {
    /// Closes `sandbox` in the background: nothing of the pair waits for its removal.
    pub(crate) fn close_later(
        &self,
        agent_id: String,
        sandbox: std::sync::Arc<dyn crate::sandbox::Sandbox>,
    ) {
        use tracing::Instrument;
        self.closing.spawn(
            async move {
                if let Err(e) = sandbox.close().await {
                    tracing::warn!("closing the sandbox of {agent_id}: {e}");
                }
            }
            .instrument(tracing::info_span!(parent: None, "sandbox_close")),
        );
    }

    /// Waits for every sandbox `close_later` is closing.
    pub(crate) async fn closed_sandboxes(&self) {
        self.closing.finished().await;
    }
}

impl Drop for RunContext {
    fn drop(&mut self) {
        // Before the temp dir's own (recursive) removal: what a sandbox left behind may be
        // deeper than any stack.
        if let Err(e) = crate::fsutil::remove_tree(self.work_dir.path()) {
            tracing::warn!("removing {}: {e}", self.work_dir.path().display());
        }
    }
}
