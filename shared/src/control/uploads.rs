//! A job's uploads: the archives of the local paths its tasks sync to their nodes (workdir,
//! file mounts), sent by the CLI before it submits.
//!
//! Where they are stored (the deployment's store, or with an **intermediate bucket**,
//! `jobs.bucket` in the user's config as in SkyPilot, that bucket) is written down with every
//! other key in [`crate::blob::keys`].
//!
//! # Guarantees
//! - **A user writes only under their own space** (`owner_space`: a hash of the owner's
//!   name): the upload routes build the key from the authenticated caller, so no one can
//!   replace another user's archive. Presigned upload URLs also sign the archive's SHA-256,
//!   which S3 checks against the body. In an intermediate bucket others with access to that
//!   bucket could still replace an object: nodes check each archive against the SHA-256 in
//!   its key before unpacking it (`agent::prepare`).
//! - **A job names only its owner's archives, of one session, which no other job has**:
//!   `check_request` refuses any other key at submit (a `jobs/...` key, another user's, a
//!   path), and the session is claimed for the job in the state table. So the job's cleanup,
//!   which deletes its record's keys, can delete nothing that is not the job's own, and a
//!   node's token reaches only its own job's archives.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Context, HandlerError};
use crate::blob::keys::{Intermediate, ObjectKey, owner_space, parse_object_key, record_key};
use crate::blob::{BlobStore, LocalBlobStore};
use crate::job::JobId;

/// The store an archive key is in, and the object's key there: the deployment's store, or
/// the user's intermediate bucket (on the local cloud, the folder standing in for it).
/// `None` when that bucket cannot hold uploads here (gone, or of a store this control plane
/// does not serve them from).
pub async fn store_of(
    ctx: &Context,
    key: &ObjectKey,
) -> Result<Option<(Arc<dyn BlobStore>, String)>, HandlerError> {
    let Some(bucket) = &key.intermediate else {
        return Ok(Some((ctx.blobs.clone(), key.object())));
    };
    if let Some(root) = &ctx.settings.local_buckets {
        let folder = root.join(bucket.store.scheme()).join(&bucket.bucket);
        return Ok(Some((Arc::new(LocalBlobStore::new(folder)), key.object())));
    }
    let Some(buckets) = ctx.buckets.of(bucket.store) else {
        return Ok(None);
    };
    let store = buckets.objects(&bucket.bucket).await.map_err(|e| {
        HandlerError::Blob(crate::blob::BlobError::Backend {
            key: key.object(),
            source: format!("the intermediate bucket {}: {e}", bucket.url()).into(),
        })
    })?;
    Ok(store.map(|store| (store, key.object())))
}

/// Checks a submit's uploads (local path → key): every key an archive of `owner`'s, all of
/// one session in one store. Returns that session and its intermediate bucket, if any
/// (`None` when there are no uploads).
pub fn check_request(
    owner: &str,
    uploads: &BTreeMap<String, String>,
) -> Result<Option<(String, Option<Intermediate>)>, String> {
    let space = owner_space(owner);
    let mut session: Option<(String, Option<Intermediate>)> = None;
    for (path, key) in uploads {
        let parsed = parse_object_key(key).filter(|k| k.space == space).ok_or_else(|| {
            format!(
                "uploads.{path}: '{}' is not an archive you uploaded (the CLI uploads local paths and names them)",
                key.chars().take(200).collect::<String>()
            )
        })?;
        match &session {
            Some((s, bucket)) if *s != parsed.session || *bucket != parsed.intermediate => {
                return Err(format!(
                    "uploads.{path}: every archive of a job comes from one upload session"
                ));
            }
            _ => session = Some((parsed.session, parsed.intermediate)),
        }
    }
    Ok(session)
}

/// Uploaded local paths (as written in the task) and their keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploads(pub BTreeMap<String, String>);

/// Writes the job's record (before the job exists, so a node never asks for one missing).
pub async fn write(
    blobs: &dyn BlobStore,
    job_id: JobId,
    uploads: &Uploads,
) -> Result<(), HandlerError> {
    let bytes = serde_json::to_vec(uploads).expect("uploads serialize");
    blobs.put(&record_key(job_id), bytes).await?;
    Ok(())
}

/// The job's record; none (an empty one) for a job without uploads. A record that cannot be
/// read is an error, never taken for an empty one.
pub async fn read(blobs: &dyn BlobStore, job_id: JobId) -> Result<Uploads, HandlerError> {
    match blobs.get(&record_key(job_id)).await? {
        None => Ok(Uploads::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| HandlerError::Corrupt {
            job_id,
            what: format!("{}: {e}", record_key(job_id)),
        }),
    }
}

