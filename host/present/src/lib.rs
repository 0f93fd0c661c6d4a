//! What people look at: head-to-head comparisons, the static HTML view, trajectory export.
//! Reads run directories and the run crate's records; never runs agents or grades.

use cbench_core::fsutil;
use cbench_core::identity;
use cbench_core::layout;
use cbench_core::progress;
use cbench_core::stats;
use cbench_eval as eval;
use cbench_llm as llm;
use cbench_llm::trajectory;
use cbench_run::report;
use cbench_run::runner;
use cbench_run::summary;

pub mod compare;
pub mod export;
pub mod view;
