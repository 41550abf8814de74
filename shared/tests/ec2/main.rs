//! The EC2 provider against an AWS emulator (moto) at `AWS_ENDPOINT_URL`, with a fault-injecting
//! proxy for the errors an emulator cannot produce (capacity, throttling, auth).
//!
//! `scripts/test` starts moto and sets `AWS_ENDPOINT_URL`; by hand:
//! `.venv/bin/moto_server -p 4599 & AWS_ENDPOINT_URL=http://127.0.0.1:4599 cargo test -p shared
//! --features aws --test ec2`. Tests run in parallel against one emulator, so each uses
//! cluster names of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::types::{
    EbsInstanceBlockDevice, Filter, HttpTokensState, Instance, InstanceAttributeName,
    InstanceLifecycleType,
};
use shared::cloud::Cloud;
use shared::optimizer::Candidate;
use shared::provider::{
    AgentBoot, ClusterHealth, ClusterSpec, ClusterState, Ec2Provider, Ec2Settings, NodeInfo,
    Provider, ProviderError, agent_env_from_user_data, decode_user_data,
};

use shared::testing::aws_proxy::{self as proxy, Fault};

fn endpoint() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        !endpoint.is_empty(),
        "AWS_ENDPOINT_URL is not set: the EC2 provider tests need an AWS emulator. Run \
         scripts/test (it starts moto), or start one (`.venv/bin/moto_server -p 4599`) and \
         export AWS_ENDPOINT_URL=http://127.0.0.1:4599"
    );
    endpoint
}

/// SDK settings for the emulator at `endpoint`: fake credentials (never a real account), and
/// quick retries so that retried faults keep the tests fast.
async fn config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "stratus-tests",
        ))
        .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(5)))
        .load()
        .await
}

struct Fixture {
    provider: Ec2Provider,
    /// The emulator's EC2 in the default region, to read back what the provider did.
    ec2: aws_sdk_ec2::Client,
    endpoint: String,
}

impl Fixture {
    async fn new() -> Self {
        let endpoint = endpoint();
        Self::at(&endpoint, &endpoint).await
    }

    /// The provider talks to `via` (a proxy, or the emulator); reads go to the emulator.
    async fn at(endpoint: &str, via: &str) -> Self {
        let provider = Ec2Provider::new(&config(via).await, Ec2Settings::new());
        let ec2 = aws_sdk_ec2::Client::new(&config(endpoint).await);
        Self {
            provider,
            ec2,
            endpoint: endpoint.to_owned(),
        }
    }

    fn ec2_in(&self, region: &str) -> aws_sdk_ec2::Client {
        let conf = self
            .ec2
            .config()
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_ec2::Client::from_conf(conf)
    }

