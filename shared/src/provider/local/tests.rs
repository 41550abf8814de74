//! The local cloud against real processes: a shell stand-in for the agent that writes what it
//! was given and sleeps. Every test kills what it started (the `Local` guard's `Drop`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::process::{ProcStat, parse_stat, running_groups, stop_groups};
use super::*;
use crate::optimizer::Candidate;
use crate::provider::AgentBoot;

/// Writes `boot` (rank, job, cluster, API URL, token, node dir) in its cwd, appends a line to
/// the cluster's `spawned`, then sleeps in a child, so a group kill must reach both.
const STAND_IN: &str = r#"echo "$STRATUS_NODE_RANK $STRATUS_JOB_ID $STRATUS_CLUSTER $STRATUS_API_URL $STRATUS_AGENT_TOKEN $STRATUS_NODE_DIR" > boot.tmp && mv boot.tmp boot; echo x >> ../spawned; sleep 1000"#;

struct Local {
    provider: LocalProvider,
    _dir: tempfile::TempDir,
}

impl Local {
    fn new(slots: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let provider = LocalProvider::new(dir.path().join("local"), PathBuf::from("unused"))
            .with_agent_command(["sh", "-c", STAND_IN])
            .with_config(LocalConfig::default().with_slots(slots).unwrap())
            .with_grace(Duration::from_millis(500));
        Self {
            provider,
            _dir: dir,
        }
    }

    fn record(&self, cluster: &str) -> ClusterRecord {
        self.provider.layout.read(cluster).unwrap().unwrap()
    }

    fn cluster_dir(&self, cluster: &str) -> PathBuf {
        self.provider.layout.cluster_dir(cluster)
    }

    async fn describe(&self, region: &str) -> Vec<(String, ClusterHealth)> {
        let states = self.provider.describe_region(region).await.unwrap();
        states.into_iter().map(|s| (s.cluster, s.health)).collect()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        for record in self.provider.layout.list().unwrap_or_default() {
            stop_groups(&record.nodes, Duration::ZERO);
        }
    }
}

fn spec(cluster: &str, zone: &str, nodes: u32) -> ClusterSpec {
    ClusterSpec {
        job_id: 7,
        task: 0,
        cluster: cluster.to_owned(),
        owner: "alice".to_owned(),
        candidate: Candidate {
            cloud: Cloud::Local,
            region: zone.to_owned(),
            zone: zone.to_owned(),
            instance_type: "local-small".to_owned(),
            vcpus: 2.0,
            memory_gb: 8.0,
            accelerator: None,
            use_spot: true,
            hourly_price: 0.0,
            num_nodes: nodes,
            alternative: 0,
        },
        num_nodes: nodes,
        agent: AgentBoot {
            api_url: "http://127.0.0.1:46580".to_owned(),
            token: "tok".to_owned(),
            cadence: crate::agent_protocol::AgentCadence::LOCAL,
        },
        labels: BTreeMap::new(),
        image_id: None,
        disk_size_gb: None,
    }
}

/// Polls `f` every 10 ms for up to 5 s.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_eventually(path: &Path) -> String {
    eventually(&path.display().to_string(), || {
        std::fs::read_to_string(path).ok()
    })
    .await
}

