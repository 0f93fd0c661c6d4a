//! The plugin host: one wasmtime Engine, a compiled-component cache on disk,
//! one binding module per supported WIT version, and per-agent limits.
//!
//! The only crate that runs wasm. Plugins reach the world only through the imports here,
//! which call into `cbench-llm`, `cbench-messaging` and `cbench-sandbox`; it never grades,
//! writes a run's records or reads the dataset.

use cbench_core::exec;
use cbench_core::fsutil;
use cbench_core::progress;
use cbench_core::suggest;
use cbench_llm as llm;
use cbench_llm::trajectory;
use cbench_messaging as messaging;
use cbench_messaging::events;
use cbench_sandbox as sandbox;

mod agent;
pub mod cache;
mod contract;
mod imports;
pub mod inspect;
mod limits;
mod output;
pub mod search;
mod team;
pub mod v0_1_0;
pub mod v0_2_0;
pub mod v0_3_0;

use std::hash::Hasher;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use agent::{AgentEnv, AgentRun, AgentStatus, AgentTask, TeamInfo};
pub use cache::CompileCache;
pub use cbench_core::identity::{Capability, PluginIdentity};
use contract::supported_versions;
pub use contract::{check_contract, Contract};
pub use limits::{ComputeClock, MemoryCap};
pub use output::PluginOutput;

use crate::llm::LlmSession;
use crate::messaging::MessageBus;
use crate::progress::Progress;
use crate::sandbox::Sandbox;
use crate::trajectory::Recorder;

/// The WIT package plugins implement.
pub const WIT_PACKAGE: &str = "cooperbench:agent";
/// WIT versions this host can run, newest first.
pub const SUPPORTED_WIT_VERSIONS: &[&str] = &["0.3.0", "0.2.0", "0.1.0"];
/// How often the epoch ticker advances; the granularity of compute deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a plugin could not be loaded. Always names the file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {path}: not a valid WebAssembly component: {reason}")]
    InvalidWasm { path: PathBuf, reason: String },
    #[error("plugin {path}: does not export `{WIT_PACKAGE}/agent`; it is not a cbench agent plugin (exports: {exports})")]
    NotAnAgent { path: PathBuf, exports: String },
    #[error("plugin {path}: exports `{WIT_PACKAGE}/agent` without a version; its WIT package line lacks `@<version>`: build it against wit/agent.wit (`package {WIT_PACKAGE}@<version>;`, this host supports {supported})")]
    UnversionedWit { path: PathBuf, supported: String },
    #[error(
        "plugin {path}: built against WIT {WIT_PACKAGE}@{found}, but this host serves {supported}"
    )]
    UnsupportedWitVersion {
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error("plugin {path} (WIT {version}) imports what cbench does not provide: {imports}")]
    UnprovidedImports {
        path: PathBuf,
        version: String,
        imports: String,
    },
    #[error("plugin {path} (WIT {version}): cannot link: {reason}")]
    Link {
        path: PathBuf,
        version: String,
        reason: String,
    },
    #[error("plugin {path}: `info()` failed: {reason}")]
    Info { path: PathBuf, reason: String },
    #[error("wasmtime engine: {0}")]
    Engine(String),
}

/// What `info()` said, independent of WIT version.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub capabilities: Vec<Capability>,
}

/// How long loading took, for benchmarks.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoadTimings {
    pub from_cache: bool,
    pub load_ms: f64,
    pub info_instantiate_ms: f64,
}

/// Resource limits for one agent instance.
#[derive(Debug, Clone, Copy)]
pub struct PluginLimits {
    /// Sum of all linear memories.
    pub memory_bytes: usize,
    /// Time spent running plugin code between host calls.
    pub compute: Duration,
    /// Largest message an agent may send, in bytes.
    pub max_message_bytes: usize,
    /// Most messages an agent may send (a broadcast counts one per recipient).
    pub max_messages: u32,
}

/// Default message cap: far above any message agents write (a paragraph, a diff excerpt).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 10;
/// Default message count cap per agent: more than one per step of a 100-step agent.
pub const DEFAULT_MAX_MESSAGES: u32 = 500;

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 512 << 20,
            compute: Duration::from_secs(120),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_messages: DEFAULT_MAX_MESSAGES,
        }
    }
}

/// The engine, its epoch ticker and the on-disk cache of compiled components.
pub struct PluginHost {
    engine: Engine,
    cache: CompileCache,
    ticker: Arc<TickerLife>,
}

/// Keeps the epoch ticker running while anything holds it: the host and every plugin it loaded
/// (a plugin outliving its host must still meet its compute deadline).
struct TickerLife;

