//! The control plane's handlers: submit, advance (the event handler), poll, cleanup, and what
//! node agents ask for. Written once against the ports, so the same code runs in the local
//! control plane and in the Lambda functions.
//!
//! Every handler is level-triggered and idempotent: it re-reads the job (and, for `poll`, the
//! cloud), computes the next step with the pure [`crate::job::step`], writes it with a fenced
//! update, then carries out the actions. Running one twice, or dying at any line and running
//! again, leaves no duplicate cluster and no lost job:
//! - a cluster's name is fixed in the record *before* `LaunchCluster` runs, and launching is
//!   idempotent per name, so a repeated launch finds the first one;
//! - `poll` re-drives what a crash may have dropped (a launch the record says is under way but
//!   the cloud has never seen, a due backoff, a teardown) and tears down any Stratus cluster no
//!   active task wants.
//!
//! # Layout
//! - `local_loops`: the local plane's stand-in for EventBridge rules and the sweep's schedule
//!   (the bus port and its adapters live in [`crate::bus`]).
//! - `token`: per-job agent tokens.
//! - `advance`: apply one event to one job and carry out the actions.
//! - `submit`: validate, plan and store a new job.
//! - `budget`: the money checks at submit (`max_cost` against the duration limits, the monthly
//!   budget per user).
//! - `poll`: the sweep over active jobs and the clouds.
//! - `cleanup`: the finalizer of a finished job (clusters by tag, intermediate files).
//! - `nodes`: what node agents ask for: their work, reports, logs and credentials.
//! - `node_task`: the task as a node runs it (variables, addresses, mounts, container).
//! - `logs`: where user logs live in blob storage, and reading them back exactly once.
//! - `uploads`: the archives a job's local paths travel in, and whose they are.
//! - `webhooks`: users' job events posted to their URLs (the local plane's notifications).

mod advance;
pub(crate) mod buckets;
pub mod budget;
mod capacity;
mod cleanup;
mod local_loops;
pub mod logs;
mod node_task;
pub mod nodes;
mod notice;
mod poll;
mod submit;
mod token;
pub mod uploads;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use advance::advance;
pub use cleanup::{Cleaned, cleanup};
pub use local_loops::run_local_loops;
pub use notice::preemption_notice;
pub use poll::poll;
pub use submit::{SubmitRequest, submit};
pub use token::SigningKey;

use crate::blob::BlobStore;
use crate::bus::{BusError, EventBus};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::cloud::Cloud;
use crate::provider::Provider;
use crate::store::JobStore;

/// Settings of one control plane.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The URL node agents use to reach the API.
    pub agent_api_url: String,
    pub secret: SigningKey,
    /// Clouds jobs may be planned on.
    pub enabled_clouds: Vec<Cloud>,
    /// A running cluster whose nodes have not polled for this long is lost.
    pub heartbeat_timeout: Duration,
    /// A launched cluster whose nodes are not all ready this long after the launch is torn
    /// down and the next candidate tried (a task's `config.<cloud>.provision_timeout`
    /// overrides it).
    pub ready_timeout: Duration,
    /// Local cloud only: the folder that stands in for buckets (`<root>/<store>/<bucket>`).
    pub local_buckets: Option<std::path::PathBuf>,
    /// When this control plane started: heartbeats are judged only once it has been up for
    /// `heartbeat_timeout`, so nodes that could not reach it while it was down are not lost.
    pub started_at: crate::clock::Timestamp,
    /// How often the nodes it launches talk to it (must leave several heartbeats within
    /// `heartbeat_timeout`).
    pub agent_cadence: crate::agent_protocol::AgentCadence,
    /// The node agent binary cloud machines download at boot (through the API,
    /// `agent_protocol::agent_binary_path`); `None` where no machine downloads it (the local
    /// cloud runs the agent in place).
    pub agent_binary: Option<AgentBinary>,
    /// What `stratus check` says of each cloud: where an enabled one's credentials come
    /// from, or why one is not enabled.
    pub cloud_notes: BTreeMap<Cloud, String>,
    /// USD each user's jobs may cost per calendar month (UTC) before new launches are refused
    /// (`control::budget`); `None`: no budget.
    pub monthly_budget: Option<f64>,
}

