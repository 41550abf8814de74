//! The control plane, as the agent sees it: one blocking HTTP call per method of [`Api`], and
//! [`retry`], which repeats a call until it succeeds or the control plane says the node is gone.
//!
//! # What is retried
//! Everything except HTTP 401, 403 and 404, which mean "this job or cluster is no longer
//! wanted" ([`Gone`]): connection errors, timeouts, 5xx, other 4xx and unreadable bodies are
//! retried with a capped exponential [`Backoff`], without limit, because the control plane may
//! be restarting. Reports and log chunks are idempotent on the server, so a resend after a
//! timeout is harmless.
//!
//! # Secrets
//! The token travels only in the `Authorization` header, and `Work` bodies hold the task's
//! secrets: nothing here logs a header or a body. (ureq writes unredacted wire traces through
//! the `log` crate at TRACE; `main` installs no `log` bridge, so they go nowhere.)

use std::fmt::Write as _;
use std::io::{self, Seek, Write};
use std::thread;
use std::time::Duration;

use shared::agent_protocol::{
    DataCredentials, LogChunk, LogUrls, LogUrlsRequest, Report, WorkAnswer, blob_path,
    credentials_path, log_urls_path, logs_path, report_path, work_path,
};
use shared::job::Phase;
use tracing::warn;

use crate::config::Config;

/// The control plane said this node is no longer wanted (HTTP 401, 403 or 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the control plane answered HTTP {status}: this node is no longer wanted")]
pub struct Gone {
    pub status: u16,
}

