//! The job state machine: `step(job, event, now) -> (next record, actions)`.
//!
//! Why one file of this length: `step` is one pure function, and its rules read best top to
//! bottom in one place (the table test beside it has a row per rule).
//!
//! The rules, from SkyPilot's managed jobs:
//! - **Launch**: walk the task's ranked candidates. No capacity or a quota on one candidate
//!   moves to the next not yet tried in this launch; when all were tried, wait (60 s ×1.6 up to
//!   300 s, ±40 %) in PENDING (first launch) or RECOVERING, then walk them all again, without
//!   limit. Bad credentials or an invalid request → `FAILED_PRECHECKS`, never retried.
//! - **Preemption or a lost machine**: tear the cluster down and relaunch. `EAGER_NEXT_REGION`
//!   tries the other regions first, `FAILOVER` the same region first. It counts in `#RECOVERIES`
//!   and never against `max_restarts_on_errors`.
//! - **The user's code fails**: an exit code listed in `recover_on_exit_codes` restarts without
//!   limit and without counting against restarts; otherwise restart while
//!   `max_restarts_on_errors` allows, else `FAILED` (`run`) or `FAILED_SETUP` (`setup`). Every
//!   restart is on a new cluster, launched as after a preemption, and counts in `#RECOVERIES`
//!   (SkyPilot's exit-code smoke test expects `#RECOVERIES` > 0).
//! - **Pipelines**: a task that succeeds hands over to the next; one that fails cancels the
//!   rest.
//! - **Cancel**: every unfinished task goes CANCELLING until its cluster is gone, then
//!   CANCELLED; with no cluster to wait for, straight to CANCELLED.
//!
//! Events that do not apply to the job's state (duplicates, late ones, ones about an old
//! cluster) leave the record unchanged; a report that an unwanted cluster is up is answered
//! with `TerminateCluster`, so nothing leaks.

use std::fmt::Write as _;

use crate::clock::Timestamp;
use crate::spec::RecoveryStrategy;

use super::cost::{AttemptCost, format_usd};
use super::{
    Action, ControllerEvent, JobEvent, JobRecord, JobStatus, LaunchFailure, LaunchWalk, Phase,
    TaskState, backoff, cluster_name, limits,
};

/// What `step` decided: the record to write and what to do once it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub next: JobRecord,
    pub actions: Vec<Action>,
    /// Whether `next` differs from the input; when it does not, there is nothing to write (but
    /// the actions, if any, must still be carried out).
    pub changed: bool,
}

/// Decides what `event` does to `job` at time `now`. Pure: no IO, no clock, no randomness.
pub fn step(job: &JobRecord, event: JobEvent, now: Timestamp) -> Step {
    let mut machine = Machine {
        job: job.clone(),
        actions: Vec::new(),
        now,
    };
    machine.apply(event);
    machine.track_deadline();
    let changed = machine.job != *job;
    Step {
        next: machine.job,
        actions: machine.actions,
        changed,
    }
}

/// Which order a launch walks the candidates in.
enum Order {
    /// Cheapest first.
    Ranked,
    /// After losing a cluster in this candidate's region, as the recovery strategy says.
    Recover(Option<usize>),
}

