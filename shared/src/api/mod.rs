//! The HTTP API: one `axum::Router` for users (jobs submit, list, get, cancel, logs, controller
//! events, uploads) and for node agents (work, reports, logs, archives). The same router runs
//! under `axum::serve` in the local control plane and, later, under `lambda_http` in AWS.
//!
//! User routes need a user credential ([`Authenticator`]); a user sees and cancels only their
//! own jobs unless they are an admin. Agent routes need the job's agent token and reach only
//! that job.
//!
//! # Layout
//! - `view`: the JSON shapes of jobs and controller events (secrets never appear).
//! - `dashboard`: the Jobs page and job pages, static assets embedded in the binary.

pub mod dashboard;
pub mod hooks;
pub mod view;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

pub use view::{EventView, JobView, TaskView};

use crate::agent_protocol::{
    LogChunk, LogUrls, LogUrlsRequest, MAX_LOG_CHUNK_BYTES, MAX_LOG_CHUNKS, Report, WorkAnswer,
    WorkQuery,
};
use crate::control::logs::{self, LogCursor, LogPiece};
use crate::control::{self, Context, HandlerError, SubmitError, SubmitRequest, agent, uploads};
use crate::job::{JobEvent, JobId, JobRecord, JobStatus};
use crate::store::{Cursor, StoreError};

/// Largest upload (a workdir or file-mount archive).
const MAX_UPLOAD: usize = 512 * 1024 * 1024;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Sees and cancels everyone's jobs.
    pub admin: bool,
}

/// Decides who a user request comes from.
pub trait Authenticator: Send + Sync {
    /// The caller, or `None` when the credentials are missing or wrong.
    fn user(&self, headers: &HeaderMap) -> Option<User>;
}

/// One bearer token for one user: the local control plane's credential, kept in a file only
/// that user can read.
pub struct TokenAuth {
    pub token: String,
    pub user: String,
}

impl Authenticator for TokenAuth {
    fn user(&self, headers: &HeaderMap) -> Option<User> {
        let given = bearer(headers)?;
        // Constant-time comparison of the digests, so timing says nothing about the token.
        let same = Sha256::digest(given.as_bytes()) == Sha256::digest(self.token.as_bytes());
        same.then(|| User {
            name: self.user.clone(),
            admin: true,
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

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

/// An error as the API returns it: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing or wrong credentials")
    }
}

/// The JSON body of an error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { job_id } => {
                Self::new(StatusCode::NOT_FOUND, format!("job {job_id} not found"))
            }
            StoreError::Conflict { .. } => Self::new(StatusCode::CONFLICT, e.to_string()),
            other => internal(&other),
        }
    }
}

impl From<HandlerError> for ApiError {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::Store(e) => e.into(),
            HandlerError::UnknownNode { .. } => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            other => internal(&other),
        }
    }
}

impl From<crate::blob::BlobError> for ApiError {
    fn from(e: crate::blob::BlobError) -> Self {
        internal(&e)
    }
}

fn internal(e: &dyn std::error::Error) -> ApiError {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    warn!(error = %message, "request failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

type ApiResult<T> = Result<T, ApiError>;

impl ApiState {
    fn user(&self, headers: &HeaderMap) -> ApiResult<User> {
        self.auth.user(headers).ok_or_else(ApiError::unauthorized)
    }

    /// The job, if `user` may see it (others' jobs look like missing ones).
    async fn job_for(&self, user: &User, id: JobId) -> ApiResult<JobRecord> {
        let job = self.ctx.store.get_job(id).await?;
        if job.owner != user.name && !user.admin {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("job {id} not found"),
            ));
        }
        Ok(job)
    }

    fn agent(&self, headers: &HeaderMap, job: JobId) -> ApiResult<()> {
        let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        if self.ctx.settings.secret.verify_agent(job, token) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this token is not valid for this job",
            ))
        }
    }

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

