//! The local control plane: the Stratus API, an event loop standing in for EventBridge and a
//! poll timer, all in one background process on 127.0.0.1, started by the CLI on first use
//! (like SkyPilot's local API server).
//!
//! Files under `$STRATUS_HOME`:
//! - `state.db`: the state table (SQLite); `blobs/`: uploads and logs (node facts are in the state table);
//!   `local/`: the local cloud's clusters; `buckets/`: folders standing in for buckets;
//!   `secret`: the agent-token signing key.
//! - `api/port`: the port, chosen once and kept, so node agents find a restarted control plane
//!   at the same address; `api/token`: the user's API token (mode 0600); `api/server.json`:
//!   the running server's pid and URL; `api/server.log`: its log.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use shared::api::{self, ApiError, Authenticator, TokenAuth};
use shared::blob::LocalBlobStore;
use shared::bus::LocalBus;
use shared::catalog::Catalog;
use shared::clock::{Clock, SystemClock};
use shared::cloud::Cloud;
use shared::control::{self, Context, Settings, SigningKey};
use shared::provider::{LocalConfig, LocalProvider, Provider};
use shared::store::SqliteStore;
use tracing::{info, warn};

use crate::client::Client;
use crate::config::Config;

/// What `api/server.json` says about the running server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub pid: u32,
    pub url: String,
}

fn api_dir(home: &Path) -> PathBuf {
    home.join("api")
}

/// Creates `$STRATUS_HOME` readable by the user only (the state table holds job secrets); an
/// existing folder keeps its permissions.
fn create_private(home: &Path) -> anyhow::Result<()> {
    if home.exists() {
        return Ok(());
    }
    fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}

/// Reads a secret file, or creates it with fresh random bytes readable by the user only.
fn secret_file(path: &Path, len: usize) -> anyhow::Result<Vec<u8>> {
    if let Ok(bytes) = fs::read(path)
        && bytes.len() >= len
    {
        return Ok(bytes);
    }
    let mut bytes = vec![0u8; len];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    create_once(path, &bytes)
}

