//! `stratus dashboard`: the managed jobs in a browser.
//!
//! Locally, the control plane's own router serves the pages (`/dashboard`, see
//! `shared::api::dashboard`); this command makes sure it runs, prints
//! `http://127.0.0.1:<port>/dashboard#token=<token>` and opens a browser when there is one.
//! The token rides in the URL fragment, which the browser never sends to the server.
//!
//! Logged in to a deployed Stratus (`stratus api login`), the API wants SigV4, which a browser
//! cannot sign. Then this command stays in the foreground as a small proxy on 127.0.0.1: it
//! serves the same embedded pages, checks a bearer token made for this session, and forwards
//! the page's API calls to the deployed API signed with the user's AWS credentials. It
//! forwards only what the pages need: reads (`GET /api/v1/...`) and cancels
//! (`POST /api/v1/jobs/{id}/cancel`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow};
use aws_credential_types::Credentials;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use clap::Args;
use shared::api::{ApiError, Authenticator, TokenAuth};

use crate::Failure;
use crate::home::stratus_home;
use crate::{local, remote};

/// Open the dashboard: managed jobs, their tasks, controller events and logs in a browser.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  stratus dashboard\n  stratus dashboard --no-open")]
pub struct DashboardArgs {
    /// Print the URL without opening a browser.
    #[arg(long)]
    no_open: bool,
    /// The local port of the signing proxy used with a deployed API (0: a free one).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    port: u16,
}

pub fn run(args: &DashboardArgs) -> Result<u8, Failure> {
    let home = stratus_home();
    if let Some(remote) = remote::load(&home)? {
        return serve_proxy(&home, &remote, args);
    }
    let client = local::ensure(&home)?;
    check_serves_pages(&client.url)?;
    let token = local::user_token(&home)?;
    let url = format!("{}/dashboard#token={token}", client.url);
    println!("Dashboard: {url}");
    if !args.no_open {
        open_browser(&home, &url);
    }
    Ok(0)
}

/// A control plane started by an older `stratus` keeps running after an upgrade, without the
/// pages: say how to restart it rather than print a link to a 404.
fn check_serves_pages(base: &str) -> anyhow::Result<()> {
    let http = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    let response = http
        .get(format!("{base}/dashboard"))
        .call()
        .with_context(|| format!("cannot reach the local control plane at {base}"))?;
    if response.status() == StatusCode::NOT_FOUND {
        return Err(anyhow!(
            "the local control plane at {base} was started by an older stratus without the \
             dashboard: restart it with `stratus api stop` (jobs keep running), then run \
             `stratus dashboard` again"
        ));
    }
    Ok(())
}

/// Opens `url` in the user's browser, if one is there to open: `$BROWSER`, `open` on macOS,
/// `xdg-open` in a graphical session. Failures are ignored: the URL is printed anyway.
///
/// The URL carries the token, and a command line is visible to every user of the machine, so
/// the browser is given a file only this user can read that redirects to the URL (as Jupyter
/// does).
fn open_browser(home: &Path, url: &str) {
    let opener = std::env::var("BROWSER")
        .ok()
        .and_then(|b| b.split(':').next().map(str::to_owned))
        .filter(|b| !b.is_empty())
        .or_else(|| cfg!(target_os = "macos").then(|| "open".to_owned()))
        .or_else(|| {
            let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
            graphical.then(|| "xdg-open".to_owned())
        });
    let Some(opener) = opener else {
        return;
    };
    let Ok(page) = redirect_file(home, url) else {
        return;
    };
    let _ = Command::new(opener)
        .arg(page)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// `$STRATUS_HOME/api/dashboard.html` (mode 0600): a page that sends the browser to `url`.
fn redirect_file(home: &Path, url: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = std::path::absolute(home.join("api").join("dashboard.html"))?;
    let escaped = url.replace('&', "&amp;").replace('"', "&quot;");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(
        file,
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={escaped}\">\
         <title>Stratus dashboard</title><a href=\"{escaped}\">Open the Stratus dashboard</a>"
    )?;
    Ok(format!("file://{}", path.display()))
}

/// Fresh random bytes, hex: the proxy's session token.
fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(bytes))
}

