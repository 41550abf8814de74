//! The state table on DynamoDB: one table, on-demand, keyed for Stratus's access patterns.
//!
//! Why one file of this length: it is the [`JobStore`](crate::store::JobStore) port on
//! DynamoDB, one method per operation, beside the key design it follows; node facts are in
//! `facts.rs`, documents in `crate::store::wire`.
//!
//! # Key design
//!
//! One table with a string partition key `pk` and sort key `sk`. Every item of a job lives
//! under the job's partition, so reading a job with its tasks is one strongly consistent
//! `Query`:
//!
//! | item | `pk` | `sk` | attributes |
//! |---|---|---|---|
//! | job | `JOB#<id>` | `META` | `job_id`, `owner`, `name`, `status`, `version`, `format`, `state` (JSON), `task_count`, index keys below |
//! | task | `JOB#<id>` | `TASK#<i, 4 digits>` | `format`, `spec` (JSON: the task and its ranked candidates) |
//! | controller event | `JOB#<id>` | `EVENT#<ms, 13 digits>#<nonce>#<n>` | `format`, `event` (JSON) |
//! | ID counter | `COUNTER` | `JOB_ID` | `value` (number, `ADD 1` per job) |
//! | node facts | `JOB#<id>` | `C#<cluster>#...`, `FOLLOW` | see `facts` |
//! | a claim | `CLAIM#<name>` | `CLAIM` | `job_id` (upload sessions, one job each) |
//!
//! `C#` and `EVENT#` sort before `META`, which sorts before `TASK#`: `sk >= "META"` reads the
//! job and its tasks, `begins_with(sk, "EVENT#")` its controller log in time order.
//!
//! Four global secondary indexes, all sorted by `job_key` = `JOB#<id, 20 digits>` (so that
//! `ScanIndexForward=false` lists newest first and `job_key < JOB#<cursor>` pages), all
//! projecting only the keys and `task_count` (enough to fetch the job and its tasks with one
//! `BatchGetItem`, and an index is only written when an item enters or leaves it):
//!
//! | index | partition key | holds | serves |
//! |---|---|---|---|
//! | `by_owner` | `owner_key` = `OWNER#<owner>` | every job | a user's jobs, newest first, paged |
//! | `by_name` | `name_key` = `NAME#<owner>#<name>` | every job | find a job by name |
//! | `all_jobs` | `all_key` = `JOBS` | every job | everyone's jobs (`queue -u`), paged |
//! | `active` | `active_key` = `ACTIVE` | jobs not yet cleaned up (`JobRecord::is_active`) | the poll sweep |
//!
//! `active` is sparse: a job carries `active_key` only while it is active (not ended, or ended
//! but not yet cleaned up), and the write that records its cleanup removes the attribute,
//! which drops it from the index. The sweep thus reads only live jobs however many finished
//! ones the table holds.
//!
//! # Writes
//! - Create: one `TransactWriteItems` putting the job item (on `attribute_not_exists(pk)`)
//!   and its task items; at most 99 tasks (the 100-action limit).
//! - Update: one `UpdateItem` of the job item, conditioned on `version = :expected AND
//!   status = :expected_status`, setting the state, status and `version + 1` (and adding or
//!   removing `active_key`). Task items are never rewritten, so a state write costs about
//!   1 KB whatever the candidates weigh.
//! - A failed condition is `Conflict` (or `NotFound` when the job does not exist).
//!
//! # Caveats
//! - The indexes are eventually consistent: a listing can miss a job created a moment ago or
//!   still show one that just finished (the sweep drops those after reading them). The
//!   `ACTIVE` and `JOBS` partitions take one write per job created or finished; at thousands
//!   of job starts per second they would need sharding (`ACTIVE#<id % n>`).
//! - An item holds at most 400 KB: a task whose ranked candidates exceed that cannot be stored.

mod facts;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ReturnValue, ScalarAttributeType,
    TableStatus, TransactWriteItem,
};

use crate::job::{ControllerEvent, Fence, JobId, JobRecord};

use super::wire::{self, FORMAT, Stored};
use super::{Cursor, JobReader, JobStore, Page, StoreError, clamp_limit};

type Item = HashMap<String, AttributeValue>;

