//! A world for one test: its own emulator (moto, started here), the Stratus stack created in it
//! (table, bucket, bus with a rule to a queue, schedule group, secret, API URL parameter), the
//! real function handlers and the shared API router, and the harness playing what the emulator
//! cannot: EventBridge delivering to Lambda (a queue drained into the handlers), the schedule
//! (a poll every second), API Gateway (the router on a local port) and the machines (a real
//! node agent per emulated instance, started with the environment of its user data and killed
//! when the instance is terminated).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use serde_json::{Value, json};
use shared::api::{Authenticator, User};
use shared::blob::LocalBlobStore;
use shared::blob::S3BlobStore;
use shared::bus::LocalBus;
use shared::control::Context;
use shared::control::run_local_loops;
use shared::job::{JobId, JobRecord, JobStatus};
use shared::provider::{
    Ec2Provider, Ec2Settings, Provider, agent_env_from_startup_script, agent_env_from_user_data,
    decode_user_data,
};
use shared::store::{DynamoStore, SqliteStore};

use crate::fake::FakeCompute;
use crate::fake::storage::FakeStorage;

/// The AWS regions of the embedded catalog (every candidate lives in one of them).
pub const REGIONS: [&str; 5] = [
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
];

static WORLDS: AtomicU32 = AtomicU32::new(0);

/// How often the emulated machines' agents talk to the control plane: the cloud cadence's
/// shape (waiting polls back off to a heartbeat, output batched unless followed) at a test's
/// pace.
pub const CADENCE: shared::agent_protocol::AgentCadence = shared::agent_protocol::AgentCadence {
    poll_ms: 200,
    heartbeat_ms: 1_000,
    log_flush_ms: 2_000,
    log_live_ms: 200,
    log_chunk_bytes: 256 * 1024,
};

/// Every request is one user's (API Gateway's IAM check is what the harness plays).
struct Tester;

impl Authenticator for Tester {
    fn user(&self, _: &axum::http::HeaderMap) -> Option<User> {
        Some(User {
            name: OWNER.into(),
            admin: false,
        })
    }
}

pub const OWNER: &str = "arn:aws:iam::123456789012:user/tester";

/// An emulator of our own, so that worlds never see each other's instances.
struct Emulator {
    child: Child,
    url: String,
    /// One given by `STRATUS_E2E_ENDPOINT` (LocalStack), shared by the tests.
    shared: bool,
    /// It is LocalStack (it answers `/_localstack/health`): its scheduled rules fire.
    localstack: bool,
}

