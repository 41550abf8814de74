//! SkyPilot task YAML, parsed then validated into domain types.
//!
//! `load` reads a (multi-document) YAML text into [`yaml::TaskYaml`] mirrors, applies CLI
//! [`Overrides`], and validates everything into a [`Pipeline`]. Errors name the YAML path, the
//! line and column, the bad value and the fix; ignored fields become [`Warning`]s.
//!
//! # Layout
//! - `yaml`: the serde mirror of the file, every key SkyPilot accepts.
//! - `resources`: resource requests and the recovery policy.
//! - `validate`: mirror → domain, with SkyPilot's rules.
//! - `overrides`: `--env`, `--gpus`, `--infra`, ... applied on top of the file.
//! - `locate`: YAML path → line and column.
//! - `error`: [`SpecError`] and [`Warning`].
//! - `config`: the task's `config:` keys Stratus applies (`<cloud>.provision_timeout`).
//! - `limits`: the bounds a task file must keep (size, nesting, aliases, nodes, variables).
//! - `extensions`: the time and money limits (`max_duration`, `stratus:`, `--max-cost`).

pub mod config;
mod error;
mod extensions;
pub mod limits;
mod locate;
mod overrides;
pub mod resources;
mod validate;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use error::{Position, SpecError, Warning};
pub use extensions::{MAX_COST_LIMIT, parse_duration};
pub use overrides::Overrides;
pub use resources::{
    Accelerator, Accelerators, DiskTier, ImageId, Infra, NetworkTier, PortRange, Preference,
    Quantity, RecoveryPolicy, RecoveryStrategy, ResourceSpec, Resources,
};

/// A managed job's tasks, run one after another. A single task is a pipeline of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// The job name (from `-n`, the header document, or the single task's name).
    pub name: String,
    pub tasks: Vec<Task>,
    /// USD the whole job may cost, all tasks and attempts (`stratus.max_cost`, `--max-cost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
}

/// One task: where and how to run `setup` and `run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub name: String,
    pub workdir: Option<Workdir>,
    pub num_nodes: u32,
    pub envs: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, Secret>,
    pub file_mounts: Vec<FileMount>,
    pub setup: Option<String>,
    pub run: Option<String>,
    pub resources: ResourceSpec,
    /// The task-level `config:` overrides, kept as given (see `config` for what applies).
    pub config: Option<serde_json::Value>,
    /// How long the task may run and wait.
    #[serde(default, skip_serializing_if = "TaskLimits::is_none")]
    pub limits: TaskLimits,
}

impl Task {
    /// Every local path the task syncs to its nodes, with the field that names it: its
    /// workdir, then its local file mounts. The CLI uploads exactly these; `submit` checks
    /// each was uploaded.
    pub fn local_paths(&self) -> Vec<(&'static str, &str)> {
        let workdir = match &self.workdir {
            Some(Workdir::Local(dir)) => Some(("workdir", dir.as_str())),
            _ => None,
        };
        let mounts = self.file_mounts.iter().filter_map(|m| match &m.source {
            MountSource::Local(path) => Some(("file_mounts", path.as_str())),
            _ => None,
        });
        workdir.into_iter().chain(mounts).collect()
    }
}

/// A task's time limits, each ending it when reached (see `job::limits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLimits {
    /// `max_duration`: from the task's first start to its end, recoveries included → FAILED.
    #[serde(default, with = "opt_millis", skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<std::time::Duration>,
    /// `stratus.max_attempt_duration`: one attempt's run (from RUNNING) → FAILED.
    #[serde(default, with = "opt_millis", skip_serializing_if = "Option::is_none")]
    pub max_attempt_duration: Option<std::time::Duration>,
    /// `stratus.max_pending`: one wait for a cluster (first launch or a recovery, backoffs
    /// included) → `FAILED_NO_RESOURCE`.
    #[serde(default, with = "opt_millis", skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<std::time::Duration>,
}

impl TaskLimits {
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

/// Optional durations stored as whole milliseconds.
mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` hands us `&Option<_>`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|v| v.map(Duration::from_millis))
    }
}

/// A secret value: stored for the nodes, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the node that runs the task. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Workdir {
    /// A local folder synced to every node (must exist at launch).
    Local(String),
    Git {
        url: String,
        reference: Option<String>,
    },
}

/// `file_mounts` entry: a destination on the node and what to put there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMount {
    pub destination: String,
    pub source: MountSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSource {
    /// A local file or folder, copied to every node.
    Local(String),
    /// An object or prefix in a bucket (`s3://b/key`, `gs://b/key`), copied.
    Bucket(BucketUrl),
    /// A bucket mounted or copied (`name`/`source`/`store`/`mode`).
    Storage(Storage),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    S3,
    Gcs,
}

impl Store {
    pub fn scheme(self) -> &'static str {
        match self {
            Store::S3 => "s3",
            Store::Gcs => "gs",
        }
    }
}

/// `s3://bucket/key` or `gs://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketUrl {
    pub store: Store,
    pub bucket: String,
    pub key: String,
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.store.scheme(), self.bucket)?;
        if !self.key.is_empty() {
            write!(f, "/{}", self.key)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StorageMode {
    Mount,
    Copy,
    MountCached,
}

impl fmt::Display for StorageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageMode::Mount => "MOUNT",
            StorageMode::Copy => "COPY",
            StorageMode::MountCached => "MOUNT_CACHED",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// The bucket to create or use; `None` when `source` is a bucket URL.
    pub name: Option<String>,
    /// Local paths to upload into a new bucket, or one bucket URL.
    pub sources: Vec<StorageSource>,
    pub store: Option<Store>,
    /// Kept after the job (default true); a non-persistent bucket is deleted when the job ends.
    pub persistent: bool,
    pub mode: StorageMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageSource {
    Local(String),
    Bucket(BucketUrl),
}

/// The outcome of loading a task file: the pipeline and what was accepted but ignored.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub pipeline: Pipeline,
    pub warnings: Vec<Warning>,
}

/// Parses and validates a task file's text with CLI overrides applied.
pub fn load(text: &str, overrides: &Overrides) -> Result<Loaded, SpecError> {
    validate::load(text, overrides).map_err(|e| {
        let locator = locate::Locator::new(text);
        // serde_yaml's own position is the value's, and for fields read through untagged
        // enums (workdir, file_mounts) the document's start: the key's line wins when known.
        let place = |e: &SpecError| match e.position {
            Some(p) if p.line > 1 || p.column > 1 || e.path.is_empty() => Some(p),
            serde => locator.find(e.document, &e.path).or(serde),
        };
        let more = e
            .more
            .iter()
            .map(|m| SpecError {
                position: place(m),
                ..m.clone()
            })
            .collect();
        SpecError {
            position: place(&e),
            more,
            ..e
        }
    })
}

/// A pipeline of one task running `command` (`stratus jobs launch -- CMD`).
pub fn load_command(command: &str, overrides: &Overrides) -> Result<Loaded, SpecError> {
    validate::load_command(command, overrides)
}

/// Checks a job or task name against SkyPilot's rule (`[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?`).
pub fn check_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let inner_ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let valid = !bytes.is_empty()
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(inner_ok);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid name '{name}': use letters, digits, '-', '_' and '.', starting with a letter and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests;
