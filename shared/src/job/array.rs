//! Job arrays (`stratus jobs launch --num-jobs N --max-parallel M`): N jobs from one task,
//! created by one request, with consecutive IDs. The first member's ID is the array's ID; each
//! member gets its rank (`SKYPILOT_JOB_RANK`, 0..N-1) and the count (`SKYPILOT_NUM_JOBS`).
//!
//! **At most M at once, with no shared counter:** the members run in M lanes. Rank `r` launches
//! once rank `r - M` has ended and its cleanup has finished (its machines are gone); ranks
//! below M launch at once. Each gate reads one other job, whose ending is final, so two members
//! can never both see a free slot: at any time each lane has at most one member between launch
//! and cleanup. (A lane waits for its own previous member, not for any free slot: a long member
//! holds up its lane only.) A member's cleanup wakes the next in its lane; the sweep re-asks
//! any whose wake-up was lost.

use serde::{Deserialize, Serialize};

use super::{JobId, JobStatus};

/// The most members one array may have: one request creates them all.
pub const MAX_JOBS: u32 = 1000;

/// What a client asks for (`--num-jobs`, `--max-parallel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrayRequest {
    pub num_jobs: u32,
    /// At most this many members launched at once; all of them when left out.
    #[serde(default)]
    pub max_parallel: Option<u32>,
}

impl ArrayRequest {
    /// `(size, max_parallel)`, or what is wrong, naming the flag.
    pub fn checked(self) -> Result<(u32, u32), String> {
        if self.num_jobs == 0 || self.num_jobs > MAX_JOBS {
            return Err(format!(
                "--num-jobs: {}; give 1 to {MAX_JOBS} (one request creates them all; launch several arrays for more)",
                self.num_jobs
            ));
        }
        match self.max_parallel {
            Some(0) => Err(
                "--max-parallel: 0; give at least 1 (or leave it out to run every job at once)"
                    .into(),
            ),
            Some(m) => Ok((self.num_jobs, m.min(self.num_jobs))),
            None => Ok((self.num_jobs, self.num_jobs)),
        }
    }
}

/// One member's place in its array; fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayMember {
    /// The array's ID: its first member's job ID.
    pub id: JobId,
    pub rank: u32,
    pub size: u32,
    pub max_parallel: u32,
}

impl ArrayMember {
    /// Every member of an array of `size` starting at job `first`.
    pub fn all(first: JobId, size: u32, max_parallel: u32) -> impl Iterator<Item = ArrayMember> {
        (0..size).map(move |rank| ArrayMember {
            id: first,
            rank,
            size,
            max_parallel: max_parallel.max(1),
        })
    }

    /// This member's own job ID.
    pub fn job_id(&self) -> JobId {
        self.id + JobId::from(self.rank)
    }

    /// The member it waits for: the previous one in its lane.
    pub fn waits_for(&self) -> Option<JobId> {
        self.rank
            .checked_sub(self.max_parallel)
            .map(|rank| self.id + JobId::from(rank))
    }

    /// The member that waits for it: the next one in its lane.
    pub fn next_in_lane(&self) -> Option<JobId> {
        let rank = self.rank + self.max_parallel;
        (rank < self.size).then(|| self.id + JobId::from(rank))
    }

    /// Whether job `id` is one of this array's.
    pub fn contains(&self, id: JobId) -> bool {
        (self.id..self.id + JobId::from(self.size)).contains(&id)
    }
}

/// Whether a member may launch, given the member it waits for: `None` when there is none (or
/// it cannot be read as a job: never written, so there is nothing to wait for), else its
/// status and whether its cleanup has finished.
pub fn may_launch(waits_for: Option<(JobStatus, bool)>) -> bool {
    waits_for.is_none_or(|(status, cleaned)| status.is_terminal() && cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn lanes_one_row_per_rule() {
        use JobStatus::{Cancelled, Failed, Running, Succeeded};
        let rows: [(Option<(JobStatus, bool)>, bool); 6] = [
            // the member waited for, may launch
            (None, true),                       // the first in its lane
            (Some((Running, false)), false),    // still running
            (Some((Succeeded, false)), false),  // ended, its machines not yet gone
            (Some((Succeeded, true)), true),    // ended and cleaned up
            (Some((Failed, true)), true),       // however it ended
            (Some((Cancelled, true)), true),
        ];
        for (before, may) in rows {
            assert_eq!(may_launch(before), may, "{before:?}");
        }
    }

    #[test]
    fn lanes_chain_every_rank_and_bound_the_parallelism() {
        let members: Vec<ArrayMember> = ArrayMember::all(10, 7, 3).collect();
        let ids: Vec<JobId> = members.iter().map(ArrayMember::job_id).collect();
        assert_eq!(ids, (10..17).collect::<Vec<_>>());
        let waits: Vec<Option<JobId>> = members.iter().map(ArrayMember::waits_for).collect();
        assert_eq!(
            waits,
            [None, None, None, Some(10), Some(11), Some(12), Some(13)]
        );
        let next: Vec<Option<JobId>> = members.iter().map(ArrayMember::next_in_lane).collect();
        assert_eq!(
            next,
            [Some(13), Some(14), Some(15), Some(16), None, None, None]
        );
        // Without heads beyond the limit: exactly `max_parallel` members start at once.
        assert_eq!(waits.iter().filter(|w| w.is_none()).count(), 3);
        assert!(members[0].contains(16) && !members[0].contains(17) && !members[0].contains(9));
    }

    #[test]
    fn requests_name_the_flag_and_the_fix() {
        let ask = |num_jobs, max_parallel| {
            ArrayRequest {
                num_jobs,
                max_parallel,
            }
            .checked()
        };
        assert_eq!(ask(1000, Some(8)), Ok((1000, 8)));
        assert_eq!(ask(5, None), Ok((5, 5)));
        assert_eq!(ask(5, Some(9)), Ok((5, 5)));
        assert!(
            ask(0, None)
                .unwrap_err()
                .starts_with("--num-jobs: 0; give 1 to 1000")
        );
        assert!(
            ask(1001, None)
                .unwrap_err()
                .contains("launch several arrays")
        );
        assert!(
            ask(3, Some(0))
                .unwrap_err()
                .starts_with("--max-parallel: 0")
        );
    }
}