const META: &str = "META";
const TASK_PREFIX: &str = "TASK#";
const EVENT_PREFIX: &str = "EVENT#";
const INDEX_BY_OWNER: &str = "by_owner";
const INDEX_BY_NAME: &str = "by_name";
const INDEX_ALL: &str = "all_jobs";
const INDEX_ACTIVE: &str = "active";
/// One transaction holds 100 actions: the job item and 99 tasks.
const MAX_TASKS: usize = 99;
/// Room under DynamoDB's 400 KB item limit for the key and other attributes.
const MAX_DOCUMENT_BYTES: usize = 390 * 1024;
/// `BatchGetItem` takes at most 100 keys.
const BATCH_GET_KEYS: usize = 100;

/// The state table in a DynamoDB table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// A store on `table` with the SDK configured from the environment (credentials, region,
    /// and `AWS_ENDPOINT_URL` for an emulator).
    pub async fn from_env(table: impl Into<String>) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(Client::new(&config), table)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the table with its indexes (on-demand billing) and waits until it is active.
    /// Tests use it; in production the deployment template creates the table.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let op = "create_table";
        let build = |e| StoreError::backend(op, false, e);
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build)
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build)
        };
        let index = |name: &str, partition: &str| -> Result<GlobalSecondaryIndex, StoreError> {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(partition, KeyType::Hash)?)
                .key_schema(key("job_key", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes("task_count")
                        .build(),
                )
                .build()
                .map_err(build)
        };
        let mut request = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?);
        for name in [
            "pk",
            "sk",
            "owner_key",
            "name_key",
            "all_key",
            "active_key",
            "job_key",
        ] {
            request = request.attribute_definitions(attribute(name)?);
        }
        for (name, partition) in [
            (INDEX_BY_OWNER, "owner_key"),
            (INDEX_BY_NAME, "name_key"),
            (INDEX_ALL, "all_key"),
            (INDEX_ACTIVE, "active_key"),
        ] {
            request = request.global_secondary_indexes(index(name, partition)?);
        }
        request.send().await.map_err(|e| sdk_error(op, &e))?;
        for _ in 0..240 {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| sdk_error(op, &e))?;
            let table = described.table();
            let active = table.and_then(|t| t.table_status()) == Some(&TableStatus::Active);
            let indexes_active = table.is_some_and(|t| {
                t.global_secondary_indexes().iter().all(|i| {
                    i.index_status() == Some(&aws_sdk_dynamodb::types::IndexStatus::Active)
                        || i.index_status().is_none()
                })
            });
            if active && indexes_active {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::backend(
            op,
            true,
            format!(
                "table {} did not become active within 2 minutes",
                self.table
            ),
        ))
    }

    /// Deletes the table (tests clean up with it).
    pub async fn delete_table(&self) -> Result<(), StoreError> {
        self.client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| sdk_error("delete_table", &e))?;
        Ok(())
    }

    /// The job IDs (with task counts) in one partition of an index, newest or oldest first,
    /// below `before` if given, at most `limit` if given.
    async fn query_index(
        &self,
        operation: &'static str,
        index: &'static str,
        partition: (&'static str, String),
        newest_first: bool,
        before: Option<JobId>,
        limit: Option<usize>,
    ) -> Result<Vec<(JobId, usize)>, StoreError> {
        let (partition_attr, partition_value) = partition;
        let mut condition = "#p = :p".to_owned();
        let mut values = HashMap::from([(":p".to_owned(), s(partition_value))]);
        if let Some(before) = before {
            condition.push_str(" AND job_key < :before");
            values.insert(":before".to_owned(), s(job_key(before)));
        }
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let remaining = limit.map(|l| l.saturating_sub(found.len()));
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(&condition)
                .expression_attribute_names("#p", partition_attr)
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(!newest_first)
                .set_exclusive_start_key(start.take());
            if let Some(remaining) = remaining {
                request = request.limit(i32::try_from(remaining).unwrap_or(i32::MAX));
            }
            let out = request.send().await.map_err(|e| sdk_error(operation, &e))?;
            for item in out.items() {
                let id = job_id_of(item)
                    .map_err(|reason| StoreError::backend(operation, false, reason))?;
                let tasks = number(item, "task_count")
                    .map_err(|reason| StoreError::Corrupt { job_id: id, reason })?;
                found.push((id, tasks));
            }
            start = out.last_evaluated_key().cloned();
            let full = limit.is_some_and(|l| found.len() >= l);
            if start.is_none() || full {
                return Ok(found);
            }
        }
    }

    /// Loads jobs (job item and task items) by ID, strongly consistent, in the given order.
    async fn load_jobs(
        &self,
        operation: &'static str,
        ids: &[(JobId, usize)],
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut keys = Vec::new();
        for &(id, tasks) in ids {
            keys.push(key(id, META.to_owned()));
            keys.extend((0..tasks).map(|i| key(id, task_sk(i))));
        }
        let mut items: HashMap<(String, String), Item> = HashMap::new();
        for chunk in keys.chunks(BATCH_GET_KEYS) {
            let mut pending = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::backend(operation, false, e))?;
            for attempt in 0u32.. {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| sdk_error(operation, &e))?;
                for item in out
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let pk = string(item, "pk").unwrap_or_default();
                    let sk = string(item, "sk").unwrap_or_default();
                    items.insert((pk, sk), item.clone());
                }
                match out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                    Some(rest) if !rest.keys().is_empty() => {
                        if attempt >= 10 {
                            return Err(StoreError::backend(
                                operation,
                                true,
                                "DynamoDB kept returning unprocessed keys",
                            ));
                        }
                        // Unprocessed keys mean throttling or the 16 MB response limit.
                        tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                        pending = rest.clone();
                    }
                    _ => break,
                }
            }
        }
        let mut jobs = Vec::with_capacity(ids.len());
        for &(id, tasks) in ids {
            let pk = job_pk(id);
            // Jobs are never deleted, so an index entry without its item is one just written.
            let Some(meta) = items.remove(&(pk.clone(), META.to_owned())) else {
                continue;
            };
            let task_items = (0..tasks)
                .map(|i| {
                    items
                        .remove(&(pk.clone(), task_sk(i)))
                        .ok_or_else(|| StoreError::Corrupt {
                            job_id: id,
                            reason: format!("task item {i} is missing"),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            jobs.push(decode_job(id, &meta, &task_items)?);
        }
        Ok(jobs)
    }

    /// Whether the job item exists (read after a failed condition to tell why it failed).
    async fn exists(&self, operation: &'static str, id: JobId) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(id, META.to_owned())))
            .consistent_read(true)
            .projection_expression("pk")
            .send()
            .await
            .map_err(|e| sdk_error(operation, &e))?;
        Ok(out.item().is_some())
    }
}

#[async_trait]
impl JobReader for DynamoStore {
    async fn get_job(&self, id: JobId) -> Result<JobRecord, StoreError> {
        let op = "get_job";
        let mut meta = None;
        let mut tasks = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk >= :meta")
                .expression_attribute_values(":pk", s(job_pk(id)))
                .expression_attribute_values(":meta", s(META.to_owned()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(op, &e))?;
            for item in out.items() {
                match string(item, "sk").as_deref() {
                    Ok(META) => meta = Some(item.clone()),
                    Ok(sk) if sk.starts_with(TASK_PREFIX) => tasks.push(item.clone()),
                    _ => {}
                }
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        let meta = meta.ok_or(StoreError::NotFound { job_id: id })?;
        decode_job(id, &meta, &tasks)
    }

    async fn list_jobs(
        &self,
        owner: Option<&str>,
        page: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let op = "list_jobs";
        let limit = clamp_limit(limit);
        let (index, partition) = match owner {
            Some(owner) => (INDEX_BY_OWNER, ("owner_key", owner_key(owner))),
            None => (INDEX_ALL, ("all_key", "JOBS".to_owned())),
        };
        let ids = self
            .query_index(
                op,
                index,
                partition,
                true,
                page.map(Cursor::job_id),
                Some(limit + 1),
            )
            .await?;
        let jobs = self.load_jobs(op, &ids).await?;
        Ok(Page::from_overfetch(jobs, limit))
    }

    async fn list_active(&self) -> Result<Vec<JobRecord>, StoreError> {
        let op = "list_active";
        let ids = self
            .query_index(
                op,
                INDEX_ACTIVE,
                ("active_key", "ACTIVE".to_owned()),
                false,
                None,
                None,
            )
            .await?;
        let mut jobs = self.load_jobs(op, &ids).await?;
        // The index lags the table: drop jobs that finished since it was written.
        jobs.retain(JobRecord::is_active);
        Ok(jobs)
    }

    async fn find_by_name(&self, owner: &str, name: &str) -> Result<Vec<JobRecord>, StoreError> {
        let op = "find_by_name";
        let ids = self
            .query_index(
                op,
                INDEX_BY_NAME,
                ("name_key", name_key(owner, name)),
                true,
                None,
                None,
            )
            .await?;
        self.load_jobs(op, &ids).await
    }

    async fn list_events(&self, job_id: JobId) -> Result<Vec<ControllerEvent>, StoreError> {
        let op = "list_events";
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :event)")
                .expression_attribute_values(":pk", s(job_pk(job_id)))
                .expression_attribute_values(":event", s(EVENT_PREFIX.to_owned()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(op, &e))?;
            for item in out.items() {
                let corrupt = |reason| StoreError::Corrupt { job_id, reason };
                let format = number(item, "format").map_err(corrupt)?;
                let json = string(item, "event").map_err(corrupt)?;
                events.push(wire::decode_event(
                    job_id,
                    u32::try_from(format).unwrap_or(u32::MAX),
                    &json,
                )?);
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(events);
            }
        }
    }
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn next_job_ids(&self, count: u32) -> Result<JobId, StoreError> {
        let op = "next_job_ids";
        let count = count.max(1);
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s("COUNTER".to_owned()))
            .key("sk", s("JOB_ID".to_owned()))
            .update_expression("ADD #v :count")
            .expression_attribute_names("#v", "value")
            .expression_attribute_values(":count", AttributeValue::N(count.to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| sdk_error(op, &e))?;
        let attributes = out.attributes().cloned().unwrap_or_default();
        // The counter holds the range's last ID.
        number(&attributes, "value")
            .map(|last| last as JobId - JobId::from(count) + 1)
            .map_err(|reason| StoreError::backend(op, false, format!("the counter item: {reason}")))
    }

    /// A transaction per job, 16 at a time: a 1,000-job array is stored in about 60 round
    /// trips of latency rather than 1,000. Not all or none (a transaction holds 100 items).
    async fn create_jobs(&self, jobs: &[JobRecord]) -> Result<Vec<JobRecord>, StoreError> {
        use futures_util::stream::{self, StreamExt, TryStreamExt};
        // Futures made up front (they start only when polled): a closure over `&JobRecord`
        // would not be `Send` for every lifetime, as `async_trait` needs.
        let creates: Vec<_> = jobs.iter().map(|job| self.create_job(job)).collect();
        stream::iter(creates).buffered(16).try_collect().await
    }

    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord, StoreError> {
        let op = "create_job";
        let id = job.id;
        if job.tasks.len() > MAX_TASKS {
            return Err(StoreError::Invalid {
                job_id: id,
                reason: format!(
                    "it has {} tasks; one DynamoDB transaction holds at most {MAX_TASKS}",
                    job.tasks.len()
                ),
            });
        }
        let stored = wire::stored(job, 1)?;
        for (i, (_, spec)) in stored.specs.iter().enumerate() {
            if spec.len() > MAX_DOCUMENT_BYTES {
                return Err(StoreError::Invalid {
                    job_id: id,
                    reason: format!(
                        "task {i}'s spec and ranked candidates take {} KB; a DynamoDB item holds 400 KB: rank fewer candidates",
                        spec.len() / 1024
                    ),
                });
            }
        }
        let build = |e| StoreError::backend(op, false, e);
        let mut writes = vec![
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(meta_item(&stored, job.is_active())))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .map_err(build)?,
                )
                .build(),
        ];
        for (i, (format, spec)) in stored.specs.iter().enumerate() {
            let mut item = key(id, task_sk(i));
            item.insert("format".to_owned(), n(u64::from(*format)));
            item.insert("spec".to_owned(), s(spec.clone()));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build()
                .map_err(build)?;
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        match result {
            Ok(_) => {
                let mut created = job.clone();
                created.version = 1;
                Ok(created)
            }
            Err(e) => {
                let reasons = match e.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                        Some(c.cancellation_reasons())
                    }
                    _ => None,
                };
                // The job item is the first action; its condition failing means the ID is
                // taken. Emulators may leave the reasons out; then look.
                let lost = match reasons {
                    Some([first, ..]) => first.code() == Some("ConditionalCheckFailed"),
                    Some([]) => self.exists(op, id).await?,
                    None => false,
                };
                if lost {
                    Err(StoreError::Conflict {
                        job_id: id,
                        expected_version: 0,
                    })
                } else {
                    Err(sdk_error(op, &e))
                }
            }
        }
    }

    async fn update_job(&self, job: &JobRecord, expected: Fence) -> Result<JobRecord, StoreError> {
        let op = "update_job";
        let id = job.id;
        let state = wire::encode_state(job)?;
        let mut set = "SET #status = :status, #state = :state, #format = :format, #version = :next"
            .to_owned();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(id, META.to_owned())))
            .condition_expression(
                "attribute_exists(pk) AND #version = :expected AND #status = :expected_status",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#format", "format")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#active", "active_key")
            .expression_attribute_values(":status", s(job.status().as_str().to_owned()))
            .expression_attribute_values(":state", s(state))
            .expression_attribute_values(":format", n(u64::from(FORMAT)))
            .expression_attribute_values(":next", n(expected.version + 1))
            .expression_attribute_values(":expected", n(expected.version))
            .expression_attribute_values(
                ":expected_status",
                s(expected.status.as_str().to_owned()),
            );
        if job.is_active() {
            set.push_str(", #active = :active");
            request = request.expression_attribute_values(":active", s("ACTIVE".to_owned()));
        } else {
            // Leaving the sparse index (ended and cleaned up): the sweep stops seeing the job.
            set.push_str(" REMOVE #active");
        }
        match request.update_expression(set).send().await {
            Ok(_) => {
                let mut updated = job.clone();
                updated.version = expected.version + 1;
                Ok(updated)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                if self.exists(op, id).await? {
                    tracing::debug!(
                        job_id = id,
                        expected_version = expected.version,
                        "update lost a race"
                    );
                    Err(StoreError::Conflict {
                        job_id: id,
                        expected_version: expected.version,
                    })
                } else {
                    Err(StoreError::NotFound { job_id: id })
                }
            }
            Err(e) => Err(sdk_error(op, &e)),
        }
    }

    async fn append_events(
        &self,
        job_id: JobId,
        events: &[ControllerEvent],
    ) -> Result<(), StoreError> {
        let op = "append_events";
        let batch = nonce();
        for (i, event) in events.iter().enumerate() {
            let mut item = key(
                job_id,
                format!(
                    "{EVENT_PREFIX}{:013}#{batch:016x}#{i:04}",
                    event.at.as_millis().max(0)
                ),
            );
            item.insert("format".to_owned(), n(u64::from(FORMAT)));
            item.insert("event".to_owned(), s(wire::encode_event(job_id, event)?));
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| sdk_error(op, &e))?;
        }
        Ok(())
    }

    async fn claim(&self, name: &str, job_id: JobId) -> Result<(), StoreError> {
        let op = "claim";
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("CLAIM#{name}")))
            .item("sk", s("CLAIM".to_owned()))
            .item("job_id", n(job_id))
            .condition_expression("attribute_not_exists(pk) OR job_id = :job")
            .expression_attribute_values(":job", n(job_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(
                    aws_sdk_dynamodb::operation::put_item::PutItemError::is_conditional_check_failed_exception,
                ) =>
            {
                Err(StoreError::Conflict {
                    job_id,
                    expected_version: 0,
                })
            }
            Err(e) => Err(sdk_error(op, &e)),
        }
    }
}

