//! Agent tokens reach only their own job's clusters and ranks.

use axum::http::StatusCode;
use serde_json::json;
use shared::job::JobStatus;
use shared::testing::TestPlane;

use crate::api::{As, call, post_json, router, token};

const TASK: &str = "name: t\nresources:\n  infra: aws/us-east-1\nrun: train\n";

#[tokio::test]
async fn a_token_cannot_tear_down_another_jobs_cluster() {
    let mut plane = TestPlane::new().await;
    let router = router(&plane);
    let a = plane.submit("alice", TASK).await;
    let b = plane.submit("bob", TASK).await;
    let victim = b.tasks[0].cluster.clone().unwrap();
    // Job A's token, naming B's cluster (names are predictable) under A's own job path, and
    // under B's.
    let attacker = token(&plane, a.id);
    for job in [a.id, b.id] {
        let (status, answer) = post_json(
            &router,
            As::Agent(&attacker),
            &format!("/agent/v1/jobs/{job}/clusters/{victim}/nodes/0/report"),
            &json!({ "type": "ready" }),
        )
        .await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
            "{status} {answer}"
        );
    }
    plane.deliver().await;
    assert!(plane.cloud.running().contains(&victim), "B's cluster is up");
    assert_eq!(plane.job(b.id).await.status(), JobStatus::Starting);
}

#[tokio::test]
async fn a_rank_beyond_the_tasks_nodes_is_refused() {
    let mut plane = TestPlane::new().await;
    let router = router(&plane);
    let job = plane
        .submit(
            "alice",
            "name: t\nnum_nodes: 2\nresources:\n  infra: aws/us-east-1\nrun: train\n",
        )
        .await;
    let cluster = job.tasks[0].cluster.clone().unwrap();
    let tok = token(&plane, job.id);
    let base = format!("/agent/v1/jobs/{}/clusters/{cluster}/nodes", job.id);
    for rank in [0, 1] {
        let (status, _) = post_json(
            &router,
            As::Agent(&tok),
            &format!("{base}/{rank}/report"),
            &json!({ "type": "ready" }),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    plane.deliver().await;
    assert_eq!(plane.job(job.id).await.status(), JobStatus::Running);
    // Rank 7 of a 2-node job: a forged exit cannot end the job.
    let exited = json!({ "type": "exited", "phase": "setup", "code": 0 });
    let (status, answer) = post_json(
        &router,
        As::Agent(&tok),
        &format!("{base}/7/report"),
        &exited,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, _) = call(
        &router,
        As::Agent(&tok),
        "GET",
        &format!("{base}/7/work"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let chunk = json!({ "phase": "run", "seq": 0, "data": "forged" });
    let (status, _) = post_json(&router, As::Agent(&tok), &format!("{base}/7/logs"), &chunk).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Rank 0's exit, then a second report of it with another code: the first stands.
    for code in [3, 0] {
        let exited = json!({ "type": "exited", "phase": "setup", "code": code });
        post_json(
            &router,
            As::Agent(&tok),
            &format!("{base}/0/report"),
            &exited,
        )
        .await;
    }
    plane.deliver().await;
    assert_eq!(plane.job(job.id).await.status(), JobStatus::FailedSetup);
}

#[tokio::test]
async fn a_stream_has_a_bounded_number_of_chunks() {
    use shared::agent_protocol::MAX_LOG_CHUNKS;
    let mut plane = TestPlane::new().await;
    let router = router(&plane);
    let job = plane.submit("alice", TASK).await;
    let cluster = job.tasks[0].cluster.clone().unwrap();
    let tok = token(&plane, job.id);
    let base = format!("/agent/v1/jobs/{}/clusters/{cluster}/nodes/0", job.id);
    let chunk = json!({ "phase": "run", "seq": MAX_LOG_CHUNKS, "data": "x" });
    let (status, answer) =
        post_json(&router, As::Agent(&tok), &format!("{base}/logs"), &chunk).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let chunk = json!({ "phase": "run", "seq": 0, "data": "x".repeat(600 * 1024) });
    let (status, _) = post_json(&router, As::Agent(&tok), &format!("{base}/logs"), &chunk).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}
