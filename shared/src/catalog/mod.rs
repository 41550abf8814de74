//! The price catalog: which instance types each cloud offers where, and at what hourly price.
//!
//! Embedded CSVs (`shared/data/catalog/*.csv`, sources and dates in its README) are compiled
//! into the binary, so planning needs no network. A file `$STRATUS_HOME/catalogs/<cloud>.csv`
//! with the same columns replaces a cloud's embedded catalog.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cloud::Cloud;

const EMBEDDED: [(Cloud, &str); 3] = [
    (Cloud::Aws, include_str!("../../data/catalog/aws.csv")),
    (Cloud::Gcp, include_str!("../../data/catalog/gcp.csv")),
    (Cloud::Local, include_str!("../../data/catalog/local.csv")),
];

/// When the built-in catalog's prices were compiled (its README gives the sources). Costs are
/// estimates from these prices, or from `$STRATUS_HOME/catalogs/<cloud>.csv` where present.
pub const PRICES_AS_OF: &str = "2026-11-27";

/// One instance type in one zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    pub cloud: Cloud,
    pub instance_type: String,
    pub vcpus: f64,
    pub memory_gb: f64,
    pub accelerator: Option<(String, u32)>,
    pub region: String,
    pub zone: String,
    /// On-demand USD per hour.
    pub price: f64,
    /// Spot USD per hour.
    pub spot_price: f64,
}

impl Offering {
    pub fn hourly(&self, spot: bool) -> f64 {
        if spot { self.spot_price } else { self.price }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog {name}, line {line}: {message}")]
    Row {
        name: String,
        line: u64,
        message: String,
    },
}

/// Every offering of every cloud.
#[derive(Debug, Clone)]
pub struct Catalog {
    offerings: Vec<Offering>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Row {
    instance_type: String,
    #[serde(rename = "vCPUs")]
    vcpus: f64,
    #[serde(rename = "MemoryGiB")]
    memory_gib: f64,
    accelerator_name: Option<String>,
    accelerator_count: Option<u32>,
    region: String,
    availability_zone: String,
    price: f64,
    spot_price: f64,
}

impl Catalog {
    /// The catalogs compiled into the binary.
    pub fn embedded() -> Self {
        let mut offerings = Vec::new();
        for (cloud, text) in EMBEDDED {
            offerings.extend(parse(cloud, cloud.id(), text).expect("embedded catalogs are valid"));
        }
        Self { offerings }
    }

    /// The embedded catalogs, with each `<dir>/<cloud>.csv` that exists replacing its cloud's.
    pub fn with_overrides(dir: &Path) -> Result<Self, CatalogError> {
        let mut offerings = Vec::new();
        for (cloud, text) in EMBEDDED {
            let path = dir.join(format!("{}.csv", cloud.id()));
            match std::fs::read_to_string(&path) {
                Ok(user) => offerings.extend(parse(cloud, &path.display().to_string(), &user)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    offerings.extend(
                        parse(cloud, cloud.id(), text).expect("embedded catalogs are valid"),
                    );
                }
                Err(source) => return Err(CatalogError::Read { path, source }),
            }
        }
        Ok(Self { offerings })
    }

    pub fn from_offerings(offerings: Vec<Offering>) -> Self {
        Self { offerings }
    }

    pub fn offerings(&self) -> &[Offering] {
        &self.offerings
    }

    pub fn of(&self, cloud: Cloud) -> impl Iterator<Item = &Offering> {
        self.offerings.iter().filter(move |o| o.cloud == cloud)
    }

    /// The clouds that have at least one offering, in `Cloud::ALL` order.
    pub fn clouds(&self) -> Vec<Cloud> {
        Cloud::ALL
            .into_iter()
            .filter(|c| self.of(*c).next().is_some())
            .collect()
    }
}

/// Parses one cloud's CSV; `name` is used in error messages.
pub fn parse(cloud: Cloud, name: &str, text: &str) -> Result<Vec<Offering>, CatalogError> {
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut offerings = Vec::new();
    for row in reader.deserialize::<Row>() {
        let row = row.map_err(|e| CatalogError::Row {
            name: name.to_owned(),
            line: e.position().map_or(0, csv::Position::line),
            message: e.to_string(),
        })?;
        let accelerator = match (
            row.accelerator_name.filter(|n| !n.is_empty()),
            row.accelerator_count,
        ) {
            (Some(name), Some(count)) if count > 0 => Some((name, count)),
            (Some(name), _) => Some((name, 1)),
            (None, _) => None,
        };
        offerings.push(Offering {
            cloud,
            instance_type: row.instance_type,
            vcpus: row.vcpus,
            memory_gb: row.memory_gib,
            accelerator,
            region: row.region,
            zone: row.availability_zone,
            price: row.price,
            spot_price: row.spot_price,
        });
    }
    Ok(offerings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogs_cover_four_regions_per_cloud() {
        let catalog = Catalog::embedded();
        for cloud in [Cloud::Aws, Cloud::Gcp] {
            let mut regions: Vec<&str> = catalog.of(cloud).map(|o| o.region.as_str()).collect();
            regions.sort_unstable();
            regions.dedup();
            assert!(regions.len() >= 4, "{cloud}: {regions:?}");
        }
        for gpu in ["T4", "L4", "A10G", "V100", "A100", "A100-80GB", "H100"] {
            for cloud in [Cloud::Aws, Cloud::Gcp] {
                let offered = catalog
                    .of(cloud)
                    .any(|o| o.accelerator.as_ref().is_some_and(|(n, _)| n == gpu));
                // AWS sells A100-80GB only as 8-GPU hosts and GCP has no A10G: both still count.
                assert!(
                    offered || (cloud == Cloud::Gcp && gpu == "A10G"),
                    "{cloud} lacks {gpu}"
                );
            }
        }
    }

    #[test]
    fn a_user_catalog_replaces_one_cloud() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("aws.csv"),
            "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,Region,AvailabilityZone,Price,SpotPrice\n\
             x1.tiny,1,1,,,us-east-1,us-east-1a,0.01,0.005\n",
        )
        .unwrap();
        let catalog = Catalog::with_overrides(dir.path()).unwrap();
        let aws: Vec<_> = catalog.of(Cloud::Aws).collect();
        assert_eq!(aws.len(), 1);
        assert_eq!(aws[0].instance_type, "x1.tiny");
        assert!(catalog.of(Cloud::Gcp).count() > 100);
    }

    #[test]
    fn a_bad_row_names_the_file_and_line() {
        let err = parse(
            Cloud::Aws,
            "mine.csv",
            "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,Region,AvailabilityZone,Price,SpotPrice\n\
             x1.tiny,one,1,,,us-east-1,us-east-1a,0.01,0.005\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("catalog mine.csv, line 2:"),
            "{err}"
        );
    }
}
