//! `cbench dataset fetch`: download the dataset from a Hugging Face dataset
//! repository (default `CodeConflict/cooperbench-dataset`) into a directory.
//!
//! Resumable and verified: every file is checked against the hash the hub
//! lists for it (git blob sha1, or sha256 for LFS files); files already
//! present and valid are skipped, a partial `.part` download is continued with
//! an HTTP range request, and nothing unverified is ever moved into place.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// The hub and dataset the product's documentation names.
pub const DEFAULT_BASE_URL: &str = "https://huggingface.co";
/// The CooperBench dataset on the hub.
pub const DEFAULT_REPO_ID: &str = "CodeConflict/cooperbench-dataset";

/// What to fetch and where.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub base_url: String,
    pub repo_id: String,
    pub revision: String,
    pub dest: PathBuf,
    pub concurrency: usize,
    /// No per-file progress lines.
    pub quiet: bool,
}

/// A fetch failure; names the URL or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("GET {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the file listing from {url} is not what the hub returns: {reason}")]
    Listing { url: String, reason: String },
    #[error("{path}: downloaded content does not match the listed hash (expected {expected}, got {got})")]
    Verify {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the listing names an unsafe path `{0}`")]
    UnsafePath(String),
}

/// One file in the hub's listing.
#[derive(Debug, Clone, Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: String,
    lfs: Option<Lfs>,
}

#[derive(Debug, Clone, Deserialize)]
struct Lfs {
    oid: String,
}

/// What a fetch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FetchSummary {
    pub files: usize,
    pub downloaded: usize,
    pub already_present: usize,
    pub resumed: usize,
    pub bytes_downloaded: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The hash the hub lists for a file, and whether `bytes` match it.
fn verify(entry: &Entry, bytes: &[u8]) -> Result<(), (String, String)> {
    let (expected, got) = match &entry.lfs {
        Some(lfs) => (lfs.oid.clone(), hex::encode(Sha256::digest(bytes))),
        None => {
            // Git's blob id: sha1 of "blob <len>\0" followed by the content.
            let mut h = Sha1::new();
            h.update(format!("blob {}\0", bytes.len()).as_bytes());
            h.update(bytes);
            (entry.oid.clone(), hex::encode(h.finalize()))
        }
    };
    if expected.eq_ignore_ascii_case(&got) {
        Ok(())
    } else {
        Err((expected, got))
    }
}

