//! The AWS cloud: a cluster is one EC2 reservation, `num_nodes` instances started by a single
//! `RunInstances` (all or nothing), spot or on-demand, in the candidate's zone of the region's
//! default VPC.
//!
//! Why one file of this length: it is the [`Provider`](crate::provider::Provider) port on
//! EC2, one method per operation; the pure parts (user data, health, errors) already live in
//! the modules beside it.
//!
//! # Launch
//! 1. Instances tagged `stratus-cluster=<cluster>` that are not terminated: if there are any,
//!    they are the answer (a retry after a crash or a timeout).
//! 2. The image: `image_id` when it is an `ami-...`; otherwise the latest Amazon Linux 2023
//!    from the public SSM parameter [`Ec2Settings::ami_parameter`], or for a candidate with
//!    GPUs AWS's Deep Learning Base AMI (NVIDIA driver, CUDA) from
//!    [`Ec2Settings::gpu_ami_parameter`] (a `docker:` image also boots that AMI: the agent
//!    runs the container).
//! 3. Where the nodes go: the default VPC's subnet of the zone, unless the region has an
//!    [`Ec2Network`] naming a VPC or subnets (then their subnet in the zone; none there is
//!    [`ProviderError::Unavailable`], as is a region with no default VPC, so the walk moves on
//!    with the reason). The security groups: the network's own, else
//!    [`Ec2Settings::security_group_name`] in that VPC, made once per region and shared by
//!    every cluster: all traffic from members of the group, no other inbound rule (no SSH, no
//!    key pair: the agent pulls its work), the default egress.
//! 4. One `RunInstances`: `MinCount = MaxCount = num_nodes`, the candidate's instance type
//!    and zone, `ClientToken` = the cluster name (or its hash past 64 characters),
//!    `InstanceMarketOptions` (one-time spot, terminate on interruption) for spot, `IMDSv2`
//!    required, the root volume sized to `disk_size_gb` when set (deleted with the instance),
//!    the optional [`Ec2Settings::instance_profile`], and the boot script of `user_data()`
//!    (download the agent from the API with the job's token, start it with the agent variables;
//!    the rank is the instance's `AmiLaunchIndex`).
//!
//! Instances and their volumes are tagged at creation (in the same call): `stratus-job-id`,
//! `stratus-cluster`, `stratus-task`, `stratus-owner`, `stratus-nodes` (the node count),
//! `Name=<cluster>`, and the task's labels (a label may not override these).
//!
//! # Guarantees
//! - **Launch is idempotent per cluster name**, twice over: `ClientToken` makes EC2 answer a
//!   retried `RunInstances` with the first call's reservation, and the tag lookup before it
//!   returns live instances of the cluster without calling `RunInstances` at all.
//! - **Tags from the first moment**: they are part of `RunInstances`, so no instance exists
//!   untagged, and `describe_region` and `terminate` find a launch that half ran.
//! - **One listing per region**: `describe_region` is one paginated `DescribeInstances` with
//!   the filter `tag-key=stratus-cluster`, whatever the number of jobs.
//! - **Intent first**: `terminate` tags the instances `stratus-state=terminating` before
//!   `TerminateInstances`, so `describe_region` says Terminated (not Failed or Preempted)
//!   while they shut down. Terminating a cluster with no live instance succeeds.
//! - Errors are sorted by `error::classify`: capacity and quota move on to the next candidate,
//!   throttling backs off (the SDK retries it first, with jitter), auth fails prechecks.
//!
//! # Health
//! See [`health::health`]: terminating tag → Terminated; a spot `StateReason`
//! (`Server.SpotInstanceTermination`) or any spot instance gone → Preempted; another
//! instance gone → Failed with its `StateReason`; a rank missing → Failed; any pending →
//! Pending; else Running.
//!
//! # Caveats
//! - The agent token is in the user data, which anyone allowed
//!   `ec2:DescribeInstanceAttribute` in the account can read. It is valid for one job only.
//! - Terminated instances stay listed for about an hour; after that a cluster whose
//!   instances are all gone is no longer in `describe_region` (the poll treats it as
//!   vanished).
//! - The security group is never deleted (every cluster of the region shares it). It is
//!   cached per region for the provider's life; a launch that fails on an
//!   `InvalidGroup.*` error drops the cache, so the next one makes it again.
//! - `DescribeInstances` is eventually consistent: the tag lookup may miss instances started
//!   a moment ago; `ClientToken` covers that window on AWS. (moto ignores `ClientToken`, so on
//!   the emulator only the lookup protects a retry.)
//! - The agent runs as root and is not restarted if it dies; the heartbeat timeout notices.
//! - The SDK's standard retry (3 attempts, jittered backoff) also retries the HTTP 500 that
//!   EC2 answers `InsufficientInstanceCapacity` with, which is safe under `ClientToken` but
//!   spends two more `RunInstances` tokens (that bucket refills at 2/s) before moving on.
//!
//! # Layout
//! - `error`: `classify` of error codes and the SDK error → [`ProviderError`] mapping.
//! - `user_data`: the boot script, [`agent_env_from_user_data`], base64, `ClientToken`.
//! - `health`: instances → [`ClusterState`]s, a pure function.

