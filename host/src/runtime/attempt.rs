//! One attempt of one job: a fresh instance of the plugin version the attempt
//! started with, `run(ctx, params)` under the job's limits, and a report of how it
//! ended and what it used.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::Runtime;
use super::bindings::{JobContext, RunError};
use super::job_host::{Control, JobHost};
use super::plugin::Plugin;
use super::sandbox::{CallFailure, KillReason, failure_of, race};

/// What to run: the job's identity and parameters, and its limits (the runtime's
/// defaults where `None`).
#[derive(Debug, Clone, Default)]
pub struct AttemptSpec {
    pub job_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub upstream_job_id: Option<String>,
    /// The job's parameters, a JSON object as text.
    pub params: String,
    /// Wall-clock limit of the attempt, instantiation included.
    pub deadline: Option<Duration>,
    /// Time allowed between a stop/cancel and the guest's return.
    pub stop_timeout: Option<Duration>,
    /// Fuel budget (only when the runtime meters fuel).
    pub fuel: Option<u64>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// `run` returned `ok`.
    Success,
    /// `run` returned `failed(message)`.
    Failed { message: String },
    /// `run` returned `stopped` (after a stop command).
    Stopped,
    /// `run` returned `cancelled` (after a cancel command).
    Cancelled,
    /// The guest crashed: a panic, `unreachable`, stack exhaustion, a bad access.
    Trapped { message: String },
    /// The host ended it.
    Killed { reason: KillReason },
}

/// What one attempt did and used.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptReport {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub plugin: String,
    pub plugin_digest: String,
    /// Time to a ready instance (Store + instantiation), the sandbox's start cost.
    #[serde(with = "micros", rename = "startup_us")]
    pub startup: Duration,
    /// Wall-clock time of the whole attempt.
    #[serde(with = "micros", rename = "duration_us")]
    pub duration: Duration,
    /// Highest total linear memory of the instance, in bytes.
    pub peak_memory: u64,
    /// Fuel consumed, when the runtime meters fuel.
    pub fuel_used: Option<u64>,
}

mod micros {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros().try_into().unwrap_or(u64::MAX))
    }
}

impl Runtime {
    /// Run one attempt of a job on `plugin`. Waits for a free job slot first (at
    /// most `max_concurrent_jobs` run at once). Never fails: every way an attempt
    /// can end is an [`Outcome`].
    // A span per attempt at `debug`, not `info`: under the default `info`
    // filter each one cost ~1 µs of a ~21 µs noop job (formatted fields,
    // the registry, an enter and exit per poll); the events that matter name
    // the job themselves.
    #[tracing::instrument(level = "debug", skip_all, fields(job = %spec.job_id, plugin = plugin.name(), attempt = spec.attempt))]
    pub async fn run(
        &self,
        plugin: &Plugin,
        spec: &AttemptSpec,
        host: Arc<dyn JobHost>,
        control: Control,
    ) -> AttemptReport {
        let _slot = self.job_slot().await;
        let cfg = self.config();
        let started = Instant::now();
        let deadline = started + spec.deadline.unwrap_or(cfg.default_deadline);
        let stop_timeout = spec.stop_timeout.unwrap_or(cfg.default_stop_timeout);
        let mut store = self.new_store(host, control.clone(), plugin.info().memory_cap, spec.fuel);
        let ctx = JobContext {
            job_id: spec.job_id.clone(),
            attempt: spec.attempt,
            upstream_job_id: spec.upstream_job_id.clone(),
        };
        let mut startup = Duration::ZERO;
        let call = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            startup = started.elapsed();
            instance
                .wasmjobs_plugin_job()
                .call_run(&mut store, &ctx, &spec.params)
                .await
        };
        let raced = race(call, deadline, Some(&control), stop_timeout).await;
        let duration = started.elapsed();
        store.data().finish_output();
        let outcome = match raced {
            Ok(Ok(Ok(()))) => Outcome::Success,
            Ok(Ok(Err(RunError::Failed(message)))) => Outcome::Failed { message },
            Ok(Ok(Err(RunError::Stopped))) => Outcome::Stopped,
            Ok(Ok(Err(RunError::Cancelled))) => Outcome::Cancelled,
            Ok(Err(e)) => match failure_of(&e, store.data()) {
                CallFailure::Killed(reason) => Outcome::Killed { reason },
                CallFailure::Trapped(message) => Outcome::Trapped { message },
            },
            Err(reason) => Outcome::Killed { reason },
        };
        let fuel_used = if cfg.fuel_metering {
            let budget = spec.fuel.unwrap_or(u64::MAX);
            store.get_fuel().ok().map(|left| budget - left)
        } else {
            None
        };
        tracing::debug!(?outcome, ?duration, "attempt ended");
        AttemptReport {
            outcome,
            plugin: plugin.name().to_string(),
            plugin_digest: plugin.digest().to_string(),
            startup,
            duration,
            peak_memory: store.data().limiter.peak(),
            fuel_used,
        }
    }
}
