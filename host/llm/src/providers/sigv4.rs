//! AWS Signature Version 4 for one POST (the `Authorization` header of Bedrock requests),
//! written from AWS's specification: canonical request, string to sign, derived signing key.

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use ring::{digest, hmac};

/// The algorithm name in the string to sign and the `Authorization` header.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Long-term or temporary AWS credentials and the scope they sign for.
pub struct Signer {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Sent as `x-amz-security-token` (temporary credentials).
    pub session_token: Option<String>,
    pub region: String,
    /// `bedrock` for Bedrock's runtime.
    pub service: String,
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        .as_ref()
        .to_vec()
}

/// The path as AWS canonicalises it for every service but S3: each segment of the path
/// as sent (already percent-encoded) is URI-encoded once more, so `%3A` becomes `%253A`.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(super::uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// `host[:port]` as the client sends it in the Host header (the port only when not the
/// scheme's default).
pub fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

impl Signer {
    /// The headers that sign a POST of `body` to `url` at `now`: `x-amz-date`, the session
    /// token if any, and `Authorization` (marked sensitive). `content_type` is signed too.
    pub fn sign(
        &self,
        url: &reqwest::Url,
        content_type: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<HeaderMap, String> {
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = now.format("%Y%m%d").to_string();
        let mut signed: Vec<(&str, String)> = vec![
            ("content-type", content_type.trim().to_string()),
            ("host", host_header(url)),
            ("x-amz-date", amz_date.clone()),
        ];
        if let Some(token) = &self.session_token {
            signed.push(("x-amz-security-token", token.trim().to_string()));
        }
        signed.sort_by(|a, b| a.0.cmp(b.0));
        let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = signed.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
        let mut query: Vec<&str> = url
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .collect();
        // Bedrock's URLs carry no query; a given one is taken as already encoded.
        query.sort_unstable();
        let canonical_request = format!(
            "POST\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
            canonical_uri(url.path()),
            query.join("&"),
            sha256_hex(body)
        );
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let k_date = hmac_sha256(format!("AWS4{}", self.secret_access_key).as_bytes(), &date);
        let k_region = hmac_sha256(&k_date, &self.region);
        let k_service = hmac_sha256(&k_region, &self.service);
        let k_signing = hmac_sha256(&k_service, "aws4_request");
        let signature = hex::encode(hmac_sha256(&k_signing, &string_to_sign));
        let authorization = format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key_id
        );
        let value = |v: &str, what: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| format!("{what} holds characters an HTTP header cannot carry"))
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, value(content_type, "the content type")?);
        headers.insert(
            HeaderName::from_static("x-amz-date"),
            value(&amz_date, "the date")?,
        );
        if let Some(token) = &self.session_token {
            let mut v = value(token.trim(), "AWS_SESSION_TOKEN")?;
            v.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-amz-security-token"), v);
        }
        let mut auth = value(&authorization, "AWS_ACCESS_KEY_ID")?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_encoded_twice_in_the_canonical_path() {
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse"
        );
        assert_eq!(canonical_uri(""), "/");
    }

    /// AWS's published example of a derived signing key ("Examples of how to derive a
    /// signing key for Signature Version 4").
    #[test]
    fn the_signing_key_matches_the_aws_example() {
        let k_date = hmac_sha256(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215");
        let k_region = hmac_sha256(&k_date, "us-east-1");
        let k_service = hmac_sha256(&k_region, "iam");
        let k_signing = hmac_sha256(&k_service, "aws4_request");
        assert_eq!(
            hex::encode(k_signing),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}