mod error;
mod health;
mod user_data;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::Region;
use aws_sdk_ec2::types::builders::FilterBuilder;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    Instance, InstanceInterruptionBehavior, InstanceLifecycleType, InstanceMarketOptionsRequest,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, IpPermission, MarketType,
    Placement, ResourceType, SecurityGroup, SpotInstanceType, SpotMarketOptions, Tag,
    TagSpecification,
};
use tracing::{Instrument, debug, info, info_span, warn};

use self::error::{api_error, code_of};
use self::health::{InstanceFacts, cluster_states};
pub use self::user_data::{agent_env_from_user_data, decode_user_data, user_data};
use self::user_data::{base64_encode, client_token};
use super::{ClusterSpec, ClusterState, NodeInfo, Provider, ProviderError};
use crate::cloud::Cloud;

/// The tags Stratus puts on instances and volumes: the marks every cloud uses, and EC2's
/// console name.
pub(crate) mod tags {
    pub use crate::provider::marks::{CLUSTER, JOB_ID, NODES, OWNER, STATE, TASK, TERMINATING};
    /// The console's name column.
    pub const NAME: &str = "Name";
}

/// States of an instance that `launch` takes as the cluster already being there.
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];
/// States `terminate` acts on (a shutting-down instance is already on its way out, and keeps
/// its reason: a spot reclaim stays Preempted).
const TERMINABLE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// How the EC2 provider sets up nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Settings {
    /// The per-region security group every cluster's nodes share.
    pub security_group_name: String,
    /// The public SSM parameter naming the default AMI of CPU candidates.
    pub ami_parameter: String,
    /// The public SSM parameter naming the default AMI of GPU candidates (NVIDIA driver and
    /// CUDA installed).
    pub gpu_ami_parameter: String,
    /// An IAM instance profile for the nodes (a name, or an `arn:`); none by default (the agent
    /// needs no AWS credentials).
    pub instance_profile: Option<String>,
    /// Per region, where the nodes go when not in the default VPC (see [`Ec2Network`]).
    pub networks: BTreeMap<String, Ec2Network>,
}

/// Where one region's nodes go, instead of the default VPC's subnet of the zone and the
/// Stratus security group. Written as JSON per region, e.g.
/// `{"us-west-2": {"subnet_ids": ["subnet-0a1", "subnet-0b2"]}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Network {
    /// A VPC: the nodes go in its subnet of the candidate's zone, and the Stratus security
    /// group is made in it.
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// Subnets: the nodes go in the one of the candidate's zone (a zone without one cannot
    /// host the launch, and the next candidate is tried).
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// Security groups for the nodes instead of the Stratus group. They must let a cluster's
    /// nodes reach each other and the nodes reach the Stratus API (HTTPS out).
    #[serde(default)]
    pub security_group_ids: Vec<String>,
}

