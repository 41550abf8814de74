//! Stratus's Lambda functions: each binary in `src/bin/` initializes tracing, builds the
//! [`Context`] once per cold start from its environment, and hands events to one of the plain
//! async handlers here, which tests call directly with JSON fixtures.
//!
//! | binary | trigger | handler |
//! |---|---|---|
//! | `api` | API Gateway HTTP API (`/api/*` with IAM auth, `/agent/*` with job tokens) | the shared axum router |
//! | `submit` | direct invoke with `{ "owner", "request" }` | [`on_submit`] |
//! | `recover` | EventBridge rule: `stratus.job-event` on the Stratus bus | [`on_job_event`] |
//! | `poll` | schedule `rate(1 minute)`; EC2 state-change and spot-interruption events | [`on_poll`] |
//! | `cleanup` | EventBridge rule: `stratus.job-terminal` on the Stratus bus | [`on_job_ended`] |
//!
//! **Invariant:** handlers hold no state between invocations but the context: everything is
//! re-read from the table and the cloud, so any of them can run twice or die at any line.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use lambda_http::RequestExt as _;
use lambda_http::request::RequestContext;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::api::{Authenticator, User};
use shared::blob::S3BlobStore;
use shared::catalog::Catalog;
use shared::clock::{Clock, SystemClock};
use shared::cloud::Cloud;
use shared::control::{self, Context, EventBridgeBus, EventBridgeConfig, Secret, SubmitRequest};
use shared::provider::{Ec2Provider, Ec2Settings, Provider};
use shared::store::DynamoStore;
use tracing::info;

/// The functions' configuration, from the environment the SAM template sets.
#[derive(Debug, Clone)]
pub struct Env {
    pub table: String,
    pub bucket: String,
    pub bus: String,
    pub bus_arn: String,
    pub scheduler_role_arn: String,
    pub schedule_group: String,
    /// Name of the SSM parameter holding the API's URL (what node agents call).
    pub api_url_param: String,
    /// Secrets Manager secret holding the agent-token signing key.
    pub secret_arn: String,
    /// S3 key of the node agent binary in the bucket.
    pub agent_key: String,
    /// Principals that see and cancel everyone's jobs: IAM ARNs; a role's ARN also admits
    /// the sessions of callers who assumed it (`STRATUS_ADMIN_ROLE_ARN`, comma-separated).
    pub admins: Vec<String>,
}

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("environment variable {name} is not set (the SAM template sets it)"))
}

impl Env {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            table: var("STRATUS_TABLE")?,
            bucket: var("STRATUS_BUCKET")?,
            bus: var("STRATUS_BUS")?,
            bus_arn: var("STRATUS_BUS_ARN")?,
            scheduler_role_arn: var("STRATUS_SCHEDULER_ROLE_ARN")?,
            schedule_group: std::env::var("STRATUS_SCHEDULE_GROUP")
                .unwrap_or_else(|_| "default".into()),
            api_url_param: var("STRATUS_API_URL_PARAM")?,
            secret_arn: var("STRATUS_SECRET_ARN")?,
            agent_key: std::env::var("STRATUS_AGENT_KEY")
                .unwrap_or_else(|_| "agent/stratus-agent".into()),
            admins: std::env::var("STRATUS_ADMIN_ROLE_ARN")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// Logs lines to stdout (`CloudWatch`), filtered by `RUST_LOG` (default info).
pub fn init_tracing() {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .without_time()
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Which function a context is for: each reads only what its role may (least privilege).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Api,
    Submit,
    Poll,
    Recover,
    Cleanup,
}

impl Function {
    /// Whether it launches clusters or answers node agents, and so needs the API's URL and
    /// the agent-token signing key.
    fn launches(self) -> bool {
        matches!(self, Function::Api | Function::Poll | Function::Recover)
    }
}

/// Builds the handlers' context: clients, the API URL, the signing secret, the providers.
pub async fn context(env: &Env, function: Function) -> anyhow::Result<Context> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    context_from(env, &config, function).await
}