/// Why a running task is being relaunched.
enum Relaunch {
    Lost(&'static str),
    ExitCode(Vec<i32>),
    /// The user's code failed and a restart on errors is left: the line saying so.
    Restart(String),
}

struct Machine {
    job: JobRecord,
    actions: Vec<Action>,
    now: Timestamp,
}

impl Machine {
    fn apply(&mut self, event: JobEvent) {
        if let JobEvent::ClusterTerminated { cluster } = &event {
            // The ledger's end of those machines, whatever the job's state (even ended).
            if let Some(task) = self.job.task_of_cluster(cluster).or_else(|| {
                self.job
                    .tasks
                    .iter()
                    .position(|t| t.attempts.iter().any(|a| &a.cluster == cluster))
            }) {
                self.job.tasks[task].ledger_confirm(cluster, self.now);
            }
        }
        if let JobEvent::ControllerFailed { reason } = event {
            self.controller_failed(&reason);
            return;
        }
        if self.job.is_terminal() {
            // Nothing moves a finished job, but a cluster that comes up late must not leak.
            if let JobEvent::ClusterLaunched { cluster } | JobEvent::NodeReady { cluster } = event {
                self.terminate_unwanted(&cluster);
            }
            return;
        }
        if self.status() == JobStatus::Cancelling {
            self.while_cancelling(event);
            return;
        }
        if !settles(&event) && limits::breach(&self.job, self.now).is_some() {
            // A limit fell due and its timer has not fired yet (the Scheduler is up to two
            // minutes late): nothing launches or relaunches past it.
            self.limit_due();
            return;
        }
        match event {
            JobEvent::Submitted => self.submitted(),
            JobEvent::ClusterLaunched { cluster } => self.cluster_launched(&cluster),
            JobEvent::LaunchFailed {
                cluster,
                failure,
                message,
            } => self.launch_failed(&cluster, failure, &message),
            JobEvent::NodeReady { cluster } => self.node_ready(&cluster),
            JobEvent::SetupStarted { cluster } => self.phase_started(&cluster, Phase::Setup),
            JobEvent::RunStarted { cluster } => self.phase_started(&cluster, Phase::Run),
            JobEvent::TaskExited {
                cluster,
                phase,
                codes,
            } => self.task_exited(&cluster, phase, codes),
            JobEvent::Preempted { cluster } => self.lost(&cluster, "was preempted"),
            JobEvent::HeartbeatLost { cluster } => self.lost(&cluster, "stopped reporting"),
            JobEvent::CancelRequested => self.cancel(),
            JobEvent::BackoffElapsed => self.backoff_elapsed(false),
            JobEvent::CapacityFreed => self.backoff_elapsed(true),
            JobEvent::LimitDue => self.limit_due(),
            JobEvent::DependencyNeverMet { reason } => self.dependency_never_met(reason),
            JobEvent::ClusterTerminated { .. } | JobEvent::ControllerFailed { .. } => {}
        }
    }

    // ---- events -------------------------------------------------------------------------

    fn submitted(&mut self) {
        let task = self.task();
        if task.status != JobStatus::Pending
            || task.attempt > 0
            || self.job.next_attempt_at.is_some()
        {
            return;
        }
        self.set_status(JobStatus::Starting);
        let id = self.job.id;
        let name = self.job.name().to_owned();
        let task_id = self.job.skypilot_task_id(0);
        self.emit(format!(
            "Submitted managed job {id} (task: 0, name: {name}); SKYPILOT_TASK_ID: {task_id}"
        ));
        self.start_task();
    }

    /// Launches the current task, unless it has no `run`: then there is nothing to do on a
    /// machine and it succeeds at once, as in SkyPilot.
    fn start_task(&mut self) {
        let spec = self.job.task_spec(self.job.current_task);
        if spec.run.as_deref().is_some_and(|r| !r.trim().is_empty()) {
            self.begin_launch(&Order::Ranked);
            return;
        }
        self.emit("The task has no `run` command: nothing to launch; it succeeds.".to_owned());
        self.succeed();
    }

    fn cluster_launched(&mut self, cluster: &str) {
        if !self.is_current(cluster) {
            self.terminate_unwanted(cluster);
            return;
        }
        let Some(walk) = self.task_mut().launch.as_mut().filter(|w| !w.launched) else {
            return;
        };
        // The walk stays until the task runs: a cluster lost while booting counts as this
        // candidate failing, and the walk moves on instead of starting over.
        walk.launched = true;
        let on = self.candidate_label();
        self.emit(format!("Cluster launched: {cluster} ({on})."));
    }

