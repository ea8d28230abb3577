//! Launches `count` sub-jobs of job type `child` with parameters `child_params`,
//! and fails with the host's message if any launch is refused (unless
//! `tolerate_errors` is set, in which case refusals are logged).

use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};

struct Spawner;

impl Job for Spawner {
    fn info() -> JobInfo {
        JobInfo::new("spawner", "launches `count` sub-jobs of `child`")
    }

    fn validate(params: &Params) -> Result<(), String> {
        params.str("child")?;
        let count = params.u64_or("count", 1)?;
        if count > 1000 {
            return Err(format!(
                "parameter 'count' must be at most 1000, not {count}"
            ));
        }
        params.flag("tolerate_errors")?;
        Ok(())
    }

    fn run(ctx: &Context, params: &Params) -> Result<(), RunError> {
        let child = params.str("child")?;
        let count = params.u64_or("count", 1)?;
        let tolerate = params.flag("tolerate_errors")?;
        let child_params = params
            .get("child_params")
            .cloned()
            .unwrap_or(serde_json::json!({}));
        let mut launched = 0;
        for i in 0..count {
            ctx.check_command()?;
            match ctx.launch_subjob(child, &child_params) {
                Ok(id) => {
                    launched += 1;
                    ctx.info(&format!("launched sub-job {i}: {id}"));
                }
                Err(e) if tolerate => ctx.warning(&format!("sub-job {i} refused: {e}")),
                Err(e) => return Err(RunError::failed(format!("sub-job {i} refused: {e}"))),
            }
        }
        ctx.checkin(&format!("launched {launched}/{count}"));
        Ok(())
    }
}

wasmjobs_sdk::export_job!(Spawner);
