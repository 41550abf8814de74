//! User logs in blob storage, and reading them back exactly once.
//!
//! A *stream* is the output of one phase of one node of one attempt of one task. Its agent
//! cuts it into chunks numbered 0, 1, 2, ... and writes each one as one object, in order (the
//! next only after the previous one is stored):
//!
//! `jobs/<id>/logs/<task:03>/<attempt:04>/<0-setup|1-run>/<rank:03>-<seq:08>` (the whole
//! layout is in [`crate::blob::keys`]),
//!
//! so a resend overwrites the same object with the same bytes. Logs outlive the job's clusters.
//!
//! # Reading
//! The streams of a job are known from its node facts (`crate::facts`): a node that reported
//! a phase started has a stream for it, and once it reported the phase exited, the number of
//! chunks in it. A reader holds a [`LogCursor`], one position per stream (the next chunk
//! number, and whether the stream can grow), so concurrent writers never make it skip or
//! repeat a chunk, and a client that reconnects with its cursor resumes exactly.
//!
//! Each read costs only what is new: per stream that can still grow, it reads the next chunk
//! by its key (one `GET`; a miss when nothing is new) and goes on while chunks are there, and
//! it stops at a byte budget ([`PAGE_BYTES`], counted as the JSON the API sends) so that no
//! response nears Lambda's 6 MB limit; `more` then says to read again at once. A stream is
//! *final* once all its chunks are read, or once its cluster was torn down and a read after
//! that found nothing new; final streams cost nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::agent_protocol::MAX_LOG_CHUNK_BYTES;
use crate::blob::{BlobError, BlobStore, Bounded, keys};
use crate::facts::{ClusterFacts, ClusterRef};
use crate::job::{JobId, Phase};

/// Most bytes of log text one read returns, counted as JSON-escaped text.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// What a piece adds to a page besides its text and its node's address (its other fields,
/// as JSON: task, attempt, phase, rank, a 10-digit pid, and the `ip` key).
const PIECE_OVERHEAD: usize = 120;

/// The object of chunk `seq` of `phase` of node `rank` of the cluster `at`.
pub fn chunk_key(job_id: JobId, at: &ClusterRef, phase: Phase, rank: u32, seq: u64) -> String {
    Stream {
        task: at.task,
        attempt: at.attempt,
        phase,
        rank,
    }
    .key(job_id, seq)
}

/// The output of one phase of one node of one attempt of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stream {
    pub task: usize,
    pub attempt: u32,
    pub phase: Phase,
    pub rank: u32,
}

impl Stream {
    fn key(&self, job_id: JobId, seq: u64) -> String {
        keys::log_chunk_key(job_id, self.task, self.attempt, self.phase, self.rank, seq)
    }
}

/// Where a reader is in one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// The next chunk to read.
    pub next: u64,
    /// Nothing more will come.
    pub done: bool,
}

/// Where a reader is in every stream of a job. Opaque to clients, as text:
/// `<task>.<attempt>.<s|r>.<rank>.<next>[d]` per stream, joined with `_`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogCursor {
    positions: BTreeMap<Stream, Position>,
}

/// A cursor a client sent back that this reader did not write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the log cursor '{0}' is not one this API returned: start again without `after`")]
pub struct BadCursor(pub String);

/// Most streams a cursor may name (a client cannot make a read loop over more).
const MAX_CURSOR_STREAMS: usize = 100_000;

impl LogCursor {
    pub fn position(&self, stream: &Stream) -> Position {
        self.positions.get(stream).copied().unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<LogCursor, BadCursor> {
        let bad = || BadCursor(text.chars().take(64).collect());
        let mut positions = BTreeMap::new();
        for entry in text.split('_').filter(|e| !e.is_empty()) {
            if positions.len() >= MAX_CURSOR_STREAMS {
                return Err(bad());
            }
            let (entry, done) = match entry.strip_suffix('d') {
                Some(rest) => (rest, true),
                None => (entry, false),
            };
            let mut parts = entry.split('.');
            let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
            let task = number()
                .and_then(|t| usize::try_from(t).ok())
                .ok_or_else(bad)?;
            let attempt = number()
                .and_then(|a| u32::try_from(a).ok())
                .ok_or_else(bad)?;
            let phase = match parts.next() {
                Some("s") => Phase::Setup,
                Some("r") => Phase::Run,
                _ => return Err(bad()),
            };
            let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
            let rank = number()
                .and_then(|r| u32::try_from(r).ok())
                .ok_or_else(bad)?;
            let next = number().ok_or_else(bad)?;
            if parts.next().is_some() {
                return Err(bad());
            }
            positions.insert(
                Stream {
                    task,
                    attempt,
                    phase,
                    rank,
                },
                Position { next, done },
            );
        }
        Ok(LogCursor { positions })
    }
}

impl std::fmt::Display for LogCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::new();
        for (s, p) in &self.positions {
            if !text.is_empty() {
                text.push('_');
            }
            let phase = match s.phase {
                Phase::Setup => 's',
                Phase::Run => 'r',
            };
            let _ = write!(
                text,
                "{}.{}.{phase}.{}.{}{}",
                s.task,
                s.attempt,
                s.rank,
                p.next,
                if p.done { "d" } else { "" }
            );
        }
        f.write_str(&text)
    }
}

