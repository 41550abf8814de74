//! Stratus's domain library: everything the `stratus` CLI, the node agent and the serverless
//! functions share.
//!
//! # Layout
//! - [`spec`]: SkyPilot task YAML parsed and validated into a [`spec::Pipeline`].
//! - [`catalog`]: embedded instance prices per cloud, region and zone.
//! - [`optimizer`]: feasible candidates from the catalog, ranked by price.
//! - [`cloud`]: the clouds Stratus launches on, and the ones it knows but does not support.
//! - [`credentials`]: which clouds are enabled (`stratus check`).
//! - [`suggest`]: "did you mean" for misspelled names.
//! - [`job`]: managed jobs: the record, statuses, events, and the pure state machine `step`.
//! - [`facts`]: what the nodes of a job's clusters said.
//! - [`store`]: the state table: the `JobStore` and `FactStore` ports, with SQLite and DynamoDB
//!   adapters.
//! - [`clock`]: the `Clock` port and `Timestamp`.
//! - [`provider`]: the cloud port (`Provider`: launch, describe a region, terminate) and adapters.
//! - [`blob`]: the blob-storage port (`BlobStore`), its adapters, and the key layout (`blob::keys`).
//! - [`bus`]: the event-bus port (`EventBus`), the in-process bus and EventBridge.
//! - [`buckets`]: users' buckets (`Buckets`: find, create, delete, the nodes' data identity).
//! - [`api`]: the HTTP API, one axum `Router` for users and node agents.
//! - [`control`]: the handlers (submit, advance, poll, cleanup, nodes' work/reports/logs) over
//!   the ports.
//! - [`agent_protocol`]: what node agents and the control plane say to each other.
//! - [`metering`]: what the deployment's own requests cost, the price table and counting
//!   adapters.
//! - `testing` (feature `test-util`): a control plane in memory over a simulated cloud, the
//!   fake GCE API and the AWS proxy every crate's tests use.

pub mod agent_protocol;
pub mod api;
pub mod blob;
pub mod buckets;
pub mod bus;
pub mod catalog;
pub mod clock;
pub mod cloud;
pub mod control;
pub mod credentials;
pub mod facts;
pub mod job;
pub mod metering;
pub mod optimizer;
pub mod provider;
pub mod spec;
pub mod store;
pub mod suggest;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
