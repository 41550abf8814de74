//! The local cloud: a cluster is a set of node-agent processes on this machine, each in a
//! sandbox folder and a process group of its own. Its zones (`zone-a`, `zone-b`, each its own
//! region) have a configurable number of node slots, so that capacity failover and the
//! FAILED/backoff paths run without a cloud, and [`LocalProvider::preempt`] kills a cluster the
//! way a spot reclaim would (`stratus local preempt JOB_ID`).
//!
//! Why one file of this length: it is one adapter of the [`Provider`] port (launch, health,
//! terminate, list); its tests are in `tests.rs` and its on-disk record in `record.rs`.
//!
//! # On disk
//! ```text
//! <root>/                        e.g. $STRATUS_HOME/local
//!   lock                         flock(2)ed by every launch, terminate and preempt
//!   clusters/<cluster>/
//!     cluster.json               the record: the tags (job id, task, owner, cluster, region,
//!                                zone, instance type, spot, labels, created_at), the status
//!                                (launching, up, preempted, terminated) and each node's rank,
//!                                pid, process group, start time and ip
//!     node-<rank>/               the node's sandbox: its cwd and STRATUS_NODE_DIR
//!       agent.log                the agent's stdout and stderr
//! ```
//! Each node gets the `agent_protocol::env` variables (API URL, token, job id, cluster, rank,
//! node dir) and the address `127.0.0.<rank + 1>` (loopback aliases: on Linux all of
//! 127.0.0.0/8 answers, so `SKYPILOT_NODE_IPS` has one distinct line per node).
//!
//! # Slots
//! A slot is one **node**: a zone with 4 slots runs one 4-node cluster or four 1-node ones.
//! Counts come from [`LocalConfig`] (`local.slots` in `config.yaml`, overridden by
//! `STRATUS_LOCAL_SLOTS=zone-a=0,zone-b=2`); built-in zones default to 4. A cluster holds its
//! slots from the moment its record is written until it is terminated or preempted, or until
//! one of its nodes is found dead (Failed): occupancy is computed at each launch from the
//! records and the processes' liveness, never stored, so a node killed behind Stratus's back
//! cannot leak slots. A launch that does not fit is [`ProviderError::NoCapacity`].
//!
//! # Guarantees
//! - **Launch is idempotent per cluster name.** Under the root lock, the record is written
//!   before any process starts, and rewritten after each spawn; a second launch returns the
//!   recorded nodes without spawning. A launch interrupted by a crash (record still
//!   `launching`) is resumed by the next one, which spawns only the missing ranks. The lock is
//!   `flock`: across processes and tasks alike, and released by the kernel if its holder dies.
//! - **The tags are `cluster.json`**: `describe_region` reads every record under the root (one
//!   directory listing), so it sees half-launched clusters too.
//! - **Nodes outlive the control plane.** Each runs in its own process group with stdin from
//!   `/dev/null`, is never killed on drop, and is found again by any later process through its
//!   record (pid and start time), so a restarted control plane carries on with them.
//! - **Intent first**: `terminate` and `preempt` write the new status before signalling, so
//!   `describe_region` says Terminated or Preempted (never Failed) while nodes die, and a retry
//!   after a crash signals again. Both succeed for an unknown cluster.
//!
//! # Health
//! Terminated and Preempted come from the record. Otherwise a node is alive if its pid runs
//! with the start time recorded at spawn (`/proc/<pid>/stat`; a zombie counts as dead, as does
//! a reused pid); any dead node makes the cluster Failed ("node 1 (pid 123) exited"), else it is
//! Running (Pending while the record is still `launching`).
//!
//! # Caveats
//! - Reaping: nodes are children of the process that launched them. A thread per node waits
//!   for it while that process lives, so none lingers as a zombie; after the launcher exits,
//!   init (or the nearest subreaper) reaps them. Zombies count as dead either way.
//! - A crash between a node's fork and the record write that follows can orphan that one
//!   process: nothing finds it, but its agent exits on its own once the control plane answers
//!   401/404 for its abandoned cluster.
//! - Stopping a node signals its process group, so the agent must keep its commands in its
//!   own group (or stop them itself on SIGTERM; preemption sends only SIGKILL).
//! - Nodes share the host: instance sizes are nominal and nothing is isolated but the folder.
//! - A preempt of an on-demand cluster is allowed (the record keeps the spot flag): it stands
//!   for any machine a cloud takes back.
//! - A terminated cluster's folder (its record, its nodes' folders and their agent logs) is
//!   removed once its nodes are stopped, so launches and listings read only live records; one
//!   a crash left behind is removed by a listing ten minutes later. A preempted cluster's stays
//!   until it is terminated. (The nodes' output is in the job's logs, not in these folders.)
//! - Without `/proc` (macOS), liveness is `kill(pid, 0)`, which sees neither zombies nor pid
//!   reuse, and only 127.0.0.1 answers unless aliases are added.
//!
//! # Layout
//! - `config`: [`LocalConfig`], slots per zone, and the `STRATUS_LOCAL_SLOTS` parser.
//! - `record`: `cluster.json` and the folder layout, the root lock.
//! - `process`: spawning, liveness and stopping of node process groups.

