//! Logging, and `cbench run --trace FILE`: the run's spans (each agent's model calls, sandbox
//! commands and host work, sandbox starts, grading) as a Chrome trace, for ui.perfetto.dev or
//! chrome://tracing. The trace is written beside FILE and moved into place when the run ends.

use std::path::{Path, PathBuf};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::cli::{Cli, Command};

/// Keeps the trace being written; finishes and moves it into place when dropped.
pub struct TraceGuard {
    flush: Option<tracing_chrome::FlushGuard>,
    partial: PathBuf,
    path: PathBuf,
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        // Joins the writer thread: the file is complete after this.
        drop(self.flush.take());
        if let Err(e) = std::fs::rename(&self.partial, &self.path) {
            eprintln!(
                "error: --trace {}: moving the finished trace into place: {e}",
                self.path.display()
            );
        }
    }
}

/// Installs the log subscriber (`RUST_LOG`, warnings by default) and, for `run --trace`, the
/// trace writer. Exits with a message when the trace file cannot be created.
pub fn init(cli: &Cli) -> Option<TraceGuard> {
    let log = tracing_subscriber::fmt::layer()
        .with_writer(crate::progress::StderrAboveStatus)
        .with_ansi(crate::progress::stderr_colors())
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        );
    let trace_path = match &cli.command {
        Command::Run(args) => args.trace.clone(),
        Command::Bench(args) => args.trace.clone(),
        _ => None,
    };
    let Some(path) = trace_path else {
        tracing_subscriber::registry().with(log).init();
        return None;
    };
    let (file, partial) = match create_partial(&path) {
        Ok(created) => created,
        Err(e) => {
            eprintln!(
                "error: --trace {}: the trace file cannot be created: {e}",
                path.display()
            );
            std::process::exit(2);
        }
    };
    let (chrome, flush) = tracing_chrome::ChromeLayerBuilder::new()
        .writer(file)
        .include_args(true)
        .trace_style(tracing_chrome::TraceStyle::Async)
        .build();
    // Only cbench's own spans and events: its dependencies' (HTTP, wasmtime) would bury a step.
    let chrome = chrome.with_filter(tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("cbench") && *meta.level() <= tracing::Level::INFO
    }));
    tracing_subscriber::registry().with(log).with(chrome).init();
    Some(TraceGuard {
        flush: Some(flush),
        partial,
        path,
    })
}

/// Creates `<FILE>.partial` beside FILE (its directory must exist).
fn create_partial(path: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = std::fs::File::create(&partial)?;
    Ok((file, partial))
}
