//! Counting adapters: each wraps a real adapter of a port and adds to a [`Meter`] what the
//! same call would be billed on AWS: one DynamoDB request with its read or write units (from
//! the item sizes, as DynamoDB rounds them: 4 KB per read unit, halved when eventually
//! consistent, 1 KB per write unit, doubled in a transaction), one S3 request per object call,
//! one EventBridge event per publish, one cloud API call per provider call.

use std::sync::Arc;

use async_trait::async_trait;

use super::Meter;
use crate::blob::{BlobError, BlobStore, Bounded, UploadUrl};
use crate::bus::{BusError, EventBus};
use crate::clock::Timestamp;
use crate::facts::{CapacityEvent, ClusterFact, ClusterFacts, ClusterRef, NodeFact, ZoneCapacity};
use crate::job::{ControllerEvent, Fence, JobEvent, JobId, JobRecord};
use crate::provider::{ClusterSpec, ClusterState, NodeInfo, Provider, ProviderError};
use crate::store::FactStore;
use crate::store::{Cursor, JobReader, JobStore, Page, StoreError, wire};

/// Bytes DynamoDB counts for an item's keys and small attributes besides its document.
const ITEM_OVERHEAD: usize = 200;
/// Bytes of one node's facts item.
const NODE_ITEM: usize = 150;

fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// The sizes of a job's items: the job item, then each task item.
fn job_items(job: &JobRecord) -> (usize, Vec<usize>) {
    let state = wire::encode_state(job).map_or(0, |s| s.len()) + ITEM_OVERHEAD;
    let tasks = wire::encode_specs(job)
        .map(|specs| specs.iter().map(|s| s.len() + ITEM_OVERHEAD).collect())
        .unwrap_or_default();
    (state, tasks)
}

fn job_bytes(job: &JobRecord) -> usize {
    let (meta, tasks) = job_items(job);
    meta + tasks.iter().sum::<usize>()
}

fn facts_bytes(facts: &ClusterFacts) -> usize {
    facts.ranks.len() * NODE_ITEM
        + serde_json::to_string(&facts.nodes).map_or(0, |s| s.len())
        + ITEM_OVERHEAD
}

/// A [`JobStore`] that counts DynamoDB requests and units.
pub struct CountingStore {
    pub inner: Arc<dyn JobStore>,
    pub meter: Arc<Meter>,
}

impl CountingStore {
    fn read(&self, bytes: usize, consistent: bool) {
        self.meter.add(|u| {
            u.dynamodb_requests += 1;
            u.dynamodb_rru += read_units(bytes, consistent);
        });
    }

    fn write(&self, wru: f64) {
        self.meter.add(|u| {
            u.dynamodb_requests += 1;
            u.dynamodb_wru += wru;
        });
    }

    /// An index query (keys only, eventually consistent), then a consistent batch read.
    fn listing(&self, jobs: &[JobRecord]) {
        self.read(jobs.len() * 100, false);
        let bytes: usize = jobs.iter().map(job_bytes).sum();
        if !jobs.is_empty() {
            self.read(bytes, true);
        }
    }
}

#[async_trait]
impl JobReader for CountingStore {
    async fn get_job(&self, id: JobId) -> Result<JobRecord, StoreError> {
        let job = self.inner.get_job(id).await;
        self.read(job.as_ref().map_or(0, job_bytes), true);
        job
    }

    async fn list_jobs(
        &self,
        owner: Option<&str>,
        page: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let page = self.inner.list_jobs(owner, page, limit).await?;
        self.listing(&page.jobs);
        Ok(page)
    }

    async fn list_active(&self) -> Result<Vec<JobRecord>, StoreError> {
        let jobs = self.inner.list_active().await?;
        self.listing(&jobs);
        Ok(jobs)
    }

    async fn find_by_name(&self, owner: &str, name: &str) -> Result<Vec<JobRecord>, StoreError> {
        let jobs = self.inner.find_by_name(owner, name).await?;
        self.listing(&jobs);
        Ok(jobs)
    }

