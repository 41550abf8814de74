//! A deployed Stratus: API Gateway with IAM auth. `stratus api login --url <ApiUrl>` points
//! the CLI at it (saved in `$STRATUS_HOME/api/remote.json`); every request is then signed with
//! SigV4 (service `execute-api`) using the caller's AWS credentials, and API Gateway hands the
//! verified caller ARN to the function, which makes it the job owner.
//!
//! Credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/
//! `AWS_SESSION_TOKEN`), else from the static keys of `AWS_PROFILE` (default `default`) in
//! `~/.aws/credentials`. For SSO or role profiles, export them first
//! (`eval "$(aws configure export-credentials --format env)"`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, anyhow};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde::{Deserialize, Serialize};

/// Where the deployed API is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    pub url: String,
    pub region: String,
}

fn path(home: &Path) -> PathBuf {
    home.join("api/remote.json")
}

/// The saved remote, if the CLI is logged in to one.
pub fn load(home: &Path) -> anyhow::Result<Option<Remote>> {
    match std::fs::read(path(home)) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).context("reading api/remote.json")?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("reading api/remote.json"),
    }
}

pub fn save(home: &Path, remote: &Remote) -> anyhow::Result<()> {
    std::fs::create_dir_all(home.join("api"))?;
    std::fs::write(path(home), serde_json::to_vec_pretty(remote)?)?;
    Ok(())
}

/// Forgets the remote: the CLI goes back to the local control plane.
pub fn forget(home: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path(home)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The region of an `https://<id>.execute-api.<region>.amazonaws.com` URL.
pub fn region_of(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
    let mut parts = host.split('.');
    let (_, service, region) = (parts.next()?, parts.next()?, parts.next()?);
    (service == "execute-api").then(|| region.to_owned())
}

/// The caller's AWS credentials (see the module docs for where they come from).
pub fn credentials() -> anyhow::Result<Credentials> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials::new(
            key,
            secret,
            env("AWS_SESSION_TOKEN"),
            None,
            "environment",
        ));
    }
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
        .ok_or_else(|| {
            anyhow!("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        })?;
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let mut inside = false;
    let (mut key, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{profile}]");
            continue;
        }
        let Some((k, v)) = line.split_once('=').filter(|_| inside) else {
            continue;
        };
        let v = Some(v.trim().to_owned());
        match k.trim() {
            "aws_access_key_id" => key = v,
            "aws_secret_access_key" => secret = v,
            "aws_session_token" => token = v,
            _ => {}
        }
    }
    match (key, secret) {
        (Some(key), Some(secret)) => Ok(Credentials::new(key, secret, token, None, "profile")),
        _ => Err(anyhow!(
            "no AWS credentials for profile '{profile}' in {}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or export a role or SSO profile's with `aws configure export-credentials --format env`",
            file.display()
        )),
    }
}

/// SigV4 headers (`authorization`, `x-amz-date`, maybe `x-amz-security-token`) for a request
/// to API Gateway (`execute-api`).
pub fn sign_headers(
    credentials: &Credentials,
    region: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> anyhow::Result<Vec<(String, String)>> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(time)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )?;
    let (instructions, _signature) = sign(request, &params)?.into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_from_an_api_gateway_url() {
        assert_eq!(
            region_of("https://abc123.execute-api.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of("http://127.0.0.1:4566"), None);
    }

    #[test]
    fn signed_headers_name_the_scope_and_change_with_the_body() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_mins(24_015_636);
        let url = "https://abc.execute-api.us-east-1.amazonaws.com/api/v1/jobs";
        let one = sign_headers(
            &creds,
            "us-east-1",
            "POST",
            url,
            &[("host", "abc.execute-api.us-east-1.amazonaws.com")],
            b"{}",
            at,
        )
        .unwrap();
        let auth = &one.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/execute-api/aws4_request"),
            "{auth}"
        );
        assert!(
            one.iter()
                .any(|(k, v)| k == "x-amz-date" && v == "20150830T123600Z"),
            "{one:?}"
        );
        let again = sign_headers(
            &creds,
            "us-east-1",
            "POST",
            url,
            &[("host", "abc.execute-api.us-east-1.amazonaws.com")],
            b"{}",
            at,
        )
        .unwrap();
        assert_eq!(one, again, "signing is deterministic");
        let other = sign_headers(
            &creds,
            "us-east-1",
            "POST",
            url,
            &[("host", "abc.execute-api.us-east-1.amazonaws.com")],
            b"{\"x\":1}",
            at,
        )
        .unwrap();
        assert_ne!(one, other, "the body is signed");
    }
}
