//! A cloud's notice that a machine is about to be taken back (the EC2 Spot interruption
//! warning, two minutes ahead; GCE's preemption notice): the job it serves is recovered at
//! once, not when the machine is gone. `Preempted` moves the task to RECOVERING, asks for the
//! old cluster's teardown (whose shutdown gives the node agent its SIGTERM, which it passes to
//! the job with a grace period) and requests the replacement in the same step.
//!
//! Level-triggered like everything else: a notice that arrives twice, late, or for a machine
//! Stratus does not know changes nothing (`step` ignores a `Preempted` for a cluster that is
//! no longer the task's), and one that is lost is caught by the sweep when the machine goes.

use tracing::info;

use super::{Context, HandlerError, advance};
use crate::cloud::Cloud;
use crate::job::{JobEvent, JobId};

/// Which cluster and job `instance` (a node's cloud id, as `describe_region` lists it) of
/// `region` belongs to, and recovers that job now. Returns the job, or `None` when no Stratus
/// cluster holds the machine (or the cloud is not enabled).
#[tracing::instrument(name = "preemption_notice", skip_all, fields(cloud = %cloud, region = region, instance = instance))]
pub async fn preemption_notice(
    ctx: &Context,
    cloud: Cloud,
    region: &str,
    instance: &str,
) -> Result<Option<JobId>, HandlerError> {
    let Some(provider) = ctx.providers.get(&cloud) else {
        return Ok(None);
    };
    let clusters = provider.describe_region(region).await?;
    let Some(state) = clusters
        .into_iter()
        .find(|s| s.nodes.iter().any(|n| n.instance_id == instance))
    else {
        info!(%cloud, region, instance, "preemption notice for a machine no Stratus cluster holds");
        return Ok(None);
    };
    info!(%cloud, region, instance, cluster = %state.cluster, job_id = state.job_id, "preemption notice: recovering the job now");
    advance(
        ctx,
        state.job_id,
        JobEvent::Preempted {
            cluster: state.cluster,
        },
    )
    .await?;
    Ok(Some(state.job_id))
}
