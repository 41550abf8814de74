//! The poll sweep at scale (run: `cargo bench -p shared --bench poll_sweep`): 1,000 and 10,000
//! active jobs, each running on its own cluster across five regions of a simulated cloud, with
//! the state table (SQLite, node facts included) real. It prints the sweep's wall time, the
//! cloud, table and blob calls it made (counted by `shared::metering::counting`, as AWS would
//! bill them), and what the same calls would take at a typical AWS latency. It asserts
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shared::blob::LocalBlobStore;
use shared::bus::LocalBus;
use shared::catalog::Catalog;
use shared::clock::{Clock, SystemClock};
use shared::cloud::Cloud;
use shared::control::{self, Context};
use shared::facts::{ClusterRef, NodeFact};
use shared::job::{JobRecord, builder};
use shared::metering::Meter;
use shared::metering::counting::{CountingBlobs, CountingProvider, CountingStore};
use shared::provider::{
    ClusterHealth, ClusterSpec, ClusterState, NodeInfo, Provider, ProviderError,
};
use shared::store::FactStore;
use shared::store::{JobStore, SqliteStore};

const REGIONS: [&str; 5] = [
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
];

/// A cloud whose every region answers with its share of the jobs' clusters, all running.
struct SimulatedCloud {
    clusters: BTreeMap<String, Vec<ClusterState>>,
}

#[async_trait]
impl Provider for SimulatedCloud {
    fn cloud(&self) -> Cloud {
        Cloud::Aws
    }
    async fn launch(&self, _: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        Ok(vec![])
    }
    async fn describe_region(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        Ok(self.clusters.get(region).cloned().unwrap_or_default())
    }
    async fn terminate(&self, _: &str, _: &str) -> Result<(), ProviderError> {
        Ok(())
    }
}

async fn sweep(jobs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let meter = Arc::new(Meter::new());
    let store = SqliteStore::open(dir.path().join("state.db"))
        .await
        .unwrap();
    let now = SystemClock.now();
    let mut clusters: BTreeMap<String, Vec<ClusterState>> = BTreeMap::new();
    for i in 0..jobs {
        let id = store.next_job_id().await.unwrap();
        let region = REGIONS[i % REGIONS.len()];
        let job = JobRecord::test()
            .id(id)
            .with_candidates(&[builder::candidate(
                Cloud::Aws,
                region,
                &format!("{region}a"),
                0.03,
            )])
            .running()
            .version(0);
        let stored = store.create_job(&job).await.unwrap();
        let cluster = stored.tasks[0].cluster.clone().unwrap();
        let at = ClusterRef {
            cluster: cluster.clone(),
            task: 0,
            attempt: 1,
        };
        for fact in [NodeFact::Ready, NodeFact::Seen(now)] {
            store.record_node(id, &at, 0, fact).await.unwrap();
        }
        clusters
            .entry(region.to_owned())
            .or_default()
            .push(ClusterState {
                cluster,
                job_id: id,
                region: region.to_owned(),
                zone: format!("{region}a"),
                health: ClusterHealth::Running,
                nodes: vec![],
            });
    }
    let (bus, _events) = LocalBus::new();
    let cloud: Arc<dyn Provider> = Arc::new(CountingProvider {
        inner: Arc::new(SimulatedCloud { clusters }),
        meter: meter.clone(),
    });
    let ctx = Context {
        store: Arc::new(CountingStore {
            inner: Arc::new(store),
            meter: meter.clone(),
        }),
        providers: [(Cloud::Aws, cloud)].into_iter().collect(),
        blobs: Arc::new(CountingBlobs {
            inner: Arc::new(LocalBlobStore::new(dir.path().join("blobs"))),
            meter: meter.clone(),
            presign: true,
        }),
        bus: Arc::new(bus),
        clock: Arc::new(SystemClock),
        catalog: Arc::new(Catalog::embedded()),
        buckets: shared::buckets::BucketStores::default(),
        settings: shared::testing::settings(Cloud::Aws, "http://127.0.0.1:1"),
    };
    let started = Instant::now();
    let stats = control::poll(&ctx).await.unwrap();
    let took = started.elapsed();
    let usage = meter.usage();
    let (cloud, table, blob) = (
        usage.cloud_api_calls,
        usage.dynamodb_requests,
        usage.s3_gets + usage.s3_lists + usage.s3_puts,
    );
    // What the same calls cost on AWS: ~10 ms per DynamoDB or S3 call, ~300 ms per
    // DescribeInstances page; the sweep runs 32 jobs at once.
    let estimate = Duration::from_millis(((table + blob) * 10) / 32 + cloud * 300);
    println!(
        "{jobs:>6} active jobs: sweep {:>8.1} ms here | calls: cloud {cloud:>2} (describe {}), table {table:>6} ({:.0} RRU), blob {blob:>6} | events {} | at AWS latencies ≈ {:.1} s",
        took.as_secs_f64() * 1000.0,
        stats.describe_calls,
        usage.dynamodb_rru,
        stats.events,
        estimate.as_secs_f64()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for jobs in [1_000, 10_000] {
        runtime.block_on(sweep(jobs));
    }
}
