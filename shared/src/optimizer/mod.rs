//! Chooses where a task runs: every feasible candidate from the catalog, ranked.
//!
//! For each resource alternative (`any_of`/`ordered` entry × accelerator option) and each
//! cloud, the catalog is filtered step by step (infra, instance type, accelerator, region,
//! vCPUs and memory); the first step that leaves nothing is the reason the cloud was ruled out.
//! What survives is reduced to the cheapest instance type per (alternative, zone, spot) and
//! ranked: by list position for `ordered` preferences, then by cost. The whole ranked list is
//! kept, because recovery walks it.
//!
//! # Layout
//! - `candidate`: [`Candidate`], one launch target.
//! - `table`: SkyPilot's "Considered resources" table.

mod candidate;
mod table;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub use candidate::Candidate;
pub use table::considered_table;

use crate::catalog::{Catalog, Offering};
use crate::cloud::Cloud;
use crate::spec::{Accelerator, Accelerators, ImageId, Preference, Quantity, Resources, Task};
use crate::suggest;

/// SkyPilot's default for a task that asks for nothing: 8 vCPUs with 4 GB per vCPU.
const DEFAULT_CPUS: Quantity = Quantity {
    value: 8.0,
    at_least: true,
    per_cpu: false,
};
const DEFAULT_MEMORY: Quantity = Quantity {
    value: 4.0,
    at_least: false,
    per_cpu: true,
};

/// Why a cloud cannot serve one alternative of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct NoFit {
    /// The alternative, described (`A100:8 on aws`), when a task has several.
    pub alternative: Option<String>,
    pub cloud: Cloud,
    pub reason: String,
}

/// The optimizer's answer for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlan {
    /// Feasible candidates, best first. Empty when nothing fits.
    pub ranked: Vec<Candidate>,
    /// Why each cloud was ruled out, for each alternative it could not serve.
    pub no_fit: Vec<NoFit>,
}

impl TaskPlan {
    pub fn chosen(&self) -> Option<&Candidate> {
        self.ranked.first()
    }

