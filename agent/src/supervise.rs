//! The agent's commands as processes, signals, and the one way the agent ends:
//! [`Supervisor::shutdown`] (on `Work::Stop`, on a 401/403/404, on SIGTERM/SIGINT/SIGHUP).
//!
//! # One process group: the agent's
//! The agent leads a process group (a provider starts it so; otherwise it makes one at
//! start), and its commands stay in it: `bash -c <setup>`, `bash -c <run>` and everything they
//! start. So signalling the agent's group, as the local cloud does, reaches every process of
//! the node, including a preemption's bare SIGKILL, which gives the agent no chance to clean
//! up. (Commands in groups of their own would survive that, and a "preempted" training loop
//! would go on writing its checkpoints.) A command that calls `setsid` or `setpgid` leaves the
//! group and escapes, as it would on any machine.
//!
//! # Shutdown
//! The agent sends SIGTERM to its own group. Its threads all block SIGTERM (see below), so it
//! survives that; the commands do not, unless they ignore it: the members of the group still
//! alive after [`GRACE`] get SIGKILL one by one (a `killpg` would take the agent too), found
//! through `/proc` (without `/proc`, only the direct children are known). Then the agent exits
//! 0. A command spawned after shutdown began is refused, under the same lock, so none escapes.
//! Before exiting it gives the phase threads up to [`FLUSH_GRACE`] to send the output the
//! killed commands left behind (on a cloud, output waits minutes before it is sent while
//! nobody follows the log, and a machine that shuts down for a preemption must not lose it).
//!
//! # Signals
//! SIGTERM, SIGINT and SIGHUP are blocked in every agent thread and read by one thread
//! ([`spawn_signal_thread`]), which starts the shutdown. Children inherit a signal mask (std no
//! longer resets it), and a command with SIGTERM blocked could not be stopped, so commands are
//! spawned through a trampoline ([`command`]): the agent's own binary, which unblocks the three
//! signals and `exec`s the command in the same process (same pid, same group). Unblocking
//! around `spawn` in the agent instead would leave a moment in which a SIGTERM kills the agent
//! without a shutdown. On Linux it reads them from a signalfd, which says who sent each one,
//! and ignores those sent by the agent's own commands (a `trap 'kill 0' EXIT` in a run script
//! signals the whole group, agent included) and by the agent itself; a signal from anyone
//! else, or from the kernel (a hang-up), stops the agent. (A `kill 0` from a grandchild that is
//! already gone when the signal is read cannot be told from an outside sender: it stops the
//! agent.)

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::unistd::{Pid, getpgid, getpgrp, getpid, setpgid};
use tracing::{Span, debug, error, info, warn};

/// How long the commands have between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(3);

/// How long a shutdown waits for the commands' last output to be sent.
pub const FLUSH_GRACE: Duration = Duration::from_secs(15);

/// The agent's process group and its commands.
#[derive(Debug)]
pub struct Supervisor {
    /// The agent's pid, which is also its process group id.
    agent: Pid,
    state: Mutex<State>,
    /// Shutdown has begun (readable without the state lock, which shutdown holds).
    stopping: AtomicBool,
    /// Phase threads with output still to send, and the condition shutdown waits on.
    flushing: Mutex<usize>,
    flushed: Condvar,
    /// Run once the commands are gone and their output sent, just before the exit.
    before_exit: Mutex<Vec<BeforeExit>>,
}

/// Work [`Supervisor::shutdown`] does last (see [`Supervisor::before_exit`]).
struct BeforeExit(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for BeforeExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeExit")
    }
}

/// Held by a phase thread while it has output to send; see [`Supervisor::flushing`].
pub struct Flushing<'a>(&'a Supervisor);

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        let mut count = self
            .0
            .flushing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        self.0.flushed.notify_all();
    }
}

#[derive(Debug, Default)]
struct State {
    stopping: bool,
    /// Every command spawned (the `bash` processes), exited or not.
    children: Vec<Pid>,
}

impl Supervisor {
    /// Makes the agent the leader of a process group, unless it already is one.
    pub fn new() -> nix::Result<Supervisor> {
        let agent = getpid();
        if getpgrp() != agent {
            setpgid(agent, agent)?;
        }
        Ok(Supervisor {
            agent,
            state: Mutex::new(State::default()),
            stopping: AtomicBool::new(false),
            flushing: Mutex::new(0),
            flushed: Condvar::new(),
            before_exit: Mutex::new(Vec::new()),
        })
    }

    /// Spawns `command` in the agent's process group. `Ok(None)` once shutdown has begun: the
    /// command is not started.
    pub fn spawn(&self, command: &mut Command) -> std::io::Result<Option<Child>> {
        let mut state = self.lock();
        if state.stopping {
            return Ok(None);
        }
        let child = command.spawn()?;
        state.children.push(pid(child.id()));
        Ok(Some(child))
    }

    /// Whether `sender` is the agent or one of its commands (it is, or was, a direct child, or
    /// it is still in the agent's group).
    pub fn is_own(&self, sender: Pid) -> bool {
        sender == self.agent
            || self.lock().children.contains(&sender)
            || getpgid(Some(sender)) == Ok(self.agent)
    }

    /// Stops every command (SIGTERM, then SIGKILL after [`GRACE`]) and exits with 0. Safe to
    /// call from any thread, any number of times: the first caller does the work and the
    /// others wait for the exit.
    pub fn shutdown(&self, reason: &str) -> ! {
        let mut state = self.lock();
        state.stopping = true;
        self.stopping.store(true, Ordering::SeqCst);
        info!(reason, "stopping");
        self.terminate(&state.children, GRACE);
        self.wait_for_flush(FLUSH_GRACE);
        // Last registered, first run (like `defer`): a container's commands are stopped
        // before the mounts they wrote are written back.
        for last in self
            .before_exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
        {
            (last.0)();
        }
        info!("stopped");
        std::process::exit(0)
    }

