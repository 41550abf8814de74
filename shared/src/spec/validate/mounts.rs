//! `file_mounts`, `storage` and bucket URLs.

use std::collections::BTreeMap;

use super::Result;
use super::envs::substitute;
use crate::spec::error::{SpecError, join_path};
use crate::spec::yaml::{FileMountYaml, StorageYaml, StringOrList};
use crate::spec::{BucketUrl, FileMount, MountSource, Storage, StorageMode, StorageSource, Store};
use crate::suggest;

pub(super) fn file_mounts(
    yaml: BTreeMap<String, Option<FileMountYaml>>,
    envs: &BTreeMap<String, String>,
) -> Result<Vec<FileMount>> {
    let mut mounts = Vec::new();
    for (raw_destination, value) in yaml {
        let path = join_path("file_mounts", &raw_destination);
        let destination = substitute(&raw_destination, envs);
        if destination.contains("://") {
            return Err(SpecError::new(
                path,
                "the destination must be a path on the node, not a URL; put the URL on the right-hand side",
            ));
        }
        if destination.len() > 1 && destination.ends_with('/') {
            return Err(SpecError::new(
                path,
                format!("the destination '{destination}' must not end with '/'"),
            ));
        }
        let source = match value {
            None => {
                return Err(SpecError::new(
                    path,
                    "no source: give a local path, a bucket URL, or a storage mapping",
                ));
            }
            Some(FileMountYaml::Path(source)) => {
                let source = substitute(&source, envs);
                match bucket_url(&source).map_err(|m| SpecError::new(&path, m))? {
                    Some(url) => MountSource::Bucket(url),
                    None => MountSource::Local(source),
                }
            }
            Some(FileMountYaml::Storage(storage)) => {
                MountSource::Storage(storage_spec(*storage, envs).map_err(|e| e.under(&path))?)
            }
        };
        mounts.push(FileMount {
            destination,
            source,
        });
    }
    Ok(mounts)
}

/// `Some` for a supported bucket URL, `None` for a local path, an error for other URLs.
pub(super) fn bucket_url(text: &str) -> std::result::Result<Option<BucketUrl>, String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        if text.starts_with("https://") || text.starts_with("http://") {
            return Err(unsupported_store(text, "HTTP(S) (e.g. Azure Blob)"));
        }
        return Ok(None);
    };
    let store = match scheme.to_ascii_lowercase().as_str() {
        "s3" => Store::S3,
        "gs" | "gcs" => Store::Gcs,
        "r2" => return Err(unsupported_store(text, "Cloudflare R2")),
        "cos" => return Err(unsupported_store(text, "IBM COS")),
        "oci" => return Err(unsupported_store(text, "OCI Object Storage")),
        "nebius" => return Err(unsupported_store(text, "Nebius Object Storage")),
        "https" | "http" => return Err(unsupported_store(text, "HTTP(S) (e.g. Azure Blob)")),
        other => {
            return Err(format!(
                "unknown bucket URL scheme '{other}://' in '{text}': use s3:// or gs://"
            ));
        }
    };
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("'{text}' has no bucket name"));
    }
    Ok(Some(BucketUrl {
        store,
        bucket: bucket.to_owned(),
        key: key.trim_end_matches('/').to_owned(),
    }))
}

pub(super) fn unsupported_store(url: &str, what: &str) -> String {
    format!("'{url}': {what} buckets are not supported by Stratus; use an s3:// or gs:// bucket")
}

pub(super) fn storage_spec(yaml: StorageYaml, envs: &BTreeMap<String, String>) -> Result<Storage> {
    let name = yaml.name.map(|n| substitute(&n, envs));
    let raw_sources = match yaml.source {
        None => vec![],
        Some(StringOrList::One(s)) => vec![s],
        Some(StringOrList::Many(v)) => v,
    };
    let mut sources = Vec::new();
    for (i, raw) in raw_sources.into_iter().enumerate() {
        let text = substitute(&raw, envs);
        let source =
            match bucket_url(&text).map_err(|m| SpecError::new(format!("source[{i}]"), m))? {
                Some(url) => StorageSource::Bucket(url),
                None => StorageSource::Local(text),
            };
        sources.push(source);
    }
    if name.is_none() && sources.is_empty() {
        return Err(SpecError::new(
            "",
            "a storage mount needs a `name` (a bucket to create or use) or a `source`",
        ));
    }
    let store_text = yaml
        .store
        .map(|s| substitute(&s, envs).to_ascii_lowercase());
    let mode_text = yaml.mode.map(|m| substitute(&m, envs).to_ascii_uppercase());
    let store = match store_text.as_deref() {
        None => None,
        Some("s3") => Some(Store::S3),
        Some("gcs" | "gs") => Some(Store::Gcs),
        Some(other) => {
            let known = ["s3", "gcs", "azure", "r2", "ibm", "oci", "nebius", "volume"];
            let message = if known.contains(&other) {
                format!(
                    "'{other}' storage is not supported by Stratus; use `store: s3` or `store: gcs`"
                )
            } else {
                format!(
                    "unknown store '{other}'{}: use s3 or gcs",
                    suggest::did_you_mean(other, ["s3", "gcs"])
                )
            };
            return Err(SpecError::new("store", message));
        }
    };
    let mode = match mode_text.as_deref() {
        None | Some("MOUNT") => StorageMode::Mount,
        Some("COPY") => StorageMode::Copy,
        Some("MOUNT_CACHED") => StorageMode::MountCached,
        Some(other) => {
            return Err(SpecError::new(
                "mode",
                format!(
                    "unknown mode '{other}'{}: use MOUNT, COPY or MOUNT_CACHED",
                    suggest::did_you_mean(other, ["MOUNT", "COPY", "MOUNT_CACHED"])
                ),
            ));
        }
    };
    Ok(Storage {
        name,
        sources,
        store,
        persistent: yaml.persistent.unwrap_or(true),
        mode,
    })
}
