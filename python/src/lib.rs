//! The native half of cbench's Python API: the CLI's own argument parsing and validation, then
//! the library's run, eval, run reading and comparison, in-process with the GIL released. Ctrl-C
//! in Python stops a run the way SIGINT stops the CLI (its pairs are dropped, so their sandboxes
//! and scratch dirs go, and this invocation's containers are swept) and raises
//! KeyboardInterrupt. The Python half (`cbench/__init__.py`) turns keyword arguments into CLI
//! arguments and JSON into dicts.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

use cbench::cli::{Cli, Command};
use cbench::runner::RunError;

create_exception!(
    _native,
    CbenchError,
    PyException,
    "cbench could not do its part (Docker, Redis, files, a lock held by another run): not a bad argument and not the agents' doing."
);

/// How long cleanup after Ctrl-C may take, as in the CLI.
const CLEANUP_LIMIT: Duration = Duration::from_secs(30);

/// Why a call failed, before it becomes a Python exception.
enum Failure {
    /// A bad argument or input (ValueError).
    BadInput(String),
    /// cbench's own machinery (CbenchError).
    Infrastructure(String),
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        match f {
            Failure::BadInput(m) => PyValueError::new_err(m),
            Failure::Infrastructure(m) => CbenchError::new_err(m),
        }
    }
}

/// The error and its causes, each said once: the text the CLI prints after `error: `.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

/// Bad input (what the user can fix in the call) or infrastructure.
fn run_failure(e: RunError) -> Failure {
    let text = chain(&e);
    match e {
        RunError::Dataset(_)
        | RunError::Model(_)
        | RunError::Plugin(_)
        | RunError::NothingVerified { .. }
        | RunError::UnknownRun { .. }
        | RunError::NothingToEvaluate { .. }
        | RunError::TeamSize { .. }
        | RunError::OptionChanged { .. }
        | RunError::Pin(_) => Failure::BadInput(text),
        _ => Failure::Infrastructure(text),
    }
}

/// Parses `cbench <argv…>` as the CLI does; clap's message (without its `error: ` and usage
/// lines) on failure.
fn parse(argv: Vec<String>) -> Result<Command, Failure> {
    let full = std::iter::once("cbench".to_string()).chain(argv);
    match Cli::try_parse_from(full) {
        Ok(cli) => Ok(cli.command),
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_string();
            Err(Failure::BadInput(first))
        }
    }
}

/// Resolves with KeyboardInterrupt (or whatever a Python signal handler raised) once Python
/// has a pending signal. Polled on the calling (main) thread, where Python runs its handlers.
async fn interrupted() -> PyErr {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Err(e) = Python::attach(|py| py.check_signals()) {
            return e;
        }
    }
}

/// Runs `work` on a runtime of its own with the GIL released, stopping it on a Python signal.
fn detached<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = Result<T, Failure>> + Send,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CbenchError::new_err(format!("starting the async runtime: {e}")))?;
    let outcome = py.detach(|| {
        runtime.block_on(async {
            tokio::select! {
                done = work => Ok(done),
                signal = interrupted() => Err(signal),
            }
        })
    });
    match outcome {
        Ok(done) => {
            py.detach(|| runtime.shutdown_timeout(CLEANUP_LIMIT));
            done.map_err(PyErr::from)
        }
        Err(signal) => {
            // The run's future is gone; its pairs' tasks are dropped with the runtime (their
            // sandboxes and scratch dirs with them); this invocation's containers are swept.
            py.detach(|| {
                let swept = runtime.block_on(async {
                    tokio::time::timeout(CLEANUP_LIMIT, cbench::docker::cleanup::sweep_registered())
                        .await
                });
                match swept {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        eprintln!("error: cleanup after the interrupt: {e} (run `cbench cleanup`)")
                    }
                    Err(_) => eprintln!(
                        "error: cleanup after the interrupt took over 30 s (run `cbench cleanup`)"
                    ),
                }
                runtime.shutdown_timeout(CLEANUP_LIMIT);
            });
            eprintln!("interrupted: stopped; results already written are kept");
            Err(signal)
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure::Infrastructure(format!("encoding: {e}")))
}

/// A scheduler engine's error: the scheduler or the run's machinery is infrastructure; an
/// option the engine refuses is bad input.
fn engine_failure(e: anyhow::Error) -> Failure {
    let text = chain(e.as_ref());
    if e.downcast_ref::<cbench::kubernetes::KubeError>().is_some() {
        return Failure::Infrastructure(text);
    }
    match e.downcast::<RunError>() {
        Ok(run) => run_failure(run),
        Err(_) => Failure::BadInput(text),
    }
}

