//! Live logs through the real binary: every line of every rank of a multi-node job exactly
//! once and in per-rank order, whether followed by the attached `jobs launch` or by
//! `jobs logs`; and a log larger than any one response, read whole a page at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::Home;
use crate::text;

/// Lines each rank prints.
const LINES: usize = 40;

/// A job whose ranks print `LINES` numbered lines each, at random moments, so that their
/// chunks interleave.
fn interleaved(home: &Home, nodes: u32) -> String {
    home.file(
        &format!("interleaved-{nodes}.yaml"),
        &format!(
            "name: mix{nodes}\nnum_nodes: {nodes}\nrun: |\n  for i in $(seq 1 {LINES}); do\n    echo \"r$SKYPILOT_NODE_RANK-$i\"\n    sleep 0.0$((RANDOM % 4))\n  done\n"
        ),
    )
}

/// Checks `output` holds, for every rank, lines 1..=LINES exactly once and in order, each
/// under its own rank's prefix.
fn check_ranks(output: &str, nodes: u32, what: &str) {
    let mut seen: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let output = &crate::plain_prefixes(output);
    for line in output.lines() {
        let Some((prefix, body)) = line.split_once(") ") else {
            continue;
        };
        let Some(rank) = prefix
            .split_once("rank=")
            .and_then(|(_, r)| r.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((said, i)) = body
            .strip_prefix('r')
            .and_then(|b| b.split_once('-'))
            .and_then(|(r, i)| Some((r.parse::<u32>().ok()?, i.parse::<usize>().ok()?)))
        else {
            continue;
        };
        assert_eq!(
            said, rank,
            "{what}: a line under another rank's prefix:\n{output}"
        );
        seen.entry(rank).or_default().push(i);
    }
    for rank in 0..nodes {
        let expected: Vec<usize> = (1..=LINES).collect();
        assert_eq!(
            seen.get(&rank).map(Vec::as_slice).unwrap_or_default(),
            expected.as_slice(),
            "{what}: rank {rank}'s lines are not all there exactly once, in order:\n{output}"
        );
    }
}

#[test]
fn multi_node_output_is_followed_exactly_once_20_times() {
    let home = Home::with_env(&[("STRATUS_LOCAL_SLOTS", "zone-a=16,zone-b=16")]);
    let files = [(2, interleaved(&home, 2)), (3, interleaved(&home, 3))];
    // 20 rounds, four at a time: in each, one job is followed by its attached launch and the
    // other (launched detached) by `jobs logs`; the sizes swap roles every round.
    let rounds: Vec<usize> = (0..20).collect();
    for batch in rounds.chunks(4) {
        std::thread::scope(|scope| {
            for &round in batch {
                let (home, files) = (&home, &files);
                scope.spawn(move || {
                    let (attached, by_logs) = if round % 2 == 0 {
                        (&files[0], &files[1])
                    } else {
                        (&files[1], &files[0])
                    };
                    let id = home.launch_detached(&by_logs.1, &[]);
                    let logs_out = std::thread::scope(|inner| {
                        let follower = inner.spawn(|| home.run(&["jobs", "logs", &id.to_string()]));
                        let out = home.run(&["jobs", "launch", "-y", &attached.1]);
                        let stdout = text(&out.stdout);
                        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
                        check_ranks(&stdout, attached.0, &format!("round {round}, launch"));
                        follower.join().unwrap()
                    });
                    let stdout = text(&logs_out.stdout);
                    assert_eq!(logs_out.status.code(), Some(0), "{stdout}");
                    check_ranks(&stdout, by_logs.0, &format!("round {round}, logs {id}"));
                    // And read back whole afterwards.
                    check_ranks(
                        &home.logs(id),
                        by_logs.0,
                        &format!("round {round}, no-follow"),
                    );
                });
            }
        });
    }
}

#[test]
fn a_10_mb_log_is_read_whole_in_pages_under_6_mb() {
    let home = Home::new();
    // 10 MB: 131,072 lines of 79 characters and a newline, then a marker.
    let file = home.file(
        "big.yaml",
        "name: big\nrun: |\n  yes \"$(printf '%079d' 7)\" | head -n 131072\n  echo the-end\n",
    );
    let id = home.launch_detached(&file, &[]);
    home.wait_status(id, &["SUCCEEDED"], Duration::from_mins(1));
    let log = home.logs(id);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 131_073, "every line, once");
    assert_eq!(lines[0], format!("(big) {:079}", 7));
    assert_eq!(lines.last().copied(), Some("(big) the-end"));

    // The API's pages: none near Lambda's 6 MB response limit, together the whole log.
    let mut after = String::new();
    let (mut pages, mut total) = (0, 0);
    loop {
        let (status, body) = home.api_get(&format!("/api/v1/jobs/{id}/logs?after={after}"));
        assert_eq!(status, 200, "{}", text(&body));
        assert!(body.len() < 6_000_000, "a page of {} bytes", body.len());
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        pages += 1;
        total += page["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["data"].as_str().unwrap().len())
            .sum::<usize>();
        after = page["next"].as_str().unwrap().to_owned();
        if page["done"] == true {
            break;
        }
        assert!(pages < 100, "the reader never finished");
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(total, 131_072 * 80 + "the-end\n".len());
}
