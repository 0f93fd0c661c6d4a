//! The whole command line as a function: dispatch a parsed [`Cli`] to its command, print an
//! error as `error: …`, stop on a signal with cleanup. The `cbench` binary and the Python
//! package's console commands (`cbench`, `cooperbench`) both call [`main`].

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::cli::{Cli, Command};
use crate::commands::{self, error_chain};

/// Set when stdout or stderr was closed under us (`cbench … | head`).
static BROKEN_PIPE: AtomicBool = AtomicBool::new(false);

/// Runs one command line to its exit code (2 for an error, 130 after a signal, 141 when the
/// reader of its output went away, as for any Unix tool killed by SIGPIPE).
pub fn main(cli: Cli) -> ExitCode {
    quiet_on_broken_pipe();
    // A print to a closed pipe panics; unwinding still drops (and so removes) every sandbox.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| real_main(cli)));
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
        Err(_) if BROKEN_PIPE.load(Ordering::SeqCst) => ExitCode::from(141),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A panic from printing to a closed pipe is not a bug to report: it is noted, not printed.
fn quiet_on_broken_pipe() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(install_broken_pipe_hook);
}

fn install_broken_pipe_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            BROKEN_PIPE.store(true, Ordering::SeqCst);
            return;
        }
        default(info)
    }));
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Watching is reading: its Ctrl-C stops the reader, never the run it follows.
    let watching = matches!(cli.command, Command::Watch(_));
    let work = async {
        match cli.command {
            Command::Run(args) => commands::run(args).await,
            Command::Verify(args) => commands::verify(args).await,
            Command::Eval(args) => commands::eval(args).await,
            Command::Prepare(args) => commands::dataset_fetch(args).await,
            Command::Status(args) => commands::status(args).await,
            Command::Cancel(args) => commands::cancel(args).await,
            Command::RunPair(args) => commands::run_pair(args).await,
            Command::Models(args) => commands::models(args).await,
            Command::Import(crate::cli::ImportCommand::Cooperbench(args)) => {
                commands::import_cooperbench(args).await
            }
            Command::Plugin(crate::cli::PluginCommand::List(args)) => {
                commands::plugin_list(args).await
            }
            Command::Dataset(crate::cli::DatasetCommand::Fetch(args)) => {
                commands::dataset_fetch(args).await
            }
            Command::Dataset(crate::cli::DatasetCommand::Verify(args)) => {
                commands::dataset_verify(args).await
            }
            Command::Dataset(crate::cli::DatasetCommand::List(args)) => {
                commands::dataset_list(args).await
            }
            Command::Report(args) => commands::report(args).await,
            Command::Analyze(args) => commands::analyze(args).await,
            Command::Compare(args) => commands::compare(args).await,
            Command::View(args) => commands::view(args).await,
            Command::Export(args) => commands::export(args).await,
            Command::Gold(args) => crate::cli::gold::run(args).await,
            Command::Bench(args) => commands::bench(args).await,
            Command::Images(crate::cli::ImagesCommand::Build(args)) => {
                commands::images_build(args).await
            }
            Command::Watch(args) => commands::watch(args).await,
            Command::Plugin(crate::cli::PluginCommand::Inspect(args)) => {
                commands::plugin_inspect(args).await
            }
            Command::Plugin(crate::cli::PluginCommand::New(args)) => {
                commands::plugin_new(args).await
            }
            Command::Cache(crate::cli::CacheCommand::Info(args)) => {
                commands::cache_info(args).await
            }
            Command::Cache(crate::cli::CacheCommand::Prune(args)) => {
                commands::cache_prune(args).await
            }
            Command::Cleanup(args) => commands::cleanup(args).await,
            Command::Doctor(args) => crate::doctor::doctor(args).await,
        }
    };
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        tokio::select! {
            result = work => result,
            signal = shutdown => {
                if watching {
                    eprintln!("stopped watching ({signal}); the run itself is not affected");
                    return Ok(ExitCode::from(130));
                }
                // Dropping the run aborts its pairs: sandboxes and scratch dirs are removed
                // as they drop; every result file was written atomically, so none is torn.
                eprintln!("interrupted ({signal}): stopping; results already written are kept");
                match crate::interrupt::cancel() {
                    Some(cancel) if signal == "SIGINT" && ask(&cancel.question) => {
                        let status = std::env::current_exe()
                            .map(std::process::Command::new)
                            .and_then(|mut c| c.args(&cancel.args).status());
                        if !status.is_ok_and(|s| s.success()) {
                            eprintln!("error: `cbench {}` failed; run it again", cancel.args.join(" "));
                        }
                    }
                    _ => {
                        if let Some(note) = crate::interrupt::note() {
                            eprintln!("{note}");
                        }
                    }
                }
                let sweep = crate::docker::cleanup::sweep_registered();
                match tokio::time::timeout(std::time::Duration::from_secs(30), sweep).await {
                    Ok(Ok(swept)) if swept.any() => eprintln!("removed {swept} of this run"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => eprintln!("error: cleanup after the signal: {e} (run `cbench cleanup`)"),
                    Err(_) => eprintln!("error: cleanup after the signal took over 30 s (run `cbench cleanup`)"),
                }
                let sweep = crate::sandbox::modal::sweep_registered();
                match tokio::time::timeout(std::time::Duration::from_secs(30), sweep).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => eprintln!("terminated {n} Modal sandbox(es) of this run"),
                    Ok(Err(e)) => eprintln!("error: cleanup after the signal: {e} (run `cbench cleanup --backend modal`)"),
                    Err(_) => eprintln!("error: Modal cleanup after the signal took over 30 s (run `cbench cleanup --backend modal`)"),
                }
                let sweep = crate::eval::gcp_bench::sweep_registered();
                match tokio::time::timeout(std::time::Duration::from_secs(30), sweep).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => eprintln!("error: cleanup after the signal: {e} (run `cbench cleanup --backend gcp`)"),
                    Err(_) => eprintln!("error: Google Cloud cleanup after the signal took over 30 s (run `cbench cleanup --backend gcp`)"),
                }
                Ok(ExitCode::from(130))
            }
        }
    })
}

/// On a terminal, asks `question` (default no; no answer in 30 s is no); elsewhere, no.
fn ask(question: &str) -> bool {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(line);
    });
    let answer = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_default();
    matches!(answer.trim(), "y" | "Y" | "yes")
}

/// Resolves on SIGINT, SIGTERM or SIGHUP (a closed terminal): all three stop the run
/// the same way, with cleanup.
/// Installs the handlers now (so a signal that comes before the work's first await is caught,
/// not fatal) and returns the wait for the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    );
    async move {
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = handlers else {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        }
    }
}
