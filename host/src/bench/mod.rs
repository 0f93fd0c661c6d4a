//! `cbench bench`: plugin load (cold and cached), instantiation, the host
//! round-trip of one agent step (LLM call + command + inbox check) with an
//! instant in-memory model and sandbox, so only host + plugin overhead is timed,
//! and one real command through the local sandbox.

mod concurrency;
mod pair;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backend::{Backend, BackendChoice};
use crate::cli::BenchArgs;
use crate::dataset::{Dataset, Selection};
use crate::eval::merge::MergePolicy;
use crate::eval::{GradedPatch, Grader};
use crate::llm::{
    bash_reply, Completion, CompletionRequest, LlmError, LlmSession, Setting, TokenUsage,
};
use crate::messaging::MessageBus;
use crate::plugin::{AgentEnv, AgentTask, PluginHost, PluginLimits};
use crate::progress::Progress;
use crate::repos::UpstreamRepos;
use crate::sandbox::confine::{Confinement, IsolationMode, LocalOptions};
use crate::sandbox::local::{BaseRepo, LocalSandbox};
use crate::sandbox::{ExecOutput, Sandbox, SandboxError};
use crate::trajectory::Recorder;

/// Answers every command instantly.
struct InstantSandbox;

#[async_trait]
impl Sandbox for InstantSandbox {
    async fn exec(&self, command: &str, _timeout: Duration) -> Result<ExecOutput, SandboxError> {
        let output = if command.contains("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT") {
            "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n".to_string()
        } else {
            "ok\n".to_string()
        };
        Ok(ExecOutput {
            exit_code: 0,
            output,
            timed_out: false,
            truncated: false,
        })
    }
    async fn read_file(&self, _path: &str) -> Result<Vec<u8>, SandboxError> {
        Ok(Vec::new())
    }
    async fn write_file(&self, _path: &str, _contents: &[u8]) -> Result<(), SandboxError> {
        Ok(())
    }
    async fn snapshot(
        &self,
        _writer: crate::sandbox::patch::SnapshotWriter,
    ) -> Result<(), crate::sandbox::patch::PatchError> {
        Ok(())
    }
}

/// Replies `echo step` until `steps` replies were given, then submits.
struct CountingModel {
    steps: u32,
    given: u32,
}

