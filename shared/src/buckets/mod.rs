//! Users' buckets: the ones a task's `file_mounts` name (`s3://bucket/prefix`, or
//! `name:` with `mode:`), as the deployed control plane handles them on cloud nodes.
//!
//! - At submit, every bucket a task names must exist (a clear 400 otherwise), except a
//!   `name:` bucket without a `source`, which is created when missing (SkyPilot's rule),
//!   tagged with the job that created it.
//! - When the job ends, its cleanup deletes the buckets it created that are not
//!   `persistent` (with their objects); a bucket the job did not create is never deleted.
//! - Nodes reach the buckets with the job's **data identity**: credentials of a role of their
//!   own (the stack's `NodeDataRole`, never the control plane's), narrowed by a session policy
//!   to exactly the task's buckets ([`access_policy`]), for an hour at a time.
//!
//! Only S3 is wired on cloud nodes; the local cloud keeps folders for buckets
//! (`Settings::local_buckets`).
//!
//! # Layout
//! - `s3` (feature `aws`): [`S3Buckets`], the S3 and STS adapter.

#[cfg(feature = "aws")]
mod s3;

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::agent_protocol::DataCredentials;
use crate::job::JobId;
#[cfg(feature = "aws")]
pub use s3::S3Buckets;

/// Most buckets one task may mount on cloud nodes: the session policy naming them must stay
/// within STS's 2,048 characters.
pub const MAX_BUCKETS_PER_TASK: usize = 8;

/// The tag a bucket Stratus created carries: the job that created it.
pub const CREATED_BY_TAG: &str = "stratus-created-by-job";

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The name belongs to someone else (bucket names are global).
    #[error("bucket '{bucket}' belongs to another account; choose another name")]
    Taken { bucket: String },
    /// Our credentials may not use it.
    #[error("bucket '{bucket}' exists but this deployment may not use it (access denied)")]
    Denied { bucket: String },
    /// Buckets cannot be used (no data role configured, or another set-up problem).
    #[error("bucket mounts are not available: {0}")]
    Unavailable(String),
    #[error("{operation} on bucket '{bucket}' failed: {detail}")]
    Backend {
        operation: &'static str,
        bucket: String,
        detail: String,
    },
}

/// Where a bucket is, when it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub region: String,
}

/// The port: users' buckets of one object store.
#[async_trait]
pub trait Buckets: Send + Sync {
    /// The bucket's region, or `None` when there is no such bucket.
    async fn locate(&self, bucket: &str) -> Result<Option<Located>, BucketError>;
    /// Creates `bucket` for `job`, tagged with it. `Ok(false)` when it already existed and is
    /// ours to use (created earlier, by this job or another of the same deployment).
    async fn create(&self, bucket: &str, job: JobId) -> Result<bool, BucketError>;
    /// Deletes `bucket` and its objects if `job` created it; `Ok(false)` when it is not
    /// `job`'s (never deleted) or already gone.
    async fn delete_created(&self, bucket: &str, job: JobId) -> Result<bool, BucketError>;
    /// The job's data identity for `buckets` (name → region).
    async fn credentials(
        &self,
        job: JobId,
        buckets: &BTreeMap<String, String>,
    ) -> Result<DataCredentials, BucketError>;
}

/// The session policy that narrows the node data role to `buckets`: list and locate each,
/// and read, write and delete its objects. Nothing else (no bucket administration, no other
/// bucket).
pub fn access_policy<'a>(buckets: impl IntoIterator<Item = &'a str>) -> serde_json::Value {
    let names: Vec<&str> = buckets.into_iter().collect();
    let arns: Vec<String> = names.iter().map(|b| format!("arn:aws:s3:::{b}")).collect();
    let objects: Vec<String> = names
        .iter()
        .map(|b| format!("arn:aws:s3:::{b}/*"))
        .collect();
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": arns,
            },
            {
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                "Resource": objects,
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_policy_names_only_the_jobs_buckets() {
        let policy = access_policy(["ckpt", "data"]);
        assert_eq!(
            policy["Statement"][0]["Resource"],
            serde_json::json!(["arn:aws:s3:::ckpt", "arn:aws:s3:::data"])
        );
        assert_eq!(
            policy["Statement"][1]["Resource"],
            serde_json::json!(["arn:aws:s3:::ckpt/*", "arn:aws:s3:::data/*"])
        );
        let text = policy.to_string();
        for forbidden in ["\"*\"", "s3:*", "CreateBucket", "DeleteBucket", "PutBucket"] {
            assert!(!text.contains(forbidden), "{forbidden} in {text}");
        }
        // STS refuses session policies over 2,048 characters: the most buckets a task may
        // name, with the longest names S3 allows, fit.
        let many: Vec<String> = (0..MAX_BUCKETS_PER_TASK)
            .map(|i| format!("{i:0>63}"))
            .collect();
        let size = access_policy(many.iter().map(String::as_str))
            .to_string()
            .len();
        assert!(size <= 2048, "{size}");
    }
}
