//! What node agents ask the control plane: their work, their reports, their logs.
//!
//! Node facts live in blob storage, one small write-once object per fact
//! (`jobs/<id>/nodes/<cluster>/<rank>/ready`, `.../setup.exit`, ...), so concurrent requests
//! from the nodes never read-modify-write the same object. A report that completes a fact about
//! the whole cluster (every node ready, every node's setup exited 0, any node failed) becomes a
//! job event, applied at once so the next poll of `work` already sees its effect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Context, HandlerError, advance, logs};
use crate::agent_protocol::{LogChunk, MountSource, NodeMount, NodeTask, Report, Work};
use crate::clock::Timestamp;
use crate::job::{JobEvent, JobId, JobRecord, JobStatus, Phase};
use crate::provider::NodeInfo;
use crate::spec::{self, StorageMode, StorageSource, Workdir};
use crate::store::StoreError;

fn node_prefix(job_id: JobId, cluster: &str, rank: u32) -> String {
    format!("jobs/{job_id}/nodes/{cluster}/{rank}/")
}

/// The cluster's node addresses, written when it launches (for `SKYPILOT_NODE_IPS`).
pub(super) fn ips_key(job_id: JobId, cluster: &str) -> String {
    format!("jobs/{job_id}/nodes/{cluster}/ips.json")
}

/// The local paths the CLI uploaded for a job, and their blob keys.
pub fn uploads_key(job_id: JobId) -> String {
    format!("jobs/{job_id}/uploads.json")
}

/// Records the addresses of a freshly launched cluster's nodes.
pub(super) async fn record_nodes(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
    nodes: &[NodeInfo],
) -> Result<(), HandlerError> {
    let bytes = serde_json::to_vec(nodes).expect("node infos serialize");
    ctx.blobs.put(&ips_key(job_id, cluster), bytes).await?;
    Ok(())
}

/// What node `rank` of `cluster` should do now. Also records that it is alive.
pub async fn work(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
    rank: u32,
) -> Result<Work, HandlerError> {
    let job = match ctx.store.get_job(job_id).await {
        Ok(job) => job,
        Err(StoreError::NotFound { .. }) => return Ok(Work::Stop),
        Err(e) => return Err(e.into()),
    };
    let now = ctx.clock.now();
    let Some(task) = job.task_of_cluster(cluster) else {
        return Ok(Work::Stop);
    };
    let state = &job.tasks[task];
    if task != job.current_task || job.is_terminal() {
        return Ok(Work::Stop);
    }
    ctx.blobs
        .put(
            &format!("{}seen", node_prefix(job_id, cluster, rank)),
            now.as_millis().to_string().into_bytes(),
        )
        .await?;
    Ok(match state.status {
        JobStatus::Running => {
            let node_task = node_task(ctx, &job, task, cluster, rank).await?;
            if state.phase == Some(Phase::Run) {
                Work::Run { task: node_task }
            } else {
                Work::Setup { task: node_task }
            }
        }
        JobStatus::Starting | JobStatus::Recovering => Work::Wait,
        _ => Work::Stop,
    })
}

/// Records a node's report and, when it completes a cluster-wide fact, advances the job.
pub async fn report(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
    rank: u32,
    report: &Report,
) -> Result<(), HandlerError> {
    let job = ctx.store.get_job(job_id).await?;
    let Some(task) = job.task_of_cluster(cluster) else {
        // A cluster the job no longer knows: tell the step so it tears it down.
        return advance(
            ctx,
            job_id,
            JobEvent::NodeReady {
                cluster: cluster.to_owned(),
            },
        )
        .await;
    };
    let nodes = job.task_spec(task).num_nodes;
    let prefix = node_prefix(job_id, cluster, rank);
    let cluster_owned = cluster.to_owned();
    let event = match *report {
        Report::Ready => {
            ctx.blobs.put(&format!("{prefix}ready"), Vec::new()).await?;
            let ready = facts(ctx, job_id, cluster, "ready").await?;
            (ready.len() >= nodes as usize).then_some(JobEvent::NodeReady {
                cluster: cluster_owned,
            })
        }
        Report::Started { phase } => {
            ctx.blobs
                .put(&format!("{prefix}{phase}.started"), Vec::new())
                .await?;
            Some(match phase {
                Phase::Setup => JobEvent::SetupStarted {
                    cluster: cluster_owned,
                },
                Phase::Run => JobEvent::RunStarted {
                    cluster: cluster_owned,
                },
            })
        }
        Report::Exited { phase, code } => {
            ctx.blobs
                .put(
                    &format!("{prefix}{phase}.exit"),
                    code.to_string().into_bytes(),
                )
                .await?;
            if code == 0 {
                let exits = facts(ctx, job_id, cluster, &format!("{phase}.exit")).await?;
                let codes: Vec<i32> = exits.values().copied().collect();
                (codes.len() >= nodes as usize).then_some(JobEvent::TaskExited {
                    cluster: cluster_owned,
                    phase,
                    codes,
                })
            } else {
                // One node failing fails the task (gang semantics): no need to wait for the rest.
                Some(JobEvent::TaskExited {
                    cluster: cluster_owned,
                    phase,
                    codes: vec![code],
                })
            }
        }
    };
    match event {
        Some(event) => advance(ctx, job_id, event).await,
        None => Ok(()),
    }
}
/// What a cluster's nodes have recorded, read with one listing.
#[derive(Debug, Default)]
pub(super) struct NodeFacts {
    /// Per fact name (`ready`, `setup.exit`, `run.exit`, `seen`, ...): rank → its value as a
    /// number (0 when it has none).
    facts: BTreeMap<String, BTreeMap<u32, i64>>,
}

