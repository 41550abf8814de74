//! `EventBridgeBus` on the emulator at `AWS_ENDPOINT_URL`: what the bus delivers is read back
//! from an SQS queue a rule on the bus feeds (as a Lambda function would receive it), and
//! schedules are read back with `GetSchedule` (the emulator never fires them). Every test has
//! its own bus, queue and schedule group.

use std::time::{Duration, Instant};

use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindowMode};
use aws_sdk_sqs::types::QueueAttributeName;
use shared::bus::eventbridge::{
    EventBridgeBus, EventBridgeConfig, JOB_ENDED_DETAIL_TYPE, JOB_EVENT_DETAIL_TYPE,
    ended_job_from_event, envelope_from_event,
};
use shared::bus::{Envelope, EventBus};
use shared::clock::{Clock, SystemClock, Timestamp};
use shared::job::{JobEvent, LaunchFailure};

use crate::emulator;

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/stratus-scheduler";

/// A bus of its own whose every Stratus event lands in a queue of its own.
struct Fixture {
    bus: EventBridgeBus,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Fixture {
    async fn new() -> Self {
        let (config, endpoint) = emulator::sdk_config().await;
        let events = aws_sdk_eventbridge::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let scheduler = aws_sdk_scheduler::Client::new(&config);
        let name = emulator::unique("bus");

        let bus_arn = events
            .create_event_bus()
            .name(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("cannot create an event bus at {endpoint}: {e:?}"))
            .event_bus_arn()
            .expect("CreateEventBus returns the ARN")
            .to_owned();
        let queue_url = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_owned();
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .unwrap()
            .clone();
        events
            .put_rule()
            .name("stratus-to-queue")
            .event_bus_name(&name)
            .event_pattern(r#"{"source": ["stratus"]}"#)
            .send()
            .await
            .unwrap();
        events
            .put_targets()
            .rule("stratus-to-queue")
            .event_bus_name(&name)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(queue_arn)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let group = emulator::unique("group");
        scheduler
            .create_schedule_group()
            .name(&group)
            .send()
            .await
            .unwrap();
        let config = EventBridgeConfig::new(&name, bus_arn, ROLE_ARN).with_schedule_group(group);
        Self {
            bus: EventBridgeBus::new(events, scheduler, config),
            sqs,
            queue_url,
        }
    }

    /// The events the queue received, as parsed JSON, waiting up to 10 s for `count`.
    async fn receive(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut received = Vec::new();
        while received.len() < count && Instant::now() < deadline {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for message in output.messages() {
                let body = message.body().expect("a message body");
                received.push(serde_json::from_str(body).expect("the body is an event"));
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        received
    }

    async fn get_schedule(
        &self,
        name: &str,
    ) -> Result<
        aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput,
        aws_sdk_scheduler::error::SdkError<
            aws_sdk_scheduler::operation::get_schedule::GetScheduleError,
        >,
    > {
        self.bus
            .scheduler_client()
            .get_schedule()
            .group_name(&self.bus.config().schedule_group)
            .name(name)
            .send()
            .await
    }

    /// Best effort: a persistent emulator (LocalStack) would otherwise keep them.
    async fn cleanup(self) {
        let config = self.bus.config();
        let events = self.bus.events_client();
        let _ = events
            .remove_targets()
            .rule("stratus-to-queue")
            .event_bus_name(&config.bus_name)
            .ids("queue")
            .send()
            .await;
        let _ = events
            .delete_rule()
            .name("stratus-to-queue")
            .event_bus_name(&config.bus_name)
            .send()
            .await;
        let _ = events
            .delete_event_bus()
            .name(&config.bus_name)
            .send()
            .await;
        let _ = self
            .bus
            .scheduler_client()
            .delete_schedule_group()
            .name(&config.schedule_group)
            .send()
            .await;
        let _ = self
            .sqs
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await;
    }
}

fn launched(cluster: &str) -> JobEvent {
    JobEvent::ClusterLaunched {
        cluster: cluster.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_arrive_as_sent() {
    let f = Fixture::new().await;
    let sent = [
        Envelope {
            job_id: 7,
            event: launched("train-7-1"),
        },
        Envelope {
            job_id: 8,
            event: JobEvent::LaunchFailed {
                cluster: "train-8-1".into(),
                failure: LaunchFailure::NoCapacity,
                message: "InsufficientInstanceCapacity: \"p4d\" ✓".into(),
            },
        },
    ];
    for envelope in &sent {
        f.bus
            .publish(envelope.job_id, envelope.event.clone())
            .await
            .unwrap();
    }
    f.bus.job_ended(9).await.unwrap();

    let received = f.receive(3).await;
    assert_eq!(received.len(), 3, "{received:#?}");
    let mut envelopes = Vec::new();
    let mut ended = Vec::new();
    for event in &received {
        assert_eq!(event["source"], "stratus", "{event}");
        match event["detail-type"].as_str() {
            Some(JOB_EVENT_DETAIL_TYPE) => envelopes.push(envelope_from_event(event).unwrap()),
            Some(JOB_ENDED_DETAIL_TYPE) => ended.push(ended_job_from_event(event).unwrap()),
            other => panic!("unexpected detail-type {other:?}: {event}"),
        }
    }
    envelopes.sort_by_key(|e| e.job_id);
    assert_eq!(envelopes, sent);
    assert_eq!(ended, vec![9]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_event_becomes_a_one_time_schedule_to_the_bus() {
    let f = Fixture::new().await;
    let now = SystemClock.now();
    let at = now.plus(Duration::from_secs(150));
    let name = EventBridgeBus::schedule_name(3, at);
    f.bus
        .schedule(3, JobEvent::BackoffElapsed, at, now)
        .await
        .unwrap();
    // The same (job, time) again is the same schedule, and fine.
    f.bus
        .schedule(3, JobEvent::BackoffElapsed, at, now)
        .await
        .unwrap();

    let schedule = f.get_schedule(&name).await.unwrap();
    let config = f.bus.config();
    assert_eq!(schedule.name(), Some(name.as_str()));
    assert_eq!(
        schedule.schedule_expression(),
        Some(EventBridgeBus::schedule_expression(at).as_str())
    );
    let expression = schedule.schedule_expression().unwrap();
    assert!(
        expression.starts_with("at(") && expression.ends_with(":00)") && expression.len() == 23,
        "{expression}"
    );
    assert_eq!(schedule.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        schedule
            .flexible_time_window()
            .map(aws_sdk_scheduler::types::FlexibleTimeWindow::mode),
        Some(&FlexibleTimeWindowMode::Off)
    );
    assert_eq!(
        schedule.action_after_completion(),
        Some(&ActionAfterCompletion::Delete)
    );
    let target = schedule.target().expect("a target");
    assert_eq!(target.arn(), config.bus_arn);
    assert_eq!(target.role_arn(), ROLE_ARN);
    let parameters = target
        .event_bridge_parameters()
        .expect("EventBridgeParameters");
    assert_eq!(parameters.detail_type(), JOB_EVENT_DETAIL_TYPE);
    assert_eq!(parameters.source(), "stratus");
    // The input is what a published event's detail is, so the functions read both alike.
    let input: serde_json::Value = serde_json::from_str(target.input().unwrap()).unwrap();
    let delivered = serde_json::json!({
        "version": "0", "id": "scheduled", "detail-type": parameters.detail_type(),
        "source": parameters.source(), "detail": input,
    });
    assert_eq!(
        envelope_from_event(&delivered).unwrap(),
        Envelope {
            job_id: 3,
            event: JobEvent::BackoffElapsed
        }
    );
    // Nothing was published now.
    assert!(f.receive(0).await.is_empty());

    // Another time is another schedule.
    let later = at.plus(Duration::from_mins(1));
    f.bus
        .schedule(3, JobEvent::BackoffElapsed, later, now)
        .await
        .unwrap();
    f.get_schedule(&EventBridgeBus::schedule_name(3, later))
        .await
        .unwrap();
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_event_is_published_at_once() {
    let f = Fixture::new().await;
    let now = SystemClock.now();
    let at = Timestamp::from_millis(now.as_millis() - 5_000);
    f.bus.schedule(4, launched("c-4-1"), at, now).await.unwrap();
    let received = f.receive(1).await;
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(
        envelope_from_event(&received[0]).unwrap(),
        Envelope {
            job_id: 4,
            event: launched("c-4-1")
        }
    );
    let missing = f
        .get_schedule(&EventBridgeBus::schedule_name(4, at))
        .await
        .unwrap_err();
    assert!(
        missing
            .as_service_error()
            .is_some_and(aws_sdk_scheduler::operation::get_schedule::GetScheduleError::is_resource_not_found_exception),
        "{missing:?}"
    );
    f.cleanup().await;
}

/// Errors name the call, the bus or group, the job and the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_what_failed() {
    let (config, _) = emulator::sdk_config().await;
    let missing = emulator::unique("nobus");
    let bus = EventBridgeBus::from_sdk_config(
        &config,
        EventBridgeConfig::new(
            &missing,
            format!("arn:aws:events:us-east-1:123456789012:event-bus/{missing}"),
            ROLE_ARN,
        )
        .with_schedule_group(&missing),
    );
    let now = SystemClock.now();
    let err = bus
        .schedule(
            5,
            JobEvent::BackoffElapsed,
            now.plus(Duration::from_mins(10)),
            now,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("event bus: CreateSchedule stratus-job-5-")
            && err.contains(&format!("in group {missing} for job 5: ")),
        "{err}"
    );
    let err = bus.publish(5, launched("c")).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "event bus: PutEvents (stratus.job-event) for job 5 to bus {missing}: "
        )),
        "{err}"
    );
}