impl Ec2Network {
    /// Reads the per-region networks from JSON (`{"<region>": {...}}`); the error names the
    /// region and the field.
    pub fn parse_all(json: &str) -> Result<BTreeMap<String, Ec2Network>, String> {
        if json.trim().is_empty() {
            return Ok(BTreeMap::new());
        }
        let networks: BTreeMap<String, Ec2Network> = serde_json::from_str(json).map_err(|e| {
            format!(
                "{e}: expected {{\"<region>\": {{\"vpc_id\": \"vpc-...\", \"subnet_ids\": [\"subnet-...\"], \"security_group_ids\": [\"sg-...\"]}}}} (every field optional)"
            )
        })?;
        for (region, network) in &networks {
            let bad = |field: &str, id: &str, prefix: &str| {
                Err(format!("{region}.{field}: '{id}' is not a {prefix}... id"))
            };
            if let Some(vpc) = &network.vpc_id
                && !vpc.starts_with("vpc-")
            {
                return bad("vpc_id", vpc, "vpc-");
            }
            if let Some(id) = network
                .subnet_ids
                .iter()
                .find(|i| !i.starts_with("subnet-"))
            {
                return bad("subnet_ids", id, "subnet-");
            }
            if let Some(id) = network
                .security_group_ids
                .iter()
                .find(|i| !i.starts_with("sg-"))
            {
                return bad("security_group_ids", id, "sg-");
            }
        }
        Ok(networks)
    }

    fn names_placement(&self) -> bool {
        self.vpc_id.is_some() || !self.subnet_ids.is_empty()
    }
}

impl Ec2Settings {
    pub const DEFAULT_SECURITY_GROUP: &str = "stratus-cluster";
    /// Amazon Linux 2023: dnf, curl and the AWS CLI.
    pub const DEFAULT_AMI_PARAMETER: &str =
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
    /// AWS's Deep Learning Base AMI on the same Amazon Linux 2023: the NVIDIA driver, CUDA,
    /// cuDNN, NCCL, EFA and the NVIDIA container toolkit.
    pub const DEFAULT_GPU_AMI_PARAMETER: &str = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id";

    /// The SSM parameter naming the default AMI of `candidate`: the GPU image for a
    /// candidate with accelerators.
    pub fn ami_parameter_for(&self, candidate: &crate::optimizer::Candidate) -> &str {
        if candidate.accelerator.is_some() {
            &self.gpu_ami_parameter
        } else {
            &self.ami_parameter
        }
    }

    /// The defaults.
    pub fn new() -> Self {
        Self {
            security_group_name: Self::DEFAULT_SECURITY_GROUP.to_owned(),
            ami_parameter: Self::DEFAULT_AMI_PARAMETER.to_owned(),
            gpu_ami_parameter: Self::DEFAULT_GPU_AMI_PARAMETER.to_owned(),
            instance_profile: None,
            networks: BTreeMap::new(),
        }
    }
}

impl Default for Ec2Settings {
    fn default() -> Self {
        Self::new()
    }
}

/// The AWS cloud's [`Provider`]: EC2 instances in any region, one SDK client per region.
#[derive(Debug)]
pub struct Ec2Provider {
    base: aws_config::SdkConfig,
    settings: Ec2Settings,
    regions: Mutex<HashMap<String, Regional>>,
}

/// A region's clients and, once ensured, its security group id.
#[derive(Debug, Clone)]
struct Regional {
    ec2: Client,
    ssm: aws_sdk_ssm::Client,
    security_group: Option<String>,
}

impl Ec2Provider {
    /// A provider whose per-region clients come from `base` (credentials, retry settings, and
    /// the endpoint from `AWS_ENDPOINT_URL` for an emulator) with the region replaced.
    pub fn new(base: &aws_config::SdkConfig, settings: Ec2Settings) -> Self {
        Self {
            base: base.clone(),
            settings,
            regions: Mutex::new(HashMap::new()),
        }
    }

