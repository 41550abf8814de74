//! What a running node costs in requests (run: `cargo bench -p agent --bench node_cost`).
//!
//! A simulated hour, deterministic: the real handlers (`submit`, `advance`, `poll`, the agent
//! routes, `cleanup`) over the metering adapters (`shared::metering::counting`: DynamoDB units
//! from item sizes, S3 requests, EventBridge events, cloud API calls) on SQLite and a blob
//! folder with presigned URLs, a manual clock, and simulated nodes that follow the agent's own
//! protocol: `agent::plan` decides what to do with each answer and when to poll next,
//! `agent::logs::LogBatcher` cuts the output into chunks with the cloud cadence, and chunks
//! go to presigned URLs fetched in batches of 64. Each handler call is one Lambda invocation
//! (through API Gateway for the agent routes) with the memory the SAM template gives its
//! function and a duration of 5 ms plus 10 ms per service call it makes.
//!
//! Scenarios, each a whole job (launch, 40 s boot, 30 s setup, one hour of run, cleanup):
//! (a) a quiet 1-node job, (b) a quiet 8-node job, (c) a 1-node job printing 1 KB/s, and
//! (d) the same followed by `stratus jobs logs` the whole hour (the follower's reads
//! included). It prints per node-hour every billable count and the dollars (prices:
//! `shared::metering::prices`), then one summary line. It asserts nothing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::logs::LogBatcher;
use agent::plan::{Decision, Progress, decide, next_poll};
use async_trait::async_trait;
use shared::agent_protocol::{AgentCadence, LogChunk, LogUrlsRequest, Report};
use shared::blob::LocalBlobStore;
use shared::bus::{LocalBus, LocalMessage};
use shared::catalog::Catalog;
use shared::clock::{ManualClock, Timestamp};
use shared::cloud::Cloud;
use shared::control::logs::LogCursor;
use shared::control::nodes as node_api;
use shared::control::{self, Context, Settings, SubmitRequest};
use shared::job::{JobId, Phase};
use shared::metering::counting::{CountingBlobs, CountingBus, CountingProvider, CountingStore};
use shared::metering::{Meter, Usage, prices};
use shared::provider::{
    ClusterHealth, ClusterSpec, ClusterState, NodeInfo, Provider, ProviderError,
};
use shared::store::SqliteStore;
use tokio::sync::mpsc::UnboundedReceiver;

const BOOT: Duration = Duration::from_secs(40);
const SETUP: Duration = Duration::from_secs(30);
const RUN: Duration = Duration::from_hours(1);
const SWEEP_EVERY: Duration = Duration::from_mins(1);
const CADENCE: AgentCadence = AgentCadence::CLOUD;
/// How often a follower asks for new output.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Each function's memory, from the SAM template.
#[derive(Debug, Clone, Copy)]
struct Memory {
    api: u32,
    recover: u32,
    poll: u32,
    cleanup: u32,
}

