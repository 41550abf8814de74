//! Node facts (`crate::facts`) on DynamoDB, under the job's partition:
//!
//! | item | `sk` | attributes |
//! |---|---|---|
//! | a cluster | `C#<cluster>#INFO` | `task`, `attempt`, `nodes` (JSON), `terminated` |
//! | a node | `C#<cluster>#R<rank, 5 digits>` | `task`, `attempt`, `ready`, `<phase>_started`, `<phase>_pid`, `<phase>_exit`, `<phase>_chunks`, `seen` |
//! | log followers | `FOLLOW` | `until` (ms) |
//! | a zone's capacity (`pk` = `ZONE#<cloud>/<zone>`) | `CAPACITY` | `exhausted_at`, `freed_at` (ms) |
//!
//! Every write is one `UpdateItem` of one small item (one write unit) that needs no read: an
//! exit code is set only where none is (`attribute_not_exists`), a heartbeat only when newer.
//! A failed condition means the fact is already recorded and is not an error. `C#` sorts
//! before `EVENT#` and `META`, so reading a job (`sk >= META`) never reads its facts; a
//! cluster's facts are one strongly consistent `Query` on `begins_with(sk, "C#<cluster>#")`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{DynamoStore, Item, job_pk, key, n, s, sdk_error, string};
use crate::clock::Timestamp;
use crate::facts::{
    CapacityEvent, ClusterFact, ClusterFacts, ClusterRef, NodeFact, NodeFacts, ZoneCapacity,
};
use crate::job::{JobId, Phase};
use crate::store::FactStore;
use crate::store::StoreError;

const CLUSTER_PREFIX: &str = "C#";
const INFO: &str = "INFO";
const FOLLOW: &str = "FOLLOW";

fn cluster_sk(cluster: &str, rest: &str) -> String {
    format!("{CLUSTER_PREFIX}{cluster}#{rest}")
}

fn rank_sk(cluster: &str, rank: u32) -> String {
    cluster_sk(cluster, &format!("R{rank:05}"))
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Setup => "setup",
        Phase::Run => "run",
    }
}

fn num(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// What one fact write sets, and when.
struct FactWrite {
    /// Attribute names and their new values.
    set: Vec<(String, AttributeValue)>,
    /// Write only when this holds; `#f0` is the first attribute of `set`, `:v0` its value.
    condition: Option<&'static str>,
}

impl FactWrite {
    fn set(set: Vec<(String, AttributeValue)>) -> FactWrite {
        FactWrite {
            set,
            condition: None,
        }
    }
}

impl DynamoStore {
    /// One `UpdateItem` setting `task`, `attempt` and the write's attributes. Every name goes
    /// through a placeholder (some are reserved words). A failed condition is `Ok`: the fact is
    /// already recorded.
    async fn write_fact(
        &self,
        operation: &'static str,
        job_id: JobId,
        sk: String,
        at: &ClusterRef,
        write: FactWrite,
    ) -> Result<(), StoreError> {
        // The caller's attributes first: its condition names the first one `#f0`.
        let mut set = write.set;
        set.push(("task".to_owned(), n(at.task as u64)));
        set.push(("attempt".to_owned(), n(u64::from(at.attempt))));
        let expression = (0..set.len())
            .map(|i| format!("#f{i} = :v{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(job_id, sk)))
            .update_expression(format!("SET {expression}"))
            .set_condition_expression(write.condition.map(str::to_owned));
        for (i, (name, value)) in set.into_iter().enumerate() {
            request = request
                .expression_attribute_names(format!("#f{i}"), name)
                .expression_attribute_values(format!(":v{i}"), value);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error(operation, &e)),
        }
    }

    /// Every item under the job's partition whose sort key starts with `prefix`, strongly
    /// consistent.
    async fn query_prefix(
        &self,
        operation: &'static str,
        job_id: JobId,
        prefix: String,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(job_pk(job_id)))
                .expression_attribute_values(":prefix", s(prefix.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(operation, &e))?;
            items.extend(out.items().iter().cloned());
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

#[async_trait]
impl FactStore for DynamoStore {
    async fn record_cluster(
        &self,
        job_id: JobId,
        at: &ClusterRef,
        fact: ClusterFact,
    ) -> Result<(), StoreError> {
        let set = match fact {
            ClusterFact::Launched(nodes) => {
                let json = serde_json::to_string(&nodes).expect("node infos serialize");
                ("nodes".to_owned(), s(json))
            }
            ClusterFact::Terminated => ("terminated".to_owned(), AttributeValue::Bool(true)),
        };
        let sk = cluster_sk(&at.cluster, INFO);
        self.write_fact("record_cluster", job_id, sk, at, FactWrite::set(vec![set]))
            .await
    }

    async fn record_node(
        &self,
        job_id: JobId,
        at: &ClusterRef,
        rank: u32,
        fact: NodeFact,
    ) -> Result<(), StoreError> {
        let yes = AttributeValue::Bool(true);
        let write = match fact {
            NodeFact::Ready => FactWrite::set(vec![("ready".to_owned(), yes)]),
            NodeFact::Started(phase) => {
                FactWrite::set(vec![(format!("{}_started", phase_name(phase)), yes)])
            }
            NodeFact::Spawned { phase, pid } => FactWrite::set(vec![(
                format!("{}_pid", phase_name(phase)),
                num(i64::from(pid)),
            )]),
            NodeFact::Exited {
                phase,
                code,
                chunks,
            } => {
                let p = phase_name(phase);
                let mut set = vec![(format!("{p}_exit"), num(i64::from(code)))];
                if let Some(chunks) = chunks {
                    set.push((format!("{p}_chunks"), n(chunks)));
                }
                FactWrite {
                    set,
                    // Written once: the first report wins.
                    condition: Some("attribute_not_exists(#f0)"),
                }
            }
            NodeFact::Seen(time) => FactWrite {
                set: vec![("seen".to_owned(), num(time.as_millis()))],
                condition: Some("attribute_not_exists(#f0) OR #f0 < :v0"),
            },
        };
        self.write_fact("record_node", job_id, rank_sk(&at.cluster, rank), at, write)
            .await
    }

    async fn cluster_facts(
        &self,
        job_id: JobId,
        cluster: &str,
    ) -> Result<Option<ClusterFacts>, StoreError> {
        let items = self
            .query_prefix("cluster_facts", job_id, cluster_sk(cluster, ""))
            .await?;
        Ok(decode(job_id, &items)?.pop())
    }

    async fn job_facts(&self, job_id: JobId) -> Result<Vec<ClusterFacts>, StoreError> {
        let items = self
            .query_prefix("job_facts", job_id, CLUSTER_PREFIX.to_owned())
            .await?;
        decode(job_id, &items)
    }

    async fn follow(&self, job_id: JobId, until: Timestamp) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(job_id, FOLLOW.to_owned())))
            .update_expression("SET #until = :until")
            .condition_expression("attribute_not_exists(#until) OR #until < :until")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":until", num(until.as_millis()))
            .send()
            .await;
        match result {
            Err(e)
                if !e
                    .as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                Err(sdk_error("follow", &e))
            }
            _ => Ok(()),
        }
    }

    async fn record_capacity(&self, zone: &str, event: CapacityEvent) -> Result<(), StoreError> {
        let (name, at) = match event {
            CapacityEvent::Exhausted(at) => ("exhausted_at", at),
            CapacityEvent::Freed(at) => ("freed_at", at),
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("ZONE#{zone}")))
            .key("sk", s("CAPACITY".to_owned()))
            .update_expression("SET #t = :at")
            .condition_expression("attribute_not_exists(#t) OR #t < :at")
            .expression_attribute_names("#t", name)
            .expression_attribute_values(":at", num(at.as_millis()))
            .send()
            .await;
        match result {
            Err(e)
                if !e
                    .as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                Err(sdk_error("record_capacity", &e))
            }
            _ => Ok(()),
        }
    }

    async fn zone_capacity(&self, zone: &str) -> Result<ZoneCapacity, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("ZONE#{zone}")))
            .key("sk", s("CAPACITY".to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("zone_capacity", &e))?;
        Ok(out
            .item()
            .map_or_else(ZoneCapacity::default, |item| ZoneCapacity {
                exhausted_at: int(item, "exhausted_at").map(Timestamp::from_millis),
                freed_at: int(item, "freed_at").map(Timestamp::from_millis),
            }))
    }

    async fn followed_until(&self, job_id: JobId) -> Result<Option<Timestamp>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(job_id, FOLLOW.to_owned())))
            .send()
            .await
            .map_err(|e| sdk_error("followed_until", &e))?;
        Ok(out
            .item()
            .and_then(|item| int(item, "until"))
            .map(Timestamp::from_millis))
    }
}

