//! The Google Cloud: a cluster is `num_nodes` Compute Engine VMs, one `instances.insert` each,
//! named `<cluster>-<rank>`, in the candidate's zone, spot or on-demand, through the official
//! `google-cloud-compute-v1` client (instances and zone operations only).
//!
//! Why one file of this length: it is the [`Provider`](crate::provider::Provider) port on
//! Compute Engine, one method per operation; the pure parts (instance body, startup script,
//! health) already live in the modules beside it.
//!
//! # Launch
//! 1. Instances labelled `stratus-cluster=<cluster>` in the zone: the ranks already there are
//!    not inserted again (a retry after a crash or a timeout).
//! 2. One `instances.insert` per missing rank (GCE has no multi-instance insert in this client;
//!    `bulkInsert` exists but would make half-made clusters harder to read), with `requestId` a
//!    UUID derived from (cluster, zone, rank), so that a retried insert, by the client or by us,
//!    never makes a second VM; an insert answered `409 alreadyExists` counts as made. The
//!    body (see `instance::instance_body`): machine type, GPUs (`guestAccelerators` on N1
//!    only), a boot disk from `image_id` or [`GceSettings::default_image_family`] sized to
//!    `disk_size_gb`, labels, the `startup-script` metadata, `scheduling` (spot: `SPOT`,
//!    deleted on preemption; never restarted automatically), the default network with an
//!    ephemeral external address, and no service account (the agent needs no Google
//!    credentials: it talks to the Stratus API with its per-job token).
//! 3. Each insert's zone operation is waited for (`zoneOperations.wait`) for at most
//!    [`GceSettings::launch_wait`]: GCE accepts an insert with HTTP 200 and reports
//!    `ZONE_RESOURCE_POOL_EXHAUSTED` or `QUOTA_EXCEEDED` in the finished operation, usually
//!    within seconds, so an operation's error is classified like a call's. Operations still
//!    running then are left to run: the launch answers with the nodes listed so far, and the
//!    sweep follows the rest (a node whose insert failed never appears: the cluster is Failed,
//!    or missing, and the walk moves on).
//! 4. If any node fails, the nodes of the cluster already made are torn down (best effort)
//!    before the error is returned: a cluster is all or nothing, as on EC2.
//!
//! Instances and their boot disks are labelled at creation: `stratus-job-id`,
//! `stratus-cluster`, `stratus-task`, `stratus-owner` (made a valid label value),
//! `stratus-rank`, `stratus-nodes`, and the task's labels (which may not override these).
//!
//! # Guarantees
//! - **Launch is idempotent per cluster name**: the label lookup skips ranks that exist, and
//!   the deterministic `requestId` makes GCE answer a repeated insert with the first one's
//!   operation.
//! - **Labels from the first moment**: they are part of the insert, so `describe_region` and
//!   `terminate` find a launch that half ran.
//! - **A fixed number of calls per region**: `describe_region` makes, for each zone of the
//!   region that the catalog offers (`Catalog::of(Cloud::Gcp)`; at most four today), one
//!   paginated `instances.list` filtered `labels.stratus-cluster:*` and one paginated
//!   `zoneOperations.list` filtered `operationType="compute.instances.preempted"`: the same
//!   number of calls for 1 job or 10,000, never one per job.
//! - **Intent first**: `terminate` labels the instances `stratus-state=terminating` (and waits
//!   for that) before `instances.delete`, so `describe_region` says Terminated (not Failed)
//!   while they shut down. Terminating a cluster with no instance succeeds.
//! - Errors are sorted by `error::classify`: capacity and quota move on to the next candidate,
//!   rate limits back off, auth fails prechecks. The client retries only transient errors
//!   (`UNAVAILABLE`, 503, I/O), with jittered exponential backoff.
//!
//! # Health
//! See [`health::health`]: terminating label → Terminated; a stopped or missing node with a
//! `compute.instances.preempted` operation → Preempted (for an hour after it, also when every
//! node was deleted); another stopped node → Failed with its status message; a rank missing →
//! Failed; any provisioning/staging → Pending; else Running. A node's `instance_id` is its
//! instance name (what every Compute call takes).
//!
//! # Caveats
//! - The agent token is in the instance metadata, which anyone allowed `compute.instances.get`
//!   in the project can read. It is valid for one job only.
//! - The default image (Debian 12) has no GPU driver: GPU tasks should name a driver image in
//!   `image_id` (e.g. a Deep Learning VM image family).
//! - The boot disk type is [`GceSettings::boot_disk_type`] (`pd-balanced`), which every
//!   machine family in the catalog accepts.
//! - A cluster whose every node was deleted by preemption is known only from the operation's
//!   instance name, so it is reported only when the name has the plain `<cluster>-<rank>`
//!   form and the cluster name `job::cluster_name`'s `<task>-<job>-<attempt>` form.
//!
//! # Layout
//! - `error`: `classify` of Google's error codes, call and operation errors →
//!   [`ProviderError`], the client's retry policy.
//! - `instance`: the insert body (GPUs, scheduling, image, labels), a pure function.
//! - `startup`: the startup script, [`agent_env_from_startup_script`], instance names and
//!   request ids.
//! - `health`: instances and preemption operations → [`ClusterState`]s, a pure function.
//! - `project`: [`discover_project`], the project when none is configured.

