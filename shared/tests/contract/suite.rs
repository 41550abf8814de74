//! The contract every `JobStore` adapter must meet. Each function gets a fresh, empty store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use shared::clock::Timestamp;
use shared::job::{
    ControllerEvent, JobEvent, JobId, JobRecord, JobStatus, LaunchFailure, Phase, step,
};
use shared::store::{Cursor, JobStore, StoreError};

const T: Timestamp = Timestamp::from_secs(1_700_000_000);

fn at(secs: u64) -> Timestamp {
    T.plus(Duration::from_secs(secs))
}

/// Allocates an ID and stores a one-task job under it.
async fn submit<S: JobStore>(store: &S, owner: &str, name: &str) -> JobRecord {
    let id = store.next_job_id().await.unwrap();
    let job = JobRecord::test().id(id).owner(owner).named(name);
    store.create_job(&job).await.unwrap()
}

/// Applies `event` and writes the result, fenced on what was read.
async fn advance<S: JobStore>(store: &S, job: &JobRecord, event: JobEvent) -> JobRecord {
    let next = step(job, event, at(60));
    assert!(next.changed, "the event should change the job");
    store.update_job(&next.next, job.fence()).await.unwrap()
}

fn ids(jobs: &[JobRecord]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

pub async fn create_and_get<S: JobStore>(store: &S) {
    let id = store.next_job_id().await.unwrap();
    let job = JobRecord::test()
        .id(id)
        .owner("alice")
        .named("pipe")
        .tasks(3);
    let created = store.create_job(&job).await.unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created, JobRecord { version: 1, ..job });
    // Everything comes back: pipeline, ranked candidates, and state.
    assert_eq!(store.get_job(id).await.unwrap(), created);
}

pub async fn get_missing_is_not_found<S: JobStore>(store: &S) {
    let err = store.get_job(404).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { job_id: 404 }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "job 404 not found");
    assert!(store.list_events(404).await.unwrap().is_empty());
}

pub async fn create_twice_conflicts<S: JobStore>(store: &S) {
    let first = submit(store, "alice", "train").await;
    let again = JobRecord::test().id(first.id).owner("bob").named("other");
    let err = store.create_job(&again).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { job_id, expected_version: 0 } if job_id == first.id),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(
        store.get_job(first.id).await.unwrap(),
        first,
        "the first one stays"
    );
}