    fn launch_failed(&mut self, cluster: &str, failure: LaunchFailure, message: &str) {
        if !self.is_current(cluster) || !self.is_launching() || self.task().launch.is_none() {
            return;
        }
        if failure != LaunchFailure::KnownFull {
            // The launch may have half run: whatever it started goes.
            self.terminate(cluster);
        }
        if matches!(
            failure,
            LaunchFailure::KnownFull
                | LaunchFailure::Quota
                | LaunchFailure::Auth
                | LaunchFailure::Invalid
                | LaunchFailure::Unavailable
        ) {
            // Refused outright (or never asked): no machine ran, nothing to pay for. A
            // no-capacity answer may stand for a failed call that half ran, and a cluster that
            // was never ready did run: both keep their seconds.
            self.task_mut().ledger_forget(cluster);
        }
        if failure == LaunchFailure::Unavailable {
            let candidate = self.task().candidate;
            if let (Some(walk), Some(i)) = (self.task_mut().launch.as_mut(), candidate) {
                walk.unavailable.push(i);
            }
        }
        match failure {
            LaunchFailure::NoCapacity
            | LaunchFailure::Quota
            | LaunchFailure::KnownFull
            | LaunchFailure::NeverReady
            | LaunchFailure::Unavailable => {
                let on = self.candidate_label();
                self.emit(format!(
                    "Launch of {cluster} on {on} failed ({failure}): {message}"
                ));
                self.launch_next();
            }
            LaunchFailure::Auth => {
                // The cloud refuses our credentials: none of its candidates will launch, but
                // the other clouds' may (SkyPilot blocks the cloud and fails over).
                let skipped = self.block_cloud();
                let on = self.candidate_label();
                self.emit(format!(
                    "Launch of {cluster} on {on} failed ({failure}): {message}; skipping \
                     {skipped} other candidate(s) on that cloud."
                ));
                self.launch_next();
            }
            LaunchFailure::Invalid => {
                self.fail(
                    JobStatus::FailedPrechecks,
                    format!("Launch of {cluster} failed ({failure}): {message}"),
                );
            }
        }
    }

    fn node_ready(&mut self, cluster: &str) {
        if !self.is_current(cluster) {
            self.terminate_unwanted(cluster);
            return;
        }
        if self.is_launching() {
            self.mark_running();
            let task = self.job.current_task;
            self.actions.push(Action::RunTask {
                task,
                cluster: cluster.to_owned(),
            });
        }
    }

    fn phase_started(&mut self, cluster: &str, phase: Phase) {
        if !self.is_current(cluster) {
            return;
        }
        if self.is_launching() {
            // The node is further along than the events we saw (NodeReady was lost or late).
            self.mark_running();
        }
        if self.status() == JobStatus::Running {
            self.task_mut().phase = Some(phase);
        }
    }

    fn task_exited(&mut self, cluster: &str, phase: Phase, codes: Vec<i32>) {
        if !self.is_current(cluster) {
            return;
        }
        if self.is_launching() {
            self.mark_running();
        }
        if self.status() != JobStatus::Running {
            return;
        }
        let succeeded = !codes.is_empty() && codes.iter().all(|c| *c == 0);
        if succeeded {
            match phase {
                Phase::Setup => self.task_mut().phase = Some(Phase::Run),
                Phase::Run => self.succeed(),
            }
            return;
        }
        let policy = self.job.recovery_policy(self.job.current_task).clone();
        if codes
            .iter()
            .any(|c| policy.recover_on_exit_codes.contains(c))
        {
            self.relaunch(Relaunch::ExitCode(codes));
        } else if self.task().restarts < policy.max_restarts_on_errors {
            let task = self.task_mut();
            task.restarts += 1;
            let restarts = task.restarts;
            // Said in RECOVERING, so that followers announce the restart with its reason.
            self.relaunch(Relaunch::Restart(format!(
                "The task's {phase} failed with exit code(s) {}; restarting ({restarts} of {} restarts on errors)",
                codes_text(&codes),
                policy.max_restarts_on_errors
            )));
        } else {
            let status = match phase {
                Phase::Setup => JobStatus::FailedSetup,
                Phase::Run => JobStatus::Failed,
            };
            self.terminate(cluster);
            let id = self.job.id;
            self.fail(
                status,
                format!(
                    "The task's {phase} failed with exit code(s) {}. Its output says why: stratus jobs logs {id}",
                    codes_text(&codes)
                ),
            );
        }
    }