/// Where the node agent binary is kept, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBinary {
    /// Its blob key.
    pub key: String,
    /// A file to publish at `key` when nothing is there yet (the `api` function's own
    /// executable, which is also the agent): the first machine to ask puts it in place.
    pub source: Option<std::path::PathBuf>,
}

/// The default [`Settings::ready_timeout`]: a stock image boots and fetches the agent in one
/// to two minutes; big images (GPU drivers) take longer and should say so per task.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_mins(10);

/// Everything a handler needs: the ports and the settings.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<dyn JobStore>,
    pub providers: BTreeMap<Cloud, Arc<dyn Provider>>,
    pub blobs: Arc<dyn BlobStore>,
    pub bus: Arc<dyn EventBus>,
    pub clock: Arc<dyn Clock>,
    pub catalog: Arc<Catalog>,
    /// Users' buckets on cloud nodes, per object store (the deployed control plane); none
    /// locally, where folders stand in for buckets (`Settings::local_buckets`).
    pub buckets: crate::buckets::BucketStores,
    pub settings: Settings,
}

impl Context {
    fn provider(&self, cloud: Cloud) -> Option<&Arc<dyn Provider>> {
        self.providers.get(&cloud)
    }
}

/// The resources (of `spec`'s `any_of`/`ordered` alternatives) `candidate` was planned from.
pub(crate) fn resources_of<'a>(
    spec: &'a crate::spec::Task,
    candidate: &crate::optimizer::Candidate,
) -> Option<&'a crate::spec::Resources> {
    spec.resources.candidates.get(
        candidate
            .alternative
            .min(spec.resources.candidates.len().saturating_sub(1)),
    )
}

/// The `image_id` that applies to `candidate` (the one image, or its region's).
pub(crate) fn image_of(
    spec: &crate::spec::Task,
    candidate: &crate::optimizer::Candidate,
) -> Option<String> {
    match resources_of(spec, candidate)?.image_id.as_ref()? {
        crate::spec::ImageId::One(image) => Some(image.clone()),
        crate::spec::ImageId::PerRegion(images) => images.get(&candidate.region).cloned(),
    }
}

/// Why a submission was refused (or could not be checked). Here rather than in `submit`
/// because the checks `submit` calls (`budget`, `buckets`) return it too.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Invalid(#[from] crate::spec::SpecError),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("no resource satisfies task '{task}':\n{explanation}")]
    NoResources { task: String, explanation: String },
    /// A service the check needs did not answer (try again).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Handler(#[from] HandlerError),
}

impl From<crate::store::StoreError> for SubmitError {
    fn from(e: crate::store::StoreError) -> Self {
        SubmitError::Handler(e.into())
    }
}

impl From<crate::blob::BlobError> for SubmitError {
    fn from(e: crate::blob::BlobError) -> Self {
        SubmitError::Handler(e.into())
    }
}

/// A handler failed in a way the caller should see (the job itself is safe in the store).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The work is not finished (a cloud call failed); it is retried, and the sweep runs it
    /// again.
    #[error("job {job_id}: {what}; it is tried again")]
    Unfinished {
        job_id: crate::job::JobId,
        what: String,
    },
    /// Something stored for the job cannot be read back.
    #[error("job {job_id}: {what} cannot be read")]
    Corrupt {
        job_id: crate::job::JobId,
        what: String,
    },
    /// A node request named a cluster that is not the job's, or a rank beyond its nodes.
    #[error("job {job_id} has no node {rank} in a cluster named '{cluster}'")]
    UnknownNode {
        job_id: crate::job::JobId,
        cluster: String,
        rank: u32,
    },
    /// A cloud could not be asked (e.g. the region's listing for a preemption notice); the
    /// sweep covers what it would have found.
    #[error(transparent)]
    Cloud(#[from] crate::provider::ProviderError),
}
