//! [`Buckets`] on S3, with the data identity from STS (feature `aws`).
//!
//! The control plane's own role locates, creates and deletes buckets; nodes get credentials
//! of the node data role (`AssumeRole` with [`access_policy`] as the session policy, one hour,
//! the most role chaining allows), so what a node holds reaches the task's buckets and nothing
//! else, and never carries the control plane's permissions.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, Tag, Tagging};

use super::{BucketError, Buckets, CREATED_BY_TAG, Grant, Located, OWNER_TAG, access_policy};
use crate::agent_protocol::{DataCredentials, S3Credentials};
use crate::job::JobId;

/// How long one issue of node credentials lasts (STS's limit for a role assumed by a role).
const SESSION_SECS: i32 = 3600;

/// Users' S3 buckets, and the role nodes reach them with.
#[derive(Debug, Clone)]
pub struct S3Buckets {
    /// The functions' configuration, for clients of buckets in other regions.
    config: SdkConfig,
    s3: Client,
    sts: aws_sdk_sts::Client,
    /// The node data role.
    role_arn: String,
    region: String,
    /// An emulator's S3 endpoint, handed to nodes.
    endpoint: Option<String>,
    /// The deployment's own bucket, which no task may name.
    reserved: String,
}

impl S3Buckets {
    /// `reserved`: the deployment's own bucket (agent binary, uploads, logs), never a task's.
    pub fn from_sdk_config(config: &SdkConfig, role_arn: &str, reserved: &str) -> Self {
        let mut builder = aws_sdk_s3::config::Builder::from(config);
        if config.endpoint_url().is_some() {
            builder = builder.force_path_style(true);
        }
        S3Buckets {
            config: config.clone(),
            s3: Client::from_conf(builder.build()),
            sts: aws_sdk_sts::Client::new(config),
            role_arn: role_arn.to_owned(),
            region: config
                .region()
                .map_or_else(|| "us-east-1".to_owned(), ToString::to_string),
            endpoint: std::env::var("AWS_ENDPOINT_URL_S3")
                .ok()
                .or_else(|| config.endpoint_url().map(str::to_owned)),
            reserved: reserved.to_owned(),
        }
    }

    fn backend(
        operation: &'static str,
        bucket: &str,
        e: &impl ProvideErrorMetadata,
    ) -> BucketError {
        BucketError::Backend {
            operation,
            bucket: bucket.to_owned(),
            detail: format!(
                "{}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or("no message")
            ),
        }
    }

    async fn tag(&self, bucket: &str, key: &str) -> Result<Option<String>, BucketError> {
        match self.s3.get_bucket_tagging().bucket(bucket).send().await {
            Ok(out) => Ok(out
                .tag_set()
                .iter()
                .find(|t| t.key() == key)
                .map(|t| t.value().to_owned())),
            Err(e) => match e.code() {
                Some("NoSuchTagSet" | "NoSuchBucket") => Ok(None),
                _ => Err(Self::backend("GetBucketTagging", bucket, &e)),
            },
        }
    }

    async fn empty(&self, bucket: &str) -> Result<(), BucketError> {
        loop {
            let listed = match self.s3.list_objects_v2().bucket(bucket).send().await {
                Ok(listed) => listed,
                Err(e) if e.code() == Some("NoSuchBucket") => return Ok(()),
                Err(e) => return Err(Self::backend("ListObjectsV2", bucket, &e)),
            };
            let ids: Vec<ObjectIdentifier> = listed
                .contents()
                .iter()
                .filter_map(|o| ObjectIdentifier::builder().key(o.key()?).build().ok())
                .collect();
            if ids.is_empty() {
                return Ok(());
            }
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| BucketError::Backend {
                    operation: "DeleteObjects",
                    bucket: bucket.to_owned(),
                    detail: e.to_string(),
                })?;
            self.s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| Self::backend("DeleteObjects", bucket, &e))?;
        }
    }
}

#[async_trait]
impl Buckets for S3Buckets {
    fn is_reserved(&self, bucket: &str) -> bool {
        bucket == self.reserved
    }

    async fn owned_by_another(&self, bucket: &str, owner: &str) -> Result<bool, BucketError> {
        Ok(self
            .tag(bucket, OWNER_TAG)
            .await?
            .is_some_and(|tagged| tagged != owner))
    }

