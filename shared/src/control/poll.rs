//! The poll sweep: compare every active job with what the clouds and its nodes say, and emit
//! the events that close the gap. Level-triggered: it is never told why it runs, and running
//! it twice is harmless (every event it emits is one `step` ignores when already applied).
//!
//! One `describe_region` per (cloud, region) in use, never one call per job; then, per active
//! job, one read of its cluster's node facts (a query of small items in the state table) and
//! the pure [`decide`]. What it catches:
//! - a preempted or failed cluster (`Preempted`, `HeartbeatLost`), or nodes that stopped
//!   polling for work (`HeartbeatLost`);
//! - work a crash dropped: a job left PENDING with nothing under way (`Submitted` again), a
//!   launch the record says is under way that the cloud has never seen (launched again, same
//!   name), node facts whose event never made it (`NodeReady`, `TaskExited`), a backoff that
//!   is due, a teardown that did not finish;
//! - orphans: a Stratus cluster that no active task wants is torn down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use tracing::{debug, info};

use super::{Context, HandlerError, advance};
use crate::clock::Timestamp;
use crate::cloud::Cloud;
use crate::facts::ClusterFacts;
use crate::job::{JobEvent, JobId, JobRecord, JobStatus, Phase};
use crate::provider::{ClusterHealth, ClusterState};
use crate::spec;

/// A launch decided this recently may still be in flight: it is not re-driven yet.
const REDRIVE_AFTER: Duration = Duration::from_secs(30);

/// A job waiting for others is asked again at every sweep, once its submit has had time to
/// finish (and to announce it).
const DEPENDENCY_GRACE: Duration = Duration::from_secs(1);

/// Jobs swept at once.
const CONCURRENCY: usize = 32;

/// What one sweep did, for logs and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollStats {
    pub active_jobs: usize,
    pub describe_calls: usize,
    pub events: usize,
    pub orphans_terminated: usize,
    /// Cleanups of ended jobs run again.
    pub cleanups: usize,
}

/// An ended job's cleanup normally runs at once (on `job_ended`); one still not done this
/// long after the job ended is run again by the sweep.
const CLEANUP_AFTER: Duration = Duration::from_mins(1);

/// Sweeps every active job once.
#[tracing::instrument(name = "poll", skip_all)]
pub async fn poll(ctx: &Context) -> Result<PollStats, HandlerError> {
    let now = ctx.clock.now();
    let (active, ended): (Vec<JobRecord>, Vec<JobRecord>) = ctx
        .store
        .list_active()
        .await?
        .into_iter()
        .partition(|job| !job.is_terminal());
    let mut stats = PollStats {
        active_jobs: active.len(),
        cleanups: rerun_cleanups(ctx, &ended, now).await,
        ..PollStats::default()
    };
    let (clusters, listed) = list_regions(ctx, &active, &mut stats).await;
    let others = Arc::new(Others {
        running: active.iter().map(|j| j.id).collect(),
        uncleaned: ended.iter().map(|j| j.id).collect(),
    });
    let wanted: BTreeSet<String> = active
        .iter()
        .filter_map(|job| job.tasks[job.current_task].cluster.clone())
        .collect();
    let limits = Limits {
        heartbeat_timeout: ctx.settings.heartbeat_timeout,
        ready_timeout: ctx.settings.ready_timeout,
        started_at: ctx.settings.started_at,
    };
    // Jobs are independent: sweep them a batch at a time, so that 10,000 active jobs take
    // about 10,000 / CONCURRENCY round trips of latency rather than 10,000.
    let clusters = Arc::new(clusters);
    let listed = Arc::new(listed);
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut sweeps = JoinSet::new();
    for job in active {
        let (ctx, clusters, listed, others) = (
            ctx.clone(),
            clusters.clone(),
            listed.clone(),
            others.clone(),
        );
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        sweeps.spawn(async move {
            let _permit = permit;
            let mut seen = see(&ctx, &job, &clusters, &listed).await?;
            seen.waits_on_active = others.holds_up(&job);
            let found = decide(&job, &seen.as_world(), &limits, now);
            let events = found.len();
            for found in found {
                carry_out(&ctx, &job, found).await?;
            }
            Ok::<usize, HandlerError>(events)
        });
    }
    while let Some(done) = sweeps.join_next().await {
        stats.events += done.expect("a sweep task panicked")?;
    }
    stats.orphans_terminated = tear_down_orphans(ctx, &clusters, &listed, &wanted).await?;
    Ok(stats)
}

