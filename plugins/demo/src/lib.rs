//! Harbor's DemoJob: checks in 30%, 60% and 100% with short sleeps, logs at every
//! level, and honours stop and cancel between steps.

use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};

struct Demo;

impl Job for Demo {
    fn info() -> JobInfo {
        JobInfo::new("demo", "Harbor's demo job: three check-ins, stoppable")
    }

    fn max_fails() -> u32 {
        3
    }

    fn validate(params: &Params) -> Result<(), String> {
        if params.as_map().is_empty() {
            return Err("parameters required for demo job".into());
        }
        let image = params.str("image")?;
        if !image.starts_with("demo") {
            return Err(format!(
                "expected 'image' to start with 'demo' but got '{image}'"
            ));
        }
        params.u64_or("step_ms", 100)?;
        Ok(())
    }

    fn run(ctx: &Context, params: &Params) -> Result<(), RunError> {
        let step_ms = params.u64_or("step_ms", 100)?;
        println!("I'm running");
        ctx.info("=======Demo job running=======");
        ctx.info(&format!(
            "params: {}",
            serde_json::Value::Object(params.as_map().clone())
        ));
        if let Some(from) = ctx.get("email_from") {
            println!("Get prop from context: email_from={from}");
        }
        for (level, pct) in [("info", "30%"), ("warning", "60%"), ("debug", "100%")] {
            let line = format!("check in {pct}");
            match level {
                "info" => ctx.info(&line),
                "warning" => ctx.warning(&line),
                _ => ctx.debug(&line),
            }
            ctx.checkin(pct);
            if let Err(e) = ctx.sleep_ms(step_ms, 10) {
                let what = if e == RunError::Cancelled {
                    "cancel"
                } else {
                    "stop"
                };
                ctx.info(&format!("exit for receiving {what} signal"));
                return Err(e);
            }
        }
        ctx.error("demo error line (not a failure)");
        eprintln!("I'm close to end");
        ctx.info("I'm finished, exit!");
        Ok(())
    }
}

wasmjobs_sdk::export_job!(Demo);
