//! The HTTP API: one `axum::Router` for users (jobs submit, list, get, cancel, logs, controller
//! events, uploads) and for node agents (work, reports, logs, archives). The same router runs
//! under `axum::serve` in the local control plane and under `lambda_http` in the `api` and
//! `submit` functions.
//!
//! User routes need a user credential ([`Authenticator`]); a user sees and cancels only their
//! own jobs unless they are an admin. Agent routes need the job's agent token and reach only
//! that job.
//!
//! # Layout
//! - `auth`: who is calling; the one place ownership is checked.
//! - `error`: [`ApiError`], the status and message every failure becomes.
//! - `jobs`: the user routes on jobs (submit, list, get, cancel, logs, events).
//! - `uploads`: the user routes that take archives of local paths.
//! - `node_routes`: the routes node agents call.
//! - `hooks`: the cloud notices Stratus subscribes to (GCE preemptions).
//! - `view`: the JSON shapes of jobs and controller events (secrets never appear).
//! - `dashboard`: the Jobs page and job pages, static assets embedded in the binary.

mod auth;
pub mod dashboard;
mod error;
pub mod hooks;
mod jobs;
mod node_routes;
mod uploads;
pub mod view;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};

pub use auth::{Authenticator, TokenAuth, User};
use error::ApiResult;
pub use error::{ApiError, ErrorBody};
pub use jobs::{JobList, LogsPage};
pub use uploads::{UploadTarget, Uploaded};
pub use view::{EventView, JobView, TaskView};

use self::jobs::{cancel_job, get_job, job_events, job_logs, list_jobs, submit_job};
use self::node_routes::{
    agent_binary, agent_blob, agent_credentials, agent_log_urls, agent_logs, agent_report,
    agent_work,
};
use self::uploads::{upload, upload_url};
use crate::control::Context;
use crate::job::JobRecord;

struct ApiState {
    ctx: Context,
    auth: Arc<dyn Authenticator>,
}

/// Job creation alone: what the `submit` function serves (API Gateway routes
/// `POST /api/v1/jobs` to it, everything else to the whole API in the `api` function).
pub fn submit_router(ctx: Context, auth: Arc<dyn Authenticator>) -> Router {
    let state = Arc::new(ApiState { ctx, auth });
    Router::new()
        .route("/api/v1/jobs", post(submit_job))
        .with_state(state)
}

/// The whole API.
pub fn router(ctx: Context, auth: Arc<dyn Authenticator>) -> Router {
    let state = Arc::new(ApiState { ctx, auth });
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/jobs", post(submit_job).get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{id}/logs", get(job_logs))
        .route("/api/v1/jobs/{id}/events", get(job_events))
        .route(
            "/api/v1/uploads",
            put(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/uploads/url", post(upload_url))
        .route(
            "/agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/work",
            get(agent_work),
        )
        .route(
            "/agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/report",
            post(agent_report),
        )
        .route(
            "/agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/logs",
            post(agent_logs),
        )
        .route(
            "/agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/logs/urls",
            post(agent_log_urls),
        )
        .route(
            "/agent/v1/jobs/{job}/clusters/{cluster}/nodes/{rank}/credentials",
            get(agent_credentials),
        )
        .route("/agent/v1/jobs/{job}/blobs/{*key}", get(agent_blob))
        .route("/agent/v1/jobs/{job}/agent", get(agent_binary))
        .route("/api/v1/hooks", get(hooks::list))
        .route(hooks::GCP_PREEMPTIONS_PATH, post(hooks::gcp_preemptions))
        .merge(dashboard::routes())
        .with_state(state)
}

impl ApiState {
    fn view(&self, job: &JobRecord) -> JobView {
        JobView::new(job, self.ctx.clock.now())
    }
}

async fn health(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let clouds: Vec<&str> = state
        .ctx
        .settings
        .enabled_clouds
        .iter()
        .map(|c| c.id())
        .collect();
    // What `stratus check` prints for a deployed stack: where each cloud's credentials come
    // from, or why it is off.
    let notes = &state.ctx.settings.cloud_notes;
    Json(serde_json::json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "clouds": clouds,
        "cloud_notes": notes.iter().map(|(c, n)| (c.id(), n)).collect::<std::collections::BTreeMap<_, _>>(),
    }))
}
