//! The upload routes: the CLI sends a task's local paths (workdir, file mounts) as archives
//! before it submits, through the API or a presigned URL. Keys: [`crate::blob::keys`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ApiState;
use super::error::{ApiError, ApiResult, bad_request};
use crate::blob::keys;
use crate::control::{self, Context, uploads};

/// Largest upload (a workdir or file-mount archive).
const MAX_UPLOAD: usize = 512 * 1024 * 1024;

/// Where an uploaded archive was stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Uploaded {
    pub key: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct UploadQuery {
    /// Groups one launch's uploads, so its cleanup deletes exactly them.
    session: String,
    /// The user's intermediate bucket (`jobs.bucket`: `s3://name`), else the deployment's.
    bucket: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct UploadUrlQuery {
    session: String,
    /// The archive's SHA-256, hex: the object's name.
    sha256: String,
    /// The user's intermediate bucket (`jobs.bucket`: `s3://name`), else the deployment's.
    bucket: Option<String>,
}

/// Where one archive of `owner`'s goes: its key, the store it is in and its object there.
/// An intermediate bucket is checked first (see `control::buckets::check_intermediate`).
pub(super) async fn upload_place(
    ctx: &Context,
    owner: &str,
    session: &str,
    sha256: &str,
    bucket: Option<&str>,
) -> ApiResult<(String, Arc<dyn crate::blob::BlobStore>, String)> {
    let intermediate = match bucket.filter(|b| !b.is_empty()) {
        None => None,
        Some(url) => {
            let bucket = keys::Intermediate::parse(url).map_err(bad_request)?;
            control::buckets::check_intermediate(ctx, &bucket, owner).await?;
            Some(bucket)
        }
    };
    let key = keys::object_key(owner, session, sha256, intermediate.as_ref());
    let parsed = keys::parse_object_key(&key).expect("a key object_key made parses");
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

pub(super) async fn upload_url(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(query): Query<UploadUrlQuery>,
) -> ApiResult<Json<UploadTarget>> {
    let user = state.user(&headers)?;
    keys::check_session(&query.session).map_err(bad_request)?;
    keys::check_sha256(&query.sha256).map_err(bad_request)?;
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
pub(super) async fn upload(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(query): Query<UploadQuery>,
    body: axum::body::Body,
) -> ApiResult<Json<Uploaded>> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let user = state.user(&headers)?;
    keys::check_session(&query.session).map_err(bad_request)?;
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