mod config;
mod process;
mod record;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{debug, info, warn};

pub use self::config::{
    DEFAULT_SLOTS_PER_ZONE, DEFAULT_ZONES, LocalConfig, SLOTS_ENV, SlotsError, parse_slots,
};
use self::record::{ClusterRecord, Layout, NodeRecord, Status, valid_cluster_name};
use super::{ClusterHealth, ClusterSpec, ClusterState, NodeInfo, Provider, ProviderError};
use crate::agent_protocol::env;
use crate::clock::{Clock, SystemClock};
use crate::cloud::Cloud;
use crate::job::JobId;

/// The most nodes one local cluster may have (addresses 127.0.0.1 to 127.0.0.254).
pub const MAX_NODES: u32 = 254;

/// How long `terminate` waits after SIGTERM before SIGKILL, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// The reason a preempted cluster reports.
const PREEMPT_REASON: &str = "reclaimed by `stratus local preempt`";

/// The local cloud's [`Provider`]. Cheap to clone; every clone (and every other process using
/// the same root) sees the same clusters.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    layout: Layout,
    agent_command: Vec<OsString>,
    config: LocalConfig,
    grace: Duration,
}

impl LocalProvider {
    /// A local cloud keeping its clusters under `root` (e.g. `$STRATUS_HOME/local`; made
    /// absolute here, since nodes run in their own folders) and starting `agent_program` with
    /// no arguments on each node, with the default slots.
    pub fn new(root: PathBuf, agent_program: PathBuf) -> Self {
        let root = std::path::absolute(&root).unwrap_or(root);
        Self {
            layout: Layout::new(root),
            agent_command: vec![agent_program.into_os_string()],
            config: LocalConfig::default(),
            grace: DEFAULT_GRACE,
        }
    }

