//! The local control plane under stress, through the real binary: a large upload does not
//! grow its memory, and a crash right after a burst of submits loses no job.

use std::time::{Duration, Instant};

use crate::harness::Home;
use crate::text;

/// The resident memory of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_200_mb_upload_streams_through_the_control_plane() {
    let home = Home::new();
    assert!(home.run(&["api", "start"]).status.success());
    let pid = home.server_pid();
    let before = rss_kib(pid);
    // 200 MB that does not compress, as an archive of a data folder would not.
    let mut body = vec![0u8; 200 * 1024 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in body.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let (status, answer) = home.api_put("/api/v1/uploads?session=big-1", body);
    assert_eq!(status, 200, "{}", text(&answer));
    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    println!("control plane RSS: {before} KiB before, {after} KiB after a 200 MB upload");
    assert!(
        grown < 64 * 1024,
        "the upload grew the control plane by {grown} KiB"
    );
    let key: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let key = key["key"].as_str().unwrap();
    let stored = std::fs::metadata(home.path().join("blobs").join(key)).unwrap();
    assert_eq!(stored.len(), 200 * 1024 * 1024);
}

#[test]
fn a_control_plane_killed_after_a_burst_of_submits_loses_no_job() {
    let home = Home::with_env(&[("STRATUS_LOCAL_SLOTS", "zone-a=8,zone-b=8")]);
    assert!(home.run(&["api", "start"]).status.success());
    let pid = home.server_pid();
    let body = br#"{"yaml": "name: burst\nrun: echo done\n"}"#;
    let submitted = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..15)
                        .filter(|_| home.api_post("/api/v1/jobs", body.to_vec()).0 == 201)
                        .count()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // SIGKILL while submits and their first events are in flight.
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .sum::<usize>()
    });
    println!("{submitted} submits answered 201 before the control plane died");
    // Any command starts it again; every job it recorded ends, none stays PENDING.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = home.run(&["jobs", "queue", "-a", "--json"]);
        let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let open: Vec<&serde_json::Value> =
            jobs.iter().filter(|j| j["status"] != "SUCCEEDED").collect();
        assert!(
            jobs.len() >= submitted,
            "{} recorded, {submitted} answered",
            jobs.len()
        );
        if open.is_empty() {
            println!("all {} recorded jobs SUCCEEDED", jobs.len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} jobs did not end: {:?}",
            open.len(),
            jobs.len(),
            open.iter()
                .map(|j| (&j["id"], &j["status"]))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
