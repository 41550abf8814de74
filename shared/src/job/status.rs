//! Job and task statuses, named and grouped exactly as SkyPilot's `ManagedJobStatus`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The status of a task, and (derived from its tasks) of a job. Ordered as a job lives
/// (for counts by status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Waiting to be launched, or waiting out a no-capacity backoff before the first launch.
    Pending,
    /// Launching the task's cluster.
    Starting,
    /// The task is on its cluster, in `setup` or `run`.
    Running,
    /// Relaunching after a preemption, a lost machine, or a restartable failure.
    Recovering,
    /// The user cancelled; the cluster is being torn down.
    Cancelling,
    Succeeded,
    Cancelled,
    /// `run` exited non-zero and no restart was left.
    Failed,
    /// `setup` exited non-zero and no restart was left.
    FailedSetup,
    /// The launch could never work: no feasible resources, an invalid spec, or bad credentials.
    FailedPrechecks,
    /// No resources after the maximum number of retries. Kept for parity with SkyPilot's
    /// statuses; like SkyPilot's current code, Stratus retries without limit and never sets it.
    FailedNoResource,
    /// Stratus itself failed while managing the job.
    FailedController,
}

impl JobStatus {
    pub const ALL: [JobStatus; 12] = [
        JobStatus::Pending,
        JobStatus::Starting,
        JobStatus::Running,
        JobStatus::Recovering,
        JobStatus::Cancelling,
        JobStatus::Succeeded,
        JobStatus::Cancelled,
        JobStatus::Failed,
        JobStatus::FailedSetup,
        JobStatus::FailedPrechecks,
        JobStatus::FailedNoResource,
        JobStatus::FailedController,
    ];

    /// SkyPilot's `terminal_statuses()`: nothing happens to the job after these.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded
                | JobStatus::Cancelled
                | JobStatus::Failed
                | JobStatus::FailedSetup
        ) || self.is_failure()
    }

    /// SkyPilot's `failure_statuses()`: the `FAILED*` ones.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            JobStatus::Failed
                | JobStatus::FailedSetup
                | JobStatus::FailedPrechecks
                | JobStatus::FailedNoResource
                | JobStatus::FailedController
        )
    }

    /// The name SkyPilot prints and stores (`FAILED_SETUP`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Starting => "STARTING",
            JobStatus::Running => "RUNNING",
            JobStatus::Recovering => "RECOVERING",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Cancelled => "CANCELLED",
            JobStatus::Failed => "FAILED",
            JobStatus::FailedSetup => "FAILED_SETUP",
            JobStatus::FailedPrechecks => "FAILED_PRECHECKS",
            JobStatus::FailedNoResource => "FAILED_NO_RESOURCE",
            JobStatus::FailedController => "FAILED_CONTROLLER",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status '{0}'")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Which of the task's commands is running (or exited). Setup comes before run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Setup,
    Run,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Setup => "setup",
            Phase::Run => "run",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_serde() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        assert_eq!(
            "SUBMITTED".parse::<JobStatus>(),
            Err(UnknownStatus("SUBMITTED".into()))
        );
    }

    #[test]
    fn groups_match_skypilot() {
        let terminal: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        let failure: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_failure())
            .collect();
        assert_eq!(terminal.len(), 7);
        assert_eq!(failure.len(), 5);
        assert!(!JobStatus::Cancelling.is_terminal());
        assert!(JobStatus::Cancelled.is_terminal() && !JobStatus::Cancelled.is_failure());
    }
}
