//! Service benchmark, through the real server over HTTP on 127.0.0.1:
//! - durable submits per second (each 202 is on disk) with 1 and 64 clients,
//!   and beside them what bounds one client: an HTTP round trip with nothing
//!   durable on the path (`GET /api/v1/stats`), the device's sync of one
//!   appended record as the store's log makes it, and the ceiling the two
//!   make together, 1 / (round trip + sync); and the round trips 64 clients
//!   get with nothing durable on the path;
//! - bulk submit through `POST /api/v1/jobs/batch` (1000 jobs per request, one
//!   request in flight, as the peers' bulk figure): of ready jobs while every
//!   worker is busy (the drain's fill: the peers likewise enqueue with no worker
//!   running), and of jobs scheduled an hour out;
//! - end-to-end noop drain: N noop jobs queued while the workers are busy, then
//!   drained (as the peers' harness does: fill the queue, start the workers);
//!   and N jobs scheduled to become due at once (the scheduler moves them to the
//!   queue while the workers drain it);
//! - start latency at a steady submit rate (`LAT_RATE`, default 1000 jobs/s, for
//!   `LAT_SECS`, default 5): from the job's `Received` task event (stored) to its
//!   `Started` one (claimed by a worker), p50 and p99;
//! - in the same run, the floors the figures are compared with: the noop job
//!   through the engine alone (instantiate + call, no store), the store alone
//!   (a worker's finish-and-claim per job, no guest: [`store_floor`]) and
//!   sled's raw write rate (1000 small writes per flush); the drain and the
//!   engine floor also as CPU µs per job (the process's, every thread), whose
//!   ratio a slow phase of a shared machine moves less than the rates';
//! - RSS of the process (server and load generator together) idle and at its peak;
//! - scale ([`scale`]): drain rate and submit p99 with 1k and with `BENCH_SCALE`
//!   (default 1,000,000; 0 skips it) jobs queued, and the restart time with them
//!   stored, on a server of its own.
//!
//! Submitted jobs are Scheduled an hour out so the submit figures measure the
//! submit path alone. Run: `cargo bench -p wasmjobs-tests --bench service`
//! (`BENCH_JOBS`, default 20000; `BENCH_WORKERS`, default the product's 4;
//! `BENCH_RUNS`, default 3; `BENCH_ONLY=submit|bulk|drain|floor|store|latency|scale|rss`,
//! several comma-separated).
//! Prints a table, writes `target/bench-service.json`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use load::Load;
use serde_json::json;
use wasmjobs_tests::server::{SECRET, TestServer};

mod load;
mod scale;
mod store_floor;

/// The allocator of the `wasmjobs` binary, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A server with the bench's plugins, `workers` workers, and the product's
/// runtime settings (the tests' are smaller: 2 call slots, 60 s deadlines),
/// so the pool and the `validate` slots are sized as a node's are.
pub async fn server(workers: usize) -> TestServer {
    TestServer::start_with(&["noop", "sleeper"], |c| {
        c.workers = workers as u32;
        c.runtime = wasmjobs::runtime::RuntimeConfig {
            cache_dir: c.runtime.cache_dir.take(),
            ..Default::default()
        };
    })
    .await
}

fn later() -> serde_json::Value {
    json!({"name": "noop", "metadata": {"kind": "Scheduled", "schedule_delay": 3600}})
}

/// Durable single submits from `clients` concurrent clients; jobs/s.
async fn submit_rate(s: &TestServer, clients: usize, total: usize) -> f64 {
    Load::new(&s.base, Method::POST, "/api/v1/jobs")
        .auth(&format!("Harbor-Secret {SECRET}"))
        .json(&json!({ "job": later() }))
        .round_trips(clients, total, 202)
        .await
}

/// Round trips per second of `clients` concurrent clients with nothing
/// durable on the path: `GET /api/v1/stats` over the same loopback, HTTP
/// stack and middleware as a submit. With one client and
/// [`wasmjobs_tests::bench::sync_floor`] it bounds what a client waiting for
/// each durable 202 can get; with 64, what the two cores serve (load
/// generator included) when a request does next to nothing.
async fn http_floor(s: &TestServer, clients: usize, total: usize) -> f64 {
    Load::new(&s.base, Method::GET, "/api/v1/stats")
        .round_trips(clients, total, 200)
        .await
}

/// Bulk submits of `per_batch` jobs; jobs/s.
async fn batch_rate(
    s: &TestServer,
    batches: usize,
    per_batch: usize,
    job: serde_json::Value,
) -> f64 {
    let body = json!({ "jobs": vec![job; per_batch] });
    let started = Instant::now();
    for _ in 0..batches {
        post_batch(s, &body).await;
    }
    (batches * per_batch) as f64 / started.elapsed().as_secs_f64()
}

