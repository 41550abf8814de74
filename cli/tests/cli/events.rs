//! Job events through the real binary: webhooks configured in `$STRATUS_HOME/config.yaml`
//! receive exactly the transitions they asked for, in order, once each, in the documented
//! schema; a webhook that fails is retried, gives up with a line in the controller log that
//! keeps its URL's secret out, and never holds up the job.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Home;

const LONG: Duration = Duration::from_mins(1);

/// A webhook receiver on 127.0.0.1: records each body, answers `status`.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start(status: u16, path: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
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
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Self { url, bodies }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

#[test]
fn webhooks_get_the_filtered_transitions_in_order_once_and_a_failing_one_never_delays_the_job() {
    let good = Receiver::start(200, "/hooks/good");
    let failing = Receiver::start(500, "/hooks/SECRET-TOKEN-123");
    let home = Home::new();
    std::fs::write(
        home.path().join("config.yaml"),
        format!(
            "control_plane:\n  poll_interval_ms: 200\n  heartbeat_timeout_secs: 20\n\
             notifications:\n  webhooks:\n\
             \x20   - url: {}\n      notify_on: [RUNNING, RECOVERING, SUCCEEDED]\n\
             \x20   - url: {}\n      notify_on: [SUCCEEDED]\n      format: slack\n",
            good.url, failing.url
        ),
    )
    .unwrap();
    // The first attempt runs until it is preempted; the second (the marker exists) ends.
    let marker = home.path().join("first-attempt");
    let file = home.file(
        "told.yaml",
        &format!(
            "name: told\nresources:\n  use_spot: true\nrun: |\n  if [ -f {m} ]; then echo done; exit 0; fi\n  touch {m}\n  echo first\n  sleep 60\n",
            m = marker.display()
        ),
    );
    let id = home.launch_detached(&file, &[]);
    home.wait_status(id, &["RUNNING"], LONG);
    let deadline = Instant::now() + LONG;
    while !home.logs(id).contains("first") {
        assert!(Instant::now() < deadline, "{}", home.logs(id));
        std::thread::sleep(Duration::from_millis(100));
    }
    home.run(&["local", "preempt", &id.to_string()]);
    let job = home.wait_status(id, &["SUCCEEDED", "FAILED"], LONG);
    assert_eq!(job["status"], "SUCCEEDED");
    assert_eq!(job["recoveries"], 1);

    // The good webhook: exactly the filtered transitions, in order, once each.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !good.bodies().iter().any(|b| b.contains("\"SUCCEEDED\"")) {
        assert!(Instant::now() < deadline, "{:?}", good.bodies());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The failing webhook was still being retried when the good one heard of the end: it
    // holds up neither the job nor the other webhook.
    assert!(failing.bodies().len() < 5, "{:?}", failing.bodies());
    let events: Vec<Value> = good
        .bodies()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["status"].as_str().unwrap(),
                e["previous_status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("RUNNING", "STARTING"),
            ("RECOVERING", "RUNNING"),
            ("RUNNING", "RECOVERING"),
            ("SUCCEEDED", "RUNNING"),
        ]
    );
    for event in &events {
        assert_eq!(event["version"], 1);
        assert_eq!(event["scope"], "job");
        assert_eq!(event["job_id"], id);
        assert_eq!(event["name"], "told");
        assert_eq!(event["task_name"], "told");
        assert!(event["owner"].is_string() && event["cost_usd"].is_number());
        assert!(event["at"].is_number() && event["record_version"].is_number());
    }
    assert_eq!(events[1]["recoveries"], 1);
    assert!(events[0]["infra"].as_str().unwrap().starts_with("Local ("));

    // The failing one: five attempts of the same Slack body, then a line in the controller
    // log that names the host, never the secret in the path.
    let line = home.wait_controller(id, "Notification of SUCCEEDED to http://127.0.0.1:");
    assert!(
        line.contains("failed after 5 attempts (HTTP 500); dropped."),
        "{line}"
    );
    assert!(!line.contains("SECRET-TOKEN-123"), "{line}");
    let tries = failing.bodies();
    assert_eq!(tries.len(), 5, "{tries:?}");
    assert!(tries.iter().all(|b| b == &tries[0]));
    let slack: Value = serde_json::from_str(&tries[0]).unwrap();
    assert_eq!(
        slack["text"].as_str().unwrap().split(". Cost").next(),
        Some(format!("Stratus job {id} (told) is SUCCEEDED (was RUNNING)").as_str())
    );
}