    /// Runs `command` (program, then arguments) on each node instead, e.g.
    /// `["sh", "-c", "exec my-agent --verbose"]`.
    pub fn with_agent_command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.agent_command = command.into_iter().map(Into::into).collect();
        assert!(
            !self.agent_command.is_empty(),
            "the agent command needs a program"
        );
        self
    }

    pub fn with_config(mut self, config: LocalConfig) -> Self {
        self.config = config;
        self
    }

    /// How long `terminate` waits after SIGTERM before SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    /// Takes `cluster` back the way a spot reclaim would: marks it preempted, then SIGKILLs its
    /// nodes' process groups, which frees its slots. Returns its state afterwards, or `None`
    /// if there is no such cluster. A cluster already over (terminated, preempted) is only
    /// swept for stray processes and keeps its status.
    pub async fn preempt(&self, cluster: &str) -> Result<Option<ClusterState>, ProviderError> {
        let cluster = cluster.to_owned();
        self.blocking(move |p| p.preempt_now(&cluster)).await
    }

    /// Every cluster of `job_id`, oldest first (its current one is the last that is Pending or
    /// Running).
    pub async fn find_by_job(&self, job_id: JobId) -> Result<Vec<ClusterState>, ProviderError> {
        self.blocking(move |p| {
            Ok(p.records()?
                .iter()
                .filter(|r| r.job_id == job_id)
                .map(|r| p.state(r))
                .collect())
        })
        .await
    }

    /// Every cluster under the root, in every region, oldest first.
    pub async fn clusters(&self) -> Result<Vec<ClusterState>, ProviderError> {
        self.blocking(|p| Ok(p.records()?.iter().map(|r| p.state(r)).collect()))
            .await
    }

    /// Runs `f` on the blocking pool: every operation is plain file IO and `flock`.
    async fn blocking<T, F>(&self, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&LocalProvider) -> Result<T, ProviderError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| ProviderError::Other {
                context: "local cloud: an operation did not finish".to_owned(),
                source: Box::new(e),
            })?
    }

    fn lock(&self) -> Result<std::fs::File, ProviderError> {
        self.layout
            .lock()
            .map_err(|e| io_error(format!("local cloud: locking {}", self.root().display()), e))
    }

    fn read(&self, cluster: &str) -> Result<Option<ClusterRecord>, ProviderError> {
        self.layout
            .read(cluster)
            .map_err(|e| io_error(format!("local cloud: reading the record of {cluster}"), e))
    }

    fn write(&self, record: &ClusterRecord) -> Result<(), ProviderError> {
        self.layout.write(record).map_err(|e| {
            io_error(
                format!("local cloud: writing the record of {}", record.cluster),
                e,
            )
        })
    }

    fn records(&self) -> Result<Vec<ClusterRecord>, ProviderError> {
        self.layout.list().map_err(|e| {
            io_error(
                format!(
                    "local cloud: listing clusters under {}",
                    self.root().display()
                ),
                e,
            )
        })
    }

    /// The slots of the spec's zone, once the spec is known to fit this cloud.
    fn check(&self, spec: &ClusterSpec) -> Result<u32, ProviderError> {
        let c = &spec.candidate;
        let invalid = |message: String| Err(ProviderError::Invalid { message });
        if c.cloud != Cloud::Local {
            return invalid(format!("the local cloud cannot launch {c}"));
        }
        let Some(slots) = self.config.slots_for(&c.region) else {
            return invalid(format!(
                "local cloud: unknown region '{}' (known: {}; add zones with {SLOTS_ENV} or \
                 local.slots in config.yaml)",
                c.region,
                self.config.zones().join(", ")
            ));
        };
        if c.zone != c.region {
            return invalid(format!(
                "local cloud: region '{0}' has one zone, '{0}', not '{1}'",
                c.region, c.zone
            ));
        }
        if spec.num_nodes == 0 || spec.num_nodes > MAX_NODES {
            return invalid(format!(
                "local cloud: num_nodes {} is not between 1 and {MAX_NODES}",
                spec.num_nodes
            ));
        }
        if !valid_cluster_name(&spec.cluster) {
            return invalid(format!(
                "local cloud: cluster name '{}' is not letters, digits, '-', '_' and '.'",
                spec.cluster
            ));
        }
        Ok(slots)
    }

    /// Nodes held in `zone` by clusters that are live and have no dead node.
    fn used_slots(&self, zone: &str) -> Result<u32, ProviderError> {
        Ok(self
            .records()?
            .iter()
            .filter(|r| r.zone == zone && holds_slots(r))
            .map(|r| r.num_nodes)
            .sum())
    }

    fn launch_now(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        let slots = self.check(spec)?;
        let zone = &spec.candidate.zone;
        let _lock = self.lock()?;
        let mut record = match self.read(&spec.cluster)? {
            Some(r) if r.job_id != spec.job_id => {
                return Err(ProviderError::Invalid {
                    message: format!(
                        "local cloud: cluster {} belongs to job {}, not {}",
                        r.cluster, r.job_id, spec.job_id
                    ),
                });
            }
            Some(r) if r.status != Status::Launching => {
                debug!(cluster = %r.cluster, job_id = r.job_id, zone = %r.zone, "local cluster already launched");
                return Ok(node_infos(&r));
            }
            Some(r) => {
                warn!(cluster = %r.cluster, job_id = r.job_id, zone = %r.zone, spawned = r.nodes.len(), "resuming an interrupted local launch");
                r
            }
            None => {
                let used = self.used_slots(zone)?;
                let free = slots.saturating_sub(used);
                if spec.num_nodes > free {
                    return Err(ProviderError::NoCapacity {
                        message: format!(
                            "local zone {zone}: {} node(s) wanted, {free} of {slots} slot(s) free",
                            spec.num_nodes
                        ),
                    });
                }
                let record = new_record(spec);
                self.write(&record)?;
                record
            }
        };
        if let Err(e) = self.spawn_missing(&mut record, spec) {
            // Undo, so that a failed launch leaves nothing running and holds no slot, and a
            // retry starts afresh. The folder stays: its logs may say what went wrong.
            let left = process::stop_groups(&record.nodes, Duration::ZERO);
            if !left.is_empty() {
                warn!(cluster = %record.cluster, ?left, "process groups survived SIGKILL");
            }
            if let Err(e) = self.layout.remove_record(&record.cluster) {
                warn!(cluster = %record.cluster, error = %e, "cannot remove the record of a failed launch");
            }
            return Err(e);
        }
        record.status = Status::Up;
        self.write(&record)?;
        info!(cluster = %record.cluster, job_id = record.job_id, zone = %record.zone, nodes = record.num_nodes, spot = record.spot, "launched local cluster");
        Ok(node_infos(&record))
    }

    /// Spawns every rank not in the record yet, writing the record after each.
    fn spawn_missing(
        &self,
        record: &mut ClusterRecord,
        spec: &ClusterSpec,
    ) -> Result<(), ProviderError> {
        for rank in 0..record.num_nodes {
            if record.nodes.iter().any(|n| n.rank == rank) {
                continue;
            }
            let dir = self.layout.node_dir(&record.cluster, rank);
            let mut vars: Vec<(&str, std::ffi::OsString)> = vec![
                (env::API_URL, spec.agent.api_url.clone().into()),
                (env::TOKEN, spec.agent.token.clone().into()),
                (env::JOB_ID, record.job_id.to_string().into()),
                (env::CLUSTER, record.cluster.clone().into()),
                (env::NODE_RANK, rank.to_string().into()),
                (env::NODE_DIR, dir.clone().into_os_string()),
            ];
            vars.extend(
                spec.agent
                    .cadence
                    .env()
                    .into_iter()
                    .map(|(k, v)| (k, v.into())),
            );
            let spawned = process::spawn(&self.agent_command, &dir, &vars).map_err(|e| {
                io_error(
                    format!(
                        "local cloud: starting node {rank} of {} with '{}'",
                        record.cluster,
                        self.agent_command[0].display()
                    ),
                    e,
                )
            })?;
            record.nodes.push(NodeRecord {
                rank,
                pid: spawned.pid,
                pgid: spawned.pid,
                start_ticks: spawned.start_ticks,
                ip: node_ip(rank),
            });
            self.write(record)?;
            debug!(cluster = %record.cluster, job_id = record.job_id, zone = %record.zone, rank, pid = spawned.pid, "started local node");
        }
        Ok(())
    }

    fn terminate_now(&self, region: &str, cluster: &str) -> Result<(), ProviderError> {
        if !valid_cluster_name(cluster) {
            return Ok(());
        }
        let record = {
            let _lock = self.lock()?;
            let Some(mut record) = self.read(cluster)? else {
                debug!(cluster, region, "no local cluster to terminate");
                return Ok(());
            };
            if record.region != region {
                debug!(cluster, region, actual = %record.region, "local cluster is in another region: nothing to terminate here");
                return Ok(());
            }
            if record.status.is_live() {
                record.status = Status::Terminated {
                    at: SystemClock.now(),
                };
                self.write(&record)?;
                info!(cluster, job_id = record.job_id, zone = %record.zone, "terminating local cluster");
            }
            record
        };
        Self::stop(&record, self.grace)?;
        // Over: its folder goes, so that the records every launch and listing reads stay as
        // many as the clusters that are up (a preempted one stays until it is terminated).
        let _lock = self.lock()?;
        self.forget(&record.cluster);
        Ok(())
    }

    /// Removes a cluster's folder (its record and node folders), logging a failure: a folder
    /// left behind is removed by a later listing.
    fn forget(&self, cluster: &str) {
        let dir = self.layout.cluster_dir(cluster);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => debug!(cluster, "removed local cluster folder"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!(cluster, error = %e, "cannot remove a local cluster folder"),
        }
    }

    fn preempt_now(&self, cluster: &str) -> Result<Option<ClusterState>, ProviderError> {
        if !valid_cluster_name(cluster) {
            return Ok(None);
        }
        let record = {
            let _lock = self.lock()?;
            let Some(mut record) = self.read(cluster)? else {
                return Ok(None);
            };
            if record.status.is_live() {
                record.status = Status::Preempted {
                    reason: PREEMPT_REASON.to_owned(),
                    at: SystemClock.now(),
                };
                self.write(&record)?;
                info!(cluster, job_id = record.job_id, zone = %record.zone, spot = record.spot, "preempting local cluster");
            }
            record
        };
        Self::stop(&record, Duration::ZERO)?;
        Ok(Some(self.state(&record)))
    }

    /// Stops the record's process groups; an error if some survive SIGKILL (try again later).
    fn stop(record: &ClusterRecord, grace: Duration) -> Result<(), ProviderError> {
        let left = process::stop_groups(&record.nodes, grace);
        if left.is_empty() {
            return Ok(());
        }
        Err(ProviderError::Other {
            context: format!(
                "local cloud: process groups {left:?} of {} still run after SIGKILL",
                record.cluster
            ),
            source: "processes did not exit".into(),
        })
    }

    fn state(&self, record: &ClusterRecord) -> ClusterState {
        ClusterState {
            cluster: record.cluster.clone(),
            job_id: record.job_id,
            region: record.region.clone(),
            zone: record.zone.clone(),
            health: self.health(record),
            nodes: node_infos(record),
        }
    }

    fn health(&self, record: &ClusterRecord) -> ClusterHealth {
        match &record.status {
            Status::Terminated { .. } => ClusterHealth::Terminated,
            Status::Preempted { reason, .. } => ClusterHealth::Preempted {
                reason: reason.clone(),
            },
            Status::Launching | Status::Up => {
                let dead: Vec<&NodeRecord> = record.nodes.iter().filter(|n| !alive(n)).collect();
                if let Some(first) = dead.first() {
                    let nodes: Vec<String> = dead
                        .iter()
                        .map(|n| format!("node {} (pid {}) exited", n.rank, n.pid))
                        .collect();
                    let log = self.layout.node_dir(&record.cluster, first.rank);
                    ClusterHealth::Failed {
                        reason: format!(
                            "{} (see {})",
                            nodes.join(", "),
                            log.join("agent.log").display()
                        ),
                    }
                } else if record.status == Status::Launching {
                    ClusterHealth::Pending
                } else {
                    ClusterHealth::Running
                }
            }
        }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn cloud(&self) -> Cloud {
        Cloud::Local
    }

    async fn launch(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        let spec = spec.clone();
        self.blocking(move |p| p.launch_now(&spec)).await
    }

    async fn describe_region(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        let region = region.to_owned();
        self.blocking(move |p| {
            let records = p.records()?;
            // A terminated cluster whose folder a crash left behind goes now.
            let now = SystemClock.now();
            for record in &records {
                if let Status::Terminated { at } = record.status
                    && now.since(at) > FORGET_AFTER
                    && process::stop_groups(&record.nodes, Duration::ZERO).is_empty()
                {
                    p.forget(&record.cluster);
                }
            }
            Ok(records
                .iter()
                .filter(|r| r.region == region)
                .map(|r| p.state(r))
                .collect())
        })
        .await
    }

    async fn terminate(&self, region: &str, cluster: &str) -> Result<(), ProviderError> {
        let (region, cluster) = (region.to_owned(), cluster.to_owned());
        self.blocking(move |p| p.terminate_now(&region, &cluster))
            .await
    }
}