    /// A provider with the SDK configured from the environment.
    pub async fn from_env(settings: Ec2Settings) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(&config, settings)
    }

    pub fn settings(&self) -> &Ec2Settings {
        &self.settings
    }

    /// The clients of `region`, made on first use.
    fn regional(&self, region: &str) -> Regional {
        let mut regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        regions
            .entry(region.to_owned())
            .or_insert_with(|| {
                let ec2 = aws_sdk_ec2::config::Builder::from(&self.base)
                    .region(Region::new(region.to_owned()))
                    .build();
                let ssm = aws_sdk_ssm::config::Builder::from(&self.base)
                    .region(aws_sdk_ssm::config::Region::new(region.to_owned()))
                    .build();
                Regional {
                    ec2: Client::from_conf(ec2),
                    ssm: aws_sdk_ssm::Client::from_conf(ssm),
                    security_group: None,
                }
            })
            .clone()
    }

    fn remember_security_group(&self, region: &str, group: Option<String>) {
        let mut regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = regions.get_mut(region) {
            r.security_group = group;
        }
    }

    async fn launch_now(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        check(spec)?;
        let c = &spec.candidate;
        let regional = self.regional(&c.region);
        let client = &regional.ec2;

        let existing = find_cluster(client, &c.region, &spec.cluster, &LIVE_STATES).await?;
        if !existing.is_empty() {
            return already_launched(spec, &existing);
        }

        let image = self.image(&regional, spec).await?;
        let network = self.settings.networks.get(&c.region);
        let subnet = match network.filter(|n| n.names_placement()) {
            Some(network) => Some(subnet_in_zone(client, &c.region, &c.zone, network).await?),
            None => None,
        };
        let groups = match (network, regional.security_group) {
            (Some(n), _) if !n.security_group_ids.is_empty() => n.security_group_ids.clone(),
            (_, Some(id)) => vec![id],
            (_, None) => {
                let vpc = subnet.as_ref().map(|(_, vpc)| vpc.as_str());
                let id = ensure_security_group(client, &c.region, vpc, &self.settings).await?;
                self.remember_security_group(&c.region, Some(id.clone()));
                vec![id]
            }
        };
        let root_device = match spec.disk_size_gb {
            Some(_) => Some(root_device_name(client, &c.region, &image).await?),
            None => None,
        };

        let what = format!(
            "EC2 RunInstances in {} ({} x {})",
            c.zone,
            spec.num_nodes,
            c.instance_label()
        );
        let mut request = client
            .run_instances()
            .image_id(&image)
            .instance_type(c.instance_type.as_str().into())
            .min_count(i32::try_from(spec.num_nodes).unwrap_or(i32::MAX))
            .max_count(i32::try_from(spec.num_nodes).unwrap_or(i32::MAX))
            .client_token(client_token(&spec.cluster))
            .placement(Placement::builder().availability_zone(&c.zone).build())
            .set_security_group_ids(Some(groups))
            .set_subnet_id(subnet.map(|(id, _)| id))
            .user_data(base64_encode(user_data(spec).as_bytes()))
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_tokens(HttpTokensState::Required)
                    .build(),
            )
            .tag_specifications(tag_specification(ResourceType::Instance, spec))
            .tag_specifications(tag_specification(ResourceType::Volume, spec));
        if c.use_spot {
            request = request.instance_market_options(spot_options());
        }
        if let (Some(size), Some(device)) = (spec.disk_size_gb, root_device) {
            request = request.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(device)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(i32::try_from(size).unwrap_or(i32::MAX))
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        if let Some(profile) = &self.settings.instance_profile {
            let spec = IamInstanceProfileSpecification::builder();
            let spec = if profile.starts_with("arn:") {
                spec.arn(profile)
            } else {
                spec.name(profile)
            };
            request = request.iam_instance_profile(spec.build());
        }
        let output = match request.send().await {
            Ok(output) => output,
            Err(e) => {
                if code_of(&e).is_some_and(|code| code.starts_with("InvalidGroup")) {
                    self.remember_security_group(&c.region, None);
                }
                let err = api_error(&what, e);
                warn!(zone = %c.zone, instance_type = %c.instance_type, spot = c.use_spot, error = %err, "EC2 launch failed");
                return Err(err);
            }
        };
        let nodes = node_infos(output.instances());
        info!(zone = %c.zone, instance_type = %c.instance_type, spot = c.use_spot, nodes = nodes.len(), image = %image, "launched EC2 cluster");
        Ok(nodes)
    }

    /// The AMI for `spec`: its `ami-` image, or the one the SSM parameter names.
    async fn image(
        &self,
        regional: &Regional,
        spec: &ClusterSpec,
    ) -> Result<String, ProviderError> {
        match spec.image_id.as_deref() {
            Some(ami) if ami.starts_with("ami-") => return Ok(ami.to_owned()),
            Some(docker) if docker.starts_with("docker:") => {
                // The container is the agent's job: the machine boots the default AMI.
                info!(
                    image = docker,
                    "a docker task boots the default AMI; the agent runs the container"
                );
            }
            Some(other) => {
                return Err(ProviderError::Invalid {
                    message: format!(
                        "resources.image_id: '{other}' is neither an AMI id (ami-...) nor a \
                         docker image (docker:...)"
                    ),
                });
            }
            None => {}
        }
        let parameter = self.settings.ami_parameter_for(&spec.candidate);
        let what = format!("SSM GetParameter {parameter} in {}", spec.candidate.region);
        let output = regional
            .ssm
            .get_parameter()
            .name(parameter)
            .send()
            .await
            .map_err(|e| api_error(&what, e))?;
        output
            .parameter()
            .and_then(|p| p.value())
            .filter(|v| v.starts_with("ami-"))
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::Invalid {
                message: format!("{what}: the parameter does not name an AMI"),
            })
    }

    async fn describe_now(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        let client = self.regional(region).ec2;
        let mut pages = client
            .describe_instances()
            .filters(filter("tag-key", [tags::CLUSTER]))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut instances = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| api_error(&format!("EC2 DescribeInstances in {region}"), e))?;
            for reservation in page.reservations() {
                instances.extend(reservation.instances().iter().map(facts));
            }
        }
        let states = cluster_states(region, instances);
        debug!(clusters = states.len(), "described EC2 region");
        Ok(states)
    }

    async fn terminate_now(&self, region: &str, cluster: &str) -> Result<(), ProviderError> {
        let client = self.regional(region).ec2;
        let instances = find_cluster(&client, region, cluster, &TERMINABLE_STATES).await?;
        let ids: Vec<String> = instances
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        if ids.is_empty() {
            debug!("no live EC2 instances to terminate");
            return Ok(());
        }
        let tagged = client
            .create_tags()
            .set_resources(Some(ids.clone()))
            .tags(tag(tags::STATE, tags::TERMINATING))
            .send()
            .await;
        if let Err(e) = tagged
            && !code_of(&e).is_some_and(|c| c.starts_with("InvalidInstanceID.NotFound"))
        {
            return Err(api_error(&format!("EC2 CreateTags in {region}"), e));
        }
        let terminated = client
            .terminate_instances()
            .set_instance_ids(Some(ids.clone()))
            .send()
            .await;
        match terminated {
            Ok(_) => {}
            // Already gone (or not yet visible to this endpoint): nothing left to do.
            Err(e) if code_of(&e).is_some_and(|c| c.starts_with("InvalidInstanceID.NotFound")) => {}
            Err(e) => return Err(api_error(&format!("EC2 TerminateInstances in {region}"), e)),
        }
        info!(instances = ?ids, "terminating EC2 cluster");
        Ok(())
    }
}

