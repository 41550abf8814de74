//! S3 bucket mounts on cloud nodes, with the job's data identity: a spot job checkpointing to
//! a MOUNT resumes from it after a preemption on a new cluster; a `name:` bucket is created at
//! submit and deleted with the job when not persistent; COPY downloads an existing bucket; a
//! bucket that does not exist is refused at submit, naming the field.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use shared::job::JobStatus;

use crate::harness::{Options, World, ec2_client};

const LONG: Duration = Duration::from_secs(90);

/// examples/checkpoint.yaml on spot `infra`/`instance_type`: a step a half second, the step
/// saved to the mount, a `name:` bucket of `store`.
pub fn checkpoint_task(bucket: &str, infra: &str, instance_type: &str, store: &str) -> String {
    format!(
        r#"name: ckpt
resources:
  infra: {infra}
  instance_type: {instance_type}
  use_spot: true
envs:
  STEPS: 14
  STEP_SECONDS: 0.5
file_mounts:
  ~/checkpoint:
    name: {bucket}
    store: {store}
    mode: MOUNT
    persistent: false
run: |
  state=~/checkpoint/progress.step
  step=0
  if [ -f "$state" ]; then
    step=$(cat "$state")
    echo "Resuming from checkpoint at step $step."
  fi
  while [ "$step" -lt "$STEPS" ]; do
    step=$((step + 1))
    sleep "$STEP_SECONDS"
    echo "$step" > "$state"
    echo "step $step/$STEPS"
  done
  echo "Training done after $STEPS steps."
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_job_checkpointing_to_an_s3_mount_resumes_from_it_after_a_preemption() {
    let world = World::new(Options::default()).await;
    let s3 = s3_client(&world);
    let bucket = format!("ckpt-{}", world.env.bucket);
    let id = world
        .submit(&checkpoint_task(&bucket, "aws", "m6i.large", "s3"))
        .await;
    // The `name:` bucket exists from the submit on, tagged with the job that created it.
    let tags = s3
        .get_bucket_tagging()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        tags.tag_set()
            .iter()
            .any(|t| t.key() == shared::buckets::CREATED_BY_TAG && t.value() == id.to_string()),
        "{tags:?}"
    );
    let job = world.wait_status(id, &[JobStatus::Running], LONG).await;
    let deadline = Instant::now() + LONG;
    while !world.logs(id).await.contains("step 4/") {
        assert!(Instant::now() < deadline, "the run never reached step 4");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The sweep waits while the machine is taken back, so that the replacement is asked for
    // only once the checkpoint is in the bucket (on AWS the two-minute warning gives that time).
    world.sweeping.store(false, Ordering::SeqCst);
    let first = job.candidates[0][job.tasks[0].candidate.unwrap()].clone();
    let instance = world.instances(&first.region, id).await[0]
        .instance_id()
        .unwrap()
        .to_owned();
    ec2_client(&world.sdk, &first.region)
        .terminate_instances()
        .instance_ids(&instance)
        .send()
        .await
        .unwrap();
    let saved = saved_step(&s3, &bucket).await;
    assert!(saved >= 4, "the mount was written back: step {saved}");
    let state_change = json!({
        "version": "0", "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
        "region": first.region,
        "detail": { "instance-id": instance, "state": "terminated" }
    });
    functions::on_poll(&world.ctx, state_change).await.unwrap();
    world.sweeping.store(true, Ordering::SeqCst);

    let (job, _) = world.wait_succeeded(id).await;
    assert_eq!(job.recoveries(), 1);
    let logs = world.logs(id).await;
    assert_resumed(&logs);
    // The job created the bucket and it is not persistent: its cleanup deletes it.
    let deadline = Instant::now() + LONG;
    while s3.head_bucket().bucket(&bucket).send().await.is_ok() {
        assert!(Instant::now() < deadline, "the bucket was not deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_downloads_an_existing_bucket_and_a_missing_one_is_refused_at_submit() {
    let world = World::new(Options::default()).await;
    let s3 = s3_client(&world);
    let bucket = format!("data-{}", world.env.bucket);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for (key, body) in [
        ("set/a.txt", "alpha"),
        ("set/deep/b.txt", "beta"),
        ("other.txt", "x"),
    ] {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let task = format!(
        "name: copy\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nfile_mounts:\n  ~/data: s3://{bucket}/set\nrun: cat ~/data/a.txt ~/data/deep/b.txt; ls ~/data\n"
    );
    let id = world.submit(&task).await;
    let (job, _) = world.wait_succeeded(id).await;
    assert_eq!(job.status(), JobStatus::Succeeded);
    let logs = world.logs(id).await;
    assert!(logs.contains("alphabeta"), "{logs}");
    assert!(!logs.contains("other.txt"), "only the prefix: {logs}");
    // A bucket the job did not create outlives it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s3.head_bucket().bucket(&bucket).send().await.is_ok());

    // A `name:` bucket that exists already is used, never taken over: not deleted with a
    // job that did not create it, even when not persistent.
    let task = format!(
        "name: reuse\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nfile_mounts:\n  ~/data:\n    name: {bucket}\n    mode: MOUNT\n    persistent: false\nrun: cat ~/data/set/a.txt\n"
    );
    let id = world.submit(&task).await;
    world.wait_succeeded(id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s3.head_bucket().bucket(&bucket).send().await.is_ok());

    // Refused at submit with a 400 naming the field: a bucket that does not exist, the
    // deployment's own bucket, and a bucket another user's job made.
    let missing = format!("missing-{}", world.env.bucket);
    let theirs = format!("theirs-{}", world.env.bucket);
    s3.create_bucket().bucket(&theirs).send().await.unwrap();
    s3.put_bucket_tagging()
        .bucket(&theirs)
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(
                    aws_sdk_s3::types::Tag::builder()
                        .key(shared::buckets::OWNER_TAG)
                        .value("someone-else")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    for (source, says) in [
        (missing.as_str(), "does not exist"),
        (world.env.bucket.as_str(), "this deployment's own"),
        (theirs.as_str(), "another user's job"),
    ] {
        let (status, text) = world.post_job(json!({ "yaml": format!("name: nope\nresources:\n  infra: aws\nfile_mounts:\n  /data:\n    source: s3://{source}\n    mode: MOUNT\nrun: ls /data\n") })).await;
        assert_eq!(status, 400, "{source}: {text}");
        assert!(
            text.contains("file_mounts./data") && text.contains(says),
            "{source}: {text}"
        );
    }
}

/// The checkpoint task's log: the new cluster resumed from step 4 or later and finished.
pub fn assert_resumed(logs: &str) {
    let resumed: u32 = logs
        .split("Resuming from checkpoint at step ")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the new cluster did not resume:\n{logs}"));
    assert!(resumed >= 4, "resumed at step {resumed}:\n{logs}");
    assert!(logs.contains("Training done after 14 steps."), "{logs}");
}

/// Waits until `bucket` holds no object `key` (the cleanup deleted it).
async fn wait_object_gone(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    let deadline = Instant::now() + LONG;
    while s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "{key} was not deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The step the checkpoint in `bucket` holds, once one is there (waits for it).
async fn saved_step(s3: &aws_sdk_s3::Client, bucket: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(object) = s3
            .get_object()
            .bucket(bucket)
            .key("progress.step")
            .send()
            .await
        {
            let bytes = object.body.collect().await.unwrap().into_bytes();
            if let Ok(step) = String::from_utf8_lossy(&bytes).trim().parse::<u32>()
                && step >= 4
            {
                return step;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint reached the bucket"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn s3_client(world: &World) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&world.sdk)
            .force_path_style(true)
            .build(),
    )
}

/// A workdir archive (`data.txt`) and its SHA-256.
fn small_archive() -> (Vec<u8>, String) {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let data = b"rows from the intermediate bucket\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "data.txt", &data[..])
        .unwrap();
    let archive = builder.into_inner().unwrap().finish().unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&archive));
    (archive, sha)
}

/// What `stratus jobs launch` does with `jobs.bucket: <bucket>` (`s3://...` or `gs://...`):
/// asks where to put the archive, then puts it. The key, or the refusal's status and body.
async fn upload_into(world: &World, bucket: &str, session: &str) -> Result<String, (u16, String)> {
    let (archive, sha) = small_archive();
    let url = format!(
        "{}/api/v1/uploads/url?session={session}&sha256={sha}&bucket={}",
        world.api_url,
        bucket.replace(':', "%3A").replace('/', "%2F")
    );
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut answer = agent.post(&url).send(&b"{}"[..]).unwrap();
        let status = answer.status().as_u16();
        let text = answer.body_mut().read_to_string().unwrap();
        if status != 200 {
            return Err((status, text));
        }
        let target: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut put = agent.put(target["url"].as_str().expect("an upload URL"));
        for header in target["headers"].as_array().unwrap() {
            put = put.header(header[0].as_str().unwrap(), header[1].as_str().unwrap());
        }
        let put = put.send(&archive[..]).unwrap();
        assert!(put.status().is_success(), "presigned PUT: {}", put.status());
        Ok(target["key"].as_str().unwrap().to_owned())
    })
    .await
    .unwrap()
}

const WORKDIR_TASK: &str = "name: wd\nworkdir: ./project\nresources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\nrun: cat data.txt\n";

/// `jobs.bucket`: the workdir's archive goes by a presigned URL to `job-<session>/` in the
/// user's bucket, the node gets it from there, and the cleanup deletes it while the bucket
/// stays; a bucket that does not exist, the deployment's own, or a GCS one (on a deployed
/// stack) is refused with a 400 naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jobs_bucket_the_workdir_goes_through_the_users_bucket() {
    let world = World::new(Options::default()).await;
    let s3 = s3_client(&world);
    let bucket = format!("scratch-{}", world.env.bucket);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for refused in [
        format!("s3://missing-{}", world.env.bucket),
        format!("s3://{}", world.env.bucket),
        format!("gs://{bucket}"),
    ] {
        let (status, text) = upload_into(&world, &refused, "e2e-s").await.unwrap_err();
        assert_eq!(status, 400, "{refused}: {text}");
        assert!(text.contains("jobs.bucket"), "{refused}: {text}");
    }
    let key = upload_into(&world, &format!("s3://{bucket}"), "e2e-s")
        .await
        .unwrap();
    // In the user's bucket, under the launch's folder.
    let object = key
        .strip_prefix(&format!("buckets/s3/{bucket}/"))
        .unwrap_or_else(|| panic!("{key}"))
        .to_owned();
    assert!(object.starts_with("job-e2e-s/"), "{object}");
    s3.head_object()
        .bucket(&bucket)
        .key(&object)
        .send()
        .await
        .unwrap();

    let id = world
        .submit_request(json!({ "yaml": WORKDIR_TASK, "uploads": { "./project": key } }))
        .await;
    world.wait_succeeded(id).await;
    assert!(
        world
            .logs(id)
            .await
            .contains("rows from the intermediate bucket")
    );
    wait_object_gone(&s3, &bucket, &object).await;
    s3.head_bucket().bucket(&bucket).send().await.unwrap();
}

/// Others with access to a `jobs.bucket` can replace an archive there: the node does not
/// unpack it and the task never runs. And submit checks the bucket again, whoever made the
/// keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_replaced_in_the_users_bucket_is_never_unpacked() {
    let world = World::new(Options::default()).await;
    let s3 = s3_client(&world);
    let bucket = format!("scratch-{}", world.env.bucket);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let key = upload_into(&world, &format!("s3://{bucket}"), "e2e-t")
        .await
        .unwrap();

    let forged = key.replace(&bucket, &format!("missing-{}", world.env.bucket));
    let (status, text) = world
        .post_job(json!({ "yaml": WORKDIR_TASK, "uploads": { "./project": forged } }))
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("jobs.bucket"), "{text}");

    let object = key
        .strip_prefix(&format!("buckets/s3/{bucket}/"))
        .unwrap()
        .to_owned();
    s3.put_object()
        .bucket(&bucket)
        .key(&object)
        .body(b"not the archive that was uploaded".to_vec().into())
        .send()
        .await
        .unwrap();
    let id = world
        .submit_request(json!({ "yaml": WORKDIR_TASK, "uploads": { "./project": key } }))
        .await;
    let job = world.wait_status(id, &crate::lifecycle::ENDED, LONG).await;
    assert_ne!(job.status(), JobStatus::Succeeded);
    let logs = world.logs(id).await;
    assert!(
        !logs.contains("rows from the intermediate bucket"),
        "{logs}"
    );
    let controller = world.controller_log(id).await;
    assert!(
        format!("{logs}{controller}").contains("changed after it was uploaded"),
        "{logs}\n{controller}"
    );
}
