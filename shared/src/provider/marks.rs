//! The marks Stratus puts on every machine and disk it launches, the same on every cloud (EC2
//! tags, GCE labels), and the grouping of a region's machines into Stratus clusters by them.
//! Both adapters read and write these names only through this module.

use std::collections::BTreeMap;

use tracing::warn;

use crate::job::JobId;

pub const JOB_ID: &str = "stratus-job-id";
pub const CLUSTER: &str = "stratus-cluster";
pub const TASK: &str = "stratus-task";
pub const OWNER: &str = "stratus-owner";
/// The cluster's node count, so that a vanished machine is noticed.
pub const NODES: &str = "stratus-nodes";
/// Set to [`TERMINATING`] by `terminate` before it deletes.
pub const STATE: &str = "stratus-state";
pub const TERMINATING: &str = "terminating";

/// A cloud's view of one machine, as far as grouping needs it.
pub(crate) trait Marked {
    /// The value of one of the marks above, if the machine has it.
    fn mark(&self, key: &str) -> Option<&str>;
    /// The machine's name or id, for logs.
    fn id(&self) -> &str;
}

/// The Stratus clusters among `machines` by name (every machine marked [`CLUSTER`]), with
/// their job. A machine without a numeric [`JOB_ID`] is not Stratus's: it is skipped, and
/// logged.
pub(crate) fn group_clusters<M: Marked>(
    region: &str,
    machines: Vec<M>,
) -> BTreeMap<String, (JobId, Vec<M>)> {
    let mut clusters: BTreeMap<String, (JobId, Vec<M>)> = BTreeMap::new();
    for machine in machines {
        let Some(cluster) = machine.mark(CLUSTER).map(str::to_owned) else {
            continue;
        };
        let Some(job_id) = machine.mark(JOB_ID).and_then(|t| t.parse::<JobId>().ok()) else {
            warn!(cluster = %cluster, region, machine = machine.id(), "machine has no valid stratus-job-id mark: ignored");
            continue;
        };
        clusters
            .entry(cluster)
            .or_insert_with(|| (job_id, Vec::new()))
            .1
            .push(machine);
    }
    clusters
}
