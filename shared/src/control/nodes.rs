//! What node agents ask the control plane: their work, their reports, their logs.
//!
//! Every request names a node (job, cluster, rank); [`node_of`] is the one place that checks
//! the node belongs to the job the token was made for: the cluster's name must be one of the
//! job's (`<task>-<job>-<attempt>`) and the rank below the task's node count. What the nodes
//! say is kept as node facts ([`crate::facts`]) in the state table. A report that completes a
//! fact about the whole cluster (every node ready, every node's setup exited 0, any node
//! failed) becomes a job event, applied at once so the next poll of `work` already sees it.

use std::collections::BTreeMap;

use super::uploads::{self, Uploads};
use super::{Context, HandlerError, advance, logs};
use crate::agent_protocol::{
    LogChunk, LogUrls, LogUrlsRequest, MAX_LOG_CHUNKS, MAX_LOG_URLS, MountSource, NodeMount,
    NodeTask, Report, Work, WorkAnswer,
};
use crate::facts::{ClusterFact, ClusterFacts, ClusterRef, NodeFact};
use crate::job::{JobEvent, JobId, JobRecord, JobStatus, Phase, attempt_of_cluster};
use crate::provider::NodeInfo;
use crate::spec::{self, StorageMode, Workdir};
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
                let task = node_task(ctx, &job, node.at.task, cluster, rank).await?;
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
    let mut nodes: Vec<NodeInfo> = ctx
        .store
        .cluster_facts(job.id, cluster)
        .await?
        .map(|facts| facts.nodes)
        .unwrap_or_default();
    let incomplete = nodes.len() < spec.num_nodes as usize || nodes.iter().any(|n| n.ip.is_empty());
    let attempt = attempt_of_cluster(cluster, job.id);
    if let (true, Some(candidate), Some(attempt)) = (incomplete, candidate, attempt) {
        // A launch that answered before its machines had addresses (GCE inserts still
        // running): every node is up now, so the cloud knows them all.
        if let Some(found) = addresses(ctx, candidate, cluster).await {
            let at = ClusterRef {
                cluster: cluster.to_owned(),
                task,
                attempt,
            };
            ctx.store
                .record_cluster(job.id, &at, ClusterFact::Launched(found.clone()))
                .await?;
            nodes = found;
        }
    }
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
        // SkyPilot's `--num-jobs`: the member's rank and the array's size (0 and 1 alone).
        (
            "SKYPILOT_JOB_RANK",
            job.array.map_or(0, |a| a.rank).to_string(),
        ),
        (
            "SKYPILOT_NUM_JOBS",
            job.array.map_or(1, |a| a.size).to_string(),
        ),
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

    let uploads = uploads::read(ctx.blobs.as_ref(), job.id).await?;
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
        container: container(spec, candidate),
    })
}

/// The container setup and run execute in: `image_id: docker:<image>` of the candidate's
/// resources on a cloud (the local cloud runs commands in place), with SkyPilot's registry
/// login variables when the task sets all three.
pub fn container(
    spec: &spec::Task,
    candidate: Option<&crate::optimizer::Candidate>,
) -> Option<crate::agent_protocol::Container> {
    let candidate = candidate?;
    if candidate.cloud == crate::cloud::Cloud::Local {
        return None;
    }
    let image = super::image_of(spec, candidate)?;
    let image = image.strip_prefix("docker:")?.trim();
    let var = |name: &str| {
        spec.envs
            .get(name)
            .cloned()
            .or_else(|| spec.secrets.get(name).map(|s| s.expose().to_owned()))
            .filter(|v| !v.is_empty())
    };
    let registry = match (
        var("SKYPILOT_DOCKER_SERVER"),
        var("SKYPILOT_DOCKER_USERNAME"),
        var("SKYPILOT_DOCKER_PASSWORD"),
    ) {
        (Some(server), Some(username), Some(password)) => {
            Some(crate::agent_protocol::RegistryLogin {
                server,
                username,
                password: spec::Secret::new(password),
            })
        }
        _ => None,
    };
    // SkyPilot puts the server in front of an image that does not name it.
    let image = match &registry {
        Some(login) if !image.starts_with(&login.server) => format!("{}/{image}", login.server),
        _ => image.to_owned(),
    };
    Some(crate::agent_protocol::Container { image, registry })
}

