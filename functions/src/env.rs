//! The functions' configuration: the environment the SAM template sets (its header lists
//! every variable). Read once per cold start; a malformed value stops the cold start with the
//! variable's name and the fix, rather than running with a guess.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow, bail};
use shared::provider::Ec2Network;

/// The functions' configuration, from the environment the SAM template sets.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub table: String,
    pub bucket: String,
    pub bus: String,
    pub bus_arn: String,
    pub scheduler_role_arn: String,
    pub schedule_group: String,
    /// Name of the SSM parameter holding the API's URL (what node agents call).
    pub api_url_param: String,
    /// Secrets Manager secret holding the agent-token signing key.
    pub secret_arn: String,
    /// Principals that see and cancel everyone's jobs: IAM ARNs; a role's ARN also admits
    /// the sessions of callers who assumed it (`STRATUS_ADMIN_ROLE_ARN`, comma-separated).
    pub admins: Vec<String>,
    /// How often a busy node agent polls for work (`STRATUS_AGENT_HEARTBEAT_SECS`).
    pub agent_heartbeat_secs: Option<u64>,
    /// A running cluster silent this long is lost (`STRATUS_HEARTBEAT_TIMEOUT_SECS`).
    pub heartbeat_timeout_secs: Option<u64>,
    /// A launched cluster not ready this long is torn down (`STRATUS_READY_TIMEOUT_SECS`).
    pub ready_timeout_secs: Option<u64>,
    /// USD each user's jobs may cost a month (`STRATUS_MONTHLY_BUDGET`, stack parameter
    /// `MonthlyBudgetPerUser`; empty: no budget).
    pub monthly_budget: Option<f64>,
    /// Per region, the VPC, subnets and security groups EC2 nodes go in
    /// (`STRATUS_EC2_NETWORKS`, JSON; empty: each region's default VPC).
    pub ec2_networks: BTreeMap<String, Ec2Network>,
    /// Google Cloud, when the stack enables it (`STRATUS_GCP_PROJECT` set).
    pub gcp: Option<GcpEnv>,
    /// The role nodes reach their job's buckets with, narrowed per job
    /// (`STRATUS_NODE_DATA_ROLE_ARN`; unset: bucket mounts are refused).
    pub node_data_role_arn: Option<String>,
}

/// The `notify` function's webhook, from its own environment (the stack parameters
/// `WebhookUrl`, `WebhookNotifyOn`, `WebhookFormat`; set on that function only, so no other
/// function's configuration shows the URL): `None` without a URL.
pub fn webhook_from_env() -> anyhow::Result<Option<shared::control::webhooks::Webhook>> {
    let get = |name: &str| std::env::var(name).unwrap_or_default();
    shared::control::webhooks::from_parameters(
        &get("STRATUS_WEBHOOK_URL"),
        &get("STRATUS_WEBHOOK_NOTIFY_ON"),
        &get("STRATUS_WEBHOOK_FORMAT"),
    )
    .map_err(|e| anyhow!("{e}"))
}

/// How the functions reach Compute Engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpEnv {
    /// The project clusters launch in (`STRATUS_GCP_PROJECT`).
    pub project: String,
    pub credentials: GcpCredentialSource,
    /// The Compute API's base URL; `None` for Google's (`STRATUS_GCP_ENDPOINT`, for emulators).
    pub endpoint: Option<String>,
    /// The VPC network of the nodes (`STRATUS_GCP_NETWORK`; empty: `default`).
    pub network: Option<String>,
    /// Per region, the subnetwork of the nodes (`STRATUS_GCP_SUBNETWORKS`, JSON object).
    pub subnetworks: BTreeMap<String, String>,
    /// The service account whose downscoped tokens nodes reach their GCS buckets with
    /// (`STRATUS_GCP_NODE_DATA_SERVICE_ACCOUNT`); `None`: `gs://` mounts are refused.
    pub node_data_service_account: Option<String>,
    /// Where buckets Stratus creates on GCS live (`STRATUS_GCP_BUCKET_LOCATION`; `US`).
    pub bucket_location: String,
    /// Cloud Storage's, IAM Credentials' and STS's base URL; `None` for Google's
    /// (`STRATUS_GCP_STORAGE_ENDPOINT`, for emulators).
    pub storage_endpoint: Option<String>,
}

/// Where the Google credentials come from: never a long-lived secret in the template.
#[derive(Clone, PartialEq, Eq)]
pub enum GcpCredentialSource {
    /// A Workload Identity Federation configuration (`STRATUS_GCP_CREDENTIAL_CONFIG`, the JSON
    /// `gcloud iam workload-identity-pools create-cred-config --aws` writes): the functions'
    /// own AWS role is exchanged for short-lived Google tokens; it holds no secret.
    Federation(String),
    /// A service-account key kept in Secrets Manager (`STRATUS_GCP_KEY_SECRET_ARN`), for
    /// organisations that cannot federate.
    KeySecret(String),
}

