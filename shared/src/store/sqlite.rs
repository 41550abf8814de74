//! The embedded state table: one SQLite file, `$STRATUS_HOME/state.db` (default
//! `~/.stratus/state.db`).
//!
//! Why one file of this length: it is the whole [`JobStore`] and
//! [`FactStore`](crate::store::FactStore) port on SQLite, one method per operation, so that
//! it reads against `store::dynamo` method by method.
//!
//! Several processes (the CLI, the local poller, node agents) may open it at once: the file is
//! in WAL mode so readers never block the writer, writers wait up to [`BUSY_TIMEOUT`] for each
//! other, and multi-statement writes take the write lock up front (`BEGIN IMMEDIATE`) so that
//! two writers never deadlock upgrading a read lock. Within one process, calls share one
//! connection behind a mutex and run on tokio's blocking pool.
//!
//! Tables: `jobs` (columns for lookups and fencing, plus the state document), `tasks` (one
//! spec document per task), `events` (the controller log), `counters` (the job ID counter),
//! `claims` (upload sessions, each claimed by one job), and the node facts (`crate::facts`):
//! `clusters`, `node_facts` (one row per node, its facts as a JSON document updated in one
//! transaction) and `follows`. `PRAGMA user_version` holds
//! the schema version.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::clock::Timestamp;
use crate::facts::{
    CapacityEvent, ClusterFact, ClusterFacts, ClusterRef, NodeFact, NodeFacts, ZoneCapacity,
};
use crate::job::{ControllerEvent, Fence, JobId, JobRecord};
use crate::store::FactStore;

use super::wire::{self, FORMAT, Stored};
use super::{Cursor, JobReader, JobStore, Page, StoreError, clamp_limit};

/// How long a write waits for another process's write to finish before failing (retryably).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema this build creates and reads.
/// Version 2 added the node-facts tables; a version-1 file gains them when opened.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS jobs (
    id      INTEGER PRIMARY KEY,
    owner   TEXT NOT NULL,
    name    TEXT NOT NULL,
    status  TEXT NOT NULL,
    active  INTEGER NOT NULL,
    version INTEGER NOT NULL,
    format  INTEGER NOT NULL,
    state   TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, id);
CREATE INDEX IF NOT EXISTS jobs_by_name ON jobs (owner, name, id);
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (id) WHERE active = 1;
CREATE TABLE IF NOT EXISTS tasks (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    idx    INTEGER NOT NULL,
    format INTEGER NOT NULL,
    spec   TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
) STRICT;
CREATE TABLE IF NOT EXISTS events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    format INTEGER NOT NULL,
    event  TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, at, seq);
CREATE TABLE IF NOT EXISTS clusters (
    job_id     INTEGER NOT NULL,
    cluster    TEXT NOT NULL,
    task       INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    nodes      TEXT,
    terminated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, cluster)
) STRICT;
CREATE TABLE IF NOT EXISTS node_facts (
    job_id  INTEGER NOT NULL,
    cluster TEXT NOT NULL,
    rank    INTEGER NOT NULL,
    task    INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    facts   TEXT NOT NULL,
    PRIMARY KEY (job_id, cluster, rank)
) STRICT;
CREATE TABLE IF NOT EXISTS claims (
    name   TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS capacity (
    zone         TEXT PRIMARY KEY,
    exhausted_at INTEGER,
    freed_at     INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS follows (
    job_id INTEGER PRIMARY KEY,
    until  INTEGER NOT NULL
) STRICT;
";

const JOB_COLUMNS: &str = "id, owner, name, status, version, format, state";

/// The state table in a local SQLite file. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the state table at `$STRATUS_HOME/state.db`, with
    /// `STRATUS_HOME` defaulting to `~/.stratus`.
    pub async fn open_default() -> Result<Self, StoreError> {
        Self::open(default_path()?).await
    }

    /// Opens (creating if needed) the state table in the file at `path`.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_connection(&opened))
            .await
            .map_err(|e| StoreError::backend("open", false, e))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection, off the async threads.
    async fn call<T, F>(&self, operation: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written (it rolls back
            // open transactions on the next statement), so a poisoned lock is still usable.
            let mut conn = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::backend(operation, false, e))?
    }
}

/// Inserts one new job and its task specs (in the caller's transaction).
fn insert_job(
    tx: &rusqlite::Transaction<'_>,
    stored: &wire::Stored,
    key: i64,
    active: bool,
) -> Result<(), StoreError> {
    let err = |e| sql_error("create_job", e);
    let inserted = tx.execute(
        "INSERT INTO jobs (id, owner, name, status, active, version, format, state)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7)",
        params![
            key,
            stored.owner,
            stored.name,
            stored.status,
            active,
            FORMAT,
            stored.state
        ],
    );
    match inserted {
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            return Err(StoreError::Conflict {
                job_id: stored.id,
                expected_version: 0,
            });
        }
        other => other.map_err(err)?,
    };
    for (i, (format, spec)) in stored.specs.iter().enumerate() {
        tx.execute(
            "INSERT INTO tasks (job_id, idx, format, spec) VALUES (?1, ?2, ?3, ?4)",
            params![key, i64::try_from(i).unwrap_or(i64::MAX), format, spec],
        )
        .map_err(err)?;
    }
    Ok(())
}

