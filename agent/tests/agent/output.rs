//! Where output goes and when: presigned URLs (refreshed when they expire), long batches
//! while nobody follows, prompt chunks while someone does, the last output on SIGTERM; and
//! what the `work` polls say.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use shared::agent_protocol::{Report, Work, env};
use shared::job::Phase;

use crate::fake::{Fake, Mode};
use crate::node::{Node, task};

/// `<prefix>1\n<prefix>2\n...` up to `n`.
fn numbered(prefix: &str, n: usize) -> String {
    (1..=n).fold(String::new(), |mut text, i| {
        let _ = writeln!(text, "{prefix}{i}");
        text
    })
}

#[test]
fn output_goes_to_presigned_urls_and_expired_ones_are_asked_again() {
    let fake = Fake::start(task(None, Some("seq 1 60000")));
    {
        let mut state = fake.state();
        state.presign = true;
        state.expire_puts = 2;
    }
    let mut node = Node::start_with(&fake, &[(env::LOG_CHUNK_BYTES, "4096")]);
    assert_eq!(node.wait(Duration::from_secs(10)).code(), Some(0));
    let state = fake.state();
    let expected = numbered("", 60000);
    assert_eq!(state.log(Phase::Run), expected);
    let chunks = state.chunks(Phase::Run).len() as u64;
    assert_eq!(state.exited_chunks(Phase::Run), Some(chunks));
    assert!(
        chunks > 64,
        "{chunks} chunks need more than one batch of URLs"
    );
    assert_eq!(state.expired_puts, 2);
    // One batch per 64 chunks, and one more after each expiry.
    assert!(state.url_batches >= 3, "{}", state.url_batches);
}

#[test]
fn output_waits_while_nobody_follows_and_flows_when_someone_does() {
    let run = "for i in $(seq 1 100); do echo line $i; sleep 0.1; done";
    let fake = Fake::start(task(None, Some(run)));
    let mut node = Node::start_with(&fake, &[(env::LOG_FLUSH_MS, "600000")]);
    // Nobody follows: after a second of output, nothing has been sent.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(fake.state().chunks(Phase::Run).is_empty());
    // Someone follows: what waited goes out within a poll and a flush delay (200 ms).
    fake.state().live = true;
    fake.wait_until(Duration::from_secs(3), "the pending output is sent", |s| {
        !s.chunks(Phase::Run).is_empty()
    });
    let first = fake.state().chunks(Phase::Run)[0].data.clone();
    assert!(first.starts_with("line 1\n"), "{first}");
    assert_eq!(node.wait(Duration::from_secs(20)).code(), Some(0));
    let expected = numbered("line ", 100);
    assert_eq!(fake.state().log(Phase::Run), expected);
}

#[test]
fn sigterm_sends_the_pending_output_and_reports_no_exit() {
    let run = "echo before; sleep 1000";
    let fake = Fake::start(task(None, None));
    fake.state().mode = Mode::Fixed(Work::Run {
        task: task(None, Some(run)),
    });
    let mut node = Node::start_with(&fake, &[(env::LOG_FLUSH_MS, "600000")]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fake
        .state()
        .reports()
        .contains(&Report::Started { phase: Phase::Run })
    {
        assert!(Instant::now() < deadline, "{}", node.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(fake.state().chunks(Phase::Run).is_empty(), "still batching");
    kill(node.pid(), Signal::SIGTERM).unwrap();
    assert_eq!(node.wait(Duration::from_secs(10)).code(), Some(0));
    let state = fake.state();
    assert_eq!(state.log(Phase::Run), "before\n");
    assert!(
        !state
            .reports()
            .iter()
            .any(|r| matches!(r, Report::Exited { .. })),
        "a killed command's end is not reported: {:?}",
        state.reports()
    );
}

#[test]
fn polls_name_the_started_phase_and_continue_leaves_it_running() {
    let fake = Fake::start(task(None, None));
    fake.state().mode = Mode::Fixed(Work::Run {
        task: task(None, Some("sleep 0.5; echo done")),
    });
    let mut node = Node::start(&fake);
    fake.wait_until(Duration::from_secs(5), "run starts", |s| {
        s.polls.iter().any(|p| p.as_deref() == Some("run"))
    });
    fake.state().mode = Mode::Fixed(Work::Continue);
    fake.wait_until(Duration::from_secs(5), "run exits", |s| {
        s.reports()
            .iter()
            .any(|r| matches!(r, Report::Exited { .. }))
    });
    fake.state().mode = Mode::Fixed(Work::Stop);
    assert_eq!(node.wait(Duration::from_secs(5)).code(), Some(0));
    let state = fake.state();
    assert_eq!(
        state.polls[0], None,
        "nothing started before the first poll"
    );
    assert_eq!(state.log(Phase::Run), "done\n");
    let runs = state
        .reports()
        .iter()
        .filter(|r| **r == Report::Started { phase: Phase::Run })
        .count();
    assert_eq!(runs, 1, "Continue never starts the phase again");
}
