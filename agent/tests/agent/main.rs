//! The real `stratus-agent` binary against a fake control plane ([`fake`]): phases, logs,
//! exit codes, mounts, stopping, faults, where output goes and when. Every agent polls every
//! 50 ms.
//!
//! # Layout
//! - [`fake`]: the fake control plane.
//! - [`node`]: one agent process on a fresh node folder, and archive helpers.
//! - [`phases`]: setup, run, environment, workdir, logs, exit codes.
//! - [`mounts`]: file mounts.
//! - [`container`]: `image_id: docker:...` through a stand-in `docker` that records its calls.
//! - [`stopping`]: `Stop`, 401, SIGTERM, bad configuration, retries.
//! - [`output`]: presigned log URLs, the flush delays, the last output on SIGTERM, the polls.
//! - [`hostile`]: the token out of the command's reach, long scripts, symlinked mounts.
//! - [`fuzz`]: fuzz targets (the agent protocol, the archive unpacker), short runs here.

mod container;
mod fake;
mod fuzz;
mod hostile;
mod mounts;
mod node;
mod output;
mod phases;
mod stopping;
