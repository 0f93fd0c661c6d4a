//! One function per `cbench` command: validated arguments in, an exit code out.

use std::process::ExitCode;

use crate::cli::*;

/// `cbench run`.
pub async fn run(args: Box<RunArgs>) -> anyhow::Result<ExitCode> {
    let engine = args.engine.engine()?;
    if !matches!(engine, Engine::Local) {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        return Ok(match submit_to_engine(args, engine, argv).await? {
            Some(summary) => exit_for(summary.infra_errors),
            None => ExitCode::SUCCESS,
        });
    }
    let mut cfgs = (*args).validate()?;
    if cfgs.len() == 1 {
        let cfg = cfgs.remove(0);
        let default_model = cfg.model == crate::cli::DEFAULT_MODEL;
        let summary = crate::runner::run(cfg).await.map_err(|e| {
            let model_error = matches!(e, cbench_run::error::RunError::Model(_));
            let e = anyhow::Error::new(e);
            // The user may never have typed this model: say where it came from.
            if default_model && model_error {
                e.context(format!(
                    "no -m given: the default model {} needs its provider's credentials; \
                     give -m (`-m oracle` runs offline, replaying the gold patches; \
                     `cbench models` lists the others)",
                    crate::cli::DEFAULT_MODEL
                ))
            } else {
                e
            }
        })?;
        return Ok(exit_for(summary.infra_errors));
    }
    let names: Vec<String> = cfgs.iter().map(|c| c.name.clone()).collect();
    let log_dir = cfgs[0].log_dir.clone();
    let summaries = crate::runner::run_many(cfgs).await?;
    let infra_errors = summaries.iter().map(|s| s.infra_errors).sum();
    match crate::compare::compare(&log_dir, &names, false) {
        Ok(comparison) => {
            println!();
            print!("{}", comparison.render());
            let out_dir = log_dir.join("compare").join(names.join("__vs__"));
            match crate::view::write_comparison(&comparison, &log_dir, &out_dir) {
                Ok(page) => println!("comparison page: {}", page.display()),
                Err(e) => eprintln!("warning: no comparison page: {e}"),
            }
        }
        Err(e) => eprintln!("warning: no comparison: {}", error_chain(&e.into())),
    }
    Ok(exit_for(infra_errors))
}

/// `cbench run --engine slurm|kubernetes`: submits the run (`argv` from `run` on, which every
/// task parses again) and follows it; the summary, or None when detached.
pub async fn submit_to_engine(
    args: Box<RunArgs>,
    engine: Engine,
    argv: Vec<String>,
) -> anyhow::Result<Option<crate::summary::RunSummary>> {
    same_options_as_submitted(&args, &argv)?;
    let mut cfgs = (*args).validate()?;
    if cfgs.len() != 1 || !cfgs[0].team.is_empty() || cfgs[0].shard.is_some() {
        anyhow::bail!("--engine slurm|kubernetes runs one --agent (no --team, no --shard)");
    }
    let cfg = cfgs.remove(0);
    Ok(match engine {
        Engine::Slurm(slurm) => crate::slurm::submit(cfg, argv, slurm).await?,
        Engine::Kubernetes(kube) => cbench_kube::submit(cfg, argv, kube).await?,
        Engine::Local => anyhow::bail!("the local engine runs in process, not submitted"),
    })
}

/// `cbench verify`.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let run_dir = args.log_dir.join(&args.name);
    let checks = crate::runrecord::verify_run(&run_dir)?;
    let mut all_ok = true;
    for c in &checks {
        let verdict = match &c.actual_sha256 {
            Some(actual) if c.ok() => format!("✓ sha256 {}", actual),
            Some(actual) => format!(
                "✗ the file changed: recorded sha256 {}, now {}",
                c.recorded_sha256, actual
            ),
            None => {
                format!("✗ the file is gone (recorded sha256 {})", c.recorded_sha256)
            }
        };
        all_ok &= c.ok();
        println!("{} {}: {verdict}", c.role, c.path);
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `cbench eval`.
pub async fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    existing_run(&args.log_dir, &args.name)?;
    let cfg = args.validate()?;
    let summary = crate::runner::eval_run(cfg).await?;
    Ok(exit_for(summary.infra_errors))
}

