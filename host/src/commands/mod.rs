//! One function per `cbench` command: validated arguments in, an exit code out, one module per
//! concern (running, reading results, the dataset, plugins, the machine).

use std::process::ExitCode;

mod dataset;
mod machine;
mod plugins;
mod results;
mod run;

pub use dataset::{dataset_fetch, dataset_list, dataset_verify};
pub use machine::{bench, cleanup, images_build};
pub use plugins::{cache_info, cache_prune, models, plugin_inspect, plugin_list, plugin_new};
pub use results::{
    analyze, compare, eval, export, import_cooperbench, report, verify, view, watch,
};
pub use run::{cancel, run, run_pair, status, submit_to_engine};

/// Pairs failing is a result; pairs the harness could not run or grade is not.
pub(super) fn exit_for(infra_errors: usize) -> ExitCode {
    if infra_errors == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {infra_errors} pair(s) could not be run or graded (see summary.json)");
        ExitCode::from(1)
    }
}

/// The error and its causes, each said once: our messages often quote their source already
/// (`cannot read X: No such file or directory (os error 2)`), which `{:#}` would repeat.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}
