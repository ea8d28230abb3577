//! Writes to stdout and stderr and logs `lines` lines (default 10) through the
//! logger: exercises log capture and the per-job log budget.

use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};

struct Chatty;

impl Job for Chatty {
    fn info() -> JobInfo {
        JobInfo::new("chatty", "writes stdout, stderr and `lines` log lines")
    }

    fn validate(params: &Params) -> Result<(), String> {
        params.u64_or("lines", 10).map(|_| ())
    }

    fn run(ctx: &Context, params: &Params) -> Result<(), RunError> {
        let lines = params.u64_or("lines", 10)?;
        println!("hello from stdout");
        eprintln!("hello from stderr");
        print!("a partial line without newline");
        for i in 0..lines {
            ctx.info(&format!("log line {i}"));
        }
        Ok(())
    }
}

wasmjobs_sdk::export_job!(Chatty);