#[async_trait]
impl Provider for Ec2Provider {
    fn cloud(&self) -> Cloud {
        Cloud::Aws
    }

    async fn launch(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        let span = info_span!("ec2_launch", cluster = %spec.cluster, job_id = spec.job_id, region = %spec.candidate.region);
        self.launch_now(spec).instrument(span).await
    }

    async fn describe_region(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        let span = info_span!("ec2_describe", region);
        self.describe_now(region).instrument(span).await
    }

    async fn terminate(&self, region: &str, cluster: &str) -> Result<(), ProviderError> {
        let span = info_span!("ec2_terminate", cluster, region);
        self.terminate_now(region, cluster).instrument(span).await
    }
}

/// Rejects what EC2 would reject anyway, with a better message.
fn check(spec: &ClusterSpec) -> Result<(), ProviderError> {
    let c = &spec.candidate;
    let invalid = |message: String| Err(ProviderError::Invalid { message });
    if c.cloud != Cloud::Aws {
        return invalid(format!("the EC2 provider cannot launch {c}"));
    }
    if spec.num_nodes == 0 || i32::try_from(spec.num_nodes).is_err() {
        return invalid(format!("EC2: num_nodes {} is not valid", spec.num_nodes));
    }
    if spec.cluster.is_empty() {
        return invalid("EC2: the cluster name is empty".to_owned());
    }
    Ok(())
}

