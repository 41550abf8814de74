//! The cost ledger: what a job's machines cost, attempt by attempt.
//!
//! Each cluster a task launched is an entry: its machine-seconds, from the launch request to
//! its teardown (the decision, replaced by the time `ClusterTerminated` arrives when the
//! control plane's own teardown reports it; a teardown by the cleanup or the sweep keeps the
//! decision's time), times the catalog's hourly price of what it ran on (spot or on-demand,
//! all its nodes). Prices are the catalog's (`shared/data/catalog/README.md` gives each
//! cloud's source and date), so every figure is an **estimate**: no cloud bill is read. A
//! launch refused outright (quota, credentials, invalid, a region that cannot host it, a zone
//! known full) started no machine and leaves no entry; a no-capacity answer (which may stand
//! for a call that half ran) and machines that never became ready keep their seconds.
//!
//! Pure, like `step`: the time is always given.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

use super::{JobRecord, TaskState};

/// Entries kept per task; older ended ones are folded into `TaskState::earlier_cost`, so a
/// job recovering for weeks keeps a small record (a DynamoDB item holds 400 KB).
pub const LEDGER_ENTRIES: usize = 64;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// One cluster's machines in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptCost {
    /// The task's attempt that launched it (names the cluster).
    pub attempt: u32,
    pub cluster: String,
    /// Index of its candidate in the task's ranked list.
    pub candidate: usize,
    /// USD per hour of the whole cluster: the catalog price of one node × nodes.
    pub hourly: f64,
    pub spot: bool,
    /// When its launch was requested.
    pub launched_at: Timestamp,
    /// When its teardown was decided, and once `confirmed`, when it was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirmed: bool,
}

impl AttemptCost {
    /// Its machine time up to `now` (or its end).
    pub fn machine_time(&self, now: Timestamp) -> std::time::Duration {
        self.ended_at.unwrap_or(now).since(self.launched_at)
    }

    /// USD up to `now` (or its end).
    pub fn cost(&self, now: Timestamp) -> f64 {
        self.hourly * self.machine_time(now).as_millis() as f64 / MS_PER_HOUR
    }
}

impl TaskState {
    /// USD this task's machines have cost up to `now`.
    pub fn cost(&self, now: Timestamp) -> f64 {
        self.earlier_cost + self.attempts.iter().map(|a| a.cost(now)).sum::<f64>()
    }

    /// Records the launch request of `cluster`.
    pub(super) fn ledger_launch(&mut self, entry: AttemptCost) {
        self.attempts.push(entry);
        while self.attempts.len() > LEDGER_ENTRIES {
            let Some(oldest) = self.attempts.iter().position(|a| a.ended_at.is_some()) else {
                break;
            };
            let gone = self.attempts.remove(oldest);
            self.earlier_cost += gone.cost(gone.launched_at);
        }
    }

    /// The teardown of `cluster` was decided at `now` (a later call changes nothing).
    pub(super) fn ledger_end(&mut self, cluster: &str, now: Timestamp) {
        if let Some(entry) = self.entry_mut(cluster) {
            entry.ended_at.get_or_insert(now);
        }
    }

    /// The teardown of `cluster` was confirmed at `now`: its machines stopped costing then.
    pub(super) fn ledger_confirm(&mut self, cluster: &str, now: Timestamp) {
        if let Some(entry) = self.entry_mut(cluster).filter(|e| !e.confirmed) {
            entry.ended_at = Some(now.max(entry.launched_at));
            entry.confirmed = true;
        }
    }

    /// A launch the cloud refused ran no machine: it leaves no entry.
    pub(super) fn ledger_forget(&mut self, cluster: &str) {
        self.attempts.retain(|a| a.cluster != cluster);
    }

    fn entry_mut(&mut self, cluster: &str) -> Option<&mut AttemptCost> {
        self.attempts
            .iter_mut()
            .rev()
            .find(|a| a.cluster == cluster)
    }
}

impl JobRecord {
    /// USD the job's machines have cost up to `now`, every task and attempt (an estimate).
    pub fn cost(&self, now: Timestamp) -> f64 {
        self.tasks.iter().map(|t| t.cost(now)).sum()
    }

    /// USD of machine time between `since` and `now` (a month's share of a long job). Folded
    /// entries have no times: they count when the job was submitted after `since`.
    pub fn cost_between(&self, since: Timestamp, now: Timestamp) -> f64 {
        self.tasks
            .iter()
            .map(|t| {
                let folded = if self.submitted_at >= since {
                    t.earlier_cost
                } else {
                    0.0
                };
                folded
                    + t.attempts
                        .iter()
                        .map(|a| {
                            let from = a.launched_at.max(since);
                            let to = a.ended_at.unwrap_or(now).min(now);
                            a.hourly * to.since(from).as_millis() as f64 / MS_PER_HOUR
                        })
                        .sum::<f64>()
            })
            .sum()
    }

