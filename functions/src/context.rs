//! The handlers' context, built once per cold start: the state table, the bucket, the bus,
//! the signing key, and a provider for every cloud the stack enables — EC2 always (the
//! functions' own role), Compute Engine when the stack names a GCP project and a credential
//! path. A GCP set-up that cannot work disables GCP with the reason (`stratus check` shows
//! it) instead of stopping the functions that serve AWS jobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use sha2::{Digest as _, Sha256};
use shared::agent_protocol::AgentCadence;
use shared::blob::S3BlobStore;
use shared::buckets::{BucketStores, Buckets, GcsBuckets, GcsSettings, S3Buckets};
use shared::bus::eventbridge::{EventBridgeBus, EventBridgeConfig};
use shared::catalog::Catalog;
use shared::clock::{Clock, SystemClock};
use shared::cloud::Cloud;
use shared::control::{self, AgentBinary, Context, SigningKey};
use shared::provider::{
    Ec2Provider, Ec2Settings, GceConnection, GceCredentials, GceProvider, GceSettings, Provider,
};
use shared::store::DynamoStore;
use tracing::{info, warn};

use crate::env::{Env, GcpCredentialSource, GcpEnv};

/// Which function a context is for: each reads only what its role may (least privilege).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Api,
    Submit,
    Poll,
    Recover,
    Cleanup,
    Notify,
}

impl Function {
    /// Whether it launches clusters or answers node agents, and so needs the API's URL and
    /// the agent-token signing key.
    fn launches(self) -> bool {
        matches!(self, Function::Api | Function::Poll | Function::Recover)
    }
}

/// Builds the handlers' context from the Lambda's own AWS configuration.
pub async fn context(env: &Env, function: Function) -> anyhow::Result<Context> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    context_from(env, &config, function).await
}

/// [`context`] with a given SDK configuration (tests point it at their own emulator).
pub async fn context_from(
    env: &Env,
    config: &aws_config::SdkConfig,
    function: Function,
) -> anyhow::Result<Context> {
    let (api_url, secret) = if function.launches() {
        launch_settings(env, config).await?
    } else {
        // Submit and cleanup never launch nor answer agents; their roles cannot read these.
        (String::new(), String::new())
    };
    let blobs = S3BlobStore::from_sdk_config(config, &env.bucket, "")?;
    let mut providers: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
    let mut notes = BTreeMap::new();
    let settings = Ec2Settings {
        networks: env.ec2_networks.clone(),
        ..Ec2Settings::new()
    };
    providers.insert(Cloud::Aws, Arc::new(Ec2Provider::new(config, settings)));
    notes.insert(
        Cloud::Aws,
        format!(
            "the stack's own role, from {}",
            config.region().map_or("its region", |r| r.as_ref())
        ),
    );
    let mut buckets = BucketStores {
        // Without a node data role, nodes could not be given credentials: S3 mounts are
        // refused at submit, saying so.
        s3: env.node_data_role_arn.as_ref().map(|role| {
            Arc::new(S3Buckets::from_sdk_config(config, role, &env.bucket)) as Arc<dyn Buckets>
        }),
        gcs: None,
    };
    // `notify` only posts to a webhook and writes log lines: it needs no cloud but its table
    // (its role cannot read a GCP key).
    match env.gcp.as_ref().filter(|_| function != Function::Notify) {
        None => {
            notes.insert(
                Cloud::Gcp,
                "not enabled for this stack: deploy with GcpProject and GcpCredentialConfig \
                 (infra/README.md, \"Enable GCP\")"
                    .to_owned(),
            );
        }
        Some(gcp) => match gce_provider(gcp, config).await {
            Ok((provider, credentials, how)) => {
                providers.insert(Cloud::Gcp, Arc::new(provider));
                notes.insert(Cloud::Gcp, format!("project {}, {how}", gcp.project));
                buckets.gcs = gcs_buckets(gcp, credentials);
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "GCP is configured but cannot be used; it is disabled");
                notes.insert(Cloud::Gcp, format!("disabled: {e:#}"));
            }
        },
    }
    let enabled_clouds: Vec<Cloud> = providers.keys().copied().collect();
    info!(table = %env.table, bucket = %env.bucket, bus = %env.bus, api_url = %api_url, clouds = ?enabled_clouds, "context ready");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(Context {
        store: Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(config),
            &env.table,
        )),
        providers,
        blobs: Arc::new(blobs),
        bus: Arc::new(EventBridgeBus::from_sdk_config(
            config,
            EventBridgeConfig::new(&env.bus, &env.bus_arn, &env.scheduler_role_arn)
                .with_schedule_group(&env.schedule_group),
        )),
        clock,
        catalog: Arc::new(Catalog::embedded()),
        buckets,
        settings: control::Settings {
            agent_api_url: api_url.trim_end_matches('/').to_owned(),
            secret: SigningKey::new(secret.into_bytes()),
            enabled_clouds,
            heartbeat_timeout: Duration::from_secs(env.heartbeat_timeout_secs.unwrap_or(180)),
            ready_timeout: env
                .ready_timeout_secs
                .map_or(control::DEFAULT_READY_TIMEOUT, Duration::from_secs),
            local_buckets: None,
            // Lambda has no uptime to wait out: a cold start is not a control plane that was
            // down, and the agents' heartbeats are kept in the table.
            started_at: shared::clock::Timestamp::EPOCH,
            agent_cadence: cadence(env),
            // Booting machines fetch it through the API, which redirects to a URL signed at
            // that moment: no URL baked into a boot script can expire first.
            agent_binary: if function == Function::Api {
                Some(own_agent_binary()?)
            } else {
                None
            },
            cloud_notes: notes,
            monthly_budget: env.monthly_budget,
        },
    })
}