mod error;
mod health;
mod instance;
mod project;
mod startup;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use google_cloud_compute_v1::client::{Instances, ZoneOperations};
use google_cloud_compute_v1::model::{Instance, InstancesSetLabelsRequest, Operation, operation};
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::options::RequestOptionsBuilder as _;
use google_cloud_gax::paginator::Paginator as _;
use google_cloud_gax::retry_policy::RetryPolicyExt as _;
use tracing::{Instrument, debug, info, info_span, warn};

use self::error::{RetryTransient, api_error, is_already_exists, is_not_found, operation_error};
use self::health::{InstanceFacts, Preemption, cluster_states, parse_rfc3339};
use self::instance::{instance_body, source_image};
pub use self::project::discover_project;
use self::startup::request_id;
pub use self::startup::{agent_env_from_startup_script, startup_script};
use super::{ClusterSpec, ClusterState, NodeInfo, Provider, ProviderError};
use crate::catalog::Catalog;
use crate::cloud::Cloud;
use crate::credentials::Environment;

/// The labels Stratus puts on instances and boot disks: the marks every cloud uses, and the
/// node's rank.
pub(crate) mod labels {
    pub use crate::provider::marks::{CLUSTER, JOB_ID, NODES, OWNER, STATE, TASK, TERMINATING};
    /// The node's rank (also in the `stratus-rank` metadata and the startup script).
    pub const RANK: &str = "stratus-rank";
}

/// The longest `terminate` waits for its label operations before deleting anyway (a teardown
/// runs in functions with short timeouts too).
const LABEL_DEADLINE: Duration = Duration::from_secs(10);
/// Instances per `instances.list` page (GCE's maximum).
const PAGE_SIZE: u32 = 500;
/// Statuses of an instance already on its way out: `terminate` leaves them alone (a
/// preempted spot VM keeps its reason).
const LEAVING: [&str; 2] = ["STOPPING", "DEPROVISIONING"];

/// How the GCE provider sets up nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceSettings {
    /// The boot image of CPU candidates when the task names none: an image or image family
    /// path.
    pub default_image_family: String,
    /// The boot image of GPU candidates when the task names none: a Deep Learning VM image
    /// family (NVIDIA driver and CUDA).
    pub gpu_image_family: String,
    /// The VPC network of every node's one interface.
    pub network: String,
    /// Whether nodes get an ephemeral external address (without one, the network needs Cloud
    /// NAT for the agent to reach the API).
    pub external_ip: bool,
    /// The boot disk type (`zones/<zone>/diskTypes/<this>`).
    pub boot_disk_type: String,
    /// How long a launch waits for its insert operations before answering (capacity errors
    /// usually arrive within it); the sweep follows operations still running.
    pub launch_wait: Duration,
    /// Per region, the subnetwork of `network` the nodes go in (a name, or a
    /// `regions/<r>/subnetworks/<name>` path); an auto-mode network needs none. A region
    /// whose subnetwork does not exist cannot host the launch (the walk moves on).
    pub subnetworks: BTreeMap<String, String>,
}

