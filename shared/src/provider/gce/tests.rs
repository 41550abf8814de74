//! Unit tests of the GCE provider's pure parts: error codes, the startup script, the insert
//! body's rules, names and request ids, health, the project lookup. The tests against a fake
//! Compute API are in `shared/tests/gce`.
//!
//! Why one file of this length: one test per rule of the GCE adapter's pure parts, in the
//! order of the modules they test.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use expect_test::expect;

use super::error::classify;
use super::health::{GHOST_SECS, InstanceFacts, Preemption, cluster_states, health, parse_rfc3339};
use super::instance::{
    accelerator_type, cluster_labels, guest_accelerators, instance_body, label_value, scheduling,
    source_image,
};
use super::startup::{instance_name, is_resource_name, request_id, startup_script};
use super::{GceSettings, agent_env_from_startup_script, discover_project};
use crate::cloud::Cloud;
use crate::credentials::Environment;
use crate::optimizer::Candidate;
use crate::provider::{AgentBoot, ClusterSpec, NodeInfo, ProviderError};

fn candidate(machine: &str, accelerator: Option<(&str, u32)>, spot: bool) -> Candidate {
    Candidate {
        cloud: Cloud::Gcp,
        region: "us-central1".to_owned(),
        zone: "us-central1-a".to_owned(),
        instance_type: machine.to_owned(),
        vcpus: 4.0,
        memory_gb: 15.0,
        accelerator: accelerator.map(|(n, c)| (n.to_owned(), c)),
        use_spot: spot,
        hourly_price: 0.2,
        num_nodes: 2,
        alternative: 0,
    }
}

fn spec(cluster: &str, nodes: u32) -> ClusterSpec {
    ClusterSpec {
        job_id: 42,
        task: 1,
        cluster: cluster.to_owned(),
        owner: "alice".to_owned(),
        candidate: candidate("n1-standard-4", Some(("T4", 1)), true),
        num_nodes: nodes,
        agent: AgentBoot {
            api_url: "https://api.example.com/prod".to_owned(),
            token: "it's-a-token".to_owned(),
            cadence: crate::agent_protocol::AgentCadence::CLOUD,
        },
        labels: BTreeMap::new(),
        image_id: None,
        disk_size_gb: None,
    }
}

fn settings() -> GceSettings {
    GceSettings::new()
}

fn kind(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::NoCapacity { .. } => "no_capacity",
        ProviderError::Quota { .. } => "quota",
        ProviderError::Auth { .. } => "auth",
        ProviderError::Invalid { .. } => "invalid",
        ProviderError::Unavailable { .. } => "unavailable",
        ProviderError::Throttled { .. } => "throttled",
        ProviderError::Other { .. } => "other",
    }
}