fn new_record(spec: &ClusterSpec) -> ClusterRecord {
    let c = &spec.candidate;
    ClusterRecord {
        job_id: spec.job_id,
        task: spec.task,
        cluster: spec.cluster.clone(),
        owner: spec.owner.clone(),
        region: c.region.clone(),
        zone: c.zone.clone(),
        instance_type: c.instance_type.clone(),
        spot: c.use_spot,
        num_nodes: spec.num_nodes,
        created_at: SystemClock.now(),
        labels: spec.labels.clone(),
        status: Status::Launching,
        nodes: Vec::new(),
    }
}

fn alive(node: &NodeRecord) -> bool {
    process::is_alive(node.pid, node.start_ticks)
}

/// Whether `record` counts against its zone's slots: live, with no dead node.
fn holds_slots(record: &ClusterRecord) -> bool {
    record.status.is_live() && record.nodes.iter().all(alive)
}

/// A terminated cluster's folder left behind (a crash between the stop and the removal) is
/// removed by a listing this long after the teardown.
const FORGET_AFTER: Duration = Duration::from_mins(10);

/// `127.0.0.<rank + 1>`.
fn node_ip(rank: u32) -> String {
    Ipv4Addr::from(u32::from(Ipv4Addr::LOCALHOST) + rank).to_string()
}

fn node_infos(record: &ClusterRecord) -> Vec<NodeInfo> {
    record
        .nodes
        .iter()
        .map(|n| NodeInfo {
            rank: n.rank,
            instance_id: n.pgid.to_string(),
            ip: n.ip.clone(),
        })
        .collect()
}

fn io_error(context: String, source: io::Error) -> ProviderError {
    ProviderError::Other {
        context,
        source: Box::new(source),
    }
}
