//! Compute API errors → [`ProviderError`], sorted the way recovery needs, and the client's
//! retry policy (which must not retry what recovery should see at once).
//!
//! Google reports one failure in up to three vocabularies, and a launch can fail in two
//! places, so [`classify`] takes all the codes it was given at once:
//! - a failed call: the HTTP status, the canonical status (`PERMISSION_DENIED`) and each
//!   `error.errors[].reason` (`quotaExceeded`), which the client turns into `ErrorInfo`
//!   details;
//! - a failed operation (HTTP 200, then the zone operation ends with
//!   `error.errors[].code = ZONE_RESOURCE_POOL_EXHAUSTED`), the usual way capacity errors
//!   arrive on GCE.

use std::error::Error as StdError;
use std::fmt;

use google_cloud_compute_v1::model::Operation;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::StatusDetails;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicy};
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;

use crate::provider::ProviderError;

/// A Compute API error as Google named it, kept as the source of [`ProviderError::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub http: Option<u16>,
    pub codes: Vec<String>,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(http) = self.http {
            parts.push(format!("HTTP {http}"));
        }
        if !self.codes.is_empty() {
            parts.push(self.codes.join(", "));
        }
        if !self.message.is_empty() {
            parts.push(self.message.clone());
        }
        f.write_str(&parts.join(": "))
    }
}

impl StdError for ApiError {}

/// Capacity: try the next candidate (another zone, type or cloud).
const NO_CAPACITY: &[&str] = &[
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "resourceExhausted",
    "UNSUPPORTED_OPERATION",
];
/// Quota: try the next candidate (quotas are per region and per GPU type).
const QUOTA: &[&str] = &["QUOTA_EXCEEDED", "quotaExceeded"];
/// Rate limits: back off and call again.
const THROTTLED: &[&str] = &[
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "RATE_LIMIT_EXCEEDED",
    "RESOURCE_OPERATION_RATE_EXCEEDED",
];
/// Credentials missing or refused, the API not enabled: no candidate on GCP will work.
const AUTH: &[&str] = &[
    "authError",
    "required",
    "forbidden",
    "insufficientPermissions",
    "accessNotConfigured",
    "SERVICE_DISABLED",
    "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
    "IAM_PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
];
/// The request is wrong (bad image, machine type, field): fix the task or the settings.
const INVALID: &[&str] = &[
    "invalid",
    "badRequest",
    "invalidParameter",
    "notFound",
    "RESOURCE_NOT_FOUND",
    "INVALID_FIELD_VALUE",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
];

/// Not-found codes: of a zone's or region's resource, the place cannot host the launch.
const NOT_FOUND: &[&str] = &["notFound", "RESOURCE_NOT_FOUND", "NOT_FOUND"];
/// Path segments of resources that exist per region or zone (an image or a project does
/// not): a launch that finds one missing moves on to the next candidate.
const REGIONAL: &[&str] = &[
    "/networks/",
    "/subnetworks/",
    "/machineTypes/",
    "/acceleratorTypes/",
    "/diskTypes/",
    "/zones/",
    "/regions/",
];

/// What a Compute error means for the launch walk, first match wins:
///
/// | codes (reason, canonical status or operation error code) | → |
/// |---|---|
/// | `ZONE_RESOURCE_POOL_EXHAUSTED[_WITH_DETAILS]`, `resourceExhausted`, `UNSUPPORTED_OPERATION` | `NoCapacity` |
/// | `QUOTA_EXCEEDED`, `quotaExceeded` | `Quota` |
/// | `rateLimitExceeded`, `userRateLimitExceeded`, `RATE_LIMIT_EXCEEDED`, `RESOURCE_OPERATION_RATE_EXCEEDED` | `Throttled` |
/// | `authError`, `required`, `forbidden`, `insufficientPermissions`, `accessNotConfigured`, `SERVICE_DISABLED`, `ACCESS_TOKEN_SCOPE_INSUFFICIENT`, `IAM_PERMISSION_DENIED`, `UNAUTHENTICATED`, `PERMISSION_DENIED` | `Auth` |
/// | a not-found (`notFound`, `RESOURCE_NOT_FOUND`, `NOT_FOUND`, HTTP 404) of a network, subnetwork, machine, accelerator or disk type, zone or region | `Unavailable` |
/// | `invalid`, `badRequest`, `invalidParameter`, `notFound`, `RESOURCE_NOT_FOUND`, `INVALID_FIELD_VALUE`, `INVALID_ARGUMENT`, `NOT_FOUND` | `Invalid` |
/// | no known code: HTTP 429 | `Throttled` |
/// | HTTP 401, 403 | `Auth` |
/// | HTTP 400, 404 | `Invalid` |
/// | anything else (5xx, unknown codes) | `Other` (retry later) |
///
/// The order matters: a quota error is an HTTP 403 with the reason `quotaExceeded`, and a
/// rate limit may be a 403 with `rateLimitExceeded`; neither is an auth problem.
pub(crate) fn classify(http: Option<u16>, codes: &[&str], message: &str) -> ProviderError {
    let api = ApiError {
        http,
        codes: codes.iter().map(|c| (*c).to_owned()).collect(),
        message: message.to_owned(),
    };
    let text = api.to_string();
    let has = |table: &[&str]| codes.iter().any(|c| table.contains(c));
    if has(NO_CAPACITY) {
        return ProviderError::NoCapacity { message: text };
    }
    if has(QUOTA) {
        return ProviderError::Quota { message: text };
    }
    if has(THROTTLED) {
        return ProviderError::Throttled { message: text };
    }
    if has(AUTH) {
        return ProviderError::Auth { message: text };
    }
    let not_found = has(NOT_FOUND) || (codes.is_empty() && http == Some(404));
    if not_found && REGIONAL.iter().any(|r| message.contains(r)) {
        return ProviderError::Unavailable { message: text };
    }
    if has(INVALID) {
        return ProviderError::Invalid { message: text };
    }
    match http {
        Some(429) => ProviderError::Throttled { message: text },
        Some(401 | 403) => ProviderError::Auth { message: text },
        Some(400 | 404) => ProviderError::Invalid { message: text },
        _ => ProviderError::Other {
            context: text,
            source: Box::new(api),
        },
    }
}

