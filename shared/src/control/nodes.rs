//! What node agents ask the control plane: their work, their reports, their logs, their
//! buckets' credentials.
//!
//! Every request names a node (job, cluster, rank); [`node_of`] is the one place that checks
//! the node belongs to the job the token was made for: the cluster's name must be one of the
//! job's (`<task>-<job>-<attempt>`) and the rank below the task's node count. What the nodes
//! say is kept as node facts ([`crate::facts`]) in the state table. A report that completes a
//! fact about the whole cluster (every node ready, every node's setup exited 0, any node
//! failed) becomes a job event, applied at once so the next poll of `work` already sees it.

use super::{Context, HandlerError, advance, logs};
use crate::agent_protocol::{
    LogChunk, LogUrls, LogUrlsRequest, MAX_LOG_CHUNKS, MAX_LOG_URLS, Report, Work, WorkAnswer,
};
use crate::facts::{ClusterFacts, ClusterRef, NodeFact};
use crate::job::{JobEvent, JobId, JobRecord, JobStatus, Phase, attempt_of_cluster};
use crate::store::StoreError;

/// How long presigned log URLs are asked to live (credentials may end them sooner; the agent
/// asks again on a 403).
const LOG_URL_LIFETIME: std::time::Duration = std::time::Duration::from_hours(1);

/// Where a node's request lands: its cluster, whether the job still wants that cluster, and
/// the task it runs.
pub struct Node {
    pub at: ClusterRef,
    /// The cluster is the current task's, and the job has not ended.
    pub wanted: bool,
}

/// Checks that `rank` of `cluster` is a node of job `job` (see the module docs). A cluster
/// the job has moved past is still its own (`wanted: false`); a name that is not the job's,
/// or a rank beyond the task's nodes, is [`HandlerError::UnknownNode`].
pub fn node_of(job: &JobRecord, cluster: &str, rank: u32) -> Result<Node, HandlerError> {
    let unknown = || HandlerError::UnknownNode {
        job_id: job.id,
        cluster: cluster.to_owned(),
        rank,
    };
    let attempt = attempt_of_cluster(cluster, job.id).ok_or_else(unknown)?;
    let task = job.task_of_cluster(cluster);
    // An abandoned cluster's task is unknown to the record; its nodes get `Stop` anyway.
    let index = task.unwrap_or(job.current_task);
    if rank >= job.task_spec(index).num_nodes {
        return Err(unknown());
    }
    Ok(Node {
        at: ClusterRef {
            cluster: cluster.to_owned(),
            task: index,
            attempt,
        },
        wanted: task == Some(job.current_task) && !job.is_terminal(),
    })
}

/// What node `rank` of `cluster` should do now. Also records that it is alive. `started` is
/// the latest phase the agent has started: the task is not sent again for it.
pub async fn work(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
    rank: u32,
    started: Option<Phase>,
) -> Result<WorkAnswer, HandlerError> {
    let stop = WorkAnswer {
        work: Work::Stop,
        live_logs: false,
    };
    let job = match ctx.store.get_job(job_id).await {
        Ok(job) => job,
        Err(StoreError::NotFound { .. }) => return Ok(stop),
        Err(e) => return Err(e.into()),
    };
    let node = node_of(&job, cluster, rank)?;
    if !node.wanted {
        return Ok(stop);
    }
    let now = ctx.clock.now();
    ctx.store
        .record_node(job_id, &node.at, rank, NodeFact::Seen(now))
        .await?;
    let state = &job.tasks[node.at.task];
    let work = match state.status {
        JobStatus::Running => {
            let phase = state.phase.unwrap_or(Phase::Setup);
            if started.is_some_and(|s| s >= phase) {
                Work::Continue
            } else {
                let task =
                    super::node_task::node_task(ctx, &job, node.at.task, cluster, rank).await?;
                match phase {
                    Phase::Setup => Work::Setup { task },
                    Phase::Run => Work::Run { task },
                }
            }
        }
        JobStatus::Starting | JobStatus::Recovering => Work::Wait,
        _ => Work::Stop,
    };
    let live_logs = ctx
        .store
        .followed_until(job_id)
        .await?
        .is_some_and(|until| until > now);
    Ok(WorkAnswer { work, live_logs })
}

