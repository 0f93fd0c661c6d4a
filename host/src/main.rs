//! The `cbench` binary: parse, validate, dispatch; errors become a message and a non-zero exit.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use cbench::cli::{Cli, Command};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => {
                let cfg = args.validate()?;
                let summary = cbench::runner::run(cfg).await?;
                Ok(exit_for(summary.infra_errors))
            }
            Command::Eval(args) => {
                let cfg = args.validate()?;
                let summary = cbench::runner::eval_run(cfg).await?;
                Ok(exit_for(summary.infra_errors))
            }
            Command::Bench(args) => {
                cbench::bench::run(args).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Pairs failing is a result; pairs the harness could not run or grade is not.
fn exit_for(infra_errors: usize) -> ExitCode {
    if infra_errors == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {infra_errors} pair(s) could not be run or graded (see summary.json)");
        ExitCode::from(1)
    }
}