/// `cbench run <argv…>`: the run's summary as JSON (a list of them for several agents).
#[pyfunction]
fn run(py: Python<'_>, argv: Vec<String>) -> PyResult<String> {
    let full: Vec<String> = std::iter::once("run".to_string()).chain(argv).collect();
    let args = match parse(full.clone())? {
        Command::Run(args) => args,
        _ => return Err(PyValueError::new_err("not a run")),
    };
    let engine = args
        .engine
        .engine()
        .map_err(|e| Failure::BadInput(e.to_string()))?;
    if !matches!(engine, cbench::cli::Engine::Local) {
        return detached(py, async move {
            match cbench::commands::submit_to_engine(args, engine, full).await {
                Ok(Some(summary)) => to_json(&summary),
                Ok(None) => Ok("null".to_string()),
                Err(e) => Err(engine_failure(e)),
            }
        });
    }
    let mut cfgs = (*args)
        .validate()
        .map_err(|e| Failure::BadInput(chain(&e)))?;
    detached(py, async move {
        if cfgs.len() == 1 {
            let summary = cbench::runner::run(cfgs.remove(0))
                .await
                .map_err(run_failure)?;
            to_json(&summary)
        } else {
            let summaries = cbench::runner::run_many(cfgs).await.map_err(run_failure)?;
            to_json(&summaries)
        }
    })
}

/// `cbench eval <argv…>`: the run's summary as JSON.
#[pyfunction]
fn evaluate(py: Python<'_>, argv: Vec<String>) -> PyResult<String> {
    let args = match parse(std::iter::once("eval".to_string()).chain(argv).collect())? {
        Command::Eval(args) => args,
        _ => return Err(PyValueError::new_err("not an eval")),
    };
    let cfg = args.validate().map_err(|e| Failure::BadInput(chain(&e)))?;
    detached(py, async move {
        let summary = cbench::runner::eval_run(cfg).await.map_err(run_failure)?;
        to_json(&summary)
    })
}

/// One record per pair of the run in `run_dir` (either layout): where it is, its result.json
/// and its eval.json (null when missing), as JSON.
#[pyfunction]
fn load_run(run_dir: PathBuf) -> PyResult<String> {
    if !run_dir.join("config.json").is_file() {
        return Err(PyValueError::new_err(format!(
            "no run at {}: config.json does not exist",
            run_dir.display()
        )));
    }
    let pairs = cbench::layout::pair_dirs(&run_dir)
        .map_err(|e| CbenchError::new_err(format!("reading {}: {e}", run_dir.display())))?;
    let read = |path: PathBuf| -> PyResult<serde_json::Value> {
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| CbenchError::new_err(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::Value::Null),
            Err(e) => Err(CbenchError::new_err(format!(
                "reading {}: {e}",
                path.display()
            ))),
        }
    };
    let mut records = Vec::new();
    for pair in pairs {
        records.push(serde_json::json!({
            "pair": pair.key(),
            "repo": pair.repo,
            "task_id": pair.task,
            "features": pair.features,
            "result": read(pair.path.join("result.json"))?,
            "eval": read(pair.path.join("eval.json"))?,
        }));
    }
    Ok(to_json(&records)?)
}

/// `cbench compare` of `names` in `log_dir`, as JSON.
#[pyfunction]
fn compare(log_dir: PathBuf, names: Vec<String>, allow_mismatch: bool) -> PyResult<String> {
    let comparison = cbench::compare::compare(&log_dir, &names, allow_mismatch)
        .map_err(|e| PyValueError::new_err(chain(&e)))?;
    Ok(to_json(&comparison)?)
}

/// `cbench <argv…>` as the binary runs it (help, errors and exit codes included): the wheel's
/// `cbench` and `cooperbench` console commands. Returns the exit code.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> PyResult<u8> {
    let cli = Cli::parse_or_exit(std::iter::once("cbench".to_string()).chain(argv));
    let code = py.detach(|| cbench::entry::main(cli));
    // ExitCode keeps its number to itself; every code cbench returns is one of these.
    Ok((0..=u8::MAX)
        .find(|n| std::process::ExitCode::from(*n) == code)
        .unwrap_or(1))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Log lines as the CLI writes them (RUST_LOG, default warnings), once per process.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(cbench::progress::StderrAboveStatus)
        .with_ansi(cbench::progress::stderr_colors())
        .try_init();
    m.add("CbenchError", m.py().get_type::<CbenchError>())?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(load_run, m)?)?;
    m.add_function(wrap_pyfunction!(compare, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    Ok(())
}
