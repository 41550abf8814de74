//! A job's uploads: the archives of the local paths its tasks sync to their nodes (workdir,
//! file mounts), sent by the CLI before it submits.
//!
//! ```text
//! uploads/<owner space>/<session>/<sha256>.tar.gz   an archive (content-addressed)
//! jobs/<id>/uploads.json                            the job's record: local path -> key
//! ```
//!
//! # Guarantees
//! - **A user writes only under their own space** (`owner_space`: a hash of the owner's
//!   name): the upload routes build the key from the authenticated caller, so no one can
//!   replace another user's archive. Presigned upload URLs also sign the archive's SHA-256,
//!   which S3 checks against the body.
//! - **A job names only its owner's archives, of one session, which no other job has**:
//!   `check_request` refuses any other key at submit (a `jobs/...` key, another user's, a
//!   path), and the session is claimed for the job in the state table. So the job's cleanup,
//!   which deletes its record's keys, can delete nothing that is not the job's own, and a
//!   node's token reaches only its own job's archives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::HandlerError;
use crate::blob::BlobStore;
use crate::job::JobId;

/// The job's record of its uploads.
pub fn record_key(job_id: JobId) -> String {
    format!("jobs/{job_id}/uploads.json")
}

/// The folder of one user's uploads: a hash of their name (names may hold any character).
pub fn owner_space(owner: &str) -> String {
    hex::encode(&Sha256::digest(owner.as_bytes())[..16])
}

/// Where an archive with this SHA-256 (hex, lower case) of this user's session is stored.
pub fn object_key(owner: &str, session: &str, sha256: &str) -> String {
    format!("uploads/{}/{session}/{sha256}.tar.gz", owner_space(owner))
}

/// A session is 1 to 64 letters, digits and `-`.
pub fn check_session(session: &str) -> Result<(), String> {
    let ok = !session.is_empty()
        && session.len() <= 64
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(())
        .ok_or_else(|| "session: use 1 to 64 letters, digits and '-'".to_owned())
}

/// A SHA-256 in hex: 64 hex digits.
pub fn check_sha256(sha256: &str) -> Result<(), String> {
    (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(())
        .ok_or_else(|| "sha256: give the archive's SHA-256 in hex (64 digits)".to_owned())
}

/// The parts of an archive's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey {
    pub space: String,
    pub session: String,
    pub sha256: String,
}

/// Reads an archive key back; `None` for anything that is not exactly one.
pub fn parse_object_key(key: &str) -> Option<ObjectKey> {
    let mut parts = key.split('/');
    let (Some("uploads"), Some(space), Some(session), Some(file), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let sha256 = file.strip_suffix(".tar.gz")?;
    let space_ok = space.len() == 32
        && space
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let sha_ok = check_sha256(sha256).is_ok() && !sha256.bytes().any(|b| b.is_ascii_uppercase());
    (space_ok && sha_ok && check_session(session).is_ok()).then(|| ObjectKey {
        space: space.to_owned(),
        session: session.to_owned(),
        sha256: sha256.to_owned(),
    })
}

/// Checks a submit's uploads (local path → key): every key an archive of `owner`'s, all of
/// one session. Returns that session (`None` when there are no uploads).
pub fn check_request(
    owner: &str,
    uploads: &BTreeMap<String, String>,
) -> Result<Option<String>, String> {
    let space = owner_space(owner);
    let mut session: Option<String> = None;
    for (path, key) in uploads {
        let parsed = parse_object_key(key).filter(|k| k.space == space).ok_or_else(|| {
            format!(
                "uploads.{path}: '{}' is not an archive you uploaded (the CLI uploads local paths and names them)",
                key.chars().take(200).collect::<String>()
            )
        })?;
        match &session {
            Some(s) if *s != parsed.session => {
                return Err(format!(
                    "uploads.{path}: every archive of a job comes from one upload session"
                ));
            }
            _ => session = Some(parsed.session),
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

/// Deletes the job's archives (each checked again to be one of `owner`'s), returning how
/// many keys were deleted.
pub async fn delete(
    blobs: &dyn BlobStore,
    job_id: JobId,
    owner: &str,
) -> Result<usize, HandlerError> {
    let uploads = read(blobs, job_id).await?;
    let space = owner_space(owner);
    let mut deleted = 0;
    for key in uploads.0.values() {
        if parse_object_key(key).is_some_and(|k| k.space == space) {
            blobs.delete_prefix(key).await?;
            deleted += 1;
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

    #[test]
    fn only_the_owners_archives_of_one_session_pass() {
        let sha = "a".repeat(64);
        let mine = object_key("alice", "s-1", &sha);
        assert!(
            mine.starts_with("uploads/") && mine.ends_with(".tar.gz"),
            "{mine}"
        );
        let ok = BTreeMap::from([("./wd".to_owned(), mine.clone())]);
        assert_eq!(check_request("alice", &ok), Ok(Some("s-1".to_owned())));
        assert_eq!(check_request("alice", &BTreeMap::new()), Ok(None));
        for bad in [
            "jobs/",
            "jobs/2/logs/000/0001/1-run/000-00000000",
            "../../etc/passwd",
            &object_key("bob", "s-1", &sha),
            &format!("{mine}/x"),
            &mine.replace(".tar.gz", ".tgz"),
            &object_key("alice", "s 1", &sha),
        ] {
            let request = BTreeMap::from([("./wd".to_owned(), bad.to_owned())]);
            assert!(check_request("alice", &request).is_err(), "{bad}");
        }
        let two = BTreeMap::from([
            ("a".to_owned(), mine),
            ("b".to_owned(), object_key("alice", "s-2", &sha)),
        ]);
        assert!(
            check_request("alice", &two)
                .unwrap_err()
                .contains("one upload session")
        );
    }
}
