//! Errors as the API returns them: a status and `{"error": "..."}`. Bad input is a 4xx that
//! names the problem; a failure of ours is a 500 whose cause chain is logged.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::control::{HandlerError, SubmitError};
use crate::store::StoreError;

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

    pub(super) fn unauthorized() -> Self {
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

pub(super) type ApiResult<T> = Result<T, ApiError>;
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

pub(super) fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}
