//! Table-driven tests of the sweep's decision, one row per rule, like `job/step/tests.rs`:
//! a record, what the sweep saw of its cluster, and what it decides.

use std::fmt::Write as _;
use std::time::Duration;

use expect_test::{Expect, expect};

use super::{Found, Limits, World, decide};
use crate::clock::Timestamp;
use crate::facts::{ClusterFacts, ClusterRef, NodeFacts};
use crate::job::builder::T0;
use crate::job::{JobEvent, JobRecord, Phase};
use crate::provider::{ClusterHealth, ClusterState};

/// Ten minutes after submission.
const NOW: Timestamp = Timestamp::from_secs(1_700_000_600);

const LIMITS: Limits = Limits {
    heartbeat_timeout: Duration::from_secs(30),
    ready_timeout: Duration::from_mins(15),
    started_at: T0,
};

/// What the sweep saw, written short.
#[derive(Clone, Default)]
struct Saw {
    /// `None`: the listing did not have the cluster.
    health: Option<ClusterHealth>,
    unlisted: bool,
    ready: usize,
    /// The last this many ranks never said anything.
    silent: u32,
    exits: Vec<(Phase, i32)>,
    seen: Option<Timestamp>,
    started_at: Option<Timestamp>,
    waits_on_active: bool,
}

fn up() -> Saw {
    Saw {
        health: Some(ClusterHealth::Running),
        ..Saw::default()
    }
}

fn health(health: ClusterHealth) -> Saw {
    Saw {
        health: Some(health),
        ..Saw::default()
    }
}

impl Saw {
    fn ready(mut self, n: usize) -> Self {
        self.ready = n;
        self
    }
    fn silent(mut self, n: u32) -> Self {
        self.silent = n;
        self
    }
    fn exits(mut self, phase: Phase, codes: &[i32]) -> Self {
        self.exits = codes.iter().map(|c| (phase, *c)).collect();
        self
    }
    fn seen(mut self, ago: Duration) -> Self {
        self.seen = Some(Timestamp::from_millis(
            NOW.as_millis() - ago.as_millis() as i64,
        ));
        self
    }
    fn restarted(mut self, ago: Duration) -> Self {
        self.started_at = Some(Timestamp::from_millis(
            NOW.as_millis() - ago.as_millis() as i64,
        ));
        self
    }
    fn unlisted(mut self) -> Self {
        self.unlisted = true;
        self
    }
    fn waiting_on_active(mut self) -> Self {
        self.waits_on_active = true;
        self
    }
}

fn check(rows: &[(&str, JobRecord, Saw)], expect: &Expect) {
    let mut out = String::new();
    for (label, job, saw) in rows {
        let name = job.tasks[job.current_task]
            .cluster
            .clone()
            .unwrap_or_default();
        let state = saw.health.clone().map(|health| ClusterState {
            cluster: name.clone(),
            job_id: job.id,
            region: "us-east-1".into(),
            zone: "us-east-1a".into(),
            health,
            nodes: vec![],
        });
        let mut facts = ClusterFacts::empty(&ClusterRef {
            cluster: name,
            task: job.current_task,
            attempt: job.tasks[job.current_task].attempt,
        });
        let ranks = job.task_spec(job.current_task).num_nodes;
        for rank in 0..ranks - saw.silent {
            let mut node = NodeFacts {
                ready: (rank as usize) < saw.ready,
                seen: saw.seen,
                ..NodeFacts::default()
            };
            if let Some((phase, code)) = saw.exits.get(rank as usize) {
                node.phase_mut(*phase).exit = Some(*code);
            }
            facts.ranks.insert(rank, node);
        }
        let world = World {
            cluster: state.as_ref(),
            listed: !saw.unlisted,
            facts: Some(&facts),
            waits_on_active: saw.waits_on_active,
        };
        let limits = Limits {
            started_at: saw.started_at.unwrap_or(LIMITS.started_at),
            ..LIMITS
        };
        let found: Vec<String> = decide(job, &world, &limits, NOW)
            .iter()
            .map(|f| match f {
                Found::Event(e) => describe(e),
                Found::Relaunch {
                    cluster, candidate, ..
                } => format!("relaunch {cluster} on candidate {candidate}"),
            })
            .collect();
        let found = if found.is_empty() {
            "-".to_owned()
        } else {
            found.join(", ")
        };
        let _ = writeln!(out, "{label:<52} {found}");
    }
    expect.assert_eq(&out);
}

fn describe(event: &JobEvent) -> String {
    match event {
        JobEvent::TaskExited { phase, codes, .. } => format!("TaskExited {phase} {codes:?}"),
        JobEvent::LaunchFailed {
            failure, message, ..
        } => format!("LaunchFailed ({failure}): {message}"),
        other => {
            let json = serde_json::to_value(other).unwrap();
            json["type"].as_str().unwrap().to_owned()
        }
    }
}

fn job() -> JobRecord {
    JobRecord::test()
}

/// `at` ago from [`NOW`].
fn ago(at: Duration) -> Timestamp {
    Timestamp::from_millis(NOW.as_millis() - at.as_millis() as i64)
}

