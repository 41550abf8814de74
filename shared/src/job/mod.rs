//! Managed jobs: the record the state table keeps, the events that move it, and the pure state
//! machine that decides what happens next.
//!
//! A job is a [`Pipeline`] of tasks run one after another. Each task has its own status
//! ([`JobStatus`], SkyPilot's names); the job's status is the status of its first task that has
//! not succeeded. Handlers load a [`JobRecord`] from the [`crate::store::JobStore`], call
//! [`step`] with what happened ([`JobEvent`]) and the time, write the next record with a
//! fenced update, then carry out the [`Action`]s, which are plain data.
//!
//! **Invariant:** [`step`] does no IO and never reads the clock; the same inputs always give
//! the same output, jitter included.
//!
//! **Invariant:** every [`Action::LaunchCluster`] names a cluster never used before
//! (`<task>-<job>-<attempt>`), and every event from a cluster names it, so a late or
//! duplicated event about an abandoned cluster cannot move the job.
//!
//! # Layout
//! - `status`: [`JobStatus`] and [`Phase`].
//! - `step`: the state machine, [`step`] and [`Step`].
//! - `backoff`: the no-capacity wait (60 s ×1.6 up to 300 s, ±40 %).
//! - `dependencies`: `--depends-on`, Slurm's afterok / afterany / afternotok.
//! - `cost`: the ledger: what each attempt's machines cost, and when a cap is reached.
//! - `limits`: the time and cost limits: which one is reached, and when the next falls due.
//! - `transitions`: users' job events (`StatusEvent`), found by comparing two records.
//! - `builder` (feature `test-util`): `JobRecord::test()`, records that read like prose.

pub mod array;
pub mod backoff;
#[cfg(any(test, feature = "test-util"))]
pub mod builder;
pub mod cost;
pub mod dependencies;
pub mod limits;
mod status;
mod step;
pub mod transitions;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::optimizer::Candidate;
use crate::spec::{Pipeline, RecoveryPolicy, Task};

pub use cost::AttemptCost;
pub use limits::Breach;
pub use status::{JobStatus, Phase, UnknownStatus};
pub use step::{Step, step};

/// Job IDs are sequential, like SkyPilot's: 1, 2, 3, ...
pub type JobId = u64;

/// Everything the state table keeps about one job.
///
/// `pipeline` and `candidates` are fixed when the job is created; every later write changes
/// only the rest (the stores write them once, and an update never rewrites them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    /// The user who submitted the job.
    pub owner: String,
    pub pipeline: Pipeline,
    /// Per task, the feasible launch targets ranked cheapest first (from the optimizer).
    pub candidates: Vec<Vec<Candidate>>,
    /// Per task, what has happened to it so far.
    pub tasks: Vec<TaskState>,
    /// The task being launched or run (the first that has not succeeded, or the last).
    pub current_task: usize,
    /// Bumped by every store write; updates are fenced on it.
    pub version: u64,
    pub submitted_at: Timestamp,
    /// While in a no-capacity backoff: when to try the candidates again.
    pub next_attempt_at: Option<Timestamp>,
    /// When the cleanup (the finalizer) finished: its clusters gone, its uploads deleted. Until
    /// then the job stays in the sweep's view, ended or not, so a cleanup that failed or never
    /// ran is run again.
    #[serde(default)]
    pub cleaned_at: Option<Timestamp>,
    /// When the next time or cost limit falls due (`limits::next_deadline`), while the job is
    /// active and has limits: a timer is set for it, and the sweep re-sends a due one.
    #[serde(default)]
    pub deadline_at: Option<Timestamp>,
    /// When the limit timer last asked for fires: a new one is asked for only when the next
    /// deadline comes before it (or it has fired).
    #[serde(default)]
    pub limit_timer_at: Option<Timestamp>,
    /// Jobs that must end (as each says) before this one launches; fixed at creation.
    #[serde(default)]
    pub depends_on: Vec<dependencies::Dependency>,
    /// Its place in a job array (`--num-jobs`); fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<array::ArrayMember>,
}

