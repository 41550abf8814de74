//! `infra: <cloud>[/<region>[/<zone>]]`, and which clouds Stratus launches on.

use crate::cloud::{self, CloudName};
use crate::spec::error::SpecError;
use crate::spec::resources::Infra;
use crate::suggest;

/// A problem with an infra string; `at` gives it its YAML path.
pub(super) enum InfraProblem {
    Unsupported(String),
    Invalid(String),
}

impl InfraProblem {
    pub(super) fn message(self) -> String {
        match self {
            InfraProblem::Unsupported(m) | InfraProblem::Invalid(m) => m,
        }
    }

    pub(super) fn at(self, path: String) -> InfraError {
        match self {
            InfraProblem::Unsupported(m) => InfraError::Unsupported(SpecError::new(path, m)),
            InfraProblem::Invalid(m) => InfraError::Invalid(SpecError::new(path, m)),
        }
    }
}

pub(super) fn parse_infra(text: &str) -> std::result::Result<Infra, InfraProblem> {
    let parts: Vec<&str> = text.trim().split('/').collect();
    let cloud_part = parts[0].trim();
    if cloud_part.is_empty() {
        return Err(InfraProblem::Invalid(format!(
            "'{text}' is empty; write cloud[/region[/zone]], e.g. aws/us-east-1"
        )));
    }
    let cloud = if cloud_part == "*" {
        None
    } else {
        match cloud::classify(cloud_part) {
            CloudName::Supported(c) => Some(c),
            CloudName::Unsupported(name) => {
                return Err(InfraProblem::Unsupported(format!(
                    "cloud '{cloud_part}' ({name}) is not supported by Stratus; supported clouds: aws, gcp, local"
                )));
            }
            CloudName::Unknown => {
                return Err(InfraProblem::Invalid(format!(
                    "unknown cloud '{cloud_part}'{}; supported clouds: aws, gcp, local",
                    suggest::did_you_mean(cloud_part, cloud::known_names())
                )));
            }
        }
    };
    if parts.len() > 3 {
        return Err(InfraProblem::Invalid(format!(
            "'{text}' has too many parts; write cloud[/region[/zone]]"
        )));
    }
    let part = |i: usize| {
        parts
            .get(i)
            .map(|p| p.trim())
            .filter(|p| !p.is_empty() && *p != "*")
            .map(str::to_owned)
    };
    Ok(Infra {
        cloud,
        region: part(1),
        zone: part(2),
    })
}

/// Why an `infra` could not be used: unsupported clouds may be skipped among alternatives.
pub(super) enum InfraError {
    Unsupported(SpecError),
    Invalid(SpecError),
}

impl From<InfraError> for SpecError {
    fn from(e: InfraError) -> Self {
        match e {
            InfraError::Unsupported(e) | InfraError::Invalid(e) => e,
        }
    }
}
