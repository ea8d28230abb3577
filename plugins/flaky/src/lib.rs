//! Fails until its attempt number reaches `succeed_on` (a parameter, or the context
//! property `flaky.succeed_on`); default 3. `should-retry` refuses failures whose
//! message contains "fatal" (param `fatal: true`).

use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};

struct Flaky;

fn succeed_on(ctx: &Context, params: &Params) -> Result<u64, String> {
    if params.get("succeed_on").is_some() {
        return params.u64_or("succeed_on", 3);
    }
    match ctx.get("flaky.succeed_on") {
        Some(v) => v
            .parse()
            .map_err(|_| format!("property 'flaky.succeed_on' must be an integer, not {v:?}")),
        None => Ok(3),
    }
}

impl Job for Flaky {
    fn info() -> JobInfo {
        JobInfo::new("flaky", "fails until attempt `succeed_on`").backoff_ms(10, 100)
    }

    fn max_fails() -> u32 {
        5
    }

    fn should_retry(failure: &str, _attempt: u32) -> bool {
        !failure.contains("fatal")
    }

    fn validate(params: &Params) -> Result<(), String> {
        params.u64_or("succeed_on", 3)?;
        params.flag("fatal")?;
        Ok(())
    }

    fn run(ctx: &Context, params: &Params) -> Result<(), RunError> {
        let target = succeed_on(ctx, params)?;
        let attempt = u64::from(ctx.attempt());
        if attempt >= target {
            ctx.info(&format!("attempt {attempt} succeeds"));
            return Ok(());
        }
        let kind = if params.flag("fatal")? {
            "fatal"
        } else {
            "transient"
        };
        Err(RunError::failed(format!(
            "{kind} failure on attempt {attempt} (succeeds on {target})"
        )))
    }
}

wasmjobs_sdk::export_job!(Flaky);