    async fn list_events(&self, job_id: JobId) -> Result<Vec<ControllerEvent>, StoreError> {
        let events = self.inner.list_events(job_id).await?;
        let bytes: usize = events
            .iter()
            .map(|e| wire::encode_event(job_id, e).map_or(0, |s| s.len()) + 100)
            .sum();
        self.read(bytes, true);
        Ok(events)
    }
}

#[async_trait]
impl JobStore for CountingStore {
    async fn next_job_ids(&self, count: u32) -> Result<JobId, StoreError> {
        self.write(1.0);
        self.inner.next_job_ids(count).await
    }

    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord, StoreError> {
        let (meta, tasks) = job_items(job);
        // A transaction bills twice; the four indexes take one small write each.
        let units =
            2.0 * (write_units(meta) + tasks.iter().map(|t| write_units(*t)).sum::<f64>()) + 4.0;
        self.write(units);
        self.inner.create_job(job).await
    }

    async fn update_job(&self, job: &JobRecord, expected: Fence) -> Result<JobRecord, StoreError> {
        let (meta, _) = job_items(job);
        // Leaving the sparse `active` index is one more (index) write.
        let index = if job.is_active() { 0.0 } else { 1.0 };
        self.write(write_units(meta) + index);
        self.inner.update_job(job, expected).await
    }

    async fn append_events(
        &self,
        job_id: JobId,
        events: &[ControllerEvent],
    ) -> Result<(), StoreError> {
        for event in events {
            let bytes = wire::encode_event(job_id, event).map_or(0, |s| s.len()) + 100;
            self.write(write_units(bytes));
        }
        self.inner.append_events(job_id, events).await
    }

    async fn claim(&self, name: &str, job_id: JobId) -> Result<(), StoreError> {
        self.write(1.0);
        self.inner.claim(name, job_id).await
    }
}

#[async_trait]
impl FactStore for CountingStore {
    async fn record_cluster(
        &self,
        job_id: JobId,
        at: &ClusterRef,
        fact: ClusterFact,
    ) -> Result<(), StoreError> {
        let bytes = match &fact {
            ClusterFact::Launched(nodes) => {
                serde_json::to_string(nodes).map_or(0, |s| s.len()) + ITEM_OVERHEAD
            }
            ClusterFact::Terminated => ITEM_OVERHEAD,
        };
        self.write(write_units(bytes));
        self.inner.record_cluster(job_id, at, fact).await
    }

    async fn record_node(
        &self,
        job_id: JobId,
        at: &ClusterRef,
        rank: u32,
        fact: NodeFact,
    ) -> Result<(), StoreError> {
        self.write(write_units(NODE_ITEM));
        self.inner.record_node(job_id, at, rank, fact).await
    }

    async fn cluster_facts(
        &self,
        job_id: JobId,
        cluster: &str,
    ) -> Result<Option<ClusterFacts>, StoreError> {
        let facts = self.inner.cluster_facts(job_id, cluster).await?;
        self.read(facts.as_ref().map_or(0, facts_bytes), true);
        Ok(facts)
    }

    async fn job_facts(&self, job_id: JobId) -> Result<Vec<ClusterFacts>, StoreError> {
        let facts = self.inner.job_facts(job_id).await?;
        self.read(facts.iter().map(facts_bytes).sum(), true);
        Ok(facts)
    }

    async fn follow(&self, job_id: JobId, until: Timestamp) -> Result<(), StoreError> {
        self.write(1.0);
        self.inner.follow(job_id, until).await
    }

    async fn followed_until(&self, job_id: JobId) -> Result<Option<Timestamp>, StoreError> {
        self.read(100, false);
        self.inner.followed_until(job_id).await
    }

    async fn record_capacity(&self, zone: &str, event: CapacityEvent) -> Result<(), StoreError> {
        self.write(1.0);
        self.inner.record_capacity(zone, event).await
    }

    async fn zone_capacity(&self, zone: &str) -> Result<ZoneCapacity, StoreError> {
        self.read(100, true);
        self.inner.zone_capacity(zone).await
    }
}

/// A [`BlobStore`] that counts S3 requests. With `presign`, it hands out upload URLs
/// (`presigned://<key>`) as S3 does, for a driver to `PUT` with [`CountingBlobs::put_url`].
pub struct CountingBlobs {
    pub inner: Arc<dyn BlobStore>,
    pub meter: Arc<Meter>,
    pub presign: bool,
}

