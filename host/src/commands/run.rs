//! `cbench run` and the commands that follow a run a scheduler holds: submit, status, cancel, one pair.

use std::process::ExitCode;

use crate::cli::*;

use super::{error_chain, exit_for};

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
