//! wasmjobs: a job runner whose job logic lives in sandboxed WebAssembly components.
//!
//! Module map (follow one job forward):
//! - [`runtime`]: the plugin engine. Loads plugin components from a directory
//!   (digest, compiled-artifact cache, hot reload) and runs one attempt of one job in
//!   a fresh, limited sandbox (memory cap, deadline, stop timeout, fuel, bounded
//!   logs), serving the WIT imports through a [`runtime::JobHost`].
//! - [`error`]: the error types of each layer.
//!
//! The WIT contract a plugin targets is `wit/job.wit` at the repository root.

pub mod error;
pub mod runtime;
