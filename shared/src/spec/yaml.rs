//! The serde mirror of SkyPilot's task YAML: every key SkyPilot accepts, as written.
//!
//! Domain code never sees these types: `validate` turns them into `spec::Task`. Scalars that
//! SkyPilot stringifies (env values, cpus, memory) are read as strings so that `1e-6` and `true`
//! keep the text the user wrote (`serde_yaml` hands a plain scalar's source text to a string).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

/// One YAML document: a task, or a pipeline header (only `name`, maybe `execution`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskYaml {
    pub name: Option<String>,
    pub workdir: Option<WorkdirYaml>,
    pub num_nodes: Option<Value>,
    pub resources: Option<ResourcesYaml>,
    pub envs: Option<BTreeMap<String, Option<String>>>,
    pub secrets: Option<BTreeMap<String, Option<String>>>,
    pub file_mounts: Option<BTreeMap<String, Option<FileMountYaml>>>,
    pub setup: Option<String>,
    pub run: Option<String>,
    pub config: Option<Value>,
    /// SkyPilot's proposed limit (PR #10476): how long the task may take from its start,
    /// recoveries included.
    pub max_duration: Option<Value>,
    /// Stratus's own keys.
    pub stratus: Option<StratusYaml>,
    // Header-only keys of pipelines and job groups.
    pub execution: Option<String>,
    pub primary_tasks: Option<Value>,
    pub termination_delay: Option<Value>,
    // Keys SkyPilot accepts that managed jobs here reject or ignore (see `validate`).
    pub service: Option<Value>,
    pub pool: Option<Value>,
    pub volumes: Option<Value>,
    pub volume_mounts: Option<Value>,
    pub inputs: Option<Value>,
    pub outputs: Option<Value>,
    pub event_callback: Option<Value>,
    pub file_mounts_mapping: Option<Value>,
    pub api_server_access: Option<Value>,
    #[serde(rename = "_metadata")]
    pub metadata: Option<Value>,
}

/// `workdir: path` or `workdir: {url, ref}` (a git repository).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum WorkdirYaml {
    Path(String),
    Git(GitWorkdirYaml),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitWorkdirYaml {
    pub url: String,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
}

/// `dst: source` or `dst: {name, source, store, persistent, mode}`.
#[derive(Debug)]
pub enum FileMountYaml {
    Path(String),
    Storage(Box<StorageYaml>),
}

impl<'de> Deserialize<'de> for FileMountYaml {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Not `untagged`: that would hide the storage mapping's own error behind "no variant".
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(FileMountYaml::Path(s)),
            map @ Value::Mapping(_) => serde_yaml::from_value(map)
                .map(|s| FileMountYaml::Storage(Box::new(s)))
                .map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom(
                "expected a local path, a bucket URL (s3://..., gs://...), or a storage mapping {name, source, store, persistent, mode}",
            )),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageYaml {
    pub name: Option<String>,
    pub source: Option<StringOrList>,
    pub store: Option<String>,
    #[serde(default, deserialize_with = "yaml11_bool")]
    pub persistent: Option<bool>,
    pub mode: Option<String>,
    pub config: Option<Value>,
    #[serde(rename = "_bucket_sub_path")]
    pub bucket_sub_path: Option<String>,
    #[serde(rename = "_is_sky_managed")]
    pub is_sky_managed: Option<Value>,
    #[serde(rename = "_force_delete")]
    pub force_delete: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// `resources:`, and each entry of its `any_of` / `ordered` lists.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesYaml {
    pub infra: Option<String>,
    pub cloud: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub accelerators: Option<Value>,
    pub accelerator_args: Option<Value>,
    pub cpus: Option<String>,
    pub memory: Option<String>,
    pub instance_type: Option<String>,
    #[serde(default, deserialize_with = "yaml11_bool")]
    pub use_spot: Option<bool>,
    pub disk_size: Option<String>,
    pub disk_tier: Option<String>,
    pub network_tier: Option<String>,
    /// Absent, `null` (resets a default in `any_of`), a string, or `{region: image}`.
    #[serde(default, deserialize_with = "present")]
    #[allow(clippy::option_option)]
    pub image_id: Option<Option<ImageIdYaml>>,
    pub ports: Option<Value>,
    pub labels: Option<BTreeMap<String, String>>,
    pub autostop: Option<Value>,
    pub any_of: Option<Vec<ResourcesYaml>>,
    pub ordered: Option<Vec<ResourcesYaml>>,
    pub job_recovery: Option<JobRecoveryYaml>,
    pub spot_recovery: Option<JobRecoveryYaml>,
    pub priority: Option<Value>,
    pub ephemeral_storage: Option<Value>,
    #[serde(rename = "_docker_login_config")]
    pub docker_login_config: Option<Value>,
    #[serde(rename = "_requires_fuse")]
    pub requires_fuse: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ImageIdYaml {
    One(String),
    PerRegion(BTreeMap<String, String>),
}

/// `job_recovery: failover` or the full mapping.
#[derive(Debug, Clone)]
pub enum JobRecoveryYaml {
    Strategy(String),
    Full(Box<JobRecoveryFullYaml>),
}

impl<'de> Deserialize<'de> for JobRecoveryYaml {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(JobRecoveryYaml::Strategy(s)),
            map @ Value::Mapping(_) => serde_yaml::from_value(map)
                .map(|full| JobRecoveryYaml::Full(Box::new(full)))
                .map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom(
                "expected a strategy name (EAGER_NEXT_REGION, FAILOVER or NO_RECOVERY) or a mapping with strategy, max_restarts_on_errors, recover_on_exit_codes, max_recoveries",
            )),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecoveryFullYaml {
    pub strategy: Option<String>,
    pub max_restarts_on_errors: Option<Value>,
    pub recover_on_exit_codes: Option<Value>,
    /// Stratus: relaunches allowed after preemptions and lost machines.
    pub max_recoveries: Option<Value>,
}

/// `stratus:`, the task keys no SkyPilot release has (see the README, "Beyond SkyPilot").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StratusYaml {
    /// USD the whole job may cost (all tasks, all attempts).
    pub max_cost: Option<Value>,
    /// How long one attempt may run (from RUNNING to its end).
    pub max_attempt_duration: Option<Value>,
    /// How long the task may wait for a cluster (launching, backing off) before
    /// `FAILED_NO_RESOURCE`.
    pub max_pending: Option<Value>,
}

/// Keeps "present but null" apart from "absent" (`image_id: null` resets a default).
#[allow(clippy::option_option)]
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Booleans as PyYAML (YAML 1.1) reads them: `true`, `True`, `yes`, `on`, ... .
fn yaml11_bool<'de, D>(deserializer: D) -> Result<Option<bool>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Bool(b)) => return Ok(Some(b)),
        Some(Value::String(s)) => s,
        Some(other) => format!("{other:?}"),
    };
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" => Ok(Some(true)),
        "false" | "no" | "n" | "off" => Ok(Some(false)),
        _ => Err(serde::de::Error::custom(format!(
            "expected true or false, got '{text}'"
        ))),
    }
}