pub async fn list_by_owner_pages_newest_first<S: JobStore>(store: &S) {
    for owner in ["alice", "bob", "alice", "alice", "bob", "alice", "alice"] {
        submit(store, owner, "train").await;
    }
    // alice has 1, 3, 4, 6, 7.
    let page = store.list_jobs(Some("alice"), None, 2).await.unwrap();
    assert_eq!(ids(&page.jobs), [7, 6]);
    assert_eq!(page.next, Some(Cursor::before(6)));
    let page = store.list_jobs(Some("alice"), page.next, 2).await.unwrap();
    assert_eq!(ids(&page.jobs), [4, 3]);
    let page = store.list_jobs(Some("alice"), page.next, 2).await.unwrap();
    assert_eq!(ids(&page.jobs), [1]);
    assert_eq!(page.next, None, "the last page says so");
    // A page that ends exactly at the last job has no next page either.
    let page = store.list_jobs(Some("bob"), None, 2).await.unwrap();
    assert_eq!((ids(&page.jobs), page.next), (vec![5, 2], None));

    let everyone = store.list_jobs(None, None, 4).await.unwrap();
    assert_eq!(ids(&everyone.jobs), [7, 6, 5, 4]);
    let rest = store.list_jobs(None, everyone.next, 4).await.unwrap();
    assert_eq!((ids(&rest.jobs), rest.next), (vec![3, 2, 1], None));

    assert!(
        store
            .list_jobs(Some("carol"), None, 10)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    let past_the_end = store
        .list_jobs(None, Some(Cursor::before(1)), 10)
        .await
        .unwrap();
    assert_eq!((past_the_end.jobs.len(), past_the_end.next), (0, None));
    // A zero limit still makes progress.
    assert_eq!(
        ids(&store.list_jobs(None, None, 0).await.unwrap().jobs),
        [7]
    );
    // Listed jobs are whole.
    assert_eq!(everyone.jobs[0], store.get_job(7).await.unwrap());
}

pub async fn list_active_is_the_unfinished_jobs<S: JobStore>(store: &S) {
    let a = submit(store, "alice", "a").await;
    let b = submit(store, "bob", "b").await;
    let c = submit(store, "alice", "c").await;
    let d = submit(store, "alice", "d").await;
    assert_eq!(ids(&store.list_active().await.unwrap()), [1, 2, 3, 4]);

    advance(store, &a, JobEvent::CancelRequested).await; // PENDING → CANCELLED
    let c = advance(store, &c, JobEvent::Submitted).await; // → STARTING
    let failed = JobEvent::LaunchFailed {
        cluster: c.tasks[0].cluster.clone().unwrap(),
        failure: LaunchFailure::Invalid,
        message: "bad image".into(),
    };
    let c = advance(store, &c, failed).await; // → FAILED_PRECHECKS
    // Ended jobs stay until their cleanup has run.
    assert_eq!(ids(&store.list_active().await.unwrap()), [1, 2, 3, 4]);
    let a = store.get_job(a.id).await.unwrap();
    for ended in [a, c] {
        let mut cleaned = ended.clone();
        cleaned.cleaned_at = Some(at(90));
        let stored = store.update_job(&cleaned, ended.fence()).await.unwrap();
        assert_eq!(store.get_job(ended.id).await.unwrap(), stored);
    }
    let active = store.list_active().await.unwrap();
    assert_eq!(
        ids(&active),
        [b.id, d.id],
        "oldest first, finished and cleaned ones gone"
    );
    assert_eq!(active[0], b);

    // Non-terminal statuses other than PENDING stay in the sweep.
    let d = advance(store, &d, JobEvent::Submitted).await;
    advance(store, &d, JobEvent::CancelRequested).await; // → CANCELLING
    let active = store.list_active().await.unwrap();
    assert_eq!(ids(&active), [b.id, d.id]);
    assert_eq!(active[1].status(), JobStatus::Cancelling);
}

pub async fn find_by_name_newest_first<S: JobStore>(store: &S) {
    let first = submit(store, "alice", "train").await;
    submit(store, "bob", "train").await;
    submit(store, "alice", "eval").await;
    let second = submit(store, "alice", "train").await;
    advance(store, &first, JobEvent::CancelRequested).await;

    let found = store.find_by_name("alice", "train").await.unwrap();
    assert_eq!(ids(&found), [second.id, first.id], "finished jobs included");
    assert_eq!(found[1].status(), JobStatus::Cancelled);
    assert_eq!(ids(&store.find_by_name("bob", "train").await.unwrap()), [2]);
    assert!(store.find_by_name("alice", "tra").await.unwrap().is_empty());
    assert!(
        store
            .find_by_name("carol", "train")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn transitions_bump_the_version<S: JobStore>(store: &S) {
    let job = submit(store, "alice", "train").await;
    let mut current = job.clone();
    let events = [
        JobEvent::Submitted,
        JobEvent::ClusterLaunched {
            cluster: "train-1-1".into(),
        },
        JobEvent::NodeReady {
            cluster: "train-1-1".into(),
        },
        JobEvent::TaskExited {
            cluster: "train-1-1".into(),
            phase: Phase::Run,
            codes: vec![0],
        },
    ];
    for (i, event) in events.into_iter().enumerate() {
        let written = advance(store, &current, event).await;
        assert_eq!(written.version, current.version + 1);
        let read = store.get_job(job.id).await.unwrap();
        assert_eq!(read, written, "after event {i}");
        current = read;
    }
    assert_eq!(current.status(), JobStatus::Succeeded);
    assert_eq!(current.version, 5);
    assert_eq!(
        ids(&store.list_active().await.unwrap()),
        [job.id],
        "until its cleanup runs"
    );
    let mut cleaned = current.clone();
    cleaned.cleaned_at = Some(at(120));
    store.update_job(&cleaned, current.fence()).await.unwrap();
    assert!(store.list_active().await.unwrap().is_empty());
}

pub async fn stale_writes_conflict<S: JobStore>(store: &S) {
    let job = submit(store, "alice", "train").await;
    let starting = advance(store, &job, JobEvent::Submitted).await;

    // Someone read version 1 and decides late: it must not overwrite version 2.
    let late = step(&job, JobEvent::CancelRequested, at(90)).next;
    let err = store.update_job(&late, job.fence()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                job_id: 1,
                expected_version: 1
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    // The right version but the wrong status is also a lost race.
    let mut fence = starting.fence();
    fence.status = JobStatus::Running;
    let err = store.update_job(&late, fence).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");

    assert_eq!(
        store.get_job(job.id).await.unwrap(),
        starting,
        "nothing was overwritten"
    );

    let ghost = JobRecord::test().id(99);
    let err = store.update_job(&ghost, ghost.fence()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { job_id: 99 }),
        "{err:?}"
    );
}

pub async fn counter_is_sequential_and_atomic<S: JobStore + Clone + 'static>(store: &S) {
    assert_eq!(store.next_job_id().await.unwrap(), 1);
    assert_eq!(store.next_job_id().await.unwrap(), 2);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.next_job_id().await.unwrap() })
        })
        .collect();
    let mut got = BTreeSet::new();
    for task in tasks {
        got.insert(task.await.unwrap());
    }
    assert_eq!(
        got,
        (3..=18).collect(),
        "every caller got its own ID, none skipped"
    );
    assert_eq!(store.next_job_id().await.unwrap(), 19);
    // A range (a job array's) is reserved whole: the next caller starts after it.
    assert_eq!(store.next_job_ids(1000).await.unwrap(), 20);
    assert_eq!(store.next_job_id().await.unwrap(), 1020);
}