impl Emulator {
    fn start() -> Self {
        if let Ok(url) = std::env::var("STRATUS_E2E_ENDPOINT") {
            // A shared emulator (e.g. LocalStack): the tests then run one at a time.
            let localstack = ureq::get(format!("{}/_localstack/health", url.trim_end_matches('/')))
                .call()
                .is_ok();
            return Self {
                child: Command::new("true").spawn().unwrap(),
                url,
                shared: true,
                localstack,
            };
        }
        let server = std::env::var("STRATUS_MOTO_SERVER").unwrap_or_else(|_| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/moto-server");
            root.to_string_lossy().into_owned()
        });
        assert!(
            std::path::Path::new(&server).exists(),
            "no moto server at {server}: run the tests with scripts/test (it installs moto), or set STRATUS_MOTO_SERVER"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {server}: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            url,
            shared: false,
            localstack: false,
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running agents, by instance id.
type Machines = Arc<Mutex<HashMap<String, Child>>>;

pub struct World {
    pub ctx: Context,
    /// What a metered world counted (see [`Options::metered`]).
    pub metered: Option<Metered>,
    /// The schedule sweeps while this holds (a test may pause it to watch the nodes alone).
    pub sweeping: Arc<std::sync::atomic::AtomicBool>,
    /// The `detail-type` of every event the emulator's rules delivered that a handler took.
    pub delivered: Arc<Mutex<Vec<String>>>,
    /// The fake Compute API, when the options asked for GCP.
    pub gce: Option<Arc<FakeCompute>>,
    /// The fake Google STS (and AWS metadata service) GCP credentials come from.
    pub identity: Option<crate::fake::identity::FakeIdentity>,
    /// The fake Cloud Storage (with IAM Credentials and STS downscoping), when the options
    /// asked for GCP.
    pub gcs: Option<Arc<FakeStorage>>,
    /// The fault-injecting proxy EC2 calls go through, when the options asked for one.
    pub proxy: Option<crate::proxy::Proxy>,
    pub sdk: SdkConfig,
    pub env: functions::Env,
    /// Where the API (API Gateway's stand-in) listens.
    pub api_url: String,
    machines: Machines,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _nodes: tempfile::TempDir,
    emulator: Emulator,
}

/// What can be changed about a world.
#[derive(Default)]
pub struct Options {
    /// Send EC2 calls through a proxy that injects this fault.
    pub ec2_fault: Option<crate::proxy::Fault>,
    /// Also launch on GCP, against a fake Compute API (validating every request against
    /// Google's discovery document).
    pub gce: bool,
    /// Regions whose machines run but never start their agent (a broken image, no route to
    /// the API): their clusters never report.
    pub silent_regions: Vec<&'static str>,
    /// Also create the template's `rate(1 minute)` poll rule (see `schedule`).
    pub poll_rule: bool,
    /// The control plane's ready timeout (`STRATUS_READY_TIMEOUT_SECS`).
    pub ready_timeout_secs: Option<u64>,
    /// Run the local control plane's stack (SQLite, a blob folder, the in-process bus and its
    /// loops) instead of the AWS one, with the same emulated clouds.
    pub local_plane: bool,
    /// Count what the stack costs: every AWS request (the handlers' and the nodes' presigned
    /// uploads) goes through a recording proxy, the ports are wrapped in the metering
    /// adapters the `node_cost` bench uses, and the API counts its requests per route.
    pub metered: bool,
    /// The stack's webhook (the `WebhookUrl`, `WebhookNotifyOn`, `WebhookFormat` parameters):
    /// job status events on the bus go to the `notify` handler.
    pub webhook: Option<shared::control::webhooks::Webhook>,
}

/// What a metered world counted.
pub struct Metered {
    /// Every AWS request on the wire.
    pub wire: crate::proxy::Proxy,
    /// What the metering adapters counted for the same traffic.
    pub meter: Arc<shared::metering::Meter>,
    /// Every API request: method and path.
    pub routes: Arc<Mutex<Vec<(String, String)>>>,
}

async fn sdk(endpoint: &str) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "e2e",
        ))
        .load()
        .await
}

impl World {
    // The whole stack, step by step, as the template would create it.
    #[allow(clippy::too_many_lines)]
    pub async fn new(options: Options) -> Self {
        let mut emulator = Emulator::start();
        // LocalStack (a shared emulator) cannot run DynamoDB offline: a proxy in front of it
        // sends DynamoDB's requests to the moto at AWS_ENDPOINT_URL_DYNAMODB, and everything
        // else (functions, machines, the CLI) talks to that proxy as the one AWS endpoint.
        if let (true, Ok(dynamodb)) = (emulator.shared, std::env::var("AWS_ENDPOINT_URL_DYNAMODB"))
        {
            emulator.url = crate::proxy::start_routed(&emulator.url, None, Some(&dynamodb))
                .await
                .url;
        }
        let wire = if options.metered {
            Some(crate::proxy::start(&emulator.url, None).await)
        } else {
            None
        };
        let sdk = sdk(wire.as_ref().map_or(&emulator.url, |w| &w.url)).await;
        let n = WORLDS.fetch_add(1, Ordering::SeqCst);
        let name = format!("stratus-e2e-{}-{n}", std::process::id());

        DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &name)
            .create_table()
            .await
            .unwrap();
        if emulator.shared {
            // A test may have taken a region's default VPC away (placement): put it back.
            for region in REGIONS {
                let ec2 = ec2_client(&sdk, region);
                let has_default = ec2
                    .describe_vpcs()
                    .filters(filter("is-default", "true"))
                    .send()
                    .await
                    .is_ok_and(|out| !out.vpcs().is_empty());
                if !has_default {
                    ec2.create_default_vpc().send().await.unwrap();
                }
            }
            // One emulator for every world: job ids (and so cluster names and tags) must not
            // repeat from one world to the next, or a world would count another's machines.
            let base = u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap()
                * 1_000;
            aws_sdk_dynamodb::Client::new(&sdk)
                .put_item()
                .table_name(&name)
                .item(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S("COUNTER".into()),
                )
                .item(
                    "sk",
                    aws_sdk_dynamodb::types::AttributeValue::S("JOB_ID".into()),
                )
                .item(
                    "value",
                    aws_sdk_dynamodb::types::AttributeValue::N(base.to_string()),
                )
                .send()
                .await
                .unwrap();
        }
        let blobs = S3BlobStore::from_sdk_config(&sdk, &name, "").unwrap();
        blobs.create_bucket_if_missing().await.unwrap();