fn template_memory() -> Memory {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    let text = std::fs::read_to_string(path).expect("infra/template.yaml");
    let template: serde_yaml::Value = serde_yaml::from_str(&text).expect("the template parses");
    let memory = |binary: &str| {
        template["Resources"]
            .as_mapping()
            .into_iter()
            .flatten()
            .find(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"] == binary)
            .and_then(|(_, r)| r["Properties"]["MemorySize"].as_u64())
            .map_or_else(|| panic!("no MemorySize for {binary}"), |m| m as u32)
    };
    Memory {
        api: memory("api"),
        recover: memory("recover"),
        poll: memory("poll"),
        cleanup: memory("cleanup"),
    }
}

/// A cloud where every launch succeeds and machines run until terminated.
#[derive(Default)]
struct SimCloud {
    clusters: Mutex<BTreeMap<String, ClusterState>>,
}

#[async_trait]
impl Provider for SimCloud {
    fn cloud(&self) -> Cloud {
        Cloud::Aws
    }
    async fn launch(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        let nodes: Vec<NodeInfo> = (0..spec.num_nodes)
            .map(|rank| NodeInfo {
                rank,
                instance_id: format!("i-{}-{rank}", spec.cluster),
                ip: format!("10.0.0.{}", rank + 1),
            })
            .collect();
        self.clusters.lock().unwrap().insert(
            spec.cluster.clone(),
            ClusterState {
                cluster: spec.cluster.clone(),
                job_id: spec.job_id,
                region: spec.candidate.region.clone(),
                zone: spec.candidate.zone.clone(),
                health: ClusterHealth::Running,
                nodes: nodes.clone(),
            },
        );
        Ok(nodes)
    }
    async fn describe_region(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        Ok(self
            .clusters
            .lock()
            .unwrap()
            .values()
            .filter(|c| c.region == region)
            .cloned()
            .collect())
    }
    async fn terminate(&self, _: &str, cluster: &str) -> Result<(), ProviderError> {
        if let Some(c) = self.clusters.lock().unwrap().get_mut(cluster) {
            c.health = ClusterHealth::Terminated;
        }
        Ok(())
    }
}

/// What happens next in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Boot(u32),
    /// A poll of node `rank`, valid while its generation is still `gen`.
    Poll {
        rank: u32,
        generation: u64,
    },
    Tick(u32),
    PhaseEnd(u32),
    Sweep,
    Follow,
}

/// A simulated node: the agent's state.
struct Node {
    progress: Progress,
    quiet: u32,
    generation: u64,
    live: bool,
    running: Option<Running>,
    stopped: bool,
}

struct Running {
    phase: Phase,
    batcher: LogBatcher,
    urls: Vec<String>,
    first: u64,
    fetched_at: Duration,
}

struct Scenario {
    name: &'static str,
    nodes: u32,
    bytes_per_sec: usize,
    followed: bool,
}

struct Sim {
    ctx: Context,
    meter: Arc<Meter>,
    clock: Arc<ManualClock>,
    blobs: Arc<CountingBlobs>,
    cloud: Arc<SimCloud>,
    messages: UnboundedReceiver<LocalMessage>,
    memory: Memory,
    start: Timestamp,
    base: Instant,
    now: Duration,
    queue: BinaryHeap<Reverse<(Duration, u64, Due)>>,
    order: u64,
    job: JobId,
    cluster: Option<String>,
    nodes: Vec<Node>,
    scenario: Scenario,
    cursor: LogCursor,
    launched_at: Option<Duration>,
    ended_at: Option<Duration>,
    _dir: tempfile::TempDir,
}

