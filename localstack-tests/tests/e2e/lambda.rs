//! The Lambda runtime API (`/2018-06-01/runtime/...`), enough to run a real function binary:
//! it hands the binary one event and returns what the binary answers.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Notify, oneshot};

#[derive(Default)]
struct Runtime {
    event: Mutex<Option<Value>>,
    answer: Mutex<Option<oneshot::Sender<Result<Value, String>>>>,
    never: Notify,
}

async fn next(State(runtime): State<Arc<Runtime>>) -> Response {
    let event = runtime.event.lock().unwrap().take();
    let Some(event) = event else {
        // One invocation only: later polls wait until the process is killed.
        runtime.never.notified().await;
        return ().into_response();
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000;
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", "req-1".parse().unwrap());
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:stratus"
            .parse()
            .unwrap(),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000".parse().unwrap(),
    );
    (headers, Json(event)).into_response()
}

async fn response(State(runtime): State<Arc<Runtime>>, body: Bytes) -> &'static str {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(tx) = runtime.answer.lock().unwrap().take() {
        let _ = tx.send(Ok(value));
    }
    "ok"
}

async fn error(State(runtime): State<Arc<Runtime>>, body: Bytes) -> &'static str {
    if let Some(tx) = runtime.answer.lock().unwrap().take() {
        let _ = tx.send(Err(String::from_utf8_lossy(&body).into_owned()));
    }
    "ok"
}

/// A function binary of the `functions` crate, built beside this test's binaries.
pub fn function_binary(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_e2e-agent"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: build the workspace first (`cargo build -p functions`; scripts/test does)",
        path.display()
    );
    path
}

/// Runs the function binary `name` with `env`, invokes it once with `event`, and returns its
/// answer (or its error).
pub async fn invoke(name: &str, env: &[(String, String)], event: Value) -> Result<Value, String> {
    let (tx, rx) = oneshot::channel();
    let runtime = Arc::new(Runtime {
        event: Mutex::new(Some(event)),
        answer: Mutex::new(Some(tx)),
        never: Notify::new(),
    });
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(runtime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut child = Command::new(function_binary(name))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "e2e")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_mins(1), rx).await;
    let _ = child.kill();
    let _ = child.wait();
    server.abort();
    match answer {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err("the runtime API went away".into()),
        Err(_) => Err(format!("{name} gave no answer within 60 s")),
    }
}