pub async fn an_arrays_jobs_are_stored_together<S: JobStore>(store: &S) {
    let first = store.next_job_ids(40).await.unwrap();
    let jobs: Vec<JobRecord> = shared::job::array::ArrayMember::all(first, 40, 4)
        .map(|member| {
            let mut job = JobRecord::test()
                .id(member.job_id())
                .owner("alice")
                .named("shard");
            job.array = Some(member);
            job
        })
        .collect();
    let stored = store.create_jobs(&jobs).await.unwrap();
    assert_eq!(ids(&stored), ids(&jobs), "returned in order");
    assert!(stored.iter().all(|j| j.version == 1));
    // Each reads back with its place in the array; one listing holds them all.
    let last = store.get_job(first + 39).await.unwrap();
    assert_eq!(
        last.array.map(|a| (a.id, a.rank, a.size)),
        Some((first, 39, 40))
    );
    let page = store
        .list_jobs(Some("alice"), Some(Cursor::before(first + 40)), 40)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 40);
    // Storing one of them again conflicts, as `create_job` would.
    let again = store.create_jobs(&jobs[..1]).await.unwrap_err();
    assert!(matches!(again, StoreError::Conflict { .. }), "{again:?}");
}

pub async fn controller_events_keep_their_order<S: JobStore>(store: &S) {
    let job = submit(store, "alice", "train").await;
    let other = submit(store, "alice", "eval").await;
    let event = |secs, message: &str| ControllerEvent {
        at: at(secs),
        task: 0,
        status: JobStatus::Starting,
        message: message.to_owned(),
    };
    // One step's events share a timestamp; they keep the order they were appended in.
    let first = [
        event(10, "b: launching"),
        event(10, "a: launched"),
        event(10, "c: running"),
    ];
    store.append_events(job.id, &first).await.unwrap();
    store
        .append_events(job.id, &[event(20, "d: preempted")])
        .await
        .unwrap();
    store
        .append_events(other.id, &[event(15, "elsewhere")])
        .await
        .unwrap();
    store.append_events(job.id, &[]).await.unwrap();

    let log = store.list_events(job.id).await.unwrap();
    let messages: Vec<&str> = log.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        ["b: launching", "a: launched", "c: running", "d: preempted"]
    );
    assert_eq!(log[0], first[0]);
    assert_eq!(
        store.list_events(other.id).await.unwrap(),
        [event(15, "elsewhere")]
    );
}

/// N writers race the same transition from the same read: exactly one wins, the others get
/// `Conflict`, and the stored job is exactly the winner's.
pub async fn racing_updates_one_wins<S: JobStore + Clone + 'static>(store: &S) {
    const N: usize = 16;
    let job = submit(store, "alice", "train").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (store, job, barrier) = (store.clone(), job.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                // Half try to start the job, half to cancel it: different next records.
                let event = if i % 2 == 0 {
                    JobEvent::Submitted
                } else {
                    JobEvent::CancelRequested
                };
                let next = step(&job, event, at(i as u64)).next;
                barrier.wait().await;
                store.update_job(&next, job.fence()).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(written) => winners.push(written),
            Err(StoreError::Conflict {
                job_id,
                expected_version: 1,
            }) if job_id == job.id => conflicts += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    assert_eq!(conflicts, N - 1);
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!(stored, winners[0], "the stored job is the winner's, whole");
    assert_eq!(stored.version, 2);
}

// ---- node facts -----------------------------------------------------------------------------

fn cluster_at(cluster: &str, task: usize, attempt: u32) -> shared::facts::ClusterRef {
    shared::facts::ClusterRef {
        cluster: cluster.to_owned(),
        task,
        attempt,
    }
}

