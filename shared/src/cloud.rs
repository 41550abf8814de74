//! The clouds Stratus knows: the ones it launches on, and the ones SkyPilot supports that it
//! does not (so that a task naming them is rejected with a message that says exactly that).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A cloud Stratus can launch clusters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Aws,
    Gcp,
    /// Local node processes on this machine: the embedded default, no account needed.
    Local,
}

impl Cloud {
    pub const ALL: [Cloud; 3] = [Cloud::Aws, Cloud::Gcp, Cloud::Local];

    /// The lower-case name used in `infra:` strings and catalogs.
    pub fn id(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Local => "local",
        }
    }

    /// The name SkyPilot prints in tables (`AWS`, `GCP`).
    pub fn display_name(self) -> &'static str {
        match self {
            Cloud::Aws => "AWS",
            Cloud::Gcp => "GCP",
            Cloud::Local => "Local",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

/// What a cloud name in a task means to Stratus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudName {
    Supported(Cloud),
    /// A cloud SkyPilot supports and Stratus does not; holds its canonical name.
    Unsupported(&'static str),
    Unknown,
}

/// Clouds (and infra kinds) that SkyPilot accepts but Stratus does not launch on.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("azure", "Azure"),
    ("oci", "OCI"),
    ("nebius", "Nebius"),
    ("lambda", "Lambda Cloud"),
    ("kubernetes", "Kubernetes"),
    ("k8s", "Kubernetes"),
    ("runpod", "RunPod"),
    ("fluidstack", "Fluidstack"),
    ("paperspace", "Paperspace"),
    ("cudo", "Cudo"),
    ("ibm", "IBM"),
    ("scp", "SCP"),
    ("vsphere", "vSphere"),
    ("do", "DigitalOcean"),
    ("vast", "Vast"),
    ("hyperbolic", "Hyperbolic"),
    ("seeweb", "Seeweb"),
    ("ssh", "SSH node pools"),
    ("primeintellect", "Prime Intellect"),
    ("shadeform", "Shadeform"),
    ("together", "Together"),
    ("coreweave", "CoreWeave"),
];

/// Classifies a cloud name as written in a task (case-insensitive).
pub fn classify(name: &str) -> CloudName {
    let lower = name.to_ascii_lowercase();
    if let Some(cloud) = Cloud::ALL.iter().find(|c| c.id() == lower) {
        return CloudName::Supported(*cloud);
    }
    match UNSUPPORTED.iter().find(|(id, _)| *id == lower) {
        Some((_, canonical)) => CloudName::Unsupported(canonical),
        None => CloudName::Unknown,
    }
}

/// Every name `classify` recognises, for "did you mean" suggestions.
pub fn known_names() -> impl Iterator<Item = &'static str> {
    Cloud::ALL
        .iter()
        .map(|c| c.id())
        .chain(UNSUPPORTED.iter().map(|(id, _)| *id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_case_insensitively() {
        assert_eq!(classify("AWS"), CloudName::Supported(Cloud::Aws));
        assert_eq!(classify("gcp"), CloudName::Supported(Cloud::Gcp));
        assert_eq!(classify("k8s"), CloudName::Unsupported("Kubernetes"));
        assert_eq!(classify("awz"), CloudName::Unknown);
    }
}
