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
//! S3 and Cloud Storage are both wired, each with its own adapter ([`BucketStores`]); a node
//! on either cloud reaches buckets of either store (the credentials come from the control
//! plane, not from the machine). The local cloud keeps folders for buckets
//! (`Settings::local_buckets`).
//!
//! # Layout
//! - `s3` (feature `aws`): [`S3Buckets`], the S3 and STS adapter.
//! - `gcs` (feature `gcp`): [`GcsBuckets`], the Cloud Storage, IAM Credentials and STS adapter.

#[cfg(feature = "gcp")]
mod gcs;
#[cfg(feature = "aws")]
mod s3;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::agent_protocol::DataCredentials;
use crate::job::JobId;
use crate::spec::Store;
#[cfg(feature = "gcp")]
pub use gcs::{GcsBuckets, GcsSettings, owner_label};
#[cfg(feature = "aws")]
pub use s3::S3Buckets;

/// Most buckets one task may mount on cloud nodes (the session policy naming them must also
/// stay within STS's 2,048 characters: [`POLICY_LIMIT`]).
pub const MAX_BUCKETS_PER_TASK: usize = 8;

/// STS's limit on a session policy's text.
pub const POLICY_LIMIT: usize = 2048;

/// Google STS's limit on the rules of one Credential Access Boundary (one per GCS mount).
pub const BOUNDARY_RULES_LIMIT: usize = 10;

/// The most text of one Credential Access Boundary Stratus sends (Google caps a condition's
/// expression at 2,048 characters; the whole boundary is kept within that too).
pub const BOUNDARY_LIMIT: usize = 2048;

/// The tag a bucket Stratus created carries: the job that created it.
pub const CREATED_BY_TAG: &str = "stratus-created-by-job";
/// The tag a bucket Stratus created carries: whose job created it (only that user's jobs may
/// mount it).
pub const OWNER_TAG: &str = "stratus-owner";

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

/// What one mount may do in its bucket: the part under `prefix` (all of it when empty), read
/// only unless `write`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub bucket: String,
    pub prefix: String,
    pub write: bool,
}

/// The port: users' buckets of one object store.
#[async_trait]
pub trait Buckets: Send + Sync {
    /// Buckets no task may name (the deployment's own).
    fn is_reserved(&self, bucket: &str) -> bool;
    /// The bucket's region, or `None` when there is no such bucket.
    async fn locate(&self, bucket: &str) -> Result<Option<Located>, BucketError>;
    /// Whether a Stratus job of a user other than `owner` made `bucket` (then only that
    /// user's jobs may mount it).
    async fn owned_by_another(&self, bucket: &str, owner: &str) -> Result<bool, BucketError>;
    /// Creates `bucket` for `owner`'s `job`, tagged with both. `Ok(false)` when it existed
    /// already (then it is never tagged, so never deleted as the job's).
    async fn create(&self, bucket: &str, job: JobId, owner: &str) -> Result<bool, BucketError>;
    /// Deletes `bucket` and its objects if `job` created it; `Ok(false)` when it is not
    /// `job`'s (never deleted) or already gone.
    async fn delete_created(&self, bucket: &str, job: JobId) -> Result<bool, BucketError>;
    /// The objects of `bucket` as a blob store (for uploads kept in a user's intermediate
    /// bucket, `jobs.bucket`); `None` when there is no such bucket or this store cannot
    /// serve that (no signed URLs).
    async fn objects(
        &self,
        bucket: &str,
    ) -> Result<Option<Arc<dyn crate::blob::BlobStore>>, BucketError>;
    /// The job's data identity for `grants`; `regions`: each bucket's region.
    async fn credentials(
        &self,
        job: JobId,
        grants: &[Grant],
        regions: &BTreeMap<String, String>,
    ) -> Result<DataCredentials, BucketError>;
}

/// The adapters of the object stores this control plane reaches (none on the local cloud).
#[derive(Clone, Default)]
pub struct BucketStores {
    pub s3: Option<Arc<dyn Buckets>>,
    pub gcs: Option<Arc<dyn Buckets>>,
}

impl BucketStores {
    /// The adapter of `store`, when this control plane has one.
    pub fn of(&self, store: Store) -> Option<&Arc<dyn Buckets>> {
        match store {
            Store::S3 => self.s3.as_ref(),
            Store::Gcs => self.gcs.as_ref(),
        }
    }
}

impl std::fmt::Debug for BucketStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketStores")
            .field("s3", &self.s3.is_some())
            .field("gcs", &self.gcs.is_some())
            .finish()
    }
}

/// The Credential Access Boundary that narrows the node data service account's token to
/// `grants` (Cloud Storage's counterpart of [`access_policy`]): per grant, its bucket with
/// `roles/storage.objectViewer` (COPY) or `roles/storage.objectUser` (read, write, delete
/// objects), and under a prefix only the object the prefix names, the objects under
/// `prefix/`, and listings under `prefix/`. No bucket administration.
pub fn access_boundary(grants: &[Grant]) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = grants
        .iter()
        .map(|grant| {
            let permission = if grant.write {
                "inRole:roles/storage.objectUser"
            } else {
                "inRole:roles/storage.objectViewer"
            };
            let mut rule = serde_json::json!({
                "availableResource": format!("//storage.googleapis.com/projects/_/buckets/{}", grant.bucket),
                "availablePermissions": [permission],
            });
            let prefix = grant.prefix.trim_matches('/');
            if !prefix.is_empty() {
                let object = format!("projects/_/buckets/{}/objects/{prefix}", grant.bucket);
                rule["availabilityCondition"] = serde_json::json!({
                    "expression": format!(
                        "resource.name == '{object}' || resource.name.startsWith('{object}/') || \
                         api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith('{prefix}/')"
                    ),
                });
            }
            rule
        })
        .collect();
    serde_json::json!({ "accessBoundaryRules": rules })
}

