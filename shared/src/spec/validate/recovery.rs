//! `job_recovery` (and its older spelling under `resources`): strategy, restarts, exit codes.

use serde_yaml::Value;

use super::Result;
use super::scalars::{non_negative_int, show};
use crate::spec::error::{SpecError, Warning};
use crate::spec::resources::{RecoveryPolicy, RecoveryStrategy};
use crate::spec::yaml::{JobRecoveryYaml, ResourcesYaml};
use crate::suggest;

pub(super) fn strategy_of(s: &str, path: String) -> Result<RecoveryStrategy> {
    match s.to_ascii_uppercase().replace('-', "_").as_str() {
        "EAGER_NEXT_REGION" => Ok(RecoveryStrategy::EagerNextRegion),
        "FAILOVER" => Ok(RecoveryStrategy::Failover),
        "NO_RECOVERY" => Ok(RecoveryStrategy::NoRecovery),
        _ => Err(SpecError::new(
            path,
            format!(
                "unknown recovery strategy '{s}'{}: use EAGER_NEXT_REGION, FAILOVER or NO_RECOVERY",
                suggest::did_you_mean(s, ["EAGER_NEXT_REGION", "FAILOVER", "NO_RECOVERY"])
            ),
        )),
    }
}

pub(super) fn recovery(
    yaml: &ResourcesYaml,
    warnings: &mut Vec<Warning>,
) -> Result<RecoveryPolicy> {
    let (value, field) = match (&yaml.job_recovery, &yaml.spot_recovery) {
        (Some(_), Some(_)) => {
            return Err(SpecError::new(
                "resources.spot_recovery",
                "spot_recovery is the old name of job_recovery: keep only job_recovery",
            ));
        }
        (Some(v), None) => (v, "resources.job_recovery"),
        (None, Some(v)) => {
            warnings.push(Warning {
                path: "resources.spot_recovery".into(),
                message: "deprecated: use job_recovery".into(),
            });
            (v, "resources.spot_recovery")
        }
        (None, None) => return Ok(RecoveryPolicy::default()),
    };
    match value {
        JobRecoveryYaml::Strategy(s) => Ok(RecoveryPolicy {
            strategy: strategy_of(s, field.to_owned())?,
            ..RecoveryPolicy::default()
        }),
        JobRecoveryYaml::Full(full) => {
            let strategy = full
                .strategy
                .as_deref()
                .map(|s| strategy_of(s, format!("{field}.strategy")))
                .transpose()?
                .unwrap_or_default();
            let max_restarts_on_errors = match &full.max_restarts_on_errors {
                None => 0,
                Some(v) => non_negative_int(v).ok_or_else(|| {
                    SpecError::new(
                        format!("{field}.max_restarts_on_errors"),
                        format!("{} is not a whole number of restarts (0 or more)", show(v)),
                    )
                })?,
            };
            let recover_on_exit_codes = match &full.recover_on_exit_codes {
                None => vec![],
                Some(v) => exit_codes(v)
                    .map_err(|m| SpecError::new(format!("{field}.recover_on_exit_codes"), m))?,
            };
            let max_recoveries = full
                .max_recoveries
                .as_ref()
                .map(|v| {
                    non_negative_int(v).ok_or_else(|| {
                        SpecError::new(
                            format!("{field}.max_recoveries"),
                            format!(
                                "{} is not a whole number of recoveries (0 or more)",
                                show(v)
                            ),
                        )
                    })
                })
                .transpose()?;
            Ok(RecoveryPolicy {
                strategy,
                max_restarts_on_errors,
                recover_on_exit_codes,
                max_recoveries,
            })
        }
    }
}

pub(super) fn exit_codes(value: &Value) -> std::result::Result<Vec<i32>, String> {
    let items: Vec<&Value> = match value {
        Value::Sequence(items) => items.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .map(|v| {
            v.as_i64()
                .filter(|c| (0..=255).contains(c))
                .map(|c| c as i32)
                .ok_or_else(|| {
                    format!(
                        "{} is not an exit code: use whole numbers from 0 to 255",
                        show(v)
                    )
                })
        })
        .collect()
}
