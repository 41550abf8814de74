//! How the agent ends: `Stop`, a 401, SIGTERM, a bad configuration; and what does not end it
//! (a 503, a `kill 0` from its own command).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use shared::agent_protocol::{Report, Work};
use shared::job::Phase;

use crate::fake::{Fake, Mode};
use crate::node::{Node, gone, task};

/// A run that leaves a grandchild behind and waits for it.
const SLEEPER: &str = r#"sleep 1000 & echo $! > "$HOME/sleep.pid"; wait"#;

/// Starts an agent running [`SLEEPER`]; returns it with the sleep's pid once it runs.
fn sleeping() -> (Fake, Node, String) {
    let work = Work::Run {
        task: task(None, Some(SLEEPER)),
    };
    let fake = Fake::start(task(None, None));
    fake.state().mode = Mode::Fixed(work);
    let node = Node::start(&fake);
    let sleep = node.wait_for_file("sleep.pid");
    assert!(!gone(&sleep));
    (fake, node, sleep)
}

/// The agent exits 0 well before the SIGKILL grace, and the sleep is gone.
fn assert_stopped(node: &mut Node, sleep: &str) {
    let start = Instant::now();
    assert_eq!(
        node.wait(Duration::from_secs(5)).code(),
        Some(0),
        "{}",
        node.stderr()
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "SIGTERM was enough"
    );
    assert!(
        gone(sleep),
        "the command's child survived:\n{}",
        node.stderr()
    );
}

#[test]
fn stop_kills_the_command_and_its_children() {
    let (fake, mut node, sleep) = sleeping();
    fake.state().mode = Mode::Fixed(Work::Stop);
    assert_stopped(&mut node, &sleep);
    assert!(node.stderr().contains("the control plane said stop"));
}

#[test]
fn a_401_stops_the_agent() {
    let (fake, mut node, sleep) = sleeping();
    fake.state().mode = Mode::Status(401);
    assert_stopped(&mut node, &sleep);
    assert!(node.stderr().contains("HTTP 401"));
}

#[test]
fn sigterm_stops_the_agent_and_its_commands() {
    let (_fake, mut node, sleep) = sleeping();
    kill(node.pid(), Signal::SIGTERM).unwrap();
    assert_stopped(&mut node, &sleep);
    assert!(node.stderr().contains("received SIGTERM"));
}

#[test]
fn a_kill_0_from_the_command_does_not_stop_the_agent() {
    // `kill 0` signals the whole process group, the agent included.
    let fake = Fake::start(task(None, Some("echo bye; kill 0")));
    let mut node = Node::start(&fake);
    assert_eq!(node.wait(Duration::from_secs(5)).code(), Some(0));
    let reports = fake.state().reports();
    assert_eq!(
        reports.last(),
        Some(&Report::Exited {
            phase: Phase::Run,
            code: 143,
            chunks: None
        })
    );
    assert!(!node.stderr().contains("received SIGTERM"));
}

#[test]
fn a_transient_503_on_report_is_retried() {
    let fake = Fake::start(task(None, Some("true")));
    fake.state().fail_reports = 3;
    let mut node = Node::start(&fake);
    assert_eq!(node.wait(Duration::from_secs(5)).code(), Some(0));
    let state = fake.state();
    assert_eq!(state.failed_reports, 3);
    assert_eq!(state.reports()[0], Report::Ready);
    assert_eq!(
        state.reports().last(),
        Some(&Report::Exited {
            phase: Phase::Run,
            code: 0,
            chunks: None
        })
    );
}

#[test]
fn a_503_on_work_is_retried() {
    let fake = Fake::start(task(None, Some("true")));
    fake.state().mode = Mode::Status(503);
    let mut node = Node::start(&fake);
    fake.wait_until(Duration::from_secs(5), "ready", |s| {
        s.reports().contains(&Report::Ready)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "a 503 must not stop the agent"
    );
    fake.state().mode = Mode::Auto;
    assert_eq!(node.wait(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn a_missing_variable_exits_2_and_names_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_stratus-agent"))
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("stratus-agent: STRATUS_API_URL is not set"),
        "{stderr}"
    );
}