/// [`context`] with a given SDK configuration (tests point it at their own emulator).
pub async fn context_from(
    env: &Env,
    config: &aws_config::SdkConfig,
    function: Function,
) -> anyhow::Result<Context> {
    let config = config.clone();
    let (api_url, secret) = if function.launches() {
        launch_settings(env, &config).await?
    } else {
        // Submit and cleanup never launch nor answer agents; their roles cannot read these.
        (String::new(), String::new())
    };
    let blobs = S3BlobStore::from_sdk_config(&config, &env.bucket, "")?;
    // Nodes download the agent with this URL: they need no AWS credentials. A week is the most
    // SigV4 presigning allows; a cold start makes a fresh one.
    let agent_url = blobs
        .client()
        .get_object()
        .bucket(&env.bucket)
        .key(&env.agent_key)
        .presigned(aws_sdk_s3::presigning::PresigningConfig::expires_in(
            Duration::from_hours(7 * 24),
        )?)
        .await
        .context("presigning the agent binary's URL")?
        .uri()
        .to_owned();
    let ec2: Arc<dyn Provider> = Arc::new(Ec2Provider::new(&config, Ec2Settings::new(agent_url)));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    info!(table = %env.table, bucket = %env.bucket, bus = %env.bus, api_url = %api_url, "context ready");
    Ok(Context {
        store: Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&config),
            &env.table,
        )),
        providers: [(Cloud::Aws, ec2)].into_iter().collect(),
        blobs: Arc::new(blobs),
        bus: Arc::new(EventBridgeBus::from_sdk_config(
            &config,
            EventBridgeConfig::new(&env.bus, &env.bus_arn, &env.scheduler_role_arn)
                .with_schedule_group(&env.schedule_group),
        )),
        clock,
        catalog: Arc::new(Catalog::embedded()),
        settings: control::Settings {
            agent_api_url: api_url.trim_end_matches('/').to_owned(),
            secret: Secret::new(secret.into_bytes()),
            enabled_clouds: vec![Cloud::Aws],
            heartbeat_timeout: Duration::from_secs(
                std::env::var("STRATUS_HEARTBEAT_TIMEOUT_SECS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(180),
            ),
            ready_timeout: std::env::var("STRATUS_READY_TIMEOUT_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map_or(control::DEFAULT_READY_TIMEOUT, Duration::from_secs),
            local_buckets: None,
            // Lambda has no uptime to wait out: a cold start is not a control plane that was
            // down, and the agents' heartbeats are kept in the table.
            started_at: shared::clock::Timestamp::EPOCH,
            agent_cadence: cadence(),
        },
    })
}

/// The cloud cadence, with the heartbeat the template sets (`AgentHeartbeatSecs`).
fn cadence() -> shared::agent_protocol::AgentCadence {
    let mut cadence = shared::agent_protocol::AgentCadence::CLOUD;
    if let Some(secs) = std::env::var("STRATUS_AGENT_HEARTBEAT_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
    {
        cadence.heartbeat_ms = secs * 1000;
    }
    cadence
}

/// The API's URL (for node agents) and the agent-token signing key.
async fn launch_settings(
    env: &Env,
    config: &aws_config::SdkConfig,
) -> anyhow::Result<(String, String)> {
    let api_url = aws_sdk_ssm::Client::new(config)
        .get_parameter()
        .name(&env.api_url_param)
        .send()
        .await
        .with_context(|| {
            format!(
                "reading the API URL from SSM parameter {}",
                env.api_url_param
            )
        })?
        .parameter
        .and_then(|p| p.value)
        .ok_or_else(|| anyhow!("SSM parameter {} has no value", env.api_url_param))?;
    let secret = aws_sdk_secretsmanager::Client::new(config)
        .get_secret_value()
        .secret_id(&env.secret_arn)
        .send()
        .await
        .with_context(|| format!("reading the signing secret {}", env.secret_arn))?
        .secret_string
        .ok_or_else(|| anyhow!("secret {} has no string value", env.secret_arn))?;
    Ok((api_url, secret))
}

/// The header the API Gateway identity is passed to the router in. [`caller_identity`]
/// overwrites whatever a client sent in it.
pub const CALLER_HEADER: &str = "x-stratus-caller-arn";

/// Middleware for the `api` function: takes the caller's IAM ARN from the API Gateway request
/// context (verified by API Gateway's IAM auth) and passes it on in [`CALLER_HEADER`].
pub async fn caller_identity(mut request: Request, next: Next) -> Response {
    request.headers_mut().remove(CALLER_HEADER);
    let arn = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone()),
        _ => None,
    };
    if let Some(value) = arn.and_then(|a| HeaderValue::from_str(&a).ok()) {
        request.headers_mut().insert(CALLER_HEADER, value);
    }
    next.run(request).await
}

/// Users are IAM principals: the caller ARN API Gateway verified. Admins see everyone's jobs.
pub struct IamAuth {
    pub admins: Vec<String>,
}