    fn lost(&mut self, cluster: &str, what: &'static str) {
        if !self.is_current(cluster) {
            return;
        }
        match self.status() {
            JobStatus::Running => self.relaunch(Relaunch::Lost(what)),
            JobStatus::Starting | JobStatus::Recovering => {
                // Lost before the task started: this candidate failed to launch; no recovery
                // to count.
                self.terminate(cluster);
                self.emit(format!("Cluster {cluster} {what} before the task started."));
                if self.task().launch.is_some() {
                    self.launch_next();
                } else {
                    let lost_on = self.task().candidate;
                    self.begin_launch(&Order::Recover(lost_on));
                }
            }
            _ => {}
        }
    }

    fn cancel(&mut self) {
        self.stop_run_clock();
        self.job.next_attempt_at = None;
        let current = self.job.current_task;
        let cluster = self.task().cluster.clone();
        let to = if cluster.is_some() {
            JobStatus::Cancelling
        } else {
            JobStatus::Cancelled
        };
        for i in current..self.job.tasks.len() {
            let task = &mut self.job.tasks[i];
            if task.status.is_terminal() {
                continue;
            }
            task.status = to;
            task.launch = None;
            if to == JobStatus::Cancelled {
                task.ended_at = Some(self.now);
            }
        }
        if let Some(cluster) = cluster {
            self.terminate(&cluster);
            self.emit(format!("Cancel requested; tearing down {cluster}."));
        } else {
            self.emit("Cancel requested; no cluster to tear down.".to_owned());
            self.emit_job_cost();
        }
    }

    fn while_cancelling(&mut self, event: JobEvent) {
        match event {
            JobEvent::ClusterTerminated { cluster } if self.is_current(&cluster) => {
                for task in &mut self.job.tasks {
                    if task.status == JobStatus::Cancelling {
                        task.status = JobStatus::Cancelled;
                        task.ended_at = Some(self.now);
                    }
                }
                self.emit(format!("Cluster {cluster} is gone; the job is cancelled."));
                self.emit_job_cost();
            }
            // A nudge: tear down (again), in case the first terminate ran before an in-flight
            // launch had created anything.
            JobEvent::CancelRequested => {
                if let Some(cluster) = self.task().cluster.clone() {
                    self.terminate(&cluster);
                }
            }
            // News that a cluster is still there: the one being torn down, or an unwanted one.
            JobEvent::ClusterLaunched { cluster }
            | JobEvent::NodeReady { cluster }
            | JobEvent::SetupStarted { cluster }
            | JobEvent::RunStarted { cluster }
            | JobEvent::TaskExited { cluster, .. } => self.terminate_unwanted(&cluster),
            _ => {}
        }
    }

    /// The wait is over (`early`: capacity was freed, so it ends before its time).
    fn backoff_elapsed(&mut self, early: bool) {
        let Some(at) = self.job.next_attempt_at else {
            return;
        };
        if (self.now < at && !early)
            || !matches!(self.status(), JobStatus::Pending | JobStatus::Recovering)
        {
            return;
        }
        self.job.next_attempt_at = None;
        if self.status() == JobStatus::Pending {
            self.set_status(JobStatus::Starting);
        }
        self.emit("Retrying the launch.".to_owned());
        self.begin_launch(&Order::Ranked);
    }

    /// A job this one waits for ended the wrong way: it never launches.
    fn dependency_never_met(&mut self, reason: String) {
        if !self.job.awaits_dependencies() {
            return;
        }
        let now = self.now;
        for task in &mut self.job.tasks {
            task.status = JobStatus::Cancelled;
            task.ended_at = Some(now);
        }
        self.job.tasks[0].failure_reason = Some(reason.clone());
        self.emit(reason);
    }