/// The HTTP status and codes of a failed call: the canonical status name and every
/// `ErrorInfo` reason (Compute's `error.errors[].reason`).
fn codes_of(err: &GaxError) -> (Option<u16>, Vec<String>, String) {
    let mut codes = Vec::new();
    let mut message = String::new();
    if let Some(status) = err.status() {
        codes.push(status.code.name().to_owned());
        message.clone_from(&status.message);
        for detail in &status.details {
            if let StatusDetails::ErrorInfo(info) = detail
                && !info.reason.is_empty()
            {
                codes.push(info.reason.clone());
            }
        }
    } else if let Some(payload) = err.http_payload() {
        // An error body the client could not read as a Google error: keep its text.
        message = String::from_utf8_lossy(payload).chars().take(300).collect();
    }
    (err.http_status_code(), codes, message)
}

/// Whether a failed call is a 404 (the resource is gone).
pub(crate) fn is_not_found(err: &GaxError) -> bool {
    err.http_status_code() == Some(404)
}

/// Whether a failed call is a 409 `alreadyExists` (an insert whose `requestId` GCE no longer
/// remembers, for an instance that is there).
pub(crate) fn is_already_exists(err: &GaxError) -> bool {
    let (http, codes, _) = codes_of(err);
    http == Some(409)
        || codes
            .iter()
            .any(|c| c == "alreadyExists" || c == "ALREADY_EXISTS")
}

/// A failed call as a [`ProviderError`]; `what` says which call and where, e.g.
/// "GCE instances.insert train-7-1-0 in us-central1-a".
pub(crate) fn api_error(what: &str, err: GaxError) -> ProviderError {
    if err.is_authentication() {
        // No token: the credentials are missing, expired or refused.
        return ProviderError::Auth {
            message: format!("{what}: {err}"),
        };
    }
    let (http, codes, message) = codes_of(&err);
    if http.is_none() && codes.is_empty() {
        // No answer from the service (connection, timeout): retry later.
        return ProviderError::Other {
            context: format!("{what}: {err}"),
            source: Box::new(err),
        };
    }
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    prefixed(what, classify(http, &codes, &message), Some(err))
}

/// The error an operation ended with, if any (an insert's operation says whether the zone
/// had room).
pub(crate) fn operation_error(what: &str, op: &Operation) -> Option<ProviderError> {
    let errors = op
        .error
        .as_ref()
        .map(|e| e.errors.as_slice())
        .unwrap_or_default();
    if errors.is_empty() && op.http_error_status_code.is_none() {
        return None;
    }
    let codes: Vec<&str> = errors.iter().filter_map(|e| e.code.as_deref()).collect();
    let mut message: Vec<&str> = errors.iter().filter_map(|e| e.message.as_deref()).collect();
    if message.is_empty()
        && let Some(m) = op.http_error_message.as_deref()
    {
        message.push(m);
    }
    let http = op
        .http_error_status_code
        .and_then(|c| u16::try_from(c).ok());
    Some(prefixed(
        what,
        classify(http, &codes, &message.join("; ")),
        None,
    ))
}

fn prefixed(what: &str, err: ProviderError, source: Option<GaxError>) -> ProviderError {
    err.within(
        what,
        source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    )
}

/// The client's retry policy: Google's AIP-194 rules (retry idempotent calls on `UNAVAILABLE`,
/// HTTP 503 and I/O errors; Stratus marks inserts idempotent, as their `requestId` makes them
/// so), except that an error [`classify`] sorts as capacity, quota, rate limit, auth or invalid
/// is returned at once: those are the launch walk's to act on, not the client's to retry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryTransient;

impl RetryPolicy for RetryTransient {
    fn on_error(&self, state: &RetryState, error: GaxError) -> RetryResult {
        let (http, codes, message) = codes_of(&error);
        if http.is_some() || !codes.is_empty() {
            let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
            if !classify(http, &codes, &message).is_retryable() {
                return RetryResult::Permanent(error);
            }
        }
        Aip194Strict.on_error(state, error)
    }
}
