//! Chooses where a task runs: every feasible candidate from the catalog, ranked.

mod candidate;

pub use candidate::Candidate;