/// The answer to a launch whose instances exist: theirs, unless they are another job's.
fn already_launched(
    spec: &ClusterSpec,
    existing: &[Instance],
) -> Result<Vec<NodeInfo>, ProviderError> {
    let job = spec.job_id.to_string();
    let owner = existing.iter().find_map(|i| {
        i.tags()
            .iter()
            .find(|t| t.key() == Some(tags::JOB_ID))
            .and_then(Tag::value)
    });
    if owner.is_some_and(|o| o != job) {
        return Err(ProviderError::Invalid {
            message: format!(
                "EC2: cluster {} belongs to job {}, not {job}",
                spec.cluster,
                owner.unwrap_or_default()
            ),
        });
    }
    debug!(instances = existing.len(), "EC2 cluster already launched");
    Ok(node_infos(existing))
}

/// Instances tagged with `cluster` in one of `states`.
async fn find_cluster(
    client: &Client,
    region: &str,
    cluster: &str,
    states: &[&str],
) -> Result<Vec<Instance>, ProviderError> {
    let mut pages = client
        .describe_instances()
        .filters(filter(&format!("tag:{}", tags::CLUSTER), [cluster]))
        .filters(filter("instance-state-name", states.iter().copied()))
        .into_paginator()
        .send();
    let mut instances = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            api_error(
                &format!("EC2 DescribeInstances of {cluster} in {region}"),
                e,
            )
        })?;
        for reservation in page.reservations() {
            instances.extend(reservation.instances().iter().cloned());
        }
    }
    Ok(instances)
}

/// The subnet (and its VPC) of `network` in `zone`: one of its `subnet_ids`, else one of its
/// VPC's. None there means the zone cannot host the launch.
async fn subnet_in_zone(
    client: &Client,
    region: &str,
    zone: &str,
    network: &Ec2Network,
) -> Result<(String, String), ProviderError> {
    let mut request = client
        .describe_subnets()
        .filters(filter("availability-zone", [zone]));
    let (what, filter) = if network.subnet_ids.is_empty() {
        let vpc = network.vpc_id.clone().unwrap_or_default();
        (format!("of {vpc}"), filter("vpc-id", [vpc.as_str()]))
    } else {
        (
            format!("among {}", network.subnet_ids.join(", ")),
            filter("subnet-id", network.subnet_ids.iter().map(String::as_str)),
        )
    };
    request = request.filters(filter);
    let subnets = request
        .send()
        .await
        .map_err(|e| api_error(&format!("EC2 DescribeSubnets in {region}"), e))?;
    let mut found: Vec<(String, String)> = subnets
        .subnets()
        .iter()
        .filter_map(|s| Some((s.subnet_id()?.to_owned(), s.vpc_id()?.to_owned())))
        .collect();
    // The same subnet whichever call asks: launches of one region land alike.
    found.sort();
    found
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Unavailable {
            message: format!(
                "EC2: no subnet {what} is in zone {zone} (add one of that zone to the region's \
             network settings, or leave the zone out)"
            ),
        })
}