    /// Every instance tagged with `cluster` in `region`, any state, by launch index.
    async fn instances(&self, region: &str, cluster: &str) -> Vec<Instance> {
        let out = self
            .ec2_in(region)
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("tag:stratus-cluster")
                    .values(cluster)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let mut all: Vec<Instance> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().cloned())
            .collect();
        all.sort_by_key(Instance::ami_launch_index);
        all
    }

    async fn state(&self, region: &str, cluster: &str) -> Option<ClusterState> {
        self.provider
            .describe_region(region)
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.cluster == cluster)
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A cluster name no other test (or earlier run against the same emulator) uses.
fn unique(prefix: &str) -> String {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000_000;
    format!(
        "{prefix}-{}-{stamp}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn spec(cluster: &str, zone: &str, nodes: u32, spot: bool) -> ClusterSpec {
    let region = zone[..zone.len() - 1].to_owned();
    ClusterSpec {
        job_id: 4242,
        task: 0,
        cluster: cluster.to_owned(),
        owner: "alice".to_owned(),
        candidate: Candidate {
            cloud: Cloud::Aws,
            region,
            zone: zone.to_owned(),
            instance_type: "m5.large".to_owned(),
            vcpus: 2.0,
            memory_gb: 8.0,
            accelerator: None,
            use_spot: spot,
            hourly_price: 0.096,
            num_nodes: nodes,
            alternative: 0,
        },
        num_nodes: nodes,
        agent: AgentBoot {
            api_url: "https://api.example.com".to_owned(),
            token: "job-token".to_owned(),
            cadence: shared::agent_protocol::AgentCadence::CLOUD,
        },
        labels: BTreeMap::new(),
        image_id: None,
        disk_size_gb: None,
    }
}

fn tags(instance: &Instance) -> BTreeMap<String, String> {
    instance
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn ids(nodes: &[NodeInfo]) -> Vec<&str> {
    nodes.iter().map(|n| n.instance_id.as_str()).collect()
}

#[tokio::test]
async fn launch_on_demand_with_tags_disk_and_user_data() {
    let f = Fixture::new().await;
    let cluster = unique("od");
    let mut s = spec(&cluster, "us-east-1b", 1, false);
    s.disk_size_gb = Some(77);
    s.labels = BTreeMap::from([("team".to_owned(), "ml".to_owned())]);
    let nodes = f.provider.launch(&s).await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].rank, 0);
    assert!(!nodes[0].ip.is_empty(), "{nodes:?}");

    let instances = f.instances("us-east-1", &cluster).await;
    assert_eq!(ids(&nodes), [instances[0].instance_id().unwrap()]);
    let i = &instances[0];
    assert_eq!(i.instance_type().unwrap().as_str(), "m5.large");
    assert_eq!(
        i.placement().unwrap().availability_zone(),
        Some("us-east-1b")
    );
    assert_eq!(i.instance_lifecycle(), None, "on-demand");
    assert_eq!(
        i.metadata_options().and_then(|m| m.http_tokens()),
        Some(&HttpTokensState::Required)
    );
    // The default AMI is the one the public SSM parameter names.
    let ssm = aws_sdk_ssm::Client::new(&config(&f.endpoint).await);
    let ami = ssm
        .get_parameter()
        .name(Ec2Settings::DEFAULT_AMI_PARAMETER)
        .send()
        .await
        .unwrap();
    assert_eq!(i.image_id(), ami.parameter().unwrap().value());
    let want = BTreeMap::from([
        ("Name", cluster.as_str()),
        ("stratus-cluster", cluster.as_str()),
        ("stratus-job-id", "4242"),
        ("stratus-nodes", "1"),
        ("stratus-owner", "alice"),
        ("stratus-task", "0"),
        ("team", "ml"),
    ])
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect::<BTreeMap<_, _>>();
    assert_eq!(tags(i), want);

    // The root volume: sized, tagged at creation like the instance.
    let volumes = f
        .ec2
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(i.instance_id().unwrap())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let volume = &volumes.volumes()[0];
    assert_eq!(volume.size(), Some(77));
    let root = &i.block_device_mappings()[0];
    assert_eq!(
        root.ebs()
            .and_then(EbsInstanceBlockDevice::delete_on_termination),
        Some(true),
        "{root:?}"
    );
    let volume_tags: BTreeMap<String, String> = volume
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
        .collect();
    assert_eq!(volume_tags, want);

    assert_cluster_security_group(&f, i).await;
    assert_boot_script(&f, i, &cluster).await;

    let state = f.state("us-east-1", &cluster).await.unwrap();
    assert_eq!(state.health, ClusterHealth::Running);
    assert_eq!(state.zone, "us-east-1b");
    f.provider.terminate("us-east-1", &cluster).await.unwrap();
}

/// The cluster security group: everything from itself, nothing else inbound.
async fn assert_cluster_security_group(f: &Fixture, i: &Instance) {
    let group = i.security_groups()[0].group_id().unwrap();
    assert_eq!(i.security_groups()[0].group_name(), Some("stratus-cluster"));
    let groups = f
        .ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .unwrap();
    let rules = groups.security_groups()[0].ip_permissions();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].ip_protocol(), Some("-1"));
    assert!(rules[0].ip_ranges().is_empty(), "{rules:?}");
    assert_eq!(rules[0].user_id_group_pairs()[0].group_id(), Some(group));
}

