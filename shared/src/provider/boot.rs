//! What every cloud VM's boot script shares, whatever carries it (EC2 user data, a GCE
//! startup script): the common tail that writes the agent's environment, downloads the agent
//! and starts it as a unit of its own, the shell quoting, and the parser a test harness uses to
//! read the exported variables back.

use std::collections::BTreeMap;

use crate::agent_protocol::env;

/// The end of a boot script, after its `export STRATUS_...` lines: the agent's environment
/// file, the download of the agent from the API ([`crate::agent_protocol::agent_binary_path`],
/// with the job's token; the API answers with a freshly signed URL, so the download works
/// however late the machine boots), and the start. `outlives` says what the unit must outlive
/// (`cloud-init`, `the startup-script run`).
pub(crate) fn start_agent(outlives: &str) -> String {
    format!(
        r#"# The agent's environment, for the unit below (readable by root only: it holds the token).
for name in ${{!STRATUS_@}}; do printf 'export %s=%q\n' "$name" "${{!name}}"; done >/opt/stratus/agent.env
# The token goes in by standard input (printf is a builtin), never on a command line; curl does
# not send it on to the signed URL the API redirects to.
printf 'Authorization: Bearer %s\n' "$STRATUS_AGENT_TOKEN" |
  curl -fsSL --retry 10 --retry-delay 3 --retry-all-errors -H @- -o /opt/stratus/bin/stratus-agent.part \
    "$STRATUS_API_URL/agent/v1/jobs/$STRATUS_JOB_ID/agent"
chmod 0755 /opt/stratus/bin/stratus-agent.part
mv -f /opt/stratus/bin/stratus-agent.part /opt/stratus/bin/stratus-agent
# Expanded by the unit's shell, after it reads the environment file.
# shellcheck disable=SC2016
start='export HOME=/root && . /opt/stratus/agent.env && cd "${node_dir}" && exec /opt/stratus/bin/stratus-agent'
if command -v systemd-run >/dev/null 2>&1; then
  # A unit of its own outlives {outlives}; its output goes to `journalctl -u stratus-agent`.
  systemd-run --unit=stratus-agent --description='Stratus node agent' /bin/bash -c "$start"
else
  nohup /bin/bash -c "$start" >>/var/log/stratus-agent.log 2>&1 </dev/null &
fi
"#,
        node_dir = env::NODE_DIR,
    )
}

/// The user tasks run as, made when the image has none (with the passwordless `sudo` SkyPilot's
/// users have), and the agent's program folder opened to it (the agent re-executes itself to
/// start commands as that user); the agent's environment file and node folder stay root's.
/// Needs `STRATUS_TASK_USER` exported before it.
pub(crate) fn task_user() -> String {
    format!(
        r#"# Tasks run as ${user}, in its home (SkyPilot's layout), not as root beside the agent.
if ! id -u "${user}" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "${user}"
  mkdir -p /etc/sudoers.d
  printf '%s ALL=(ALL) NOPASSWD:ALL\n' "${user}" >/etc/sudoers.d/90-stratus-task-user
  chmod 0440 /etc/sudoers.d/90-stratus-task-user
fi
chmod 0755 /opt/stratus /opt/stratus/bin
"#,
        user = env::TASK_USER,
    )
}

/// Every `export NAME='value'` line of a boot script with a literal value.
pub(crate) fn exported_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.trim().strip_prefix("export ")?.split_once('=')?;
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return None;
            }
            Some((name.to_owned(), shell_unquote(value)?))
        })
        .collect()
}

/// `value` as one bash word: single-quoted, with each `'` written `'\''`.
pub(crate) fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The inverse of [`shell_quote`] (also taking a bare word of safe characters); `None` for
/// anything else (expansions, unbalanced quotes).
pub(crate) fn shell_unquote(word: &str) -> Option<String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:,@%+=".contains(c);
    if !word.starts_with('\'') {
        return (!word.is_empty() && word.chars().all(safe)).then(|| word.to_owned());
    }
    let mut out = String::new();
    let mut rest = word;
    loop {
        let inner = rest.strip_prefix('\'')?;
        let end = inner.find('\'')?;
        out.push_str(&inner[..end]);
        rest = &inner[end + 1..];
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix(r"\'")?;
        out.push('\'');
    }
}

/// Fails the test when `script` is not valid bash (a syntax error would otherwise only show on
/// a real machine's console).
#[cfg(test)]
pub(crate) fn assert_parses_as_bash(script: &str) {
    let out = std::process::Command::new("bash")
        .args(["-n", "-c", script])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips() {
        for value in [
            "plain",
            "with space",
            "it's",
            "''",
            "a'b'c",
            "https://x/y?a=1&b=2",
        ] {
            assert_eq!(shell_unquote(&shell_quote(value)).as_deref(), Some(value));
        }
        assert_eq!(shell_unquote("$(rm -rf /)"), None);
        let env = exported_env("export STRATUS_A='x y'\nexport lower=1\nexport STRATUS_B=$HOME\n");
        assert_eq!(env.len(), 1);
        assert_eq!(env["STRATUS_A"], "x y");
    }
}