    /// A limit's timer fired (or the sweep found it due): stop the job if one is reached.
    fn limit_due(&mut self) {
        let Some(breach) = limits::breach(&self.job, self.now) else {
            return;
        };
        if let Some(cluster) = self.task().cluster.clone() {
            self.terminate(&cluster);
        }
        self.fail(breach.status(), breach.to_string());
    }

    /// Keeps `deadline_at` on the next limit, and asks for a timer when no armed one comes
    /// first: a deadline that moved later is met by the earlier timer, which finds nothing
    /// reached and arms the next (so a cost cap's deadline, which moves at every launch, does
    /// not leave a schedule per move).
    fn track_deadline(&mut self) {
        let next = limits::next_deadline(&self.job);
        self.job.deadline_at = next;
        let Some(at) = next else {
            self.job.limit_timer_at = None;
            return;
        };
        let armed = self
            .job
            .limit_timer_at
            .is_some_and(|timer| timer > self.now && timer <= at);
        if !armed {
            self.job.limit_timer_at = Some(at);
            self.actions.push(Action::ScheduleLimit { at });
        }
    }

    fn controller_failed(&mut self, reason: &str) {
        let current = self.job.current_task;
        let task = self.task();
        let reason = match (&task.failure_reason, task.status.is_terminal()) {
            (Some(old), true) => format!("{reason}. Previously: {old}"),
            _ => reason.to_owned(),
        };
        if let (Some(cluster), false) = (task.cluster.clone(), task.status.is_terminal()) {
            self.terminate(&cluster);
        }
        self.stop_run_clock();
        self.job.next_attempt_at = None;
        for (i, task) in self.job.tasks.iter_mut().enumerate().skip(current) {
            if i == current {
                task.status = JobStatus::FailedController;
                task.failure_reason = Some(reason.clone());
            } else if !task.status.is_terminal() {
                task.status = JobStatus::Cancelled;
            } else {
                continue;
            }
            task.launch = None;
            task.ended_at = Some(self.now);
        }
        self.emit(format!("Controller failed: {reason}"));
        self.emit_job_cost();
    }

    // ---- launching ----------------------------------------------------------------------

    fn begin_launch(&mut self, order: &Order) {
        let current = self.job.current_task;
        let candidates = &self.job.candidates[current];
        if candidates.is_empty() {
            self.fail(
                JobStatus::FailedPrechecks,
                "No feasible resources: the task's requirements match no candidate.".to_owned(),
            );
            return;
        }
        let ranked = 0..candidates.len();
        let order = match *order {
            Order::Recover(Some(lost)) => {
                let strategy = self.job.recovery_policy(current).strategy;
                let lost = &candidates[lost];
                let same_region = |i: &usize| {
                    candidates[*i].cloud == lost.cloud && candidates[*i].region == lost.region
                };
                let (same, other): (Vec<usize>, Vec<usize>) = ranked.partition(same_region);
                match strategy {
                    RecoveryStrategy::EagerNextRegion => [other, same].concat(),
                    // NO_RECOVERY relaunches only to restart after the user's code failed.
                    RecoveryStrategy::Failover | RecoveryStrategy::NoRecovery => {
                        [same, other].concat()
                    }
                }
            }
            Order::Recover(None) | Order::Ranked => ranked.collect(),
        };
        let now = self.now;
        self.task_mut().waiting_since.get_or_insert(now);
        self.task_mut().launch = Some(LaunchWalk {
            order,
            tried: Vec::new(),
            launched: false,
            since: None,
            unavailable: Vec::new(),
        });
        self.launch_next();
    }

