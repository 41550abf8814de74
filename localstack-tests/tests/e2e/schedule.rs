//! The stack's EventBridge rules as the emulator delivers them: a job's events reach the
//! handlers only through the bus rule and its queue, and (on LocalStack, whose scheduled rules
//! fire) the template's `rate(1 minute)` poll rule runs the poll function with the harness's
//! own tick switched off.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::harness::{Options, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_events_travel_through_the_bus_rule_and_the_poll_rule_fires_on_its_schedule() {
    let world = World::new(Options {
        poll_rule: true,
        ..Options::default()
    })
    .await;
    let id = world
        .submit("name: hi\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: echo hi\n")
        .await;
    world.wait_succeeded(id).await;
    let delivered = world.delivered.lock().unwrap().clone();
    assert!(
        delivered
            .iter()
            .any(|d| d == shared::bus::eventbridge::JOB_EVENT_DETAIL_TYPE),
        "{delivered:?}"
    );
    if !world.on_localstack() {
        eprintln!(
            "SKIPPED the schedule half: moto keeps rate() rules but never fires them (the \
             LocalStack lane of scripts/test runs it)"
        );
        return;
    }
    // Only the rule polls now. Its first tick comes about a minute after it was made.
    world.sweeping.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(150);
    while !world
        .delivered
        .lock()
        .unwrap()
        .iter()
        .any(|d| d == "Scheduled Event")
    {
        assert!(
            Instant::now() < deadline,
            "the poll rule never fired: {:?}",
            world.delivered.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