/// The job with the task's `config:` saying `provision_timeout` for AWS.
fn provision_timeout(mut job: JobRecord, secs: u64) -> JobRecord {
    job.pipeline.tasks[0].config =
        Some(serde_json::json!({ "aws": { "provision_timeout": secs } }));
    job
}

#[rustfmt::skip]
#[test]
fn the_sweep_closes_each_gap_once() {
    let mins = Duration::from_mins;
    let secs = Duration::from_secs;
    let preempted = ClusterHealth::Preempted { reason: "spot".into() };
    let failed = ClusterHealth::Failed { reason: "host error".into() };
    let rows = [
        ("a due backoff is re-sent", job().in_backoff(NOW, 1), Saw::default()),
        ("a due limit whose timer was lost is checked", job().running().deadline(ago(secs(1))), up().seen(secs(1))),
        ("a limit not yet due waits", job().running().deadline(NOW.plus(secs(1))), up().seen(secs(1))),
        ("a due limit in a backoff comes first", job().in_backoff(NOW, 1).deadline(NOW), Saw::default()),
        ("PENDING with nothing under way: Submitted again", job(), Saw::default()),
        ("waiting for a dependency: asked at every sweep", job().submitted(ago(secs(2))).depends_on("3:afterok"), Saw::default()),
        ("waiting for a job this sweep saw still active: not asked", job().submitted(ago(secs(2))).depends_on("3:afterok"), Saw::default().waiting_on_active()),
        ("still waiting long after submit: still not asked", job().submitted(ago(mins(10))).depends_on("3:afterok"), Saw::default().waiting_on_active()),
        ("PENDING, submitted just now: its event may be on its way", job().submitted(NOW), Saw::default()),
        ("a backoff not yet due waits", job().in_backoff(NOW.plus(mins(1)), 1), Saw::default()),
        ("nothing is judged without a listing", job().running(), Saw::default().unlisted()),
        ("a launch the cloud never saw is re-driven", job().starting(), Saw::default()),
        ("a launch decided just now may be in flight", job().submitted(NOW).starting(), Saw::default()),
        ("a cluster the answer of which was lost", job().starting(), health(ClusterHealth::Pending)),
        ("every node ready: the lost NodeReady", job().starting().launched(), up().ready(1)),
        ("one of two nodes ready: wait", job().nodes(2).starting().launched(), up().ready(1)),
        ("not all ready within the ready timeout", job().nodes(3).submitted(ago(mins(16))).starting().launched(), up().ready(1).silent(1)),
        ("still booting past the task's provision_timeout", provision_timeout(job(), 300).starting().launched(), health(ClusterHealth::Pending).silent(1)),
        ("all ready just past the timeout: ready wins", job().submitted(ago(mins(16))).starting().launched(), up().ready(1)),
        ("launched, then vanished", job().starting().launched(), Saw::default()),
        ("launched, then preempted", job().recovering().launched(), health(preempted.clone())),
        ("running, preempted", job().running(), health(preempted)),
        ("running, failed", job().running(), health(failed)),
        ("running, terminated behind our back", job().running(), health(ClusterHealth::Terminated)),
        ("running, gone from the listing", job().running(), Saw::default()),
        ("every node's setup exited 0: the lost event", job().nodes(2).running().in_phase(Phase::Setup), up().exits(Phase::Setup, &[0, 0]).seen(secs(1))),
        ("one node's setup exited 0: wait", job().nodes(2).running().in_phase(Phase::Setup), up().exits(Phase::Setup, &[0]).seen(secs(1))),
        ("one node's run failed: the task failed", job().nodes(2).running().in_phase(Phase::Run), up().exits(Phase::Run, &[3]).seen(secs(1))),
        ("run exited 0, then its machine went: the exit wins", job().running().in_phase(Phase::Run), health(ClusterHealth::Failed { reason: "node 0 exited".into() }).exits(Phase::Run, &[0]).seen(secs(1))),
        ("read in setup, the run already exited, the machine gone", job().running(), Saw::default().exits(Phase::Run, &[0]).seen(secs(1))),
        ("heard from lately", job().running().in_phase(Phase::Run), up().seen(secs(5))),
        ("silent for longer than the timeout", job().running().in_phase(Phase::Run), up().seen(mins(2))),
        ("never heard from since it started running", job().running().in_phase(Phase::Run), up()),
        ("silent, but the control plane just restarted", job().running(), up().seen(mins(2)).restarted(secs(10))),
        ("cancelling, cluster gone", job().cancelling(), Saw::default()),
        ("cancelling, cluster still up: tear down again", job().cancelling(), up()),
        ("a finished job: nothing", job().succeeded(), up()),
    ];
    check(&rows, &expect![[r#"
        a due backoff is re-sent                             backoff_elapsed
        a due limit whose timer was lost is checked          limit_due
        a limit not yet due waits                            -
        a due limit in a backoff comes first                 limit_due
        PENDING with nothing under way: Submitted again      submitted
        waiting for a dependency: asked at every sweep       submitted
        waiting for a job this sweep saw still active: not asked -
        still waiting long after submit: still not asked     -
        PENDING, submitted just now: its event may be on its way -
        a backoff not yet due waits                          -
        nothing is judged without a listing                  -
        a launch the cloud never saw is re-driven            relaunch train-1-1 on candidate 0
        a launch decided just now may be in flight           -
        a cluster the answer of which was lost               cluster_launched
        every node ready: the lost NodeReady                 node_ready
        one of two nodes ready: wait                         -
        not all ready within the ready timeout               LaunchFailed (not ready in time): 1 of 3 node(s) ready 960 s after the launch (provision timeout 900 s); node(s) 2 never reached the API (the agent did not start: check the image can run it, that the machines can reach the API over HTTPS, and their boot log); node(s) 1 reached the API but did not finish preparing (workdir, file mounts); the cloud says the machines are running
        still booting past the task's provision_timeout      LaunchFailed (not ready in time): 0 of 1 node(s) ready 600 s after the launch (provision timeout 300 s); node(s) 0 never reached the API (the agent did not start: check the image can run it, that the machines can reach the API over HTTPS, and their boot log); the cloud says the machines are still starting
        all ready just past the timeout: ready wins          node_ready
        launched, then vanished                              heartbeat_lost
        launched, then preempted                             preempted
        running, preempted                                   preempted
        running, failed                                      heartbeat_lost
        running, terminated behind our back                  heartbeat_lost
        running, gone from the listing                       heartbeat_lost
        every node's setup exited 0: the lost event          TaskExited setup [0, 0]
        one node's setup exited 0: wait                      -
        one node's run failed: the task failed               TaskExited run [3]
        run exited 0, then its machine went: the exit wins   TaskExited run [0]
        read in setup, the run already exited, the machine gone TaskExited run [0]
        heard from lately                                    -
        silent for longer than the timeout                   heartbeat_lost
        never heard from since it started running            heartbeat_lost
        silent, but the control plane just restarted         -
        cancelling, cluster gone                             cluster_terminated
        cancelling, cluster still up: tear down again        cancel_requested
        a finished job: nothing                              -
    "#]]);
}

/// A launch decided after the sweep read its jobs is not in the sweep's `wanted`: the job,
/// read again, keeps its cluster; a real orphan still goes.
#[tokio::test]
async fn a_cluster_launched_after_the_jobs_were_read_is_not_an_orphan() {
    use std::collections::{BTreeMap, BTreeSet};

    use crate::cloud::Cloud;
    use crate::testing::TestPlane;

    let mut plane = TestPlane::new().await;
    let task = "name: t\nresources:\n  infra: aws/us-east-1\nrun: x\n";
    let fresh = plane.submit("alice", task).await;
    let fresh_cluster = fresh.tasks[0].cluster.clone().unwrap();
    let ended = plane.submit("alice", task).await;
    crate::control::advance(&plane.ctx, ended.id, JobEvent::CancelRequested)
        .await
        .unwrap();
    plane.deliver().await;
    // A launch of the ended job whose answer came after its cleanup.
    let orphan = plane.stray_cluster(&ended, 7).await;

    // What the sweep saw: the clouds listed after its (stale) read of the jobs, which had
    // neither cluster.
    let clusters: BTreeMap<String, ClusterState> = plane
        .cloud
        .clusters()
        .into_iter()
        .map(|c| (c.cluster.clone(), c))
        .collect();
    let listed = BTreeSet::from([(Cloud::Aws, "us-east-1".to_owned())]);
    let terminated = super::tear_down_orphans(&plane.ctx, &clusters, &listed, &BTreeSet::new())
        .await
        .unwrap();
    assert_eq!(terminated, 1);
    let running = plane.cloud.running();
    assert!(running.contains(&fresh_cluster), "{running:?}");
    assert!(!running.contains(&orphan), "{running:?}");
}

#[rustfmt::skip]
#[test]
fn a_waiting_job_is_held_up_by_what_the_sweep_listed() {
    use super::Others;
    use crate::job::array::ArrayMember;
    let others = Others {
        running: [3, 20].into_iter().collect(),
        uncleaned: [4, 21].into_iter().collect(),
    };
    let member = |rank| {
        let mut job = job();
        job.array = ArrayMember::all(20, 4, 1).nth(rank);
        job
    };
    let rows: [(&str, JobRecord, bool); 7] = [
        ("a dependency still running", job().depends_on("3:afterok"), true),
        ("a dependency ended, not cleaned: its status is final", job().depends_on("4:afterok"), false),
        ("a dependency not listed (ended and cleaned)", job().depends_on("5:afterany"), false),
        ("no dependency, no array", job(), false),
        ("the lane's previous member running", member(1), true),
        ("the lane's previous member ended, not cleaned up", member(2), true),
        ("the lane's previous member cleaned up", member(3), false),
    ];
    for (label, job, held) in rows {
        assert_eq!(others.holds_up(&job), held, "{label}");
    }
}