/// Deletes the job's archives (each checked again to be one of `owner`'s), wherever they
/// are, returning how many keys were deleted. In an intermediate bucket only the archives go
/// (the `job-<session>/` folder with them); the bucket stays, as SkyPilot leaves it.
pub async fn delete(ctx: &Context, job_id: JobId, owner: &str) -> Result<usize, HandlerError> {
    let uploads = read(ctx.blobs.as_ref(), job_id).await?;
    let space = owner_space(owner);
    let mut deleted = 0;
    for key in uploads.0.values() {
        if let Some(parsed) = parse_object_key(key).filter(|k| k.space == space) {
            if let Some((store, object)) = store_of(ctx, &parsed).await? {
                store.delete_prefix(&object).await?;
                deleted += 1;
            } else {
                // The user deleted the bucket, or it cannot be reached from here any more:
                // nothing of the job's to delete (a cleanup that waited would wait forever).
                tracing::warn!(
                    job_id,
                    key,
                    "the intermediate bucket of this upload is gone or out of reach; skipped"
                );
            }
        } else {
            tracing::warn!(
                job_id,
                key,
                "not deleting an upload key that is not the job's"
            );
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::keys::object_key;

    #[test]
    fn only_the_owners_archives_of_one_session_pass() {
        let sha = "a".repeat(64);
        let mine = object_key("alice", "s-1", &sha, None);
        assert!(
            mine.starts_with("uploads/") && mine.ends_with(".tar.gz"),
            "{mine}"
        );
        let ok = BTreeMap::from([("./wd".to_owned(), mine.clone())]);
        assert_eq!(
            check_request("alice", &ok),
            Ok(Some(("s-1".to_owned(), None)))
        );
        assert_eq!(check_request("alice", &BTreeMap::new()), Ok(None));
        for bad in [
            "jobs/",
            "jobs/2/logs/000/0001/1-run/000-00000000",
            "../../etc/passwd",
            &object_key("bob", "s-1", &sha, None),
            &format!("{mine}/x"),
            &mine.replace(".tar.gz", ".tgz"),
            &object_key("alice", "s 1", &sha, None),
        ] {
            let request = BTreeMap::from([("./wd".to_owned(), bad.to_owned())]);
            assert!(check_request("alice", &request).is_err(), "{bad}");
        }
        let two = BTreeMap::from([
            ("a".to_owned(), mine),
            ("b".to_owned(), object_key("alice", "s-2", &sha, None)),
        ]);
        assert!(
            check_request("alice", &two)
                .unwrap_err()
                .contains("one upload session")
        );
    }

    #[test]
    fn an_archive_in_an_intermediate_bucket_is_under_the_launchs_folder() {
        let sha = "b".repeat(64);
        let bucket = Intermediate::parse("s3://team-scratch/").unwrap();
        let key = object_key("alice", "s-1", &sha, Some(&bucket));
        let space = owner_space("alice");
        assert_eq!(
            key,
            format!("buckets/s3/team-scratch/job-s-1/{space}/{sha}.tar.gz")
        );
        let parsed = parse_object_key(&key).unwrap();
        assert_eq!(parsed.intermediate, Some(bucket.clone()));
        assert_eq!(parsed.object(), format!("job-s-1/{space}/{sha}.tar.gz"));
        let ok = BTreeMap::from([("./wd".to_owned(), key.clone())]);
        assert_eq!(
            check_request("alice", &ok),
            Ok(Some(("s-1".to_owned(), Some(bucket.clone()))))
        );
        // Not another user's, not half here and half in the deployment's store.
        assert!(check_request("bob", &ok).is_err());
        let mixed = BTreeMap::from([
            ("a".to_owned(), key),
            ("b".to_owned(), object_key("alice", "s-1", &sha, None)),
        ]);
        assert!(check_request("alice", &mixed).is_err());
        for bad in [
            "buckets/s3/Team/job-s-1/x/y.tar.gz",
            "buckets/az/team-scratch/job-s-1/{space}/{sha}.tar.gz",
            "buckets/s3/team-scratch/s-1/{space}/{sha}.tar.gz",
        ] {
            assert_eq!(parse_object_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_intermediate_bucket_is_an_s3_or_gs_bucket_without_a_path() {
        assert_eq!(
            Intermediate::parse("gs://data.example").unwrap().url(),
            "gs://data.example"
        );
        for bad in [
            "my-bucket",
            "r2://b",
            "s3://b",
            "s3://b/path",
            "s3://UPPER",
            "s3://-x-",
        ] {
            let e = Intermediate::parse(bad).unwrap_err();
            assert!(e.starts_with("jobs.bucket:"), "{bad}: {e}");
        }
    }
}
