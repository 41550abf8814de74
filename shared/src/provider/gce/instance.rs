//! The `instances.insert` body of one node, as a pure function of the cluster spec, so that
//! every rule (GPUs, spot, labels, image) is a unit test and the fake Compute API checks the
//! result against Google's discovery document.

use std::collections::BTreeMap;

use google_cloud_compute_v1::model::{
    AcceleratorConfig, AccessConfig, AttachedDisk, AttachedDiskInitializeParams, Instance,
    Metadata, NetworkInterface, Scheduling, access_config, attached_disk, metadata, scheduling,
};
use tracing::{info, warn};

use super::startup::{instance_name, startup_script};
use super::{GceSettings, labels};
use crate::optimizer::Candidate;
use crate::provider::{ClusterSpec, ProviderError};

/// The metadata key of the node's rank (also its label), for people looking at a VM.
pub(crate) const RANK_METADATA: &str = "stratus-rank";
/// The metadata key GCE runs at boot.
const STARTUP_SCRIPT: &str = "startup-script";
/// GCE's limit on label keys and values.
const LABEL_MAX: usize = 63;

/// Catalog accelerator names → GCE accelerator types (`zones/<zone>/acceleratorTypes/<type>`).
const ACCELERATORS: &[(&str, &str)] = &[
    ("T4", "nvidia-tesla-t4"),
    ("V100", "nvidia-tesla-v100"),
    ("P100", "nvidia-tesla-p100"),
    ("P4", "nvidia-tesla-p4"),
    ("L4", "nvidia-l4"),
    ("A100", "nvidia-tesla-a100"),
    ("A100-80GB", "nvidia-a100-80gb"),
    ("H100", "nvidia-h100-80gb"),
    ("H100-MEGA", "nvidia-h100-mega-80gb"),
    ("H200", "nvidia-h200-141gb"),
];

/// Machine families whose GPUs come with the machine type (`a2-highgpu-1g` has one A100):
/// their insert must not name `guestAccelerators`.
const BUILT_IN_GPU_FAMILIES: &[&str] = &["a2-", "a3-", "a4-", "g2-", "g4-"];

/// The GCE accelerator type of a catalog accelerator name (case-insensitive), e.g.
/// `T4` → `nvidia-tesla-t4`.
pub(crate) fn accelerator_type(name: &str) -> Option<&'static str> {
    ACCELERATORS
        .iter()
        .find(|(catalog, _)| catalog.eq_ignore_ascii_case(name))
        .map(|(_, gce)| *gce)
}

/// The `guestAccelerators` of a candidate. GPUs are attached explicitly only to N1 machine
/// types; A2, A3, A4, G2 and G4 types have theirs built in (naming them is an error); no
/// other family takes GPUs.
pub(crate) fn guest_accelerators(c: &Candidate) -> Result<Vec<AcceleratorConfig>, ProviderError> {
    let Some((name, count)) = &c.accelerator else {
        return Ok(Vec::new());
    };
    let machine = c.instance_type.as_str();
    if BUILT_IN_GPU_FAMILIES.iter().any(|f| machine.starts_with(f)) {
        return Ok(Vec::new());
    }
    if !machine.starts_with("n1-") {
        return Err(ProviderError::Invalid {
            message: format!(
                "GCE: {name} GPUs attach only to N1 machine types (or come with A2, A3, G2), \
                 not to {machine}"
            ),
        });
    }
    let Some(kind) = accelerator_type(name) else {
        let known: Vec<&str> = ACCELERATORS.iter().map(|(n, _)| *n).collect();
        return Err(ProviderError::Invalid {
            message: format!(
                "GCE: unknown accelerator '{name}' (known: {})",
                known.join(", ")
            ),
        });
    };
    Ok(vec![
        AcceleratorConfig::new()
            .set_accelerator_type(format!("zones/{}/acceleratorTypes/{kind}", c.zone))
            .set_accelerator_count(i32::try_from(*count).unwrap_or(i32::MAX)),
    ])
}

/// How the node is scheduled. Every Stratus VM has `automaticRestart: false` (a node that
/// died is recovered by the job, not rebooted under it). Spot: `provisioningModel: SPOT`,
/// deleted when preempted (`instanceTerminationAction: DELETE`). VMs with GPUs cannot live
/// migrate, so spot and GPU VMs have `onHostMaintenance: TERMINATE`; others `MIGRATE`.
pub(crate) fn scheduling(c: &Candidate) -> Scheduling {
    let has_gpus = c.accelerator.is_some();
    let maintenance = if c.use_spot || has_gpus {
        scheduling::OnHostMaintenance::Terminate
    } else {
        scheduling::OnHostMaintenance::Migrate
    };
    let s = Scheduling::new()
        .set_automatic_restart(false)
        .set_on_host_maintenance(maintenance);
    if c.use_spot {
        s.set_provisioning_model(scheduling::ProvisioningModel::Spot)
            .set_instance_termination_action(scheduling::InstanceTerminationAction::Delete)
    } else {
        s.set_provisioning_model(scheduling::ProvisioningModel::Standard)
    }
}

