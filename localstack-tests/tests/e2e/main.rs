//! Stratus's AWS side end to end on an emulator: the real handlers, adapters and node agents,
//! with the harness playing EventBridge delivery, the schedule, API Gateway, the machines and
//! (once) the Lambda runtime.
//!
//! # Layout
//! - `harness`: a [`harness::World`] per test, with its own moto.
//! - `lambda`: the Lambda runtime API, to run the real function binaries.
//! - `lifecycle`: launch, run, succeed, clean up; preemption; failover; duplicate events.
//! - `buckets`: S3 bucket mounts with the job's data identity: a checkpoint survives a
//!   preemption; `name:` buckets created and deleted; a missing bucket refused at submit.
//! - `gcs`: GCS bucket mounts against the fake Cloud Storage: a checkpoint survives a GCE
//!   preemption; an EC2 node copies a GCS prefix; bad GCS buckets refused at submit.
//! - `schedule`: job events through the bus rule; the poll rule firing (LocalStack).
//! - `events`: users' job status events reaching a rule of their own on the bus.
//! - `limits`: a time limit's Scheduler timer created, fired and deleted; one never fired
//!   deleted by the cleanup.
//! - `cross_cloud`: preempted on GCP, GCP exhausted, recovered on AWS.
//! - `cadence`: a running node's requests on the wire, as the metering adapters count them;
//!   a cancel that ends the machines at once.
//! - `deploy`: the CLI's `login`, `check` and `launch` against the stack's API.
//! - `placement`: a cluster that never reports torn down after the ready timeout; a region
//!   without a default VPC skipped with its reason.
//! - `warning`: a Spot interruption warning, or a GCE preemption pushed through Pub/Sub,
//!   recovers the job at once.
//! - `fake` and `proxy` here are `shared::testing`'s: the fake GCE API, and the HTTP proxy
//!   that records every AWS request and injects EC2 errors an emulator cannot produce.

mod buckets;
mod cadence;
mod cross_cloud;
mod deploy;
mod events;
mod gcs;
mod harness;
mod lambda;
mod lifecycle;
mod limits;
mod placement;
mod schedule;
mod warning;

use shared::testing::aws_proxy as proxy;
use shared::testing::gce_fake as fake;
