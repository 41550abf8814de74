//! The cloud port: launch a cluster, see every Stratus cluster in a region at once, and tear
//! one down. One adapter per cloud: `local`, `ec2`, `gce`.
//!
//! # Guarantees every adapter keeps
//! - `launch` is idempotent per cluster name: a retry after a crash or a timeout never makes a
//!   second set of machines (the name is the idempotency key: EC2 `ClientToken`, GCE
//!   `requestId`, a lock file locally).
//! - Every machine carries the job id and cluster name as tags (labels) from its first moment,
//!   so `describe_region` and `terminate` find it even when the launch half ran.
//! - `terminate` of a cluster that does not exist, or is already gone, succeeds.
//! - `describe_region` answers for every Stratus cluster in the region with one listing (one
//!   paginated call on a real cloud), never one call per job.
//!
//! # Layout
//! - `local`: clusters of local node processes (the embedded default).
//! - `marks` (features `aws`, `gcp`): the tag (label) names both clouds' machines carry, and
//!   grouping a region's machines into clusters by them.
//! - `ec2` (feature `aws`): `Ec2Provider`, EC2 instances tagged with the job and cluster.
//! - `gce` (feature `gcp`): `GceProvider`, Compute Engine VMs labelled with the job and cluster.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cloud::Cloud;
use crate::job::JobId;
use crate::optimizer::Candidate;

#[cfg(any(feature = "aws", feature = "gcp"))]
mod boot;
#[cfg(feature = "aws")]
mod ec2;
#[cfg(feature = "gcp")]
mod gce;
mod local;
#[cfg(any(feature = "aws", feature = "gcp"))]
mod marks;
#[cfg(feature = "aws")]
pub use ec2::{
    Ec2Network, Ec2Provider, Ec2Settings, agent_env_from_user_data, decode_user_data, user_data,
};
#[cfg(feature = "gcp")]
pub use gce::{
    GceConnection, GceCredentials, GceProvider, GceSettings, agent_env_from_startup_script,
    discover_project, startup_script,
};
pub use local::{
    DEFAULT_SLOTS_PER_ZONE, DEFAULT_ZONES, LocalConfig, LocalProvider, SLOTS_ENV, SlotsError,
    parse_slots,
};

/// How a node's agent reaches the control plane. Passed to every node at boot (environment
/// locally, user data / startup script on a VM).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentBoot {
    /// Base URL of the Stratus API, e.g. `http://127.0.0.1:46580`.
    pub api_url: String,
    /// The per-job agent token (valid for this job only).
    pub token: String,
    /// How often the agent talks to the control plane.
    #[serde(default = "local_cadence")]
    pub cadence: crate::agent_protocol::AgentCadence,
}

fn local_cadence() -> crate::agent_protocol::AgentCadence {
    crate::agent_protocol::AgentCadence::LOCAL
}

impl fmt::Debug for AgentBoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBoot")
            .field("api_url", &self.api_url)
            .field("token", &"<redacted>")
            .field("cadence", &self.cadence)
            .finish()
    }
}

/// Everything a provider needs to launch one cluster for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub job_id: JobId,
    pub task: usize,
    /// Unique per launch attempt (`<task>-<job>-<attempt>`); the idempotency key and a tag.
    pub cluster: String,
    pub owner: String,
    pub candidate: Candidate,
    pub num_nodes: u32,
    pub agent: AgentBoot,
    /// Extra tags (labels) from the task's `resources.labels`.
    pub labels: BTreeMap<String, String>,
    pub image_id: Option<String>,
    pub disk_size_gb: Option<u32>,
}

/// One machine of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub rank: u32,
    /// The cloud's id for the machine (instance id, process group id locally).
    pub instance_id: String,
    /// The address other nodes reach it at (`SKYPILOT_NODE_IPS`).
    pub ip: String,
}

/// What the cloud says about a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ClusterHealth {
    /// Machines are starting.
    Pending,
    /// Every node is running.
    Running,
    /// The cloud took a node back (spot reclaim).
    Preempted { reason: String },
    /// A node failed or vanished for another reason.
    Failed { reason: String },
    /// Terminated on purpose (by `terminate`).
    Terminated,
}

/// One Stratus cluster as found by `describe_region`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster: String,
    pub job_id: JobId,
    pub region: String,
    pub zone: String,
    pub health: ClusterHealth,
    pub nodes: Vec<NodeInfo>,
}

/// Why a provider call failed, sorted the way recovery needs.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No capacity for this candidate now (e.g. `InsufficientInstanceCapacity`,
    /// `ZONE_RESOURCE_POOL_EXHAUSTED`, all local slots busy): try the next candidate.
    #[error("no capacity: {message}")]
    NoCapacity { message: String },
    /// A quota or limit (e.g. `VcpuLimitExceeded`, `QUOTA_EXCEEDED`): try the next candidate.
    #[error("quota exceeded: {message}")]
    Quota { message: String },
    /// Credentials missing or refused: no candidate on this cloud will work.
    #[error("not authorized: {message}")]
    Auth { message: String },
    /// The request itself is wrong (bad image, unknown instance type): fix the task.
    #[error("invalid request: {message}")]
    Invalid { message: String },
    /// This region (or zone) cannot host the launch whatever the capacity: no default VPC, no
    /// subnet in the zone, an image or instance type it does not have. Try the next candidate.
    #[error("unavailable here: {message}")]
    Unavailable { message: String },
    /// Rate limited: back off and call again.
    #[error("throttled: {message}")]
    Throttled { message: String },
    /// Anything else (network, 5xx, IO): retry later.
    #[error("{context}")]
    Other {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ProviderError {
    /// The same error with `what` (which call, where) in front of its message, and, for
    /// `Other`, `source` (the call's own error) in place of the one it carries, if given.
    pub fn within(
        self,
        what: &str,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let prefix = |message: String| format!("{what}: {message}");
        match self {
            ProviderError::NoCapacity { message } => ProviderError::NoCapacity {
                message: prefix(message),
            },
            ProviderError::Quota { message } => ProviderError::Quota {
                message: prefix(message),
            },
            ProviderError::Auth { message } => ProviderError::Auth {
                message: prefix(message),
            },
            ProviderError::Invalid { message } => ProviderError::Invalid {
                message: prefix(message),
            },
            ProviderError::Unavailable { message } => ProviderError::Unavailable {
                message: prefix(message),
            },
            ProviderError::Throttled { message } => ProviderError::Throttled {
                message: prefix(message),
            },
            ProviderError::Other {
                context,
                source: own,
            } => ProviderError::Other {
                context: prefix(context),
                source: source.unwrap_or(own),
            },
        }
    }

    /// Whether calling again later (same arguments) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Throttled { .. } | ProviderError::Other { .. }
        )
    }
}

/// A cloud that can run clusters.
#[async_trait]
pub trait Provider: Send + Sync {
    fn cloud(&self) -> Cloud;

    /// Starts `spec.num_nodes` machines tagged with the job and cluster, each booting the node
    /// agent with `spec.agent`. Returns once the cloud has accepted them (they may still be
    /// booting). Idempotent per `spec.cluster`.
    async fn launch(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError>;

    /// Every Stratus cluster in `region` (terminated ones may be omitted once gone).
    async fn describe_region(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError>;

    /// Tears down every machine tagged with `cluster` in `region`. Succeeds if none exist.
    async fn terminate(&self, region: &str, cluster: &str) -> Result<(), ProviderError>;
}
