//! End-to-end tests of the real `stratus` binary.
//!
//! # Layout
//! - `compat`: every SkyPilot task file in `../shared/compat/skypilot` through `--dry-run`.
//! - `dependencies`: `--depends-on` with Slurm's afterok / afternotok.
//! - `dry_run`: plans, overrides, errors and exit codes of `jobs launch --dry-run`.
//! - `check`: `stratus check` with and without credentials.
//! - `dashboard`: the Jobs page and a job's page in headless Chromium, driven by chromedriver.
//! - `events`: webhooks of job status changes (filtered, ordered, retried, never blocking).
//! - `fidelity`: SkyPilot's CLI behaviour: options anywhere, launch and restart lines, `logs`
//!   following, queue columns and colours, errors, SkyPilot's flags, help examples run.
//! - `harness`: a temporary `$STRATUS_HOME` with its own local control plane.
//! - `limits`: time limits, cost caps, the monthly budget, `NO_RECOVERY`, `max_recoveries`.
//! - `local_mode`: jobs launched, recovered, cancelled and queued on the local cloud.
//! - `logs`: live logs of multi-node jobs, exactly once, and logs larger than a response.
//! - `safety`: a large upload in bounded memory; a crash after a burst of submits.

mod arrays;
mod check;
mod compat;
mod dashboard;
mod dependencies;
mod dry_run;
mod events;
mod fidelity;
mod harness;
mod limits;
mod local_mode;
mod logs;
mod safety;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `stratus` with a clean, temporary `$STRATUS_HOME` and `$HOME`.
pub fn stratus(args: &[&str], home: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stratus"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("STRATUS_HOME", home.join(".stratus"));
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run stratus")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Output with the pids and addresses taken out of its line prefixes (`(train, pid=12) x` is
/// `(train) x`, `(w, rank=1, pid=3, ip=127.0.0.2) x` is `(w, rank=1) x`), for assertions
/// about what was printed rather than which process printed it.
pub fn plain_prefixes(output: &str) -> String {
    let mut plain = String::with_capacity(output.len());
    for line in output.split_inclusive('\n') {
        let Some(end) = line.find(") ").filter(|_| line.starts_with('(')) else {
            plain.push_str(line);
            continue;
        };
        let kept: Vec<&str> = line[1..end]
            .split(", ")
            .filter(|p| !p.starts_with("pid=") && !p.starts_with("ip="))
            .map(|p| p.split_once(" pid=").map_or(p, |(who, _)| who))
            .collect();
        plain.push('(');
        plain.push_str(&kept.join(", "));
        plain.push_str(&line[end..]);
    }
    plain
}
