//! The machine cbench runs on: `bench`, `images build`, `cleanup`.

use std::process::ExitCode;

use crate::cli::*;

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
    println!("removed {swept}");
    Ok(ExitCode::SUCCESS)
}

/// The run a cleanup is limited to, if any.
fn scope_run_name(scope: &crate::docker::cleanup::Scope) -> Option<&str> {
    match scope {
        crate::docker::cleanup::Scope::RunName(name) => Some(name),
        _ => None,
    }
}