    /// "nothing fits" explained, one line per cloud (and alternative).
    pub fn explain_no_fit(&self) -> String {
        let mut out = String::new();
        for n in &self.no_fit {
            let alt = n
                .alternative
                .as_deref()
                .map(|a| format!(" [{a}]"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {}{alt}: {}", n.cloud, n.reason);
        }
        out
    }
}

/// One concrete request: a resource alternative with one accelerator option.
struct Request<'a> {
    resources: &'a Resources,
    accelerator: Option<&'a Accelerator>,
    /// Sort key for ordered preferences: (resource position, accelerator position).
    order: (usize, usize),
    index: usize,
}

/// Places `task` names that its cloud's catalog does not have (`infra: aws/us-nowhere-9`):
/// bad input, each with the places that exist, not a lack of capacity.
pub fn unknown_places(catalog: &Catalog, task: &Task) -> Vec<String> {
    let mut problems = Vec::new();
    for r in &task.resources.candidates {
        let Some(cloud) = r.infra.cloud else {
            continue;
        };
        let offerings: Vec<&Offering> = catalog.of(cloud).collect();
        if offerings.is_empty() {
            continue;
        }
        let regions = distinct(offerings.iter().map(|o| o.region.as_str()));
        let zones = distinct(
            offerings
                .iter()
                .filter(|o| r.infra.region.as_ref().is_none_or(|w| &o.region == w))
                .map(|o| o.zone.as_str()),
        );
        let problem = match (&r.infra.region, &r.infra.zone) {
            (Some(region), _) if !regions.contains(&region.as_str()) => Some(format!(
                "{cloud} has no region '{region}'{}; its regions: {}",
                suggest::did_you_mean(region, regions.iter().copied()),
                regions.join(", ")
            )),
            (_, Some(zone)) if !zones.contains(&zone.as_str()) => Some(format!(
                "{cloud} has no zone '{zone}'{}; its zones{}: {}",
                suggest::did_you_mean(zone, zones.iter().copied()),
                r.infra
                    .region
                    .as_ref()
                    .map(|w| format!(" in {w}"))
                    .unwrap_or_default(),
                zones.join(", ")
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            let line = format!("infra: {}: {problem}", r.infra);
            if !problems.contains(&line) {
                problems.push(line);
            }
        }
    }
    problems
}

/// Plans `task` over `clouds` (the clouds allowed to be chosen).
pub fn plan_task(catalog: &Catalog, task: &Task, clouds: &[Cloud]) -> TaskPlan {
    let spec = &task.resources;
    let mut requests = Vec::new();
    for (r, resources) in spec.candidates.iter().enumerate() {
        let resource_order = if spec.preference == Preference::Ordered {
            r
        } else {
            0
        };
        match &resources.accelerators {
            None => requests.push((resources, None, (resource_order, 0))),
            Some(accs) => {
                let ordered = matches!(accs, Accelerators::Ordered(_));
                for (a, acc) in accs.options().iter().enumerate() {
                    requests.push((
                        resources,
                        Some(acc),
                        (resource_order, if ordered { a } else { 0 }),
                    ));
                }
            }
        }
    }
    let several = requests.len() > 1;
    let requests: Vec<Request> = requests
        .into_iter()
        .enumerate()
        .map(|(index, (resources, accelerator, order))| Request {
            resources,
            accelerator,
            order,
            index,
        })
        .collect();

    let mut ranked = Vec::new();
    let mut no_fit = Vec::new();
    for request in &requests {
        for &cloud in clouds {
            match feasible(catalog, cloud, request) {
                Ok(offerings) => {
                    ranked.extend(cheapest_per_zone(&offerings, request, task.num_nodes));
                }
                Err(reason) => no_fit.push(NoFit {
                    alternative: several.then(|| describe(request)),
                    cloud,
                    reason,
                }),
            }
        }
    }
    let order_of: BTreeMap<usize, (usize, usize)> =
        requests.iter().map(|r| (r.index, r.order)).collect();
    ranked.sort_by(|a, b| {
        order_of[&a.alternative]
            .cmp(&order_of[&b.alternative])
            .then(a.cost().partial_cmp(&b.cost()).unwrap_or(Ordering::Equal))
            .then(a.vcpus.partial_cmp(&b.vcpus).unwrap_or(Ordering::Equal))
            .then(a.cloud.cmp(&b.cloud))
            .then(a.region.cmp(&b.region))
            .then(a.zone.cmp(&b.zone))
            .then(a.instance_type.cmp(&b.instance_type))
    });
    // The same zone and instance can come from two alternatives (e.g. `any_of` over spot only);
    // keep its best-ranked copy.
    let mut seen = std::collections::HashSet::new();
    ranked.retain(|c| seen.insert((c.cloud, c.zone.clone(), c.instance_type.clone(), c.use_spot)));
    TaskPlan { ranked, no_fit }
}

fn describe(request: &Request) -> String {
    let r = request.resources;
    let mut parts = Vec::new();
    if let Some(acc) = request.accelerator {
        parts.push(acc.to_string());
    }
    if let Some(t) = &r.instance_type {
        parts.push(t.clone());
    }
    if r.infra.cloud.is_some() || r.infra.region.is_some() || r.infra.zone.is_some() {
        parts.push(format!("on {}", r.infra));
    }
    if r.use_spot {
        parts.push("spot".into());
    }
    if parts.is_empty() {
        parts.push("any".into());
    }
    parts.join(" ")
}

/// The offerings of `cloud` that satisfy `request`, or why there are none.
// One filter stage after another, each with its own reason: splitting them would scatter the
// order that decides which reason the user sees.
#[allow(clippy::too_many_lines)]
fn feasible<'c>(
    catalog: &'c Catalog,
    cloud: Cloud,
    request: &Request,
) -> Result<Vec<&'c Offering>, String> {
    let r = request.resources;
    if let Some(wanted) = r.infra.cloud
        && wanted != cloud
    {
        return Err(format!("not requested (infra: {})", r.infra));
    }
    let mut offerings: Vec<&Offering> = catalog.of(cloud).collect();
    if offerings.is_empty() {
        return Err("its catalog is empty".into());
    }

    if let Some(region) = &r.infra.region {
        let regions = distinct(offerings.iter().map(|o| o.region.as_str()));
        offerings.retain(|o| &o.region == region);
        if offerings.is_empty() {
            return Err(format!(
                "no region '{region}'{}; regions: {}",
                suggest::did_you_mean(region, regions.iter().copied()),
                regions.join(", ")
            ));
        }
    }
    if let Some(zone) = &r.infra.zone {
        let zones = distinct(offerings.iter().map(|o| o.zone.as_str()));
        offerings.retain(|o| &o.zone == zone);
        if offerings.is_empty() {
            return Err(format!(
                "no zone '{zone}'{}; zones: {}",
                suggest::did_you_mean(zone, zones.iter().copied()),
                zones.join(", ")
            ));
        }
    }
    if let Some(ImageId::PerRegion(images)) = &r.image_id {
        offerings.retain(|o| images.contains_key(&o.region));
        if offerings.is_empty() {
            let listed: Vec<&str> = images.keys().map(String::as_str).collect();
            return Err(format!(
                "image_id lists only regions it does not have: {}",
                listed.join(", ")
            ));
        }
    }

    if let Some(instance_type) = &r.instance_type {
        let types = distinct(offerings.iter().map(|o| o.instance_type.as_str()));
        offerings.retain(|o| &o.instance_type == instance_type);
        if offerings.is_empty() {
            let everywhere = catalog.of(cloud).any(|o| &o.instance_type == instance_type);
            return Err(if everywhere {
                format!(
                    "instance type {instance_type} is not offered in {}",
                    r.infra
                )
            } else {
                format!(
                    "no instance type '{instance_type}'{}",
                    suggest::did_you_mean(instance_type, types.iter().copied())
                )
            });
        }
    }

    match request.accelerator {
        Some(acc) => {
            let count = acc.whole_count();
            let named: Vec<&Offering> = offerings
                .iter()
                .copied()
                .filter(|o| {
                    o.accelerator
                        .as_ref()
                        .is_some_and(|(n, _)| n.eq_ignore_ascii_case(&acc.name))
                })
                .collect();
            if named.is_empty() {
                let anywhere = catalog.of(cloud).any(|o| {
                    o.accelerator
                        .as_ref()
                        .is_some_and(|(n, _)| n.eq_ignore_ascii_case(&acc.name))
                });
                return Err(if anywhere {
                    format!("{} is not offered {}", acc.name, where_(r))
                } else {
                    let gpus = distinct(
                        catalog
                            .of(cloud)
                            .filter_map(|o| o.accelerator.as_ref().map(|(n, _)| n.as_str())),
                    );
                    if gpus.is_empty() {
                        format!("no accelerators (asked for {acc})")
                    } else {
                        format!("no {} (offers {})", acc.name, gpus.join(", "))
                    }
                });
            }
            let counts = distinct_counts(&named);
            offerings = named
                .into_iter()
                .filter(|o| o.accelerator.as_ref().is_some_and(|(_, c)| *c == count))
                .collect();
            if offerings.is_empty() {
                return Err(format!(
                    "{} comes only in counts of {} per node {}, not {count}",
                    acc.name,
                    counts,
                    where_(r)
                ));
            }
        }
        None if r.instance_type.is_none() => {
            // A CPU request never lands on a GPU machine by accident.
            offerings.retain(|o| o.accelerator.is_none());
        }
        None => {}
    }

    let (cpus, memory) = match (r.cpus, r.memory, &r.instance_type, request.accelerator) {
        (None, None, None, None) => (Some(DEFAULT_CPUS), Some(DEFAULT_MEMORY)),
        (c, m, ..) => (c, m),
    };
    offerings.retain(|o| {
        cpus.is_none_or(|c| c.admits(o.vcpus, o.vcpus))
            && memory.is_none_or(|m| m.admits(o.memory_gb, o.vcpus))
    });
    if offerings.is_empty() {
        let mut wanted = Vec::new();
        if let Some(c) = cpus {
            wanted.push(format!("{c} vCPUs"));
        }
        if let Some(m) = memory {
            wanted.push(format!("{m} GB memory"));
        }
        let what = request
            .accelerator
            .map(|a| format!(" with {a}"))
            .unwrap_or_default();
        return Err(format!(
            "no instance{what} has {} {}",
            wanted.join(" and "),
            where_(r)
        ));
    }
    Ok(offerings)
}

fn where_(r: &Resources) -> String {
    if r.infra.region.is_some() || r.infra.zone.is_some() {
        format!("in {}", r.infra)
    } else {
        "in any region".into()
    }
}

fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = items.collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn distinct_counts(offerings: &[&Offering]) -> String {
    let mut counts: Vec<u32> = offerings
        .iter()
        .filter_map(|o| o.accelerator.as_ref().map(|(_, c)| *c))
        .collect();
    counts.sort_unstable();
    counts.dedup();
    counts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cheapest offering per zone: one candidate per (zone) for this request.
fn cheapest_per_zone(offerings: &[&Offering], request: &Request, num_nodes: u32) -> Vec<Candidate> {
    let spot = request.resources.use_spot;
    let mut best: BTreeMap<(&str, &str), &Offering> = BTreeMap::new();
    for o in offerings {
        let key = (o.region.as_str(), o.zone.as_str());
        let better = best.get(&key).is_none_or(|b| {
            (o.hourly(spot), o.vcpus, &o.instance_type)
                < (b.hourly(spot), b.vcpus, &b.instance_type)
        });
        if better {
            best.insert(key, o);
        }
    }
    best.into_values()
        .map(|o| Candidate {
            cloud: o.cloud,
            region: o.region.clone(),
            zone: o.zone.clone(),
            instance_type: o.instance_type.clone(),
            vcpus: o.vcpus,
            memory_gb: o.memory_gb,
            accelerator: o.accelerator.clone(),
            use_spot: spot,
            hourly_price: o.hourly(spot),
            num_nodes,
            alternative: request.index,
        })
        .collect()
}

#[cfg(test)]
mod tests;