impl NodeFacts {
    /// The ranks that recorded `fact`, with its value.
    pub(super) fn get(&self, fact: &str) -> BTreeMap<u32, i32> {
        self.facts
            .get(fact)
            .map(|ranks| {
                ranks
                    .iter()
                    .map(|(r, v)| (*r, i32::try_from(*v).unwrap_or(i32::MAX)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When each node last polled for work.
    pub(super) fn last_seen(&self) -> Vec<Timestamp> {
        self.facts
            .get("seen")
            .map(|ranks| {
                ranks
                    .values()
                    .map(|ms| Timestamp::from_millis(*ms))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Facts with a value worth reading (the others are markers).
fn has_value(fact: &str) -> bool {
    matches!(fact, "seen" | "setup.exit" | "run.exit")
}

/// Everything the nodes of `cluster` recorded: one listing, then one read per valued fact.
pub(super) async fn node_facts(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
) -> Result<NodeFacts, HandlerError> {
    let prefix = format!("jobs/{job_id}/nodes/{cluster}/");
    let mut found = NodeFacts::default();
    for key in ctx.blobs.list(&prefix).await? {
        let Some((rank, name)) = key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let Ok(rank) = rank.parse::<u32>() else {
            continue;
        };
        let value = if has_value(name) {
            ctx.blobs
                .get(&key)
                .await?
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        } else {
            0
        };
        found
            .facts
            .entry(name.to_owned())
            .or_default()
            .insert(rank, value);
    }
    Ok(found)
}

/// The ranks that have recorded `fact` for this cluster, with the fact's value.
pub(super) async fn facts(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
    fact: &str,
) -> Result<BTreeMap<u32, i32>, HandlerError> {
    Ok(node_facts(ctx, job_id, cluster).await?.get(fact))
}

/// Stores a piece of a node's output.
pub async fn log(
    ctx: &Context,
    job_id: JobId,
    cluster: &str,
    rank: u32,
    chunk: &LogChunk,
) -> Result<(), HandlerError> {
    let job = ctx.store.get_job(job_id).await?;
    let Some(task) = job.task_of_cluster(cluster) else {
        // Output of a cluster the job has moved past: not shown.
        return Ok(());
    };
    let attempt = job.tasks[task].attempt;
    let key = logs::chunk_key(job_id, task, attempt, chunk.phase, rank, chunk.seq);
    ctx.blobs.put(&key, chunk.data.clone().into_bytes()).await?;
    Ok(())
}

/// Uploaded local paths (as written in the task) and their blob keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Uploads(pub BTreeMap<String, String>);

async fn uploads(ctx: &Context, job_id: JobId) -> Result<Uploads, HandlerError> {
    Ok(ctx
        .blobs
        .get(&uploads_key(job_id))
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default())
}

/// The task as node `rank` runs it: commands, every variable, workdir and mounts.
async fn node_task(
    ctx: &Context,
    job: &JobRecord,
    task: usize,
    cluster: &str,
    rank: u32,
) -> Result<NodeTask, HandlerError> {
    let spec = job.task_spec(task);
    let state = &job.tasks[task];
    let candidate = state.candidate.and_then(|i| job.candidates[task].get(i));
    let nodes: Vec<NodeInfo> = ctx
        .blobs
        .get(&ips_key(job.id, cluster))
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let ips: Vec<String> = if nodes.is_empty() {
        (0..spec.num_nodes)
            .map(|r| format!("127.0.0.{}", r + 1))
            .collect()
    } else {
        nodes.iter().map(|n| n.ip.clone()).collect()
    };
    let gpus = candidate
        .and_then(|c| c.accelerator.as_ref())
        .map_or(0, |(_, count)| *count);
    let task_ids: Vec<String> = (0..job.tasks.len())
        .map(|i| job.skypilot_task_id(i))
        .collect();
    let cluster_info = serde_json::json!({
        "cluster_name": cluster,
        "cloud": candidate.map(|c| c.cloud.display_name()),
        "region": candidate.map(|c| c.region.clone()),
        "zone": candidate.map(|c| c.zone.clone()),
    });

    let mut env = BTreeMap::new();
    for (k, v) in &spec.envs {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in &spec.secrets {
        env.insert(k.clone(), v.expose().to_owned());
    }
    let node_ips = ips.join("\n");
    let fixed = [
        ("SKYPILOT_TASK_ID", job.skypilot_task_id(task)),
        ("SKYPILOT_TASK_IDS", task_ids.join("\n")),
        ("SKYPILOT_JOB_ID", job.id.to_string()),
        ("SKYPILOT_MANAGED_JOB_ID", job.id.to_string()),
        ("SKYPILOT_JOB_RANK", "0".to_owned()),
        ("SKYPILOT_NODE_RANK", rank.to_string()),
        ("SKYPILOT_NUM_NODES", ips.len().to_string()),
        ("SKYPILOT_NODE_IPS", node_ips.clone()),
        ("SKYPILOT_NUM_GPUS_PER_NODE", gpus.to_string()),
        ("SKYPILOT_SETUP_NODE_RANK", rank.to_string()),
        ("SKYPILOT_SETUP_NODE_IPS", node_ips),
        ("SKYPILOT_SETUP_NUM_GPUS_PER_NODE", gpus.to_string()),
        ("SKYPILOT_CLUSTER_INFO", cluster_info.to_string()),
        ("SKYPILOT_USER", job.owner.clone()),
    ];
    for (k, v) in fixed {
        env.insert(k.to_owned(), v);
    }

    let uploads = uploads(ctx, job.id).await?;
    let workdir_archive = match &spec.workdir {
        Some(Workdir::Local(path)) => uploads.0.get(path).cloned(),
        _ => None,
    };
    let mounts = spec
        .file_mounts
        .iter()
        .filter_map(|m| node_mount(ctx, &uploads, m))
        .collect();
    Ok(NodeTask {
        env,
        setup: spec.setup.clone(),
        run: spec.run.clone(),
        workdir_archive,
        mounts,
    })
}

fn node_mount(ctx: &Context, uploads: &Uploads, mount: &spec::FileMount) -> Option<NodeMount> {
    let bucket_folder = |store: &str, bucket: &str, key: &str| {
        let root = ctx.settings.local_buckets.as_ref()?;
        let mut path = root.join(store).join(bucket);
        if !key.is_empty() {
            path = path.join(key);
        }
        Some(path.to_string_lossy().into_owned())
    };
    let source = match &mount.source {
        spec::MountSource::Local(path) => MountSource::Archive {
            key: uploads.0.get(path)?.clone(),
        },
        spec::MountSource::Bucket(url) => MountSource::LocalFolder {
            path: bucket_folder(url.store.scheme(), &url.bucket, &url.key)?,
            copy: true,
        },
        spec::MountSource::Storage(storage) => {
            let copy = storage.mode == StorageMode::Copy;
            let bucket = storage.sources.iter().find_map(|s| match s {
                StorageSource::Bucket(url) => Some(url.clone()),
                StorageSource::Local(_) => None,
            });
            match (&storage.name, bucket) {
                (_, Some(url)) => MountSource::LocalFolder {
                    path: bucket_folder(url.store.scheme(), &url.bucket, &url.key)?,
                    copy,
                },
                (Some(name), None) => MountSource::LocalFolder {
                    path: bucket_folder(storage.store.map_or("s3", |s| s.scheme()), name, "")?,
                    copy,
                },
                (None, None) => return None,
            }
        }
    };
    Some(NodeMount {
        destination: mount.destination.clone(),
        source,
    })
}