/// The id of the cluster security group in `vpc` (by default `region`'s default VPC), made
/// (with its one inbound rule: everything from the group itself) if missing. Safe to race: a
/// duplicate group or rule counts as made.
async fn ensure_security_group(
    client: &Client,
    region: &str,
    vpc: Option<&str>,
    settings: &Ec2Settings,
) -> Result<String, ProviderError> {
    let name = &settings.security_group_name;
    let vpc = match vpc {
        Some(vpc) => vpc.to_owned(),
        None => default_vpc(client, region).await?,
    };
    let vpc = vpc.as_str();
    let group = if let Some(group) = find_group(client, region, vpc, name).await? {
        group
    } else {
        let created = client
            .create_security_group()
            .group_name(name)
            .description("Stratus clusters: members reach each other; no other inbound")
            .vpc_id(vpc)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .tags(tag(tags::NAME, name))
                    .build(),
            )
            .send()
            .await;
        match created {
            Ok(_) => info!(group = %name, vpc, "created the EC2 cluster security group"),
            Err(e) if code_of(&e) == Some("InvalidGroup.Duplicate") => {}
            Err(e) => {
                return Err(api_error(
                    &format!("EC2 CreateSecurityGroup {name} in {region}"),
                    e,
                ));
            }
        }
        find_group(client, region, vpc, name)
            .await?
            .ok_or_else(|| ProviderError::Other {
                context: format!(
                    "EC2: security group {name} in {region} not found after creating it"
                ),
                source: "not found".into(),
            })?
    };
    let id = group.group_id().unwrap_or_default().to_owned();
    let has_self_rule = group.ip_permissions().iter().any(|p| {
        p.ip_protocol() == Some("-1")
            && p.user_id_group_pairs()
                .iter()
                .any(|pair| pair.group_id() == Some(id.as_str()))
    });
    if !has_self_rule {
        let rule = IpPermission::builder()
            .ip_protocol("-1")
            .user_id_group_pairs(
                aws_sdk_ec2::types::UserIdGroupPair::builder()
                    .group_id(&id)
                    .build(),
            )
            .build();
        let authorized = client
            .authorize_security_group_ingress()
            .group_id(&id)
            .ip_permissions(rule)
            .send()
            .await;
        match authorized {
            Ok(_) => debug!(group = %id, "allowed traffic within the cluster security group"),
            Err(e) if code_of(&e) == Some("InvalidPermission.Duplicate") => {}
            Err(e) => {
                return Err(api_error(
                    &format!("EC2 AuthorizeSecurityGroupIngress {id} in {region}"),
                    e,
                ));
            }
        }
    }
    Ok(id)
}

/// The default VPC of `region`; none is [`ProviderError::Unavailable`], with the fixes.
async fn default_vpc(client: &Client, region: &str) -> Result<String, ProviderError> {
    let vpcs = client
        .describe_vpcs()
        .filters(filter("is-default", ["true"]))
        .send()
        .await
        .map_err(|e| api_error(&format!("EC2 DescribeVpcs in {region}"), e))?;
    vpcs.vpcs()
        .iter()
        .find_map(|v| v.vpc_id())
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::Unavailable {
            message: format!(
                "EC2: region {region} has no default VPC (create one with `aws ec2 \
                 create-default-vpc --region {region}`, or name a VPC or subnets for \
                 {region} in the stack's Ec2Networks parameter)"
            ),
        })
}

