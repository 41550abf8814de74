//! The CLI's HTTP client for the Stratus API (the local control plane, or a deployed stack's
//! API Gateway with SigV4). Blocking: the CLI does one thing at a time.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::api::{ErrorBody, EventView, JobList, JobView, LogsPage, UploadTarget, Uploaded};
use shared::control::SubmitRequest;

/// How requests prove who sends them.
#[derive(Clone)]
enum Auth {
    /// The local control plane's token.
    Bearer(String),
    /// A deployed API Gateway with IAM auth: SigV4 with the caller's AWS credentials.
    SigV4 {
        region: String,
        credentials: aws_credential_types::Credentials,
    },
}

/// Where the API is and how to authenticate.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    auth: Auth,
    agent: ureq::Agent,
}

/// An API answer that was not a success: its status and message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
}

impl Client {
    pub fn new(url: &str, token: &str) -> Self {
        Self::with_auth(url, Auth::Bearer(token.to_owned()))
    }

    /// A client for a deployed API, signing with SigV4.
    pub fn signed(url: &str, region: &str, credentials: aws_credential_types::Credentials) -> Self {
        Self::with_auth(
            url,
            Auth::SigV4 {
                region: region.to_owned(),
                credentials,
            },
        )
    }

    fn with_auth(url: &str, auth: Auth) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_mins(2)))
            .build();
        Self {
            url: url.trim_end_matches('/').to_owned(),
            auth,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// How long a follower waits between reads of a log that has nothing new: every read of
    /// a deployed API is a billed request (and nodes send followed output once a second),
    /// the local one is free.
    pub fn follow_interval(&self) -> Duration {
        match self.auth {
            Auth::Bearer(_) => Duration::from_millis(150),
            Auth::SigV4 { .. } => Duration::from_secs(1),
        }
    }

    /// The headers that authenticate a request.
    fn auth_headers(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> anyhow::Result<Vec<(String, String)>> {
        match &self.auth {
            Auth::Bearer(token) => Ok(vec![("Authorization".into(), format!("Bearer {token}"))]),
            Auth::SigV4 {
                region,
                credentials,
            } => {
                let host = url
                    .split("://")
                    .nth(1)
                    .and_then(|rest| rest.split('/').next())
                    .unwrap_or_default();
                let mut headers = vec![("host", host)];
                if let Some(content_type) = content_type {
                    headers.push(("content-type", content_type));
                }
                crate::remote::sign_headers(
                    credentials,
                    region,
                    method,
                    url,
                    &headers,
                    body,
                    std::time::SystemTime::now(),
                )
            }
        }
    }

    fn finish<T: DeserializeOwned>(
        &self,
        what: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut response = response
            .with_context(|| format!("cannot reach the Stratus API at {} ({what})", self.url))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .with_context(|| format!("reading the API's answer ({what})"))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body)
                .with_context(|| format!("unexpected answer from the API ({what})"));
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map_or_else(|_| String::from_utf8_lossy(&body).into_owned(), |b| b.error);
        Err(ApiFailure { status, message }.into())
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.url);
        let mut request = self.agent.get(&url);
        for (k, v) in self.auth_headers("GET", &url, None, b"")? {
            request = request.header(k, v);
        }
        self.finish(path, request.call())
    }

    fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.url);
        let mut request = match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        request = request.header("Content-Type", content_type);
        for (k, v) in self.auth_headers(method, &url, Some(content_type), body)? {
            request = request.header(k, v);
        }
        self.finish(path, request.send(body))
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.send("POST", path, "application/json", &serde_json::to_vec(body)?)
    }

    pub fn health(&self) -> anyhow::Result<serde_json::Value> {
        self.get("/api/v1/health")
    }

    /// The URLs clouds push notices to (admins only).
    pub fn hooks(&self) -> anyhow::Result<serde_json::Value> {
        self.get("/api/v1/hooks")
    }

    pub fn submit(&self, request: &SubmitRequest) -> anyhow::Result<JobView> {
        self.post("/api/v1/jobs", request)
    }

    pub fn list(
        &self,
        all_users: bool,
        limit: usize,
        before: Option<u64>,
    ) -> anyhow::Result<JobList> {
        let before = before.map(|b| format!("&before={b}")).unwrap_or_default();
        self.get(&format!(
            "/api/v1/jobs?all_users={all_users}&limit={limit}{before}"
        ))
    }

    pub fn find_by_name(&self, name: &str, all_users: bool) -> anyhow::Result<Vec<JobView>> {
        let list: JobList = self.get(&format!(
            "/api/v1/jobs?all_users={all_users}&name={}",
            encode(name)
        ))?;
        Ok(list.jobs)
    }

    pub fn job(&self, id: u64) -> anyhow::Result<JobView> {
        self.get(&format!("/api/v1/jobs/{id}"))
    }

    pub fn cancel(&self, id: u64) -> anyhow::Result<JobView> {
        self.post(&format!("/api/v1/jobs/{id}/cancel"), &serde_json::json!({}))
    }

    /// The log after `after` (a previous page's `next`); `follow` says a reader is waiting
    /// for more, so nodes send their output promptly.
    pub fn logs(&self, id: u64, after: &str, follow: bool) -> anyhow::Result<LogsPage> {
        self.get(&format!(
            "/api/v1/jobs/{id}/logs?after={}&follow={follow}",
            encode(after)
        ))
    }

    pub fn events(&self, id: u64) -> anyhow::Result<Vec<EventView>> {
        self.get(&format!("/api/v1/jobs/{id}/events"))
    }

    /// Uploads an archive of one launch (`session`), into `bucket` (`jobs.bucket`) or the
    /// deployment's store; returns its key.
    pub fn upload(
        &self,
        session: &str,
        bucket: Option<&str>,
        bytes: &[u8],
    ) -> anyhow::Result<String> {
        // Straight to the store when it takes uploads by URL (S3 in AWS: around the API's
        // payload limit), else through the API.
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
        let in_bucket = bucket.map_or_else(String::new, |b| format!("&bucket={}", encode(b)));
        let target: UploadTarget = self.post(
            &format!(
                "/api/v1/uploads/url?session={}&sha256={sha256}{in_bucket}",
                encode(session)
            ),
            &serde_json::json!({}),
        )?;
        if let Some(url) = target.url {
            let mut request = self.agent.put(&url);
            // Signed with the URL (the archive's checksum among them): sent as given.
            for (name, value) in &target.headers {
                request = request.header(name, value);
            }
            let response = request.send(bytes).context("uploading to the store")?;
            let status = response.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(ApiFailure {
                    status,
                    message: format!("the store refused the upload (HTTP {status})"),
                }
                .into());
            }
            return Ok(target.key);
        }
        let path = format!("/api/v1/uploads?session={}{in_bucket}", encode(session));
        let uploaded: Uploaded = self.send("PUT", &path, "application/gzip", bytes)?;
        Ok(uploaded.key)
    }

    pub fn preempt(&self, id: u64) -> anyhow::Result<serde_json::Value> {
        self.post(
            &format!("/api/v1/local/preempt/{id}"),
            &serde_json::json!({}),
        )
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The API said "not found" (a missing job, or one of someone else's).
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiFailure>()
        .is_some_and(|f| f.status == 404)
}

/// An API failure caused by the request (4xx): bad input, exit code 2.
pub fn is_bad_request(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiFailure>()
        .is_some_and(|f| f.status == 400)
}
