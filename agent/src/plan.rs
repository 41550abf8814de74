//! What to do with the `Work` the control plane just returned, given what this agent has
//! already done, and when to ask again. **Invariant:** pure: no IO, no clock, so every rule
//! is a table row below.
//!
//! The control plane keeps returning `Setup` (or `Run`) until it has moved on, so the agent
//! must not run a phase twice: each phase starts at most once per agent lifetime, and only
//! when no other command is running. An agent restarted on a node never saw `Setup`: when it
//! is first given `Run`, it prepares the node (workdir and mounts) before running.

use std::time::Duration;

use shared::agent_protocol::{NodeTask, Work};
use shared::job::Phase;

/// What this agent has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub setup_started: bool,
    pub run_started: bool,
    /// The workdir and mounts were prepared (or preparing them was attempted).
    pub prepared: bool,
    /// A phase's command (or its reports) is still in progress.
    pub busy: bool,
}

/// The decision for one `Work`.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    Nothing,
    /// Start `phase` of `task`, preparing the node first when `prepare`.
    Start {
        phase: Phase,
        task: &'a NodeTask,
        prepare: bool,
    },
    /// Kill the commands and exit.
    Stop,
}

pub fn decide<'a>(progress: &Progress, work: &'a Work) -> Decision<'a> {
    let (phase, task) = match work {
        Work::Wait | Work::Continue => return Decision::Nothing,
        Work::Stop => return Decision::Stop,
        Work::Setup { task } => (Phase::Setup, task),
        Work::Run { task } => (Phase::Run, task),
    };
    let done = match phase {
        // Setup never follows run.
        Phase::Setup => progress.setup_started || progress.run_started,
        Phase::Run => progress.run_started,
    };
    if done || progress.busy {
        Decision::Nothing
    } else {
        Decision::Start {
            phase,
            task,
            prepare: !progress.prepared,
        }
    }
}

/// How long to wait before the next poll: the heartbeat while a command runs (the cloud
/// says when a machine dies; the poll only proves the agent alive); while waiting for
/// something (the cluster, the other nodes' setup), `poll` doubled for each answer that
/// changed nothing (`quiet`), up to the heartbeat.
pub fn next_poll(busy: bool, quiet: u32, poll: Duration, heartbeat: Duration) -> Duration {
    if busy {
        return heartbeat;
    }
    poll.saturating_mul(1 << quiet.min(16)).min(heartbeat)
}

impl Progress {
    /// The latest phase started, which the `work` poll reports (`?started=`).
    pub fn latest_started(&self) -> Option<Phase> {
        if self.run_started {
            Some(Phase::Run)
        } else if self.setup_started {
            Some(Phase::Setup)
        } else {
            None
        }
    }

    /// Records that `phase` was started (after [`Decision::Start`]).
    pub fn start(&mut self, phase: Phase) {
        match phase {
            Phase::Setup => self.setup_started = true,
            Phase::Run => self.run_started = true,
        }
        self.prepared = true;
        self.busy = true;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn task() -> NodeTask {
        NodeTask {
            env: BTreeMap::new(),
            setup: None,
            run: None,
            workdir_archive: None,
            mounts: vec![],
            container: None,
        }
    }

    /// One row: the progress (`s` setup started, `r` run started, `p` prepared, `b` busy),
    /// the work, and the decision written as `-`, `stop` or `setup`/`run` (+ `prepare`).
    fn check(progress: &str, work: &Work, expected: &str) {
        let progress = Progress {
            setup_started: progress.contains('s'),
            run_started: progress.contains('r'),
            prepared: progress.contains('p'),
            busy: progress.contains('b'),
        };
        let actual = match decide(&progress, work) {
            Decision::Nothing => "-".to_owned(),
            Decision::Stop => "stop".to_owned(),
            Decision::Start { phase, prepare, .. } => {
                format!("{phase}{}", if prepare { " + prepare" } else { "" })
            }
        };
        assert_eq!(actual, expected, "{progress:?} {work:?}");
    }

    #[test]
    fn decisions() {
        let setup = Work::Setup { task: task() };
        let run = Work::Run { task: task() };
        check("", &Work::Wait, "-");
        check("spb", &Work::Stop, "stop");
        check("", &setup, "setup + prepare");
        check("sp", &setup, "-");
        check("spb", &setup, "-");
        check("spb", &run, "-");
        check("sp", &run, "run");
        check("", &run, "run + prepare");
        check("rp", &setup, "-");
        check("srp", &run, "-");
        check("spb", &Work::Continue, "-");
        check("sp", &Work::Continue, "-");
    }

    #[test]
    fn polls_back_off_while_waiting_and_beat_while_busy() {
        let (poll, beat) = (Duration::from_secs(2), Duration::from_secs(30));
        let delays: Vec<u64> = (0..7)
            .map(|quiet| next_poll(false, quiet, poll, beat).as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(next_poll(true, 0, poll, beat), beat);
        assert_eq!(next_poll(false, u32::MAX, poll, beat), beat);
    }

    #[test]
    fn starting_marks_the_phase_prepared_and_busy() {
        let mut progress = Progress::default();
        progress.start(Phase::Run);
        assert_eq!(
            progress,
            Progress {
                setup_started: false,
                run_started: true,
                prepared: true,
                busy: true
            }
        );
    }
}
