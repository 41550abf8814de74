//! Blob storage in an S3 bucket, under a prefix of its own (feature `aws`).
//!
//! A store is a `(bucket, prefix)` pair: key `jobs/7/a` is object `<prefix>/jobs/7/a`, and
//! keys come back from [`BlobStore::list`] without the prefix, so several stores (one per
//! deployment or test) can share a bucket without seeing each other's objects.
//!
//! # Guarantees
//! - `put` is atomic: a reader sees the old object or the whole new one, never a part (a
//!   single `PutObject`).
//! - S3 is strongly consistent for reads and lists: a `get` or `list` that starts after a
//!   `put` returns sees it.
//! - `list` returns every key under the prefix (all pages of `ListObjectsV2`), sorted.
//! - `delete_prefix` of nothing succeeds; a `get` of a key that is not there is `None`.
//!
//! # Caveats
//! - `delete_prefix` is a listing followed by `DeleteObjects` batches of 1,000 keys: it is not
//!   atomic. If it fails half way, running it again finishes the job; an object written under
//!   the prefix while it runs may survive.
//! - `list` holds every key in memory: fine for a job's blobs (thousands), not for millions.
//! - One `PutObject` holds at most 5 GB; Stratus's blobs (archives, reports, log chunks) are far
//!   smaller.
//! - The emulators (moto, LocalStack) need path-style addressing; [`S3BlobStore::from_sdk_config`]
//!   turns it on whenever an endpoint URL is configured.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::operation::create_bucket::CreateBucketError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Delete, ObjectIdentifier,
};

use super::{BlobError, BlobStore, Bounded, UploadUrl, check_key};

/// `DeleteObjects` takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// A bucket, or the part of one under a prefix, as a [`BlobStore`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    /// Empty, or ending in `/`.
    prefix: String,
}

/// What went wrong talking to S3, with the call and the object (the `source` of
/// [`BlobError::Backend`]).
#[derive(Debug, thiserror::Error)]
#[error("S3 {operation} on s3://{bucket}/{object}: {detail}")]
struct S3Failure {
    operation: &'static str,
    bucket: String,
    object: String,
    detail: String,
}

/// Where `CreateBucket` puts a bucket of `region`: `None` for us-east-1, S3's default location,
/// which must not be named as a constraint.
pub(crate) fn location(region: Option<&str>) -> Option<CreateBucketConfiguration> {
    region.filter(|r| *r != "us-east-1").map(|region| {
        CreateBucketConfiguration::builder()
            .location_constraint(BucketLocationConstraint::from(region))
            .build()
    })
}

impl S3BlobStore {
    /// A store on `bucket` under `prefix` (`""` for the whole bucket; `"stratus"` and
    /// `"stratus/"` are the same). The prefix must be a valid key: no empty, `.` or `..` parts.
    pub fn new(client: Client, bucket: impl Into<String>, prefix: &str) -> Result<Self, BlobError> {
        let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            check_key(trimmed)?;
            format!("{trimmed}/")
        };
        Ok(Self {
            client,
            bucket: bucket.into(),
            prefix,
        })
    }

    /// A store whose client is built from `config`, with path-style addressing when the config
    /// names an endpoint URL (an emulator: `AWS_ENDPOINT_URL`).
    pub fn from_sdk_config(
        config: &SdkConfig,
        bucket: impl Into<String>,
        prefix: &str,
    ) -> Result<Self, BlobError> {
        let mut builder = aws_sdk_s3::config::Builder::from(config);
        if config.endpoint_url().is_some() {
            builder = builder.force_path_style(true);
        }
        Self::new(Client::from_conf(builder.build()), bucket, prefix)
    }

    /// A store with the SDK configured from the environment (credentials, region, and
    /// `AWS_ENDPOINT_URL` for an emulator).
    pub async fn from_env(bucket: impl Into<String>, prefix: &str) -> Result<Self, BlobError> {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::from_sdk_config(&config, bucket, prefix)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The store's own prefix: empty, or ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates the bucket in the client's region unless it exists and is ours. For tests and
    /// development; in production the deployment template creates the bucket.
    pub async fn create_bucket_if_missing(&self) -> Result<(), BlobError> {
        let region = self.client.config().region().map(ToString::to_string);
        let request = self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .set_create_bucket_configuration(location(region.as_deref()));
        match request.send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created bucket");
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(CreateBucketError::is_bucket_already_owned_by_you) =>
            {
                tracing::debug!(bucket = %self.bucket, "bucket already exists");
                Ok(())
            }
            Err(e) => Err(self.failure("CreateBucket", "", "", &e)),
        }
    }

    fn object(&self, key: &str) -> Result<String, BlobError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// A [`BlobError::Backend`] for `key` (the caller's) naming the call and the object.
    fn failure<E, R>(
        &self,
        operation: &'static str,
        key: &str,
        object: &str,
        e: &SdkError<E, R>,
    ) -> BlobError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        self.failure_detail(operation, key, object, DisplayErrorContext(e).to_string())
    }

    fn failure_detail(
        &self,
        operation: &'static str,
        key: &str,
        object: &str,
        detail: String,
    ) -> BlobError {
        BlobError::Backend {
            key: key.to_owned(),
            source: Box::new(S3Failure {
                operation,
                bucket: self.bucket.clone(),
                object: object.to_owned(),
                detail,
            }),
        }
    }

    /// Every object under `prefix` (the caller's), with the store's prefix, in S3's order.
    async fn list_objects(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let full = format!("{}{prefix}", self.prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.failure("ListObjectsV2", prefix, &full, &e))?;
            objects.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(str::to_owned),
            );
        }
        Ok(objects)
    }
}

