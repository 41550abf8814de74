//! Stratus's AWS side end to end on an emulator: the real handlers, adapters and node agents,
//! with the harness playing EventBridge delivery, the schedule, API Gateway, the machines and
//! (once) the Lambda runtime.
//!
//! # Layout
//! - `harness`: a [`harness::World`] per test, with its own moto.
//! - `proxy`: an HTTP proxy that injects EC2 errors an emulator cannot produce.
//! - `lambda`: the Lambda runtime API, to run the real function binaries.
//! - `lifecycle`: launch, run, succeed, clean up; preemption; failover; duplicate events.

mod harness;
mod lambda;
mod lifecycle;
mod proxy;
