//! What the control plane knows about zones' capacity, and who it wakes when some is freed.
//!
//! A launch that finds a zone full records it ([`CapacityEvent::Exhausted`]); the next
//! launches there are not tried until the knowledge goes stale or one of our clusters there
//! is gone. When one is, the jobs waiting out a no-capacity backoff that could use the zone
//! are woken, oldest first, as many as the freed nodes serve.
//!
//! # Guarantees
//! - Whichever path first records a cluster as gone (the teardown that ended it, or the
//!   cleanup that found it already gone) frees its capacity: a race between them can wake
//!   twice (harmless: a job not waiting ignores it), never not at all.

use super::{Context, HandlerError};
use crate::facts::{CapacityEvent, ClusterFact, ClusterRef};
use crate::job::{JobEvent, JobId, JobRecord};
use crate::optimizer::Candidate;

/// How long a launch's "no capacity" in a zone is trusted (others than us free capacity too).
pub(super) const KNOWLEDGE: std::time::Duration = std::time::Duration::from_mins(2);

/// The key of a candidate's zone in the capacity knowledge.
pub(super) fn zone_key(candidate: &Candidate) -> String {
    format!("{}/{}", candidate.cloud.id(), candidate.zone)
}

/// Records that `at` of `job` is gone, and if this is the first to say so, frees the nodes it
/// had in its zone.
pub(super) async fn cluster_gone(
    ctx: &Context,
    job: &JobRecord,
    at: &ClusterRef,
) -> Result<(), HandlerError> {
    let Some(facts) = ctx.store.cluster_facts(job.id, &at.cluster).await? else {
        // Never launched (a failed launch): nothing was taken, nothing to free.
        return Ok(());
    };
    if facts.terminated {
        return Ok(());
    }
    ctx.store
        .record_cluster(job.id, at, ClusterFact::Terminated)
        .await?;
    // Only the task's latest cluster has its candidate on record; an older one's zone was
    // freed when it was replaced (its teardown went through here then).
    let state = &job.tasks[at.task];
    let candidate = match (state.cluster.as_deref(), state.candidate) {
        (Some(c), Some(i)) if c == at.cluster => job.candidates[at.task].get(i),
        _ => None,
    };
    if let (Some(candidate), false) = (candidate, facts.nodes.is_empty()) {
        wake_waiting(ctx, job.id, candidate, facts.nodes.len()).await?;
    }
    Ok(())
}

/// `nodes` nodes were freed in `candidate`'s zone: wake the jobs waiting out a no-capacity
/// backoff that could use that zone, oldest first, as many as the nodes can serve (at least
/// one node each), rather than all of them at once to fight over it.
async fn wake_waiting(
    ctx: &Context,
    freed_by: JobId,
    candidate: &Candidate,
    nodes: usize,
) -> Result<(), HandlerError> {
    let zone = zone_key(candidate);
    ctx.store
        .record_capacity(&zone, CapacityEvent::Freed(ctx.clock.now()))
        .await?;
    let mut waiting: Vec<JobRecord> = ctx
        .store
        .list_active()
        .await?
        .into_iter()
        .filter(|w| {
            w.id != freed_by
                && w.next_attempt_at.is_some()
                && !w.is_terminal()
                && w.candidates[w.current_task]
                    .iter()
                    .any(|c| zone_key(c) == zone)
        })
        .collect();
    waiting.sort_by_key(|w| (w.tasks[w.current_task].submitted_at, w.id));
    let mut left = nodes;
    for job in waiting {
        let needs = job.task_spec(job.current_task).num_nodes as usize;
        if needs > left {
            continue;
        }
        left -= needs;
        ctx.bus.publish(job.id, JobEvent::CapacityFreed).await?;
        if left == 0 {
            break;
        }
    }
    Ok(())
}
