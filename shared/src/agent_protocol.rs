//! What the node agent and the control plane say to each other, over HTTP with a per-job
//! bearer token. The agent needs no cloud credentials: everything comes through these routes.
//!
//! ```text
//! GET  /agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/work?started=<phase>
//!                                                                       -> WorkAnswer (also a heartbeat)
//! POST /agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/report      <- Report
//! POST /agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/logs        <- LogChunk
//! POST /agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/logs/urls   <- LogUrlsRequest -> LogUrls
//! GET  /agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/credentials -> DataCredentials
//! GET  /agent/v1/jobs/{job}/blobs/{key...}                              -> bytes (archives)
//! ```
//!
//! Every request carries `Authorization: Bearer <token>`; the token is valid for one job only.
//! A 401, 403 or 404 means the agent's job or cluster is no longer wanted: it stops its
//! commands and exits. Reports and log chunks are idempotent (a retry after a timeout is
//! harmless): a report is keyed by (node, kind, phase), a chunk by (node, phase, seq).
//!
//! # What a running node costs
//! On a cloud every request is an API Gateway request and a Lambda invocation, so the agent
//! talks as little as its job allows ([`AgentCadence`]): it polls `work` every few seconds
//! only while it waits for something (its cluster to be ready, the other nodes' setup), and
//! once a minute or so while its command runs (the heartbeat; the clouds' own events say when
//! a machine dies). Its output goes straight to object storage through presigned URLs handed
//! out in batches (`logs/urls`), in chunks cut by size or age: large and minutes apart while
//! nobody watches, within a second while someone follows the log (`WorkAnswer::live_logs`).
//! Where the store has no such URLs (the local cloud), chunks are posted to `logs`.

use std::collections::BTreeMap;
use std::fmt;

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
    /// A folder the agent owns on this node: the workdir and mounts go under it (unless
    /// there is a task user).
    pub const NODE_DIR: &str = "STRATUS_NODE_DIR";
    /// On a cloud VM, where the agent runs as root: the user the task's commands run as
    /// (SkyPilot's layout: that user's `HOME`, `~/sky_workdir`, absolute mount destinations
    /// at their real path), not as root beside the agent's files. (That user has SkyPilot's
    /// passwordless `sudo`, so this is the layout SkyPilot users expect, not a wall: the
    /// token it could read reaches only its own job.) Unset (the local cloud): commands run as
    /// the agent's user with `HOME` at `NODE_DIR`.
    pub const TASK_USER: &str = "STRATUS_TASK_USER";
    /// Milliseconds between polls of `work` while waiting (see `AgentCadence::poll_ms`).
    pub const POLL_MS: &str = "STRATUS_AGENT_POLL_MS";
    /// Milliseconds between polls of `work` while a command runs (`AgentCadence::heartbeat_ms`).
    pub const HEARTBEAT_MS: &str = "STRATUS_AGENT_HEARTBEAT_MS";
    /// Longest a line of output waits while nobody follows the log (`AgentCadence::log_flush_ms`).
    pub const LOG_FLUSH_MS: &str = "STRATUS_AGENT_LOG_FLUSH_MS";
    /// Longest a line of output waits while someone follows (`AgentCadence::log_live_ms`).
    pub const LOG_LIVE_MS: &str = "STRATUS_AGENT_LOG_LIVE_MS";
    /// Largest log chunk, in bytes (`AgentCadence::log_chunk_bytes`).
    pub const LOG_CHUNK_BYTES: &str = "STRATUS_AGENT_LOG_CHUNK_BYTES";
    /// Most bytes of output a node keeps of one phase (`DEFAULT_LOG_QUOTA_BYTES`).
    pub const LOG_QUOTA_BYTES: &str = "STRATUS_AGENT_LOG_QUOTA_BYTES";
}

/// How often a node's agent talks to the control plane. Given to every node at boot (as the
/// `env` variables); the local cloud is snappy, a cloud node frugal (each request is billed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCadence {
    /// First delay between polls of `work` while the agent waits for something (its cluster,
    /// the other nodes); each unchanged answer doubles it, up to `heartbeat_ms`.
    pub poll_ms: u64,
    /// Delay between polls while a command runs: the heartbeat the sweep judges liveness by.
    pub heartbeat_ms: u64,
    /// Longest output waits before it is sent while nobody follows the log.
    pub log_flush_ms: u64,
    /// Longest output waits while someone follows the log.
    pub log_live_ms: u64,
    /// Output is sent at once when this much has piled up; no chunk is larger.
    pub log_chunk_bytes: usize,
}