/// The session policy that narrows the node data role to `grants`: for each, listing and
/// locating its bucket (listing only under its prefix), reading its objects under the prefix,
/// and writing and deleting them there only when it may write. Nothing else (no bucket
/// administration, no other bucket, no other part of the bucket).
pub fn access_policy(grants: &[Grant]) -> serde_json::Value {
    let mut statements = Vec::new();
    for grant in grants {
        let bucket = format!("arn:aws:s3:::{}", grant.bucket);
        let prefix = grant.prefix.trim_matches('/');
        let (objects, list) = if prefix.is_empty() {
            (vec![format!("{bucket}/*")], None)
        } else {
            (
                // The prefix itself (a single object mounted) and what is under it.
                vec![format!("{bucket}/{prefix}"), format!("{bucket}/{prefix}/*")],
                Some(
                    serde_json::json!({ "StringLike": { "s3:prefix": [prefix, format!("{prefix}/*")] } }),
                ),
            )
        };
        let mut listing = serde_json::json!({
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket,
        });
        if let Some(condition) = list {
            listing["Condition"] = condition;
        }
        statements.push(listing);
        let mut actions = vec!["s3:GetObject"];
        if grant.write {
            actions.extend(["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]);
        }
        statements.push(serde_json::json!({
            "Effect": "Allow",
            "Action": actions,
            "Resource": objects,
        }));
    }
    serde_json::json!({ "Version": "2012-10-17", "Statement": statements })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(bucket: &str, prefix: &str, write: bool) -> Grant {
        Grant {
            bucket: bucket.into(),
            prefix: prefix.into(),
            write,
        }
    }

    #[test]
    fn the_session_policy_names_only_the_mounts_parts_of_their_buckets() {
        let policy = access_policy(&[grant("ckpt", "", true), grant("data", "set/", false)]);
        let statements = policy["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 4);
        // A MOUNT of a whole bucket: list it, read and write its objects.
        assert_eq!(statements[0]["Resource"], "arn:aws:s3:::ckpt");
        assert!(statements[0].get("Condition").is_none());
        assert_eq!(
            statements[1]["Action"],
            serde_json::json!([
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload"
            ])
        );
        assert_eq!(
            statements[1]["Resource"],
            serde_json::json!(["arn:aws:s3:::ckpt/*"])
        );
        // A COPY of a prefix: list only under it, read only.
        assert_eq!(
            statements[2]["Condition"]["StringLike"]["s3:prefix"],
            serde_json::json!(["set", "set/*"])
        );
        assert_eq!(statements[3]["Action"], serde_json::json!(["s3:GetObject"]));
        assert_eq!(
            statements[3]["Resource"],
            serde_json::json!(["arn:aws:s3:::data/set", "arn:aws:s3:::data/set/*"])
        );
        let text = policy.to_string();
        for forbidden in ["\"*\"", "s3:*", "CreateBucket", "DeleteBucket", "PutBucket"] {
            assert!(!text.contains(forbidden), "{forbidden} in {text}");
        }
    }

    #[test]
    fn the_access_boundary_names_only_the_mounts_parts_of_their_buckets() {
        let boundary = access_boundary(&[grant("ckpt", "", true), grant("data", "set/", false)]);
        let rules = boundary["accessBoundaryRules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        // A MOUNT of a whole bucket: its objects, read and written.
        assert_eq!(
            rules[0],
            serde_json::json!({
                "availableResource": "//storage.googleapis.com/projects/_/buckets/ckpt",
                "availablePermissions": ["inRole:roles/storage.objectUser"],
            })
        );
        // A COPY of a prefix: the object it names, what is under it, listings under it; read
        // only.
        assert_eq!(
            rules[1]["availablePermissions"],
            serde_json::json!(["inRole:roles/storage.objectViewer"])
        );
        assert_eq!(
            rules[1]["availabilityCondition"]["expression"],
            "resource.name == 'projects/_/buckets/data/objects/set' || \
             resource.name.startsWith('projects/_/buckets/data/objects/set/') || \
             api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith('set/')"
        );
        let text = boundary.to_string();
        for forbidden in ["storage.admin", "objectAdmin", "legacyBucket"] {
            assert!(!text.contains(forbidden), "{forbidden} in {text}");
        }
    }

    #[test]
    fn the_most_buckets_a_task_may_name_fit_when_their_names_are_reasonable() {
        let many: Vec<Grant> = (0..MAX_BUCKETS_PER_TASK)
            .map(|i| grant(&format!("team-bucket-{i:0>8}"), "", true))
            .collect();
        let size = access_policy(&many).to_string().len();
        assert!(size <= POLICY_LIMIT, "{size}");
    }
}
