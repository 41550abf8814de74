//! A tiny HTTP proxy between the SDK and the emulator: it records each request's `Action`
//! and answers `RunInstances` with an injected EC2 error (capacity, throttling, auth: what an
//! emulator cannot produce), forwarding everything else.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An error to answer `RunInstances` with: HTTP status and EC2 error code.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub status: u16,
    pub code: &'static str,
}

pub struct Proxy {
    pub url: String,
    actions: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// How many requests of `action` (`RunInstances`, `DescribeInstances`, ...) went by.
    pub fn count(&self, action: &str) -> usize {
        self.actions
            .lock()
            .unwrap()
            .iter()
            .filter(|a| *a == action)
            .count()
    }
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    fault: Option<Fault>,
    actions: Arc<Mutex<Vec<String>>>,
}

/// Starts a proxy to `upstream` (`http://host:port`) on a free port; it serves until the test
/// process ends.
pub async fn start(upstream: &str, fault: Option<Fault>) -> Proxy {
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let actions = Arc::new(Mutex::new(Vec::new()));
    let shared = Shared {
        upstream,
        fault,
        actions: actions.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(handle).with_state(shared);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Proxy { url, actions }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let action = action_of(&headers, &body);
    shared.actions.lock().unwrap().push(action.clone());
    if let (Some(fault), "RunInstances") = (shared.fault, action.as_str()) {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code>\
             <Message>injected by the test proxy</Message></Error></Errors>\
             <RequestID>injected</RequestID></Response>",
            fault.code
        );
        return Response::builder()
            .status(fault.status)
            .header("content-type", "text/xml;charset=UTF-8")
            .body(Body::from(xml))
            .unwrap();
    }
    forward(&shared.upstream, &method, &uri, &headers, &body).await
}

/// The EC2 query `Action`, or the JSON protocol's `X-Amz-Target` (SSM), or `?`.
fn action_of(headers: &HeaderMap, body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    if let Some(action) = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
    {
        return action.to_owned();
    }
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "?".to_owned(), str::to_owned)
}

/// One request to the emulator on a connection of its own (`Connection: close`).
async fn forward(
    upstream: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Body> {
    let mut request = format!(
        "{method} {} HTTP/1.1\r\n",
        uri.path_and_query().map_or("/", |p| p.as_str())
    )
    .into_bytes();
    for (name, value) in headers {
        if name == "connection" {
            continue;
        }
        request.extend_from_slice(name.as_str().as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"connection: close\r\n\r\n");
    request.extend_from_slice(body);
    let mut stream = TcpStream::connect(upstream).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();

    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut response = Response::builder().status(StatusCode::from_u16(status).unwrap());
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        if name == "transfer-encoding" {
            chunked = value.eq_ignore_ascii_case("chunked");
            continue;
        }
        if name == "connection" || name == "content-length" {
            continue;
        }
        response = response.header(name, value);
    }
    if chunked {
        body = dechunk(&body);
    }
    response.body(Body::from(body)).unwrap()
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        data = &data[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