        let events = aws_sdk_eventbridge::Client::new(&sdk);
        let bus_arn = events
            .create_event_bus()
            .name(&name)
            .send()
            .await
            .unwrap()
            .event_bus_arn
            .unwrap();
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let (queue_url, queue_arn) = queue(&sqs, &name).await;
        // The stack's rules, delivering to the queue the harness drains into the handlers: job
        // events on the Stratus bus, and the template's Ec2 rule on the default bus.
        let ec2_pattern = json!({
            "source": ["aws.ec2"],
            "detail-type": [
                "EC2 Instance State-change Notification",
                "EC2 Spot Instance Interruption Warning"
            ]
        });
        // And, when asked for, the template's poll schedule, rate(1 minute) on the default bus
        // (LocalStack fires it; moto never does, and matches it against every event on the bus,
        // so other tests leave it out and the harness's own tick stands in for it).
        for (rule, bus, pattern) in [
            (
                name.clone(),
                name.as_str(),
                Some(json!({ "source": ["stratus"] })),
            ),
            (format!("{name}-ec2"), "default", Some(ec2_pattern)),
        ]
        .into_iter()
        .chain(
            options
                .poll_rule
                .then(|| (format!("{name}-poll"), "default", None)),
        ) {
            let put = events.put_rule().name(&rule).event_bus_name(bus);
            let put = match pattern {
                Some(pattern) => put.event_pattern(pattern.to_string()),
                None => put.schedule_expression("rate(1 minute)"),
            };
            put.send().await.unwrap();
            target_queue(&events, &rule, bus, "queue", &queue_arn).await;
        }
        aws_sdk_scheduler::Client::new(&sdk)
            .create_schedule_group()
            .name(&name)
            .send()
            .await
            .unwrap();
        let secret_arn = aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name(&name)
            .secret_string(format!("signing-key-{name}"))
            .send()
            .await
            .unwrap()
            .arn
            .unwrap();

        // API Gateway: the shared router on a local port; its URL goes where agents look.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        let param = format!("/stratus/{name}/api-url");
        aws_sdk_ssm::Client::new(&sdk)
            .put_parameter()
            .name(&param)
            .value(&api_url)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send()
            .await
            .unwrap();

        // GCP as a deployed stack enables it: a project and a Workload Identity Federation
        // configuration in the functions' environment; the fake Compute API takes only the
        // tokens the fake Google STS issued for the functions' AWS role.
        // The fake Cloud Storage takes the same tokens for bucket administration, and the
        // node data service account's downscoped ones for objects.
        let (gce, identity, gcs) = if options.gce {
            let fake = Arc::new(FakeCompute::start(&FakeCompute::discovery_path()).await);
            let identity = crate::fake::identity::FakeIdentity::start().await;
            fake.require_token(&identity.token);
            let gcs = Arc::new(FakeStorage::start().await);
            gcs.require_admin_token(&identity.token);
            (Some(fake), Some(identity), Some(gcs))
        } else {
            (None, None, None)
        };
        let env = functions::Env {
            table: name.clone(),
            bucket: name.clone(),
            bus: name.clone(),
            bus_arn,
            scheduler_role_arn: "arn:aws:iam::123456789012:role/stratus-scheduler".into(),
            schedule_group: name.clone(),
            api_url_param: param,
            secret_arn,
            ready_timeout_secs: options.ready_timeout_secs,
            node_data_role_arn: Some("arn:aws:iam::123456789012:role/stratus-node-data".into()),
            gcp: gce
                .as_ref()
                .zip(identity.as_ref())
                .map(|(fake, identity)| functions::GcpEnv {
                    project: FakeStorage::PROJECT.into(),
                    credentials: functions::GcpCredentialSource::Federation(
                        identity.credential_config().to_string(),
                    ),
                    endpoint: Some(fake.url.clone()),
                    network: None,
                    subnetworks: std::collections::BTreeMap::new(),
                    node_data_service_account: Some(FakeStorage::NODE_SERVICE_ACCOUNT.into()),
                    bucket_location: "US".into(),
                    storage_endpoint: gcs.as_ref().map(|g| g.url.clone()),
                }),
            ..functions::Env::default()
        };
        let mut ctx = functions::context_from(&env, &sdk, functions::Function::Recover)
            .await
            .unwrap();
        // The cloud cadence, sped up: the nodes get it through their boot scripts.
        ctx.settings.agent_cadence = CADENCE;
        let mut proxy = None;
        if let Some(fault) = options.ec2_fault {
            let started = crate::proxy::start(&emulator.url, Some(fault)).await;
            let ec2: Arc<dyn Provider> = Arc::new(Ec2Provider::new(
                &sdk.to_builder().endpoint_url(&started.url).build(),
                Ec2Settings::new(),
            ));
            ctx.providers.insert(shared::cloud::Cloud::Aws, ec2);
            proxy = Some(started);
        }

