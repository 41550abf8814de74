//! The user routes on jobs: submit, list, get, cancel, logs and controller events.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::{ApiState, EventView, JobView};
use crate::control::logs::{self, LogCursor, LogPiece};
use crate::control::{self, SubmitRequest};
use crate::job::{JobEvent, JobId, JobStatus};
use crate::store::Cursor;

pub(super) async fn submit_job(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let user = state.user(&headers)?;
    let request: SubmitRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })?;
    let job = control::submit(&state.ctx, &user.name, request).await?;
    Ok((StatusCode::CREATED, Json(state.view(&job))))
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// Everyone's jobs (admins only).
    #[serde(default)]
    all_users: bool,
    limit: Option<usize>,
    /// Jobs older than this ID (the `next` of the previous page).
    before: Option<u64>,
    /// Only jobs with this name.
    name: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub next: Option<u64>,
}

pub(super) async fn list_jobs(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<JobList>> {
    let user = state.user(&headers)?;
    let owner = if query.all_users && user.admin {
        None
    } else {
        Some(user.name.as_str())
    };
    if let Some(name) = &query.name {
        let jobs = if let Some(owner) = owner {
            state.ctx.store.find_by_name(owner, name).await?
        } else {
            let mut all = Vec::new();
            let mut cursor = None;
            loop {
                let page = state
                    .ctx
                    .store
                    .list_jobs(None, cursor, crate::store::MAX_PAGE)
                    .await?;
                all.extend(page.jobs.into_iter().filter(|j| j.name() == name));
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            all
        };
        let jobs = jobs.iter().map(|j| state.view(j)).collect();
        return Ok(Json(JobList { jobs, next: None }));
    }
    let limit = query.limit.unwrap_or(crate::store::MAX_PAGE);
    let page = state
        .ctx
        .store
        .list_jobs(owner, query.before.map(Cursor::before), limit)
        .await?;
    Ok(Json(JobList {
        jobs: page.jobs.iter().map(|j| state.view(j)).collect(),
        next: page.next.map(Cursor::job_id),
    }))
}

pub(super) async fn get_job(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<JobId>,
) -> ApiResult<Json<JobView>> {
    let user = state.user(&headers)?;
    let job = state.job_for(&user, id).await?;
    Ok(Json(state.view(&job)))
}

pub(super) async fn cancel_job(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<JobId>,
) -> ApiResult<Json<JobView>> {
    let user = state.user(&headers)?;
    state.job_for(&user, id).await?;
    // Finishes even if the caller hangs up.
    let ctx = state.ctx.clone();
    tokio::spawn(async move { control::advance(&ctx, id, JobEvent::CancelRequested).await })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let job = state.ctx.store.get_job(id).await?;
    Ok(Json(state.view(&job)))
}

#[derive(Debug, Deserialize)]
pub(super) struct LogsQuery {
    /// The `next` of the previous page.
    after: Option<String>,
    task: Option<usize>,
    /// The caller follows the log: nodes send their output within a second or so while
    /// anyone does (otherwise, on clouds, they batch it for minutes to save requests).
    #[serde(default)]
    follow: bool,
}

/// New log output since `after`, with the job's status so a follower knows when to stop.
#[derive(Debug, Serialize, Deserialize)]
pub struct LogsPage {
    pub pieces: Vec<LogPiece>,
    /// Pass as `after` to continue (an opaque cursor).
    pub next: String,
    /// More output is stored already: ask again at once.
    #[serde(default)]
    pub more: bool,
    pub status: JobStatus,
    /// The job has ended and every line of it has been returned: nothing more is to come.
    pub done: bool,
}

/// How long one follower's request keeps nodes sending output promptly.
const FOLLOW_FOR: std::time::Duration = std::time::Duration::from_mins(1);

/// A job that ended this long ago has nothing more to write, whatever its facts say (a cluster
/// whose teardown was never recorded).
const SETTLE_AFTER: std::time::Duration = std::time::Duration::from_mins(1);

pub(super) async fn job_logs(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<JobId>,
    Query(query): Query<LogsQuery>,
) -> ApiResult<Json<LogsPage>> {
    let user = state.user(&headers)?;
    let cursor = LogCursor::parse(query.after.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    // The status, then the facts, then the logs: if the job has ended and the facts say a
    // stream is complete, every chunk of it is stored already.
    let job = state.job_for(&user, id).await?;
    let now = state.ctx.clock.now();
    let store = &state.ctx.store;
    if query.follow && !job.is_terminal() {
        // Written at most every half minute per job, however many follow.
        let until = store.followed_until(id).await?;
        if until.is_none_or(|until| until < now.plus(FOLLOW_FOR / 2)) {
            store.follow(id, now.plus(FOLLOW_FOR)).await?;
        }
    }
    let facts = store.job_facts(id).await?;
    let read = logs::read(state.ctx.blobs.as_ref(), id, &facts, query.task, &cursor).await?;
    let ended = job.tasks.iter().filter_map(|t| t.ended_at).max();
    let settled = ended.is_some_and(|at| now.since(at) > SETTLE_AFTER);
    Ok(Json(LogsPage {
        pieces: read.pieces,
        next: read.cursor.to_string(),
        more: read.more,
        status: job.status(),
        done: job.is_terminal() && !read.more && (read.complete || settled),
    }))
}

pub(super) async fn job_events(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<JobId>,
) -> ApiResult<Json<Vec<EventView>>> {
    let user = state.user(&headers)?;
    state.job_for(&user, id).await?;
    let events = state.ctx.store.list_events(id).await?;
    Ok(Json(events.iter().map(EventView::from).collect()))
}
