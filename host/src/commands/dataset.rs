//! `cbench dataset …`: list, fetch and verify the dataset.

use std::process::ExitCode;

use crate::cli::*;

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