impl GceSettings {
    pub const DEFAULT_IMAGE_FAMILY: &str = "projects/debian-cloud/global/images/family/debian-12";
    /// Google's Deep Learning VM base image: Ubuntu 22.04, CUDA 12.8, the NVIDIA 570 driver.
    pub const DEFAULT_GPU_IMAGE_FAMILY: &str = "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2204-nvidia-570";
    pub const DEFAULT_NETWORK: &str = "global/networks/default";
    pub const DEFAULT_BOOT_DISK_TYPE: &str = "pd-balanced";
    /// Short enough for a launch from the API function (29 s in all).
    pub const DEFAULT_LAUNCH_WAIT: Duration = Duration::from_secs(15);

    /// The defaults.
    pub fn new() -> Self {
        Self {
            default_image_family: Self::DEFAULT_IMAGE_FAMILY.to_owned(),
            gpu_image_family: Self::DEFAULT_GPU_IMAGE_FAMILY.to_owned(),
            network: Self::DEFAULT_NETWORK.to_owned(),
            external_ip: true,
            boot_disk_type: Self::DEFAULT_BOOT_DISK_TYPE.to_owned(),
            launch_wait: Self::DEFAULT_LAUNCH_WAIT,
            subnetworks: BTreeMap::new(),
        }
    }
}

impl Default for GceSettings {
    fn default() -> Self {
        Self::new()
    }
}

/// Which credentials the client sends.
#[derive(Clone, PartialEq, Eq)]
pub enum GceCredentials {
    /// Google's application default credentials: `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
    /// `application_default_credentials.json`, or the metadata server on Google Cloud.
    ApplicationDefault,
    /// A credentials document: a Workload Identity Federation configuration
    /// (`"type": "external_account"`, e.g. from `gcloud iam workload-identity-pools
    /// create-cred-config --aws`: short-lived tokens for the caller's AWS role, no secret
    /// stored) or a service-account key (`"type": "service_account"`).
    Json(serde_json::Value),
    /// None (a fake Compute API in tests).
    Anonymous,
}

impl fmt::Debug for GceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GceCredentials::ApplicationDefault => f.write_str("ApplicationDefault"),
            // A service-account key holds a private key: name the kind, never the contents.
            GceCredentials::Json(doc) => write!(f, "Json({})", doc["type"]),
            GceCredentials::Anonymous => f.write_str("Anonymous"),
        }
    }
}

impl GceCredentials {
    /// The client credentials these stand for (`None`: application default).
    pub(crate) fn build(
        &self,
    ) -> Result<Option<google_cloud_auth::credentials::Credentials>, ProviderError> {
        use google_cloud_auth::credentials::{anonymous, external_account, service_account};
        let refused = |kind: &str, e: &dyn std::fmt::Display| ProviderError::Auth {
            message: format!("GCE: the {kind} credentials cannot be used: {e}"),
        };
        match self {
            GceCredentials::ApplicationDefault => Ok(None),
            GceCredentials::Anonymous => Ok(Some(anonymous::Builder::new().build())),
            GceCredentials::Json(doc) => match doc["type"].as_str() {
                Some("external_account") => external_account::Builder::new(doc.clone())
                    .build()
                    .map(Some)
                    .map_err(|e| refused("Workload Identity Federation", &e)),
                Some("service_account") => service_account::Builder::new(doc.clone())
                    .build()
                    .map(Some)
                    .map_err(|e| refused("service-account key", &e)),
                other => Err(ProviderError::Auth {
                    message: format!(
                        "GCE: credentials of type {} are not supported here: give a Workload \
                         Identity Federation configuration (\"type\": \"external_account\") or a \
                         service-account key (\"type\": \"service_account\")",
                        other.map_or_else(|| "(none)".to_owned(), |t| format!("'{t}'"))
                    ),
                }),
            },
        }
    }
}

