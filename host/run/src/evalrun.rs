//! `cbench eval`: (re-)grade every pair of an existing run; pairs whose eval.json
//! matches their patches, tests and merge policy are kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::backend::{Backend, BackendChoice};
use crate::dataset::{Dataset, Pair, Selection};
use crate::error::{run_dir_io, RunError};
use crate::eval::merge::MergePolicy;
use crate::eval::Grader;
use crate::fsutil::{read_json, write_json_atomic};
use crate::llm::Setting;
use crate::pairrun::grade_with;
use crate::progress::{Outcome, Progress};
use crate::record::{PairRecord, PairResult};
use crate::repos::{BaseRepos, UpstreamRepos};
use crate::runrecord::RunRecord;
use crate::steps::{collect, hidden_paths, only_verified, write_report};
use crate::summary::{summarize, RunSummary};

/// Options of `cbench eval`.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub name: String,
    pub log_dir: PathBuf,
    /// Overrides the dataset directory recorded in config.json.
    pub dataset_dir: Option<PathBuf>,
    pub force: bool,
    pub eval_concurrency: usize,
    pub test_timeout: Duration,
    pub cache_dir: PathBuf,
    pub repo_cache: Option<PathBuf>,
    /// Overrides the merge policy recorded in config.json.
    pub merge_policy: Option<MergePolicy>,
    /// Overrides the backend recorded in config.json.
    pub backend: Option<BackendChoice>,
    /// Docker settings when the recorded backend is docker.
    pub docker: crate::backend::DockerOptions,
    pub quiet: bool,
    /// `eval -s/-r/-t/-f`: grade only the run's pairs this selection also selects.
    pub only: Option<Selection>,
}

/// (Re-)grades every pair of an existing run; pairs whose eval.json matches their patches are kept.
pub async fn eval_run(cfg: EvalConfig) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let run_dir = cfg.log_dir.join(&cfg.name);
    let config_path = run_dir.join("config.json");
    if !config_path.is_file() {
        return Err(RunError::UnknownRun {
            name: cfg.name.clone(),
            path: config_path,
        });
    }
    let _lock = crate::runlock::RunLock::acquire(&run_dir, &cfg.name)?;
    crate::runrecord::migrate_layout(&cfg.name, &run_dir)?;
    let mut record: RunRecord = read_json(&config_path)?;
    let dataset_dir = cfg
        .dataset_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&record.dataset_dir));
    let mut pairs = recorded_pairs(&record, &dataset_dir)?;
    if let Some(only) = &cfg.only {
        let wanted: std::collections::HashSet<String> = Dataset::discover(&dataset_dir)?
            .select(only)?
            .iter()
            .map(crate::dataset::pair_label)
            .collect();
        pairs.retain(|p| wanted.contains(&crate::dataset::pair_label(p)));
        if pairs.is_empty() {
            return Err(RunError::NothingToEvaluate {
                name: cfg.name.clone(),
            });
        }
    }
    let work_dir = crate::leftovers::scratch_dir("eval", &cfg.name)
        .map_err(run_dir_io(&std::env::temp_dir()))?;
    let choice = backend_choice(&cfg, &record);
    let hidden = hidden_paths(
        &dataset_dir,
        &cfg.log_dir,
        &cfg.cache_dir,
        cfg.repo_cache.as_deref(),
    );
    let backend = Backend::resolve(&choice, &cfg.name, &hidden).await?;
    for warning in backend.warnings() {
        eprintln!("warning: {warning}");
    }
    backend.preflight(&pairs).await?;
    let bases = Arc::new(backend.base_repos(
        &work_dir.path().join("bases"),
        UpstreamRepos {
            cache_dir: cfg.cache_dir.clone(),
            mirror_dir: cfg.repo_cache.clone(),
        },
    ));
    let policy = match cfg.merge_policy {
        Some(p) => p,
        None => record.merge_policy,
    };
    if policy != record.merge_policy {
        // The run's pairs are regraded under the new policy (it is part of each eval.json's
        // input hash); config.json says so rather than keep the old one.
        record.merge_policy = policy;
        write_json_atomic(&config_path, &record)?;
    }
    let slots = Arc::new(Semaphore::new(cfg.eval_concurrency.max(1)));
    let grader = Arc::new(
        Grader::new(cfg.test_timeout, policy, backend.grading())
            .with_spare_slots(slots.clone())
            .closing_in_background(),
    );
    let work = Arc::new(work_dir);
    let total = pairs.len();
    // No agents run here: the status line counts graded pairs, not agents or spend.
    let progress = Progress::with_status(cfg.quiet, total, "pairs graded");
    progress.line(&format!(
        "cbench eval: {} · {}",
        cfg.name,
        crate::progress::plural(total, "pair", "pairs")
    ));
    let mut set = tokio::task::JoinSet::new();
    for (i, pair) in pairs.into_iter().enumerate() {
        let (bases, grader, slots, work) =
            (bases.clone(), grader.clone(), slots.clone(), work.clone());
        let (setting, force, run_dir) = (record.setting, cfg.force, run_dir.clone());
        let progress = progress.for_item(&crate::dataset::pair_label(&pair));
        set.spawn(async move {
            let _slot = slots.acquire().await;
            progress.grading(1);
            let pair_dir = pair.log_dir(&run_dir);
            let result = regrade(
                &bases,
                &grader,
                work.path(),
                setting,
                &pair,
                pair_dir,
                force,
            )
            .await;
            progress.grading(-1);
            progress.finished(report_outcome(&progress, &result));
            (i, result)
        });
    }
    let mut results = collect(set).await;
    grader.closed().await;
    if let Err(e) = backend.cleanup().await {
        progress.line(&format!("  ✗ cleanup: {e}"));
    }
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<PairResult> = results.into_iter().map(|(_, r)| r).collect();
    progress.finish();
    let mut summary = summarize(&cfg.name, &results, started.elapsed(), true);
    summary.continue_from(
        read_json::<RunSummary>(&run_dir.join("summary.json"))
            .ok()
            .as_ref(),
    );
    write_json_atomic(&run_dir.join("summary.json"), &summary)?;
    summary.print(&progress);
    write_report(&run_dir, &progress)?;
    Ok(summary)
}

