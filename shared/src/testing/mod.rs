//! Test support (feature `test-util`): a whole control plane in memory and on a temporary
//! folder ([`TestPlane`]: SQLite, a blob folder, the local bus drained on demand, a manual
//! clock) over a simulated cloud ([`SimCloud`]), and an [`Authenticator`] that takes the
//! user from a header. Tests of the handlers and the API, and the benches, build on it.
//!
//! Stand-ins for what no emulator provides, shared by every crate's tests:
//! - `gce_fake`: a fake Compute Engine (and Cloud Storage, IAM credentials) API that checks
//!   every request against Google's discovery document.
//! - `aws_proxy`: an HTTP proxy before the AWS emulator that records what each request would
//!   be billed as and injects EC2 errors an emulator cannot produce.

pub mod aws_proxy;
pub mod gce_fake;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::HeaderMap;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{Authenticator, User};
use crate::blob::LocalBlobStore;
use crate::bus::{LocalBus, LocalMessage};
use crate::catalog::Catalog;
use crate::clock::{ManualClock, Timestamp};
use crate::cloud::Cloud;
use crate::control::{self, Context, Settings, SigningKey};
use crate::job::{JobId, JobRecord};
use crate::provider::{
    ClusterHealth, ClusterSpec, ClusterState, NodeInfo, Provider, ProviderError,
};
use crate::store::SqliteStore;

/// When a [`TestPlane`]'s clock starts.
pub const START: Timestamp = Timestamp::from_secs(1_800_000_000);

/// A cloud in memory: launches succeed (up to a zone's capacity, if one is set), machines run
/// until terminated or preempted. Every call is recorded.
#[derive(Default)]
pub struct SimCloud {
    state: Mutex<SimState>,
}

#[derive(Default)]
struct SimState {
    clusters: BTreeMap<String, ClusterState>,
    /// Nodes each zone can run at once (no entry: unlimited).
    capacity: BTreeMap<String, u32>,
    launches: Vec<String>,
    failed_launches: usize,
    terminations: Vec<String>,
    /// `terminate` fails this many more times.
    failing_terminates: usize,
}

impl SimCloud {
    pub fn new() -> SimCloud {
        SimCloud::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// At most `nodes` nodes run in `zone` at once.
    pub fn set_capacity(&self, zone: &str, nodes: u32) {
        self.state().capacity.insert(zone.to_owned(), nodes);
    }

    /// The next `times` calls to `terminate` fail.
    pub fn fail_terminates(&self, times: usize) {
        self.state().failing_terminates = times;
    }

    /// The cloud takes `cluster` back.
    pub fn preempt(&self, cluster: &str) {
        if let Some(c) = self.state().clusters.get_mut(cluster) {
            c.health = ClusterHealth::Preempted {
                reason: "simulated spot reclaim".into(),
            };
        }
    }

    /// Every cluster name launched, in order (a name launched twice appears twice).
    pub fn launches(&self) -> Vec<String> {
        self.state().launches.clone()
    }

    /// Launch calls refused for want of capacity.
    pub fn failed_launches(&self) -> usize {
        self.state().failed_launches
    }

    /// Clusters whose machines still run (not terminated, not preempted).
    pub fn running(&self) -> Vec<String> {
        self.state()
            .clusters
            .values()
            .filter(|c| matches!(c.health, ClusterHealth::Running | ClusterHealth::Pending))
            .map(|c| c.cluster.clone())
            .collect()
    }

    /// Every cluster the cloud knows, any state.
    pub fn clusters(&self) -> Vec<ClusterState> {
        self.state().clusters.values().cloned().collect()
    }

    fn used(state: &SimState, zone: &str) -> u32 {
        state
            .clusters
            .values()
            .filter(|c| c.zone == zone && matches!(c.health, ClusterHealth::Running))
            .map(|c| c.nodes.len() as u32)
            .sum()
    }
}

#[async_trait]
impl Provider for SimCloud {
    fn cloud(&self) -> Cloud {
        Cloud::Aws
    }

