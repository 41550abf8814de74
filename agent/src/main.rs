//! `stratus-agent`: the node agent's binary. It reads its configuration from the environment
//! (see `agent::config`), logs to stderr and runs `agent::run`.
//!
//! Exit codes: 0 when told to stop (or when the job is gone, or on SIGTERM), 2 for a missing or
//! invalid variable, 1 when it cannot start.

use std::process::ExitCode;

const USAGE: &str = "\
usage: stratus-agent

The Stratus node agent. A provider starts it on every node of a job's cluster, with:
  STRATUS_API_URL        base URL of the Stratus API
  STRATUS_AGENT_TOKEN    the job's agent token
  STRATUS_JOB_ID         the job id
  STRATUS_CLUSTER        the cluster name
  STRATUS_NODE_RANK      this node's rank (0, 1, ...)
  STRATUS_NODE_DIR       a folder the agent owns (the commands' HOME)
and, optionally, how often it talks to the control plane (defaults: the local cloud's):
  STRATUS_AGENT_POLL_MS          first delay between polls while waiting (200)
  STRATUS_AGENT_HEARTBEAT_MS     delay between polls while a command runs (1000)
  STRATUS_AGENT_LOG_FLUSH_MS     longest output waits while nobody follows the log (200)
  STRATUS_AGENT_LOG_LIVE_MS      longest output waits while someone follows it (200)
  STRATUS_AGENT_LOG_CHUNK_BYTES  largest log chunk (32768)
RUST_LOG filters the log on stderr (default info).";

fn main() -> ExitCode {
    if let Some(code) = agent::exec_if_trampoline() {
        return code;
    }
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("stratus-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("stratus-agent: unexpected argument '{other}': it takes none\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    agent::main_from_env("stratus-agent")
}