/// `$STRATUS_HOME/state.db`, or `~/.stratus/state.db`.
pub fn default_path() -> Result<PathBuf, StoreError> {
    path_under(std::env::var_os("STRATUS_HOME"), std::env::home_dir())
}

fn path_under(
    stratus_home: Option<std::ffi::OsString>,
    home: Option<PathBuf>,
) -> Result<PathBuf, StoreError> {
    if let Some(dir) = stratus_home.filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(dir).join("state.db"));
    }
    home.filter(|h| !h.as_os_str().is_empty())
        .map(|h| h.join(".stratus").join("state.db"))
        .ok_or_else(|| {
            StoreError::backend(
                "open",
                false,
                "cannot find the home directory for ~/.stratus: set STRATUS_HOME",
            )
        })
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::backend(
                "open",
                false,
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
    }
    // Only its user may read it (job specs hold secrets): the file is made 0600 before SQLite
    // opens it, and SQLite gives its WAL and shared-memory files the same mode.
    restrict(path)?;
    let err = |e: rusqlite::Error| sql_error("open", e);
    let mut conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    // WAL: readers do not block the writer. NORMAL sync is durable across process crashes in
    // WAL mode, which is what matters for a local state file.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "state table is not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::backend(
            "open",
            false,
            format!(
                "{} has schema version {version}, newer than this Stratus reads ({SCHEMA_VERSION}): upgrade Stratus",
                path.display()
            ),
        ));
    }
    tx.execute_batch(SCHEMA).map_err(err)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(conn)
}

/// Creates the file if missing and makes it (and existing WAL and shared-memory files)
/// readable and writable by its owner only.
fn restrict(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let fail =
        |e: std::io::Error| StoreError::backend("open", false, format!("{}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(fail)?;
        }
    }
    Ok(())
}

/// A busy or locked database is worth retrying; anything else is not.
fn sql_error(operation: &'static str, e: rusqlite::Error) -> StoreError {
    let retryable = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    );
    StoreError::backend(operation, retryable, e)
}

fn to_sql_int(job_id: JobId, what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid {
        job_id,
        reason: format!("{what} {value} does not fit in SQLite's 64-bit integers"),
    })
}

/// Reads the job row `row` (selected as [`JOB_COLUMNS`]) and its tasks.
fn load_job(conn: &Connection, row: JobRow) -> Result<JobRecord, StoreError> {
    let JobRow {
        id,
        owner,
        name,
        status,
        version,
        format,
        state,
    } = row;
    let job_id = id as JobId;
    let err = |e| sql_error("get_job", e);
    let mut stmt = conn
        .prepare_cached("SELECT format, spec FROM tasks WHERE job_id = ?1 ORDER BY idx")
        .map_err(err)?;
    let specs = stmt
        .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let corrupt = |what: &str, value: i64| StoreError::Corrupt {
        job_id,
        reason: format!("{what} {value} is out of range"),
    };
    let specs = specs
        .into_iter()
        .map(|(f, s)| Ok((u32::try_from(f).map_err(|_| corrupt("task format", f))?, s)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    wire::decode(Stored {
        id: job_id,
        owner,
        name,
        status,
        version: u64::try_from(version).map_err(|_| corrupt("version", version))?,
        format: u32::try_from(format).map_err(|_| corrupt("format", format))?,
        state,
        specs,
    })
}

struct JobRow {
    id: i64,
    owner: String,
    name: String,
    status: String,
    version: i64,
    format: i64,
    state: String,
}

impl JobRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            owner: r.get(1)?,
            name: r.get(2)?,
            status: r.get(3)?,
            version: r.get(4)?,
            format: r.get(5)?,
            state: r.get(6)?,
        })
    }
}