/// Ended jobs whose cleanup failed, or never ran (a lost `job_ended`): run it again. Returns
/// how many were run.
async fn rerun_cleanups(ctx: &Context, ended: &[JobRecord], now: Timestamp) -> usize {
    let mut run = 0;
    for job in ended {
        let ended_at = job.tasks.iter().filter_map(|t| t.ended_at).max();
        if ended_at.is_none_or(|at| now.since(at) > CLEANUP_AFTER) {
            run += 1;
            if let Err(e) = super::cleanup(ctx, job.id).await {
                info!(job_id = job.id, error = %e, "cleanup is not finished; the next sweep tries again");
            }
        }
    }
    run
}

/// One `describe_region` per (cloud, region) the active jobs use (the whole local cloud
/// always): the clusters found, and the regions that answered.
async fn list_regions(
    ctx: &Context,
    active: &[JobRecord],
    stats: &mut PollStats,
) -> (BTreeMap<String, ClusterState>, BTreeSet<(Cloud, String)>) {
    let mut regions: BTreeSet<(Cloud, String)> = BTreeSet::new();
    for job in active {
        let task = &job.tasks[job.current_task];
        if let Some(c) = task
            .candidate
            .and_then(|i| job.candidates[job.current_task].get(i))
        {
            regions.insert((c.cloud, c.region.clone()));
        }
    }
    // The local cloud is cheap to list whole, so orphans there are found even with no job.
    if ctx.providers.contains_key(&Cloud::Local) {
        for region in ctx.catalog.of(Cloud::Local).map(|o| o.region.clone()) {
            regions.insert((Cloud::Local, region));
        }
    }
    let mut clusters = BTreeMap::new();
    let mut listed = BTreeSet::new();
    for (cloud, region) in regions {
        let Some(provider) = ctx.providers.get(&cloud) else {
            continue;
        };
        stats.describe_calls += 1;
        match provider.describe_region(&region).await {
            Ok(found) => {
                listed.insert((cloud, region));
                clusters.extend(found.into_iter().map(|c| (c.cluster.clone(), c)));
            }
            Err(e) => debug!(%cloud, %region, error = %e, "describe failed; next sweep retries"),
        }
    }
    (clusters, listed)
}

async fn carry_out(ctx: &Context, job: &JobRecord, found: Found) -> Result<(), HandlerError> {
    debug!(job_id = job.id, ?found, "poll found news");
    match found {
        Found::Event(event) => advance(ctx, job.id, event).await,
        Found::Relaunch {
            task,
            cluster,
            candidate,
        } => {
            info!(
                job_id = job.id,
                cluster, "re-driving a launch the cloud has not seen"
            );
            advance::launch(ctx, job, task, &cluster, candidate).await
        }
    }
}

