//! One phase (setup or run) on this node, on a thread of its own so that the main loop keeps
//! polling (the polls are the heartbeat): prepare the node when asked, report `Started`, run
//! `bash -c <command>` in the node folder's `sky_workdir` (and in the agent's process group, see
//! `supervise`), stream its combined stdout and stderr as `LogChunk`s, and report `Exited` once
//! every chunk has been accepted. Setup runs to its end before run can start.
//!
//! A phase with no command (none, or blank) reports `Started` and `Exited { code: 0 }` at once,
//! with no log. The exit code is the command's, or 128 + N when a signal N killed it.
//!
//! # Output
//! Chunks go to object storage through presigned URLs the control plane hands out in batches
//! ([`LogSink`]), or, where it has none (the local cloud), to the API. Output waits at most
//! the cadence's `log_live_ms` while someone follows the log, `log_flush_ms` otherwise. When
//! the agent is stopped (SIGTERM from a machine shutting down, say), the commands are killed
//! and what they wrote is still sent before the agent exits; the phase then reports nothing,
//! since its end is not the command's own.
//!
//! # The command's environment
//! Only [`INHERITED`] variables pass from the agent's environment (so the agent's token does
//! not reach user code), then `HOME` is the node's folder, then the task's `env` (the
//! `SKYPILOT_*` variables, the task's envs and secrets) goes over all of them. Values are never
//! logged.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shared::agent_protocol::{AgentCadence, LogChunk, LogUrlsRequest, NodeTask, Report};
use shared::job::Phase;
use tracing::{Span, debug, error, info, warn};

use crate::api::{Api, ApiError, Gone, error_chain, retry};
use crate::logs::LogBatcher;
use crate::prepare::{self, NodePaths, PREPARE_FAILED, PrepareError};
use crate::supervise::{self, Supervisor};

/// The agent's variables that commands see (besides `HOME` and the task's).
pub const INHERITED: [&str; 12] = [
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
    "TERM",
];

/// `PATH` when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long output is still collected after the command exits, when something it started in
/// the background keeps the pipe open. Later output is read and dropped, so that the
/// background process never blocks on a full pipe or dies of SIGPIPE. Normally the pipe ends
/// as the command exits and nothing waits; the window is seconds, not milliseconds, because on
/// a loaded machine the reader thread can lag that far behind the exit, and output the command
/// itself wrote must never be lost.
const DRAIN: Duration = Duration::from_secs(3);

/// Longest a phase thread sleeps without looking at [`Node::live`] again.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Log URLs asked for at once.
const URL_BATCH: u32 = 64;

/// Presigned URLs older than this are asked for again (they are asked to live an hour).
const URL_MAX_AGE: Duration = Duration::from_mins(50);

/// What every phase thread shares.
pub struct Node {
    pub api: Api,
    pub supervisor: Arc<Supervisor>,
    pub paths: NodePaths,
    pub cadence: AgentCadence,
    /// Most bytes of output kept of one phase.
    pub log_quota: u64,
    /// Someone follows the job's log (the last `work` answer said so).
    pub live: AtomicBool,
    /// The job's data credentials and the bucket mounts written back.
    pub data: crate::bucket::Data,
}

impl Node {
    /// How long output may wait now.
    fn flush_after(&self) -> Duration {
        Duration::from_millis(if self.live.load(Ordering::Relaxed) {
            self.cadence.log_live_ms
        } else {
            self.cadence.log_flush_ms
        })
    }
}

/// Where one phase's chunks go: object storage through presigned URLs for consecutive
/// chunks, fetched in batches, or the API when the control plane has no such URLs.
struct LogSink<'a> {
    node: &'a Node,
    phase: Phase,
    /// URLs for chunks `first ..`.
    urls: VecDeque<String>,
    first: u64,
    fetched: Option<Instant>,
    /// The control plane answered with no URLs: post every chunk to the API.
    through_api: bool,
}