fn node_mount(ctx: &Context, uploads: &Uploads, mount: &spec::FileMount) -> Option<NodeMount> {
    let source = match (&mount.source, super::buckets::mounted_one(mount)) {
        (spec::MountSource::Local(path), _) => MountSource::Archive {
            key: uploads.0.get(path)?.clone(),
        },
        (_, None) => return None,
        (_, Some(bucket)) => match &ctx.settings.local_buckets {
            // On the local cloud a bucket is a folder that outlives clusters.
            Some(root) => {
                let mut path = root.join(bucket.store.scheme()).join(&bucket.bucket);
                if !bucket.prefix.is_empty() {
                    path = path.join(&bucket.prefix);
                }
                MountSource::LocalFolder {
                    path: path.to_string_lossy().into_owned(),
                    copy: bucket.mode == StorageMode::Copy,
                }
            }
            // On cloud nodes it is the bucket itself (submit refused what cannot reach them).
            None => match bucket.store {
                spec::Store::S3 => MountSource::S3 {
                    bucket: bucket.bucket,
                    prefix: bucket.prefix,
                    mode: bucket.mode,
                },
                spec::Store::Gcs => MountSource::Gcs {
                    bucket: bucket.bucket,
                    prefix: bucket.prefix,
                    mode: bucket.mode,
                },
            },
        },
    };
    Some(NodeMount {
        destination: mount.destination.clone(),
        source,
    })
}

/// The nodes of `cluster` as its cloud lists them now, if it lists all of them with addresses.
async fn addresses(
    ctx: &Context,
    candidate: &crate::optimizer::Candidate,
    cluster: &str,
) -> Option<Vec<NodeInfo>> {
    let provider = ctx.providers.get(&candidate.cloud)?;
    match provider.describe_region(&candidate.region).await {
        Ok(states) => {
            let mut nodes = states.into_iter().find(|s| s.cluster == cluster)?.nodes;
            nodes.sort_by_key(|n| n.rank);
            (!nodes.is_empty() && nodes.iter().all(|n| !n.ip.is_empty())).then_some(nodes)
        }
        Err(e) => {
            tracing::warn!(cluster, error = %e, "cannot list the cluster's addresses; using what the launch recorded");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Cloud;

    fn candidate(cloud: Cloud) -> crate::optimizer::Candidate {
        crate::optimizer::Candidate {
            cloud,
            region: "us-east-1".into(),
            zone: "us-east-1a".into(),
            instance_type: "m6i.large".into(),
            vcpus: 2.0,
            memory_gb: 8.0,
            accelerator: None,
            use_spot: false,
            hourly_price: 0.1,
            num_nodes: 1,
            alternative: 0,
        }
    }

    fn task(yaml: &str) -> spec::Task {
        spec::load(yaml, &spec::Overrides::default())
            .unwrap()
            .pipeline
            .tasks
            .remove(0)
    }

    #[test]
    fn containers() {
        let plain = task("resources:\n  image_id: docker:ubuntu:22.04\nrun: x\n");
        let aws = candidate(Cloud::Aws);
        let got = container(&plain, Some(&aws)).unwrap();
        assert_eq!(got.image, "ubuntu:22.04");
        assert_eq!(got.registry, None);
        // The local cloud runs commands in place; an AMI is no container.
        assert_eq!(container(&plain, Some(&candidate(Cloud::Local))), None);
        let ami = task("resources:\n  image_id: ami-0123\nrun: x\n");
        assert_eq!(container(&ami, Some(&aws)), None);
        // SkyPilot's registry variables, the server put in front of the image.
        let private = task(
            "resources:\n  image_id: {us-east-1: 'docker:team/app:1'}\nenvs:\n  SKYPILOT_DOCKER_SERVER: reg.example.com\n  SKYPILOT_DOCKER_USERNAME: robot\nsecrets:\n  SKYPILOT_DOCKER_PASSWORD: hunter2\nrun: x\n",
        );
        let got = container(&private, Some(&aws)).unwrap();
        assert_eq!(got.image, "reg.example.com/team/app:1");
        let login = got.registry.unwrap();
        assert_eq!(
            (
                login.server.as_str(),
                login.username.as_str(),
                login.password.expose()
            ),
            ("reg.example.com", "robot", "hunter2")
        );
    }
}
