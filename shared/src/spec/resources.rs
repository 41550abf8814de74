//! Resource requests: where to run (`infra`), on what (`accelerators`, `cpus`, `memory`,
//! `instance_type`), how (`use_spot`, disks, image, ports) and how to recover (`job_recovery`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cloud::Cloud;

/// `infra: cloud[/region[/zone]]`; `None` parts are wildcards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Infra {
    pub cloud: Option<Cloud>,
    pub region: Option<String>,
    pub zone: Option<String>,
}

impl fmt::Display for Infra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cloud = self.cloud.map_or("*", Cloud::id);
        match (&self.region, &self.zone) {
            (None, None) => f.write_str(cloud),
            (Some(r), None) => write!(f, "{cloud}/{r}"),
            (r, Some(z)) => write!(f, "{cloud}/{}/{z}", r.as_deref().unwrap_or("*")),
        }
    }
}

/// One accelerator request: `V100:2`. Counts may be fractional (`T4:0.5`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accelerator {
    pub name: String,
    pub count: f64,
}

impl Accelerator {
    /// Whole GPUs a node needs (a fraction still takes a whole GPU on a VM).
    pub fn whole_count(&self) -> u32 {
        self.count.ceil() as u32
    }
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, format_number(self.count))
    }
}

/// How a task lists accelerators: one, a set (the optimizer picks the cheapest), or a list
/// (tried in order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Accelerators {
    One(Accelerator),
    AnyOf(Vec<Accelerator>),
    Ordered(Vec<Accelerator>),
}

impl Accelerators {
    pub fn options(&self) -> &[Accelerator] {
        match self {
            Accelerators::One(a) => std::slice::from_ref(a),
            Accelerators::AnyOf(v) | Accelerators::Ordered(v) => v,
        }
    }
}

impl fmt::Display for Accelerators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined = |v: &[Accelerator]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Accelerators::One(a) => write!(f, "{a}"),
            Accelerators::AnyOf(v) => write!(f, "{{{}}}", joined(v)),
            Accelerators::Ordered(v) => write!(f, "[{}]", joined(v)),
        }
    }
}

/// `8` (exactly) or `8+` (at least); memory in GB, or `4x` (times vCPUs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantity {
    pub value: f64,
    pub at_least: bool,
    /// Memory only: `value` is a multiple of the vCPU count.
    #[serde(default)]
    pub per_cpu: bool,
}

impl Quantity {
    pub fn at_least(value: f64) -> Self {
        Self {
            value,
            at_least: true,
            per_cpu: false,
        }
    }

    /// Whether an offered amount satisfies this request (`cpus` is needed for `Nx` memory).
    pub fn admits(&self, offered: f64, cpus: f64) -> bool {
        let wanted = if self.per_cpu {
            self.value * cpus
        } else {
            self.value
        };
        if self.at_least {
            offered + 1e-6 >= wanted
        } else {
            (offered - wanted).abs() < 1e-6
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", format_number(self.value))?;
        if self.per_cpu {
            f.write_str("x")?;
        }
        if self.at_least {
            f.write_str("+")?;
        }
        Ok(())
    }
}

pub(crate) fn format_number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskTier {
    Low,
    Medium,
    High,
    Ultra,
    Best,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkTier {
    Standard,
    Best,
}

/// `image_id`: one image (an AMI, a GCE image, or `docker:<image>`), or one per region
/// (failover then only goes through the listed regions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageId {
    One(String),
    PerRegion(BTreeMap<String, String>),
}

/// A port or an inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// One concrete resource request (after `any_of`/`ordered` are expanded into a list of these).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub infra: Infra,
    pub accelerators: Option<Accelerators>,
    pub cpus: Option<Quantity>,
    pub memory: Option<Quantity>,
    pub instance_type: Option<String>,
    pub use_spot: bool,
    pub disk_size_gb: Option<u32>,
    pub disk_tier: Option<DiskTier>,
    pub network_tier: Option<NetworkTier>,
    pub image_id: Option<ImageId>,
    pub ports: Vec<PortRange>,
    pub labels: BTreeMap<String, String>,
}

/// How the alternatives of a task's resources relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preference {
    /// One request, or `any_of`: the optimizer picks the cheapest.
    Cheapest,
    /// `ordered`: the first feasible in the listed order.
    Ordered,
}

/// SkyPilot's recovery strategies for preemptions and machine failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecoveryStrategy {
    /// Relaunch in another region first, then anywhere (SkyPilot's default).
    #[default]
    EagerNextRegion,
    /// Relaunch in the same region first, then fail over.
    Failover,
    /// Never relaunch a running task after a preemption or a lost machine: the job ends
    /// FAILED (for jobs with side effects; SkyPilot #10258's spelling). A cluster lost before
    /// the task started is a failed launch, and the next candidate is tried. Restarts after the user's code fails
    /// still follow `max_restarts_on_errors`.
    NoRecovery,
}

impl fmt::Display for RecoveryStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecoveryStrategy::EagerNextRegion => "EAGER_NEXT_REGION",
            RecoveryStrategy::Failover => "FAILOVER",
            RecoveryStrategy::NoRecovery => "NO_RECOVERY",
        })
    }
}

/// `resources.job_recovery`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPolicy {
    pub strategy: RecoveryStrategy,
    /// Restarts allowed after the user's code fails (setup or run exits non-zero).
    pub max_restarts_on_errors: u32,
    /// Exit codes that restart without limit and without counting against the above.
    pub recover_on_exit_codes: Vec<i32>,
    /// Relaunches allowed after preemptions and lost machines (`None`: without limit, as in
    /// SkyPilot). A Stratus extension beside `max_restarts_on_errors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recoveries: Option<u32>,
}

impl fmt::Display for RecoveryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, max_restarts_on_errors: {}",
            self.strategy, self.max_restarts_on_errors
        )?;
        if !self.recover_on_exit_codes.is_empty() {
            let codes: Vec<String> = self
                .recover_on_exit_codes
                .iter()
                .map(ToString::to_string)
                .collect();
            write!(f, ", recover_on_exit_codes: [{}]", codes.join(", "))?;
        }
        if let Some(max) = self.max_recoveries {
            write!(f, ", max_recoveries: {max}")?;
        }
        Ok(())
    }
}

/// A task's resources: the candidate requests in preference order, and the recovery policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSpec {
    /// At least one; `any_of`/`ordered` entries merged over the top-level fields.
    pub candidates: Vec<Resources>,
    pub preference: Preference,
    pub recovery: RecoveryPolicy,
}

impl Default for ResourceSpec {
    fn default() -> Self {
        Self {
            candidates: vec![Resources::default()],
            preference: Preference::Cheapest,
            recovery: RecoveryPolicy::default(),
        }
    }
}