    /// Has `last` run by the shutdown, after the commands are gone and their output is sent.
    pub fn before_exit(&self, last: Box<dyn Fn() + Send + Sync>) {
        self.before_exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(BeforeExit(last));
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Marks the caller as having output to send until the guard drops: a shutdown waits for
    /// it (up to [`FLUSH_GRACE`]).
    pub fn flushing(&self) -> Flushing<'_> {
        *self.flushing.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Flushing(self)
    }

    fn wait_for_flush(&self, grace: Duration) {
        let count = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, timeout) = self
            .flushed
            .wait_timeout_while(count, grace, |count| *count > 0)
            .unwrap_or_else(PoisonError::into_inner);
        if timeout.timed_out() && *count > 0 {
            warn!("gave up waiting for the last output to be sent");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// SIGTERM to the group, then SIGKILL to each member still alive after `grace`.
    fn terminate(&self, children: &[Pid], grace: Duration) {
        if self.members(children).is_empty() {
            return;
        }
        if let Err(errno) = killpg(self.agent, Signal::SIGTERM) {
            warn!(%errno, "cannot signal the agent's process group");
        }
        info!("sent SIGTERM to the commands");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.members(children).is_empty() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // A few rounds, for processes forked while the previous round was killing.
        for _ in 0..10 {
            let members = self.members(children);
            if members.is_empty() {
                return;
            }
            for member in members {
                warn!(
                    pid = member.as_raw(),
                    "still running after SIGTERM: sending SIGKILL"
                );
                let _ = kill(member, Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The live processes of the agent's group other than the agent (zombies do not count:
    /// orphans killed here wait for init to reap them, which some container inits never do).
    fn members(&self, children: &[Pid]) -> Vec<Pid> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return children
                .iter()
                .copied()
                .filter(|&child| kill(child, None).is_ok())
                .collect();
        };
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .map(Pid::from_raw)
            .filter(|&process| process != self.agent)
            .filter(|process| {
                std::fs::read_to_string(format!("/proc/{process}/stat"))
                    .ok()
                    .and_then(|stat| parse_stat(&stat))
                    .is_some_and(|(state, pgrp)| {
                        pgrp == self.agent.as_raw() && state != 'Z' && state != 'X'
                    })
            })
            .collect()
    }
}

fn pid(id: u32) -> Pid {
    Pid::from_raw(i32::try_from(id).expect("pids fit in i32"))
}

/// `(state, pgrp)` from a `/proc/<pid>/stat` line: `pid (comm) state ppid pgrp ...`, where
/// `comm` may hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// The hidden first argument that makes `stratus-agent` the trampoline of [`command`].
pub const TRAMPOLINE_ARG: &str = "--exec-unblocked";

/// A command that runs `program` with the stop signals unblocked, through the trampoline.
pub fn command(program: &str) -> Command {
    // `/proc/self/exe` is the agent's binary even if the file was replaced since it started.
    let exe = if cfg!(target_os = "linux") {
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("stratus-agent"))
    };
    let mut command = Command::new(exe);
    command.arg(TRAMPOLINE_ARG).arg(program);
    command
}

/// The trampoline: unblocks the stop signals and replaces this process with `args`
/// (`program`, then its arguments). Returns only if `exec` failed, with exit code 127.
pub fn exec_unblocked(args: &[OsString]) -> i32 {
    let Some((program, rest)) = args.split_first() else {
        eprintln!("stratus-agent: {TRAMPOLINE_ARG} needs a program");
        return 127;
    };
    if let Err(errno) = stop_signals().thread_unblock() {
        eprintln!("stratus-agent: cannot unblock signals: {errno}");
        return 127;
    }
    let error = Command::new(program).args(rest).exec();
    eprintln!("stratus-agent: cannot run {}: {error}", program.display());
    127
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

/// The signals that stop the agent. Blocks them in the calling thread, and so in every thread
/// it spawns afterwards: call it first, before any thread exists.
pub fn block_stop_signals() -> nix::Result<SigSet> {
    let set = stop_signals();
    set.thread_block()?;
    Ok(set)
}

/// A thread that waits for one of `signals` from outside the agent, and shuts down.
pub fn spawn_signal_thread(
    signals: SigSet,
    supervisor: Arc<Supervisor>,
    span: Span,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let _span = span.enter();
            match wait_for_stop(&signals, &supervisor) {
                Ok(signal) => supervisor.shutdown(&format!("received {signal}")),
                Err(errno) => {
                    error!(%errno, "cannot wait for signals: SIGTERM will not stop the agent");
                }
            }
        })?;
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn wait_for_stop(signals: &SigSet, supervisor: &Supervisor) -> nix::Result<Signal> {
    use nix::sys::signalfd::{SfdFlags, SignalFd};

    let fd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC)?;
    loop {
        let Some(info) = fd.read_signal()? else {
            continue;
        };
        let signal = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0))?;
        let sender = pid(info.ssi_pid);
        if info.ssi_pid != 0 && supervisor.is_own(sender) {
            debug!(%signal, sender = sender.as_raw(), "ignoring a signal from the agent or its commands");
            continue;
        }
        return Ok(signal);
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn wait_for_stop(signals: &SigSet, _supervisor: &Supervisor) -> nix::Result<Signal> {
    signals.wait()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        assert_eq!(parse_stat("42 (sleep) S 1 42 7 0 -1"), Some(('S', 42)));
        assert_eq!(parse_stat("43 (a) b) (c) Z 1 40 7 0"), Some(('Z', 40)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
