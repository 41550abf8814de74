//! The API's JSON: jobs as `stratus jobs queue` and the dashboard show them. Secrets never
//! appear here; the stored record is converted at this edge.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::job::{ControllerEvent, JobRecord, JobStatus};
use crate::spec::{Accelerators, Task};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: u64,
    pub name: String,
    pub owner: String,
    pub status: JobStatus,
    pub submitted_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// TOT. DURATION in milliseconds (to now while active).
    pub total_duration_ms: u64,
    /// JOB DURATION in milliseconds: time running, launching and recovering excluded.
    pub job_duration_ms: u64,
    pub recoveries: u32,
    pub failure_reason: Option<String>,
    pub tasks: Vec<TaskView>,
    /// What the job's machines cost so far, every task and attempt.
    #[serde(default)]
    pub cost: CostView,
    /// The job's cap (`stratus.max_cost`, `--max-cost`), if any.
    #[serde(default)]
    pub max_cost: Option<f64>,
    /// What it waits for: `ID:afterok`, ... (`--depends-on`).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Its place in a job array (`--num-jobs`): the array's ID (its first job's), this job's
    /// rank, the array's size and how many of it run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<crate::job::array::ArrayMember>,
}

/// A cost, always an estimate: machine time × the catalog's hourly price.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostView {
    pub usd: f64,
    /// Always true: no cloud bill is read.
    pub estimate: bool,
    /// How it was estimated, and the prices' date.
    pub basis: String,
}

impl CostView {
    fn of(usd: f64) -> Self {
        Self {
            usd,
            estimate: true,
            basis: format!(
                "machine time from launch request to teardown x catalog price (built-in prices of {}, or $STRATUS_HOME/catalogs/<cloud>.csv)",
                crate::catalog::PRICES_AS_OF
            ),
        }
    }
}

/// One attempt's machines, as the cost ledger has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub cluster: String,
    pub infra: Option<String>,
    pub instance_type: Option<String>,
    pub use_spot: bool,
    /// USD an hour for the whole cluster.
    pub hourly_usd: f64,
    pub launched_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub machine_ms: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub index: usize,
    pub name: String,
    pub status: JobStatus,
    /// SkyPilot's REQUESTED column, e.g. `1x[CPU:2+]`, `2x[A100:8]`.
    pub requested: String,
    /// Where the task runs or last ran, e.g. `Local (zone-a)`, `AWS (us-east-1)`.
    pub infra: Option<String>,
    pub instance_type: Option<String>,
    pub use_spot: bool,
    pub cluster: Option<String>,
    pub recoveries: u32,
    pub restarts: u32,
    pub submitted_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub job_duration_ms: u64,
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub cost: CostView,
    /// The cost ledger: one entry per cluster that ran machines (the oldest folded into the
    /// cost once there are many).
    #[serde(default)]
    pub attempts: Vec<AttemptView>,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl JobView {
    pub fn new(job: &JobRecord, now: Timestamp) -> Self {
        let tasks = job
            .tasks
            .iter()
            .enumerate()
            .map(|(i, state)| {
                let spec = job.task_spec(i);
                let candidate = state.candidate.and_then(|c| job.candidates[i].get(c));
                TaskView {
                    index: i,
                    name: spec.name.clone(),
                    status: state.status,
                    requested: requested(spec),
                    infra: candidate.map(|c| format!("{} ({})", c.cloud, c.zone)),
                    instance_type: candidate.map(|c| c.instance_type.clone()),
                    use_spot: candidate.is_some_and(|c| c.use_spot),
                    cluster: state.cluster.clone(),
                    recoveries: state.recoveries,
                    restarts: state.restarts,
                    submitted_at: state.submitted_at,
                    started_at: state.started_at,
                    ended_at: state.ended_at,
                    job_duration_ms: millis(state.job_duration(now)),
                    failure_reason: state.failure_reason.clone(),
                    cost: CostView::of(state.cost(now)),
                    attempts: state
                        .attempts
                        .iter()
                        .map(|a| {
                            let on = job.candidates[i].get(a.candidate);
                            AttemptView {
                                attempt: a.attempt,
                                cluster: a.cluster.clone(),
                                infra: on.map(|c| format!("{} ({})", c.cloud, c.zone)),
                                instance_type: on.map(|c| c.instance_type.clone()),
                                use_spot: a.spot,
                                hourly_usd: a.hourly,
                                launched_at: a.launched_at,
                                ended_at: a.ended_at,
                                machine_ms: millis(a.machine_time(now)),
                                cost_usd: a.cost(now),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        // A failure's reason, or why a job was cancelled before it started (a dependency).
        let failure_reason = job.tasks.iter().find_map(|t| {
            (t.status.is_failure() || t.status == JobStatus::Cancelled)
                .then(|| t.failure_reason.clone())
                .flatten()
        });
        Self {
            id: job.id,
            name: job.name().to_owned(),
            owner: job.owner.clone(),
            status: job.status(),
            submitted_at: job.submitted_at,
            started_at: job.started_at(),
            ended_at: job.ended_at(),
            total_duration_ms: millis(job.total_duration(now)),
            job_duration_ms: millis(job.job_duration(now)),
            recoveries: job.recoveries(),
            failure_reason,
            tasks,
            cost: CostView::of(job.cost(now)),
            max_cost: job.pipeline.max_cost,
            depends_on: job.depends_on.iter().map(ToString::to_string).collect(),
            array: job.array,
        }
    }
}

/// `1x[CPU:2+]`, `2x[A100:8]`, `1x[{T4:1, L4:1}]`: what the task asked for per node.
fn requested(task: &Task) -> String {
    let first = task.resources.candidates.first();
    let what = match first.and_then(|r| r.accelerators.as_ref()) {
        Some(Accelerators::One(a)) => a.to_string(),
        Some(other) => other.to_string(),
        None => match first.and_then(|r| r.instance_type.clone()) {
            Some(t) => t,
            None => format!(
                "CPU:{}",
                first
                    .and_then(|r| r.cpus)
                    .map_or_else(|| "8+".to_owned(), |c| c.to_string())
            ),
        },
    };
    let more = if task.resources.candidates.len() > 1 {
        ", ..."
    } else {
        ""
    };
    // SkyPilot's suffix: `[Spot]`, or `[Spot|On-demand]` when the alternatives mix both.
    let spot = task.resources.candidates.iter().any(|r| r.use_spot);
    let on_demand = task.resources.candidates.iter().any(|r| !r.use_spot);
    let market = match (spot, on_demand) {
        (true, true) => "[Spot|On-demand]",
        (true, false) => "[Spot]",
        _ => "",
    };
    format!("{}x[{what}{more}]{market}", task.num_nodes)
}

/// A controller log line as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub at: Timestamp,
    pub task: usize,
    pub status: JobStatus,
    pub message: String,
}

impl From<&ControllerEvent> for EventView {
    fn from(e: &ControllerEvent) -> Self {
        Self {
            at: e.at,
            task: e.task,
            status: e.status,
            message: e.message.clone(),
        }
    }
}
