//! `cbench doctor`: a smoke test of a backend with the user's own credentials, one step at a
//! time, each step named with how long it took, stopping at the first that fails. For Modal:
//! the configuration (where each setting came from; never the secret), the connection and
//! credentials, the app, the image of one task built from its registry tag, a sandbox created
//! with cbench's tags and no network, a command in the repository, a file written and read
//! back through the command router, the sandbox terminated and gone from the listing. For
//! Google Cloud: the credentials and project, the bucket, a test run's path end to end (its
//! input uploaded, a Batch job of the task image reading it and printing the base commit, the
//! output read back), then the job and objects deleted and gone from the listings.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::DoctorArgs;

/// Prints one finished step.
fn step(name: &str, started: Instant, detail: &str) {
    println!(
        "ok    {name:<22} {:>7.2} s  {detail}",
        started.elapsed().as_secs_f64()
    );
}

/// `cbench doctor --backend …`.
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    match args.backend {
        crate::cli::DoctorBackendArg::Modal => doctor_modal(args).await,
        crate::cli::DoctorBackendArg::Gcp => doctor_gcp(args).await,
    }
}

/// `cbench doctor --backend gcp`.
async fn doctor_gcp(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    use crate::eval::gcp_bench::{self, GcpGrading, GcpSettings};
    args.gcp.validate()?;
    let started = Instant::now();
    let labels = crate::docker::RunLabels::new("doctor");
    let settings = GcpSettings {
        project: args.gcp.gcp_project.clone(),
        region: args.gcp.gcp_region.clone(),
        bucket: args.gcp.gcp_bucket.clone(),
        image_prefix: String::new(),
        cpu_milli: 1000,
        memory_mib: 1024,
        block_network: true,
        service_account: args.gcp.gcp_service_account.clone(),
    };
    let grading = GcpGrading::connect(
        &gcp_bench::GcpEnv::from_process(),
        settings,
        "doctor",
        &labels.run_id,
        &crate::docker::owner(),
    )
    .await?;
    let clients = &grading.clients;
    step(
        "credentials",
        started,
        &format!(
            "from {}, project {}; bucket gs://{} ready",
            clients.origin(),
            clients.project(),
            clients.bucket()
        ),
    );
    let started = Instant::now();
    let payload: Vec<u8> = (0..=255u8).cycle().take(64 << 10).collect();
    let expected = crate::fsutil::sha256_hex(&payload);
    let checked = grading
        .run_job(
            &args.image,
            vec![("doctor.bin".into(), payload)],
            "sh -c 'git rev-parse HEAD && sha256sum /patches/doctor.bin'",
            Duration::from_secs(600),
            4096,
        )
        .await;
    let swept_at = Instant::now();
    let swept = gcp_bench::sweep(
        clients,
        &crate::docker::cleanup::Scope::RunId(labels.run_id.clone()),
    )
    .await;
    let out = checked?;
    if out.exit_code != 0 || !out.output.contains(&expected) {
        anyhow::bail!(
            "the Batch job of {} did not do what it should (exit {}): {}",
            args.image,
            out.exit_code,
            out.output.trim()
        );
    }
    let head = out.output.lines().next().unwrap_or_default().to_string();
    step(
        "batch job",
        started,
        &format!(
            "{}: base commit {head}, a 64 KiB input read intact",
            args.image
        ),
    );
    swept?;
    step("cleanup", swept_at, "the job and its objects deleted");
    println!("Google Cloud works with these credentials: `cbench run --backend gcp` can use it.");
    Ok(ExitCode::SUCCESS)
}

/// `cbench doctor --backend modal`.
async fn doctor_modal(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    use cbench_modal::{ExecRequest, ModalClient, ModalConfig, RemoteSandbox, SandboxDefinition};
    let started = Instant::now();
    let config = ModalConfig::from_env()?;
    step(
        "configuration",
        started,
        &format!(
            "profile {}, token {}, server {}",
            config.profile,
            config.token_id,
            config.server_urls.join(",")
        ),
    );
    let started = Instant::now();
    let client = ModalClient::connect(config).await?;
    step(
        "credentials",
        started,
        &format!("accepted by {}", client.url()),
    );
    let started = Instant::now();
    let app_id = client.app(&args.modal_app).await?;
    step("app", started, &format!("{} ({app_id})", args.modal_app));
    let started = Instant::now();
    let image_id = client.image_from_registry(&app_id, &args.image).await?;
    step("image", started, &format!("{} ({image_id})", args.image));
    let started = Instant::now();
    let tags = crate::sandbox::modal::tags_of(
        crate::docker::RunLabels::new("doctor").object("", "", "doctor"),
    );
    let definition = SandboxDefinition {
        image_id,
        entrypoint_args: crate::sandbox::modal::keep_alive(),
        cpus: 1.0,
        memory_mib: 1024,
        timeout_secs: 600,
        workdir: "/workspace/repo".into(),
        block_network: true,
        tags: tags.clone(),
    };
    let sandbox = RemoteSandbox::create(
        client.clone(),
        &app_id,
        &definition,
        crate::sandbox::modal::START_WAIT,
    )
    .await?;
    step("sandbox", started, sandbox.id());
    let checks = async {
        let started = Instant::now();
        let reply = sandbox
            .exec(&ExecRequest {
                argv: ["sh", "-c", "cd /workspace/repo && git rev-parse HEAD"]
                    .map(String::from)
                    .to_vec(),
                timeout: Duration::from_secs(60),
                stdout_cap: 4096,
                stderr_cap: 4096,
                ..Default::default()
            })
            .await?;
        let said = String::from_utf8_lossy(&reply.stdout).trim().to_string();
        if reply.exit_code != Some(0) {
            anyhow::bail!(
                "the image has no git repository at /workspace/repo (exit {:?}): {}",
                reply.exit_code,
                String::from_utf8_lossy(&reply.stderr).trim()
            );
        }
        step("command", started, &format!("base commit {said}"));
        let started = Instant::now();
        let payload: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        crate::sandbox::modal::write_remote_file(&sandbox, "/tmp/cbench-doctor.bin", &payload)
            .await?;
        let back = sandbox
            .exec(&ExecRequest {
                argv: ["cat", "/tmp/cbench-doctor.bin"].map(String::from).to_vec(),
                timeout: Duration::from_secs(60),
                stdout_cap: 2 << 20,
                stderr_cap: 4096,
                ..Default::default()
            })
            .await?;
        if back.stdout != payload {
            anyhow::bail!(
                "a 1 MiB file did not round-trip ({} bytes came back)",
                back.stdout.len()
            );
        }
        step("file transfer", started, "1 MiB written and read back");
        Ok(())
    }
    .await;
    let started = Instant::now();
    sandbox.terminate().await?;
    let left = client.list(&app_id, &tags).await?;
    step(
        "terminate",
        started,
        &format!("{} sandbox(es) of this check still listed", left.len()),
    );
    checks?;
    println!("Modal works with these credentials: `cbench run --backend modal` can use it.");
    Ok(ExitCode::SUCCESS)
}
