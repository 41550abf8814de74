use serde_json::json;

use super::*;
use crate::job::{LaunchFailure, Phase};

/// An event as EventBridge hands it to a Lambda function.
const FIXTURE: &str = r#"{
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "stratus.job-event",
    "source": "stratus",
    "account": "123456789012",
    "time": "2026-11-27T01:59:07Z",
    "region": "us-east-1",
    "resources": [],
    "detail": {
        "job_id": 7,
        "event": {"type": "task_exited", "cluster": "train-7-1", "phase": "run", "codes": [0, 137]}
    }
}"#;

fn event(detail_type: &str, detail: &serde_json::Value) -> serde_json::Value {
    json!({
        "version": "0", "id": "e-1", "detail-type": detail_type, "source": EVENT_SOURCE,
        "account": "123456789012", "time": "2026-11-27T01:59:07Z", "region": "us-east-1",
        "resources": [], "detail": detail,
    })
}

#[test]
fn reads_the_envelope_of_a_fixture_event() {
    let event: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    assert_eq!(
        envelope_from_event(&event).unwrap(),
        Envelope {
            job_id: 7,
            event: JobEvent::TaskExited {
                cluster: "train-7-1".into(),
                phase: Phase::Run,
                codes: vec![0, 137],
            },
        }
    );
}

#[test]
fn every_event_round_trips_through_the_detail() {
    let events = [
        JobEvent::Submitted,
        JobEvent::ClusterLaunched {
            cluster: "c".into(),
        },
        JobEvent::LaunchFailed {
            cluster: "c".into(),
            failure: LaunchFailure::NoCapacity,
            message: "InsufficientInstanceCapacity: \"quoted\" ✓".into(),
        },
        JobEvent::BackoffElapsed,
        JobEvent::CancelRequested,
        JobEvent::ControllerFailed { reason: "r".into() },
    ];
    for (job_id, event) in (1..).zip(events) {
        let envelope = Envelope { job_id, event };
        let detail: serde_json::Value =
            serde_json::from_str(&envelope_json(&envelope).unwrap()).unwrap();
        let received = self::event(JOB_EVENT_DETAIL_TYPE, &detail);
        assert_eq!(envelope_from_event(&received).unwrap(), envelope);
    }
}

#[test]
fn reads_the_end_of_a_job() {
    let received = event(JOB_ENDED_DETAIL_TYPE, &json!({"job_id": 42}));
    assert_eq!(ended_job_from_event(&received).unwrap(), 42);
    let err = envelope_from_event(&received).unwrap_err().to_string();
    assert!(
        err.contains("detail-type is Some(\"stratus.job-ended\")"),
        "{err}"
    );
}

#[test]
fn rejects_what_is_not_a_stratus_job_event() {
    let check = |event: serde_json::Value, expected: &str| {
        let err = envelope_from_event(&event).unwrap_err().to_string();
        assert!(err.starts_with("event bus: event "), "{err}");
        assert!(err.contains(expected), "{err} does not contain {expected}");
    };
    let mut other_source = event(JOB_EVENT_DETAIL_TYPE, &json!({}));
    other_source["source"] = json!("aws.ec2");
    check(
        other_source,
        "source is Some(\"aws.ec2\"), expected \"stratus\"",
    );
    check(
        event("EC2 Instance State-change Notification", &json!({})),
        "detail-type is Some(\"EC2 Instance State-change Notification\")",
    );
    check(
        event(JOB_EVENT_DETAIL_TYPE, &json!("text")),
        "event e-1: has no detail object",
    );
    check(
        event(
            JOB_EVENT_DETAIL_TYPE,
            &json!({"job_id": 1, "event": {"type": "nope"}}),
        ),
        "event e-1: the detail is not a job event envelope: unknown variant `nope`",
    );
    check(json!({"detail": {}}), "event <no id>: source is None");
}

#[test]
fn schedule_names_and_expressions() {
    let at = Timestamp::from_millis(1_795_744_747_123); // 2026-11-27T01:59:07.123Z
    assert_eq!(
        EventBridgeBus::schedule_name(7, at),
        "stratus-job-7-1795744747123"
    );
    let longest = EventBridgeBus::schedule_name(u64::MAX, Timestamp::from_secs(9_999_999_999));
    assert!(longest.len() <= 64, "{longest}");
    // Rounded up to the minute: never early.
    assert_eq!(
        EventBridgeBus::schedule_expression(at),
        "at(2026-11-27T02:00:00)"
    );
    let on_the_minute = Timestamp::from_millis(1_795_744_740_000);
    assert_eq!(
        EventBridgeBus::schedule_expression(on_the_minute),
        "at(2026-11-27T01:59:00)"
    );
    assert_eq!(
        EventBridgeBus::schedule_expression(Timestamp::from_millis(951_868_799_001)),
        "at(2000-03-01T00:00:00)"
    );
}
