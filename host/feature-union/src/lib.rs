//! No code: this crate only exists so that every root of the workspace (the `cbench` binary,
//! its tests, the Python wheel) asks Cargo for the same features of shared dependencies, and
//! each host crate is compiled once. See Cargo.toml.
