//! The boot script every node runs (EC2 user data), and reading it back.
//!
//! The script exports the `agent_protocol::env` variables as single-quoted `export K='V'`
//! lines, adds the rank from IMDS (`ami-launch-index`, `IMDSv2`), downloads the agent from the
//! API with the job's token and starts it as a transient systemd unit (`stratus-agent`), so
//! that it outlives cloud-init; without systemd it falls back to `nohup`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::agent_protocol::env;
use crate::provider::boot::shell_quote;
use crate::provider::{ClusterSpec, boot};

/// The agent's folder on every node (`STRATUS_NODE_DIR`).
pub const NODE_DIR: &str = "/opt/stratus/node";
/// The user tasks run as: the default user of Amazon Linux (and of AWS's Deep Learning AMIs),
/// made at boot on images without it.
pub const TASK_USER: &str = "ec2-user";
/// EC2's limit on `ClientToken`.
const CLIENT_TOKEN_MAX: usize = 64;

/// The boot script of every node of `spec` (before base64): the same for every node, which
/// learns its rank from IMDS.
pub fn user_data(spec: &ClusterSpec) -> String {
    let mut vars = vec![
        (env::API_URL, spec.agent.api_url.clone()),
        (env::TOKEN, spec.agent.token.clone()),
        (env::JOB_ID, spec.job_id.to_string()),
        (env::CLUSTER, spec.cluster.clone()),
        (env::NODE_DIR, NODE_DIR.to_owned()),
        (env::TASK_USER, TASK_USER.to_owned()),
    ];
    vars.extend(spec.agent.cadence.env());
    let mut script = String::from(
        "#!/bin/bash\n\
         # Stratus node boot script (EC2 user data): installs the node agent and starts it.\n\
         set -euo pipefail\n",
    );
    for (name, value) in vars {
        let _ = writeln!(script, "export {name}={}", shell_quote(&value));
    }
    let rank = env::NODE_RANK;
    let _ = write!(
        script,
        r#"# The node's rank is its launch index within the reservation (IMDSv2).
imds=http://169.254.169.254/latest
imds_token=$(curl -fsS --retry 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$imds/api/token")
{rank}=$(curl -fsS --retry 5 -H "X-aws-ec2-metadata-token: $imds_token" "$imds/meta-data/ami-launch-index")
case "${rank}" in ''|*[!0-9]*) echo "stratus: bad ami-launch-index '${rank}'" >&2; exit 1 ;; esac
export {rank}
umask 077
mkdir -p /opt/stratus/bin "${node_dir}"
"#,
        node_dir = env::NODE_DIR,
    );
    script.push_str(&boot::task_user());
    script.push_str(&boot::start_agent("cloud-init"));
    script
}

/// The variables a boot script from [`user_data`] exports: every `export NAME='value'` line
/// with a literal value (the rank, computed at boot, is not among them: take it from the
/// instance's `AmiLaunchIndex`). A test harness uses it to start a real agent per emulated
/// instance.
pub fn agent_env_from_user_data(text: &str) -> BTreeMap<String, String> {
    boot::exported_env(text)
}

/// The text of user data as `DescribeInstanceAttribute` returns it (base64), or `None` if it
/// is not base64 of UTF-8.
pub fn decode_user_data(base64: &str) -> Option<String> {
    String::from_utf8(base64_decode(base64.trim())?).ok()
}

/// EC2's idempotency key for a cluster: its name, or when that is not at most 64 ASCII
/// characters, `stratus-` and 56 hex digits of its SHA-256.
pub(crate) fn client_token(cluster: &str) -> String {
    if cluster.len() <= CLIENT_TOKEN_MAX && cluster.is_ascii() {
        return cluster.to_owned();
    }
    let digest = hex::encode(Sha256::digest(cluster.as_bytes()));
    format!("stratus-{}", &digest[..CLIENT_TOKEN_MAX - "stratus-".len()])
}

/// Standard base64 with padding (`RunInstances` takes user data this way).
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Standard base64, padded or not: emulators and SDKs differ in whether they pad.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(text).ok()
}
