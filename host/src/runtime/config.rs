//! Settings of the sandbox: how many instances may live at once, how much memory
//! and time each may use, and where compiled artifacts are cached.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;

const MIB: u64 = 1024 * 1024;

/// Settings of the [`Runtime`](super::Runtime). `Default` gives values fit for a
/// small node; [`RuntimeConfig::validate`] refuses values the engine cannot honour.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Jobs that may run at the same time. The instance pool is sized from this (plus
    /// `call_slots`): each slot reserves address space, not memory.
    pub max_concurrent_jobs: u32,
    /// Extra instance slots for short calls (`describe`, `validate`, `should-retry`)
    /// so that a busy node can still accept submissions.
    pub call_slots: u32,
    /// Memory cap of one instance when the plugin does not declare its own.
    pub default_memory: u64,
    /// The largest cap a plugin may declare (`job-info.memory-mib`).
    pub max_memory: u64,
    /// Wall-clock limit of one attempt when the job sets none.
    pub default_deadline: Duration,
    /// Time a job has to return after a stop or cancel before it is killed.
    pub default_stop_timeout: Duration,
    /// Limit of `describe`, `max-fails`, `validate` and `should-retry` calls.
    pub call_timeout: Duration,
    /// Meter fuel (instructions) so that jobs may carry a fuel budget. Costs ~1% of
    /// guest speed; off by default.
    pub fuel_metering: bool,
    /// Bytes of log one attempt may write (logger, stdout and stderr together);
    /// lines past it are dropped and counted.
    pub max_log_bytes: usize,
    /// Longest single log line; longer lines are cut.
    pub max_line_bytes: usize,
    /// Period of the epoch ticker: the granularity of deadlines and kills, and how
    /// often a busy guest yields its thread.
    pub epoch_tick: Duration,
    /// Where compiled components are cached (by digest and engine). `None` compiles
    /// every load.
    pub cache_dir: Option<PathBuf>,
    /// Largest plugin file accepted.
    pub max_plugin_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_concurrent_jobs: 16,
            call_slots: 8,
            default_memory: 128 * MIB,
            max_memory: 1024 * MIB,
            default_deadline: Duration::from_secs(3600),
            default_stop_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(5),
            fuel_metering: false,
            max_log_bytes: 1024 * 1024,
            max_line_bytes: 16 * 1024,
            epoch_tick: Duration::from_millis(10),
            cache_dir: None,
            max_plugin_bytes: 256 * MIB,
        }
    }
}

impl RuntimeConfig {
    /// Check the settings; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if self.max_concurrent_jobs == 0 || self.max_concurrent_jobs > 10_000 {
            return bad("max_concurrent_jobs", "must be between 1 and 10000");
        }
        if self.call_slots == 0 || self.call_slots > 1_000 {
            return bad("call_slots", "must be between 1 and 1000");
        }
        if self.max_memory < MIB || self.max_memory > 4096 * MIB {
            return bad("max_memory", "must be between 1 MiB and 4 GiB");
        }
        if self.default_memory < MIB || self.default_memory > self.max_memory {
            return bad(
                "default_memory",
                "must be at least 1 MiB and at most max_memory",
            );
        }
        if self.epoch_tick < Duration::from_millis(1) || self.epoch_tick > Duration::from_secs(1) {
            return bad("epoch_tick", "must be between 1 ms and 1 s");
        }
        for (key, d) in [
            ("default_deadline", self.default_deadline),
            ("default_stop_timeout", self.default_stop_timeout),
            ("call_timeout", self.call_timeout),
        ] {
            if d.is_zero() {
                return bad(key, "must be greater than zero");
            }
        }
        if self.max_log_bytes == 0 || self.max_line_bytes == 0 {
            return bad("max_log_bytes", "log limits must be greater than zero");
        }
        if self.max_plugin_bytes == 0 {
            return bad("max_plugin_bytes", "must be greater than zero");
        }
        Ok(())
    }

    /// Instance slots in the pool: running jobs plus short calls.
    pub(crate) fn pool_slots(&self) -> u32 {
        self.max_concurrent_jobs + self.call_slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        RuntimeConfig::default()
            .validate()
            .expect("defaults validate");
    }

    #[test]
    fn refuses_default_memory_above_max() {
        let cfg = RuntimeConfig {
            default_memory: 2048 * MIB,
            max_memory: 1024 * MIB,
            ..RuntimeConfig::default()
        };
        let err = cfg.validate().expect_err("must refuse");
        assert!(err.to_string().contains("default_memory"), "{err}");
    }

    #[test]
    fn refuses_zero_workers_and_zero_timeouts() {
        let cfg = RuntimeConfig {
            max_concurrent_jobs: 0,
            ..RuntimeConfig::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("max_concurrent_jobs")
        );
        let cfg = RuntimeConfig {
            call_timeout: Duration::ZERO,
            ..RuntimeConfig::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("call_timeout")
        );
    }
}
