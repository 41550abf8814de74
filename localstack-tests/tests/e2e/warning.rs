//! Recovery on the warning: the EC2 Spot interruption warning (two minutes before the
//! reclaim) reaches the `poll` function, which requests the replacement cluster at once, while
//! the old machine still runs; the old machine's shutdown gives the job its SIGTERM.

use std::time::{Duration, Instant};

use serde_json::json;
use shared::job::JobStatus;

use crate::harness::{Options, World};

const TASK: &str = "name: warned\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\n  use_spot: true\nrun: |\n  trap 'echo \"got SIGTERM\"; exit 143' TERM\n  echo started\n  for i in $(seq 1 30); do sleep 0.5; done\n  echo finished\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_warning_requests_the_replacement_at_once_and_the_job_gets_sigterm() {
    let world = World::new(Options::default()).await;
    let id = world.submit(TASK).await;
    world
        .wait_status(id, &[JobStatus::Running], Duration::from_secs(90))
        .await;
    let deadline = Instant::now() + Duration::from_mins(1);
    while !world.logs(id).await.contains("started") {
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old = world.instances("us-east-1", id).await;
    assert_eq!(old.len(), 1);
    let instance = old[0].instance_id().unwrap().to_owned();
    let old_cluster = world.job(id).await.tasks[0].cluster.clone().unwrap();

    // EC2 puts the warning on the region's default bus two minutes ahead; the template's Ec2
    // rule delivers it to `poll` (here: the rule's queue, drained into the handler).
    let detail = json!({ "instance-id": instance, "instance-action": "terminate" });
    let warn = || {
        aws_sdk_eventbridge::Client::new(&world.sdk)
            .put_events()
            .entries(
                aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                    .source("aws.ec2")
                    .detail_type(functions::handlers::SPOT_WARNING)
                    .resources(format!(
                        "arn:aws:ec2:us-east-1:123456789012:instance/{instance}"
                    ))
                    .detail(detail.to_string())
                    .build(),
            )
            .send()
    };
    let warned = Instant::now();
    let put = warn().await.unwrap();
    assert_eq!(put.failed_entry_count(), 0, "{put:?}");
    // Acted on once the replacement's RunInstances has answered: its instance exists.
    let deadline = warned + Duration::from_secs(30);
    let replacement = loop {
        let others: Vec<_> = world
            .instances("us-east-1", id)
            .await
            .into_iter()
            .filter(|i| i.instance_id() != Some(instance.as_str()))
            .collect();
        if !others.is_empty() {
            break others;
        }
        assert!(Instant::now() < deadline, "the warning was not acted on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = warned.elapsed();
    assert_eq!(replacement.len(), 1, "one replacement");
    let new_cluster = world.job(id).await.tasks[0].cluster.clone().unwrap();
    assert_ne!(
        new_cluster, old_cluster,
        "the replacement is the task's cluster"
    );
    println!(
        "warning put on the bus → replacement instance launched: {} ms",
        elapsed.as_millis()
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "the replacement took {elapsed:?}"
    );

    // The same warning delivered again changes nothing.
    warn().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        world.job(id).await.tasks[0].cluster.as_ref(),
        Some(&new_cluster)
    );

    let (job, log) = world.wait_succeeded(id).await;
    assert_eq!(job.recoveries(), 1, "{log}");
    let output = world.logs(id).await;
    assert!(
        output.contains("got SIGTERM"),
        "the job was not told:\n{output}"
    );
    assert!(output.contains("finished"), "{output}");
}

const GCP_TASK: &str = "name: gnotice\nresources:\n  use_spot: true\n  any_of:\n    - infra: gcp\n      instance_type: e2-standard-2\n    - infra: aws\n      instance_type: m6i.large\nrun: |\n  echo \"running on $SKYPILOT_CLUSTER_INFO\"\n  sleep 2\n  echo finished\n";

/// POSTs `body` to the API at `path`; returns the status.
async fn post(world: &World, path: &str, body: String) -> u16 {
    let url = format!("{}{path}", world.api_url);
    tokio::task::spawn_blocking(move || {
        ureq::post(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .header("content-type", "application/json")
            .send(body)
            .unwrap()
            .status()
            .as_u16()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gce_preemption_pushed_through_pub_sub_recovers_the_job_at_once() {
    use base64::Engine as _;
    let world = World::new(Options {
        gce: true,
        ..Options::default()
    })
    .await;
    let fake = world.gce.clone().unwrap();
    let id = world.submit(GCP_TASK).await;
    let job = world
        .wait_status(id, &[JobStatus::Running], Duration::from_secs(90))
        .await;
    let first = job.candidates[0][job.tasks[0].candidate.unwrap()].clone();
    assert_eq!(first.cloud, shared::cloud::Cloud::Gcp);
    let old_cluster = job.tasks[0].cluster.clone().unwrap();
    // The sweep is paused: only the push can tell the control plane.
    world
        .sweeping
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // The running cluster's machine (an earlier attempt's may still be in the zone).
    let instances = fake.instances_in(&first.zone);
    let instance = instances
        .iter()
        .filter_map(|i| i["name"].as_str())
        .find(|name| name.starts_with(&format!("{old_cluster}-")))
        .unwrap_or_else(|| panic!("no instance of {old_cluster} in {instances:?}"))
        .to_owned();
    fake.preempt(&first.zone, &instance);

    // What a log sink → Pub/Sub topic → push subscription delivers.
    let entry = json!({
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "methodName": "compute.instances.preempted",
            "resourceName": format!("projects/stratus-e2e/zones/{}/instances/{instance}", first.zone),
            "serviceName": "compute.googleapis.com",
        },
        "resource": { "type": "gce_instance", "labels": { "zone": first.zone } },
    });
    let data = base64::engine::general_purpose::STANDARD.encode(entry.to_string());
    let push = json!({ "message": { "data": data, "messageId": "1" }, "subscription": "projects/stratus-e2e/subscriptions/stratus-preemptions" }).to_string();
    let path = "/hooks/v1/gcp/preemptions";
    assert_eq!(
        post(&world, &format!("{path}?token=wrong"), push.clone()).await,
        401
    );
    assert_eq!(post(&world, path, "{}".into()).await, 401, "no token");
    let token = world.ctx.settings.secret.hook_token("gcp-preemptions");
    assert_eq!(
        post(&world, &format!("{path}?token={token}"), "not json".into()).await,
        400
    );
    assert_ne!(world.job(id).await.tasks[0].cluster.as_ref(), None);
    let pushed = Instant::now();
    assert_eq!(
        post(&world, &format!("{path}?token={token}"), push.clone()).await,
        204
    );
    let elapsed = pushed.elapsed();
    let job = world.job(id).await;
    assert_ne!(
        job.tasks[0].cluster.as_ref(),
        Some(&old_cluster),
        "the replacement is under way:\n{}",
        world.controller_log(id).await
    );
    println!(
        "GCE preemption push → replacement requested: {} ms",
        elapsed.as_millis()
    );
    // Pub/Sub delivers at least once: again changes nothing.
    let replacement = job.tasks[0].cluster.clone();
    assert_eq!(
        post(&world, &format!("{path}?token={token}"), push).await,
        204
    );
    assert_eq!(world.job(id).await.tasks[0].cluster, replacement);

    world
        .sweeping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (job, log) = world.wait_succeeded(id).await;
    assert_eq!(job.recoveries(), 1, "{log}");
    assert!(log.contains("was preempted"), "{log}");
}