    /// When the job's cost reaches `cap` at the rate its running machines cost now: when its
    /// ended machines alone reached it, the last of their ends; `None` when nothing runs and
    /// the cap is not reached (the cost cannot grow).
    pub fn cost_reaches(&self, cap: f64) -> Option<Timestamp> {
        let running: Vec<&AttemptCost> = self
            .tasks
            .iter()
            .flat_map(|t| &t.attempts)
            .filter(|a| a.ended_at.is_none() && a.hourly > 0.0)
            .collect();
        let rate: f64 = running.iter().map(|a| a.hourly).sum();
        // cost(t) = ended + Σ hourly_i (t - launched_i) / h, solved for cost(t) = cap.
        let ended: f64 = self
            .tasks
            .iter()
            .map(|t| {
                t.earlier_cost
                    + t.attempts
                        .iter()
                        .filter(|a| a.ended_at.is_some())
                        .map(|a| a.cost(a.launched_at))
                        .sum::<f64>()
            })
            .sum();
        if ended >= cap * (1.0 - 1e-9) {
            let last = self
                .tasks
                .iter()
                .flat_map(|t| &t.attempts)
                .filter_map(|a| a.ended_at)
                .max();
            return Some(last.unwrap_or(Timestamp::EPOCH));
        }
        if rate <= 0.0 {
            return None;
        }
        let weighted: f64 = running
            .iter()
            .map(|a| a.hourly * a.launched_at.as_millis() as f64)
            .sum();
        let at = ((cap - ended) * MS_PER_HOUR + weighted) / rate;
        // Rounded up, so that at `at` the cost has reached the cap.
        Some(Timestamp::from_millis(at.max(0.0).ceil() as i64))
    }
}

/// For `skip_serializing_if`.
#[allow(clippy::trivially_copy_pass_by_ref)]
pub(super) fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

/// For `skip_serializing_if`.
#[allow(clippy::trivially_copy_pass_by_ref)]
pub(super) fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

/// `$0.4200`, `$0.0031`, `$12.40`: four decimals under a dollar, so a cheap job's cost
/// shows, two above.
pub fn format_usd(usd: f64) -> String {
    if usd == 0.0 {
        "$0.00".to_owned()
    } else if usd < 1.0 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobRecord;

    fn entry(cluster: &str, hourly: f64, from: i64, to: Option<i64>) -> AttemptCost {
        AttemptCost {
            attempt: 1,
            cluster: cluster.to_owned(),
            candidate: 0,
            hourly,
            spot: true,
            launched_at: Timestamp::from_secs(from),
            ended_at: to.map(Timestamp::from_secs),
            confirmed: to.is_some(),
        }
    }

    #[test]
    fn the_cost_is_the_sum_of_the_attempts() {
        let mut job = JobRecord::test();
        job.tasks[0].attempts = vec![
            entry("a", 3.6, 0, Some(100)), // 100 s at $3.6/h = $0.10
            entry("b", 7.2, 200, None),    // running since 200 s at $7.2/h
        ];
        let now = Timestamp::from_secs(300);
        assert!((job.cost(now) - 0.30).abs() < 1e-9, "{}", job.cost(now));
        // $0.10 spent, $0.002 a second from 200 s: $0.50 is reached at 400 s.
        assert_eq!(job.cost_reaches(0.50), Some(Timestamp::from_secs(400)));
        job.tasks[0].attempts[1].ended_at = Some(now);
        assert_eq!(job.cost_reaches(0.50), None, "nothing runs");
    }

    #[test]
    fn old_entries_fold_without_losing_cost() {
        let mut task = JobRecord::test().tasks[0].clone();
        for i in 0..(i64::try_from(LEDGER_ENTRIES).unwrap() + 3) {
            task.ledger_launch(entry(&format!("c{i}"), 3.6, i * 10, Some(i * 10 + 1)));
        }
        assert_eq!(task.attempts.len(), LEDGER_ENTRIES);
        let expected = (LEDGER_ENTRIES as f64 + 3.0) * 0.001;
        assert!((task.cost(Timestamp::from_secs(10_000)) - expected).abs() < 1e-9);
    }

    #[test]
    fn confirmation_moves_the_end_once() {
        let mut task = JobRecord::test().tasks[0].clone();
        task.ledger_launch(entry("c", 3.6, 0, None));
        task.ledger_end("c", Timestamp::from_secs(10));
        task.ledger_end("c", Timestamp::from_secs(20));
        assert_eq!(task.attempts[0].ended_at, Some(Timestamp::from_secs(10)));
        task.ledger_confirm("c", Timestamp::from_secs(15));
        task.ledger_confirm("c", Timestamp::from_secs(99));
        assert_eq!(task.attempts[0].ended_at, Some(Timestamp::from_secs(15)));
        assert_eq!(format_usd(task.cost(Timestamp::from_secs(0))), "$0.0150");
    }
}
