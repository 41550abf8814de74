//! Stratus's domain library: everything the `stratus` CLI, the node agent and the serverless
//! functions share.
//!
//! # Layout
//! - [`spec`]: SkyPilot task YAML parsed and validated into a [`spec::Pipeline`].
//! - [`catalog`]: embedded instance prices per cloud, region and zone.
//! - [`optimizer`]: feasible candidates from the catalog, ranked by price.
//! - [`cloud`]: the clouds Stratus launches on, and the ones it knows but does not support.
//! - [`credentials`]: which clouds are enabled (`stratus check`).
//! - [`suggest`]: "did you mean" for misspelled names.

pub mod catalog;
pub mod cloud;
pub mod credentials;
pub mod optimizer;
pub mod spec;
pub mod suggest;
