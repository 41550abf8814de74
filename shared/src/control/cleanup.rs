//! Cleanup, the finalizer of a finished job: tear down every cluster tagged with the job, in
//! every region its candidates could have used, and delete its intermediate files.
//!
//! # Guarantees
//! - Deletes the job's schedules that never fired (a limit's timer, a backoff's).
//! - A job array's members share their uploads: the last member to end deletes them. Once
//!   clean, a member wakes the next in its lane (`job::array`).
//! - Finds clusters by tag (`describe_region`), not only through the record, so a launch that
//!   half ran, or whose answer was lost, is torn down too.
//! - Idempotent: on a job that is already clean it finds nothing and deletes nothing.
//! - Does nothing to a job that has not ended.
//! - Done means done: only when every region was listed and every cluster terminated does it
//!   write `cleaned_at`, which takes the job out of the sweep's view. Until then it answers
//!   [`HandlerError::Unfinished`] (so the event is retried) and the sweep runs it again.
//!
//! # Caveats
//! - The job's logs, controller events and node facts are kept: `stratus jobs logs` reads
//!   them afterwards.

use std::collections::BTreeSet;

use tracing::{info, warn};

use super::{Context, HandlerError, uploads};
use crate::cloud::Cloud;
use crate::facts::ClusterRef;
use crate::job::{ControllerEvent, JobEvent, JobId, JobRecord};
use crate::provider::ClusterHealth;

/// What one cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub clusters_terminated: usize,
    pub files_deleted: usize,
    pub schedules_deleted: usize,
}

/// Cleans up job `job_id` if it has ended.
#[tracing::instrument(name = "cleanup", skip_all, fields(job_id = job_id))]
pub async fn cleanup(ctx: &Context, job_id: JobId) -> Result<Cleaned, HandlerError> {
    let job = ctx.store.get_job(job_id).await?;
    let mut cleaned = Cleaned::default();
    if !job.is_terminal() {
        return Ok(cleaned);
    }
    let regions: BTreeSet<(Cloud, String)> = job
        .candidates
        .iter()
        .flatten()
        .map(|c| (c.cloud, c.region.clone()))
        .collect();
    let mut all_gone = true;
    for (cloud, region) in regions {
        let Some(provider) = ctx.providers.get(&cloud) else {
            continue;
        };
        let clusters = match provider.describe_region(&region).await {
            Ok(clusters) => clusters,
            Err(e) => {
                all_gone = false;
                warn!(job_id, %cloud, %region, error = %e, "cleanup could not list the region; it runs again");
                continue;
            }
        };
        for state in clusters.iter().filter(|c| c.job_id == job_id) {
            if matches!(
                state.health,
                ClusterHealth::Terminated | ClusterHealth::Preempted { .. }
            ) {
                continue;
            }
            match provider.terminate(&region, &state.cluster).await {
                Ok(()) => cleaned.clusters_terminated += 1,
                Err(e) => {
                    all_gone = false;
                    warn!(job_id, cluster = %state.cluster, error = %e, "cleanup could not terminate; it runs again");
                }
            }
        }
    }
    if !all_gone {
        return Err(HandlerError::Unfinished {
            job_id,
            what: "cleanup: some clusters could not be listed or terminated".into(),
        });
    }
    {
        // No node of the job is left to write: log readers stop waiting for their output,
        // and a cluster this finds gone first (its teardown raced this) frees its capacity.
        for facts in ctx.store.job_facts(job_id).await? {
            if !facts.terminated {
                let at = ClusterRef {
                    cluster: facts.cluster.clone(),
                    task: facts.task,
                    attempt: facts.attempt,
                };
                super::capacity::cluster_gone(ctx, &job, &at).await?;
            }
        }
    }

    // An array's members share one upload: it goes with the last of them to end.
    if !others_of_array_active(ctx, &job).await? {
        cleaned.files_deleted += uploads::delete(ctx, job_id, &job.owner).await?;
    }
    // Its timers (limits, backoffs) have nothing left to do: each schedule would otherwise
    // wait for its time, then fire into a job that ignores it.
    cleaned.schedules_deleted += ctx.bus.cancel_schedules(job_id).await?;
    // The buckets the job created that are not persistent go with it (SkyPilot's rule).
    if let Err(e) = super::buckets::delete_ephemeral(ctx, &job).await {
        return Err(HandlerError::Unfinished {
            job_id,
            what: format!("cleanup: {e}"),
        });
    }
    if cleaned.clusters_terminated + cleaned.files_deleted > 0 {
        let current = &job.tasks[job.current_task];
        let line = ControllerEvent {
            at: ctx.clock.now(),
            task: job.current_task,
            status: current.status,
            message: format!(
                "Cleanup: {} cluster(s) torn down by tag, {} intermediate file(s) deleted.",
                cleaned.clusters_terminated, cleaned.files_deleted
            ),
        };
        ctx.store.append_events(job_id, &[line]).await?;
    }
    mark_cleaned(ctx, job_id).await?;
    // Its machines are gone: the next member in its array's lane may launch (if this is
    // lost, the sweep asks again).
    if let Some(next) = job.array.and_then(|a| a.next_in_lane())
        && let Err(e) = ctx.bus.publish(next, JobEvent::Submitted).await
    {
        warn!(job_id, next, error = %e, "could not wake the next job of the array; the sweep does");
    }
    info!(
        job_id,
        clusters = cleaned.clusters_terminated,
        files = cleaned.files_deleted,
        schedules = cleaned.schedules_deleted,
        "cleanup done"
    );
    Ok(cleaned)
}

/// Whether another member of the job's array has not ended (none when it is not in one).
/// Reads each member by its ID (a consistent read, unlike a listing's index), the last rank
/// first (the lanes end in rank order), and stops at the first that has not ended.
async fn others_of_array_active(ctx: &Context, job: &JobRecord) -> Result<bool, HandlerError> {
    let Some(array) = job.array else {
        return Ok(false);
    };
    for id in (array.id..array.id + JobId::from(array.size)).rev() {
        if id == job.id {
            continue;
        }
        match ctx.store.get_job(id).await {
            Ok(other) if !other.is_terminal() => return Ok(true),
            Ok(_) | Err(crate::store::StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// Writes `cleaned_at` (fenced, re-reading on a lost race; after many, the sweep comes back).
async fn mark_cleaned(ctx: &Context, job_id: JobId) -> Result<(), HandlerError> {
    for _ in 0..20 {
        let mut job = ctx.store.get_job(job_id).await?;
        if job.cleaned_at.is_some() {
            return Ok(());
        }
        let fence = job.fence();
        job.cleaned_at = Some(ctx.clock.now());
        match ctx.store.update_job(&job, fence).await {
            Err(crate::store::StoreError::Conflict { .. }) => {}
            other => return other.map(|_| ()).map_err(Into::into),
        }
    }
    Err(HandlerError::Unfinished {
        job_id,
        what: "cleanup: the job kept changing while it was marked clean".into(),
    })
}
