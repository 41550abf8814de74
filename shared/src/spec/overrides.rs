//! CLI flags that override a task file, as in `sky jobs launch`.

/// Values from `stratus jobs launch` flags. Env and secret values are already resolved by the
/// CLI (`--env KEY` alone copies the caller's environment). Resource flags apply to every
/// candidate of a single task; on a multi-task pipeline they are ignored with a warning, as
/// SkyPilot does. Env and secret flags apply to every task.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Overrides {
    /// `-n/--name`: the job name, over the file's.
    pub name: Option<String>,
    /// The name to use when neither `-n` nor the file names the job (e.g. the file's stem).
    pub default_name: Option<String>,
    pub envs: Vec<(String, String)>,
    pub secrets: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub use_spot: Option<bool>,
    pub infra: Option<String>,
    pub gpus: Option<String>,
    pub cpus: Option<String>,
    pub memory: Option<String>,
    pub instance_type: Option<String>,
    pub num_nodes: Option<u32>,
    /// `--max-cost`: USD the whole job may cost.
    pub max_cost: Option<f64>,
    /// `--max-duration`: every task's `max_duration`.
    pub max_duration: Option<String>,
    /// `--job-recovery`: every task's recovery strategy (its other recovery keys stay).
    pub job_recovery: Option<String>,
}

impl Overrides {
    pub(crate) fn touches_resources(&self) -> bool {
        self.use_spot.is_some()
            || self.infra.is_some()
            || self.gpus.is_some()
            || self.cpus.is_some()
            || self.memory.is_some()
            || self.instance_type.is_some()
            || self.num_nodes.is_some()
    }
}
