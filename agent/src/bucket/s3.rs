//! S3: requests signed here (SigV4, by `rusty-s3`) with the data credentials' S3 part and
//! sent by the agent's own HTTP client. One object is one `PUT` (5 GB at most, S3's limit).

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use shared::agent_protocol::S3Credentials;

use super::{
    BucketError, ObjectStore, answered, attempt, first_line, io_error, open_upload, save, unhurried,
};
use crate::api::Api;

/// How long a signed request stays valid (it is sent at once).
const SIGNED_FOR: Duration = Duration::from_mins(5);

/// One bucket, with signed requests sent through the agent's HTTP client.
pub(super) struct S3<'a> {
    http: &'a ureq::Agent,
    bucket: Bucket,
    credentials: Credentials,
}

impl<'a> S3<'a> {
    pub(super) fn new(api: &'a Api, data: &S3Credentials, name: &str) -> Result<Self, BucketError> {
        let failed = |detail: String| BucketError::Store {
            url: format!("s3://{name}"),
            detail,
        };
        let region = data
            .regions
            .get(name)
            .cloned()
            .ok_or_else(|| failed("the data credentials do not cover this bucket".into()))?;
        // An emulator is addressed by path, and so is a bucket whose name has dots (S3's
        // wildcard certificate covers one label); AWS otherwise by the bucket's host name.
        let (endpoint, style) = match &data.endpoint {
            Some(endpoint) => (endpoint.clone(), UrlStyle::Path),
            None if name.contains('.') => {
                (format!("https://s3.{region}.amazonaws.com"), UrlStyle::Path)
            }
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                UrlStyle::VirtualHost,
            ),
        };
        let endpoint = url::Url::parse(&endpoint).map_err(|e| failed(format!("endpoint: {e}")))?;
        let bucket = Bucket::new(endpoint, style, name.to_owned(), region)
            .map_err(|e| failed(e.to_string()))?;
        Ok(S3 {
            http: api.http(),
            bucket,
            credentials: Credentials::new_with_token(
                data.access_key_id.clone(),
                data.secret_access_key.clone(),
                data.session_token.clone(),
            ),
        })
    }

    fn attempt<T>(
        &self,
        what: &str,
        send: impl FnMut() -> Result<T, String>,
    ) -> Result<T, BucketError> {
        attempt(&format!("s3://{}", self.bucket.name()), what, send)
    }
}

impl ObjectStore for S3<'_> {
    fn list(&self, prefix: &str) -> Result<Vec<String>, BucketError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let text = self.attempt("ListObjectsV2", || {
                let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
                if !prefix.is_empty() {
                    action.with_prefix(prefix);
                }
                if let Some(token) = &token {
                    action.with_continuation_token(token.as_str());
                }
                let url = action.sign(SIGNED_FOR);
                let mut response = self
                    .http
                    .get(url.as_str())
                    .call()
                    .map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let body = response
                    .body_mut()
                    .read_to_string()
                    .map_err(|e| e.to_string())?;
                if status == 200 {
                    Ok(body)
                } else {
                    Err(format!("HTTP {status}: {}", first_line(&body)))
                }
            })?;
            let page = ListObjectsV2::parse_response(&text).map_err(|e| BucketError::Store {
                url: format!("s3://{}", self.bucket.name()),
                detail: format!("ListObjectsV2: {e}"),
            })?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => return Ok(keys),
            }
        }
    }

    fn exists(&self, key: &str) -> Result<bool, BucketError> {
        self.attempt("HeadObject", || {
            let url = self
                .bucket
                .head_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            let response = self
                .http
                .head(url.as_str())
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
        self.attempt("GetObject", || {
            let url = self
                .bucket
                .get_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            let response = unhurried(self.http.get(url.as_str()))
                .call()
                .map_err(|e| e.to_string())?;
            save(response, key, &part)
        })?;
        fs::rename(&part, path).map_err(io_error("cannot write", path))
    }

    fn upload(&self, key: &str, path: &Path) -> Result<(), BucketError> {
        self.attempt("PutObject", || {
            let url = self
                .bucket
                .put_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            let Some((file, len)) = open_upload(path)? else {
                return Ok(());
            };
            let response = unhurried(
                self.http
                    .put(url.as_str())
                    .header("content-length", len.to_string()),
            )
            .send(ureq::SendBody::from_reader(&mut io::BufReader::new(file)))
            .map_err(|e| e.to_string())?;
            answered(response.status().as_u16(), key, false)
        })
    }

    fn delete(&self, key: &str) -> Result<(), BucketError> {
        self.attempt("DeleteObject", || {
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            let response = self
                .http
                .delete(url.as_str())
                .call()
                .map_err(|e| e.to_string())?;
            answered(response.status().as_u16(), key, true)
        })
    }
}
