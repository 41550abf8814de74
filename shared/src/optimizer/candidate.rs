//! A concrete place to launch a task: one row of the ranked list that recovery walks.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cloud::Cloud;

/// A feasible (cloud, region, zone, instance type, spot or on-demand) for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub cloud: Cloud,
    pub region: String,
    pub zone: String,
    pub instance_type: String,
    pub vcpus: f64,
    pub memory_gb: f64,
    /// The accelerator name and count per node, if any.
    pub accelerator: Option<(String, u32)>,
    pub use_spot: bool,
    /// USD per hour for one node.
    pub hourly_price: f64,
    pub num_nodes: u32,
    /// Index of the `any_of`/`ordered` alternative (or accelerator option) this came from.
    pub alternative: usize,
}

impl Candidate {
    /// USD per hour for the whole cluster, as the Considered-resources table shows it.
    pub fn cost(&self) -> f64 {
        self.hourly_price * f64::from(self.num_nodes)
    }

    /// `n2-standard-8[Spot]`, as SkyPilot shows spot instances.
    pub fn instance_label(&self) -> String {
        if self.use_spot {
            format!("{}[Spot]", self.instance_type)
        } else {
            self.instance_type.clone()
        }
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.cloud.id(),
            self.region,
            self.zone,
            self.instance_label()
        )
    }
}
