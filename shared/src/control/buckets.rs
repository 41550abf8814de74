//! The buckets a job's tasks mount on cloud nodes (see [`crate::buckets`]): checked at
//! submit, created when a `name:` bucket is missing, deleted by the cleanup when the job
//! created it and it is not `persistent`, and the data identity a node asks for.

use std::collections::BTreeMap;

use super::Context;
use super::submit::SubmitError;
use crate::buckets::{BucketError, Grant, MAX_BUCKETS_PER_TASK, POLICY_LIMIT, access_policy};
use crate::job::{JobId, JobRecord};
use crate::spec::{self, MountSource, StorageSource, Store};

/// One bucket a task mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    /// The mount's destination, for messages (`file_mounts.<destination>`).
    pub destination: String,
    pub store: Store,
    pub bucket: String,
    pub prefix: String,
    pub mode: spec::StorageMode,
    /// A `name:` bucket without a source: created when missing (SkyPilot's rule).
    pub create: bool,
    pub persistent: bool,
}

/// Every bucket `task` mounts, in order (pure).
pub fn mounted(task: &spec::Task) -> Vec<Mounted> {
    task.file_mounts.iter().filter_map(mounted_one).collect()
}

/// The bucket `mount` mounts, if it mounts one (pure).
pub fn mounted_one(mount: &spec::FileMount) -> Option<Mounted> {
    let destination = mount.destination.clone();
    match &mount.source {
        MountSource::Local(_) => None,
        MountSource::Bucket(url) => Some(Mounted {
            destination,
            store: url.store,
            bucket: url.bucket.clone(),
            prefix: url.key.clone(),
            mode: spec::StorageMode::Copy,
            create: false,
            persistent: true,
        }),
        MountSource::Storage(storage) => {
            let source = storage.sources.iter().find_map(|s| match s {
                StorageSource::Bucket(url) => Some(url),
                StorageSource::Local(_) => None,
            });
            let (store, bucket, prefix, create) = match (source, &storage.name) {
                (Some(url), _) => (url.store, url.bucket.clone(), url.key.clone(), false),
                (None, Some(name)) => (
                    storage.store.unwrap_or(Store::S3),
                    name.clone(),
                    String::new(),
                    true,
                ),
                (None, None) => return None,
            };
            Some(Mounted {
                destination,
                store,
                bucket,
                prefix,
                mode: storage.mode,
                create,
                persistent: storage.persistent,
            })
        }
    }
}

/// Refuses, before anything is stored, bucket mounts this control plane cannot give a cloud
/// node: GCS ones, any when it has no bucket access, too many, or a bucket that does not
/// exist (and is not one to create) or may not be used.
pub async fn check(ctx: &Context, task: &spec::Task, owner: &str) -> Result<(), SubmitError> {
    if ctx.settings.local_buckets.is_some() {
        return Ok(());
    }
    let mounted = mounted(task);
    if mounted.is_empty() {
        return Ok(());
    }
    let bad = |m: &Mounted, why: String| {
        SubmitError::BadRequest(format!("file_mounts.{}: {why}", m.destination))
    };
    if let Some(gcs) = mounted.iter().find(|m| m.store == Store::Gcs) {
        return Err(bad(
            gcs,
            format!(
                "gs://{} : GCS buckets are not mounted on cloud nodes yet; use an s3:// bucket \
                 (readable from GCE nodes too) or copy the data in `setup`",
                gcs.bucket
            ),
        ));
    }
    let distinct: std::collections::BTreeSet<&str> =
        mounted.iter().map(|m| m.bucket.as_str()).collect();
    if distinct.len() > MAX_BUCKETS_PER_TASK {
        return Err(SubmitError::BadRequest(format!(
            "file_mounts: task '{}' mounts {} buckets; at most {MAX_BUCKETS_PER_TASK} per task",
            task.name,
            distinct.len()
        )));
    }
    let Some(buckets) = &ctx.buckets else {
        return Err(bad(
            &mounted[0],
            "this control plane has no access to buckets (deploy the stack with its \
             NodeDataRole), so bucket mounts cannot reach cloud nodes"
                .into(),
        ));
    };
    let policy = access_policy(&grants(task)).to_string().len();
    if policy > POLICY_LIMIT {
        return Err(SubmitError::BadRequest(format!(
            "file_mounts: task '{}' names buckets and prefixes too long to grant at once ({policy} \
             characters of policy, STS allows {POLICY_LIMIT}); mount fewer or shorter paths",
            task.name
        )));
    }
    for m in &mounted {
        if buckets.is_reserved(&m.bucket) {
            return Err(bad(
                m,
                format!(
                    "bucket '{}' is this deployment's own; mount a bucket of your own",
                    m.bucket
                ),
            ));
        }
        // A bucket a Stratus job made is its owner's: other users' jobs may not mount it.
        match buckets.stratus_owner(&m.bucket).await {
            Ok(Some(other)) if other != owner => {
                return Err(bad(
                    m,
                    format!(
                        "bucket '{}' was made by another user's job; only their jobs may mount it",
                        m.bucket
                    ),
                ));
            }
            Ok(_) => {}
            Err(e @ BucketError::Denied { .. }) => return Err(bad(m, e.to_string())),
            Err(e) => return Err(unavailable(&e)),
        }
    }
    for m in mounted.iter().filter(|m| !m.create) {
        match buckets.locate(&m.bucket).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(bad(
                    m,
                    format!(
                        "bucket 's3://{}' does not exist (to have Stratus create one, write `name: {}` without `source`)",
                        m.bucket, m.bucket
                    ),
                ));
            }
            Err(e @ BucketError::Denied { .. }) => return Err(bad(m, e.to_string())),
            Err(e) => return Err(unavailable(&e)),
        }
    }
    Ok(())
}

