//! The crash-point and duplicate-delivery campaigns.
//!
//! Every store write, cloud call and event publish of the handlers is a *point*. A run takes
//! a mixed set of jobs (one that succeeds, one whose code fails, a 2-node one, one preempted
//! while it runs, one cancelled while it runs, a 2-task pipeline) through their whole lives on
//! a test control plane, with simulated nodes that follow the agent protocol (and, as the real
//! agent does, send a report again until it is taken). A crash run dies at one point: the
//! handler running it stops at that line (it panics), every message waiting on the bus is
//! lost with the process, and the control plane goes on from the state table alone, with its
//! sweep. The checks: every job reaches its right end and is cleaned up (none *lost*), no
//! machine is left running (none *leaked*), and no job has more clusters than its life needs
//! (none *doubled*: a relaunch always reuses its cluster's name). The duplicate run delivers
//! every event three times, in a shuffled order, with the same checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use shared::agent_protocol::{Report, Work};
use shared::bus::{BusError, EventBus, LocalMessage};
use shared::clock::Timestamp;
use shared::control::{self, Context};
use shared::facts::{CapacityEvent, ClusterFact, ClusterFacts, ClusterRef, NodeFact, ZoneCapacity};
use shared::job::{ControllerEvent, Fence, JobEvent, JobId, JobRecord, JobStatus, Phase};
use shared::provider::{ClusterSpec, ClusterState, NodeInfo, Provider, ProviderError};
use shared::store::FactStore;
use shared::store::{Cursor, JobReader, JobStore, Page, StoreError};
use shared::testing::TestPlane;

/// Counts points and crashes at one.
#[derive(Default)]
struct Chaos {
    points: AtomicU64,
    crash_at: AtomicU64,
    crashed: AtomicBool,
}

impl Chaos {
    fn point(&self, what: &str) {
        let n = self.points.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash_at.load(Ordering::SeqCst) {
            self.crashed.store(true, Ordering::SeqCst);
            panic!("chaos: the control plane dies at point {n} ({what})");
        }
    }
}

struct ChaosStore {
    inner: Arc<dyn JobStore>,
    chaos: Arc<Chaos>,
}

#[async_trait]
impl JobReader for ChaosStore {
    async fn get_job(&self, id: JobId) -> Result<JobRecord, StoreError> {
        self.inner.get_job(id).await
    }
    async fn list_jobs(
        &self,
        owner: Option<&str>,
        page: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.inner.list_jobs(owner, page, limit).await
    }
    async fn list_active(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.list_active().await
    }
    async fn find_by_name(&self, owner: &str, name: &str) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.find_by_name(owner, name).await
    }
    async fn list_events(&self, job_id: JobId) -> Result<Vec<ControllerEvent>, StoreError> {
        self.inner.list_events(job_id).await
    }
}

#[async_trait]
impl JobStore for ChaosStore {
    async fn next_job_ids(&self, count: u32) -> Result<JobId, StoreError> {
        self.chaos.point("next_job_id");
        self.inner.next_job_ids(count).await
    }
    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord, StoreError> {
        self.chaos.point("create_job");
        self.inner.create_job(job).await
    }
    async fn update_job(&self, job: &JobRecord, expected: Fence) -> Result<JobRecord, StoreError> {
        self.chaos.point("update_job");
        self.inner.update_job(job, expected).await
    }
    async fn append_events(
        &self,
        job_id: JobId,
        events: &[ControllerEvent],
    ) -> Result<(), StoreError> {
        self.chaos.point("append_events");
        self.inner.append_events(job_id, events).await
    }
    async fn claim(&self, name: &str, job_id: JobId) -> Result<(), StoreError> {
        self.chaos.point("claim");
        self.inner.claim(name, job_id).await
    }
}

