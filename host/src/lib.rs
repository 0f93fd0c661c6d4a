//! cbench: a benchmark harness for cooperative coding agents whose agent
//! frameworks are WebAssembly components.

pub mod backend;
pub mod bench;
pub mod cli;
pub mod compare;
pub mod dataset;
pub mod docker;
pub mod eval;
pub mod evalrun;
pub mod events;
pub mod export;
pub mod fsutil;
pub mod gold;
pub mod layout;
pub mod leftovers;
pub mod llm;
pub mod messaging;
pub mod pairrun;
pub mod pins;
pub mod plugin;
pub mod progress;
pub mod report;
pub mod repos;
pub mod runlock;
pub mod runner;
pub mod runrecord;
pub mod sandbox;
pub mod shard;
pub mod stats;
pub mod summary;
pub mod team;
pub mod trajectory;
pub mod view;
pub mod watch;
