//! How long to wait before trying every candidate again when none had capacity.
//!
//! SkyPilot's `Backoff(initial_backoff=60, max_backoff_factor=5)`: 60 s, growing ×1.6 per
//! round, capped at 300 s, each value with ±40 % jitter.
//!
//! One deliberate difference: SkyPilot adds each round's jitter to its stored value, so jitter
//! accumulates. Here the jitter applies to the nominal value only and is derived from a seed
//! (the job, task and round), so that [`crate::job::step`] stays a pure function and every wait
//! stays within ±40 % of the nominal sequence 60, 96, 153.6, 245.76, 300, 300, ...

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_mins(1);
pub const MAX: Duration = Duration::from_mins(5);
pub const MULTIPLIER: f64 = 1.6;
pub const JITTER: f64 = 0.4;

/// The wait before no-capacity round `round + 1`, where `round` counts the rounds that already
/// found nothing (0 for the first).
pub fn delay(round: u32, seed: u64) -> Duration {
    let nominal = nominal(round).as_secs_f64();
    let jitter = (unit_interval(mix(seed ^ u64::from(round))) * 2.0 - 1.0) * JITTER;
    Duration::from_millis((nominal * (1.0 + jitter) * 1000.0).round() as u64)
}

/// The wait before jitter.
pub fn nominal(round: u32) -> Duration {
    // Past 5 rounds the cap holds; stopping the exponent there keeps powi finite for any round.
    let factor = MULTIPLIER.powi(round.min(16).cast_signed());
    let secs = (INITIAL.as_secs_f64() * factor).min(MAX.as_secs_f64());
    Duration::from_secs_f64(secs)
}

/// A seed that differs per job, task and round but is the same every time `step` runs on them.
pub fn seed(job_id: u64, task: usize) -> u64 {
    mix(job_id.rotate_left(20) ^ task as u64)
}

/// `SplitMix64`'s finalizer: spreads nearby inputs across the whole range.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in `[0, 1)` from the top 53 bits.
fn unit_interval(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominal_sequence_is_skypilots() {
        let secs: Vec<f64> = (0..7).map(|r| nominal(r).as_secs_f64()).collect();
        let rounded: Vec<f64> = secs.iter().map(|s| (s * 100.0).round() / 100.0).collect();
        assert_eq!(rounded, [60.0, 96.0, 153.6, 245.76, 300.0, 300.0, 300.0]);
        assert_eq!(nominal(u32::MAX), MAX);
    }

    #[test]
    fn jitter_stays_within_forty_percent_and_is_deterministic() {
        for job in 1..200u64 {
            for round in 0..8 {
                let s = seed(job, 0);
                let d = delay(round, s).as_secs_f64();
                let n = nominal(round).as_secs_f64();
                assert!(d >= n * 0.6 - 0.001 && d <= n * 1.4 + 0.001, "{d} vs {n}");
                assert_eq!(delay(round, s), delay(round, s));
            }
        }
    }

    #[test]
    fn jitter_spreads_jobs_apart() {
        let firsts: std::collections::BTreeSet<u128> = (1..50u64)
            .map(|job| delay(0, seed(job, 0)).as_millis())
            .collect();
        assert!(firsts.len() > 40, "only {} distinct delays", firsts.len());
    }
}
