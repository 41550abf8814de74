//! The documents both adapters store, and the check that reads them back.
//!
//! A job is stored as columns (or attributes) for lookups and fencing (id, owner, name,
//! status, version), one *state* document that every update rewrites, and one *spec* document
//! per task (the task and its ranked candidates) written once at creation. Splitting them keeps
//! every state write small: on DynamoDB a write costs by item size, and the candidates are most
//! of a job's bytes.
//!
//! Every document carries a format version ([`FORMAT`]). The JSON inside is the serde form of
//! the domain types ([`TaskState`], [`Task`], [`Candidate`], [`ControllerEvent`]); a snapshot
//! test pins it, and any change to it must bump [`FORMAT`] and teach [`decode`] the old one.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::job::{ControllerEvent, JobId, JobRecord, JobStatus, TaskState};
use crate::optimizer::Candidate;
use crate::spec::{Pipeline, Task};

use super::StoreError;

/// The format version this build writes and reads.
pub(crate) const FORMAT: u32 = 1;

/// The part of a job every update rewrites.
#[derive(Debug, Serialize, Deserialize)]
struct StateDoc {
    submitted_at: Timestamp,
    current_task: usize,
    next_attempt_at: Option<Timestamp>,
    tasks: Vec<TaskState>,
    /// Written by the cleanup once it is done (an optional field: older documents lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cleaned_at: Option<Timestamp>,
    /// The job's cost cap (fixed at creation; optional, so older documents read as none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_cost: Option<f64>,
    /// When the next time or cost limit falls due (optional, as above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline_at: Option<Timestamp>,
    /// When the armed limit timer fires (optional, as above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit_timer_at: Option<Timestamp>,
    /// Fixed at creation (optional, as above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<crate::job::dependencies::Dependency>,
    /// Its place in a job array, fixed at creation (optional, as above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    array: Option<crate::job::array::ArrayMember>,
}

/// One task's fixed part.
#[derive(Debug, Serialize, Deserialize)]
struct SpecDoc {
    task: Task,
    candidates: Vec<Candidate>,
}

/// A job as its stored columns and documents.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    pub id: JobId,
    pub owner: String,
    pub name: String,
    pub status: String,
    pub version: u64,
    pub format: u32,
    pub state: String,
    /// Per task, in order: its format and its spec document.
    pub specs: Vec<(u32, String)>,
}

/// The state document of `job`.
pub(crate) fn encode_state(job: &JobRecord) -> Result<String, StoreError> {
    let doc = StateDoc {
        submitted_at: job.submitted_at,
        current_task: job.current_task,
        next_attempt_at: job.next_attempt_at,
        cleaned_at: job.cleaned_at,
        tasks: job.tasks.clone(),
        max_cost: job.pipeline.max_cost,
        deadline_at: job.deadline_at,
        limit_timer_at: job.limit_timer_at,
        depends_on: job.depends_on.clone(),
        array: job.array,
    };
    to_json(job.id, &doc)
}

/// The spec documents of `job`'s tasks, in order.
pub(crate) fn encode_specs(job: &JobRecord) -> Result<Vec<String>, StoreError> {
    job.pipeline
        .tasks
        .iter()
        .zip(&job.candidates)
        .map(|(task, candidates)| {
            let doc = SpecDoc {
                task: task.clone(),
                candidates: candidates.clone(),
            };
            to_json(job.id, &doc)
        })
        .collect()
}

pub(crate) fn encode_event(job_id: JobId, event: &ControllerEvent) -> Result<String, StoreError> {
    to_json(job_id, event)
}

/// Reads a stored job back, checking that its parts agree.
pub(crate) fn decode(stored: Stored) -> Result<JobRecord, StoreError> {
    let id = stored.id;
    let corrupt = |reason: String| StoreError::Corrupt { job_id: id, reason };
    check_format(id, "job state", stored.format)?;
    let state: StateDoc = from_json(id, "job state", &stored.state)?;
    let mut tasks = Vec::with_capacity(stored.specs.len());
    let mut candidates = Vec::with_capacity(stored.specs.len());
    for (i, (format, json)) in stored.specs.iter().enumerate() {
        let what = format!("task {i} spec");
        check_format(id, &what, *format)?;
        let doc: SpecDoc = from_json(id, &what, json)?;
        tasks.push(doc.task);
        candidates.push(doc.candidates);
    }
    if state.tasks.len() != tasks.len() || tasks.is_empty() {
        return Err(corrupt(format!(
            "the state has {} tasks but {} task specs are stored",
            state.tasks.len(),
            tasks.len()
        )));
    }
    if state.current_task >= tasks.len() {
        return Err(corrupt(format!(
            "current task {} is past the last task ({})",
            state.current_task,
            tasks.len() - 1
        )));
    }
    let job = JobRecord {
        id,
        owner: stored.owner,
        pipeline: Pipeline {
            name: stored.name,
            tasks,
            max_cost: state.max_cost,
        },
        candidates,
        tasks: state.tasks,
        current_task: state.current_task,
        version: stored.version,
        submitted_at: state.submitted_at,
        next_attempt_at: state.next_attempt_at,
        cleaned_at: state.cleaned_at,
        deadline_at: state.deadline_at,
        limit_timer_at: state.limit_timer_at,
        depends_on: state.depends_on,
        array: state.array,
    };
    let status: JobStatus = stored
        .status
        .parse()
        .map_err(|e| corrupt(format!("status column: {e}")))?;
    if status != job.status() {
        return Err(corrupt(format!(
            "the status column says {status} but the tasks say {}",
            job.status()
        )));
    }
    Ok(job)
}

