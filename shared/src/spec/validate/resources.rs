//! `resources`: one spec per alternative (`any_of`/`ordered`), with the CLI's overrides on top.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::Result;
use super::infra::{InfraError, parse_infra};
use super::recovery::{recovery, strategy_of};
use super::scalars::{accelerators, choice, disk_size, ports, quantity};
use crate::spec::Overrides;
use crate::spec::error::{SpecError, Warning, join_path};
use crate::spec::resources::{
    Accelerators, DiskTier, ImageId, Infra, NetworkTier, PortRange, Preference, Quantity,
    ResourceSpec, Resources,
};
use crate::spec::yaml::{ImageIdYaml, ResourcesYaml};

/// Resource fields as given, before `any_of`/`ordered` entries are merged over the defaults.
#[derive(Debug, Clone, Default)]
pub(super) struct Partial {
    infra: Option<Infra>,
    accelerators: Option<Accelerators>,
    cpus: Option<Quantity>,
    memory: Option<Quantity>,
    instance_type: Option<String>,
    use_spot: Option<bool>,
    disk_size_gb: Option<u32>,
    disk_tier: Option<DiskTier>,
    network_tier: Option<NetworkTier>,
    /// `Some(None)`: reset to no image (`image_id: null` in an alternative).
    #[allow(clippy::option_option)]
    image_id: Option<Option<ImageId>>,
    ports: Option<Vec<PortRange>>,
    labels: Option<BTreeMap<String, String>>,
}

impl Partial {
    fn over(&self, base: &Partial) -> Partial {
        Partial {
            infra: self.infra.clone().or_else(|| base.infra.clone()),
            accelerators: self
                .accelerators
                .clone()
                .or_else(|| base.accelerators.clone()),
            cpus: self.cpus.or(base.cpus),
            memory: self.memory.or(base.memory),
            instance_type: self
                .instance_type
                .clone()
                .or_else(|| base.instance_type.clone()),
            use_spot: self.use_spot.or(base.use_spot),
            disk_size_gb: self.disk_size_gb.or(base.disk_size_gb),
            disk_tier: self.disk_tier.or(base.disk_tier),
            network_tier: self.network_tier.or(base.network_tier),
            image_id: self.image_id.clone().or_else(|| base.image_id.clone()),
            ports: self.ports.clone().or_else(|| base.ports.clone()),
            labels: self.labels.clone().or_else(|| base.labels.clone()),
        }
    }

    fn finish(self) -> Resources {
        Resources {
            infra: self.infra.unwrap_or_default(),
            accelerators: self.accelerators,
            cpus: self.cpus,
            memory: self.memory,
            instance_type: self.instance_type,
            use_spot: self.use_spot.unwrap_or(false),
            disk_size_gb: self.disk_size_gb,
            disk_tier: self.disk_tier,
            network_tier: self.network_tier,
            image_id: self.image_id.flatten(),
            ports: self.ports.unwrap_or_default(),
            labels: self.labels.unwrap_or_default(),
        }
    }
}

pub(super) fn resource_spec(
    yaml: &ResourcesYaml,
    overrides: &Overrides,
    single: bool,
    warnings: &mut Vec<Warning>,
) -> Result<ResourceSpec> {
    let mut recovery = recovery(yaml, warnings)?;
    if let Some(strategy) = &overrides.job_recovery {
        recovery.strategy = strategy_of(strategy, "--job-recovery".to_owned())?;
    }
    if yaml.any_of.is_some() && yaml.ordered.is_some() {
        return Err(SpecError::new(
            "resources.ordered",
            "use either any_of or ordered, not both",
        ));
    }
    let base = partial(yaml, "resources", warnings).map_err(SpecError::from)?;
    let (entries, preference, list_name) = match (&yaml.any_of, &yaml.ordered) {
        (Some(list), _) => (list.clone(), Preference::Cheapest, "any_of"),
        (None, Some(list)) => (list.clone(), Preference::Ordered, "ordered"),
        (None, None) => (vec![], Preference::Cheapest, ""),
    };

    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("resources.{list_name}[{i}]");
        if entry.any_of.is_some() || entry.ordered.is_some() {
            return Err(SpecError::new(path, "any_of and ordered cannot be nested"));
        }
        if entry.job_recovery.is_some() || entry.spot_recovery.is_some() {
            return Err(SpecError::new(
                format!("{path}.job_recovery"),
                "job_recovery applies to the whole task: move it up to `resources`",
            ));
        }
        match partial(entry, &path, warnings) {
            Ok(p) => candidates.push(p.over(&base)),
            Err(InfraError::Unsupported(e)) => skipped.push(e),
            Err(InfraError::Invalid(e)) => return Err(e),
        }
    }
    if entries.is_empty() {
        candidates.push(base);
    } else if candidates.is_empty() {
        // Every alternative names an unsupported cloud: report the first.
        return Err(skipped.remove(0));
    }
    for e in skipped {
        warnings.push(Warning {
            path: e.path,
            message: format!("{}; this alternative is skipped", e.message),
        });
    }

    if single {
        let forced = override_partial(overrides)?;
        candidates = candidates.iter().map(|c| forced.over(c)).collect();
    }
    Ok(ResourceSpec {
        candidates: candidates.into_iter().map(Partial::finish).collect(),
        preference,
        recovery,
    })
}

