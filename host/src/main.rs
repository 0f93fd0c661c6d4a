//! The `cbench` binary: logging, then the library's command line ([`cbench::entry::main`]).

use std::process::ExitCode;

use cbench::cli::Cli;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(cbench::progress::StderrAboveStatus)
        .with_ansi(cbench::progress::stderr_colors())
        .init();
    cbench::entry::main(Cli::parse_or_exit(std::env::args_os()))
}