impl Authenticator for IamAuth {
    fn user(&self, headers: &axum::http::HeaderMap) -> Option<User> {
        let arn = headers.get(CALLER_HEADER)?.to_str().ok()?.to_owned();
        let admin = self.admins.iter().any(|a| is_principal(a, &arn));
        Some(User { name: arn, admin })
    }
}

/// Whether `caller` is `principal`, or a session of the role `principal`
/// (`arn:aws:iam::<acct>:role/<name>` → `arn:aws:sts::<acct>:assumed-role/<name>/<session>`).
pub fn is_principal(principal: &str, caller: &str) -> bool {
    if principal == caller {
        return true;
    }
    let Some((account, role)) = principal
        .strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.split_once(":role/"))
    else {
        return false;
    };
    let role = role.rsplit('/').next().unwrap_or(role);
    caller
        .strip_prefix(&format!("arn:aws:sts::{account}:assumed-role/{role}/"))
        .is_some()
}

/// `submit`: `{ "owner": "<arn>", "request": <SubmitRequest> }` → the job.
pub async fn on_submit(ctx: &Context, event: Value) -> anyhow::Result<Value> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Submit {
        owner: String,
        request: SubmitRequest,
    }
    let submit: Submit =
        serde_json::from_value(event).context("the event is not {owner, request}")?;
    let job = control::submit(ctx, &submit.owner, submit.request).await?;
    Ok(json!({ "job_id": job.id, "name": job.name(), "status": job.status() }))
}

/// `recover`: a `stratus.job-event` from the bus → advance that job.
pub async fn on_job_event(ctx: &Context, event: Value) -> anyhow::Result<Value> {
    let envelope = control::envelope_from_event(&event)?;
    control::advance(ctx, envelope.job_id, envelope.event).await?;
    Ok(json!({ "job_id": envelope.job_id }))
}

/// `poll`: the schedule, or an EC2 state-change / spot-interruption event. Either way the
/// sweep re-reads every active job and the regions they use (an EC2 event only makes it run
/// now rather than at the next tick).
pub async fn on_poll(ctx: &Context, event: Value) -> anyhow::Result<Value> {
    if event["source"] == "aws.ec2" {
        info!(
            detail_type = %event["detail-type"],
            instance = %event["detail"]["instance-id"],
            state = %event["detail"]["state"],
            "EC2 event"
        );
    }
    let stats = control::poll(ctx).await?;
    Ok(json!({
        "active_jobs": stats.active_jobs,
        "describe_calls": stats.describe_calls,
        "events": stats.events,
        "orphans_terminated": stats.orphans_terminated,
        "cleanups": stats.cleanups,
    }))
}

/// `cleanup`: a `stratus.job-terminal` event → the job's finalizer.
pub async fn on_job_ended(ctx: &Context, event: Value) -> anyhow::Result<Value> {
    let job_id = control::ended_job_from_event(&event)?;
    let cleaned = control::cleanup(ctx, job_id).await?;
    Ok(json!({
        "job_id": job_id,
        "clusters_terminated": cleaned.clusters_terminated,
        "files_deleted": cleaned.files_deleted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_are_principals_or_sessions_of_an_admin_role() {
        let role = "arn:aws:iam::123456789012:role/StratusAdmin";
        assert!(is_principal(role, role));
        assert!(is_principal(
            role,
            "arn:aws:sts::123456789012:assumed-role/StratusAdmin/alice"
        ));
        assert!(!is_principal(
            role,
            "arn:aws:sts::999999999999:assumed-role/StratusAdmin/alice"
        ));
        assert!(!is_principal(
            role,
            "arn:aws:sts::123456789012:assumed-role/Other/alice"
        ));
        assert!(!is_principal(role, "arn:aws:iam::123456789012:user/alice"));
    }

    #[test]
    fn the_caller_header_decides_the_user() {
        let auth = IamAuth {
            admins: vec!["arn:aws:iam::1:role/Admin".into()],
        };
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(auth.user(&headers), None, "no verified caller, no user");
        headers.insert(
            CALLER_HEADER,
            "arn:aws:sts::1:assumed-role/Admin/bob".parse().unwrap(),
        );
        assert!(auth.user(&headers).unwrap().admin);
        headers.insert(CALLER_HEADER, "arn:aws:iam::1:user/carol".parse().unwrap());
        let user = auth.user(&headers).unwrap();
        assert!(!user.admin);
        assert_eq!(user.name, "arn:aws:iam::1:user/carol");
    }
}
