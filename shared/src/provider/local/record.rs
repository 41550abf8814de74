//! `cluster.json`, the record of one local cluster (its tags, status and processes), and the
//! folders around it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::clock::Timestamp;
use crate::job::JobId;

/// One cluster as recorded on disk. Written before any process starts, rewritten after each
/// node is spawned and at each status change; always whole, through a rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClusterRecord {
    pub job_id: JobId,
    pub task: usize,
    pub cluster: String,
    pub owner: String,
    pub region: String,
    pub zone: String,
    pub instance_type: String,
    pub spot: bool,
    pub num_nodes: u32,
    pub created_at: Timestamp,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub status: Status,
    /// The nodes spawned so far, by rank.
    #[serde(default)]
    pub nodes: Vec<NodeRecord>,
}

/// Where a cluster is in its life, as this adapter decided it. Whether its processes still run
/// is checked when it is described, not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(super) enum Status {
    /// Recorded; nodes are being spawned. Seen under the lock, it means the launcher died
    /// half way, and the next `launch` resumes.
    Launching,
    /// Every node was spawned.
    Up,
    /// Taken back by `preempt`.
    Preempted { reason: String, at: Timestamp },
    /// Torn down by `terminate`.
    Terminated { at: Timestamp },
}

impl Status {
    /// Launching or up: still wanted, so it holds its slots while its nodes live.
    pub fn is_live(&self) -> bool {
        matches!(self, Status::Launching | Status::Up)
    }
}

/// One node process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NodeRecord {
    pub rank: u32,
    pub pid: i32,
    /// The node's own process group (`process_group(0)`: equal to `pid`).
    pub pgid: i32,
    /// When `pid` started, in clock ticks after boot (`/proc/<pid>/stat` field 22), to tell
    /// our process from a later one that got the same pid. `None` where there is no `/proc`.
    pub start_ticks: Option<u64>,
    pub ip: String,
}

/// The folders and files under the root.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn clusters(&self) -> PathBuf {
        self.root.join("clusters")
    }

    pub fn cluster_dir(&self, cluster: &str) -> PathBuf {
        self.clusters().join(cluster)
    }

    pub fn record_path(&self, cluster: &str) -> PathBuf {
        self.cluster_dir(cluster).join("cluster.json")
    }

    pub fn node_dir(&self, cluster: &str, rank: u32) -> PathBuf {
        self.cluster_dir(cluster).join(format!("node-{rank}"))
    }

    /// Takes the root's lock (`flock`), waiting for it; held until the file is dropped. The
    /// kernel drops it when its holder dies, so a crashed control plane never leaves it taken.
    /// Separate opens conflict even within one process, so it also orders threads and tasks.
    pub fn lock(&self) -> io::Result<File> {
        fs::create_dir_all(&self.root)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.root.join("lock"))?;
        file.lock()?;
        Ok(file)
    }

    pub fn read(&self, cluster: &str) -> io::Result<Option<ClusterRecord>> {
        let path = self.record_path(cluster);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the record (write a temporary file, then rename, so readers never see half of
    /// one). Callers hold the lock, so one temporary name is enough.
    pub fn write(&self, record: &ClusterRecord) -> io::Result<()> {
        let dir = self.cluster_dir(&record.cluster);
        fs::create_dir_all(&dir)?;
        let tmp = dir.join("cluster.json.tmp");
        let mut file = File::create(&tmp)?;
        let mut json = serde_json::to_vec_pretty(record)?;
        json.push(b'\n');
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&tmp, self.record_path(&record.cluster))
    }

    pub fn remove_record(&self, cluster: &str) -> io::Result<()> {
        match fs::remove_file(self.record_path(cluster)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record under the root, oldest first. One that cannot be read is logged and
    /// skipped; a folder without one (a launch that failed, or was undone) is skipped.
    pub fn list(&self) -> io::Result<Vec<ClusterRecord>> {
        let entries = match fs::read_dir(self.clusters()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut records = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str().filter(|n| valid_cluster_name(n)) else {
                continue;
            };
            match self.read(name) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(e) => {
                    warn!(cluster = name, error = %e, "skipping unreadable local cluster record");
                }
            }
        }
        records.sort_by(|a, b| (a.created_at, &a.cluster).cmp(&(b.created_at, &b.cluster)));
        Ok(records)
    }
}

/// Whether `name` can be a folder name under `clusters/`: letters, digits, `-`, `_`, `.`, not
/// starting with `.` (Stratus's own names are `<task>-<job>-<attempt>`).
pub(super) fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