/// One failed call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Gone(#[from] Gone),
    #[error("HTTP {status}")]
    Status { status: u16 },
    /// A presigned URL was refused (expired, or signed by credentials that expired).
    #[error("the upload URL expired")]
    Expired,
    #[error("cannot reach the control plane")]
    Transport(#[source] ureq::Error),
    #[error("unreadable response body")]
    Body(#[source] ureq::Error),
    #[error("bad JSON")]
    Json(#[source] serde_json::Error),
    #[error("download interrupted")]
    Download(#[source] io::Error),
    #[error("cannot write the download to disk")]
    Disk(#[source] io::Error),
}

impl ApiError {
    /// The one place that decides what is worth retrying: everything but [`Gone`].
    pub fn gone(&self) -> Option<Gone> {
        match self {
            ApiError::Gone(gone) => Some(*gone),
            _ => None,
        }
    }
}

/// The routes of one node, with its token.
pub struct Api {
    http: ureq::Agent,
    base: String,
    job_id: u64,
    auth: String,
    work_url: String,
    report_url: String,
    logs_url: String,
    log_urls_url: String,
    credentials_url: String,
}

/// Time limit of one API call (a `work` poll, a report, a log chunk).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of each read while downloading a blob (a download has no overall limit).
const BLOB_READ_TIMEOUT: Duration = Duration::from_mins(1);

impl Api {
    pub fn new(config: &Config) -> Api {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(CALL_TIMEOUT))
            .timeout_connect(Some(Duration::from_secs(5)))
            .user_agent(concat!("stratus-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let base = &config.api_url;
        let (job, cluster, rank) = (config.job_id, config.cluster.as_str(), config.rank);
        Api {
            http,
            base: base.clone(),
            job_id: job,
            auth: format!("Bearer {}", config.token),
            work_url: format!("{base}{}", work_path(job, cluster, rank)),
            report_url: format!("{base}{}", report_path(job, cluster, rank)),
            logs_url: format!("{base}{}", logs_path(job, cluster, rank)),
            log_urls_url: format!("{base}{}", log_urls_path(job, cluster, rank)),
            credentials_url: format!("{base}{}", credentials_path(job, cluster, rank)),
        }
    }

    /// `GET work`: what to do now. Also the node's heartbeat. `started`: the latest phase
    /// this agent started (the answer then leaves its task out).
    pub fn work(&self, started: Option<Phase>) -> Result<WorkAnswer, ApiError> {
        let mut request = self
            .http
            .get(&self.work_url)
            .header("Authorization", &self.auth);
        if let Some(phase) = started {
            request = request.query("started", phase.to_string());
        }
        let mut response = request.call().map_err(ApiError::Transport)?;
        check(response.status().as_u16())?;
        let body = response.body_mut().read_to_vec().map_err(ApiError::Body)?;
        serde_json::from_slice(&body).map_err(ApiError::Json)
    }

    /// `POST logs/urls`: presigned URLs for the next log chunks (none: post them instead).
    pub fn log_urls(&self, request: &LogUrlsRequest) -> Result<LogUrls, ApiError> {
        let body = serde_json::to_vec(request).map_err(ApiError::Json)?;
        let mut response = self
            .http
            .post(&self.log_urls_url)
            .header("Authorization", &self.auth)
            .content_type("application/json")
            .send(&body[..])
            .map_err(ApiError::Transport)?;
        check(response.status().as_u16())?;
        let body = response.body_mut().read_to_vec().map_err(ApiError::Body)?;
        serde_json::from_slice(&body).map_err(ApiError::Json)
    }

    /// `PUT` a log chunk's text to a presigned URL (object storage, not the control plane).
    /// A 403 means the URL expired: [`ApiError::Expired`].
    pub fn put_url(&self, url: &str, text: &str) -> Result<(), ApiError> {
        let response = self
            .http
            .put(url)
            .content_type("text/plain; charset=utf-8")
            .send(text.as_bytes())
            .map_err(ApiError::Transport)?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            403 => Err(ApiError::Expired),
            status => Err(ApiError::Status { status }),
        }
    }

    /// `GET credentials`: the job's data identity for its bucket mounts.
    pub fn credentials(&self) -> Result<DataCredentials, ApiError> {
        let mut response = self
            .http
            .get(&self.credentials_url)
            .header("Authorization", &self.auth)
            .call()
            .map_err(ApiError::Transport)?;
        check(response.status().as_u16())?;
        let body = response.body_mut().read_to_vec().map_err(ApiError::Body)?;
        serde_json::from_slice(&body).map_err(ApiError::Json)
    }

    /// The HTTP client, for requests to object storage (no token is ever added to them).
    pub fn http(&self) -> &ureq::Agent {
        &self.http
    }

    /// `POST report`.
    pub fn report(&self, report: &Report) -> Result<(), ApiError> {
        self.post(&self.report_url, report)
    }

    /// `POST logs`.
    pub fn log(&self, chunk: &LogChunk) -> Result<(), ApiError> {
        self.post(&self.logs_url, chunk)
    }

    /// Posts compact JSON (ureq's `send_json` pretty-prints).
    fn post(&self, url: &str, body: &impl serde::Serialize) -> Result<(), ApiError> {
        let body = serde_json::to_vec(body).map_err(ApiError::Json)?;
        let response = self
            .http
            .post(url)
            .header("Authorization", &self.auth)
            .content_type("application/json")
            .send(&body[..])
            .map_err(ApiError::Transport)?;
        check(response.status().as_u16())
    }

    /// `GET blobs/{key}` into `file`, from its start (a retry rewrites it).
    pub fn download(&self, key: &str, file: &mut std::fs::File) -> Result<(), ApiError> {
        file.set_len(0).map_err(ApiError::Disk)?;
        file.rewind().map_err(ApiError::Disk)?;
        let url = format!("{}{}", self.base, blob_path(self.job_id, &encode_key(key)));
        let mut response = self
            .http
            .get(&url)
            .header("Authorization", &self.auth)
            .config()
            .timeout_global(None)
            .timeout_per_read(Some(BLOB_READ_TIMEOUT))
            .build()
            .call()
            .map_err(ApiError::Transport)?;
        check(response.status().as_u16())?;
        let mut body = response.body_mut().as_reader();
        io::copy(&mut body, file).map_err(ApiError::Download)?;
        file.flush().map_err(ApiError::Disk)
    }
}

fn check(status: u16) -> Result<(), ApiError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 | 404 => Err(Gone { status }.into()),
        _ => Err(ApiError::Status { status }),
    }
}

/// Percent-encodes a blob key for the URL path, keeping its `/` separators.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Exponential backoff: 100 ms, 200 ms, ... capped at 5 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Backoff {
        Backoff {
            next: Backoff::FIRST,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Repeats `call` until it succeeds; `Err` only when the control plane says the node is gone.
/// `what` names the call in the warnings ("report ready").
pub fn retry<T>(what: &str, mut call: impl FnMut() -> Result<T, ApiError>) -> Result<T, Gone> {
    let mut backoff = Backoff::new();
    loop {
        match call() {
            Ok(value) => return Ok(value),
            Err(error) => {
                if let Some(gone) = error.gone() {
                    return Err(gone);
                }
                let delay = backoff.next_delay();
                warn!(error = %error_chain(&error), retry_in = ?delay, "{what} failed");
                thread::sleep(delay);
            }
        }
    }
}

/// An error and its sources on one line: "cannot reach the control plane: Connection refused".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Backoff::FIRST);
    }

    #[test]
    fn statuses() {
        assert!(check(204).is_ok());
        for status in [401, 403, 404] {
            assert_eq!(check(status).unwrap_err().gone(), Some(Gone { status }));
        }
        for status in [400, 409, 429, 500, 503] {
            assert!(check(status).unwrap_err().gone().is_none());
        }
    }

    #[test]
    fn keys_are_encoded_but_keep_slashes() {
        assert_eq!(encode_key("uploads/abc-1.tar.gz"), "uploads/abc-1.tar.gz");
        assert_eq!(encode_key("a b/ü?"), "a%20b/%C3%BC%3F");
    }
}
