//! Money checks at submit: a job's `max_cost` must leave room for its duration limits on the
//! cheapest candidate, and a user over the deployment's monthly budget launches nothing new.
//!
//! # Guarantees
//! - Both are refusals before anything is stored (400, `stratus` exits 2), naming the setting
//!   and what would let the job through.
//! - The monthly sum is bounded work: at most [`BUDGET_SCAN_LIMIT`] of the user's jobs, newest
//!   first, stopping once the budget is reached or at the first job submitted more than
//!   [`LOOKBACK`] before the month began. Each job counts its machine time within the month.
//!
//! # Caveats
//! - Costs are the ledger's estimates (catalog prices × machine time), not the cloud's bill.
//! - Jobs running at once can together pass the budget: it stops new launches, not running
//!   jobs (their own `max_cost` does that).
//! - A job submitted more than [`LOOKBACK`] before the month began is not counted, even if it
//!   still runs.
//! - Each read is a whole job record (its spec documents included), in pages of 100.
//! - Without a duration limit the cap cannot be checked at submit; it still stops the job when
//!   its cost reaches it.

use super::Context;
use super::SubmitError;
use crate::clock::Timestamp;
use crate::job::cost::format_usd;
use crate::optimizer::Candidate;
use crate::spec::Pipeline;
use crate::store::Cursor;

/// The most of a user's jobs the monthly sum reads.
pub const BUDGET_SCAN_LIMIT: usize = 10_000;

const PAGE: usize = 100;

/// How long before the month began a job may have been submitted and still be counted.
pub const LOOKBACK: std::time::Duration = std::time::Duration::from_hours(31 * 24);

/// The least the job costs if each task runs for its duration limit on its cheapest candidate,
/// or `None` when a task has no duration limit (its cost is unbounded in time).
pub fn least_cost(pipeline: &Pipeline, candidates: &[Vec<Candidate>]) -> Option<f64> {
    pipeline
        .tasks
        .iter()
        .zip(candidates)
        .map(|(task, ranked)| {
            let limit = match (task.limits.max_duration, task.limits.max_attempt_duration) {
                (Some(a), Some(b)) => a.min(b),
                (Some(d), None) | (None, Some(d)) => d,
                (None, None) => return None,
            };
            let cheapest = ranked
                .iter()
                .map(Candidate::cost)
                .fold(f64::INFINITY, f64::min);
            Some(cheapest * limit.as_secs_f64() / 3600.0)
        })
        .sum()
}

/// Refuses a job whose `max_cost` cannot pay for its duration limits on the cheapest candidate.
pub fn check_cap(pipeline: &Pipeline, candidates: &[Vec<Candidate>]) -> Result<(), SubmitError> {
    let (Some(cap), Some(least)) = (pipeline.max_cost, least_cost(pipeline, candidates)) else {
        return Ok(());
    };
    if least > cap {
        return Err(SubmitError::BadRequest(format!(
            "max_cost: {} (stratus.max_cost or --max-cost) cannot pay for the tasks' duration \
             limits (max_duration, stratus.max_attempt_duration) even on the cheapest \
             candidates ({} for the whole limits): raise the cap, shorten the limits, or \
             choose cheaper resources",
            format_usd(cap),
            format_usd(least)
        )));
    }
    Ok(())
}

/// Refuses a new job of `owner` once the owner's jobs of this calendar month (UTC) have cost
/// the deployment's monthly budget.
pub async fn check_monthly(ctx: &Context, owner: &str) -> Result<(), SubmitError> {
    let Some(budget) = ctx.settings.monthly_budget else {
        return Ok(());
    };
    let now = ctx.clock.now();
    let since = month_start(now);
    let spent = spent_since(ctx, owner, since, now, budget).await?;
    if spent >= budget {
        return Err(SubmitError::BadRequest(format!(
            "monthly budget: {owner}'s jobs have cost {} this month (estimates), and the budget \
             is {} a user a month: wait for next month or ask an admin to raise it \
             (jobs.monthly_budget locally, the MonthlyBudgetPerUser stack parameter)",
            format_usd(spent),
            format_usd(budget)
        )));
    }
    Ok(())
}

/// What `owner`'s machines cost from `since` to `now`, read until it reaches `enough`.
pub async fn spent_since(
    ctx: &Context,
    owner: &str,
    since: Timestamp,
    now: Timestamp,
    enough: f64,
) -> Result<f64, SubmitError> {
    let oldest = Timestamp::from_millis(
        since.as_millis() - i64::try_from(LOOKBACK.as_millis()).unwrap_or(i64::MAX),
    );
    let mut spent = 0.0;
    let mut cursor: Option<Cursor> = None;
    let mut read = 0;
    while read < BUDGET_SCAN_LIMIT {
        let page = ctx
            .store
            .list_jobs(Some(owner), cursor.take(), PAGE)
            .await?;
        read += page.jobs.len();
        for job in &page.jobs {
            if job.submitted_at < oldest {
                return Ok(spent);
            }
            spent += job.cost_between(since, now);
            if spent >= enough {
                return Ok(spent);
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(spent)
}

/// Midnight UTC on the first day of `now`'s month.
pub fn month_start(now: Timestamp) -> Timestamp {
    let zoned = jiff::Timestamp::from_millisecond(now.as_millis())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC);
    let first = zoned
        .first_of_month()
        .and_then(|d| d.start_of_day())
        .map_or(0, |d| d.timestamp().as_millisecond());
    Timestamp::from_millis(first)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::job::JobRecord;
    use crate::spec::TaskLimits;

    #[test]
    fn the_month_starts_at_midnight_utc_on_the_first() {
        // 2026-12-03T21:51:30Z → 2026-12-01T00:00:00Z.
        let now = Timestamp::from_millis(1_796_334_690_000);
        assert_eq!(month_start(now).to_string(), "2026-12-01T00:00:00.000Z");
        let first = Timestamp::from_millis(1_796_083_200_000);
        assert_eq!(month_start(first), first);
    }

    #[test]
    fn a_cap_must_pay_for_the_duration_limit_on_the_cheapest_candidate() {
        let two_hours = TaskLimits {
            max_duration: Some(Duration::from_hours(2)),
            ..TaskLimits::default()
        };
        // The test candidates' cheapest is $0.030 an hour: two hours cost $0.06.
        let job = JobRecord::test().limits(two_hours);
        assert!((least_cost(&job.pipeline, &job.candidates).unwrap() - 0.06).abs() < 1e-12);
        let fits = JobRecord::test().limits(two_hours).max_cost(0.06);
        assert!(check_cap(&fits.pipeline, &fits.candidates).is_ok());
        let short = JobRecord::test().limits(two_hours).max_cost(0.05);
        let err = check_cap(&short.pipeline, &short.candidates).unwrap_err();
        assert!(
            err.to_string()
                .contains("max_cost: $0.0500 (stratus.max_cost or --max-cost) cannot pay"),
            "{err}"
        );
        let unbounded = JobRecord::test().max_cost(0.01);
        assert!(check_cap(&unbounded.pipeline, &unbounded.candidates).is_ok());
    }
}
