//! The list prices of every request a Stratus deployment makes, in one place: AWS us-east-1,
//! on-demand, as published on the services' pricing pages and collected in
//! `../shared/reference/platform-limits-and-peers.md` (November 2026). Free tiers are left
//! out: these are the prices of a deployment that has used them up. Change them here and the
//! `node_cost` bench prints the new figures.

/// When these prices were read.
pub const AS_OF: &str = "2026-11 (us-east-1 list prices)";

/// API Gateway HTTP API: per request (first 300 million a month).
pub const API_GATEWAY_REQUEST: f64 = 1.00 / 1e6;
/// Lambda: per invocation.
pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
/// Lambda (`x86_64`): per GB-second of duration, billed per millisecond.
pub const LAMBDA_GB_SECOND: f64 = 0.000_016_666_7;
/// S3 Standard: PUT, COPY, POST and LIST requests.
pub const S3_PUT: f64 = 0.005 / 1000.0;
/// S3 Standard: GET and other reads.
pub const S3_GET: f64 = 0.0004 / 1000.0;
/// S3 Standard: storage per GB-month (logs are kept).
pub const S3_GB_MONTH: f64 = 0.023;
/// DynamoDB on-demand (after the November 2024 cut): per write request unit (1 KB).
pub const DYNAMODB_WRU: f64 = 0.625 / 1e6;
/// DynamoDB on-demand: per read request unit (4 KB strongly consistent, 8 KB eventually).
pub const DYNAMODB_RRU: f64 = 0.125 / 1e6;
/// EventBridge: per custom event put on a bus (64 KB). Scheduled rules and AWS service
/// events on the default bus are free.
pub const EVENTBRIDGE_EVENT: f64 = 1.00 / 1e6;
/// EventBridge Scheduler: per invocation (after 14 million free a month).
pub const SCHEDULER_INVOCATION: f64 = 1.00 / 1e6;
/// CloudWatch Logs: per GB ingested (every Lambda invocation writes its START, END and REPORT
/// lines, and our own).
pub const CLOUDWATCH_LOGS_GB: f64 = 0.50;
/// EC2 and Compute Engine API calls are free.
pub const CLOUD_API_CALL: f64 = 0.0;