impl<'a> LogSink<'a> {
    fn new(node: &'a Node, phase: Phase) -> LogSink<'a> {
        LogSink {
            node,
            phase,
            urls: VecDeque::new(),
            first: 0,
            fetched: None,
            through_api: false,
        }
    }

    /// Sends `chunk`, retrying until it is stored; `Err` only when the node is gone.
    fn send(&mut self, chunk: &LogChunk) -> Result<(), Gone> {
        retry("send log chunk", || self.try_send(chunk))
    }

    fn try_send(&mut self, chunk: &LogChunk) -> Result<(), ApiError> {
        if self.through_api {
            return self.node.api.log(chunk);
        }
        let Some(url) = self.url_for(chunk.seq)? else {
            self.through_api = true;
            return self.node.api.log(chunk);
        };
        let result = self.node.api.put_url(&url, &chunk.data);
        if matches!(result, Err(ApiError::Expired)) {
            self.urls.clear();
        }
        result
    }

    /// The URL of chunk `seq`, asking for a batch when there is none (or it is old).
    fn url_for(&mut self, seq: u64) -> Result<Option<String>, ApiError> {
        let stale = self.fetched.is_none_or(|at| at.elapsed() > URL_MAX_AGE);
        while !stale && seq > self.first && !self.urls.is_empty() {
            self.urls.pop_front();
            self.first += 1;
        }
        if stale || seq != self.first || self.urls.is_empty() {
            let answer = self.node.api.log_urls(&LogUrlsRequest {
                phase: self.phase,
                first_seq: seq,
                count: URL_BATCH,
            })?;
            if answer.urls.is_empty() {
                return Ok(None);
            }
            self.urls = answer.urls.into();
            self.first = answer.first_seq;
            self.fetched = Some(Instant::now());
        }
        Ok(self.urls.front().cloned())
    }
}

/// Starts `phase` of `task` on a new thread, which says on `done` when it has finished.
pub fn spawn(
    node: Arc<Node>,
    phase: Phase,
    task: NodeTask,
    prepare: bool,
    span: Span,
    done: mpsc::Sender<()>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("{phase}"))
        .spawn(move || {
            let _span = span.enter();
            let result = run_phase(&node, phase, &task, prepare);
            let _ = done.send(());
            if let Err(gone) = result {
                node.supervisor.shutdown(&gone.to_string());
            }
        })
}

fn run_phase(node: &Node, phase: Phase, task: &NodeTask, prepare: bool) -> Result<(), Gone> {
    let prepared = if prepare {
        info!("preparing the node");
        if task.container.is_some() {
            // A stopping agent takes the container's commands down with its own (before the
            // write-back, which reads what they wrote as root: they run as root in there).
            node.supervisor
                .before_exit(Box::new(crate::container::stop));
            node.data.read_as_root();
        }
        match prepare::prepare(&node.api, &node.data, &node.paths, task) {
            Err(PrepareError::Gone(gone)) => return Err(gone),
            other => other,
        }
    } else {
        Ok(())
    };
    retry("report started", || {
        node.api.report(&Report::Started { phase })
    })?;
    info!(%phase, "started");
    let script = match phase {
        Phase::Setup => task.setup.as_deref(),
        Phase::Run => task.run.as_deref(),
    }
    .filter(|script| !script.trim().is_empty());
    let mut sink = LogSink::new(node, phase);
    let (code, chunks) = match (prepared, script) {
        (Err(failure), _) => {
            let message = format!(
                "stratus-agent: cannot prepare the node: {}",
                error_chain(&failure)
            );
            error!("{message}");
            (PREPARE_FAILED, send_message(node, &mut sink, &message)?)
        }
        (Ok(()), None) => (0, 0),
        (Ok(()), Some(script)) => run_command(node, &mut sink, script, task)?,
    };
    if node.supervisor.is_stopping() {
        // The command was killed by the agent's own shutdown, not ended on its own: report
        // nothing (the control plane judges the node by the cloud's view), just let the
        // shutdown finish.
        loop {
            thread::park();
        }
    }
    // What the command wrote to its bucket mounts is in the buckets before its exit counts;
    // a command that succeeded but whose output could not be saved did not succeed.
    let code = match write_back_now(node) {
        Err(failure) if code == 0 => {
            error!(%failure, "the bucket mounts could not be written back: the phase fails");
            PREPARE_FAILED
        }
        _ => code,
    };
    retry("report exited", || {
        node.api.report(&Report::Exited {
            phase,
            code,
            chunks: Some(chunks),
        })
    })?;
    info!(%phase, code, chunks, "exited");
    Ok(())
}