impl std::fmt::Debug for GcpCredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The configuration holds no secret, but it is long and says nothing useful here.
            GcpCredentialSource::Federation(_) => f.write_str("Federation"),
            GcpCredentialSource::KeySecret(arn) => write!(f, "KeySecret({arn})"),
        }
    }
}

impl Env {
    /// From the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From `lookup` (a variable's value; empty counts as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let var = |name: &str| {
            get(name).ok_or_else(|| {
                anyhow!("environment variable {name} is not set (the SAM template sets it)")
            })
        };
        let secs = |name: &str| -> anyhow::Result<Option<u64>> {
            get(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| {
                            anyhow!("{name}: '{v}' is not a positive whole number of seconds")
                        })
                })
                .transpose()
        };
        let ec2_networks = match get("STRATUS_EC2_NETWORKS") {
            Some(json) => Ec2Network::parse_all(&json)
                .map_err(|e| anyhow!("STRATUS_EC2_NETWORKS (stack parameter Ec2Networks): {e}"))?,
            None => BTreeMap::new(),
        };
        Ok(Self {
            table: var("STRATUS_TABLE")?,
            bucket: var("STRATUS_BUCKET")?,
            bus: var("STRATUS_BUS")?,
            bus_arn: var("STRATUS_BUS_ARN")?,
            scheduler_role_arn: var("STRATUS_SCHEDULER_ROLE_ARN")?,
            schedule_group: get("STRATUS_SCHEDULE_GROUP").unwrap_or_else(|| "default".into()),
            api_url_param: var("STRATUS_API_URL_PARAM")?,
            secret_arn: var("STRATUS_SECRET_ARN")?,
            admins: get("STRATUS_ADMIN_ROLE_ARN")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
            agent_heartbeat_secs: secs("STRATUS_AGENT_HEARTBEAT_SECS")?,
            heartbeat_timeout_secs: secs("STRATUS_HEARTBEAT_TIMEOUT_SECS")?,
            ready_timeout_secs: secs("STRATUS_READY_TIMEOUT_SECS")?,
            monthly_budget: get("STRATUS_MONTHLY_BUDGET")
                .filter(|v| !v.trim().is_empty())
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|b| b.is_finite() && *b > 0.0)
                        .ok_or_else(|| {
                            anyhow!(
                                "STRATUS_MONTHLY_BUDGET (stack parameter MonthlyBudgetPerUser): '{v}' is not a positive number of US dollars"
                            )
                        })
                })
                .transpose()?,
            ec2_networks,
            gcp: GcpEnv::from_lookup(&get)?,
            node_data_role_arn: get("STRATUS_NODE_DATA_ROLE_ARN").filter(|a| !a.trim().is_empty()),
        })
    }
}

