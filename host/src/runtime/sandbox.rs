//! The mechanics shared by every guest call: a fresh Store with the instance's
//! limits, and a race between the call and the kill clock.
//!
//! A guest is stopped in one of three ways:
//! - it grows memory past its cap: the limiter errors and the call traps at once;
//! - it runs out of fuel (when metered): the call traps with `OutOfFuel`;
//! - its deadline passes, or a stop/cancel is not honoured within the stop timeout:
//!   the call's future is dropped. A spinning guest yields to tokio at every epoch
//!   tick (`UpdateDeadline::Yield`), and a guest waiting in a host call or a WASI
//!   sleep is suspended in its future anyway, so the drop always lands within a
//!   tick.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::Runtime;
use super::job_host::{Control, JobHost};
use super::limiter::MemoryLimiter;
use super::output::LogBudget;
use super::state::InstanceState;
use crate::runtime::engine::MAX_TABLE_ELEMENTS;

/// Why the host ended a guest call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillReason {
    /// The wall-clock deadline passed.
    Deadline,
    /// A stop or cancel was not honoured within the stop timeout.
    StopTimeout,
    /// The guest tried to grow its memory past its cap.
    MemoryLimit,
    /// The fuel budget ran out.
    FuelExhausted,
}

impl std::fmt::Display for KillReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KillReason::Deadline => "deadline exceeded",
            KillReason::StopTimeout => "did not stop within the stop timeout",
            KillReason::MemoryLimit => "memory cap exceeded",
            KillReason::FuelExhausted => "fuel budget exhausted",
        })
    }
}

/// How a guest call ended, when it did not return a value.
#[derive(Debug)]
pub(crate) enum CallFailure {
    Killed(KillReason),
    Trapped(String),
}

impl Runtime {
    /// A fresh Store for one instance, with its memory cap, fuel and epoch policy.
    pub(crate) fn new_store(
        &self,
        host: Arc<dyn JobHost>,
        control: Control,
        memory_cap: u64,
        fuel: Option<u64>,
    ) -> Store<InstanceState> {
        let cfg = self.config();
        let budget = Arc::new(LogBudget::new(cfg.max_log_bytes, cfg.max_line_bytes));
        let limiter = MemoryLimiter::new(memory_cap, MAX_TABLE_ELEMENTS);
        let state = InstanceState::new(host, control, budget, limiter);
        let mut store = Store::new(self.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // Yield to the executor at every tick: a busy guest shares its thread, and
        // the kill clock gets to run.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        if cfg.fuel_metering {
            // Fuel is only consumed when metering is on; without a budget a job may
            // use as much as it likes and the report says how much it used.
            let _ = store.set_fuel(fuel.unwrap_or(u64::MAX));
        }
        store
    }
}

/// Run `call` until it returns, its deadline passes, or (with a control) a stop or
/// cancel goes unanswered for `stop_timeout`.
///
/// `call` (an instantiation and a guest call: ~1.3 KB for a job's) is boxed
/// here, before the race's own future is made: a future is copied whole when
/// it is created, and every caller's future would otherwise hold it inline
/// (a worker's attempt was 16.6 KB with it and the retry decision inside).
pub(crate) fn race<'a, F: Future + 'a>(
    call: F,
    deadline: Instant,
    control: Option<&'a Control>,
    stop_timeout: Duration,
) -> impl Future<Output = Result<F::Output, KillReason>> + 'a {
    let call = Box::pin(call);
    async move {
        let stop_clock = async {
            match control {
                Some(c) => {
                    c.requested().await;
                    tokio::time::sleep(stop_timeout).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            out = call => Ok(out),
            () = tokio::time::sleep_until(deadline) => Err(KillReason::Deadline),
            () = stop_clock => Err(KillReason::StopTimeout),
        }
    }
}

/// Classify a call that did not return a value: limits first (their traps are
/// side effects of the kill), then the trap itself.
pub(crate) fn failure_of(error: &wasmtime::Error, state: &InstanceState) -> CallFailure {
    if state.limiter.hit_cap() {
        return CallFailure::Killed(KillReason::MemoryLimit);
    }
    if let Some(Trap::OutOfFuel) = error.downcast_ref::<Trap>() {
        return CallFailure::Killed(KillReason::FuelExhausted);
    }
    CallFailure::Trapped(trap_message(error))
}

/// Frames of the wasm backtrace kept in a trap message.
const TRAP_FRAMES: usize = 8;
/// Longest trap message (a host error's chain can be long too).
const TRAP_MESSAGE_BYTES: usize = 4096;

/// A bounded description of a trap: what happened and where, never thousands of
/// frames (a stack overflow has one per call).
fn trap_message(error: &wasmtime::Error) -> String {
    use std::fmt::Write;
    let mut msg = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error
            .chain()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(": "),
    };
    if let Some(bt) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        let frames = bt.frames();
        msg.push_str("\nwasm backtrace:");
        for (i, f) in frames.iter().take(TRAP_FRAMES).enumerate() {
            let module = f.module().name().unwrap_or("<unknown>");
            let _ = match f.func_name() {
                Some(name) => write!(msg, "\n  {i}: {module}!{name}"),
                None => write!(msg, "\n  {i}: {module}!<wasm function {}>", f.func_index()),
            };
        }
        if frames.len() > TRAP_FRAMES {
            let _ = write!(msg, "\n  ... {} more frames", frames.len() - TRAP_FRAMES);
        }
    }
    if msg.len() > TRAP_MESSAGE_BYTES {
        let mut end = TRAP_MESSAGE_BYTES;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
    }
    msg
}