    async fn launch(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        let mut state = self.state();
        if let Some(existing) = state.clusters.get(&spec.cluster) {
            // Idempotent per name, as every provider is.
            return Ok(existing.nodes.clone());
        }
        let zone = spec.candidate.zone.clone();
        if let Some(capacity) = state.capacity.get(&zone)
            && SimCloud::used(&state, &zone) + spec.num_nodes > *capacity
        {
            state.failed_launches += 1;
            return Err(ProviderError::NoCapacity {
                message: format!("simulated: {zone} is full"),
            });
        }
        let nodes: Vec<NodeInfo> = (0..spec.num_nodes)
            .map(|rank| NodeInfo {
                rank,
                instance_id: format!("i-{}-{rank}", spec.cluster),
                ip: format!("10.0.0.{}", rank + 1),
            })
            .collect();
        state.launches.push(spec.cluster.clone());
        state.clusters.insert(
            spec.cluster.clone(),
            ClusterState {
                cluster: spec.cluster.clone(),
                job_id: spec.job_id,
                region: spec.candidate.region.clone(),
                zone,
                health: ClusterHealth::Running,
                nodes: nodes.clone(),
            },
        );
        Ok(nodes)
    }

    async fn describe_region(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        Ok(self
            .state()
            .clusters
            .values()
            .filter(|c| c.region == region)
            .cloned()
            .collect())
    }

    async fn terminate(&self, _: &str, cluster: &str) -> Result<(), ProviderError> {
        let mut state = self.state();
        if state.failing_terminates > 0 {
            state.failing_terminates -= 1;
            return Err(ProviderError::Other {
                context: "simulated: the cloud's API is down".into(),
                source: "503 Service Unavailable".into(),
            });
        }
        state.terminations.push(cluster.to_owned());
        if let Some(c) = state.clusters.get_mut(cluster) {
            c.health = ClusterHealth::Terminated;
        }
        Ok(())
    }
}

/// Users named by the `x-test-user` header (`name` or `name,admin`).
pub struct HeaderUsers;

/// The header [`HeaderUsers`] reads.
pub const USER_HEADER: &str = "x-test-user";

impl Authenticator for HeaderUsers {
    fn user(&self, headers: &HeaderMap) -> Option<User> {
        let value = headers.get(USER_HEADER)?.to_str().ok()?;
        let (name, admin) = match value.split_once(',') {
            Some((name, "admin")) => (name, true),
            _ => (value, false),
        };
        Some(User {
            name: name.to_owned(),
            admin,
        })
    }
}

/// A control plane for tests: the real handlers over SQLite, a blob folder, a [`SimCloud`]
/// (as AWS) and the local bus, whose messages tests deliver with [`TestPlane::deliver`].
pub struct TestPlane {
    pub ctx: Context,
    pub cloud: Arc<SimCloud>,
    pub clock: Arc<ManualClock>,
    messages: UnboundedReceiver<LocalMessage>,
    pub dir: tempfile::TempDir,
}

impl TestPlane {
    pub async fn new() -> TestPlane {
        TestPlane::with_store(None).await
    }

    /// A plane on the given state table (DynamoDB on an emulator, say) instead of SQLite.
    pub async fn with_store(store: Option<Arc<dyn crate::store::JobStore>>) -> TestPlane {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let clock = Arc::new(ManualClock::new(START));
        let cloud = Arc::new(SimCloud::new());
        let (bus, messages) = LocalBus::new();
        let provider: Arc<dyn Provider> = cloud.clone();
        let store = match store {
            Some(store) => store,
            None => Arc::new(
                SqliteStore::open(dir.path().join("state.db"))
                    .await
                    .expect("the state table"),
            ),
        };
        let ctx = Context {
            store,
            providers: [(Cloud::Aws, provider)].into_iter().collect(),
            blobs: Arc::new(LocalBlobStore::new(dir.path().join("blobs"))),
            bus: Arc::new(bus),
            clock: clock.clone(),
            catalog: Arc::new(Catalog::embedded()),
            buckets: crate::buckets::BucketStores::default(),
            settings: settings(Cloud::Aws, "http://127.0.0.1:1"),
        };
        TestPlane {
            ctx,
            cloud,
            clock,
            messages,
            dir,
        }
    }

