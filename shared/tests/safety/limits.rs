//! Money and time: the cost ledger across a recovery, a limit whose timer was lost, and
//! refusals that change nothing.

use std::sync::Arc;
use std::time::Duration;

use shared::api::JobView;
use shared::catalog::{Catalog, parse};
use shared::clock::Clock as _;
use shared::cloud::Cloud;
use shared::control::{self, SubmitError, SubmitRequest};
use shared::job::{JobEvent, JobRecord, JobStatus};
use shared::testing::TestPlane;

/// One instance type in two regions, spot at $0.04 and $0.05 an hour.
const CATALOG: &str = "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,Region,AvailabilityZone,Price,SpotPrice
m6i.2xlarge,8,32,,,us-east-1,us-east-1a,0.10,0.04
m6i.2xlarge,8,32,,,us-west-2,us-west-2a,0.12,0.05
";

async fn plane() -> TestPlane {
    let mut plane = TestPlane::new().await;
    let offerings = parse(Cloud::Aws, "aws.csv", CATALOG).unwrap();
    plane.ctx.catalog = Arc::new(Catalog::from_offerings(offerings));
    plane
}

async fn event(plane: &mut TestPlane, job: &JobRecord, event: JobEvent) -> JobRecord {
    control::advance(&plane.ctx, job.id, event).await.unwrap();
    plane.deliver().await;
    plane.job(job.id).await
}

/// A submit of `yaml` by `owner` that must be refused.
async fn refused(plane: &TestPlane, owner: &str, yaml: &str) -> SubmitError {
    control::submit(
        &plane.ctx,
        owner,
        SubmitRequest {
            yaml: Some(yaml.into()),
            ..SubmitRequest::default()
        },
    )
    .await
    .unwrap_err()
}

/// Submits `yaml` as alice and brings its first cluster's nodes up: RUNNING.
async fn running(plane: &mut TestPlane, yaml: &str) -> JobRecord {
    let job = plane.submit("alice", yaml).await;
    event(
        plane,
        &job,
        JobEvent::NodeReady {
            cluster: cluster(&job),
        },
    )
    .await
}

fn cluster(job: &JobRecord) -> String {
    job.tasks[0].cluster.clone().unwrap()
}

#[tokio::test]
async fn the_cost_of_a_recovered_job_is_the_sum_of_its_attempts() {
    let mut plane = plane().await;
    let job = running(
        &mut plane,
        "name: t\nresources:\n  use_spot: true\nrun: train\n",
    )
    .await;
    assert_eq!(job.status(), JobStatus::Running);

    // An hour on us-east-1's spot node, then a preemption: recovered in us-west-2.
    plane.clock.advance(Duration::from_hours(1));
    let first = cluster(&job);
    let job = event(
        &mut plane,
        &job,
        JobEvent::Preempted {
            cluster: first.clone(),
        },
    )
    .await;
    let second = cluster(&job);
    assert_ne!(first, second);
    let job = event(
        &mut plane,
        &job,
        JobEvent::NodeReady {
            cluster: second.clone(),
        },
    )
    .await;

    // Half an hour there, then the run ends.
    plane.clock.advance(Duration::from_mins(30));
    let job = event(
        &mut plane,
        &job,
        JobEvent::TaskExited {
            cluster: second,
            phase: shared::job::Phase::Run,
            codes: vec![0],
        },
    )
    .await;
    assert_eq!(job.status(), JobStatus::Succeeded);

    let view = JobView::new(&job, plane.clock.now());
    let attempts = &view.tasks[0].attempts;
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let sum: f64 = attempts.iter().map(|a| a.cost_usd).sum();
    assert!(
        (view.cost.usd - sum).abs() < 1e-12,
        "{} != {sum}",
        view.cost.usd
    );
    assert!(
        (view.cost.usd - (0.04 + 0.05 / 2.0)).abs() < 1e-12,
        "{}",
        view.cost.usd
    );
    assert!(view.cost.estimate);
    assert_eq!(attempts[0].machine_ms, 3_600_000);
    assert_eq!(attempts[1].machine_ms, 1_800_000);
    assert_eq!(attempts[0].infra.as_deref(), Some("AWS (us-east-1a)"));
    assert!(attempts.iter().all(|a| a.use_spot));

    let log: Vec<String> = plane
        .ctx
        .store
        .list_events(job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        log.iter().any(|l| l.starts_with("Attempt 1 on aws/us-east-1/us-east-1a m6i.2xlarge[Spot] ran its machines 3600 s: $0.0400 (estimate)")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("The job's machines cost $0.0650 in all")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_limit_whose_timer_was_lost_is_applied_by_the_sweep() {
    let mut plane = plane().await;
    // No node reports here: keep the sweep from calling the cluster lost.
    plane.ctx.settings.heartbeat_timeout = Duration::from_hours(1);
    let job = running(&mut plane, "name: t\nmax_duration: 10m\nrun: train\n").await;
    let due = job.deadline_at.expect("a deadline once it runs");
    // The timer's event is lost (the local bus's timers run on the wall clock, not this one).
    plane.drop_messages();
    plane.sweep(Duration::from_mins(9)).await;
    assert_eq!(plane.job(job.id).await.status(), JobStatus::Running);
    plane.sweep(Duration::from_mins(2)).await;
    let job = plane.job(job.id).await;
    assert!(plane.clock.now() >= due);
    assert_eq!(job.status(), JobStatus::Failed);
    let reason = job.tasks[0].failure_reason.clone().unwrap();
    assert!(reason.contains("max_duration of 10m"), "{reason}");
    assert!(
        plane.cloud.running().is_empty(),
        "{:?}",
        plane.cloud.running()
    );
}

#[tokio::test]
async fn a_cap_too_small_for_the_duration_is_refused_and_nothing_is_stored() {
    let plane = plane().await;
    // Ten hours at $0.10 an hour at least: $1.00 > $0.50.
    let refused = refused(
        &plane,
        "alice",
        "max_duration: 10h\nstratus: {max_cost: 0.5}\nrun: x\n",
    )
    .await;
    assert!(matches!(refused, SubmitError::BadRequest(_)), "{refused:?}");
    assert!(
        refused
            .to_string()
            .contains("max_cost: $0.5000 (stratus.max_cost or --max-cost) cannot pay"),
        "{refused}"
    );
    let page = plane.ctx.store.list_jobs(None, None, 10).await.unwrap();
    assert!(page.jobs.is_empty());
}

#[tokio::test]
async fn a_user_over_the_monthly_budget_launches_nothing_new() {
    let mut plane = plane().await;
    plane.ctx.settings.monthly_budget = Some(0.03);
    let job = running(&mut plane, "name: t\nrun: train\n").await;
    // An hour on demand at $0.10: over alice's $0.03.
    plane.clock.advance(Duration::from_hours(1));
    let _ = event(&mut plane, &job, JobEvent::CancelRequested).await;
    let refused = refused(&plane, "alice", "run: x\n").await;
    assert!(
        refused
            .to_string()
            .contains("monthly budget: alice's jobs have cost $0.1000 this month"),
        "{refused}"
    );
    // Bob has spent nothing.
    plane.submit("bob", "run: x\n").await;
}
