//! The on-disk cache of compiled plugins: one `.cwasm` per (wasm sha256, engine fingerprint),
//! bounded in total size. Each use refreshes an entry's modification time, and the least
//! recently used entries are evicted first when a new one would pass the cap. Python and JS
//! builds are not reproducible, so without a bound every rebuild would add ~35 MB for good.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

/// Default cap on the compiled-plugin cache (about a dozen Python plugins, thousands of Rust ones).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Environment variable overriding the cap, in MiB.
pub const MAX_MB_ENV: &str = "CBENCH_CACHE_MAX_MB";

/// The compiled-plugin cache under `<cache dir>/components`.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    max_bytes: u64,
    /// This engine's fingerprint: entries of other engines can never be loaded again.
    fingerprint: Option<String>,
}

/// One cached compiled plugin.
#[derive(Debug, Clone, Serialize)]
pub struct CacheEntry {
    pub path: PathBuf,
    pub bytes: u64,
    /// Seconds since the Unix epoch of its last use.
    pub last_used: u64,
}

/// What a prune removed and kept.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub removed: usize,
    pub freed_bytes: u64,
    pub kept: usize,
    pub kept_bytes: u64,
}

/// Why the cache could not be read or pruned.
#[derive(Debug, thiserror::Error)]
#[error("compiled-plugin cache {path}: {source}")]
pub struct CacheError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl CompileCache {
    /// The cache of `cache_root` with the cap from `CBENCH_CACHE_MAX_MB`, else the default.
    pub fn new(cache_root: &Path) -> CompileCache {
        let max_bytes = std::env::var(MAX_MB_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|mb| mb.saturating_mul(1 << 20))
            .unwrap_or(DEFAULT_MAX_BYTES);
        CompileCache::with_cap(cache_root, max_bytes)
    }

    /// The cache of `cache_root` with an explicit cap.
    pub fn with_cap(cache_root: &Path, max_bytes: u64) -> CompileCache {
        CompileCache {
            dir: cache_root.join("components"),
            max_bytes,
            fingerprint: None,
        }
    }

    /// The same cache, knowing the running engine's fingerprint.
    pub fn for_engine(mut self, fingerprint: &str) -> CompileCache {
        self.fingerprint = Some(fingerprint.to_string());
        self
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configured cap in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where the compiled form of the wasm with `sha256` lives for an engine `fingerprint`.
    pub fn entry_path(&self, sha256: &str, fingerprint: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{fingerprint}.cwasm"))
    }

    /// Marks an entry as just used (its modification time is the LRU clock).
    pub fn touch(&self, path: &Path) {
        if let Ok(file) = std::fs::File::options().append(true).open(path) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Stores a compiled plugin atomically, then evicts least recently used entries until the
    /// cache fits its cap again (never the entry just stored).
    pub fn store(&self, path: &Path, compiled: &[u8]) -> Result<PruneReport, CacheError> {
        crate::fsutil::write_atomic(path, compiled).map_err(|e| CacheError {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.prune_to(self.max_bytes, Some(path))
    }

    /// Every entry, most recently used first.
    pub fn entries(&self) -> Result<Vec<CacheEntry>, CacheError> {
        let read = match std::fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CacheError {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut entries = Vec::new();
        for item in read {
            let item = item.map_err(|source| CacheError {
                path: self.dir.clone(),
                source,
            })?;
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) != Some("cwasm") {
                continue;
            }
            // Another process may evict it meanwhile; a vanished entry is simply not listed.
            let Ok(meta) = item.metadata() else { continue };
            let last_used = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            entries.push(CacheEntry {
                path,
                bytes: meta.len(),
                last_used,
            });
        }
        entries.sort_by(|a, b| {
            b.last_used
                .cmp(&a.last_used)
                .then_with(|| a.path.cmp(&b.path))
        });
        Ok(entries)
    }

    /// Total size of all entries.
    pub fn total_bytes(&self) -> Result<u64, CacheError> {
        Ok(self.entries()?.iter().map(|e| e.bytes).sum())
    }

    /// Removes least recently used entries until at most `max_bytes` remain; `keep` is never
    /// removed. Entries of other wasmtime versions are never used again and go first.
    pub fn prune_to(&self, max_bytes: u64, keep: Option<&Path>) -> Result<PruneReport, CacheError> {
        let mut entries = self.entries()?;
        // Entries of other engines last in the list, so they are evicted first.
        let suffix = self.fingerprint.as_ref().map(|f| format!("-{f}.cwasm"));
        entries.sort_by_key(|e| {
            !e.path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| suffix.as_deref().is_none_or(|f| n.ends_with(f)))
        });
        let mut report = PruneReport::default();
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        for entry in entries.iter().rev() {
            let protected = keep.is_some_and(|k| k == entry.path);
            if total > max_bytes && !protected {
                match std::fs::remove_file(&entry.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(CacheError {
                            path: entry.path.clone(),
                            source,
                        })
                    }
                }
                total -= entry.bytes;
                report.removed += 1;
                report.freed_bytes += entry.bytes;
            } else {
                report.kept += 1;
                report.kept_bytes += entry.bytes;
            }
        }
        Ok(report)
    }
}

/// Parses sizes like `500M`, `2G`, `300MiB`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (examples: 500M, 2G, 1048576)"))?;
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        other => return Err(format!("`{text}`: unknown unit `{other}` (use K, M or G)")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cache: &CompileCache, name: &str, size: usize, age_secs: u64) -> PathBuf {
        let path = cache.dir().join(format!("{name}.cwasm"));
        std::fs::create_dir_all(cache.dir()).unwrap();
        std::fs::write(&path, vec![0u8; size]).unwrap();
        let when = SystemTime::now() - std::time::Duration::from_secs(age_secs);
        std::fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        path
    }

    #[test]
    fn least_recently_used_entries_go_first_and_the_new_one_stays() {
        let root = tempfile::tempdir().unwrap();
        let cache = CompileCache::with_cap(root.path(), 250);
        let oldest = entry(&cache, "a", 100, 300);
        let used_recently = entry(&cache, "b", 100, 200);
        let middle = entry(&cache, "c", 100, 100);
        cache.touch(&used_recently);
        let new = cache.dir().join("d.cwasm");
        let report = cache.store(&new, &[0u8; 100]).unwrap();
        assert_eq!((report.removed, report.freed_bytes), (2, 200));
        assert!(!oldest.exists() && !middle.exists());
        assert!(used_recently.exists() && new.exists());
        assert!(cache.total_bytes().unwrap() <= 250);
    }

    #[test]
    fn an_entry_larger_than_the_cap_is_kept_alone() {
        let root = tempfile::tempdir().unwrap();
        let cache = CompileCache::with_cap(root.path(), 10);
        entry(&cache, "old", 5, 10);
        let new = cache.dir().join("big.cwasm");
        cache.store(&new, &[0u8; 50]).unwrap();
        let left: Vec<PathBuf> = cache
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(left, vec![new]);
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("5T").unwrap_err().contains("unknown unit"));
    }
}
