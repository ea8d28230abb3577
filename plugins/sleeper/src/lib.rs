//! Sleeps `ms` milliseconds in steps of `step_ms` (default 10), polling the
//! op-command between steps: the model of a cooperative, stoppable job.

use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};

struct Sleeper;

impl Job for Sleeper {
    fn info() -> JobInfo {
        JobInfo::new("sleeper", "sleeps `ms` milliseconds, stoppable")
    }

    fn validate(params: &Params) -> Result<(), String> {
        params.u64_or("ms", 1000)?;
        params.u64_or("step_ms", 10)?;
        Ok(())
    }

    fn run(ctx: &Context, params: &Params) -> Result<(), RunError> {
        let ms = params.u64_or("ms", 1000)?;
        let step = params.u64_or("step_ms", 10)?;
        ctx.checkin("sleeping");
        ctx.sleep_ms(ms, step)?;
        ctx.checkin("awake");
        Ok(())
    }
}

wasmjobs_sdk::export_job!(Sleeper);
