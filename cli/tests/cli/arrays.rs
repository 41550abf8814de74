//! Job arrays (`--num-jobs N --max-parallel M`) through the real binary.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Home;
use crate::text;

/// A home whose sweep runs every 2 s: the sweep is the safety net (lost wake-ups), and with
/// a thousand jobs listed a faster one only spends the two cores.
fn quiet_home() -> Home {
    let home = Home::new();
    std::fs::write(
        home.path().join("config.yaml"),
        "control_plane:\n  poll_interval_ms: 2000\n  heartbeat_timeout_secs: 60\n",
    )
    .unwrap();
    home
}

/// Every job of array `id`, as `queue --array --json` shows them.
fn members(home: &Home, id: u64) -> Vec<Value> {
    let out = home.run(&["jobs", "queue", "--array", &id.to_string(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn wait_all_ended(home: &Home, id: u64, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let jobs = members(home, id);
        let ended = jobs.iter().all(|j| {
            j["status"]
                .as_str()
                .and_then(|s| s.parse::<shared::job::JobStatus>().ok())
                .is_some_and(shared::job::JobStatus::is_terminal)
        });
        if ended {
            return jobs;
        }
        assert!(Instant::now() < deadline, "the array did not end in time");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The most jobs between their start and end at any one time (ends before starts at a tie:
/// a lane's next job starts strictly after the previous ended).
fn most_at_once(jobs: &[Value]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for job in jobs {
        let start = job["started_at"].as_i64().expect("every job started");
        let end = job["ended_at"].as_i64().expect("every job ended");
        edges.push((start, 1));
        edges.push((end, -1));
    }
    edges.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, change) in edges {
        now += change;
        most = most.max(now);
    }
    usize::try_from(most).unwrap()
}

#[test]
fn a_thousand_jobs_eight_at_a_time_each_with_its_rank() {
    let home = quiet_home();
    let task = home.file(
        "shard.yaml",
        "name: shard\nresources:\n  infra: local\nrun: echo \"rank $SKYPILOT_JOB_RANK of $SKYPILOT_NUM_JOBS\"\n",
    );
    let out = home.run(&[
        "jobs",
        "launch",
        "-y",
        "--num-jobs",
        "1000",
        "--max-parallel",
        "8",
        &task,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("Managed job array 1: 1000 jobs, IDs 1-1000, at most 8 at once."),
        "{said}"
    );

    let jobs = wait_all_ended(&home, 1, Duration::from_mins(15));
    assert_eq!(jobs.len(), 1000);
    let mut ranks: Vec<u64> = jobs
        .iter()
        .map(|j| {
            assert_eq!(j["status"], "SUCCEEDED", "{j}");
            assert_eq!(j["array"]["id"], 1);
            assert_eq!(j["array"]["size"], 1000);
            assert_eq!(
                j["array"]["rank"].as_u64().unwrap() + 1,
                j["id"].as_u64().unwrap()
            );
            j["array"]["rank"].as_u64().unwrap()
        })
        .collect();
    ranks.sort_unstable();
    assert_eq!(
        ranks,
        (0..1000).collect::<Vec<_>>(),
        "each job its own rank"
    );
    let most = most_at_once(&jobs);
    assert!((1..=8).contains(&most), "{most} jobs ran at once");
    // Each job saw its own rank: a sample of lanes' first, second and last jobs.
    for rank in [0u64, 7, 8, 15, 500, 999] {
        let out = home.run(&[
            "jobs",
            "logs",
            "1",
            "--rank",
            &rank.to_string(),
            "--no-follow",
        ]);
        assert!(
            text(&out.stdout).contains(&format!("rank {rank} of 1000")),
            "{}",
            text(&out.stdout)
        );
    }
    let queue = text(&home.run(&["jobs", "queue"]).stdout);
    assert!(
        queue.contains("1-1000") && queue.contains("1000 SUCCEEDED"),
        "{queue}"
    );
}

#[test]
fn an_array_is_one_queue_line_and_cancelled_as_one() {
    let home = Home::new();
    let release = home.path().join("release");
    let task = home.file(
        "wait.yaml",
        &format!(
            "name: waits\nrun: |\n  echo started $SKYPILOT_JOB_RANK\n  while [ ! -f {r} ]; do sleep 0.2; done\n",
            r = release.display()
        ),
    );
    let out = home.run(&[
        "jobs",
        "launch",
        "-y",
        "--num-jobs",
        "5",
        "--max-parallel",
        "2",
        &task,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    home.wait_status(1, &["RUNNING"], Duration::from_mins(1));
    home.wait_status(2, &["RUNNING"], Duration::from_mins(1));

    // One line for the array, counts by status; `--array` lists its jobs.
    let queue = text(&home.run(&["jobs", "queue"]).stdout);
    assert!(
        queue.contains("1-5") && queue.contains("3 PENDING, 2 RUNNING"),
        "{queue}"
    );
    assert!(
        queue.contains("Array 1: 5 jobs (IDs 1-5), at most 2 at once"),
        "{queue}"
    );
    let listed = text(&home.run(&["jobs", "queue", "--array", "1"]).stdout);
    assert_eq!(
        listed.lines().filter(|l| l.contains("waits")).count(),
        5,
        "{listed}"
    );
    assert!(
        home.controller_log(3)
            .contains("Waiting for job(s) 1 (the previous in its array's lane)")
    );

    // A RUNNING job's first line reaches the log within a second or so: wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = home.run(&["jobs", "logs", "1", "--rank", "1", "--no-follow"]);
        if text(&log.stdout).contains("started 1") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        text(&log.stdout).contains("started 1"),
        "{}",
        text(&log.stdout)
    );

    let cancel = home.run(&["jobs", "cancel", "--array", "1", "-y"]);
    assert!(cancel.status.success(), "{}", text(&cancel.stderr));
    for id in 1..=5 {
        home.wait_status(id, &["CANCELLED"], Duration::from_mins(1));
    }
    for id in 3..=5 {
        assert!(
            home.launched_clusters(id).is_empty(),
            "job {id} never launched"
        );
    }
    let again = home.run(&["jobs", "cancel", "--array", "1", "-y"]);
    assert!(text(&again.stdout).contains("No active jobs in managed job array 1."));
}

#[test]
fn array_flags_and_ids_that_do_not_fit_are_bad_input() {
    let home = Home::new();
    let task = home.file("one.yaml", "name: one\nrun: echo one\n");
    for (args, says) in [
        (vec!["--num-jobs", "0"], "0 is not in 1..=1000"),
        (vec!["--num-jobs", "1001"], "1001 is not in 1..=1000"),
        (vec!["--max-parallel", "2"], "--num-jobs"),
        (
            vec!["--num-jobs", "2", "--max-parallel", "0"],
            "0 is not in 1..",
        ),
    ] {
        let mut all = vec!["jobs", "launch", "-y"];
        all.extend(&args);
        all.push(&task);
        let out = home.run(&all);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    let out = home.run(&["jobs", "launch", "-y", "--num-jobs", "2", &task]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let not_first = home.run(&["jobs", "queue", "--array", "2"]);
    assert_eq!(not_first.status.code(), Some(2));
    assert!(
        text(&not_first.stderr).contains("rank 1 of array 1"),
        "{}",
        text(&not_first.stderr)
    );
    let no_rank = home.run(&["jobs", "logs", "1", "--rank", "2", "--no-follow"]);
    assert_eq!(no_rank.status.code(), Some(2));
    assert!(
        text(&no_rank.stderr).contains("array 1 has ranks 0 to 1"),
        "{}",
        text(&no_rank.stderr)
    );
    let none = home.run(&["jobs", "cancel", "--array", "99", "-y"]);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none.stderr));
}
