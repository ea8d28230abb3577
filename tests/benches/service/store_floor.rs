//! The store's share of a drained job, with no guest: the calls a worker makes
//! per job (the end of its attempt together with the claim of the next one,
//! `job_finish_then_claim`) on a store of its own, one task, `jobs` noop jobs
//! queued first. The drain's figure minus the engine's is the store plus the
//! worker; this isolates the store, and its CPU per job (every thread of the
//! process, the store's writer included) is steadier on a busy machine than
//! a rate.
//!
//! It runs in a child process of the bench, alone with its store, as the
//! product runs: sled 0.34 guards every database of a process with one global
//! lock, and a database dropped while another one in the process writes can
//! deadlock (seen here: the first floor store's closing flush held that lock
//! shared, waiting for its log, while the next store's batch waited for it
//! exclusively and the log's flusher queued behind the batch). `wasmjobs serve`
//! opens one database per process.

use std::process::Command;

use wasmjobs::job::{Job, Kind, Status};
use wasmjobs::store::{AttemptEnd, Next, SledStore, Store};

/// Set (to the job count) in the child process that measures.
pub const CHILD: &str = "WASMJOBS_BENCH_STORE_FLOOR";

/// (claim-and-finish passes per second, CPU µs of the child process per job),
/// measured in a child process.
pub fn run(jobs: usize) -> (f64, f64) {
    let exe = std::env::current_exe().expect("the bench's own path");
    let out = Command::new(exe)
        .env(CHILD, jobs.to_string())
        .output()
        .expect("start the store floor's process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the store floor's process failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: Vec<f64> = stdout
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match figures[..] {
        [rate, cpu_us] => (rate, cpu_us),
        _ => panic!("the store floor's process printed {stdout:?}"),
    }
}

/// The child's side: measure, print `rate cpu_us` as the last line.
pub fn child(jobs: &str) {
    let jobs = jobs.parse().expect("job count");
    let (rate, cpu_us) = wasmjobs_tests::bench::runtime().block_on(measure(jobs));
    println!("{rate} {cpu_us}");
}

async fn measure(jobs: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("store");
    for start in (0..jobs).step_by(1000) {
        let batch = (start..jobs.min(start + 1000))
            .map(|_| {
                Job::new(
                    uuid::Uuid::now_v7(),
                    "noop".into(),
                    Kind::Generic,
                    "{}".into(),
                    Status::Pending,
                    wasmjobs::job::now_ms(),
                )
            })
            .collect();
        store.job_insert_many(batch).await.expect("insert");
    }
    let fits = &mut |_: &Job| true;
    let meter = wasmjobs_tests::bench::Meter::start();
    let mut running = store
        .job_claim("bench", wasmjobs::job::now_ms(), fits)
        .await
        .expect("claim");
    let mut done = 0;
    while let Some(job) = running {
        let end = AttemptEnd {
            outcome: "success".into(),
            message: None,
            plugin_digest: "sha256:bench".into(),
            startup_us: 1,
            duration_us: 1,
            peak_memory: 65536,
            fuel_used: None,
            decision: String::new(),
        };
        let now = wasmjobs::job::now_ms();
        let (_, next) = store
            .job_finish_then_claim(
                job.id,
                end,
                Next::Final(Status::Success),
                now,
                "bench",
                fits,
            )
            .await
            .expect("finish");
        running = next;
        done += 1;
    }
    let measured = meter.rate_and_cpu_us(done);
    assert_eq!(done, jobs, "every queued job was claimed and finished once");
    measured
}
