//! Modal's configuration as its SDK reads it (modal-client 1.5.4, `py/modal/config.py` and
//! `client.py`; docs/design/cloud-backends.md §A): each setting from `MODAL_<KEY>`, else the
//! active profile of `$MODAL_CONFIG_PATH` or `~/.modal.toml`, else the built-in default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::ModalError;

/// The SDK's default control-plane URLs, tried in order.
pub const DEFAULT_SERVER_URL: &str = "https://api.modal.com,https://api.modal2.com";

/// The SDK version whose protocol cbench speaks (the pinned proto snapshot's).
pub const PROTOCOL_SDK_VERSION: &str = "1.5.4";

/// `CLIENT_TYPE_CLIENT` (api.proto `ClientType`): the only type that authenticates with a
/// token id and secret.
const CLIENT_TYPE_CLIENT: &str = "1";

/// The resolved configuration. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ModalConfig {
    /// Control-plane URLs, in the order the SDK tries them.
    pub server_urls: Vec<String>,
    pub token_id: String,
    token_secret: String,
    /// The Modal environment (`""`: the workspace's default).
    pub environment: String,
    /// The profile the file values came from.
    pub profile: String,
}

impl std::fmt::Debug for ModalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModalConfig")
            .field("server_urls", &self.server_urls)
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("environment", &self.environment)
            .field("profile", &self.profile)
            .finish()
    }
}

impl ModalConfig {
    /// From this process's environment and home directory.
    pub fn from_env() -> Result<ModalConfig, ModalError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        ModalConfig::resolve(|k| std::env::var(k).ok(), home.as_deref())
    }

    /// From `env` (a variable's value) and `home`, as the SDK resolves them.
    pub fn resolve(
        env: impl Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<ModalConfig, ModalError> {
        let path = env("MODAL_CONFIG_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.unwrap_or(Path::new("/")).join(".modal.toml"));
        let profiles = read_profiles(&path)?;
        let profile = active_profile(&profiles, env("MODAL_PROFILE"), &path)?;
        let from_file = profiles.get(&profile).cloned().unwrap_or_default();
        let setting = |key: &str| {
            env(&format!("MODAL_{}", key.to_ascii_uppercase()))
                .filter(|v| !v.is_empty())
                .or_else(|| from_file.get(key).cloned())
        };
        let server = setting("server_url").unwrap_or_else(|| DEFAULT_SERVER_URL.into());
        let server_urls: Vec<String> = server
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        // Plain http would send the token secret in the clear: only to this machine (a local
        // control plane, as in tests).
        let acceptable = |u: &String| {
            u.starts_with("https://")
                || (u.starts_with("http://") && cbench_core::net::is_loopback_url(u))
        };
        if server_urls.is_empty() || !server_urls.iter().all(acceptable) {
            return Err(ModalError::ServerUrl(server));
        }
        let (Some(token_id), Some(token_secret)) = (setting("token_id"), setting("token_secret"))
        else {
            return Err(ModalError::NoCredentials(path, profile));
        };
        Ok(ModalConfig {
            server_urls,
            token_id,
            token_secret,
            environment: setting("environment").unwrap_or_default(),
            profile,
        })
    }

    /// The gRPC metadata of every control-plane call (client type and version, and the token).
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        vec![
            ("x-modal-client-type", CLIENT_TYPE_CLIENT.to_string()),
            ("x-modal-client-version", PROTOCOL_SDK_VERSION.to_string()),
            ("x-modal-token-id", self.token_id.clone()),
            ("x-modal-token-secret", self.token_secret.clone()),
        ]
    }
}

/// The file's profiles (top-level tables) as string settings; no file, no profiles.
fn read_profiles(path: &Path) -> Result<BTreeMap<String, BTreeMap<String, String>>, ModalError> {
    let bad = |reason: String| ModalError::ConfigFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(bad(e.to_string())),
    };
    let table: toml::Table = text
        .parse()
        // Where the file is malformed, never its text: the line may hold the token secret.
        .map_err(|e: toml::de::Error| {
            let at = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            bad(format!("not valid TOML{at} ({})", e.message()))
        })?;
    let mut profiles = BTreeMap::new();
    for (name, value) in table {
        let toml::Value::Table(settings) = value else {
            return Err(bad(format!(
                "`{name}` is not a profile table (each profile is a [name] table)"
            )));
        };
        let settings = settings
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect();
        profiles.insert(name, settings);
    }
    Ok(profiles)
}