/// Feeds `Hash` output into sha256 so the cache key is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl PluginHost {
    /// Creates the engine (epoch interruption on, short backtraces) and starts its ticker.
    pub fn new(cache_dir: &Path) -> Result<PluginHost, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.wasm_backtrace_max_frames(NonZeroUsize::new(32));
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;
        let ticker = Arc::new(TickerLife);
        {
            // A dedicated OS thread: as a tokio task the ticker starves when a plugin busy-loops.
            let engine = engine.clone();
            let alive = Arc::downgrade(&ticker);
            std::thread::Builder::new()
                .name("cbench-epoch".into())
                .spawn(move || {
                    while alive.strong_count() > 0 {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine(format!("cannot start epoch ticker: {e}")))?;
        }
        let fingerprint = engine_fingerprint(&engine);
        Ok(PluginHost {
            engine,
            cache: CompileCache::new(cache_dir).for_engine(&fingerprint),
            ticker,
        })
    }

    /// The compiled-plugin cache this host reads and fills.
    pub fn compile_cache(&self) -> &CompileCache {
        &self.cache
    }

    /// The default cache directory: `$CBENCH_CACHE_DIR`, else `$XDG_CACHE_HOME/cbench`, else `~/.cache/cbench`.
    pub fn default_cache_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("CBENCH_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("cbench");
        }
        match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".cache").join("cbench"),
            None => std::env::temp_dir().join("cbench-cache"),
        }
    }

    /// Whether the compiled form of `path` is already cached (loading it takes milliseconds).
    pub fn is_cached(&self, path: &Path) -> bool {
        std::fs::read(path)
            .map(|bytes| {
                let sha256 = crate::fsutil::sha256_hex(&bytes);
                self.cache
                    .entry_path(&sha256, &engine_fingerprint(&self.engine))
                    .exists()
            })
            .unwrap_or(false)
    }

    /// Loads a plugin: checks its contract from the binary (before compiling anything), then
    /// takes it from the compiled cache when possible, else compiles and caches it, and asks
    /// it for its name and version.
    pub async fn load(&self, path: &Path) -> Result<(LoadedPlugin, LoadTimings), PluginError> {
        let started = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let wit_version = check_contract(path, &bytes)?.wit_version;
        let sha256 = crate::fsutil::sha256_hex(&bytes);
        let cached = self
            .cache
            .entry_path(&sha256, &engine_fingerprint(&self.engine));
        let mut from_cache = false;
        // SAFETY: deserialize trusts its input; the cache only holds files this host
        // serialised, keyed by the wasm hash and the engine's compatibility hash.
        let component = match unsafe { Component::deserialize_file(&self.engine, &cached) } {
            Ok(c) => {
                from_cache = true;
                self.cache.touch(&cached);
                c
            }
            Err(_) => {
                let c =
                    Component::new(&self.engine, &bytes).map_err(|e| PluginError::InvalidWasm {
                        path: path.to_path_buf(),
                        reason: format!("{e:#}"),
                    })?;
                match c.serialize() {
                    Ok(serialized) => match self.cache.store(&cached, &serialized) {
                        Ok(pruned) if pruned.removed > 0 => tracing::info!(
                            "compiled-plugin cache: evicted {} least recently used entries ({} MiB) to stay under {} MiB",
                            pruned.removed,
                            pruned.freed_bytes >> 20,
                            self.cache.max_bytes() >> 20
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("not caching compiled plugin: {e}"),
                    },
                    Err(e) => tracing::warn!("not caching compiled plugin: {e}"),
                }
                c
            }
        };
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        let link_error = |e: wasmtime::Error| PluginError::Link {
            path: path.to_path_buf(),
            version: wit_version.clone(),
            reason: format!("{e:#}"),
        };
        let bindings = match wit_version.as_str() {
            "0.3.0" => {
                Bindings::V0_3_0(v0_3_0::prepare(&self.engine, &component).map_err(link_error)?)
            }
            "0.2.0" => {
                Bindings::V0_2_0(v0_2_0::prepare(&self.engine, &component).map_err(link_error)?)
            }
            "0.1.0" => {
                Bindings::V0_1_0(v0_1_0::prepare(&self.engine, &component).map_err(link_error)?)
            }
            other => {
                return Err(PluginError::UnsupportedWitVersion {
                    path: path.to_path_buf(),
                    found: other.to_string(),
                    supported: supported_versions(),
                })
            }
        };
        let info_started = Instant::now();
        let info = match &bindings {
            Bindings::V0_3_0(pre) => v0_3_0::info(&self.engine, pre).await,
            Bindings::V0_2_0(pre) => v0_2_0::info(&self.engine, pre).await,
            Bindings::V0_1_0(pre) => v0_1_0::info(&self.engine, pre).await,
        }
        .map_err(|reason| PluginError::Info {
            path: path.to_path_buf(),
            reason,
        })?;
        let timings = LoadTimings {
            from_cache,
            load_ms,
            info_instantiate_ms: info_started.elapsed().as_secs_f64() * 1e3,
        };
        Ok((
            LoadedPlugin {
                identity: PluginIdentity {
                    path: path.display().to_string(),
                    sha256,
                    name: info.name,
                    version: info.version,
                    wit_version,
                    capabilities: info.capabilities,
                },
                engine: self.engine.clone(),
                bindings,
                _ticker: self.ticker.clone(),
            },
            timings,
        ))
    }
}

