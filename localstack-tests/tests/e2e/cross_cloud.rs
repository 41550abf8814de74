//! Multi-cloud recovery with the fake Compute API and the AWS emulator as clouds, both wired by
//! the functions' own context builder from a stack's environment (GCP through Workload
//! Identity Federation from the functions' AWS role, against a fake Google STS): a job whose
//! cheapest candidate is on GCP runs there, GCP takes the VM back and then has no capacity
//! anywhere, and recovery moves along the ranked list to AWS. Once on the deployed stack
//! (DynamoDB, S3, EventBridge), once on the local control plane's (SQLite, a blob folder, the
//! in-process bus).

use std::time::Duration;

use shared::cloud::Cloud;
use shared::job::JobStatus;

use crate::fake::Exhaustion;
use crate::harness::{Options, World};

const TASK: &str = "name: xc\nresources:\n  use_spot: true\n  any_of:\n    - infra: gcp\n      instance_type: e2-standard-2\n    - infra: aws\n      instance_type: m6i.large\nrun: |\n  echo \"running on $SKYPILOT_CLUSTER_INFO\"\n  sleep 3\n  echo finished\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_deployed_stack_preempted_on_gcp_the_job_recovers_on_aws() {
    Box::pin(preempted_on_gcp_then_exhausted_there_the_job_recovers_on_aws(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_local_plane_preempted_on_gcp_the_job_recovers_on_aws() {
    Box::pin(preempted_on_gcp_then_exhausted_there_the_job_recovers_on_aws(true)).await;
}

async fn preempted_on_gcp_then_exhausted_there_the_job_recovers_on_aws(local_plane: bool) {
    let world = World::new(Options {
        gce: true,
        local_plane,
        ..Options::default()
    })
    .await;
    let fake = world.gce.clone().unwrap();
    // What `stratus check` shows for a deployed stack.
    let url = format!("{}/api/v1/health", world.api_url);
    let health: serde_json::Value = tokio::task::spawn_blocking(move || {
        let text = ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        health["clouds"],
        serde_json::json!(["aws", "gcp"]),
        "{health}"
    );
    let note = health["cloud_notes"]["gcp"].as_str().unwrap_or_default();
    assert!(note.contains("Workload Identity Federation"), "{health}");
    let id = world.submit(TASK).await;
    let job = world
        .wait_status(id, &[JobStatus::Running], Duration::from_secs(90))
        .await;
    let first = job.candidates[0][job.tasks[0].candidate.unwrap()].clone();
    assert_eq!(first.cloud, Cloud::Gcp, "the cheapest candidate is GCP");
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    while !world.logs(id).await.contains("\"cloud\":\"GCP\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "the task never ran on GCP"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // GCP has no capacity left anywhere, then reclaims the VM.
    for zone in shared::catalog::Catalog::embedded()
        .of(Cloud::Gcp)
        .map(|o| o.zone.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        fake.exhaust_zone(&zone, Exhaustion::InOperation);
    }
    let instance = fake
        .instances_in(&first.zone)
        .into_iter()
        .next()
        .expect("the GCE instance");
    fake.preempt(&first.zone, instance["name"].as_str().unwrap());

    let (job, log) = world.wait_succeeded(id).await;
    assert_eq!(job.recoveries(), 1, "{log}");
    let last = job.candidates[0][job.tasks[0].candidate.unwrap()].clone();
    assert_eq!(last.cloud, Cloud::Aws, "{log}");
    // The controller log tells the story: GCP launch, preemption, GCP exhausted, AWS launch.
    for words in [
        "on gcp/",
        "was preempted",
        "no capacity",
        "on aws/",
        "Recovered",
        "Job succeeded.",
    ] {
        assert!(
            log.contains(words),
            "controller log lacks {words:?}:\n{log}"
        );
    }
    let output = world.logs(id).await;
    assert!(
        output.contains("\"cloud\":\"GCP\"") && output.contains("\"cloud\":\"AWS\""),
        "{output}"
    );
    assert!(output.contains("finished"), "{output}");
    fake.assert_valid();
    // Every Compute call carried a token the STS issued for the functions' AWS role.
    let identity = world.identity.as_ref().unwrap();
    assert!(identity.granted() >= 1, "no token exchange");
    assert_eq!(identity.refused(), Vec::<String>::new());
}