/// `POST /api/v1/jobs/batch` of `body`, which must be accepted (202).
async fn post_batch(s: &TestServer, body: &serde_json::Value) -> reqwest::Response {
    let r = s
        .authed(reqwest::Method::POST, "/api/v1/jobs/batch")
        .json(body)
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 202);
    r
}

/// `n` noop jobs scheduled to be due at once; jobs/s from the due time until all
/// succeeded.
/// Jobs of one priority run in order, so once the last one has succeeded and
/// nothing runs, all have.
async fn drain_rate(s: &TestServer, n: usize) -> f64 {
    // Long enough to submit them all (bulk runs at ~10k jobs/s), so they are all
    // queued when the first one is due.
    let delay = 2 + (n as u64).div_ceil(4000);
    let job = json!({"name": "noop", "metadata": {"kind": "Scheduled", "schedule_delay": delay}});
    let submitted = Instant::now();
    let body = json!({ "jobs": vec![job; 1000] });
    let mut last = String::new();
    for _ in 0..n / 1000 {
        let v: serde_json::Value = post_batch(s, &body).await.json().await.expect("json");
        last = v["jobs"][999]["id"].as_str().expect("id").to_string();
    }
    let due = submitted + Duration::from_secs(delay);
    assert!(
        Instant::now() < due,
        "submitting {n} jobs took longer than the {delay} s delay"
    );
    tokio::time::sleep_until(due.into()).await;
    let last = last.parse().expect("uuid");
    loop {
        let done = s.service.get(last).await.expect("job").status == wasmjobs::job::Status::Success;
        if done && s.service.running_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    n as f64 / due.elapsed().as_secs_f64()
}

use wasmjobs_tests::bench::{Meter, env_usize, median, runtime};

/// Steady submits of noop jobs at `rate`/s for `secs`; the latency of each from
/// `Received` (stored) to its guest's `run` call (the `Started` event at the
/// claim, plus the attempt's `startup_us`: the wait for the submit to be durable
/// and the fresh instance), sorted, in milliseconds.
async fn start_latency(s: &TestServer, rate: usize, secs: usize) -> Vec<f64> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut submits = Vec::with_capacity(rate * secs);
    for _ in 0..rate * secs {
        tick.tick().await;
        let req = s
            .authed(reqwest::Method::POST, "/api/v1/jobs")
            .json(&json!({"job": {"name": "noop"}}));
        submits.push(tokio::spawn(async move {
            let (status, body) = TestServer::send(req).await;
            assert_eq!(status, 202, "{body}");
            body["job"]["id"].as_str().expect("id").to_string()
        }));
    }
    let mut latencies = Vec::with_capacity(submits.len());
    for t in submits {
        let id: uuid::Uuid = t.await.expect("submit").parse().expect("uuid");
        let job = loop {
            let job = s.service.get(id).await.expect("job");
            if job.status == wasmjobs::job::Status::Success {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let at = |kind: &str| job.events.iter().find(|e| e.kind == kind).map(|e| e.time);
        let startup_ns = job
            .attempts
            .last()
            .and_then(|a| a.startup_us)
            .map_or(0, |us| u128::from(us) * 1000);
        if let (Some(received), Some(started)) = (at("Received"), at("Started")) {
            latencies.push((started.saturating_sub(received) + startup_ns) as f64 / 1e6);
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// The `p` quantile of sorted measurements.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// `part`'s median as a % of `whole`'s: one value, or none (the row is left
/// out) when either was not measured in this run.
fn percent(part: &[f64], whole: &[f64]) -> Vec<f64> {
    if part.is_empty() || whole.is_empty() {
        return Vec::new();
    }
    vec![100.0 * median(part.to_vec()) / median(whole.to_vec())]
}

/// The noop job through the engine alone, on 2 tasks: jobs/s.
async fn engine_floor(s: &TestServer, jobs: usize) -> (f64, f64) {
    use wasmjobs::runtime::{AttemptSpec, Control};
    let noop = s.service.registry().get("noop").expect("noop");
    let next = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (rt, noop, next) = (s.service.runtime().clone(), noop.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let host = wasmjobs_tests::RecordingHost::new();
            let spec = AttemptSpec {
                job_id: "floor".into(),
                attempt: 1,
                params: "{}".into(),
                ..AttemptSpec::default()
            };
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                rt.run(&noop, &spec, host.clone(), Control::new()).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("floor task");
    }
    meter.rate_and_cpu_us(jobs)
}

/// sled alone: `n` writes of 200 bytes, flushed every 1000; writes/s.
fn sled_floor(n: usize, flush_every: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::open(dir.path()).expect("sled");
    let value = vec![7u8; 200];
    let started = Instant::now();
    for i in 0..n {
        db.insert((i as u64).to_be_bytes(), value.as_slice())
            .expect("insert");
        if i % flush_every == flush_every - 1 {
            db.flush().expect("flush");
        }
    }
    db.flush().expect("flush");
    n as f64 / started.elapsed().as_secs_f64()
}

/// Resident memory of the real `wasmjobs serve` (release build, 2 workers, the
/// bench's two plugins) when idle, MiB: restarted on its data dir (plugins
/// compiled and cached, as a node runs after its first start), 3 s after it
/// listens. No load generator shares its process.
fn server_idle_rss() -> f64 {
    use wasmjobs_tests::process::ServerProcess;
    let data = tempfile::tempdir().expect("data dir");
    let plugins = tempfile::tempdir().expect("plugins dir");
    wasmjobs_tests::install(plugins.path(), &["noop", "sleeper"]);
    let binary = wasmjobs_tests::wasmjobs_release_binary();
    drop(ServerProcess::spawn_binary(
        binary,
        data.path(),
        plugins.path(),
    ));
    let server = ServerProcess::spawn_binary(binary, data.path(), plugins.path());
    std::thread::sleep(Duration::from_secs(3));
    let pid = server.pid().to_string();
    wasmjobs_tests::bench::pid_status_bytes(&pid, "VmRSS") as f64 / (1024.0 * 1024.0)
}

/// (current, peak) resident memory of this process, MiB.
fn rss_mib() -> (f64, f64) {
    let mib = |key| wasmjobs_tests::bench::proc_status_bytes(key) as f64 / (1024.0 * 1024.0);
    (mib("VmRSS"), mib("VmHWM"))
}

fn main() {
    if let Ok(jobs) = std::env::var(store_floor::CHILD) {
        return store_floor::child(&jobs);
    }
    // The server logs as `wasmjobs serve` does by default (`info`, or
    // `RUST_LOG`): what a job's spans and events cost is part of its figures.
    wasmjobs::telemetry::init_tracing("info");
    let jobs = env_usize("BENCH_JOBS", 20_000).max(1000);
    let runs = env_usize("BENCH_RUNS", 3);
    // BENCH_ONLY=submit|bulk|drain|floor|store|latency|scale|rss runs some
    // figures (comma-separated, e.g. `drain,floor`), for profiling.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wants = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
    let server_idle = wants("rss").then(|| median((0..runs).map(|_| server_idle_rss()).collect()));
    let tokio = runtime();
    tokio.block_on(async {
        let mut rows: Vec<(String, f64)> = Vec::new();
        let mut measure = |name: &str, v: Vec<f64>| {
            if !v.is_empty() {
                rows.push((name.to_string(), median(v)));
            }
        };
        // The product's default worker count unless `BENCH_WORKERS` says otherwise.
        let default_workers = wasmjobs::config::Config::default().workers as usize;
        let workers = env_usize("BENCH_WORKERS", default_workers);
        let s = server(workers).await;
        let idle_rss = rss_mib().0;
        let mut one = Vec::new();
        let (mut http, mut sync, mut ceiling) = (Vec::new(), Vec::new(), Vec::new());
        let (mut many, mut http_many) = (Vec::new(), Vec::new());
        let mut bulk = Vec::new();
        let mut drain = Vec::new();
        let mut drain_cpu = Vec::new();
        let mut bulk_ready = Vec::new();
        let mut due = Vec::new();
        for _ in 0..runs {
            if wants("submit") {
                one.push(submit_rate(&s, 1, jobs / 10).await);
                // The two costs one client's round trip cannot shed, measured
                // beside it: HTTP over loopback, and the device's sync of one
                // submit's log record (~512 bytes).
                let (h, d) = (
                    http_floor(&s, 1, jobs / 10).await,
                    wasmjobs_tests::bench::sync_floor(jobs / 10, 512),
                );
                http.push(h);
                sync.push(d);
                ceiling.push(1.0 / (1.0 / h + 1.0 / d));
                many.push(submit_rate(&s, 64, jobs).await);
                http_many.push(http_floor(&s, 64, jobs).await);
            }
            if wants("bulk") {
                bulk.push(batch_rate(&s, jobs / 1000, 1000, later()).await);
            }
            if wants("drain") {
                let depth = scale::depth(&s, jobs, jobs, true, 1).await;
                drain.push(depth.drain);
                drain_cpu.push(depth.drain_cpu_us);
                bulk_ready.push(depth.fill);
                due.push(drain_rate(&s, jobs).await);
            }
        }
        let (mut floor, mut sled_rate, mut sled_durable, mut p50, mut p99) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut store_rate, mut store_cpu) = (Vec::new(), Vec::new());
        let mut floor_cpu = Vec::new();
        for _ in 0..runs {
            if wants("floor") || wants("store") {
                let (rate, cpu_us) = store_floor::run(jobs);
                store_rate.push(rate);
                store_cpu.push(cpu_us);
            }
            if wants("floor") {
                let (rate, cpu_us) = engine_floor(&s, jobs).await;
                floor.push(rate);
                floor_cpu.push(cpu_us);
                sled_rate.push(sled_floor(jobs, 1000));
                // One thread, each write flushed: the most durable writes/s
                // one client waiting for each can get from sled here.
                sled_durable.push(sled_floor(2000, 1));
            }
            if wants("latency") {
                let l =
                    start_latency(&s, env_usize("LAT_RATE", 1000), env_usize("LAT_SECS", 5)).await;
                if !l.is_empty() {
                    p50.push(percentile(&l, 0.50));
                    p99.push(percentile(&l, 0.99));
                }
            }
        }
        // Each figure beside its bound. By CPU per job too, for the drain:
        // the engine's share of what a drained job costs, which a slow phase
        // of the machine moves far less than the rates (both rates fall, not
        // always alike).
        let one_share = percent(&one, &ceiling);
        let many_share = percent(&many, &http_many);
        let drain_share = percent(&drain, &floor);
        let cpu_share = percent(&floor_cpu, &drain_cpu);
        measure("durable submits/s, 1 client", one);
        measure("HTTP floor: round trips/s, 1 client (GET stats)", http);
        measure("sync floor: durable 512-byte appends/s, 1 by 1", sync);
        measure("1 client's ceiling: 1/(round trip + sync), /s", ceiling);
        measure("durable submits, 1 client, as % of the ceiling", one_share);
        measure("durable submits/s, 64 clients", many);
        measure("HTTP floor: round trips/s, 64 clients (GET stats)", http_many);
        measure("durable submits, 64 clients, as % of that floor", many_share);
        measure("bulk submit jobs/s, ready (batches of 1000)", bulk_ready);
        measure("bulk submit jobs/s, scheduled (batches of 1000)", bulk);
        measure("noop drain jobs/s", drain);
        measure("noop drain jobs/s, all due at once (scheduled)", due);
        measure("engine floor: noop jobs/s, no store (2 tasks)", floor);
        measure("noop drain as % of the engine floor", drain_share);
        measure("noop drain: CPU µs per job (all threads)", drain_cpu);
        measure("engine floor: CPU µs per job (all threads)", floor_cpu);
        measure("engine floor's CPU per job as % of the drain's", cpu_share);
        measure("store alone: finish+claim/s (1 task, no guest)", store_rate);
        measure("store alone: CPU µs per job (all threads)", store_cpu);
        measure("sled floor: writes/s (flush per 1000)", sled_rate);
        measure("sled floor: writes/s, each flushed", sled_durable);
        measure("start latency p50 ms (stored -> guest run)", p50);
        measure("start latency p99 ms (stored -> guest run)", p99);
        let (_, peak_rss) = rss_mib();
        if let Some(rss) = server_idle {
            measure("RSS idle MiB, `wasmjobs serve` alone", vec![rss]);
        }
        measure("RSS idle MiB (server + load generator)", vec![idle_rss]);
        measure("RSS peak MiB (server + load generator)", vec![peak_rss]);
        s.shutdown().await;
        let large = env_usize("BENCH_SCALE", 1_000_000);
        if wants("scale") && large > 0 {
            rows.extend(scale::run(workers, 1000, large, jobs.min(large), runs).await);
            let (_, peak_rss) = rss_mib();
            rows.push(("RSS peak MiB, after the scale phase".into(), peak_rss));
        }
        println!(
            "service: real server on 127.0.0.1, {workers} workers, {jobs} jobs, median of {runs} runs"
        );
        for (name, v) in &rows {
            // Latencies well under a millisecond need the second decimal.
            let decimals = if v.abs() < 10.0 { 2 } else { 1 };
            println!("{name:<46} {v:>10.decimals$}");
        }
        let json = serde_json::json!({
            "bench": "service",
            "jobs": jobs,
            "runs": runs,
            "workers": workers,
            "rows": rows.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
        });
        let out = wasmjobs_tests::repo_root().join("target/bench-service.json");
        std::fs::write(&out, serde_json::to_string_pretty(&json).expect("json")).expect("write");
        println!("wrote {}", out.display());
    });
}
