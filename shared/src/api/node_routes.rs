//! The routes node agents call (`/agent/v1/...`): their work, reports, logs, bucket
//! credentials, the job's archives and the agent binary. Each checks the job's agent token
//! first ([`ApiState::agent`]); `control::nodes::node_of` then checks the node is the job's.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::{ApiError, ApiResult};
use crate::agent_protocol::{
    LogChunk, LogUrls, LogUrlsRequest, MAX_LOG_CHUNK_BYTES, MAX_LOG_CHUNKS, Report, WorkAnswer,
    WorkQuery,
};
use crate::blob::keys;
use crate::control::{nodes, uploads};
use crate::job::JobId;

pub(super) async fn agent_work(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((job, cluster, rank)): Path<(JobId, String, u32)>,
    Query(query): Query<WorkQuery>,
) -> ApiResult<Json<WorkAnswer>> {
    state.agent(&headers, job)?;
    Ok(Json(
        nodes::work(&state.ctx, job, &cluster, rank, query.started).await?,
    ))
}

pub(super) async fn agent_report(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((job, cluster, rank)): Path<(JobId, String, u32)>,
    Json(report): Json<Report>,
) -> ApiResult<StatusCode> {
    state.agent(&headers, job)?;
    // In a task of its own: the report can tear down the very node that sent it (its task
    // just ended), and the handler must finish even when that node's connection drops.
    let ctx = state.ctx.clone();
    tokio::spawn(async move { nodes::report(&ctx, job, &cluster, rank, &report).await })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn agent_logs(
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
    nodes::log(&state.ctx, job, &cluster, rank, &chunk).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn agent_log_urls(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((job, cluster, rank)): Path<(JobId, String, u32)>,
    Json(request): Json<LogUrlsRequest>,
) -> ApiResult<Json<LogUrls>> {
    state.agent(&headers, job)?;
    Ok(Json(
        nodes::log_urls(&state.ctx, job, &cluster, rank, &request).await?,
    ))
}

/// The job's data identity, for a node whose task mounts buckets.
pub(super) async fn agent_credentials(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((job, cluster, rank)): Path<(JobId, String, u32)>,
) -> ApiResult<Json<crate::agent_protocol::DataCredentials>> {
    state.agent(&headers, job)?;
    nodes::credentials(&state.ctx, job, &cluster, rank)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("job {job}'s task mounts no bucket: there are no data credentials"),
            )
        })
}

pub(super) async fn agent_blob(
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
    let parsed = keys::parse_object_key(&key).ok_or_else(gone)?;
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
pub(super) async fn agent_binary(
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