async fn submit_job(
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

/// Bad input is a 400, a dependency that did not answer a 503.
impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Handler(e) => e.into(),
            e @ SubmitError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            e => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
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

async fn list_jobs(
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

async fn get_job(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<JobId>,
) -> ApiResult<Json<JobView>> {
    let user = state.user(&headers)?;
    let job = state.job_for(&user, id).await?;
    Ok(Json(state.view(&job)))
}

async fn cancel_job(
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
struct LogsQuery {
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

async fn job_logs(
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

async fn job_events(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<JobId>,
) -> ApiResult<Json<Vec<EventView>>> {
    let user = state.user(&headers)?;
    state.job_for(&user, id).await?;
    let events = state.ctx.store.list_events(id).await?;
    Ok(Json(events.iter().map(EventView::from).collect()))
}

/// Where an uploaded archive was stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Uploaded {
    pub key: String,
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    /// Groups one launch's uploads, so its cleanup deletes exactly them.
    session: String,
    /// The user's intermediate bucket (`jobs.bucket`: `s3://name`), else the deployment's.
    bucket: Option<String>,
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

#[derive(Debug, Deserialize)]
struct UploadUrlQuery {
    session: String,
    /// The archive's SHA-256, hex: the object's name.
    sha256: String,
    /// The user's intermediate bucket (`jobs.bucket`: `s3://name`), else the deployment's.
    bucket: Option<String>,
}

/// Where one archive of `owner`'s goes: its key, the store it is in and its object there.
/// An intermediate bucket is checked first (see `control::buckets::check_intermediate`).
async fn upload_place(
    ctx: &Context,
    owner: &str,
    session: &str,
    sha256: &str,
    bucket: Option<&str>,
) -> ApiResult<(String, Arc<dyn crate::blob::BlobStore>, String)> {
    let intermediate = match bucket.filter(|b| !b.is_empty()) {
        None => None,
        Some(url) => {
            let bucket = uploads::Intermediate::parse(url).map_err(bad_request)?;
            control::buckets::check_intermediate(ctx, &bucket, owner).await?;
            Some(bucket)
        }
    };
    let key = uploads::object_key(owner, session, sha256, intermediate.as_ref());
    let parsed = uploads::parse_object_key(&key).expect("a key object_key made parses");
    let (store, object) = uploads::store_of(ctx, &parsed).await?.ok_or_else(|| {
        bad_request("jobs.bucket: the bucket cannot hold uploads here".to_owned())
    })?;
    Ok((key, store, object))
}

/// Where to send an archive: a URL that takes it directly (around the API's payload limit),
/// with the headers the `PUT` must carry, or none, and then `PUT /api/v1/uploads`. Either way
/// it ends up at `key`, in the caller's own space.
#[derive(Debug, Serialize, Deserialize)]
pub struct UploadTarget {
    pub key: String,
    pub url: Option<String>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

async fn upload_url(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(query): Query<UploadUrlQuery>,
) -> ApiResult<Json<UploadTarget>> {
    let user = state.user(&headers)?;
    uploads::check_session(&query.session).map_err(bad_request)?;
    uploads::check_sha256(&query.sha256).map_err(bad_request)?;
    let sha256 = query.sha256.to_ascii_lowercase();
    let (key, store, object) = upload_place(
        &state.ctx,
        &user.name,
        &query.session,
        &sha256,
        query.bucket.as_deref(),
    )
    .await?;
    let digest: [u8; 32] = hex::decode(&sha256)
        .ok()
        .and_then(|d| d.try_into().ok())
        .expect("checked: 64 hex digits");
    let target = store
        .upload_url(&object, std::time::Duration::from_mins(30), Some(digest))
        .await?;
    Ok(Json(match target {
        Some(target) => UploadTarget {
            key,
            url: Some(target.url),
            headers: target.headers,
        },
        None => UploadTarget {
            key,
            url: None,
            headers: vec![],
        },
    }))
}

/// Takes an archive through the API (stores without upload URLs), streamed to a temporary
/// file while it is hashed: memory stays small whatever its size.
async fn upload(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(query): Query<UploadQuery>,
    body: axum::body::Body,
) -> ApiResult<Json<Uploaded>> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let user = state.user(&headers)?;
    uploads::check_session(&query.session).map_err(bad_request)?;
    let io = |e: std::io::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let tmp = tempfile::NamedTempFile::new().map_err(io)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(io)?);
    let mut hasher = Sha256::new();
    let mut size = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| bad_request(format!("reading the upload: {e}")))?;
        size += chunk.len();
        if size > MAX_UPLOAD {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "an upload holds at most {} MiB (workdir and file mounts, packed)",
                    MAX_UPLOAD >> 20
                ),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    // Content-addressed within the session: the same archive uploaded twice is stored once.
    let (key, store, object) = upload_place(
        &state.ctx,
        &user.name,
        &query.session,
        &hex::encode(hasher.finalize()),
        query.bucket.as_deref(),
    )
    .await?;
    store.put_file(&object, tmp.path()).await?;
    Ok(Json(Uploaded { key }))
}

async fn agent_work(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((job, cluster, rank)): Path<(JobId, String, u32)>,
    Query(query): Query<WorkQuery>,
) -> ApiResult<Json<WorkAnswer>> {
    state.agent(&headers, job)?;
    Ok(Json(
        agent::work(&state.ctx, job, &cluster, rank, query.started).await?,
    ))
}

async fn agent_report(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((job, cluster, rank)): Path<(JobId, String, u32)>,
    Json(report): Json<Report>,
) -> ApiResult<StatusCode> {
    state.agent(&headers, job)?;
    // In a task of its own: the report can tear down the very node that sent it (its task
    // just ended), and the handler must finish even when that node's connection drops.
    let ctx = state.ctx.clone();
    tokio::spawn(async move { agent::report(&ctx, job, &cluster, rank, &report).await })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

async fn agent_logs(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((job, cluster, rank)): Path<(JobId, String, u32)>,
    Json(chunk): Json<LogChunk>,
) -> ApiResult<StatusCode> {
    state.agent(&headers, job)?;
    if chunk.seq >= MAX_LOG_CHUNKS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a stream of output holds at most {MAX_LOG_CHUNKS} chunks"),
        ));
    }
    if chunk.data.len() > MAX_LOG_CHUNK_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a log chunk holds at most {MAX_LOG_CHUNK_BYTES} bytes; this one has {}",
                chunk.data.len()
            ),
        ));
    }
    agent::log(&state.ctx, job, &cluster, rank, &chunk).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn agent_log_urls(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((job, cluster, rank)): Path<(JobId, String, u32)>,
    Json(request): Json<LogUrlsRequest>,
) -> ApiResult<Json<LogUrls>> {
    state.agent(&headers, job)?;
    Ok(Json(
        agent::log_urls(&state.ctx, job, &cluster, rank, &request).await?,
    ))
}

