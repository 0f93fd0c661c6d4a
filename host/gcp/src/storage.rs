//! Cloud Storage through its JSON API (`storage/v1`): buckets, objects up and down, listing by
//! prefix, deletion. Calls go through [`RestClient`] (bearer tokens, retries, Google's error
//! messages); errors name the bucket and the object.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use crate::rest::RestClient;
use crate::{GcpError, TokenSource};

/// Cloud Storage's endpoint.
pub const DEFAULT_STORAGE_URL: &str = "https://storage.googleapis.com";

/// A Cloud Storage client for one set of credentials.
pub struct Storage {
    rest: RestClient,
    base: String,
}

impl Storage {
    /// A client of `base_url` (Cloud Storage's own when None). Plain http is accepted only on
    /// this machine: every request carries a bearer token.
    pub fn new(tokens: Arc<TokenSource>, base_url: Option<&str>) -> Result<Storage, GcpError> {
        let rest = RestClient::new(
            "Cloud Storage",
            tokens,
            base_url.unwrap_or(DEFAULT_STORAGE_URL),
        )?;
        Ok(Storage {
            base: rest.base().to_string(),
            rest,
        })
    }

    /// Whether `bucket` exists (and these credentials may see it).
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool, GcpError> {
        check_bucket_name(bucket)?;
        let url = format!("{}/storage/v1/b/{bucket}", self.base);
        let what = format!("looking up bucket gs://{bucket}");
        let response = self
            .rest
            .call(&what, &[404], |c| c.get(&url).query(&[("fields", "name")]))
            .await?;
        Ok(response.status().is_success())
    }

    /// Creates `bucket` in `project` at `location`, with objects deleted after
    /// `delete_after_days` (a safety net for anything cleanup misses).
    pub async fn create_bucket(
        &self,
        project: &str,
        bucket: &str,
        location: &str,
        delete_after_days: u32,
    ) -> Result<(), GcpError> {
        check_bucket_name(bucket)?;
        let url = format!("{}/storage/v1/b", self.base);
        let body = json!({
            "name": bucket,
            "location": location,
            "lifecycle": {"rule": [{"action": {"type": "Delete"}, "condition": {"age": delete_after_days}}]},
        });
        let what = format!("creating bucket gs://{bucket} in project {project}");
        self.rest
            .call(&what, &[], |c| {
                c.post(&url).query(&[("project", project)]).json(&body)
            })
            .await?;
        Ok(())
    }

    /// Writes object `name` (replacing it).
    pub async fn upload(&self, bucket: &str, name: &str, bytes: Bytes) -> Result<(), GcpError> {
        check_bucket_name(bucket)?;
        check_object_name(name)?;
        let url = format!("{}/upload/storage/v1/b/{bucket}/o", self.base);
        let what = format!("uploading gs://{bucket}/{name}");
        self.rest
            .call(&what, &[], |c| {
                c.post(&url)
                    .query(&[("uploadType", "media"), ("name", name)])
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone())
            })
            .await?;
        Ok(())
    }

    /// Reads object `name`: None when it does not exist; an error when it is larger than
    /// `max_bytes` (what a task wrote is data, and may be hostile in size).
    pub async fn download(
        &self,
        bucket: &str,
        name: &str,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, GcpError> {
        check_bucket_name(bucket)?;
        check_object_name(name)?;
        let url = format!(
            "{}/download/storage/v1/b/{bucket}/o/{}",
            self.base,
            quote(name)
        );
        let what = format!("downloading gs://{bucket}/{name}");
        let mut response = self
            .rest
            .call(&what, &[404], |c| c.get(&url).query(&[("alt", "media")]))
            .await?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        let mut out = Vec::new();
        loop {
            let chunk = response.chunk().await.map_err(|e| GcpError::Api {
                what: what.clone(),
                reason: format!("the download broke off: {e}"),
                status: None,
            })?;
            let Some(chunk) = chunk else { break };
            if out.len() + chunk.len() > max_bytes {
                return Err(GcpError::Api {
                    what,
                    reason: format!("the object is larger than {max_bytes} bytes"),
                    status: None,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }

    /// The names of the objects under `prefix`, every page.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, GcpError> {
        check_bucket_name(bucket)?;
        let url = format!("{}/storage/v1/b/{bucket}/o", self.base);
        let what = format!("listing gs://{bucket}/{prefix}");
        self.rest
            .names_in_pages(&what, "items", |c, page| {
                let mut query = vec![("prefix", prefix), ("fields", "items(name),nextPageToken")];
                if let Some(token) = page {
                    query.push(("pageToken", token));
                }
                c.get(&url).query(&query)
            })
            .await
    }

    /// Deletes object `name`; false when it was not there.
    pub async fn delete(&self, bucket: &str, name: &str) -> Result<bool, GcpError> {
        check_bucket_name(bucket)?;
        check_object_name(name)?;
        let url = format!("{}/storage/v1/b/{bucket}/o/{}", self.base, quote(name));
        let what = format!("deleting gs://{bucket}/{name}");
        let response = self.rest.call(&what, &[404], |c| c.delete(&url)).await?;
        Ok(response.status().is_success())
    }

    /// Deletes every object under `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, bucket: &str, prefix: &str) -> Result<usize, GcpError> {
        let names = self.list(bucket, prefix).await?;
        for name in &names {
            self.delete(bucket, name).await?;
        }
        Ok(names.len())
    }
}

/// Refuses a bucket name Cloud Storage would (and anything that is not a plain path segment).
pub fn check_bucket_name(name: &str) -> Result<(), GcpError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(GcpError::Invalid(format!(
            "`{name}` is not a Cloud Storage bucket name (3-63 lowercase letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit)"
        )))
    }
}

/// Refuses an object name Cloud Storage would: empty, `.`, `..` (a URL would resolve them to
/// another path), carriage returns or line feeds, or over 1024 bytes.
pub fn check_object_name(name: &str) -> Result<(), GcpError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 1024
        && !name.contains(['\r', '\n']);
    if ok {
        Ok(())
    } else {
        Err(GcpError::Invalid(format!(
            "{name:?} is not a Cloud Storage object name (not empty, `.` or `..`; no line breaks; at most 1024 bytes)"
        )))
    }
}

/// An object name as one URL path segment: everything but unreserved characters escaped
/// (`/` too), as the Python client quotes it.
fn quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_one_path_segment() {
        assert_eq!(
            quote("job/tasks/0/patch1.patch"),
            "job%2Ftasks%2F0%2Fpatch1.patch"
        );
        assert_eq!(quote("a b?#%"), "a%20b%3F%23%25");
        assert_eq!(quote("../x"), "..%2Fx");
    }

    #[test]
    fn bucket_names_are_checked_before_use() {
        assert!(check_bucket_name("cooperbench-eval-my-project").is_ok());
        for bad in ["ab", "Upper", "a/b", "-lead", "trail-", "a..b/../c", ""] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
        for bad in ["", ".", "..", "a\nb", &"x".repeat(1025)] {
            assert!(check_object_name(bad).is_err(), "{bad}");
        }
        assert!(
            check_object_name("run/../x").is_ok(),
            "one segment once quoted"
        );
    }
}
