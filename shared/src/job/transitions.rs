//! Job events for users: every status change of a job and of each of its tasks, as a
//! documented, versioned document (`StatusEvent`, schema version [`STATUS_EVENT_VERSION`]).
//!
//! [`transitions`] is pure: it compares the record before and after one fenced write, so each
//! change is found by the write that made it, and by no other. Publishing is best effort (at
//! most once): a crash after the write and before the publish loses that announcement. The handlers publish what it
//! returns (EventBridge's `stratus.job-status` detail-type in AWS, the local plane's
//! subscribers locally); a change of the job's status gives one `job` event, and each task
//! whose status changed one `task` event.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

use super::{JobRecord, JobStatus};

/// The schema version of [`StatusEvent`]; a change that removes or retypes a field bumps it.
pub const STATUS_EVENT_VERSION: u32 = 1;

/// What changed: the job as a whole (SkyPilot's rule: the status of its first task that has
/// not succeeded), or one of its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Job,
    Task,
}

/// One status change, as users receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// [`STATUS_EVENT_VERSION`].
    pub version: u32,
    pub scope: Scope,
    pub job_id: u64,
    pub name: String,
    pub owner: String,
    /// The task that changed (for a job event, the job's current task).
    pub task: usize,
    pub task_name: String,
    pub status: JobStatus,
    /// `None` for the job's creation.
    pub previous_status: Option<JobStatus>,
    /// Why it failed (a failure status), or why it was cancelled before it started.
    pub reason: Option<String>,
    /// Where the task runs or last ran, e.g. `AWS (us-east-1a)`.
    pub infra: Option<String>,
    /// `#RECOVERIES` of the job (job events) or of the task (task events).
    pub recoveries: u32,
    /// What the job's machines have cost so far (an estimate, see `job::cost`).
    pub cost_usd: f64,
    pub at: Timestamp,
    /// The record's version after the change: events of one job sort by it.
    pub record_version: u64,
}

/// The job's creation (PENDING, no previous status).
pub fn created(job: &JobRecord, now: Timestamp) -> StatusEvent {
    event(job, Scope::Job, job.current_task, None, now)
}

/// Every status change between `before` and `after` (the record one write turned it into).
pub fn transitions(before: &JobRecord, after: &JobRecord, now: Timestamp) -> Vec<StatusEvent> {
    let mut events = Vec::new();
    if before.status() != after.status() {
        events.push(event(
            after,
            Scope::Job,
            after.current_task,
            Some(before.status()),
            now,
        ));
    }
    for (i, (old, new)) in before.tasks.iter().zip(&after.tasks).enumerate() {
        if old.status != new.status {
            events.push(event(after, Scope::Task, i, Some(old.status), now));
        }
    }
    events
}

fn event(
    job: &JobRecord,
    scope: Scope,
    task: usize,
    previous_status: Option<JobStatus>,
    now: Timestamp,
) -> StatusEvent {
    let state = &job.tasks[task];
    let status = match scope {
        Scope::Job => job.status(),
        Scope::Task => state.status,
    };
    let reason = match scope {
        Scope::Job => job.tasks.iter().find_map(|t| {
            (t.status.is_failure() || t.status == JobStatus::Cancelled)
                .then(|| t.failure_reason.clone())
                .flatten()
        }),
        Scope::Task => state
            .failure_reason
            .clone()
            .filter(|_| status.is_failure() || status == JobStatus::Cancelled),
    };
    StatusEvent {
        version: STATUS_EVENT_VERSION,
        scope,
        job_id: job.id,
        name: job.name().to_owned(),
        owner: job.owner.clone(),
        task,
        task_name: job.task_spec(task).name.clone(),
        status,
        previous_status,
        reason,
        infra: state
            .candidate
            .and_then(|c| job.candidates[task].get(c))
            .map(|c| format!("{} ({})", c.cloud, c.zone)),
        recoveries: match scope {
            Scope::Job => job.recoveries(),
            Scope::Task => state.recoveries,
        },
        cost_usd: job.cost(now),
        at: now,
        record_version: job.version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_gives_one_job_event_and_one_per_task_that_changed() {
        let before = JobRecord::test().tasks(2).version(3);
        let after = JobRecord::test().tasks(2).running().version(4);
        let events = transitions(&before, &after, Timestamp::from_secs(5));
        let shown: Vec<(Scope, usize, JobStatus, Option<JobStatus>)> = events
            .iter()
            .map(|e| (e.scope, e.task, e.status, e.previous_status))
            .collect();
        assert_eq!(
            shown,
            vec![
                (Scope::Job, 0, JobStatus::Running, Some(JobStatus::Pending)),
                (Scope::Task, 0, JobStatus::Running, Some(JobStatus::Pending)),
            ]
        );
        assert_eq!(events[0].record_version, 4);
        assert_eq!(events[0].infra.as_deref(), Some("AWS (us-east-1a)"));
        assert!(transitions(&after, &after, Timestamp::from_secs(6)).is_empty());
    }

    #[test]
    fn the_documented_schema() {
        let job = JobRecord::test();
        let json = serde_json::to_value(created(&job, Timestamp::from_secs(1))).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut documented = [
            "version",
            "scope",
            "job_id",
            "name",
            "owner",
            "task",
            "task_name",
            "status",
            "previous_status",
            "reason",
            "infra",
            "recoveries",
            "cost_usd",
            "at",
            "record_version",
        ];
        documented.sort_unstable();
        assert_eq!(keys, documented);
        assert_eq!(json["version"], 1);
        assert_eq!(json["scope"], "job");
        assert_eq!(json["status"], "PENDING");
        assert_eq!(json["previous_status"], serde_json::Value::Null);
    }
}