/// Where and how the provider reaches the Compute API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceConnection {
    /// The API's base URL; `None` for `https://compute.googleapis.com/`. The client appends
    /// `/compute/v1/projects/...`.
    pub endpoint: Option<String>,
    pub credentials: GceCredentials,
    /// The first delay of the client's retry backoff (it doubles, with jitter, up to 30×), and
    /// the pause between waits for an operation that is not done.
    pub backoff: Duration,
}

impl GceConnection {
    /// Google itself, with application default credentials.
    pub fn google() -> Self {
        Self {
            endpoint: None,
            credentials: GceCredentials::ApplicationDefault,
            backoff: Duration::from_secs(1),
        }
    }

    /// A fake Compute API at `url`, without credentials, with quick retries.
    pub fn emulator(url: impl Into<String>) -> Self {
        Self {
            endpoint: Some(url.into()),
            credentials: GceCredentials::Anonymous,
            backoff: Duration::from_millis(10),
        }
    }
}

/// Why [`GceProvider::wait`] returned without a finished operation.
enum OperationWait {
    /// Not done by the deadline (its name).
    Pending(String),
    /// Waiting for it failed.
    Failed(ProviderError),
}

/// The Google Cloud's [`Provider`]: Compute Engine VMs in one project.
pub struct GceProvider {
    project: String,
    settings: GceSettings,
    instances: Instances,
    operations: ZoneOperations,
    /// Region → the zones `describe_region` and `terminate` look in.
    zones: BTreeMap<String, Vec<String>>,
    backoff: Duration,
}

impl fmt::Debug for GceProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GceProvider")
            .field("project", &self.project)
            .field("settings", &self.settings)
            .field("zones", &self.zones)
            .finish_non_exhaustive()
    }
}

impl GceProvider {
    /// A provider for `project` through `connection`, looking for clusters in the zones the
    /// embedded catalog offers (see [`GceProvider::with_catalog`]).
    pub async fn new(
        project: impl Into<String>,
        settings: GceSettings,
        connection: GceConnection,
    ) -> Result<Self, ProviderError> {
        let backoff = connection.backoff.max(Duration::from_millis(1));
        let policy = || {
            RetryTransient
                .with_attempt_limit(5)
                .with_time_limit(Duration::from_mins(1))
        };
        let backoff_policy = || {
            ExponentialBackoffBuilder::new()
                .with_initial_delay(backoff)
                .with_maximum_delay(backoff * 30)
                .build()
                .map_err(|e| ProviderError::Other {
                    context: "GCE: retry backoff settings".to_owned(),
                    source: Box::new(e),
                })
        };
        let built = |e: google_cloud_gax::client_builder::Error| {
            if e.is_default_credentials() {
                ProviderError::Auth {
                    message: format!(
                        "GCE: no Google credentials ({e}): run `gcloud auth \
                         application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
                    ),
                }
            } else {
                ProviderError::Other {
                    context: format!("GCE: cannot build the Compute client: {e}"),
                    source: Box::new(e),
                }
            }
        };
        let mut instances = Instances::builder()
            .with_retry_policy(policy())
            .with_backoff_policy(backoff_policy()?);
        let mut operations = ZoneOperations::builder()
            .with_retry_policy(policy())
            .with_backoff_policy(backoff_policy()?);
        if let Some(endpoint) = &connection.endpoint {
            instances = instances.with_endpoint(endpoint);
            operations = operations.with_endpoint(endpoint);
        }
        if let Some(credentials) = connection.credentials.build()? {
            instances = instances.with_credentials(credentials.clone());
            operations = operations.with_credentials(credentials);
        }
        Ok(Self {
            project: project.into(),
            settings,
            instances: instances.build().await.map_err(built)?,
            operations: operations.build().await.map_err(built)?,
            zones: zones_of(&Catalog::embedded()),
            backoff,
        })
    }

