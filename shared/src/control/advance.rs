//! Apply one event to one job: read, `step`, fenced write, then carry out the actions.
//!
//! # Guarantees
//! - The record is written before any action runs, so a crash after the write loses at most
//!   the actions, which `poll` re-derives from the record (a launch under way that the cloud
//!   has never seen is launched again under the same cluster name; a due backoff is re-sent).
//! - A lost race ([`StoreError::Conflict`]) means someone else advanced the job: re-read and
//!   step again. Events are at-least-once and `step` ignores ones that no longer apply.
//!
//! # Caveats
//! - Controller events are appended after the write: a crash between the two loses those
//!   lines of `jobs logs --controller`, never the job's state.

use tracing::{debug, info, warn};

use super::{Context, HandlerError, capacity};
use crate::clock::Timestamp;
use crate::facts::{CapacityEvent, ClusterFact, ClusterRef};
use crate::job::{
    Action, ControllerEvent, JobEvent, JobId, JobRecord, LaunchFailure, array, attempt_of_cluster,
    dependencies, step, transitions,
};
use crate::provider::{AgentBoot, ClusterSpec, ProviderError};
use crate::store::StoreError;

/// Conflicting writers in a row before giving up (the event is redelivered by then).
const MAX_CONFLICTS: usize = 20;