impl AgentCadence {
    /// Nodes that are processes on this machine: requests cost nothing.
    pub const LOCAL: AgentCadence = AgentCadence {
        poll_ms: 200,
        heartbeat_ms: 1_000,
        log_flush_ms: 200,
        log_live_ms: 200,
        log_chunk_bytes: 32 * 1024,
    };

    /// Cloud nodes: a quiet node makes about two requests a minute, and output goes out in
    /// chunks of up to 256 KiB, every five minutes at most while nobody watches (the costs are
    /// worked out in ARCHITECTURE.md and printed by the `node_cost` bench).
    pub const CLOUD: AgentCadence = AgentCadence {
        poll_ms: 2_000,
        heartbeat_ms: 30_000,
        log_flush_ms: 300_000,
        log_live_ms: 1_000,
        log_chunk_bytes: 256 * 1024,
    };

    /// The variables that carry it to an agent.
    pub fn env(&self) -> [(&'static str, String); 5] {
        [
            (env::POLL_MS, self.poll_ms.to_string()),
            (env::HEARTBEAT_MS, self.heartbeat_ms.to_string()),
            (env::LOG_FLUSH_MS, self.log_flush_ms.to_string()),
            (env::LOG_LIVE_MS, self.log_live_ms.to_string()),
            (env::LOG_CHUNK_BYTES, self.log_chunk_bytes.to_string()),
        ]
    }
}

/// The largest log chunk any agent may send (the API refuses larger ones, and the log reader
/// skips larger objects): even escaped as JSON at worst (6 bytes per control character), one
/// chunk must fit in a page of the API's answer, under Lambda's 6 MB response limit.
pub const MAX_LOG_CHUNK_BYTES: usize = 512 * 1024;

/// Most chunks one stream (a phase of a node) may have: the control plane refuses later
/// ones, so that a stream's keys stay bounded whatever a node sends.
pub const MAX_LOG_CHUNKS: u64 = 1_000_000;

/// The output a node keeps of one phase unless told otherwise (`env::LOG_QUOTA_BYTES`).
pub const DEFAULT_LOG_QUOTA_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// Where a machine downloads the node agent at boot, with the job's token: the API answers
/// with a redirect to a freshly signed URL of the binary (or the binary itself).
pub fn agent_binary_path(job_id: u64) -> String {
    format!("/agent/v1/jobs/{job_id}/agent")
}

/// How long the signed URL of the agent binary lives: a download starts at once.
pub const AGENT_URL_LIFETIME: std::time::Duration = std::time::Duration::from_mins(15);

/// Most presigned log URLs one `logs/urls` request returns.
pub const MAX_LOG_URLS: u32 = 128;

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
    /// Go on with the phase the agent said it started (`?started=`): the task is not sent
    /// again.
    Continue,
    /// The job is over or this cluster was abandoned: kill the commands and exit.
    Stop,
}

/// The answer to a `work` poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkAnswer {
    #[serde(flatten)]
    pub work: Work,
    /// Someone follows the job's log: send output within `AgentCadence::log_live_ms`.
    #[serde(default)]
    pub live_logs: bool,
}

/// The `work` poll's query: the latest phase this agent has started, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkQuery {
    #[serde(default)]
    pub started: Option<Phase>,
}

/// A request for presigned URLs for the log chunks `first_seq ..` of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogUrlsRequest {
    pub phase: Phase,
    pub first_seq: u64,
    /// At most [`MAX_LOG_URLS`].
    pub count: u32,
}

/// Presigned `PUT` URLs for consecutive chunks from `first_seq`; empty when the store has no
/// such URLs (then post chunks to `logs`). A URL that answers 403 has expired: ask again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogUrls {
    pub first_seq: u64,
    pub urls: Vec<String>,
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
    /// `image_id: docker:<image>` on a cloud: setup and run execute in this container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

/// A task's container image, and how to log in to its registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// What `docker pull` takes (the registry server in front when the task names one).
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryLogin>,
}

/// SkyPilot's `SKYPILOT_DOCKER_SERVER`, `SKYPILOT_DOCKER_USERNAME` and
/// `SKYPILOT_DOCKER_PASSWORD` (from the task's envs or secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryLogin {
    pub server: String,
    pub username: String,
    pub password: crate::spec::Secret,
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
    /// An S3 bucket (or the part under `prefix`), reached with the job's data credentials
    /// (`credentials`). `mode` `COPY` downloads it once; `MOUNT` and `MOUNT_CACHED` keep the
    /// destination and the bucket in step (a copy written back while the command runs, when
    /// it ends, and on SIGTERM).
    S3 {
        bucket: String,
        prefix: String,
        mode: crate::spec::StorageMode,
    },
    /// A GCS bucket, as `S3` (a variant of its own: agents of the previous release, still
    /// running while a stack is updated, keep reading `S3` mounts).
    Gcs {
        bucket: String,
        prefix: String,
        mode: crate::spec::StorageMode,
    },
}

