//! `cbench gold`: arguments to a gold check, its report written and compared.

/// `cbench gold`: check, write the report, compare with a reference.
pub async fn run(args: super::GoldArgs) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context;
    let selection = args.selection.validate()?;
    let dataset = crate::dataset::Dataset::discover(&args.selection.dataset_dir)?;
    let pairs = dataset.select(&selection)?;
    let reference: Option<cbench_eval::gold::GoldReport> = match &args.reference {
        Some(path) => Some(
            crate::fsutil::read_json(path)
                .with_context(|| format!("--reference {}", path.display()))?,
        ),
        None => None,
    };
    let scratch = tempfile::Builder::new().prefix("cbench-gold-").tempdir()?;
    let cache_dir = args.caches.cache_dir();
    let bases = std::sync::Arc::new(cbench_sandbox::repos::BaseRepos::new(
        &scratch.path().join("bases"),
        crate::repos::UpstreamRepos {
            cache_dir,
            mirror_dir: args.caches.repo_cache.clone(),
        },
    ));
    let gold_dir = args.log_dir.join("gold");
    let confinement = super::grading_confinement(
        args.isolation,
        &args.selection.dataset_dir,
        &args.log_dir,
        &args.caches,
    )?;
    let cfg = cbench_eval::gold::GoldConfig {
        confinement,
        run_tests: !args.no_tests,
        concurrency: args.concurrency,
        test_timeout: std::time::Duration::from_secs(args.test_timeout),
        log_dir: gold_dir.clone(),
        scratch: scratch.path().join("work"),
        quiet: args.quiet,
    };
    let report = cbench_eval::gold::check(&pairs, bases, &cfg).await;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| gold_dir.join("gold_conflict_report.json"));
    crate::fsutil::write_json_atomic(&output, &report)?;
    println!("{}\n      report: {}", report.render(), output.display());
    // A gold patch that fails its own tests means the item (or this host's toolchain)
    // cannot grade agents: say so with the exit code, not only in the report.
    let gold_failures = report.feature_results.iter().filter(|f| !f.success).count();
    if gold_failures > 0 {
        println!(
            "      {gold_failures} of {} gold patch(es) failed their own tests",
            report.feature_results.len()
        );
    }
    let mut failed = report.summary.errors > 0 || gold_failures > 0;
    if let Some(reference) = reference {
        let diffs = cbench_eval::gold::differences(&report, &reference);
        if diffs.is_empty() {
            println!("      no differences from the reference");
        } else {
            println!("      {} difference(s) from the reference:", diffs.len());
            for d in &diffs {
                println!("        {d}");
            }
            failed = true;
        }
    }
    Ok(if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}