        if options.gce {
            assert!(
                ctx.providers.contains_key(&shared::cloud::Cloud::Gcp),
                "GCP is not enabled: {:?}",
                ctx.settings.cloud_notes
            );
        }
        // STRATUS_E2E_KEEP_NODES=1 keeps the machines' folders (agent logs) after the test.
        let keep = std::env::var_os("STRATUS_E2E_KEEP_NODES").is_some();
        let nodes = tempfile::Builder::new()
            .prefix("stratus-e2e-nodes-")
            .disable_cleanup(keep)
            .tempdir()
            .unwrap();
        let mut tasks = Vec::new();
        let sweeping = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        if options.local_plane {
            // The local control plane's stack: a SQLite state table, a folder of blobs, the
            // in-process bus and its loops; the clouds stay the emulated ones.
            let home = nodes.path().join("stratus-home");
            ctx.store = Arc::new(SqliteStore::open(home.join("state.db")).await.unwrap());
            ctx.blobs = Arc::new(LocalBlobStore::new(home.join("blobs")));
            ctx.settings.local_buckets = Some(home.join("buckets"));
            let (bus, messages) = LocalBus::new();
            ctx.bus = Arc::new(bus);
            run_local_loops(&ctx, messages, Duration::from_millis(500));
        } else {
            tasks.push(tokio::spawn(dispatch(
                ctx.clone(),
                sqs,
                queue_url,
                delivered.clone(),
                options.webhook.clone(),
            )));
            tasks.push(tokio::spawn(schedule(ctx.clone(), sweeping.clone())));
            tasks.push(tokio::spawn(fire_schedules(
                sdk.clone(),
                env.schedule_group.clone(),
            )));
        }
        let metered = wire.map(|wire| Metered {
            wire,
            meter: Arc::new(shared::metering::Meter::new()),
            routes: Arc::default(),
        });
        if let Some(metered) = &metered {
            use shared::metering::counting as c;
            let meter = metered.meter.clone();
            ctx.store = Arc::new(c::CountingStore {
                inner: ctx.store.clone(),
                meter: meter.clone(),
            });
            ctx.blobs = Arc::new(c::CountingBlobs {
                inner: ctx.blobs.clone(),
                meter: meter.clone(),
                presign: false,
            });
            ctx.bus = Arc::new(c::CountingBus {
                inner: ctx.bus.clone(),
                meter: meter.clone(),
            });
            for provider in ctx.providers.values_mut() {
                *provider = Arc::new(c::CountingProvider {
                    inner: provider.clone(),
                    meter: meter.clone(),
                });
            }
        }
        let mut router = shared::api::router(ctx.clone(), Arc::new(Tester));
        if let Some(metered) = &metered {
            let requests = metered.routes.clone();
            router = router.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    requests.lock().unwrap().push((
                        request.method().to_string(),
                        request.uri().path().to_owned(),
                    ));
                    next.run(request)
                },
            ));
        }
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        let machines: Machines = Arc::default();
        tasks.push(tokio::spawn(boot_machines(
            sdk.clone(),
            machines.clone(),
            nodes.path().to_path_buf(),
            options.silent_regions.clone(),
            api_url.clone(),
        )));
        if let Some(fake) = gce.clone() {
            tasks.push(tokio::spawn(boot_gce_machines(
                fake,
                machines.clone(),
                nodes.path().to_path_buf(),
            )));
        }
        Self {
            ctx,
            metered,
            sweeping,
            delivered,
            gce,
            identity,
            gcs,
            proxy,
            sdk,
            env,
            api_url,
            machines,
            tasks,
            _nodes: nodes,
            emulator,
        }
    }

    /// Whether the emulator is LocalStack (shared by the tests), not this world's own moto.
    pub fn on_localstack(&self) -> bool {
        self.emulator.localstack
    }

    /// The emulator's URL (for a proxy in front of it).
    pub fn endpoint(&self) -> &str {
        &self.emulator.url
    }

    /// Submits `yaml` the way the CLI does: `POST /api/v1/jobs` (what API Gateway routes to
    /// the `submit` function).
    pub async fn submit(&self, yaml: &str) -> JobId {
        self.submit_request(json!({ "yaml": yaml })).await
    }

    /// Submits a whole request body (`yaml`, `uploads`, ...); returns the job's id.
    pub async fn submit_request(&self, body: Value) -> JobId {
        let (status, text) = self.post_job(body).await;
        assert!((200..300).contains(&status), "submit: {status} {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        answer["id"]
            .as_u64()
            .or_else(|| answer["job_id"].as_u64())
            .unwrap_or_else(|| panic!("no job id in {answer}"))
    }

    /// `POST /api/v1/jobs` with `body`, whatever the answer: its status and text.
    pub async fn post_job(&self, body: Value) -> (u16, String) {
        let url = format!("{}/api/v1/jobs", self.api_url);
        tokio::task::spawn_blocking(move || {
            let mut response = ureq::post(&url)
                .config()
                .http_status_as_error(false)
                .build()
                .header("content-type", "application/json")
                .send(body.to_string())
                .unwrap();
            let status = response.status().as_u16();
            (status, response.body_mut().read_to_string().unwrap())
        })
        .await
        .unwrap()
    }

    /// Deletes `region`'s default VPC (and its subnets), as some accounts have none.
    pub async fn delete_default_vpc(&self, region: &str) {
        let ec2 = ec2_client(&self.sdk, region);
        let vpcs = ec2
            .describe_vpcs()
            .filters(filter("is-default", "true"))
            .send()
            .await
            .unwrap();
        for vpc in vpcs.vpcs().iter().filter_map(|v| v.vpc_id()) {
            let subnets = ec2
                .describe_subnets()
                .filters(filter("vpc-id", vpc))
                .send()
                .await
                .unwrap();
            for subnet in subnets.subnets().iter().filter_map(|s| s.subnet_id()) {
                ec2.delete_subnet().subnet_id(subnet).send().await.unwrap();
            }
            ec2.delete_vpc().vpc_id(vpc).send().await.unwrap();
        }
    }

    pub async fn job(&self, id: JobId) -> JobRecord {
        self.ctx.store.get_job(id).await.unwrap()
    }

    /// Waits up to two minutes for the job to end, checks that it SUCCEEDED (else fails with
    /// its controller log), and returns it with that log.
    pub async fn wait_succeeded(&self, id: JobId) -> (JobRecord, String) {
        let ended = [
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::FailedSetup,
            JobStatus::FailedPrechecks,
            JobStatus::FailedNoResource,
            JobStatus::FailedController,
            JobStatus::Cancelled,
        ];
        let job = self.wait_status(id, &ended, Duration::from_mins(2)).await;
        // The step's log lines are appended just after the record is written (ARCHITECTURE,
        // `advance`): give the last ones a moment to land before the log is read.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut log = self.controller_log(id).await;
        while job.status() == JobStatus::Succeeded
            && !log.contains("Job succeeded.")
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            log = self.controller_log(id).await;
        }
        assert_eq!(job.status(), JobStatus::Succeeded, "{log}");
        (job, log)
    }

    /// Waits until the job's status is one of `wanted`.
    pub async fn wait_status(
        &self,
        id: JobId,
        wanted: &[JobStatus],
        timeout: Duration,
    ) -> JobRecord {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id).await;
            if wanted.contains(&job.status()) {
                return job;
            }
            if Instant::now() > deadline {
                let events = self.ctx.store.list_events(id).await.unwrap();
                let log: Vec<String> = events
                    .iter()
                    .map(|e| format!("{} {}", e.status, e.message))
                    .collect();
                panic!(
                    "job {id} is {} after {timeout:?}, not {wanted:?}:\n{}",
                    job.status(),
                    log.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The job's instances in `region`, any state.
    pub async fn instances(&self, region: &str, job: JobId) -> Vec<aws_sdk_ec2::types::Instance> {
        let ec2 = ec2_client(&self.sdk, region);
        let out = ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:stratus-job-id")
                    .values(job.to_string())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances().to_vec())
            .collect()
    }

    /// The job's instances in every region, any state.
    pub async fn all_instances(&self, job: JobId) -> Vec<(String, aws_sdk_ec2::types::Instance)> {
        let mut all = Vec::new();
        for region in REGIONS {
            for i in self.instances(region, job).await {
                all.push((region.to_owned(), i));
            }
        }
        all
    }

    /// The job's user log.
    pub async fn logs(&self, id: JobId) -> String {
        let pieces =
            shared::control::logs::read_all(self.ctx.store.as_ref(), self.ctx.blobs.as_ref(), id)
                .await
                .unwrap();
        pieces.iter().map(|p| p.data.as_str()).collect()
    }

    pub async fn controller_log(&self, id: JobId) -> String {
        let events = self.ctx.store.list_events(id).await.unwrap();
        events.iter().fold(String::new(), |mut log, e| {
            let _ = writeln!(log, "{} {}", e.status, e.message);
            log
        })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for (_, mut child) in self.machines.lock().unwrap().drain() {
            kill_group(&child);
            let _ = child.wait();
        }
    }
}

