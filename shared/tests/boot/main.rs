//! The boot scripts machines run (EC2 user data, GCE startup script), checked by `shellcheck`
//! and run for real: as root, in a throwaway root (a mount namespace with `/opt`, `/home`,
//! `/var/log` and a copy of `/etc` of its own) and a network namespace holding a fake EC2
//! metadata service (169.254.169.254) and a fake Stratus API (`fake.py`). The "agent" the API
//! serves records how it was started, so the test sees what a real agent would get.
//!
//! Needs root and `unshare` (util-linux), `ip` (iproute2), `python3`, `curl` and `shellcheck`;
//! `scripts/test` installs shellcheck. Where namespaces are not allowed (an unprivileged
//! container), the run tests say so and stop; shellcheck still runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use shared::agent_protocol::AgentCadence;
use shared::cloud::Cloud;
use shared::optimizer::Candidate;
use shared::provider::{AgentBoot, ClusterSpec, startup_script, user_data};

const TOKEN: &str = "job-token-'quoted'";

fn spec(cloud: Cloud) -> ClusterSpec {
    ClusterSpec {
        job_id: 7,
        task: 0,
        cluster: "train-7-1".to_owned(),
        owner: "alice".to_owned(),
        candidate: Candidate {
            cloud,
            region: "us-east-1".to_owned(),
            zone: "us-east-1a".to_owned(),
            instance_type: "m6i.large".to_owned(),
            vcpus: 2.0,
            memory_gb: 8.0,
            accelerator: None,
            use_spot: false,
            hourly_price: 0.1,
            num_nodes: 3,
            alternative: 0,
        },
        num_nodes: 3,
        agent: AgentBoot {
            api_url: "http://127.0.0.1:8080".to_owned(),
            token: TOKEN.to_owned(),
            cadence: AgentCadence::CLOUD,
        },
        labels: BTreeMap::new(),
        image_id: None,
        disk_size_gb: None,
    }
}

