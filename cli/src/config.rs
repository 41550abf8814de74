//! `$STRATUS_HOME/config.yaml`: settings of the local control plane and the local cloud.
//!
//! ```yaml
//! local:
//!   slots: {zone-a: 4, zone-b: 4}    # nodes each local zone runs at once
//! control_plane:
//!   heartbeat_timeout_secs: 30       # a running cluster silent this long is lost
//!   ready_timeout_secs: 600          # a launch not ready this long moves to the next candidate
//!   poll_interval_ms: 1000           # how often the sweep runs
//! jobs:
//!   bucket: s3://my-bucket           # SkyPilot's intermediate bucket: workdirs and file
//!                                    # mounts go to job-<id>/ in it (deleted when the job ends)
//!   monthly_budget: 100              # USD a user's jobs may cost a calendar month (UTC)
//!                                    # before new launches are refused (estimates)
//! notifications:
//!   webhooks:                        # job status changes POSTed as they happen
//!     - url: https://hooks.slack.com/services/...
//!       notify_on: [SUCCEEDED, FAILED]   # empty or absent: every status
//!       format: slack                # or json (the event itself; README, "Job events")
//! ```
//!
//! `STRATUS_LOCAL_SLOTS`, `STRATUS_HEARTBEAT_TIMEOUT_SECS`, `STRATUS_READY_TIMEOUT_SECS` and
//! `STRATUS_POLL_INTERVAL_MS` override the file. A task's `config.<cloud>.provision_timeout`
//! overrides the ready timeout for that task.

use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;
use shared::provider::LocalConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub local: LocalConfig,
    #[serde(default)]
    pub control_plane: ControlPlane,
    #[serde(default)]
    pub jobs: Jobs,
    #[serde(default)]
    pub notifications: Notifications,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    #[serde(default)]
    pub webhooks: Vec<shared::control::webhooks::Webhook>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jobs {
    /// The intermediate bucket (`s3://name` or `gs://name`), as SkyPilot's `jobs.bucket`.
    pub bucket: Option<String>,
    /// USD a user's jobs may cost per calendar month before new launches are refused.
    pub monthly_budget: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    pub heartbeat_timeout_secs: Option<u64>,
    pub ready_timeout_secs: Option<u64>,
    pub poll_interval_ms: Option<u64>,
}

impl Config {
    /// The file's settings, or the defaults when there is no file.
    pub fn load(home: &Path) -> anyhow::Result<Self> {
        let path = home.join("config.yaml");
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => Ok(Self::default()),
            Ok(text) => {
                serde_yaml::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// `jobs.bucket`, checked (`s3://name` or `gs://name`).
    pub fn jobs_bucket(&self) -> anyhow::Result<Option<String>> {
        let Some(url) = &self.jobs.bucket else {
            return Ok(None);
        };
        let bucket = shared::blob::keys::Intermediate::parse(url)
            .map_err(|e| anyhow::anyhow!("{e} (in $STRATUS_HOME/config.yaml)"))?;
        Ok(Some(bucket.url()))
    }

    /// `notifications.webhooks`, checked.
    pub fn webhooks(&self) -> anyhow::Result<Vec<shared::control::webhooks::Webhook>> {
        for (i, hook) in self.notifications.webhooks.iter().enumerate() {
            hook.check().map_err(|e| {
                anyhow::anyhow!("notifications.webhooks[{i}].{e} (in $STRATUS_HOME/config.yaml)")
            })?;
        }
        Ok(self.notifications.webhooks.clone())
    }

    /// `jobs.monthly_budget`, checked (a positive number of US dollars).
    pub fn monthly_budget(&self) -> anyhow::Result<Option<f64>> {
        match self.jobs.monthly_budget {
            Some(b) if !b.is_finite() || b <= 0.0 => Err(anyhow::anyhow!(
                "jobs.monthly_budget: {b} is not a positive number of US dollars (in $STRATUS_HOME/config.yaml)"
            )),
            other => Ok(other),
        }
    }

    pub fn heartbeat_timeout_secs(&self) -> u64 {
        env_number("STRATUS_HEARTBEAT_TIMEOUT_SECS")
            .or(self.control_plane.heartbeat_timeout_secs)
            .unwrap_or(30)
    }

    pub fn ready_timeout_secs(&self) -> u64 {
        env_number("STRATUS_READY_TIMEOUT_SECS")
            .or(self.control_plane.ready_timeout_secs)
            .unwrap_or(shared::control::DEFAULT_READY_TIMEOUT.as_secs())
    }

    pub fn poll_interval_ms(&self) -> u64 {
        env_number("STRATUS_POLL_INTERVAL_MS")
            .or(self.control_plane.poll_interval_ms)
            .unwrap_or(1000)
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}