    async fn locate(&self, bucket: &str) -> Result<Option<Located>, BucketError> {
        match self.s3.head_bucket().bucket(bucket).send().await {
            Ok(out) => Ok(Some(Located {
                region: out
                    .bucket_region()
                    .map_or_else(|| self.region.clone(), str::to_owned),
            })),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                // A bucket in another region answers 301 with its region (the SDK does not
                // follow S3's redirect).
                let elsewhere = e
                    .raw_response()
                    .and_then(|r| r.headers().get("x-amz-bucket-region"))
                    .map(str::to_owned);
                match status {
                    Some(301) if elsewhere.is_some() => Ok(Some(Located {
                        region: elsewhere.unwrap_or_default(),
                    })),
                    Some(404) => Ok(None),
                    Some(403) => Err(BucketError::Denied {
                        bucket: bucket.to_owned(),
                    }),
                    _ => Err(Self::backend("HeadBucket", bucket, &e)),
                }
            }
        }
    }

    async fn create(&self, bucket: &str, job: JobId, owner: &str) -> Result<bool, BucketError> {
        // An existing bucket is never created again, so never tagged as this job's: in
        // us-east-1 CreateBucket answers 200 for a bucket the account owns already.
        if self.locate(bucket).await?.is_some() {
            return Ok(false);
        }
        let request = self
            .s3
            .create_bucket()
            .bucket(bucket)
            .set_create_bucket_configuration(crate::blob::s3_location(Some(&self.region)));
        let created = match request.send().await {
            Ok(_) => true,
            Err(e) => match e.code() {
                Some("BucketAlreadyOwnedByYou") => false,
                Some("BucketAlreadyExists") => {
                    return Err(BucketError::Taken {
                        bucket: bucket.to_owned(),
                    });
                }
                _ => return Err(Self::backend("CreateBucket", bucket, &e)),
            },
        };
        if created {
            let failed = |e: &dyn std::fmt::Display| BucketError::Backend {
                operation: "PutBucketTagging",
                bucket: bucket.to_owned(),
                detail: e.to_string(),
            };
            let tags = [
                (CREATED_BY_TAG, job.to_string()),
                (OWNER_TAG, owner.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed(&e))?;
            let tagging = Tagging::builder()
                .set_tag_set(Some(tags))
                .build()
                .map_err(|e| failed(&e))?;
            self.s3
                .put_bucket_tagging()
                .bucket(bucket)
                .tagging(tagging)
                .send()
                .await
                .map_err(|e| Self::backend("PutBucketTagging", bucket, &e))?;
            tracing::info!(bucket, job_id = job, "created bucket");
        }
        Ok(created)
    }

    async fn delete_created(&self, bucket: &str, job: JobId) -> Result<bool, BucketError> {
        if self.tag(bucket, CREATED_BY_TAG).await? != Some(job.to_string()) {
            return Ok(false);
        }
        self.empty(bucket).await?;
        match self.s3.delete_bucket().bucket(bucket).send().await {
            Ok(_) => {
                tracing::info!(bucket, job_id = job, "deleted bucket");
                Ok(true)
            }
            Err(e) if e.code() == Some("NoSuchBucket") => Ok(false),
            Err(e) => Err(Self::backend("DeleteBucket", bucket, &e)),
        }
    }

    async fn objects(
        &self,
        bucket: &str,
    ) -> Result<Option<std::sync::Arc<dyn crate::blob::BlobStore>>, BucketError> {
        let Some(located) = self.locate(bucket).await? else {
            return Ok(None);
        };
        // Signed for the bucket's own region, or S3 answers the URL with a redirect.
        let mut builder = aws_sdk_s3::config::Builder::from(&self.config)
            .region(aws_sdk_s3::config::Region::new(located.region));
        if self.config.endpoint_url().is_some() {
            builder = builder.force_path_style(true);
        }
        let store = crate::blob::S3BlobStore::new(Client::from_conf(builder.build()), bucket, "")
            .map_err(|e| BucketError::Unavailable(e.to_string()))?;
        Ok(Some(std::sync::Arc::new(store)))
    }

    async fn credentials(
        &self,
        job: JobId,
        grants: &[Grant],
        regions: &BTreeMap<String, String>,
    ) -> Result<DataCredentials, BucketError> {
        let role = &self.role_arn;
        let policy = access_policy(grants).to_string();
        let out = self
            .sts
            .assume_role()
            .role_arn(role)
            .role_session_name(format!("stratus-job-{job}"))
            .policy(policy)
            .duration_seconds(SESSION_SECS)
            .send()
            .await
            .map_err(|e| Self::backend("sts:AssumeRole", "", &e))?;
        let credentials = out.credentials().ok_or_else(|| {
            BucketError::Unavailable("sts:AssumeRole answered without credentials".into())
        })?;
        let expires_at_ms =
            u64::try_from(credentials.expiration().to_millis().unwrap_or(0)).unwrap_or(0);
        Ok(DataCredentials {
            s3: Some(S3Credentials {
                access_key_id: credentials.access_key_id().to_owned(),
                secret_access_key: credentials.secret_access_key().to_owned(),
                session_token: credentials.session_token().to_owned(),
                expires_at_ms,
                regions: regions.clone(),
                endpoint: self.endpoint.clone(),
            }),
            gcs: None,
        })
    }
}
