//! A hostile job: loops forever and never polls the op-command, so only the host's
//! deadline or stop timeout ends it. With `{"in": "validate"}` its `validate` loops
//! forever instead.

use std::hint::black_box;

use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};

struct Spin;

fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

impl Job for Spin {
    fn info() -> JobInfo {
        JobInfo::new("spin", "loops forever without polling (hostile)")
    }

    fn validate(params: &Params) -> Result<(), String> {
        if params.get("in").and_then(|v| v.as_str()) == Some("validate") {
            spin_forever();
        }
        Ok(())
    }

    fn run(ctx: &Context, _params: &Params) -> Result<(), RunError> {
        ctx.checkin("spinning");
        spin_forever()
    }
}

wasmjobs_sdk::export_job!(Spin);