    /// Delivers every message on the bus (and those they cause) to its handler, as
    /// EventBridge would; returns how many.
    pub async fn deliver(&mut self) -> usize {
        let mut delivered = 0;
        while let Ok(message) = self.messages.try_recv() {
            delivered += 1;
            match message {
                LocalMessage::Event(envelope) => {
                    control::advance(&self.ctx, envelope.job_id, envelope.event)
                        .await
                        .expect("the event is handled");
                }
                LocalMessage::Ended(job) => {
                    // A cleanup that fails is left to the sweep, as in production.
                    let _ = control::cleanup(&self.ctx, job).await;
                }
            }
        }
        delivered
    }

    /// Takes every message waiting on the bus, for a test that delivers them its own way.
    pub fn take_messages(&mut self) -> Vec<LocalMessage> {
        let mut taken = Vec::new();
        while let Ok(message) = self.messages.try_recv() {
            taken.push(message);
        }
        taken
    }

    /// Drops every message on the bus, as a crash before delivery would; returns how many.
    pub fn drop_messages(&mut self) -> usize {
        let mut dropped = 0;
        while self.messages.try_recv().is_ok() {
            dropped += 1;
        }
        dropped
    }

    /// Launches a cluster of `job` in the cloud behind the control plane's back (a launch
    /// whose answer was lost), under a name of that job.
    pub async fn stray_cluster(&self, job: &JobRecord, attempt: u32) -> String {
        let cluster = crate::job::cluster_name(job.name(), job.id, attempt);
        let candidate = job.candidates[job.current_task][0].clone();
        let spec = ClusterSpec {
            job_id: job.id,
            task: job.current_task,
            cluster: cluster.clone(),
            owner: job.owner.clone(),
            candidate,
            num_nodes: 1,
            agent: crate::provider::AgentBoot {
                api_url: String::new(),
                token: String::new(),
                cadence: crate::agent_protocol::AgentCadence::CLOUD,
            },
            labels: BTreeMap::new(),
            image_id: None,
            disk_size_gb: None,
        };
        self.cloud.launch(&spec).await.expect("the stray launch");
        cluster
    }

    /// Submits `yaml` as `owner` and delivers what follows.
    pub async fn submit(&mut self, owner: &str, yaml: &str) -> JobRecord {
        let job = control::submit(
            &self.ctx,
            owner,
            control::SubmitRequest {
                yaml: Some(yaml.to_owned()),
                ..control::SubmitRequest::default()
            },
        )
        .await
        .expect("the job is accepted");
        self.deliver().await;
        self.job(job.id).await
    }

    pub async fn job(&self, id: JobId) -> JobRecord {
        self.ctx.store.get_job(id).await.expect("the job")
    }

    /// Moves the clock on and sweeps once, delivering what follows.
    pub async fn sweep(&mut self, after: Duration) {
        self.clock.advance(after);
        control::poll(&self.ctx).await.expect("the sweep");
        self.deliver().await;
    }
}

/// Settings for a control plane under test: `cloud` the one enabled, the clouds' agent cadence,
/// the default timeouts, no budget and no agent binary. A test or bench changes the fields it
/// is about (`Settings { agent_cadence: ..., ..settings(...) }`).
pub fn settings(cloud: Cloud, agent_api_url: &str) -> Settings {
    Settings {
        agent_api_url: agent_api_url.to_owned(),
        secret: SigningKey::new(b"test".to_vec()),
        enabled_clouds: vec![cloud],
        heartbeat_timeout: Duration::from_mins(3),
        ready_timeout: crate::control::DEFAULT_READY_TIMEOUT,
        local_buckets: None,
        started_at: Timestamp::EPOCH,
        agent_cadence: crate::agent_protocol::AgentCadence::CLOUD,
        agent_binary: None,
        cloud_notes: std::collections::BTreeMap::new(),
        monthly_budget: None,
    }
}
