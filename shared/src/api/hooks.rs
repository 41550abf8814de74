//! Push hooks: clouds telling the control plane about machines, for what their event buses
//! cannot deliver to AWS. GCE's preemption notice reaches Stratus as Cloud Audit Logs →
//! a log sink to a Pub/Sub topic → a push subscription to
//! `POST /hooks/v1/gcp/preemptions?token=<hook token>` (Pub/Sub's verification-token scheme:
//! the subscription URL holds a token derived from the control plane's secret, which this
//! route checks). `GET /api/v1/hooks` gives admins the URL to configure.
//!
//! Answers: 204 when the message is handled or is not a preemption (Pub/Sub acknowledges it),
//! 400 for a body that is not a Pub/Sub push of a log entry, 401 for a wrong token.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, ApiState};
use crate::cloud::Cloud;
use crate::control;

/// The hook's name, in its token and URL.
pub const GCP_PREEMPTIONS: &str = "gcp-preemptions";
/// Its path.
pub const GCP_PREEMPTIONS_PATH: &str = "/hooks/v1/gcp/preemptions";

/// The audit log's method for a preempted VM.
const PREEMPTED: &str = "compute.instances.preempted";

#[derive(Deserialize)]
pub(super) struct HookQuery {
    token: Option<String>,
}

/// A preempted GCE machine: its zone and instance name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preempted {
    pub zone: String,
    pub instance: String,
}

impl Preempted {
    /// The zone's region (`us-central1-a` → `us-central1`).
    pub fn region(&self) -> &str {
        self.zone.rsplit_once('-').map_or(&self.zone, |(r, _)| r)
    }
}

/// Reads a Pub/Sub push body: `Ok(None)` for a log entry that is not a preemption.
pub fn preempted_instance(body: &[u8]) -> Result<Option<Preempted>, String> {
    #[derive(Deserialize)]
    struct Push {
        message: Message,
    }
    #[derive(Deserialize)]
    struct Message {
        data: String,
    }
    let push: Push = serde_json::from_slice(body).map_err(|e| {
        format!("not a Pub/Sub push message ({{\"message\": {{\"data\": ...}}}}): {e}")
    })?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(push.message.data.trim())
        .map_err(|e| format!("message.data is not base64: {e}"))?;
    let entry: Value = serde_json::from_slice(&data)
        .map_err(|e| format!("message.data is not a JSON log entry: {e}"))?;
    let payload = &entry["protoPayload"];
    if payload["methodName"].as_str() != Some(PREEMPTED) {
        return Ok(None);
    }
    // `projects/<p>/zones/<zone>/instances/<name>`
    let resource = payload["resourceName"].as_str().unwrap_or_default();
    let parts: Vec<&str> = resource.split('/').collect();
    match parts.as_slice() {
        ["projects", _, "zones", zone, "instances", name]
            if !zone.is_empty() && !name.is_empty() =>
        {
            Ok(Some(Preempted {
                zone: (*zone).to_owned(),
                instance: (*name).to_owned(),
            }))
        }
        _ => Err(format!(
            "protoPayload.resourceName '{resource}' is not projects/<p>/zones/<zone>/instances/<name>"
        )),
    }
}

pub(super) async fn gcp_preemptions(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<HookQuery>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let token = query.token.unwrap_or_default();
    if !state
        .ctx
        .settings
        .secret
        .verify_hook(GCP_PREEMPTIONS, &token)
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong or missing hook token: configure the push subscription with the URL `stratus api hooks` prints",
        ));
    }
    let preempted =
        preempted_instance(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    if let Some(p) = preempted {
        control::preemption_notice(&state.ctx, Cloud::Gcp, p.region(), &p.instance).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The hook URLs to configure (admins only: the URL carries the hook's token).
pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let user = state.user(&headers)?;
    if !user.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only admins may read the hook URLs (they carry the hook token)",
        ));
    }
    let settings = &state.ctx.settings;
    Ok(Json(json!({
        "gcp_preemptions": format!(
            "{}{GCP_PREEMPTIONS_PATH}?token={}",
            settings.agent_api_url,
            settings.secret.hook_token(GCP_PREEMPTIONS)
        ),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(entry: &Value) -> Vec<u8> {
        let data = base64::engine::general_purpose::STANDARD.encode(entry.to_string());
        json!({ "message": { "data": data, "messageId": "1" }, "subscription": "s" })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_preemption_names_the_zone_and_the_instance() {
        let entry = json!({ "protoPayload": {
            "methodName": "compute.instances.preempted",
            "resourceName": "projects/p/zones/us-central1-a/instances/train-7-1-0",
        } });
        let found = preempted_instance(&push(&entry)).unwrap().unwrap();
        assert_eq!(found.instance, "train-7-1-0");
        assert_eq!(found.region(), "us-central1");
    }

    #[test]
    fn other_log_entries_are_acknowledged_and_ignored() {
        let entry = json!({ "protoPayload": { "methodName": "v1.compute.instances.insert" } });
        assert_eq!(preempted_instance(&push(&entry)).unwrap(), None);
    }

    #[test]
    fn malformed_pushes_say_what_is_wrong() {
        let cases: [(&[u8], &str); 4] = [
            (b"{}", "not a Pub/Sub push"),
            (br#"{"message":{"data":"%%%"}}"#, "not base64"),
            (
                br#"{"message":{"data":"bm90IGpzb24="}}"#,
                "not a JSON log entry",
            ),
            (
                &push(&json!({ "protoPayload": {
                    "methodName": "compute.instances.preempted", "resourceName": "instances/x" } })),
                "resourceName",
            ),
        ];
        for (body, says) in cases {
            let error = preempted_instance(body).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }
}
