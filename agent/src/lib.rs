//! The Stratus node agent (`stratus-agent`): one per node of a job's cluster. It reports
//! `Ready`, then polls the control plane for `Work` (each poll is also the heartbeat), prepares
//! the node (workdir, file mounts), runs the task's `setup` and then `run` in the agent's own
//! process group, streams their output as log chunks and reports their exit codes; on `Stop`
//! (or a 401/403/404, or SIGTERM) it kills its commands and exits 0.
//! The wire protocol is `shared::agent_protocol`; the agent needs no cloud credentials.
//!
//! It is synchronous on purpose: a few threads (the poll loop, one phase at a time with a
//! reader and a waiter, a signal thread) and a blocking HTTP client, no async runtime.
//!
//! # Layout
//! - [`config`]: the `STRATUS_*` variables a provider sets, validated.
//! - [`api`]: one blocking call per route, [`api::retry`] and [`api::Backoff`].
//! - [`plan`]: pure: what to do with the `Work` just received, given what was done.
//! - [`prepare`]: the workdir and mounts, and the archive layout the control plane produces.
//! - [`bucket`]: S3 and GCS bucket mounts with the job's data credentials (downloaded, then
//!   written back).
//! - [`container`]: `image_id: docker:<image>`: the task's container, and commands run in it.
//! - [`phase`]: one phase on its thread: `Started`, the command, its logs, `Exited`.
//! - [`logs`]: pure: output bytes into `LogChunk`s (UTF-8, at most 200 ms and 32 KiB).
//! - [`supervise`]: the agent's process group, its commands, signals, and the shutdown.

pub mod api;
pub mod bucket;
pub mod config;
pub mod container;
pub mod logs;
pub mod phase;
pub mod plan;
pub mod prepare;
pub mod supervise;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::Context as _;
use shared::agent_protocol::Report;
use tracing::{debug, info, info_span, warn};

use crate::api::{Api, Backoff, error_chain, retry};
use crate::config::Config;
use crate::phase::Node;
use crate::plan::{Decision, Progress, decide, next_poll};
use crate::prepare::NodePaths;
use crate::supervise::Supervisor;

/// When this process was started as the trampoline of a command (see [`supervise::command`]),
/// becomes that command and never returns; otherwise returns. Binaries that embed the agent
/// (`stratus-agent`, `stratus agent`) call this first thing in `main`, since `/proc/self/exe`
/// is their own binary.
pub fn exec_if_trampoline() -> Option<std::process::ExitCode> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|arg| arg == supervise::TRAMPOLINE_ARG)
    {
        let code = supervise::exec_unblocked(&args[2..]);
        return Some(std::process::ExitCode::from(
            u8::try_from(code).unwrap_or(1),
        ));
    }
    None
}

/// The agent's whole life from its environment: logging, configuration, [`run`]. Exit codes:
/// 0 when told to stop (or when the job is gone, or on SIGTERM), 2 for a missing or invalid
/// variable, 1 when it cannot start.
pub fn main_from_env(name: &str) -> std::process::ExitCode {
    init_tracing();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let Err(error) = run(&config);
    eprintln!("{name}: {error:#}");
    std::process::ExitCode::FAILURE
}