pub async fn node_facts_are_recorded_once_and_read_per_cluster<S: JobStore>(store: &S) {
    use shared::facts::{ClusterFact, NodeFact};
    use shared::provider::NodeInfo;
    let job = submit(store, "alice", "train").await;
    let first = cluster_at("train-1-1", 0, 1);
    let second = cluster_at("train-1-2", 0, 2);
    assert_eq!(
        store.cluster_facts(job.id, "train-1-1").await.unwrap(),
        None
    );
    let nodes = vec![NodeInfo {
        rank: 0,
        instance_id: "i-1".into(),
        ip: "10.0.0.1".into(),
    }];
    store
        .record_cluster(job.id, &first, ClusterFact::Launched(nodes.clone()))
        .await
        .unwrap();
    for (rank, fact) in [
        (0, NodeFact::Ready),
        (1, NodeFact::Ready),
        (0, NodeFact::Started(Phase::Setup)),
        (
            0,
            NodeFact::Spawned {
                phase: Phase::Setup,
                pid: 4321,
            },
        ),
        (0, NodeFact::Seen(at(20))),
        (0, NodeFact::Seen(at(10))),
        (
            0,
            NodeFact::Exited {
                phase: Phase::Setup,
                code: 0,
                chunks: Some(3),
            },
        ),
        // A later report of the same exit cannot change it.
        (
            0,
            NodeFact::Exited {
                phase: Phase::Setup,
                code: 9,
                chunks: Some(7),
            },
        ),
        (1, NodeFact::Started(Phase::Setup)),
    ] {
        store.record_node(job.id, &first, rank, fact).await.unwrap();
    }
    store
        .record_node(job.id, &second, 0, NodeFact::Ready)
        .await
        .unwrap();

    let facts = store
        .cluster_facts(job.id, "train-1-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((facts.task, facts.attempt), (0, 1));
    assert_eq!(facts.nodes, nodes);
    assert!(!facts.terminated);
    assert_eq!(facts.ready(), 2);
    assert_eq!(
        facts.exits(Phase::Setup),
        std::collections::BTreeMap::from([(0, 0)])
    );
    assert_eq!(facts.ranks[&0].setup.chunks, Some(3));
    assert_eq!(facts.ranks[&0].setup.pid, Some(4321));
    assert_eq!(facts.ranks[&1].setup.pid, None);
    assert!(facts.ranks[&1].setup.started && facts.ranks[&1].setup.exit.is_none());
    assert_eq!(facts.last_seen(), Some(at(20)));
    assert!(!facts.ranks[&0].run.started);

    store
        .record_cluster(job.id, &first, ClusterFact::Terminated)
        .await
        .unwrap();
    let all = store.job_facts(job.id).await.unwrap();
    let names: Vec<&str> = all.iter().map(|c| c.cluster.as_str()).collect();
    assert_eq!(names, ["train-1-1", "train-1-2"], "by task, then attempt");
    assert!(
        all[0].terminated && all[0].nodes == nodes,
        "nothing else changed"
    );
    assert_eq!((all[1].attempt, all[1].ready()), (2, 1));
    // Another job's facts are its own, and reading a job never reads its facts.
    let other = submit(store, "bob", "train").await;
    assert!(store.job_facts(other.id).await.unwrap().is_empty());
    assert_eq!(store.get_job(job.id).await.unwrap(), job);
}

pub async fn followers_extend_never_shorten<S: JobStore>(store: &S) {
    let job = submit(store, "alice", "train").await;
    assert_eq!(store.followed_until(job.id).await.unwrap(), None);
    store.follow(job.id, at(60)).await.unwrap();
    store.follow(job.id, at(30)).await.unwrap();
    assert_eq!(store.followed_until(job.id).await.unwrap(), Some(at(60)));
    store.follow(job.id, at(90)).await.unwrap();
    assert_eq!(store.followed_until(job.id).await.unwrap(), Some(at(90)));
}

pub async fn a_claim_is_one_jobs<S: JobStore>(store: &S) {
    store.claim("alice/s-1", 1).await.unwrap();
    store.claim("alice/s-1", 1).await.unwrap();
    let err = store.claim("alice/s-1", 2).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { job_id: 2, .. }),
        "{err:?}"
    );
    store.claim("alice/s-2", 2).await.unwrap();
}

pub async fn zone_capacity_only_moves_forward<S: JobStore>(store: &S) {
    use shared::facts::CapacityEvent;
    let zone = "aws/us-east-1a";
    assert_eq!(
        store.zone_capacity(zone).await.unwrap(),
        shared::facts::ZoneCapacity::default()
    );
    store
        .record_capacity(zone, CapacityEvent::Exhausted(at(10)))
        .await
        .unwrap();
    store
        .record_capacity(zone, CapacityEvent::Exhausted(at(5)))
        .await
        .unwrap();
    let hint = store.zone_capacity(zone).await.unwrap();
    assert_eq!((hint.exhausted_at, hint.freed_at), (Some(at(10)), None));
    assert!(hint.known_full(at(20), Duration::from_mins(1)));
    assert!(!hint.known_full(at(200), Duration::from_mins(1)), "stale");
    store
        .record_capacity(zone, CapacityEvent::Freed(at(15)))
        .await
        .unwrap();
    let hint = store.zone_capacity(zone).await.unwrap();
    assert_eq!(hint.freed_at, Some(at(15)));
    assert!(
        !hint.known_full(at(20), Duration::from_mins(1)),
        "freed since"
    );
    assert_eq!(
        store.zone_capacity("aws/us-east-1b").await.unwrap(),
        shared::facts::ZoneCapacity::default()
    );
}
