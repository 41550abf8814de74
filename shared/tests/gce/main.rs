//! The GCE provider against a fake Compute API (`fake`) that checks every request against
//! Google's discovery document, `compute.v1.json` from the `google-api-python-client`
//! package. There is no Compute emulator.
//!
//! `scripts/test` installs the package and sets `STRATUS_COMPUTE_DISCOVERY`; by hand:
//! `.venv/bin/pip install --no-deps google-api-python-client==2.202.0 && cargo test -p shared
//! --features gcp --test gce` (the fake finds the document in `.venv`). Each test has a fake
//! of its own and ends by asserting that the fake saw no request the real API would reject.
//!
//! `storage_fake` tests the fake Cloud Storage (`fake::storage`, with IAM Credentials and STS
//! downscoping) on its own, as the fake the bucket mounts are tested against.

mod storage_fake;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use shared::blob::LocalBlobStore;
use shared::bus::{LocalBus, LocalMessage};
use shared::catalog::Catalog;
use shared::clock::SystemClock;
use shared::cloud::Cloud;
use shared::control::{self, Context, SubmitRequest, advance};
use shared::job::{JobId, JobStatus};
use shared::optimizer::Candidate;
use shared::provider::{
    AgentBoot, ClusterHealth, ClusterSpec, ClusterState, GceConnection, GceProvider, GceSettings,
    Provider, ProviderError, agent_env_from_startup_script,
};
use shared::store::{JobReader, SqliteStore};
use shared::testing::gce_fake as fake;
use tokio::sync::mpsc::UnboundedReceiver;

use self::fake::{Exhaustion, FakeCompute, Fault};

const PROJECT: &str = "test-project";

struct Fixture {
    fake: FakeCompute,
    provider: GceProvider,
}

impl Fixture {
    async fn new() -> Self {
        let fake = FakeCompute::start(&FakeCompute::discovery_path()).await;
        let provider = provider(&fake).await;
        Self { fake, provider }
    }

    async fn state(&self, region: &str, cluster: &str) -> Option<ClusterState> {
        self.provider
            .describe_region(region)
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.cluster == cluster)
    }

    async fn health(&self, cluster: &str) -> Option<ClusterHealth> {
        self.state("us-central1", cluster).await.map(|s| s.health)
    }
}

async fn provider(fake: &FakeCompute) -> GceProvider {
    GceProvider::new(
        PROJECT,
        GceSettings::new(),
        GceConnection::emulator(&fake.url),
    )
    .await
    .unwrap()
}

/// A cluster of `nodes` on `machine` in `zone` (job 42, cluster `<name>-42-1`).
fn spec(name: &str, zone: &str, machine: &str, nodes: u32, spot: bool) -> ClusterSpec {
    let accelerator = match machine {
        m if m.starts_with("n1-") => Some(("T4".to_owned(), 1)),
        m if m.starts_with("a2-") => Some(("A100".to_owned(), 1)),
        _ => None,
    };
    ClusterSpec {
        job_id: 42,
        task: 0,
        cluster: format!("{name}-42-1"),
        owner: "Alice@Example.com".to_owned(),
        candidate: Candidate {
            cloud: Cloud::Gcp,
            region: zone[..zone.len() - 2].to_owned(),
            zone: zone.to_owned(),
            instance_type: machine.to_owned(),
            vcpus: 4.0,
            memory_gb: 15.0,
            accelerator,
            use_spot: spot,
            hourly_price: 0.5,
            num_nodes: nodes,
            alternative: 0,
        },
        num_nodes: nodes,
        agent: AgentBoot {
            api_url: "https://api.example.com".to_owned(),
            token: "job-token".to_owned(),
            cadence: shared::agent_protocol::AgentCadence::CLOUD,
        },
        labels: BTreeMap::from([("Team".to_owned(), "ML Research".to_owned())]),
        image_id: None,
        disk_size_gb: Some(100),
    }
}

fn kind(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::NoCapacity { .. } => "no_capacity",
        ProviderError::Quota { .. } => "quota",
        ProviderError::Auth { .. } => "auth",
        ProviderError::Invalid { .. } => "invalid",
        ProviderError::Unavailable { .. } => "unavailable",
        ProviderError::Throttled { .. } => "throttled",
        ProviderError::Other { .. } => "other",
    }
}

