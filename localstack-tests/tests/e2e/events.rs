//! Users' job events on the emulator stack: a rule a user adds to the Stratus bus (their own
//! pattern, their own queue) receives every status change of the job, in the documented schema.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::control::{EVENT_SOURCE, JOB_STATUS_DETAIL_TYPE};

use crate::harness::{Options, World};

/// What a user writes: a queue of their own, and a rule on the Stratus bus sending it the
/// job-scope status events. Returns the queue's URL.
async fn users_rule(world: &World, sqs: &aws_sdk_sqs::Client) -> String {
    let bus = world.env.bus.clone();
    let (queue_url, queue_arn) = crate::harness::queue(sqs, &format!("{bus}-user")).await;
    let events = aws_sdk_eventbridge::Client::new(&world.sdk);
    let rule = format!("{bus}-user");
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(
            json!({
                "source": [EVENT_SOURCE],
                "detail-type": [JOB_STATUS_DETAIL_TYPE],
                "detail": { "scope": ["job"] }
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    crate::harness::target_queue(&events, &rule, &bus, "mine", &queue_arn).await;
    queue_url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_own_rule_on_the_bus_receives_the_jobs_status_events() {
    let world = World::new(Options::default()).await;
    let sqs = aws_sdk_sqs::Client::new(&world.sdk);
    let queue_url = users_rule(&world, &sqs).await;

    let id = world
        .submit("name: told\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: echo hi\n")
        .await;
    world.wait_succeeded(id).await;

    // EventBridge to SQS is neither ordered nor exactly once: gather until all four changes
    // are in, one copy each (by record version and status).
    let mut received: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.len() < 4 {
        assert!(Instant::now() < deadline, "{received:#?}");
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in out.messages() {
            let event: Value = serde_json::from_str(message.body().unwrap_or("{}")).unwrap();
            let key = |e: &Value| {
                (
                    e["detail"]["record_version"].clone(),
                    e["detail"]["status"].clone(),
                )
            };
            if !received.iter().any(|seen| key(seen) == key(&event)) {
                received.push(event);
            }
        }
    }
    received.sort_by_key(|e| e["detail"]["record_version"].as_u64());
    let statuses: Vec<(&str, Option<&str>)> = received
        .iter()
        .map(|e| {
            (
                e["detail"]["status"].as_str().unwrap(),
                e["detail"]["previous_status"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("PENDING", None),
            ("STARTING", Some("PENDING")),
            ("RUNNING", Some("STARTING")),
            ("SUCCEEDED", Some("RUNNING")),
        ],
        "{received:#?}"
    );
    for event in &received {
        assert_eq!(event["source"], EVENT_SOURCE);
        assert_eq!(event["detail-type"], JOB_STATUS_DETAIL_TYPE);
        let detail = &event["detail"];
        assert_eq!(detail["version"], 1);
        assert_eq!(detail["scope"], "job");
        assert_eq!(detail["job_id"], id);
        assert_eq!(detail["name"], "told");
        assert!(
            detail["owner"].is_string() && detail["cost_usd"].is_number(),
            "{detail}"
        );
    }
    let infra = received[3]["detail"]["infra"].as_str().unwrap_or_default();
    assert!(infra.starts_with("AWS (us-east-1"), "{infra}");
}
