//! Work a crash or a failed call dropped is always done in the end: the sweep re-drives it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::StatusCode;
use serde_json::json;
use shared::bus::{BusError, EventBus};
use shared::clock::Timestamp;
use shared::job::{JobEvent, JobId, JobStatus};
use shared::testing::TestPlane;

use crate::api::{As, post_json, router};

const TASK: &str = "name: t\nresources:\n  infra: aws/us-east-1\nrun: train\n";

#[tokio::test]
async fn a_job_whose_start_was_lost_is_started_by_the_sweep() {
    let mut plane = TestPlane::new().await;
    let job = shared::control::submit(
        &plane.ctx,
        "alice",
        shared::control::SubmitRequest {
            yaml: Some(TASK.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The control plane died before `Submitted` was handled.
    assert_eq!(plane.drop_messages(), 1);
    plane.sweep(Duration::from_secs(5)).await;
    assert_eq!(
        plane.job(job.id).await.status(),
        JobStatus::Pending,
        "it may be in flight"
    );
    plane.sweep(Duration::from_secs(30)).await;
    assert_eq!(plane.job(job.id).await.status(), JobStatus::Starting);
    assert_eq!(plane.cloud.launches().len(), 1);
}

/// A bus whose every publish fails (EventBridge down).
struct DownBus;

#[async_trait]
impl EventBus for DownBus {
    async fn publish(&self, _: JobId, _: JobEvent) -> Result<(), BusError> {
        Err(BusError {
            message: "PutEvents: service unavailable".into(),
        })
    }
    async fn job_ended(&self, _: JobId) -> Result<(), BusError> {
        Err(BusError {
            message: "PutEvents: service unavailable".into(),
        })
    }
    async fn schedule(
        &self,
        _: JobId,
        _: JobEvent,
        _: Timestamp,
        _: Timestamp,
    ) -> Result<(), BusError> {
        Err(BusError {
            message: "CreateSchedule: service unavailable".into(),
        })
    }
    async fn status_changed(
        &self,
        _: &shared::job::transitions::StatusEvent,
    ) -> Result<(), BusError> {
        Err(BusError {
            message: "PutEvents: service unavailable".into(),
        })
    }
    async fn cancel_schedules(&self, _: JobId) -> Result<usize, BusError> {
        Err(BusError {
            message: "ListSchedules: service unavailable".into(),
        })
    }
}

#[tokio::test]
async fn a_submit_whose_event_cannot_be_sent_still_creates_one_job() {
    let mut plane = TestPlane::new().await;
    let bus = plane.ctx.bus.clone();
    plane.ctx.bus = Arc::new(DownBus);
    let router = router(&plane);
    let (status, answer) = post_json(
        &router,
        As::User("alice"),
        "/api/v1/jobs",
        &json!({ "yaml": TASK }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "the job exists: {answer}");
    let id = answer["id"].as_u64().unwrap();
    plane.ctx.bus = bus;
    plane.sweep(Duration::from_secs(31)).await;
    assert_eq!(plane.job(id).await.status(), JobStatus::Starting);
    let page = plane.ctx.store.list_jobs(None, None, 100).await.unwrap();
    assert_eq!(page.jobs.len(), 1, "no duplicate");
}

/// Drives a launched one-node job to SUCCEEDED through its node's reports.
async fn succeed(plane: &mut TestPlane, id: JobId) {
    let job = plane.job(id).await;
    let cluster = job.tasks[0].cluster.clone().unwrap();
    for report in [
        shared::agent_protocol::Report::Ready,
        shared::agent_protocol::Report::Exited {
            phase: shared::job::Phase::Setup,
            code: 0,
            chunks: Some(0),
        },
        shared::agent_protocol::Report::Exited {
            phase: shared::job::Phase::Run,
            code: 0,
            chunks: Some(0),
        },
    ] {
        shared::control::nodes::report(&plane.ctx, id, &cluster, 0, &report)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_cleanup_that_failed_or_never_ran_is_run_again() {
    let mut plane = TestPlane::new().await;
    // One job whose cleanup meets a cloud that fails, one whose `job_ended` is lost.
    let failing = plane.submit("alice", TASK).await;
    let lost = plane.submit("alice", TASK).await;
    let stray = plane.stray_cluster(&failing, 9).await;
    succeed(&mut plane, failing.id).await;
    plane.cloud.fail_terminates(1);
    plane.deliver().await;
    let job = plane.job(failing.id).await;
    assert_eq!(job.status(), JobStatus::Succeeded);
    assert_eq!(
        job.cleaned_at, None,
        "the cleanup could not terminate the stray cluster"
    );
    assert!(plane.cloud.running().contains(&stray));
    succeed(&mut plane, lost.id).await;
    plane.drop_messages();
    assert_eq!(plane.job(lost.id).await.cleaned_at, None);
    let active: Vec<u64> = plane
        .ctx
        .store
        .list_active()
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        active,
        [failing.id, lost.id],
        "ended, not cleaned: still swept"
    );

    plane.sweep(Duration::from_mins(2)).await;
    for id in [failing.id, lost.id] {
        assert!(
            plane.job(id).await.cleaned_at.is_some(),
            "job {id} cleaned up"
        );
    }
    assert!(
        plane.cloud.running().is_empty(),
        "{:?}",
        plane.cloud.running()
    );
    assert!(plane.ctx.store.list_active().await.unwrap().is_empty());
}
