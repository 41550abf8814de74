//! The cloud cadence on the emulator: what a running node's requests are on the wire (the
//! very counts the `node_cost` bench prices, through the same metering adapters), and what
//! stays prompt while the nodes talk seldom (a cancel ends the machines at once).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shared::job::{JobEvent, JobStatus, Phase};
use shared::metering::Usage;

use crate::harness::{Options, World};
use crate::proxy::Call;

const LONG: Duration = Duration::from_secs(90);

fn work_poll(method: &str, path: &str) -> bool {
    method == "GET" && path.ends_with("/work")
}

/// What the wire, the API and the meter saw in four seconds with the sweep paused.
async fn quiet_window(world: &World) -> (Vec<Call>, Vec<(String, String)>, Usage) {
    let metered = world.metered.as_ref().unwrap();
    world.sweeping.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (calls, routes, usage) = (
        metered.wire.calls().len(),
        metered.routes.lock().unwrap().len(),
        metered.meter.usage(),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let window = metered.wire.calls()[calls..].to_vec();
    let window_routes = metered.routes.lock().unwrap()[routes..].to_vec();
    let counted = metered.meter.usage() - usage;
    world.sweeping.store(true, Ordering::SeqCst);
    (window, window_routes, counted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_costs_on_the_wire_what_the_meter_counts() {
    let world = World::new(Options {
        metered: true,
        ..Options::default()
    })
    .await;
    let metered = world.metered.as_ref().unwrap();
    // Two full chunks of output (256 KiB each) at once, then a quiet run.
    let id = world
        .submit("name: quiet\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: |\n  head -c 524288 /dev/zero | tr '\\0' x\n  sleep 15\n")
        .await;
    world.wait_status(id, &[JobStatus::Running], LONG).await;
    let logs_prefix = format!("/{}/jobs/{id}/logs/", world.env.bucket);
    let log_puts = |calls: &[Call]| -> Vec<Call> {
        calls
            .iter()
            .filter(|c| {
                c.service == "s3" && c.operation == "PUT" && c.target.starts_with(&logs_prefix)
            })
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + LONG;
    while log_puts(&metered.wire.calls()).len() < 2 {
        assert!(Instant::now() < deadline, "the output never reached S3");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A quiet window: the sweep paused, only the node talks (its heartbeat polls).
    let (window, window_routes, metered_usage) = quiet_window(&world).await;
    let polls = window_routes
        .iter()
        .filter(|(m, p)| work_poll(m, p))
        .count();
    assert!(polls >= 2, "{window_routes:?}");
    assert_eq!(
        polls,
        window_routes.len(),
        "only heartbeats: {window_routes:?}"
    );
    let dynamo: Vec<&Call> = window.iter().filter(|c| c.service == "dynamodb").collect();
    assert_eq!(
        dynamo.len() as u64,
        metered_usage.dynamodb_requests,
        "the meter counts the DynamoDB requests the wire sees: {dynamo:#?}"
    );
    assert_eq!(
        dynamo.len(),
        3 * polls,
        "a heartbeat is one read of the job, one write of the node's item and one read of the followers' mark: {dynamo:#?}"
    );
    let heartbeats = dynamo
        .iter()
        .filter(|c| c.operation == "UpdateItem" && c.attributes.iter().any(|a| a == "seen"))
        .count();
    assert_eq!(heartbeats, polls);
    assert!(
        window.iter().all(|c| c.service != "s3"),
        "no S3 request per poll: {window:#?}"
    );
    assert_eq!(
        metered_usage.s3_puts + metered_usage.s3_gets + metered_usage.s3_lists,
        0
    );

    // The output: one presigned PUT per chunk, straight from the node to S3; one batch of
    // URLs from the API; no chunk through the API.
    let job = world
        .wait_status(id, &[JobStatus::Succeeded, JobStatus::Failed], LONG)
        .await;
    assert_eq!(
        job.status(),
        JobStatus::Succeeded,
        "{}",
        world.controller_log(id).await
    );
    let facts = world.ctx.store.job_facts(id).await.unwrap();
    let chunks: u64 = facts
        .iter()
        .flat_map(|c| c.ranks.values())
        .filter_map(|n| n.phase(Phase::Run).chunks)
        .sum();
    assert_eq!(chunks, 2);
    let puts = log_puts(&metered.wire.calls());
    assert_eq!(puts.len() as u64, chunks, "{puts:#?}");
    assert!(puts.iter().all(|c| c.presigned), "{puts:#?}");
    let routes = metered.routes.lock().unwrap().clone();
    let posted = routes
        .iter()
        .filter(|(m, p)| m == "POST" && p.ends_with("/logs"))
        .count();
    let batches = routes
        .iter()
        .filter(|(m, p)| m == "POST" && p.ends_with("/logs/urls"))
        .count();
    assert_eq!((posted, batches), (0, 1), "{routes:?}");
    assert_eq!(world.logs(id).await.len(), 524_288);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_running_job_ends_its_machines_within_a_minute() {
    let world = World::new(Options::default()).await;
    let id = world
        .submit("name: long\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: sleep 600\n")
        .await;
    world.wait_status(id, &[JobStatus::Running], LONG).await;
    let cancelled = Instant::now();
    shared::control::advance(&world.ctx, id, JobEvent::CancelRequested)
        .await
        .unwrap();
    let job = world
        .wait_status(id, &[JobStatus::Cancelled], Duration::from_mins(1))
        .await;
    assert_eq!(job.status(), JobStatus::Cancelled);
    loop {
        let running = world
            .instances("us-east-1", id)
            .await
            .into_iter()
            .filter(|i| {
                i.state().and_then(|s| s.name())
                    != Some(&aws_sdk_ec2::types::InstanceStateName::Terminated)
            })
            .count();
        if running == 0 {
            break;
        }
        assert!(
            cancelled.elapsed() < Duration::from_mins(1),
            "machines still up a minute after the cancel"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("cancel → machines gone in {:?}", cancelled.elapsed());
}