/// A piece of a job's log, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPiece {
    pub task: usize,
    pub attempt: u32,
    pub phase: Phase,
    pub rank: u32,
    pub data: String,
    /// The process the phase's command runs as on its node, once the node said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The node's address (multi-node clusters: SkyPilot's `ip=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// What one read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    pub pieces: Vec<LogPiece>,
    pub cursor: LogCursor,
    /// The byte budget ran out: more is there now.
    pub more: bool,
    /// Every stream is final: nothing more will ever come (unless a node starts a new one).
    pub complete: bool,
}

/// One stream as the facts describe it.
struct Known {
    stream: Stream,
    pid: Option<u32>,
    ip: Option<String>,
    /// Chunks in the stream, once its phase exited.
    chunks: Option<u64>,
    /// Its cluster was torn down: it can no longer grow.
    sealed: bool,
}

fn streams(facts: &[ClusterFacts], task: Option<usize>) -> Vec<Known> {
    let mut found = Vec::new();
    for cluster in facts {
        if task.is_some_and(|t| t != cluster.task) {
            continue;
        }
        for (rank, node) in &cluster.ranks {
            for phase in [Phase::Setup, Phase::Run] {
                let facts = node.phase(phase);
                if facts.started {
                    found.push(Known {
                        stream: Stream {
                            task: cluster.task,
                            attempt: cluster.attempt,
                            phase,
                            rank: *rank,
                        },
                        pid: facts.pid,
                        ip: cluster
                            .nodes
                            .iter()
                            .find(|n| n.rank == *rank)
                            .map(|n| n.ip.clone()),
                        chunks: facts.chunks,
                        sealed: cluster.terminated,
                    });
                }
            }
        }
    }
    found.sort_by_key(|k| k.stream);
    found
}

/// Reads what is new after `cursor` in the streams `facts` name (read *before* this call, so
/// a stream they call sealed or complete really is), `task` limiting it to one task.
pub async fn read(
    blobs: &dyn BlobStore,
    job_id: JobId,
    facts: &[ClusterFacts],
    task: Option<usize>,
    cursor: &LogCursor,
) -> Result<LogRead, BlobError> {
    let mut cursor = cursor.clone();
    let mut pieces = Vec::new();
    let mut budget = PAGE_BYTES;
    let mut more = false;
    let mut complete = true;
    for known in streams(facts, task) {
        let stream = known.stream;
        let mut position = cursor.position(&stream);
        if !position.done && known.chunks.is_some_and(|c| position.next >= c) {
            position.done = true;
        }
        while !position.done && !more {
            let key = stream.key(job_id, position.next);
            let data = match blobs.get_at_most(&key, MAX_LOG_CHUNK_BYTES).await? {
                None => {
                    // Nothing new. A stream of a torn-down cluster will never have more.
                    position.done = known.sealed;
                    break;
                }
                Some(Bounded::Data(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                Some(Bounded::TooLarge(size)) => format!(
                    "[stratus: log chunk {} of {size} bytes is over the {MAX_LOG_CHUNK_BYTES}-byte limit and was skipped]\n",
                    position.next
                ),
            };
            let cost = json_len(&data) + PIECE_OVERHEAD + known.ip.as_deref().map_or(0, json_len);
            if cost > budget && !pieces.is_empty() {
                more = true;
                break;
            }
            budget = budget.saturating_sub(cost);
            pieces.push(LogPiece {
                task: stream.task,
                attempt: stream.attempt,
                phase: stream.phase,
                rank: stream.rank,
                data,
                pid: known.pid,
                ip: known.ip.clone(),
            });
            position.next += 1;
            if known.chunks.is_some_and(|c| position.next >= c) {
                position.done = true;
            }
        }
        complete &= position.done;
        if position != Position::default() {
            cursor.positions.insert(stream, position);
        }
        if more {
            complete = false;
            break;
        }
    }
    Ok(LogRead {
        pieces,
        cursor,
        more,
        complete,
    })
}

/// Everything stored of a job's log, page after page (tests and tools; the API pages).
pub async fn read_all(
    facts: &dyn crate::store::FactStore,
    blobs: &dyn BlobStore,
    job_id: JobId,
) -> Result<Vec<LogPiece>, super::HandlerError> {
    let facts = facts.job_facts(job_id).await?;
    let mut cursor = LogCursor::default();
    let mut pieces = Vec::new();
    loop {
        let read = read(blobs, job_id, &facts, None, &cursor).await?;
        pieces.extend(read.pieces);
        cursor = read.cursor;
        if !read.more {
            return Ok(pieces);
        }
    }
}

/// The length of `text` as a JSON string (quotes aside): what it adds to a response.
fn json_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests;