#[test]
fn the_boot_scripts_pass_shellcheck() {
    let dir = tempfile::tempdir().unwrap();
    for (name, script) in [
        ("user-data.sh", user_data(&spec(Cloud::Aws))),
        ("startup-script.sh", startup_script(&spec(Cloud::Gcp), 1)),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, script).unwrap();
        let out = Command::new("shellcheck")
            .args(["--shell=bash", "--severity=style"])
            .arg(&path)
            .output()
            .expect("shellcheck is installed (scripts/test installs it from Debian)");
        assert!(
            out.status.success(),
            "{name}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn the_ec2_user_data_boots_a_node_in_a_throwaway_root() {
    let Some(report) = boot(&user_data(&spec(Cloud::Aws)), "2") else {
        return;
    };
    // The rank comes from the metadata service.
    assert_eq!(report["STRATUS_NODE_RANK"], "2", "{report:?}");
    assert_common(&report, "ec2-user");
}

#[test]
fn the_gce_startup_script_boots_a_node_in_a_throwaway_root() {
    let Some(report) = boot(&startup_script(&spec(Cloud::Gcp), 1), "0") else {
        return;
    };
    assert_eq!(report["STRATUS_NODE_RANK"], "1", "{report:?}");
    assert_common(&report, "gcpuser");
}

fn assert_common(report: &BTreeMap<String, String>, user: &str) {
    let want = [
        // The agent: root, its environment from the script, in its own folder.
        ("uid", "0"),
        ("STRATUS_AGENT_TOKEN", TOKEN),
        ("STRATUS_API_URL", "http://127.0.0.1:8080"),
        ("STRATUS_JOB_ID", "7"),
        ("STRATUS_CLUSTER", "train-7-1"),
        ("STRATUS_NODE_DIR", "/opt/stratus/node"),
        ("STRATUS_TASK_USER", user),
        ("pwd", "/opt/stratus/node"),
        // Started as a unit of its own.
        ("unit", "--unit=stratus-agent"),
        // The token's file and the node folder are root's alone; the program is everyone's
        // (the agent re-executes itself as the task user).
        ("mode /opt/stratus/agent.env", "600 root"),
        ("mode /opt/stratus/node", "700 root"),
        ("mode /opt/stratus", "755 root"),
        ("mode /opt/stratus/bin/stratus-agent", "755 root"),
        // The task user, with its home, made by the script.
        ("user home", &format!("/home/{user}")),
        ("user sudo", &format!("{user} ALL=(ALL) NOPASSWD:ALL")),
    ];
    for (key, value) in want {
        assert_eq!(
            report.get(key).map(String::as_str),
            Some(value),
            "{key}: {report:#?}"
        );
    }
}

/// Runs `script` as a booting VM would, in a throwaway root; the agent's report, or `None`
/// when this machine does not allow namespaces.
fn boot(script: &str, launch_index: &str) -> Option<BTreeMap<String, String>> {
    let probe = Command::new("unshare")
        .args(["--mount", "--net", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED: this machine allows no mount and network namespaces (run as root with \
             util-linux's unshare); the boot scripts were not run"
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("boot.sh"), script).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/boot/fake.py"),
        d.join("fake.py"),
    )
    .unwrap();
    std::fs::write(d.join("agent.sh"), AGENT).unwrap();
    std::fs::create_dir_all(d.join("bin")).unwrap();
    write_executable(&d.join("bin/systemd-run"), SYSTEMD_RUN);
    write_executable(&d.join("runner.sh"), RUNNER);
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "bash"])
        .arg(d.join("runner.sh"))
        .arg(d)
        .arg(TOKEN)
        .arg(launch_index)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the boot failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// What the fake API serves as the agent: records who started it, how, and with what.
const AGENT: &str = r#"#!/bin/bash
{
  echo "uid=$(id -u)"
  echo "pwd=$PWD"
  env | grep '^STRATUS_' | sort
} >/opt/stratus/node/agent-ran.part
mv /opt/stratus/node/agent-ran.part /opt/stratus/node/agent-ran
"#;

/// systemd-run as far as the boot script uses it: records the unit, runs the command.
const SYSTEMD_RUN: &str = r#"#!/bin/bash
printf 'unit=%s\n' "$1" >/opt/stratus/systemd-run.txt
while [[ "$1" == --* ]]; do shift; done
"$@" </dev/null >/dev/null 2>&1 &
"#;

/// Runs inside the namespaces: the throwaway root, the fakes, the boot, the report.
const RUNNER: &str = r#"#!/bin/bash
set -euo pipefail
dir=$1 token=$2 index=$3
ip link set lo up
ip addr add 169.254.169.254/32 dev lo
mount -t tmpfs tmpfs /opt
mount -t tmpfs tmpfs /home
mount -t tmpfs tmpfs /var/log
mkdir -p "$dir/etc"
cp -a /etc/. "$dir/etc/"
mount --bind "$dir/etc" /etc
python3 "$dir/fake.py" "$dir" "$token" "$index" &
fake=$!
trap 'kill $fake 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:8080/ready >/dev/null 2>&1 && break
  sleep 0.1
done
if ! PATH="$dir/bin:$PATH" bash "$dir/boot.sh" >"$dir/boot.out" 2>&1; then
  echo "boot script failed:"; cat "$dir/boot.out"; exit 1
fi
for _ in $(seq 1 100); do
  [ -f /opt/stratus/node/agent-ran ] && break
  sleep 0.1
done
cat /opt/stratus/node/agent-ran /opt/stratus/systemd-run.txt
for path in /opt/stratus/agent.env /opt/stratus/node /opt/stratus /opt/stratus/bin/stratus-agent; do
  echo "mode $path=$(stat -c '%a %U' "$path")"
done
user=$(grep '^export STRATUS_TASK_USER=' "$dir/boot.sh" | cut -d"'" -f2)
echo "user home=$(getent passwd "$user" | cut -d: -f6)"
[ -d "/home/$user" ] || echo "user home missing"
echo "user sudo=$(cat /etc/sudoers.d/90-stratus-task-user 2>/dev/null)"
"#;