/// Tears down every Stratus cluster no active task wants; returns how many.
async fn tear_down_orphans(
    ctx: &Context,
    clusters: &BTreeMap<String, ClusterState>,
    listed: &BTreeSet<(Cloud, String)>,
    wanted: &BTreeSet<String>,
) -> Result<usize, HandlerError> {
    let mut terminated = 0;
    for (name, state) in clusters {
        if wanted.contains(name) || matches!(state.health, ClusterHealth::Terminated) {
            continue;
        }
        // The jobs were read before the clouds were listed: a launch decided in between is
        // not in `wanted`. Its job, read now, says whether it still wants the cluster.
        match ctx.store.get_job(state.job_id).await {
            Ok(job)
                if !job.is_terminal()
                    && job.tasks[job.current_task].cluster.as_deref() == Some(name) =>
            {
                continue;
            }
            Ok(_) | Err(crate::store::StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(provider) = ctx.providers.get(&cloud_of(listed, &state.region)) else {
            continue;
        };
        info!(cluster = %name, job_id = state.job_id, "tearing down a cluster no active task wants");
        if provider.terminate(&state.region, name).await.is_ok() {
            terminated += 1;
        }
    }
    Ok(terminated)
}

fn cloud_of(listed: &BTreeSet<(Cloud, String)>, region: &str) -> Cloud {
    listed
        .iter()
        .find(|(_, r)| r == region)
        .map_or(Cloud::Local, |(c, _)| *c)
}

/// What the sweep saw of one job's cluster (owned, for the job's own task).
struct Seen {
    cluster: Option<ClusterState>,
    listed: bool,
    facts: Option<ClusterFacts>,
    waits_on_active: bool,
}

impl Seen {
    fn as_world(&self) -> World<'_> {
        World {
            cluster: self.cluster.as_ref(),
            listed: self.listed,
            facts: self.facts.as_ref(),
            waits_on_active: self.waits_on_active,
        }
    }
}

/// The listing's view of the job's current cluster, and its node facts when `decide` may need
/// them (the cluster is up, or thought to be).
async fn see(
    ctx: &Context,
    job: &JobRecord,
    clusters: &BTreeMap<String, ClusterState>,
    listed: &BTreeSet<(Cloud, String)>,
) -> Result<Seen, HandlerError> {
    let t = job.current_task;
    let task = &job.tasks[t];
    let candidate = task.candidate.and_then(|i| job.candidates[t].get(i));
    let cluster = task.cluster.as_ref().and_then(|c| clusters.get(c)).cloned();
    let listed = candidate.is_some_and(|c| listed.contains(&(c.cloud, c.region.clone())));
    // A running task's cluster gone from the listing still has its facts read: its nodes
    // may have reported their exits before it went.
    let needs_facts = listed
        && match task.status {
            JobStatus::Starting | JobStatus::Recovering => cluster.is_some(),
            JobStatus::Running => true,
            _ => false,
        };
    let facts = match (&task.cluster, needs_facts) {
        (Some(name), true) => ctx.store.cluster_facts(job.id, name).await?,
        _ => None,
    };
    Ok(Seen {
        cluster,
        listed,
        facts,
        waits_on_active: false,
    })
}

/// The other jobs this sweep listed: those not ended, and those ended but not cleaned up.
struct Others {
    running: BTreeSet<JobId>,
    uncleaned: BTreeSet<JobId>,
}

impl Others {
    /// Whether a job `job` waits for is among them, still holding it up: a dependency not
    /// ended, or the previous member of its array's lane not cleaned up.
    fn holds_up(&self, job: &JobRecord) -> bool {
        job.depends_on.iter().any(|d| self.running.contains(&d.job))
            || job
                .array
                .and_then(|a| a.waits_for())
                .is_some_and(|id| self.running.contains(&id) || self.uncleaned.contains(&id))
    }
}

/// What the sweep knows about one job's current cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct World<'a> {
    /// The cluster as the cloud listed it; `None` when the listing did not have it.
    pub cluster: Option<&'a ClusterState>,
    /// The cluster's region was listed in this sweep (without a listing, nothing is judged).
    pub listed: bool,
    /// What its nodes have said.
    pub facts: Option<&'a ClusterFacts>,
    /// A job it waits for (`JobRecord::awaits_dependencies`) is in this sweep's listing and
    /// has not ended (or, for an array's lane, not been cleaned up): asking would only hear
    /// "not yet".
    pub waits_on_active: bool,
}

/// The sweep's settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A running cluster whose nodes have been silent this long is lost.
    pub heartbeat_timeout: Duration,
    /// A launched cluster not all ready this long after its launch failed to launch (unless
    /// the task's `config.<cloud>.provision_timeout` says otherwise).
    pub ready_timeout: Duration,
    /// When this control plane started: silence is judged only once it has been up for the
    /// timeout.
    pub started_at: Timestamp,
}

/// What the sweep does about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Event(JobEvent),
    /// Launch the task's cluster again under the same name: the record says it is being
    /// launched, but the cloud has never seen it (a crash between the write and the call).
    Relaunch {
        task: usize,
        cluster: String,
        candidate: usize,
    },
}