/// The boot script: the agent's variables and its download URL.
async fn assert_boot_script(f: &Fixture, i: &Instance, cluster: &str) {
    let attribute = f
        .ec2
        .describe_instance_attribute()
        .instance_id(i.instance_id().unwrap())
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let script = decode_user_data(attribute.user_data().unwrap().value().unwrap()).unwrap();
    assert!(script.starts_with("#!/bin/bash\n"), "{script}");
    // The agent comes through the API's agent route, with the job's token.
    assert!(
        script.contains("\"$STRATUS_API_URL/agent/v1/jobs/$STRATUS_JOB_ID/agent\""),
        "{script}"
    );
    assert!(script.contains("meta-data/ami-launch-index"), "{script}");
    let env = agent_env_from_user_data(&script);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        env,
        [
            ("STRATUS_AGENT_HEARTBEAT_MS", "30000"),
            ("STRATUS_AGENT_LOG_CHUNK_BYTES", "262144"),
            ("STRATUS_AGENT_LOG_FLUSH_MS", "300000"),
            ("STRATUS_AGENT_LOG_LIVE_MS", "1000"),
            ("STRATUS_AGENT_POLL_MS", "2000"),
            ("STRATUS_AGENT_TOKEN", "job-token"),
            ("STRATUS_API_URL", "https://api.example.com"),
            ("STRATUS_CLUSTER", cluster),
            ("STRATUS_JOB_ID", "4242"),
            ("STRATUS_NODE_DIR", "/opt/stratus/node"),
            ("STRATUS_TASK_USER", "ec2-user"),
        ]
    );
}

#[tokio::test]
async fn launch_spot_multi_node_is_idempotent() {
    let f = Fixture::new().await;
    let cluster = unique("spot");
    let s = spec(&cluster, "us-east-1c", 3, true);
    let first = f.provider.launch(&s).await.unwrap();
    assert_eq!(first.iter().map(|n| n.rank).collect::<Vec<_>>(), [0, 1, 2]);
    let again = f.provider.launch(&s).await.unwrap();
    assert_eq!(again, first, "a retry returns the same nodes");
    // A fresh provider (a new Lambda) retrying the launch makes nothing new either.
    let other = Fixture::new().await;
    assert_eq!(other.provider.launch(&s).await.unwrap(), first);

    let mut foreign = s.clone();
    foreign.job_id = 1;
    let err = f.provider.launch(&foreign).await.unwrap_err();
    assert!(matches!(err, ProviderError::Invalid { .. }), "{err}");

    let instances = f.instances("us-east-1", &cluster).await;
    assert_eq!(instances.len(), 3, "still 3 instances");
    for (rank, i) in instances.iter().enumerate() {
        assert_eq!(i.ami_launch_index(), Some(i32::try_from(rank).unwrap()));
        assert_eq!(i.instance_lifecycle(), Some(&InstanceLifecycleType::Spot));
        assert_eq!(
            i.placement().unwrap().availability_zone(),
            Some("us-east-1c")
        );
        assert_eq!(tags(i)["stratus-nodes"], "3");
        assert_eq!(i.client_token(), Some(cluster.as_str()), "ClientToken");
    }
    let state = f.state("us-east-1", &cluster).await.unwrap();
    assert_eq!(state.health, ClusterHealth::Running);
    assert_eq!(state.nodes, first);
    f.provider.terminate("us-east-1", &cluster).await.unwrap();
}

#[tokio::test]
async fn image_id_is_honoured_and_checked() {
    let f = Fixture::new().await;
    let images = f
        .ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .unwrap();
    let ami = images.images()[0].image_id().unwrap().to_owned();
    let cluster = unique("ami");
    let mut s = spec(&cluster, "us-east-1a", 1, false);
    s.image_id = Some(ami.clone());
    f.provider.launch(&s).await.unwrap();
    let instances = f.instances("us-east-1", &cluster).await;
    assert_eq!(instances[0].image_id(), Some(ami.as_str()));
    f.provider.terminate("us-east-1", &cluster).await.unwrap();

    let mut bad = spec(&unique("ami-bad"), "us-east-1a", 1, false);
    bad.image_id = Some("ubuntu-22.04".to_owned());
    let err = f.provider.launch(&bad).await.unwrap_err();
    assert!(matches!(err, ProviderError::Invalid { .. }), "{err}");
}

