//! Local-mode speed, measured through the real `stratus` binary (run: `cargo bench -p cli`).
//!
//! - launch → SUCCEEDED wall time of `examples/hello.yaml` with the local control plane
//!   already running (SkyPilot's managed jobs take minutes; the goal here is under 2 s);
//! - `stratus jobs queue` (latest 50, and `-a` for all) with 1,000 jobs in the state table
//!   (goal: under 200 ms).
//!
//! It prints figures; it asserts nothing, so a slow machine never fails a build.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::stratus;

use shared::clock::{Clock, SystemClock};
use shared::job::JobRecord;
use shared::optimizer::Candidate;
use shared::spec::{self, Overrides};
use shared::store::{JobStore, SqliteStore};

const LAUNCHES: usize = 10;
const JOBS: usize = 1000;
const QUEUE_RUNS: usize = 10;

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = samples[samples.len() / 2];
    let p90 = samples[(samples.len() * 9 / 10).min(samples.len() - 1)];
    println!(
        "{name:<44} n={:<3} min {:>7.1} ms  median {:>7.1} ms  p90 {:>7.1} ms  max {:>7.1} ms",
        samples.len(),
        ms(samples[0]),
        ms(median),
        ms(p90),
        ms(*samples.last().unwrap())
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let home = tempfile::tempdir().unwrap();
    let hello = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/hello.yaml");
    let hello = hello.to_str().unwrap();

    let started = Instant::now();
    let out = stratus(home.path(), &["api", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "control plane start (first use)                {:>7.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    let mut launches = Vec::new();
    for _ in 0..LAUNCHES {
        let t = Instant::now();
        let out = stratus(home.path(), &["jobs", "launch", "-y", hello]);
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("(status: SUCCEEDED)"));
        launches.push(took);
    }
    summary("launch hello.yaml -> SUCCEEDED (CP running)", launches);

    // Fill the state table the way submissions do, through the store itself.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(home.path().join("state.db"))
            .await
            .unwrap();
        let pipeline = spec::load(
            &std::fs::read_to_string(hello).unwrap(),
            &Overrides::default(),
        )
        .unwrap()
        .pipeline;
        let candidate: Candidate = serde_json::from_value(serde_json::json!({
            "cloud": "local", "region": "zone-a", "zone": "zone-a", "instance_type": "local-small",
            "vcpus": 2.0, "memory_gb": 8.0, "accelerator": null, "use_spot": false,
            "hourly_price": 0.0, "num_nodes": 1, "alternative": 0
        }))
        .unwrap();
        for _ in 0..JOBS {
            let id = store.next_job_id().await.unwrap();
            let job = JobRecord::new(
                id,
                "bench",
                pipeline.clone(),
                vec![vec![candidate.clone()]],
                SystemClock.now(),
            );
            store.create_job(&job).await.unwrap();
        }
    });

    for (label, args) in [
        (
            "jobs queue (latest 50) with 1,010 jobs",
            vec!["jobs", "queue"],
        ),
        (
            "jobs queue -a (all 1,010) with 1,010 jobs",
            vec!["jobs", "queue", "-a"],
        ),
        (
            "jobs queue -a --json with 1,010 jobs",
            vec!["jobs", "queue", "-a", "--json"],
        ),
    ] {
        let mut samples = Vec::new();
        for _ in 0..QUEUE_RUNS {
            let t = Instant::now();
            let out = stratus(home.path(), &args);
            samples.push(t.elapsed());
            assert!(out.status.success());
        }
        summary(label, samples);
    }
    // The jobs stored directly stay PENDING: stopping the control plane leaves them for good.
    let _ = stratus(home.path(), &["api", "stop"]);
}