// ---- items ---------------------------------------------------------------------------------

fn job_pk(id: JobId) -> String {
    format!("JOB#{id}")
}

fn task_sk(i: usize) -> String {
    format!("{TASK_PREFIX}{i:04}")
}

fn job_key(id: JobId) -> String {
    format!("JOB#{id:020}")
}

fn owner_key(owner: &str) -> String {
    format!("OWNER#{owner}")
}

/// Names cannot contain `#`, so the last `#` always separates owner from name.
fn name_key(owner: &str, name: &str) -> String {
    format!("NAME#{owner}#{name}")
}

fn key(id: JobId, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(job_pk(id))), ("sk".to_owned(), s(sk))])
}

fn s(value: String) -> AttributeValue {
    AttributeValue::S(value)
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The job item as first written.
fn meta_item(stored: &Stored, active: bool) -> Item {
    let mut item = key(stored.id, META.to_owned());
    let mut put = |name: &str, value| {
        item.insert(name.to_owned(), value);
    };
    put("job_id", n(stored.id));
    put("owner", s(stored.owner.clone()));
    put("name", s(stored.name.clone()));
    put("status", s(stored.status.clone()));
    put("version", n(stored.version));
    put("format", n(u64::from(stored.format)));
    put("state", s(stored.state.clone()));
    put("task_count", n(stored.specs.len() as u64));
    put("job_key", s(job_key(stored.id)));
    put("owner_key", s(owner_key(&stored.owner)));
    put("name_key", s(name_key(&stored.owner, &stored.name)));
    put("all_key", s("JOBS".to_owned()));
    if active {
        put("active_key", s("ACTIVE".to_owned()));
    }
    item
}

fn decode_job(id: JobId, meta: &Item, tasks: &[Item]) -> Result<JobRecord, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { job_id: id, reason };
    let mut specs = Vec::with_capacity(tasks.len());
    for item in tasks {
        let sk = string(item, "sk").map_err(corrupt)?;
        let index: usize = sk
            .strip_prefix(TASK_PREFIX)
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| corrupt(format!("task item key '{sk}' is not TASK#<n>")))?;
        let format = number(item, "format").map_err(corrupt)?;
        let spec = string(item, "spec").map_err(corrupt)?;
        specs.push((index, u32::try_from(format).unwrap_or(u32::MAX), spec));
    }
    specs.sort_by_key(|(i, _, _)| *i);
    if let Some((i, _)) = specs.iter().enumerate().find(|(pos, (i, _, _))| pos != i) {
        return Err(corrupt(format!("task item {i} is missing")));
    }
    wire::decode(Stored {
        id,
        owner: string(meta, "owner").map_err(corrupt)?,
        name: string(meta, "name").map_err(corrupt)?,
        status: string(meta, "status").map_err(corrupt)?,
        version: number(meta, "version").map_err(corrupt)? as u64,
        format: u32::try_from(number(meta, "format").map_err(corrupt)?).unwrap_or(u32::MAX),
        state: string(meta, "state").map_err(corrupt)?,
        specs: specs.into_iter().map(|(_, f, s)| (f, s)).collect(),
    })
}

