//! Unit tests of the EC2 provider's pure parts: error codes, the boot script, health. The
//! emulator tests are in `shared/tests/ec2`.

use std::collections::BTreeMap;

use expect_test::expect;

use super::error::classify;
use super::health::{InstanceFacts, cluster_states, health};
use super::user_data::{base64_encode, client_token, decode_user_data, user_data};
use super::{agent_env_from_user_data, cluster_tags};
use crate::cloud::Cloud;
use crate::optimizer::Candidate;
use crate::provider::{AgentBoot, ClusterHealth, ClusterSpec, NodeInfo, ProviderError};

fn spec(cluster: &str, nodes: u32) -> ClusterSpec {
    ClusterSpec {
        job_id: 42,
        task: 1,
        cluster: cluster.to_owned(),
        owner: "alice".to_owned(),
        candidate: Candidate {
            cloud: Cloud::Aws,
            region: "us-east-1".to_owned(),
            zone: "us-east-1b".to_owned(),
            instance_type: "m5.large".to_owned(),
            vcpus: 2.0,
            memory_gb: 8.0,
            accelerator: None,
            use_spot: true,
            hourly_price: 0.03,
            num_nodes: nodes,
            alternative: 0,
        },
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

#[test]
fn classify_error_codes() {
    let kind = |e: &ProviderError| match e {
        ProviderError::NoCapacity { .. } => "no_capacity",
        ProviderError::Quota { .. } => "quota",
        ProviderError::Auth { .. } => "auth",
        ProviderError::Invalid { .. } => "invalid",
        ProviderError::Unavailable { .. } => "unavailable",
        ProviderError::Throttled { .. } => "throttled",
        ProviderError::Other { .. } => "other",
    };
    let table = [
        ("InsufficientInstanceCapacity", "no_capacity"),
        ("InsufficientHostCapacity", "no_capacity"),
        ("InsufficientCapacity", "no_capacity"),
        ("InsufficientFreeAddressesInSubnet", "no_capacity"),
        ("SpotMaxPriceTooLow", "no_capacity"),
        ("Unsupported", "unavailable"),
        ("VPCIdNotSpecified", "unavailable"),
        ("InvalidSubnetID.NotFound", "unavailable"),
        ("InvalidSubnet", "unavailable"),
        ("InvalidVpcID.NotFound", "unavailable"),
        ("MaxSpotInstanceCountExceeded", "quota"),
        ("InstanceLimitExceeded", "quota"),
        ("VcpuLimitExceeded", "quota"),
        ("VolumeLimitExceeded", "quota"),
        ("RequestLimitExceeded", "throttled"),
        ("Throttling", "throttled"),
        ("ThrottlingException", "throttled"),
        ("AuthFailure", "auth"),
        ("UnauthorizedOperation", "auth"),
        ("OptInRequired", "auth"),
        ("Blocked", "auth"),
        ("InvalidClientTokenId", "auth"),
        ("SignatureDoesNotMatch", "auth"),
        ("ExpiredToken", "auth"),
        ("AccessDeniedException", "auth"),
        ("InvalidAMIID.NotFound", "unavailable"),
        ("InvalidAMIID.Unavailable", "unavailable"),
        ("InvalidAMIID.Malformed", "invalid"),
        ("InvalidParameterValue", "invalid"),
        ("InvalidParameterCombination", "invalid"),
        ("InvalidInstanceType", "invalid"),
        ("IdempotentParameterMismatch", "invalid"),
        ("ParameterNotFound", "unavailable"),
        ("InternalError", "other"),
        ("InvalidGroup.NotFound", "unavailable"),
        ("ServiceUnavailable", "other"),
    ];
    for (code, want) in table {
        let err = classify(code, "the message");
        assert_eq!(kind(&err), want, "{code}");
        assert_eq!(err.is_retryable(), matches!(want, "throttled" | "other"));
    }
    expect![[r#"no capacity: InsufficientInstanceCapacity: We currently do not have sufficient m5.large capacity"#]]
        .assert_eq(
            &classify(
                "InsufficientInstanceCapacity",
                "We currently do not have sufficient m5.large capacity",
            )
            .to_string(),
        );
    expect!["InternalError"].assert_eq(&classify("InternalError", "").to_string());
}

#[test]
fn user_data_script() {
    let text = user_data(&spec("train-42-1", 2));
    expect![[r##"
        #!/bin/bash
        # Stratus node boot script (EC2 user data): installs the node agent and starts it.
        set -euo pipefail
        export STRATUS_API_URL='https://api.example.com/prod'
        export STRATUS_AGENT_TOKEN='it'\''s-a-token'
        export STRATUS_JOB_ID='42'
        export STRATUS_CLUSTER='train-42-1'
        export STRATUS_NODE_DIR='/opt/stratus/node'
        export STRATUS_TASK_USER='ec2-user'
        export STRATUS_AGENT_POLL_MS='2000'
        export STRATUS_AGENT_HEARTBEAT_MS='30000'
        export STRATUS_AGENT_LOG_FLUSH_MS='300000'
        export STRATUS_AGENT_LOG_LIVE_MS='1000'
        export STRATUS_AGENT_LOG_CHUNK_BYTES='262144'
        # The node's rank is its launch index within the reservation (IMDSv2).
        imds=http://169.254.169.254/latest
        imds_token=$(curl -fsS --retry 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$imds/api/token")
        STRATUS_NODE_RANK=$(curl -fsS --retry 5 -H "X-aws-ec2-metadata-token: $imds_token" "$imds/meta-data/ami-launch-index")
        case "$STRATUS_NODE_RANK" in ''|*[!0-9]*) echo "stratus: bad ami-launch-index '$STRATUS_NODE_RANK'" >&2; exit 1 ;; esac
        export STRATUS_NODE_RANK
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
          # A unit of its own outlives cloud-init; its output goes to `journalctl -u stratus-agent`.
          systemd-run --unit=stratus-agent --description='Stratus node agent' /bin/bash -c "$start"
        else
          nohup /bin/bash -c "$start" >>/var/log/stratus-agent.log 2>&1 </dev/null &
        fi
    "##]]
    .assert_eq(&text);
}

#[test]
fn agent_env_reads_back_the_exports() {
    let text = user_data(&spec("train-42-1", 2));
    let env = agent_env_from_user_data(&text);
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
            "STRATUS_TASK_USER": "ec2-user",
        }
    "#]]
    .assert_debug_eq(&env);
    // Through base64 and back, as RunInstances and DescribeInstanceAttribute carry it.
    let decoded = decode_user_data(&base64_encode(text.as_bytes())).unwrap();
    assert_eq!(decoded, text);
    // Only literal values count.
    let env =
        agent_env_from_user_data("export A=$(id)\nexport B='x\nexport C=plain-1.2\nexport d='x'");
    assert_eq!(
        env,
        BTreeMap::from([("C".to_owned(), "plain-1.2".to_owned())])
    );
}

#[test]
fn base64_matches_the_standard() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("#!/bin/bash\necho hi\n", "IyEvYmluL2Jhc2gKZWNobyBoaQo="),
    ] {
        assert_eq!(base64_encode(plain.as_bytes()), encoded);
        assert_eq!(decode_user_data(encoded).as_deref(), Some(plain));
    }
    assert_eq!(decode_user_data("not base64!"), None);
}

#[test]
fn client_token_is_the_cluster_name_up_to_64_ascii_characters() {
    assert_eq!(client_token("train-42-1"), "train-42-1");
    let long = "x".repeat(65);
    let token = client_token(&long);
    assert_eq!(token.len(), 64);
    assert!(token.starts_with("stratus-"));
    assert_eq!(token, client_token(&long));
    assert_ne!(token, client_token(&"x".repeat(66)));
    assert_eq!(client_token("é").len(), 64);
}

#[test]
fn labels_cannot_override_stratus_tags() {
    let mut s = spec("train-42-1", 3);
    s.labels = BTreeMap::from([
        ("team".to_owned(), "ml".to_owned()),
        ("stratus-job-id".to_owned(), "9".to_owned()),
        ("Name".to_owned(), "mine".to_owned()),
    ]);
    expect![[r#"
        {
            "Name": "train-42-1",
            "stratus-cluster": "train-42-1",
            "stratus-job-id": "42",
            "stratus-nodes": "3",
            "stratus-owner": "alice",
            "stratus-task": "1",
            "team": "ml",
        }
    "#]]
    .assert_debug_eq(&cluster_tags(&s));
}

/// An instance of cluster `c`, job 42: `state` and optional `reason` code, `spot`, `rank`.
fn inst(rank: u32, state: &str, reason: Option<&str>, spot: bool) -> InstanceFacts {
    InstanceFacts {
        instance_id: format!("i-{rank}"),
        state: state.to_owned(),
        reason: reason.map(|code| (code.to_owned(), format!("{code}: some words"))),
        spot,
        tags: BTreeMap::from([
            ("stratus-cluster".to_owned(), "c".to_owned()),
            ("stratus-job-id".to_owned(), "42".to_owned()),
            ("stratus-nodes".to_owned(), "2".to_owned()),
        ]),
        zone: "us-east-1b".to_owned(),
        launch_index: rank,
        private_ip: Some(format!("10.0.0.{}", rank + 1)),
    }
}

fn terminating(mut i: InstanceFacts) -> InstanceFacts {
    i.tags
        .insert("stratus-state".to_owned(), "terminating".to_owned());
    i
}

#[test]
fn health_rules() {
    let spot_reclaim = Some("Server.SpotInstanceTermination");
    let user = Some("Client.UserInitiatedShutdown");
    let cases: Vec<(&str, Vec<InstanceFacts>, &str)> = vec![
        (
            "all running",
            vec![
                inst(0, "running", None, false),
                inst(1, "running", None, false),
            ],
            "Running",
        ),
        (
            "one pending",
            vec![
                inst(0, "running", None, true),
                inst(1, "pending", None, true),
            ],
            "Pending",
        ),
        (
            "spot reclaim",
            vec![
                inst(0, "running", None, true),
                inst(1, "terminated", spot_reclaim, true),
            ],
            "Preempted { reason: \"instance i-1 (node 1) terminated: Server.SpotInstanceTermination: some words\" }",
        ),
        (
            "spot reclaim under way",
            vec![
                inst(0, "shutting-down", spot_reclaim, true),
                inst(1, "running", None, true),
            ],
            "Preempted { reason: \"instance i-0 (node 0) shutting-down: Server.SpotInstanceTermination: some words\" }",
        ),
        (
            "spot ended from outside",
            vec![
                inst(0, "running", None, true),
                inst(1, "terminated", user, true),
            ],
            "Preempted { reason: \"instance i-1 (node 1) terminated: Client.UserInitiatedShutdown: some words\" }",
        ),
        (
            "on-demand ended from outside",
            vec![
                inst(0, "running", None, false),
                inst(1, "terminated", user, false),
            ],
            "Failed { reason: \"instance i-1 (node 1) terminated: Client.UserInitiatedShutdown: some words\" }",
        ),
        (
            "on-demand stopped, no reason",
            vec![
                inst(0, "stopped", None, false),
                inst(1, "running", None, false),
            ],
            "Failed { reason: \"instance i-0 (node 0) stopped\" }",
        ),
        (
            "terminated by us",
            vec![
                terminating(inst(0, "terminated", user, true)),
                terminating(inst(1, "shutting-down", user, true)),
            ],
            "Terminated",
        ),
        (
            "tagged, not yet terminated",
            vec![
                terminating(inst(0, "running", None, false)),
                terminating(inst(1, "running", None, false)),
            ],
            "Terminated",
        ),
        (
            "a node vanished",
            vec![inst(0, "running", None, false)],
            "Failed { reason: \"node(s) 1 of 2 not found (their instances are gone)\" }",
        ),
    ];
    for (name, instances, want) in cases {
        assert_eq!(format!("{:?}", health(&instances)), want, "{name}");
    }
}

#[test]
fn cluster_states_group_by_cluster_tag() {
    let mut other = inst(0, "running", None, false);
    other.instance_id = "i-other".to_owned();
    other
        .tags
        .insert("stratus-cluster".to_owned(), "b".to_owned());
    other
        .tags
        .insert("stratus-job-id".to_owned(), "7".to_owned());
    other
        .tags
        .insert("stratus-nodes".to_owned(), "1".to_owned());
    let mut foreign = inst(0, "running", None, false);
    foreign
        .tags
        .insert("stratus-job-id".to_owned(), "not-a-number".to_owned());
    foreign
        .tags
        .insert("stratus-cluster".to_owned(), "x".to_owned());
    let states = cluster_states(
        "us-east-1",
        vec![
            inst(1, "running", None, false),
            other,
            foreign,
            inst(0, "pending", None, false),
        ],
    );
    let summary: Vec<_> = states
        .iter()
        .map(|s| {
            (
                s.cluster.as_str(),
                s.job_id,
                s.region.as_str(),
                s.zone.as_str(),
                &s.health,
                s.nodes.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "b",
                7,
                "us-east-1",
                "us-east-1b",
                &ClusterHealth::Running,
                vec![NodeInfo {
                    rank: 0,
                    instance_id: "i-other".to_owned(),
                    ip: "10.0.0.1".to_owned()
                }]
            ),
            (
                "c",
                42,
                "us-east-1",
                "us-east-1b",
                &ClusterHealth::Pending,
                vec![
                    NodeInfo {
                        rank: 0,
                        instance_id: "i-0".to_owned(),
                        ip: "10.0.0.1".to_owned()
                    },
                    NodeInfo {
                        rank: 1,
                        instance_id: "i-1".to_owned(),
                        ip: "10.0.0.2".to_owned()
                    },
                ]
            ),
        ]
    );
}

#[test]
fn network_settings_name_the_region_and_field_at_fault() {
    use super::Ec2Network;
    let ok = Ec2Network::parse_all(
        r#"{"us-west-2": {"subnet_ids": ["subnet-1"], "security_group_ids": ["sg-1"]}, "eu-west-1": {"vpc_id": "vpc-9"}}"#,
    )
    .unwrap();
    assert_eq!(ok["us-west-2"].subnet_ids, ["subnet-1"]);
    assert_eq!(ok["eu-west-1"].vpc_id.as_deref(), Some("vpc-9"));
    assert!(Ec2Network::parse_all("  ").unwrap().is_empty());
    for (json, want) in [
        (
            r#"{"us-west-2": {"subnet_ids": ["sg-1"]}}"#,
            "us-west-2.subnet_ids: 'sg-1' is not a subnet-... id",
        ),
        (
            r#"{"us-west-2": {"vpc_id": "default"}}"#,
            "us-west-2.vpc_id: 'default' is not a vpc-... id",
        ),
        (
            r#"{"us-west-2": {"security_group_ids": ["web"]}}"#,
            "us-west-2.security_group_ids: 'web' is not a sg-... id",
        ),
        (
            r#"{"us-west-2": {"subnet": "subnet-1"}}"#,
            "unknown field `subnet`",
        ),
        ("[1]", "expected {\"<region>\""),
    ] {
        let err = Ec2Network::parse_all(json).unwrap_err();
        assert!(err.contains(want), "{json}: {err}");
    }
}

/// The boot script is valid bash (a syntax error would only show on a real machine's console).
#[test]
fn the_boot_script_parses_as_bash() {
    crate::provider::boot::assert_parses_as_bash(&user_data(&spec("train-42-1", 2)));
}
