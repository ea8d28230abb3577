//! Write a wasmjobs job plugin in Rust.
//!
//! ```ignore
//! use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};
//!
//! struct Hello;
//!
//! impl Job for Hello {
//!     fn info() -> JobInfo {
//!         JobInfo::new("hello", "says hello")
//!     }
//!     fn validate(params: &Params) -> Result<(), String> {
//!         params.str("who").map(|_| ())
//!     }
//!     fn run(ctx: &Context, params: &Params) -> Result<(), RunError> {
//!         ctx.info(&format!("hello, {}", params.str("who")?));
//!         ctx.checkin("100%");
//!         Ok(())
//!     }
//! }
//!
//! wasmjobs_sdk::export_job!(Hello);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (crate type `cdylib`)
//! and drop the `.wasm` into the host's plugin directory.

mod context;
mod params;

pub use context::{Command, Context, Level};
pub use params::Params;

/// The generated bindings of `wit/job.wit` (for the `export_job!` macro).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "wasmjobs_sdk::bindings",
    });
}

use bindings::exports::wasmjobs::plugin::job as wit;

/// Why `run` did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The job failed; it may be retried (see [`Job::should_retry`]).
    Failed(String),
    /// The job saw [`Command::Stop`] and stopped.
    Stopped,
    /// The job saw [`Command::Cancel`] and gave up.
    Cancelled,
}

impl RunError {
    pub fn failed(message: impl Into<String>) -> Self {
        RunError::Failed(message.into())
    }
}

/// `?` on a `Result<_, String>` (e.g. a missing parameter) fails the job.
impl From<String> for RunError {
    fn from(message: String) -> Self {
        RunError::Failed(message)
    }
}

/// What a plugin says about its job type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub name: String,
    pub description: String,
    pub capacity: Vec<(String, u32)>,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Memory cap of one instance in MiB; 0 takes the host's default.
    pub memory_mib: u32,
}

impl JobInfo {
    /// A job type with no capacity needs, the default memory cap and a back-off of
    /// 1 s doubling up to 5 min.
    pub fn new(name: &str, description: &str) -> Self {
        Self {
            name: name.to_string(),
            description: description.to_string(),
            capacity: Vec::new(),
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            memory_mib: 0,
        }
    }

    /// Needs `amount` of the node capacity `name` while running.
    pub fn needs(mut self, name: &str, amount: u32) -> Self {
        self.capacity.push((name.to_string(), amount));
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn backoff_ms(mut self, initial: u64, max: u64) -> Self {
        self.initial_backoff_ms = initial;
        self.max_backoff_ms = max;
        self
    }
}

/// A job type. Every method is called on a fresh instance: keep no state in statics.
pub trait Job {
    /// Name, capacity needs, back-off and memory needs. Called when the file loads.
    fn info() -> JobInfo;

    /// Failed attempts allowed before the job ends in `error`; 0 means the host's
    /// default (4).
    fn max_fails() -> u32 {
        0
    }

    /// May a failed attempt be retried? Asked while failures are below `max_fails`.
    fn should_retry(_failure: &str, _attempt: u32) -> bool {
        true
    }

    /// Check parameters before the job is enqueued; the message goes back to the
    /// client. The SDK has already checked that they are a JSON object.
    fn validate(_params: &Params) -> Result<(), String> {
        Ok(())
    }

    /// Do the work. Poll [`Context::command`] between steps.
    fn run(ctx: &Context, params: &Params) -> Result<(), RunError>;
}

/// Glue from the generated `Guest` trait to a [`Job`]; use [`export_job!`].
#[doc(hidden)]
#[derive(Debug)]
pub struct Exported<J>(std::marker::PhantomData<J>);

impl<J: Job> wit::Guest for Exported<J> {
    fn describe() -> wit::JobInfo {
        let info = J::info();
        wit::JobInfo {
            name: info.name,
            description: info.description,
            capacity: info.capacity,
            backoff: bindings::wasmjobs::plugin::types::Backoff {
                initial_backoff_ms: info.initial_backoff_ms,
                max_backoff_ms: info.max_backoff_ms,
            },
            memory_mib: info.memory_mib,
        }
    }

    fn max_fails() -> u32 {
        J::max_fails()
    }

    fn should_retry(failure: String, attempt: u32) -> bool {
        J::should_retry(&failure, attempt)
    }

    fn validate(params: String) -> Result<(), String> {
        let result = Params::parse(&params).and_then(|p| J::validate(&p));
        flush_stdio();
        result
    }

    fn run(ctx: wit::JobContext, params: String) -> Result<(), wit::RunError> {
        let ctx = Context::new(ctx.job_id, ctx.attempt, ctx.upstream_job_id);
        let result = Params::parse(&params)
            .map_err(RunError::Failed)
            .and_then(|p| J::run(&ctx, &p));
        flush_stdio();
        result.map_err(|e| match e {
            RunError::Failed(m) => wit::RunError::Failed(m),
            RunError::Stopped => wit::RunError::Stopped,
            RunError::Cancelled => wit::RunError::Cancelled,
        })
    }
}

/// std's stdout keeps a partial line in its buffer until a newline or process exit,
/// and a plugin instance never exits: flush so the last line reaches the job log.
fn flush_stdio() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// Export a [`Job`] implementation as this component's job plugin.
#[macro_export]
macro_rules! export_job {
    ($job:ty) => {
        type __WasmjobsExported = $crate::Exported<$job>;
        $crate::bindings::__export_plugin!(__WasmjobsExported with_types_in $crate::bindings);
    };
}
