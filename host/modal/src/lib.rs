//! Modal (modal.com) sandboxes through Modal's own gRPC protocol, generated from a pinned
//! snapshot of its protos (`proto/`, modal-client 69519ae): the configuration and credentials
//! as Modal's SDK resolves them, the control plane (apps, images from registry tags,
//! sandboxes with cbench's tags, listing and termination), and commands through each
//! sandbox's task command router (start, stdin, stdout/stderr by offset, exit status). It knows
//! nothing of agents or grading: `cbench-sandbox` and `cbench-eval` build on [`RemoteSandbox`].
//! The protocol is described in docs/design/cloud-backends.md.

pub mod client;
pub mod config;
pub mod error;
pub mod proto;
pub mod router;
pub mod sandbox;

pub use client::ModalClient;
pub use client::{SandboxDefinition, Tags};
pub use config::ModalConfig;
pub use error::ModalError;
pub use router::{ExecReply, ExecRequest};
pub use sandbox::RemoteSandbox;