#[async_trait]
impl FactStore for ChaosStore {
    async fn record_cluster(
        &self,
        job_id: JobId,
        at: &ClusterRef,
        fact: ClusterFact,
    ) -> Result<(), StoreError> {
        self.chaos.point("record_cluster");
        self.inner.record_cluster(job_id, at, fact).await
    }
    async fn record_node(
        &self,
        job_id: JobId,
        at: &ClusterRef,
        rank: u32,
        fact: NodeFact,
    ) -> Result<(), StoreError> {
        self.chaos.point("record_node");
        self.inner.record_node(job_id, at, rank, fact).await
    }
    async fn cluster_facts(
        &self,
        job_id: JobId,
        cluster: &str,
    ) -> Result<Option<ClusterFacts>, StoreError> {
        self.inner.cluster_facts(job_id, cluster).await
    }
    async fn job_facts(&self, job_id: JobId) -> Result<Vec<ClusterFacts>, StoreError> {
        self.inner.job_facts(job_id).await
    }
    async fn follow(&self, job_id: JobId, until: Timestamp) -> Result<(), StoreError> {
        self.chaos.point("follow");
        self.inner.follow(job_id, until).await
    }
    async fn followed_until(&self, job_id: JobId) -> Result<Option<Timestamp>, StoreError> {
        self.inner.followed_until(job_id).await
    }
    async fn record_capacity(&self, zone: &str, event: CapacityEvent) -> Result<(), StoreError> {
        self.chaos.point("record_capacity");
        self.inner.record_capacity(zone, event).await
    }
    async fn zone_capacity(&self, zone: &str) -> Result<ZoneCapacity, StoreError> {
        self.inner.zone_capacity(zone).await
    }
}

struct ChaosCloud {
    inner: Arc<dyn Provider>,
    chaos: Arc<Chaos>,
}

#[async_trait]
impl Provider for ChaosCloud {
    fn cloud(&self) -> shared::cloud::Cloud {
        self.inner.cloud()
    }
    async fn launch(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        self.chaos.point("launch");
        self.inner.launch(spec).await
    }
    async fn describe_region(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        self.inner.describe_region(region).await
    }
    async fn terminate(&self, region: &str, cluster: &str) -> Result<(), ProviderError> {
        self.chaos.point("terminate");
        self.inner.terminate(region, cluster).await
    }
}

struct ChaosBus {
    inner: Arc<dyn EventBus>,
    chaos: Arc<Chaos>,
}

#[async_trait]
impl EventBus for ChaosBus {
    async fn publish(&self, job_id: JobId, event: JobEvent) -> Result<(), BusError> {
        self.chaos.point("publish");
        self.inner.publish(job_id, event).await
    }
    async fn job_ended(&self, job_id: JobId) -> Result<(), BusError> {
        self.chaos.point("job_ended");
        self.inner.job_ended(job_id).await
    }
    async fn schedule(
        &self,
        job_id: JobId,
        event: JobEvent,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), BusError> {
        self.chaos.point("schedule");
        self.inner.schedule(job_id, event, at, now).await
    }
    async fn status_changed(
        &self,
        event: &shared::job::transitions::StatusEvent,
    ) -> Result<(), BusError> {
        self.chaos.point("status_changed");
        self.inner.status_changed(event).await
    }
    async fn cancel_schedules(&self, job_id: JobId) -> Result<usize, BusError> {
        self.chaos.point("cancel_schedules");
        self.inner.cancel_schedules(job_id).await
    }
}

/// The jobs of a run: name, task file, the end it must reach, and the clusters its life needs.
const JOBS: [(&str, &str, JobStatus, usize); 6] = [
    (
        "ok",
        "name: ok\nresources:\n  infra: aws/us-east-1\nrun: x\n",
        JobStatus::Succeeded,
        1,
    ),
    (
        "fail",
        "name: fail\nresources:\n  infra: aws/us-east-1\nrun: x\n",
        JobStatus::Failed,
        1,
    ),
    (
        "multi",
        "name: multi\nnum_nodes: 2\nresources:\n  infra: aws/us-east-1\nrun: x\n",
        JobStatus::Succeeded,
        1,
    ),
    (
        "preempted",
        "name: preempted\nresources:\n  infra: aws/us-east-1\nrun: x\n",
        JobStatus::Succeeded,
        2,
    ),
    (
        "cancelled",
        "name: cancelled\nresources:\n  infra: aws/us-east-1\nrun: x\n",
        JobStatus::Cancelled,
        1,
    ),
    (
        "pipeline",
        "name: pipeline\n---\nname: a\nresources:\n  infra: aws/us-east-1\nrun: x\n---\nname: b\nresources:\n  infra: aws/us-east-1\nrun: x\n",
        JobStatus::Succeeded,
        2,
    ),
];

/// What a run found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    points: u64,
    lost: usize,
    leaked: usize,
    doubled: usize,
}