fn metadata(instance: &Value, key: &str) -> Option<String> {
    instance["metadata"]["items"]
        .as_array()?
        .iter()
        .find(|i| i["key"] == key)
        .and_then(|i| i["value"].as_str())
        .map(str::to_owned)
}

#[tokio::test]
async fn launch_a_spot_gpu_cluster() {
    let f = Fixture::new().await;

    // Spot, 2 nodes, an N1 type with an attached T4.
    let spot = spec("spot", "us-central1-a", "n1-standard-4", 2, true);
    let nodes = f.provider.launch(&spot).await.unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.instance_id.as_str()).collect();
    assert_eq!(names, ["spot-42-1-0", "spot-42-1-1"]);
    assert_eq!(nodes.iter().map(|n| n.rank).collect::<Vec<_>>(), [0, 1]);
    assert!(
        nodes.iter().all(|n| n.ip.starts_with("10.128.0.")),
        "{nodes:?}"
    );

    let inserts = f.fake.requests_to("compute.instances.insert");
    assert_eq!(inserts.len(), 2);
    let body = inserts[1].body.clone().unwrap();
    assert_eq!(body["name"], "spot-42-1-1");
    assert_eq!(
        body["machineType"],
        "zones/us-central1-a/machineTypes/n1-standard-4"
    );
    assert_eq!(
        body["guestAccelerators"],
        json!([{ "acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1 }])
    );
    // A GPU node boots the Deep Learning VM image (below), asked to install its driver.
    assert!(
        body["metadata"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["key"] == "install-nvidia-driver" && i["value"] == "True"),
        "{}",
        body["metadata"]
    );
    assert_eq!(
        body["scheduling"],
        json!({
            "automaticRestart": false,
            "instanceTerminationAction": "DELETE",
            "onHostMaintenance": "TERMINATE",
            "provisioningModel": "SPOT",
        })
    );
    assert_eq!(
        body["labels"],
        json!({
            "stratus-cluster": "spot-42-1",
            "stratus-job-id": "42",
            "stratus-nodes": "2",
            "stratus-owner": "alice-example-com",
            "stratus-rank": "1",
            "stratus-task": "0",
            "team": "ml-research",
        })
    );
    let disk = &body["disks"][0];
    assert_eq!(disk["boot"], true);
    assert_eq!(disk["autoDelete"], true);
    assert_eq!(disk["initializeParams"]["diskSizeGb"], "100");
    assert_eq!(
        disk["initializeParams"]["sourceImage"],
        GceSettings::DEFAULT_GPU_IMAGE_FAMILY
    );
    assert_eq!(disk["initializeParams"]["labels"], body["labels"]);
    assert!(
        body.get("serviceAccounts").is_none(),
        "the agent needs no Google credentials"
    );
    // Each node's request id is its own, a UUID.
    let ids: Vec<&str> = inserts
        .iter()
        .map(|r| r.param("requestId").unwrap())
        .collect();
    assert_ne!(ids[0], ids[1]);
    assert!(
        ids.iter()
            .all(|id| id.len() == 36 && id.split('-').count() == 5),
        "{ids:?}"
    );

    // The startup script starts the agent with the job's token and the node's rank.
    let instance = f.fake.instance("us-central1-a", "spot-42-1-1").unwrap();
    let script = metadata(&instance, "startup-script").unwrap();
    let env = agent_env_from_startup_script(&script);
    assert_eq!(env["STRATUS_API_URL"], "https://api.example.com");
    assert_eq!(env["STRATUS_AGENT_TOKEN"], "job-token");
    assert_eq!(env["STRATUS_CLUSTER"], "spot-42-1");
    assert_eq!(env["STRATUS_NODE_RANK"], "1");
    assert!(
        script.contains("\"$STRATUS_API_URL/agent/v1/jobs/$STRATUS_JOB_ID/agent\""),
        "{script}"
    );
    assert_eq!(metadata(&instance, "stratus-rank").as_deref(), Some("1"));

    assert_eq!(
        f.state("us-central1", "spot-42-1").await.unwrap().health,
        ClusterHealth::Running
    );
    f.fake.assert_valid();
}

#[tokio::test]
async fn launch_on_demand_clusters() {
    let f = Fixture::new().await;
    // On-demand on an A2 type: its A100 is built in, so no guestAccelerators; it still cannot
    // live-migrate.
    let od = spec("ondemand", "us-central1-b", "a2-highgpu-1g", 1, false);
    f.provider.launch(&od).await.unwrap();
    let body = f.fake.requests_to("compute.instances.insert")[0]
        .body
        .clone()
        .unwrap();
    assert!(body.get("guestAccelerators").is_none(), "{body}");
    assert_eq!(
        body["scheduling"],
        json!({ "automaticRestart": false, "onHostMaintenance": "TERMINATE", "provisioningModel": "STANDARD" })
    );
    // And a CPU-only on-demand VM migrates on host maintenance.
    let cpu = spec("cpu", "us-central1-c", "e2-standard-4", 1, false);
    f.provider.launch(&cpu).await.unwrap();
    let body = f.fake.requests_to("compute.instances.insert")[1]
        .body
        .clone()
        .unwrap();
    assert_eq!(body["scheduling"]["onHostMaintenance"], "MIGRATE");

    for (cluster, zone) in [
        ("ondemand-42-1", "us-central1-b"),
        ("cpu-42-1", "us-central1-c"),
    ] {
        let state = f.state("us-central1", cluster).await.unwrap();
        assert_eq!(state.health, ClusterHealth::Running, "{cluster}");
        assert_eq!(state.zone, zone);
        assert_eq!(state.job_id, 42);
    }
    // Every insert waited for its operation.
    assert!(f.fake.count("compute.zoneOperations.wait") >= 2);
    f.fake.assert_valid();
}

#[tokio::test]
async fn describe_region_lists_each_zone_once_by_label() {
    let f = Fixture::new().await;
    f.provider
        .launch(&spec("a", "us-central1-a", "e2-standard-2", 3, false))
        .await
        .unwrap();
    f.provider
        .launch(&spec("b", "us-central1-f", "e2-standard-2", 1, true))
        .await
        .unwrap();
    f.fake.set_page_size(2);
    let before = f.fake.requests().len();

    let states = f.provider.describe_region("us-central1").await.unwrap();
    let summary: Vec<(&str, &str, usize, &ClusterHealth)> = states
        .iter()
        .map(|s| {
            (
                s.cluster.as_str(),
                s.zone.as_str(),
                s.nodes.len(),
                &s.health,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("a-42-1", "us-central1-a", 3, &ClusterHealth::Running),
            ("b-42-1", "us-central1-f", 1, &ClusterHealth::Running),
        ]
    );

    // Per zone of the region (the catalog's four): the instances list, filtered by the
    // label (two pages where there are three instances), and the preemption operations.
    let calls = &f.fake.requests()[before..];
    let zones = f.provider.zones("us-central1").to_vec();
    assert_eq!(
        zones,
        [
            "us-central1-a",
            "us-central1-b",
            "us-central1-c",
            "us-central1-f"
        ]
    );
    let lists: Vec<_> = calls
        .iter()
        .filter(|r| r.method == "compute.instances.list")
        .collect();
    assert_eq!(
        lists.len(),
        zones.len() + 1,
        "one extra page in us-central1-a"
    );
    assert!(
        lists
            .iter()
            .all(|r| r.param("filter") == Some("labels.stratus-cluster:*"))
    );
    assert_eq!(
        lists
            .iter()
            .filter(|r| r.param("pageToken").is_some_and(|t| !t.is_empty()))
            .count(),
        1
    );
    let ops: Vec<_> = calls
        .iter()
        .filter(|r| r.method == "compute.zoneOperations.list")
        .collect();
    assert_eq!(ops.len(), zones.len());
    assert!(
        ops.iter()
            .all(|r| r.param("filter") == Some(r#"operationType="compute.instances.preempted""#))
    );
    assert_eq!(
        calls.len(),
        lists.len() + ops.len(),
        "nothing per job: {calls:?}"
    );

    // A region the catalog does not have is an error, not an empty answer.
    assert_eq!(
        kind(&f.provider.describe_region("mars-north1").await.unwrap_err()),
        "invalid"
    );
    f.fake.assert_valid();
}

#[tokio::test]
async fn terminate_labels_then_deletes_and_tolerates_nothing() {
    let f = Fixture::new().await;
    let s = spec("term", "us-central1-b", "e2-standard-2", 2, false);
    f.provider.launch(&s).await.unwrap();

    f.provider
        .terminate("us-central1", "term-42-1")
        .await
        .unwrap();
    assert_eq!(f.fake.count("compute.instances.setLabels"), 2);
    assert_eq!(f.fake.count("compute.instances.delete"), 2);
    for name in ["term-42-1-0", "term-42-1-1"] {
        let i = f.fake.instance("us-central1-b", name).unwrap();
        assert_eq!(i["labels"]["stratus-state"], "terminating");
        assert_eq!(
            i["labels"]["stratus-cluster"], "term-42-1",
            "other labels kept"
        );
        assert_eq!(i["status"], "STOPPING");
    }
    // While they shut down, the cluster is Terminated (not Failed).
    assert_eq!(f.health("term-42-1").await, Some(ClusterHealth::Terminated));
    // Terminating again deletes nothing more: they are on their way out.
    f.provider
        .terminate("us-central1", "term-42-1")
        .await
        .unwrap();
    assert_eq!(f.fake.count("compute.instances.delete"), 2);

    f.fake.finish_deletions();
    assert_eq!(f.health("term-42-1").await, None);
    f.provider
        .terminate("us-central1", "term-42-1")
        .await
        .unwrap();
    f.provider
        .terminate("us-central1", "never-42-1")
        .await
        .unwrap();
    f.fake.assert_valid();
}

#[tokio::test]
async fn a_retried_insert_never_makes_a_second_vm() {
    let f = Fixture::new().await;
    // The first insert takes effect but its reply is lost: the client sends it again, with
    // the same requestId, and gets the first insert's operation.
    f.fake.lose_insert_responses(1);
    let s = spec("retry", "us-central1-a", "e2-standard-2", 1, false);
    let nodes = f.provider.launch(&s).await.unwrap();
    assert_eq!(nodes.len(), 1);
    let inserts = f.fake.requests_to("compute.instances.insert");
    assert_eq!(inserts.len(), 2, "the client retried");
    assert_eq!(inserts[0].param("requestId"), inserts[1].param("requestId"));
    assert_eq!(f.fake.instances_in("us-central1-a").len(), 1);

    // Launching the same cluster again finds it by label and inserts nothing.
    let again = f.provider.launch(&s).await.unwrap();
    assert_eq!(again, nodes);
    assert_eq!(f.fake.count("compute.instances.insert"), 2);

    // Once GCE no longer remembers the requestId, a repeated insert is a 409, which counts
    // as made too.
    f.fake.forget_request_ids();
    f.fake.lose_insert_responses(1);
    let two = spec("retry2", "us-central1-a", "e2-standard-2", 1, false);
    let nodes = f.provider.launch(&two).await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(f.fake.instances_in("us-central1-a").len(), 2);

    // The request id depends on the cluster, zone and rank only.
    let first = f.fake.requests_to("compute.instances.insert")[0].clone();
    let f2 = Fixture::new().await;
    f2.provider.launch(&s).await.unwrap();
    assert_eq!(
        f2.fake.requests_to("compute.instances.insert")[0].param("requestId"),
        first.param("requestId")
    );
    f.fake.assert_valid();
    f2.fake.assert_valid();
}

#[tokio::test]
async fn an_exhausted_zone_is_no_capacity_either_way_and_leaves_nothing() {
    for how in [Exhaustion::InOperation, Exhaustion::InCall] {
        let f = Fixture::new().await;
        f.fake.exhaust_zone("us-central1-a", how);
        let s = spec("full", "us-central1-a", "n1-standard-4", 2, true);
        let err = f.provider.launch(&s).await.unwrap_err();
        assert_eq!(kind(&err), "no_capacity", "{how:?}: {err}");
        assert!(
            err.to_string().contains("ZONE_RESOURCE_POOL_EXHAUSTED"),
            "{err}"
        );
        assert!(f.fake.instances().is_empty(), "{how:?}");
        // Not retried by the client (the launch walk moves on at once): one insert per node
        // when the operations fail, one in all when the call does.
        let inserts = f.fake.requests_to("compute.instances.insert");
        let want = if how == Exhaustion::InOperation { 2 } else { 1 };
        assert_eq!(inserts.len(), want, "{how:?}");
        let mut ids: Vec<_> = inserts.iter().map(|r| r.param("requestId")).collect();
        ids.dedup();
        assert_eq!(ids.len(), want, "{how:?}");
        // The next zone has room.
        let mut next = s.clone();
        next.candidate.zone = "us-central1-b".to_owned();
        assert_eq!(f.provider.launch(&next).await.unwrap().len(), 2);
        f.fake.assert_valid();
    }
}

#[tokio::test]
async fn a_half_made_cluster_is_torn_down_when_a_node_fails() {
    let f = Fixture::new().await;
    // Room for one more VM: node 0 is made, node 1's operation ends exhausted.
    f.fake.set_zone_capacity("us-central1-c", 1);
    let err = f
        .provider
        .launch(&spec("half", "us-central1-c", "e2-standard-2", 2, false))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), "no_capacity", "{err}");
    assert!(f.fake.instance("us-central1-c", "half-42-1-1").is_none());
    let made = f.fake.instance("us-central1-c", "half-42-1-0").unwrap();
    assert_eq!(made["labels"]["stratus-state"], "terminating");
    assert_eq!(made["status"], "STOPPING");
    assert_eq!(f.health("half-42-1").await, Some(ClusterHealth::Terminated));
    f.fake.assert_valid();
}

#[tokio::test]
async fn preemption_is_seen_as_such() {
    let f = Fixture::new().await;
    for name in ["stopped", "deleted", "single", "od", "gone"] {
        let nodes = if name == "single" { 1 } else { 2 };
        let spot = name != "od" && name != "gone";
        f.provider
            .launch(&spec(name, "us-central1-a", "e2-standard-2", nodes, spot))
            .await
            .unwrap();
    }
    // A spot VM preempted: TERMINATED, with a compute.instances.preempted operation.
    f.fake.preempt("us-central1-a", "stopped-42-1-1");
    // Preempted, then deleted (instanceTerminationAction: DELETE): only the operation is left.
    f.fake.preempt_and_delete("us-central1-a", "deleted-42-1-0");
    f.fake.preempt_and_delete("us-central1-a", "single-42-1-0");
    // Stopped and deleted from outside, with no preemption: failures.
    f.fake
        .set_status("us-central1-a", "od-42-1-0", "TERMINATED");
    f.fake.remove("us-central1-a", "gone-42-1-1");

    let health = |cluster: &str| {
        let cluster = cluster.to_owned();
        let f = &f;
        async move { f.health(&cluster).await.unwrap() }
    };
    match health("stopped-42-1").await {
        ClusterHealth::Preempted { reason } => {
            assert!(
                reason.contains("stopped-42-1-1 (node 1) TERMINATED"),
                "{reason}"
            );
        }
        other => panic!("stopped: {other:?}"),
    }
    match health("deleted-42-1").await {
        ClusterHealth::Preempted { reason } => {
            assert!(
                reason.contains("deleted-42-1-0 (node 0) was preempted"),
                "{reason}"
            );
        }
        other => panic!("deleted: {other:?}"),
    }
    let single = f.state("us-central1", "single-42-1").await.unwrap();
    assert!(
        matches!(single.health, ClusterHealth::Preempted { .. }),
        "{single:?}"
    );
    assert_eq!((single.job_id, single.zone.as_str()), (42, "us-central1-a"));
    assert!(single.nodes.is_empty());
    assert!(matches!(
        health("od-42-1").await,
        ClusterHealth::Failed { .. }
    ));
    match health("gone-42-1").await {
        ClusterHealth::Failed { reason } => assert!(reason.contains("node(s) 1 of 2"), "{reason}"),
        other => panic!("gone: {other:?}"),
    }
    // Booting is Pending.
    f.provider
        .launch(&spec("boot", "us-central1-a", "e2-standard-2", 1, false))
        .await
        .unwrap();
    f.fake.set_status("us-central1-a", "boot-42-1-0", "STAGING");
    assert_eq!(health("boot-42-1").await, ClusterHealth::Pending);
    f.fake.assert_valid();
}

#[tokio::test]
async fn call_errors_are_sorted_for_the_launch_walk() {
    let cases = [
        (Fault::quota(), "quota"),
        (Fault::rate_limited(), "throttled"),
        (Fault::unauthenticated(), "auth"),
        (Fault::permission_denied(), "auth"),
        (
            Fault::new(
                400,
                "INVALID_ARGUMENT",
                "invalid",
                "Invalid value for field 'resource.machineType'",
            ),
            "invalid",
        ),
    ];
    for (fault, want) in cases {
        let f = Fixture::new().await;
        f.fake.fail("compute.instances.insert", fault.clone(), None);
        let err = f
            .provider
            .launch(&spec("err", "us-central1-a", "n1-standard-4", 1, true))
            .await
            .unwrap_err();
        assert_eq!(kind(&err), want, "{fault:?}: {err}");
        assert!(err.to_string().contains(&fault.reason), "{err}");
        assert_eq!(err.is_retryable(), want == "throttled");
        // None of these is the client's to retry.
        assert_eq!(f.fake.count("compute.instances.insert"), 1, "{fault:?}");
        f.fake.assert_valid();
    }
    // A quota error may also come in the operation.
    let f = Fixture::new().await;
    f.fake.fail_insert_operations(
        "us-central1-a",
        "QUOTA_EXCEEDED",
        "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally.",
    );
    let err = f
        .provider
        .launch(&spec("q", "us-central1-a", "n1-standard-4", 1, true))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), "quota", "{err}");
    f.fake.assert_valid();
    // Transient errors are retried by the client, with the same requestId.
    let f = Fixture::new().await;
    f.fake
        .fail("compute.instances.insert", Fault::unavailable(), Some(2));
    f.provider
        .launch(&spec("flaky", "us-central1-a", "e2-standard-2", 1, false))
        .await
        .unwrap();
    let inserts = f.fake.requests_to("compute.instances.insert");
    assert_eq!(inserts.len(), 3);
    assert!(
        inserts
            .iter()
            .all(|r| r.param("requestId") == inserts[0].param("requestId"))
    );
    f.fake.assert_valid();
}

/// The local control plane (`advance` carrying out `step`'s actions) with the GCE provider
/// pointed at a fake, so the launch walk runs for real.
struct ControlPlane {
    ctx: Context,
    events: UnboundedReceiver<LocalMessage>,
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    async fn new(fake: &FakeCompute) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(dir.path().join("state.db"))
                .await
                .unwrap(),
        );
        let (bus, events) = LocalBus::new();
        let gce: Arc<dyn Provider> = Arc::new(provider(fake).await);
        let ctx = Context {
            store: store.clone(),
            providers: [(Cloud::Gcp, gce)].into_iter().collect(),
            blobs: Arc::new(LocalBlobStore::new(dir.path().join("blobs"))),
            bus: Arc::new(bus),
            clock: Arc::new(SystemClock),
            catalog: Arc::new(Catalog::embedded()),
            buckets: shared::buckets::BucketStores::default(),
            settings: shared::testing::settings(Cloud::Gcp, "https://api.example.com"),
        };
        Self {
            ctx,
            events,
            store,
            _dir: dir,
        }
    }

    async fn submit(&self, yaml: &str) -> JobId {
        let request = SubmitRequest {
            yaml: Some(yaml.to_owned()),
            ..SubmitRequest::default()
        };
        control::submit(&self.ctx, "alice", request)
            .await
            .unwrap()
            .id
    }

    /// Carries out every event published so far, and the ones that leads to.
    async fn settle(&mut self) {
        while let Ok(message) = self.events.try_recv() {
            if let LocalMessage::Event(e) = message {
                advance(&self.ctx, e.job_id, e.event).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn an_exhausted_zone_fails_over_to_the_next_zone() {
    let fake = FakeCompute::start(&FakeCompute::discovery_path()).await;
    let mut cp = ControlPlane::new(&fake).await;
    let id = cp
        .submit("resources:\n  infra: gcp/us-central1\n  cpus: 2\nrun: echo hi\n")
        .await;
    let job = cp.store.get_job(id).await.unwrap();
    let first = job.candidates[0][0].zone.clone();
    let second = job.candidates[0][1].zone.clone();
    assert_ne!(first, second);
    fake.exhaust_zone(&first, Exhaustion::InOperation);

    cp.settle().await;
    let job = cp.store.get_job(id).await.unwrap();
    assert_eq!(job.status(), JobStatus::Starting);
    let cluster = job.tasks[0].cluster.clone().unwrap();
    assert!(
        cluster.ends_with(&format!("-{id}-2")),
        "the second attempt: {cluster}"
    );
    assert_eq!(
        job.candidates[0][job.tasks[0].candidate.unwrap()].zone,
        second
    );
    let made = fake.instances();
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0]["zone"].as_str().unwrap().ends_with(&second));
    assert_eq!(made[0]["labels"]["stratus-cluster"], cluster.as_str());
    let inserts = fake.requests_to("compute.instances.insert");
    assert_eq!(inserts.len(), 2);
    assert!(inserts[0].path.contains(&format!("/zones/{first}/")));
    fake.assert_valid();
}

#[tokio::test]
async fn an_auth_error_fails_prechecks() {
    let fake = FakeCompute::start(&FakeCompute::discovery_path()).await;
    fake.fail("compute.instances.list", Fault::unauthenticated(), None);
    fake.fail("compute.instances.insert", Fault::unauthenticated(), None);
    let mut cp = ControlPlane::new(&fake).await;
    let id = cp
        .submit(
            "resources:\n  infra: gcp\n  accelerators: T4:1\n  use_spot: true\nrun: nvidia-smi\n",
        )
        .await;
    cp.settle().await;
    let job = cp.store.get_job(id).await.unwrap();
    assert_eq!(job.status(), JobStatus::FailedPrechecks);
    assert!(fake.instances().is_empty());
    // One launch was enough to know: no walk through the other candidates, nothing inserted.
    assert_eq!(job.tasks[0].attempt, 1);
    assert_eq!(fake.count("compute.instances.insert"), 0);
    fake.assert_valid();
}

#[tokio::test]
async fn the_fake_rejects_what_the_real_api_would() {
    let fake = FakeCompute::start(&FakeCompute::discovery_path()).await;
    let good = json!({
        "name": "ok-1-1-0",
        "machineType": "zones/us-central1-a/machineTypes/n1-standard-4",
        "disks": [{ "boot": true, "initializeParams": { "sourceImage": GceSettings::DEFAULT_IMAGE_FAMILY, "diskSizeGb": "50" } }],
        "networkInterfaces": [{ "network": "global/networks/default" }],
        "guestAccelerators": [{ "acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1 }],
        "scheduling": { "provisioningModel": "SPOT", "onHostMaintenance": "TERMINATE", "instanceTerminationAction": "DELETE" },
        "labels": { "stratus-cluster": "ok-1-1" },
    });
    let insert = |body: &Value| fake.check("compute.instances.insert", "us-central1-a", &[], body);
    assert_eq!(insert(&good), Vec::<String>::new());
    let bad = |edit: &dyn Fn(&mut Value), want: &str| {
        let mut body = good.clone();
        edit(&mut body);
        let failures = insert(&body);
        assert!(
            failures.iter().any(|f| f.contains(want)),
            "{want}: {failures:?}"
        );
    };
    bad(
        &|b| b["machineTyp"] = json!("x"),
        "machineTyp: unknown field",
    );
    bad(
        &|b| b["scheduling"]["provisioningModel"] = json!("PREEMPTIBLE"),
        "is not one of",
    );
    bad(&|b| b["name"] = json!("Bad_Name"), "does not match");
    bad(&|b| b["id"] = json!("123"), "output-only field");
    bad(
        &|b| b["disks"][0]["initializeParams"]["diskSizeGb"] = json!(true),
        "expected a int64",
    );
    bad(&|b| b["canIpForward"] = json!("yes"), "expected a boolean");
    bad(
        &|b| {
            b.as_object_mut().unwrap().remove("name");
        },
        "required field missing",
    );
    bad(
        &|b| b["machineType"] = json!("zones/us-east1-b/machineTypes/n1-standard-4"),
        "not a machine type of zone",
    );
    bad(
        &|b| b["machineType"] = json!("zones/us-central1-a/machineTypes/e2-standard-4"),
        "cannot be attached",
    );
    bad(
        &|b| b["scheduling"]["onHostMaintenance"] = json!("MIGRATE"),
        "cannot live migrate",
    );
    bad(
        &|b| b["scheduling"]["automaticRestart"] = json!(true),
        "cannot restart automatically",
    );
    bad(&|b| b["labels"]["Team"] = json!("x"), "invalid label key");
    bad(
        &|b| b["metadata"] = json!({ "items": [{ "key": "bad key", "value": "v" }] }),
        "does not match",
    );
    let unknown = fake.check_query(
        "compute.instances.list",
        &[("filtre", "x"), ("maxResults", "-1")],
    );
    assert_eq!(unknown.len(), 2, "{unknown:?}");
    let bad_id = fake.check_query(
        "compute.instances.insert",
        &[("requestId", "00000000-0000-0000-0000-000000000000")],
    );
    assert_eq!(bad_id.len(), 1, "{bad_id:?}");
}
