//! Test records that read like prose: `JobRecord::test().tasks(2).running().attempt(3)`.
//!
//! The state setters put the *current* task in a state `step` could have produced, without
//! going through the events; each documents what it assumes.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::cloud::Cloud;
use crate::optimizer::Candidate;
use crate::spec::{Pipeline, RecoveryStrategy, ResourceSpec, Task};

use super::{JobId, JobRecord, JobStatus, LaunchWalk, cluster_name};

/// When test jobs are submitted: 2023-11-14T22:13:20Z.
pub const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

/// A spot candidate at `price` USD/hour.
pub fn candidate(cloud: Cloud, region: &str, zone: &str, price: f64) -> Candidate {
    Candidate {
        cloud,
        region: region.to_owned(),
        zone: zone.to_owned(),
        instance_type: if cloud == Cloud::Gcp {
            "n2-standard-2"
        } else {
            "m6i.large"
        }
        .to_owned(),
        vcpus: 2.0,
        memory_gb: 8.0,
        accelerator: None,
        use_spot: true,
        hourly_price: price,
        num_nodes: 1,
        alternative: 0,
    }
}

/// Four candidates, cheapest first: two zones of aws/us-east-1, then aws/us-west-2, then
/// gcp/us-central1.
pub fn candidates() -> Vec<Candidate> {
    vec![
        candidate(Cloud::Aws, "us-east-1", "us-east-1a", 0.030),
        candidate(Cloud::Aws, "us-east-1", "us-east-1b", 0.031),
        candidate(Cloud::Aws, "us-west-2", "us-west-2a", 0.035),
        candidate(Cloud::Gcp, "us-central1", "us-central1-a", 0.040),
    ]
}

fn task(name: &str) -> Task {
    Task {
        name: name.to_owned(),
        workdir: None,
        num_nodes: 1,
        envs: BTreeMap::new(),
        secrets: BTreeMap::new(),
        file_mounts: Vec::new(),
        setup: Some("pip install -r requirements.txt".to_owned()),
        run: Some("python train.py".to_owned()),
        resources: ResourceSpec::default(),
        config: None,
        limits: crate::spec::TaskLimits::default(),
    }
}

impl JobRecord {
    /// Job 1 of `alice`, one task `train` with four candidates ([`candidates`]), PENDING,
    /// submitted at [`T0`], never stored (`version` 0).
    pub fn test() -> Self {
        let pipeline = Pipeline {
            name: "train".to_owned(),
            tasks: vec![task("train")],
            max_cost: None,
        };
        JobRecord::new(1, "alice", pipeline, vec![candidates()], T0)
    }

    pub fn id(mut self, id: JobId) -> Self {
        self.id = id;
        self.rename_clusters();
        self
    }

    pub fn owner(mut self, owner: &str) -> Self {
        owner.clone_into(&mut self.owner);
        self
    }

    /// Names the job (and, for a single task, the task, as SkyPilot does).
    pub fn named(mut self, name: &str) -> Self {
        name.clone_into(&mut self.pipeline.name);
        if self.pipeline.tasks.len() == 1 {
            name.clone_into(&mut self.pipeline.tasks[0].name);
        }
        self.rename_clusters();
        self
    }

    /// A pipeline of `n` tasks `<job>-0`, `<job>-1`, ..., each with the same candidates.
    pub fn tasks(self, n: usize) -> Self {
        let name = self.pipeline.name.clone();
        let pipeline = Pipeline {
            tasks: (0..n).map(|i| task(&format!("{name}-{i}"))).collect(),
            name,
            max_cost: self.pipeline.max_cost,
        };
        let candidates = vec![self.candidates[0].clone(); n];
        JobRecord::new(self.id, self.owner, pipeline, candidates, self.submitted_at)
    }

    pub fn submitted(mut self, at: Timestamp) -> Self {
        self.submitted_at = at;
        self.tasks[0].submitted_at = Some(at);
        self
    }

    /// Waits for the job `dep` names (`ID[:kind]`).
    pub fn depends_on(mut self, dep: &str) -> Self {
        self.depends_on.push(dep.parse().expect("a dependency"));
        self
    }

    /// A limit timer is armed to fire at `at`.
    pub fn armed(mut self, at: Timestamp) -> Self {
        self.limit_timer_at = Some(at);
        self
    }

    /// A time or cost limit falls due at `at`.
    pub fn deadline(mut self, at: Timestamp) -> Self {
        self.deadline_at = Some(at);
        self
    }