/// The pairs the run ran: its recorded selection, with the same filter as
/// `run --exclude-unverified`.
fn recorded_pairs(record: &RunRecord, dataset_dir: &Path) -> Result<Vec<Pair>, RunError> {
    let dataset = Dataset::discover(dataset_dir)?;
    let selection = Selection {
        subset: record.subset.clone(),
        repo: record.repo.clone(),
        task: record.task,
        features: record.features.clone(),
    };
    let mut pairs = dataset.select(&selection)?;
    if !record.only_pairs.is_empty() {
        pairs.retain(|p| record.only_pairs.contains(&crate::dataset::pair_label(p)));
    }
    Ok(match &record.exclude_unverified {
        Some(path) => only_verified(pairs, Path::new(path))?.0,
        None => pairs,
    })
}

/// `--backend` when given, else the backend the run used (with the docker limits; a local run
/// is regraded locally).
fn backend_choice(cfg: &EvalConfig, record: &RunRecord) -> BackendChoice {
    match &cfg.backend {
        Some(choice) => choice.clone(),
        None if record.backend == "docker" => BackendChoice::Docker(cfg.docker.clone()),
        // The default app: grading sandboxes are per test run and need nothing of the run's.
        None if record.backend == "modal" => BackendChoice::Modal(crate::backend::ModalOptions {
            image_prefix: cfg.docker.image_prefix.clone(),
            cpus: cfg.docker.limits.cpus,
            memory_mib: (cfg.docker.limits.memory_bytes >> 20).min(u32::MAX as i64) as u32,
            block_agent_network: cfg.docker.agent_network == "none",
            block_grading_network: cfg.docker.grading_network == "none",
            app: crate::backend::DEFAULT_MODAL_APP.into(),
        }),
        // Google's defaults (project from the credentials, the default region and bucket);
        // bases come out of the images on docker.
        None if record.backend == "gcp" => BackendChoice::Gcp(crate::backend::GcpOptions {
            agents: Box::new(BackendChoice::Docker(cfg.docker.clone())),
            grading: crate::eval::gcp_bench::GcpSettings {
                project: None,
                region: crate::eval::gcp_bench::DEFAULT_REGION.into(),
                bucket: None,
                image_prefix: cfg.docker.image_prefix.clone(),
                cpu_milli: (cfg.docker.limits.cpus * 1000.0).round().max(1.0) as u32,
                memory_mib: (cfg.docker.limits.memory_bytes >> 20).clamp(1, u32::MAX as i64) as u32,
                // As the run graded (gcp's default is none).
                block_network: record.grading_network != "bridge",
                service_account: None,
            },
        }),
        None => BackendChoice::Local(crate::sandbox::confine::LocalOptions {
            mode: crate::sandbox::confine::IsolationMode::Auto,
            limits: crate::sandbox::cgroup::ProcessLimits {
                pids: cfg.docker.limits.pids as u64,
                memory_bytes: cfg.docker.limits.memory_bytes as u64,
                cpu_millis: (cfg.docker.limits.cpus * 1000.0).round().max(1.0) as u64,
                disk_bytes: cfg.docker.limits.disk_bytes,
            },
            grading_network: cfg.docker.grading_network == "bridge",
        }),
    }
}

/// Grades one pair of the run again (kept when its eval.json still matches), unless its
/// agents never ran or were stopped by the infrastructure.
async fn regrade(
    bases: &BaseRepos,
    grader: &Grader,
    work: &Path,
    setting: Setting,
    pair: &Pair,
    pair_dir: PathBuf,
    force: bool,
) -> PairResult {
    let record = read_json::<PairRecord>(&pair_dir.join("result.json")).ok();
    let mut result = PairResult {
        pair_dir: pair_dir.clone(),
        record: record.clone(),
        eval: None,
        infra_error: None,
    };
    if record.is_none() {
        result.infra_error = Some(format!(
            "{} has no result.json: its agents never ran or their run was stopped before it ended; `cbench run` with the same name runs them",
            pair_dir.display()
        ));
    } else if let Some(why) = record.as_ref().and_then(PairRecord::infra_failure) {
        result.infra_error = Some(format!(
            "{}: not graded, the agents were stopped by the infrastructure ({why}); `cbench run` with the same name runs them again",
            pair_dir.display()
        ));
    } else {
        match grade_with(bases, grader, work, setting, pair, &pair_dir, force, None).await {
            Ok(r) => result.eval = Some(r),
            Err(e) => result.infra_error = Some(e),
        }
    }
    result
}

/// The pair's line on the progress and its outcome.
fn report_outcome(progress: &Progress, result: &PairResult) -> Outcome {
    match (&result.infra_error, &result.eval) {
        (Some(e), _) => {
            progress.line(&format!("✗ {e}"));
            Outcome::InfraError
        }
        (None, Some(ev)) => {
            progress.line(&format!(
                "{} graded — {}",
                if ev.overall_success { "✓" } else { "✗" },
                if ev.overall_success {
                    "success"
                } else {
                    "failed"
                }
            ));
            if ev.overall_success {
                Outcome::Success
            } else {
                Outcome::Failure
            }
        }
        (None, None) => Outcome::Ungraded,
    }
}