    /// Launches the next candidate not yet tried, or backs off when none is left.
    /// Marks every candidate of the current candidate's cloud as tried and unable to serve
    /// (this round, and so the job fails if nothing else can). Returns how many others there
    /// were.
    fn block_cloud(&mut self) -> usize {
        let current = self.job.current_task;
        let Some(cloud) = self
            .task()
            .candidate
            .and_then(|i| self.job.candidates[current].get(i))
            .map(|c| c.cloud)
        else {
            return 0;
        };
        let same: Vec<usize> = self.job.candidates[current]
            .iter()
            .enumerate()
            .filter(|(_, c)| c.cloud == cloud)
            .map(|(i, _)| i)
            .collect();
        let Some(walk) = self.task_mut().launch.as_mut() else {
            return 0;
        };
        let mut others = 0;
        for i in same {
            if !walk.tried.contains(&i) {
                walk.tried.push(i);
                others += 1;
            }
            if !walk.unavailable.contains(&i) {
                walk.unavailable.push(i);
            }
        }
        others
    }

    fn launch_next(&mut self) {
        let current = self.job.current_task;
        let job_id = self.job.id;
        let task_name = self.job.task_spec(current).name.clone();
        let total = self.job.candidates[current].len();
        let task = &mut self.job.tasks[current];
        let Some(walk) = task.launch.as_mut() else {
            return;
        };
        let Some(index) = walk.order.iter().copied().find(|i| !walk.tried.contains(i)) else {
            let hopeless = walk.order.iter().all(|i| walk.unavailable.contains(i));
            if hopeless {
                self.fail(
                    JobStatus::FailedPrechecks,
                    format!(
                        "None of the {total} candidates can be launched (see the launch lines above): their \
                         clouds refuse the credentials (`stratus check`) or their regions cannot host this task \
                         (name a VPC or subnet for those regions in the stack's network settings, or choose other regions)."
                    ),
                );
                return;
            }
            self.back_off();
            return;
        };
        walk.tried.push(index);
        walk.launched = false;
        walk.since = Some(self.now);
        let nth = walk.tried.len();
        task.attempt += 1;
        let attempt = task.attempt;
        let cluster = cluster_name(&task_name, job_id, attempt);
        task.cluster = Some(cluster.clone());
        task.candidate = Some(index);
        let candidate = self.job.candidates[current][index].clone();
        let now = self.now;
        self.task_mut().ledger_launch(AttemptCost {
            attempt,
            cluster: cluster.clone(),
            candidate: index,
            hourly: candidate.cost(),
            spot: candidate.use_spot,
            launched_at: now,
            ended_at: None,
            confirmed: false,
        });
        self.emit(format!(
            "Launching {cluster} on {candidate} (candidate {nth} of {total} in this round)."
        ));
        self.actions.push(Action::LaunchCluster {
            task: current,
            cluster,
            attempt,
            candidate_index: index,
            candidate,
        });
    }

    fn back_off(&mut self) {
        let current = self.job.current_task;
        let seed = backoff::seed(self.job.id, current);
        let total = self.job.candidates[current].len();
        let task = self.task_mut();
        let round = task.no_capacity_rounds;
        task.no_capacity_rounds += 1;
        task.launch = None;
        task.cluster = None;
        task.candidate = None;
        let after = backoff::delay(round, seed);
        let at = self.now.plus(after);
        self.job.next_attempt_at = Some(at);
        if self.status() == JobStatus::Starting {
            // SkyPilot's set_backoff_pending: a first launch waits in PENDING.
            self.set_status(JobStatus::Pending);
        }
        self.emit(format!(
            "No capacity on any of the {total} candidates; retrying the launch in {:.1} seconds.",
            after.as_secs_f64()
        ));
        self.actions.push(Action::Requeue { after, at });
    }