/// The job's data identity, for a node whose task mounts buckets.
async fn agent_credentials(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((job, cluster, rank)): Path<(JobId, String, u32)>,
) -> ApiResult<Json<crate::agent_protocol::DataCredentials>> {
    state.agent(&headers, job)?;
    agent::credentials(&state.ctx, job, &cluster, rank)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("job {job}'s task mounts no bucket: there are no data credentials"),
            )
        })
}

async fn agent_blob(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((job, key)): Path<(JobId, String)>,
) -> ApiResult<Response> {
    state.agent(&headers, job)?;
    // A job's token reaches only the archives uploaded for that job.
    let uploads = uploads::read(state.ctx.blobs.as_ref(), job).await?;
    if !uploads.0.values().any(|k| *k == key) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no archive '{key}' for job {job}"),
        ));
    }
    let gone = || ApiError::new(StatusCode::NOT_FOUND, format!("archive '{key}' is gone"));
    let parsed = uploads::parse_object_key(&key).ok_or_else(gone)?;
    let (store, object) = uploads::store_of(&state.ctx, &parsed)
        .await?
        .ok_or_else(gone)?;
    // Object storage serves it (any size, no Lambda payload limit) by a URL signed now; only
    // a store without such URLs (the local folder) streams it through the API.
    if let Some(url) = store
        .download_url(&object, crate::agent_protocol::AGENT_URL_LIFETIME)
        .await?
    {
        return Ok((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, url)]).into_response());
    }
    let bytes = store.get(&object).await?.ok_or_else(gone)?;
    Ok(([(header::CONTENT_TYPE, "application/gzip")], bytes).into_response())
}

/// The node agent binary, for a machine of the job booting: a redirect to a URL of the
/// binary signed now (so however late the machine boots, the URL is fresh), or the binary
/// itself where the store has no such URLs. A binary not yet in the store is published from
/// its source file first (the first machine to ask puts it in place).
async fn agent_binary(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(job): Path<JobId>,
) -> ApiResult<Response> {
    state.agent(&headers, job)?;
    let Some(binary) = state.ctx.settings.agent_binary.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this control plane serves no agent binary (its machines run the agent in place)",
        ));
    };
    let key = binary.key.as_str();
    let blobs = &state.ctx.blobs;
    // The object's presence, without reading it.
    if blobs.get_at_most(key, 0).await?.is_none() {
        let Some(source) = &binary.source else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("the agent binary is not at '{key}' in the deployment bucket"),
            ));
        };
        blobs.put_file(key, source).await?;
        tracing::info!(key, source = %source.display(), "published the agent binary");
    }
    if let Some(url) = blobs
        .download_url(key, crate::agent_protocol::AGENT_URL_LIFETIME)
        .await?
    {
        return Ok((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, url)]).into_response());
    }
    let bytes = blobs.get(key).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the agent binary is not at '{key}'"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