fn string(item: &Item, name: &str) -> Result<String, String> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        Some(other) => Err(format!("attribute '{name}' is not a string: {other:?}")),
        None => Err(format!("attribute '{name}' is missing")),
    }
}

fn number(item: &Item, name: &str) -> Result<usize, String> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| format!("attribute '{name}' is not a whole number: {value}")),
        Some(other) => Err(format!("attribute '{name}' is not a number: {other:?}")),
        None => Err(format!("attribute '{name}' is missing")),
    }
}

fn job_id_of(item: &Item) -> Result<JobId, String> {
    let pk = string(item, "pk")?;
    pk.strip_prefix("JOB#")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("index entry with key '{pk}' is not a job"))
}

/// A value no other `append_events` call uses, so that two batches in the same millisecond
/// never overwrite each other's events.
fn nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded randomly per process (and varies per instance), which is all the
    // randomness this needs; the counter separates calls within the process.
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Throttling, server errors and network failures are retryable; the rest are not.
fn sdk_error<E, R>(operation: &'static str, e: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let retryable = match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => matches!(
            service.err().code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
                    | "ThrottlingException"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionConflictException"
                    | "TransactionInProgressException"
            )
        ),
        _ => false,
    };
    let detail = aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string();
    StoreError::backend(operation, retryable, detail)
}
