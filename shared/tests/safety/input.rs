//! Hostile input gets a clear 4xx, quickly, and never holds up other requests.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;
use shared::testing::TestPlane;

use crate::api::{As, call, post_json, router};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_task_file_is_refused_fast_while_health_answers() {
    let plane = TestPlane::new().await;
    let router = router(&plane);
    // 200 KB of nesting, which took the parser tens of seconds.
    let yaml = format!("run: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let started = Instant::now();
    let submit = {
        let router = router.clone();
        tokio::spawn(async move {
            post_json(
                &router,
                As::User("alice"),
                "/api/v1/jobs",
                &json!({ "yaml": yaml }),
            )
            .await
        })
    };
    let (status, _) = call(&router, As::Nobody, "GET", "/api/v1/health", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = submit.await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("levels deep"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
}

#[tokio::test]
async fn values_that_would_fail_on_a_node_are_refused_naming_the_field() {
    let plane = TestPlane::new().await;
    let router = router(&plane);
    for (yaml, field) in [
        // Ports would be silently closed on a cloud node.
        ("resources:\n  ports: 8080\nrun: x\n", "resources.ports"),
        // No bucket access configured for this plane: refused, not left missing on the node.
        (
            "file_mounts:\n  /data: s3://some-bucket/x\nrun: x\n",
            "file_mounts./data",
        ),
        ("num_nodes: 4294967295\nrun: x\n", "num_nodes"),
        ("run: \"a\\0b\"\n", "run"),
        ("envs:\n  A: \"x\\0\"\nrun: x\n", "envs.A"),
    ] {
        let (status, answer) = post_json(
            &router,
            As::User("alice"),
            "/api/v1/jobs",
            &json!({ "yaml": yaml }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{field}: {answer}"
        );
    }
    let (status, answer) = post_json(
        &router,
        As::User("alice"),
        "/api/v1/jobs",
        &json!({ "yaml": "run: x\n", "unknown": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

#[tokio::test]
async fn odd_ids_and_cursors_are_not_server_errors() {
    let plane = TestPlane::new().await;
    let router = router(&plane);
    for path in [
        "/api/v1/jobs/18446744073709551615",
        "/api/v1/jobs/18446744073709551615/logs",
        "/api/v1/jobs/18446744073709551615/events",
    ] {
        let (status, answer) = call(&router, As::User("alice"), "GET", path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }
    let (status, _) = call(
        &router,
        As::User("alice"),
        "GET",
        "/api/v1/jobs/99999999999999999999",
        None,
    )
    .await;
    assert!(status.is_client_error());
    let mut plane = plane;
    let job = plane.submit("alice", "run: x\n").await;
    let (status, answer) = call(
        &router,
        As::User("alice"),
        "GET",
        &format!("/api/v1/jobs/{}/logs?after=jobs/1/logs/x", job.id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}