#[test]
fn classify_error_codes() {
    // (HTTP status, codes: canonical status, reasons, operation error codes) → kind.
    let table: &[(Option<u16>, &[&str], &str)] = &[
        (None, &["ZONE_RESOURCE_POOL_EXHAUSTED"], "no_capacity"),
        (
            None,
            &["ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"],
            "no_capacity",
        ),
        (
            Some(503),
            &["UNAVAILABLE", "ZONE_RESOURCE_POOL_EXHAUSTED"],
            "no_capacity",
        ),
        (
            Some(503),
            &["UNAVAILABLE", "resourceExhausted"],
            "no_capacity",
        ),
        (None, &["UNSUPPORTED_OPERATION"], "no_capacity"),
        (None, &["QUOTA_EXCEEDED"], "quota"),
        (Some(403), &["PERMISSION_DENIED", "quotaExceeded"], "quota"),
        (
            Some(403),
            &["PERMISSION_DENIED", "rateLimitExceeded"],
            "throttled",
        ),
        (Some(403), &["userRateLimitExceeded"], "throttled"),
        (
            Some(429),
            &["RESOURCE_EXHAUSTED", "rateLimitExceeded"],
            "throttled",
        ),
        (Some(429), &[], "throttled"),
        (None, &["RESOURCE_OPERATION_RATE_EXCEEDED"], "throttled"),
        (Some(401), &["UNAUTHENTICATED", "authError"], "auth"),
        (Some(401), &[], "auth"),
        (Some(403), &["PERMISSION_DENIED", "forbidden"], "auth"),
        (Some(403), &["accessNotConfigured"], "auth"),
        (Some(403), &[], "auth"),
        (Some(400), &["INVALID_ARGUMENT", "invalid"], "invalid"),
        (Some(400), &["badRequest"], "invalid"),
        (Some(404), &["NOT_FOUND", "notFound"], "invalid"),
        (None, &["RESOURCE_NOT_FOUND"], "invalid"),
        (Some(400), &[], "invalid"),
        (Some(503), &["UNAVAILABLE", "backendError"], "other"),
        (Some(500), &["INTERNAL"], "other"),
        (None, &["SOMETHING_NEW"], "other"),
    ];
    for (http, codes, want) in table {
        let err = classify(*http, codes, "the message");
        assert_eq!(kind(&err), *want, "{http:?} {codes:?}");
        assert_eq!(err.is_retryable(), matches!(*want, "throttled" | "other"));
    }
    // A place that lacks a network, subnetwork or machine type cannot host the launch; a
    // missing image is missing everywhere.
    for (message, want) in [
        (
            "The resource 'projects/p/global/networks/stratus' was not found",
            "unavailable",
        ),
        (
            "The resource 'projects/p/regions/asia-east1/subnetworks/jobs' was not found",
            "unavailable",
        ),
        (
            "The resource 'projects/p/zones/us-central1-f/machineTypes/a3-highgpu-8g' was not found",
            "unavailable",
        ),
        (
            "The resource 'projects/debian-cloud/global/images/family/debian-99' was not found",
            "invalid",
        ),
    ] {
        let err = classify(Some(404), &["NOT_FOUND", "notFound"], message);
        assert_eq!(kind(&err), want, "{message}");
    }
    expect![[r#"no capacity: ZONE_RESOURCE_POOL_EXHAUSTED: The zone 'projects/p/zones/us-central1-a' does not have enough resources"#]]
    .assert_eq(
        &classify(
            None,
            &["ZONE_RESOURCE_POOL_EXHAUSTED"],
            "The zone 'projects/p/zones/us-central1-a' does not have enough resources",
        )
        .to_string(),
    );
    expect!["quota exceeded: HTTP 403: PERMISSION_DENIED, quotaExceeded: Quota 'CPUS' exceeded"]
        .assert_eq(
            &classify(
                Some(403),
                &["PERMISSION_DENIED", "quotaExceeded"],
                "Quota 'CPUS' exceeded",
            )
            .to_string(),
        );
}

#[test]
fn startup_script_snapshot() {
    let text = startup_script(&spec("train-42-1", 2), 1);
    expect![[r##"
        #!/bin/bash
        # Stratus node boot script (GCE startup-script): installs the node agent and starts it.
        set -euo pipefail
        export STRATUS_API_URL='https://api.example.com/prod'
        export STRATUS_AGENT_TOKEN='it'\''s-a-token'
        export STRATUS_JOB_ID='42'
        export STRATUS_CLUSTER='train-42-1'
        export STRATUS_NODE_RANK='1'
        export STRATUS_NODE_DIR='/opt/stratus/node'
        export STRATUS_TASK_USER='gcpuser'
        export STRATUS_AGENT_POLL_MS='2000'
        export STRATUS_AGENT_HEARTBEAT_MS='30000'
        export STRATUS_AGENT_LOG_FLUSH_MS='300000'
        export STRATUS_AGENT_LOG_LIVE_MS='1000'
        export STRATUS_AGENT_LOG_CHUNK_BYTES='262144'
        umask 077
        mkdir -p /opt/stratus/bin "$STRATUS_NODE_DIR"
        # Tasks run as $STRATUS_TASK_USER, in its home (SkyPilot's layout), not as root beside the agent.
        if ! id -u "$STRATUS_TASK_USER" >/dev/null 2>&1; then
          useradd --create-home --shell /bin/bash "$STRATUS_TASK_USER"
          mkdir -p /etc/sudoers.d
          printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$STRATUS_TASK_USER" >/etc/sudoers.d/90-stratus-task-user
          chmod 0440 /etc/sudoers.d/90-stratus-task-user
        fi
        chmod 0755 /opt/stratus /opt/stratus/bin
        # The agent's environment, for the unit below (readable by root only: it holds the token).
        for name in ${!STRATUS_@}; do printf 'export %s=%q\n' "$name" "${!name}"; done >/opt/stratus/agent.env
        # The token goes in by standard input (printf is a builtin), never on a command line; curl does
        # not send it on to the signed URL the API redirects to.
        printf 'Authorization: Bearer %s\n' "$STRATUS_AGENT_TOKEN" |
          curl -fsSL --retry 10 --retry-delay 3 --retry-all-errors -H @- -o /opt/stratus/bin/stratus-agent.part \
            "$STRATUS_API_URL/agent/v1/jobs/$STRATUS_JOB_ID/agent"
        chmod 0755 /opt/stratus/bin/stratus-agent.part
        mv -f /opt/stratus/bin/stratus-agent.part /opt/stratus/bin/stratus-agent
        # Expanded by the unit's shell, after it reads the environment file.
        # shellcheck disable=SC2016
        start='export HOME=/root && . /opt/stratus/agent.env && cd "$STRATUS_NODE_DIR" && exec /opt/stratus/bin/stratus-agent'
        if command -v systemd-run >/dev/null 2>&1; then
          # A unit of its own outlives the startup-script run; its output goes to `journalctl -u stratus-agent`.
          systemd-run --unit=stratus-agent --description='Stratus node agent' /bin/bash -c "$start"
        else
          nohup /bin/bash -c "$start" >>/var/log/stratus-agent.log 2>&1 </dev/null &
        fi
    "##]]
    .assert_eq(&text);
    let env = agent_env_from_startup_script(&text);
    expect![[r#"
        {
            "STRATUS_AGENT_HEARTBEAT_MS": "30000",
            "STRATUS_AGENT_LOG_CHUNK_BYTES": "262144",
            "STRATUS_AGENT_LOG_FLUSH_MS": "300000",
            "STRATUS_AGENT_LOG_LIVE_MS": "1000",
            "STRATUS_AGENT_POLL_MS": "2000",
            "STRATUS_AGENT_TOKEN": "it's-a-token",
            "STRATUS_API_URL": "https://api.example.com/prod",
            "STRATUS_CLUSTER": "train-42-1",
            "STRATUS_JOB_ID": "42",
            "STRATUS_NODE_DIR": "/opt/stratus/node",
            "STRATUS_NODE_RANK": "1",
            "STRATUS_TASK_USER": "gcpuser",
        }
    "#]]
    .assert_debug_eq(&env);
    // Only literal values count.
    let env = agent_env_from_startup_script(
        "export A=$(id)\nexport B='x\nexport C=plain-1.2\nexport d='x'",
    );
    assert_eq!(
        env,
        BTreeMap::from([("C".to_owned(), "plain-1.2".to_owned())])
    );
}

#[test]
fn accelerator_names_map_to_gce_types() {
    let table = [
        ("T4", Some("nvidia-tesla-t4")),
        ("t4", Some("nvidia-tesla-t4")),
        ("V100", Some("nvidia-tesla-v100")),
        ("L4", Some("nvidia-l4")),
        ("A100", Some("nvidia-tesla-a100")),
        ("A100-80GB", Some("nvidia-a100-80gb")),
        ("H100", Some("nvidia-h100-80gb")),
        ("H200", Some("nvidia-h200-141gb")),
        ("TPU-v4", None),
    ];
    for (name, want) in table {
        assert_eq!(accelerator_type(name), want, "{name}");
    }
}

#[test]
fn only_n1_machine_types_take_guest_accelerators() {
    let attached = |c: &Candidate| {
        guest_accelerators(c).map(|v| {
            v.iter()
                .map(|a| {
                    format!(
                        "{} x{}",
                        a.accelerator_type.as_deref().unwrap_or_default(),
                        a.accelerator_count.unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        attached(&candidate("n1-standard-8", Some(("V100", 4)), false)).unwrap(),
        ["zones/us-central1-a/acceleratorTypes/nvidia-tesla-v100 x4"]
    );
    for built_in in [
        ("a2-highgpu-1g", "A100"),
        ("a2-ultragpu-8g", "A100-80GB"),
        ("a3-highgpu-8g", "H100"),
        ("a3-ultragpu-8g", "H200"),
        ("g2-standard-8", "L4"),
    ] {
        let c = candidate(built_in.0, Some((built_in.1, 1)), false);
        assert_eq!(attached(&c).unwrap(), Vec::<String>::new(), "{built_in:?}");
    }
    assert!(
        attached(&candidate("e2-standard-4", None, false))
            .unwrap()
            .is_empty()
    );
    let err = attached(&candidate("e2-standard-4", Some(("T4", 1)), false)).unwrap_err();
    assert!(err.to_string().contains("only to N1"), "{err}");
    let err = attached(&candidate("n1-standard-4", Some(("TPU-v4", 1)), false)).unwrap_err();
    assert!(
        err.to_string().contains("unknown accelerator 'TPU-v4'"),
        "{err}"
    );
}

#[test]
fn scheduling_rules() {
    let show = |c: &Candidate| serde_json::to_string(&scheduling(c)).unwrap();
    let cases = [
        (
            candidate("n1-standard-4", Some(("T4", 1)), true),
            r#"{"automaticRestart":false,"instanceTerminationAction":"DELETE","onHostMaintenance":"TERMINATE","provisioningModel":"SPOT"}"#,
        ),
        (
            candidate("e2-standard-4", None, true),
            r#"{"automaticRestart":false,"instanceTerminationAction":"DELETE","onHostMaintenance":"TERMINATE","provisioningModel":"SPOT"}"#,
        ),
        (
            candidate("a2-highgpu-1g", Some(("A100", 1)), false),
            r#"{"automaticRestart":false,"onHostMaintenance":"TERMINATE","provisioningModel":"STANDARD"}"#,
        ),
        (
            candidate("e2-standard-4", None, false),
            r#"{"automaticRestart":false,"onHostMaintenance":"MIGRATE","provisioningModel":"STANDARD"}"#,
        ),
    ];
    for (c, want) in cases {
        assert_eq!(show(&c), want, "{}", c.instance_label());
    }
}

#[test]
fn images_and_labels() {
    let mut s = spec("train-42-1", 2);
    s.candidate = candidate("n2-standard-4", None, true);
    assert_eq!(
        source_image(&s, &settings()).unwrap(),
        GceSettings::DEFAULT_IMAGE_FAMILY
    );
    for ok in [
        "projects/deeplearning-platform-release/global/images/family/common-cu124",
        "projects/my-proj/global/images/my-image",
        "https://www.googleapis.com/compute/v1/projects/p/global/images/i",
    ] {
        s.image_id = Some(ok.to_owned());
        assert_eq!(source_image(&s, &settings()).unwrap(), ok);
    }
    s.image_id = Some("docker:ubuntu:22.04".to_owned());
    assert_eq!(
        source_image(&s, &settings()).unwrap(),
        GceSettings::DEFAULT_IMAGE_FAMILY
    );
    s.image_id = Some("ami-0123".to_owned());
    assert!(matches!(
        source_image(&s, &settings()),
        Err(ProviderError::Invalid { .. })
    ));
    // A GPU candidate boots the Deep Learning VM image unless the task names one.
    let mut gpu = spec("train-42-2", 1);
    gpu.candidate = candidate("n1-standard-8", Some(("nvidia-tesla-t4", 1)), true);
    assert_eq!(
        source_image(&gpu, &settings()).unwrap(),
        GceSettings::DEFAULT_GPU_IMAGE_FAMILY
    );
    gpu.image_id = Some("projects/my-proj/global/images/my-image".to_owned());
    assert_eq!(
        source_image(&gpu, &settings()).unwrap(),
        "projects/my-proj/global/images/my-image"
    );

    assert_eq!(
        label_value("Alice.Smith@Example.COM"),
        "alice-smith-example-com"
    );
    assert_eq!(label_value(&"x".repeat(70)).len(), 63);
    s.owner = "Bob@Corp".to_owned();
    s.labels = BTreeMap::from([
        ("Team".to_owned(), "ML Research".to_owned()),
        ("stratus-job-id".to_owned(), "9".to_owned()),
        ("9lives".to_owned(), "cat".to_owned()),
    ]);
    expect![[r#"
        {
            "stratus-cluster": "train-42-1",
            "stratus-job-id": "42",
            "stratus-nodes": "2",
            "stratus-owner": "bob-corp",
            "stratus-rank": "1",
            "stratus-task": "1",
            "team": "ml-research",
        }
    "#]]
    .assert_debug_eq(&cluster_labels(&s, 1));
}

#[test]
fn instance_body_of_a_spot_gpu_node() {
    let mut s = spec("train-42-1", 2);
    s.disk_size_gb = Some(200);
    let body = instance_body(&s, 1, &settings(), GceSettings::DEFAULT_IMAGE_FAMILY).unwrap();
    let mut json = serde_json::to_value(&body).unwrap();
    json["metadata"]["items"][0]["value"] = "<startup script>".into();
    expect![[r#"
        {
          "description": "Stratus job 42, cluster train-42-1, node 1 of 2",
          "disks": [
            {
              "autoDelete": true,
              "boot": true,
              "initializeParams": {
                "diskSizeGb": "200",
                "diskType": "zones/us-central1-a/diskTypes/pd-balanced",
                "labels": {
                  "stratus-cluster": "train-42-1",
                  "stratus-job-id": "42",
                  "stratus-nodes": "2",
                  "stratus-owner": "alice",
                  "stratus-rank": "1",
                  "stratus-task": "1"
                },
                "sourceImage": "projects/debian-cloud/global/images/family/debian-12"
              },
              "type": "PERSISTENT"
            }
          ],
          "guestAccelerators": [
            {
              "acceleratorCount": 1,
              "acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4"
            }
          ],
          "labels": {
            "stratus-cluster": "train-42-1",
            "stratus-job-id": "42",
            "stratus-nodes": "2",
            "stratus-owner": "alice",
            "stratus-rank": "1",
            "stratus-task": "1"
          },
          "machineType": "zones/us-central1-a/machineTypes/n1-standard-4",
          "metadata": {
            "items": [
              {
                "key": "startup-script",
                "value": "<startup script>"
              },
              {
                "key": "stratus-rank",
                "value": "1"
              },
              {
                "key": "install-nvidia-driver",
                "value": "True"
              }
            ]
          },
          "name": "train-42-1-1",
          "networkInterfaces": [
            {
              "accessConfigs": [
                {
                  "name": "External NAT",
                  "type": "ONE_TO_ONE_NAT"
                }
              ],
              "network": "global/networks/default"
            }
          ],
          "scheduling": {
            "automaticRestart": false,
            "instanceTerminationAction": "DELETE",
            "onHostMaintenance": "TERMINATE",
            "provisioningModel": "SPOT"
          }
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&json).unwrap());
}

#[test]
fn instance_names_are_valid_gce_names() {
    assert_eq!(instance_name("train-42-1", 0), "train-42-1-0");
    // A cluster name GCE cannot take as a name prefix: a hash of it, stable.
    let odd = instance_name("9lives-7-1", 3);
    assert!(odd.starts_with("stratus-") && odd.ends_with("-3"), "{odd}");
    assert_eq!(odd, instance_name("9lives-7-1", 3));
    assert!(is_resource_name(&odd));
    let long = format!("{}-1234567890123-12", "a".repeat(40));
    assert!(is_resource_name(&instance_name(&long, 999)));
    for (name, ok) in [
        ("a", true),
        ("a-1", true),
        ("a-", false),
        ("1a", false),
        ("A", false),
        ("", false),
        (&"a".repeat(63), true),
        (&"a".repeat(64), false),
    ] {
        assert_eq!(is_resource_name(name), ok, "{name}");
    }
}

#[test]
fn request_ids_are_deterministic_uuids() {
    let id = request_id("insert", "train-42-1", "us-central1-a", 0);
    assert_eq!(id, request_id("insert", "train-42-1", "us-central1-a", 0));
    expect!["2c0e7ba6-30e6-8939-985a-db713e754e39"].assert_eq(&id);
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert!(parts[2].starts_with('8'), "version 8: {id}");
    assert!(
        matches!(&parts[3][..1], "8" | "9" | "a" | "b"),
        "variant: {id}"
    );
    let others = [
        request_id("insert", "train-42-1", "us-central1-a", 1),
        request_id("insert", "train-42-2", "us-central1-a", 0),
        request_id("insert", "train-42-1", "us-central1-b", 0),
        request_id("delete", "train-42-1", "us-central1-a", 0),
    ];
    let distinct: BTreeSet<&String> = others.iter().chain([&id]).collect();
    assert_eq!(distinct.len(), 5);
}

/// A node of cluster `c` (job 42, 2 nodes) in us-central1-a.
fn inst(rank: u32, status: &str) -> InstanceFacts {
    InstanceFacts {
        name: instance_name("c-42-1", rank),
        status: status.to_owned(),
        status_message: None,
        labels: BTreeMap::from([
            ("stratus-cluster".to_owned(), "c-42-1".to_owned()),
            ("stratus-job-id".to_owned(), "42".to_owned()),
            ("stratus-nodes".to_owned(), "2".to_owned()),
            ("stratus-rank".to_owned(), rank.to_string()),
        ]),
        zone: "us-central1-a".to_owned(),
        ip: Some(format!("10.128.0.{}", rank + 2)),
    }
}

fn terminating(mut i: InstanceFacts) -> InstanceFacts {
    i.labels
        .insert("stratus-state".to_owned(), "terminating".to_owned());
    i
}

/// (zone, instance name) of the `compute.instances.preempted` operations.
type Preempted<'a> = BTreeSet<(&'a str, &'a str)>;

#[test]
fn health_rules() {
    let preempted_1: Preempted = BTreeSet::from([("us-central1-a", "c-42-1-1")]);
    let none = BTreeSet::new();
    let cases: Vec<(&str, Vec<InstanceFacts>, &Preempted, &str)> = vec![
        (
            "all running",
            vec![inst(0, "RUNNING"), inst(1, "RUNNING")],
            &none,
            "Running",
        ),
        (
            "provisioning",
            vec![inst(0, "RUNNING"), inst(1, "PROVISIONING")],
            &none,
            "Pending",
        ),
        (
            "staging",
            vec![inst(0, "STAGING"), inst(1, "RUNNING")],
            &none,
            "Pending",
        ),
        (
            "repairing",
            vec![inst(0, "REPAIRING"), inst(1, "RUNNING")],
            &none,
            "Pending",
        ),
        (
            "preempted, stopped",
            vec![inst(0, "RUNNING"), inst(1, "TERMINATED")],
            &preempted_1,
            "Preempted { reason: \"instance c-42-1-1 (node 1) TERMINATED (preempted)\" }",
        ),
        (
            "preempted, stopping",
            vec![inst(0, "RUNNING"), inst(1, "STOPPING")],
            &preempted_1,
            "Preempted { reason: \"instance c-42-1-1 (node 1) STOPPING (preempted)\" }",
        ),
        (
            "preempted and deleted",
            vec![inst(0, "RUNNING")],
            &preempted_1,
            "Preempted { reason: \"instance c-42-1-1 (node 1) was preempted and deleted\" }",
        ),
        (
            "stopped, no preemption",
            vec![inst(0, "RUNNING"), inst(1, "TERMINATED")],
            &none,
            "Failed { reason: \"instance c-42-1-1 (node 1) TERMINATED\" }",
        ),
        (
            "suspended",
            vec![inst(0, "SUSPENDED"), inst(1, "RUNNING")],
            &none,
            "Failed { reason: \"instance c-42-1-0 (node 0) SUSPENDED\" }",
        ),
        (
            "stopping, no preemption",
            vec![inst(0, "STOPPING"), inst(1, "RUNNING")],
            &none,
            "Failed { reason: \"instance c-42-1-0 (node 0) STOPPING\" }",
        ),
        (
            "deleted, no preemption",
            vec![inst(0, "RUNNING")],
            &none,
            "Failed { reason: \"node(s) 1 of 2 not found (their instances are gone)\" }",
        ),
        (
            "terminated by us",
            vec![
                terminating(inst(0, "STOPPING")),
                terminating(inst(1, "RUNNING")),
            ],
            &preempted_1,
            "Terminated",
        ),
    ];
    for (name, instances, preempted, want) in cases {
        assert_eq!(
            format!("{:?}", health("c-42-1", &instances, preempted)),
            want,
            "{name}"
        );
    }
    let mut with_message = inst(1, "TERMINATED");
    with_message.status_message = Some("Instance was preempted.".to_owned());
    assert_eq!(
        format!(
            "{:?}",
            health("c-42-1", &[inst(0, "RUNNING"), with_message], &preempted_1)
        ),
        "Preempted { reason: \"instance c-42-1-1 (node 1) TERMINATED: Instance was preempted. (preempted)\" }"
    );
}

#[test]
fn cluster_states_group_by_label_and_remember_deleted_preemptions() {
    let now = 1_800_000_000;
    let mut other = inst(0, "RUNNING");
    other.name = "b-7-1-0".to_owned();
    other.zone = "us-central1-b".to_owned();
    for (k, v) in [
        ("stratus-cluster", "b-7-1"),
        ("stratus-job-id", "7"),
        ("stratus-nodes", "1"),
    ] {
        other.labels.insert(k.to_owned(), v.to_owned());
    }
    let mut foreign = inst(0, "RUNNING");
    foreign
        .labels
        .insert("stratus-job-id".to_owned(), "not-a-number".to_owned());
    foreign
        .labels
        .insert("stratus-cluster".to_owned(), "x".to_owned());
    let preemption = |instance: &str, ago: i64| Preemption {
        zone: "us-central1-f".to_owned(),
        instance: instance.to_owned(),
        at: Some(now - ago),
    };
    let preemptions = [
        preemption("ghost-9-2-0", 60),
        preemption("ghost-9-2-1", 30),
        // Too long ago, or not a name Stratus makes: not reported.
        preemption("old-9-1-0", GHOST_SECS + 1),
        preemption("someone-elses-vm", 10),
        preemption("stratus-0123456789abcdef-0", 10),
    ];
    let states = cluster_states(
        "us-central1",
        vec![inst(1, "RUNNING"), other, foreign, inst(0, "STAGING")],
        &preemptions,
        now,
    );
    let summary: Vec<_> = states
        .iter()
        .map(|s| {
            (
                s.cluster.as_str(),
                s.job_id,
                s.zone.as_str(),
                format!("{:?}", s.health),
                s.nodes.clone(),
            )
        })
        .collect();
    let node = |rank: u32, name: &str, ip: &str| NodeInfo {
        rank,
        instance_id: name.to_owned(),
        ip: ip.to_owned(),
    };
    assert_eq!(
        summary,
        vec![
            (
                "b-7-1",
                7,
                "us-central1-b",
                "Running".to_owned(),
                vec![node(0, "b-7-1-0", "10.128.0.2")]
            ),
            (
                "c-42-1",
                42,
                "us-central1-a",
                "Pending".to_owned(),
                vec![
                    node(0, "c-42-1-0", "10.128.0.2"),
                    node(1, "c-42-1-1", "10.128.0.3")
                ]
            ),
            (
                "ghost-9-2",
                9,
                "us-central1-f",
                "Preempted { reason: \"instance ghost-9-2-0 (node 0) was preempted and deleted\" }"
                    .to_owned(),
                vec![]
            ),
        ]
    );
}

#[test]
fn rfc3339_times() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_rfc3339("2026-11-27T03:12:00.123-08:00"),
        Some(1_795_777_920)
    );
    assert_eq!(
        parse_rfc3339("2026-11-27T11:12:00+00:00"),
        Some(1_795_777_920)
    );
    assert_eq!(parse_rfc3339("2000-02-29T12:00:00Z"), Some(951_825_600));
    for bad in [
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-11-27",
        "2026-11-27T03:12:00",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
}

#[test]
fn the_project_comes_from_the_usual_places() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_owned();
    let env = |vars: &[(&str, &str)]| Environment {
        vars: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
        home: Some(home.clone()),
    };
    assert_eq!(discover_project(&env(&[])), None);

    let gcloud = home.join(".config/gcloud");
    std::fs::create_dir_all(gcloud.join("configurations")).unwrap();
    std::fs::write(
        gcloud.join("configurations/config_default"),
        "[core]\naccount = alice@example.com\nproject = from-gcloud\n",
    )
    .unwrap();
    assert_eq!(
        discover_project(&env(&[])).map(|(p, _)| p).as_deref(),
        Some("from-gcloud")
    );
    std::fs::write(gcloud.join("active_config"), "work\n").unwrap();
    std::fs::write(
        gcloud.join("configurations/config_work"),
        "[core]\nproject = from-work-config\n",
    )
    .unwrap();
    assert_eq!(
        discover_project(&env(&[])).map(|(p, _)| p).as_deref(),
        Some("from-work-config")
    );

    std::fs::write(
        gcloud.join("application_default_credentials.json"),
        r#"{"type": "authorized_user", "quota_project_id": "from-adc"}"#,
    )
    .unwrap();
    assert_eq!(
        discover_project(&env(&[])).map(|(p, _)| p).as_deref(),
        Some("from-adc")
    );
    let key = dir.path().join("key.json");
    std::fs::write(
        &key,
        r#"{"type": "service_account", "project_id": "from-key"}"#,
    )
    .unwrap();
    let key = key.to_str().unwrap();
    assert_eq!(
        discover_project(&env(&[("GOOGLE_APPLICATION_CREDENTIALS", key)])),
        Some(("from-key".to_owned(), key.to_owned()))
    );
    assert_eq!(
        discover_project(&env(&[
            ("GOOGLE_APPLICATION_CREDENTIALS", key),
            ("GOOGLE_CLOUD_PROJECT", "from-env"),
        ])),
        Some(("from-env".to_owned(), "GOOGLE_CLOUD_PROJECT".to_owned()))
    );
}

#[test]
fn credentials_detection_covers_the_google_chain() {
    // `stratus check` (crate::credentials) enables GCP for GOOGLE_APPLICATION_CREDENTIALS and
    // for gcloud's application default credentials (also under CLOUDSDK_CONFIG).
    let dir = tempfile::tempdir().unwrap();
    let gcp = |env: &Environment| {
        crate::credentials::check(env)
            .into_iter()
            .find(|s| s.cloud == Cloud::Gcp)
            .unwrap()
            .enabled
    };
    let mut env = Environment {
        vars: HashMap::new(),
        home: Some(dir.path().to_owned()),
    };
    assert!(!gcp(&env));
    let key = dir.path().join("key.json");
    std::fs::write(&key, "{}").unwrap();
    env.vars.insert(
        "GOOGLE_APPLICATION_CREDENTIALS".to_owned(),
        key.to_str().unwrap().to_owned(),
    );
    assert!(gcp(&env));
    env.vars.clear();
    std::fs::create_dir_all(dir.path().join(".config/gcloud")).unwrap();
    std::fs::write(
        dir.path()
            .join(".config/gcloud/application_default_credentials.json"),
        "{}",
    )
    .unwrap();
    assert!(gcp(&env));
    env.vars.insert(
        "CLOUDSDK_CONFIG".to_owned(),
        dir.path().join("elsewhere").to_str().unwrap().to_owned(),
    );
    assert!(!gcp(&env), "CLOUDSDK_CONFIG moves gcloud's folder");
}

/// The startup script is valid bash (a syntax error would only show on a real machine's
/// serial console).
#[test]
fn the_startup_script_parses_as_bash() {
    crate::provider::boot::assert_parses_as_bash(&startup_script(&spec("train-42-1", 2), 1));
}