#[tokio::test]
async fn a_gpu_candidate_boots_the_gpu_image() {
    let f = Fixture::new().await;
    // The emulator lacks AWS's Deep Learning AMI parameter: a parameter of the test's own
    // stands in for it, naming an AMI other than the CPU default.
    let images = f
        .ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .unwrap();
    let ssm = aws_sdk_ssm::Client::new(&config(&f.endpoint).await);
    let cpu_ami = ssm
        .get_parameter()
        .name(Ec2Settings::DEFAULT_AMI_PARAMETER)
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap()
        .value
        .unwrap();
    let gpu_ami = images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .find(|id| *id != cpu_ami)
        .unwrap()
        .to_owned();
    let parameter = format!("/stratus-tests/{}/gpu-ami", unique("p"));
    ssm.put_parameter()
        .name(&parameter)
        .value(&gpu_ami)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let settings = Ec2Settings {
        gpu_ami_parameter: parameter,
        ..Ec2Settings::new()
    };
    let provider = Ec2Provider::new(&config(&f.endpoint).await, settings);
    let cluster = unique("gpu");
    let mut s = spec(&cluster, "us-east-1a", 1, false);
    s.candidate.instance_type = "g4dn.xlarge".to_owned();
    s.candidate.accelerator = Some(("T4".to_owned(), 1));
    provider.launch(&s).await.unwrap();
    let instances = f.instances("us-east-1", &cluster).await;
    assert_eq!(instances[0].image_id(), Some(gpu_ami.as_str()));
    provider.terminate("us-east-1", &cluster).await.unwrap();
    // By default that parameter is AWS's Deep Learning Base AMI (NVIDIA driver, CUDA).
    assert_eq!(
        Ec2Settings::new().ami_parameter_for(&s.candidate),
        Ec2Settings::DEFAULT_GPU_AMI_PARAMETER
    );
    assert!(Ec2Settings::DEFAULT_GPU_AMI_PARAMETER.contains("deeplearning"));
}

#[tokio::test]
async fn describe_region_lists_clusters_in_one_call_and_terminate_is_idempotent() {
    let endpoint = endpoint();
    let proxy = proxy::start(&endpoint, None).await;
    let f = Fixture::at(&endpoint, &proxy.url).await;
    let (a, b, west) = (unique("desc-a"), unique("desc-b"), unique("desc-w"));
    let mut spec_b = spec(&b, "us-east-1a", 2, false);
    spec_b.job_id = 4343;
    f.provider
        .launch(&spec(&a, "us-east-1a", 1, true))
        .await
        .unwrap();
    let nodes_b = f.provider.launch(&spec_b).await.unwrap();
    f.provider
        .launch(&spec(&west, "us-west-2a", 1, false))
        .await
        .unwrap();

    let before = proxy.count("DescribeInstances");
    let states = f.provider.describe_region("us-east-1").await.unwrap();
    assert_eq!(
        proxy.count("DescribeInstances") - before,
        1,
        "one listing per region"
    );
    let find = |name: &str| states.iter().find(|s| s.cluster == name).cloned();
    let state_a = find(&a).unwrap();
    assert_eq!(
        (state_a.job_id, state_a.health, state_a.nodes.len()),
        (4242, ClusterHealth::Running, 1)
    );
    let state_b = find(&b).unwrap();
    assert_eq!(
        (
            state_b.job_id,
            state_b.region.as_str(),
            state_b.zone.as_str(),
            &state_b.health
        ),
        (4343, "us-east-1", "us-east-1a", &ClusterHealth::Running)
    );
    assert_eq!(state_b.nodes, nodes_b);
    assert!(find(&west).is_none(), "another region's cluster");
    assert_eq!(
        f.state("us-west-2", &west).await.unwrap().health,
        ClusterHealth::Running
    );

    f.provider.terminate("us-east-1", &b).await.unwrap();
    assert_eq!(
        f.state("us-east-1", &b).await.unwrap().health,
        ClusterHealth::Terminated
    );
    let terminated = f.instances("us-east-1", &b).await;
    assert!(
        terminated
            .iter()
            .all(|i| i.state().unwrap().name().unwrap().as_str() == "terminated"),
        "{terminated:?}"
    );
    f.provider.terminate("us-east-1", &b).await.unwrap();
    f.provider.terminate("us-west-2", &a).await.unwrap();
    f.provider
        .terminate("us-east-1", &unique("never-launched"))
        .await
        .unwrap();
    assert_eq!(
        f.state("us-east-1", &a).await.unwrap().health,
        ClusterHealth::Running,
        "terminating in another region leaves it alone"
    );
    f.provider.terminate("us-east-1", &a).await.unwrap();
    f.provider.terminate("us-west-2", &west).await.unwrap();
}