    /// A provider on Google with application default credentials, for `project` (e.g.
    /// `config.yaml`'s) or else the one [`discover_project`] finds.
    pub async fn from_env(
        settings: GceSettings,
        project: Option<String>,
    ) -> Result<Self, ProviderError> {
        let project = match project.filter(|p| !p.trim().is_empty()) {
            Some(p) => p,
            None => discover_project(&Environment::current())
                .map(|(p, _)| p)
                .ok_or_else(|| ProviderError::Auth {
                    message: "GCE: no project: set GOOGLE_CLOUD_PROJECT, or `gcloud config set \
                              project <id>`"
                        .to_owned(),
                })?,
        };
        Self::new(project, settings, GceConnection::google()).await
    }

    /// Looks for clusters in the zones `catalog` offers (e.g. one with
    /// `$STRATUS_HOME/catalogs/gcp.csv`), instead of the embedded catalog's.
    pub fn with_catalog(mut self, catalog: &Catalog) -> Self {
        self.zones = zones_of(catalog);
        self
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn settings(&self) -> &GceSettings {
        &self.settings
    }

    /// The zones of `region` that `describe_region` and `terminate` look in.
    pub fn zones(&self, region: &str) -> &[String] {
        self.zones.get(region).map_or(&[], Vec::as_slice)
    }

    fn zones_or_error(&self, region: &str) -> Result<&[String], ProviderError> {
        let zones = self.zones(region);
        if zones.is_empty() {
            let known: Vec<&str> = self.zones.keys().map(String::as_str).collect();
            return Err(ProviderError::Invalid {
                message: format!(
                    "GCE: no zones known in region '{region}' (the catalog has: {})",
                    known.join(", ")
                ),
            });
        }
        Ok(zones)
    }

    async fn launch_now(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        check(spec)?;
        let c = &spec.candidate;
        let zone = c.zone.as_str();
        let existing = self.list(zone, &cluster_filter(&spec.cluster)).await?;
        let have = already_there(spec, &existing)?;
        if have.len() as u32 >= spec.num_nodes {
            debug!(instances = existing.len(), "GCE cluster already launched");
            return Ok(node_infos(&existing));
        }
        let image = source_image(spec, &self.settings)?;
        let mut bodies = Vec::new();
        for rank in (0..spec.num_nodes).filter(|r| !have.contains(r)) {
            bodies.push((rank, instance_body(spec, rank, &self.settings, &image)?));
        }
        let what = format!(
            "GCE instances.insert in {zone} ({} x {})",
            spec.num_nodes,
            c.instance_label()
        );
        let mut operations = Vec::new();
        for (rank, body) in bodies {
            let sent = self
                .instances
                .insert()
                .set_project(&self.project)
                .set_zone(zone)
                .set_request_id(request_id("insert", &spec.cluster, zone, rank))
                .set_body(body)
                // The requestId makes a repeated insert safe: let the client retry it.
                .with_idempotency(true)
                .send()
                .await;
            match sent {
                Ok(op) => operations.push(op),
                Err(e) if is_already_exists(&e) => debug!(rank, "instance already exists"),
                Err(e) => return Err(self.abandon(spec, api_error(&what, e)).await),
            }
        }
        // Capacity and quota errors usually end an insert's operation within seconds: wait a
        // little for them, then let the operations run on. One still running is followed by
        // the sweep (`describe_region`: a node whose insert failed never appears, and the
        // cluster is judged Failed or missing), so a launch fits a function's timeout.
        let deadline = Instant::now() + self.settings.launch_wait;
        for op in operations {
            let done = match self.wait(zone, op, deadline).await {
                Ok(done) => done,
                Err(OperationWait::Pending(name)) => {
                    debug!(operation = %name, "insert still running; the sweep follows it");
                    continue;
                }
                Err(OperationWait::Failed(e)) => return Err(self.abandon(spec, e).await),
            };
            if let Some(e) = operation_error(&what, &done) {
                return Err(self.abandon(spec, e).await);
            }
        }
        let instances = self.list(zone, &cluster_filter(&spec.cluster)).await?;
        let nodes = node_infos(&instances);
        info!(zone, machine_type = %c.instance_type, spot = c.use_spot, nodes = nodes.len(), image = %image, "launched GCE cluster");
        Ok(nodes)
    }

    /// Tears down what a failed launch made (best effort), then gives back `err`.
    async fn abandon(&self, spec: &ClusterSpec, err: ProviderError) -> ProviderError {
        let c = &spec.candidate;
        warn!(zone = %c.zone, machine_type = %c.instance_type, spot = c.use_spot, error = %err, "GCE launch failed");
        let made = match self.list(&c.zone, &cluster_filter(&spec.cluster)).await {
            Ok(made) => made,
            Err(e) => {
                debug!(error = %e, "cannot list the failed launch's instances; the poll's orphan sweep will");
                return err;
            }
        };
        if !made.is_empty()
            && let Err(e) = self.terminate_in_zone(&c.zone, &spec.cluster, made).await
        {
            debug!(error = %e, "cannot tear down the failed launch; the poll's orphan sweep will");
        }
        err
    }

    /// `op` once it is done, waiting with `zoneOperations.wait` until `deadline` (each wait
    /// asks for no more than the time left).
    async fn wait(
        &self,
        zone: &str,
        mut op: Operation,
        deadline: Instant,
    ) -> Result<Operation, OperationWait> {
        loop {
            if op.status == Some(operation::Status::Done) {
                return Ok(op);
            }
            let name = op.name.clone().unwrap_or_default();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(OperationWait::Pending(name));
            }
            let waited = self
                .operations
                .wait()
                .set_project(&self.project)
                .set_zone(zone)
                .set_operation(&name)
                .send();
            op = match tokio::time::timeout(left, waited).await {
                Ok(answer) => answer.map_err(|e| {
                    OperationWait::Failed(api_error(
                        &format!("GCE zoneOperations.wait {name} in {zone}"),
                        e,
                    ))
                })?,
                Err(_) => return Err(OperationWait::Pending(name)),
            };
            if op.status != Some(operation::Status::Done) {
                tokio::time::sleep(
                    self.backoff
                        .min(deadline.saturating_duration_since(Instant::now())),
                )
                .await;
            }
        }
    }

