//! Table-driven tests of `step`: one row per rule, one line of snapshot per row.
//!
//! Why one file of this length: it is the table of `step`'s rules, one row per rule, read
//! in the order the rules are written; splitting it would hide a missing row.
//!
//! A row is a starting record (built like prose), the events fed to it in order, and a line
//! showing the job's status before and after, the counters that moved, and the actions of the
//! last step. `UPDATE_EXPECT=1 cargo test -p shared` rewrites the snapshots. The tables skip
//! rustfmt so that every case stays on one line.

use std::fmt::Write as _;
use std::time::Duration;

use expect_test::{Expect, expect};

use super::step;
use crate::clock::Timestamp;
use crate::job::builder::T0;
use crate::job::{Action, JobEvent, JobRecord, JobStatus, LaunchFailure, Phase};
use crate::spec::{RecoveryStrategy, TaskLimits};

/// When every row's events happen, unless a row says otherwise: ten minutes after submission.
const NOW: Timestamp = Timestamp::from_secs(1_700_000_600);

struct Row {
    label: &'static str,
    job: JobRecord,
    events: Vec<JobEvent>,
}

fn row(label: &'static str, job: JobRecord, events: &[JobEvent]) -> Row {
    Row {
        label,
        job,
        events: events.to_vec(),
    }
}

fn check(rows: Vec<Row>, expect: &Expect) {
    let mut out = String::new();
    for row in rows {
        let before = row.job.status();
        let mut job = row.job;
        let mut actions = Vec::new();
        for event in row.events {
            let next = step(&job, event, NOW);
            job = next.next;
            actions = next.actions;
        }
        let _ = writeln!(out, "{:<46} {}", row.label, summary(before, &job, &actions));
    }
    expect.assert_eq(&out);
}

fn summary(before: JobStatus, job: &JobRecord, actions: &[Action]) -> String {
    let mut s = format!("{before} → {}", job.status());
    if job.tasks.len() > 1 {
        let tasks: Vec<&str> = job.tasks.iter().map(|t| t.status.as_str()).collect();
        let _ = write!(s, " [{}]", tasks.join(" "));
    }
    let task = &job.tasks[job.current_task];
    if task.recoveries > 0 {
        let _ = write!(s, " recoveries={}", task.recoveries);
    }
    if task.restarts > 0 {
        let _ = write!(s, " restarts={}", task.restarts);
    }
    let shown: Vec<String> = actions.iter().filter_map(action).collect();
    if !shown.is_empty() {
        let _ = write!(s, " | {}", shown.join(", "));
    }
    s
}

fn action(action: &Action) -> Option<String> {
    Some(match action {
        Action::LaunchCluster {
            cluster, candidate, ..
        } => format!(
            "launch {cluster}@{}/{}/{}",
            candidate.cloud.id(),
            candidate.region,
            candidate.zone
        ),
        Action::TerminateCluster { cluster, .. } => format!("terminate {cluster}"),
        Action::RunTask { cluster, .. } => format!("run {cluster}"),
        Action::StartNextTask { task } => format!("next-task {task}"),
        Action::Requeue { after, .. } => format!("requeue {:.1}s", after.as_secs_f64()),
        Action::ScheduleLimit { at } => format!("timer +{}s", at.since(NOW).as_secs()),
        Action::EmitEvent(_) => return None,
    })
}

fn launched(c: &str) -> JobEvent {
    JobEvent::ClusterLaunched { cluster: c.into() }
}
fn failed(c: &str, failure: LaunchFailure) -> JobEvent {
    JobEvent::LaunchFailed {
        cluster: c.into(),
        failure,
        message: "InsufficientInstanceCapacity".into(),
    }
}
fn no_capacity(c: &str) -> JobEvent {
    failed(c, LaunchFailure::NoCapacity)
}
fn ready(c: &str) -> JobEvent {
    JobEvent::NodeReady { cluster: c.into() }
}
fn setup_started(c: &str) -> JobEvent {
    JobEvent::SetupStarted { cluster: c.into() }
}
fn exited(c: &str, phase: Phase, codes: &[i32]) -> JobEvent {
    JobEvent::TaskExited {
        cluster: c.into(),
        phase,
        codes: codes.to_vec(),
    }
}
fn preempted(c: &str) -> JobEvent {
    JobEvent::Preempted { cluster: c.into() }
}
fn heartbeat_lost(c: &str) -> JobEvent {
    JobEvent::HeartbeatLost { cluster: c.into() }
}
fn terminated(c: &str) -> JobEvent {
    JobEvent::ClusterTerminated { cluster: c.into() }
}
fn controller_failed() -> JobEvent {
    JobEvent::ControllerFailed {
        reason: "state table unreachable".into(),
    }
}
use JobEvent::{BackoffElapsed, CancelRequested, CapacityFreed, LimitDue, Submitted};

fn job() -> JobRecord {
    JobRecord::test()
}

