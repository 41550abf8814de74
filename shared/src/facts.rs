//! Node facts: what the machines of a job's clusters have said (ready, phase started, phase
//! exited with its code and its number of log chunks, last heard from) and what the control
//! plane knows about each cluster (its nodes' addresses, that it was torn down). This is the
//! one home of that knowledge; the [`FactStore`](crate::store::FactStore) port keeps it in the state table, beside the
//! job, in small items of its own:
//!
//! | fact | SQLite | DynamoDB (`pk` = `JOB#<id>`) |
//! |---|---|---|
//! | a cluster: task, attempt, nodes, torn down | `clusters` row | `sk` = `C#<cluster>#INFO` |
//! | a node: ready, started, pid, exits, chunks, seen | `node_facts` row | `sk` = `C#<cluster>#R<rank, 5 digits>` |
//! | someone follows the job's log until | `follows` row | `sk` = `FOLLOW` |
//! | a zone found full, or freed | `capacity` row | `pk` = `ZONE#<cloud>/<zone>`, `sk` = `CAPACITY` |
//!
//! Why not in the job record: facts arrive from every node at once, and the job record is
//! written with a fence on its version, so they would fight over it; and a heartbeat would
//! rewrite the whole record. Why not one item per cluster: a DynamoDB write is billed by the
//! size of the item it touches, so a heartbeat of one node of a 64-node cluster would pay for
//! the whole cluster's item. One small item per node keeps every write at one write unit, and
//! reading a cluster is one query.
//!
//! # Guarantees
//! - Recording a fact is idempotent and needs no read: an exit code is written once (the
//!   first report wins, so a replayed or forged later report cannot change it); markers are
//!   set, never cleared; a heartbeat keeps the latest time.
//! - Every node item carries its cluster's task and attempt, so the log reader knows every
//!   stream of output without reading the job record's history.
//! - Facts outlive the clusters: `stratus jobs logs` of a finished job reads them to know
//!   which streams exist and how many chunks each has.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::job::Phase;
use crate::provider::NodeInfo;

/// Which cluster a fact is about, with the task and attempt it was launched for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterRef {
    pub cluster: String,
    pub task: usize,
    pub attempt: u32,
}

/// Something one node said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeFact {
    /// The agent is up.
    Ready,
    /// A phase's command started (and so its log stream exists).
    Started(Phase),
    /// A phase's command runs as this process on the node.
    Spawned { phase: Phase, pid: u32 },
    /// A phase's command exited with `code`, after `chunks` log chunks were stored (`None`
    /// from an agent that does not count them).
    Exited {
        phase: Phase,
        code: i32,
        chunks: Option<u64>,
    },
    /// The agent asked for work at this time (its heartbeat).
    Seen(Timestamp),
}

/// Something the control plane learnt about a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterFact {
    /// The cloud launched it with these nodes.
    Launched(Vec<NodeInfo>),
    /// It is torn down: its nodes will say nothing more.
    Terminated,
}

/// What one phase of one node has said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseFacts {
    pub started: bool,
    /// The process its command runs as on the node, once reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub exit: Option<i32>,
    /// Log chunks the phase stored, known once it exited.
    pub chunks: Option<u64>,
}

/// What one node has said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub ready: bool,
    pub setup: PhaseFacts,
    pub run: PhaseFacts,
    pub seen: Option<Timestamp>,
}

impl NodeFacts {
    pub fn phase(&self, phase: Phase) -> &PhaseFacts {
        match phase {
            Phase::Setup => &self.setup,
            Phase::Run => &self.run,
        }
    }

    pub fn phase_mut(&mut self, phase: Phase) -> &mut PhaseFacts {
        match phase {
            Phase::Setup => &mut self.setup,
            Phase::Run => &mut self.run,
        }
    }

