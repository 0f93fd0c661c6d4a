//! `cbench view`: a static, self-contained HTML report of a run, opened from disk with no
//! network. `index.html` holds the header, plots and the table of pairs; `pair.html?p=<id>`
//! loads one pair's data (`data/pairs/<id>.js`) on demand, so a 652-pair run stays light.

pub mod data;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::fsutil::{write_atomic, FsError};

const INDEX_HTML: &str = include_str!("assets/index.html");
const PAIR_HTML: &str = include_str!("assets/pair.html");
const VIEW_CSS: &str = include_str!("assets/view.css");
const VIEW_JS: &str = include_str!("assets/view.js");
const COMPARE_HTML: &str = include_str!("assets/compare.html");

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("run `{name}` not found: {path} has no config.json")]
    UnknownRun { name: String, path: PathBuf },
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    NoPairs(#[from] crate::layout::NoPairs),
    #[error("cannot read the pairs of {path}: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot write the report into {path}: {source} (pass --output DIR to write it elsewhere)"
    )]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding the report data: {0}")]
    Json(#[from] serde_json::Error),
}

/// What `cbench view` produced.
#[derive(Debug)]
pub struct ViewOutput {
    /// The overview page.
    pub index: PathBuf,
    pub pairs: usize,
    /// Bytes written in all.
    pub bytes: u64,
    pub elapsed_s: f64,
}

/// Writes the report of `run_dir` into `out_dir` (replaced as a whole once complete).
pub fn write(
    name: &str,
    run_dir: &Path,
    baseline: Option<&Path>,
    out_dir: &Path,
) -> Result<ViewOutput, ViewError> {
    let started = Instant::now();
    if !run_dir.join("config.json").is_file() {
        return Err(ViewError::UnknownRun {
            name: name.to_string(),
            path: run_dir.to_path_buf(),
        });
    }
    let pair_dirs = crate::layout::required_pair_dirs(run_dir)?;
    let overview = data::overview(run_dir, baseline, &pair_dirs)?;

    // Built beside the destination and swapped in, so a reader never sees half a report.
    let parent = out_dir.parent().unwrap_or(Path::new("."));
    let output_err = |source| ViewError::Output {
        path: out_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(parent).map_err(output_err)?;
    let staging = tempfile::Builder::new()
        .prefix(".cbench-view-")
        .tempdir_in(parent)
        .map_err(output_err)?;
    let mut bytes = 0u64;
    let mut put = |rel: &str, content: &[u8]| -> Result<(), ViewError> {
        write_atomic(&staging.path().join(rel), content)?;
        bytes += content.len() as u64;
        Ok(())
    };
    put("index.html", INDEX_HTML.as_bytes())?;
    put("pair.html", PAIR_HTML.as_bytes())?;
    put("view.css", VIEW_CSS.as_bytes())?;
    put("view.js", VIEW_JS.as_bytes())?;
    put(
        "data/run.js",
        format!(
            "window.CBENCH_RUN = {};\n",
            serde_json::to_string(&overview)?
        )
        .as_bytes(),
    )?;
    for dir in &pair_dirs {
        let Some(row) = overview.pairs.iter().find(|r| r.key == dir.key()) else {
            continue;
        };
        let detail = data::pair_detail(dir, row);
        put(
            &format!("data/pairs/{}.js", row.id),
            format!(
                "window.CBENCH_PAIR = {};\n",
                serde_json::to_string(&detail)?
            )
            .as_bytes(),
        )?;
    }
    let staged = staging.keep();
    if out_dir.exists() {
        std::fs::remove_dir_all(out_dir).map_err(output_err)?;
    }
    std::fs::rename(&staged, out_dir).map_err(output_err)?;
    // The staging dir is private (0700); the report is for the user's group like other output.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(out_dir, std::fs::Permissions::from_mode(0o755));
    Ok(ViewOutput {
        index: out_dir.join("index.html"),
        pairs: overview.pairs.len(),
        bytes,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Writes the comparison page into `out_dir` and refreshes each run's own report, so a
/// disagreeing pair links to both runs' pair pages. Returns the page's path.
pub fn write_comparison(
    comparison: &crate::compare::Comparison,
    log_dir: &Path,
    out_dir: &Path,
) -> Result<PathBuf, ViewError> {
    let mut links = serde_json::Map::new();
    for run in &comparison.runs {
        let run_dir = log_dir.join(&run.name);
        let view_dir = run_dir.join("view");
        match write(&run.name, &run_dir, None, &view_dir) {
            Ok(_) => {
                let target = std::path::absolute(&view_dir).unwrap_or(view_dir);
                links.insert(
                    run.name.clone(),
                    serde_json::Value::String(format!("file://{}", target.display())),
                );
            }
            Err(e) => tracing::warn!("no pair pages for {}: {e}", run.name),
        }
    }
    let output_err = |source| ViewError::Output {
        path: out_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(out_dir).map_err(output_err)?;
    let data = serde_json::json!({ "comparison": comparison, "views": links });
    write_atomic(&out_dir.join("index.html"), COMPARE_HTML.as_bytes())?;
    write_atomic(&out_dir.join("view.css"), VIEW_CSS.as_bytes())?;
    write_atomic(&out_dir.join("view.js"), VIEW_JS.as_bytes())?;
    write_atomic(
        &out_dir.join("data/compare.js"),
        format!(
            "window.CBENCH_COMPARE = {};\n",
            serde_json::to_string(&data)?
        )
        .as_bytes(),
    )?;
    Ok(out_dir.join("index.html"))
}

/// Opens a file in the desktop's browser (`xdg-open`, or `open` on macOS).
pub fn open_in_browser(path: &Path) -> Result<(), String> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("{opener} {}: {e}", path.display()))
}