    pub fn version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// Every task runs on `n` nodes.
    pub fn nodes(mut self, n: u32) -> Self {
        for task in &mut self.pipeline.tasks {
            task.num_nodes = n;
        }
        self
    }

    /// The recovery strategy of every task.
    pub fn strategy(mut self, strategy: RecoveryStrategy) -> Self {
        for task in &mut self.pipeline.tasks {
            task.resources.recovery.strategy = strategy;
        }
        self
    }

    /// `max_restarts_on_errors` of every task.
    /// Task `index` has no `run` command.
    pub fn without_run(mut self, index: usize) -> Self {
        self.pipeline.tasks[index].run = None;
        self
    }

    pub fn max_restarts(mut self, n: u32) -> Self {
        for task in &mut self.pipeline.tasks {
            task.resources.recovery.max_restarts_on_errors = n;
        }
        self
    }

    /// `recover_on_exit_codes` of every task.
    pub fn recover_on(mut self, codes: &[i32]) -> Self {
        for task in &mut self.pipeline.tasks {
            task.resources.recovery.recover_on_exit_codes = codes.to_vec();
        }
        self
    }

    /// The time limits of every task.
    pub fn limits(mut self, limits: crate::spec::TaskLimits) -> Self {
        for task in &mut self.pipeline.tasks {
            task.limits = limits;
        }
        self
    }

    /// The job's `max_cost`.
    pub fn max_cost(mut self, usd: f64) -> Self {
        self.pipeline.max_cost = Some(usd);
        self
    }

    /// `job_recovery.max_recoveries` of every task.
    pub fn max_recoveries(mut self, n: u32) -> Self {
        for task in &mut self.pipeline.tasks {
            task.resources.recovery.max_recoveries = Some(n);
        }
        self
    }

    /// Relaunches after lost machines already charged against `max_recoveries`.
    pub fn lost_recoveries(mut self, n: u32) -> Self {
        self.current_mut().lost_recoveries = n;
        self
    }

    /// The current cluster's machines cost `hourly` USD an hour since the job's submission.
    pub fn costing(mut self, hourly: f64) -> Self {
        let at = self.submitted_at;
        let task = self.current_mut();
        let entry = super::AttemptCost {
            attempt: task.attempt,
            cluster: task.cluster.clone().unwrap_or_default(),
            candidate: task.candidate.unwrap_or(0),
            hourly,
            spot: false,
            launched_at: at,
            ended_at: None,
            confirmed: false,
        };
        task.attempts.push(entry);
        self
    }

    /// Replaces every task's candidates.
    pub fn with_candidates(mut self, candidates: &[Candidate]) -> Self {
        for list in &mut self.candidates {
            *list = candidates.to_vec();
        }
        self
    }

    /// Earlier tasks SUCCEEDED; task `i` is current (and PENDING until another setter runs).
    pub fn at_task(mut self, i: usize) -> Self {
        for (j, task) in self.tasks.iter_mut().enumerate().take(i) {
            task.status = JobStatus::Succeeded;
            task.attempt = 1;
            task.cluster = Some(cluster_name(&self.pipeline.tasks[j].name, self.id, 1));
            task.candidate = Some(0);
            task.started_at = Some(T0.plus(Duration::from_mins(1)));
            task.ended_at = Some(T0.plus(Duration::from_mins(2)));
            task.run_time = Duration::from_mins(1);
        }
        self.current_task = i;
        self.tasks[i].submitted_at = Some(T0.plus(Duration::from_mins(2)));
        self
    }

    /// STARTING: the first launch tries candidate 0, cheapest first.
    pub fn starting(self) -> Self {
        self.launching(JobStatus::Starting)
    }

    /// RECOVERING after one preemption that ended a minute of running: relaunching on
    /// candidate 0 with the next cluster.
    pub fn recovering(mut self) -> Self {
        self = self.running().launching(JobStatus::Recovering);
        let task = self.current_mut();
        task.recoveries = 1;
        task.running_since = None;
        task.run_time = Duration::from_mins(1);
        self
    }

    /// The cloud accepted the current launch.
    pub fn launched(mut self) -> Self {
        if let Some(walk) = self.current_mut().launch.as_mut() {
            walk.launched = true;
        }
        self
    }