fn filter(name: &str, value: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .values(value)
        .build()
}

pub fn ec2_client(sdk: &SdkConfig, region: &str) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(sdk)
            .region(aws_sdk_ec2::config::Region::new(region.to_owned()))
            .build(),
    )
}

/// Sends what rule `rule` of `bus` matches to the queue `queue_arn` (target `id`).
pub async fn target_queue(
    events: &aws_sdk_eventbridge::Client,
    rule: &str,
    bus: &str,
    id: &str,
    queue_arn: &str,
) {
    events
        .put_targets()
        .rule(rule)
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id(id)
                .arn(queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// A new SQS queue `name`: its URL and ARN.
pub async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> (String, String) {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    (url, arn)
}

/// EventBridge → Lambda: drains the rule's queue into the `recover` and `cleanup` handlers,
/// and (with a webhook) `notify`, which runs on a task of its own, as Lambda would run it
/// beside the others: a webhook's retries hold up no job.
async fn dispatch(
    ctx: Context,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    delivered: Arc<Mutex<Vec<String>>>,
    webhook: Option<shared::control::webhooks::Webhook>,
) {
    let sender: Arc<dyn shared::control::webhooks::WebhookSender> =
        Arc::new(shared::control::webhooks::UreqSender::new());
    loop {
        let Ok(out) = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for message in out.messages() {
            let event: Value =
                serde_json::from_str(message.body().unwrap_or("{}")).unwrap_or_default();
            let result = match event["detail-type"].as_str() {
                Some(shared::bus::eventbridge::JOB_EVENT_DETAIL_TYPE) => {
                    functions::on_job_event(&ctx, event.clone()).await
                }
                Some(shared::bus::eventbridge::JOB_ENDED_DETAIL_TYPE) => {
                    functions::on_job_ended(&ctx, event.clone()).await
                }
                // The template's notify rule: job-scope status events, with a webhook only.
                Some(shared::bus::eventbridge::JOB_STATUS_DETAIL_TYPE)
                    if webhook.is_some() && event["detail"]["scope"] == "job" =>
                {
                    let (ctx, hook, sender) = (ctx.clone(), webhook.clone(), sender.clone());
                    let event = event.clone();
                    tokio::spawn(async move {
                        if let Err(e) =
                            functions::on_job_status(&ctx, event, hook.as_ref(), sender.as_ref())
                                .await
                        {
                            eprintln!("notify failed: {e:#}");
                        }
                    });
                    Ok(Value::Null)
                }
                // EC2's events, and the poll schedule's ticks.
                _ if event["source"] == "aws.ec2" || event["source"] == "aws.events" => {
                    functions::on_poll(&ctx, event.clone()).await
                }
                _ => Ok(Value::Null),
            };
            match result {
                Ok(_) => delivered
                    .lock()
                    .unwrap()
                    .push(event["detail-type"].as_str().unwrap_or_default().to_owned()),
                Err(e) => eprintln!("handler failed on {event}: {e:#}"),
            }
            if let Some(handle) = message.receipt_handle() {
                let _ = sqs
                    .delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await;
            }
        }
    }
}

/// The `rate(1 minute)` rule, once a second (while `sweeping` holds).
async fn schedule(ctx: Context, sweeping: Arc<std::sync::atomic::AtomicBool>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !sweeping.load(Ordering::SeqCst) {
            continue;
        }
        let event =
            json!({ "source": "aws.events", "detail-type": "Scheduled Event", "detail": {} });
        if let Err(e) = functions::on_poll(&ctx, event).await {
            eprintln!("poll failed: {e:#}");
        }
    }
}

/// EventBridge Scheduler's part, which the emulators keep but never run: once a second, each
/// one-time schedule of the world's group whose `at(...)` time has come is fired as the
/// Scheduler would (its target's input put on the target bus with the target's source and
/// detail-type), then deleted (`ActionAfterCompletion: DELETE`). A schedule is never fired
/// before its expression's time, so a test sees the real (minute-rounded) delay.
async fn fire_schedules(sdk: SdkConfig, group: String) {
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(listed) = scheduler.list_schedules().group_name(&group).send().await else {
            continue;
        };
        for summary in listed.schedules() {
            let Some(name) = summary.name() else { continue };
            let Ok(schedule) = scheduler
                .get_schedule()
                .group_name(&group)
                .name(name)
                .send()
                .await
            else {
                continue;
            };
            let due = schedule
                .schedule_expression()
                .and_then(|e| e.strip_prefix("at(")?.strip_suffix(')'))
                .and_then(|at| at.parse::<jiff::civil::DateTime>().ok())
                .and_then(|at| at.to_zoned(jiff::tz::TimeZone::UTC).ok())
                .is_some_and(|at| at.timestamp() <= jiff::Timestamp::now());
            let Some(target) = schedule.target().filter(|_| due) else {
                continue;
            };
            let bridge = target.event_bridge_parameters();
            let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name(target.arn())
                .source(
                    bridge
                        .map(aws_sdk_scheduler::types::EventBridgeParameters::source)
                        .unwrap_or_default(),
                )
                .detail_type(
                    bridge
                        .map(aws_sdk_scheduler::types::EventBridgeParameters::detail_type)
                        .unwrap_or_default(),
                )
                .detail(target.input().unwrap_or("{}"))
                .build();
            if let Err(e) = events.put_events().entries(entry).send().await {
                eprintln!("firing schedule {name} failed: {e:?}");
                continue;
            }
            let _ = scheduler
                .delete_schedule()
                .group_name(&group)
                .name(name)
                .send()
                .await;
        }
    }
}