/// The changing part of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    pub status: JobStatus,
    /// Which command runs, once the node has said.
    pub phase: Option<Phase>,
    /// Clusters launched (or tried) for this task so far; names the next one.
    pub attempt: u32,
    /// The task's cluster: being launched, up, or being torn down on cancel. For a finished
    /// task, the last one it had. `None` before the first launch and during a backoff.
    pub cluster: Option<String>,
    /// Index into the task's candidates of `cluster`.
    pub candidate: Option<usize>,
    /// The walk through the candidates while a launch is in progress.
    pub launch: Option<LaunchWalk>,
    /// Launch rounds in a row that found no capacity anywhere; grows the backoff.
    pub no_capacity_rounds: u32,
    /// SkyPilot's `#RECOVERIES`: every relaunch of a task that had started (preemptions, lost
    /// machines, and restarts after the user's code failed).
    pub recoveries: u32,
    /// Restarts charged against `max_restarts_on_errors`.
    pub restarts: u32,
    pub failure_reason: Option<String>,
    /// When the task was handed to the launcher (at job submission for the first task, when the
    /// previous one succeeded for the others).
    pub submitted_at: Option<Timestamp>,
    /// The first time the task reached RUNNING.
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// Start of the current stretch of RUNNING, if running now.
    pub running_since: Option<Timestamp>,
    /// Time spent RUNNING in earlier stretches (excludes launching and recovering).
    #[serde(with = "millis", rename = "run_time_ms")]
    pub run_time: Duration,
    /// The cost ledger: one entry per cluster that ran (or may have run) machines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptCost>,
    /// USD of ledger entries folded away to keep the record small (`cost::LEDGER_ENTRIES`).
    #[serde(default, skip_serializing_if = "cost::is_zero")]
    pub earlier_cost: f64,
    /// Since when the task has been waiting for a cluster (first launch or a recovery); the
    /// pending limit counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
    /// Relaunches after preemptions and lost machines (part of `recoveries`), charged against
    /// `job_recovery.max_recoveries`.
    #[serde(default, skip_serializing_if = "cost::is_zero_u32")]
    pub lost_recoveries: u32,
}

/// The candidates one launch goes through, in order, and those already tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchWalk {
    pub order: Vec<usize>,
    pub tried: Vec<usize>,
    /// The cloud accepted the current try; the walk ends when the task runs.
    pub launched: bool,
    /// When the current try was decided. A launch younger than a sweep interval may simply
    /// be in flight, so the poll sweep re-drives only older ones (a second call could race
    /// the first where the cloud's idempotency token is not honoured, as on emulators).
    #[serde(default)]
    pub since: Option<Timestamp>,
    /// Candidates of this round whose region cannot host the launch: when every candidate is
    /// one, waiting will not help and the job fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<usize>,
}

/// Why a launch failed, as far as the state machine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchFailure {
    /// The cloud has no capacity for this candidate right now: try the next one.
    NoCapacity,
    /// Not asked: a launch found the zone full a moment ago and nothing was freed there since.
    /// As `NoCapacity`, but nothing was started, so nothing is torn down.
    KnownFull,
    /// A quota or limit blocks this candidate: try the next one.
    Quota,
    /// Credentials are missing or rejected: no candidate will work.
    Auth,
    /// The request is invalid (bad image, bad instance type, ...): no candidate will work.
    Invalid,
    /// The cloud started the machines but their nodes were not all ready within the
    /// provision timeout (an agent that never started, no way out to the API): torn down,
    /// and the next candidate is tried.
    NeverReady,
    /// This candidate's region cannot host the launch (no default VPC, no subnet in the
    /// zone, an image it does not have): try the next one.
    Unavailable,
}

impl fmt::Display for LaunchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LaunchFailure::NoCapacity => "no capacity",
            LaunchFailure::KnownFull => "known full",
            LaunchFailure::Quota => "quota exceeded",
            LaunchFailure::Auth => "not authorized",
            LaunchFailure::Invalid => "invalid request",
            LaunchFailure::NeverReady => "not ready in time",
            LaunchFailure::Unavailable => "region unavailable",
        })
    }
}

/// What happened to a job. Events from a cluster name it; one about a cluster the task no
/// longer uses is ignored (or, if it says the cluster is up, answered by tearing it down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job was stored and may start launching its first task.
    Submitted,
    /// The cloud accepted the launch: the instances exist.
    ClusterLaunched {
        cluster: String,
    },
    LaunchFailed {
        cluster: String,
        failure: LaunchFailure,
        message: String,
    },
    /// The node agents are up; the task can be handed to them.
    NodeReady {
        cluster: String,
    },
    SetupStarted {
        cluster: String,
    },
    RunStarted {
        cluster: String,
    },
    /// A command finished. `codes` has one exit code per node: any node's code can be in
    /// `recover_on_exit_codes` (SkyPilot restarts if any is), and success means all are 0.
    TaskExited {
        cluster: String,
        phase: Phase,
        codes: Vec<i32>,
    },
    Preempted {
        cluster: String,
    },
    /// The nodes stopped reporting: treated as a machine failure.
    HeartbeatLost {
        cluster: String,
    },
    CancelRequested,
    /// The cluster and everything tagged with it are gone.
    ClusterTerminated {
        cluster: String,
    },
    /// The no-capacity wait is over (early deliveries are ignored).
    BackoffElapsed,
    /// A Stratus cluster was torn down, so capacity may be free again: a job waiting out a
    /// no-capacity backoff tries its candidates now instead of at the end of the wait.
    CapacityFreed,
    /// Stratus failed in a way it cannot recover from. Like SkyPilot, this applies even to a
    /// job that already ended.
    ControllerFailed {
        reason: String,
    },
    /// A time or cost limit may have been reached (its timer fired, or the sweep found it
    /// due): the job stops if one has (early deliveries are ignored).
    LimitDue,
    /// A job this one depends on ended so that the dependency can never be met: CANCELLED,
    /// with `reason`, if it has not started.
    DependencyNeverMet {
        reason: String,
    },
}