/// Creates the `name:` buckets of `job`'s tasks that do not exist yet, tagged with the job.
pub async fn create(
    ctx: &Context,
    job: JobId,
    owner: &str,
    pipeline: &spec::Pipeline,
) -> Result<(), SubmitError> {
    let (None, Some(buckets)) = (&ctx.settings.local_buckets, &ctx.buckets) else {
        return Ok(());
    };
    for task in &pipeline.tasks {
        for m in mounted(task).iter().filter(|m| m.create) {
            match buckets.create(&m.bucket, job, owner).await {
                Ok(_) => {}
                Err(e @ BucketError::Taken { .. }) => {
                    return Err(SubmitError::BadRequest(format!(
                        "file_mounts.{}: {e}",
                        m.destination
                    )));
                }
                Err(e) => return Err(unavailable(&e)),
            }
        }
    }
    Ok(())
}

/// Deletes the buckets `job` created that are not persistent (the cleanup's part).
pub async fn delete_ephemeral(ctx: &Context, job: &JobRecord) -> Result<(), BucketError> {
    let (None, Some(buckets)) = (&ctx.settings.local_buckets, &ctx.buckets) else {
        return Ok(());
    };
    for task in &job.pipeline.tasks {
        for m in mounted(task).iter().filter(|m| m.create && !m.persistent) {
            buckets.delete_created(&m.bucket, job.id).await?;
        }
    }
    Ok(())
}

/// The data identity of a node running `task` of `job`: credentials for its S3 buckets.
pub async fn credentials(
    ctx: &Context,
    job: JobId,
    task: &spec::Task,
) -> Result<Option<crate::agent_protocol::DataCredentials>, BucketError> {
    let Some(buckets) = &ctx.buckets else {
        return Ok(None);
    };
    let mut regions = BTreeMap::new();
    for m in mounted(task).iter().filter(|m| m.store == Store::S3) {
        if regions.contains_key(&m.bucket) {
            continue;
        }
        let region = buckets
            .locate(&m.bucket)
            .await?
            .ok_or_else(|| BucketError::Backend {
                operation: "HeadBucket",
                bucket: m.bucket.clone(),
                detail: "the bucket is gone".into(),
            })?
            .region;
        regions.insert(m.bucket.clone(), region);
    }
    if regions.is_empty() {
        return Ok(None);
    }
    buckets
        .credentials(job, &grants(task), &regions)
        .await
        .map(Some)
}

/// What each S3 mount of `task` may do (pure): its part of its bucket, written only by MOUNT
/// and `MOUNT_CACHED`.
pub fn grants(task: &spec::Task) -> Vec<Grant> {
    mounted(task)
        .into_iter()
        .filter(|m| m.store == Store::S3)
        .map(|m| Grant {
            bucket: m.bucket,
            prefix: m.prefix,
            write: m.mode != spec::StorageMode::Copy,
        })
        .collect()
}

fn unavailable(e: &BucketError) -> SubmitError {
    SubmitError::Unavailable(format!("buckets could not be checked, try again: {e}"))
}
