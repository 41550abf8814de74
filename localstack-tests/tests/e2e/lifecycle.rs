//! Jobs on EC2 through the real handlers: the whole life of a job, preemption, capacity
//! failover and throttling, duplicate and reordered events, and the real function binaries.

use std::time::Duration;

use serde_json::json;
use shared::job::JobStatus;

use shared::provider::Provider as _;

use crate::harness::{Options, World, ec2_client};
use crate::lambda;
use crate::proxy::{self, Fault};

const LONG: Duration = Duration::from_secs(90);
pub const ENDED: [JobStatus; 5] = [
    JobStatus::Succeeded,
    JobStatus::Failed,
    JobStatus::FailedSetup,
    JobStatus::FailedPrechecks,
    JobStatus::Cancelled,
];

fn tag<'a>(instance: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn terminated(instance: &aws_sdk_ec2::types::Instance) -> bool {
    instance.state().and_then(|s| s.name())
        == Some(&aws_sdk_ec2::types::InstanceStateName::Terminated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_job_runs_on_ec2_and_cleanup_leaves_nothing() {
    let world = World::new(Options::default()).await;
    let id = world
        .submit("name: hello\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\n  use_spot: true\nrun: echo hello from ec2\n")
        .await;
    let job = world.wait_status(id, &ENDED, LONG).await;
    assert_eq!(
        job.status(),
        JobStatus::Succeeded,
        "{}",
        world.controller_log(id).await
    );
    assert!(world.logs(id).await.contains("hello from ec2"));

    let instances = world.instances("us-east-1", id).await;
    assert_eq!(instances.len(), 1, "one node, one instance");
    let instance = &instances[0];
    assert_eq!(
        instance
            .instance_type()
            .map(aws_sdk_ec2::types::InstanceType::as_str),
        Some("m6i.large")
    );
    assert_eq!(
        instance
            .instance_lifecycle()
            .map(aws_sdk_ec2::types::InstanceLifecycleType::as_str),
        Some("spot")
    );
    assert_eq!(
        tag(instance, "stratus-job-id"),
        Some(id.to_string().as_str())
    );
    assert_eq!(
        tag(instance, "stratus-cluster"),
        Some(format!("hello-{id}-1").as_str())
    );
    assert_eq!(tag(instance, "stratus-owner"), Some(crate::harness::OWNER));
    let user_data = ec2_client(&world.sdk, "us-east-1")
        .describe_instance_attribute()
        .instance_id(instance.instance_id().unwrap())
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let script =
        shared::provider::decode_user_data(user_data.user_data().unwrap().value().unwrap())
            .unwrap();
    assert!(
        script.contains("STRATUS_AGENT_TOKEN")
            && script.contains(&format!("STRATUS_CLUSTER='hello-{id}-1'")),
        "{script}"
    );

    // Cleanup: no instance left running, no intermediate object left; the logs stay.
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let left = world
            .all_instances(id)
            .await
            .into_iter()
            .filter(|(_, i)| !terminated(i))
            .count();
        let facts = world
            .ctx
            .blobs
            .list(&format!("jobs/{id}/nodes/"))
            .await
            .unwrap();
        if left == 0 && facts.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} instances and {} node files left",
            facts.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        world.controller_log(id).await.contains("Cleanup"),
        "{}",
        world.controller_log(id).await
    );
    assert!(world.logs(id).await.contains("hello from ec2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_job_recovers_in_another_region() {
    let world = World::new(Options::default()).await;
    let id = world
        .submit("name: spot\nresources:\n  infra: aws\n  instance_type: m6i.large\n  use_spot: true\nrun: |\n  echo started\n  sleep 3\n  echo finished\n")
        .await;
    let job = world.wait_status(id, &[JobStatus::Running], LONG).await;
    let first = job.candidates[0][job.tasks[0].candidate.unwrap()].clone();
    let instances = world.instances(&first.region, id).await;
    assert_eq!(instances.len(), 1);
    // AWS reclaims the instance, and EventBridge delivers the state change to `poll`.
    let ec2 = ec2_client(&world.sdk, &first.region);
    ec2.terminate_instances()
        .instance_ids(instances[0].instance_id().unwrap())
        .send()
        .await
        .unwrap();
    let state_change = json!({
        "version": "0", "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
        "region": first.region,
        "detail": { "instance-id": instances[0].instance_id().unwrap(), "state": "terminated" }
    });
    functions::on_poll(&world.ctx, state_change).await.unwrap();

    let job = world.wait_status(id, &ENDED, LONG).await;
    assert_eq!(
        job.status(),
        JobStatus::Succeeded,
        "{}",
        world.controller_log(id).await
    );
    assert_eq!(job.recoveries(), 1);
    let second = job.candidates[0][job.tasks[0].candidate.unwrap()].clone();
    assert_ne!(
        second.region, first.region,
        "EAGER_NEXT_REGION moves to another region"
    );
    assert_eq!(world.instances(&second.region, id).await.len(), 1);
    let log = world.controller_log(id).await;
    assert!(log.contains("RECOVERING"), "{log}");
    assert!(world.logs(id).await.contains("finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_capacity_in_one_region_moves_to_the_next_candidate() {
    const TASK: &str = "name: moves\nresources:\n  infra: aws\n  instance_type: m6i.large\n  use_spot: true\nrun: echo moved\n";
    // No capacity where the cheapest candidate is.
    let task = &shared::spec::load(TASK, &shared::spec::Overrides::default())
        .unwrap()
        .pipeline
        .tasks[0];
    let plan = shared::optimizer::plan_task(
        &shared::catalog::Catalog::embedded(),
        task,
        &[shared::cloud::Cloud::Aws],
    );
    let cheapest = plan.ranked[0].region.clone();
    let world = World::new(Options {
        ec2_fault: Some(Fault {
            region: cheapest.clone(),
            status: 500,
            code: "InsufficientInstanceCapacity",
            times: usize::MAX,
        }),
        ..Options::default()
    })
    .await;
    let id = world.submit(TASK).await;
    let job = world.wait_status(id, &ENDED, LONG).await;
    assert_eq!(
        job.status(),
        JobStatus::Succeeded,
        "{}",
        world.controller_log(id).await
    );
    assert_eq!(job.candidates[0][0].region, cheapest);
    let used = job.candidates[0][job.tasks[0].candidate.unwrap()].clone();
    assert_ne!(used.region, cheapest);
    assert!(
        world.proxy.as_ref().unwrap().failed() >= 1,
        "the injected error was hit"
    );
    assert!(
        world.instances(&cheapest, id).await.is_empty(),
        "nothing launched where capacity failed"
    );
    let log = world.controller_log(id).await;
    assert!(log.contains("no capacity"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_launches_back_off_and_never_double() {
    let world = World::new(Options::default()).await;
    let proxy = proxy::start(
        world.endpoint(),
        Some(Fault {
            region: "us-east-1".into(),
            status: 503,
            code: "RequestLimitExceeded",
            times: 2,
        }),
    )
    .await;
    let provider = shared::provider::Ec2Provider::new(
        &world.sdk.to_builder().endpoint_url(&proxy.url).build(),
        shared::provider::Ec2Settings::new(),
    );
    // An id of this world's (a shared emulator has seen other worlds' jobs).
    let job_id = world.ctx.store.next_job_id().await.unwrap();
    let spec = shared::provider::ClusterSpec {
        job_id,
        task: 0,
        cluster: format!("throttled-{job_id}-1"),
        owner: "tester".into(),
        candidate: serde_json::from_value(json!({
            "cloud": "aws", "region": "us-east-1", "zone": "us-east-1a", "instance_type": "m6i.large",
            "vcpus": 2.0, "memory_gb": 8.0, "accelerator": null, "use_spot": false,
            "hourly_price": 0.096, "num_nodes": 2, "alternative": 0
        }))
        .unwrap(),
        num_nodes: 2,
        agent: shared::provider::AgentBoot {
            api_url: "http://127.0.0.1:1".into(),
            token: "t".into(),
            cadence: shared::agent_protocol::AgentCadence::CLOUD,
        },
        labels: std::collections::BTreeMap::default(),
        image_id: None,
        disk_size_gb: None,
    };
    let nodes = provider
        .launch(&spec)
        .await
        .expect("the SDK's retries ride out two throttles");
    assert_eq!(nodes.len(), 2);
    assert_eq!(proxy.failed(), 2);
    // A retried launch (a redelivered event) finds the cluster: still two instances.
    provider.launch(&spec).await.unwrap();
    assert_eq!(world.instances("us-east-1", job_id).await.len(), 2);
    assert_eq!(proxy.launches(), 1, "one RunInstances reached EC2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_reordered_events_make_one_cluster() {
    let world = World::new(Options::default()).await;
    let id = world
        .submit("name: dup\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: |\n  sleep 1\n  echo once\n")
        .await;
    let submitted = json!({
        "version": "0", "id": "dup-1", "source": "stratus", "detail-type": "stratus.job-event",
        "detail": { "job_id": id, "event": { "type": "submitted" } }
    });
    // The same event, twice more, at once: at-least-once delivery.
    let (a, b) = tokio::join!(
        functions::on_job_event(&world.ctx, submitted.clone()),
        functions::on_job_event(&world.ctx, submitted.clone())
    );
    a.unwrap();
    b.unwrap();
    // An event about a cluster that was never this job's arrives out of order.
    let stray = json!({
        "version": "0", "id": "dup-2", "source": "stratus", "detail-type": "stratus.job-event",
        "detail": { "job_id": id, "event": { "type": "task_exited", "cluster": "dup-1-9", "phase": "run", "codes": [1] } }
    });
    functions::on_job_event(&world.ctx, stray).await.unwrap();
    let job = world.wait_status(id, &ENDED, LONG).await;
    assert_eq!(
        job.status(),
        JobStatus::Succeeded,
        "{}",
        world.controller_log(id).await
    );
    assert_eq!(job.tasks[0].attempt, 1, "one launch");
    assert_eq!(
        world.all_instances(id).await.len(),
        1,
        "one cluster of one node"
    );
    // Redelivered after the end: nothing moves, nothing launches.
    functions::on_job_event(&world.ctx, submitted)
        .await
        .unwrap();
    assert_eq!(world.all_instances(id).await.len(), 1);
    assert_eq!(world.job(id).await.status(), JobStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_function_binaries_answer_through_the_lambda_runtime_api() {
    let world = World::new(Options::default()).await;
    let env = &world.env;
    let vars: Vec<(String, String)> = [
        ("STRATUS_TABLE", env.table.clone()),
        ("STRATUS_BUCKET", env.bucket.clone()),
        ("STRATUS_BUS", env.bus.clone()),
        ("STRATUS_BUS_ARN", env.bus_arn.clone()),
        ("STRATUS_SCHEDULER_ROLE_ARN", env.scheduler_role_arn.clone()),
        ("STRATUS_SCHEDULE_GROUP", env.schedule_group.clone()),
        ("STRATUS_API_URL_PARAM", env.api_url_param.clone()),
        ("STRATUS_SECRET_ARN", env.secret_arn.clone()),
        ("AWS_ENDPOINT_URL", world.endpoint().to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    // `submit` as API Gateway invokes it for `POST /api/v1/jobs`, with the caller it verified.
    let caller = "arn:aws:sts::123456789012:assumed-role/Researcher/alice";
    let body = json!({ "yaml": "name: binaries\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: echo via lambda\n" });
    let answer = lambda::invoke(
        "submit",
        &vars,
        http_event("POST", "/api/v1/jobs", caller, &body),
    )
    .await
    .expect("submit answers");
    assert_eq!(answer["statusCode"], 201, "{answer}");
    let view: serde_json::Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    let id = view["id"].as_u64().unwrap();
    assert_eq!(
        world.job(id).await.owner,
        caller,
        "the owner is the verified caller"
    );
    // A body that is not a task is the caller's error, and stores nothing.
    let answer = lambda::invoke(
        "submit",
        &vars,
        http_event("POST", "/api/v1/jobs", caller, &json!({ "yaml": "run: [" })),
    )
    .await
    .expect("submit answers");
    assert_eq!(answer["statusCode"], 400, "{answer}");

    let answer = lambda::invoke(
        "poll",
        &vars,
        json!({ "version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {} }),
    )
    .await
    .expect("poll answers");
    assert!(answer["active_jobs"].is_u64(), "{answer}");

    let answer = lambda::invoke(
        "recover",
        &vars,
        json!({ "version": "0", "id": "x", "source": "stratus", "detail-type": "stratus.job-event",
                "detail": { "job_id": id, "event": { "type": "submitted" } } }),
    )
    .await
    .expect("recover answers");
    assert_eq!(answer["job_id"], id);
    let job = world.wait_status(id, &ENDED, LONG).await;
    assert_eq!(
        job.status(),
        JobStatus::Succeeded,
        "{}",
        world.controller_log(id).await
    );

    the_api_function_serves_itself_as_the_agent(&world, &vars, id).await;

    let answer = lambda::invoke(
        "cleanup",
        &vars,
        json!({ "version": "0", "id": "y", "source": "stratus", "detail-type": "stratus.job-ended",
                "detail": { "job_id": id } }),
    )
    .await
    .expect("cleanup answers");
    assert_eq!(answer["job_id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_workdir_goes_through_s3_by_presigned_urls_to_two_nodes_and_is_deleted_at_the_end()
{
    let world = World::new(Options::default()).await;
    // What `stratus jobs launch` does with a workdir: pack it, ask where to put it, put it.
    // 50 MB that do not compress: far over a Lambda response's 6 MB.
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let data = b"rows from the workdir\n";
    for (name, bytes) in [("data.txt", data.to_vec()), ("big.bin", noise(50 << 20))] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, &bytes[..]).unwrap();
    }
    let archive = builder.into_inner().unwrap().finish().unwrap();
    assert!(archive.len() > 50 << 20, "{} bytes", archive.len());
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&archive));
    let api = world.api_url.clone();
    let (key, url) = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut answer = agent
            .post(format!(
                "{api}/api/v1/uploads/url?session=e2e-session&sha256={sha}"
            ))
            .send(&b"{}"[..])
            .unwrap();
        let target: serde_json::Value =
            serde_json::from_slice(&answer.body_mut().read_to_vec().unwrap()).unwrap();
        let url = target["url"]
            .as_str()
            .expect("S3 hands out upload URLs")
            .to_owned();
        // The URL signs the archive's checksum: the PUT repeats the signed headers.
        let headers = target["headers"].as_array().unwrap();
        assert!(
            headers.iter().any(|h| h[0]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("x-amz-checksum-sha256")),
            "{target}"
        );
        let mut put = agent.put(&url);
        for header in headers {
            put = put.header(header[0].as_str().unwrap(), header[1].as_str().unwrap());
        }
        let put = put.send(&archive[..]).unwrap();
        assert!(put.status().is_success(), "presigned PUT: {}", put.status());
        (target["key"].as_str().unwrap().to_owned(), url)
    })
    .await
    .unwrap();
    assert!(url.contains("X-Amz-Signature"), "{url}");
    assert!(
        world.ctx.blobs.get(&key).await.unwrap().is_some(),
        "the archive is in the bucket"
    );

    let id = world
        .submit_request(json!({
            "yaml": "name: wd\nworkdir: ./project\nnum_nodes: 2\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: cat data.txt; wc -c < big.bin\n",
            "uploads": { "./project": key }
        }))
        .await;
    assert_archive_comes_from_s3(&world, id, &key).await;
    let job = world.wait_status(id, &ENDED, LONG).await;
    assert_eq!(
        job.status(),
        JobStatus::Succeeded,
        "{}",
        world.controller_log(id).await
    );
    let logs = world.logs(id).await;
    assert_eq!(
        logs.matches("rows from the workdir").count(),
        2,
        "both nodes unpacked it: {logs}"
    );
    assert_eq!(
        logs.matches(&(50u64 << 20).to_string()).count(),
        2,
        "both nodes have all 50 MB: {logs}"
    );
    // The cleanup deletes the upload.
    let deadline = std::time::Instant::now() + LONG;
    while world.ctx.blobs.get(&key).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A booting machine asks the api function for the agent: the function publishes its own
/// executable (which is also the agent) and redirects to a URL of it signed now.
async fn the_api_function_serves_itself_as_the_agent(
    world: &World,
    vars: &[(String, String)],
    id: u64,
) {
    let mut event = http_event(
        "GET",
        &format!("/agent/v1/jobs/{id}/agent"),
        "arn:aws:iam::123456789012:user/machine-has-no-iam",
        &serde_json::Value::Null,
    );
    event["headers"]["authorization"] = json!(format!(
        "Bearer {}",
        world.ctx.settings.secret.agent_token(id)
    ));
    let answer = lambda::invoke("api", vars, event)
        .await
        .expect("api answers");
    assert_eq!(answer["statusCode"], 307, "{answer}");
    let location = answer["headers"]["location"].as_str().unwrap().to_owned();
    let binary = tokio::task::spawn_blocking(move || {
        ureq::get(&location)
            .call()
            .unwrap()
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        binary == std::fs::read(lambda::function_binary("api")).unwrap(),
        "machines get the api function's own executable"
    );
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("stratus-agent");
    std::fs::write(&agent, &binary).unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&agent)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the agent refuses a missing configuration"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with("stratus-agent: ") && said.contains("STRATUS_"),
        "{said}"
    );
}

/// An API Gateway HTTP API (payload 2.0) event with IAM auth, as the `api` and `submit`
/// functions receive it.
fn http_event(
    method: &str,
    path: &str,
    caller: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": { "content-type": "application/json", "host": "api.example" },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example",
            "domainPrefix": "api",
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1",
                      "sourceIp": "127.0.0.1", "userAgent": "stratus" },
            "requestId": "request-1",
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "03/Dec/2026:00:00:00 +0000",
            "timeEpoch": 0,
            "authorizer": { "iam": {
                "accessKey": "ASIAEXAMPLE", "accountId": "123456789012", "callerId": "AROAEXAMPLE:alice",
                "principalOrgId": null, "userArn": caller, "userId": "AROAEXAMPLE:alice"
            } }
        },
        "body": body.to_string(),
        "isBase64Encoded": false
    })
}

/// `len` bytes that do not compress (xorshift), so an archive of them is as large as they are.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A node's download of an archive is a redirect to S3, never the archive through the api
/// function.
async fn assert_archive_comes_from_s3(world: &World, id: u64, key: &str) {
    let api = world.api_url.clone();
    let token = world.ctx.settings.secret.agent_token(id);
    let blob = format!("{api}/agent/v1/jobs/{id}/blobs/{key}");
    let redirect = tokio::task::spawn_blocking(move || {
        let response = ureq::get(&blob)
            .header("authorization", format!("Bearer {token}"))
            .config()
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        (
            response.status().as_u16(),
            response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned()),
        )
    })
    .await
    .unwrap();
    assert_eq!(redirect.0, 307, "{redirect:?}");
    assert!(
        redirect.1.is_some_and(|l| l.contains("X-Amz-Signature")),
        "a URL signed for S3"
    );
}