/// Users' GCS buckets, when the stack names a node data service account (else `gs://`
/// mounts are refused at submit, saying what to deploy).
fn gcs_buckets(gcp: &GcpEnv, credentials: GceCredentials) -> Option<Arc<dyn Buckets>> {
    let account = gcp.node_data_service_account.clone()?;
    let settings = GcsSettings {
        project: gcp.project.clone(),
        location: gcp.bucket_location.clone(),
        node_service_account: account,
        endpoint: gcp.storage_endpoint.clone(),
        credentials,
    };
    match GcsBuckets::new(settings) {
        Ok(buckets) => Some(Arc::new(buckets)),
        Err(e) => {
            warn!(error = %e, "GCS buckets cannot be used; gs:// mounts are refused");
            None
        }
    }
}

/// The Compute Engine provider, the credentials it uses and how it authenticates.
async fn gce_provider(
    gcp: &GcpEnv,
    config: &aws_config::SdkConfig,
) -> anyhow::Result<(GceProvider, GceCredentials, &'static str)> {
    let (credentials, how) = match &gcp.credentials {
        GcpCredentialSource::Federation(doc) => (
            GceCredentials::Json(serde_json::from_str(doc)?),
            "Workload Identity Federation from the functions' AWS role",
        ),
        GcpCredentialSource::KeySecret(arn) => {
            let key = aws_sdk_secretsmanager::Client::new(config)
                .get_secret_value()
                .secret_id(arn)
                .send()
                .await
                .with_context(|| format!("reading the service-account key secret {arn}"))?
                .secret_string
                .ok_or_else(|| anyhow!("secret {arn} has no string value"))?;
            let doc = serde_json::from_str(&key)
                .with_context(|| format!("secret {arn} is not a service-account key (JSON)"))?;
            (
                GceCredentials::Json(doc),
                "a service-account key from Secrets Manager",
            )
        }
    };
    let connection = GceConnection {
        endpoint: gcp.endpoint.clone(),
        credentials: credentials.clone(),
        ..GceConnection::google()
    };
    let mut settings = GceSettings::new();
    if let Some(network) = &gcp.network {
        settings.network.clone_from(network);
    }
    settings.subnetworks.clone_from(&gcp.subnetworks);
    let provider = GceProvider::new(&gcp.project, settings, connection).await?;
    Ok((provider, credentials, how))
}

/// The `api` binary is also the node agent (see `bin/api.rs`): machines get this very
/// executable, published under a key named for its contents, so every deployment serves its
/// own agent and nothing is uploaded by hand.
fn own_agent_binary() -> anyhow::Result<AgentBinary> {
    let exe = std::env::current_exe().context("finding the function's own executable")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    Ok(AgentBinary {
        key: format!("{AGENT_PREFIX}stratus-agent-{}", &digest[..16]),
        source: Some(exe),
    })
}

/// Where agent binaries are kept in the bucket (the template lets the functions write there).
pub const AGENT_PREFIX: &str = "agent/";

/// The cloud cadence, with the heartbeat the template sets (`AgentHeartbeatSecs`).
fn cadence(env: &Env) -> AgentCadence {
    let mut cadence = AgentCadence::CLOUD;
    if let Some(secs) = env.agent_heartbeat_secs {
        cadence.heartbeat_ms = secs * 1000;
    }
    cadence
}

/// The API's URL (for node agents) and the agent-token signing key.
async fn launch_settings(
    env: &Env,
    config: &aws_config::SdkConfig,
) -> anyhow::Result<(String, String)> {
    let api_url = aws_sdk_ssm::Client::new(config)
        .get_parameter()
        .name(&env.api_url_param)
        .send()
        .await
        .with_context(|| {
            format!(
                "reading the API URL from SSM parameter {}",
                env.api_url_param
            )
        })?
        .parameter
        .and_then(|p| p.value)
        .ok_or_else(|| anyhow!("SSM parameter {} has no value", env.api_url_param))?;
    let secret = aws_sdk_secretsmanager::Client::new(config)
        .get_secret_value()
        .secret_id(&env.secret_arn)
        .send()
        .await
        .with_context(|| format!("reading the signing secret {}", env.secret_arn))?
        .secret_string
        .ok_or_else(|| anyhow!("secret {} has no string value", env.secret_arn))?;
    Ok((api_url, secret))
}
