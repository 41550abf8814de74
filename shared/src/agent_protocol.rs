//! What the node agent and the control plane say to each other, over HTTP with a per-job
//! bearer token. The agent needs no cloud credentials: everything comes through these routes.
//!
//! ```text
//! GET  /agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/work    -> Work   (also a heartbeat)
//! POST /agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/report  <- Report
//! POST /agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/logs    <- LogChunk
//! GET  /agent/v1/jobs/{job}/blobs/{key...}                          -> bytes (archives)
//! ```
//!
//! Every request carries `Authorization: Bearer <token>`; the token is valid for one job only.
//! A 401, 403 or 404 means the agent's job or cluster is no longer wanted: it stops its
//! commands and exits. Reports and log chunks are idempotent (a retry after a timeout is
//! harmless): a report is keyed by (node, kind, phase), a chunk by (node, phase, seq).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::Phase;

/// Environment variables a provider gives each node's agent at boot.
pub mod env {
    /// Base URL of the Stratus API.
    pub const API_URL: &str = "STRATUS_API_URL";
    /// The per-job agent token.
    pub const TOKEN: &str = "STRATUS_AGENT_TOKEN";
    pub const JOB_ID: &str = "STRATUS_JOB_ID";
    pub const CLUSTER: &str = "STRATUS_CLUSTER";
    pub const NODE_RANK: &str = "STRATUS_NODE_RANK";
    /// A folder the agent owns on this node: the workdir and mounts go under it.
    pub const NODE_DIR: &str = "STRATUS_NODE_DIR";
    /// Milliseconds between polls of `work` (default 500).
    pub const POLL_MS: &str = "STRATUS_AGENT_POLL_MS";
}

/// What the node should do now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Work {
    /// Nothing yet: poll again.
    Wait,
    /// Prepare the workdir and mounts (once), then run `task.setup` (or report exit 0 at once
    /// when there is none).
    Setup { task: NodeTask },
    /// Run `task.run` (setup has succeeded on every node).
    Run { task: NodeTask },
    /// The job is over or this cluster was abandoned: kill the commands and exit.
    Stop,
}

/// The task as one node runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTask {
    /// Every variable for setup and run: `SKYPILOT_*`, the task's envs and its secrets.
    pub env: BTreeMap<String, String>,
    pub setup: Option<String>,
    pub run: Option<String>,
    /// Blob key of a `.tar.gz` to unpack into the workdir (`$NODE_DIR/sky_workdir`), which is
    /// the current directory of setup and run.
    pub workdir_archive: Option<String>,
    pub mounts: Vec<NodeMount>,
}

/// One `file_mounts` entry as this node realizes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMount {
    /// As written in the task; `~` is the node's home (`$NODE_DIR`), and an absolute path
    /// `/x` lands at `$NODE_DIR/root/x` on the local cloud (nodes there are processes and may
    /// not write to `/`).
    pub destination: String,
    pub source: MountSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MountSource {
    /// Unpack this blob (a `.tar.gz` of a local file or folder) at the destination.
    Archive { key: String },
    /// A folder on this machine standing in for a bucket (local cloud): link the destination
    /// to it (`copy: false`, MOUNT) or copy its contents (`copy: true`, COPY).
    LocalFolder { path: String, copy: bool },
}

/// What a node tells the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    /// The agent is up and can take work.
    Ready,
    /// A phase's command has started.
    Started { phase: Phase },
    /// A phase's command has exited (`code` 0 on success; a signal counts as 128 + signal).
    Exited { phase: Phase, code: i32 },
}

/// A piece of a phase's combined stdout and stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub phase: Phase,
    /// 0, 1, 2, ... per (node, phase): chunks are stored under it, so a resend overwrites.
    pub seq: u64,
    pub data: String,
}

/// The routes, so the server and the agent cannot disagree on them.
pub fn work_path(job: u64, cluster: &str, rank: u32) -> String {
    format!("/agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/work")
}

pub fn report_path(job: u64, cluster: &str, rank: u32) -> String {
    format!("/agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/report")
}

pub fn logs_path(job: u64, cluster: &str, rank: u32) -> String {
    format!("/agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/logs")
}

pub fn blob_path(job: u64, key: &str) -> String {
    format!("/agent/v1/jobs/{job}/blobs/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let work = Work::Setup {
            task: NodeTask {
                env: BTreeMap::from([("A".into(), "1".into())]),
                setup: Some("echo s".into()),
                run: None,
                workdir_archive: Some("uploads/abc.tar.gz".into()),
                mounts: vec![NodeMount {
                    destination: "~/ckpt".into(),
                    source: MountSource::LocalFolder {
                        path: "/b".into(),
                        copy: false,
                    },
                }],
            },
        };
        let json = serde_json::to_string(&work).unwrap();
        assert!(json.starts_with(r#"{"action":"setup","task":{"#), "{json}");
        assert_eq!(serde_json::from_str::<Work>(&json).unwrap(), work);
        assert_eq!(
            serde_json::to_string(&Work::Stop).unwrap(),
            r#"{"action":"stop"}"#
        );
        let report = Report::Exited {
            phase: Phase::Run,
            code: 3,
        };
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"type":"exited","phase":"run","code":3}"#
        );
    }
}
