//! Users' job events on the emulator stack: a rule a user adds to the Stratus bus (their own
//! pattern, their own queue) receives every status change of the job, in the documented schema.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::bus::eventbridge::{EVENT_SOURCE, JOB_STATUS_DETAIL_TYPE};

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

/// A webhook endpoint on 127.0.0.1 that answers 500 to its first request and 200 after:
/// the bodies it took (the failed one included), and its URL (with a secret in the path).
fn flaky_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/services/T0/B0/the-secret",
        listener.local_addr().unwrap()
    );
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let first = {
                let mut bodies = seen.lock().unwrap();
                bodies.push(String::from_utf8_lossy(&body).into_owned());
                bodies.len() == 1
            };
            let status = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stacks_webhook_gets_the_filtered_events_retried_past_a_500() {
    let (url, bodies) = flaky_endpoint();
    let hook = shared::control::webhooks::from_parameters(&url, "SUCCEEDED", "json")
        .unwrap()
        .expect("a webhook");
    let world = World::new(Options {
        webhook: Some(hook),
        ..Options::default()
    })
    .await;
    let id = world
        .submit("name: hooked\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: echo hi\n")
        .await;
    world.wait_succeeded(id).await;

    // The first delivery got a 500; the retry (0.5 s later) got through.
    let deadline = Instant::now() + Duration::from_secs(30);
    while bodies.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", bodies.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing else comes: the other statuses are filtered out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:#?}");
    assert_eq!(bodies[0], bodies[1], "the retry posts the same event");
    let event: Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(event["version"], 1);
    assert_eq!(event["scope"], "job");
    assert_eq!(event["job_id"], id);
    assert_eq!(event["name"], "hooked");
    assert_eq!(event["status"], "SUCCEEDED");
    assert_eq!(event["previous_status"], "RUNNING");
    assert!(
        event["cost_usd"].is_number() && event["record_version"].is_number(),
        "{event}"
    );
}