/// Logs to stderr. Deliberately `set_global_default` and not `init()`: `init()` would also
/// route the `log` crate into tracing, and ureq's TRACE records carry the token unredacted.
fn init_tracing() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Runs the agent. It never returns `Ok`: it ends by exiting the process (0) on `Stop`, on
/// 401/403/404, or on a stop signal; it returns an error only when it cannot start.
pub fn run(config: &Config) -> anyhow::Result<Infallible> {
    // First, while this is the only thread: every thread spawned later inherits the mask.
    let signals =
        supervise::block_stop_signals().context("cannot block SIGTERM for the signal thread")?;
    // Not dumpable: `/proc/<agent>/environ` and `mem`, where the job's token is, become
    // unreadable to the commands (which run as the same user), and no one can ptrace the
    // agent. Commands are dumpable again: `exec` resets the flag.
    nix::sys::prctl::set_dumpable(false).context("cannot make the agent undumpable")?;
    let span = info_span!(
        "agent",
        job_id = config.job_id,
        cluster = %config.cluster,
        node_rank = config.rank
    );
    let _span = span.enter();
    std::fs::create_dir_all(&config.node_dir).with_context(|| {
        format!(
            "cannot create the node folder {}",
            config.node_dir.display()
        )
    })?;
    let supervisor =
        Arc::new(Supervisor::new().context("cannot make the agent a process group leader")?);
    supervise::spawn_signal_thread(signals, Arc::clone(&supervisor), span.clone())
        .context("cannot start the signal thread")?;
    let node = node(config, &supervisor)?;
    info!(
        api_url = %config.api_url,
        node_dir = %config.node_dir.display(),
        home = %node.paths.home.display(),
        task_user = config.task_user.as_deref().unwrap_or("(the agent's)"),
        cadence = ?config.cadence,
        "agent starting"
    );

    if let Err(gone) = retry("report ready", || node.api.report(&Report::Ready)) {
        supervisor.shutdown(&gone.to_string());
    }
    info!("ready");

    let mut progress = Progress::default();
    let mut current: Option<JoinHandle<()>> = None;
    // A phase thread says here when it ends, so the next poll need not wait a heartbeat.
    let (phase_done, phase_ended) = std::sync::mpsc::channel();
    let mut backoff = Backoff::new();
    // Answers in a row that changed nothing while waiting: the polls slow down.
    let mut quiet = 0;
    let mut ended = false;
    loop {
        if std::mem::take(&mut ended) || current.as_ref().is_some_and(JoinHandle::is_finished) {
            // (A thread that said it ended returns at once, unless it is shutting the agent
            // down, which exits the process.)
            // A phase thread that panicked has already printed why; the next poll goes on.
            let _ = current.take().map(JoinHandle::join);
            // The next phase may be ready at once: ask soon.
            quiet = 0;
        }
        progress.busy = current.is_some();
        let delay = match node.api.work(progress.latest_started()) {
            Ok(answer) => {
                backoff.reset();
                node.live.store(answer.live_logs, Ordering::Relaxed);
                match decide(&progress, &answer.work) {
                    Decision::Nothing => quiet += 1,
                    Decision::Stop => supervisor.shutdown("the control plane said stop"),
                    Decision::Start {
                        phase,
                        task,
                        prepare,
                    } => {
                        debug!(%phase, prepare, "starting a phase");
                        let handle = phase::spawn(
                            Arc::clone(&node),
                            phase,
                            task.clone(),
                            prepare,
                            span.clone(),
                            phase_done.clone(),
                        )
                        .context("cannot start a thread for the phase")?;
                        current = Some(handle);
                        progress.start(phase);
                        quiet = 0;
                    }
                }
                next_poll(progress.busy, quiet, config.poll(), config.heartbeat())
            }
            Err(error) => {
                if let Some(gone) = error.gone() {
                    supervisor.shutdown(&gone.to_string());
                }
                let delay = backoff.next_delay().max(config.poll());
                warn!(error = %error_chain(&error), retry_in = ?delay, "polling for work failed");
                delay
            }
        };
        // Sleeps until the delay is over or a phase ends (a timeout is the usual case).
        ended = phase_ended.recv_timeout(delay).is_ok();
    }
}

/// The node: its API, folders and user, and the last work of a stopping agent.
fn node(config: &Config, supervisor: &Arc<Supervisor>) -> anyhow::Result<Arc<Node>> {
    // On a VM the commands run as the task user, in SkyPilot's layout; locally as the agent.
    let paths = match &config.task_user {
        Some(user) => {
            // The agent's files: its folder's parent on a VM (/opt/stratus: the program, the
            // environment file with the token, the node folder).
            let agent_dir = config.node_dir.parent().unwrap_or(&config.node_dir);
            NodePaths::of_user(user, agent_dir).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        None => NodePaths::new(&config.node_dir),
    };
    let paths_user = paths.user.as_ref().map(|u| (u.uid, u.gid));
    let node = Arc::new(Node {
        api: Api::new(config),
        supervisor: Arc::clone(supervisor),
        paths,
        cadence: config.cadence,
        log_quota: config.log_quota,
        live: AtomicBool::new(false),
        data: bucket::Data::new(paths_user),
    });
    // A stopping agent (SIGTERM as a Spot machine is taken back) writes its bucket mounts
    // back after its commands are gone: the relaunched job resumes from what they wrote.
    let stopping = Arc::clone(&node);
    supervisor.before_exit(Box::new(move || {
        let _ = stopping.data.write_back(&stopping.api);
    }));
    // Every heartbeat, the bucket mounts are written back (nothing when nothing changed or
    // nothing is mounted), off the poll loop so a large upload never delays a heartbeat.
    let writer = Arc::clone(&node);
    let heartbeat = config.heartbeat();
    std::thread::Builder::new()
        .name("write-back".into())
        .spawn(move || {
            loop {
                std::thread::sleep(heartbeat);
                // Failures are logged, and tried again at the next beat.
                let _ = writer.data.write_back(&writer.api);
            }
        })
        .context("cannot start the write-back thread")?;
    Ok(node)
}
