//! Which Google Cloud project to use when none is configured: the usual places, as the gcloud
//! CLI and Google's client libraries look. Reads the environment and files only.

use std::path::{Path, PathBuf};

use crate::credentials::Environment;

/// Variables naming the project, in the order Google's tools read them.
const PROJECT_VARS: [&str; 3] = [
    "GOOGLE_CLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "GCLOUD_PROJECT",
];

/// The project and where it came from, first found:
/// 1. `GOOGLE_CLOUD_PROJECT`, `CLOUDSDK_CORE_PROJECT`, `GCLOUD_PROJECT`;
/// 2. the credentials file (`GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's application
///    default credentials): a service account key's `project_id`, or `quota_project_id`;
/// 3. gcloud's active configuration (`[core] project` in
///    `<config>/configurations/config_<active>`; `<config>` is `CLOUDSDK_CONFIG` or
///    `~/.config/gcloud`).
///
/// (`config.yaml`'s `gcp.project`, when the caller has one, comes before all of these.)
pub fn discover_project(env: &Environment) -> Option<(String, String)> {
    let var = |name: &str| {
        env.vars
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    for name in PROJECT_VARS {
        if let Some(project) = var(name) {
            return Some((project, name.to_owned()));
        }
    }
    let config_dir = var("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| env.home.as_ref().map(|h| h.join(".config/gcloud")));
    let credentials = var("GOOGLE_APPLICATION_CREDENTIALS")
        .map(PathBuf::from)
        .or_else(|| {
            config_dir
                .as_ref()
                .map(|d| d.join("application_default_credentials.json"))
        });
    if let Some(path) = credentials
        && let Some(project) = project_of_credentials(&path)
    {
        return Some((project, path.display().to_string()));
    }
    let dir = config_dir?;
    let active = std::fs::read_to_string(dir.join("active_config"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let path = dir.join("configurations").join(format!("config_{active}"));
    let text = std::fs::read_to_string(&path).ok()?;
    ini_value(&text, "core", "project").map(|p| (p, path.display().to_string()))
}

fn project_of_credentials(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    ["project_id", "quota_project_id"]
        .iter()
        .find_map(|k| json.get(k).and_then(|v| v.as_str()))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

/// `key` of `[section]` in an INI text.
fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let header = format!("[{section}]");
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            let v = v.trim();
            return (!v.is_empty()).then(|| v.to_owned());
        }
    }
    None
}
