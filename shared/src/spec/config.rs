//! The task's `config:` section: SkyPilot's per-task overrides of `~/.sky/config.yaml`.
//!
//! Stratus applies one key per cloud, shaped like SkyPilot's `kubernetes.provision_timeout`:
//!
//! ```yaml
//! config:
//!   aws:
//!     provision_timeout: 900   # seconds from the launch until every node is ready
//!   gcp:
//!     provision_timeout: 600
//! ```
//!
//! A cluster whose nodes are not all ready by then is torn down and the launch moves to the
//! next candidate (the control plane's default applies otherwise). Other keys are kept and
//! reported as not applied.

use std::time::Duration;

use serde_json::Value;

use super::error::{SpecError, Warning};
use crate::cloud::Cloud;

/// The key applied under each cloud's section.
pub const PROVISION_TIMEOUT: &str = "provision_timeout";
/// The shortest and longest provision timeouts accepted (seconds).
pub const PROVISION_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400;

/// Checks what Stratus applies; warns about the rest.
pub(super) fn check(config: &Value, warnings: &mut Vec<Warning>) -> Result<(), SpecError> {
    let Some(sections) = config.as_object() else {
        return Err(SpecError::new(
            "config",
            "expected a mapping of SkyPilot config keys, e.g. `config: {aws: {provision_timeout: 900}}`",
        ));
    };
    let mut ignored = Vec::new();
    for (section, value) in sections {
        let cloud = Cloud::ALL.into_iter().find(|c| c.id() == section);
        let Some(keys) = value.as_object().filter(|_| cloud.is_some()) else {
            ignored.push(section.clone());
            continue;
        };
        for (key, value) in keys {
            if key != PROVISION_TIMEOUT {
                ignored.push(format!("{section}.{key}"));
                continue;
            }
            let path = format!("config.{section}.{key}");
            match value.as_u64() {
                Some(secs) if PROVISION_TIMEOUT_RANGE.contains(&secs) => {}
                _ => {
                    return Err(SpecError::new(
                        path,
                        format!(
                            "expected whole seconds from {} to {} (how long a launch may take until every node is ready), got {value}",
                            PROVISION_TIMEOUT_RANGE.start(),
                            PROVISION_TIMEOUT_RANGE.end()
                        ),
                    ));
                }
            }
        }
    }
    if !ignored.is_empty() {
        warnings.push(Warning {
            path: "config".into(),
            message: format!(
                "kept but not applied: {} (Stratus applies only <cloud>.{PROVISION_TIMEOUT})",
                ignored.join(", ")
            ),
        });
    }
    Ok(())
}

/// The task's provision timeout on `cloud`, if its `config:` sets one (checked at load).
pub fn provision_timeout(config: Option<&Value>, cloud: Cloud) -> Option<Duration> {
    config?
        .get(cloud.id())?
        .get(PROVISION_TIMEOUT)?
        .as_u64()
        .filter(|s| PROVISION_TIMEOUT_RANGE.contains(s))
        .map(Duration::from_secs)
}
