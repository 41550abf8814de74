//! The time and cost limits a job keeps, as pure functions of its record and the time:
//! which limit is reached ([`breach`]), and when the next one falls due ([`next_deadline`]).
//!
//! Only the current task's limits apply (the others have not started or are over):
//! - `max_duration`: from the task's first start, recoveries included (SkyPilot's proposal);
//! - `stratus.max_attempt_duration`: the current run, from RUNNING;
//! - `stratus.max_pending`: the current wait for a cluster, from when it began;
//! - the job's `max_cost`: every task's ledger together, at the rate its machines cost now.
//!
//! `step` keeps `JobRecord::deadline_at` equal to [`next_deadline`] and asks for a timer when
//! it moves; the timer's `LimitDue` (or the sweep's, when a timer is lost) makes `step` check
//! [`breach`]. A timer that fires early finds nothing reached and changes nothing.

use std::fmt;
use std::time::Duration;

use crate::clock::Timestamp;

use super::{JobRecord, JobStatus, cost::format_usd};

/// A limit the job has reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Breach {
    /// `max_duration` since the task first started.
    Duration { limit: Duration },
    /// `stratus.max_attempt_duration` of one run.
    AttemptDuration { limit: Duration },
    /// `stratus.max_pending` waiting for a cluster.
    Pending { limit: Duration },
    /// The job's `max_cost`.
    Cost { cap: f64, spent: f64 },
}

impl Breach {
    /// The status the task ends in: no cluster within the wait is "no resource"; the rest
    /// stopped a task that ran.
    pub fn status(&self) -> JobStatus {
        match self {
            Breach::Pending { .. } => JobStatus::FailedNoResource,
            _ => JobStatus::Failed,
        }
    }
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let human = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            Breach::Duration { limit } => write!(
                f,
                "The task reached its max_duration of {} (counted from its start, recoveries included) and was stopped.",
                human(limit)
            ),
            Breach::AttemptDuration { limit } => write!(
                f,
                "The task's run reached its stratus.max_attempt_duration of {} and was stopped.",
                human(limit)
            ),
            Breach::Pending { limit } => write!(
                f,
                "No cluster within the task's stratus.max_pending of {}: stopped waiting for capacity.",
                human(limit)
            ),
            Breach::Cost { cap, spent } => write!(
                f,
                "The job reached its max_cost of {} (spent {}, an estimate from catalog prices) and was stopped.",
                format_usd(*cap),
                format_usd(*spent)
            ),
        }
    }
}

/// The limit the job has reached at `now`, if any (the first of duration, run, wait, cost).
pub fn breach(job: &JobRecord, now: Timestamp) -> Option<Breach> {
    if job.is_terminal() || job.status() == JobStatus::Cancelling {
        return None;
    }
    let due = |deadline: Option<Timestamp>| deadline.is_some_and(|at| at <= now);
    let task = &job.tasks[job.current_task];
    let limits = job.task_spec(job.current_task).limits;
    if let Some(limit) = limits.max_duration
        && due(task.started_at.map(|at| at.plus(limit)))
    {
        return Some(Breach::Duration { limit });
    }
    if let Some(limit) = limits.max_attempt_duration
        && task.status == JobStatus::Running
        && due(task.running_since.map(|at| at.plus(limit)))
    {
        return Some(Breach::AttemptDuration { limit });
    }
    if let Some(limit) = limits.max_pending
        && is_waiting(task.status)
        && due(task.waiting_since.map(|at| at.plus(limit)))
    {
        return Some(Breach::Pending { limit });
    }
    let cap = job.pipeline.max_cost?;
    let spent = job.cost(now);
    // A hair of tolerance: the deadline is rounded to the millisecond.
    (spent >= cap * (1.0 - 1e-9)).then_some(Breach::Cost { cap, spent })
}

/// When the next limit falls due, or `None` when the job has ended or nothing can be reached
/// as things stand (no limits; a cost cap with nothing running).
pub fn next_deadline(job: &JobRecord) -> Option<Timestamp> {
    if job.is_terminal() || job.status() == JobStatus::Cancelling {
        return None;
    }
    let task = &job.tasks[job.current_task];
    let limits = job.task_spec(job.current_task).limits;
    let duration = limits
        .max_duration
        .zip(task.started_at)
        .map(|(limit, at)| at.plus(limit));
    let attempt = limits
        .max_attempt_duration
        .zip(task.running_since)
        .filter(|_| task.status == JobStatus::Running)
        .map(|(limit, at)| at.plus(limit));
    let pending = limits
        .max_pending
        .zip(task.waiting_since)
        .filter(|_| is_waiting(task.status))
        .map(|(limit, at)| at.plus(limit));
    let cost = job.pipeline.max_cost.and_then(|cap| job.cost_reaches(cap));
    [duration, attempt, pending, cost]
        .into_iter()
        .flatten()
        .min()
}

fn is_waiting(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Pending | JobStatus::Starting | JobStatus::Recovering
    )
}