#[async_trait]
impl LlmSession for CountingModel {
    async fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        self.given += 1;
        let command = if self.given > self.steps {
            "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT".to_string()
        } else {
            format!("echo step {}", self.given)
        };
        let (content, tool_calls) = bash_reply(request, "", &command, format!("c{}", self.given));
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

/// Per-message latency of each bus: send then receive (what an agent's next step sees), and a
/// `wait` blocked on an empty inbox until a teammate's send wakes it.
async fn bench_buses(redis: Option<&str>, iterations: u32) -> anyhow::Result<()> {
    let agents = vec!["agent1".to_string(), "agent2".to_string()];
    let mut buses = vec![("in-process", MessageBus::local(&agents, true))];
    if let Some(url) = redis {
        let hub = crate::messaging::RedisHub::connect(url, "cbench-bench").await?;
        buses.push(("redis", MessageBus::Redis(hub.bus("bench", &agents, true))));
    }
    for (name, bus) in buses {
        let mut delivered = Vec::new();
        for _ in 0..iterations.max(1) {
            let t = Instant::now();
            bus.send("agent1", "agent2", "ping").await?;
            let got = bus.receive("agent2").await?;
            anyhow::ensure!(got.len() == 1, "{name} bus lost a message");
            delivered.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut woken = Vec::new();
        for _ in 0..(iterations / 10).max(5) {
            let waiter = {
                let bus = bus.clone();
                tokio::spawn(async move {
                    let got = bus.wait("agent1", Duration::from_secs(10)).await;
                    (Instant::now(), got)
                })
            };
            // Let the waiter block first.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let sent = Instant::now();
            bus.send("agent2", "agent1", "wake").await?;
            let (returned, got) = waiter.await?;
            anyhow::ensure!(
                got?.len() == 1,
                "{name} bus: wait returned without the message"
            );
            woken.push(returned.duration_since(sent).as_secs_f64() * 1e3);
        }
        let p99 = percentile(&delivered, 0.99);
        println!(
            "  bus {name:<10} send → delivered: {:7.3} ms median, {p99:7.3} ms p99 ({} messages); blocked wait woken by a send: {:7.3} ms median",
            median_ms(delivered.clone()),
            delivered.len(),
            median_ms(woken)
        );
        bus.close().await;
    }
    Ok(())
}

fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Prints the measurements.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.pair {
        let backends: Vec<&str> = if args.backends.is_empty() {
            vec!["local"]
        } else {
            args.backends
                .iter()
                .map(|b| match b {
                    crate::cli::BackendArg::Docker => Ok("docker"),
                    crate::cli::BackendArg::Local => Ok("local"),
                    other => Err(anyhow::anyhow!(
                        "--pair measures the local and docker backends, not {other:?}"
                    )),
                })
                .collect::<anyhow::Result<_>>()?
        };
        return pair::bench_pair(&args, &backends).await;
    }
    let cache_root = args
        .cache_dir
        .clone()
        .unwrap_or_else(PluginHost::default_cache_dir);
    // Cold: an empty cache forces a compile.
    let cold_dir = tempfile::tempdir()?;
    let cold_host = PluginHost::new(cold_dir.path())?;
    let t = Instant::now();
    cold_host.load(&args.agent).await?;
    let cold_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(cold_host);

    let host = PluginHost::new(&cache_root)?;
    host.load(&args.agent).await?; // fill the cache
    let mut load = Vec::new();
    let mut instantiate = Vec::new();
    let mut plugin = None;
    for _ in 0..args.iterations.max(1) {
        let (p, timings) = host.load(&args.agent).await?;
        anyhow::ensure!(
            timings.from_cache,
            "the compiled-plugin cache in {} is not being hit",
            cache_root.display()
        );
        load.push(timings.load_ms);
        instantiate.push(timings.info_instantiate_ms);
        plugin = Some(p);
    }
    let Some(plugin) = plugin else {
        anyhow::bail!("no iterations");
    };

    let steps = args.iterations.max(1);
    let bus = MessageBus::local(&["agent1".into()], false);
    let env = AgentEnv {
        task: AgentTask {
            agent_id: "agent1".into(),
            teammates: Vec::new(),
            setting: Setting::Coop,
            feature_text: "benchmark".into(),
            max_steps: steps + 5,
            command_timeout: Duration::from_secs(10),
            git_enabled: false,
            messaging_enabled: false,
            agent_config: String::new(),
            team: None,
        },
        sandbox: Arc::new(InstantSandbox),
        llm: Box::new(CountingModel { steps, given: 0 }),
        bus,
        team: None,
        recorder: Recorder::new("agent1", &[1], "bench"),
        progress: Progress::new(true),
        events: None,
        limits: PluginLimits::default(),
        budget: Default::default(),
    };
    let t = Instant::now();
    let run = plugin.run_agent(env).await;
    let per_step_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(steps + 1);
    anyhow::ensure!(
        run.error.is_none(),
        "benchmark agent failed: {:?}",
        run.error
    );

    println!(
        "plugin: {} {} ({})",
        plugin.identity.name,
        plugin.identity.version,
        args.agent.display()
    );
    println!("  compile (cold cache):        {cold_ms:9.1} ms");
    println!(
        "  load from compiled cache:    {:9.3} ms (median of {})",
        median_ms(load),
        args.iterations
    );
    println!(
        "  instantiate + info():        {:9.3} ms (median)",
        median_ms(instantiate)
    );
    println!(
        "  host round-trip per step:    {per_step_us:9.1} µs ({} steps; LLM + exec + inbox, instant backends, trajectory recorded)",
        steps + 1
    );
    println!(
        "  plugin compute in that run:  {:9.1} ms",
        run.compute.as_secs_f64() * 1e3
    );
    bench_buses(args.redis.as_deref(), args.iterations).await?;

    // A real local sandbox: what one agent command costs end to end (bash start, process
    // group, output capture, drain), with and without bwrap when it is installed.
    let scratch = tempfile::tempdir()?;
    let tree = scratch.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("README"), "bench\n")?;
    let base = BaseRepo::from_source_tree(&tree, &scratch.path().join("base")).await?;
    // Unconfined, then with limits (a cgroup per sandbox), then the default (bwrap + limits).
    let mut modes = vec![(Confinement::none(), "none")];
    if let Ok(limited) = Confinement::resolve(LocalOptions {
        mode: IsolationMode::None,
        ..Default::default()
    }) {
        if limited.cgroups.is_ok() {
            modes.push((limited, "none + cgroup"));
        }
    }
    if let Ok(confined) = Confinement::resolve(LocalOptions {
        mode: IsolationMode::Bwrap,
        ..Default::default()
    }) {
        if confined.cgroups.is_ok() {
            let without_limits = Confinement {
                cgroups: Err("measured without".into()),
                ..confined.clone()
            };
            modes.push((without_limits, "bwrap"));
            modes.push((confined, "bwrap + cgroup"));
        } else {
            modes.push((confined, "bwrap"));
        }
    }
    let runs = args.iterations.clamp(1, 50);
    for (confinement, name) in modes {
        let sandbox =
            LocalSandbox::create(&base, &scratch.path().join("boxes"), &confinement).await?;
        let mut samples = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let out = sandbox.exec("echo ok", Duration::from_secs(10)).await?;
            anyhow::ensure!(out.exit_code == 0, "bench command failed: {}", out.output);
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let label = format!("local exec ({name}):");
        println!(
            "  {label:<29}{:9.2} ms (median of {runs})",
            median_ms(samples)
        );
    }
    for choice in args.backend_choices()? {
        backend(&choice, &args.dataset_dir).await?;
        if !args.agents.is_empty() {
            println!(
                "concurrency on {} ({} steps per agent, {} ms{} per model reply; plugin {}):",
                choice.name(),
                args.steps,
                args.model_delay_ms,
                match args.model_jitter_ms.min(args.model_delay_ms) {
                    0 => String::new(),
                    j => format!(" ± {j}"),
                },
                plugin.identity.name
            );
        }
        for &n in &args.agents {
            let row = concurrency::run_concurrency(
                &plugin,
                &choice,
                &args.dataset_dir,
                n,
                args.steps,
                Duration::from_millis(args.model_delay_ms),
                Duration::from_millis(args.model_jitter_ms.min(args.model_delay_ms)),
            )
            .await?;
            println!("{}", row.render());
        }
    }
    Ok(())
}

