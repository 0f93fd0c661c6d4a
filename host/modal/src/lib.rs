//! Modal as a sandbox backend (issue 26). So far: the configuration and credentials, resolved
//! exactly as Modal's Python SDK resolves them (environment, then the active profile of
//! `~/.modal.toml`, then defaults), and the metadata every control-plane call carries. The
//! pinned protos and the subset cbench speaks are in `proto/`; scripts/modal-codegen.sh
//! generates their Rust types and gRPC stubs (not yet built in). The protocol is described in
//! docs/design/cloud-backends.md.

pub mod config;

pub use config::{ModalConfig, ModalError};