/// The job's data identity, for its bucket mounts: short-lived credentials that reach only
/// the parts of the buckets the job's task names (`GET credentials`, asked again before they
/// expire), one part per object store the task uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCredentials {
    /// At the top level, as the previous release's agents read them.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Credentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsCredentials>,
}

impl DataCredentials {
    /// When the first part stops working (ms since the epoch; `u64::MAX` when there is none).
    pub fn expires_at_ms(&self) -> u64 {
        let s3 = self.s3.as_ref().map_or(u64::MAX, |c| c.expires_at_ms);
        let gcs = self.gcs.as_ref().map_or(u64::MAX, |c| c.expires_at_ms);
        s3.min(gcs)
    }
}

/// Temporary AWS credentials of the stack's node data role, narrowed to the task's S3 buckets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When they stop working (ms since the epoch).
    pub expires_at_ms: u64,
    /// Each bucket's region (the signature names it).
    pub regions: BTreeMap<String, String>,
    /// An S3 endpoint other than AWS's own (an emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Never prints the secret parts.
impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("regions", &self.regions)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A Google OAuth access token of the stack's node data service account, downscoped by a
/// Credential Access Boundary to the task's GCS buckets (sent as `Authorization: Bearer`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcsCredentials {
    pub access_token: String,
    /// When it stops working (ms since the epoch).
    pub expires_at_ms: u64,
    /// A Cloud Storage endpoint other than `https://storage.googleapis.com` (a fake); the
    /// JSON API is under `/storage/v1/`, uploads under `/upload/storage/v1/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Never prints the token.
impl fmt::Debug for GcsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsCredentials")
            .field("expires_at_ms", &self.expires_at_ms)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// What a node tells the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    /// The agent is up and can take work.
    Ready,
    /// A phase's command has started.
    Started { phase: Phase },
    /// A phase's command runs as process `pid` on the node (best effort, after `Started`):
    /// log lines name it, as SkyPilot's `(task, pid=...)` do.
    Spawned { phase: Phase, pid: u32 },
    /// A phase's command has exited (`code` 0 on success; a signal counts as 128 + signal),
    /// after its `chunks` log chunks were stored.
    Exited {
        phase: Phase,
        code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chunks: Option<u64>,
    },
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

pub fn log_urls_path(job: u64, cluster: &str, rank: u32) -> String {
    format!("/agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/logs/urls")
}

pub fn credentials_path(job: u64, cluster: &str, rank: u32) -> String {
    format!("/agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/credentials")
}

pub fn blob_path(job: u64, key: &str) -> String {
    format!("/agent/v1/jobs/{job}/blobs/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_credentials_keep_the_s3_part_where_the_previous_agents_read_it() {
        let s3 = S3Credentials {
            access_key_id: "ASIA".into(),
            secret_access_key: "secret".into(),
            session_token: "token".into(),
            expires_at_ms: 5,
            regions: BTreeMap::from([("b".to_owned(), "us-east-1".to_owned())]),
            endpoint: None,
        };
        let both = DataCredentials {
            s3: Some(s3),
            gcs: Some(GcsCredentials {
                access_token: "ya29".into(),
                expires_at_ms: 3,
                endpoint: None,
            }),
        };
        let json = serde_json::to_value(&both).unwrap();
        assert_eq!(json["access_key_id"], "ASIA", "{json}");
        assert_eq!(json["gcs"]["access_token"], "ya29", "{json}");
        assert_eq!(
            serde_json::from_value::<DataCredentials>(json).unwrap(),
            both
        );
        assert_eq!(both.expires_at_ms(), 3);
        let gcs_only = DataCredentials { s3: None, ..both };
        let json = serde_json::to_value(&gcs_only).unwrap();
        assert!(json.get("access_key_id").is_none(), "{json}");
        assert_eq!(
            serde_json::from_value::<DataCredentials>(json).unwrap(),
            gcs_only
        );
    }

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
                container: None,
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
            chunks: None,
        };
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"type":"exited","phase":"run","code":3}"#
        );
        let answer = WorkAnswer {
            work: Work::Continue,
            live_logs: true,
        };
        let json = serde_json::to_string(&answer).unwrap();
        assert_eq!(json, r#"{"action":"continue","live_logs":true}"#);
        assert_eq!(serde_json::from_str::<WorkAnswer>(&json).unwrap(), answer);
    }
}