impl GcpEnv {
    /// `None` when `STRATUS_GCP_PROJECT` is unset (GCP not enabled).
    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let Some(project) = get("STRATUS_GCP_PROJECT") else {
            return Ok(None);
        };
        let credentials = match (
            get("STRATUS_GCP_CREDENTIAL_CONFIG"),
            get("STRATUS_GCP_KEY_SECRET_ARN"),
        ) {
            (Some(config), None) => {
                let doc: serde_json::Value = serde_json::from_str(&config)
                    .context("STRATUS_GCP_CREDENTIAL_CONFIG (stack parameter GcpCredentialConfig) is not JSON")?;
                if doc["type"] != "external_account" {
                    bail!(
                        "STRATUS_GCP_CREDENTIAL_CONFIG (stack parameter GcpCredentialConfig): \
                         expected a Workload Identity Federation configuration (\"type\": \
                         \"external_account\", from `gcloud iam workload-identity-pools \
                         create-cred-config ... --aws`), found type {}",
                        doc["type"]
                    );
                }
                GcpCredentialSource::Federation(config)
            }
            (None, Some(arn)) => GcpCredentialSource::KeySecret(arn),
            (Some(_), Some(_)) => bail!(
                "GCP: set one of GcpCredentialConfig (Workload Identity Federation) and \
                 GcpServiceAccountKeySecretArn, not both"
            ),
            (None, None) => bail!(
                "GCP project {project} is set but no credentials: set the stack parameter \
                 GcpCredentialConfig (Workload Identity Federation, preferred) or \
                 GcpServiceAccountKeySecretArn"
            ),
        };
        let subnetworks = match get("STRATUS_GCP_SUBNETWORKS") {
            Some(json) => serde_json::from_str(&json).context(
                "STRATUS_GCP_SUBNETWORKS (stack parameter GcpSubnetworks): expected a JSON \
                 object {\"<region>\": \"<subnetwork>\"}",
            )?,
            None => BTreeMap::new(),
        };
        Ok(Some(Self {
            project,
            credentials,
            endpoint: get("STRATUS_GCP_ENDPOINT"),
            network: get("STRATUS_GCP_NETWORK"),
            subnetworks,
            node_data_service_account: get("STRATUS_GCP_NODE_DATA_SERVICE_ACCOUNT"),
            bucket_location: get("STRATUS_GCP_BUCKET_LOCATION").unwrap_or_else(|| "US".into()),
            storage_endpoint: get("STRATUS_GCP_STORAGE_ENDPOINT"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BTreeMap<&'static str, &'static str> {
        [
            ("STRATUS_TABLE", "t"),
            ("STRATUS_BUCKET", "b"),
            ("STRATUS_BUS", "bus"),
            (
                "STRATUS_BUS_ARN",
                "arn:aws:events:us-east-1:1:event-bus/bus",
            ),
            ("STRATUS_SCHEDULER_ROLE_ARN", "arn:aws:iam::1:role/s"),
            ("STRATUS_API_URL_PARAM", "/stratus/s/api-url"),
            (
                "STRATUS_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:1:secret:s",
            ),
        ]
        .into_iter()
        .collect()
    }

    fn env(extra: &[(&'static str, &'static str)]) -> anyhow::Result<Env> {
        let mut vars = base();
        vars.extend(extra.iter().copied());
        Env::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned()))
    }

    fn error(extra: &[(&'static str, &'static str)]) -> String {
        format!("{:#}", env(extra).unwrap_err())
    }

    const WIF: &str = r#"{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/aws","subject_token_type":"urn:ietf:params:aws:token-type:aws4_request","token_url":"https://sts.googleapis.com/v1/token","credential_source":{"environment_id":"aws1"}}"#;

    #[test]
    fn defaults_leave_gcp_off_and_the_timeouts_to_the_control_plane() {
        let env = env(&[]).unwrap();
        assert_eq!(env.gcp, None);
        assert_eq!(env.ready_timeout_secs, None);
        assert!(env.ec2_networks.is_empty());
    }

    #[test]
    fn gcp_with_federation() {
        let env = env(&[
            ("STRATUS_GCP_PROJECT", "proj"),
            ("STRATUS_GCP_CREDENTIAL_CONFIG", WIF),
            ("STRATUS_GCP_SUBNETWORKS", r#"{"us-central1":"jobs"}"#),
        ])
        .unwrap();
        let gcp = env.gcp.unwrap();
        assert_eq!(gcp.project, "proj");
        assert!(matches!(
            gcp.credentials,
            GcpCredentialSource::Federation(_)
        ));
        assert_eq!(gcp.subnetworks["us-central1"], "jobs");
    }

    #[test]
    fn gcp_with_a_key_in_secrets_manager() {
        let env = env(&[
            ("STRATUS_GCP_PROJECT", "proj"),
            ("STRATUS_GCP_KEY_SECRET_ARN", "arn:aws:secretsmanager:x"),
        ])
        .unwrap();
        assert_eq!(
            env.gcp.unwrap().credentials,
            GcpCredentialSource::KeySecret("arn:aws:secretsmanager:x".into())
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_the_fix() {
        let cases: [(&[(&str, &str)], &str); 7] = [
            (
                &[("STRATUS_READY_TIMEOUT_SECS", "soon")],
                "STRATUS_READY_TIMEOUT_SECS",
            ),
            (
                &[("STRATUS_EC2_NETWORKS", "{\"us-east-1\":{\"vpc_id\":\"x\"}}")],
                "vpc_id",
            ),
            (&[("STRATUS_GCP_PROJECT", "p")], "GcpCredentialConfig"),
            (
                &[
                    ("STRATUS_GCP_PROJECT", "p"),
                    ("STRATUS_GCP_CREDENTIAL_CONFIG", "{"),
                ],
                "not JSON",
            ),
            (
                &[
                    ("STRATUS_GCP_PROJECT", "p"),
                    (
                        "STRATUS_GCP_CREDENTIAL_CONFIG",
                        r#"{"type":"service_account"}"#,
                    ),
                ],
                "external_account",
            ),
            (
                &[
                    ("STRATUS_GCP_PROJECT", "p"),
                    ("STRATUS_GCP_CREDENTIAL_CONFIG", WIF),
                    ("STRATUS_GCP_KEY_SECRET_ARN", "arn"),
                ],
                "not both",
            ),
            (
                &[
                    ("STRATUS_GCP_PROJECT", "p"),
                    ("STRATUS_GCP_KEY_SECRET_ARN", "arn"),
                    ("STRATUS_GCP_SUBNETWORKS", "[]"),
                ],
                "GcpSubnetworks",
            ),
        ];
        for (extra, says) in cases {
            let message = error(extra);
            assert!(message.contains(says), "{extra:?}: {message}");
        }
        assert!(error(&[("STRATUS_TABLE", " ")]).contains("STRATUS_TABLE"));
    }
}
