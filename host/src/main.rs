//! The `cbench` binary: logging (and `run --trace`), then the library's command line
//! ([`cbench::entry::main`]).

use std::process::ExitCode;

use cbench::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse_or_exit(std::env::args_os());
    let _trace = cbench::trace::init(&cli);
    cbench::entry::main(cli)
}
