//! Returns at once: the cost of a job is the sandbox and the bookkeeping around it.

use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};

struct Noop;

impl Job for Noop {
    fn info() -> JobInfo {
        JobInfo::new("noop", "does nothing, for benchmarks")
    }

    fn run(_ctx: &Context, _params: &Params) -> Result<(), RunError> {
        Ok(())
    }
}

wasmjobs_sdk::export_job!(Noop);
