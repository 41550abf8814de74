//! Time limits as EventBridge Scheduler timers on the emulator stack: the limit's schedule is
//! created when the task starts running, fires (the harness plays the Scheduler) and stops the
//! job; a timer that never fires is deleted by the job's cleanup.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shared::job::{JobId, JobStatus};

use crate::harness::{Options, World};

const ENDED: [JobStatus; 3] = [
    JobStatus::Succeeded,
    JobStatus::Failed,
    JobStatus::Cancelled,
];

/// The names of job `id`'s schedules in the world's group.
async fn schedules(world: &World, id: JobId) -> Vec<String> {
    let prefix = format!("stratus-job-{id}-");
    aws_sdk_scheduler::Client::new(&world.sdk)
        .list_schedules()
        .group_name(&world.env.schedule_group)
        .send()
        .await
        .unwrap()
        .schedules()
        .iter()
        .filter_map(|s| s.name())
        .filter(|n| n.starts_with(&prefix))
        .map(ToOwned::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_duration_timer_is_a_schedule_that_fires_and_one_never_fired_is_deleted() {
    let world = World::new(Options::default()).await;
    let task = "resources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\n";
    let slow = world
        .submit(&format!(
            "name: slow\nmax_duration: 5s\n{task}run: sleep 300\n"
        ))
        .await;
    let running = world
        .wait_status(slow, &[JobStatus::Running], Duration::from_mins(2))
        .await;
    let due = running
        .deadline_at
        .expect("a running task with a limit has a deadline");
    // The sweep would apply a due limit by itself: pause it, so only the timer can.
    world.sweeping.store(false, Ordering::SeqCst);
    let limit = format!("stratus-job-{slow}-limit-{}", due.as_millis());
    // The schedule is made just after the write that set the deadline.
    let made = std::time::Instant::now() + Duration::from_secs(10);
    while schedules(&world, slow).await.is_empty() && std::time::Instant::now() < made {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(schedules(&world, slow).await, vec![limit.clone()]);

    // The Scheduler fires within the minute after `due` (the expression is rounded up).
    let job = world
        .wait_status(slow, &ENDED, Duration::from_secs(150))
        .await;
    world.sweeping.store(true, Ordering::SeqCst);
    let log = world.controller_log(slow).await;
    assert_eq!(job.status(), JobStatus::Failed, "{log}");
    let reason = job.tasks[0].failure_reason.clone().unwrap_or_default();
    assert!(reason.contains("max_duration of 5s"), "{reason}");
    assert!(
        schedules(&world, slow).await.is_empty(),
        "fired and deleted"
    );

    // A limit that never falls due: its schedule waits an hour, and the cleanup deletes it.
    let quick = world
        .submit(&format!(
            "name: quick\nmax_duration: 1h\n{task}run: echo hi\n"
        ))
        .await;
    world
        .wait_status(
            quick,
            &[JobStatus::Running, JobStatus::Succeeded],
            Duration::from_mins(2),
        )
        .await;
    let (job, _) = world.wait_succeeded(quick).await;
    assert!(job.deadline_at.is_none());
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    loop {
        let job = world.job(quick).await;
        if job.cleaned_at.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cleanup never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        schedules(&world, quick).await.is_empty(),
        "the cleanup deletes a timer that never fired"
    );
}