    /// Tears down the running task's cluster and launches a new one, per the recovery strategy.
    fn relaunch(&mut self, why: Relaunch) {
        self.stop_run_clock();
        let lost_on = self.task().candidate;
        if let Some(cluster) = self.task().cluster.clone() {
            self.terminate(&cluster);
            self.emit_attempt_cost(&cluster);
        }
        let cluster = self.task().cluster.clone().unwrap_or_default();
        if let Relaunch::Lost(what) = why {
            let policy = self.job.recovery_policy(self.job.current_task);
            let refused = if policy.strategy == RecoveryStrategy::NoRecovery {
                Some(format!(
                    "Cluster {cluster} {what}; job_recovery.strategy is NO_RECOVERY, so the task is not relaunched."
                ))
            } else {
                policy
                    .max_recoveries
                    .filter(|max| self.task().lost_recoveries >= *max)
                    .map(|max| {
                        format!(
                            "Cluster {cluster} {what}; the task has already recovered {max} time(s), its job_recovery.max_recoveries."
                        )
                    })
            };
            if let Some(reason) = refused {
                self.fail(JobStatus::Failed, reason);
                return;
            }
            self.task_mut().lost_recoveries += 1;
        }
        let strategy = self.job.recovery_policy(self.job.current_task).strategy;
        let task = self.task_mut();
        task.recoveries += 1;
        task.phase = None;
        self.set_status(JobStatus::Recovering);
        let mut message = match why {
            Relaunch::Lost(what) => format!("Cluster {cluster} {what}; recovering"),
            Relaunch::ExitCode(codes) => format!(
                "Exit code(s) {} matched recover_on_exit_codes; recovering",
                codes_text(&codes)
            ),
            Relaunch::Restart(why) => why,
        };
        let _ = write!(message, " on a new cluster ({strategy}).");
        self.emit(message);
        self.begin_launch(&Order::Recover(lost_on));
    }

    // ---- endings ------------------------------------------------------------------------

    fn succeed(&mut self) {
        self.stop_run_clock();
        let current = self.job.current_task;
        let now = self.now;
        let task = self.task_mut();
        task.status = JobStatus::Succeeded;
        task.phase = None;
        task.ended_at = Some(now);
        if let Some(cluster) = task.cluster.clone() {
            self.terminate(&cluster);
        }
        let name = self.job.task_spec(current).name.clone();
        if current + 1 == self.job.tasks.len() {
            self.emit("Job succeeded.".to_owned());
            self.emit_job_cost();
            return;
        }
        self.emit(format!("Task {current} ({name}) succeeded."));
        self.job.current_task += 1;
        let next = self.task_mut();
        next.submitted_at = Some(now);
        next.status = JobStatus::Starting;
        self.actions
            .push(Action::StartNextTask { task: current + 1 });
        let next_name = self.job.task_spec(current + 1).name.clone();
        let task_id = self.job.skypilot_task_id(current + 1);
        self.emit(format!(
            "Starting task {} ({next_name}); SKYPILOT_TASK_ID: {task_id}",
            current + 1
        ));
        self.start_task();
    }

    /// Ends the current task with a failure status and cancels the rest of the pipeline.
    fn fail(&mut self, status: JobStatus, reason: String) {
        self.stop_run_clock();
        self.job.next_attempt_at = None;
        let current = self.job.current_task;
        let now = self.now;
        for (i, task) in self.job.tasks.iter_mut().enumerate().skip(current) {
            if i == current {
                task.status = status;
                task.failure_reason = Some(reason.clone());
            } else if !task.status.is_terminal() {
                task.status = JobStatus::Cancelled;
            } else {
                continue;
            }
            task.launch = None;
            task.ended_at = Some(now);
        }
        self.emit(reason);
        self.emit_job_cost();
    }

    // ---- helpers ------------------------------------------------------------------------

    fn task(&self) -> &TaskState {
        &self.job.tasks[self.job.current_task]
    }

    fn task_mut(&mut self) -> &mut TaskState {
        &mut self.job.tasks[self.job.current_task]
    }

    fn status(&self) -> JobStatus {
        self.task().status
    }

    fn set_status(&mut self, status: JobStatus) {
        self.task_mut().status = status;
    }

    fn is_current(&self, cluster: &str) -> bool {
        self.task().cluster.as_deref() == Some(cluster)
    }

    fn is_launching(&self) -> bool {
        matches!(self.status(), JobStatus::Starting | JobStatus::Recovering)
    }