/// Runs a query selecting [`JOB_COLUMNS`] and loads every job it returns.
fn query_jobs(
    conn: &mut Connection,
    operation: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<JobRecord>, StoreError> {
    let err = |e| sql_error(operation, e);
    // One read transaction, so that the jobs and their tasks come from one snapshot.
    let tx = conn.transaction().map_err(err)?;
    let rows = {
        let mut stmt = tx.prepare_cached(sql).map_err(err)?;
        stmt.query_map(params, JobRow::from_row)
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?
    };
    let jobs = rows
        .into_iter()
        .map(|row| load_job(&tx, row))
        .collect::<Result<Vec<_>, _>>()?;
    tx.finish().map_err(err)?;
    Ok(jobs)
}

#[async_trait]
impl JobReader for SqliteStore {
    async fn get_job(&self, id: JobId) -> Result<JobRecord, StoreError> {
        // No job has an id SQLite cannot hold.
        let Ok(key) = i64::try_from(id) else {
            return Err(StoreError::NotFound { job_id: id });
        };
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        let mut jobs = self
            .call("get_job", move |conn| {
                query_jobs(conn, "get_job", &sql, [key])
            })
            .await?;
        jobs.pop().ok_or(StoreError::NotFound { job_id: id })
    }

    async fn list_jobs(
        &self,
        owner: Option<&str>,
        page: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = clamp_limit(limit);
        let owner = owner.map(str::to_owned);
        let before = page.map_or(i64::MAX, |c| i64::try_from(c.job_id()).unwrap_or(i64::MAX));
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR owner = ?1) AND id < ?2 ORDER BY id DESC LIMIT ?3"
        );
        let jobs = self
            .call("list_jobs", move |conn| {
                query_jobs(
                    conn,
                    "list_jobs",
                    &sql,
                    params![owner, before, i64::try_from(limit + 1).unwrap_or(i64::MAX)],
                )
            })
            .await?;
        Ok(Page::from_overfetch(jobs, limit))
    }

    async fn list_active(&self) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE active = 1 ORDER BY id");
        self.call("list_active", move |conn| {
            query_jobs(conn, "list_active", &sql, [])
        })
        .await
    }

    async fn find_by_name(&self, owner: &str, name: &str) -> Result<Vec<JobRecord>, StoreError> {
        let (owner, name) = (owner.to_owned(), name.to_owned());
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ?1 AND name = ?2 ORDER BY id DESC"
        );
        self.call("find_by_name", move |conn| {
            query_jobs(conn, "find_by_name", &sql, params![owner, name])
        })
        .await
    }

    async fn list_events(&self, job_id: JobId) -> Result<Vec<ControllerEvent>, StoreError> {
        let Ok(key) = i64::try_from(job_id) else {
            return Ok(Vec::new());
        };
        self.call("list_events", move |conn| {
            let err = |e| sql_error("list_events", e);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT format, event FROM events WHERE job_id = ?1 ORDER BY at, seq",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map([key], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            rows.into_iter()
                .map(|(format, json)| {
                    wire::decode_event(job_id, u32::try_from(format).unwrap_or(u32::MAX), &json)
                })
                .collect()
        })
        .await
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn next_job_ids(&self, count: u32) -> Result<JobId, StoreError> {
        let count = i64::from(count.max(1));
        self.call("next_job_ids", move |conn| {
            // One statement is one atomic write: no two callers, in any process, see the same
            // value. It returns the last ID of the range.
            let last: i64 = conn
                .query_row(
                    "INSERT INTO counters (name, value) VALUES ('job_id', ?1)
                     ON CONFLICT (name) DO UPDATE SET value = value + ?1
                     RETURNING value",
                    [count],
                    |r| r.get(0),
                )
                .map_err(|e| sql_error("next_job_ids", e))?;
            Ok((last - count + 1) as JobId)
        })
        .await
    }

    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord, StoreError> {
        let mut created = self.create_jobs(std::slice::from_ref(job)).await?;
        Ok(created.remove(0))
    }

    /// All in one transaction: every job is stored, or none.
    async fn create_jobs(&self, jobs: &[JobRecord]) -> Result<Vec<JobRecord>, StoreError> {
        let mut rows = Vec::with_capacity(jobs.len());
        for job in jobs {
            let stored = wire::stored(job, 1)?;
            let key = to_sql_int(job.id, "job id", job.id)?;
            rows.push((stored, key, job.is_active()));
        }
        let mut created = jobs.to_vec();
        for job in &mut created {
            job.version = 1;
        }
        self.call("create_job", move |conn| {
            let err = |e| sql_error("create_job", e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            for (stored, key, active) in &rows {
                insert_job(&tx, stored, *key, *active)?;
            }
            tx.commit().map_err(err)?;
            Ok(created)
        })
        .await
    }

    async fn update_job(&self, job: &JobRecord, expected: Fence) -> Result<JobRecord, StoreError> {
        let job_id = job.id;
        let key = to_sql_int(job_id, "job id", job_id)?;
        let state = wire::encode_state(job)?;
        let status = job.status().as_str();
        let active = job.is_active();
        let version = to_sql_int(job_id, "version", expected.version)?;
        let expected_status = expected.status.as_str();
        let mut updated = job.clone();
        updated.version = expected.version + 1;
        self.call("update_job", move |conn| {
            let err = |e| sql_error("update_job", e);
            let changed = conn
                .execute(
                    "UPDATE jobs SET status = ?1, active = ?2, state = ?3, format = ?4,
                         version = version + 1
                     WHERE id = ?5 AND version = ?6 AND status = ?7",
                    params![status, active, state, FORMAT, key, version, expected_status],
                )
                .map_err(err)?;
            if changed == 1 {
                return Ok(updated);
            }
            let exists = conn
                .query_row("SELECT 1 FROM jobs WHERE id = ?1", [key], |_| Ok(()))
                .optional()
                .map_err(err)?
                .is_some();
            if exists {
                tracing::debug!(
                    job_id,
                    expected_version = expected.version,
                    "update lost a race"
                );
                Err(StoreError::Conflict {
                    job_id,
                    expected_version: expected.version,
                })
            } else {
                Err(StoreError::NotFound { job_id })
            }
        })
        .await
    }

    async fn append_events(
        &self,
        job_id: JobId,
        events: &[ControllerEvent],
    ) -> Result<(), StoreError> {
        let key = to_sql_int(job_id, "job id", job_id)?;
        let rows = events
            .iter()
            .map(|e| Ok((e.at.as_millis(), wire::encode_event(job_id, e)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.call("append_events", move |conn| {
            let err = |e| sql_error("append_events", e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO events (job_id, at, format, event) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(err)?;
                for (at, json) in &rows {
                    stmt.execute(params![key, at, FORMAT, json]).map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn claim(&self, name: &str, job_id: JobId) -> Result<(), StoreError> {
        let key = to_sql_int(job_id, "job id", job_id)?;
        let name = name.to_owned();
        self.call("claim", move |conn| {
            let err = |e| sql_error("claim", e);
            conn.execute(
                "INSERT INTO claims (name, job_id) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, key],
            )
            .map_err(err)?;
            let owner: i64 = conn
                .query_row("SELECT job_id FROM claims WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })
                .map_err(err)?;
            if owner == key {
                Ok(())
            } else {
                Err(StoreError::Conflict {
                    job_id,
                    expected_version: 0,
                })
            }
        })
        .await
    }
}

#[async_trait]
impl FactStore for SqliteStore {
    async fn record_cluster(
        &self,
        job_id: JobId,
        at: &ClusterRef,
        fact: ClusterFact,
    ) -> Result<(), StoreError> {
        let key = to_sql_int(job_id, "job id", job_id)?;
        let at = at.clone();
        let (nodes, terminated) = match fact {
            ClusterFact::Launched(nodes) => (
                Some(serde_json::to_string(&nodes).expect("node infos serialize")),
                false,
            ),
            ClusterFact::Terminated => (None, true),
        };
        self.call("record_cluster", move |conn| {
            conn.execute(
                "INSERT INTO clusters (job_id, cluster, task, attempt, nodes, terminated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (job_id, cluster) DO UPDATE SET
                     nodes = coalesce(excluded.nodes, nodes),
                     terminated = max(terminated, excluded.terminated)",
                params![
                    key,
                    at.cluster,
                    i64::try_from(at.task).unwrap_or(i64::MAX),
                    at.attempt,
                    nodes,
                    terminated
                ],
            )
            .map_err(|e| sql_error("record_cluster", e))?;
            Ok(())
        })
        .await
    }

    async fn record_node(
        &self,
        job_id: JobId,
        at: &ClusterRef,
        rank: u32,
        fact: NodeFact,
    ) -> Result<(), StoreError> {
        let key = to_sql_int(job_id, "job id", job_id)?;
        let at = at.clone();
        self.call("record_node", move |conn| {
            let err = |e| sql_error("record_node", e);
            // Read, apply, write in one write transaction: facts from several nodes (and
            // processes) never interleave.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let stored: Option<String> = tx
                .query_row(
                    "SELECT facts FROM node_facts WHERE job_id = ?1 AND cluster = ?2 AND rank = ?3",
                    params![key, at.cluster, rank],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err)?;
            let mut facts: NodeFacts = match stored {
                Some(json) => serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    job_id,
                    reason: format!("facts of node {rank} of {}: {e}", at.cluster),
                })?,
                None => NodeFacts::default(),
            };
            facts.apply(fact);
            let json = serde_json::to_string(&facts).expect("node facts serialize");
            tx.execute(
                "INSERT INTO node_facts (job_id, cluster, rank, task, attempt, facts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (job_id, cluster, rank) DO UPDATE SET facts = excluded.facts",
                params![
                    key,
                    at.cluster,
                    rank,
                    i64::try_from(at.task).unwrap_or(i64::MAX),
                    at.attempt,
                    json
                ],
            )
            .map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn cluster_facts(
        &self,
        job_id: JobId,
        cluster: &str,
    ) -> Result<Option<ClusterFacts>, StoreError> {
        let key = to_sql_int(job_id, "job id", job_id)?;
        let cluster = cluster.to_owned();
        self.call("cluster_facts", move |conn| {
            Ok(load_facts(conn, job_id, key, Some(&cluster))?.pop())
        })
        .await
    }

    async fn job_facts(&self, job_id: JobId) -> Result<Vec<ClusterFacts>, StoreError> {
        let key = to_sql_int(job_id, "job id", job_id)?;
        self.call("job_facts", move |conn| load_facts(conn, job_id, key, None))
            .await
    }

    async fn follow(&self, job_id: JobId, until: Timestamp) -> Result<(), StoreError> {
        let key = to_sql_int(job_id, "job id", job_id)?;
        self.call("follow", move |conn| {
            conn.execute(
                "INSERT INTO follows (job_id, until) VALUES (?1, ?2)
                 ON CONFLICT (job_id) DO UPDATE SET until = max(until, excluded.until)",
                params![key, until.as_millis()],
            )
            .map_err(|e| sql_error("follow", e))?;
            Ok(())
        })
        .await
    }

    async fn record_capacity(&self, zone: &str, event: CapacityEvent) -> Result<(), StoreError> {
        let zone = zone.to_owned();
        let (column, at) = match event {
            CapacityEvent::Exhausted(at) => ("exhausted_at", at),
            CapacityEvent::Freed(at) => ("freed_at", at),
        };
        let sql = format!(
            "INSERT INTO capacity (zone, {column}) VALUES (?1, ?2)
             ON CONFLICT (zone) DO UPDATE SET {column} = max(coalesce({column}, 0), excluded.{column})"
        );
        self.call("record_capacity", move |conn| {
            conn.execute(&sql, params![zone, at.as_millis()])
                .map_err(|e| sql_error("record_capacity", e))?;
            Ok(())
        })
        .await
    }

    async fn zone_capacity(&self, zone: &str) -> Result<ZoneCapacity, StoreError> {
        self.capacity_row(zone).await
    }

    async fn followed_until(&self, job_id: JobId) -> Result<Option<Timestamp>, StoreError> {
        let key = to_sql_int(job_id, "job id", job_id)?;
        self.call("followed_until", move |conn| {
            let until: Option<i64> = conn
                .query_row("SELECT until FROM follows WHERE job_id = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| sql_error("followed_until", e))?;
            Ok(until.map(Timestamp::from_millis))
        })
        .await
    }
}

impl SqliteStore {
    async fn capacity_row(&self, zone: &str) -> Result<ZoneCapacity, StoreError> {
        let zone = zone.to_owned();
        self.call("zone_capacity", move |conn| {
            let row: Option<(Option<i64>, Option<i64>)> = conn
                .query_row(
                    "SELECT exhausted_at, freed_at FROM capacity WHERE zone = ?1",
                    [&zone],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(|e| sql_error("zone_capacity", e))?;
            Ok(
                row.map_or_else(ZoneCapacity::default, |(e, f)| ZoneCapacity {
                    exhausted_at: e.map(Timestamp::from_millis),
                    freed_at: f.map(Timestamp::from_millis),
                }),
            )
        })
        .await
    }
}

/// The facts of one cluster of a job (`cluster`), or of all of them, in one read transaction.
fn load_facts(
    conn: &mut Connection,
    job_id: JobId,
    key: i64,
    cluster: Option<&str>,
) -> Result<Vec<ClusterFacts>, StoreError> {
    let err = |e| sql_error("node_facts", e);
    let corrupt = |reason: String| StoreError::Corrupt { job_id, reason };
    let tx = conn.transaction().map_err(err)?;
    let mut found: std::collections::BTreeMap<String, ClusterFacts> =
        std::collections::BTreeMap::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT cluster, task, attempt, nodes, terminated FROM clusters
                 WHERE job_id = ?1 AND (?2 IS NULL OR cluster = ?2)",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![key, cluster], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        for (name, task, attempt, nodes, terminated) in rows {
            let nodes = match nodes {
                Some(json) => serde_json::from_str(&json)
                    .map_err(|e| corrupt(format!("nodes of cluster {name}: {e}")))?,
                None => Vec::new(),
            };
            found.insert(
                name.clone(),
                ClusterFacts {
                    nodes,
                    terminated,
                    ..ClusterFacts::empty(&cluster_ref(&name, task, attempt))
                },
            );
        }
    }
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT cluster, rank, task, attempt, facts FROM node_facts
                 WHERE job_id = ?1 AND (?2 IS NULL OR cluster = ?2)",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![key, cluster], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        for (name, rank, task, attempt, json) in rows {
            let facts: NodeFacts = serde_json::from_str(&json)
                .map_err(|e| corrupt(format!("facts of node {rank} of {name}: {e}")))?;
            let rank = u32::try_from(rank).map_err(|_| corrupt(format!("rank {rank}")))?;
            found
                .entry(name.clone())
                .or_insert_with(|| ClusterFacts::empty(&cluster_ref(&name, task, attempt)))
                .ranks
                .insert(rank, facts);
        }
    }
    tx.finish().map_err(err)?;
    let mut clusters: Vec<ClusterFacts> = found.into_values().collect();
    crate::facts::sort_clusters(&mut clusters);
    Ok(clusters)
}

fn cluster_ref(cluster: &str, task: i64, attempt: i64) -> ClusterRef {
    ClusterRef {
        cluster: cluster.to_owned(),
        task: usize::try_from(task).unwrap_or(usize::MAX),
        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_lives_under_stratus_home_or_the_home_directory() {
        let home = Some(PathBuf::from("/home/alice"));
        let under = |stratus_home: Option<&str>| {
            path_under(stratus_home.map(Into::into), home.clone()).unwrap()
        };
        assert_eq!(
            under(Some("/srv/stratus")),
            Path::new("/srv/stratus/state.db")
        );
        assert_eq!(under(None), Path::new("/home/alice/.stratus/state.db"));
        assert_eq!(under(Some("")), Path::new("/home/alice/.stratus/state.db"));
        let err = path_under(None, None).unwrap_err();
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("set STRATUS_HOME"), "{source}");
    }
}