/// Records a node's report and, when it completes a cluster-wide fact, advances the job.
#[tracing::instrument(name = "node_report", skip_all, fields(job_id = job_id, cluster = cluster, rank = rank))]
pub async fn report(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
    rank: u32,
    report: &Report,
) -> Result<(), HandlerError> {
    let job = ctx.store.get_job(job_id).await?;
    let node = node_of(&job, cluster, rank)?;
    if job.task_of_cluster(cluster).is_none() {
        // One of the job's clusters it no longer knows: tell the step, which tears it down.
        return advance(
            ctx,
            job_id,
            JobEvent::NodeReady {
                cluster: cluster.to_owned(),
            },
        )
        .await;
    }
    let nodes = job.task_spec(node.at.task).num_nodes as usize;
    let cluster_owned = cluster.to_owned();
    let record = |fact| ctx.store.record_node(job_id, &node.at, rank, fact);
    let event = match *report {
        Report::Ready => {
            record(NodeFact::Ready).await?;
            let facts = cluster_facts(ctx, job_id, &node.at).await?;
            (facts.ready() >= nodes).then_some(JobEvent::NodeReady {
                cluster: cluster_owned,
            })
        }
        Report::Started { phase } => {
            record(NodeFact::Started(phase)).await?;
            Some(match phase {
                Phase::Setup => JobEvent::SetupStarted {
                    cluster: cluster_owned,
                },
                Phase::Run => JobEvent::RunStarted {
                    cluster: cluster_owned,
                },
            })
        }
        Report::Spawned { phase, pid } => {
            record(NodeFact::Spawned { phase, pid }).await?;
            None
        }
        Report::Exited {
            phase,
            code,
            chunks,
        } => {
            record(NodeFact::Exited {
                phase,
                code,
                chunks,
            })
            .await?;
            // The stored codes, not the reported one: the first report of a node wins.
            let exits = cluster_facts(ctx, job_id, &node.at).await?.exits(phase);
            let failed: Vec<i32> = exits.values().copied().filter(|c| *c != 0).collect();
            if failed.is_empty() {
                (exits.len() >= nodes).then(|| JobEvent::TaskExited {
                    cluster: cluster_owned,
                    phase,
                    codes: exits.values().copied().collect(),
                })
            } else {
                // One node failing fails the task (gang semantics): no need to wait for the rest.
                Some(JobEvent::TaskExited {
                    cluster: cluster_owned,
                    phase,
                    codes: failed,
                })
            }
        }
    };
    match event {
        Some(event) => advance(ctx, job_id, event).await,
        None => Ok(()),
    }
}

async fn cluster_facts(
    ctx: &Context,
    job_id: JobId,
    at: &ClusterRef,
) -> Result<ClusterFacts, HandlerError> {
    Ok(ctx
        .store
        .cluster_facts(job_id, &at.cluster)
        .await?
        .unwrap_or_else(|| ClusterFacts::empty(at)))
}

/// Stores a piece of a node's output posted through the API (stores without presigned URLs).
pub async fn log(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
    rank: u32,
    chunk: &LogChunk,
) -> Result<(), HandlerError> {
    let job = ctx.store.get_job(job_id).await?;
    let node = node_of(&job, cluster, rank)?;
    if job.task_of_cluster(cluster).is_none() {
        // Output of a cluster the job has moved past: not shown.
        return Ok(());
    }
    let key = logs::chunk_key(job_id, &node.at, chunk.phase, rank, chunk.seq);
    ctx.blobs.put(&key, chunk.data.clone().into_bytes()).await?;
    Ok(())
}

/// Presigned URLs for a node's next log chunks, when the blob store has them.
pub async fn log_urls(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
    rank: u32,
    request: &LogUrlsRequest,
) -> Result<LogUrls, HandlerError> {
    let job = ctx.store.get_job(job_id).await?;
    let node = node_of(&job, cluster, rank)?;
    let mut urls = Vec::new();
    if node.wanted {
        let count = u64::from(request.count.min(MAX_LOG_URLS));
        let end = request.first_seq.saturating_add(count).min(MAX_LOG_CHUNKS);
        for seq in request.first_seq..end {
            let key = logs::chunk_key(job_id, &node.at, request.phase, rank, seq);
            match ctx.blobs.upload_url(&key, LOG_URL_LIFETIME, None).await? {
                Some(target) => urls.push(target.url),
                None => break,
            }
        }
    }
    Ok(LogUrls {
        first_seq: request.first_seq,
        urls,
    })
}

/// The job's data identity for node `rank` of `cluster` (see [`crate::buckets`]): `None`
/// when its task mounts no S3 bucket. A cluster the job no longer wants gets nothing.
pub async fn credentials(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
    rank: u32,
) -> Result<Option<crate::agent_protocol::DataCredentials>, HandlerError> {
    let job = ctx.store.get_job(job_id).await?;
    let node = node_of(&job, cluster, rank)?;
    if !node.wanted {
        return Err(HandlerError::UnknownNode {
            job_id,
            cluster: cluster.to_owned(),
            rank,
        });
    }
    super::buckets::credentials(ctx, job_id, job.task_spec(node.at.task))
        .await
        .map_err(|e| HandlerError::Unfinished {
            job_id,
            what: format!("data credentials: {e}"),
        })
}