    /// Every instance of `zone` that matches `filter`, all pages.
    async fn list(&self, zone: &str, filter: &str) -> Result<Vec<Instance>, ProviderError> {
        let mut pages = self
            .instances
            .list()
            .set_project(&self.project)
            .set_zone(zone)
            .set_filter(filter)
            .set_max_results(PAGE_SIZE)
            .by_page();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| api_error(&format!("GCE instances.list in {zone}"), e))?;
            all.extend(page.items);
        }
        Ok(all)
    }

    /// The `compute.instances.preempted` operations of `zone`, all pages.
    async fn preemptions(&self, zone: &str) -> Result<Vec<Preemption>, ProviderError> {
        let mut pages = self
            .operations
            .list()
            .set_project(&self.project)
            .set_zone(zone)
            .set_filter(r#"operationType="compute.instances.preempted""#)
            .set_max_results(PAGE_SIZE)
            .by_page();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| api_error(&format!("GCE zoneOperations.list in {zone}"), e))?;
            all.extend(page.items.iter().filter_map(|op| {
                let link = op.target_link.as_deref()?;
                Some(Preemption {
                    zone: zone.to_owned(),
                    instance: last_segment(link).to_owned(),
                    at: op.insert_time.as_deref().and_then(parse_rfc3339),
                })
            }));
        }
        Ok(all)
    }

    async fn describe_now(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        let mut instances = Vec::new();
        let mut preemptions = Vec::new();
        for zone in self.zones_or_error(region)? {
            let filter = format!("labels.{}:*", labels::CLUSTER);
            instances.extend(
                self.list(zone, &filter)
                    .await?
                    .iter()
                    .map(|i| facts(zone, i)),
            );
            preemptions.extend(self.preemptions(zone).await?);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let states = cluster_states(region, instances, &preemptions, now);
        debug!(clusters = states.len(), "described GCE region");
        Ok(states)
    }

    async fn terminate_now(&self, region: &str, cluster: &str) -> Result<(), ProviderError> {
        for zone in self.zones_or_error(region)? {
            let found = self.list(zone, &cluster_filter(cluster)).await?;
            if !found.is_empty() {
                self.terminate_in_zone(zone, cluster, found).await?;
            }
        }
        Ok(())
    }

    /// Labels `instances` terminating, waits for that, then deletes them. Instances already
    /// on their way out are left alone.
    async fn terminate_in_zone(
        &self,
        zone: &str,
        cluster: &str,
        instances: Vec<Instance>,
    ) -> Result<(), ProviderError> {
        let targets: Vec<Instance> = instances
            .into_iter()
            .filter(|i| {
                let status = i.status.as_ref().and_then(|s| s.name()).unwrap_or_default();
                !LEAVING.contains(&status)
            })
            .collect();
        if targets.is_empty() {
            debug!(zone, "no GCE instances left to delete");
            return Ok(());
        }
        let mut label_ops = Vec::new();
        for i in &targets {
            let name = i.name.clone().unwrap_or_default();
            if i.labels.get(labels::STATE).map(String::as_str) == Some(labels::TERMINATING) {
                continue;
            }
            let mut new_labels = i.labels.clone();
            new_labels.insert(labels::STATE.to_owned(), labels::TERMINATING.to_owned());
            let mut body = InstancesSetLabelsRequest::new().set_labels(new_labels);
            if let Some(fingerprint) = &i.label_fingerprint {
                body = body.set_label_fingerprint(fingerprint.clone());
            }
            let sent = self
                .instances
                .set_labels()
                .set_project(&self.project)
                .set_zone(zone)
                .set_instance(&name)
                .set_body(body)
                .send()
                .await;
            match sent {
                Ok(op) => label_ops.push(op),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    let err = api_error(&format!("GCE instances.setLabels {name} in {zone}"), e);
                    if matches!(err, ProviderError::Auth { .. }) {
                        return Err(err);
                    }
                    // Deleting matters more than the label: go on.
                    warn!(instance = %name, error = %err, "cannot label the instance terminating");
                }
            }
        }
        let deadline = Instant::now() + LABEL_DEADLINE;
        for op in label_ops {
            match self.wait(zone, op, deadline).await {
                Ok(_) => {}
                Err(OperationWait::Pending(name)) => {
                    debug!(operation = %name, "label operation not done; deleting anyway");
                }
                Err(OperationWait::Failed(e)) => {
                    debug!(error = %e, "label operation failed; deleting anyway");
                }
            }
        }
        let mut deleted = Vec::new();
        for i in &targets {
            let name = i.name.clone().unwrap_or_default();
            let sent = self
                .instances
                .delete()
                .set_project(&self.project)
                .set_zone(zone)
                .set_instance(&name)
                .send()
                .await;
            match sent {
                Ok(_) => deleted.push(name),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(api_error(
                        &format!("GCE instances.delete {name} in {zone}"),
                        e,
                    ));
                }
            }
        }
        info!(zone, cluster, instances = ?deleted, "deleting GCE cluster");
        Ok(())
    }
}