#[tokio::test]
async fn instances_ended_from_outside_are_failed_or_preempted() {
    let f = Fixture::new().await;
    let (od, sp) = (unique("ext-od"), unique("ext-spot"));
    f.provider
        .launch(&spec(&od, "us-east-1b", 2, false))
        .await
        .unwrap();
    f.provider
        .launch(&spec(&sp, "us-east-1b", 2, true))
        .await
        .unwrap();
    for cluster in [&od, &sp] {
        let victim = f.instances("us-east-1", cluster).await[1]
            .instance_id()
            .unwrap()
            .to_owned();
        f.ec2
            .terminate_instances()
            .instance_ids(victim)
            .send()
            .await
            .unwrap();
    }
    // moto gives an outside termination the reason Client.UserInitiatedShutdown.
    match f.state("us-east-1", &od).await.unwrap().health {
        ClusterHealth::Failed { reason } => {
            assert!(reason.contains("(node 1) terminated"), "{reason}");
        }
        other => panic!("on-demand: {other:?}"),
    }
    match f.state("us-east-1", &sp).await.unwrap().health {
        ClusterHealth::Preempted { reason } => {
            assert!(reason.contains("(node 1) terminated"), "{reason}");
        }
        other => panic!("spot: {other:?}"),
    }
    // Terminating what is left makes both Terminated.
    for cluster in [&od, &sp] {
        f.provider.terminate("us-east-1", cluster).await.unwrap();
        assert_eq!(
            f.state("us-east-1", cluster).await.unwrap().health,
            ClusterHealth::Terminated
        );
    }
}

#[tokio::test]
async fn injected_errors_are_classified_and_create_nothing() {
    let endpoint = endpoint();
    let cases = [
        (500, "InsufficientInstanceCapacity", "no_capacity"),
        (400, "Unsupported", "unavailable"),
        (400, "VPCIdNotSpecified", "unavailable"),
        (400, "SpotMaxPriceTooLow", "no_capacity"),
        (400, "VcpuLimitExceeded", "quota"),
        (400, "MaxSpotInstanceCountExceeded", "quota"),
        (503, "RequestLimitExceeded", "throttled"),
        (401, "AuthFailure", "auth"),
        (403, "UnauthorizedOperation", "auth"),
        (400, "InvalidAMIID.NotFound", "unavailable"),
        (400, "InvalidAMIID.Malformed", "invalid"),
    ];
    let mut runs = Vec::new();
    for (status, code, want) in cases {
        let fault = Fault {
            region: "us-east-1".to_owned(),
            status,
            code,
            times: usize::MAX,
        };
        let proxy = proxy::start(&endpoint, Some(fault)).await;
        let f = Fixture::at(&endpoint, &proxy.url).await;
        let cluster = unique("fault");
        let err = f
            .provider
            .launch(&spec(&cluster, "us-east-1d", 2, true))
            .await
            .unwrap_err();
        let kind = match &err {
            ProviderError::NoCapacity { .. } => "no_capacity",
            ProviderError::Quota { .. } => "quota",
            ProviderError::Auth { .. } => "auth",
            ProviderError::Invalid { .. } => "invalid",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::Throttled { .. } => "throttled",
            ProviderError::Other { .. } => "other",
        };
        assert_eq!(kind, want, "{code}: {err}");
        assert!(err.to_string().contains(code), "{err}");
        assert!(
            f.instances("us-east-1", &cluster).await.is_empty(),
            "{code}: no instance"
        );
        runs.push((code, proxy.count("RunInstances")));
    }
    // The SDK retries what it deems transient (HTTP 5xx, throttling) with backoff before
    // giving up; client errors are not retried.
    let runs: BTreeMap<_, _> = runs.into_iter().collect();
    assert_eq!(runs["AuthFailure"], 1);
    assert_eq!(runs["VcpuLimitExceeded"], 1);
    assert!(runs["RequestLimitExceeded"] > 1, "{runs:?}");
    assert!(runs["InsufficientInstanceCapacity"] > 1, "{runs:?}");
}

