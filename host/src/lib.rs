//! wasmjobs: a job runner whose job logic lives in sandboxed WebAssembly components.
//!
//! Module map (follow one job forward):
//! - [`api`]: the REST API (Harbor's jobservice shapes) over the service.
//! - [`service`]: submit (checks, the plugin's `validate`, durable store), the
//!   worker pool that claims and runs attempts, the scheduler, operator actions.
//! - [`job`]: the job record, statuses and the one place transitions are checked.
//! - [`store`]: the store trait and its sled backend (group-committed durability).
//! - [`runtime`]: the plugin engine. Loads plugin components from a directory
//!   (digest, compiled-artifact cache, hot reload) and runs one attempt of one job in
//!   a fresh, limited sandbox (memory cap, deadline, stop timeout, fuel, bounded
//!   logs), serving the WIT imports through a [`runtime::JobHost`].
//! - [`cron`]: periodic schedules and the missed-run policy.
//! - [`logs`]: per-job log files and their retention sweeper.
//! - [`config`]: the server configuration (YAML, environment, flags).
//! - [`server`]: starting a node and stopping it gracefully.
//! - [`error`]: the error types of the runtime layer.
//!
//! The WIT contract a plugin targets is `wit/job.wit` at the repository root.

// A future is copied whole where it is created. The attempt's and the
// submit's futures were 16.6 KB and 6.8 KB before their large parts were
// boxed; this keeps new ones on the per-job path under `clippy.toml`'s
// `future-size-threshold`.
#![warn(clippy::large_futures)]

pub mod api;
pub mod config;
pub mod cron;
pub mod error;
pub mod job;
pub mod logs;
pub mod runtime;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
