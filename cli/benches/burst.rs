//! A burst of one-line jobs on the local default (run: `cargo bench -p cli --bench burst`):
//! 1,000 jobs submitted at once through the API (8 client threads) to a local control plane
//! with its default 8 node slots (4 per zone). It prints how long the submissions took, the
//! wall time until every job ended, their statuses, and the launch attempts the cloud
//! refused (from the controller logs: "failed (no capacity)"; attempts not made because the
//! zone was known full say "known full"). It asserts nothing.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{start_api, stratus};

const JOBS: usize = 1000;
const CLIENTS: usize = 8;

fn main() {
    let jobs: usize = std::env::var("STRATUS_BURST_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(JOBS);
    let home = tempfile::tempdir().unwrap();
    let (base, token) = start_api(home.path());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..CLIENTS {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::SeqCst) < jobs {
                    let body = serde_json::json!({ "yaml": "name: one\nrun: echo one line\n" });
                    let response = agent
                        .post(format!("{base}/api/v1/jobs"))
                        .header("Authorization", format!("Bearer {token}"))
                        .content_type("application/json")
                        .send(body.to_string().as_bytes())
                        .unwrap();
                    assert_eq!(response.status().as_u16(), 201);
                }
            });
        }
    });
    let submitted = started.elapsed();

    let mut ended;
    loop {
        let out = stratus(home.path(), &["jobs", "queue", "-a", "--json"]);
        let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        ended = all
            .iter()
            .filter(|j| {
                !matches!(
                    j["status"].as_str(),
                    Some("PENDING" | "STARTING" | "RUNNING" | "RECOVERING" | "CANCELLING")
                )
            })
            .count();
        if ended >= jobs || started.elapsed() > Duration::from_mins(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let wall = started.elapsed();
    let out = stratus(home.path(), &["jobs", "queue", "-a", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let succeeded = all.iter().filter(|j| j["status"] == "SUCCEEDED").count();

    // Refused launches, from every job's controller log (read from the state table directly).
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    let count = |pattern: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM events WHERE event LIKE ?1",
            [pattern],
            |r| r.get(0),
        )
        .unwrap()
    };
    let refused = count("%failed (no capacity)%");
    let known_full = count("%failed (known full)%");
    let _ = stratus(home.path(), &["api", "stop"]);

    println!(
        "burst of {jobs} one-line jobs on 8 local slots: submitted in {:.1} s, all ended in {:.1} s ({ended} ended, {succeeded} SUCCEEDED)",
        submitted.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "launch attempts the cloud refused: {refused} ({:.3} per job); attempts skipped, zone known full: {known_full}",
        refused as f64 / jobs as f64
    );
}