/// Where the credentials for each forwarded request come from (re-read each time, so
/// refreshed credentials files are picked up).
type CredentialSource = dyn Fn() -> anyhow::Result<Credentials> + Send + Sync;

/// The signing proxy in front of a deployed API.
struct Proxy {
    /// The deployed API's base URL (no trailing slash).
    upstream: String,
    region: String,
    /// The session's token, checked like the local control plane's.
    auth: TokenAuth,
    credentials: Box<CredentialSource>,
    http: ureq::Agent,
}

/// Largest answer forwarded (a log page or a job list is far smaller).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

impl Proxy {
    fn new(upstream: &str, region: &str, token: &str, credentials: Box<CredentialSource>) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_mins(1)))
            .build();
        Self {
            upstream: upstream.trim_end_matches('/').to_owned(),
            region: region.to_owned(),
            auth: TokenAuth {
                token: token.to_owned(),
                user: "dashboard".to_owned(),
            },
            credentials,
            http: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends one request upstream, signed; returns its status, content type and body.
    fn send(
        &self,
        method: &Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> anyhow::Result<(u16, Option<String>, Vec<u8>)> {
        let url = format!("{}{path_and_query}", self.upstream);
        let host = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let mut signed: Vec<(&str, &str)> = vec![("host", &host)];
        if let Some(content_type) = content_type {
            signed.push(("content-type", content_type));
        }
        let credentials = (self.credentials)()?;
        let auth = remote::sign_headers(
            &credentials,
            &self.region,
            method.as_str(),
            &url,
            &signed,
            body,
            SystemTime::now(),
        )?;
        let response = if *method == Method::POST {
            let mut request = self.http.post(&url);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            for (k, v) in &auth {
                request = request.header(k, v);
            }
            request.send(body)
        } else {
            let mut request = self.http.get(&url);
            for (k, v) in &auth {
                request = request.header(k, v);
            }
            request.call()
        };
        let mut response = response
            .with_context(|| format!("cannot reach the Stratus API at {}", self.upstream))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .context("reading the API's answer")?;
        Ok((status, content_type, body))
    }
}

/// The proxy's routes: the embedded pages, and the API forwarded with SigV4.
fn proxy_router(proxy: Arc<Proxy>) -> Router {
    shared::api::dashboard::routes()
        .route("/api/v1/{*rest}", any(forward))
        .with_state(proxy)
}

/// `POST /api/v1/jobs/{id}/cancel`.
fn is_cancel(path: &str) -> bool {
    path.strip_prefix("/api/v1/jobs/")
        .and_then(|rest| rest.strip_suffix("/cancel"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

async fn forward(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if proxy.auth.user(&headers).is_none() {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong credentials")
            .into_response();
    }
    let allowed = method == Method::GET || (method == Method::POST && is_cancel(uri.path()));
    if !allowed {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the dashboard proxy forwards only reads and cancels",
        )
        .into_response();
    }
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), ToString::to_string);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let upstream = proxy.clone();
    let sent = tokio::task::spawn_blocking(move || {
        upstream.send(&method, &path_and_query, content_type.as_deref(), &body)
    })
    .await;
    match sent {
        Ok(Ok((status, content_type, body))) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = content_type.unwrap_or_else(|| "application/json".to_owned());
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(Err(e)) => ApiError::new(StatusCode::BAD_GATEWAY, format!("{e:#}")).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves the dashboard for a deployed API until Ctrl-C.
fn serve_proxy(home: &Path, remote: &remote::Remote, args: &DashboardArgs) -> Result<u8, Failure> {
    // Fail now, not on the first page load, when there are no credentials.
    remote::credentials()?;
    let token = random_token()?;
    let proxy = Arc::new(Proxy::new(
        &remote.url,
        &remote.region,
        &token,
        Box::new(remote::credentials),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
        let port = listener.local_addr()?.port();
        let url = format!("http://127.0.0.1:{port}/dashboard#token={token}");
        println!("Dashboard: {url}");
        println!(
            "Serving the dashboard of {} on 127.0.0.1:{port}, each request signed with your AWS \
             credentials. Press Ctrl-C to stop.",
            remote.url
        );
        if !args.no_open {
            open_browser(home, &url);
        }
        axum::serve(listener, proxy_router(proxy))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| anyhow!("serving the dashboard: {e}"))
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use axum::extract::Request;

    use super::*;

    #[test]
    fn only_cancel_paths_are_cancels() {
        assert!(is_cancel("/api/v1/jobs/12/cancel"));
        for path in [
            "/api/v1/jobs/cancel",
            "/api/v1/jobs//cancel",
            "/api/v1/jobs/1/2/cancel",
            "/api/v1/jobs",
            "/api/v1/uploads",
        ] {
            assert!(!is_cancel(path), "{path}");
        }
    }

    /// An upstream that answers with what it was sent.
    async fn echo(request: Request) -> axum::Json<serde_json::Value> {
        let auth = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        axum::Json(serde_json::json!({
            "method": request.method().as_str(),
            "uri": request.uri().to_string(),
            "authorization": auth,
        }))
    }

    fn bearer<B>(request: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
        match token {
            Some(t) => request.header("authorization", format!("Bearer {t}")),
            None => request,
        }
    }

    async fn start(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_proxy_signs_reads_and_cancels_and_refuses_the_rest() {
        let upstream = start(Router::new().fallback(echo)).await;
        let credentials = || Ok(Credentials::new("AKIDTEST", "secret", None, None, "test"));
        let proxy = Arc::new(Proxy::new(
            &upstream,
            "eu-west-1",
            "session-token",
            Box::new(credentials),
        ));
        let base = start(proxy_router(proxy)).await;
        let answers = tokio::task::spawn_blocking(move || {
            let http = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build(),
            );
            let call = |method: &str, path: &str, token: Option<&str>| {
                let url = format!("{base}{path}");
                let response = match method {
                    "GET" => bearer(http.get(&url), token).call(),
                    "POST" => bearer(http.post(&url), token).send(&b""[..]),
                    _ => bearer(http.put(&url), token).send(&b""[..]),
                };
                let mut response = response.unwrap();
                let status = response.status().as_u16();
                (status, response.body_mut().read_to_string().unwrap())
            };
            [
                call("GET", "/dashboard", None),
                call(
                    "GET",
                    "/api/v1/jobs?all_users=true&limit=5",
                    Some("session-token"),
                ),
                call("POST", "/api/v1/jobs/7/cancel", Some("session-token")),
                call("GET", "/api/v1/jobs", Some("wrong")),
                call("GET", "/api/v1/jobs", None),
                call("PUT", "/api/v1/uploads?session=x", Some("session-token")),
                call("POST", "/api/v1/jobs", Some("session-token")),
            ]
        })
        .await
        .unwrap();

        assert_eq!(answers[0].0, 200, "the pages need no token");
        assert!(answers[0].1.contains("/dashboard/app.js"));

        let read: serde_json::Value = serde_json::from_str(&answers[1].1).unwrap();
        assert_eq!(answers[1].0, 200, "{}", answers[1].1);
        assert_eq!(read["method"], "GET");
        assert_eq!(read["uri"], "/api/v1/jobs?all_users=true&limit=5");
        let auth = read["authorization"].as_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
                && auth.contains("/eu-west-1/execute-api/aws4_request"),
            "{auth}"
        );
        assert!(
            !auth.contains("session-token"),
            "the session token stays local"
        );

        let cancel: serde_json::Value = serde_json::from_str(&answers[2].1).unwrap();
        assert_eq!(
            (answers[2].0, cancel["method"].as_str()),
            (200, Some("POST"))
        );
        assert_eq!(cancel["uri"], "/api/v1/jobs/7/cancel");

        assert_eq!(answers[3].0, 401, "wrong token");
        assert_eq!(answers[4].0, 401, "no token");
        assert_eq!(answers[5].0, 403, "uploads are not forwarded");
        assert_eq!(answers[6].0, 403, "submits are not forwarded");
    }
}
