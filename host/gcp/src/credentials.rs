//! Application Default Credentials, found in google-auth's order: the key file
//! `GOOGLE_APPLICATION_CREDENTIALS` names, then gcloud's application-default file
//! (`gcloud auth application-default login`), then the metadata server of a Google Cloud VM.
//! Key files are read and checked here; errors name fields, never their values.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};

use crate::GcpError;

/// The OAuth scope of Cloud Storage and Batch calls.
pub const SCOPE_CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint when a key file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The metadata server of a Google Cloud VM (`GCE_METADATA_HOST` overrides it).
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
/// gcloud's application-default credentials file, in its config directory.
const GCLOUD_ADC_FILE: &str = "application_default_credentials.json";
/// How long a self-signed assertion is valid (Google's maximum).
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// How long the metadata server gets to answer before ADC gives up on it (google-auth: 3 s).
const METADATA_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A service-account key, parsed.
pub struct ServiceAccount {
    /// The account's identity (`…@….iam.gserviceaccount.com`).
    pub client_email: String,
    private_key_id: Option<String>,
    key: RsaKeyPair,
    /// Where tokens are requested.
    pub token_uri: String,
    /// The project the key belongs to.
    pub project_id: Option<String>,
}

impl ServiceAccount {
    /// Parses a service-account key file's text (other credential types are refused by name).
    pub fn parse(text: &str) -> Result<ServiceAccount, String> {
        let kind = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("type")?.as_str().map(str::to_string));
        if let Some(kind) = kind.filter(|k| k != "service_account") {
            return Err(format!(
                "credentials of type `{}`; only service-account keys (`service_account`) are supported",
                shown_type(&kind)
            ));
        }
        match parse_key_file(text)? {
            Credentials::ServiceAccount(account) => Ok(*account),
            _ => Err("expected a service-account key file".into()),
        }
    }

    /// A signed JWT asserting the account's identity for `scope` (the JWT-bearer grant).
    pub fn assertion(&self, scope: &str) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": scope,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "cannot sign a token request".to_string())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// A user's credentials from `gcloud auth application-default login`: a refresh token.
pub struct AuthorizedUser {
    /// The OAuth client the refresh token was issued to.
    pub client_id: String,
    pub(crate) client_secret: String,
    pub(crate) refresh_token: String,
    /// Where tokens are requested.
    pub token_uri: String,
    /// The project billed for quota, when gcloud recorded one.
    pub quota_project_id: Option<String>,
}

/// Credentials of one of the kinds Application Default Credentials find.
pub enum Credentials {
    /// A service-account key file (boxed: the parsed RSA key is most of the enum's size).
    ServiceAccount(Box<ServiceAccount>),
    /// A user's refresh token.
    AuthorizedUser(AuthorizedUser),
    /// The VM's own service account, through its metadata server.
    MetadataServer {
        /// `http://HOST/computeMetadata/v1`.
        base_url: String,
    },
}

/// Credentials found by [`discover`], where they came from, and their project.
pub struct Adc {
    /// The credentials.
    pub credentials: Credentials,
    /// Where they came from, for errors: `GOOGLE_APPLICATION_CREDENTIALS (/path/key.json)`.
    pub origin: String,
    /// The project calls are made in, when one is known.
    pub project: Option<String>,
}

/// What ADC discovery reads from the environment (a value, so tests need not set variables).
#[derive(Debug, Clone, Default)]
pub struct AdcEnv {
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    pub application_credentials: Option<String>,
    /// gcloud's config directory: `CLOUDSDK_CONFIG`, else `~/.config/gcloud`.
    pub gcloud_config_dir: Option<PathBuf>,
    /// The metadata server's `host[:port]`: `GCE_METADATA_HOST`, else the VM's own.
    pub metadata_host: String,
    /// `GOOGLE_CLOUD_PROJECT` (or `GCLOUD_PROJECT`).
    pub project: Option<String>,
}

