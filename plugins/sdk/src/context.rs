//! The running job's view of the host: check-ins, the logger, op-commands,
//! sub-jobs and context properties (Harbor's job context).

use crate::bindings::wasmjobs::plugin::host;
use crate::bindings::wasmjobs::plugin::types;

pub use types::Level;

/// The operator's command for the running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    None,
    Stop,
    Cancel,
}

/// The attempt being run, and the host calls it may make.
#[derive(Debug, Clone)]
pub struct Context {
    job_id: String,
    attempt: u32,
    upstream_job_id: Option<String>,
}

impl Context {
    pub(crate) fn new(job_id: String, attempt: u32, upstream_job_id: Option<String>) -> Self {
        Self {
            job_id,
            attempt,
            upstream_job_id,
        }
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// 1 for the first attempt, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub fn upstream_job_id(&self) -> Option<&str> {
        self.upstream_job_id.as_deref()
    }

    /// Report progress, e.g. `"30%"`.
    pub fn checkin(&self, message: &str) {
        host::checkin(message);
    }

    pub fn log(&self, level: Level, message: &str) {
        host::log(level, message);
    }
    pub fn debug(&self, message: &str) {
        host::log(Level::Debug, message);
    }
    pub fn info(&self, message: &str) {
        host::log(Level::Info, message);
    }
    pub fn warning(&self, message: &str) {
        host::log(Level::Warning, message);
    }
    pub fn error(&self, message: &str) {
        host::log(Level::Error, message);
    }
    pub fn fatal(&self, message: &str) {
        host::log(Level::Fatal, message);
    }

    /// The operator's command: poll it between units of work.
    pub fn command(&self) -> Command {
        match host::op_command() {
            types::Command::None => Command::None,
            types::Command::Stop => Command::Stop,
            types::Command::Cancel => Command::Cancel,
        }
    }

    /// `Err(Stopped)` / `Err(Cancelled)` when the operator asked, for `?` between
    /// steps: `ctx.check_command()?;`.
    pub fn check_command(&self) -> Result<(), crate::RunError> {
        match self.command() {
            Command::None => Ok(()),
            Command::Stop => Err(crate::RunError::Stopped),
            Command::Cancel => Err(crate::RunError::Cancelled),
        }
    }

    /// Sleep `ms` milliseconds in steps of at most `step_ms`, polling the command
    /// between steps.
    pub fn sleep_ms(&self, ms: u64, step_ms: u64) -> Result<(), crate::RunError> {
        let step = step_ms.max(1);
        let mut left = ms;
        while left > 0 {
            self.check_command()?;
            let nap = left.min(step);
            std::thread::sleep(std::time::Duration::from_millis(nap));
            left -= nap;
        }
        self.check_command()
    }

    /// Launch a sub-job of job type `name` with `params` (a JSON object); returns
    /// its id.
    pub fn launch_subjob(&self, name: &str, params: &serde_json::Value) -> Result<String, String> {
        host::launch_subjob(&types::SubjobRequest {
            name: name.to_string(),
            parameters: params.to_string(),
        })
    }

    /// A context property the operator configured.
    pub fn get(&self, key: &str) -> Option<String> {
        host::get(key)
    }
}