#[test]
#[rustfmt::skip]
fn launching() {
    let secs = |s| NOW.plus(Duration::from_secs(s));
    check(
        vec![
            row("submit: launch the cheapest candidate", job(), &[Submitted]),
            row("submit twice: no-op", job().starting(), &[Submitted]),
            row("cluster launched: still STARTING", job().starting(), &[launched("train-1-1")]),
            row("node ready: RUNNING, hand over the task", job().starting().launched(), &[ready("train-1-1")]),
            row("setup before node ready: RUNNING", job().starting(), &[setup_started("train-1-1")]),
            row("no capacity: next candidate", job().starting(), &[no_capacity("train-1-1")]),
            row("quota: next candidate", job().starting().attempt(2).tried(&[0, 1]), &[failed("train-1-2", LaunchFailure::Quota)]),
            row("known full: next candidate, nothing to tear down", job().starting(), &[failed("train-1-1", LaunchFailure::KnownFull)]),
            row("never ready: torn down, next candidate", job().starting().launched(), &[failed("train-1-1", LaunchFailure::NeverReady)]),
            row("region unavailable: next candidate", job().starting(), &[failed("train-1-1", LaunchFailure::Unavailable)]),
            row("every candidate's region unavailable: FAILED_PRECHECKS", job().starting().attempt(4).tried(&[0, 1, 2, 3]).unavailable(&[0, 1, 2]), &[failed("train-1-4", LaunchFailure::Unavailable)]),
            row("some unavailable, the rest full: back off", job().starting().attempt(4).tried(&[0, 1, 2, 3]).unavailable(&[0, 1]), &[no_capacity("train-1-4")]),
            row("all tried: back off in PENDING (60 s ±40%)", job().starting().attempt(4).tried(&[0, 1, 2, 3]), &[no_capacity("train-1-4")]),
            row("third round: longer backoff (154 s ±40%)", job().starting().attempt(4).tried(&[0, 1, 2, 3]).rounds(2), &[no_capacity("train-1-4")]),
            row("backoff over: walk again, cheapest first", job().in_backoff(secs(0), 1).attempt(4), &[BackoffElapsed]),
            row("backoff not over yet: no-op", job().in_backoff(secs(10), 1), &[BackoffElapsed]),
            row("capacity freed: walk again before the wait ends", job().in_backoff(secs(10), 1), &[CapacityFreed]),
            row("capacity freed, not waiting: no-op", job().running(), &[CapacityFreed]),
            row("bad credentials: skip that cloud, next cloud", job().starting(), &[failed("train-1-1", LaunchFailure::Auth)]),
            row("bad credentials on the last cloud: FAILED_PRECHECKS", job().starting().attempt(4).tried(&[0, 1, 2, 3]).unavailable(&[0, 1, 2]), &[failed("train-1-4", LaunchFailure::Auth)]),
            row("bad credentials, others were full: back off", job().starting().attempt(4).tried(&[0, 1, 2, 3]), &[failed("train-1-4", LaunchFailure::Auth)]),
            row("invalid request: FAILED_PRECHECKS", job().starting(), &[failed("train-1-1", LaunchFailure::Invalid)]),
            row("no candidates at all: FAILED_PRECHECKS", job().with_candidates(&[]), &[Submitted]),
            row("failure of an abandoned launch: no-op", job().starting().attempt(2), &[no_capacity("train-1-1")]),
            row("unknown cluster reports up: tear it down", job().running(), &[launched("train-1-9")]),
            row("walk a whole round, then back off", job(), &[Submitted, no_capacity("train-1-1"), no_capacity("train-1-2"), no_capacity("train-1-3"), no_capacity("train-1-4")]),
        ],
        &expect![[r#"
            submit: launch the cheapest candidate          PENDING → STARTING | launch train-1-1@aws/us-east-1/us-east-1a
            submit twice: no-op                            STARTING → STARTING
            cluster launched: still STARTING               STARTING → STARTING
            node ready: RUNNING, hand over the task        STARTING → RUNNING | run train-1-1
            setup before node ready: RUNNING               STARTING → RUNNING
            no capacity: next candidate                    STARTING → STARTING | terminate train-1-1, launch train-1-2@aws/us-east-1/us-east-1b
            quota: next candidate                          STARTING → STARTING | terminate train-1-2, launch train-1-3@aws/us-west-2/us-west-2a
            known full: next candidate, nothing to tear down STARTING → STARTING | launch train-1-2@aws/us-east-1/us-east-1b
            never ready: torn down, next candidate         STARTING → STARTING | terminate train-1-1, launch train-1-2@aws/us-east-1/us-east-1b
            region unavailable: next candidate             STARTING → STARTING | terminate train-1-1, launch train-1-2@aws/us-east-1/us-east-1b
            every candidate's region unavailable: FAILED_PRECHECKS STARTING → FAILED_PRECHECKS | terminate train-1-4
            some unavailable, the rest full: back off      STARTING → PENDING | terminate train-1-4, requeue 52.4s
            all tried: back off in PENDING (60 s ±40%)     STARTING → PENDING | terminate train-1-4, requeue 52.4s
            third round: longer backoff (154 s ±40%)       STARTING → PENDING | terminate train-1-4, requeue 149.0s
            backoff over: walk again, cheapest first       PENDING → STARTING | launch train-1-5@aws/us-east-1/us-east-1a
            backoff not over yet: no-op                    PENDING → PENDING
            capacity freed: walk again before the wait ends PENDING → STARTING | launch train-1-2@aws/us-east-1/us-east-1a
            capacity freed, not waiting: no-op             RUNNING → RUNNING
            bad credentials: skip that cloud, next cloud   STARTING → STARTING | terminate train-1-1, launch train-1-2@gcp/us-central1/us-central1-a
            bad credentials on the last cloud: FAILED_PRECHECKS STARTING → FAILED_PRECHECKS | terminate train-1-4
            bad credentials, others were full: back off    STARTING → PENDING | terminate train-1-4, requeue 52.4s
            invalid request: FAILED_PRECHECKS              STARTING → FAILED_PRECHECKS | terminate train-1-1
            no candidates at all: FAILED_PRECHECKS         PENDING → FAILED_PRECHECKS
            failure of an abandoned launch: no-op          STARTING → STARTING
            unknown cluster reports up: tear it down       RUNNING → RUNNING | terminate train-1-9
            walk a whole round, then back off              PENDING → PENDING | terminate train-1-4, requeue 52.4s
        "#]],
    );
}

#[test]
#[rustfmt::skip]
fn recovery() {
    let failover = || job().strategy(RecoveryStrategy::Failover);
    check(
        vec![
            row("preempted (EAGER): another region first", job().running(), &[preempted("train-1-1")]),
            row("preempted (FAILOVER): same region first", failover().running(), &[preempted("train-1-1")]),
            row("preempted in us-west-2 (EAGER): us-east-1", job().running().on_candidate(2), &[preempted("train-1-1")]),
            row("preempted in us-west-2 (FAILOVER): same", failover().running().on_candidate(2), &[preempted("train-1-1")]),
            row("heartbeat lost: recover as preempted", job().running(), &[heartbeat_lost("train-1-1")]),
            row("preemption never counts against restarts", job().max_restarts(0).running().restarts(0), &[preempted("train-1-1"), launched("train-1-2"), ready("train-1-2"), preempted("train-1-2")]),
            row("EAGER: other regions, then the lost one", job().running(), &[preempted("train-1-1"), no_capacity("train-1-2"), no_capacity("train-1-3")]),
            row("FAILOVER: same region, then the others", failover().running(), &[preempted("train-1-1"), no_capacity("train-1-2"), no_capacity("train-1-3")]),
            row("recovery finds nothing: back off RECOVERING", job().running(), &[preempted("train-1-1"), no_capacity("train-1-2"), no_capacity("train-1-3"), no_capacity("train-1-4"), no_capacity("train-1-5")]),
            row("recovery backoff over: walk again", job().recovering().in_backoff(NOW, 1), &[BackoffElapsed]),
            row("recovered: RUNNING again", job().recovering().launched(), &[ready("train-1-2")]),
            row("lost while booting: next candidate, uncounted", job().starting().launched(), &[preempted("train-1-1")]),
            row("preemption of an old cluster: no-op", job().running().attempt(2), &[preempted("train-1-1")]),
        ],
        &expect![[r#"
            preempted (EAGER): another region first        RUNNING → RECOVERING recoveries=1 | terminate train-1-1, launch train-1-2@aws/us-west-2/us-west-2a
            preempted (FAILOVER): same region first        RUNNING → RECOVERING recoveries=1 | terminate train-1-1, launch train-1-2@aws/us-east-1/us-east-1a
            preempted in us-west-2 (EAGER): us-east-1      RUNNING → RECOVERING recoveries=1 | terminate train-1-1, launch train-1-2@aws/us-east-1/us-east-1a
            preempted in us-west-2 (FAILOVER): same        RUNNING → RECOVERING recoveries=1 | terminate train-1-1, launch train-1-2@aws/us-west-2/us-west-2a
            heartbeat lost: recover as preempted           RUNNING → RECOVERING recoveries=1 | terminate train-1-1, launch train-1-2@aws/us-west-2/us-west-2a
            preemption never counts against restarts       RUNNING → RECOVERING recoveries=2 | terminate train-1-2, launch train-1-3@aws/us-east-1/us-east-1a
            EAGER: other regions, then the lost one        RUNNING → RECOVERING recoveries=1 | terminate train-1-3, launch train-1-4@aws/us-east-1/us-east-1a
            FAILOVER: same region, then the others         RUNNING → RECOVERING recoveries=1 | terminate train-1-3, launch train-1-4@aws/us-west-2/us-west-2a
            recovery finds nothing: back off RECOVERING    RUNNING → RECOVERING recoveries=1 | terminate train-1-5, requeue 52.4s
            recovery backoff over: walk again              RECOVERING → RECOVERING recoveries=1 | launch train-1-3@aws/us-east-1/us-east-1a
            recovered: RUNNING again                       RECOVERING → RUNNING recoveries=1 | run train-1-2
            lost while booting: next candidate, uncounted  STARTING → STARTING | terminate train-1-1, launch train-1-2@aws/us-east-1/us-east-1b
            preemption of an old cluster: no-op            RUNNING → RUNNING
        "#]],
    );
}

#[test]
#[rustfmt::skip]
fn user_code() {
    let running = |phase| job().running().in_phase(phase);
    check(
        vec![
            row("run exits 0: SUCCEEDED, tear down", running(Phase::Run), &[exited("train-1-1", Phase::Run, &[0])]),
            row("setup exits 0: still RUNNING", running(Phase::Setup), &[exited("train-1-1", Phase::Setup, &[0])]),
            row("run fails, no restarts: FAILED", running(Phase::Run), &[exited("train-1-1", Phase::Run, &[1])]),
            row("setup fails, no restarts: FAILED_SETUP", running(Phase::Setup), &[exited("train-1-1", Phase::Setup, &[2])]),
            row("run fails, restarts left: new cluster", job().max_restarts(2).running(), &[exited("train-1-1", Phase::Run, &[1])]),
            row("setup fails, restarts left: new cluster", job().max_restarts(1).running(), &[exited("train-1-1", Phase::Setup, &[1])]),
            row("restarts used up: FAILED", job().max_restarts(1).running().restarts(1), &[exited("train-1-1", Phase::Run, &[1])]),
            row("exit code 29 listed: restart, uncounted", job().recover_on(&[29]).running(), &[exited("train-1-1", Phase::Run, &[29])]),
            row("one node exits 29, one 0: restart", job().recover_on(&[29]).running(), &[exited("train-1-1", Phase::Run, &[0, 29])]),
            row("listed code ignores the restart limit", job().recover_on(&[29]).max_restarts(1).running().restarts(1), &[exited("train-1-1", Phase::Run, &[29])]),
            row("unlisted code with a list: FAILED", job().recover_on(&[29]).running(), &[exited("train-1-1", Phase::Run, &[30])]),
            row("one node fails, one succeeds: FAILED", job().running(), &[exited("train-1-1", Phase::Run, &[0, 1])]),
            row("exit before node ready: counted as ran", job().starting().launched(), &[exited("train-1-1", Phase::Run, &[0])]),
        ],
        &expect![[r#"
            run exits 0: SUCCEEDED, tear down              RUNNING → SUCCEEDED | terminate train-1-1
            setup exits 0: still RUNNING                   RUNNING → RUNNING
            run fails, no restarts: FAILED                 RUNNING → FAILED | terminate train-1-1
            setup fails, no restarts: FAILED_SETUP         RUNNING → FAILED_SETUP | terminate train-1-1
            run fails, restarts left: new cluster          RUNNING → RECOVERING recoveries=1 restarts=1 | terminate train-1-1, launch train-1-2@aws/us-west-2/us-west-2a
            setup fails, restarts left: new cluster        RUNNING → RECOVERING recoveries=1 restarts=1 | terminate train-1-1, launch train-1-2@aws/us-west-2/us-west-2a
            restarts used up: FAILED                       RUNNING → FAILED restarts=1 | terminate train-1-1
            exit code 29 listed: restart, uncounted        RUNNING → RECOVERING recoveries=1 | terminate train-1-1, launch train-1-2@aws/us-west-2/us-west-2a
            one node exits 29, one 0: restart              RUNNING → RECOVERING recoveries=1 | terminate train-1-1, launch train-1-2@aws/us-west-2/us-west-2a
            listed code ignores the restart limit          RUNNING → RECOVERING recoveries=1 restarts=1 | terminate train-1-1, launch train-1-2@aws/us-west-2/us-west-2a
            unlisted code with a list: FAILED              RUNNING → FAILED | terminate train-1-1
            one node fails, one succeeds: FAILED           RUNNING → FAILED | terminate train-1-1
            exit before node ready: counted as ran         STARTING → SUCCEEDED | terminate train-1-1
        "#]],
    );
}

#[test]
#[rustfmt::skip]
fn pipelines() {
    let pipe = |n| job().tasks(n);
    check(
        vec![
            row("task 0 succeeds: task 1 starts", pipe(3).running(), &[exited("train-0-1-1", Phase::Run, &[0])]),
            row("last task succeeds: job SUCCEEDED", pipe(2).at_task(1).running(), &[exited("train-1-1-1", Phase::Run, &[0])]),
            row("task fails: later tasks CANCELLED", pipe(4).at_task(1).running(), &[exited("train-1-1-1", Phase::Setup, &[1])]),
            row("prechecks fail: later tasks CANCELLED", pipe(3).starting(), &[failed("train-0-1-1", LaunchFailure::Invalid)]),
            row("failing task retries first", pipe(3).max_restarts(1).running(), &[exited("train-0-1-1", Phase::Run, &[1])]),
            row("recovery applies to the current task only", pipe(2).at_task(1).running(), &[preempted("train-1-1-1")]),
            row("a task with no run succeeds unlaunched", job().without_run(0), &[Submitted]),
            row("a next task with no run is skipped", pipe(3).without_run(1).running(), &[exited("train-0-1-1", Phase::Run, &[0])]),
        ],
        &expect![[r#"
            task 0 succeeds: task 1 starts                 RUNNING → STARTING [SUCCEEDED STARTING PENDING] | terminate train-0-1-1, next-task 1, launch train-1-1-1@aws/us-east-1/us-east-1a
            last task succeeds: job SUCCEEDED              RUNNING → SUCCEEDED [SUCCEEDED SUCCEEDED] | terminate train-1-1-1
            task fails: later tasks CANCELLED              RUNNING → FAILED_SETUP [SUCCEEDED FAILED_SETUP CANCELLED CANCELLED] | terminate train-1-1-1
            prechecks fail: later tasks CANCELLED          STARTING → FAILED_PRECHECKS [FAILED_PRECHECKS CANCELLED CANCELLED] | terminate train-0-1-1
            failing task retries first                     RUNNING → RECOVERING [RECOVERING PENDING PENDING] recoveries=1 restarts=1 | terminate train-0-1-1, launch train-0-1-2@aws/us-west-2/us-west-2a
            recovery applies to the current task only      RUNNING → RECOVERING [SUCCEEDED RECOVERING] recoveries=1 | terminate train-1-1-1, launch train-1-1-2@aws/us-west-2/us-west-2a
            a task with no run succeeds unlaunched         PENDING → SUCCEEDED
            a next task with no run is skipped             RUNNING → STARTING [SUCCEEDED SUCCEEDED STARTING] | terminate train-0-1-1, next-task 1, next-task 2, launch train-2-1-1@aws/us-east-1/us-east-1a
        "#]],
    );
}

#[test]
#[rustfmt::skip]
fn cancel() {
    check(
        vec![
            row("PENDING, nothing launched: CANCELLED", job(), &[CancelRequested]),
            row("STARTING: CANCELLING, tear down", job().starting(), &[CancelRequested]),
            row("RUNNING: CANCELLING, tear down", job().running(), &[CancelRequested]),
            row("RECOVERING: CANCELLING, tear down", job().recovering(), &[CancelRequested]),
            row("in backoff: CANCELLED at once", job().in_backoff(NOW, 1), &[CancelRequested]),
            row("pipeline: every unfinished task", job().tasks(3).at_task(1).running(), &[CancelRequested]),
            row("cluster gone: CANCELLED", job().tasks(2).cancelling(), &[terminated("train-0-1-1")]),
            row("another cluster gone: still CANCELLING", job().cancelling(), &[terminated("train-1-7")]),
            row("cancel again: tear down again", job().cancelling(), &[CancelRequested]),
            row("launch lands after cancel: tear it down", job().starting().cancelling(), &[launched("train-1-1")]),
            row("task exits while cancelling: still CANCELLING", job().cancelling(), &[exited("train-1-1", Phase::Run, &[0])]),
            row("finished job: no-op", job().succeeded(), &[CancelRequested]),
        ],
        &expect![[r#"
            PENDING, nothing launched: CANCELLED           PENDING → CANCELLED
            STARTING: CANCELLING, tear down                STARTING → CANCELLING | terminate train-1-1
            RUNNING: CANCELLING, tear down                 RUNNING → CANCELLING | terminate train-1-1
            RECOVERING: CANCELLING, tear down              RECOVERING → CANCELLING recoveries=1 | terminate train-1-2
            in backoff: CANCELLED at once                  PENDING → CANCELLED
            pipeline: every unfinished task                RUNNING → CANCELLING [SUCCEEDED CANCELLING CANCELLING] | terminate train-1-1-1
            cluster gone: CANCELLED                        CANCELLING → CANCELLED [CANCELLED CANCELLED]
            another cluster gone: still CANCELLING         CANCELLING → CANCELLING
            cancel again: tear down again                  CANCELLING → CANCELLING | terminate train-1-1
            launch lands after cancel: tear it down        CANCELLING → CANCELLING | terminate train-1-1
            task exits while cancelling: still CANCELLING  CANCELLING → CANCELLING | terminate train-1-1
            finished job: no-op                            SUCCEEDED → SUCCEEDED
        "#]],
    );
}

#[test]
#[rustfmt::skip]
fn finished_and_controller_failures() {
    check(
        vec![
            row("events after the end: no-op", job().succeeded(), &[preempted("train-1-1")]),
            row("a cluster up after the end: tear it down", job().succeeded(), &[ready("train-1-5")]),
            row("controller fails: FAILED_CONTROLLER", job().running(), &[controller_failed()]),
            row("controller fails after the end: overrides", job().running(), &[exited("train-1-1", Phase::Run, &[1]), controller_failed()]),
            row("controller fails mid-pipeline", job().tasks(3).running(), &[controller_failed()]),
        ],
        &expect![[r#"
            events after the end: no-op                    SUCCEEDED → SUCCEEDED
            a cluster up after the end: tear it down       SUCCEEDED → SUCCEEDED | terminate train-1-5
            controller fails: FAILED_CONTROLLER            RUNNING → FAILED_CONTROLLER | terminate train-1-1
            controller fails after the end: overrides      RUNNING → FAILED_CONTROLLER
            controller fails mid-pipeline                  RUNNING → FAILED_CONTROLLER [FAILED_CONTROLLER CANCELLED CANCELLED] | terminate train-0-1-1
        "#]],
    );
}

#[test]
fn controller_failure_after_the_end_keeps_the_first_reason() {
    let failed = step(&job().running(), exited("train-1-1", Phase::Run, &[1]), NOW).next;
    let overridden = step(&failed, controller_failed(), NOW).next;
    let reason = overridden.tasks[0].failure_reason.as_deref().unwrap();
    assert!(
        reason.starts_with(
            "state table unreachable. Previously: The task's run failed with exit code(s) [1]."
        ),
        "{reason}"
    );
}

/// The queue's columns across a launch, a preemption, a recovery and success.
#[test]
fn timestamps_and_job_duration_exclude_recovery() {
    let at = |s: u64| T0.plus(Duration::from_secs(s));
    let mut job = JobRecord::test();
    for (secs, event) in [
        (0, Submitted),
        (30, launched("train-1-1")),
        (60, ready("train-1-1")),
        (160, preempted("train-1-1")),
        (300, launched("train-1-2")),
        (400, ready("train-1-2")),
        (500, exited("train-1-2", Phase::Run, &[0])),
    ] {
        job = step(&job, event, at(secs)).next;
    }
    assert_eq!(job.status(), JobStatus::Succeeded);
    assert_eq!(job.submitted_at, T0);
    assert_eq!(job.started_at(), Some(at(60)));
    assert_eq!(job.ended_at(), Some(at(500)));
    assert_eq!(job.total_duration(at(9999)), Duration::from_secs(500));
    // Ran 60..160 and 400..500; the 240 s of recovering do not count.
    assert_eq!(job.job_duration(at(9999)), Duration::from_secs(200));
    assert_eq!(job.recoveries(), 1);
}

#[test]
fn job_duration_grows_while_running_and_freezes_while_recovering() {
    let at = |s: u64| T0.plus(Duration::from_secs(s));
    let job = JobRecord::test().running();
    assert_eq!(job.job_duration(at(100)), Duration::from_secs(40));
    let recovering = step(&job, preempted("train-1-1"), at(100)).next;
    assert_eq!(recovering.job_duration(at(100)), Duration::from_secs(40));
    assert_eq!(recovering.job_duration(at(900)), Duration::from_secs(40));
}

#[test]
fn same_inputs_same_outputs() {
    let job = JobRecord::test().starting().attempt(4).tried(&[0, 1, 2, 3]);
    let a = step(&job, no_capacity("train-1-4"), NOW);
    let b = step(&job, no_capacity("train-1-4"), NOW);
    assert_eq!(a, b);
    let other = step(&job.clone().id(2), no_capacity("train-2-4"), NOW);
    assert_ne!(
        a.next.next_attempt_at, other.next.next_attempt_at,
        "jitter differs per job"
    );
}

#[test]
fn unchanged_steps_say_so() {
    let job = JobRecord::test().running();
    let s = step(&job, preempted("train-1-9"), NOW);
    assert!(!s.changed);
    assert!(s.actions.is_empty());
    assert!(step(&job, CancelRequested, NOW).changed);
}

/// The controller log a job leaves behind (`jobs logs --controller`).
#[test]
fn controller_log() {
    let mut job = JobRecord::test().recover_on(&[29]);
    let mut log = String::new();
    for event in [
        Submitted,
        no_capacity("train-1-1"),
        launched("train-1-2"),
        ready("train-1-2"),
        exited("train-1-2", Phase::Run, &[29]),
        launched("train-1-3"),
        ready("train-1-3"),
        preempted("train-1-3"),
        CancelRequested,
        terminated("train-1-4"),
    ] {
        let s = step(&job, event, NOW);
        for action in &s.actions {
            if let Action::EmitEvent(e) = action {
                let _ = writeln!(log, "[{}] {}", e.status, e.message);
            }
        }
        job = s.next;
    }
    expect![[r#"
        [STARTING] Submitted managed job 1 (task: 0, name: train); SKYPILOT_TASK_ID: sky-managed-2023-11-14-22-13-20-000000_train_1-0
        [STARTING] Launching train-1-1 on aws/us-east-1/us-east-1a m6i.large[Spot] (candidate 1 of 4 in this round).
        [STARTING] Launch of train-1-1 on aws/us-east-1/us-east-1a m6i.large[Spot] failed (no capacity): InsufficientInstanceCapacity
        [STARTING] Launching train-1-2 on aws/us-east-1/us-east-1b m6i.large[Spot] (candidate 2 of 4 in this round).
        [STARTING] Cluster launched: train-1-2 (aws/us-east-1/us-east-1b m6i.large[Spot]).
        [RUNNING] Job started on train-1-2.
        [RUNNING] Attempt 2 on aws/us-east-1/us-east-1b m6i.large[Spot] ran its machines 0 s: $0.00 (estimate).
        [RECOVERING] Exit code(s) [29] matched recover_on_exit_codes; recovering on a new cluster (EAGER_NEXT_REGION).
        [RECOVERING] Launching train-1-3 on aws/us-west-2/us-west-2a m6i.large[Spot] (candidate 1 of 4 in this round).
        [RECOVERING] Cluster launched: train-1-3 (aws/us-west-2/us-west-2a m6i.large[Spot]).
        [RUNNING] Recovered: the task is running on train-1-3.
        [RUNNING] Attempt 3 on aws/us-west-2/us-west-2a m6i.large[Spot] ran its machines 0 s: $0.00 (estimate).
        [RECOVERING] Cluster train-1-3 was preempted; recovering on a new cluster (EAGER_NEXT_REGION).
        [RECOVERING] Launching train-1-4 on aws/us-east-1/us-east-1a m6i.large[Spot] (candidate 1 of 4 in this round).
        [CANCELLING] Cancel requested; tearing down train-1-4.
        [CANCELLED] Cluster train-1-4 is gone; the job is cancelled.
        [CANCELLED] The job's machines cost $0.00 in all (an estimate from catalog prices).
    "#]].assert_eq(&log);
}

/// Node agents can answer before the cloud's answer is applied: the launch is logged once
/// either way (scripts and ported smoke tests look for "Cluster launched").
#[test]
fn a_launch_is_logged_once_whichever_event_comes_first() {
    for order in [
        [launched("train-1-1"), ready("train-1-1")],
        [ready("train-1-1"), launched("train-1-1")],
    ] {
        let mut job = step(&JobRecord::test(), Submitted, NOW).next;
        let mut lines = Vec::new();
        for event in order.clone() {
            let s = step(&job, event, NOW);
            for action in &s.actions {
                if let Action::EmitEvent(e) = action {
                    lines.push(e.message.clone());
                }
            }
            job = s.next;
        }
        let launched = lines
            .iter()
            .filter(|l| l.starts_with("Cluster launched: train-1-1 ("))
            .count();
        assert_eq!(launched, 1, "{order:?}: {lines:?}");
        assert_eq!(job.status(), JobStatus::Running);
    }
}

#[test]
#[rustfmt::skip]
fn limits() {
    let mins = |m| Some(Duration::from_mins(m));
    let duration = |m| TaskLimits { max_duration: mins(m), ..TaskLimits::default() };
    let attempt = |m| TaskLimits { max_attempt_duration: mins(m), ..TaskLimits::default() };
    let pending = |m| TaskLimits { max_pending: mins(m), ..TaskLimits::default() };
    let later = NOW.plus(Duration::from_secs(10));
    check(
        vec![
            row("max_duration reached: FAILED, torn down", job().running().limits(duration(5)), &[LimitDue]),
            row("max_duration not reached: early timer, no-op", job().running().limits(duration(60)), &[LimitDue]),
            row("attempt limit reached: FAILED", job().running().limits(attempt(5)), &[LimitDue]),
            row("pending limit in a backoff: FAILED_NO_RESOURCE", job().in_backoff(later, 1).limits(pending(5)), &[LimitDue]),
            row("pending limit while launching: torn down", job().starting().limits(pending(5)), &[LimitDue]),
            row("pending limit does not apply while running", job().running().limits(pending(5)), &[LimitDue]),
            row("cost cap reached ($0.60 of $0.50): FAILED", job().running().costing(3.6).max_cost(0.5), &[LimitDue]),
            row("cost cap not reached: no-op", job().running().costing(3.6).max_cost(1.0), &[LimitDue]),
            row("cancelling: limits do not apply", job().cancelling().limits(duration(5)), &[LimitDue]),
            row("submit with a pending limit: timer at its end", job().limits(pending(5)), &[Submitted]),
            row("submit with a cost cap: timer when it is reached", job().max_cost(1.0), &[Submitted]),
            row("running with max_duration: timer at its end", job().starting().launched().limits(duration(60)), &[ready("train-1-1")]),
            row("preempted under NO_RECOVERY: FAILED", job().running().strategy(RecoveryStrategy::NoRecovery), &[preempted("train-1-1")]),
            row("lost under NO_RECOVERY: FAILED", job().running().strategy(RecoveryStrategy::NoRecovery), &[heartbeat_lost("train-1-1")]),
            row("NO_RECOVERY still restarts on user errors", job().running().in_phase(Phase::Run).strategy(RecoveryStrategy::NoRecovery).max_restarts(1), &[exited("train-1-1", Phase::Run, &[1])]),
            row("max_recoveries 1, none used: recover", job().running().max_recoveries(1), &[preempted("train-1-1")]),
            row("max_recoveries 1, used: FAILED", job().running().max_recoveries(1).lost_recoveries(1), &[preempted("train-1-1")]),
            row("restarts do not count against max_recoveries", job().running().in_phase(Phase::Run).max_recoveries(0).max_restarts(1), &[exited("train-1-1", Phase::Run, &[1])]),
            row("a dependency never met: CANCELLED with the reason", job().depends_on("3:afterok"), &[JobEvent::DependencyNeverMet { reason: "Job 3 it depends on ended FAILED".into() }]),
            row("a dependency never met once started: no-op", job().depends_on("3").starting(), &[JobEvent::DependencyNeverMet { reason: "late".into() }]),
            row("backoff over, pending limit past: no launch", job().in_backoff(NOW, 1).limits(pending(5)), &[BackoffElapsed]),
            row("preempted past max_duration: FAILED, no recovery", job().running().limits(duration(5)), &[preempted("train-1-1")]),
            row("a run that ended past its limit still succeeds", job().running().in_phase(Phase::Run).limits(duration(5)), &[exited("train-1-1", Phase::Run, &[0])]),
            row("an armed timer before the deadline: none more", job().starting().launched().limits(duration(60)).armed(NOW.plus(Duration::from_mins(1))), &[ready("train-1-1")]),
            row("an armed timer after the deadline: an earlier one", job().starting().launched().limits(duration(60)).armed(NOW.plus(Duration::from_hours(2))), &[ready("train-1-1")]),
        ],
        &expect![[r#"
            max_duration reached: FAILED, torn down        RUNNING → FAILED | terminate train-1-1
            max_duration not reached: early timer, no-op   RUNNING → RUNNING | timer +3060s
            attempt limit reached: FAILED                  RUNNING → FAILED | terminate train-1-1
            pending limit in a backoff: FAILED_NO_RESOURCE PENDING → FAILED_NO_RESOURCE
            pending limit while launching: torn down       STARTING → FAILED_NO_RESOURCE | terminate train-1-1
            pending limit does not apply while running     RUNNING → RUNNING
            cost cap reached ($0.60 of $0.50): FAILED      RUNNING → FAILED | terminate train-1-1
            cost cap not reached: no-op                    RUNNING → RUNNING | timer +400s
            cancelling: limits do not apply                CANCELLING → CANCELLING
            submit with a pending limit: timer at its end  PENDING → STARTING | launch train-1-1@aws/us-east-1/us-east-1a, timer +300s
            submit with a cost cap: timer when it is reached PENDING → STARTING | launch train-1-1@aws/us-east-1/us-east-1a, timer +120000s
            running with max_duration: timer at its end    STARTING → RUNNING | run train-1-1, timer +3600s
            preempted under NO_RECOVERY: FAILED            RUNNING → FAILED | terminate train-1-1
            lost under NO_RECOVERY: FAILED                 RUNNING → FAILED | terminate train-1-1
            NO_RECOVERY still restarts on user errors      RUNNING → RECOVERING recoveries=1 restarts=1 | terminate train-1-1, launch train-1-2@aws/us-east-1/us-east-1a
            max_recoveries 1, none used: recover           RUNNING → RECOVERING recoveries=1 | terminate train-1-1, launch train-1-2@aws/us-west-2/us-west-2a
            max_recoveries 1, used: FAILED                 RUNNING → FAILED | terminate train-1-1
            restarts do not count against max_recoveries   RUNNING → RECOVERING recoveries=1 restarts=1 | terminate train-1-1, launch train-1-2@aws/us-west-2/us-west-2a
            a dependency never met: CANCELLED with the reason PENDING → CANCELLED
            a dependency never met once started: no-op     STARTING → STARTING
            backoff over, pending limit past: no launch    PENDING → FAILED_NO_RESOURCE
            preempted past max_duration: FAILED, no recovery RUNNING → FAILED | terminate train-1-1
            a run that ended past its limit still succeeds RUNNING → SUCCEEDED | terminate train-1-1
            an armed timer before the deadline: none more  STARTING → RUNNING | run train-1-1
            an armed timer after the deadline: an earlier one STARTING → RUNNING | run train-1-1, timer +3600s
        "#]],
    );
}

#[test]
fn the_ledger_follows_launches_and_teardowns() {
    let later = |s| NOW.plus(Duration::from_secs(s));
    let mut job = job();
    job = step(&job, Submitted, NOW).next;
    job = step(&job, launched("train-1-1"), later(10)).next;
    job = step(&job, ready("train-1-1"), later(20)).next;
    job = step(&job, preempted("train-1-1"), later(3600)).next;
    // No capacity: the second until the answer counts (the call may have half run).
    job = step(&job, no_capacity("train-1-2"), later(3601)).next;
    // Refused outright (a quota): no machine ran, no entry.
    job = step(&job, failed("train-1-3", LaunchFailure::Quota), later(3601)).next;
    job = step(&job, terminated("train-1-1"), later(3660)).next;
    let ledger: Vec<(String, i64, Option<i64>, bool)> = job.tasks[0]
        .attempts
        .iter()
        .map(|a| {
            (
                a.cluster.clone(),
                a.launched_at.since(NOW).as_secs().cast_signed(),
                a.ended_at.map(|e| e.since(NOW).as_secs().cast_signed()),
                a.confirmed,
            )
        })
        .collect();
    assert_eq!(
        ledger,
        vec![
            ("train-1-1".to_owned(), 0, Some(3660), true),
            ("train-1-2".to_owned(), 3600, Some(3601), false),
            ("train-1-4".to_owned(), 3601, None, false),
        ]
    );
    // 3,660 s at $0.030/h, the full us-west-2 try's second at $0.035/h, then (GCP refused by
    // its quota) the running one's 59 s back in us-east-1 at $0.030/h.
    let expected = 0.030 * 3660.0 / 3600.0 + 0.035 / 3600.0 + 0.030 * 59.0 / 3600.0;
    assert!((job.cost(later(3660)) - expected).abs() < 1e-12);
}