/// Something the handler must do after writing the next record. Plain data, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Launch `cluster` for `task` on `candidate` (tag it with the job id first, so cleanup
    /// finds it whatever happens next). Report `ClusterLaunched` or `LaunchFailed`.
    LaunchCluster {
        task: usize,
        cluster: String,
        attempt: u32,
        candidate_index: usize,
        candidate: Candidate,
    },
    /// Tear down `cluster` (found by tag: it may never have launched, or half launched).
    /// Report `ClusterTerminated`.
    TerminateCluster { task: usize, cluster: String },
    /// Hand the task's `setup` and `run` to the node agents of `cluster`.
    RunTask { task: usize, cluster: String },
    /// The pipeline moved on to `task`; its `LaunchCluster` follows in the same step. Handlers
    /// stage per-task inputs here.
    StartNextTask { task: usize },
    /// Send `BackoffElapsed` at `at` (`after` from now).
    Requeue {
        #[serde(with = "millis")]
        after: Duration,
        at: Timestamp,
    },
    /// Append to the job's controller log (`jobs logs --controller`).
    EmitEvent(ControllerEvent),
    /// Send `LimitDue` at `at`: the next time or cost limit falls due then.
    ScheduleLimit { at: Timestamp },
}

/// One line of a job's controller log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerEvent {
    pub at: Timestamp,
    pub task: usize,
    /// The task's status after the step that wrote this.
    pub status: JobStatus,
    pub message: String,
}

/// What an update expects to find in the store: the version and status it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub version: u64,
    pub status: JobStatus,
}

impl JobRecord {
    /// A new job in PENDING, not yet stored (`version` 0; the store writes version 1).
    ///
    /// # Panics
    /// If `candidates` does not have one list per task: that is a bug in the caller.
    pub fn new(
        id: JobId,
        owner: impl Into<String>,
        pipeline: Pipeline,
        candidates: Vec<Vec<Candidate>>,
        now: Timestamp,
    ) -> Self {
        assert_eq!(
            pipeline.tasks.len(),
            candidates.len(),
            "one ranked candidate list per task"
        );
        let tasks = (0..pipeline.tasks.len())
            .map(|i| TaskState::new((i == 0).then_some(now)))
            .collect();
        Self {
            id,
            owner: owner.into(),
            pipeline,
            candidates,
            tasks,
            current_task: 0,
            version: 0,
            submitted_at: now,
            next_attempt_at: None,
            cleaned_at: None,
            deadline_at: None,
            limit_timer_at: None,
            depends_on: Vec::new(),
            array: None,
        }
    }

    /// The job name.
    pub fn name(&self) -> &str {
        &self.pipeline.name
    }

    /// SkyPilot's rule: the status of the first task that has not succeeded.
    pub fn status(&self) -> JobStatus {
        self.tasks
            .iter()
            .map(|t| t.status)
            .find(|s| *s != JobStatus::Succeeded)
            .unwrap_or(JobStatus::Succeeded)
    }

    pub fn is_terminal(&self) -> bool {
        self.status().is_terminal()
    }

    /// Still waiting for other jobs (those it depends on, or the member before it in its
    /// array's lane): PENDING, never launched.
    pub fn awaits_dependencies(&self) -> bool {
        (!self.depends_on.is_empty() || self.array.is_some_and(|a| a.waits_for().is_some()))
            && self.current_task == 0
            && self.tasks[0].status == JobStatus::Pending
            && self.tasks[0].attempt == 0
            && self.next_attempt_at.is_none()
    }

    /// Whether the sweep still looks at the job: it has not ended, or its cleanup has not
    /// finished. (The state table's active index holds exactly these.)
    pub fn is_active(&self) -> bool {
        !self.is_terminal() || self.cleaned_at.is_none()
    }

    /// What a fenced update of this record must find in the store.
    pub fn fence(&self) -> Fence {
        Fence {
            version: self.version,
            status: self.status(),
        }
    }