/// `cbench dataset fetch`.
pub async fn dataset_fetch(args: DatasetFetchArgs) -> anyhow::Result<ExitCode> {
    let summary = crate::dataset::fetch::fetch(crate::dataset::fetch::FetchConfig {
        base_url: args.base_url,
        repo_id: args.repo_id,
        revision: args.revision,
        dest: args.dataset_dir.clone(),
        concurrency: args.concurrency,
        quiet: args.quiet,
    })
    .await?;
    println!(
            "fetched {} files into {}: {} downloaded ({} resumed, {} bytes), {} already present and verified",
            summary.files,
            args.dataset_dir.display(),
            summary.downloaded,
            summary.resumed,
            summary.bytes_downloaded,
            summary.already_present
        );
    Ok(ExitCode::SUCCESS)
}

/// `cbench dataset verify`'s exit status when no item is unverified but some could not be checked.
const DATASET_UNCHECKED_EXIT: u8 = 3;

/// `cbench dataset verify`.
pub async fn dataset_verify(args: DatasetVerifyArgs) -> anyhow::Result<ExitCode> {
    let selection = args.selection.validate()?;
    if args.repeat == 0 {
        anyhow::bail!("--repeat 0: give at least 1");
    }
    let dataset = crate::dataset::Dataset::discover(&args.selection.dataset_dir)?;
    let pairs = dataset.select(&selection)?;
    let scratch = crate::leftovers::scratch_dir("verify", "dataset")?;
    let bases = std::sync::Arc::new(crate::repos::BaseRepos::new(
        &scratch.path().join("bases"),
        crate::repos::UpstreamRepos {
            cache_dir: args.caches.cache_dir(),
            mirror_dir: args.caches.repo_cache.clone(),
        },
    ));
    let verify_dir = args.log_dir.join("verify");
    let cfg = crate::eval::verify::VerifyConfig {
        repeat: args.repeat,
        concurrency: args.concurrency,
        test_timeout: std::time::Duration::from_secs(args.test_timeout),
        log_dir: verify_dir.clone(),
        scratch: scratch.path().join("work"),
        confinement: crate::cli::grading_confinement(
            args.isolation,
            &args.selection.dataset_dir,
            &args.log_dir,
            &args.caches,
        )?,
    };
    let report = crate::eval::verify::verify(&pairs, bases, &cfg).await;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| verify_dir.join("verified.json"));
    crate::fsutil::write_json_atomic(&output, &report)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
        println!("report: {}", output.display());
    }
    // An item that could not be checked (its base or toolchain is missing) is no dataset
    // defect: it gets its own exit status, so a script can tell the two apart.
    Ok(if report.unverified > 0 {
        ExitCode::from(1)
    } else if report.unchecked > 0 {
        eprintln!(
            "warning: {} of {} features could not be checked (not a dataset defect; see the \
             report's reasons); exit status {DATASET_UNCHECKED_EXIT}",
            report.unchecked,
            report.features.len()
        );
        ExitCode::from(DATASET_UNCHECKED_EXIT)
    } else {
        ExitCode::SUCCESS
    })
}

/// `cbench dataset list`.
pub async fn dataset_list(args: DatasetListArgs) -> anyhow::Result<ExitCode> {
    let selection = args.selection.validate()?;
    let dataset = crate::dataset::Dataset::discover(&args.selection.dataset_dir)?;
    let pairs = dataset.select(&selection)?;
    let listing = crate::dataset::listing::list(&pairs, &args.image_prefix, args.stats);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        print!("{}", listing.render(args.stats));
    }
    Ok(ExitCode::SUCCESS)
}

/// The directory of run `name` under `log_dir`; a missing one names the closest run there.
fn existing_run(log_dir: &std::path::Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    let run_dir = log_dir.join(name);
    if run_dir.is_dir() {
        return Ok(run_dir);
    }
    let runs = crate::layout::run_names(log_dir);
    let hint = crate::suggest::did_you_mean(name, runs.iter().map(String::as_str));
    anyhow::bail!(
        "run `{name}` not found: {} does not exist{hint} (pass --log-dir if it is elsewhere)",
        run_dir.display()
    )
}

