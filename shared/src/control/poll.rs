//! The poll sweep: compare every active job with what the clouds and its nodes say, and emit
//! the events that close the gap. Level-triggered: it is never told why it runs, and running
//! it twice is harmless (every event it emits is one `step` ignores when already applied).
//!
//! One `describe_region` per (cloud, region) in use, never one call per job. What it catches:
//! - a preempted or failed cluster (`Preempted`, `HeartbeatLost`), or nodes that stopped
//!   polling for work (`HeartbeatLost`);
//! - work a crash dropped: a launch the record says is under way that the cloud has never seen
//!   (launched again, same name), node facts whose event never made it (`NodeReady`,
//!   `TaskExited`), a backoff that is due, a teardown that did not finish;
//! - orphans: a Stratus cluster that no active task wants is torn down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use tracing::{debug, info};

use super::{Context, HandlerError, advance, agent};
use crate::cloud::Cloud;
use crate::job::{JobEvent, JobRecord, JobStatus, Phase};
use crate::provider::{ClusterHealth, ClusterState};

/// A launch decided this recently may still be in flight: it is not re-driven yet.
const REDRIVE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Jobs swept at once.
const CONCURRENCY: usize = 32;

/// What one sweep did, for logs and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollStats {
    pub active_jobs: usize,
    pub describe_calls: usize,
    pub events: usize,
    pub orphans_terminated: usize,
}

