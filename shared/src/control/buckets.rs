//! The buckets a job's tasks mount on cloud nodes (see [`crate::buckets`]): checked at
//! submit, created when a `name:` bucket is missing, deleted by the cleanup when the job
//! created it and it is not `persistent`, and the data identity a node asks for.

use std::collections::BTreeMap;

use super::Context;
use super::SubmitError;
use crate::buckets::{
    BOUNDARY_LIMIT, BOUNDARY_RULES_LIMIT, BucketError, Grant, MAX_BUCKETS_PER_TASK, POLICY_LIMIT,
    access_boundary, access_policy,
};
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
/// node: any of a store it has no access to, too many, grants too large for the store's
/// token service, or a bucket that does not exist (and is not one to create) or may not be
/// used.
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
    let distinct: std::collections::BTreeSet<(&str, &str)> = mounted
        .iter()
        .map(|m| (m.store.scheme(), m.bucket.as_str()))
        .collect();
    if distinct.len() > MAX_BUCKETS_PER_TASK {
        return Err(SubmitError::BadRequest(format!(
            "file_mounts: task '{}' mounts {} buckets; at most {MAX_BUCKETS_PER_TASK} per task",
            task.name,
            distinct.len()
        )));
    }
    for m in &mounted {
        if ctx.buckets.of(m.store).is_none() {
            return Err(bad(m, no_access(m.store).into()));
        }
        // The prefix goes into a Credential Access Boundary's expression, quoted.
        if m.store == Store::Gcs && m.prefix.contains(['\'', '\\']) {
            return Err(bad(
                m,
                format!(
                    "gs://{}/{}: a GCS path with ' or \\ cannot be granted to nodes; rename it",
                    m.bucket, m.prefix
                ),
            ));
        }
    }
    check_grant_sizes(task)?;
    for m in &mounted {
        let buckets = ctx.buckets.of(m.store).expect("checked above");
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
        match buckets.owned_by_another(&m.bucket, owner).await {
            Ok(true) => {
                return Err(bad(
                    m,
                    format!(
                        "bucket '{}' was made by another user's job; only their jobs may mount it",
                        m.bucket
                    ),
                ));
            }
            Ok(false) => {}
            Err(e @ BucketError::Denied { .. }) => return Err(bad(m, e.to_string())),
            Err(e) => return Err(unavailable(&e)),
        }
        if m.create {
            continue;
        }
        match buckets.locate(&m.bucket).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(bad(
                    m,
                    format!(
                        "bucket '{}://{}' does not exist (to have Stratus create one, write `name: {}` without `source`)",
                        m.store.scheme(),
                        m.bucket,
                        m.bucket
                    ),
                ));
            }
            Err(e @ BucketError::Denied { .. }) => return Err(bad(m, e.to_string())),
            Err(e) => return Err(unavailable(&e)),
        }
    }
    Ok(())
}

/// Refuses an intermediate bucket (`jobs.bucket`) the caller may not keep uploads in: one of
/// a store this control plane cannot reach, the deployment's own, one another user's job
/// made, or one that does not exist (SkyPilot: "ensure that the bucket already exists"). On
/// the local cloud its folder is made.
pub async fn check_intermediate(
    ctx: &Context,
    bucket: &crate::blob::keys::Intermediate,
    owner: &str,
) -> Result<(), SubmitError> {
    let bad = |why: String| SubmitError::BadRequest(format!("jobs.bucket: {why}"));
    if let Some(root) = &ctx.settings.local_buckets {
        let folder = root.join(bucket.store.scheme()).join(&bucket.bucket);
        return std::fs::create_dir_all(&folder).map_err(|e| {
            SubmitError::Unavailable(format!("cannot make {}: {e}", folder.display()))
        });
    }
    if bucket.store == Store::Gcs {
        return Err(bad(format!(
            "'{}': a deployed stack keeps uploads only in S3 buckets (Cloud Storage signs \
             upload URLs only with a service-account key, which the stack does not hold); use \
             s3://",
            bucket.url()
        )));
    }
    let Some(buckets) = ctx.buckets.of(bucket.store) else {
        return Err(bad(no_access(bucket.store).into()));
    };
    if buckets.is_reserved(&bucket.bucket) {
        return Err(bad(format!(
            "'{}' is this deployment's own bucket; name a bucket of your own",
            bucket.url()
        )));
    }
    match buckets.owned_by_another(&bucket.bucket, owner).await {
        Ok(true) => {
            return Err(bad(format!(
                "'{}' was made by another user's job; only their jobs may use it",
                bucket.url()
            )));
        }
        Ok(false) => {}
        Err(e @ BucketError::Denied { .. }) => return Err(bad(e.to_string())),
        Err(e) => return Err(unavailable(&e)),
    }
    match buckets.locate(&bucket.bucket).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(bad(format!(
            "'{}' does not exist; create it first (it holds each launch's files under job-<id>/)",
            bucket.url()
        ))),
        Err(e @ BucketError::Denied { .. }) => Err(bad(e.to_string())),
        Err(e) => Err(unavailable(&e)),
    }
}

