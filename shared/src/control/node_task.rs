//! The task as a node runs it ([`NodeTask`]): commands, every variable (SkyPilot's
//! `SKYPILOT_*` among them), the node addresses, the workdir and mounts as the node fetches
//! them, and the container for `image_id: docker:...`. `control::nodes::work` hands it out.

use std::collections::BTreeMap;

use super::uploads::{self, Uploads};
use super::{Context, HandlerError};
use crate::agent_protocol::{MountSource, NodeMount, NodeTask};
use crate::facts::{ClusterFact, ClusterRef};
use crate::job::{JobRecord, attempt_of_cluster};
use crate::provider::NodeInfo;
use crate::spec::{self, StorageMode, Workdir};

/// The task as node `rank` runs it: commands, every variable, workdir and mounts.
pub(super) async fn node_task(
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
