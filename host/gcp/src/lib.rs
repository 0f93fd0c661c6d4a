//! Google Cloud for cbench, spoken over Google's public REST APIs with reqwest (no Google SDK):
//!
//! - [`credentials`]: Application Default Credentials found as google-auth finds them
//!   (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application-default file, the metadata
//!   server), and the project they belong to;
//! - [`token`]: OAuth access tokens for them (the JWT-bearer grant of a service account, a
//!   user's refresh token, the metadata server), cached until shortly before they expire;
//! - [`storage`]: the Cloud Storage JSON API (buckets, objects up and down, listing by prefix,
//!   deletion);
//! - [`batch`]: the Cloud Batch API (jobs of N container tasks: create, watch, list by label,
//!   delete).
//!
//! Errors name the credentials' origin, the bucket and the object, never a key or a token.

pub mod batch;
pub mod credentials;
pub mod error;
mod rest;
pub mod storage;
pub mod token;

pub use batch::Batch;
pub use credentials::{Adc, AdcEnv, Credentials, ServiceAccount};
pub use error::GcpError;
pub use storage::Storage;
pub use token::TokenSource;
