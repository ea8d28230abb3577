//! A buggy job: panics (a trap) in `validate` when `{"panic_in": "validate"}` and in
//! `run` when `{"panic_in": "run"}`.

use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};

struct Crash;

impl Job for Crash {
    fn info() -> JobInfo {
        JobInfo::new("crash", "panics in validate or run on request (buggy)")
    }

    fn validate(params: &Params) -> Result<(), String> {
        if params.get("panic_in").and_then(|v| v.as_str()) == Some("validate") {
            panic!("validate panicked on purpose");
        }
        Ok(())
    }

    fn run(_ctx: &Context, params: &Params) -> Result<(), RunError> {
        if params.get("panic_in").and_then(|v| v.as_str()) == Some("run") {
            panic!("run panicked on purpose");
        }
        Ok(())
    }
}

wasmjobs_sdk::export_job!(Crash);
