//! Instances and preemption operations → clusters, as plain data: `describe_region` reads
//! each listed instance into [`InstanceFacts`] and each `compute.instances.preempted` zone
//! operation into a [`Preemption`], and [`cluster_states`] does the rest, so every health rule
//! is a unit test over fabricated data.

use std::collections::{BTreeMap, BTreeSet};

use super::labels;
use super::startup::instance_name;
use crate::job::JobId;
use crate::provider::marks::{self, Marked};
use crate::provider::{ClusterHealth, ClusterState, NodeInfo};

/// How long after a preemption a cluster whose instances are all deleted is still reported
/// (as Preempted), like EC2 lists terminated instances for about an hour.
pub(crate) const GHOST_SECS: i64 = 3600;

/// What `describe_region` reads of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct InstanceFacts {
    pub name: String,
    /// GCE's status: `PROVISIONING`, `STAGING`, `RUNNING`, `STOPPING`, `TERMINATED`, ...
    pub status: String,
    pub status_message: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub zone: String,
    /// The first network interface's internal address.
    pub ip: Option<String>,
}

/// One `compute.instances.preempted` operation of a zone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Preemption {
    pub zone: String,
    /// The instance's name (the last segment of the operation's `targetLink`).
    pub instance: String,
    /// Seconds since the epoch the operation was inserted, if readable.
    pub at: Option<i64>,
}

impl Marked for InstanceFacts {
    fn mark(&self, key: &str) -> Option<&str> {
        self.label(key)
    }

    fn id(&self) -> &str {
        &self.name
    }
}

impl InstanceFacts {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    fn rank(&self) -> u32 {
        self.label(labels::RANK)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }

    /// Stopped, stopping or suspended: the node is not running and will not run again by
    /// itself (Stratus VMs never restart automatically).
    fn is_gone(&self) -> bool {
        matches!(
            self.status.as_str(),
            "STOPPING" | "TERMINATED" | "STOPPED" | "SUSPENDING" | "SUSPENDED" | "DEPROVISIONING"
        )
    }

    /// `train-7-1-1 (node 1) TERMINATED: Instance was preempted.`.
    fn describe(&self) -> String {
        let mut text = format!(
            "instance {} (node {}) {}",
            self.name,
            self.rank(),
            self.status
        );
        if let Some(m) = self.status_message.as_deref().filter(|m| !m.is_empty()) {
            text.push_str(": ");
            text.push_str(m);
        }
        text
    }
}

/// The Stratus clusters of a region: every instance labelled `stratus-cluster` (sorted by
/// name), plus, for [`GHOST_SECS`] after a preemption, clusters whose instances were all
/// deleted by it (spot VMs end with `instanceTerminationAction: DELETE`). Instances without a
/// numeric `stratus-job-id` are not Stratus's and are skipped. `now` is seconds since the
/// epoch.
pub(crate) fn cluster_states(
    region: &str,
    instances: Vec<InstanceFacts>,
    preemptions: &[Preemption],
    now: i64,
) -> Vec<ClusterState> {
    let preempted: BTreeSet<(&str, &str)> = preemptions
        .iter()
        .map(|p| (p.zone.as_str(), p.instance.as_str()))
        .collect();
    let clusters = marks::group_clusters(region, instances);
    let mut states: Vec<ClusterState> = clusters
        .iter()
        .map(|(cluster, (job_id, instances))| {
            let mut instances = instances.clone();
            instances.sort_by(|a, b| (a.rank(), &a.name).cmp(&(b.rank(), &b.name)));
            ClusterState {
                health: health(cluster, &instances, &preempted),
                zone: instances[0].zone.clone(),
                nodes: instances
                    .iter()
                    .map(|i| NodeInfo {
                        rank: i.rank(),
                        instance_id: i.name.clone(),
                        ip: i.ip.clone().unwrap_or_default(),
                    })
                    .collect(),
                cluster: cluster.clone(),
                job_id: *job_id,
                region: region.to_owned(),
            }
        })
        .collect();
    states.extend(ghosts(region, &clusters, preemptions, now));
    states.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    states
}