/// Puts `bytes` at `path` unless another process got there first, and returns what is
/// there. The file appears whole (written aside, then hard-linked in place, which fails
/// when the name exists), so commands started together in a fresh home all read the same
/// token and port, never a half-written one nor each their own.
fn create_once(path: &Path, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    // The aside file is unique per process and call: threads of one process race too.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let aside = path.with_extension(format!("new-{}-{call}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&aside)
        .with_context(|| format!("writing {}", aside.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    let linked = fs::hard_link(&aside, path);
    let _ = fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(bytes.to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::read(path).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

/// The local user's API token (created on first use).
pub fn user_token(home: &Path) -> anyhow::Result<String> {
    Ok(hex::encode(secret_file(&api_dir(home).join("token"), 24)?))
}

/// The local user, who owns the jobs submitted here.
pub fn user_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}

/// The port this home's control plane uses: chosen once (a free one) and kept.
fn port(home: &Path) -> anyhow::Result<u16> {
    let path = api_dir(home).join("port");
    if let Some(port) = fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Ok(port);
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let chosen = create_once(&path, port.to_string().as_bytes())?;
    String::from_utf8_lossy(&chosen)
        .trim()
        .parse()
        .with_context(|| format!("{} holds no port", path.display()))
}

/// A client for this home's control plane, starting it in the background if it is not running.
pub fn ensure(home: &Path) -> anyhow::Result<Client> {
    create_private(home)?;
    // Logged in to a deployed Stratus: talk to it instead.
    if let Some(remote) = crate::remote::load(home)? {
        return Ok(Client::signed(
            &remote.url,
            &remote.region,
            crate::remote::credentials()?,
        ));
    }
    let token = user_token(home)?;
    let url = format!("http://127.0.0.1:{}", port(home)?);
    let client = Client::new(&url, &token);
    if client.health().is_ok() {
        return Ok(client);
    }
    start(home)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if client.health().is_ok() {
            return Ok(client);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = api_dir(home).join("server.log");
    let tail = fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(15).collect();
    bail!(
        "the local control plane did not start within 20 s; its log ({}) ends with:\n{}",
        log.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// Starts `stratus api serve` detached, in its own process group, logging to `api/server.log`.
fn start(home: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(api_dir(home))?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(api_dir(home).join("server.log"))?;
    let exe = std::env::current_exe().context("finding the stratus binary")?;
    Command::new(exe)
        .args(["api", "serve"])
        .env("STRATUS_HOME", home)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the local control plane")?;
    Ok(())
}

/// The running server, if any (`api/server.json` with a live pid).
pub fn running(home: &Path) -> Option<ServerInfo> {
    let info: ServerInfo =
        serde_json::from_slice(&fs::read(api_dir(home).join("server.json")).ok()?).ok()?;
    let alive = Path::new(&format!("/proc/{}", info.pid)).exists();
    alive.then_some(info)
}

/// Stops the running server (SIGTERM, then SIGKILL). Jobs and their clusters keep running:
/// the next start picks them up.
pub fn stop(home: &Path) -> anyhow::Result<bool> {
    let Some(info) = running(home) else {
        return Ok(false);
    };
    let pid = nix::unistd::Pid::from_raw(i32::try_from(info.pid)?);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && running(home).is_some() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if running(home).is_some() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = fs::remove_file(api_dir(home).join("server.json"));
    Ok(true)
}

struct LocalRoutes {
    ctx: Context,
    provider: LocalProvider,
    auth: Arc<dyn Authenticator>,
}

/// `POST /api/v1/local/preempt/{id}`: reclaim the job's current cluster like a spot reclaim.
async fn preempt(
    State(state): State<Arc<LocalRoutes>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<u64>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if state.auth.user(&headers).is_none() {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "missing or wrong credentials",
        ));
    }
    let job = state.ctx.store.get_job(id).await?;
    let task = &job.tasks[job.current_task];
    let Some(cluster) = task.cluster.clone().filter(|_| !job.is_terminal()) else {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            format!(
                "job {id} has no cluster to preempt (status: {})",
                job.status()
            ),
        ));
    };
    let found =
        state.provider.preempt(&cluster).await.map_err(|e| {
            ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        })?;
    if found.is_none() {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            format!("job {id}'s cluster {cluster} is not on the local cloud"),
        ));
    }
    // The local cloud now reports the cluster preempted; sweep at once rather than at the
    // next tick.
    if let Err(e) = control::poll(&state.ctx).await {
        warn!(error = %e, "poll after preempt failed; the next tick retries");
    }
    Ok(axum::Json(
        serde_json::json!({ "job_id": id, "cluster": cluster }),
    ))
}

/// `stratus api serve`: runs the control plane in the foreground until SIGTERM or Ctrl-C.
pub fn serve(home: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve_async(home))
}

/// The local cloud, with its slots from the config file and `STRATUS_LOCAL_SLOTS`.
fn local_provider(home: &Path, config: &Config) -> anyhow::Result<LocalProvider> {
    let mut local_config: LocalConfig = config.local.clone();
    if let Ok(spec) = std::env::var(shared::provider::SLOTS_ENV) {
        local_config = local_config.with_slots(&spec)?;
    }
    let exe = std::env::current_exe()?;
    // A node "boots" in milliseconds here; STRATUS_LOCAL_BOOT_DELAY_MS makes it take as long
    // as a VM would, so the STARTING and RECOVERING windows can be seen (and tested).
    let boot_delay_ms: u64 = std::env::var("STRATUS_LOCAL_BOOT_DELAY_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let agent_command: Vec<std::ffi::OsString> = if boot_delay_ms > 0 {
        let secs = format!("{}.{:03}", boot_delay_ms / 1000, boot_delay_ms % 1000);
        vec![
            "sh".into(),
            "-c".into(),
            format!("sleep {secs} && exec \"$0\" agent").into(),
            exe.clone().into_os_string(),
        ]
    } else {
        vec![exe.clone().into_os_string(), "agent".into()]
    };
    Ok(LocalProvider::new(home.join("local"), exe)
        .with_agent_command(agent_command)
        .with_config(local_config))
}