/// Sweeps every active job once.
pub async fn poll(ctx: &Context) -> Result<PollStats, HandlerError> {
    let now = ctx.clock.now();
    let active = ctx.store.list_active().await?;
    let mut stats = PollStats {
        active_jobs: active.len(),
        ..PollStats::default()
    };

    let mut regions: BTreeSet<(Cloud, String)> = BTreeSet::new();
    for job in &active {
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
    let mut clusters: BTreeMap<String, ClusterState> = BTreeMap::new();
    let mut listed: BTreeSet<(Cloud, String)> = BTreeSet::new();
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

    let wanted: BTreeSet<String> = active
        .iter()
        .filter_map(|job| job.tasks[job.current_task].cluster.clone())
        .collect();
    // Jobs are independent: sweep them a batch at a time, so that 10,000 active jobs take
    // about 10,000 / CONCURRENCY round trips of latency rather than 10,000.
    let clusters = Arc::new(clusters);
    let listed = Arc::new(listed);
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut sweeps = JoinSet::new();
    for job in active {
        let (ctx, clusters, listed) = (ctx.clone(), clusters.clone(), listed.clone());
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        sweeps.spawn(async move {
            let _permit = permit;
            let mut events = 0;
            for event in decide(&ctx, &job, &clusters, &listed, now).await? {
                events += 1;
                debug!(job_id = job.id, ?event, "poll found news");
                advance(&ctx, job.id, event).await?;
            }
            Ok::<usize, HandlerError>(events)
        });
    }
    while let Some(done) = sweeps.join_next().await {
        stats.events += done.expect("a sweep task panicked")?;
    }

    for (name, state) in clusters.iter() {
        if wanted.contains(name) || matches!(state.health, ClusterHealth::Terminated) {
            continue;
        }
        let Some(provider) = ctx.providers.get(&cloud_of(&listed, &state.region)) else {
            continue;
        };
        info!(cluster = %name, job_id = state.job_id, "tearing down a cluster no active task wants");
        if provider.terminate(&state.region, name).await.is_ok() {
            stats.orphans_terminated += 1;
        }
    }
    Ok(stats)
}

fn cloud_of(listed: &BTreeSet<(Cloud, String)>, region: &str) -> Cloud {
    listed
        .iter()
        .find(|(_, r)| r == region)
        .map_or(Cloud::Local, |(c, _)| *c)
}

/// The events that bring `job` in line with the world.
async fn decide(
    ctx: &Context,
    job: &JobRecord,
    clusters: &BTreeMap<String, ClusterState>,
    listed: &BTreeSet<(Cloud, String)>,
    now: crate::clock::Timestamp,
) -> Result<Vec<JobEvent>, HandlerError> {
    let t = job.current_task;
    let task = &job.tasks[t];
    if job.next_attempt_at.is_some_and(|at| at <= now) {
        return Ok(vec![JobEvent::BackoffElapsed]);
    }
    let Some(cluster) = task.cluster.clone() else {
        return Ok(vec![]);
    };
    let candidate = task.candidate.and_then(|i| job.candidates[t].get(i));
    // Without a listing of the cluster's region there is nothing to compare with this time.
    let region_listed = candidate.is_some_and(|c| listed.contains(&(c.cloud, c.region.clone())));
    if !region_listed {
        return Ok(vec![]);
    }
    let state = clusters.get(&cluster);
    let health = state.map(|s| &s.health);
    let lost = |health: Option<&ClusterHealth>| match health {
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
    Ok(match task.status {
        JobStatus::Starting | JobStatus::Recovering => {
            let launched = task.launch.as_ref().is_some_and(|w| w.launched);
            match (launched, state) {
                // The launch was decided but the cloud never saw it (a crash between the write
                // and the call): launch again, under the same name.
                (false, None) => {
                    let in_flight = task
                        .launch
                        .as_ref()
                        .and_then(|w| w.since)
                        .is_some_and(|since| now.since(since) < REDRIVE_AFTER);
                    if let Some(index) = task.candidate.filter(|_| !in_flight) {
                        info!(
                            job_id = job.id,
                            cluster, "re-driving a launch the cloud has not seen"
                        );
                        advance::launch(ctx, job, t, &cluster, index).await?;
                    }
                    vec![]
                }
                (_, Some(_)) if lost(health).is_none() => {
                    let mut events = Vec::new();
                    if !launched {
                        events.push(JobEvent::ClusterLaunched {
                            cluster: cluster.clone(),
                        });
                    }
                    let ready = facts(ctx, job, &cluster, "ready").await?;
                    if ready.len() >= job.task_spec(t).num_nodes as usize {
                        events.push(JobEvent::NodeReady {
                            cluster: cluster.clone(),
                        });
                    }
                    events
                }
                (true, _) => lost(health).into_iter().collect(),
                (false, Some(_)) => vec![],
            }
        }
        JobStatus::Running => {
            if let Some(event) = lost(health) {
                return Ok(vec![event]);
            }
            let facts = agent::node_facts(ctx, job.id, &cluster).await?;
            let mut events = exited(job, &facts, &cluster, task.phase.unwrap_or(Phase::Setup));
            if events.is_empty() {
                let seen = facts.last_seen();
                let latest = seen.iter().max().copied();
                let since = task.running_since.or(task.started_at);
                let judged = now.since(ctx.settings.started_at) > ctx.settings.heartbeat_timeout;
                let quiet = judged
                    && latest
                        .or(since)
                        .is_some_and(|at| now.since(at) > ctx.settings.heartbeat_timeout);
                if quiet {
                    events.push(JobEvent::HeartbeatLost { cluster });
                }
            }
            events
        }
        JobStatus::Cancelling => match health {
            None | Some(ClusterHealth::Terminated) => vec![JobEvent::ClusterTerminated { cluster }],
            Some(_) => vec![JobEvent::CancelRequested],
        },
        _ => vec![],
    })
}

/// A `TaskExited` the node facts support but the job has not seen (lost in a crash).
fn exited(job: &JobRecord, facts: &agent::NodeFacts, cluster: &str, phase: Phase) -> Vec<JobEvent> {
    let exits = facts.get(&format!("{phase}.exit"));
    let nodes = job.task_spec(job.current_task).num_nodes as usize;
    let failed: Vec<i32> = exits.values().copied().filter(|c| *c != 0).collect();
    let codes = if failed.is_empty() {
        if exits.len() < nodes {
            return vec![];
        }
        exits.values().copied().collect()
    } else {
        failed
    };
    vec![JobEvent::TaskExited {
        cluster: cluster.to_owned(),
        phase,
        codes,
    }]
}

async fn facts(
    ctx: &Context,
    job: &JobRecord,
    cluster: &str,
    fact: &str,
) -> Result<BTreeMap<u32, i32>, HandlerError> {
    agent::facts(ctx, job.id, cluster, fact).await
}