/// A simulated node: what it has started, and a report it must send again.
#[derive(Default)]
struct SimNode {
    started: Option<Phase>,
    pending: Vec<Report>,
    done: bool,
}

struct Run {
    plane: TestPlane,
    chaos: Arc<Chaos>,
    nodes: BTreeMap<(String, u32), SimNode>,
    jobs: Vec<(JobId, &'static str)>,
    duplicate: bool,
    seed: u64,
    preempted: bool,
}

/// A small deterministic generator (xorshift), so that a failing run can be repeated.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

impl Run {
    async fn new(store: Option<Arc<dyn JobStore>>, crash_at: u64, duplicate: bool) -> Run {
        let mut plane = TestPlane::with_store(store).await;
        let chaos = Arc::new(Chaos::default());
        chaos.crash_at.store(crash_at, Ordering::SeqCst);
        plane.ctx.store = Arc::new(ChaosStore {
            inner: plane.ctx.store.clone(),
            chaos: chaos.clone(),
        });
        plane.ctx.bus = Arc::new(ChaosBus {
            inner: plane.ctx.bus.clone(),
            chaos: chaos.clone(),
        });
        for provider in plane.ctx.providers.values_mut() {
            *provider = Arc::new(ChaosCloud {
                inner: provider.clone(),
                chaos: chaos.clone(),
            });
        }
        Run {
            plane,
            chaos,
            nodes: BTreeMap::new(),
            jobs: Vec::new(),
            duplicate,
            seed: 0x9e37_79b9_7f4a_7c15 ^ crash_at,
            preempted: false,
        }
    }

