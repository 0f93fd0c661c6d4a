//! Steps `cbench run` and `cbench eval` share: selecting verified pairs, hiding paths from
//! commands, collecting pair tasks, writing the report.

use std::path::{Path, PathBuf};

use crate::dataset::Pair;
use crate::error::{run_dir_io, RunError};
use crate::fsutil::{read_json, sha256_hex, write_json_atomic};
use crate::progress::Progress;
use crate::record::PairResult;

pub(crate) async fn collect(
    mut set: tokio::task::JoinSet<(usize, PairResult)>,
) -> Vec<(usize, PairResult)> {
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => results.push(r),
            Err(e) => tracing::error!("a pair task failed: {e}"),
        }
    }
    results
}

/// Keeps the pairs whose every feature `verified.json` at `path` lists as verified;
/// returns them and the file's sha256 for config.json.
pub(crate) fn only_verified(
    pairs: Vec<Pair>,
    path: &Path,
) -> Result<(Vec<Pair>, Option<String>), RunError> {
    let report: crate::eval::verify::VerifyReport = read_json(path)?;
    let text = std::fs::read(path).map_err(run_dir_io(path))?;
    let verified: std::collections::BTreeSet<(String, u64, u32)> = report
        .features
        .iter()
        .filter(|f| f.verified)
        .map(|f| (f.repo.clone(), f.task_id, f.feature_id))
        .collect();
    let kept: Vec<Pair> = pairs
        .into_iter()
        .filter(|p| {
            p.features
                .iter()
                .all(|f| verified.contains(&(p.task.repo.clone(), p.task.id, *f)))
        })
        .collect();
    if kept.is_empty() {
        return Err(RunError::NothingVerified {
            path: path.to_path_buf(),
        });
    }
    Ok((kept, Some(sha256_hex(&text))))
}

/// Paths no local command may see: the dataset (hidden tests, gold patches), the
/// logs (other agents' work), cbench's cache, the upstream mirrors (whose later
/// history holds the features' real implementations), and the temp dir (other sandboxes).
pub fn hidden_paths(
    dataset: &Path,
    logs: &Path,
    cache: &Path,
    mirrors: Option<&Path>,
) -> Vec<PathBuf> {
    let mut hidden = vec![
        dataset.to_path_buf(),
        logs.to_path_buf(),
        cache.to_path_buf(),
    ];
    hidden.extend(mirrors.map(Path::to_path_buf));
    // Every pair's sandboxes and scratch lie under the temp dir; when TMPDIR is inside a
    // directory sandboxes are shown (/opt, say), they would see each other's. Each sandbox's own
    // directories are bound back on top.
    hidden.push(std::env::temp_dir());
    hidden
}

/// Writes report.json (metrics over every pair on disk, resumed ones included) and prints it.
pub(crate) fn write_report(run_dir: &Path, progress: &Progress) -> Result<(), RunError> {
    // Each pair's analysis.json, beside its eval.json (cheap: files already on disk).
    if let Err(e) = cbench_analyze::analyze_run(run_dir) {
        tracing::warn!("no coordination analysis: {e}");
    }
    match crate::report::build(run_dir, None) {
        Ok(report) => {
            write_json_atomic(&run_dir.join("report.json"), &report)?;
            progress.line(&report.render());
        }
        // Metrics are a view of results already written; failing to build them loses nothing.
        Err(e) => tracing::warn!("no report.json: {e}"),
    }
    progress.line(&where_next(run_dir));
    Ok(())
}

/// Where the results are and the commands that look at them.
fn where_next(run_dir: &Path) -> String {
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let log_dir = match run_dir.parent() {
        Some(p) if p != Path::new("logs") => format!(" --log-dir {}", p.display()),
        _ => String::new(),
    };
    format!(
        "Results: {}\n  look at them: cbench view -n {name}{log_dir} · cbench analyze -n {name}{log_dir} · cbench compare {name} OTHER_RUN{log_dir}",
        run_dir.display()
    )
}
