//! The poll sweep at scale (run: `cargo bench -p shared --bench poll_sweep`): 1,000 and 10,000
//! active jobs, each running on its own cluster across five regions of a simulated cloud, with
//! the state table (SQLite) and node facts (a folder) real. It prints the sweep's wall time and
//! how many cloud, table and blob calls it made, and what the same calls would take at a
//! typical AWS latency. It asserts nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shared::blob::{BlobError, BlobStore, LocalBlobStore};
use shared::catalog::Catalog;
use shared::clock::{Clock, SystemClock};
use shared::cloud::Cloud;
use shared::control::{self, Context, LocalBus, Secret, Settings};
use shared::job::{ControllerEvent, Fence, JobId, JobRecord, builder};
use shared::provider::{
    ClusterHealth, ClusterSpec, ClusterState, NodeInfo, Provider, ProviderError,
};
use shared::store::{Cursor, JobReader, JobStore, Page, SqliteStore, StoreError};

const REGIONS: [&str; 5] = [
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
];

#[derive(Default)]
struct Counts {
    cloud: AtomicUsize,
    table: AtomicUsize,
    blob: AtomicUsize,
}

/// A cloud whose every region answers with its share of the jobs' clusters, all running.
struct SimulatedCloud {
    clusters: BTreeMap<String, Vec<ClusterState>>,
    counts: Arc<Counts>,
}

#[async_trait]
impl Provider for SimulatedCloud {
    fn cloud(&self) -> Cloud {
        Cloud::Aws
    }
    async fn launch(&self, _: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        self.counts.cloud.fetch_add(1, Ordering::Relaxed);
        Ok(vec![])
    }
    async fn describe_region(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        self.counts.cloud.fetch_add(1, Ordering::Relaxed);
        Ok(self.clusters.get(region).cloned().unwrap_or_default())
    }
    async fn terminate(&self, _: &str, _: &str) -> Result<(), ProviderError> {
        self.counts.cloud.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct CountingStore {
    inner: SqliteStore,
    counts: Arc<Counts>,
}

#[async_trait]
impl JobReader for CountingStore {
    async fn get_job(&self, id: JobId) -> Result<JobRecord, StoreError> {
        self.counts.table.fetch_add(1, Ordering::Relaxed);
        self.inner.get_job(id).await
    }
    async fn list_jobs(
        &self,
        owner: Option<&str>,
        page: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.counts.table.fetch_add(1, Ordering::Relaxed);
        self.inner.list_jobs(owner, page, limit).await
    }
    async fn list_active(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.counts.table.fetch_add(1, Ordering::Relaxed);
        self.inner.list_active().await
    }
    async fn find_by_name(&self, owner: &str, name: &str) -> Result<Vec<JobRecord>, StoreError> {
        self.counts.table.fetch_add(1, Ordering::Relaxed);
        self.inner.find_by_name(owner, name).await
    }
    async fn list_events(&self, job_id: JobId) -> Result<Vec<ControllerEvent>, StoreError> {
        self.counts.table.fetch_add(1, Ordering::Relaxed);
        self.inner.list_events(job_id).await
    }
}

#[async_trait]
impl JobStore for CountingStore {
    async fn next_job_id(&self) -> Result<JobId, StoreError> {
        self.inner.next_job_id().await
    }
    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord, StoreError> {
        self.inner.create_job(job).await
    }
    async fn update_job(&self, job: &JobRecord, expected: Fence) -> Result<JobRecord, StoreError> {
        self.counts.table.fetch_add(1, Ordering::Relaxed);
        self.inner.update_job(job, expected).await
    }
    async fn append_events(
        &self,
        job_id: JobId,
        events: &[ControllerEvent],
    ) -> Result<(), StoreError> {
        self.counts.table.fetch_add(1, Ordering::Relaxed);
        self.inner.append_events(job_id, events).await
    }
}

struct CountingBlobs {
    inner: LocalBlobStore,
    counts: Arc<Counts>,
}

#[async_trait]
impl BlobStore for CountingBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        self.counts.blob.fetch_add(1, Ordering::Relaxed);
        self.inner.put(key, bytes).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        self.counts.blob.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        self.counts.blob.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).await
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        self.counts.blob.fetch_add(1, Ordering::Relaxed);
        self.inner.delete_prefix(prefix).await
    }
}

async fn sweep(jobs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let counts = Arc::new(Counts::default());
    let store = SqliteStore::open(dir.path().join("state.db"))
        .await
        .unwrap();
    let blobs = LocalBlobStore::new(dir.path().join("blobs"));
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
        blobs
            .put(&format!("jobs/{id}/nodes/{cluster}/0/ready"), vec![])
            .await
            .unwrap();
        blobs
            .put(
                &format!("jobs/{id}/nodes/{cluster}/0/seen"),
                now.as_millis().to_string().into_bytes(),
            )
            .await
            .unwrap();
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
    let cloud: Arc<dyn Provider> = Arc::new(SimulatedCloud {
        clusters,
        counts: counts.clone(),
    });
    let ctx = Context {
        store: Arc::new(CountingStore {
            inner: store,
            counts: counts.clone(),
        }),
        providers: [(Cloud::Aws, cloud)].into_iter().collect(),
        blobs: Arc::new(CountingBlobs {
            inner: blobs,
            counts: counts.clone(),
        }),
        bus: Arc::new(bus),
        clock: Arc::new(SystemClock),
        catalog: Arc::new(Catalog::embedded()),
        settings: Settings {
            agent_api_url: "http://127.0.0.1:1".into(),
            secret: Secret::new(b"bench".to_vec()),
            enabled_clouds: vec![Cloud::Aws],
            heartbeat_timeout: Duration::from_mins(3),
            local_buckets: None,
            started_at: shared::clock::Timestamp::EPOCH,
        },
    };
    let started = Instant::now();
    let stats = control::poll(&ctx).await.unwrap();
    let took = started.elapsed();
    let (cloud, table, blob) = (
        counts.cloud.load(Ordering::Relaxed),
        counts.table.load(Ordering::Relaxed),
        counts.blob.load(Ordering::Relaxed),
    );
    // What the same calls cost on AWS: ~10 ms per DynamoDB or S3 call, ~300 ms per
    // DescribeInstances page; the sweep runs 32 jobs at once.
    let estimate = Duration::from_millis(((table + blob) as u64 * 10) / 32 + cloud as u64 * 300);
    println!(
        "{jobs:>6} active jobs: sweep {:>8.1} ms here | calls: cloud {cloud:>2} (describe {}), table {table:>6}, blob {blob:>6} | events {} | at AWS latencies ≈ {:.1} s",
        took.as_secs_f64() * 1000.0,
        stats.describe_calls,
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
