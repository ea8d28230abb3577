//! A hostile job: allocates (and touches) memory in 1 MiB chunks without bound, so
//! only the memory cap ends it. Declares a 64 MiB cap. With `{"stack": true}` it
//! recurses without bound instead, to hit the stack limit. Its `validate` can
//! leave memory behind (`{"keep_mib": n}`).

use std::hint::black_box;

use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};

struct Hog;

#[allow(
    unconditional_recursion,
    reason = "unbounded recursion is this mode's purpose"
)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    black_box(recurse(depth + 1)) + frame[(depth % 64) as usize]
}

impl Job for Hog {
    fn info() -> JobInfo {
        JobInfo::new("hog", "grows memory without bound (hostile)").memory_mib(64)
    }

    /// With `{"keep_mib": n}`, leaves n MiB allocated (and touched) behind, as
    /// a plugin that never frees may: harmless when each call has a fresh
    /// instance, or when a call that runs out is retried on one.
    fn validate(params: &Params) -> Result<(), String> {
        for _ in 0..params.u64_or("keep_mib", 0)? {
            std::mem::forget(black_box(vec![0xCDu8; 1 << 20]));
        }
        Ok(())
    }

    fn run(ctx: &Context, params: &Params) -> Result<(), RunError> {
        if params.flag("stack")? {
            let n = recurse(0);
            return Err(RunError::failed(format!("recursion ended at {n}")));
        }
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        loop {
            chunks.push(black_box(vec![0xAB; 1 << 20]));
            if chunks.len().is_multiple_of(16) {
                ctx.checkin(&format!("{} MiB", chunks.len()));
            }
        }
    }
}

wasmjobs_sdk::export_job!(Hog);
