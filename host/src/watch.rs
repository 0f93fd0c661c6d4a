//! `cbench watch -n RUN`: follow a live run from another terminal — pairs starting and
//! finishing, messages as they are sent. From the run's `events.jsonl` (history first, then
//! live, until every invocation working on the run finished or none is alive any more), or with
//! `--redis URL` from the run's Redis channel (another machine, no shared log dir; live only).

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;

use crate::events::{Event, EVENTS_FILE};
use crate::messaging::RedisHub;

/// How often the events file is polled for growth.
const POLL: Duration = Duration::from_millis(200);

/// Why a run cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("run `{name}` has no live events ({path} is missing): it was made by a cbench without `watch`; `cbench report -n {name}` shows its results")]
    NoEvents { name: String, path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--redis {url}: {reason}")]
    Redis { url: String, reason: String },
}

/// Counts invocations that started and finished, to know when a run is over.
#[derive(Default)]
struct Lifecycle {
    started: usize,
    finished: usize,
}

impl Lifecycle {
    fn see(&mut self, event: &Event) {
        match event {
            Event::RunStarted { .. } => self.started += 1,
            Event::RunFinished { .. } => self.finished += 1,
            _ => {}
        }
    }

    /// Every invocation seen starting has finished (one finishing counts when the watch
    /// joined after it started).
    fn over(&self) -> bool {
        self.finished > 0 && self.finished >= self.started
    }
}

/// Whether some live cbench holds one of the run's locks (`.lock`, `.lock-shard-…`).
fn run_is_live(run_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(".lock") {
            return false;
        }
        let Ok(file) = std::fs::File::open(entry.path()) else {
            return false;
        };
        // SAFETY: flock(2) on a file descriptor we own; released when `file` drops.
        let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        !free
    })
}

/// Follows `<log_dir>/<name>/events.jsonl`, calling `print` with each line to show.
pub async fn watch_dir(
    log_dir: &Path,
    name: &str,
    mut print: impl FnMut(&str),
) -> Result<(), WatchError> {
    let run_dir = log_dir.join(name);
    let path = run_dir.join(EVENTS_FILE);
    let io = |source| WatchError::Io {
        path: path.clone(),
        source,
    };
    let mut waiting = false;
    let mut file = loop {
        match std::fs::File::open(&path) {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A run that ended without an events file was made by an older cbench; one not
                // there yet (or being set up) is waited for: watch can be started first.
                if run_dir.join("config.json").is_file() && !run_is_live(&run_dir) {
                    return Err(WatchError::NoEvents {
                        name: name.to_string(),
                        path,
                    });
                }
                if !waiting {
                    waiting = true;
                    eprintln!(
                        "waiting for run `{name}` to start in {}{} (Ctrl-C stops watching, never the run)",
                        log_dir.display(),
                        crate::suggest::did_you_mean(
                            name,
                            crate::layout::run_names(log_dir).iter().map(String::as_str)
                        ),
                    );
                }
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(io(e)),
        }
    };
    let mut life = Lifecycle::default();
    let mut pending = String::new();
    let mut offset = 0u64;
    loop {
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut chunk = String::new();
        let read = file.read_to_string(&mut chunk).map_err(io)?;
        offset += read as u64;
        pending.push_str(&chunk);
        // Only whole lines: a line being appended right now is read next time.
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            match serde_json::from_str::<Event>(line.trim()) {
                Ok(event) => {
                    life.see(&event);
                    print(&event.render());
                }
                Err(e) => tracing::debug!("skipping an unreadable event line: {e}"),
            }
        }
        if life.over() && !run_is_live(&run_dir) {
            return Ok(());
        }
        if read == 0 && !run_is_live(&run_dir) {
            // Give an invocation that just released its lock time to write its last line.
            tokio::time::sleep(POLL).await;
            let mut tail = String::new();
            file.seek(SeekFrom::Start(offset)).map_err(io)?;
            if file.read_to_string(&mut tail).map_err(io)? == 0 {
                if !life.over() {
                    print("(no cbench is running this run any more; it did not finish: resume it with the same `cbench run` command)");
                }
                return Ok(());
            }
            continue;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Follows the run's Redis channel until every invocation that started while watching has
/// finished (or forever, until Ctrl-C, if none did).
pub async fn watch_redis(
    url: &str,
    name: &str,
    mut print: impl FnMut(&str),
) -> Result<(), WatchError> {
    let redis_error = |reason: String| WatchError::Redis {
        url: crate::messaging::redis::shown(url),
        reason,
    };
    let client = redis::Client::open(url).map_err(|e| redis_error(e.to_string()))?;
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .map_err(|e| redis_error(format!("cannot reach Redis: {e}")))?;
    pubsub
        .subscribe(RedisHub::events_channel(name))
        .await
        .map_err(|e| redis_error(e.to_string()))?;
    print(&format!(
        "watching run {name} on {} (live events only)",
        crate::messaging::redis::shown(url)
    ));
    let mut life = Lifecycle::default();
    let mut stream = pubsub.on_message();
    while let Some(message) = stream.next().await {
        let Ok(payload) = message.get_payload::<String>() else {
            continue;
        };
        if let Ok(event) = serde_json::from_str::<Event>(&payload) {
            life.see(&event);
            print(&event.render());
            if life.over() {
                return Ok(());
            }
        }
    }
    Err(redis_error("the connection to Redis closed".into()))
}