impl AdcEnv {
    /// The environment of this process.
    pub fn from_process() -> AdcEnv {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        AdcEnv {
            application_credentials: var("GOOGLE_APPLICATION_CREDENTIALS"),
            gcloud_config_dir: var("CLOUDSDK_CONFIG").map(PathBuf::from).or_else(|| {
                var("HOME").map(|home| Path::new(&home).join(".config").join("gcloud"))
            }),
            metadata_host: var("GCE_METADATA_HOST")
                .unwrap_or_else(|| DEFAULT_METADATA_HOST.to_string()),
            project: var("GOOGLE_CLOUD_PROJECT").or_else(|| var("GCLOUD_PROJECT")),
        }
    }
}

/// Finds the credentials in ADC's order. A key file that is named but unreadable or malformed
/// is an error (not a reason to look further), as in google-auth.
pub async fn discover(env: &AdcEnv, client: &reqwest::Client) -> Result<Adc, GcpError> {
    if let Some(path) = &env.application_credentials {
        let origin = format!("GOOGLE_APPLICATION_CREDENTIALS ({path})");
        return from_file(Path::new(path), origin, env);
    }
    if let Some(dir) = &env.gcloud_config_dir {
        let path = dir.join(GCLOUD_ADC_FILE);
        if path.is_file() {
            let origin = format!(
                "gcloud's application-default credentials ({})",
                path.display()
            );
            return from_file(&path, origin, env);
        }
    }
    let base_url = format!("http://{}/computeMetadata/v1", env.metadata_host);
    match metadata_project(client, &base_url).await {
        Some(project) => Ok(Adc {
            credentials: Credentials::MetadataServer { base_url },
            origin: format!("the metadata server ({})", env.metadata_host),
            project: env.project.clone().or(Some(project)),
        }),
        None => Err(GcpError::NoCredentials {
            metadata: env.metadata_host.clone(),
        }),
    }
}

/// Reads and checks one key file.
fn from_file(path: &Path, origin: String, env: &AdcEnv) -> Result<Adc, GcpError> {
    let bad = |reason: String| GcpError::BadCredentials {
        origin: origin.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read the credentials file: {e}")))?;
    let credentials = parse_key_file(&text).map_err(bad)?;
    let own_project = match &credentials {
        Credentials::ServiceAccount(account) => account.project_id.clone(),
        Credentials::AuthorizedUser(user) => user.quota_project_id.clone(),
        Credentials::MetadataServer { .. } => None,
    };
    let project = env
        .project
        .clone()
        .or(own_project)
        .or_else(|| gcloud_project(env.gcloud_config_dir.as_deref()?));
    Ok(Adc {
        credentials,
        origin,
        project,
    })
}

/// The project of gcloud's active configuration (`[core] project = …`), if any.
fn gcloud_project(config_dir: &Path) -> Option<String> {
    let active = std::fs::read_to_string(config_dir.join("active_config"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(['/', '\\']))
        .unwrap_or_else(|| "default".to_string());
    let text = std::fs::read_to_string(
        config_dir
            .join("configurations")
            .join(format!("config_{active}")),
    )
    .ok()?;
    let mut in_core = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_core = line == "[core]";
        } else if in_core {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "project" && !value.trim().is_empty() {
                    return Some(value.trim().to_string());
                }
            }
        }
    }
    None
}

/// The metadata server's project id, or None when no metadata server answers as Google's.
async fn metadata_project(client: &reqwest::Client, base_url: &str) -> Option<String> {
    let response = client
        .get(format!("{base_url}/project/project-id"))
        .header("Metadata-Flavor", "Google")
        .timeout(METADATA_PROBE_TIMEOUT)
        .send()
        .await
        .ok()?;
    // Anything else answering at that name (a captive portal, a proxy) is not a metadata server.
    let flavor_ok = response
        .headers()
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google");
    if !(flavor_ok && response.status().is_success()) {
        return None;
    }
    let text = response.text().await.ok()?;
    let project = text.trim();
    (!project.is_empty()).then(|| project.to_string())
}

