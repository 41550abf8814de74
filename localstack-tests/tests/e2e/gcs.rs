//! GCS bucket mounts on cloud nodes, against the fake Cloud Storage (with IAM Credentials and
//! STS downscoping): a spot job on GCE checkpointing to a `store: gcs` MOUNT resumes from it
//! after a preemption, in a bucket created at submit and deleted with the job; an EC2 node
//! copies a prefix of an existing GCS bucket (cross-cloud); a missing bucket and another
//! account's are refused at submit. Each node's token is downscoped to its task's parts of
//! its buckets, and the fake refuses everything else.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use shared::job::JobStatus;

use crate::buckets::{assert_resumed, checkpoint_task};
use crate::fake::storage::FakeStorage;
use crate::harness::{Options, World};

const LONG: Duration = Duration::from_secs(90);

fn gcp_world() -> Options {
    Options {
        gce: true,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_job_on_gce_checkpointing_to_a_gcs_mount_resumes_from_it_after_a_preemption() {
    let world = World::new(gcp_world()).await;
    let gcs = world.gcs.clone().unwrap();
    let compute = world.gce.clone().unwrap();
    let bucket = format!("ckpt-{}", world.env.bucket);
    let id = world
        .submit(&checkpoint_task(&bucket, "gcp", "e2-standard-2", "gcs"))
        .await;
    // The `name:` bucket exists from the submit on, labelled with the job that created it.
    let created = gcs
        .bucket(&bucket)
        .expect("the bucket was created at submit");
    assert_eq!(
        created["labels"][shared::buckets::CREATED_BY_TAG],
        id.to_string(),
        "{created}"
    );
    assert_eq!(created["location"], "US", "{created}");

    let job = world.wait_status(id, &[JobStatus::Running], LONG).await;
    let deadline = Instant::now() + LONG;
    while !world.logs(id).await.contains("step 4/") {
        assert!(Instant::now() < deadline, "the run never reached step 4");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The sweep waits while GCE takes the VM back (its agent gets SIGTERM and writes the
    // mount back), so the replacement starts only once the checkpoint is in the bucket.
    world.sweeping.store(false, Ordering::SeqCst);
    let first = job.candidates[0][job.tasks[0].candidate.unwrap()].clone();
    let instance = compute
        .instances_in(&first.zone)
        .into_iter()
        .next()
        .expect("the GCE instance");
    compute.preempt(&first.zone, instance["name"].as_str().unwrap());
    let saved = saved_step(&gcs, &bucket).await;
    assert!(saved >= 4, "the mount was written back: step {saved}");
    world.sweeping.store(true, Ordering::SeqCst);

    let (job, log) = world.wait_succeeded(id).await;
    assert_eq!(job.recoveries(), 1, "{log}");
    let logs = world.logs(id).await;
    assert_resumed(&logs);
    // The job created the bucket and it is not persistent: its cleanup deletes it.
    let deadline = Instant::now() + LONG;
    while gcs.bucket(&bucket).is_some() {
        assert!(Instant::now() < deadline, "the bucket was not deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The nodes' tokens reached this bucket alone, read and write.
    let boundaries = gcs.issued_boundaries();
    assert!(!boundaries.is_empty(), "no token was downscoped");
    for boundary in &boundaries {
        assert_eq!(
            boundary["accessBoundaryRules"],
            json!([{
                "availableResource": format!("//storage.googleapis.com/projects/_/buckets/{bucket}"),
                "availablePermissions": ["inRole:roles/storage.objectUser"],
            }]),
        );
    }
    assert_eq!(gcs.denied(), Vec::<String>::new());
    gcs.assert_valid();
    compute.assert_valid();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec2_node_copies_a_gcs_prefix_and_bad_gcs_buckets_are_refused_at_submit() {
    let world = World::new(gcp_world()).await;
    let gcs = world.gcs.clone().unwrap();
    let bucket = format!("data-{}", world.env.bucket);
    gcs.add_bucket(&bucket, "US");
    for (name, body) in [
        ("set/a.txt", "alpha"),
        ("set/deep/b.txt", "beta"),
        ("settings.txt", "not under set/"),
        ("other.txt", "x"),
    ] {
        gcs.put_object(&bucket, name, body.as_bytes());
    }
    let task = format!(
        "name: copy\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nfile_mounts:\n  ~/data: gs://{bucket}/set\nrun: cat ~/data/a.txt ~/data/deep/b.txt; ls ~/data\n"
    );
    let id = world.submit(&task).await;
    let (job, log) = world.wait_succeeded(id).await;
    assert_eq!(job.status(), JobStatus::Succeeded, "{log}");
    let logs = world.logs(id).await;
    assert!(logs.contains("alphabeta"), "{logs}");
    assert!(
        !logs.contains("other.txt") && !logs.contains("settings"),
        "only the prefix: {logs}"
    );
    // Read only, under `set/` only.
    let boundary = gcs.issued_boundaries().pop().expect("a downscoped token");
    let rule = &boundary["accessBoundaryRules"][0];
    assert_eq!(
        rule["availablePermissions"],
        json!(["inRole:roles/storage.objectViewer"])
    );
    let condition = rule["availabilityCondition"]["expression"]
        .as_str()
        .unwrap();
    assert!(
        condition.contains(&format!("buckets/{bucket}/objects/set/")),
        "{condition}"
    );
    assert!(
        gcs.bucket(&bucket).is_some(),
        "a bucket the job did not create stays"
    );

    // Refused at submit with a 400 naming the field: a bucket that does not exist, and a
    // `name:` another account holds.
    let missing = format!("missing-{}", world.env.bucket);
    let foreign = format!("foreign-{}", world.env.bucket);
    gcs.add_foreign_bucket(&foreign);
    for (mount, says) in [
        (format!("source: gs://{missing}"), "does not exist"),
        (format!("name: {foreign}\n    store: gcs"), "may not use it"),
    ] {
        let (status, text) = world.post_job(json!({ "yaml": format!("name: nope\nresources:\n  infra: gcp\nfile_mounts:\n  /data:\n    {mount}\n    mode: MOUNT\nrun: ls /data\n") })).await;
        assert_eq!(status, 400, "{mount}: {text}");
        assert!(
            text.contains("file_mounts./data") && text.contains(says),
            "{mount}: {text}"
        );
    }
    assert_eq!(gcs.denied(), Vec::<String>::new());
    gcs.assert_valid();
}

/// The step the checkpoint in `bucket` holds, once it holds step 4 or later (the heartbeat's
/// write-back may have put an earlier one there; the one at SIGTERM brings it up to date).
async fn saved_step(gcs: &FakeStorage, bucket: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let step: Option<u32> = gcs
            .object(bucket, "progress.step")
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.trim().parse().ok());
        if let Some(step) = step.filter(|s| *s >= 4) {
            return step;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of step 4 or later reached the bucket (it holds {step:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
