//! Stratus's domain library: everything the `stratus` CLI, the node agent and the serverless
//! functions share.
//!
//! # Layout
//! - [`spec`]: SkyPilot task YAML parsed and validated into a [`spec::Pipeline`].
//! - [`optimizer`]: feasible candidates from the catalog, ranked by price.
//! - [`cloud`]: the clouds Stratus launches on, and the ones it knows but does not support.
//! - [`suggest`]: "did you mean" for misspelled names.

pub mod cloud;
pub mod optimizer;
pub mod spec;
pub mod suggest;
