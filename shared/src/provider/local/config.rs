//! How many nodes each local zone holds: [`LocalConfig`], and the `STRATUS_LOCAL_SLOTS`
//! override (`zone-a=0,zone-b=2`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The environment variable that overrides slots per zone, e.g. `zone-a=0,zone-b=2`.
pub const SLOTS_ENV: &str = "STRATUS_LOCAL_SLOTS";

/// Node slots of a built-in zone that the configuration does not mention.
pub const DEFAULT_SLOTS_PER_ZONE: u32 = 4;

/// The zones of the built-in local catalog; each is also its own region.
pub const DEFAULT_ZONES: [&str; 2] = ["zone-a", "zone-b"];

/// The local cloud's capacity: how many **nodes** (not clusters) each zone can run at once.
///
/// A zone is known if it is built in ([`DEFAULT_ZONES`], [`DEFAULT_SLOTS_PER_ZONE`] nodes each
/// unless set here) or listed in `slots`. Setting a zone to 0 keeps it known but always full,
/// which is how tests force a capacity failover.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Node slots per zone, e.g. `{zone-a: 0, zone-b: 2}`.
    #[serde(default)]
    pub slots: BTreeMap<String, u32>,
}

impl LocalConfig {
    /// The node slots of `zone`, or `None` if the local cloud has no such zone.
    pub fn slots_for(&self, zone: &str) -> Option<u32> {
        self.slots.get(zone).copied().or_else(|| {
            DEFAULT_ZONES
                .contains(&zone)
                .then_some(DEFAULT_SLOTS_PER_ZONE)
        })
    }

    /// Every known zone, sorted.
    pub fn zones(&self) -> Vec<String> {
        let mut zones: BTreeSet<String> = DEFAULT_ZONES.iter().map(|&z| z.to_owned()).collect();
        zones.extend(self.slots.keys().cloned());
        zones.into_iter().collect()
    }

    /// This configuration with the zones named in `spec` (a [`SLOTS_ENV`] value) set to the
    /// given counts; the other zones keep theirs.
    pub fn with_slots(mut self, spec: &str) -> Result<Self, SlotsError> {
        self.slots.extend(parse_slots(spec)?);
        Ok(self)
    }
}

/// A [`SLOTS_ENV`] value that is not `ZONE=COUNT[,ZONE=COUNT...]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{SLOTS_ENV}: '{item}' {problem} (write ZONE=COUNT,..., e.g. zone-a=0,zone-b=2)")]
pub struct SlotsError {
    /// The offending item.
    pub item: String,
    pub problem: &'static str,
}

/// Parses `zone-a=0, zone-b=2` (spaces and empty items are ignored; an empty value sets
/// nothing).
pub fn parse_slots(spec: &str) -> Result<BTreeMap<String, u32>, SlotsError> {
    let mut slots = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let error = |problem| SlotsError {
            item: item.to_owned(),
            problem,
        };
        let (zone, count) = item
            .split_once('=')
            .ok_or_else(|| error("is not ZONE=COUNT"))?;
        let zone = zone.trim();
        if zone.is_empty() {
            return Err(error("names no zone"));
        }
        let count = count
            .trim()
            .parse::<u32>()
            .map_err(|_| error("has a COUNT that is not a whole number >= 0"))?;
        if slots.insert(zone.to_owned(), count).is_some() {
            return Err(error("sets a zone given earlier"));
        }
    }
    Ok(slots)
}
