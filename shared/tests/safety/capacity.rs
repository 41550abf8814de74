//! Freed capacity wakes the jobs waiting for it in submission order, as many as it serves,
//! and a zone known to be full is not asked again until something there is freed.

use shared::job::JobStatus;
use shared::testing::TestPlane;

const TASK: &str =
    "name: t\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: train\n";

#[tokio::test]
async fn freed_capacity_wakes_the_oldest_waiting_job_only() {
    let mut plane = TestPlane::new().await;
    for zone in [
        "us-east-1a",
        "us-east-1b",
        "us-east-1c",
        "us-east-1d",
        "us-east-1f",
    ] {
        plane.cloud.set_capacity(zone, 0);
    }
    plane.cloud.set_capacity("us-east-1a", 1);
    let first = plane.submit("alice", TASK).await;
    assert_eq!(first.status(), JobStatus::Starting);
    let mut waiting = Vec::new();
    for _ in 0..5 {
        waiting.push(plane.submit("alice", TASK).await.id);
    }
    for id in &waiting {
        let job = plane.job(*id).await;
        assert!(
            job.next_attempt_at.is_some(),
            "job {id} waits out a backoff"
        );
    }
    // Only the first waiting job asked the cloud; the others knew the zones were full.
    let refused = plane.cloud.failed_launches();
    assert!(
        refused <= 6,
        "{refused} refused launches for 5 waiting jobs"
    );

    // The first job is cancelled: its one node is free, and only the oldest waiter runs.
    shared::control::advance(&plane.ctx, first.id, shared::job::JobEvent::CancelRequested)
        .await
        .unwrap();
    plane.deliver().await;
    let statuses: Vec<(u64, JobStatus, bool)> = {
        let mut all = Vec::new();
        for id in &waiting {
            let job = plane.job(*id).await;
            all.push((*id, job.status(), job.tasks[0].cluster.is_some()));
        }
        all
    };
    let launched: Vec<u64> = statuses
        .iter()
        .filter(|(_, _, cluster)| *cluster)
        .map(|(id, _, _)| *id)
        .collect();
    assert_eq!(launched, [waiting[0]], "{statuses:?}");
    assert_eq!(
        plane.cloud.failed_launches(),
        refused,
        "the woken job's launch was not refused"
    );
}

/// The teardown that ends a cluster and the cleanup that finds it gone race (the cleanup
/// can run first, once the sweep sees the machines gone): whichever records it first frees
/// the capacity, so the waiting job is woken either way.
#[tokio::test]
async fn a_cluster_the_cleanup_finds_gone_first_still_wakes_the_waiting_job() {
    let mut plane = TestPlane::new().await;
    for zone in ["us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f"] {
        plane.cloud.set_capacity(zone, 0);
    }
    plane.cloud.set_capacity("us-east-1a", 1);
    let first = plane.submit("alice", TASK).await;
    let cluster = first.tasks[0].cluster.clone().expect("launched");
    let waiting = plane.submit("alice", TASK).await;
    assert!(waiting.next_attempt_at.is_some(), "the second job waits");

    // The cancel's teardown call fails; the machines go anyway, and the job ends on the
    // cloud's word before any teardown recorded the cluster gone.
    plane.cloud.fail_terminates(1);
    shared::control::advance(&plane.ctx, first.id, shared::job::JobEvent::CancelRequested)
        .await
        .unwrap();
    plane.cloud.preempt(&cluster);
    shared::control::advance(
        &plane.ctx,
        first.id,
        shared::job::JobEvent::ClusterTerminated { cluster },
    )
    .await
    .unwrap();
    plane.deliver().await;

    assert_eq!(plane.job(first.id).await.status(), JobStatus::Cancelled);
    let woken = plane.job(waiting.id).await;
    assert!(
        woken.next_attempt_at.is_none() && woken.tasks[0].cluster.is_some(),
        "the waiting job launched at once: {:?}",
        woken.tasks[0]
    );
}