/// The machines: a real agent per running instance, shut down when the instance is gone.
async fn boot_machines(
    sdk: SdkConfig,
    machines: Machines,
    nodes: PathBuf,
    silent: Vec<&'static str>,
    api_url: String,
) {
    let agent = env!("CARGO_BIN_EXE_e2e-agent");
    loop {
        for region in REGIONS.into_iter().filter(|r| !silent.contains(r)) {
            let ec2 = ec2_client(&sdk, region);
            let Ok(out) = ec2
                .describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag-key")
                        .values("stratus-cluster")
                        .build(),
                )
                .send()
                .await
            else {
                continue;
            };
            for instance in out
                .reservations()
                .iter()
                .flat_map(aws_sdk_ec2::types::Reservation::instances)
            {
                let id = instance.instance_id().unwrap_or_default().to_owned();
                let running = instance.state().and_then(|s| s.name())
                    == Some(&aws_sdk_ec2::types::InstanceStateName::Running);
                let known = machines.lock().unwrap().contains_key(&id);
                if running && !known {
                    let Ok(attribute) = ec2
                        .describe_instance_attribute()
                        .instance_id(&id)
                        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let script = attribute
                        .user_data()
                        .and_then(|u| u.value())
                        .and_then(decode_user_data)
                        .unwrap_or_default();
                    let mut env = agent_env_from_user_data(&script);
                    // On a shared emulator, other worlds' machines are not this world's.
                    if env.get(shared::agent_protocol::env::API_URL) != Some(&api_url) {
                        continue;
                    }
                    // The machines are processes of the test: no task user to switch to.
                    env.remove(shared::agent_protocol::env::TASK_USER);
                    let dir = nodes.join(&id);
                    std::fs::create_dir_all(&dir).unwrap();
                    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
                    let mut command = Command::new(agent);
                    command
                        .envs(&env)
                        .env(
                            "STRATUS_NODE_RANK",
                            instance.ami_launch_index().unwrap_or(0).to_string(),
                        )
                        .env("STRATUS_NODE_DIR", &dir)
                        .stdin(Stdio::null())
                        .stdout(log.try_clone().unwrap())
                        .stderr(log);
                    std::os::unix::process::CommandExt::process_group(&mut command, 0);
                    if let Ok(child) = command.spawn() {
                        machines.lock().unwrap().insert(id, child);
                    }
                } else if !running
                    && known
                    && let Some(child) = machines.lock().unwrap().remove(&id)
                {
                    shut_down(child);
                }
            }
        }
        // Agents that ended on their own (told to stop) are gone too.
        machines
            .lock()
            .unwrap()
            .retain(|_, child| matches!(child.try_wait(), Ok(None)));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Starts the agent of a machine with the environment its boot script would set.
fn start_agent(
    machines: &Machines,
    id: String,
    env: &std::collections::BTreeMap<String, String>,
    rank: &str,
    dir: &std::path::Path,
) {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_e2e-agent"));
    command
        .envs(env)
        .env("STRATUS_NODE_RANK", rank)
        .env("STRATUS_NODE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    if let Ok(child) = command.spawn() {
        machines.lock().unwrap().insert(id, child);
    }
}

/// The GCE machines: an agent per RUNNING fake instance, from its startup script.
async fn boot_gce_machines(fake: Arc<FakeCompute>, machines: Machines, nodes: PathBuf) {
    loop {
        let instances = fake.instances();
        let mut running = std::collections::BTreeSet::new();
        for instance in &instances {
            let name = instance["name"].as_str().unwrap_or_default();
            let id = format!("gce:{name}");
            if instance["status"] != "RUNNING" {
                continue;
            }
            running.insert(id.clone());
            if machines.lock().unwrap().contains_key(&id) {
                continue;
            }
            let script = instance["metadata"]["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|item| item["key"] == "startup-script")
                .and_then(|item| item["value"].as_str())
                .unwrap_or_default();
            let mut env = agent_env_from_startup_script(script);
            env.remove(shared::agent_protocol::env::TASK_USER);
            let rank = instance["labels"]["stratus-rank"]
                .as_str()
                .unwrap_or("0")
                .to_owned();
            start_agent(&machines, id.clone(), &env, &rank, &nodes.join(name));
        }
        // A preempted or deleted instance takes its agent with it.
        let gone: Vec<String> = machines
            .lock()
            .unwrap()
            .keys()
            .filter(|id| id.starts_with("gce:") && !running.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(child) = machines.lock().unwrap().remove(&id) {
                shut_down(child);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// How long a machine going away gives its processes between SIGTERM and the end (EC2 and
/// GCE shut the OS down; systemd gives services 90 s, shortened here).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A machine shutting down: its agent gets SIGTERM (and passes it on to the job), and whatever
/// is left of the machine's processes is killed after [`SHUTDOWN_GRACE`].
fn shut_down(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    std::thread::spawn(move || {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        kill_group(&child);
        let _ = child.wait();
    });
}

fn kill_group(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
