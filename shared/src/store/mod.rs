//! The state table: where Stratus keeps its memory instead of a controller VM.
//!
//! [`JobStore`] is the port every function reads and writes jobs through; [`JobReader`] is its
//! read-only half for callers that only look. Two adapters implement it, and one contract test
//! suite (`shared/tests/contract`) runs against both, so local mode and cloud mode cannot drift
//! apart:
//! - [`SqliteStore`]: one file under `$STRATUS_HOME` (default `~/.stratus`), the embedded
//!   default, safe for several processes at once.
//! - `DynamoStore` (feature `aws`): one DynamoDB table.
//!
//! # Guarantees
//! - **Every write that changes a job is fenced**: it succeeds only if the stored job still has
//!   the [`Fence`]'s version and status, and it bumps the version. A lost race is
//!   [`StoreError::Conflict`], never an overwrite: someone else advanced the job; re-read it.
//! - Creating a job writes the job and all its tasks in one transaction.
//! - Job IDs come from an atomic counter: 1, 2, 3, ..., never handed out twice (a failed
//!   create leaves a gap).
//! - A job's pipeline and candidates are written once, at creation; updates write only its
//!   state.
//! - A stored item that cannot be read back (bad JSON, an unknown format version, tasks
//!   missing) is [`StoreError::Corrupt`] naming the job, never a panic.
//!
//! # Caveats
//! - On DynamoDB, listings go through global secondary indexes, which are eventually
//!   consistent: a job created a moment ago may be missing from `list_jobs` for a moment.
//!   `get_job` is always strongly consistent.
//!
//! # Layout
//! - `wire`: the stored documents and their format version, shared by both adapters.
//! - `sqlite`: [`SqliteStore`].
//! - `dynamo` (feature `aws`): `DynamoStore` and the table's key design.

#[cfg(feature = "aws")]
pub mod dynamo;
mod sqlite;
pub(crate) mod wire;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::facts::{CapacityEvent, ClusterFact, ClusterFacts, ClusterRef, NodeFact, ZoneCapacity};
use crate::job::{ControllerEvent, Fence, JobId, JobRecord};

#[cfg(feature = "aws")]
pub use dynamo::DynamoStore;
pub use sqlite::SqliteStore;

/// Most jobs one `list_jobs` call returns; larger limits are cut to this.
pub const MAX_PAGE: usize = 1000;

/// Reading jobs and their controller events.
#[async_trait]
pub trait JobReader: Send + Sync {
    /// The job with its tasks, as last written. [`StoreError::NotFound`] if there is none.
    async fn get_job(&self, id: JobId) -> Result<JobRecord, StoreError>;

    /// Jobs newest first (by ID), of one owner or of everyone, `limit` at a time (at least 1,
    /// at most [`MAX_PAGE`]). Pass the returned `next` to get the following page; it is `None`
    /// on the last page.
    async fn list_jobs(
        &self,
        owner: Option<&str>,
        page: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// Every job the sweep must look at (`JobRecord::is_active`: not ended, or ended but not yet
    /// cleaned up), for the poll sweep. Oldest first.
    async fn list_active(&self) -> Result<Vec<JobRecord>, StoreError>;

    /// The owner's jobs with this name, newest first, finished ones included.
    async fn find_by_name(&self, owner: &str, name: &str) -> Result<Vec<JobRecord>, StoreError>;

    /// The job's controller log, oldest first (by time, then in the order appended).
    async fn list_events(&self, job_id: JobId) -> Result<Vec<ControllerEvent>, StoreError>;
}

/// The node-facts port ([`crate::facts`] says what the facts are and how they are kept). Both state-table adapters implement it (`SqliteStore`,
/// `DynamoStore`), and the store contract suite checks both.
#[async_trait]
pub trait FactStore: Send + Sync {
    /// Records what the control plane learnt about a cluster.
    async fn record_cluster(
        &self,
        job_id: JobId,
        at: &ClusterRef,
        fact: ClusterFact,
    ) -> Result<(), StoreError>;

    /// Records what node `rank` of a cluster said (see the guarantees in [`crate::facts`]).
    async fn record_node(
        &self,
        job_id: JobId,
        at: &ClusterRef,
        rank: u32,
        fact: NodeFact,
    ) -> Result<(), StoreError>;

    /// Everything known about `cluster`, strongly consistent; `None` if nothing is.
    async fn cluster_facts(
        &self,
        job_id: JobId,
        cluster: &str,
    ) -> Result<Option<ClusterFacts>, StoreError>;

    /// Every cluster of the job that anything is known about, by (task, attempt).
    async fn job_facts(&self, job_id: JobId) -> Result<Vec<ClusterFacts>, StoreError>;

    /// Someone follows the job's log until `until`: nodes send their output promptly.
    async fn follow(&self, job_id: JobId, until: Timestamp) -> Result<(), StoreError>;

    /// Until when someone follows the job's log, if anyone ever did.
    async fn followed_until(&self, job_id: JobId) -> Result<Option<Timestamp>, StoreError>;

    /// Records what a launch or a teardown said about a zone (`zone` is `<cloud>/<zone>`);
    /// each time only moves forward.
    async fn record_capacity(&self, zone: &str, event: CapacityEvent) -> Result<(), StoreError>;