/// Lines in the cluster's `spawned` file once it has `at_least`, after a pause for stragglers.
async fn spawned(local: &Local, cluster: &str, at_least: usize) -> usize {
    let path = local.cluster_dir(cluster).join("spawned");
    let count = || std::fs::read_to_string(&path).map_or(0, |s| s.lines().count());
    eventually("spawned nodes", || (count() >= at_least).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    count()
}

fn groups(record: &ClusterRecord) -> Vec<i32> {
    record.nodes.iter().map(|n| n.pgid).collect()
}

fn is_no_capacity(e: &ProviderError) -> bool {
    matches!(e, ProviderError::NoCapacity { .. })
}

#[tokio::test]
async fn launch_starts_each_node_in_its_own_group_and_sandbox() {
    let local = Local::new("");
    let nodes = local
        .provider
        .launch(&spec("c1", "zone-a", 2))
        .await
        .unwrap();
    let ips: Vec<(u32, &str)> = nodes.iter().map(|n| (n.rank, n.ip.as_str())).collect();
    assert_eq!(ips, [(0, "127.0.0.1"), (1, "127.0.0.2")]);

    let record = local.record("c1");
    assert_eq!(record.status, Status::Up);
    assert_eq!(
        (record.job_id, record.zone.as_str(), record.spot),
        (7, "zone-a", true)
    );
    let own = rustix::process::getpgrp().as_raw_pid();
    for (node, info) in record.nodes.iter().zip(&nodes) {
        assert_eq!(info.instance_id, node.pgid.to_string());
        assert_eq!(node.pgid, node.pid);
        assert_ne!(node.pgid, own);
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", node.pid)).unwrap();
        assert_eq!(
            parse_stat(&stat).unwrap().pgrp,
            node.pid,
            "own process group"
        );
        let dir = local.provider.layout.node_dir("c1", node.rank);
        let boot = read_eventually(&dir.join("boot")).await;
        let expected = format!(
            "{} 7 c1 http://127.0.0.1:46580 tok {}\n",
            node.rank,
            dir.display()
        );
        assert_eq!(boot, expected, "env and cwd of node {}", node.rank);
    }
    assert_eq!(running_groups(&groups(&record)).len(), 2);
    assert_eq!(
        local.describe("zone-a").await,
        [("c1".to_owned(), ClusterHealth::Running)]
    );
    assert_eq!(local.describe("zone-b").await, []);
    assert_eq!(local.provider.find_by_job(7).await.unwrap().len(), 1);
    assert_eq!(local.provider.find_by_job(8).await.unwrap().len(), 0);
}

#[tokio::test]
async fn relaunch_returns_the_same_nodes_and_spawns_nothing() {
    let local = Local::new("");
    let first = local
        .provider
        .launch(&spec("c1", "zone-a", 2))
        .await
        .unwrap();
    assert_eq!(spawned(&local, "c1", 2).await, 2);
    let again = local
        .provider
        .launch(&spec("c1", "zone-a", 2))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(spawned(&local, "c1", 2).await, 2);

    let mut other_job = spec("c1", "zone-a", 2);
    other_job.job_id = 8;
    let err = local.provider.launch(&other_job).await.unwrap_err();
    assert!(matches!(err, ProviderError::Invalid { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_launches_of_one_cluster_spawn_one_set_of_nodes() {
    let local = Local::new("zone-a=2");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            // A provider per task, as separate control-plane processes would have.
            let provider = local.provider.clone();
            tokio::spawn(async move { provider.launch(&spec("c1", "zone-a", 2)).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().unwrap());
    }
    assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
    assert_eq!(spawned(&local, "c1", 2).await, 2);
    assert_eq!(local.record("c1").nodes.len(), 2);
}

#[tokio::test]
async fn a_full_zone_is_no_capacity_and_the_other_zone_still_launches() {
    let local = Local::new("zone-a=3,zone-b=1");
    local
        .provider
        .launch(&spec("c1", "zone-a", 2))
        .await
        .unwrap();
    let err = local
        .provider
        .launch(&spec("c2", "zone-a", 2))
        .await
        .unwrap_err();
    assert!(is_no_capacity(&err), "{err}");
    assert_eq!(
        err.to_string(),
        "no capacity: local zone zone-a: 2 node(s) wanted, 1 of 3 slot(s) free"
    );
    assert!(!local.cluster_dir("c2").exists(), "nothing recorded");
    local
        .provider
        .launch(&spec("c2", "zone-b", 1))
        .await
        .unwrap();
    local
        .provider
        .launch(&spec("c3", "zone-a", 1))
        .await
        .unwrap();

    let empty = Local::new("zone-a=0");
    let err = empty
        .provider
        .launch(&spec("c1", "zone-a", 1))
        .await
        .unwrap_err();
    assert!(is_no_capacity(&err), "{err}");
}

#[tokio::test]
async fn launches_that_do_not_fit_the_local_cloud_are_invalid() {
    let local = Local::new("zone-c=1");
    let mut aws = spec("c1", "us-east-1", 1);
    aws.candidate.cloud = Cloud::Aws;
    let mut wrong_zone = spec("c1", "zone-a", 1);
    wrong_zone.candidate.zone = "zone-b".to_owned();
    let cases = [
        aws,
        spec("c1", "zone-x", 1),
        wrong_zone,
        spec("c1", "zone-a", 0),
        spec("../escape", "zone-a", 1),
    ];
    let mut messages = Vec::new();
    for case in &cases {
        match local.provider.launch(case).await {
            Err(ProviderError::Invalid { message }) => messages.push(message),
            other => panic!("{case:?}: {other:?}"),
        }
    }
    expect_test::expect![[r#"
        the local cloud cannot launch aws/us-east-1/us-east-1 local-small[Spot]
        local cloud: unknown region 'zone-x' (known: zone-a, zone-b, zone-c; add zones with STRATUS_LOCAL_SLOTS or local.slots in config.yaml)
        local cloud: region 'zone-a' has one zone, 'zone-a', not 'zone-b'
        local cloud: num_nodes 0 is not between 1 and 254
        local cloud: cluster name '../escape' is not letters, digits, '-', '_' and '.'"#]]
    .assert_eq(&messages.join("\n"));
    local
        .provider
        .launch(&spec("c1", "zone-c", 1))
        .await
        .unwrap();
}

#[tokio::test]
async fn preempt_reports_preempted_kills_the_nodes_and_frees_the_slots() {
    let local = Local::new("zone-a=2");
    local
        .provider
        .launch(&spec("c1", "zone-a", 2))
        .await
        .unwrap();
    spawned(&local, "c1", 2).await;
    let record = local.record("c1");

    let state = local.provider.preempt("c1").await.unwrap().unwrap();
    let preempted = ClusterHealth::Preempted {
        reason: PREEMPT_REASON.to_owned(),
    };
    assert_eq!(state.health, preempted);
    assert!(
        running_groups(&groups(&record)).is_empty(),
        "sh and sleep are gone"
    );
    assert!(record.nodes.iter().all(|n| !alive(n)));
    assert_eq!(
        local.describe("zone-a").await,
        [("c1".to_owned(), preempted.clone())]
    );

    local
        .provider
        .launch(&spec("c2", "zone-a", 2))
        .await
        .unwrap();
    let again = local.provider.preempt("c1").await.unwrap().unwrap();
    assert_eq!(again.health, preempted);
    assert_eq!(local.provider.preempt("nope").await.unwrap(), None);
    // Terminating a preempted cluster (the control plane's cleanup) forgets it.
    local.provider.terminate("zone-a", "c1").await.unwrap();
    assert!(!local.cluster_dir("c1").exists());
    assert!(
        local
            .describe("zone-a")
            .await
            .iter()
            .all(|(c, _)| c != "c1")
    );
}

#[tokio::test]
async fn a_node_killed_behind_our_back_fails_the_cluster_and_frees_its_slots() {
    let local = Local::new("zone-a=2");
    local
        .provider
        .launch(&spec("c1", "zone-a", 2))
        .await
        .unwrap();
    let node = local.record("c1").nodes[1].clone();
    rustix::process::kill_process_group(Pid::from_raw(node.pgid).unwrap(), Signal::KILL).unwrap();

    let prefix = format!("node 1 (pid {}) exited (see ", node.pid);
    let health = eventually("Failed", || {
        let health = local.provider.health(&local.record("c1"));
        matches!(health, ClusterHealth::Failed { .. }).then_some(health)
    })
    .await;
    let ClusterHealth::Failed { reason } = health else {
        unreachable!()
    };
    assert!(reason.starts_with(&prefix), "{reason}");
    assert!(reason.ends_with("node-1/agent.log)"), "{reason}");
    assert!(matches!(
        local.describe("zone-a").await[0].1,
        ClusterHealth::Failed { .. }
    ));

    local
        .provider
        .launch(&spec("c2", "zone-a", 2))
        .await
        .unwrap();
    local.provider.terminate("zone-a", "c1").await.unwrap();
    assert!(
        local
            .describe("zone-a")
            .await
            .iter()
            .all(|(c, _)| c != "c1")
    );
}

#[tokio::test]
async fn terminate_stops_every_process_and_is_idempotent() {
    let local = Local::new("zone-a=2");
    local
        .provider
        .launch(&spec("c1", "zone-a", 2))
        .await
        .unwrap();
    spawned(&local, "c1", 2).await;
    let record = local.record("c1");

    // Another region's terminate does not touch it.
    local.provider.terminate("zone-b", "c1").await.unwrap();
    assert_eq!(running_groups(&groups(&record)).len(), 2);

    local.provider.terminate("zone-a", "c1").await.unwrap();
    assert!(running_groups(&groups(&record)).is_empty());
    // Over: the folder (record, node folders) is gone, and so is the cluster from listings.
    assert!(!local.cluster_dir("c1").exists());
    assert_eq!(local.describe("zone-a").await, []);
    local.provider.terminate("zone-a", "c1").await.unwrap();
    local.provider.terminate("zone-a", "nope").await.unwrap();
    local.provider.terminate("zone-a", "../..").await.unwrap();
    local
        .provider
        .launch(&spec("c2", "zone-a", 2))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_launch_whose_agent_cannot_start_leaves_nothing_behind() {
    let local = Local::new("zone-a=1");
    let broken = local
        .provider
        .clone()
        .with_agent_command(["/nonexistent/stratus-agent"]);
    let err = broken.launch(&spec("c1", "zone-a", 1)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("starting node 0 of c1"), "{err}");
    assert_eq!(local.describe("zone-a").await, []);
    local
        .provider
        .launch(&spec("c1", "zone-a", 1))
        .await
        .unwrap();
}

#[test]
fn stat_lines_are_read_past_odd_command_names() {
    let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 2 3\n";
    assert_eq!(
        parse_stat(line),
        Some(ProcStat {
            state: 'S',
            pgrp: 4242,
            start_ticks: 987_654
        })
    );
    assert_eq!(parse_stat("4242 (short) Z 1"), None);
}

#[test]
fn slots_parse_from_the_environment_form() {
    let check = |spec: &str| match parse_slots(spec) {
        Ok(slots) => format!("{slots:?}"),
        Err(e) => e.to_string(),
    };
    expect_test::expect![[r#"
        {"zone-a": 0, "zone-b": 2}
        {}
        {"zone-c": 7}
        STRATUS_LOCAL_SLOTS: 'zone-a' is not ZONE=COUNT (write ZONE=COUNT,..., e.g. zone-a=0,zone-b=2)
        STRATUS_LOCAL_SLOTS: '=2' names no zone (write ZONE=COUNT,..., e.g. zone-a=0,zone-b=2)
        STRATUS_LOCAL_SLOTS: 'zone-a=-1' has a COUNT that is not a whole number >= 0 (write ZONE=COUNT,..., e.g. zone-a=0,zone-b=2)
        STRATUS_LOCAL_SLOTS: 'zone-a=2' sets a zone given earlier (write ZONE=COUNT,..., e.g. zone-a=0,zone-b=2)"#]]
    .assert_eq(
        &[
            "zone-a=0,zone-b=2",
            " , ",
            " zone-c = 7 ,",
            "zone-a",
            "=2",
            "zone-a=-1",
            "zone-a=1,zone-a=2",
        ]
        .map(check)
        .join("\n"),
    );

    let config: LocalConfig = serde_yaml::from_str("slots: {zone-a: 1}").unwrap();
    let config = config.with_slots("zone-b=0").unwrap();
    let slots = ["zone-a", "zone-b", "zone-c"].map(|z| config.slots_for(z));
    assert_eq!(slots, [Some(1), Some(0), None]);
    assert_eq!(
        LocalConfig::default().slots_for("zone-a"),
        Some(DEFAULT_SLOTS_PER_ZONE)
    );
    assert!(serde_yaml::from_str::<LocalConfig>("slot: {}").is_err());
}