impl S3BlobStore {
    fn presigning(
        key: &str,
        expires: std::time::Duration,
    ) -> Result<aws_sdk_s3::presigning::PresigningConfig, BlobError> {
        aws_sdk_s3::presigning::PresigningConfig::expires_in(expires).map_err(|e| {
            BlobError::Backend {
                key: key.to_owned(),
                source: Box::new(e),
            }
        })
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn upload_url(
        &self,
        key: &str,
        expires: std::time::Duration,
        sha256: Option<[u8; 32]>,
    ) -> Result<Option<UploadUrl>, BlobError> {
        use base64::Engine as _;
        let object = self.object(key)?;
        let checksum = sha256.map(|sha| base64::engine::general_purpose::STANDARD.encode(sha));
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .set_checksum_sha256(checksum.clone())
            .presigned(Self::presigning(key, expires)?)
            .await
            .map_err(|e| BlobError::Backend {
                key: key.to_owned(),
                source: Box::new(e),
            })?;
        // The signed headers the upload must repeat (the checksum among them).
        let headers = request
            .headers()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        Ok(Some(UploadUrl {
            url: request.uri().to_owned(),
            headers,
        }))
    }

    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), BlobError> {
        let object = self.object(key)?;
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| self.failure_detail("PutObject", key, &object, e.to_string()))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .body(body)
            .send()
            .await
            .map_err(|e| self.failure("PutObject", key, &object, &e))?;
        Ok(())
    }

    async fn download_url(
        &self,
        key: &str,
        expires: std::time::Duration,
    ) -> Result<Option<String>, BlobError> {
        let object = self.object(key)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .presigned(Self::presigning(key, expires)?)
            .await
            .map_err(|e| BlobError::Backend {
                key: key.to_owned(),
                source: Box::new(e),
            })?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        let object = self.object(key)?;
        let size = bytes.len();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.failure("PutObject", key, &object, &e))?;
        tracing::debug!(bucket = %self.bucket, object, size, "put object");
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        let object = self.object(key)?;
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e)
                if e.as_service_error()
                    .is_some_and(GetObjectError::is_no_such_key) =>
            {
                tracing::debug!(bucket = %self.bucket, object, "no such object");
                return Ok(None);
            }
            Err(e) => return Err(self.failure("GetObject", key, &object, &e)),
        };
        let bytes = output.body.collect().await.map_err(|e| {
            self.failure_detail(
                "GetObject",
                key,
                &object,
                format!("reading the body: {}", DisplayErrorContext(&e)),
            )
        })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn get_at_most(&self, key: &str, max: usize) -> Result<Option<Bounded>, BlobError> {
        let object = self.object(key)?;
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e)
                if e.as_service_error()
                    .is_some_and(GetObjectError::is_no_such_key) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(self.failure("GetObject", key, &object, &e)),
        };
        // The length comes with the headers: a large body is dropped unread.
        let size = output.content_length().unwrap_or(0);
        if usize::try_from(size).map_or(true, |size| size > max) {
            return Ok(Some(Bounded::TooLarge(u64::try_from(size).unwrap_or(0))));
        }
        let bytes = output.body.collect().await.map_err(|e| {
            self.failure_detail(
                "GetObject",
                key,
                &object,
                format!("reading the body: {}", DisplayErrorContext(&e)),
            )
        })?;
        Ok(Some(Bounded::Data(bytes.into_bytes().to_vec())))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let mut keys: Vec<String> = self
            .list_objects(prefix)
            .await?
            .into_iter()
            .filter_map(|object| object.strip_prefix(&self.prefix).map(str::to_owned))
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        let objects = self.list_objects(prefix).await?;
        for batch in objects.chunks(DELETE_BATCH) {
            let identifiers = batch
                .iter()
                .map(|object| ObjectIdentifier::builder().key(object).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    self.failure_detail("DeleteObjects", prefix, &batch[0], e.to_string())
                })?;
            let delete = Delete::builder()
                .set_objects(Some(identifiers))
                .quiet(true)
                .build()
                .map_err(|e| {
                    self.failure_detail("DeleteObjects", prefix, &batch[0], e.to_string())
                })?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.failure("DeleteObjects", prefix, &batch[0], &e))?;
            if let Some(error) = output.errors().first() {
                return Err(self.failure_detail(
                    "DeleteObjects",
                    prefix,
                    error.key().unwrap_or_default(),
                    format!(
                        "{} of {} objects not deleted; first: {}: {}",
                        output.errors().len(),
                        batch.len(),
                        error.code().unwrap_or("unknown error"),
                        error.message().unwrap_or_default()
                    ),
                ));
            }
        }
        tracing::debug!(
            bucket = %self.bucket,
            prefix = %format!("{}{prefix}", self.prefix),
            deleted = objects.len(),
            "deleted objects"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        Client::from_conf(config)
    }

    #[test]
    fn the_prefix_is_normalized_and_checked() {
        let prefix = |p: &str| S3BlobStore::new(client(), "b", p).map(|s| s.prefix().to_owned());
        assert_eq!(prefix("").unwrap(), "");
        assert_eq!(prefix("/").unwrap(), "");
        assert_eq!(prefix("stratus").unwrap(), "stratus/");
        assert_eq!(prefix("stratus/").unwrap(), "stratus/");
        assert_eq!(prefix("a/b").unwrap(), "a/b/");
        for bad in ["/abs", "a//b", "../up", "a/./b"] {
            assert!(
                matches!(prefix(bad), Err(BlobError::InvalidKey { .. })),
                "{bad}"
            );
        }
    }
}
