//! Beyond SkyPilot, through the real binary on the local cloud: time limits, cost caps, a
//! monthly budget, `NO_RECOVERY` and `max_recoveries`, and the queue's cost.

use std::time::{Duration, Instant};

use crate::harness::Home;
use crate::text;

const LONG: Duration = Duration::from_mins(1);

/// The local cloud priced at $36 an hour a node ($0.01 a second), spot or not.
fn priced(home: &Home) {
    let built_in = include_str!("../../../shared/data/catalog/local.csv");
    let priced: String = built_in
        .lines()
        .map(|line| match line.strip_suffix(",0,0") {
            Some(row) => format!("{row},36,36\n"),
            None => format!("{line}\n"),
        })
        .collect();
    std::fs::create_dir_all(home.path().join("catalogs")).unwrap();
    std::fs::write(home.path().join("catalogs/local.csv"), priced).unwrap();
}

fn reason(job: &serde_json::Value) -> String {
    job["failure_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn max_duration_stops_the_task_and_its_processes() {
    let home = Home::new();
    let file = home.file("slow.yaml", "name: slow\nmax_duration: 3s\nrun: sleep 60\n");
    let id = home.launch_detached(&file, &[]);
    home.wait_status(id, &["RUNNING"], LONG);
    let running = Instant::now();
    let job = home.wait_status(id, &["FAILED", "SUCCEEDED"], Duration::from_secs(10));
    assert!(running.elapsed() < Duration::from_secs(10));
    assert_eq!(job["status"], "FAILED");
    assert!(reason(&job).contains("max_duration of 3s"), "{job}");
    home.wait_no_nodes(Duration::from_secs(5));
    let controller = home.controller_log(id);
    assert!(
        controller.contains("reached its max_duration"),
        "{controller}"
    );
}

#[test]
fn max_duration_from_the_flag_and_max_attempt_duration() {
    let home = Home::new();
    let file = home.file(
        "attempt.yaml",
        "name: attempt\nstratus:\n  max_attempt_duration: 2s\nrun: sleep 60\n",
    );
    let id = home.launch_detached(&file, &[]);
    let job = home.wait_status(id, &["FAILED", "SUCCEEDED"], LONG);
    assert!(reason(&job).contains("max_attempt_duration of 2s"), "{job}");
    let plain = home.file("plain.yaml", "name: plain\nrun: sleep 60\n");
    let id = home.launch_detached(&plain, &["--max-duration", "2s"]);
    let job = home.wait_status(id, &["FAILED", "SUCCEEDED"], LONG);
    assert!(reason(&job).contains("max_duration of 2s"), "{job}");
    home.wait_no_nodes(Duration::from_secs(10));
}

#[test]
fn a_cap_that_cannot_pay_for_the_duration_is_refused_at_submit() {
    let home = Home::new();
    priced(&home);
    let file = home.file(
        "dear.yaml",
        "name: dear\nmax_duration: 1h\nstratus:\n  max_cost: 5\nrun: sleep 1\n",
    );
    // An hour at $36 cannot fit in $5.
    let out = home.run(&["jobs", "launch", "-y", &file]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("max_cost: $5.00 (stratus.max_cost or --max-cost) cannot pay"),
        "{err}"
    );
    let out = home.run(&["jobs", "queue", "-a", "--json"]);
    assert_eq!(text(&out.stdout).trim(), "[]", "nothing was stored");
    // The flag wins over the file: $40 pays for the hour.
    let id = home.launch_detached(&file, &["--max-cost", "40", "--max-duration", "1s"]);
    home.wait_status(id, &["FAILED", "SUCCEEDED"], LONG);
}

#[test]
fn a_job_over_its_cap_while_running_is_stopped_and_the_queue_shows_its_cost() {
    let home = Home::new();
    priced(&home);
    let file = home.file(
        "capped.yaml",
        "name: capped\nstratus:\n  max_cost: 0.04\nrun: sleep 60\n",
    );
    let id = home.launch_detached(&file, &[]);
    let job = home.wait_status(id, &["FAILED", "SUCCEEDED"], LONG);
    assert_eq!(job["status"], "FAILED");
    assert!(reason(&job).contains("max_cost of $0.0400"), "{job}");
    home.wait_no_nodes(Duration::from_secs(10));
    // The cost is the ledger's: at least the cap, a little more for the teardown.
    let job = home.job(id);
    let cost = job["cost"]["usd"].as_f64().unwrap();
    assert!((0.04..0.2).contains(&cost), "{job}");
    assert_eq!(job["cost"]["estimate"], true);
    let attempts = &job["tasks"][0]["attempts"];
    assert_eq!(attempts.as_array().unwrap().len(), 1, "{job}");
    assert!((attempts[0]["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-9);
    // The teardown's confirmation may still move the ledger's end a little after the nodes
    // are gone, so the table is compared with the JSON read just before it, until they agree.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cost = home.job(id)["cost"]["usd"].as_f64().unwrap();
        let queue = text(&home.run(&["jobs", "queue"]).stdout);
        assert!(queue.contains("EST. COST"), "{queue}");
        if queue.contains(&format!("${cost:.4}")) {
            break;
        }
        assert!(Instant::now() < deadline, "${cost:.4} never shown: {queue}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_user_over_the_monthly_budget_is_refused() {
    let home = Home::new();
    priced(&home);
    std::fs::write(
        home.path().join("config.yaml"),
        "control_plane:\n  poll_interval_ms: 200\n  heartbeat_timeout_secs: 20\njobs:\n  monthly_budget: 0.02\n",
    )
    .unwrap();
    let file = home.file(
        "spend.yaml",
        "name: spend\nmax_duration: 3s\nrun: sleep 60\n",
    );
    let id = home.launch_detached(&file, &[]);
    home.wait_status(id, &["FAILED"], LONG);
    let out = home.run(&["jobs", "launch", "-y", "-d", &file]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("monthly budget:") && err.contains("jobs.monthly_budget"),
        "{err}"
    );
}

#[test]
fn a_job_waiting_past_its_pending_limit_ends_failed_no_resource() {
    let home = Home::with_env(&[("STRATUS_LOCAL_SLOTS", "zone-a=0,zone-b=0")]);
    let file = home.file(
        "waits.yaml",
        "name: waits\nstratus:\n  max_pending: 3s\nrun: echo never\n",
    );
    let id = home.launch_detached(&file, &[]);
    let job = home.wait_status(
        id,
        &["FAILED_NO_RESOURCE", "SUCCEEDED", "FAILED"],
        Duration::from_secs(20),
    );
    assert_eq!(job["status"], "FAILED_NO_RESOURCE", "{job}");
    assert!(reason(&job).contains("max_pending of 3s"), "{job}");
}

#[test]
fn no_recovery_fails_at_the_first_preemption() {
    let home = Home::new();
    let file = home.file(
        "once.yaml",
        "name: once\nresources:\n  use_spot: true\n  job_recovery: NO_RECOVERY\nrun: sleep 60\n",
    );
    let id = home.launch_detached(&file, &[]);
    home.wait_status(id, &["RUNNING"], LONG);
    home.run(&["local", "preempt", &id.to_string()]);
    let job = home.wait_status(id, &["FAILED", "SUCCEEDED"], LONG);
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["recoveries"], 0);
    assert!(reason(&job).contains("NO_RECOVERY"), "{job}");
    assert_eq!(home.launched_clusters(id).len(), 1);
    home.wait_no_nodes(Duration::from_secs(10));
}

#[test]
fn max_recoveries_allows_one_recovery_then_fails() {
    let home = Home::new();
    let file = home.file(
        "twice.yaml",
        "name: twice\nresources:\n  use_spot: true\n  job_recovery:\n    max_recoveries: 1\nrun: sleep 60\n",
    );
    let id = home.launch_detached(&file, &[]);
    home.wait_status(id, &["RUNNING"], LONG);
    home.run(&["local", "preempt", &id.to_string()]);
    home.wait_controller(id, "Recovered: the task is running on");
    let job = home.wait_status(id, &["RUNNING"], LONG);
    assert_eq!(job["recoveries"], 1);
    home.run(&["local", "preempt", &id.to_string()]);
    let job = home.wait_status(id, &["FAILED", "SUCCEEDED"], LONG);
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["recoveries"], 1);
    assert!(reason(&job).contains("max_recoveries"), "{job}");
    assert_eq!(home.launched_clusters(id).len(), 2);
    home.wait_no_nodes(Duration::from_secs(10));
}