/// Follows the hub's paginated tree listing (`Link: <…>; rel="next"`).
async fn list(client: &reqwest::Client, cfg: &FetchConfig) -> Result<Vec<Entry>, FetchError> {
    let mut url = format!(
        "{}/api/datasets/{}/tree/{}?recursive=true",
        cfg.base_url.trim_end_matches('/'),
        cfg.repo_id,
        cfg.revision
    );
    let mut files = Vec::new();
    loop {
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| FetchError::Http {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let status = response.status();
        let next = response
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let body = response.text().await.map_err(|e| FetchError::Http {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(FetchError::Status {
                url,
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        let page: Vec<Entry> = serde_json::from_str(&body).map_err(|e| FetchError::Listing {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        files.extend(page.into_iter().filter(|e| e.kind == "file"));
        match next {
            Some(n) => url = n,
            None => return Ok(files),
        }
    }
}

/// The `rel="next"` target of a Link header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// Rejects absolute paths and `..` from the listing.
fn safe_join(dest: &Path, path: &str) -> Result<PathBuf, FetchError> {
    let rel = Path::new(path);
    if path.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(FetchError::UnsafePath(path.to_string()));
    }
    Ok(dest.join(rel))
}

enum FileOutcome {
    Present,
    Downloaded { bytes: u64, resumed: bool },
}

async fn fetch_file(
    client: &reqwest::Client,
    cfg: &FetchConfig,
    entry: &Entry,
) -> Result<FileOutcome, FetchError> {
    let target = safe_join(&cfg.dest, &entry.path)?;
    if let Ok(existing) = tokio::fs::read(&target).await {
        if verify(entry, &existing).is_ok() {
            return Ok(FileOutcome::Present);
        }
    }
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io(parent))?;
    }
    let part = PathBuf::from(format!("{}.part", target.display()));
    let have = tokio::fs::metadata(&part)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let url = format!(
        "{}/datasets/{}/resolve/{}/{}",
        cfg.base_url.trim_end_matches('/'),
        cfg.repo_id,
        cfg.revision,
        entry.path
    );
    let mut request = client.get(&url);
    if have > 0 && have < entry.size {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut response = request.send().await.map_err(|e| FetchError::Http {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(FetchError::Status {
            url,
            status: status.as_u16(),
            body: body.chars().take(300).collect(),
        });
    }
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&part)
        .await
        .map_err(io(&part))?;
    let mut bytes = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(|e| FetchError::Http {
        url: url.clone(),
        reason: e.to_string(),
    })? {
        file.write_all(&chunk).await.map_err(io(&part))?;
        bytes += chunk.len() as u64;
    }
    file.flush().await.map_err(io(&part))?;
    drop(file);
    let content = tokio::fs::read(&part).await.map_err(io(&part))?;
    if let Err((expected, got)) = verify(entry, &content) {
        // A bad partial would poison every later resume.
        let _ = tokio::fs::remove_file(&part).await;
        return Err(FetchError::Verify {
            path: target,
            expected,
            got,
        });
    }
    tokio::fs::rename(&part, &target)
        .await
        .map_err(io(&target))?;
    Ok(FileOutcome::Downloaded { bytes, resumed })
}

/// Lists and downloads every file; stops at the first failure (already verified files stay).
pub async fn fetch(cfg: FetchConfig) -> Result<FetchSummary, FetchError> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("cbench/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Http {
            url: cfg.base_url.clone(),
            reason: e.to_string(),
        })?;
    let entries = list(&client, &cfg).await?;
    let files = entries.len();
    let progress = crate::progress::Progress::with_status(cfg.quiet, files, "files");
    let cfg = Arc::new(cfg);
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for entry in entries {
        let (client, cfg, slots) = (client.clone(), cfg.clone(), slots.clone());
        set.spawn(async move {
            let _slot = slots.acquire().await;
            let outcome = fetch_file(&client, &cfg, &entry).await;
            (entry.path, outcome)
        });
    }
    let mut summary = FetchSummary {
        files,
        ..FetchSummary::default()
    };
    let mut first_error = None;
    use crate::progress::Outcome;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((path, Ok(FileOutcome::Present))) => {
                summary.already_present += 1;
                progress.line(&format!("{path}: already present, verified"));
                progress.finished(Outcome::Success);
            }
            Ok((path, Ok(FileOutcome::Downloaded { bytes, resumed }))) => {
                summary.downloaded += 1;
                summary.resumed += usize::from(resumed);
                summary.bytes_downloaded += bytes;
                progress.line(&format!(
                    "{path}: {} {bytes} bytes, verified",
                    if resumed { "resumed," } else { "downloaded" }
                ));
                progress.finished(Outcome::Success);
            }
            Ok((path, Err(e))) => {
                progress.line(&format!("{path}: ✗ {e}"));
                progress.finished(Outcome::InfraError);
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(FetchError::Http {
                    url: cfg.base_url.clone(),
                    reason: format!("download task failed: {e}"),
                });
            }
        }
    }
    progress.finish();
    match first_error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_ids_verify_plain_files() {
        let entry = Entry {
            kind: "file".into(),
            path: "a".into(),
            size: 6,
            // `printf 'hello\n' | git hash-object --stdin`
            oid: "ce013625030ba8dba906f756967f9e9ca394464a".into(),
            lfs: None,
        };
        assert!(verify(&entry, b"hello\n").is_ok());
        assert!(verify(&entry, b"hellO\n").is_err());
    }

    #[test]
    fn link_headers_and_unsafe_paths() {
        assert_eq!(
            next_link("<https://hub/api/x?cursor=abc>; rel=\"next\"").as_deref(),
            Some("https://hub/api/x?cursor=abc")
        );
        assert_eq!(next_link("<https://hub/a>; rel=\"prev\""), None);
        assert!(safe_join(Path::new("/d"), "../etc/passwd").is_err());
        assert!(safe_join(Path::new("/d"), "/etc/passwd").is_err());
        assert!(safe_join(Path::new("/d"), "a/b.json").is_ok());
    }
}
