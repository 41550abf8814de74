//! Which clouds are enabled: credentials found through each cloud's usual chain, as `sky check`
//! reports them. Detection only reads the environment and files; it calls no cloud API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cloud::Cloud;

/// The process environment and home folder, passed in so tests can build one.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub vars: HashMap<String, String>,
    pub home: Option<PathBuf>,
}

impl Environment {
    /// This process's environment (variables that are not UTF-8 are left out: none of the
    /// credential chains' variables are such).
    pub fn current() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn home_file(&self, relative: &str) -> Option<PathBuf> {
        self.home
            .as_ref()
            .map(|h| h.join(relative))
            .filter(|p| p.is_file())
    }
}

/// Whether a cloud can be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudStatus {
    pub cloud: Cloud,
    pub enabled: bool,
    /// Where the credentials come from, or what to do to enable the cloud.
    pub detail: String,
}

/// The status of every cloud, in `Cloud::ALL` order.
pub fn check(env: &Environment) -> Vec<CloudStatus> {
    Cloud::ALL
        .into_iter()
        .map(|cloud| {
            let found = match cloud {
                Cloud::Aws => aws(env),
                Cloud::Gcp => gcp(env),
                Cloud::Local => Ok("nodes run as processes on this machine".to_owned()),
            };
            match found {
                Ok(detail) => CloudStatus {
                    cloud,
                    enabled: true,
                    detail,
                },
                Err(detail) => CloudStatus {
                    cloud,
                    enabled: false,
                    detail,
                },
            }
        })
        .collect()
}

/// The clouds `check` finds enabled.
pub fn enabled_clouds(env: &Environment) -> Vec<Cloud> {
    check(env)
        .into_iter()
        .filter(|s| s.enabled)
        .map(|s| s.cloud)
        .collect()
}

fn aws(env: &Environment) -> Result<String, String> {
    if env.var("AWS_ACCESS_KEY_ID").is_some() && env.var("AWS_SECRET_ACCESS_KEY").is_some() {
        return Ok("environment variables (AWS_ACCESS_KEY_ID)".into());
    }
    if let Some(file) = env.var("AWS_WEB_IDENTITY_TOKEN_FILE") {
        return Ok(format!("web identity token ({file})"));
    }
    if env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
    {
        return Ok("container credentials".into());
    }
    let profile = env.var("AWS_PROFILE").unwrap_or("default");
    let files = [
        env.var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| env.home_file(".aws/credentials")),
        env.var("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| env.home_file(".aws/config")),
    ];
    for file in files.into_iter().flatten() {
        if has_profile(&file, profile) {
            return Ok(format!("profile '{profile}' in {}", file.display()));
        }
    }
    Err("no credentials found: run `aws configure` (or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)".into())
}

/// Whether an AWS INI file has `[profile]` / `[profile name]` with some credential setting.
fn has_profile(path: &Path, profile: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let headers = [format!("[{profile}]"), format!("[profile {profile}]")];
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = headers.iter().any(|h| h == line);
        } else if inside && line.contains('=') {
            return true;
        }
    }
    false
}

fn gcp(env: &Environment) -> Result<String, String> {
    if let Some(path) = env.var("GOOGLE_APPLICATION_CREDENTIALS") {
        return if Path::new(path).is_file() {
            Ok(format!("GOOGLE_APPLICATION_CREDENTIALS ({path})"))
        } else {
            Err(format!(
                "GOOGLE_APPLICATION_CREDENTIALS points to {path}, which does not exist"
            ))
        };
    }
    let adc = match env.var("CLOUDSDK_CONFIG") {
        Some(dir) => Some(Path::new(dir).join("application_default_credentials.json"))
            .filter(|p| p.is_file()),
        None => env.home_file(".config/gcloud/application_default_credentials.json"),
    };
    match adc {
        Some(path) => Ok(format!("application default credentials ({})", path.display())),
        None => Err("no credentials found: run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)], home: Option<&Path>) -> Environment {
        Environment {
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            home: home.map(Path::to_path_buf),
        }
    }

    #[test]
    fn nothing_found_enables_only_local() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(
            enabled_clouds(&env(&[], Some(home.path()))),
            vec![Cloud::Local]
        );
    }

    #[test]
    fn aws_from_env_or_profile_and_gcp_from_adc() {
        let home = tempfile::tempdir().unwrap();
        let e = env(
            &[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")],
            Some(home.path()),
        );
        assert_eq!(enabled_clouds(&e), vec![Cloud::Aws, Cloud::Local]);

        std::fs::create_dir_all(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            "[work]\naws_access_key_id = x\n",
        )
        .unwrap();
        assert_eq!(
            enabled_clouds(&env(&[], Some(home.path()))),
            vec![Cloud::Local]
        );
        assert_eq!(
            enabled_clouds(&env(&[("AWS_PROFILE", "work")], Some(home.path()))),
            vec![Cloud::Aws, Cloud::Local]
        );

        std::fs::create_dir_all(home.path().join(".config/gcloud")).unwrap();
        std::fs::write(
            home.path()
                .join(".config/gcloud/application_default_credentials.json"),
            "{}",
        )
        .unwrap();
        assert_eq!(
            enabled_clouds(&env(&[], Some(home.path()))),
            vec![Cloud::Gcp, Cloud::Local]
        );
    }

    #[test]
    fn a_missing_key_file_says_so() {
        let statuses = check(&env(
            &[("GOOGLE_APPLICATION_CREDENTIALS", "/nope.json")],
            None,
        ));
        let gcp = statuses.iter().find(|s| s.cloud == Cloud::Gcp).unwrap();
        assert!(!gcp.enabled);
        assert!(gcp.detail.contains("/nope.json"), "{}", gcp.detail);
    }
}
