//! What the real API refuses that a schema cannot say: the rules Google documents for an
//! instance insert (disks, network, GPUs and scheduling, labels, request ids).

use std::collections::BTreeMap;

use serde_json::Value;

use super::pattern::full_match;

/// Google documents these rules for `instances.insert`; the discovery document cannot say
/// them. Also: a `requestId` must be a UUID other than the nil one, and labels must be valid.
pub(super) fn semantic_rules(
    method: &str,
    params: &BTreeMap<String, String>,
    query: &[(String, String)],
    body: Option<&Value>,
) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some((_, rid)) = query.iter().find(|(n, _)| n == "requestId")
        && !is_uuid(rid)
    {
        failures.push(format!(
            "{method}: requestId '{rid}' is not a valid non-nil UUID"
        ));
    }
    let zone = params.get("zone").map(String::as_str).unwrap_or_default();
    match (method, body) {
        ("compute.instances.insert", Some(b)) => failures.extend(insert_rules(zone, b)),
        ("compute.instances.setLabels", Some(b)) => {
            failures.extend(label_rules("labels", &b["labels"]));
        }
        _ => {}
    }
    failures
        .into_iter()
        .map(|f| {
            if f.starts_with(method) {
                f
            } else {
                format!("{method}: {f}")
            }
        })
        .collect()
}

/// What `instances.insert` rejects beyond its schema (from Google's documentation of
/// instances, GPUs and Spot VMs):
/// - `machineType` is `zones/<the call's zone>/machineTypes/<type>` (or that as a URL);
/// - exactly one boot disk, made from `initializeParams.sourceImage` (or a `source` disk);
/// - at least one network interface;
/// - labels: at most 64; keys `[a-z][-_a-z0-9]{0,62}`; values `[-_a-z0-9]{0,63}`;
/// - metadata keys unique, `startup-script` included at most once;
/// - `guestAccelerators` only on N1 machine types (A2, A3, A4, G2 and G4 types have their
///   GPUs built in), each `zones/<zone>/acceleratorTypes/<type>` with a positive count;
/// - a VM with GPUs (attached or built in) cannot live-migrate: `onHostMaintenance` must be
///   `TERMINATE`;
/// - a Spot VM (`provisioningModel: SPOT`) cannot restart automatically nor migrate
///   (`automaticRestart` not true, `onHostMaintenance: TERMINATE`);
/// - `instanceTerminationAction` only with `SPOT` (Stratus sets no `maxRunDuration`).
pub fn insert_rules(zone: &str, body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let machine = body["machineType"].as_str().unwrap_or_default();
    let short = machine
        .split_once("/projects/")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or(machine, |(_, rest)| rest);
    let machine_name = short
        .strip_prefix(&format!("zones/{zone}/machineTypes/"))
        .unwrap_or_default();
    if machine_name.is_empty() {
        out.push(format!(
            "resource.machineType '{machine}' is not a machine type of zone {zone}"
        ));
    }
    out.extend(disk_and_network_rules(body));
    out.extend(label_rules("resource.labels", &body["labels"]));
    let mut keys: Vec<&str> = body["metadata"]["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["key"].as_str()).collect())
        .unwrap_or_default();
    let total = keys.len();
    keys.sort_unstable();
    keys.dedup();
    if keys.len() != total {
        out.push("resource.metadata.items: duplicate keys".to_owned());
    }
    out.extend(gpu_and_scheduling_rules(zone, machine_name, body));
    out
}

pub(super) fn disk_and_network_rules(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let disks = body["disks"].as_array().cloned().unwrap_or_default();
    let boots: Vec<&Value> = disks.iter().filter(|d| d["boot"] == true).collect();
    if boots.len() != 1 {
        out.push(format!(
            "resource.disks: {} boot disks (want exactly 1)",
            boots.len()
        ));
    }
    for d in boots {
        if d["initializeParams"]["sourceImage"].as_str().is_none() && d["source"].as_str().is_none()
        {
            out.push("resource.disks: the boot disk has no sourceImage nor source".to_owned());
        }
    }
    for d in &disks {
        out.extend(label_rules(
            "resource.disks.initializeParams.labels",
            &d["initializeParams"]["labels"],
        ));
    }
    if body["networkInterfaces"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        out.push(
            "resource.networkInterfaces: at least one network interface is required".to_owned(),
        );
    }
    out
}

pub(super) fn gpu_and_scheduling_rules(
    zone: &str,
    machine_name: &str,
    body: &Value,
) -> Vec<String> {
    let mut out = Vec::new();
    let scheduling = &body["scheduling"];
    let maintenance = scheduling["onHostMaintenance"]
        .as_str()
        .unwrap_or("MIGRATE");
    let accelerators = body["guestAccelerators"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let built_in = ["a2-", "a3-", "a4-", "g2-", "g4-"]
        .iter()
        .any(|f| machine_name.starts_with(f));
    if !accelerators.is_empty() && !machine_name.starts_with("n1-") {
        out.push(format!(
            "resource.guestAccelerators: accelerators cannot be attached to {machine_name} \
             (only N1 machine types take them; A2, A3, G2 have theirs built in)"
        ));
    }
    for a in &accelerators {
        let kind = a["acceleratorType"].as_str().unwrap_or_default();
        if !kind.starts_with(&format!("zones/{zone}/acceleratorTypes/")) {
            out.push(format!(
                "resource.guestAccelerators.acceleratorType '{kind}' is not an accelerator type \
                 of zone {zone}"
            ));
        }
        if a["acceleratorCount"].as_i64().unwrap_or(0) < 1 {
            out.push("resource.guestAccelerators.acceleratorCount must be positive".to_owned());
        }
    }
    if (!accelerators.is_empty() || built_in) && maintenance != "TERMINATE" {
        out.push(
            "resource.scheduling.onHostMaintenance: instances with GPUs cannot live migrate \
             (set TERMINATE)"
                .to_owned(),
        );
    }
    if scheduling["provisioningModel"] == "SPOT" {
        if scheduling["automaticRestart"] == true {
            out.push(
                "resource.scheduling.automaticRestart: Spot VMs cannot restart automatically"
                    .to_owned(),
            );
        }
        if maintenance != "TERMINATE" {
            out.push("resource.scheduling.onHostMaintenance: Spot VMs must TERMINATE".to_owned());
        }
    } else if scheduling
        .get("instanceTerminationAction")
        .is_some_and(|a| !a.is_null())
    {
        out.push(
            "resource.scheduling.instanceTerminationAction is only for Spot VMs (or with \
             maxRunDuration)"
                .to_owned(),
        );
    }
    out
}

pub(super) fn label_rules(path: &str, labels: &Value) -> Vec<String> {
    let Some(labels) = labels.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if labels.len() > 64 {
        out.push(format!("{path}: {} labels (at most 64)", labels.len()));
    }
    for (k, v) in labels {
        if !full_match("[a-z][-_a-z0-9]{0,62}", k).unwrap_or(false) {
            out.push(format!("{path}: invalid label key '{k}'"));
        }
        let v = v.as_str().unwrap_or("<not a string>");
        if !full_match("[-_a-z0-9]{0,63}", v).unwrap_or(false) {
            out.push(format!("{path}: invalid value '{v}' of label '{k}'"));
        }
    }
    out
}

pub(super) fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
        && s.bytes().any(|b| b.is_ascii_hexdigit() && b != b'0')
}
