use super::*;
use crate::blob::LocalBlobStore;
use crate::facts::{ClusterFacts, ClusterRef, NodeFacts};

const JOB: JobId = 7;

fn cluster(task: usize, attempt: u32, ranks: u32) -> ClusterFacts {
    let mut facts = ClusterFacts::empty(&ClusterRef {
        cluster: format!("t-{JOB}-{attempt}"),
        task,
        attempt,
    });
    for rank in 0..ranks {
        let mut node = NodeFacts::default();
        node.run.started = true;
        facts.ranks.insert(rank, node);
    }
    facts
}

fn at(facts: &ClusterFacts) -> ClusterRef {
    ClusterRef {
        cluster: facts.cluster.clone(),
        task: facts.task,
        attempt: facts.attempt,
    }
}

async fn write(blobs: &LocalBlobStore, facts: &ClusterFacts, rank: u32, seq: u64, text: &str) {
    blobs
        .put(
            &chunk_key(JOB, &at(facts), Phase::Run, rank, seq),
            text.as_bytes().to_vec(),
        )
        .await
        .unwrap();
}

/// Reads until nothing is new, returning the text per rank and the cursor.
async fn drain(
    blobs: &LocalBlobStore,
    facts: &[ClusterFacts],
    cursor: &mut LogCursor,
) -> (BTreeMap<u32, String>, LogRead) {
    let mut text: BTreeMap<u32, String> = BTreeMap::new();
    loop {
        // Through the text form, as a client carries it.
        let read = read(blobs, JOB, facts, None, cursor).await.unwrap();
        for piece in &read.pieces {
            text.entry(piece.rank).or_default().push_str(&piece.data);
        }
        *cursor = LogCursor::parse(&read.cursor.to_string()).unwrap();
        if !read.more {
            return (text, read);
        }
    }
}

#[tokio::test]
async fn concurrent_writers_are_read_exactly_once_in_order() {
    // The old cursor (the last key read) skipped rank 0's chunks written after a rank-1 chunk.
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobStore::new(dir.path());
    let facts = vec![cluster(0, 1, 2)];
    let mut cursor = LogCursor::default();
    write(&blobs, &facts[0], 0, 0, "a0 ").await;
    write(&blobs, &facts[0], 1, 0, "b0 ").await;
    write(&blobs, &facts[0], 1, 1, "b1 ").await;
    let (first, _) = drain(&blobs, &facts, &mut cursor).await;
    write(&blobs, &facts[0], 0, 1, "a1 ").await;
    write(&blobs, &facts[0], 0, 2, "a2 ").await;
    let (second, read) = drain(&blobs, &facts, &mut cursor).await;
    assert_eq!(first[&0], "a0 ");
    assert_eq!(first[&1], "b0 b1 ");
    assert_eq!(second[&0], "a1 a2 ");
    assert!(!second.contains_key(&1));
    assert!(!read.complete, "the streams can still grow");
    let (third, _) = drain(&blobs, &facts, &mut cursor).await;
    assert!(third.is_empty(), "nothing is repeated");
}

#[tokio::test]
async fn streams_end_with_their_chunk_count_or_their_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobStore::new(dir.path());
    let mut facts = vec![cluster(0, 1, 2), cluster(0, 2, 1)];
    write(&blobs, &facts[0], 0, 0, "x").await;
    write(&blobs, &facts[0], 1, 0, "y").await;
    write(&blobs, &facts[1], 0, 0, "z").await;
    facts[0].ranks.get_mut(&0).unwrap().run.chunks = Some(1);
    facts[0].terminated = true;
    let mut cursor = LogCursor::default();
    let (text, read) = drain(&blobs, &facts, &mut cursor).await;
    assert_eq!((text[&0].as_str(), text[&1].as_str()), ("xz", "y"));
    assert!(!read.complete, "attempt 2 may still write");
    assert_eq!(cursor.to_string(), "0.1.r.0.1d_0.1.r.1.1d_0.2.r.0.1");
    facts[1].ranks.get_mut(&0).unwrap().run.chunks = Some(1);
    let (_, read) = drain(&blobs, &facts, &mut cursor).await;
    assert!(read.complete);
}

#[tokio::test]
async fn pages_stay_under_the_budget_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobStore::new(dir.path());
    let facts = vec![cluster(0, 1, 1)];
    let chunk = "line with \"quotes\" and a tab\t\n".repeat(8 * 1024);
    for seq in 0..40 {
        write(&blobs, &facts[0], 0, seq, &chunk).await;
    }
    let mut cursor = LogCursor::default();
    let mut total = 0;
    let mut pages = 0;
    loop {
        let read = read(&blobs, JOB, &facts, None, &cursor).await.unwrap();
        let size: usize = read
            .pieces
            .iter()
            .map(|p| json_len(&p.data) + PIECE_OVERHEAD + p.ip.as_deref().map_or(0, json_len))
            .sum();
        assert!(size <= PAGE_BYTES, "{size}");
        total += read.pieces.iter().map(|p| p.data.len()).sum::<usize>();
        pages += 1;
        cursor = read.cursor;
        if !read.more {
            break;
        }
    }
    assert_eq!(total, chunk.len() * 40);
    assert!(pages > 2, "{pages}");
}

#[tokio::test]
async fn a_chunk_over_the_limit_is_skipped_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobStore::new(dir.path());
    let facts = vec![cluster(0, 1, 1)];
    write(
        &blobs,
        &facts[0],
        0,
        0,
        &"x".repeat(MAX_LOG_CHUNK_BYTES + 1),
    )
    .await;
    write(&blobs, &facts[0], 0, 1, "after\n").await;
    let (text, _) = drain(&blobs, &facts, &mut LogCursor::default()).await;
    assert!(
        text[&0].starts_with("[stratus: log chunk 0 of"),
        "{}",
        &text[&0][..80]
    );
    assert!(text[&0].ends_with("after\n"));
}

#[test]
fn cursors_round_trip_and_refuse_garbage() {
    let cursor = LogCursor::parse("0.1.s.0.3_0.1.r.2.4d").unwrap();
    assert_eq!(cursor.to_string(), "0.1.s.0.3_0.1.r.2.4d");
    assert_eq!(LogCursor::parse("").unwrap(), LogCursor::default());
    for bad in [
        "x",
        "0.1.q.0.3",
        "0.1.s.0",
        "0.1.s.0.3.9",
        "0.1.s.-1.3",
        "jobs/7/logs/000",
    ] {
        assert!(LogCursor::parse(bad).is_err(), "{bad}");
    }
}
