//! `cbench dataset fetch` against a local server that speaks the Hugging Face
//! hub's tree API (paginated) and resolve endpoint (with ranges), serving the
//! copy of the real dataset in ../shared.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha1::{Digest, Sha1};

use cbench::dataset::fetch::{fetch, FetchConfig, FetchError};

use crate::support::{cbench, real_dataset, text};

const REPO: &str = "CodeConflict/cooperbench-dataset";
const PAGE: usize = 100;
/// Served as an LFS file (sha256 listed) to exercise that verification path.
const LFS_FILE: &str = "gold_conflict_report.json";

pub(crate) struct Hub {
    root: PathBuf,
    files: Vec<String>,
    downloads: AtomicUsize,
    ranged: AtomicUsize,
    /// Paths served with one byte flipped.
    corrupt: Mutex<Vec<String>>,
}

fn all_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_files(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

async fn tree(
    State(hub): State<Arc<Hub>>,
    UrlPath((_owner, _name, _rev)): UrlPath<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let start: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut page = Vec::new();
    if start == 0 {
        page.push(
            serde_json::json!({"type": "directory", "path": "subsets", "oid": "x", "size": 0}),
        );
    }
    for path in hub.files.iter().skip(start).take(PAGE) {
        let bytes = std::fs::read(hub.root.join(path)).unwrap();
        let mut h = Sha1::new();
        h.update(format!("blob {}\0", bytes.len()).as_bytes());
        h.update(&bytes);
        let mut entry = serde_json::json!({"type": "file", "path": path, "size": bytes.len(), "oid": hex::encode(h.finalize())});
        if path == LFS_FILE {
            use sha2::Digest as _;
            entry["lfs"] = serde_json::json!({"oid": hex::encode(sha2::Sha256::digest(&bytes)), "size": bytes.len()});
        }
        page.push(entry);
    }
    let mut headers = HeaderMap::new();
    if start + PAGE < hub.files.len() {
        let next = format!("<http://{{host}}/api/datasets/{REPO}/tree/main?recursive=true&cursor={}>; rel=\"next\"", start + PAGE);
        headers.insert("link", next.parse().unwrap());
    }
    (headers, axum::Json(page)).into_response()
}

async fn resolve(
    State(hub): State<Arc<Hub>>,
    UrlPath((_owner, _name, _rev, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(mut bytes) = std::fs::read(hub.root.join(&path)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    hub.downloads.fetch_add(1, Ordering::Relaxed);
    if hub.corrupt.lock().unwrap().contains(&path) {
        bytes[0] ^= 1;
    }
    let from = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok());
    match from {
        Some(from) if from < bytes.len() => {
            hub.ranged.fetch_add(1, Ordering::Relaxed);
            (StatusCode::PARTIAL_CONTENT, bytes[from..].to_vec()).into_response()
        }
        _ => (StatusCode::OK, bytes).into_response(),
    }
}

/// Starts the hub; returns its base URL. Link headers carry a `{host}` placeholder that a
/// response layer replaces with the server's own address.
pub(crate) async fn start_hub() -> (String, Arc<Hub>) {
    let root = real_dataset().canonicalize().unwrap();
    let mut files = Vec::new();
    all_files(&root, &root, &mut files);
    files.sort();
    let hub = Arc::new(Hub {
        root,
        files,
        downloads: AtomicUsize::new(0),
        ranged: AtomicUsize::new(0),
        corrupt: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let host = addr.to_string();
    let app = axum::Router::new()
        .route("/api/datasets/{owner}/{name}/tree/{rev}", get(tree))
        .route(
            "/datasets/{owner}/{name}/resolve/{rev}/{*path}",
            get(resolve),
        )
        .layer(axum::middleware::map_response(move |mut r: Response| {
            let host = host.clone();
            async move {
                if let Some(link) = r
                    .headers()
                    .get("link")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                {
                    r.headers_mut()
                        .insert("link", link.replace("{host}", &host).parse().unwrap());
                }
                r
            }
        }))
        .with_state(hub.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hub)
}

fn config(base: &str, dest: &Path) -> FetchConfig {
    FetchConfig {
        base_url: base.to_string(),
        repo_id: REPO.to_string(),
        revision: "main".into(),
        dest: dest.to_path_buf(),
        concurrency: 8,
        quiet: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_downloads_verifies_skips_and_resumes() {
    let (base, hub) = start_hub().await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("ds");

    let first = fetch(config(&base, &dest)).await.unwrap();
    assert_eq!(first.files, hub.files.len());
    assert_eq!(first.downloaded, hub.files.len());
    for f in &hub.files {
        assert_eq!(
            std::fs::read(dest.join(f)).unwrap(),
            std::fs::read(hub.root.join(f)).unwrap(),
            "{f}"
        );
    }
    let ds = cbench::dataset::Dataset::discover(&dest).unwrap();
    assert_eq!(ds.select(&Default::default()).unwrap().len(), 652);

    // Nothing to do the second time.
    let before = hub.downloads.load(Ordering::Relaxed);
    let again = fetch(config(&base, &dest)).await.unwrap();
    assert_eq!(again.already_present, hub.files.len());
    assert_eq!(hub.downloads.load(Ordering::Relaxed), before);

    // An interrupted download resumes from its .part; a damaged file is fetched again.
    let partial = "openai_tiktoken_task/task0/combined.patch";
    let full = std::fs::read(dest.join(partial)).unwrap();
    std::fs::remove_file(dest.join(partial)).unwrap();
    std::fs::write(
        dest.join(format!("{partial}.part")),
        &full[..full.len() / 2],
    )
    .unwrap();
    let damaged = "subsets/lite.json";
    std::fs::write(dest.join(damaged), "{}").unwrap();
    let resumed = fetch(config(&base, &dest)).await.unwrap();
    assert_eq!((resumed.downloaded, resumed.resumed), (2, 1));
    assert_eq!(hub.ranged.load(Ordering::Relaxed), 1);
    assert_eq!(std::fs::read(dest.join(partial)).unwrap(), full);
    assert!(!dest.join(format!("{partial}.part")).exists());
    assert_eq!(
        std::fs::read(dest.join(damaged)).unwrap(),
        std::fs::read(hub.root.join(damaged)).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn content_that_does_not_match_its_listed_hash_is_never_kept() {
    let (base, hub) = start_hub().await;
    hub.corrupt.lock().unwrap().push(LFS_FILE.to_string());
    let tmp = tempfile::tempdir().unwrap();
    let err = fetch(config(&base, tmp.path())).await.unwrap_err();
    assert!(matches!(err, FetchError::Verify { .. }), "{err}");
    assert!(err.to_string().contains(LFS_FILE), "{err}");
    assert!(!tmp.path().join(LFS_FILE).exists());
    assert!(!tmp.path().join(format!("{LFS_FILE}.part")).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_fetches_and_an_unknown_dataset_is_named() {
    let (base, _hub) = start_hub().await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("ds").display().to_string();
    let (b, d) = (base.clone(), dest.clone());
    let out = tokio::task::spawn_blocking(move || {
        cbench(&["dataset", "fetch", "--base-url", &b, "--dataset-dir", &d])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("fetched 768 files"),
        "{}",
        text(&out)
    );

    let out = tokio::task::spawn_blocking(move || {
        cbench(&[
            "dataset",
            "fetch",
            "--base-url",
            &base,
            "--repo-id",
            "nobody/nothing",
            "--revision",
            "x/y",
            "--dataset-dir",
            &dest,
        ])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("HTTP 404"), "{}", text(&out));
}
