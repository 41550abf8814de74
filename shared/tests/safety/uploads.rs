//! Archive keys: a user writes only in their own space, a job names only its owner's archives
//! of one session no other job has, and cleanup deletes nothing else.

use axum::http::StatusCode;
use serde_json::json;
use shared::testing::TestPlane;

use crate::api::{As, call, post_json, router, token};

const WORKDIR_TASK: &str = "name: wd\nworkdir: ./project\nrun: ls\n";

async fn upload(router: &axum::Router, user: &str, session: &str, bytes: &[u8]) -> String {
    let (status, answer) = call(
        router,
        As::User(user),
        "PUT",
        &format!("/api/v1/uploads?session={session}"),
        Some(bytes.to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["key"].as_str().unwrap().to_owned()
}

async fn submit(router: &axum::Router, user: &str, key: &str) -> (StatusCode, serde_json::Value) {
    post_json(
        router,
        As::User(user),
        "/api/v1/jobs",
        &json!({ "yaml": WORKDIR_TASK, "uploads": { "./project": key } }),
    )
    .await
}

#[tokio::test]
async fn a_job_names_only_its_owners_archives_and_cleanup_deletes_only_them() {
    let mut plane = TestPlane::new().await;
    let router = router(&plane);
    let alices = upload(&router, "alice", "s-1", b"alice's archive").await;
    let bobs = upload(&router, "bob", "s-1", b"bob's archive").await;
    assert_ne!(
        alices, bobs,
        "the same session name is two users' own spaces"
    );
    // Another job's log, which a hostile key would have deleted or exposed.
    let canary = "jobs/99/logs/000/0001/1-run/000-00000000";
    plane
        .ctx
        .blobs
        .put(canary, b"someone's log".to_vec())
        .await
        .unwrap();

    for (user, key) in [
        ("bob", alices.as_str()),
        ("alice", "jobs/"),
        ("alice", canary),
        ("alice", "../../etc/passwd"),
        ("alice", "uploads/"),
    ] {
        let (status, answer) = submit(&router, user, key).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{user} naming {key}: {answer}"
        );
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("uploads../project"),
            "{answer}"
        );
    }
    let (status, job) = submit(&router, "alice", &alices).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let id = job["id"].as_u64().unwrap();
    // The session is that job's now.
    let (status, answer) = submit(&router, "alice", &alices).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("belongs to another job"),
        "{answer}"
    );

    // The job's token reaches its own archive, and nothing else.
    let tok = token(&plane, id);
    let (status, _) = call(
        &router,
        As::Agent(&tok),
        "GET",
        &format!("/agent/v1/jobs/{id}/blobs/{alices}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for key in [canary, bobs.as_str()] {
        let (status, _) = call(
            &router,
            As::Agent(&tok),
            "GET",
            &format!("/agent/v1/jobs/{id}/blobs/{key}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{key}");
    }

    // Cancelled and cleaned up: its archive goes; the others stay.
    let (status, _) = post_json(
        &router,
        As::User("alice"),
        &format!("/api/v1/jobs/{id}/cancel"),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    plane.deliver().await;
    assert!(plane.job(id).await.cleaned_at.is_some(), "cleaned up");
    assert_eq!(plane.ctx.blobs.get(&alices).await.unwrap(), None);
    assert!(plane.ctx.blobs.get(&bobs).await.unwrap().is_some());
    assert!(plane.ctx.blobs.get(canary).await.unwrap().is_some());
}

#[tokio::test]
async fn an_upload_url_is_in_the_callers_space_whatever_the_session() {
    let plane = TestPlane::new().await;
    let router = router(&plane);
    let sha = "ab".repeat(32);
    for user in ["alice", "bob"] {
        let (status, answer) = post_json(
            &router,
            As::User(user),
            &format!("/api/v1/uploads/url?session=shared-name&sha256={sha}"),
            &json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(
            answer["key"],
            shared::blob::keys::object_key(user, "shared-name", &sha, None)
        );
    }
    let (status, _) = post_json(
        &router,
        As::User("alice"),
        "/api/v1/uploads/url?session=../x&sha256=zz",
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