impl Sim {
    async fn new(scenario: Scenario) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let meter = Arc::new(Meter::new());
        let start = Timestamp::from_secs(1_800_000_000);
        let clock = Arc::new(ManualClock::new(start));
        let (bus, messages) = LocalBus::new();
        let cloud = Arc::new(SimCloud::default());
        let blobs = Arc::new(CountingBlobs {
            inner: Arc::new(LocalBlobStore::new(dir.path().join("blobs"))),
            meter: meter.clone(),
            presign: true,
        });
        let provider: Arc<dyn Provider> = Arc::new(CountingProvider {
            inner: cloud.clone(),
            meter: meter.clone(),
        });
        let ctx = Context {
            store: Arc::new(CountingStore {
                inner: Arc::new(
                    SqliteStore::open(dir.path().join("state.db"))
                        .await
                        .unwrap(),
                ),
                meter: meter.clone(),
            }),
            providers: [(Cloud::Aws, provider)].into_iter().collect(),
            blobs: blobs.clone(),
            bus: Arc::new(CountingBus {
                inner: Arc::new(bus),
                meter: meter.clone(),
            }),
            clock: clock.clone(),
            catalog: Arc::new(Catalog::embedded()),
            buckets: shared::buckets::BucketStores::default(),
            settings: Settings {
                agent_cadence: CADENCE,
                ..shared::testing::settings(Cloud::Aws, "https://api.example.com")
            },
        };
        let nodes = (0..scenario.nodes)
            .map(|_| Node {
                progress: Progress::default(),
                quiet: 0,
                generation: 0,
                live: false,
                running: None,
                stopped: false,
            })
            .collect();
        Sim {
            ctx,
            meter,
            clock,
            blobs,
            cloud,
            messages,
            memory: template_memory(),
            start,
            base: Instant::now(),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            order: 0,
            job: 0,
            cluster: None,
            nodes,
            scenario,
            cursor: LogCursor::default(),
            launched_at: None,
            ended_at: None,
            _dir: dir,
        }
    }

    fn at(&mut self, after: Duration, due: Due) {
        self.order += 1;
        self.queue
            .push(Reverse((self.now + after, self.order, due)));
    }

    /// Delivers what the handlers put on the bus, one function invocation each.
    async fn deliver(&mut self) {
        while let Ok(message) = self.messages.try_recv() {
            let before = self.meter.usage();
            match message {
                LocalMessage::Event(envelope) => {
                    control::advance(&self.ctx, envelope.job_id, envelope.event)
                        .await
                        .unwrap();
                    self.meter.invocation(before, self.memory.recover, false);
                }
                LocalMessage::Ended(job) => {
                    control::cleanup(&self.ctx, job).await.unwrap();
                    self.meter.invocation(before, self.memory.cleanup, false);
                    self.ended_at = Some(self.now);
                }
            }
        }
        let launched = self.cloud.clusters.lock().unwrap().keys().next().cloned();
        if self.cluster.is_none()
            && let Some(cluster) = launched
        {
            self.cluster = Some(cluster);
            self.launched_at = Some(self.now);
            for rank in 0..self.scenario.nodes {
                self.at(BOOT, Due::Boot(rank));
            }
        }
    }

    /// One agent-route call: an API Gateway request and an invocation of `api`.
    async fn api<T>(&mut self, call: impl AsyncFnOnce(&Context, &str) -> T) -> T {
        let before = self.meter.usage();
        let cluster = self.cluster.clone().unwrap();
        let out = call(&self.ctx, &cluster).await;
        self.meter.invocation(before, self.memory.api, true);
        self.deliver().await;
        out
    }

    async fn report(&mut self, rank: u32, report: Report) {
        let job = self.job;
        self.api(async |ctx, cluster| {
            node_api::report(ctx, job, cluster, rank, &report)
                .await
                .unwrap();
        })
        .await;
    }

    async fn run(mut self) -> (Usage, f64, u64) {
        let yaml = format!(
            "name: bench\nnum_nodes: {}\nresources:\n  infra: aws/us-east-1\nsetup: echo setup\nrun: python train.py\n",
            self.scenario.nodes
        );
        let before = self.meter.usage();
        let job = control::submit(
            &self.ctx,
            "bench",
            SubmitRequest {
                yaml: Some(yaml),
                ..SubmitRequest::default()
            },
        )
        .await
        .unwrap();
        self.meter.invocation(before, self.memory.api, true);
        self.job = job.id;
        self.deliver().await;
        self.at(SWEEP_EVERY, Due::Sweep);
        if self.scenario.followed {
            self.at(FOLLOW_EVERY, Due::Follow);
        }
        let mut printed: u64 = 0;
        while let Some(Reverse((time, _, due))) = self.queue.pop() {
            self.now = time;
            self.clock.set(self.start.plus(time));
            if self.ended_at.is_some() && !matches!(due, Due::Poll { .. }) {
                // The job is over; its machines are gone.
                if self.nodes.iter().all(|n| n.stopped) {
                    break;
                }
            }
            match due {
                Due::Boot(rank) => {
                    self.report(rank, Report::Ready).await;
                    self.at(
                        Duration::ZERO,
                        Due::Poll {
                            rank,
                            generation: 0,
                        },
                    );
                }
                Due::Poll { rank, generation } => self.poll(rank, generation).await,
                Due::Tick(rank) => printed += self.tick(rank).await,
                Due::PhaseEnd(rank) => self.phase_end(rank).await,
                Due::Sweep => {
                    let before = self.meter.usage();
                    control::poll(&self.ctx).await.unwrap();
                    self.meter.invocation(before, self.memory.poll, false);
                    self.deliver().await;
                    if self.ended_at.is_none() {
                        self.at(SWEEP_EVERY, Due::Sweep);
                    }
                }
                Due::Follow => self.follow().await,
            }
        }
        let node_hours = f64::from(self.scenario.nodes)
            * self
                .ended_at
                .unwrap()
                .saturating_sub(self.launched_at.unwrap())
                .as_secs_f64()
            / 3600.0;
        (self.meter.usage(), node_hours, printed)
    }

    async fn poll(&mut self, rank: u32, generation: u64) {
        let node = &self.nodes[rank as usize];
        if node.stopped || node.generation != generation {
            return;
        }
        let started = node.progress.latest_started();
        let job = self.job;
        let answer = self
            .api(async |ctx, cluster| {
                node_api::work(ctx, job, cluster, rank, started)
                    .await
                    .unwrap()
            })
            .await;
        let node = &mut self.nodes[rank as usize];
        node.live = answer.live_logs;
        node.progress.busy = node.running.is_some();
        match decide(&node.progress, &answer.work) {
            Decision::Stop => {
                node.stopped = true;
                return;
            }
            Decision::Nothing => node.quiet += 1,
            Decision::Start { phase, .. } => {
                node.progress.start(phase);
                node.quiet = 0;
                node.running = Some(Running {
                    phase,
                    batcher: LogBatcher::new(phase, CADENCE.log_chunk_bytes),
                    urls: Vec::new(),
                    first: 0,
                    fetched_at: Duration::ZERO,
                });
                self.report(rank, Report::Started { phase }).await;
                let length = if phase == Phase::Setup { SETUP } else { RUN };
                self.at(length, Due::PhaseEnd(rank));
                self.at(Duration::from_secs(1), Due::Tick(rank));
            }
        }
        let node = &self.nodes[rank as usize];
        let delay = next_poll(
            node.progress.busy || node.running.is_some(),
            node.quiet,
            Duration::from_millis(CADENCE.poll_ms),
            Duration::from_millis(CADENCE.heartbeat_ms),
        );
        self.at(delay, Due::Poll { rank, generation });
    }

    /// A second of output, and the chunks that are due.
    async fn tick(&mut self, rank: u32) -> u64 {
        let now = self.base + self.now;
        let bytes = self.scenario.bytes_per_sec;
        let node = &mut self.nodes[rank as usize];
        let Some(running) = node.running.as_mut() else {
            return 0;
        };
        let line = "x".repeat(bytes.saturating_sub(1)) + "\n";
        if bytes > 0 {
            running.batcher.push(line.as_bytes(), now);
        }
        let flush = Duration::from_millis(if node.live {
            CADENCE.log_live_ms
        } else {
            CADENCE.log_flush_ms
        });
        let mut chunks = Vec::new();
        while let Some(chunk) = running.batcher.pop_full() {
            chunks.push(chunk);
        }
        chunks.extend(running.batcher.pop_due(now, flush));
        for chunk in chunks {
            self.send(rank, chunk).await;
        }
        self.at(Duration::from_secs(1), Due::Tick(rank));
        bytes as u64
    }

    /// A chunk to its presigned URL (fetching a batch of URLs when needed).
    async fn send(&mut self, rank: u32, chunk: LogChunk) {
        let now = self.now;
        let running = self.nodes[rank as usize].running.as_mut().unwrap();
        let stale = running.urls.is_empty()
            || chunk.seq < running.first
            || chunk.seq >= running.first + running.urls.len() as u64
            || now.saturating_sub(running.fetched_at) > Duration::from_mins(50);
        if stale {
            let (job, phase, seq) = (self.job, chunk.phase, chunk.seq);
            let answer = self
                .api(async |ctx, cluster| {
                    node_api::log_urls(
                        ctx,
                        job,
                        cluster,
                        rank,
                        &LogUrlsRequest {
                            phase,
                            first_seq: seq,
                            count: 64,
                        },
                    )
                    .await
                    .unwrap()
                })
                .await;
            let running = self.nodes[rank as usize].running.as_mut().unwrap();
            running.urls = answer.urls;
            running.first = answer.first_seq;
            running.fetched_at = now;
        }
        let running = self.nodes[rank as usize].running.as_ref().unwrap();
        let url = running.urls[(chunk.seq - running.first) as usize].clone();
        self.blobs
            .put_url(&url, chunk.data.into_bytes())
            .await
            .unwrap();
    }

    async fn phase_end(&mut self, rank: u32) {
        let node = &mut self.nodes[rank as usize];
        let Some(mut running) = node.running.take() else {
            return;
        };
        let chunks = running.batcher.finish();
        let count = running.batcher.chunks();
        let phase = running.phase;
        node.running = Some(running);
        for chunk in chunks {
            self.send(rank, chunk).await;
        }
        let node = &mut self.nodes[rank as usize];
        node.running = None;
        node.progress.busy = false;
        node.quiet = 0;
        node.generation += 1;
        let generation = node.generation;
        self.report(
            rank,
            Report::Exited {
                phase,
                code: 0,
                chunks: Some(count),
            },
        )
        .await;
        // The agent polls at once when a phase ends.
        self.at(Duration::ZERO, Due::Poll { rank, generation });
    }

    /// A follower's read of the log (`GET /api/v1/jobs/N/logs?follow=true`).
    async fn follow(&mut self) {
        let before = self.meter.usage();
        let ctx = &self.ctx;
        let now = ctx.clock.now();
        if ctx
            .store
            .followed_until(self.job)
            .await
            .unwrap()
            .is_none_or(|until| until < now.plus(Duration::from_secs(30)))
        {
            ctx.store
                .follow(self.job, now.plus(Duration::from_mins(1)))
                .await
                .unwrap();
        }
        let facts = ctx.store.job_facts(self.job).await.unwrap();
        let read = control::logs::read(ctx.blobs.as_ref(), self.job, &facts, None, &self.cursor)
            .await
            .unwrap();
        self.cursor = read.cursor;
        ctx.store.get_job(self.job).await.unwrap();
        self.meter.invocation(before, self.memory.api, true);
        if self.ended_at.is_none() {
            self.at(FOLLOW_EVERY, Due::Follow);
        }
    }
}

