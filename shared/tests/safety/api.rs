//! Requests through the API router, as clients send them.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use shared::testing::{HeaderUsers, TestPlane, USER_HEADER};
use tower::ServiceExt as _;

/// Who sends a request.
#[derive(Clone, Copy)]
pub enum As<'a> {
    User(&'a str),
    Agent(&'a str),
    Nobody,
}

pub fn router(plane: &TestPlane) -> Router {
    shared::api::router(plane.ctx.clone(), std::sync::Arc::new(HeaderUsers))
}

/// One request; the answer's status and body (JSON when it is, else a string).
pub async fn call(
    router: &Router,
    who: As<'_>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    match who {
        As::User(name) => request = request.header(USER_HEADER, name),
        As::Agent(token) => request = request.header("authorization", format!("Bearer {token}")),
        As::Nobody => {}
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, Body::from))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

pub async fn post_json(
    router: &Router,
    who: As<'_>,
    path: &str,
    body: &Value,
) -> (StatusCode, Value) {
    call(
        router,
        who,
        "POST",
        path,
        Some(body.to_string().into_bytes()),
    )
    .await
}

/// A job's agent token.
pub fn token(plane: &TestPlane, job: u64) -> String {
    plane.ctx.settings.secret.agent_token(job)
}
