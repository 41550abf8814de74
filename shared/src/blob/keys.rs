//! The blob store's layout: every key Stratus reads or writes, built and read back here and
//! nowhere else. Keys are relative to the deployment's store (a folder under
//! `$STRATUS_HOME` locally, a prefix of the S3 bucket in AWS; see [`super`]).
//!
//! | key | holds | written by | read by | deleted by |
//! |---|---|---|---|---|
//! | `uploads/<space>/<session>/<sha256>.tar.gz` | one archive of a local path (workdir, file mount), content-addressed | the CLI, before submit (`PUT /api/v1/uploads` or a presigned URL) | node agents (`stratus agent`): `GET /agent/v1/jobs/<id>/blobs/<key>`, only keys in their job's record | the job's cleanup, from the job's record |
//! | `buckets/<s3\|gs>/<bucket>/job-<session>/<space>/<sha256>.tar.gz` | the same archive kept in the user's intermediate bucket (`jobs.bucket`): the object `job-<session>/<space>/<sha256>.tar.gz` of that bucket | as above | as above | as above (the bucket stays) |
//! | `jobs/<id>/uploads.json` | the job's record of its uploads: `{"<local path>": "<archive key>"}` (`control::uploads::Uploads`) | `submit`, before the job exists | node work and the agents' blob route (which keys a job's token reaches), cleanup | never (small; it names what cleanup deleted) |
//! | `jobs/<id>/logs/<task:03>/<attempt:04>/<0-setup\|1-run>/<rank:03>-<seq:08>` | chunk `seq` of one phase of one node's output (`control::logs`) | node agents, in order (a presigned URL or `/agent/v1/.../logs`) | `control::logs::read` (`jobs logs`, the dashboard) | never: logs outlive the job |
//!
//! `<space>` is [`owner_space`]: 32 hex digits of a hash of the owner's name, so a user
//! writes only under their own space whatever characters their name has. `<session>` is one
//! CLI launch's upload session ([`check_session`]). Node facts (which streams exist, how many
//! chunks each has) are not blobs: they live in the state table ([`crate::facts`]).

use sha2::{Digest, Sha256};

use crate::job::{JobId, Phase};
use crate::spec::Store;

/// Where a job's log chunks are.
pub fn logs_prefix(job_id: JobId) -> String {
    format!("jobs/{job_id}/logs/")
}

/// Chunk `seq` of `phase` of node `rank` of `attempt` of `task`.
pub fn log_chunk_key(
    job_id: JobId,
    task: usize,
    attempt: u32,
    phase: Phase,
    rank: u32,
    seq: u64,
) -> String {
    let phase = match phase {
        Phase::Setup => "0-setup",
        Phase::Run => "1-run",
    };
    format!(
        "{}{task:03}/{attempt:04}/{phase}/{rank:03}-{seq:08}",
        logs_prefix(job_id)
    )
}

/// The job's record of its uploads.
pub fn record_key(job_id: JobId) -> String {
    format!("jobs/{job_id}/uploads.json")
}

/// The folder of one user's uploads: a hash of their name (names may hold any character).
pub fn owner_space(owner: &str) -> String {
    hex::encode(&Sha256::digest(owner.as_bytes())[..16])
}

/// Where an archive with this SHA-256 (hex, lower case) of this user's session is stored:
/// the deployment's store, or `intermediate`, a bucket of the user's.
pub fn object_key(
    owner: &str,
    session: &str,
    sha256: &str,
    intermediate: Option<&Intermediate>,
) -> String {
    let space = owner_space(owner);
    match intermediate {
        None => format!("uploads/{space}/{session}/{sha256}.tar.gz"),
        Some(bucket) => format!(
            "buckets/{}/{}/job-{session}/{space}/{sha256}.tar.gz",
            bucket.store.scheme(),
            bucket.bucket
        ),
    }
}

/// A user's bucket that holds their uploads (`jobs.bucket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intermediate {
    pub store: Store,
    pub bucket: String,
}

impl Intermediate {
    /// Reads `s3://bucket` or `gs://bucket` (a trailing `/` allowed, no path).
    pub fn parse(url: &str) -> Result<Intermediate, String> {
        let wrong = || {
            format!(
                "jobs.bucket: '{}' is not a bucket: write s3://<bucket> or gs://<bucket>",
                url.chars().take(100).collect::<String>()
            )
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(wrong)?;
        let store = match scheme {
            "s3" => Store::S3,
            "gs" => Store::Gcs,
            _ => return Err(wrong()),
        };
        let bucket = rest.strip_suffix('/').unwrap_or(rest);
        if !bucket_name_ok(bucket) {
            return Err(wrong());
        }
        Ok(Intermediate {
            store,
            bucket: bucket.to_owned(),
        })
    }

    /// `s3://bucket`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.store.scheme(), self.bucket)
    }
}

/// 3 to 63 lower-case letters, digits, `.`, `-` and `_`, starting and ending with a letter
/// or digit: a name both stores could have (each checks its own rules on use).
fn bucket_name_ok(name: &str) -> bool {
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&name.len())
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
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
    /// The user's bucket it is in (`None`: the deployment's store).
    pub intermediate: Option<Intermediate>,
    pub space: String,
    pub session: String,
    pub sha256: String,
}

impl ObjectKey {
    /// The object's key in its store.
    pub fn object(&self) -> String {
        match &self.intermediate {
            None => format!(
                "uploads/{}/{}/{}.tar.gz",
                self.space, self.session, self.sha256
            ),
            Some(_) => format!("job-{}/{}/{}.tar.gz", self.session, self.space, self.sha256),
        }
    }
}

/// Reads an archive key back; `None` for anything that is not exactly one.
pub fn parse_object_key(key: &str) -> Option<ObjectKey> {
    let parts: Vec<&str> = key.split('/').collect();
    let (intermediate, space, session, file) = match parts[..] {
        ["uploads", space, session, file] => (None, space, session, file),
        ["buckets", scheme, bucket, folder, space, file] => (
            Some(Intermediate::parse(&format!("{scheme}://{bucket}")).ok()?),
            space,
            folder.strip_prefix("job-")?,
            file,
        ),
        _ => return None,
    };
    let sha256 = file.strip_suffix(".tar.gz")?;
    let space_ok = space.len() == 32
        && space
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let sha_ok = check_sha256(sha256).is_ok() && !sha256.bytes().any(|b| b.is_ascii_uppercase());
    (space_ok && sha_ok && check_session(session).is_ok()).then(|| ObjectKey {
        intermediate,
        space: space.to_owned(),
        session: session.to_owned(),
        sha256: sha256.to_owned(),
    })
}
