//! What can go wrong talking to Modal, each naming the thing at fault.

use std::path::PathBuf;

/// A Modal failure: configuration, credentials, the service, or one sandbox.
#[derive(Debug, thiserror::Error)]
pub enum ModalError {
    #[error("modal: {path}: {reason}")]
    ConfigFile { path: PathBuf, reason: String },
    #[error("modal: MODAL_PROFILE={0} names no profile in {1}")]
    UnknownProfile(String, PathBuf),
    #[error("modal: no credentials: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, or run `modal token new` (it writes {0}); profile {1}")]
    NoCredentials(PathBuf, String),
    #[error("modal: MODAL_SERVER_URL {0:?}: give https URLs, comma-separated (plain http only to this machine)")]
    ServerUrl(String),
    #[error("modal: {0} is not valid in a gRPC header (printable ASCII only)")]
    HeaderValue(&'static str),
    #[error("modal: cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("modal: {url} rejected token {token_id} (profile {profile}): {message}; check MODAL_TOKEN_ID / MODAL_TOKEN_SECRET or run `modal token new`")]
    Rejected {
        url: String,
        token_id: String,
        profile: String,
        message: String,
    },
    #[error("modal: {rpc}: {code:?}: {message}")]
    Rpc {
        rpc: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("modal: image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("modal: sandbox {id}: {reason}")]
    Sandbox { id: String, reason: String },
    #[error("modal: command router {url}: {reason}")]
    Router { url: String, reason: String },
}

impl ModalError {
    /// An RPC's error status.
    pub fn rpc(rpc: &'static str, status: &tonic::Status) -> ModalError {
        ModalError::Rpc {
            rpc,
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// True when the sandbox or task no longer exists (terminated, finished, reaped).
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            ModalError::Rpc {
                code: tonic::Code::NotFound,
                ..
            }
        )
    }
}

/// The gRPC codes Modal's SDK retries (`sdk/_utils/grpc_utils.py`).
pub fn is_transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::DeadlineExceeded
            | tonic::Code::Unavailable
            | tonic::Code::Cancelled
            | tonic::Code::Internal
            | tonic::Code::Unknown
    )
}
