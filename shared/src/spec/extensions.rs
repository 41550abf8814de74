//! The time and money limits: SkyPilot's proposed `max_duration` (PR #10476, a top-level task
//! field) and Stratus's own keys under `stratus:` (`max_cost`, `max_attempt_duration`,
//! `max_pending`), with the `--max-cost` and `--max-duration` flags over them.
//!
//! Durations are written with a unit (`90s`, `30m`, `2h30m`, `1d`): a bare number is refused,
//! since SkyPilot's fields disagree on whether it means seconds or minutes.

use std::time::Duration;

use serde_yaml::Value;

use super::error::SpecError;
use super::yaml::TaskYaml;
use super::{Overrides, TaskLimits};

/// The largest `max_cost` accepted, in USD: beyond it a cap is a typo, not a budget.
pub const MAX_COST_LIMIT: f64 = 1_000_000.0;

/// The longest time limit accepted (a year): beyond it a limit is a typo.
const MAX_LIMIT: Duration = Duration::from_hours(366 * 24);

/// `2h30m`, `90s`, `1d` → a duration of at least a second and at most a year.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "'{text}' has no unit: write e.g. `{text}s`, `{text}m` or `{text}h`"
        ));
    }
    let duration = humantime::parse_duration(text).map_err(|e| {
        format!("'{text}' is not a duration ({e}): write e.g. `90s`, `30m` or `2h30m`")
    })?;
    if duration < Duration::from_secs(1) {
        return Err(format!("'{text}' is under a second: use at least `1s`"));
    }
    if duration > MAX_LIMIT {
        return Err(format!("'{text}' is over a year: use at most `366d`"));
    }
    Ok(duration)
}

/// A task's time limits: the file's, with `--max-duration` over `max_duration`.
pub(super) fn task_limits(yaml: &TaskYaml, overrides: &Overrides) -> Result<TaskLimits, SpecError> {
    let duration = |path: &str, value: Option<&Value>| -> Result<Option<Duration>, SpecError> {
        value
            .map(|v| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                parse_duration(&text).map_err(|m| SpecError::new(path, m))
            })
            .transpose()
    };
    let stratus = yaml.stratus.clone().unwrap_or_default();
    let max_duration = match &overrides.max_duration {
        Some(text) => Some(parse_duration(text).map_err(|m| SpecError::new("--max-duration", m))?),
        None => duration("max_duration", yaml.max_duration.as_ref())?,
    };
    Ok(TaskLimits {
        max_duration,
        max_attempt_duration: duration(
            "stratus.max_attempt_duration",
            stratus.max_attempt_duration.as_ref(),
        )?,
        max_pending: duration("stratus.max_pending", stratus.max_pending.as_ref())?,
    })
}

/// The job's cap: `--max-cost`, else the lowest `stratus.max_cost` of its tasks (in a
/// pipeline, any task's cap bounds the whole job).
pub(super) fn job_max_cost<'a>(
    tasks: impl IntoIterator<Item = (usize, &'a TaskYaml)>,
    overrides: &Overrides,
) -> Result<Option<f64>, SpecError> {
    if let Some(cost) = overrides.max_cost {
        return check_cost(cost)
            .map(Some)
            .map_err(|m| SpecError::new("--max-cost", m));
    }
    let mut lowest: Option<f64> = None;
    for (index, yaml) in tasks {
        let Some(value) = yaml.stratus.as_ref().and_then(|s| s.max_cost.as_ref()) else {
            continue;
        };
        let cost = value
            .as_f64()
            .ok_or_else(|| {
                format!(
                    "'{}' is not a number of US dollars: write e.g. `max_cost: 25`",
                    serde_yaml::to_string(value).unwrap_or_default().trim()
                )
            })
            .and_then(check_cost)
            .map_err(|m| SpecError::new("stratus.max_cost", m).in_document(index))?;
        lowest = Some(lowest.map_or(cost, |l| l.min(cost)));
    }
    Ok(lowest)
}

fn check_cost(cost: f64) -> Result<f64, String> {
    if !cost.is_finite() || cost <= 0.0 {
        return Err(format!("{cost} is not a positive amount of US dollars"));
    }
    if cost > MAX_COST_LIMIT {
        return Err(format!("{cost} is over the ${MAX_COST_LIMIT} a cap may be"));
    }
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_a_sane_size() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2h30m"), Ok(Duration::from_mins(150)));
        assert_eq!(parse_duration(" 1d "), Ok(Duration::from_hours(24)));
        assert!(parse_duration("90").unwrap_err().contains("`90s`"));
        assert!(
            parse_duration("banana")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            parse_duration("10ms")
                .unwrap_err()
                .contains("under a second")
        );
        assert!(parse_duration("400d").unwrap_err().contains("over a year"));
    }

    #[test]
    fn costs_are_positive_and_bounded() {
        assert_eq!(check_cost(2.5), Ok(2.5));
        assert!(check_cost(0.0).is_err());
        assert!(check_cost(-1.0).is_err());
        assert!(check_cost(f64::NAN).is_err());
        assert!(check_cost(2e6).is_err());
    }
}
