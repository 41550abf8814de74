//! User logs in blob storage: each chunk a node sends is one object, keyed so that a listing
//! reads in order: task, attempt, phase (setup before run), node rank, chunk number.
//!
//! ```text
//! jobs/<id>/logs/<task:03>/<attempt:04>/<0-setup|1-run>/<rank:03>-<seq:08>
//! ```
//!
//! Logs outlive the job's clusters: `stratus jobs logs` reads them after the job has ended or
//! was cancelled.

use crate::blob::{BlobError, BlobStore};
use crate::job::{JobId, Phase};

pub fn logs_prefix(job_id: JobId) -> String {
    format!("jobs/{job_id}/logs/")
}

pub fn chunk_key(
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
    format!("jobs/{job_id}/logs/{task:03}/{attempt:04}/{phase}/{rank:03}-{seq:08}")
}

/// A piece of a job's log, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPiece {
    pub task: usize,
    pub attempt: u32,
    pub phase: Phase,
    pub rank: u32,
    pub data: String,
}

/// The log pieces after `after` (a key returned earlier), in order, and the key to continue
/// from. `task` limits the read to one task.
pub async fn read(
    blobs: &dyn BlobStore,
    job_id: JobId,
    task: Option<usize>,
    after: Option<&str>,
) -> Result<(Vec<LogPiece>, Option<String>), BlobError> {
    let prefix = match task {
        Some(t) => format!("{}{t:03}/", logs_prefix(job_id)),
        None => logs_prefix(job_id),
    };
    let keys = blobs.list(&prefix).await?;
    let mut pieces = Vec::new();
    let mut last = after.map(str::to_owned);
    for key in keys {
        if after.is_some_and(|a| key.as_str() <= a) {
            continue;
        }
        let Some(piece) = parse_key(job_id, &key) else {
            continue;
        };
        let Some(bytes) = blobs.get(&key).await? else {
            continue;
        };
        pieces.push(LogPiece {
            data: String::from_utf8_lossy(&bytes).into_owned(),
            ..piece
        });
        last = Some(key);
    }
    Ok((pieces, last))
}

fn parse_key(job_id: JobId, key: &str) -> Option<LogPiece> {
    let rest = key.strip_prefix(&logs_prefix(job_id))?;
    let mut parts = rest.split('/');
    let task = parts.next()?.parse().ok()?;
    let attempt = parts.next()?.parse().ok()?;
    let phase = match parts.next()? {
        "0-setup" => Phase::Setup,
        "1-run" => Phase::Run,
        _ => return None,
    };
    let rank = parts.next()?.split('-').next()?.parse().ok()?;
    Some(LogPiece {
        task,
        attempt,
        phase,
        rank,
        data: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::LocalBlobStore;

    #[tokio::test]
    async fn chunks_read_back_in_order_and_resume_after_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobStore::new(dir.path());
        for (phase, seq, text) in [
            (Phase::Run, 1, "c"),
            (Phase::Setup, 0, "a"),
            (Phase::Run, 0, "b"),
        ] {
            blobs
                .put(&chunk_key(7, 0, 1, phase, 0, seq), text.as_bytes().to_vec())
                .await
                .unwrap();
        }
        let (pieces, last) = read(&blobs, 7, None, None).await.unwrap();
        let text: String = pieces.iter().map(|p| p.data.as_str()).collect();
        assert_eq!(text, "abc");
        blobs
            .put(&chunk_key(7, 0, 1, Phase::Run, 0, 2), b"d".to_vec())
            .await
            .unwrap();
        let (more, _) = read(&blobs, 7, None, last.as_deref()).await.unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].data, "d");
    }
}
