//! What a Stratus deployment's own requests cost: the billable requests it makes (API
//! Gateway, Lambda, S3, DynamoDB, EventBridge, cloud APIs) counted in a [`Usage`], priced from
//! one dated table ([`prices`]). The `node_cost` bench (`agent/benches/node_cost.rs`) runs the
//! real handlers and the agent's protocol over the counting adapters of [`counting`] for a
//! simulated hour and prints, per node-hour, each count and the dollars; ARCHITECTURE.md
//! explains the figures.
//!
//! # Layout
//! - [`prices`]: the price table.
//! - [`counting`] (feature `test-util`): the ports' counting adapters, with DynamoDB's request
//!   units estimated from item sizes as DynamoDB bills them.

#[cfg(any(test, feature = "test-util"))]
pub mod counting;
pub mod prices;

use std::fmt::Write as _;
use std::ops::{AddAssign, Sub};
use std::sync::{Mutex, PoisonError};

/// Billable requests and what goes with them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub api_requests: u64,
    pub lambda_invocations: u64,
    /// Lambda duration × memory, in GB-milliseconds.
    pub lambda_gb_ms: f64,
    pub s3_puts: u64,
    pub s3_gets: u64,
    pub s3_lists: u64,
    pub dynamodb_requests: u64,
    pub dynamodb_rru: f64,
    pub dynamodb_wru: f64,
    pub eventbridge_events: u64,
    pub scheduler_invocations: u64,
    /// EC2 / Compute Engine API calls (free, but counted).
    pub cloud_api_calls: u64,
    /// Bytes of Lambda log lines ingested by CloudWatch Logs.
    pub log_bytes: u64,
}

impl Usage {
    /// Dollars, per line of the price table.
    pub fn dollars(&self) -> Vec<(&'static str, f64)> {
        use prices as p;
        vec![
            (
                "API Gateway",
                self.api_requests as f64 * p::API_GATEWAY_REQUEST,
            ),
            (
                "Lambda requests",
                self.lambda_invocations as f64 * p::LAMBDA_REQUEST,
            ),
            (
                "Lambda duration",
                self.lambda_gb_ms / 1000.0 * p::LAMBDA_GB_SECOND,
            ),
            (
                "S3 PUT/LIST",
                (self.s3_puts + self.s3_lists) as f64 * p::S3_PUT,
            ),
            ("S3 GET", self.s3_gets as f64 * p::S3_GET),
            ("DynamoDB writes", self.dynamodb_wru * p::DYNAMODB_WRU),
            ("DynamoDB reads", self.dynamodb_rru * p::DYNAMODB_RRU),
            (
                "EventBridge",
                self.eventbridge_events as f64 * p::EVENTBRIDGE_EVENT
                    + self.scheduler_invocations as f64 * p::SCHEDULER_INVOCATION,
            ),
            (
                "CloudWatch Logs",
                self.log_bytes as f64 / 1e9 * p::CLOUDWATCH_LOGS_GB,
            ),
        ]
    }

    /// The total in dollars.
    pub fn total(&self) -> f64 {
        self.dollars().iter().map(|(_, d)| d).sum()
    }

