//! `cbench bench --agents 10,50,100`: N agents at once on one backend, each the real plugin in
//! its own sandbox of the dataset's first task, driven by a model that takes a fixed time per
//! reply (2 s by default, like a fast real LLM). What the host adds is measured: the gap between
//! a reply and the agent's next request (plugin + command round trip + host), wall time, peak
//! RSS and CPU of the cbench process.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backend::{Backend, BackendChoice};
use crate::dataset::{Dataset, Selection};
use crate::llm::{
    bash_reply, Completion, CompletionRequest, LlmError, LlmSession, Setting, TokenUsage,
};
use crate::messaging::MessageBus;
use crate::plugin::{AgentEnv, AgentTask, LoadedPlugin, PluginLimits};
use crate::progress::Progress;
use crate::repos::UpstreamRepos;
use crate::trajectory::Recorder;

/// One row of the table.
#[derive(Debug, Clone)]
pub struct ConcurrencyRow {
    pub agents: usize,
    pub wall: Duration,
    pub sandbox_start: Duration,
    pub peak_rss_mib: f64,
    pub cpu: Duration,
    /// Reply → next request, in milliseconds, every step of every agent.
    pub step_gaps_ms: Vec<f64>,
    pub failed_agents: usize,
}

/// Replies after `delay` with `echo step k` (a real command in the sandbox), then submits.
struct TimedModel {
    delay: Duration,
    steps: u32,
    given: u32,
    replied_at: Option<Instant>,
    gaps: Arc<Mutex<Vec<f64>>>,
    /// Each reply takes `delay` ± up to this, drawn from `seed` (the same every run).
    jitter: Duration,
    seed: u64,
}

impl TimedModel {
    /// This reply's think time: `delay`, moved by a deterministic draw within ± `jitter`.
    fn think_time(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.delay;
        }
        // splitmix64 of (agent, reply): spread evenly, repeatable.
        let mut z = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(u64::from(self.given));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let span = 2 * self.jitter.as_micros() as u64 + 1;
        let offset = Duration::from_micros(z % span);
        (self.delay + offset).saturating_sub(self.jitter)
    }
}

#[async_trait]
impl LlmSession for TimedModel {
    async fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        if let Some(replied) = self.replied_at.take() {
            let gap = replied.elapsed().as_secs_f64() * 1e3;
            self.gaps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(gap);
        }
        tokio::time::sleep(self.think_time()).await;
        self.given += 1;
        let command = if self.given > self.steps {
            "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT".to_string()
        } else {
            format!("echo step {} && git status --short | wc -l", self.given)
        };
        let (content, tool_calls) = bash_reply(request, "", &command, format!("c{}", self.given));
        self.replied_at = Some(Instant::now());
        Ok(Completion {
            content,
            tool_calls,
            usage: TokenUsage::default(),
            cost_usd: Some(0.0),
            retries: Vec::new(),
            finish_reason: None,
            truncated: false,
        })
    }
}

/// Resident set size of this process now, MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    pages * page / f64::from(1u32 << 20)
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv =
        |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs `agents` agents at once on `choice`, `steps` commands each, `delay` per model reply.
pub async fn run_concurrency(
    plugin: &LoadedPlugin,
    choice: &BackendChoice,
    dataset_dir: &std::path::Path,
    agents: usize,
    steps: u32,
    delay: Duration,
    jitter: Duration,
) -> anyhow::Result<ConcurrencyRow> {
    let dataset = Dataset::discover(dataset_dir)?;
    let Some(pair) = dataset.select(&Selection::default())?.into_iter().next() else {
        anyhow::bail!("{}: no pair to measure with", dataset_dir.display());
    };
    let backend =
        Backend::resolve(choice, "bench-concurrency", &[dataset_dir.to_path_buf()]).await?;
    backend.preflight(std::slice::from_ref(&pair)).await?;
    let scratch = tempfile::tempdir()?;
    let bases = backend.base_repos(
        &scratch.path().join("bases"),
        UpstreamRepos {
            cache_dir: scratch.path().join("cache"),
            mirror_dir: None,
        },
    );
    bases.get(&pair.task).await?;

    let peak = Arc::new(Mutex::new(rss_mib()));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let now = rss_mib();
                {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    if now > *p {
                        *p = now;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let cpu_before = cpu_time();
    let started = Instant::now();
    let ids: Vec<String> = (1..=agents).map(|i| format!("agent{i}")).collect();
    let starts: Vec<_> = ids
        .iter()
        .map(|id| backend.sandbox(&pair, id, &bases, scratch.path(), None))
        .collect();
    let sandboxes = futures_util::future::join_all(starts).await;
    let sandbox_start = started.elapsed();
    let gaps = Arc::new(Mutex::new(Vec::new()));
    let mut runs = Vec::new();
    let mut opened = Vec::new();
    for (id, sandbox) in ids.iter().zip(sandboxes) {
        let sandbox = sandbox?;
        opened.push(sandbox.clone());
        let env = AgentEnv {
            task: AgentTask {
                agent_id: id.clone(),
                teammates: Vec::new(),
                setting: Setting::Solo,
                feature_text: "benchmark".into(),
                max_steps: steps + 5,
                command_timeout: Duration::from_secs(60),
                git_enabled: false,
                messaging_enabled: false,
                agent_config: String::new(),
                team: None,
            },
            sandbox,
            llm: Box::new(TimedModel {
                delay,
                steps,
                given: 0,
                replied_at: None,
                gaps: gaps.clone(),
                jitter,
                seed: opened.len() as u64,
            }),
            bus: MessageBus::local(std::slice::from_ref(id), false),
            team: None,
            recorder: Recorder::new(id, &[1], "bench"),
            progress: Progress::new(true),
            events: None,
            limits: PluginLimits::default(),
            budget: Default::default(),
        };
        runs.push(plugin.run_agent(env));
    }
    let results = futures_util::future::join_all(runs).await;
    let wall = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    sampling.abort();
    let failed_agents = results
        .iter()
        .filter(|r| r.status != crate::plugin::AgentStatus::Submitted)
        .count();
    for sandbox in opened {
        let _ = sandbox.close().await;
    }
    backend.cleanup().await?;
    let peak_rss_mib = *peak.lock().unwrap_or_else(|e| e.into_inner());
    let step_gaps_ms = gaps.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(ConcurrencyRow {
        agents,
        wall,
        sandbox_start,
        peak_rss_mib,
        cpu,
        step_gaps_ms,
        failed_agents,
    })
}

impl ConcurrencyRow {
    /// A table line: agents, wall, sandbox start, peak RSS, CPU, step gap p50/p90/p99.
    pub fn render(&self) -> String {
        let p = |q| super::percentile(&self.step_gaps_ms, q);
        format!(
            "  {:>6} agents: wall {:6.1} s (sandboxes up in {:5.1} s) · peak RSS {:6.1} MiB · CPU {:6.1} s · reply → next request {:7.1} / {:7.1} / {:7.1} ms (p50/p90/p99 of {} steps){}",
            self.agents,
            self.wall.as_secs_f64(),
            self.sandbox_start.as_secs_f64(),
            self.peak_rss_mib,
            self.cpu.as_secs_f64(),
            p(0.5),
            p(0.9),
            p(0.99),
            self.step_gaps_ms.len(),
            if self.failed_agents > 0 {
                format!(" · {} agents did not submit", self.failed_agents)
            } else {
                String::new()
            }
        )
    }
}
