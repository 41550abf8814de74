//! The boot script of every node (GCE `startup-script` metadata), reading it back, and the
//! names and request ids a launch derives from the cluster name.
//!
//! The script exports the `agent_protocol::env` variables as single-quoted `export K='V'`
//! lines (the rank included: each node has a script of its own, as each is its own
//! `instances.insert`), downloads the agent from the API with the job's token and starts it as a
//! transient systemd unit (`stratus-agent`); without systemd it falls back to `nohup`. GCE runs
//! startup scripts on every boot, so a restarted VM starts its agent again.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::agent_protocol::env;
use crate::provider::boot::shell_quote;
use crate::provider::{ClusterSpec, boot};

/// The agent's folder on every node (`STRATUS_NODE_DIR`).
pub const NODE_DIR: &str = "/opt/stratus/node";
/// The user tasks run as (SkyPilot's user on GCP), made at boot.
pub const TASK_USER: &str = "gcpuser";
/// GCE's longest resource name.
const NAME_MAX: usize = 63;

/// The startup script of node `rank` of `spec`.
pub fn startup_script(spec: &ClusterSpec, rank: u32) -> String {
    let mut vars = vec![
        (env::API_URL, spec.agent.api_url.clone()),
        (env::TOKEN, spec.agent.token.clone()),
        (env::JOB_ID, spec.job_id.to_string()),
        (env::CLUSTER, spec.cluster.clone()),
        (env::NODE_RANK, rank.to_string()),
        (env::NODE_DIR, NODE_DIR.to_owned()),
        (env::TASK_USER, TASK_USER.to_owned()),
    ];
    vars.extend(spec.agent.cadence.env());
    let mut script = String::from(
        "#!/bin/bash\n\
         # Stratus node boot script (GCE startup-script): installs the node agent and starts it.\n\
         set -euo pipefail\n",
    );
    for (name, value) in vars {
        let _ = writeln!(script, "export {name}={}", shell_quote(&value));
    }
    let _ = write!(
        script,
        r#"umask 077
mkdir -p /opt/stratus/bin "${node_dir}"
"#,
        node_dir = env::NODE_DIR,
    );
    script.push_str(&boot::task_user());
    script.push_str(&boot::start_agent("the startup-script run"));
    script
}

/// The variables a script from [`startup_script`] exports: every `export NAME='value'` line
/// with a literal value, the rank included. A test harness uses it to start a real agent per
/// emulated instance.
pub fn agent_env_from_startup_script(text: &str) -> BTreeMap<String, String> {
    boot::exported_env(text)
}

/// Whether `name` is a valid GCE resource name: `[a-z]([-a-z0-9]{0,61}[a-z0-9])?`.
pub(crate) fn is_resource_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    match bytes {
        [] => false,
        [first] => first.is_ascii_lowercase(),
        [first, middle @ .., last] => {
            bytes.len() <= NAME_MAX
                && first.is_ascii_lowercase()
                && middle.iter().all(inner)
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
        }
    }
}

/// The instance name of node `rank` of `cluster`: `<cluster>-<rank>` when that is a valid GCE
/// name (it is for every name `job::cluster_name` makes from a task name that starts with a
/// letter), else `stratus-<16 hex digits of the cluster's SHA-256>-<rank>`. Labels, not names,
/// say which cluster an instance belongs to; the name only has to be stable, so that a retried
/// launch finds the instance it made.
pub(crate) fn instance_name(cluster: &str, rank: u32) -> String {
    let plain = format!("{cluster}-{rank}");
    if is_resource_name(&plain) {
        return plain;
    }
    let digest = hex::encode(Sha256::digest(cluster.as_bytes()));
    format!("stratus-{}-{rank}", &digest[..16])
}

/// The `requestId` of a Stratus call (`what`: `insert`, ...) on node `rank` of `cluster` in
/// `zone`: a UUID made of the SHA-256 of the four, so that a retried call carries the same id
/// and GCE answers it with the first call's operation instead of acting twice. (The zone is
/// part of it because GCE remembers request ids per project: the same cluster tried in
/// another zone must not be answered with the first zone's operation.) It is formatted
/// 8-4-4-4-12 with the RFC 9562 version 8 ("custom") and variant bits, never the nil UUID
/// GCE refuses.
pub(crate) fn request_id(what: &str, cluster: &str, zone: &str, rank: u32) -> String {
    let digest = Sha256::digest(format!("stratus/{what}/{cluster}/{zone}/{rank}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
