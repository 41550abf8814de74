//! An HTTP proxy between the EC2 client and the emulator that answers some `RunInstances`
//! calls with an EC2 error (capacity, throttling: what an emulator cannot produce) and
//! forwards everything else. It counts the `RunInstances` calls that reached the emulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// Which `RunInstances` calls fail, and how.
#[derive(Clone)]
pub struct Fault {
    /// Only calls signed for this region fail.
    pub region: String,
    pub status: u16,
    pub code: &'static str,
    /// Fail this many calls, then forward (`usize::MAX`: always fail).
    pub times: usize,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    fault: Fault,
    failed: Arc<AtomicUsize>,
    forwarded_launches: Arc<AtomicUsize>,
}

pub struct Proxy {
    pub url: String,
    failed: Arc<AtomicUsize>,
    forwarded_launches: Arc<AtomicUsize>,
}

impl Proxy {
    /// `RunInstances` calls answered with the fault.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// `RunInstances` calls that reached the emulator.
    pub fn launches(&self) -> usize {
        self.forwarded_launches.load(Ordering::SeqCst)
    }
}

pub async fn start(upstream: &str, fault: Fault) -> Proxy {
    let failed = Arc::new(AtomicUsize::new(0));
    let forwarded_launches = Arc::new(AtomicUsize::new(0));
    let shared = Shared {
        upstream: upstream.trim_end_matches('/').to_owned(),
        fault,
        failed: failed.clone(),
        forwarded_launches: forwarded_launches.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(handle).with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Proxy {
        url,
        failed,
        forwarded_launches,
    }
}

/// The region a SigV4 request was signed for (`Credential=<key>/<date>/<region>/ec2/...`).
fn signed_region(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    credential.split('/').nth(2).map(str::to_owned)
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let launch = String::from_utf8_lossy(&body).contains("Action=RunInstances");
    if launch {
        let region = signed_region(&headers).unwrap_or_default();
        if region == shared.fault.region
            && shared.failed.load(Ordering::SeqCst) < shared.fault.times
        {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            let xml = format!(
                "<Response><Errors><Error><Code>{}</Code><Message>injected by the test proxy</Message></Error></Errors><RequestID>proxy</RequestID></Response>",
                shared.fault.code
            );
            return (StatusCode::from_u16(shared.fault.status).unwrap(), xml).into_response();
        }
        shared.forwarded_launches.fetch_add(1, Ordering::SeqCst);
    }
    let url = format!(
        "{}{}",
        shared.upstream,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let forwarded = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        for (name, value) in &headers {
            if name != "host" && name != "content-length" {
                request = request.header(name.as_str(), value.as_bytes());
            }
        }
        let request = request.body(body.to_vec()).unwrap();
        let mut response = agent.run(request).map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/xml")
            .to_owned();
        let bytes = response
            .body_mut()
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((status, content_type, bytes))
    })
    .await
    .unwrap();
    match forwarded {
        Ok((status, content_type, bytes)) => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", content_type)],
            bytes,
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}
