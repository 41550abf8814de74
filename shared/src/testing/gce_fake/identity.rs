//! Google's token service and the AWS metadata service, as Workload Identity Federation from
//! an AWS role uses them: the credentials library reads the role's keys from the metadata
//! service (`/latest/meta-data/...`), signs an STS `GetCallerIdentity` request with them, and
//! exchanges it at Google's STS (`POST /v1/token`) for an access token, which the fake Compute
//! API then requires ([`super::FakeCompute::require_token`]).
//!
//! The credentials library takes the role's keys from `AWS_ACCESS_KEY_ID` and friends when set
//! (as on Lambda), else from the metadata service here. The exchange is checked as Google checks
//! its shape: the grant and token types, the
//! audience of the pool's provider, and a subject token that is a SigV4-signed
//! `GetCallerIdentity` naming that audience. Signatures are not verified (Google asks AWS).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

/// The pool provider's audience the configuration names.
pub const AUDIENCE: &str = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/stratus/providers/aws";

#[derive(Debug, Default)]
struct Exchanges {
    granted: u32,
    refused: Vec<String>,
}

/// A running fake of Google's STS and the AWS metadata service.
#[derive(Debug, Clone)]
pub struct FakeIdentity {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The access token every granted exchange returns.
    pub token: String,
    exchanges: Arc<Mutex<Exchanges>>,
}

impl FakeIdentity {
    pub async fn start() -> FakeIdentity {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let token = format!("ya29.fake-{}", std::process::id());
        let exchanges = Arc::new(Mutex::new(Exchanges::default()));
        let state = (token.clone(), exchanges.clone());
        let app = Router::new()
            .route(
                "/latest/meta-data/placement/availability-zone",
                get(|| async { "us-east-1a" }),
            )
            .route(
                "/latest/meta-data/iam/security-credentials",
                get(|| async { "stratus-functions" }),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/stratus-functions",
                get(|| async {
                    Json(json!({
                        "AccessKeyId": "ASIAFAKEFUNCTIONROLE",
                        "SecretAccessKey": "fake-secret",
                        "Token": "fake-session-token",
                    }))
                }),
            )
            .route("/v1/token", post(exchange))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeIdentity {
            url,
            token,
            exchanges,
        }
    }

    /// The configuration `gcloud iam workload-identity-pools create-cred-config --aws` would
    /// write, pointed at this fake.
    pub fn credential_config(&self) -> Value {
        json!({
            "type": "external_account",
            "audience": AUDIENCE,
            "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
            "token_url": format!("{}/v1/token", self.url),
            "credential_source": {
                "environment_id": "aws1",
                "region_url": format!("{}/latest/meta-data/placement/availability-zone", self.url),
                "url": format!("{}/latest/meta-data/iam/security-credentials", self.url),
                "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
            }
        })
    }

    /// How many exchanges were granted.
    pub fn granted(&self) -> u32 {
        self.exchanges.lock().unwrap().granted
    }

    /// Why exchanges were refused.
    pub fn refused(&self) -> Vec<String> {
        self.exchanges.lock().unwrap().refused.clone()
    }
}

async fn exchange(
    State((token, exchanges)): State<(String, Arc<Mutex<Exchanges>>)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map_or("", String::as_str);
    let subject = field("subject_token");
    let mut wrong = Vec::new();
    for (name, want) in [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        (
            "subject_token_type",
            "urn:ietf:params:aws:token-type:aws4_request",
        ),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("audience", AUDIENCE),
    ] {
        if field(name) != want {
            wrong.push(format!("{name} is '{}', not '{want}'", field(name)));
        }
    }
    // The subject token is the form-encoded JSON of a signed request: its words survive. (The
    // keys are the environment's when it has them, as on Lambda, else the metadata service's.)
    for word in [
        "GetCallerIdentity",
        "AWS4-HMAC-SHA256",
        "Credential",
        "x-goog-cloud-target-resource",
    ] {
        if !subject.contains(word) {
            wrong.push(format!("the subject token has no {word}"));
        }
    }
    let mut exchanges = exchanges.lock().unwrap();
    if !wrong.is_empty() {
        let why = wrong.join("; ");
        exchanges.refused.push(why.clone());
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_request", "error_description": why })),
        )
            .into_response();
    }
    exchanges.granted += 1;
    Json(json!({
        "access_token": token,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": 3600,
    }))
    .into_response()
}