/// `MODAL_PROFILE`, else the profile marked `active = true`, else `default`, with the SDK's
/// checks (`config.py` `_check_config`, `client.py`).
fn active_profile(
    profiles: &BTreeMap<String, BTreeMap<String, String>>,
    chosen: Option<String>,
    path: &Path,
) -> Result<String, ModalError> {
    let bad = |reason: String| ModalError::ConfigFile {
        path: path.to_path_buf(),
        reason,
    };
    let active: Vec<&str> = profiles
        .iter()
        .filter(|(_, s)| s.get("active").map(String::as_str) == Some("true"))
        .map(|(n, _)| n.as_str())
        .collect();
    if active.len() > 1 {
        return Err(bad(format!(
            "more than one profile is active ({}); keep one `active = true` (`modal profile activate`)",
            active.join(", ")
        )));
    }
    let chosen = chosen.filter(|n| !n.is_empty());
    let named = chosen.is_some();
    let profile = chosen
        .or_else(|| active.first().map(|s| s.to_string()))
        .unwrap_or_else(|| "default".into());
    if profiles.len() > 1 && active.is_empty() && profile == "default" {
        return Err(bad(
            "several profiles and none is active: set MODAL_PROFILE or run `modal profile activate`"
                .into(),
        ));
    }
    if named && !profiles.is_empty() && !profiles.contains_key(&profile) {
        return Err(ModalError::UnknownProfile(profile, path.to_path_buf()));
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn home_with(file: &str) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".modal.toml"), file).unwrap();
        home
    }

    #[test]
    fn the_environment_wins_over_the_active_profile() {
        let home = home_with(
            "[work]\ntoken_id = \"ak-file\"\ntoken_secret = \"as-file\"\nactive = true\n\n[other]\ntoken_id = \"ak-other\"\ntoken_secret = \"as-other\"\n",
        );
        let cfg = ModalConfig::resolve(env_of(&[("MODAL_TOKEN_ID", "ak-env")]), Some(home.path()))
            .unwrap();
        assert_eq!(cfg.profile, "work");
        assert_eq!(cfg.token_id, "ak-env");
        assert_eq!(cfg.token_secret, "as-file");
        assert_eq!(
            cfg.server_urls,
            ["https://api.modal.com", "https://api.modal2.com"]
        );
        let picked =
            ModalConfig::resolve(env_of(&[("MODAL_PROFILE", "other")]), Some(home.path())).unwrap();
        assert_eq!(picked.token_id, "ak-other");
    }

    #[test]
    fn profile_mistakes_are_named_as_the_sdk_names_them() {
        let two_active = home_with("[a]\nactive = true\n[b]\nactive = true\n");
        let e = ModalConfig::resolve(env_of(&[]), Some(two_active.path())).unwrap_err();
        assert!(
            e.to_string()
                .contains("more than one profile is active (a, b)"),
            "{e}"
        );
        let none_active = home_with("[a]\ntoken_id = \"x\"\n[b]\ntoken_id = \"y\"\n");
        let e = ModalConfig::resolve(env_of(&[]), Some(none_active.path())).unwrap_err();
        assert!(e.to_string().contains("none is active"), "{e}");
        let e = ModalConfig::resolve(env_of(&[("MODAL_PROFILE", "c")]), Some(none_active.path()))
            .unwrap_err();
        assert!(
            e.to_string().contains("MODAL_PROFILE=c names no profile"),
            "{e}"
        );
        let not_a_table = home_with("token_id = \"x\"\n");
        let e = ModalConfig::resolve(env_of(&[]), Some(not_a_table.path())).unwrap_err();
        assert!(e.to_string().contains("not a profile table"), "{e}");
    }

    #[test]
    fn missing_credentials_say_how_to_get_them() {
        let home = tempfile::tempdir().unwrap();
        let e = ModalConfig::resolve(env_of(&[]), Some(home.path())).unwrap_err();
        assert!(e.to_string().contains("modal token new"), "{e}");
        // One profile that is not marked active is not used: the SDK reads `default`.
        let inactive = home_with("[work]\ntoken_id = \"x\"\ntoken_secret = \"y\"\n");
        let e = ModalConfig::resolve(env_of(&[]), Some(inactive.path())).unwrap_err();
        assert!(e.to_string().contains("profile default"), "{e}");
        let e = ModalConfig::resolve(
            env_of(&[
                ("MODAL_TOKEN_ID", "a"),
                ("MODAL_TOKEN_SECRET", "b"),
                ("MODAL_SERVER_URL", "api.modal.com"),
            ]),
            Some(home.path()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("MODAL_SERVER_URL"), "{e}");
    }

    #[test]
    fn the_secret_is_sent_but_never_shown() {
        let home = tempfile::tempdir().unwrap();
        let cfg = ModalConfig::resolve(
            env_of(&[
                ("MODAL_TOKEN_ID", "ak-1"),
                ("MODAL_TOKEN_SECRET", "as-canary"),
                ("MODAL_SERVER_URL", "http://127.0.0.1:9/"),
            ]),
            Some(home.path()),
        )
        .unwrap();
        assert_eq!(cfg.server_urls, ["http://127.0.0.1:9"]);
        assert!(!format!("{cfg:?}").contains("as-canary"));
        let md = cfg.metadata();
        assert!(md.contains(&("x-modal-token-secret", "as-canary".to_string())));
        assert!(md.contains(&("x-modal-client-type", "1".to_string())));
    }

    #[test]
    fn a_malformed_file_is_located_without_its_text_and_plain_http_stays_local() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join(".modal.toml"),
            "[default]\ntoken_id = \"ak-1\"\ntoken_secret = \"as-canary\n",
        )
        .unwrap();
        let err = ModalConfig::resolve(env_of(&[]), Some(home.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at line 3"), "{err}");
        assert!(!err.contains("as-canary"), "{err}");
        let err = ModalConfig::resolve(
            env_of(&[
                ("MODAL_TOKEN_ID", "ak-1"),
                ("MODAL_TOKEN_SECRET", "as-canary"),
                ("MODAL_SERVER_URL", "http://api.example.com"),
            ]),
            Some(tempfile::tempdir().unwrap().path()),
        )
        .unwrap_err();
        assert!(matches!(err, ModalError::ServerUrl(_)), "{err}");
    }
}
