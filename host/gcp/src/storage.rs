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
        match self.fetch(bucket, name, max_bytes, false).await? {
            Some((_, true)) => Err(GcpError::Api {
                what: format!("downloading gs://{bucket}/{name}"),
                reason: format!("the object is larger than {max_bytes} bytes"),
                status: None,
            }),
            Some((bytes, false)) => Ok(Some(bytes)),
            None => Ok(None),
        }
    }

    /// Reads the first `max_bytes` of object `name` (a `Range` request) and whether there was
    /// more: None when it does not exist.
    pub async fn download_head(
        &self,
        bucket: &str,
        name: &str,
        max_bytes: usize,
    ) -> Result<Option<(Vec<u8>, bool)>, GcpError> {
        self.fetch(bucket, name, max_bytes, true).await
    }

    /// Up to `max_bytes` of an object and whether it is longer; with `ranged`, only that much
    /// (plus one byte) is asked for.
    async fn fetch(
        &self,
        bucket: &str,
        name: &str,
        max_bytes: usize,
        ranged: bool,
    ) -> Result<Option<(Vec<u8>, bool)>, GcpError> {
        check_bucket_name(bucket)?;
        check_object_name(name)?;
        let url = format!(
            "{}/download/storage/v1/b/{bucket}/o/{}",
            self.base,
            quote(name)
        );
        let what = format!("downloading gs://{bucket}/{name}");
        // 416: the object is empty (no byte 0 to start the range at).
        let mut response = self
            .rest
            .call(&what, &[404, 416], |c| {
                let request = c.get(&url).query(&[("alt", "media")]);
                if ranged {
                    request.header(reqwest::header::RANGE, format!("bytes=0-{max_bytes}"))
                } else {
                    request
                }
            })
            .await?;
        match response.status().as_u16() {
            404 => return Ok(None),
            416 => return Ok(Some((Vec::new(), false))),
            _ => {}
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
                let room = max_bytes - out.len();
                out.extend_from_slice(&chunk[..room]);
                return Ok(Some((out, true)));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some((out, false)))
    }

    /// The names of the objects under `prefix`, every page.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, GcpError> {
        self.list_at_most(bucket, prefix, usize::MAX).await
    }

    /// The names of at most `max_names` objects under `prefix` (a prefix others can write to
    /// may hold millions).
    pub async fn list_at_most(
        &self,
        bucket: &str,
        prefix: &str,
        max_names: usize,
    ) -> Result<Vec<String>, GcpError> {
        check_bucket_name(bucket)?;
        let url = format!("{}/storage/v1/b/{bucket}/o", self.base);
        let what = format!("listing gs://{bucket}/{prefix}");
        self.rest
            .names_in_pages(&what, "items", max_names, |c, page| {
                let mut query = vec![("prefix", prefix), ("fields", "items(name),nextPageToken")];
                if let Some(token) = page {
                    query.push(("pageToken", token));
                }
                c.get(&url).query(&query)
            })
            .await
    }

    /// The "folders" right under `prefix` (which ends in `/`): `prefix/<name>/`, at most
    /// `max_names` of them.
    pub async fn list_prefixes(
        &self,
        bucket: &str,
        prefix: &str,
        max_names: usize,
    ) -> Result<Vec<String>, GcpError> {
        check_bucket_name(bucket)?;
        let url = format!("{}/storage/v1/b/{bucket}/o", self.base);
        let what = format!("listing the folders of gs://{bucket}/{prefix}");
        self.rest
            .names_in_pages(&what, "prefixes", max_names, |c, page| {
                let mut query = vec![
                    ("prefix", prefix),
                    ("delimiter", "/"),
                    ("fields", "prefixes,nextPageToken"),
                ];
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
        let (deleted, _) = self
            .delete_prefix_at_most(bucket, prefix, usize::MAX)
            .await?;
        Ok(deleted)
    }

    /// Deletes at most `max_objects` objects under `prefix`, skipping names this client
    /// refuses to put in a URL; returns how many went and whether any were left (to the
    /// bucket's lifecycle rule).
    pub async fn delete_prefix_at_most(
        &self,
        bucket: &str,
        prefix: &str,
        max_objects: usize,
    ) -> Result<(usize, bool), GcpError> {
        let names = self
            .list_at_most(bucket, prefix, max_objects.saturating_add(1))
            .await?;
        let more = names.len() > max_objects;
        let mut deleted = 0;
        for name in names.iter().take(max_objects) {
            if check_object_name(name).is_err() {
                continue;
            }
            if self.delete(bucket, name).await? {
                deleted += 1;
            }
        }
        Ok((deleted, more))
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