async fn serve_async(home: &Path) -> anyhow::Result<()> {
    let home = std::path::absolute(home)?;
    let port = port(&home)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!(
                "port {port} is taken: is another control plane running for {}?",
                home.display()
            )
        })?;
    let url = format!("http://127.0.0.1:{port}");
    let config = Config::load(&home)?;
    let provider = local_provider(&home, &config)?;
    let store = SqliteStore::open(home.join("state.db")).await?;
    let (bus, events) = LocalBus::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut providers: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert(Cloud::Local, Arc::new(provider.clone()));
    let settings = Settings {
        agent_api_url: url.clone(),
        secret: SigningKey::new(secret_file(&home.join("secret"), 32)?),
        enabled_clouds: providers.keys().copied().collect(),
        heartbeat_timeout: Duration::from_secs(config.heartbeat_timeout_secs()),
        ready_timeout: Duration::from_secs(config.ready_timeout_secs()),
        local_buckets: Some(home.join("buckets")),
        started_at: clock.now(),
        agent_cadence: shared::agent_protocol::AgentCadence::LOCAL,
        agent_binary: None,
        cloud_notes: std::collections::BTreeMap::new(),
        monthly_budget: config.monthly_budget()?,
    };
    let hooks = config.webhooks()?;
    let status_events = (!hooks.is_empty()).then(|| bus.subscribe());
    let ctx = Context {
        store: Arc::new(store),
        providers,
        blobs: Arc::new(LocalBlobStore::new(home.join("blobs"))),
        bus: Arc::new(bus),
        clock,
        catalog: Arc::new(Catalog::with_overrides(&home.join("catalogs"))?),
        buckets: shared::buckets::BucketStores::default(),
        settings,
    };
    let auth: Arc<dyn Authenticator> = Arc::new(TokenAuth {
        token: user_token(&home)?,
        user: user_name(),
    });

    // Users' webhooks hear of status changes on their own tasks, never in the job's way.
    if let Some(status_events) = status_events {
        control::webhooks::run(
            &ctx,
            status_events,
            hooks,
            &(Arc::new(control::webhooks::UreqSender::new())
                as Arc<dyn control::webhooks::WebhookSender>),
        );
    }
    // EventBridge's part and the scheduled rule's part.
    control::run_local_loops(
        &ctx,
        events,
        Duration::from_millis(config.poll_interval_ms()),
    );

    let local = Arc::new(LocalRoutes {
        ctx: ctx.clone(),
        provider,
        auth: auth.clone(),
    });
    let app: Router = api::router(ctx, auth).merge(
        Router::new()
            .route("/api/v1/local/preempt/{id}", post(preempt))
            .with_state(local),
    );
    let info = ServerInfo {
        pid: std::process::id(),
        url: url.clone(),
    };
    fs::write(
        api_dir(&home).join("server.json"),
        serde_json::to_vec(&info)?,
    )?;
    info!(%url, home = %home.display(), "local control plane listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| anyhow!("serving the API: {e}"))?;
    let _ = fs::remove_file(api_dir(&home).join("server.json"));
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod first_use {
    use super::*;

    /// Commands started together in a fresh home must agree on its token and port (they
    /// once each wrote their own, and all but one were refused as "wrong credentials").
    #[test]
    fn concurrent_first_uses_read_one_token_and_one_port() {
        let home = tempfile::tempdir().unwrap();
        let seen: Vec<(String, u16)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| (user_token(home.path()).unwrap(), port(home.path()).unwrap()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
        assert_eq!(seen[0].0.len(), 48);
        let left: Vec<_> = fs::read_dir(api_dir(home.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "only the token and the port: {left:?}");
    }
}