    fn mark_running(&mut self) {
        let recovered = self.status() == JobStatus::Recovering;
        let now = self.now;
        if self.task().launch.as_ref().is_some_and(|w| !w.launched) {
            // The nodes answered before the cloud's answer was applied (the events crossed):
            // the launch succeeded all the same, and the log says so once, here.
            let cluster = self.task().cluster.clone().unwrap_or_default();
            let on = self.candidate_label();
            self.emit(format!("Cluster launched: {cluster} ({on})."));
        }
        let task = self.task_mut();
        task.status = JobStatus::Running;
        task.launch = None;
        task.waiting_since = None;
        task.no_capacity_rounds = 0;
        task.started_at.get_or_insert(now);
        task.running_since = Some(now);
        let cluster = task.cluster.clone().unwrap_or_default();
        self.emit(if recovered {
            format!("Recovered: the task is running on {cluster}.")
        } else {
            format!("Job started on {cluster}.")
        });
    }

    fn stop_run_clock(&mut self) {
        let now = self.now;
        let task = self.task_mut();
        if let Some(since) = task.running_since.take() {
            task.run_time += now.since(since);
        }
    }

    fn terminate(&mut self, cluster: &str) {
        let now = self.now;
        self.task_mut().ledger_end(cluster, now);
        self.actions.push(Action::TerminateCluster {
            task: self.job.current_task,
            cluster: cluster.to_owned(),
        });
    }

    /// A cluster reported up that no task wants (a launch that finished after the job moved
    /// on): tear it down.
    fn terminate_unwanted(&mut self, cluster: &str) {
        let owner = self
            .job
            .task_of_cluster(cluster)
            .unwrap_or(self.job.current_task);
        self.actions.push(Action::TerminateCluster {
            task: owner,
            cluster: cluster.to_owned(),
        });
    }

    /// "What this attempt cost" for the controller log, once its teardown is decided.
    fn emit_attempt_cost(&mut self, cluster: &str) {
        let current = self.job.current_task;
        let now = self.now;
        let Some(entry) = self
            .task()
            .attempts
            .iter()
            .rev()
            .find(|a| a.cluster == cluster)
        else {
            return;
        };
        let on = self.job.candidates[current]
            .get(entry.candidate)
            .map_or_else(|| "?".to_owned(), ToString::to_string);
        let secs = entry.machine_time(now).as_secs();
        let cost = format_usd(entry.cost(now));
        self.emit(format!(
            "Attempt {} on {on} ran its machines {secs} s: {cost} (estimate).",
            entry.attempt
        ));
    }

    fn emit_job_cost(&mut self) {
        let cost = format_usd(self.job.cost(self.now));
        self.emit(format!(
            "The job's machines cost {cost} in all (an estimate from catalog prices)."
        ));
    }

    fn candidate_label(&self) -> String {
        let current = self.job.current_task;
        self.task()
            .candidate
            .and_then(|i| self.job.candidates[current].get(i))
            .map_or_else(|| "?".to_owned(), ToString::to_string)
    }

    fn emit(&mut self, message: String) {
        self.actions.push(Action::EmitEvent(ControllerEvent {
            at: self.now,
            task: self.job.current_task,
            status: self.status(),
            message,
        }));
    }
}

/// Events that end or settle the task whatever its limits: a run that finished, a cancel, a
/// teardown's news. Any other event checks the limits first.
fn settles(event: &JobEvent) -> bool {
    matches!(
        event,
        JobEvent::TaskExited { .. }
            | JobEvent::DependencyNeverMet { .. }
            | JobEvent::CancelRequested
            | JobEvent::ClusterTerminated { .. }
            | JobEvent::ControllerFailed { .. }
    )
}

fn codes_text(codes: &[i32]) -> String {
    let codes: Vec<String> = codes.iter().map(ToString::to_string).collect();
    format!("[{}]", codes.join(", "))
}

#[cfg(test)]
mod tests;