fn engine_fingerprint(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// Pre-linked bindings, one variant per supported WIT version.
enum Bindings {
    V0_3_0(v0_3_0::Pre),
    V0_2_0(v0_2_0::Pre),
    V0_1_0(v0_1_0::Pre),
}

/// A compiled, linked plugin ready to instantiate once per agent.
pub struct LoadedPlugin {
    pub identity: PluginIdentity,
    engine: Engine,
    bindings: Bindings,
    /// Compute deadlines need the epoch ticker for as long as the plugin may run.
    _ticker: Arc<TickerLife>,
}

/// Per-store state: WASI (nothing granted) plus the agent's capabilities.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    clock: ComputeClock,
    compute_budget: Duration,
    output: PluginOutput,
    agent: Option<AgentCapabilities>,
}

/// The capabilities host imports act on.
pub(crate) struct AgentCapabilities {
    pub(crate) task: AgentTask,
    pub(crate) sandbox: Arc<dyn Sandbox>,
    pub(crate) llm: Box<dyn LlmSession>,
    pub(crate) bus: MessageBus,
    /// The team setting's shared board; none in solo and coop.
    pub(crate) team: Option<crate::messaging::team::TeamBoard>,
    pub(crate) recorder: Recorder,
    pub(crate) progress: Progress,
    pub(crate) events: Option<crate::events::PairEvents>,
    pub(crate) budget: crate::llm::budget::AgentBudget,
    pub(crate) started: Instant,
    /// The first limit the host enforced (the agent ends with this status).
    pub(crate) limit_hit: Option<(AgentStatus, String)>,
    /// The first infrastructure failure the agent met (decides `InfraError` if it did not submit).
    pub(crate) infra_failure: Option<String>,
    /// Caps on what the agent may send.
    pub(crate) max_message_bytes: usize,
    pub(crate) max_messages: u32,
    /// Messages sent so far.
    pub(crate) messages_sent: u32,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    fn new(limits: PluginLimits, agent: Option<AgentCapabilities>) -> HostState {
        // No preopens, env, args or stdin; no sockets. stdout/stderr are captured.
        let output = PluginOutput::default();
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(output.clone())
            .stderr(output.clone())
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryCap::new(limits.memory_bytes),
            clock: ComputeClock::default(),
            compute_budget: limits.compute,
            output,
            agent,
        }
    }
}

/// A store with the memory cap and the compute deadline installed.
fn new_store(engine: &Engine, state: HostState) -> Store<HostState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        let state = ctx.data();
        if state.clock.spent() > state.compute_budget {
            Ok(wasmtime::UpdateDeadline::Interrupt)
        } else {
            // Yield so other agents on this worker thread keep running; the clock stops while
            // parked and restarts on whichever thread resumes the plugin.
            let clock = state.clock.clone();
            clock.stop();
            Ok(wasmtime::UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    clock.start();
                }),
            ))
        }
    });
    store
}

/// Turns a wasmtime error from a plugin call into a message a user can act on.
fn describe_trap(state: &HostState, error: &wasmtime::Error) -> String {
    if state.limiter.exceeded {
        return format!(
            "plugin exceeded its memory cap of {} MiB",
            state.limiter.cap_bytes() >> 20
        );
    }
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return format!(
                "plugin exceeded its compute deadline of {:.1}s (CPU time spent in plugin code)",
                state.compute_budget.as_secs_f64()
            );
        }
    }
    let text = format!("{error:#}");
    let mut lines: Vec<&str> = text.lines().take(12).collect();
    if text.lines().count() > 12 {
        lines.push("…");
    }
    // The guest's own report (a Python traceback, a JS exception) is in its output, and says
    // more than the wasm backtrace.
    let printed = state.output.last_lines(20);
    if printed.is_empty() {
        format!("plugin trapped: {}", lines.join("\n"))
    } else {
        format!(
            "plugin trapped: {}\nlast plugin output:\n{printed}",
            lines.join("\n")
        )
    }
}