/// Clusters that only a recent preemption operation still shows (all their instances
/// deleted): Preempted, with no nodes. The cluster and job come from the instance name
/// (`<cluster>-<rank>`, `<task>-<job>-<attempt>`, see `job::cluster_name`); a name of another
/// shape is skipped (the poll then sees the cluster vanish, which recovers it just the same).
fn ghosts(
    region: &str,
    listed: &BTreeMap<String, (JobId, Vec<InstanceFacts>)>,
    preemptions: &[Preemption],
    now: i64,
) -> Vec<ClusterState> {
    let mut found: BTreeMap<String, ClusterState> = BTreeMap::new();
    for p in preemptions {
        if p.at.is_none_or(|at| now - at > GHOST_SECS) {
            continue;
        }
        let Some((cluster, rank, job_id)) = parse_instance_name(&p.instance) else {
            continue;
        };
        if listed.contains_key(&cluster) || found.contains_key(&cluster) {
            continue;
        }
        found.insert(
            cluster.clone(),
            ClusterState {
                health: ClusterHealth::Preempted {
                    reason: format!(
                        "instance {} (node {rank}) was preempted and deleted",
                        p.instance
                    ),
                },
                zone: p.zone.clone(),
                nodes: Vec::new(),
                cluster,
                job_id,
                region: region.to_owned(),
            },
        );
    }
    found.into_values().collect()
}

/// `train-7-1-0` → (`train-7-1`, 0, 7), when the name is the plain form `instance_name`
/// gives.
fn parse_instance_name(name: &str) -> Option<(String, u32, JobId)> {
    let (cluster, rank) = name.rsplit_once('-')?;
    let rank: u32 = rank.parse().ok()?;
    let mut parts = cluster.rsplitn(3, '-');
    let _attempt: u32 = parts.next()?.parse().ok()?;
    let job: JobId = parts.next()?.parse().ok()?;
    parts.next().filter(|base| !base.is_empty())?;
    (instance_name(cluster, rank) == name).then(|| (cluster.to_owned(), rank, job))
}

/// One cluster's health from its instances (sorted by rank), first rule that applies:
/// 1. any instance labelled `stratus-state=terminating` (by `terminate`): Terminated;
/// 2. any gone instance, or any missing rank, with a `compute.instances.preempted` operation
///    for it: Preempted;
/// 3. any other gone instance (stopped, suspended, terminated from outside or by a host
///    failure; Stratus VMs never restart by themselves): Failed, with its status message;
/// 4. fewer distinct ranks than the `stratus-nodes` label says (an instance was deleted):
///    Failed;
/// 5. any `PROVISIONING`, `STAGING`, `PENDING` or `REPAIRING`: Pending; else Running.
pub(crate) fn health(
    cluster: &str,
    instances: &[InstanceFacts],
    preempted: &BTreeSet<(&str, &str)>,
) -> ClusterHealth {
    if instances
        .iter()
        .any(|i| i.label(labels::STATE) == Some(labels::TERMINATING))
    {
        return ClusterHealth::Terminated;
    }
    let zone = instances.first().map_or("", |i| i.zone.as_str());
    let gone: Vec<&InstanceFacts> = instances.iter().filter(|i| i.is_gone()).collect();
    if let Some(first) = gone
        .iter()
        .find(|i| preempted.contains(&(i.zone.as_str(), i.name.as_str())))
    {
        return ClusterHealth::Preempted {
            reason: format!("{} (preempted)", first.describe()),
        };
    }
    let expected = instances
        .iter()
        .find_map(|i| i.label(labels::NODES).and_then(|n| n.parse::<u32>().ok()))
        .unwrap_or(0);
    let missing: Vec<u32> = (0..expected)
        .filter(|rank| !instances.iter().any(|i| i.rank() == *rank))
        .collect();
    if let Some(rank) = missing
        .iter()
        .find(|r| preempted.contains(&(zone, instance_name(cluster, **r).as_str())))
    {
        return ClusterHealth::Preempted {
            reason: format!(
                "instance {} (node {rank}) was preempted and deleted",
                instance_name(cluster, *rank)
            ),
        };
    }
    if !gone.is_empty() {
        let reasons: Vec<String> = gone.iter().map(|i| i.describe()).collect();
        return ClusterHealth::Failed {
            reason: reasons.join("; "),
        };
    }
    if !missing.is_empty() {
        let missing: Vec<String> = missing.iter().map(u32::to_string).collect();
        return ClusterHealth::Failed {
            reason: format!(
                "node(s) {} of {expected} not found (their instances are gone)",
                missing.join(", ")
            ),
        };
    }
    if instances.iter().any(|i| {
        matches!(
            i.status.as_str(),
            "PROVISIONING" | "STAGING" | "PENDING" | "REPAIRING"
        )
    }) {
        ClusterHealth::Pending
    } else {
        ClusterHealth::Running
    }
}

/// Seconds since the epoch of an RFC 3339 time as GCE writes them
/// (`2026-11-27T03:12:00.123-08:00`, `...Z`); `None` if it is not one (an offset is required).
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_second)
}
