//! What the fake's Compute methods do to its state: insert (and the instances an operation
//! makes), list with filters and pages, delete, setLabels.

use serde_json::{Value, json};

use super::discovery::{self, Discovery};

use super::filter::parse_filter;
use super::{
    API_ROOT, Exhaustion, FakeState, Fault, Reply, find_instance, fingerprint, finish,
    new_operation, next_id, not_found, rfc3339_now, store_operation, zone_link,
};

pub(super) fn insert(
    state: &mut FakeState,
    project: &str,
    zone: &str,
    request_id: Option<String>,
    body: Value,
) -> Reply {
    if let Some(rid) = &request_id
        && let Some(key) = state.request_ids.get(rid)
        && let Some(op) = state.operations.get(key)
    {
        return Ok(op.clone());
    }
    if state.exhausted.get(zone) == Some(&Exhaustion::InCall) {
        return Err(Fault::new(
            503,
            "UNAVAILABLE",
            "ZONE_RESOURCE_POOL_EXHAUSTED",
            &format!(
                "The zone 'projects/{project}/zones/{zone}' does not have enough resources \
                 available to fulfill the request.  Try a different zone, or try again later."
            ),
        ));
    }
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let key = (project.to_owned(), zone.to_owned(), name.clone());
    let self_link = format!("{}/instances/{name}", zone_link(project, zone));
    if state.instances.contains_key(&key) {
        return Err(Fault::new(
            409,
            "ALREADY_EXISTS",
            "alreadyExists",
            &format!(
                "The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists"
            ),
        ));
    }
    let held = state.instances.keys().filter(|(_, z, _)| z == zone).count();
    let full = state.capacity.get(zone).is_some_and(|n| held >= *n);
    let operation_fault = if full || state.exhausted.get(zone) == Some(&Exhaustion::InOperation) {
        Some((
            "ZONE_RESOURCE_POOL_EXHAUSTED".to_owned(),
            format!(
                "The zone 'projects/{project}/zones/{zone}' does not have enough resources \
                 available to fulfill the request.  Try a different zone, or try again later."
            ),
        ))
    } else {
        state.operation_faults.get(zone).cloned()
    };
    let id = next_id(state);
    let mut op = new_operation(
        state,
        project,
        zone,
        "insert",
        &json!(self_link),
        &json!(id.to_string()),
    );
    if let Some((code, message)) = operation_fault {
        finish(&mut op);
        op["error"] = json!({ "errors": [{ "code": code, "message": message }] });
        op["httpErrorStatusCode"] = json!(if code == "QUOTA_EXCEEDED" { 403 } else { 503 });
        op["httpErrorMessage"] = json!(if code == "QUOTA_EXCEEDED" {
            "FORBIDDEN"
        } else {
            "SERVICE UNAVAILABLE"
        });
        // A real failed insert's operation is DONE at once; return it RUNNING anyway so the
        // provider has to wait for it.
        op["status"] = json!("RUNNING");
    } else {
        let instance = materialize(state, project, zone, id, &self_link, body);
        state.instances.insert(key, instance);
    }
    let op_key = store_operation(state, project, zone, &op);
    if let Some(rid) = request_id
        && !state.forget_request_ids
    {
        state.request_ids.insert(rid, op_key);
    }
    Ok(op)
}

/// The instance GCE would make of an insert body: the body plus the output-only fields, boot
/// disk made, addresses assigned.
pub(super) fn materialize(
    state: &mut FakeState,
    project: &str,
    zone: &str,
    id: u64,
    self_link: &str,
    mut body: Value,
) -> Value {
    let n = state.instances.len() + 2;
    let o = body.as_object_mut().expect("checked: an object");
    o.insert("kind".into(), json!("compute#instance"));
    o.insert("id".into(), json!(id.to_string()));
    o.insert("creationTimestamp".into(), json!(rfc3339_now()));
    o.insert("zone".into(), json!(zone_link(project, zone)));
    o.insert("status".into(), json!("RUNNING"));
    o.insert("selfLink".into(), json!(self_link));
    o.insert("labelFingerprint".into(), json!(fingerprint(id)));
    o.insert("cpuPlatform".into(), json!("Intel Cascade Lake"));
    if let Some(mt) = o.get("machineType").and_then(Value::as_str)
        && !mt.starts_with("https://")
    {
        let full = format!("{API_ROOT}/projects/{project}/{mt}");
        o.insert("machineType".into(), json!(full));
    }
    if let Some(disks) = o.get_mut("disks").and_then(Value::as_array_mut) {
        for (i, disk) in disks.iter_mut().enumerate() {
            let d = disk.as_object_mut().expect("checked: an object");
            let init = d.remove("initializeParams").unwrap_or_default();
            let size = init["diskSizeGb"].as_str().unwrap_or("10").to_owned();
            d.insert("kind".into(), json!("compute#attachedDisk"));
            d.insert("index".into(), json!(i));
            d.insert("mode".into(), json!("READ_WRITE"));
            d.insert("deviceName".into(), json!(format!("persistent-disk-{i}")));
            d.insert("diskSizeGb".into(), json!(size));
            d.insert(
                "source".into(),
                json!(format!(
                    "{}/disks/{}",
                    zone_link(project, zone),
                    body_name(id, i)
                )),
            );
        }
    }
    if let Some(nics) = o.get_mut("networkInterfaces").and_then(Value::as_array_mut) {
        for (i, nic) in nics.iter_mut().enumerate() {
            let nic = nic.as_object_mut().expect("checked: an object");
            nic.insert("kind".into(), json!("compute#networkInterface"));
            nic.insert("name".into(), json!(format!("nic{i}")));
            nic.insert("networkIP".into(), json!(format!("10.128.0.{n}")));
            if let Some(configs) = nic.get_mut("accessConfigs").and_then(Value::as_array_mut) {
                for c in configs {
                    c["kind"] = json!("compute#accessConfig");
                    c["natIP"] = json!(format!("34.1.2.{n}"));
                    c["networkTier"] = json!("PREMIUM");
                }
            }
        }
    }
    if let Some(metadata) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("kind".into(), json!("compute#metadata"));
        metadata.insert("fingerprint".into(), json!(fingerprint(id + 1)));
    }
    body
}