    /// Runs `f` as one handler invocation: a crash inside it kills it (and, with it, every
    /// message the bus held). Returns whether it finished.
    async fn invoke<F, Fut, T>(&mut self, f: F) -> Option<T>
    where
        F: FnOnce(Context) -> Fut,
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let handle = tokio::spawn(f(self.plane.ctx.clone()));
        match handle.await {
            Ok(value) => Some(value),
            Err(e) if e.is_panic() => {
                // The process died: the in-process bus dies with it.
                self.plane.drop_messages();
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    async fn deliver(&mut self) {
        for _ in 0..50 {
            let mut messages = self.plane.take_messages();
            if messages.is_empty() {
                return;
            }
            if self.duplicate {
                let copies = messages.clone();
                messages.extend(copies.clone());
                messages.extend(copies);
                for i in (1..messages.len()).rev() {
                    let j = (next(&mut self.seed) % (i as u64 + 1)) as usize;
                    messages.swap(i, j);
                }
            }
            for message in messages {
                match message {
                    LocalMessage::Event(envelope) => {
                        let _ = self
                            .invoke(move |ctx| async move {
                                control::advance(&ctx, envelope.job_id, envelope.event).await
                            })
                            .await;
                    }
                    LocalMessage::Ended(job) => {
                        let _ = self
                            .invoke(move |ctx| async move { control::cleanup(&ctx, job).await })
                            .await;
                    }
                }
            }
        }
    }

    /// Every node of every running cluster asks for work and does it, as an agent would.
    async fn drive_nodes(&mut self) {
        for cluster in self.plane.cloud.clusters() {
            if !matches!(cluster.health, shared::provider::ClusterHealth::Running) {
                continue;
            }
            for node in &cluster.nodes {
                let key = (cluster.cluster.clone(), node.rank);
                let (job, rank, name) = (cluster.job_id, node.rank, cluster.cluster.clone());
                let state = self.nodes.entry(key.clone()).or_default();
                if state.done {
                    continue;
                }
                // First what it owes: reports are sent again until they are taken.
                let pending = std::mem::take(&mut state.pending);
                let mut unsent = Vec::new();
                for report in pending {
                    let (name, sending) = (name.clone(), report.clone());
                    let sent = self
                        .invoke(move |ctx| async move {
                            control::nodes::report(&ctx, job, &name, rank, &sending).await
                        })
                        .await;
                    if !matches!(sent, Some(Ok(()))) {
                        unsent.push(report);
                    }
                }
                let state = self.nodes.get_mut(&key).unwrap();
                state.pending = unsent;
                if !state.pending.is_empty() {
                    continue;
                }
                let started = state.started;
                let name2 = name.clone();
                let answer = self
                    .invoke(move |ctx| async move {
                        control::nodes::work(&ctx, job, &name2, rank, started).await
                    })
                    .await;
                let Some(Ok(answer)) = answer else { continue };
                let state = self.nodes.get_mut(&key).unwrap();
                let job_name = name.split('-').next().unwrap_or_default().to_owned();
                match answer.work {
                    Work::Stop => state.done = true,
                    Work::Wait | Work::Continue => {
                        if state.started.is_none() && state.pending.is_empty() {
                            state.pending.push(Report::Ready);
                        }
                    }
                    Work::Setup { .. } => {
                        state.started = Some(Phase::Setup);
                        state.pending = vec![
                            Report::Started {
                                phase: Phase::Setup,
                            },
                            Report::Exited {
                                phase: Phase::Setup,
                                code: 0,
                                chunks: Some(0),
                            },
                        ];
                    }
                    Work::Run { .. } => {
                        state.started = Some(Phase::Run);
                        let code = if job_name == "fail" { 3 } else { 0 };
                        let mut reports = vec![Report::Started { phase: Phase::Run }];
                        // The preempted job and the cancelled one run until something
                        // happens to them.
                        if job_name != "preempted" && job_name != "cancelled" {
                            reports.push(Report::Exited {
                                phase: Phase::Run,
                                code,
                                chunks: Some(0),
                            });
                        } else if job_name == "preempted" && self.preempted {
                            reports.push(Report::Exited {
                                phase: Phase::Run,
                                code: 0,
                                chunks: Some(0),
                            });
                        }
                        state.pending = reports;
                    }
                }
            }
        }
        // A running node's first `work` answer is Wait until all are ready: report Ready.
        for cluster in self.plane.cloud.clusters() {
            for node in &cluster.nodes {
                let state = self
                    .nodes
                    .entry((cluster.cluster.clone(), node.rank))
                    .or_default();
                if state.started.is_none() && state.pending.is_empty() && !state.done {
                    state.pending.push(Report::Ready);
                }
            }
        }
    }

    /// The events of the world: the preempted job loses its machine once it runs, the
    /// cancelled one is cancelled once it runs (a cancel that fails is sent again).
    async fn happen(&mut self) {
        // Every stored job, not only those whose submit answered: a crash after the create
        // leaves a job the client never heard of (it launched again), and its user cancels
        // that one too when they see it in the queue.
        let stored = self
            .plane
            .ctx
            .store
            .list_jobs(None, None, 100)
            .await
            .unwrap();
        for job in stored.jobs {
            let (id, name) = (job.id, job.name().to_owned());
            let running = job.status() == JobStatus::Running;
            if name == "preempted"
                && running
                && !self.preempted
                && let Some(cluster) = job.tasks[0].cluster.clone()
            {
                self.plane.cloud.preempt(&cluster);
                self.preempted = true;
            }
            if name == "cancelled" && running {
                let _ = self
                    .invoke(move |ctx| async move {
                        control::advance(&ctx, id, JobEvent::CancelRequested).await
                    })
                    .await;
            }
        }
    }

    async fn sweep(&mut self) {
        self.plane.clock.advance(Duration::from_secs(31));
        let _ = self
            .invoke(|ctx| async move { control::poll(&ctx).await })
            .await;
    }

    async fn go(mut self) -> Outcome {
        for (name, yaml, _, _) in JOBS {
            let submitted = self
                .invoke(move |ctx| async move {
                    control::submit(
                        &ctx,
                        "alice",
                        control::SubmitRequest {
                            yaml: Some(yaml.to_owned()),
                            ..Default::default()
                        },
                    )
                    .await
                })
                .await;
            let id = if let Some(Ok(job)) = submitted {
                job.id
            } else {
                // The client got an error and launches again.
                control::submit(
                    &self.plane.ctx,
                    "alice",
                    control::SubmitRequest {
                        yaml: Some(yaml.to_owned()),
                        ..Default::default()
                    },
                )
                .await
                .expect("the retried submit")
                .id
            };
            self.jobs.push((id, name));
        }
        for round in 0..120 {
            self.deliver().await;
            self.drive_nodes().await;
            self.deliver().await;
            self.happen().await;
            self.deliver().await;
            if round % 3 == 2 {
                self.sweep().await;
                self.deliver().await;
            }
            if self.settled().await {
                break;
            }
        }
        self.outcome().await
    }

    async fn settled(&self) -> bool {
        let store = &self.plane.ctx.store;
        store.list_active().await.unwrap().is_empty() && self.plane.cloud.running().is_empty()
    }

    async fn outcome(&self) -> Outcome {
        let mut outcome = Outcome {
            points: self.chaos.points.load(Ordering::SeqCst),
            leaked: self.plane.cloud.running().len(),
            ..Outcome::default()
        };
        let launches = self.plane.cloud.launches();
        let mut by_job: BTreeMap<JobId, BTreeSet<String>> = BTreeMap::new();
        for cluster in self.plane.cloud.clusters() {
            by_job
                .entry(cluster.job_id)
                .or_default()
                .insert(cluster.cluster.clone());
        }
        assert_eq!(
            launches.len(),
            launches.iter().collect::<BTreeSet<_>>().len(),
            "the cloud made one cluster twice"
        );
        for (id, name) in &self.jobs {
            let (_, _, end, clusters) = JOBS.iter().find(|(n, ..)| n == name).unwrap();
            let job = self.plane.job(*id).await;
            if job.status() != *end || job.cleaned_at.is_none() {
                eprintln!(
                    "lost: job {id} ({name}) is {} (cleaned: {:?}), not {end}",
                    job.status(),
                    job.cleaned_at
                );
                outcome.lost += 1;
            }
            let made = by_job.get(id).map_or(0, BTreeSet::len);
            if made > *clusters {
                eprintln!("doubled: job {id} ({name}) had {made} clusters, needs {clusters}");
                outcome.doubled += 1;
            }
        }
        outcome
    }
}

/// Crashes are panics on purpose: keep them out of the test's output.
fn quiet_crashes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let crash = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.contains("chaos: the control plane dies"));
        if !crash {
            default(info);
        }
    }));
}

