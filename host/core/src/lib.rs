//! The vocabulary every stage shares: the dataset and its selection, the logs layout, progress
//! lines, statistics, atomic file writes, and small facts (a command's output, a message, the
//! clock, processes). No engine, no sandbox, no plugin: everything else builds on this.

pub mod clock;
pub mod dataset;
pub mod exec;
pub mod fsutil;
pub mod layout;
pub mod message;
pub mod process;
pub mod progress;
pub mod shard;
pub mod stats;
