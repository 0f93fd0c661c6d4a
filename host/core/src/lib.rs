//! The vocabulary every stage shares: the dataset and its selection, the logs layout, progress
//! lines, statistics, atomic file writes, and small facts (a command's output, a message, the
//! clock, processes), whether a pair is coop or solo, which plugin ran. No engine, sandbox or
//! plugin code (it only names the files and images they use): everything else builds on this.

pub mod background;
pub mod channel;
pub mod clock;
pub mod dataset;
pub mod exec;
pub mod fsutil;
pub mod identity;
pub mod interrupt;
pub mod layout;
pub mod message;
pub mod net;
pub mod process;
pub mod progress;
pub mod setting;
pub mod shard;
pub mod stats;
pub mod suggest;