/// Runs the campaigns on one state table; returns the counts printed.
async fn campaign(
    label: &str,
    store: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Arc<dyn JobStore>>>>>,
    crashes: usize,
) {
    quiet_crashes();
    let clean = Run::new(store().await, 0, false).await.go().await;
    assert_eq!(
        (clean.lost, clean.leaked, clean.doubled),
        (0, 0, 0),
        "{label}: the run without a crash"
    );
    // Distinct points, drawn at random (a fixed seed: a failure can be replayed).
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut tried = BTreeSet::new();
    while tried.len() < crashes.min(usize::try_from(clean.points).unwrap_or(usize::MAX)) {
        tried.insert(1 + next(&mut seed) % clean.points);
    }
    let mut total = Outcome::default();
    for &point in &tried {
        let outcome = Run::new(store().await, point, false).await.go().await;
        if (outcome.lost, outcome.leaked, outcome.doubled) != (0, 0, 0) {
            eprintln!("{label}: crash at point {point}: {outcome:?}");
        }
        total.lost += outcome.lost;
        total.leaked += outcome.leaked;
        total.doubled += outcome.doubled;
    }
    let duplicated = Run::new(store().await, 0, true).await.go().await;
    println!(
        "{label} crash-point campaign: {} points of {} tried, {} jobs each: {} lost, {} leaked, {} doubled",
        tried.len(),
        clean.points,
        JOBS.len(),
        total.lost,
        total.leaked,
        total.doubled
    );
    println!(
        "{label} duplicate-delivery campaign (every event 3 times, shuffled), {} jobs: {} lost, {} leaked, {} doubled",
        JOBS.len(),
        duplicated.lost,
        duplicated.leaked,
        duplicated.doubled
    );
    assert_eq!((total.lost, total.leaked, total.doubled), (0, 0, 0));
    assert_eq!(
        (duplicated.lost, duplicated.leaked, duplicated.doubled),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_100_points_and_duplicate_deliveries_lose_leak_and_double_nothing() {
    campaign("local stack (SQLite)", || Box::pin(async { None }), 100).await;
}

#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_too() {
    // The state table on the emulator at AWS_ENDPOINT_URL (moto, as scripts/test starts it),
    // a table per run; fewer points, since each run makes a table.
    campaign(
        "emulator stack (DynamoDB)",
        || {
            Box::pin(async {
                let name = format!(
                    "stratus-campaign-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos()
                );
                let store = shared::store::DynamoStore::from_env(name).await;
                store.create_table().await.expect("a table on the emulator");
                Some(Arc::new(store) as Arc<dyn JobStore>)
            })
        },
        10,
    )
    .await;
}