async fn find_group(
    client: &Client,
    region: &str,
    vpc: &str,
    name: &str,
) -> Result<Option<SecurityGroup>, ProviderError> {
    let groups = client
        .describe_security_groups()
        .filters(filter("group-name", [name]))
        .filters(filter("vpc-id", [vpc]))
        .send()
        .await
        .map_err(|e| api_error(&format!("EC2 DescribeSecurityGroups in {region}"), e))?;
    Ok(groups.security_groups().first().cloned())
}

/// The root device of `image` (`/dev/xvda` on Amazon Linux), to size the root volume.
async fn root_device_name(
    client: &Client,
    region: &str,
    image: &str,
) -> Result<String, ProviderError> {
    let what = format!("EC2 DescribeImages {image} in {region}");
    let images = client
        .describe_images()
        .image_ids(image)
        .send()
        .await
        .map_err(|e| api_error(&what, e))?;
    images
        .images()
        .first()
        .and_then(|i| i.root_device_name())
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::Invalid {
            message: format!("{what}: no such image, or it has no root device"),
        })
}

fn spot_options() -> InstanceMarketOptionsRequest {
    InstanceMarketOptionsRequest::builder()
        .market_type(MarketType::Spot)
        .spot_options(
            SpotMarketOptions::builder()
                .spot_instance_type(SpotInstanceType::OneTime)
                .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                .build(),
        )
        .build()
}

/// The tags of `spec`'s instances and volumes: the labels, then Stratus's own (which a label
/// may not override).
fn cluster_tags(spec: &ClusterSpec) -> BTreeMap<String, String> {
    let ours = [
        (tags::JOB_ID, spec.job_id.to_string()),
        (tags::CLUSTER, spec.cluster.clone()),
        (tags::TASK, spec.task.to_string()),
        (tags::OWNER, spec.owner.clone()),
        (tags::NODES, spec.num_nodes.to_string()),
        (tags::NAME, spec.cluster.clone()),
    ];
    let mut all: BTreeMap<String, String> = spec.labels.clone();
    for (key, value) in ours {
        if let Some(label) = all.insert(key.to_owned(), value) {
            warn!(key, label = %label, "a label cannot override a Stratus tag: ignored");
        }
    }
    all
}

fn tag_specification(resource: ResourceType, spec: &ClusterSpec) -> TagSpecification {
    cluster_tags(spec)
        .into_iter()
        .fold(
            TagSpecification::builder().resource_type(resource),
            |b, (k, v)| b.tags(tag(&k, &v)),
        )
        .build()
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn filter<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> Filter {
    values
        .into_iter()
        .fold(Filter::builder().name(name), FilterBuilder::values)
        .build()
}

fn node_infos(instances: &[Instance]) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = instances
        .iter()
        .map(|i| NodeInfo {
            rank: launch_index(i),
            instance_id: i.instance_id().unwrap_or_default().to_owned(),
            ip: i.private_ip_address().unwrap_or_default().to_owned(),
        })
        .collect();
    nodes.sort_by(|a, b| (a.rank, &a.instance_id).cmp(&(b.rank, &b.instance_id)));
    nodes
}

fn launch_index(instance: &Instance) -> u32 {
    instance
        .ami_launch_index()
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(0)
}

/// What health needs of an SDK instance.
fn facts(instance: &Instance) -> InstanceFacts {
    let reason = instance.state_reason().and_then(|r| {
        let code = r.code().filter(|c| !c.is_empty())?;
        Some((code.to_owned(), r.message().unwrap_or_default().to_owned()))
    });
    InstanceFacts {
        instance_id: instance.instance_id().unwrap_or_default().to_owned(),
        state: instance
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        reason,
        spot: instance.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
        tags: instance
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect(),
        zone: instance
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_owned(),
        launch_index: launch_index(instance),
        private_ip: instance.private_ip_address().map(str::to_owned),
    }
}