/// The event's variant (`LaunchFailed`), for the span: its data can be long (a cloud's error
/// text), and every log line inside the span repeats the span's fields.
fn event_kind(event: &JobEvent) -> String {
    let debug = format!("{event:?}");
    debug
        .split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Applies `event` to job `job_id` and carries out what it calls for. Follow-up events (the
/// cloud's answers) go on the bus.
#[tracing::instrument(name = "advance", skip_all, fields(job_id = job_id, event = event_kind(&event)))]
pub async fn advance(ctx: &Context, job_id: JobId, event: JobEvent) -> Result<(), HandlerError> {
    let Some(event) = resolve(ctx, job_id, event).await? else {
        return Ok(());
    };
    for _ in 0..MAX_CONFLICTS {
        let job = ctx.store.get_job(job_id).await?;
        let now = ctx.clock.now();
        let step = step(&job, event.clone(), now);
        let was_terminal = job.is_terminal();
        let job = if step.changed {
            match ctx.store.update_job(&step.next, job.fence()).await {
                Ok(stored) => {
                    log_transitions(&job, &stored);
                    // Before the actions: a launch's answer cannot then be announced first.
                    announce(ctx, &job, &stored, now).await;
                    stored
                }
                Err(StoreError::Conflict { .. }) => {
                    debug!(job_id, ?event, "lost a race on the job; re-reading");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            job
        };
        carry_out(ctx, &job, step.actions).await?;
        if job.is_terminal() && !was_terminal {
            ctx.bus.job_ended(job.id).await?;
        }
        return Ok(());
    }
    warn!(
        job_id,
        ?event,
        "gave up after repeated conflicts; the event will be redelivered"
    );
    Ok(())
}

/// A `Submitted` for a job that waits for others becomes what their statuses say
/// (`job::dependencies::verdict`): `Submitted` once all are met, `DependencyNeverMet` once
/// one can never be, nothing while some still run (the sweep asks again). An array's member
/// also waits for the member before it in its lane (`job::array`).
async fn resolve(
    ctx: &Context,
    job_id: JobId,
    event: JobEvent,
) -> Result<Option<JobEvent>, HandlerError> {
    if event != JobEvent::Submitted {
        return Ok(Some(event));
    }
    let job = ctx.store.get_job(job_id).await?;
    if !job.awaits_dependencies() {
        return Ok(Some(event));
    }
    let mut statuses = Vec::with_capacity(job.depends_on.len());
    for dep in &job.depends_on {
        statuses.push(match ctx.store.get_job(dep.job).await {
            Ok(other) => Some(other.status()),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        });
    }
    match dependencies::verdict(&job.depends_on, &statuses) {
        dependencies::Verdict::Ready => {}
        dependencies::Verdict::Wait => return Ok(None),
        // Before the array's gate: a job that can never run is told so at once.
        dependencies::Verdict::Never(reason) => {
            return Ok(Some(JobEvent::DependencyNeverMet { reason }));
        }
    }
    if let Some(before) = job.array.and_then(|a| a.waits_for()) {
        let seen = match ctx.store.get_job(before).await {
            Ok(other) => (other.status(), other.cleaned_at.is_some()),
            // Its ID was reserved with this job's: only a submit that failed part-way leaves
            // it missing, and launching now could put two of the lane's jobs up at once.
            Err(StoreError::NotFound { .. }) => {
                return Ok(Some(JobEvent::DependencyNeverMet {
                    reason: format!(
                        "Job {before}, the one before it in its array's lane, was never stored (the array's submit failed part-way)."
                    ),
                }));
            }
            Err(e) => return Err(e.into()),
        };
        if !array::may_launch(Some(seen)) {
            return Ok(None);
        }
    }
    Ok(Some(event))
}

/// Tells users of the status changes this write made. Best effort: a notice that cannot be
/// sent is logged and never fails the job; one a crash interrupts is lost (at most once).
async fn announce(ctx: &Context, before: &JobRecord, after: &JobRecord, now: Timestamp) {
    for event in transitions::transitions(before, after, now) {
        if let Err(e) = ctx.bus.status_changed(&event).await {
            warn!(job_id = after.id, status = %event.status, error = %e, "could not announce a status change");
        }
    }
}

fn log_transitions(before: &JobRecord, after: &JobRecord) {
    for (i, (old, new)) in before.tasks.iter().zip(&after.tasks).enumerate() {
        if old.status != new.status {
            info!(
                job_id = after.id,
                task = i,
                from = old.status.as_str(),
                to = new.status.as_str(),
                cluster = new.cluster.as_deref().unwrap_or(""),
                attempt = new.attempt,
                "job status changed"
            );
        }
    }
}

async fn carry_out(
    ctx: &Context,
    job: &JobRecord,
    actions: Vec<Action>,
) -> Result<(), HandlerError> {
    // The log lines describe the step just written: record them before acting, so an
    // interrupted action never loses them.
    let (events, actions): (Vec<Action>, Vec<Action>) = actions
        .into_iter()
        .partition(|a| matches!(a, Action::EmitEvent(_)));
    let events: Vec<ControllerEvent> = events
        .into_iter()
        .filter_map(|a| match a {
            Action::EmitEvent(e) => Some(e),
            _ => None,
        })
        .collect();
    if !events.is_empty() {
        ctx.store.append_events(job.id, &events).await?;
    }
    for action in actions {
        match action {
            Action::LaunchCluster {
                task,
                cluster,
                candidate_index,
                ..
            } => launch(ctx, job, task, &cluster, candidate_index).await?,
            Action::TerminateCluster { task, cluster } => {
                terminate(ctx, job, task, &cluster).await?;
            }
            Action::Requeue { at, .. } => {
                ctx.bus
                    .schedule(job.id, JobEvent::BackoffElapsed, at, ctx.clock.now())
                    .await?;
            }
            Action::ScheduleLimit { at } => {
                ctx.bus
                    .schedule(job.id, JobEvent::LimitDue, at, ctx.clock.now())
                    .await?;
            }
            // Node agents pull their work (see `control::nodes::work`), which follows from the record
            // this step wrote; there is nothing to push. Log lines were written above.
            Action::RunTask { .. } | Action::StartNextTask { .. } | Action::EmitEvent(_) => {}
        }
    }
    Ok(())
}

/// Launches (idempotently, by cluster name) and reports the cloud's answer on the bus.
pub(super) async fn launch(
    ctx: &Context,
    job: &JobRecord,
    task: usize,
    cluster: &str,
    candidate_index: usize,
) -> Result<(), HandlerError> {
    let candidate = job.candidates[task][candidate_index].clone();
    let spec = job.task_spec(task);
    let resources = super::resources_of(spec, &candidate);
    let image_id = super::image_of(spec, &candidate);
    let cluster_spec = ClusterSpec {
        job_id: job.id,
        task,
        cluster: cluster.to_owned(),
        owner: job.owner.clone(),
        num_nodes: spec.num_nodes,
        agent: AgentBoot {
            api_url: ctx.settings.agent_api_url.clone(),
            token: ctx.settings.secret.agent_token(job.id),
            cadence: ctx.settings.agent_cadence,
        },
        labels: resources.map(|r| r.labels.clone()).unwrap_or_default(),
        image_id,
        disk_size_gb: resources.and_then(|r| r.disk_size_gb),
        candidate,
    };
    let zone = capacity::zone_key(&cluster_spec.candidate);
    let now = ctx.clock.now();
    let known = ctx.store.zone_capacity(&zone).await?;
    let event = match ctx.provider(cluster_spec.candidate.cloud) {
        // A zone a launch found full a moment ago, and where none of our clusters has been
        // torn down since, is not asked again: a burst of jobs waits without a failed call
        // each, and is woken when a cluster there is torn down.
        Some(_) if known.known_full(now, capacity::KNOWLEDGE) => JobEvent::LaunchFailed {
            cluster: cluster.to_owned(),
            failure: LaunchFailure::KnownFull,
            message: format!(
                "{zone} was full {} s ago and nothing was freed there since (not asked again)",
                known.exhausted_at.map_or(0, |at| now.since(at).as_secs())
            ),
        },
        None => JobEvent::LaunchFailed {
            cluster: cluster.to_owned(),
            failure: LaunchFailure::Auth,
            message: format!(
                "{} is not enabled here (see `stratus check`)",
                cluster_spec.candidate.cloud
            ),
        },
        Some(provider) => match provider.launch(&cluster_spec).await {
            Ok(nodes) => {
                info!(
                    job_id = job.id,
                    task,
                    cluster,
                    nodes = nodes.len(),
                    "cluster launched"
                );
                let at = ClusterRef {
                    cluster: cluster.to_owned(),
                    task,
                    attempt: job.tasks[task].attempt,
                };
                // Kept for `SKYPILOT_NODE_IPS`, which node agents read with their work.
                ctx.store
                    .record_cluster(job.id, &at, ClusterFact::Launched(nodes))
                    .await?;
                JobEvent::ClusterLaunched {
                    cluster: cluster.to_owned(),
                }
            }
            Err(e) => {
                warn!(job_id = job.id, task, cluster, error = %e, "launch failed");
                if matches!(e, ProviderError::NoCapacity { .. }) {
                    ctx.store
                        .record_capacity(&zone, CapacityEvent::Exhausted(now))
                        .await?;
                }
                let failure = match &e {
                    ProviderError::Quota { .. } => LaunchFailure::Quota,
                    ProviderError::Auth { .. } => LaunchFailure::Auth,
                    ProviderError::Invalid { .. } => LaunchFailure::Invalid,
                    ProviderError::Unavailable { .. } => LaunchFailure::Unavailable,
                    // Throttling and transient errors move on to the next candidate too; the
                    // walk comes back around after the backoff.
                    ProviderError::NoCapacity { .. }
                    | ProviderError::Throttled { .. }
                    | ProviderError::Other { .. } => LaunchFailure::NoCapacity,
                };
                JobEvent::LaunchFailed {
                    cluster: cluster.to_owned(),
                    failure,
                    message: e.to_string(),
                }
            }
        },
    };
    ctx.bus.publish(job.id, event).await?;
    Ok(())
}

/// Tears `cluster` down wherever the task's candidates could have put it, then reports it gone.
pub(super) async fn terminate(
    ctx: &Context,
    job: &JobRecord,
    task: usize,
    cluster: &str,
) -> Result<(), HandlerError> {
    let state = &job.tasks[task];
    let mut places: Vec<(crate::cloud::Cloud, String)> =
        match (state.cluster.as_deref(), state.candidate) {
            (Some(c), Some(i)) if c == cluster => {
                let candidate = &job.candidates[task][i];
                vec![(candidate.cloud, candidate.region.clone())]
            }
            _ => job.candidates[task]
                .iter()
                .map(|c| (c.cloud, c.region.clone()))
                .collect(),
        };
    places.sort();
    places.dedup();
    let mut all_gone = true;
    for (cloud, region) in places {
        let Some(provider) = ctx.provider(cloud) else {
            continue;
        };
        if let Err(e) = provider.terminate(&region, cluster).await {
            // The poll sweep tears down any cluster no active task wants, so this is retried.
            warn!(job_id = job.id, cluster, %region, error = %e, "terminate failed");
            all_gone = false;
        }
    }
    if all_gone {
        // Its nodes will say nothing more: log readers stop waiting for their output, and
        // what it held is capacity freed.
        if let Some(attempt) = attempt_of_cluster(cluster, job.id) {
            let at = ClusterRef {
                cluster: cluster.to_owned(),
                task,
                attempt,
            };
            capacity::cluster_gone(ctx, job, &at).await?;
        }
        let line = ControllerEvent {
            at: ctx.clock.now(),
            task,
            status: job.tasks[task].status,
            message: format!("Cleanup: cluster {cluster} is torn down."),
        };
        ctx.store.append_events(job.id, &[line]).await?;
        ctx.bus
            .publish(
                job.id,
                JobEvent::ClusterTerminated {
                    cluster: cluster.to_owned(),
                },
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_span_names_only_the_events_variant() {
        assert_eq!(event_kind(&JobEvent::Submitted), "Submitted");
        let failed = JobEvent::LaunchFailed {
            cluster: "c".into(),
            failure: crate::job::LaunchFailure::NoCapacity,
            message: "a long cloud error".into(),
        };
        assert_eq!(event_kind(&failed), "LaunchFailed");
    }
}