pub(crate) fn decode_event(
    job_id: JobId,
    format: u32,
    json: &str,
) -> Result<ControllerEvent, StoreError> {
    check_format(job_id, "controller event", format)?;
    from_json(job_id, "controller event", json)
}

fn check_format(job_id: JobId, what: &str, format: u32) -> Result<(), StoreError> {
    if format == FORMAT {
        return Ok(());
    }
    let reason = if format > FORMAT {
        format!(
            "the {what} is in format version {format}, newer than this Stratus reads ({FORMAT}): upgrade Stratus"
        )
    } else {
        format!("the {what} is in unknown format version {format} (this Stratus reads {FORMAT})")
    };
    Err(StoreError::Corrupt { job_id, reason })
}

fn to_json<T: Serialize>(job_id: JobId, value: &T) -> Result<String, StoreError> {
    // Only a non-string map key or a failing Serialize impl can fail here; neither exists in
    // these types, but a store error beats a panic in a handler.
    serde_json::to_string(value).map_err(|e| StoreError::Invalid {
        job_id,
        reason: format!("cannot encode it as JSON: {e}"),
    })
}

fn from_json<T: DeserializeOwned>(job_id: JobId, what: &str, json: &str) -> Result<T, StoreError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let at = if matches!(path.as_str(), "?" | ".") {
            String::new()
        } else {
            format!(" (at '{path}')")
        };
        StoreError::Corrupt {
            job_id,
            reason: format!(
                "the {what} is not valid JSON of this format{at}: {}",
                e.inner()
            ),
        }
    })
}

/// A stored job as this build writes it.
pub(crate) fn stored(job: &JobRecord, version: u64) -> Result<Stored, StoreError> {
    Ok(Stored {
        id: job.id,
        owner: job.owner.clone(),
        name: job.name().to_owned(),
        status: job.status().as_str().to_owned(),
        version,
        format: FORMAT,
        state: encode_state(job)?,
        specs: encode_specs(job)?
            .into_iter()
            .map(|s| (FORMAT, s))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn job() -> JobRecord {
        JobRecord::test().tasks(2).running().attempt(2)
    }

    #[test]
    fn round_trips() {
        let job = job().version(3);
        assert_eq!(decode(stored(&job, 3).unwrap()).unwrap(), job);
    }

    /// The stored state of format 1. If this changes, bump `FORMAT` and read the old one too.
    #[test]
    fn state_format_is_pinned() {
        let state = encode_state(&JobRecord::test().running()).unwrap();
        let pretty: serde_json::Value = serde_json::from_str(&state).unwrap();
        expect![[r#"
            {
              "current_task": 0,
              "next_attempt_at": null,
              "submitted_at": 1700000000000,
              "tasks": [
                {
                  "attempt": 1,
                  "candidate": 0,
                  "cluster": "train-1-1",
                  "ended_at": null,
                  "failure_reason": null,
                  "launch": null,
                  "no_capacity_rounds": 0,
                  "phase": null,
                  "recoveries": 0,
                  "restarts": 0,
                  "run_time_ms": 0,
                  "running_since": 1700000060000,
                  "started_at": 1700000060000,
                  "status": "RUNNING",
                  "submitted_at": 1700000000000
                }
              ]
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&pretty).unwrap());
    }

    fn corrupt_reason(edit: impl FnOnce(&mut Stored)) -> String {
        let mut s = stored(&job(), 1).unwrap();
        edit(&mut s);
        match decode(s) {
            Err(StoreError::Corrupt { job_id: 1, reason }) => reason,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn unreadable_items_are_corrupt_with_a_reason() {
        let reasons = [
            corrupt_reason(|s| s.state = "{not json".into()),
            corrupt_reason(|s| s.state = r#"{"tasks": 3}"#.into()),
            corrupt_reason(|s| s.format = 2),
            corrupt_reason(|s| s.specs[1].0 = 0),
            corrupt_reason(|s| {
                s.specs.pop();
            }),
            corrupt_reason(|s| s.status = "EXPLODED".into()),
            corrupt_reason(|s| s.status = "SUCCEEDED".into()),
        ];
        expect![[r#"
            [
                "the job state is not valid JSON of this format: key must be a string at line 1 column 2",
                "the job state is not valid JSON of this format (at 'tasks'): invalid type: integer `3`, expected a sequence at line 1 column 11",
                "the job state is in format version 2, newer than this Stratus reads (1): upgrade Stratus",
                "the task 1 spec is in unknown format version 0 (this Stratus reads 1)",
                "the state has 2 tasks but 1 task specs are stored",
                "status column: unknown job status 'EXPLODED'",
                "the status column says SUCCEEDED but the tasks say RUNNING",
            ]
        "#]].assert_debug_eq(&reasons);
    }
}