    /// The task that launched `cluster` (the cluster names are unique per launch).
    pub fn task_of_cluster(&self, cluster: &str) -> Option<usize> {
        self.tasks
            .iter()
            .position(|t| t.cluster.as_deref() == Some(cluster))
    }

    /// The task spec of task `i`.
    pub fn task_spec(&self, i: usize) -> &Task {
        &self.pipeline.tasks[i]
    }

    pub fn recovery_policy(&self, i: usize) -> &RecoveryPolicy {
        &self.pipeline.tasks[i].resources.recovery
    }

    /// SkyPilot's STARTED column: when the first task first ran.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.tasks.first().and_then(|t| t.started_at)
    }

    /// When the job ended, once it has.
    pub fn ended_at(&self) -> Option<Timestamp> {
        if !self.is_terminal() {
            return None;
        }
        self.tasks.iter().filter_map(|t| t.ended_at).max()
    }

    /// TOT. DURATION: from submission to the end, or to `now` while the job is active.
    pub fn total_duration(&self, now: Timestamp) -> Duration {
        self.ended_at().unwrap_or(now).since(self.submitted_at)
    }

    /// JOB DURATION: time spent RUNNING, summed over tasks; launching and recovering excluded.
    pub fn job_duration(&self, now: Timestamp) -> Duration {
        self.tasks.iter().map(|t| t.job_duration(now)).sum()
    }

    /// `#RECOVERIES`, summed over tasks.
    pub fn recoveries(&self) -> u32 {
        self.tasks.iter().map(|t| t.recoveries).sum()
    }

    /// `SKYPILOT_TASK_ID` of task `i`, built like SkyPilot's `get_global_job_id`:
    /// `sky-managed-<submitted, YYYY-MM-DD-HH-MM-SS-ffffff>_<job>[_<task>]_<id>-<i>`, the task
    /// name only in pipelines. It depends only on fields fixed at submission, so it is the same
    /// across every recovery and restart.
    pub fn skypilot_task_id(&self, i: usize) -> String {
        let c = self.submitted_at.civil();
        let task = if self.pipeline.tasks.len() > 1 {
            format!("_{}", self.pipeline.tasks[i].name)
        } else {
            String::new()
        };
        format!(
            "sky-managed-{:04}-{:02}-{:02}-{:02}-{:02}-{:02}-{:06}_{}{task}_{}-{i}",
            c.year,
            c.month,
            c.day,
            c.hour,
            c.minute,
            c.second,
            c.millis * 1000,
            self.name(),
            self.id
        )
    }
}

impl TaskState {
    fn new(submitted_at: Option<Timestamp>) -> Self {
        Self {
            status: JobStatus::Pending,
            phase: None,
            attempt: 0,
            cluster: None,
            candidate: None,
            launch: None,
            no_capacity_rounds: 0,
            recoveries: 0,
            restarts: 0,
            failure_reason: None,
            submitted_at,
            started_at: None,
            ended_at: None,
            running_since: None,
            run_time: Duration::ZERO,
            attempts: Vec::new(),
            earlier_cost: 0.0,
            waiting_since: None,
            lost_recoveries: 0,
        }
    }

    /// Time spent RUNNING up to `now`.
    pub fn job_duration(&self, now: Timestamp) -> Duration {
        self.run_time
            + self
                .running_since
                .map_or(Duration::ZERO, |since| now.since(since))
    }
}

/// SkyPilot's cluster name, `<task name, cut to 25>-<job id>`, plus the attempt so that every
/// launch has a name of its own. Lower-cased, with `_` and `.` turned into `-`, so that every
/// cloud accepts it as an instance name prefix.
pub fn cluster_name(task_name: &str, job_id: JobId, attempt: u32) -> String {
    let cleaned: String = task_name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(25)
        .collect();
    let cleaned = cleaned.trim_matches('-');
    let base = if cleaned.is_empty() { "task" } else { cleaned };
    format!("{base}-{job_id}-{attempt}")
}

/// The attempt a cluster name of job `job_id` was made for (`<task>-<job>-<attempt>`), or
/// `None` when the name is not one of that job's: a job's token can then never name another
/// job's cluster (every request about a cluster is checked with this at the edge).
pub fn attempt_of_cluster(cluster: &str, job_id: JobId) -> Option<u32> {
    let (rest, attempt) = cluster.rsplit_once('-')?;
    let (_, job) = rest.rsplit_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(attempt) || !digits(job) || job.parse::<JobId>().ok()? != job_id {
        return None;
    }
    attempt.parse().ok()
}

/// Durations stored as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests;
