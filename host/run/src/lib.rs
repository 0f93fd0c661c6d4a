//! Orchestration: prepare a run, run its pairs (agents, then grading), resume, lock, shard, pin,
//! summarise and report. It drives every stage below it; it may not render pages (that is
//! `cbench-present`) or define the command line (that is the `cbench` binary).

use cbench_core::clock;
use cbench_core::dataset;
use cbench_core::fsutil;
use cbench_core::interrupt;
use cbench_core::layout;
use cbench_core::process;
use cbench_core::progress;
use cbench_core::shard;
use cbench_core::stats;
use cbench_docker as docker;
use cbench_eval as eval;
use cbench_llm as llm;
use cbench_llm::trajectory;
use cbench_messaging as messaging;
use cbench_messaging::events;
use cbench_plugin as plugin;
use cbench_sandbox as sandbox;
use cbench_sandbox::repos;
use cbench_sandbox::team;

pub mod agents;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod context;
pub mod error;
pub mod evalrun;
pub mod leftovers;
pub mod pairrun;
pub mod pins;
pub mod prepare;
pub mod record;
pub mod report;
pub mod runlock;
pub mod runner;
pub mod runrecord;
pub mod slurm;
pub mod steps;
pub mod summary;
pub mod teamreport;
