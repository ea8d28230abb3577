//! `wordcount`: the job every language example implements (see
//! `examples/README.md`), here in Rust for comparison. Counts the words of `text`
//! `repeat` times, polling the op-command before each pass and checking in
//! `"<pass>/<repeat>"` ten times over the run; logs the count at the end.

use wasmjobs_sdk::{Command, Context, Job, JobInfo, Params, RunError};

const MAX_REPEAT: u64 = 1_000_000_000;

struct WordCount;

/// Words are maximal runs of characters other than space, tab, CR and LF.
fn count_words(text: &str) -> u64 {
    text.split([' ', '\t', '\n', '\r'])
        .filter(|w| !w.is_empty())
        .count() as u64
}

fn repeat(params: &Params) -> Result<u64, String> {
    match params.u64_or("repeat", 1) {
        Ok(n) if (1..=MAX_REPEAT).contains(&n) => Ok(n),
        _ => Err(format!(
            "parameter 'repeat' must be an integer from 1 to {MAX_REPEAT}"
        )),
    }
}

impl Job for WordCount {
    fn info() -> JobInfo {
        JobInfo::new(
            "wordcount",
            "counts the words of `text`, `repeat` times (Rust)",
        )
    }

    fn validate(params: &Params) -> Result<(), String> {
        params.str("text")?;
        repeat(params)?;
        Ok(())
    }

    fn run(ctx: &Context, params: &Params) -> Result<(), RunError> {
        let text = params.str("text")?;
        let repeat = repeat(params)?;
        let step = (repeat / 10).max(1);
        let mut words = 0;
        for pass in 1..=repeat {
            match ctx.command() {
                Command::None => {}
                Command::Stop => return Err(RunError::Stopped),
                Command::Cancel => return Err(RunError::Cancelled),
            }
            words = count_words(text);
            if pass % step == 0 || pass == repeat {
                ctx.checkin(&format!("{pass}/{repeat}"));
            }
        }
        ctx.info(&format!("{words} words"));
        Ok(())
    }
}

wasmjobs_sdk::export_job!(WordCount);