/// Writes the bucket mounts back, trying a few times over some seconds.
fn write_back_now(node: &Node) -> Result<(), String> {
    let mut last = Ok(());
    for attempt in 0..3 {
        if attempt > 0 {
            thread::sleep(Duration::from_secs(2));
        }
        last = node.data.write_back(&node.api);
        if last.is_ok() {
            break;
        }
    }
    last
}

/// Sends one line of the agent's own as the phase's whole log; returns the chunk count.
fn send_message(node: &Node, sink: &mut LogSink<'_>, message: &str) -> Result<u64, Gone> {
    let mut batcher = LogBatcher::new(sink.phase, node.cadence.log_chunk_bytes);
    batcher.push(format!("{message}\n").as_bytes(), Instant::now());
    for chunk in batcher.finish() {
        sink.send(&chunk)?;
    }
    Ok(batcher.chunks())
}

/// What the reader and waiter threads tell the phase thread.
enum Output {
    Bytes(Vec<u8>),
    End,
    Exited(i32),
}

/// Runs `bash <script file>` and streams its output; returns its exit code and the number of
/// log chunks sent.
fn run_command(
    node: &Node,
    sink: &mut LogSink<'_>,
    script: &str,
    task: &NodeTask,
) -> Result<(i32, u64), Gone> {
    let phase = sink.phase;
    let (reader, mut child) = match start(node, phase, script, task) {
        Ok(Some(started)) => started,
        Ok(None) => loop {
            // Shutdown is under way and will exit the process.
            thread::park();
        },
        Err(e) => {
            let message = format!("stratus-agent: cannot start bash: {e}");
            error!("{message}");
            return Ok((PREPARE_FAILED, send_message(node, sink, &message)?));
        }
    };
    // Until the output is sent, a shutdown waits for it (a bounded while).
    let _flushing = node.supervisor.flushing();
    debug!(pid = child.id(), "command spawned");
    // Best effort, once: log lines show the pid when the control plane has it, and nothing
    // depends on it (the command's output waits in its pipe meanwhile).
    if let Err(e) = node.api.report(&Report::Spawned {
        phase,
        pid: child.id(),
    }) {
        warn!(error = %e, "could not report the command's pid");
    }
    let (tx, rx) = mpsc::sync_channel(32);
    let output = tx.clone();
    let reading = thread::Builder::new()
        .name(format!("{phase}-output"))
        .spawn(move || read_output(reader, &output));
    let waiting = thread::Builder::new()
        .name(format!("{phase}-wait"))
        .spawn(move || {
            let code = child.wait().map_or(PREPARE_FAILED, exit_code);
            let _ = tx.send(Output::Exited(code));
        });
    if let Err(e) = reading.and(waiting) {
        // Only when the system is out of threads; the command is then left to the shutdown.
        error!(error = %e, "cannot start a thread to follow the command");
        return Ok((PREPARE_FAILED, 0));
    }

    let mut batcher = LogBatcher::with_quota(phase, node.cadence.log_chunk_bytes, node.log_quota);
    let (mut exited, mut ended, mut drain_until) = (None, false, None);
    loop {
        let flush_after = node.flush_after();
        let wake = [
            batcher.deadline(flush_after),
            drain_until,
            Some(Instant::now() + LOOK_AGAIN),
        ]
        .into_iter()
        .flatten()
        .min();
        let message = match wake {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match message {
            Ok(Output::Bytes(bytes)) => batcher.push(&bytes, Instant::now()),
            Ok(Output::End) => ended = true,
            Ok(Output::Exited(code)) => {
                exited = Some(code);
                drain_until = Some(Instant::now() + DRAIN);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while let Some(chunk) = batcher.pop_full() {
            sink.send(&chunk)?;
        }
        if let Some(chunk) = batcher.pop_due(Instant::now(), node.flush_after()) {
            sink.send(&chunk)?;
        }
        if exited.is_some() && (ended || drain_until.is_some_and(|at| Instant::now() >= at)) {
            break;
        }
    }
    for chunk in batcher.finish() {
        sink.send(&chunk)?;
    }
    // The waiter always sends `Exited` before the channel can close.
    Ok((exited.unwrap_or(PREPARE_FAILED), batcher.chunks()))
}

/// Spawns the command with its stdout and stderr on one pipe. `Ok(None)` once shutdown began.
fn start(
    node: &Node,
    phase: Phase,
    script: &str,
    task: &NodeTask,
) -> io::Result<Option<(io::PipeReader, std::process::Child)>> {
    let env = &task.env;
    // From a file, not `bash -c`: one argument may not exceed 128 KiB on Linux, a script may.
    let path = node.paths.script(phase);
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)?;
    }
    std::fs::write(&path, script)?;
    if let Some(folder) = path.parent() {
        node.paths.hand_over(folder)?;
    }
    let (reader, writer) = io::pipe()?;
    let variables = command_env(|var| std::env::var_os(var), &node.paths.home, env);
    // In the task's container the variables go by name, their values from the docker
    // client's own environment.
    let mut command = if task.container.is_some() {
        let names: Vec<String> = variables
            .keys()
            .filter(|k| *k != "PATH")
            .map(|k| k.to_string_lossy().into_owned())
            .collect();
        crate::container::exec(
            supervise::command("docker"),
            &node.paths.workdir,
            names.iter().map(String::as_str),
            &path,
        )
    } else {
        let mut command = supervise::command("bash");
        command.arg(&path);
        command
    };
    command
        .current_dir(&node.paths.workdir)
        .env_clear()
        .envs(variables)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    if let Some(user) = node
        .paths
        .user
        .as_ref()
        .filter(|_| task.container.is_none())
    {
        // Not root beside the agent: the task user, with no supplementary groups (std drops
        // them when it changes the user); its sudo rights come from the image.
        command
            .uid(user.uid)
            .gid(user.gid)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    let child = node.supervisor.spawn(&mut command)?;
    // Dropping the command closes our copies of the pipe's write end, so that the reader sees
    // the end of the output when the command's processes are gone.
    drop(command);
    Ok(child.map(|child| (reader, child)))
}

/// Forwards the pipe to the phase thread; after the phase thread has moved on, reads and
/// drops the rest (see [`DRAIN`]).
fn read_output(mut reader: io::PipeReader, output: &mpsc::SyncSender<Output>) {
    let mut buffer = vec![0; 16 * 1024];
    let mut forwarding = true;
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if forwarding && output.send(Output::Bytes(buffer[..n].to_vec())).is_err() {
                    forwarding = false;
                    debug!("dropping output written after the command exited");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                error!(error = %e, "cannot read the command's output");
                break;
            }
        }
    }
    if forwarding {
        let _ = output.send(Output::End);
    }
}

/// The code reported for a finished command: its exit code, or 128 + N after signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => PREPARE_FAILED,
    }
}

/// The command's environment (see the module docs); `inherited` reads the agent's.
pub fn command_env(
    inherited: impl Fn(&str) -> Option<OsString>,
    home: &Path,
    task_env: &BTreeMap<String, String>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = INHERITED
        .iter()
        .filter_map(|var| Some((OsString::from(var), inherited(var)?)))
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    env.insert("HOME".into(), home.into());
    env.extend(task_env.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_layers() {
        let agent_env = |var: &str| match var {
            "LANG" => Some("C.UTF-8".into()),
            "STRATUS_AGENT_TOKEN" | "HOME" => Some("agent's".into()),
            _ => None,
        };
        let task = BTreeMap::from([
            ("SKYPILOT_NODE_RANK".to_owned(), "1".to_owned()),
            ("LANG".to_owned(), "fr_FR.UTF-8".to_owned()),
        ]);
        let env = command_env(agent_env, Path::new("/node"), &task);
        let env: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{}={}", k.display(), v.display()))
            .collect();
        assert_eq!(
            env,
            [
                "HOME=/node",
                "LANG=fr_FR.UTF-8",
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "SKYPILOT_NODE_RANK=1"
            ]
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
