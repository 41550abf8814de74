//! Instances → clusters, as plain data: `describe_region` reads each instance into
//! [`InstanceFacts`] and [`cluster_states`] does the rest, so every health rule is a unit test
//! over fabricated instances (an emulator cannot set `StateReason`).

use std::collections::BTreeMap;

use super::tags;
use crate::provider::marks::{self, Marked};
use crate::provider::{ClusterHealth, ClusterState, NodeInfo};

/// The `StateReason` codes of a spot reclaim.
const SPOT_REASONS: [&str; 2] = [
    "Server.SpotInstanceTermination",
    "Server.SpotInstanceShutdown",
];

/// What `describe_region` reads of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct InstanceFacts {
    pub instance_id: String,
    /// EC2's state name: `pending`, `running`, `shutting-down`, `terminated`, `stopping`,
    /// `stopped`.
    pub state: String,
    /// `StateReason` code and message (`None` when the code is empty, as on running ones).
    pub reason: Option<(String, String)>,
    pub spot: bool,
    pub tags: BTreeMap<String, String>,
    pub zone: String,
    /// `AmiLaunchIndex`: the node's rank.
    pub launch_index: u32,
    pub private_ip: Option<String>,
}

impl Marked for InstanceFacts {
    fn mark(&self, key: &str) -> Option<&str> {
        self.tag(key)
    }

    fn id(&self) -> &str {
        &self.instance_id
    }
}

impl InstanceFacts {
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// Stopping, stopped, shutting down or terminated.
    fn is_gone(&self) -> bool {
        matches!(
            self.state.as_str(),
            "shutting-down" | "terminated" | "stopping" | "stopped"
        )
    }

    /// `i-0abc (node 1) terminated: Server.SpotInstanceTermination: ...`.
    fn describe(&self) -> String {
        let mut text = format!(
            "instance {} (node {}) {}",
            self.instance_id, self.launch_index, self.state
        );
        if let Some((code, message)) = &self.reason {
            text.push_str(": ");
            text.push_str(code);
            if !message.is_empty() && message != code {
                text.push_str(": ");
                text.push_str(
                    message
                        .strip_prefix(&format!("{code}: "))
                        .unwrap_or(message),
                );
            }
        }
        text
    }
}

/// The Stratus clusters among `instances` (every instance tagged `stratus-cluster`), sorted by
/// name. Instances without a numeric `stratus-job-id` are not Stratus's and are skipped.
pub(crate) fn cluster_states(region: &str, instances: Vec<InstanceFacts>) -> Vec<ClusterState> {
    let clusters = marks::group_clusters(region, instances);
    clusters
        .into_iter()
        .map(|(cluster, (job_id, mut instances))| {
            instances.sort_by(|a, b| {
                (a.launch_index, &a.instance_id).cmp(&(b.launch_index, &b.instance_id))
            });
            ClusterState {
                health: health(&instances),
                zone: instances[0].zone.clone(),
                nodes: instances
                    .iter()
                    .map(|i| NodeInfo {
                        rank: i.launch_index,
                        instance_id: i.instance_id.clone(),
                        ip: i.private_ip.clone().unwrap_or_default(),
                    })
                    .collect(),
                cluster,
                job_id,
                region: region.to_owned(),
            }
        })
        .collect()
}

/// One cluster's health from its instances (sorted by rank), first rule that applies:
/// 1. any instance tagged `stratus-state=terminating` (by `terminate`): Terminated;
/// 2. any gone instance with a spot `StateReason` (`Server.SpotInstanceTermination`,
///    `Server.SpotInstanceShutdown`), or any gone spot instance (a spot instance is only ever
///    ended by its reclaim or by someone outside Stratus; either way recovery is what the job
///    wants): Preempted;
/// 3. any other gone instance (stopped, terminated from outside, failed at boot): Failed,
///    with its `StateReason`;
/// 4. fewer distinct ranks than the `stratus-nodes` tag says (an instance vanished): Failed;
/// 5. any pending: Pending; else Running.
pub(crate) fn health(instances: &[InstanceFacts]) -> ClusterHealth {
    if instances
        .iter()
        .any(|i| i.tag(tags::STATE) == Some(tags::TERMINATING))
    {
        return ClusterHealth::Terminated;
    }
    let gone: Vec<&InstanceFacts> = instances.iter().filter(|i| i.is_gone()).collect();
    let reclaimed = |i: &&&InstanceFacts| {
        i.reason
            .as_ref()
            .is_some_and(|(code, _)| SPOT_REASONS.contains(&code.as_str()))
    };
    if let Some(first) = gone
        .iter()
        .find(reclaimed)
        .or_else(|| gone.iter().find(|i| i.spot))
    {
        return ClusterHealth::Preempted {
            reason: first.describe(),
        };
    }
    if !gone.is_empty() {
        let reasons: Vec<String> = gone.iter().map(|i| i.describe()).collect();
        return ClusterHealth::Failed {
            reason: reasons.join("; "),
        };
    }
    let expected = instances
        .iter()
        .find_map(|i| i.tag(tags::NODES).and_then(|n| n.parse::<u32>().ok()));
    if let Some(expected) = expected {
        let missing: Vec<String> = (0..expected)
            .filter(|rank| !instances.iter().any(|i| i.launch_index == *rank))
            .map(|rank| rank.to_string())
            .collect();
        if !missing.is_empty() {
            return ClusterHealth::Failed {
                reason: format!(
                    "node(s) {} of {expected} not found (their instances are gone)",
                    missing.join(", ")
                ),
            };
        }
    }
    if instances.iter().any(|i| i.state == "pending") {
        ClusterHealth::Pending
    } else {
        ClusterHealth::Running
    }
}