/// `cbench report`.
pub async fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let run_dir = existing_run(&args.log_dir, &args.name)?;
    let baseline = match &args.baseline {
        Some(b) => Some(existing_run(&args.log_dir, b)?),
        None => None,
    };
    let report = crate::report::build(&run_dir, baseline.as_deref())?;
    // A run read from a read-only place (a colleague's share) is still reported.
    if let Err(e) = crate::fsutil::write_json_atomic(&run_dir.join("report.json"), &report) {
        eprintln!("warning: report.json not saved ({e}); printing only");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// `cbench analyze`.
pub async fn analyze(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    use futures_util::StreamExt;
    let run_dir = existing_run(&args.log_dir, &args.name)?;
    if args.judge_concurrency == 0 {
        anyhow::bail!("--judge-concurrency must be at least 1");
    }
    // The model is resolved (keys, price table) before any pair is read or any call made.
    let judge = match &args.judge {
        Some(spec) => Some(args.llm.validate()?.model(spec)?),
        None => None,
    };
    let mut pairs = cbench_analyze::analyze_pairs(&run_dir)?;
    if let Some(model) = &judge {
        let verdicts: Vec<(usize, cbench_analyze::judge::JudgeVerdict)> =
            futures_util::stream::iter(
                pairs
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.analysis.applicable)
                    .map(|(i, p)| {
                        let model = model.clone();
                        async move {
                            (
                                i,
                                cbench_analyze::judge::judge_pair(model.as_ref(), p).await,
                            )
                        }
                    }),
            )
            .buffer_unordered(args.judge_concurrency)
            .collect()
            .await;
        for (i, verdict) in verdicts {
            pairs[i].analysis.judge = Some(verdict);
        }
    } else {
        cbench_analyze::keep_verdicts(&mut pairs);
    }
    let (run, pairs) = cbench_analyze::write(&run_dir, &pairs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&run)?);
        return Ok(ExitCode::SUCCESS);
    }
    for pair in &pairs {
        print!("{}", pair.render());
        if judge.is_some() {
            print!("{}", pair.render_judge());
        }
    }
    print!("{}", run.render());
    println!(
        "each pair's findings: <pair>/analysis.json; the run's: {}",
        run_dir.join(cbench_analyze::PAIR_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `cbench compare`.
pub async fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    for run in &args.runs {
        existing_run(&args.log_dir, run)?;
    }
    let comparison = crate::compare::compare(&args.log_dir, &args.runs, args.allow_mismatch)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print!("{}", comparison.render());
    }
    let out_dir = args
        .output
        .clone()
        .unwrap_or_else(|| args.log_dir.join("compare").join(args.runs.join("__vs__")));
    let page = crate::view::write_comparison(&comparison, &args.log_dir, &out_dir)?;
    eprintln!("comparison page: {}", page.display());
    Ok(ExitCode::SUCCESS)
}