/// The boot image: the task's `image_id` when it names a GCE image
/// (`projects/<p>/global/images/<image>`, `.../images/family/<family>`, or a URL), else
/// [`GceSettings::default_image_family`], or [`GceSettings::gpu_image_family`] for a
/// candidate with GPUs. A `docker:` image boots the default image (the agent runs the
/// container).
pub(crate) fn source_image(
    spec: &ClusterSpec,
    settings: &GceSettings,
) -> Result<String, ProviderError> {
    let default = if spec.candidate.accelerator.is_some() {
        &settings.gpu_image_family
    } else {
        &settings.default_image_family
    };
    match spec.image_id.as_deref() {
        None => Ok(default.clone()),
        Some(docker) if docker.starts_with("docker:") => {
            info!(
                image = docker,
                "a docker task boots the default image; the agent runs the container"
            );
            Ok(default.clone())
        }
        Some(image)
            if (image.starts_with("projects/")
                || image.starts_with("global/")
                || image.starts_with("https://"))
                && image.contains("/images/") =>
        {
            Ok(image.to_owned())
        }
        Some(other) => Err(ProviderError::Invalid {
            message: format!(
                "resources.image_id: '{other}' is not a GCE image (projects/<project>/global/\
                 images/<image> or projects/<project>/global/images/family/<family>) nor a \
                 docker image (docker:...)"
            ),
        }),
    }
}

/// `value` as a GCE label value: lower-cased, every character but `[-_a-z0-9]` turned into
/// `-`, at most 63 characters (`Alice@Example.com` → `alice-example-com`).
pub(crate) fn label_value(value: &str) -> String {
    value
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '-',
        })
        .take(LABEL_MAX)
        .collect()
}

/// `key` as a GCE label key (as [`label_value`], and it must start with a letter), or `None`.
fn label_key(key: &str) -> Option<String> {
    let key = label_value(key);
    key.starts_with(|c: char| c.is_ascii_lowercase())
        .then_some(key)
}

/// The labels of node `rank` of `spec`'s cluster (instance and boot disk): the task's labels
/// made valid, then Stratus's own (which a task label may not override).
pub(crate) fn cluster_labels(spec: &ClusterSpec, rank: u32) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for (key, value) in &spec.labels {
        if let Some(k) = label_key(key) {
            all.insert(k, label_value(value));
        } else {
            warn!(
                key,
                "a label key GCE cannot take (it must start with a letter): ignored"
            );
        }
    }
    let ours = [
        (labels::JOB_ID, spec.job_id.to_string()),
        (labels::CLUSTER, spec.cluster.clone()),
        (labels::TASK, spec.task.to_string()),
        (labels::OWNER, label_value(&spec.owner)),
        (labels::RANK, rank.to_string()),
        (labels::NODES, spec.num_nodes.to_string()),
    ];
    for (key, value) in ours {
        if let Some(label) = all.insert(key.to_owned(), value) {
            warn!(key, label = %label, "a label cannot override a Stratus label: ignored");
        }
    }
    all
}

/// The `instances.insert` body of node `rank` of `spec`, booting `image`.
pub(crate) fn instance_body(
    spec: &ClusterSpec,
    rank: u32,
    settings: &GceSettings,
    image: &str,
) -> Result<Instance, ProviderError> {
    let c = &spec.candidate;
    let labels = cluster_labels(spec, rank);
    let mut init = AttachedDiskInitializeParams::new()
        .set_source_image(image)
        .set_disk_type(format!(
            "zones/{}/diskTypes/{}",
            c.zone, settings.boot_disk_type
        ))
        .set_labels(labels.clone());
    if let Some(size) = spec.disk_size_gb {
        init = init.set_disk_size_gb(i64::from(size));
    }
    let disk = AttachedDisk::new()
        .set_boot(true)
        .set_auto_delete(true)
        .set_type(attached_disk::Type::Persistent)
        .set_initialize_params(init);
    let mut nic = NetworkInterface::new().set_network(settings.network.clone());
    if let Some(subnetwork) = settings.subnetworks.get(&c.region) {
        // A custom-mode network has no subnetwork to pick by itself.
        nic = nic.set_subnetwork(if subnetwork.contains('/') {
            subnetwork.clone()
        } else {
            format!("regions/{}/subnetworks/{subnetwork}", c.region)
        });
    }
    if settings.external_ip {
        // The agent reaches the API (and downloads itself) over the internet; without an
        // external address the network needs Cloud NAT.
        nic = nic.set_access_configs([AccessConfig::new()
            .set_name("External NAT")
            .set_type(access_config::Type::OneToOneNat)]);
    }
    let mut items = vec![
        metadata::Items::new()
            .set_key(STARTUP_SCRIPT)
            .set_value(startup_script(spec, rank)),
        metadata::Items::new()
            .set_key(RANK_METADATA)
            .set_value(rank.to_string()),
    ];
    if c.accelerator.is_some() {
        // Deep Learning VM images install the driver at first boot when asked (a no-op on
        // families that ship it).
        items.push(
            metadata::Items::new()
                .set_key("install-nvidia-driver")
                .set_value("True"),
        );
    }
    let metadata = Metadata::new().set_items(items);
    Ok(Instance::new()
        .set_name(instance_name(&spec.cluster, rank))
        .set_description(format!(
            "Stratus job {}, cluster {}, node {rank} of {}",
            spec.job_id, spec.cluster, spec.num_nodes
        ))
        .set_machine_type(format!("zones/{}/machineTypes/{}", c.zone, c.instance_type))
        .set_labels(labels)
        .set_disks([disk])
        .set_network_interfaces([nic])
        .set_guest_accelerators(guest_accelerators(c)?)
        .set_scheduling(scheduling(c))
        .set_metadata(metadata))
}