fn int(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().ok(),
        _ => None,
    }
}

fn flag(item: &Item, name: &str) -> bool {
    matches!(item.get(name), Some(AttributeValue::Bool(true)))
}

/// The items of a `C#` query, grouped by cluster.
fn decode(job_id: JobId, items: &[Item]) -> Result<Vec<ClusterFacts>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { job_id, reason };
    let mut clusters: BTreeMap<String, ClusterFacts> = BTreeMap::new();
    for item in items {
        let sk = string(item, "sk").map_err(corrupt)?;
        let Some((cluster, what)) = sk
            .strip_prefix(CLUSTER_PREFIX)
            .and_then(|rest| rest.rsplit_once('#'))
        else {
            continue;
        };
        let at = ClusterRef {
            cluster: cluster.to_owned(),
            task: int(item, "task")
                .and_then(|t| usize::try_from(t).ok())
                .unwrap_or(0),
            attempt: int(item, "attempt")
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0),
        };
        let facts = clusters
            .entry(cluster.to_owned())
            .or_insert_with(|| ClusterFacts::empty(&at));
        if what == INFO {
            if let Some(AttributeValue::S(json)) = item.get("nodes") {
                facts.nodes = serde_json::from_str(json)
                    .map_err(|e| corrupt(format!("nodes of cluster {cluster}: {e}")))?;
            }
            facts.terminated |= flag(item, "terminated");
            continue;
        }
        let Some(rank) = what.strip_prefix('R').and_then(|r| r.parse::<u32>().ok()) else {
            continue;
        };
        let mut node = NodeFacts {
            ready: flag(item, "ready"),
            seen: int(item, "seen").map(Timestamp::from_millis),
            ..NodeFacts::default()
        };
        for phase in [Phase::Setup, Phase::Run] {
            let p = phase_name(phase);
            let facts = node.phase_mut(phase);
            facts.started = flag(item, &format!("{p}_started"));
            facts.pid = int(item, &format!("{p}_pid")).and_then(|v| u32::try_from(v).ok());
            facts.exit = int(item, &format!("{p}_exit")).and_then(|c| i32::try_from(c).ok());
            facts.chunks = int(item, &format!("{p}_chunks")).and_then(|c| u64::try_from(c).ok());
        }
        facts.ranks.insert(rank, node);
    }
    let mut clusters: Vec<ClusterFacts> = clusters.into_values().collect();
    crate::facts::sort_clusters(&mut clusters);
    Ok(clusters)
}