async fn scenario(scenario: Scenario) -> (f64, f64) {
    let name = scenario.name;
    let started = Instant::now();
    let (usage, node_hours, printed) = Sim::new(scenario).await.run().await;
    println!(
        "\n{name}: {node_hours:.2} node-hours, {:.1} MB of output (simulated in {:.1} s)",
        printed as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!("  per node-hour:");
    print!("{}", usage.table(node_hours));
    (usage.total() / node_hours, printed as f64)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "node cost: cloud cadence {CADENCE:?}\nprices: {}",
        prices::AS_OF
    );
    runtime.block_on(async {
        let (quiet, _) = scenario(Scenario {
            name: "(a) quiet 1-node job",
            nodes: 1,
            bytes_per_sec: 0,
            followed: false,
        })
        .await;
        let (eight, _) = scenario(Scenario {
            name: "(b) quiet 8-node job",
            nodes: 8,
            bytes_per_sec: 0,
            followed: false,
        })
        .await;
        let (logging, bytes) = scenario(Scenario {
            name: "(c) 1-node job printing 1 KB/s",
            nodes: 1,
            bytes_per_sec: 1024,
            followed: false,
        })
        .await;
        let (followed, _) = scenario(Scenario {
            name: "(d) as (c), followed by `stratus jobs logs` the whole hour",
            nodes: 1,
            bytes_per_sec: 1024,
            followed: true,
        })
        .await;
        // The output's own cost: what (c) costs beyond (a), per GB printed.
        let per_gb = (logging - quiet) / (bytes / 1e9);
        println!(
            "\nfollowing a job's log for an hour adds ${:.5} per node-hour",
            followed - logging
        );
        println!(
            "cost per node-hour: quiet ${quiet:.6}, 8-node ${eight:.6}, logging ${per_gb:.4} per GB"
        );
    });
}