impl LoadedPlugin {
    /// Instantiates the plugin for one agent and runs it to completion. Never fails:
    /// a trap, deadline or memory blow-up becomes status `Error` with a message.
    pub async fn run_agent(&self, env: AgentEnv) -> AgentRun {
        let started = Instant::now();
        let agent_id = env.task.agent_id.clone();
        let bus = env.bus.clone();
        let max_wall = env.budget.max_wall;
        let caps = AgentCapabilities {
            task: env.task,
            sandbox: env.sandbox,
            llm: env.llm,
            bus: env.bus,
            team: env.team,
            recorder: env.recorder,
            progress: env.progress,
            events: env.events,
            budget: env.budget,
            started,
            limit_hit: None,
            infra_failure: None,
            max_message_bytes: env.limits.max_message_bytes,
            max_messages: env.limits.max_messages,
            messages_sent: 0,
        };
        let mut store = new_store(&self.engine, HostState::new(env.limits, Some(caps)));
        store.data().clock.start();
        let run = async {
            match &self.bindings {
                Bindings::V0_3_0(pre) => v0_3_0::run(pre, &mut store).await,
                Bindings::V0_2_0(pre) => v0_2_0::run(pre, &mut store).await,
                Bindings::V0_1_0(pre) => v0_1_0::run(pre, &mut store).await,
            }
        };
        // The wall-time limit stops the agent wherever it is: in its own code, or waiting on a
        // command or the model (dropping the call cancels it; its sandbox is closed after).
        let result = match max_wall {
            Some(max) => tokio::time::timeout(max, run).await.ok(),
            None => Some(run.await),
        };
        store.data().clock.stop();
        if result.is_none() {
            let why = format!(
                "wall-time limit of {} s reached (--max-agent-secs)",
                max_wall.map(|m| m.as_secs()).unwrap_or_default()
            );
            if let Some(caps) = store.data_mut().agent.as_mut() {
                caps.limit_hit
                    .get_or_insert((AgentStatus::LimitsExceeded, why));
            }
        }
        if let Err(e) = bus.mark_finished(&agent_id).await {
            tracing::warn!("{agent_id}: {e}");
        }
        let compute = store.data().clock.spent();
        let (status, error, summary, steps) = match result {
            // Stopped at its wall-time limit: the limit (recorded above) is the status.
            None => (AgentStatus::LimitsExceeded, None, None, 0),
            Some(Ok(Ok(outcome))) => (outcome.status, None, Some(outcome.summary), outcome.steps),
            Some(Ok(Err(plugin_error))) => (
                AgentStatus::Error,
                Some(format!("plugin returned an error: {plugin_error}")),
                None,
                0,
            ),
            Some(Err(trap)) => (
                AgentStatus::Error,
                Some(describe_trap(store.data(), &trap)),
                None,
                0,
            ),
        };
        let state = store.into_data();
        let plugin_output = state.output.text();
        let (recorder, limit_hit, infra_failure) = match state.agent {
            Some(caps) => (caps.recorder, caps.limit_hit, caps.infra_failure),
            None => (Recorder::default(), None, None),
        };
        // The host's limits decide the status, whatever the plugin reported.
        let (status, error) = match (limit_hit, status) {
            // The plugin failed on the refusal itself (a refused command is an error to it):
            // the limit is the cause.
            (Some((limit_status, why)), AgentStatus::Error) => (
                limit_status,
                Some(match error {
                    Some(e) => format!("{why} (then {e})"),
                    None => why,
                }),
            ),
            (Some((limit_status, why)), _) => (limit_status, error.or(Some(why))),
            (_, s) => (s, error),
        };
        // An agent that met an infrastructure failure and did not finish on its own terms
        // was stopped by us, not by its own decisions.
        let (status, error) = match infra_failure {
            Some(why) if matches!(status, AgentStatus::Error | AgentStatus::StepLimitReached) => {
                let detail = error.map(|e| format!(" (agent: {e})")).unwrap_or_default();
                (AgentStatus::InfraError, Some(format!("{why}{detail}")))
            }
            _ => (status, error),
        };
        let steps = steps.max(recorder.llm_calls() as u32);
        let trajectory = recorder.finish(status.as_str(), error.clone(), summary.clone());
        AgentRun {
            status,
            error,
            summary,
            steps,
            trajectory,
            compute,
            wall: started.elapsed(),
            plugin_output,
        }
    }
}

/// The outcome as the host understands it, independent of WIT version.
pub(crate) struct PluginOutcome {
    pub status: AgentStatus,
    pub steps: u32,
    pub summary: String,
}