/// Parses a credentials file of a supported type. Errors name fields, never their values.
fn parse_key_file(text: &str) -> Result<Credentials, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "not JSON (line {}, column {}): expected a service-account key or gcloud's application-default credentials",
            e.line(),
            e.column()
        )
    })?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let token_uri = field("token_uri").unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
    // Assertions and refresh tokens are bearer credentials: never sent in the clear, except
    // to a server on this machine (a test's, a proxy's).
    if !(token_uri.starts_with("https://") || is_loopback_http(&token_uri)) {
        return Err("`token_uri` is not https:// (nor a loopback address)".into());
    }
    match field("type").as_deref() {
        Some("service_account") => {
            let client_email = field("client_email").ok_or("no `client_email` field")?;
            let pem = field("private_key").ok_or("no `private_key` field")?;
            let der =
                pem_body(&pem).ok_or("`private_key` is not a PEM `PRIVATE KEY` block")?;
            let key = RsaKeyPair::from_pkcs8(&der)
                .map_err(|e| format!("`private_key` is not a usable PKCS#8 RSA key ({e})"))?;
            Ok(Credentials::ServiceAccount(Box::new(ServiceAccount {
                client_email,
                private_key_id: field("private_key_id"),
                key,
                token_uri,
                project_id: field("project_id"),
            })))
        }
        Some("authorized_user") => Ok(Credentials::AuthorizedUser(AuthorizedUser {
            client_id: field("client_id").ok_or("no `client_id` field")?,
            client_secret: field("client_secret").ok_or("no `client_secret` field")?,
            refresh_token: field("refresh_token").ok_or("no `refresh_token` field")?,
            token_uri,
            quota_project_id: field("quota_project_id"),
        })),
        Some(other) => Err(format!(
            "credentials of type `{}`; supported: `service_account` (a key file) and `authorized_user` (gcloud auth application-default login)",
            shown_type(other)
        )),
        None => Err("no `type` field: expected a service-account key or gcloud's application-default credentials".into()),
    }
}

/// A credentials type as it may be shown: only Google's own type names are echoed, never other
/// text from the file.
fn shown_type(kind: &str) -> &str {
    const GOOGLE_TYPES: [&str; 4] = [
        "service_account",
        "authorized_user",
        "external_account",
        "impersonated_service_account",
    ];
    if GOOGLE_TYPES.contains(&kind) {
        kind
    } else {
        "another"
    }
}

/// `http://` to this machine only (parsed: a user-info part cannot smuggle another host in).
pub(crate) fn is_loopback_http(url: &str) -> bool {
    url.starts_with("http://") && cbench_core::net::is_loopback_url(url)
}

/// The DER bytes of a PEM `-----BEGIN PRIVATE KEY-----` block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = pem[start..].find("-----END PRIVATE KEY-----")? + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        parse_key_file(text).err().unwrap_or_default()
    }

    #[test]
    fn key_file_errors_name_fields_never_values() {
        let err =
            error_of(r#"{"type":"authorized_user","client_id":"c","refresh_token":"s3cret"}"#);
        assert!(err.contains("client_secret"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = error_of(
            r#"{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA-not-a-key\n-----END PRIVATE KEY-----\n"}"#,
        );
        assert!(err.contains("private_key"), "{err}");
        assert!(!err.contains("AAAA"), "{err}");
        assert!(error_of("{not json").contains("not JSON"));
        let err = error_of(r#"{"type":"s3cret-type"}"#);
        assert!(err.contains("another") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn tokens_are_never_requested_in_the_clear_from_another_machine() {
        let err = error_of(
            r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r","token_uri":"http://evil.example/token"}"#,
        );
        assert!(err.contains("token_uri"), "{err}");
        assert!(is_loopback_http("http://127.0.0.1:9/token"));
        assert!(!is_loopback_http("http://127.0.0.1.evil.example/token"));
        assert!(!is_loopback_http("http://localhost:80@evil.example/token"));
        assert!(!is_loopback_http("https://127.0.0.1/token"));
    }

    #[test]
    fn gcloud_projects_come_from_the_active_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let configs = dir.path().join("configurations");
        std::fs::create_dir_all(&configs).unwrap();
        std::fs::write(
            configs.join("config_default"),
            "[core]\naccount = a@b\nproject = default-project\n",
        )
        .unwrap();
        std::fs::write(
            configs.join("config_work"),
            "[compute]\nproject = not-this\n[core]\nproject = work-project\n",
        )
        .unwrap();
        assert_eq!(
            gcloud_project(dir.path()).as_deref(),
            Some("default-project")
        );
        std::fs::write(dir.path().join("active_config"), "work\n").unwrap();
        assert_eq!(gcloud_project(dir.path()).as_deref(), Some("work-project"));
    }
}
