//! The commands that read a run: verify, eval, report, analyze, compare, view, export, watch, import.

use std::process::ExitCode;

use crate::cli::*;

use super::exit_for;

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

/// `cbench watch`.
pub async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let print = |line: &str| println!("{line}");
    match &args.redis {
        Some(url) => crate::watch::watch_redis(url, &args.name, print).await?,
        None => crate::watch::watch_dir(&args.log_dir, &args.name, print).await?,
    }
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
