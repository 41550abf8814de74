//! What one job (or user, or request) cannot do to another, or to the control plane: each
//! test reproduces an attack or a failure found by hand, through the real API router and
//! handlers over a test control plane (`shared::testing`), and checks it now fails safely.
//!
//! # Layout
//! - `api`: requests as a client sends them.
//! - `uploads`: archive keys, sessions, cleanup.
//! - `nodes`: agent tokens, clusters and ranks.
//! - `input`: hostile task files and bodies; limits.
//! - `lost`: work a crash or a failed call dropped (PENDING jobs, cleanups, orphans).
//! - `capacity`: freed capacity wakes waiting jobs in order.
//! - `limits`: the cost ledger, time and cost limits, budgets.
//! - `campaign`: crashes at random points of the handlers, and every event delivered thrice.
//! - `fuzz`: fuzz targets (the task-spec loader, every API and agent body), short runs here.

mod api;
mod campaign;
mod capacity;
mod fuzz;
mod input;
mod limits;
mod lost;
mod nodes;
mod uploads;