/// `cbench view`.
pub async fn view(args: ViewArgs) -> anyhow::Result<ExitCode> {
    let run_dir = existing_run(&args.log_dir, &args.name)?;
    let baseline = match &args.baseline {
        Some(b) => Some(existing_run(&args.log_dir, b)?),
        None => None,
    };
    let out_dir = args.output.clone().unwrap_or_else(|| run_dir.join("view"));
    let written = crate::view::write(&args.name, &run_dir, baseline.as_deref(), &out_dir)?;
    println!(
        "wrote {} ({}, {:.1} MB, {:.2} s)",
        written.index.display(),
        crate::progress::plural(written.pairs, "pair", "pairs"),
        written.bytes as f64 / 1e6,
        written.elapsed_s
    );
    if args.open {
        if let Err(e) = crate::view::open_in_browser(&written.index) {
            eprintln!("warning: not opened ({e}); open the file above in a browser");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cbench export`.
pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let run_dir = existing_run(&args.log_dir, &args.name)?;
    let out_dir = args
        .output
        .clone()
        .unwrap_or_else(|| run_dir.join("export").join("atif"));
    let written = crate::export::atif::export(&args.name, &run_dir, &out_dir)?;
    println!(
        "wrote {} ATIF trajectories into {}",
        written,
        out_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `cbench bench`.
pub async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    crate::bench::run(args).await?;
    Ok(ExitCode::SUCCESS)
}

/// `cbench images build`.
pub async fn images_build(args: ImagesBuildArgs) -> anyhow::Result<ExitCode> {
    let selection = args.selection.validate()?;
    let dataset = crate::dataset::Dataset::discover(&args.selection.dataset_dir)?;
    let pairs = dataset.select(&selection)?;
    let engine = crate::docker::Engine::connect().await?;
    crate::docker::images::build_tasks(
        &engine,
        &pairs,
        &args.image_prefix,
        args.base_image.as_deref(),
        args.force,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `cbench watch`.
pub async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let print = |line: &str| println!("{line}");
    match &args.redis {
        Some(url) => crate::watch::watch_redis(url, &args.name, print).await?,
        None => crate::watch::watch_dir(&args.log_dir, &args.name, print).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `cbench plugin inspect`.
pub async fn plugin_inspect(args: PluginInspectArgs) -> anyhow::Result<ExitCode> {
    // A name is looked up as `run --agent` looks it up.
    let spec = args.file.to_string_lossy();
    let file = crate::plugin::search::SearchPath::from_env()
        .resolve("plugin inspect", &spec)?
        .path;
    let mut report = crate::plugin::inspect::inspect_file(&file)?;
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(crate::plugin::PluginHost::default_cache_dir);
    let host = crate::plugin::PluginHost::new(&cache_dir)?;
    // Compiled before (a run, or --compile): asking it its name takes milliseconds.
    if (args.compile || host.is_cached(&file)) && report.refused.is_none() {
        match host.load(&file).await {
            Ok((plugin, _)) => {
                report.name = Some(plugin.identity.name.clone());
                report.version = Some(plugin.identity.version.clone());
            }
            Err(e) => report.refused = Some(e.to_string()),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.refused.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `cbench plugin new`.
pub async fn plugin_new(args: PluginNewArgs) -> anyhow::Result<ExitCode> {
    let created = crate::cli::scaffold::create(&args)?;
    println!("{}", created.render());
    Ok(ExitCode::SUCCESS)
}

/// `cbench cache info`.
pub async fn cache_info(args: CacheInfoArgs) -> anyhow::Result<ExitCode> {
    let cache = compile_cache(args.cache_dir);
    let entries = cache.entries()?;
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    println!(
        "compiled plugins in {}: {} entries, {} (cap {}; {}=MiB changes it)",
        cache.dir().display(),
        entries.len(),
        crate::progress::human_bytes(total),
        crate::progress::human_bytes(cache.max_bytes()),
        crate::plugin::cache::MAX_MB_ENV
    );
    for e in &entries {
        println!(
            "  {:>10}  last used {}  {}",
            crate::progress::human_bytes(e.bytes),
            chrono::DateTime::from_timestamp(e.last_used as i64, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
            e.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cbench cache prune`.
pub async fn cache_prune(args: CachePruneArgs) -> anyhow::Result<ExitCode> {
    let cache = compile_cache(args.cache_dir);
    let target = if args.all {
        0
    } else {
        args.max_size.unwrap_or(cache.max_bytes())
    };
    let report = cache.prune_to(target, None)?;
    println!(
        "removed {} compiled plugin(s) ({}); kept {} ({}) in {}",
        report.removed,
        crate::progress::human_bytes(report.freed_bytes),
        report.kept,
        crate::progress::human_bytes(report.kept_bytes),
        cache.dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `cbench cleanup`.
pub async fn cleanup(args: CleanupArgs) -> anyhow::Result<ExitCode> {
    use crate::docker::cleanup::{sweep, Scope};
    let scope = match (args.name, args.all) {
        (Some(name), _) => Scope::RunName(name),
        (None, true) => Scope::All,
        (None, false) => Scope::Orphans,
    };
    // Local leftovers first: they need no Docker engine.
    let local = crate::leftovers::sweep(scope_run_name(&scope));
    println!(
        "removed {} scratch dir(s) and {} cgroup(s) of dead invocations",
        local.scratch_dirs, local.cgroups
    );
    if args.backend == Some(crate::cli::CleanupBackendArg::Gcp) {
        args.gcp.validate()?;
        let clients = crate::eval::gcp_bench::connect_for_cleanup(
            &crate::eval::gcp_bench::GcpEnv::from_process(),
            args.gcp.gcp_project.as_deref(),
            &args.gcp.gcp_region,
            args.gcp.gcp_bucket.as_deref(),
        )
        .await?;
        let swept = crate::eval::gcp_bench::sweep(&clients, &scope).await?;
        println!(
            "deleted the Batch jobs (project {}, {}) and objects (gs://{}) of {swept} invocation(s)",
            clients.project(),
            clients.region(),
            clients.bucket()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.backend == Some(crate::cli::CleanupBackendArg::Modal) {
        let config = cbench_modal::ModalConfig::from_env()?;
        let client = cbench_modal::ModalClient::connect(config).await?;
        let app_id = client.app(&args.modal_app).await?;
        let terminated = crate::sandbox::modal::sweep(&client, &app_id, &scope).await?;
        println!(
            "terminated {terminated} Modal sandbox(es) in app {}",
            args.modal_app
        );
        return Ok(ExitCode::SUCCESS);
    }
    let engine = match crate::docker::Engine::connect().await {
        Ok(engine) => engine,
        Err(e) => {
            println!("containers not checked: {e}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let swept = sweep(&engine, &scope).await?;
    println!(
        "removed {} container(s) and {} network(s)",
        swept.containers, swept.networks
    );
    Ok(ExitCode::SUCCESS)
}

/// The compiled-plugin cache at `dir` (default location otherwise), knowing this engine so
/// entries of other wasmtime versions are pruned first.
fn compile_cache(dir: Option<std::path::PathBuf>) -> crate::plugin::CompileCache {
    let dir = dir.unwrap_or_else(crate::plugin::PluginHost::default_cache_dir);
    match crate::plugin::PluginHost::new(&dir) {
        Ok(host) => host.compile_cache().clone(),
        Err(_) => crate::plugin::CompileCache::new(&dir),
    }
}

/// Pairs failing is a result; pairs the harness could not run or grade is not.
fn exit_for(infra_errors: usize) -> ExitCode {
    if infra_errors == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {infra_errors} pair(s) could not be run or graded (see summary.json)");
        ExitCode::from(1)
    }
}

/// The run a cleanup is limited to, if any.
fn scope_run_name(scope: &crate::docker::cleanup::Scope) -> Option<&str> {
    match scope {
        crate::docker::cleanup::Scope::RunName(name) => Some(name),
        _ => None,
    }
}

/// `cbench plugin list`.
pub async fn plugin_list(args: PluginListArgs) -> anyhow::Result<ExitCode> {
    use crate::plugin::search::{Origin, SearchPath, COOPERBENCH_AGENTS};
    let search = SearchPath::from_env();
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(crate::plugin::PluginHost::default_cache_dir);
    let host = crate::plugin::PluginHost::new(&cache_dir)?;
    let mut rows = Vec::new();
    for found in search.list() {
        let mut inspection = crate::plugin::inspect::inspect_file(&found.path)?;
        if inspection.refused.is_none() {
            match host.load(&found.path).await {
                Ok((plugin, _)) => {
                    inspection.name = Some(plugin.identity.name.clone());
                    inspection.version = Some(plugin.identity.version.clone());
                }
                Err(e) => inspection.refused = Some(e.to_string()),
            }
        }
        rows.push((found, inspection));
    }
    if args.json {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|(found, i)| {
                serde_json::json!({
                    "name": found.name,
                    "path": found.path,
                    "origin": found.origin,
                    "shadowed": found.shadowed,
                    "agent_name": i.name,
                    "agent_version": i.version,
                    "wit": i.wit_package,
                    "sha256": i.sha256,
                    "refused": i.refused,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("plugin search path (first match wins):");
    for (dir, origin) in &search.dirs {
        let origin = match origin {
            Origin::Variable => "from CBENCH_PLUGIN_PATH",
            Origin::WorkingDirectory => "./plugins",
            Origin::Installed => "installed by setup.sh",
            Origin::Checkout => "the checkout's plugins/",
        };
        println!("  {} ({origin})", dir.display().to_string().escape_debug());
    }
    if rows.is_empty() {
        println!("no plugins found: ./scripts/setup.sh builds and installs them, or set CBENCH_PLUGIN_PATH");
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    println!(
        "{:<16} {:<24} {:<8} {:<14} FILE",
        "NAME", "AGENT", "WIT", "SHA256"
    );
    for (found, i) in &rows {
        let agent = match (&i.name, &i.version, &i.refused) {
            (_, _, Some(_)) => "refused".to_string(),
            (Some(n), Some(v), None) => format!("{n} {v}"),
            _ => "?".to_string(),
        };
        let wit = i
            .wit_package
            .as_deref()
            .and_then(|p| p.rsplit_once('@'))
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| "-".into());
        let note = if found.shadowed {
            "  (shadowed by an earlier one)".to_string()
        } else {
            String::new()
        };
        println!(
            "{:<16} {:<24} {:<8} {:<14} {}{note}",
            found.name.escape_debug().to_string(),
            agent.escape_debug().to_string(),
            wit,
            &i.sha256[..12.min(i.sha256.len())],
            found.path.display().to_string().escape_debug()
        );
        if let Some(reason) = &i.refused {
            println!("    refused: {}", reason.escape_debug());
        }
    }
    for (cb, ours) in COOPERBENCH_AGENTS {
        println!("{cb} (CooperBench) → {ours}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A rerun of a Slurm run keeps every option but the engine's own (how tasks are scheduled):
/// refused here, before anything is submitted, rather than by every task.
fn same_options_as_submitted(args: &RunArgs, argv: &[String]) -> anyhow::Result<()> {
    let Some(name) = &args.name else {
        return Ok(());
    };
    let manifest_path = args.log_dir.join(name).join("manifest.json");
    let Ok(earlier) = crate::fsutil::read_json::<crate::cluster::Manifest>(&manifest_path) else {
        return Ok(());
    };
    if args.force {
        return Ok(());
    }
    let normalized = |argv: &[String]| -> Option<String> {
        let full = std::iter::once("cbench".to_string()).chain(argv.iter().cloned());
        let Command::Run(mut a) = <Cli as clap::Parser>::try_parse_from(full).ok()?.command else {
            return None;
        };
        a.engine = EngineArgs {
            engine: a.engine.engine,
            engine_cpus: None,
            engine_mem: None,
            engine_time: None,
            partition: None,
            account: None,
            sbatch_arg: Vec::new(),
            k8s_image: None,
            k8s_claim: None,
            k8s_namespace: None,
            k8s_secret: None,
            k8s_service_account: None,
            detach: false,
        };
        a.concurrency = 0;
        a.quiet = false;
        Some(format!("{a:?}"))
    };
    if normalized(&earlier.argv) != normalized(argv) {
        anyhow::bail!(
            "run `{name}` was submitted with other options ({}: `cbench {}`); rerun it with the same options (only the engine's may change), use another -n, or --force to start over",
            manifest_path.display(),
            earlier.argv.join(" ")
        );
    }
    Ok(())
}

/// `cbench status`.
pub async fn status(args: RunNameArgs) -> anyhow::Result<ExitCode> {
    let manifest = crate::cluster::read_manifest(&args.log_dir, &args.name)?;
    let text = match manifest.engine.as_str() {
        "kubernetes" => cbench_kube::status(&args.log_dir, &args.name).await?,
        _ => crate::slurm::status(&args.log_dir, &args.name)?,
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `cbench cancel`.
pub async fn cancel(args: RunNameArgs) -> anyhow::Result<ExitCode> {
    let manifest = crate::cluster::read_manifest(&args.log_dir, &args.name)?;
    let (cancelled, what) = match manifest.engine.as_str() {
        "kubernetes" => (
            cbench_kube::cancel(&args.log_dir, &args.name).await?,
            "Kubernetes Job",
        ),
        _ => (
            crate::slurm::cancel(&args.log_dir, &args.name)?,
            "Slurm job",
        ),
    };
    if cancelled.is_empty() {
        println!("run {}: no job of it is queued", args.name);
    } else {
        println!(
            "run {}: cancelled {what} {}; `cbench run` with the same arguments resubmits what is missing",
            args.name,
            cancelled.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cbench run-pair`: one array task.
pub async fn run_pair(args: RunPairArgs) -> anyhow::Result<ExitCode> {
    let subset = match &args.pairs {
        Some(text) => Some(
            crate::cluster::parse_ranges(text)
                .map_err(|e| anyhow::anyhow!("--pairs {text}: {e}"))?,
        ),
        None => None,
    };
    let (manifest, task) = crate::cluster::task_of(&args.manifest, args.index, subset.as_deref())?;
    // The manifest is the one this task was submitted with (the scheduler passes its hash).
    if let Ok(submitted) = std::env::var(crate::cluster::MANIFEST_HASH_VAR) {
        let now = crate::fsutil::sha256_hex(&std::fs::read(&args.manifest)?);
        if now != submitted {
            anyhow::bail!(
                "{}: changed since this array was submitted (sha256 {now}, submitted {submitted}); submit the run again",
                args.manifest.display()
            );
        }
    }
    let full = std::iter::once("cbench".to_string()).chain(manifest.argv.iter().cloned());
    let Command::Run(mut run_args) = <Cli as clap::Parser>::try_parse_from(full)?.command else {
        anyhow::bail!(
            "{}: its argv is not a `cbench run`",
            args.manifest.display()
        );
    };
    run_args.engine.engine = EngineArg::Local;
    run_args.quiet = true;
    let mut cfgs = (*run_args).validate()?;
    let mut cfg = cfgs.remove(0);
    let sha = crate::fsutil::sha256_hex(&std::fs::read(&cfg.agent)?);
    if sha != manifest.plugin_sha256 {
        anyhow::bail!(
            "{}: the plugin {} changed since the run was submitted (sha256 {sha}, submitted {})",
            args.manifest.display(),
            cfg.agent.display(),
            manifest.plugin_sha256
        );
    }
    // The task writes where the manifest is, under the manifest's run name.
    let expected = std::path::absolute(cfg.log_dir.join(&cfg.name).join("manifest.json"))?;
    if cfg.name != manifest.run || std::path::absolute(&args.manifest)? != expected {
        anyhow::bail!(
            "{}: its command line writes run `{}` into {}, not this manifest's run `{}`",
            args.manifest.display(),
            cfg.name,
            cfg.log_dir.display(),
            manifest.run
        );
    }
    cfg.pair_task = Some(task);
    cfg.force = false;
    let summary = crate::runner::run(cfg).await?;
    Ok(exit_for(summary.infra_errors))
}

/// `cbench models`.
pub async fn models(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    use crate::llm::providers::{catalog, Credentials};
    let credentials = Credentials::load(std::path::Path::new("."))?;
    let forms = catalog();
    if args.json {
        let json: Vec<serde_json::Value> = forms
            .iter()
            .map(|f| {
                serde_json::json!({
                    "form": f.form,
                    "wire": f.wire.name(),
                    "example": f.example,
                    "note": f.note,
                    "variables": f.vars.iter().map(|v| serde_json::json!({
                        "names": v.names,
                        "required": v.required,
                        "purpose": v.purpose,
                        "set": v.set_in(&credentials),
                    })).collect::<Vec<_>>(),
                    "ready": f.vars.iter().all(|v| !v.required || v.set_in(&credentials).is_some()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Model strings `-m` accepts (LiteLLM's names; default {}). Variables come from the environment or ./.env; ✓ set, ✗ missing (values are never shown).\n",
        crate::cli::DEFAULT_MODEL
    );
    for f in &forms {
        let ready = f
            .vars
            .iter()
            .all(|v| !v.required || v.set_in(&credentials).is_some());
        println!(
            "{} {:<26} e.g. {}",
            if ready { "✓" } else { "✗" },
            f.form,
            f.example
        );
        for v in &f.vars {
            let state = match v.set_in(&credentials) {
                Some(name) => format!("✓ {name} set"),
                None if v.required => "✗ not set".to_string(),
                None => "· not set (optional)".to_string(),
            };
            println!(
                "      {:<50} {:<24} {}",
                v.names.join(" | "),
                state,
                v.purpose
            );
        }
        if !f.note.is_empty() {
            println!("      {}", f.note);
        }
    }
    println!(
        "\nBuilt in, no key: oracle (replays the gold patches), scripted:<file>, replay:<run dir>."
    );
    Ok(ExitCode::SUCCESS)
}

/// `cbench import cooperbench`.
pub async fn import_cooperbench(args: ImportCooperbenchArgs) -> anyhow::Result<ExitCode> {
    let imported =
        crate::import::cooperbench::import(&crate::import::cooperbench::ImportOptions {
            dir: args.dir.clone(),
            name: args.name,
            log_dir: args.log_dir.clone(),
            dataset_dir: args.dataset_dir,
            force: args.force,
        })?;
    for skipped in &imported.skipped {
        eprintln!("warning: left out {}", skipped.escape_debug());
    }
    let runs = &imported.runs;
    for run in runs {
        println!(
            "imported {} ({}): {} pairs, {} graded by CooperBench → {}",
            run.name,
            run.setting,
            run.pairs,
            run.graded,
            run.path.display()
        );
    }
    let log_dir = args.log_dir.display();
    for run in runs {
        println!(
            "  cbench report -n {name} --log-dir {log_dir}   ·   cbench view -n {name} --log-dir {log_dir}   ·   cbench eval -n {name} --log-dir {log_dir} (regrade the cbench way)",
            name = run.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The error and its causes, each said once: our messages often quote their source already
/// (`cannot read X: No such file or directory (os error 2)`), which `{:#}` would repeat.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}
