//! Engine benchmark: noop jobs per second through `Runtime::run` (fresh pooled
//! instance per job, full import wiring, no store) with one and two workers, and
//! the instantiate cost per job. This is the sandbox floor the job service's
//! end-to-end figures are compared against.
//!
//! Run: `cargo bench -p wasmjobs-tests --bench engine` (env `BENCH_JOBS` sets jobs
//! per run, default 20000; `BENCH_RUNS` the runs per figure, default 5). Prints a
//! table and writes `target/bench-engine.json`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmjobs::runtime::{AttemptSpec, Control, Outcome, Plugin, Runtime, RuntimeConfig};
use wasmjobs_tests::{RecordingHost, registry_on};

/// Run `jobs` noop attempts on `workers` concurrent tasks; returns (jobs/s, startup µs per job).
async fn drain(rt: &Arc<Runtime>, noop: &Arc<Plugin>, jobs: usize, workers: usize) -> (f64, f64) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (rt, noop, next) = (rt.clone(), noop.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let host = RecordingHost::new();
            let spec = AttemptSpec {
                job_id: "bench".into(),
                attempt: 1,
                params: "{}".into(),
                ..AttemptSpec::default()
            };
            let mut startup = Duration::ZERO;
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                let r = rt.run(&noop, &spec, host.clone(), Control::new()).await;
                assert_eq!(r.outcome, Outcome::Success);
                startup += r.startup;
            }
            startup
        }));
    }
    let mut startup = Duration::ZERO;
    for t in tasks {
        startup += t.await.expect("worker");
    }
    let secs = started.elapsed().as_secs_f64();
    (
        jobs as f64 / secs,
        startup.as_secs_f64() * 1e6 / jobs as f64,
    )
}

use wasmjobs_tests::bench::{env_usize, median, runtime};

fn main() {
    let jobs = env_usize("BENCH_JOBS", 20_000);
    let runs = env_usize("BENCH_RUNS", 5);
    let tokio = runtime();
    tokio.block_on(async {
        let cfg = RuntimeConfig {
            max_concurrent_jobs: 16,
            ..RuntimeConfig::default()
        };
        let rt = Runtime::new(cfg).expect("runtime");
        let (_dir, reg) = registry_on(rt.clone(), &["noop"]).await;
        let noop = reg.get("noop").expect("noop");
        drain(&rt, &noop, 2_000, 2).await; // warm up
        let mut rows = Vec::new();
        for workers in [1, 2] {
            let (mut rate, mut startup) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let (r, s) = drain(&rt, &noop, jobs, workers).await;
                rate.push(r);
                startup.push(s);
            }
            rows.push((workers, median(rate), median(startup)));
        }
        println!("engine: noop jobs through Runtime::run, {jobs} jobs x {runs} runs, median");
        println!(
            "{:>8} {:>12} {:>14} {:>16}",
            "workers", "jobs/s", "µs per job", "instantiate µs"
        );
        for (w, rate, startup) in &rows {
            println!(
                "{w:>8} {rate:>12.0} {:>14.1} {startup:>16.1}",
                1e6 / rate * *w as f64
            );
        }
        let json = serde_json::json!({
            "bench": "engine",
            "jobs_per_run": jobs,
            "runs": runs,
            "rows": rows.iter().map(|(w, r, s)| serde_json::json!({
                "workers": w, "jobs_per_sec": r, "instantiate_us": s
            })).collect::<Vec<_>>(),
        });
        let out = wasmjobs_tests::repo_root().join("target/bench-engine.json");
        std::fs::write(&out, serde_json::to_string_pretty(&json).expect("json"))
            .expect("write json");
        println!("wrote {}", out.display());
    });
}