    /// This usage divided by `n` (per node-hour, say), as a table of counts and dollars.
    pub fn table(&self, n: f64) -> String {
        let mut out = String::new();
        let rows: [(&str, f64); 13] = [
            ("API Gateway requests", self.api_requests as f64),
            ("Lambda invocations", self.lambda_invocations as f64),
            ("Lambda GB-s", self.lambda_gb_ms / 1000.0),
            ("S3 PUT", self.s3_puts as f64),
            ("S3 GET", self.s3_gets as f64),
            ("S3 LIST", self.s3_lists as f64),
            ("DynamoDB requests", self.dynamodb_requests as f64),
            ("DynamoDB RRU", self.dynamodb_rru),
            ("DynamoDB WRU", self.dynamodb_wru),
            ("EventBridge events", self.eventbridge_events as f64),
            ("Scheduler invocations", self.scheduler_invocations as f64),
            ("EC2/GCE API calls", self.cloud_api_calls as f64),
            ("CloudWatch Logs KB", self.log_bytes as f64 / 1000.0),
        ];
        for (name, count) in rows {
            let _ = writeln!(out, "  {name:<24} {:>12.2}", count / n);
        }
        for (name, dollars) in self.dollars() {
            let _ = writeln!(out, "  ${name:<23} {:>12.7}", dollars / n);
        }
        let _ = writeln!(out, "  {:<24} {:>12.7}", "$ total", self.total() / n);
        out
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.api_requests += o.api_requests;
        self.lambda_invocations += o.lambda_invocations;
        self.lambda_gb_ms += o.lambda_gb_ms;
        self.s3_puts += o.s3_puts;
        self.s3_gets += o.s3_gets;
        self.s3_lists += o.s3_lists;
        self.dynamodb_requests += o.dynamodb_requests;
        self.dynamodb_rru += o.dynamodb_rru;
        self.dynamodb_wru += o.dynamodb_wru;
        self.eventbridge_events += o.eventbridge_events;
        self.scheduler_invocations += o.scheduler_invocations;
        self.cloud_api_calls += o.cloud_api_calls;
        self.log_bytes += o.log_bytes;
    }
}

impl Sub for Usage {
    type Output = Usage;

    fn sub(self, o: Usage) -> Usage {
        Usage {
            api_requests: self.api_requests - o.api_requests,
            lambda_invocations: self.lambda_invocations - o.lambda_invocations,
            lambda_gb_ms: self.lambda_gb_ms - o.lambda_gb_ms,
            s3_puts: self.s3_puts - o.s3_puts,
            s3_gets: self.s3_gets - o.s3_gets,
            s3_lists: self.s3_lists - o.s3_lists,
            dynamodb_requests: self.dynamodb_requests - o.dynamodb_requests,
            dynamodb_rru: self.dynamodb_rru - o.dynamodb_rru,
            dynamodb_wru: self.dynamodb_wru - o.dynamodb_wru,
            eventbridge_events: self.eventbridge_events - o.eventbridge_events,
            scheduler_invocations: self.scheduler_invocations - o.scheduler_invocations,
            cloud_api_calls: self.cloud_api_calls - o.cloud_api_calls,
            log_bytes: self.log_bytes - o.log_bytes,
        }
    }
}

/// A running [`Usage`], shared by the counting adapters and whoever drives them.
#[derive(Debug, Default)]
pub struct Meter {
    usage: Mutex<Usage>,
}

/// What one Lambda invocation is assumed to cost beyond its requests: a fixed part, and the
/// latency of each call it makes to another service (they run one after another).
pub const INVOCATION_BASE_MS: f64 = 5.0;
/// Latency of one DynamoDB, S3 or cloud API call from Lambda.
pub const SERVICE_CALL_MS: f64 = 10.0;
/// Log bytes of one invocation: Lambda's START, END and REPORT lines and a line of ours.
pub const INVOCATION_LOG_BYTES: u64 = 400;

impl Meter {
    pub fn new() -> Meter {
        Meter::default()
    }

    /// What has been counted so far.
    pub fn usage(&self) -> Usage {
        *self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn add(&self, f: impl FnOnce(&mut Usage)) {
        f(&mut self.usage.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Counts one Lambda invocation of a function with `memory_mb`, whose handler made the
    /// service calls between `before` and now; `through_api`: it came through API Gateway.
    pub fn invocation(&self, before: Usage, memory_mb: u32, through_api: bool) {
        let calls = self.usage() - before;
        let service_calls = calls.dynamodb_requests
            + calls.s3_puts
            + calls.s3_gets
            + calls.s3_lists
            + calls.eventbridge_events
            + calls.scheduler_invocations
            + calls.cloud_api_calls;
        let ms = (INVOCATION_BASE_MS + SERVICE_CALL_MS * service_calls as f64).ceil();
        self.add(|u| {
            u.lambda_invocations += 1;
            u.lambda_gb_ms += ms * f64::from(memory_mb) / 1024.0;
            u.log_bytes += INVOCATION_LOG_BYTES;
            if through_api {
                u.api_requests += 1;
            }
        });
    }
}