pub(super) fn override_partial(o: &Overrides) -> Result<Partial> {
    let mut p = Partial::default();
    if let Some(infra) = &o.infra {
        p.infra = Some(parse_infra(infra).map_err(|m| SpecError::new("--infra", m.message()))?);
    }
    if let Some(gpus) = &o.gpus {
        p.accelerators = Some(
            accelerators(&Value::String(gpus.clone())).map_err(|m| SpecError::new("--gpus", m))?,
        );
    }
    if let Some(cpus) = &o.cpus {
        p.cpus = Some(quantity(cpus, false).map_err(|m| SpecError::new("--cpus", m))?);
    }
    if let Some(memory) = &o.memory {
        p.memory = Some(quantity(memory, true).map_err(|m| SpecError::new("--memory", m))?);
    }
    p.instance_type.clone_from(&o.instance_type);
    p.use_spot = o.use_spot;
    Ok(p)
}

// One block per field; splitting it would only move the field list elsewhere.

#[allow(clippy::too_many_lines)]
pub(super) fn partial(
    y: &ResourcesYaml,
    path: &str,
    warnings: &mut Vec<Warning>,
) -> std::result::Result<Partial, InfraError> {
    let at = |field: &str| join_path(path, field);
    let invalid =
        |field: &str, message: String| InfraError::Invalid(SpecError::new(at(field), message));

    for (present, field, message) in [
        (
            y.autostop.is_some(),
            "autostop",
            "ignored: a managed job's cluster is torn down as soon as its task ends",
        ),
        (
            y.accelerator_args.is_some(),
            "accelerator_args",
            "ignored: only used for TPUs",
        ),
        (
            y.priority.is_some(),
            "priority",
            "ignored: Stratus starts every job as soon as resources are found",
        ),
        (
            y.ephemeral_storage.is_some(),
            "ephemeral_storage",
            "ignored: Kubernetes only",
        ),
        (
            y.docker_login_config.is_some(),
            "_docker_login_config",
            "ignored: internal SkyPilot field",
        ),
        (
            y.requires_fuse.is_some(),
            "_requires_fuse",
            "ignored: internal SkyPilot field",
        ),
    ] {
        if present {
            warnings.push(Warning {
                path: at(field),
                message: message.into(),
            });
        }
    }

    let infra = match (&y.infra, &y.cloud, &y.region, &y.zone) {
        (Some(_), Some(_), _, _) | (Some(_), _, Some(_), _) | (Some(_), _, _, Some(_)) => {
            return Err(invalid(
                "infra",
                "use either infra or the legacy cloud/region/zone keys, not both".into(),
            ));
        }
        (Some(infra), None, None, None) => Some(parse_infra(infra).map_err(|e| e.at(at("infra")))?),
        (None, None, None, None) => None,
        (None, cloud, region, zone) => {
            let text = format!(
                "{}/{}/{}",
                cloud.as_deref().unwrap_or("*"),
                region.as_deref().unwrap_or("*"),
                zone.as_deref().unwrap_or("*")
            );
            let field = if cloud.is_some() {
                "cloud"
            } else if region.is_some() {
                "region"
            } else {
                "zone"
            };
            Some(parse_infra(&text).map_err(|e| e.at(at(field)))?)
        }
    };

    let accelerators = y
        .accelerators
        .as_ref()
        .map(accelerators)
        .transpose()
        .map_err(|m| invalid("accelerators", m))?;
    let cpus = y
        .cpus
        .as_deref()
        .map(|c| quantity(c, false))
        .transpose()
        .map_err(|m| invalid("cpus", m))?;
    let memory = y
        .memory
        .as_deref()
        .map(|m| quantity(m, true))
        .transpose()
        .map_err(|m| invalid("memory", m))?;
    let disk_size_gb = y
        .disk_size
        .as_deref()
        .map(disk_size)
        .transpose()
        .map_err(|m| invalid("disk_size", m))?;
    let disk_tier = y
        .disk_tier
        .as_deref()
        .map(|t| {
            choice(
                t,
                &[
                    ("low", DiskTier::Low),
                    ("medium", DiskTier::Medium),
                    ("high", DiskTier::High),
                    ("ultra", DiskTier::Ultra),
                    ("best", DiskTier::Best),
                ],
            )
        })
        .transpose()
        .map_err(|m| invalid("disk_tier", m))?;
    let network_tier = y
        .network_tier
        .as_deref()
        .map(|t| {
            choice(
                t,
                &[
                    ("standard", NetworkTier::Standard),
                    ("best", NetworkTier::Best),
                ],
            )
        })
        .transpose()
        .map_err(|m| invalid("network_tier", m))?;
    let image_id = y.image_id.as_ref().map(|i| {
        i.as_ref().map(|i| match i {
            ImageIdYaml::One(s) => ImageId::One(s.clone()),
            ImageIdYaml::PerRegion(m) => ImageId::PerRegion(m.clone()),
        })
    });
    let ports = y
        .ports
        .as_ref()
        .map(ports)
        .transpose()
        .map_err(|m| invalid("ports", m))?;
    if let Some(instance_type) = &y.instance_type
        && instance_type.trim().is_empty()
    {
        return Err(invalid(
            "instance_type",
            "is empty: name an instance type such as m6i.2xlarge".into(),
        ));
    }

    Ok(Partial {
        infra,
        accelerators,
        cpus,
        memory,
        instance_type: y.instance_type.clone(),
        use_spot: y.use_spot,
        disk_size_gb,
        disk_tier,
        network_tier,
        image_id,
        ports,
        labels: y.labels.clone(),
    })
}