pub(super) fn body_name(id: u64, i: usize) -> String {
    format!("disk-{id}-{i}")
}

/// What `instances.list` and `zoneOperations.list` list.
#[derive(Clone, Copy)]
pub(super) enum Listed {
    Instances,
    Operations,
}

/// `instances.list` or `zoneOperations.list`: the zone's items that pass the filter, a page.
pub(super) fn list(
    state: &mut FakeState,
    discovery: &Discovery,
    method: &discovery::Method,
    (project, zone): (&str, &str),
    listed: Listed,
    query: &[(String, String)],
) -> Reply {
    let filter = parse_filter(discovery, method, query).map_err(|why| {
        state.failures.push(why.clone());
        Fault::new(400, "INVALID_ARGUMENT", "invalid", &why)
    })?;
    let (items, kind, collection) = match listed {
        Listed::Instances => (&state.instances, "compute#instanceList", "instances"),
        Listed::Operations => (&state.operations, "compute#operationList", "operations"),
    };
    let items: Vec<Value> = items
        .iter()
        .filter(|((p, z, _), v)| p == project && z == zone && filter.iter().all(|t| t.holds(v)))
        .map(|(_, v)| v.clone())
        .collect();
    let link = format!("{}/{collection}", zone_link(project, zone));
    Ok(page(state, kind, &link, items, query))
}

/// One page of `items`: `maxResults` (default 500, at most the fake's page size) from the
/// offset `pageToken` says.
pub(super) fn page(
    state: &FakeState,
    kind: &str,
    link: &str,
    items: Vec<Value>,
    query: &[(String, String)],
) -> Value {
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let size = q("maxResults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(500)
        .min(state.page_size.unwrap_or(usize::MAX))
        .max(1);
    let from = q("pageToken")
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let total = items.len();
    let chunk: Vec<Value> = items.into_iter().skip(from).take(size).collect();
    let mut out = json!({ "kind": kind, "id": link, "selfLink": link });
    if !chunk.is_empty() {
        out["items"] = Value::Array(chunk);
    }
    if from + size < total {
        out["nextPageToken"] = json!(format!("page-{}", from + size));
    }
    out
}

pub(super) fn delete(state: &mut FakeState, project: &str, zone: &str, name: &str) -> Reply {
    let Some((_, instance)) = find_instance(state, zone, name) else {
        return Err(not_found(project, zone, "instances", name));
    };
    instance["status"] = json!("STOPPING");
    instance["_deleting"] = json!(true);
    let (target, id) = (instance["selfLink"].clone(), instance["id"].clone());
    let op = new_operation(state, project, zone, "delete", &target, &id);
    store_operation(state, project, zone, &op);
    Ok(op)
}

pub(super) fn set_labels(
    state: &mut FakeState,
    project: &str,
    zone: &str,
    name: &str,
    body: &Value,
) -> Reply {
    let fresh = fingerprint(next_id(state));
    let Some((_, instance)) = find_instance(state, zone, name) else {
        return Err(not_found(project, zone, "instances", name));
    };
    if body["labelFingerprint"] != instance["labelFingerprint"] {
        return Err(Fault::new(
            412,
            "FAILED_PRECONDITION",
            "conditionNotMet",
            "Labels fingerprint either invalid or resource labels have changed",
        ));
    }
    instance["labels"] = body["labels"].clone();
    instance["labelFingerprint"] = json!(fresh);
    let (target, id) = (instance["selfLink"].clone(), instance["id"].clone());
    let op = new_operation(state, project, zone, "setLabels", &target, &id);
    store_operation(state, project, zone, &op);
    Ok(op)
}
