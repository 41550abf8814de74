//! Stratus's Lambda functions: each binary in `src/bin/` initializes tracing, builds the
//! [`Context`](shared::control::Context) once per cold start from its environment
//! ([`Env`], [`context`]), and hands requests or events to the shared router or to one of the
//! plain async handlers in [`handlers`], which tests call directly with JSON fixtures.
//!
//! | binary | trigger | serves |
//! |---|---|---|
//! | `api` | API Gateway HTTP API: `/api/*` (IAM auth) but job creation, `/agent/*` (job tokens) | the shared axum router |
//! | `submit` | API Gateway HTTP API: `POST /api/v1/jobs` (IAM auth) | the shared submit route |
//! | `recover` | EventBridge rule: `stratus.job-event` on the Stratus bus | [`handlers::on_job_event`] |
//! | `poll` | schedule `rate(1 minute)`; EC2 state-change and Spot-warning events | [`handlers::on_poll`] |
//! | `cleanup` | EventBridge rule: `stratus.job-ended` on the Stratus bus | [`handlers::on_job_ended`] |
//! | `notify` | EventBridge rule: `stratus.job-status` (job scope) on the Stratus bus, when the stack has a `WebhookUrl` | [`handlers::on_job_status`] |
//!
//! Every context holds EC2 (the functions' role) and, when the stack enables it, Compute
//! Engine ([`context`] module).
//!
//! **Invariant:** handlers hold no state between invocations but the context: everything is
//! re-read from the table and the clouds, so any of them can run twice or die at any line.

pub mod auth;
pub mod context;
pub mod env;
pub mod handlers;

pub use auth::{CALLER_HEADER, IamAuth, caller_identity, is_principal};
pub use context::{Function, context, context_from};
pub use env::{Env, GcpCredentialSource, GcpEnv, webhook_from_env};
pub use handlers::{on_job_ended, on_job_event, on_job_status, on_poll};

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
