//! Cloud Storage: its JSON API with the data credentials' GCS part, an access token
//! downscoped by the control plane to the task's buckets and prefixes (`Authorization:
//! Bearer`), sent by the agent's own HTTP client. Uploads are single media uploads.

use std::fs;
use std::io;
use std::path::Path;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use shared::agent_protocol::GcsCredentials;

use super::{
    BucketError, ObjectStore, answered, attempt, first_line, io_error, open_upload, save, unhurried,
};
use crate::api::Api;

const GOOGLE: &str = "https://storage.googleapis.com";

pub(super) struct Gcs<'a> {
    http: &'a ureq::Agent,
    /// `https://storage.googleapis.com` or a fake's address, without a trailing `/`.
    endpoint: String,
    bucket: String,
    bearer: String,
}

/// `object` as one path segment: everything but letters and digits escaped, `/` included
/// (the JSON API names an object in a single segment). Also fine for a query value.
fn segment(object: &str) -> String {
    utf8_percent_encode(object, NON_ALPHANUMERIC).to_string()
}

impl<'a> Gcs<'a> {
    pub(super) fn new(api: &'a Api, data: &GcsCredentials, bucket: &str) -> Self {
        Gcs {
            http: api.http(),
            endpoint: data
                .endpoint
                .as_deref()
                .unwrap_or(GOOGLE)
                .trim_end_matches('/')
                .to_owned(),
            bucket: bucket.to_owned(),
            bearer: format!("Bearer {}", data.access_token),
        }
    }

    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            segment(&self.bucket),
            segment(key)
        )
    }

    fn attempt<T>(
        &self,
        what: &str,
        send: impl FnMut() -> Result<T, String>,
    ) -> Result<T, BucketError> {
        attempt(&format!("gs://{}", self.bucket), what, send)
    }
}

impl ObjectStore for Gcs<'_> {
    fn list(&self, prefix: &str) -> Result<Vec<String>, BucketError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page: serde_json::Value = self.attempt("objects.list", || {
                let mut url = format!(
                    "{}/storage/v1/b/{}/o?prefix={}",
                    self.endpoint,
                    segment(&self.bucket),
                    segment(prefix)
                );
                if let Some(token) = &token {
                    url.push_str("&pageToken=");
                    url.push_str(&segment(token));
                }
                let mut response = self
                    .http
                    .get(&url)
                    .header("authorization", &self.bearer)
                    .call()
                    .map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let body = response
                    .body_mut()
                    .read_to_string()
                    .map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!("HTTP {status}: {}", first_line(&body)));
                }
                serde_json::from_str(&body).map_err(|e| format!("unreadable answer: {e}"))
            })?;
            if let Some(items) = page["items"].as_array() {
                keys.extend(
                    items
                        .iter()
                        .filter_map(|item| item["name"].as_str().map(str::to_owned)),
                );
            }
            match page["nextPageToken"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => return Ok(keys),
            }
        }
    }

    fn exists(&self, key: &str) -> Result<bool, BucketError> {
        self.attempt("objects.get", || {
            let response = self
                .http
                .get(&self.object_url(key))
                .header("authorization", &self.bearer)
                .call()
                .map_err(|e| e.to_string())?;
            match response.status().as_u16() {
                200 => Ok(true),
                404 | 403 => Ok(false),
                status => Err(format!("HTTP {status} for {key}")),
            }
        })
    }

    fn download(&self, key: &str, path: &Path) -> Result<(), BucketError> {
        let part = path.with_extension("stratus-part");
        self.attempt("objects.get", || {
            let response = unhurried(
                self.http
                    .get(&format!("{}?alt=media", self.object_url(key)))
                    .header("authorization", &self.bearer),
            )
            .call()
            .map_err(|e| e.to_string())?;
            save(response, key, &part)
        })?;
        fs::rename(&part, path).map_err(io_error("cannot write", path))
    }

    fn upload(&self, key: &str, path: &Path) -> Result<(), BucketError> {
        self.attempt("objects.insert", || {
            let Some((file, len)) = open_upload(path)? else {
                return Ok(());
            };
            let url = format!(
                "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
                self.endpoint,
                segment(&self.bucket),
                segment(key)
            );
            let response = unhurried(
                self.http
                    .post(&url)
                    .header("authorization", &self.bearer)
                    .header("content-type", "application/octet-stream")
                    .header("content-length", len.to_string()),
            )
            .send(ureq::SendBody::from_reader(&mut io::BufReader::new(file)))
            .map_err(|e| e.to_string())?;
            answered(response.status().as_u16(), key, false)
        })
    }

    fn delete(&self, key: &str) -> Result<(), BucketError> {
        self.attempt("objects.delete", || {
            let response = self
                .http
                .delete(&self.object_url(key))
                .header("authorization", &self.bearer)
                .call()
                .map_err(|e| e.to_string())?;
            answered(response.status().as_u16(), key, true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_name_is_one_segment() {
        assert_eq!(segment("ckpt/step 1.pt"), "ckpt%2Fstep%201%2Ept");
    }
}