/// The scheme of [`CountingBlobs`]'s upload URLs.
pub const PRESIGNED: &str = "presigned://";

impl CountingBlobs {
    /// What a node's `PUT` to a presigned URL does: one S3 PUT, made by the node.
    pub async fn put_url(&self, url: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        let key = url.strip_prefix(PRESIGNED).unwrap_or(url);
        self.put(key, bytes).await
    }
}

#[async_trait]
impl BlobStore for CountingBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        self.meter.add(|u| u.s3_puts += 1);
        self.inner.put(key, bytes).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        self.meter.add(|u| u.s3_gets += 1);
        self.inner.get(key).await
    }

    async fn get_at_most(&self, key: &str, max: usize) -> Result<Option<Bounded>, BlobError> {
        self.meter.add(|u| u.s3_gets += 1);
        self.inner.get_at_most(key, max).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let keys = self.inner.list(prefix).await?;
        let pages = keys.len().div_ceil(1000).max(1) as u64;
        self.meter.add(|u| u.s3_lists += pages);
        Ok(keys)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        // The listing is billed; deletes are free.
        self.meter.add(|u| u.s3_lists += 1);
        self.inner.delete_prefix(prefix).await
    }

    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), BlobError> {
        self.meter.add(|u| u.s3_puts += 1);
        self.inner.put_file(key, path).await
    }

    async fn upload_url(
        &self,
        key: &str,
        expires: std::time::Duration,
        sha256: Option<[u8; 32]>,
    ) -> Result<Option<UploadUrl>, BlobError> {
        // Presigning is computed in the function: no request.
        if self.presign {
            Ok(Some(UploadUrl {
                url: format!("{PRESIGNED}{key}"),
                headers: vec![],
            }))
        } else {
            self.inner.upload_url(key, expires, sha256).await
        }
    }
}

/// An [`EventBus`] that counts EventBridge events and Scheduler invocations.
pub struct CountingBus {
    pub inner: Arc<dyn EventBus>,
    pub meter: Arc<Meter>,
}

#[async_trait]
impl EventBus for CountingBus {
    async fn publish(&self, job_id: JobId, event: JobEvent) -> Result<(), BusError> {
        self.meter.add(|u| u.eventbridge_events += 1);
        self.inner.publish(job_id, event).await
    }

    async fn job_ended(&self, job_id: JobId) -> Result<(), BusError> {
        self.meter.add(|u| u.eventbridge_events += 1);
        self.inner.job_ended(job_id).await
    }

    async fn schedule(
        &self,
        job_id: JobId,
        event: JobEvent,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), BusError> {
        self.meter.add(|u| u.scheduler_invocations += 1);
        self.inner.schedule(job_id, event, at, now).await
    }

    async fn status_changed(
        &self,
        event: &crate::job::transitions::StatusEvent,
    ) -> Result<(), BusError> {
        self.meter.add(|u| u.eventbridge_events += 1);
        self.inner.status_changed(event).await
    }

    async fn cancel_schedules(&self, job_id: JobId) -> Result<usize, BusError> {
        // ListSchedules and DeleteSchedule are free Scheduler API calls.
        self.inner.cancel_schedules(job_id).await
    }
}

/// A [`Provider`] that counts cloud API calls.
pub struct CountingProvider {
    pub inner: Arc<dyn Provider>,
    pub meter: Arc<Meter>,
}

#[async_trait]
impl Provider for CountingProvider {
    fn cloud(&self) -> crate::cloud::Cloud {
        self.inner.cloud()
    }

    async fn launch(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        self.meter.add(|u| u.cloud_api_calls += 1);
        self.inner.launch(spec).await
    }

    async fn describe_region(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        self.meter.add(|u| u.cloud_api_calls += 1);
        self.inner.describe_region(region).await
    }

    async fn terminate(&self, region: &str, cluster: &str) -> Result<(), ProviderError> {
        self.meter.add(|u| u.cloud_api_calls += 1);
        self.inner.terminate(region, cluster).await
    }
}
