//! An HTTP proxy between the AWS clients and the emulator. It records every request it
//! forwards (which service, which operation, which item or object: what AWS would bill), can
//! answer some `RunInstances` calls with an EC2 error (capacity, throttling: what an
//! emulator cannot produce), and can send DynamoDB's requests to another emulator (moto, for
//! LocalStack, whose DynamoDB cannot run offline: [`start_routed`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// One request that reached the emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The service of its SigV4 scope (`dynamodb`, `s3`, `ec2`, `events`, ...).
    pub service: String,
    /// The operation: a DynamoDB or other JSON-protocol target (`GetItem`), an EC2 `Action`,
    /// or for S3 the method (`PUT`, `GET`, `LIST`, `DELETE`, `POST`).
    pub operation: String,
    /// S3: the object's path; DynamoDB: the item's sort key when the request names one.
    pub target: String,
    /// The request was signed in its URL (a presigned URL), not by a client with credentials.
    pub presigned: bool,
    /// The DynamoDB attributes it sets (from `ExpressionAttributeNames`).
    pub attributes: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    /// Where requests signed for `dynamodb` go instead, when not `upstream`.
    dynamodb: Option<String>,
    fault: Option<Fault>,
    failed: Arc<AtomicUsize>,
    forwarded_launches: Arc<AtomicUsize>,
    calls: Arc<Mutex<Vec<Call>>>,
}

pub struct Proxy {
    pub url: String,
    failed: Arc<AtomicUsize>,
    forwarded_launches: Arc<AtomicUsize>,
    calls: Arc<Mutex<Vec<Call>>>,
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

    /// Every request forwarded so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// How many requests of `operation` (`RunInstances`, `DescribeInstances`, ...) went by,
    /// forwarded or answered with the fault.
    pub fn count(&self, operation: &str) -> usize {
        let forwarded = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.operation == operation)
            .count();
        forwarded
            + if operation == "RunInstances" {
                self.failed()
            } else {
                0
            }
    }
}

pub async fn start(upstream: &str, fault: Option<Fault>) -> Proxy {
    start_routed(upstream, fault, None).await
}

/// A proxy that sends DynamoDB's requests to `dynamodb` and the rest to `upstream`.
pub async fn start_routed(upstream: &str, fault: Option<Fault>, dynamodb: Option<&str>) -> Proxy {
    let failed = Arc::new(AtomicUsize::new(0));
    let forwarded_launches = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let shared = Shared {
        upstream: upstream.trim_end_matches('/').to_owned(),
        dynamodb: dynamodb.map(|d| d.trim_end_matches('/').to_owned()),
        fault,
        failed: failed.clone(),
        forwarded_launches: forwarded_launches.clone(),
        calls: calls.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Archives of 50 MB pass through it: no body limit.
    let app = axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Proxy {
        url,
        failed,
        forwarded_launches,
        calls,
    }
}

/// What AWS would bill a request as (see [`Call`]).
fn classify(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Call {
    let query = uri.query().unwrap_or("");
    let presigned = query.contains("X-Amz-Signature=");
    let scope = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split("Credential=").nth(1))
        .map(str::to_owned)
        .or_else(|| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix("X-Amz-Credential="))
                .map(|c| c.replace("%2F", "/"))
        })
        .unwrap_or_default();
    let service = scope.split('/').nth(3).unwrap_or_default().to_owned();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .map(str::to_owned);
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let (operation, target) = match (service.as_str(), target) {
        ("s3", _) => {
            let operation = if *method == Method::GET && query.contains("list-type") {
                "LIST".to_owned()
            } else {
                method.as_str().to_owned()
            };
            (operation, uri.path().to_owned())
        }
        ("ec2", _) => {
            let text = String::from_utf8_lossy(body);
            let action = text
                .split('&')
                .find_map(|p| p.strip_prefix("Action="))
                .unwrap_or_default()
                .to_owned();
            (action, String::new())
        }
        (_, Some(operation)) => {
            let sk = json["Key"]["sk"]["S"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (operation, sk)
        }
        _ => (method.as_str().to_owned(), uri.path().to_owned()),
    };
    let attributes = json["ExpressionAttributeNames"]
        .as_object()
        .map(|names| {
            names
                .values()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Call {
        service,
        operation,
        target,
        presigned,
        attributes,
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
        if let Some(fault) = &shared.fault
            && region == fault.region
            && shared.failed.load(Ordering::SeqCst) < fault.times
        {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            let xml = format!(
                "<Response><Errors><Error><Code>{}</Code><Message>injected by the test proxy</Message></Error></Errors><RequestID>proxy</RequestID></Response>",
                fault.code
            );
            return (StatusCode::from_u16(fault.status).unwrap(), xml).into_response();
        }
        shared.forwarded_launches.fetch_add(1, Ordering::SeqCst);
    }
    let call = classify(&method, &uri, &headers, &body);
    let upstream = match &shared.dynamodb {
        Some(dynamodb) if call.service == "dynamodb" => dynamodb.clone(),
        _ => shared.upstream.clone(),
    };
    shared.calls.lock().unwrap().push(call);
    let url = format!(
        "{upstream}{}",
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
        // The answer's headers travel too (a bucket's region, an object's ETag), but not
        // those of the hop itself.
        let headers: Vec<(String, Vec<u8>)> = response
            .headers()
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    "content-length" | "transfer-encoding" | "connection"
                )
            })
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        // ureq stops at 10 MB by default; archives are larger.
        let bytes = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((status, headers, bytes))
    })
    .await
    .unwrap();
    match forwarded {
        Ok((status, headers, bytes)) => {
            let mut answer = Response::builder().status(StatusCode::from_u16(status).unwrap());
            for (name, value) in headers {
                answer = answer.header(name, value);
            }
            answer
                .body(axum::body::Body::from(bytes))
                .unwrap()
                .into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}