/// What to deploy so a control plane reaches `store`'s buckets.
fn no_access(store: Store) -> &'static str {
    match store {
        Store::S3 => {
            "this control plane has no access to S3 buckets (deploy the stack with its \
             NodeDataRole), so bucket mounts cannot reach cloud nodes"
        }
        Store::Gcs => {
            "this control plane has no access to GCS buckets (deploy the stack with GCP \
             enabled and GcpNodeDataServiceAccount set: infra/README.md), so gs:// mounts \
             cannot reach cloud nodes"
        }
    }
}

/// Refuses grants too large for one issue of credentials: STS's 2,048 characters of session
/// policy (S3), Google STS's 10 boundary rules and 2,048 characters of boundary (GCS).
fn check_grant_sizes(task: &spec::Task) -> Result<(), SubmitError> {
    let policy = access_policy(&grants(task, Store::S3)).to_string().len();
    if policy > POLICY_LIMIT {
        return Err(SubmitError::BadRequest(format!(
            "file_mounts: task '{}' names buckets and prefixes too long to grant at once ({policy} \
             characters of policy, STS allows {POLICY_LIMIT}); mount fewer or shorter paths",
            task.name
        )));
    }
    let gcs = grants(task, Store::Gcs);
    let rules = gcs.len();
    let boundary = access_boundary(&gcs).to_string().len();
    if boundary > BOUNDARY_LIMIT {
        return Err(SubmitError::BadRequest(format!(
            "file_mounts: task '{}' names GCS buckets and prefixes too long to grant at once \
             ({boundary} characters of access boundary, at most {BOUNDARY_LIMIT}); mount fewer \
             or shorter paths",
            task.name
        )));
    }
    if rules > BOUNDARY_RULES_LIMIT {
        return Err(SubmitError::BadRequest(format!(
            "file_mounts: task '{}' has {rules} GCS mounts; at most {BOUNDARY_RULES_LIMIT} \
             (Google's limit on one credential access boundary)",
            task.name
        )));
    }
    Ok(())
}

/// Creates the `name:` buckets of `job`'s tasks that do not exist yet, tagged with the job.
/// The jobs of an array share the buckets its first job creates; one that goes with its
/// creator (`persistent: false`) would vanish under the others: refused, naming the fix.
pub fn refuse_ephemeral_in_array(pipeline: &spec::Pipeline) -> Result<(), SubmitError> {
    for task in &pipeline.tasks {
        if let Some(m) = mounted(task).iter().find(|m| m.create && !m.persistent) {
            return Err(SubmitError::BadRequest(format!(
                "file_mounts.{}: bucket '{}' would be deleted when the array's first job ends, \
                 under the others (--num-jobs): set `persistent: true`, or mount an existing bucket",
                m.destination, m.bucket
            )));
        }
    }
    Ok(())
}

pub async fn create(
    ctx: &Context,
    job: JobId,
    owner: &str,
    pipeline: &spec::Pipeline,
) -> Result<(), SubmitError> {
    if ctx.settings.local_buckets.is_some() {
        return Ok(());
    }
    for task in &pipeline.tasks {
        for m in mounted(task).iter().filter(|m| m.create) {
            let Some(buckets) = ctx.buckets.of(m.store) else {
                continue;
            };
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
    if ctx.settings.local_buckets.is_some() {
        return Ok(());
    }
    for task in &job.pipeline.tasks {
        for m in mounted(task).iter().filter(|m| m.create && !m.persistent) {
            let Some(buckets) = ctx.buckets.of(m.store) else {
                continue;
            };
            buckets.delete_created(&m.bucket, job.id).await?;
        }
    }
    Ok(())
}

/// The data identity of a node running `task` of `job`: credentials for its buckets, one
/// part per object store it mounts (`None` when it mounts none).
pub async fn credentials(
    ctx: &Context,
    job: JobId,
    task: &spec::Task,
) -> Result<Option<crate::agent_protocol::DataCredentials>, BucketError> {
    let mut issued = crate::agent_protocol::DataCredentials::default();
    if let Some(buckets) = &ctx.buckets.s3 {
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
        if !regions.is_empty() {
            issued.s3 = buckets
                .credentials(job, &grants(task, Store::S3), &regions)
                .await?
                .s3;
        }
    }
    let gcs = grants(task, Store::Gcs);
    if let (Some(buckets), false) = (&ctx.buckets.gcs, gcs.is_empty()) {
        issued.gcs = buckets.credentials(job, &gcs, &BTreeMap::new()).await?.gcs;
    }
    Ok((issued.s3.is_some() || issued.gcs.is_some()).then_some(issued))
}

/// What each `store` mount of `task` may do (pure): its part of its bucket, written only by
/// MOUNT and `MOUNT_CACHED`.
pub fn grants(task: &spec::Task, store: Store) -> Vec<Grant> {
    mounted(task)
        .into_iter()
        .filter(|m| m.store == store)
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