#[tokio::test]
async fn a_launch_elsewhere_than_aws_is_invalid() {
    let f = Fixture::new().await;
    let mut s = spec(&unique("local"), "us-east-1a", 1, false);
    s.candidate.cloud = Cloud::Local;
    assert!(matches!(
        f.provider.launch(&s).await,
        Err(ProviderError::Invalid { .. })
    ));
    assert_eq!(f.provider.cloud(), Cloud::Aws);
}

/// A region without a default VPC cannot host a launch: `Unavailable` (the walk moves on),
/// with both fixes in the message. (No other test uses sa-east-1: its VPC is deleted here.)
#[tokio::test]
async fn a_region_without_a_default_vpc_is_unavailable_with_the_fix() {
    let f = Fixture::new().await;
    let ec2 = f.ec2_in("sa-east-1");
    let default = Filter::builder().name("is-default").values("true").build();
    for vpc in ec2
        .describe_vpcs()
        .filters(default)
        .send()
        .await
        .unwrap()
        .vpcs()
    {
        let vpc = vpc.vpc_id().unwrap();
        let in_vpc = Filter::builder().name("vpc-id").values(vpc).build();
        for subnet in ec2
            .describe_subnets()
            .filters(in_vpc)
            .send()
            .await
            .unwrap()
            .subnets()
        {
            ec2.delete_subnet()
                .subnet_id(subnet.subnet_id().unwrap())
                .send()
                .await
                .unwrap();
        }
        ec2.delete_vpc().vpc_id(vpc).send().await.unwrap();
    }
    let err = f
        .provider
        .launch(&spec(&unique("novpc"), "sa-east-1a", 1, false))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("no default VPC") && text.contains("create-default-vpc"),
        "{text}"
    );
}

/// A region's network settings place the nodes in its subnet of the zone, with the Stratus
/// security group made in that VPC; a zone where none of its subnets is cannot host the
/// launch. (No other test uses ca-central-1.)
#[tokio::test]
async fn a_named_subnet_places_the_nodes_and_a_zone_without_one_is_unavailable() {
    let f = Fixture::new().await;
    let ec2 = f.ec2_in("ca-central-1");
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_owned();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.42.1.0/24")
        .availability_zone("ca-central-1a")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_owned();
    let mut settings = Ec2Settings::new();
    settings.networks = shared::provider::Ec2Network::parse_all(&format!(
        r#"{{"ca-central-1": {{"subnet_ids": ["{subnet}"]}}}}"#
    ))
    .unwrap();
    let provider = Ec2Provider::new(&config(&f.endpoint).await, settings);

    let cluster = unique("subnet");
    provider
        .launch(&spec(&cluster, "ca-central-1a", 1, false))
        .await
        .unwrap();
    let instances = f.instances("ca-central-1", &cluster).await;
    assert_eq!(instances[0].subnet_id(), Some(subnet.as_str()));
    assert_eq!(instances[0].vpc_id(), Some(vpc.as_str()));
    let group = instances[0].security_groups()[0].group_id().unwrap();
    let groups = ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .unwrap();
    let group = &groups.security_groups()[0];
    assert_eq!(group.vpc_id(), Some(vpc.as_str()));
    assert_eq!(
        group.group_name(),
        Some(Ec2Settings::DEFAULT_SECURITY_GROUP)
    );

    let err = provider
        .launch(&spec(&unique("subnet"), "ca-central-1b", 1, false))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "no subnet among {subnet} is in zone ca-central-1b"
        )),
        "{err}"
    );
}
