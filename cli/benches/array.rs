//! A job array on the local default (run: `cargo bench -p cli --bench array`): one request
//! for 1,000 one-line jobs, at most 8 at once, on a local control plane with its default 8
//! node slots. It prints how long the request that created them took, the wall time until
//! every job ended, their statuses, and the most that ran at once (from their start and end
//! times). It asserts nothing. `STRATUS_ARRAY_JOBS` and `STRATUS_ARRAY_PARALLEL` change the
//! sizes.

mod support;

use std::time::{Duration, Instant};

use support::{start_api, stratus};

fn var(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (jobs, parallel) = (
        var("STRATUS_ARRAY_JOBS", 1000),
        var("STRATUS_ARRAY_PARALLEL", 8),
    );
    let home = tempfile::tempdir().unwrap();
    let (base, token) = start_api(home.path());
    let body = serde_json::json!({
        "yaml": "name: shard\nrun: echo rank $SKYPILOT_JOB_RANK of $SKYPILOT_NUM_JOBS\n",
        "array": { "num_jobs": jobs, "max_parallel": parallel },
    });

    let started = Instant::now();
    let response = ureq::post(format!("{base}/api/v1/jobs"))
        .header("Authorization", format!("Bearer {token}"))
        .content_type("application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let created = started.elapsed();

    let list = || -> Vec<serde_json::Value> {
        let out = stratus(home.path(), &["jobs", "queue", "--array", "1", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let mut all;
    loop {
        all = list();
        let active = all
            .iter()
            .filter(|j| {
                matches!(
                    j["status"].as_str(),
                    Some("PENDING" | "STARTING" | "RUNNING" | "RECOVERING" | "CANCELLING")
                )
            })
            .count();
        if active == 0 || started.elapsed() > Duration::from_mins(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let wall = started.elapsed();
    let _ = stratus(home.path(), &["api", "stop"]);
    let succeeded = all.iter().filter(|j| j["status"] == "SUCCEEDED").count();
    let mut edges: Vec<(i64, i32)> = all
        .iter()
        .filter_map(|j| Some((j["started_at"].as_i64()?, j["ended_at"].as_i64()?)))
        .flat_map(|(s, e)| [(s, 1), (e, -1)])
        .collect();
    edges.sort_unstable();
    let (mut now, mut most) = (0, 0);
    for (_, change) in edges {
        now += change;
        most = most.max(now);
    }

    println!(
        "array of {jobs} one-line jobs, at most {parallel} at once, on 8 local slots: created by one request in {:.2} s, all ended in {:.1} s ({succeeded} SUCCEEDED of {}); most running at once: {most}",
        created.as_secs_f64(),
        wall.as_secs_f64(),
        all.len()
    );
}