    /// Applies `fact` as the stores do (used by the SQLite adapter and by tests).
    pub fn apply(&mut self, fact: NodeFact) {
        match fact {
            NodeFact::Ready => self.ready = true,
            NodeFact::Started(phase) => self.phase_mut(phase).started = true,
            NodeFact::Spawned { phase, pid } => self.phase_mut(phase).pid = Some(pid),
            NodeFact::Exited {
                phase,
                code,
                chunks,
            } => {
                let facts = self.phase_mut(phase);
                if facts.exit.is_none() {
                    facts.exit = Some(code);
                    facts.chunks = chunks;
                }
            }
            NodeFact::Seen(at) => self.seen = Some(self.seen.map_or(at, |s| s.max(at))),
        }
    }
}

/// Everything known about one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    pub cluster: String,
    pub task: usize,
    pub attempt: u32,
    /// The nodes the cloud reported at launch (empty until then).
    pub nodes: Vec<NodeInfo>,
    pub terminated: bool,
    /// Per rank, what that node said.
    pub ranks: BTreeMap<u32, NodeFacts>,
}

impl ClusterFacts {
    /// Nothing known yet about `cluster`.
    pub fn empty(at: &ClusterRef) -> ClusterFacts {
        ClusterFacts {
            cluster: at.cluster.clone(),
            task: at.task,
            attempt: at.attempt,
            nodes: Vec::new(),
            terminated: false,
            ranks: BTreeMap::new(),
        }
    }

    /// How many nodes have said they are ready.
    pub fn ready(&self) -> usize {
        self.ranks.values().filter(|n| n.ready).count()
    }

    /// Exit codes of `phase`, by rank.
    pub fn exits(&self, phase: Phase) -> BTreeMap<u32, i32> {
        self.ranks
            .iter()
            .filter_map(|(rank, n)| Some((*rank, n.phase(phase).exit?)))
            .collect()
    }

    /// The latest heartbeat of any node.
    pub fn last_seen(&self) -> Option<Timestamp> {
        self.ranks.values().filter_map(|n| n.seen).max()
    }
}

/// What the control plane last learnt about a zone's capacity: when a launch there found it
/// full, and when a cluster of ours there was torn down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneCapacity {
    pub exhausted_at: Option<Timestamp>,
    pub freed_at: Option<Timestamp>,
}

impl ZoneCapacity {
    /// The zone is known to be full at `now`: a launch found it full less than `fresh` ago,
    /// and none of our clusters there was torn down since. (Others may free capacity too,
    /// which is why the knowledge goes stale.)
    pub fn known_full(&self, now: Timestamp, fresh: std::time::Duration) -> bool {
        match self.exhausted_at {
            Some(at) => now.since(at) < fresh && self.freed_at.is_none_or(|freed| freed < at),
            None => false,
        }
    }
}

/// A change in what is known about a zone's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityEvent {
    Exhausted(Timestamp),
    Freed(Timestamp),
}

/// Sorts clusters the way their logs are read: by task, then attempt.
pub(crate) fn sort_clusters(clusters: &mut [ClusterFacts]) {
    clusters.sort_by(|a, b| (a.task, a.attempt, &a.cluster).cmp(&(b.task, b.attempt, &b.cluster)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_written_once_and_heartbeats_keep_the_latest() {
        let mut node = NodeFacts::default();
        node.apply(NodeFact::Exited {
            phase: Phase::Run,
            code: 3,
            chunks: Some(4),
        });
        node.apply(NodeFact::Exited {
            phase: Phase::Run,
            code: 0,
            chunks: Some(9),
        });
        assert_eq!((node.run.exit, node.run.chunks), (Some(3), Some(4)));
        node.apply(NodeFact::Seen(Timestamp::from_secs(20)));
        node.apply(NodeFact::Seen(Timestamp::from_secs(10)));
        assert_eq!(node.seen, Some(Timestamp::from_secs(20)));
        node.apply(NodeFact::Started(Phase::Setup));
        assert!(node.setup.started && !node.run.started);
    }
}
