//! The blob-storage port: task bundles (workdir archives), node reports and logs, by key.
//! Keys are `/`-separated paths (`jobs/7/logs/...`). S3 in AWS; a folder locally.
//!
//! # Layout
//! - `keys`: every key Stratus uses, as a schema, and the functions that build and read them.
//! - `local`: a folder on disk ([`LocalBlobStore`]).
//! - `s3` (feature `aws`): an S3 bucket under a prefix (`S3BlobStore`).

pub mod keys;
mod local;
#[cfg(feature = "aws")]
mod s3;

use async_trait::async_trait;

pub use local::LocalBlobStore;
#[cfg(feature = "aws")]
pub use s3::S3BlobStore;
#[cfg(feature = "aws")]
pub(crate) use s3::location as s3_location;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("invalid blob key '{key}': {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("blob storage failed on '{key}'")]
    Backend {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A presigned upload: the URL, and the headers the `PUT` must carry (they are signed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadUrl {
    pub url: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// An object read with a size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounded {
    Data(Vec<u8>),
    /// The object has this many bytes, more than the limit: it was not read.
    TooLarge(u64),
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Writes (or replaces) the object at `key`.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError>;
    /// Reads the object at `key`; `None` if there is none.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError>;
    /// Reads the object at `key` if it has at most `max` bytes; a larger one is not read
    /// (an agent can write what it likes to its own log keys, and a reader must stay bounded).
    async fn get_at_most(&self, key: &str, max: usize) -> Result<Option<Bounded>, BlobError> {
        Ok(self.get(key).await?.map(|bytes| {
            if bytes.len() > max {
                Bounded::TooLarge(bytes.len() as u64)
            } else {
                Bounded::Data(bytes)
            }
        }))
    }
    /// Keys under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError>;
    /// Deletes every object under `prefix`; nothing there is fine.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError>;
    /// Writes (or replaces) the object at `key` with the contents of the file at `path`,
    /// without holding it all in memory where the store can avoid it.
    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), BlobError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| BlobError::Backend {
                key: key.to_owned(),
                source: Box::new(e),
            })?;
        self.put(key, bytes).await
    }
    /// A URL that uploads (`PUT`) the object at `key` without credentials, when the store has
    /// such URLs (S3's presigned URLs). Clients send large archives this way, around the API's
    /// payload limit. `None`: upload through the API. With `sha256`, the upload must carry
    /// that checksum (the headers to send come with the URL) and the store checks the body
    /// against it.
    async fn upload_url(
        &self,
        key: &str,
        expires: std::time::Duration,
        sha256: Option<[u8; 32]>,
    ) -> Result<Option<UploadUrl>, BlobError> {
        let _ = (key, expires, sha256);
        Ok(None)
    }
    /// A URL that downloads (`GET`) the object at `key` without credentials, when the store
    /// has such URLs. `None`: serve it through the API.
    async fn download_url(
        &self,
        key: &str,
        expires: std::time::Duration,
    ) -> Result<Option<String>, BlobError> {
        let _ = (key, expires);
        Ok(None)
    }
}

/// Rejects keys that could escape a folder or mean different things to different stores.
pub(crate) fn check_key(key: &str) -> Result<(), BlobError> {
    let reason = if key.is_empty() {
        Some("empty")
    } else if key.starts_with('/') {
        Some("starts with '/'")
    } else if key
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        Some("has an empty, '.' or '..' part")
    } else if key.contains('\\') || key.contains('\0') {
        Some("has '\\' or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BlobError::InvalidKey {
            key: key.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}
