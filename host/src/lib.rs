//! cbench: a benchmark harness for cooperative coding agents whose agent
//! frameworks are WebAssembly components.
//!
//! This crate is the `cbench` binary's layer: arguments to validated configurations
//! (`cli`), benchmarks (`bench`), `cbench watch` and plugin scaffolding. The work is done by
//! the crates under `host/` (see host/README.md); their modules are re-exported here under
//! the paths the integration tests and the Python API use.

pub use cbench_core::{
    clock, dataset, exec, fsutil, interrupt, layout, message, process, progress, shard, stats,
    suggest,
};
pub use cbench_docker as docker;
pub use cbench_eval as eval;
pub use cbench_eval::gold;
pub use cbench_import as import;
pub use cbench_kube as kubernetes;
pub use cbench_llm as llm;
pub use cbench_llm::trajectory;
pub use cbench_messaging as messaging;
pub use cbench_messaging::events;
pub use cbench_plugin as plugin;
pub use cbench_present::{compare, export, view};
pub use cbench_run::{
    backend, cluster, evalrun, leftovers, pairrun, pins, report, runlock, runner, runrecord, slurm,
    summary,
};
pub use cbench_sandbox as sandbox;
pub use cbench_sandbox::{repos, team};

pub mod bench;
pub mod cli;
pub mod commands;
pub mod doctor;
pub mod entry;
pub mod trace;
pub mod watch;
