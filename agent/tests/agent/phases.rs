//! Setup then run: order, environment, workdir, logs, exit codes.

use std::fmt::Write as _;
use std::time::Duration;

use shared::agent_protocol::{LogChunk, Report};
use shared::job::Phase;

use crate::fake::{Event, Fake, TOKEN};
use crate::node::{Node, tar_gz, task};

const SETUP: &str = r#"echo "setup rank=$SKYPILOT_NODE_RANK"
cat hello.txt sub/data.txt
echo "pwd=$(pwd)"
echo "home=$HOME"
echo "token=${STRATUS_AGENT_TOKEN:-unset}"
grep SigBlk /proc/self/status
echo to-stderr >&2"#;

const RUN: &str = r#"echo "run nodes=$SKYPILOT_NUM_NODES"
seq 1 30000
test "$MY_SECRET" = hunter2-value && echo secret-ok
exit 3"#;

#[test]
fn setup_then_run_with_env_workdir_logs_and_exit_codes() {
    let mut task = task(Some(SETUP), Some(RUN));
    task.env = [
        ("SKYPILOT_NODE_RANK", "0"),
        ("SKYPILOT_NUM_NODES", "1"),
        ("MY_SECRET", "hunter2-value"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    task.workdir_archive = Some("uploads/wd 1.tar.gz".into());
    let fake = Fake::start(task);
    fake.state().blobs.insert(
        "uploads/wd%201.tar.gz".into(),
        tar_gz(&[
            ("hello.txt", "hello from the workdir\n"),
            ("./sub/data.txt", "data\n"),
        ]),
    );
    let mut node = Node::start(&fake);

    let status = node.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", node.stderr());
    let state = fake.state();
    assert_eq!(
        state.reports(),
        [
            Report::Ready,
            Report::Started {
                phase: Phase::Setup
            },
            Report::Exited {
                phase: Phase::Setup,
                code: 0,
                chunks: None
            },
            Report::Started { phase: Phase::Run },
            Report::Exited {
                phase: Phase::Run,
                code: 3,
                chunks: None
            },
        ]
    );
    let home = node.home();
    let workdir = home.join("sky_workdir");
    assert_eq!(
        state.log(Phase::Setup),
        format!(
            "setup rank=0\nhello from the workdir\ndata\npwd={}\nhome={}\ntoken=unset\n\
             SigBlk:\t0000000000000000\nto-stderr\n",
            workdir.display(),
            home.display()
        )
    );
    let numbers = (1..=30000).fold(String::new(), |mut text, n| {
        writeln!(text, "{n}").unwrap();
        text
    });
    assert_eq!(
        state.log(Phase::Run),
        format!("run nodes=1\n{numbers}secret-ok\n")
    );

    // Every chunk of a phase arrives between its Started and its Exited, and none is too long.
    for phase in [Phase::Setup, Phase::Run] {
        let position = |wanted: &Event| state.events.iter().position(|e| e == wanted).unwrap();
        let started = position(&Event::Report(Report::Started { phase }));
        let exited = state
            .events
            .iter()
            .position(
                |e| matches!(e, Event::Report(Report::Exited { phase: p, .. }) if *p == phase),
            )
            .unwrap();
        let chunks: Vec<LogChunk> = state.chunks(phase);
        assert_eq!(state.exited_chunks(phase), Some(chunks.len() as u64));
        for chunk in &chunks {
            let at = position(&Event::Log(chunk.clone()));
            assert!(
                started < at && at < exited,
                "{phase} chunk {} out of order",
                chunk.seq
            );
            assert!(chunk.data.len() <= 32 * 1024);
        }
    }
    assert!(
        state.chunks(Phase::Run).len() >= 6,
        "30000 lines make several chunks"
    );

    assert_eq!(state.bad_auth, 0);

    let log = node.stderr();
    assert!(
        log.contains("job_id=42") && log.contains("node_rank=0"),
        "{log}"
    );
    assert!(
        !log.contains("hunter2-value") && !log.contains(TOKEN),
        "a secret leaked:\n{log}"
    );
}

#[test]
fn a_phase_without_a_command_exits_0_at_once() {
    let fake = Fake::start(task(None, Some("  \n")));
    let mut node = Node::start(&fake);
    assert_eq!(node.wait(Duration::from_secs(5)).code(), Some(0));
    let state = fake.state();
    assert_eq!(
        state.reports(),
        [
            Report::Ready,
            Report::Started {
                phase: Phase::Setup
            },
            Report::Exited {
                phase: Phase::Setup,
                code: 0,
                chunks: None
            },
            Report::Started { phase: Phase::Run },
            Report::Exited {
                phase: Phase::Run,
                code: 0,
                chunks: None
            },
        ]
    );
    assert!(state.chunks(Phase::Setup).is_empty() && state.chunks(Phase::Run).is_empty());
}

/// Each command's pid is reported once it runs, for log lines' `(setup pid=…)`: the shell's
/// own `$$`.
#[test]
fn each_command_reports_its_pid() {
    let fake = Fake::start(task(Some("echo $$"), Some("echo $$")));
    let mut node = Node::start(&fake);
    assert_eq!(node.wait(Duration::from_secs(5)).code(), Some(0));
    let state = fake.state();
    let spawned = state.spawned();
    let phases: Vec<Phase> = spawned.iter().map(|(p, _)| *p).collect();
    assert_eq!(phases, [Phase::Setup, Phase::Run]);
    assert_eq!(state.log(Phase::Setup).trim(), spawned[0].1.to_string());
    assert_eq!(state.log(Phase::Run).trim(), spawned[1].1.to_string());
}

#[test]
fn a_failed_setup_is_reported_and_run_never_starts() {
    let fake = Fake::start(task(Some("echo oops; exit 7"), Some("echo never")));
    let mut node = Node::start(&fake);
    assert_eq!(node.wait(Duration::from_secs(5)).code(), Some(0));
    let state = fake.state();
    assert_eq!(
        state.reports()[1..],
        [
            Report::Started {
                phase: Phase::Setup
            },
            Report::Exited {
                phase: Phase::Setup,
                code: 7,
                chunks: None
            },
        ]
    );
    assert_eq!(state.log(Phase::Setup), "oops\n");
}