#[async_trait]
impl Provider for GceProvider {
    fn cloud(&self) -> Cloud {
        Cloud::Gcp
    }

    async fn launch(&self, spec: &ClusterSpec) -> Result<Vec<NodeInfo>, ProviderError> {
        let span = info_span!("gce_launch", cluster = %spec.cluster, job_id = spec.job_id, region = %spec.candidate.region, zone = %spec.candidate.zone);
        self.launch_now(spec).instrument(span).await
    }

    async fn describe_region(&self, region: &str) -> Result<Vec<ClusterState>, ProviderError> {
        let span = info_span!("gce_describe", region);
        self.describe_now(region).instrument(span).await
    }

    async fn terminate(&self, region: &str, cluster: &str) -> Result<(), ProviderError> {
        let span = info_span!("gce_terminate", cluster, region);
        self.terminate_now(region, cluster).instrument(span).await
    }
}

/// Region → its zones, from the catalog's GCP offerings.
fn zones_of(catalog: &Catalog) -> BTreeMap<String, Vec<String>> {
    let mut zones: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for o in catalog.of(Cloud::Gcp) {
        zones
            .entry(o.region.clone())
            .or_default()
            .insert(o.zone.clone());
    }
    zones
        .into_iter()
        .map(|(region, zones)| (region, zones.into_iter().collect()))
        .collect()
}

