//! What can go wrong talking to Google Cloud, in words a user can act on.

/// An error of the Google Cloud clients. Messages name the credentials' origin, the bucket
/// and the object; never a key, an assertion or a token.
#[derive(Debug, thiserror::Error)]
pub enum GcpError {
    /// No credentials anywhere Application Default Credentials look.
    #[error("no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run `gcloud auth application-default login`, or run on Google Cloud (the metadata server at {metadata} did not answer)")]
    NoCredentials {
        /// The metadata server that was asked.
        metadata: String,
    },
    /// Credentials that were found but cannot be used.
    #[error("{origin}: {reason}")]
    BadCredentials {
        /// Where they came from (a variable and path, never the content).
        origin: String,
        /// What is wrong, naming fields and never their values.
        reason: String,
    },
    /// No project for the credentials.
    #[error("no Google Cloud project: set GOOGLE_CLOUD_PROJECT (the credentials from {origin} name none)")]
    NoProject {
        /// Where the credentials came from.
        origin: String,
    },
    /// The token endpoint did not give a token.
    #[error("{origin}: {source}")]
    Token {
        /// Where the credentials came from.
        origin: String,
        /// Why there is no token.
        source: crate::token::TokenError,
    },
    /// A Cloud Storage or Batch call that failed for good (after retries, or refused).
    #[error("{what}: {reason}")]
    Api {
        /// The call: `uploading gs://bucket/name`.
        what: String,
        /// The service's status and message, or the transport's failure.
        reason: String,
        /// The HTTP status, when the service answered.
        status: Option<u16>,
    },
    /// An argument cbench refuses before sending anything (a malformed bucket name).
    #[error("{0}")]
    Invalid(String),
}