    /// RUNNING on candidate 0 (cluster attempt 1) since `T0 + 60 s`.
    pub fn running(mut self) -> Self {
        if self.current().attempt == 0 {
            self = self.starting();
        }
        let since = self.tasks[self.current_task]
            .submitted_at
            .unwrap_or(T0)
            .plus(Duration::from_mins(1));
        let task = self.current_mut();
        task.status = JobStatus::Running;
        task.launch = None;
        task.waiting_since = None;
        task.started_at.get_or_insert(since);
        task.running_since = Some(since);
        self
    }

    /// In `setup` or `run` (after [`running`](Self::running)).
    pub fn in_phase(mut self, phase: super::Phase) -> Self {
        self.current_mut().phase = Some(phase);
        self
    }

    /// The current cluster is the `n`th for this task.
    pub fn attempt(mut self, n: u32) -> Self {
        self.current_mut().attempt = n;
        self.rename_clusters();
        self
    }

    /// The current cluster is on candidate `i` (and, while launching, only `i` was tried).
    pub fn on_candidate(mut self, i: usize) -> Self {
        let task = self.current_mut();
        task.candidate = Some(i);
        if let Some(walk) = task.launch.as_mut() {
            walk.order.retain(|c| *c != i);
            walk.order.insert(0, i);
            walk.tried = vec![i];
        }
        self
    }

    /// While launching, these candidates were tried (in this order); the last is current.
    pub fn tried(mut self, tried: &[usize]) -> Self {
        let task = self.current_mut();
        if let Some(walk) = task.launch.as_mut() {
            walk.tried = tried.to_vec();
        }
        task.candidate = tried.last().copied();
        self
    }

    /// Candidates of this round whose region could not host the launch.
    pub fn unavailable(mut self, candidates: &[usize]) -> Self {
        if let Some(walk) = self.current_mut().launch.as_mut() {
            walk.unavailable = candidates.to_vec();
        }
        self
    }

    /// Launch rounds in a row that already found no capacity.
    pub fn rounds(mut self, n: u32) -> Self {
        self.current_mut().no_capacity_rounds = n;
        self
    }

    pub fn restarts(mut self, n: u32) -> Self {
        self.current_mut().restarts = n;
        self
    }

    /// Waiting out no-capacity round `rounds` until `until`, in PENDING (or RECOVERING if it
    /// was recovering).
    pub fn in_backoff(mut self, until: Timestamp, rounds: u32) -> Self {
        if self.current().status == JobStatus::Pending || self.current().attempt == 0 {
            self = self.starting();
            self.current_mut().status = JobStatus::Pending;
        }
        let task = self.current_mut();
        task.launch = None;
        task.cluster = None;
        task.candidate = None;
        task.no_capacity_rounds = rounds;
        self.next_attempt_at = Some(until);
        self
    }

    /// CANCELLING: the current task's cluster is being torn down.
    pub fn cancelling(mut self) -> Self {
        if self.current().cluster.is_none() {
            self = self.running();
        }
        let current = self.current_task;
        for task in self.tasks.iter_mut().skip(current) {
            task.status = JobStatus::Cancelling;
            task.launch = None;
            task.running_since = None;
        }
        self
    }

    /// Every task SUCCEEDED.
    pub fn succeeded(mut self) -> Self {
        let last = self.tasks.len() - 1;
        self = self.at_task(last).running();
        let task = self.current_mut();
        task.status = JobStatus::Succeeded;
        task.running_since = None;
        task.run_time = Duration::from_mins(1);
        task.ended_at = Some(T0.plus(Duration::from_mins(3)));
        self
    }

    fn launching(mut self, status: JobStatus) -> Self {
        let n = self.candidates[self.current_task].len();
        let since = Some(self.submitted_at);
        let self_submitted = self.submitted_at;
        let task = self.current_mut();
        task.status = status;
        task.waiting_since.get_or_insert(self_submitted);
        task.attempt += 1;
        task.candidate = Some(0);
        task.launch = Some(LaunchWalk {
            order: (0..n).collect(),
            tried: vec![0],
            launched: false,
            since,
            unavailable: Vec::new(),
        });
        self.rename_clusters();
        self
    }

    fn current(&self) -> &super::TaskState {
        &self.tasks[self.current_task]
    }

    fn current_mut(&mut self) -> &mut super::TaskState {
        &mut self.tasks[self.current_task]
    }

    fn rename_clusters(&mut self) {
        for (i, task) in self.tasks.iter_mut().enumerate() {
            if task.cluster.is_some() || (task.attempt > 0 && task.launch.is_some()) {
                task.cluster = Some(cluster_name(
                    &self.pipeline.tasks[i].name,
                    self.id,
                    task.attempt,
                ));
            }
        }
    }
}