/// The events that bring `job` in line with the world. **Invariant:** pure, like `step`:
/// every rule is a row in `poll/tests.rs`.
pub fn decide(job: &JobRecord, world: &World<'_>, limits: &Limits, now: Timestamp) -> Vec<Found> {
    let t = job.current_task;
    let task = &job.tasks[t];
    if job.deadline_at.is_some_and(|at| at <= now) && !job.is_terminal() {
        // A limit fell due and its timer was lost (or is late): it is checked now.
        return vec![Found::Event(JobEvent::LimitDue)];
    }
    if job.next_attempt_at.is_some_and(|at| at <= now) {
        return vec![Found::Event(JobEvent::BackoffElapsed)];
    }
    let Some(cluster) = task.cluster.clone() else {
        let submitted_ago = |d: Duration| task.submitted_at.is_some_and(|at| now.since(at) > d);
        let ask = if job.awaits_dependencies() {
            // Waiting for the jobs it depends on: asked again at every sweep (`advance` turns
            // the `Submitted` into what their statuses say), unless one it waits for is still
            // in this sweep's listing (asking would only hear "not yet").
            !world.waits_on_active && submitted_ago(DEPENDENCY_GRACE)
        } else {
            // PENDING with nothing under way: the `Submitted` that starts the job was lost (a
            // crash after the create, a failed publish). Sent again; `step` ignores a duplicate.
            task.status == JobStatus::Pending
                && job.next_attempt_at.is_none()
                && task.launch.is_none()
                && submitted_ago(REDRIVE_AFTER)
        };
        return if ask {
            vec![Found::Event(JobEvent::Submitted)]
        } else {
            vec![]
        };
    };
    if !world.listed {
        return vec![];
    }
    let health = world.cluster.map(|s| &s.health);
    let lost = match health {
        Some(ClusterHealth::Preempted { .. }) => Some(JobEvent::Preempted {
            cluster: cluster.clone(),
        }),
        Some(ClusterHealth::Failed { .. } | ClusterHealth::Terminated) | None => {
            Some(JobEvent::HeartbeatLost {
                cluster: cluster.clone(),
            })
        }
        Some(ClusterHealth::Pending | ClusterHealth::Running) => None,
    };
    let nodes = job.task_spec(t).num_nodes as usize;
    let event = |e: JobEvent| Found::Event(e);
    match task.status {
        JobStatus::Starting | JobStatus::Recovering => {
            launching(job, world, limits, now, cluster, lost)
        }
        JobStatus::Running => {
            // What the nodes reported wins over what the cloud shows now: a node whose
            // command exited (and said so) may be gone before its event was handled. The
            // record read may still say setup when the run has already ended.
            let phase = task.phase.unwrap_or(Phase::Setup);
            let reported = [phase, Phase::Run]
                .into_iter()
                .find_map(|phase| world.facts.and_then(|f| exited(f, &cluster, phase, nodes)));
            if let Some(exited) = reported {
                return vec![event(exited)];
            }
            if let Some(lost) = lost {
                return vec![event(lost)];
            }
            let latest = world.facts.and_then(ClusterFacts::last_seen);
            let since = task.running_since.or(task.started_at);
            let judged = now.since(limits.started_at) > limits.heartbeat_timeout;
            let quiet = judged
                && latest
                    .or(since)
                    .is_some_and(|at| now.since(at) > limits.heartbeat_timeout);
            if quiet {
                vec![event(JobEvent::HeartbeatLost { cluster })]
            } else {
                vec![]
            }
        }
        JobStatus::Cancelling => match health {
            None | Some(ClusterHealth::Terminated) => {
                vec![event(JobEvent::ClusterTerminated { cluster })]
            }
            Some(_) => vec![event(JobEvent::CancelRequested)],
        },
        _ => vec![],
    }
}

