//! Node processes: start one in its own process group, tell whether it still runs, and stop
//! its group.
//!
//! Liveness is read from `/proc/<pid>/stat` on Linux: a zombie counts as gone, and so does a
//! process whose start time differs from the one recorded at spawn (the pid was reused).
//! Without `/proc` (macOS) it falls back to `kill(pid, 0)`, which cannot see either.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use tracing::{debug, warn};

use super::record::NodeRecord;

/// How often a wait for processes to exit looks again.
const POLL: Duration = Duration::from_millis(20);

/// How long `SIGKILL`ed processes get to disappear before a stop reports them.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// A process just started.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spawned {
    pub pid: i32,
    pub start_ticks: Option<u64>,
}

/// Starts `command` in `dir` (created if needed) with `env` added to ours, in a new process
/// group of its own, stdin from `/dev/null`, stdout and stderr appended to `dir/agent.log`.
///
/// The process does not depend on this one: it is not killed when this process exits or its
/// terminal's foreground group gets a signal, and it is reaped by a small thread while this
/// process lives (by init or the nearest subreaper after).
pub(super) fn spawn(
    command: &[OsString],
    dir: &Path,
    env: &[(&str, OsString)],
) -> io::Result<Spawned> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty agent command"))?;
    fs::create_dir_all(dir)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))?;
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (OsStr::new(k), v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let pid = i32::try_from(child.id()).expect("pids fit in an i32");
    // Read before the reaper can reap it: until then even a process that already exited is
    // still in /proc (as a zombie), with its start time.
    let start_ticks = stat(pid).map(|s| s.start_ticks);
    reap_in_background(child);
    Ok(Spawned { pid, start_ticks })
}

/// Waits for `child` on a small thread so that it does not linger as a zombie while this
/// process lives. The thread does not keep this process alive.
fn reap_in_background(mut child: Child) {
    let pid = child.id();
    let spawned = thread::Builder::new()
        .name(format!("reap-{pid}"))
        .stack_size(256 * 1024)
        .spawn(move || match child.wait() {
            Ok(status) => debug!(pid, %status, "local node process exited"),
            Err(e) => warn!(pid, error = %e, "cannot wait for local node process"),
        });
    if let Err(e) = spawned {
        warn!(pid, error = %e, "no reaper thread: the node stays a zombie once it exits");
    }
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    pub start_ticks: u64,
}

impl ProcStat {
    fn is_running(self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted from the last `)`.
pub(super) fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    // `fields[0]` is field 3 (state), so field n is `fields[n - 3]`.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

fn stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn has_proc() -> bool {
    Path::new("/proc/self/stat").exists()
}

/// A pid we may signal: never 0, 1 or negative (those mean "my group", init, "everyone").
fn pid(raw: i32) -> Option<Pid> {
    if raw > 1 { Pid::from_raw(raw) } else { None }
}

/// Whether the process spawned as `pid` at `start_ticks` still runs.
pub(super) fn is_alive(raw: i32, start_ticks: Option<u64>) -> bool {
    match stat(raw) {
        Some(s) => s.is_running() && start_ticks.is_none_or(|t| t == s.start_ticks),
        None if has_proc() => false,
        None => pid(raw).is_some_and(|p| rustix::process::test_kill_process(p).is_ok()),
    }
}

/// The groups among `pgids` that still have a running member (zombies do not count: init may
/// be slow to reap, or not reap at all in a container).
pub(super) fn running_groups(pgids: &[i32]) -> HashSet<i32> {
    let wanted: HashSet<i32> = pgids
        .iter()
        .copied()
        .filter(|&g| pid(g).is_some())
        .collect();
    if wanted.is_empty() {
        return wanted;
    }
    if !has_proc() {
        return wanted
            .into_iter()
            .filter(|&g| {
                pid(g).is_some_and(|p| rustix::process::test_kill_process_group(p).is_ok())
            })
            .collect();
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return wanted;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .filter(|s| s.is_running() && wanted.contains(&s.pgrp))
        .map(|s| s.pgrp)
        .collect()
}

/// The process groups of `nodes` that may still be ours to signal. A group whose leader's pid
/// now belongs to a process with another start time is gone: Linux does not reuse a pid while
/// a process group still has that number. Our own group is never a target.
fn our_groups(nodes: &[NodeRecord]) -> Vec<i32> {
    let own = rustix::process::getpgrp().as_raw_pid();
    nodes
        .iter()
        .filter(|n| pid(n.pgid).is_some() && n.pgid != own)
        .filter(|n| match (stat(n.pgid), n.start_ticks) {
            (Some(s), Some(t)) => s.start_ticks == t,
            _ => true,
        })
        .map(|n| n.pgid)
        .collect()
}

fn signal_all(groups: &[i32], signal: Signal) {
    for &g in groups {
        let Some(p) = pid(g) else { continue };
        match rustix::process::kill_process_group(p, signal) {
            Ok(()) | Err(Errno::SRCH) => {}
            Err(e) => {
                warn!(pgid = g, ?signal, error = %e, "cannot signal local node process group");
            }
        }
    }
}

/// Waits up to `timeout` for `groups` to have no running member; returns those that still do.
fn wait_gone(mut groups: Vec<i32>, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let running = running_groups(&groups);
        groups.retain(|g| running.contains(g));
        if groups.is_empty() || Instant::now() >= deadline {
            return groups;
        }
        thread::sleep(POLL);
    }
}

/// Stops the process groups of `nodes`: SIGTERM, up to `grace` for them to exit, then SIGKILL
/// (at once if `grace` is zero). Returns the groups still running after that (normally none).
/// Harmless on groups that are already gone, so every stop can be retried.
pub(super) fn stop_groups(nodes: &[NodeRecord], grace: Duration) -> Vec<i32> {
    let mut left = our_groups(nodes);
    let running = running_groups(&left);
    left.retain(|g| running.contains(g));
    if !grace.is_zero() && !left.is_empty() {
        signal_all(&left, Signal::TERM);
        left = wait_gone(left, grace);
    }
    if !left.is_empty() {
        signal_all(&left, Signal::KILL);
        left = wait_gone(left, KILL_WAIT);
    }
    left
}
