//! The real `stratus-agent` binary against a fake control plane ([`fake`]): phases, logs,
//! exit codes, mounts, stopping, faults. Every agent polls every 50 ms.
//!
//! # Layout
//! - [`fake`]: the fake control plane.
//! - [`node`]: one agent process on a fresh node folder, and archive helpers.
//! - [`phases`]: setup, run, environment, workdir, logs, exit codes.
//! - [`mounts`]: file mounts.
//! - [`stopping`]: `Stop`, 401, SIGTERM, bad configuration, retries.

mod fake;
mod mounts;
mod node;
mod phases;
mod stopping;