/// What the sweep does about a task being launched: re-drive a launch the cloud never saw,
/// pass on the launch and readiness events that were lost, and fail a launch whose nodes are
/// not ready in time.
fn launching(
    job: &JobRecord,
    world: &World<'_>,
    limits: &Limits,
    now: Timestamp,
    cluster: String,
    lost: Option<JobEvent>,
) -> Vec<Found> {
    let t = job.current_task;
    let task = &job.tasks[t];
    let nodes = job.task_spec(t).num_nodes as usize;
    let event = |e: JobEvent| Found::Event(e);
    let launched = task.launch.as_ref().is_some_and(|w| w.launched);
    match (launched, world.cluster) {
        (false, None) => {
            let in_flight = task
                .launch
                .as_ref()
                .and_then(|w| w.since)
                .is_some_and(|since| now.since(since) < REDRIVE_AFTER);
            task.candidate
                .filter(|_| !in_flight)
                .map(|candidate| Found::Relaunch {
                    task: t,
                    cluster,
                    candidate,
                })
                .into_iter()
                .collect()
        }
        (_, Some(state)) if lost.is_none() => {
            let mut found = Vec::new();
            if !launched {
                found.push(event(JobEvent::ClusterLaunched {
                    cluster: cluster.clone(),
                }));
            }
            if world.facts.is_some_and(|f| f.ready() >= nodes) {
                found.push(event(JobEvent::NodeReady { cluster }));
            } else if let Some(failed) = never_ready(job, state, world.facts, limits, now) {
                found.push(event(failed));
            }
            found
        }
        (true, _) => lost.map(event).into_iter().collect(),
        (false, Some(_)) => vec![],
    }
}

/// A `LaunchFailed` for a cluster whose nodes are not all ready within the ready timeout,
/// saying which nodes are missing and what the cloud says of the machines.
fn never_ready(
    job: &JobRecord,
    state: &ClusterState,
    facts: Option<&ClusterFacts>,
    limits: &Limits,
    now: Timestamp,
) -> Option<JobEvent> {
    let t = job.current_task;
    let task = &job.tasks[t];
    let since = task.launch.as_ref()?.since?;
    let candidate = task.candidate.and_then(|i| job.candidates[t].get(i))?;
    let timeout =
        spec::config::provision_timeout(job.task_spec(t).config.as_ref(), candidate.cloud)
            .unwrap_or(limits.ready_timeout);
    if now.since(since) <= timeout {
        return None;
    }
    let nodes = job.task_spec(t).num_nodes;
    let (mut silent, mut preparing) = (Vec::new(), Vec::new());
    for rank in 0..nodes {
        match facts.and_then(|f| f.ranks.get(&rank)) {
            Some(node) if node.ready => {}
            Some(_) => preparing.push(rank.to_string()),
            None => silent.push(rank.to_string()),
        }
    }
    let mut missing = Vec::new();
    if !silent.is_empty() {
        missing.push(format!(
            "node(s) {} never reached the API (the agent did not start: check the image can \
             run it, that the machines can reach the API over HTTPS, and their boot log)",
            silent.join(", ")
        ));
    }
    if !preparing.is_empty() {
        missing.push(format!(
            "node(s) {} reached the API but did not finish preparing (workdir, file mounts)",
            preparing.join(", ")
        ));
    }
    let machines = match state.health {
        ClusterHealth::Pending => "still starting",
        _ => "running",
    };
    Some(JobEvent::LaunchFailed {
        cluster: task.cluster.clone()?,
        failure: crate::job::LaunchFailure::NeverReady,
        message: format!(
            "{} of {nodes} node(s) ready {} s after the launch (provision timeout {} s); {}; the cloud says the machines are {machines}",
            nodes as usize - silent.len() - preparing.len(),
            now.since(since).as_secs(),
            timeout.as_secs(),
            missing.join("; ")
        ),
    })
}

/// A `TaskExited` the node facts support (its event may have been lost in a crash).
fn exited(facts: &ClusterFacts, cluster: &str, phase: Phase, nodes: usize) -> Option<JobEvent> {
    let exits = facts.exits(phase);
    let failed: Vec<i32> = exits.values().copied().filter(|c| *c != 0).collect();
    let codes = if failed.is_empty() {
        if exits.len() < nodes {
            return None;
        }
        exits.values().copied().collect()
    } else {
        failed
    };
    Some(JobEvent::TaskExited {
        cluster: cluster.to_owned(),
        phase,
        codes,
    })
}

#[cfg(test)]
mod tests;