/// The list filter of one cluster's instances.
fn cluster_filter(cluster: &str) -> String {
    format!(r#"labels.{}="{cluster}""#, labels::CLUSTER)
}

/// Rejects what GCE would reject anyway, with a better message.
fn check(spec: &ClusterSpec) -> Result<(), ProviderError> {
    let c = &spec.candidate;
    let invalid = |message: String| Err(ProviderError::Invalid { message });
    if c.cloud != Cloud::Gcp {
        return invalid(format!("the GCE provider cannot launch {c}"));
    }
    if spec.num_nodes == 0 || spec.num_nodes > 1000 {
        return invalid(format!("GCE: num_nodes {} is not valid", spec.num_nodes));
    }
    let label_ok = !spec.cluster.is_empty()
        && spec.cluster.len() <= 63
        && spec
            .cluster
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !label_ok {
        return invalid(format!(
            "GCE: cluster name '{}' is not a valid label value ([-_a-z0-9], at most 63)",
            spec.cluster
        ));
    }
    if c.zone.is_empty() {
        return invalid(format!("GCE: candidate {c} has no zone"));
    }
    Ok(())
}

/// The ranks of `spec`'s cluster that exist, unless the instances are another job's or
/// already being torn down.
fn already_there(
    spec: &ClusterSpec,
    existing: &[Instance],
) -> Result<BTreeSet<u32>, ProviderError> {
    let job = spec.job_id.to_string();
    if let Some(other) = existing
        .iter()
        .filter_map(|i| i.labels.get(labels::JOB_ID))
        .find(|j| **j != job)
    {
        return Err(ProviderError::Invalid {
            message: format!(
                "GCE: cluster {} belongs to job {other}, not {job}",
                spec.cluster
            ),
        });
    }
    if existing
        .iter()
        .any(|i| i.labels.get(labels::STATE).map(String::as_str) == Some(labels::TERMINATING))
    {
        return Err(ProviderError::Invalid {
            message: format!("GCE: cluster {} is being torn down", spec.cluster),
        });
    }
    Ok(existing.iter().map(rank_of).collect())
}

fn rank_of(instance: &Instance) -> u32 {
    instance
        .labels
        .get(labels::RANK)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn node_infos(instances: &[Instance]) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = instances
        .iter()
        .map(|i| NodeInfo {
            rank: rank_of(i),
            instance_id: i.name.clone().unwrap_or_default(),
            ip: internal_ip(i).unwrap_or_default(),
        })
        .collect();
    nodes.sort_by(|a, b| (a.rank, &a.instance_id).cmp(&(b.rank, &b.instance_id)));
    nodes
}

fn internal_ip(instance: &Instance) -> Option<String> {
    instance
        .network_interfaces
        .first()
        .and_then(|n| n.network_ip.clone())
}

/// `https://.../zones/us-central1-a` → `us-central1-a`.
fn last_segment(link: &str) -> &str {
    link.rsplit('/').next().unwrap_or(link)
}

/// What health needs of a listed instance.
fn facts(zone: &str, instance: &Instance) -> InstanceFacts {
    InstanceFacts {
        name: instance.name.clone().unwrap_or_default(),
        status: instance
            .status
            .as_ref()
            .and_then(|s| s.name())
            .unwrap_or_default()
            .to_owned(),
        status_message: instance.status_message.clone(),
        labels: instance
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        zone: instance
            .zone
            .as_deref()
            .map_or(zone, last_segment)
            .to_owned(),
        ip: internal_ip(instance),
    }
}