    /// What is known about a zone's capacity.
    async fn zone_capacity(&self, zone: &str) -> Result<ZoneCapacity, StoreError>;
}

/// Reading and writing jobs, and the facts their nodes report (`crate::facts`), which live in
/// the same table.
#[async_trait]
pub trait JobStore: JobReader + FactStore {
    /// The first of `count` (at least 1) consecutive new job IDs, reserved in one atomic write:
    /// no other caller gets any of them. A job array's members take such a range.
    async fn next_job_ids(&self, count: u32) -> Result<JobId, StoreError>;

    /// The next job ID.
    async fn next_job_id(&self) -> Result<JobId, StoreError> {
        self.next_job_ids(1).await
    }

    /// Stores a new job and its tasks in one transaction, at version 1, and returns it as
    /// stored. [`StoreError::Conflict`] (expected version 0) if the ID is taken.
    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord, StoreError>;

    /// Stores new jobs (a job array's members), as `create_job` each, returning them as
    /// stored. A backend that can stores them all or none; otherwise, on an error, the jobs
    /// before the failed one remain.
    async fn create_jobs(&self, jobs: &[JobRecord]) -> Result<Vec<JobRecord>, StoreError> {
        let mut created = Vec::with_capacity(jobs.len());
        for job in jobs {
            created.push(self.create_job(job).await?);
        }
        Ok(created)
    }

    /// Writes `job`'s state if the stored job still matches `expected`, bumping the version;
    /// returns the job as stored. [`StoreError::Conflict`] if it no longer matches,
    /// [`StoreError::NotFound`] if there is no such job.
    async fn update_job(&self, job: &JobRecord, expected: Fence) -> Result<JobRecord, StoreError>;

    /// Appends to the job's controller log, in order.
    async fn append_events(
        &self,
        job_id: JobId,
        events: &[ControllerEvent],
    ) -> Result<(), StoreError>;

    /// Claims `name` (an upload session) for `job_id`, once and for good: claiming it again
    /// for the same job succeeds, for another job is [`StoreError::Conflict`].
    async fn claim(&self, name: &str, job_id: JobId) -> Result<(), StoreError>;
}

/// Where the next page of a listing starts: jobs older than the last one returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(JobId);

impl Cursor {
    /// Jobs with an ID below `id`.
    pub fn before(id: JobId) -> Self {
        Self(id)
    }

    pub fn job_id(self) -> JobId {
        self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cursor {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub jobs: Vec<JobRecord>,
    /// Where the next page starts; `None` when there are no more jobs.
    pub next: Option<Cursor>,
}

impl Page {
    /// Builds a page from up to `limit + 1` jobs, newest first: the extra one only says that
    /// another page exists.
    fn from_overfetch(mut jobs: Vec<JobRecord>, limit: usize) -> Self {
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| Cursor(j.id))
        } else {
            None
        };
        Self { jobs, next }
    }
}

fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The job changed since it was read (or, on create, already exists). Someone else
    /// advanced it: re-read and decide again.
    #[error(
        "job {job_id} was changed by someone else (expected version {expected_version}); re-read it and try again"
    )]
    Conflict {
        job_id: JobId,
        expected_version: u64,
    },

    #[error("job {job_id} not found")]
    NotFound { job_id: JobId },

    /// What is stored cannot be read back.
    #[error("job {job_id}: the stored record cannot be read: {reason}")]
    Corrupt { job_id: JobId, reason: String },

    /// The job cannot be stored as it is (too many tasks for one transaction, an item too
    /// large).
    #[error("job {job_id} cannot be stored: {reason}")]
    Invalid { job_id: JobId, reason: String },

    /// The database or the service failed.
    #[error("state table: {operation} failed")]
    Backend {
        operation: &'static str,
        retryable: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Whether the same call may succeed if simply made again (throttling, a busy database, a
    /// network error). A `Conflict` is not: the job must be re-read first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                retryable: true,
                ..
            }
        )
    }

    fn backend(
        operation: &'static str,
        retryable: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Backend {
            operation,
            retryable,
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_work_behind_dyn() {
        fn reader(store: std::sync::Arc<dyn JobStore>) -> std::sync::Arc<dyn JobReader> {
            store
        }
        let _ = reader;
    }

    #[test]
    fn cursors_round_trip_as_text() {
        let c = Cursor::before(42);
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
    }

    #[test]
    fn overfetch_says_whether_more_exist() {
        let jobs = |ids: &[u64]| ids.iter().map(|&id| JobRecord::test().id(id)).collect();
        let page = Page::from_overfetch(jobs(&[5, 4, 3]), 2);
        assert_eq!(page.jobs.len(), 2);
        assert_eq!(page.next, Some(Cursor::before(4)));
        assert_eq!(Page::from_overfetch(jobs(&[2, 1]), 2).next, None);
    }

    #[test]
    fn only_backend_errors_can_be_retryable() {
        let conflict = StoreError::Conflict {
            job_id: 1,
            expected_version: 3,
        };
        assert!(!conflict.is_retryable());
        assert!(StoreError::backend("get_job", true, "busy").is_retryable());
        assert!(!StoreError::backend("get_job", false, "denied").is_retryable());
        assert_eq!(
            StoreError::Corrupt {
                job_id: 7,
                reason: "bad".into()
            }
            .to_string(),
            "job 7: the stored record cannot be read: bad"
        );
    }
}