/// Sandbox start, exec round-trip, patch, close and per-pair grading on one backend,
/// with the first pair (and its gold patches) of the dataset's first task.
async fn backend(choice: &BackendChoice, dataset_dir: &std::path::Path) -> anyhow::Result<()> {
    let dataset = Dataset::discover(dataset_dir)?;
    let pairs = dataset.select(&Selection::default())?;
    let Some(pair) = pairs.into_iter().next() else {
        anyhow::bail!("{}: no pair to measure with", dataset_dir.display());
    };
    let backend = Backend::resolve(choice, "bench", &[dataset_dir.to_path_buf()]).await?;
    backend.preflight(std::slice::from_ref(&pair)).await?;
    let scratch = tempfile::tempdir()?;
    let result = measure_backend(&backend, &pair, scratch.path()).await;
    backend.cleanup().await?;
    result
}

async fn measure_backend(
    backend: &Backend,
    pair: &crate::dataset::Pair,
    scratch: &std::path::Path,
) -> anyhow::Result<()> {
    const STARTS: usize = 5;
    const EXECS: usize = 30;
    /// What separates an agent's commands at the least (a model call), so the docker channel's
    /// login shell for the next command has started, as it has in a real run.
    const MODEL_TURN: Duration = Duration::from_millis(50);
    let bases = backend.base_repos(
        &scratch.join("bases"),
        UpstreamRepos {
            cache_dir: scratch.join("cache"),
            mirror_dir: None,
        },
    );
    // Warm the base (bundled commit / image export) so starts measure the sandbox alone.
    let base = bases.get(&pair.task).await?;
    let (mut start, mut exec, mut diff, mut close) = (vec![], vec![], vec![], vec![]);
    let mut plain_exec = Vec::new();
    let (mut exec_output, mut exec_back_to_back) = (Vec::new(), Vec::new());
    // `ls`: the pair bench's command (a program started, not a builtin).
    let mut exec_ls = Vec::new();
    for _ in 0..STARTS {
        let t = Instant::now();
        let sandbox = backend
            .sandbox(pair, "agent1", &bases, scratch, None)
            .await?;
        start.push(t.elapsed().as_secs_f64() * 1e3);
        for _ in 0..EXECS / STARTS {
            // An agent's model turn lies between two commands.
            tokio::time::sleep(MODEL_TURN).await;
            let t = Instant::now();
            let out = sandbox.exec("true", Duration::from_secs(30)).await?;
            anyhow::ensure!(out.exit_code == 0, "`true` failed: {}", out.output);
            exec.push(t.elapsed().as_secs_f64() * 1e3);
            tokio::time::sleep(MODEL_TURN).await;
            let t = Instant::now();
            let out = sandbox.exec("echo hi", Duration::from_secs(30)).await?;
            anyhow::ensure!(out.output == "hi\n", "`echo hi` printed {:?}", out.output);
            exec_output.push(t.elapsed().as_secs_f64() * 1e3);
            tokio::time::sleep(MODEL_TURN).await;
            let t = Instant::now();
            let out = sandbox.exec("ls", Duration::from_secs(30)).await?;
            anyhow::ensure!(
                out.exit_code == 0 && !out.output.is_empty(),
                "`ls` failed: {}",
                out.output
            );
            exec_ls.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for _ in 0..EXECS / STARTS {
            let t = Instant::now();
            let out = sandbox.exec("true", Duration::from_secs(30)).await?;
            anyhow::ensure!(out.exit_code == 0, "`true` failed: {}", out.output);
            exec_back_to_back.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let t = Instant::now();
        crate::sandbox::patch::compute(
            sandbox.as_ref(),
            &base,
            &scratch.join("patches"),
            Default::default(),
        )
        .await?;
        diff.push(t.elapsed().as_secs_f64() * 1e3);
        // Docker: the same command by one docker exec each (what the channel replaces; last,
        // since a plain exec's process sweep ends the channel).
        if let Some(docker) = sandbox.as_docker() {
            for _ in 0..EXECS / STARTS {
                tokio::time::sleep(MODEL_TURN).await;
                let t = Instant::now();
                let out = docker.exec_plain("true", Duration::from_secs(30)).await?;
                anyhow::ensure!(out.exit_code == 0, "`true` failed: {}", out.output);
                plain_exec.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let t = Instant::now();
        sandbox.close().await?;
        drop(sandbox);
        close.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let grader = Grader::new(
        Duration::from_secs(900),
        MergePolicy::Union,
        backend.grading(),
    );
    let patches: Vec<GradedPatch> = pair
        .feature_records()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            Ok(GradedPatch {
                agent_id: format!("agent{}", i + 1),
                feature_ids: vec![f.id],
                patch: std::fs::read_to_string(f.gold_patch_path())?,
            })
        })
        .collect::<std::io::Result<_>>()?;
    let base = bases.get(&pair.task).await?;
    let mut grading = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        let report = grader
            .grade(
                pair,
                Setting::Coop,
                &base,
                &scratch.join("grading"),
                &scratch.join(format!("pair-{i}")),
                &patches,
            )
            .await?;
        grading.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            report.agents.values().all(|a| a.success),
            "gold patches failed their own tests on {}",
            backend.name()
        );
    }
    println!(
        "backend {} ({}), pair {} {}:",
        backend.name(),
        backend.isolation(),
        pair.task.label(),
        pair.dir_name()
    );
    println!(
        "  sandbox start:               {:9.1} ms (median of {STARTS})",
        median_ms(start)
    );
    let exec_ms = median_ms(exec);
    println!(
        "  exec round-trip (`true`):    {exec_ms:9.2} ms (median of {EXECS}, {} ms apart: a model turn)",
        MODEL_TURN.as_millis()
    );
    println!(
        "  … `echo hi` (with output):   {:9.2} ms (median of {EXECS})",
        median_ms(exec_output)
    );
    println!(
        "  … `ls` (a program, output):  {:9.2} ms (median of {EXECS})",
        median_ms(exec_ls)
    );
    println!(
        "  … `true` back to back:       {:9.2} ms (median of {EXECS}; no turn between commands)",
        median_ms(exec_back_to_back)
    );
    if !plain_exec.is_empty() {
        let plain_ms = median_ms(plain_exec);
        println!(
            "  … by one docker exec each:   {plain_ms:9.2} ms (median of {EXECS}): the channel is {:.1}× faster",
            plain_ms / exec_ms.max(1e-6)
        );
    }
    println!(
        "  patch (git diff) out:        {:9.1} ms (median of {STARTS})",
        median_ms(diff)
    );
    println!(
        "  sandbox close:               {:9.1} ms (median of {STARTS})",
        median_ms(close)
    );
    println!(
        "  grading one pair (4 runs):   {:9.1} ms (median of 3; merge + 2 own + 2 merged test runs)",
        median_ms(grading)
    );
    Ok(())
}
