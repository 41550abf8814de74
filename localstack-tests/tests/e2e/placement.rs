//! Candidates that cannot serve: a cluster whose machines run but never report is torn down
//! after the ready timeout, and a region without a default VPC is skipped with its reason; in
//! both cases the job moves on to the next candidate.

use std::time::Duration;

use shared::job::JobStatus;

use crate::harness::{Options, World};

const ENDED: [JobStatus; 2] = [JobStatus::Succeeded, JobStatus::Failed];

/// `ordered:` so the first candidate is the one that cannot serve.
fn task(name: &str, config: &str) -> String {
    format!(
        "name: {name}\n{config}resources:\n  ordered:\n    - infra: aws/us-east-2\n      instance_type: m6i.large\n    - infra: aws/us-east-1\n      instance_type: m6i.large\nrun: echo served by the next candidate\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_never_reports_is_torn_down_after_the_ready_timeout() {
    let world = World::new(Options {
        silent_regions: vec!["us-east-2"],
        ..Options::default()
    })
    .await;
    // The task's own limit (SkyPilot's `provision_timeout` spelling) wins over the stack's.
    let id = world
        .submit(&task(
            "silent",
            "config:\n  aws:\n    provision_timeout: 10\n",
        ))
        .await;
    let job = world.wait_status(id, &ENDED, Duration::from_mins(2)).await;
    let log = world.controller_log(id).await;
    assert_eq!(job.status(), JobStatus::Succeeded, "{log}");
    let ran = &job.candidates[0][job.tasks[0].candidate.unwrap()];
    assert_eq!(ran.region, "us-east-1", "{log}");
    assert!(log.contains("never reached the API"), "{log}");
    assert_eq!(job.recoveries(), 0, "a failed launch is not a recovery");
    // The silent cluster is gone.
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    while world.instances("us-east-2", id).await.iter().any(|i| {
        i.state().and_then(|s| s.name()) != Some(&aws_sdk_ec2::types::InstanceStateName::Terminated)
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the silent cluster was left running"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_without_a_default_vpc_is_skipped_with_its_reason() {
    let world = World::new(Options::default()).await;
    world.delete_default_vpc("us-east-2").await;
    let id = world.submit(&task("novpc", "")).await;
    let job = world.wait_status(id, &ENDED, Duration::from_mins(2)).await;
    let log = world.controller_log(id).await;
    assert_eq!(job.status(), JobStatus::Succeeded, "{log}");
    let ran = &job.candidates[0][job.tasks[0].candidate.unwrap()];
    assert_eq!(ran.region, "us-east-1", "{log}");
    assert!(log.contains("no default VPC"), "{log}");
    assert!(
        log.contains("create-default-vpc"),
        "the reason says the fix: {log}"
    );
    assert!(world.instances("us-east-2", id).await.is_empty());
}
