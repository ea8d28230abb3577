//! Scale: the drain rate and the submit p99 with few and with many jobs already
//! queued, and the time a node takes from start to ready with them stored.
//!
//! Jobs are really queued (ready, in the queue index), not scheduled: a
//! `sleeper` job occupies each worker while the noop jobs are bulk-submitted,
//! and stopping them starts the drain (the peers' harness likewise fills the
//! queue first and then starts its workers). The drain rate is over the first `probe`
//! jobs (or all of them, when fewer are queued), counted by the service's
//! recorded-attempts counter.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmjobs_tests::server::TestServer;

/// Bulk requests in flight while a scale phase fills its queue.
const FILL_CLIENTS: usize = 4;

/// The figures of one queue depth.
pub struct Depth {
    /// Durable single submits (1 client) while this many are queued: p99, ms.
    pub submit_p99_ms: f64,
    /// Jobs/s over the first `probe` jobs of the queue.
    pub drain: f64,
    /// CPU µs of the whole process (every thread) per job of that drain: the
    /// drain's cost, which a slower phase of a shared machine moves far less
    /// than its rate.
    pub drain_cpu_us: f64,
    /// Jobs/s queued by the bulk submits that filled the queue.
    pub fill: f64,
}

/// Occupy every worker with a sleeper that runs until stopped; their ids.
async fn block_workers(s: &TestServer, workers: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..workers {
        let job = json!({"name": "sleeper", "parameters": {"ms": 3_600_000, "step_ms": 1},
                         "metadata": {"kind": "Generic", "deadline": "1h"}});
        ids.push(s.submit_ok(job).await);
    }
    for id in &ids {
        s.wait_status(id, "running").await;
    }
    ids
}

/// Queue `n` noop jobs through bulk submits of 1000, `clients` requests in
/// flight; jobs/s.
async fn fill(s: &TestServer, n: usize, clients: usize) -> f64 {
    let started = Instant::now();
    let client = |c: usize| async move {
        let mut left = n / clients + usize::from(c < n % clients);
        while left > 0 {
            let k = left.min(1000);
            let body = json!({ "jobs": vec![json!({"name": "noop"}); k] });
            super::post_batch(s, &body).await;
            left -= k;
        }
    };
    futures::future::join_all((0..clients).map(client)).await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// `n` durable single submits from one client (of a job scheduled an hour out,
/// so they do not join the drain); p99 of their latencies, ms.
async fn submit_p99(s: &TestServer, n: usize) -> f64 {
    let job =
        json!({"job": {"name": "noop", "metadata": {"kind": "Scheduled", "schedule_delay": 3600}}});
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = s
            .authed(reqwest::Method::POST, "/api/v1/jobs")
            .json(&job)
            .send()
            .await
            .expect("submit");
        assert_eq!(r.status(), 202);
        took.push(t.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    super::percentile(&took, 0.99)
}

/// Stop the blockers and time the first `probe` noop jobs of the queue: from
/// the stop requests (all sent at once) until `probe` more attempts than the
/// blockers' are recorded. The clock starts before any worker is free, so the
/// stop's own latency (a millisecond or two) counts against the drain.
/// Jobs/s, and the process's CPU µs per job over the same span.
async fn drain_first(s: &TestServer, blockers: &[String], probe: usize) -> (f64, f64) {
    let before = s.service.attempts_recorded();
    let meter = wasmjobs_tests::bench::Meter::start();
    let stops = blockers.iter().map(|id| s.action(id, "stop"));
    for (status, body) in futures::future::join_all(stops).await {
        assert!(status.is_success(), "stop a blocker: {status} {body}");
    }
    let target = before + (blockers.len() + probe) as u64;
    while s.service.attempts_recorded() < target {
        assert!(
            meter.elapsed() < Duration::from_secs(600),
            "the drain stalled"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    meter.rate_and_cpu_us(probe)
}

/// Wait until nothing is queued or running (all `queued` drained).
async fn drain_rest(s: &TestServer, until: u64) {
    while s.service.attempts_recorded() < until || s.service.running_count() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One queue depth on `s`: block, fill `queued` (`fill_clients` bulk requests
/// in flight), measure, drain `probe`. When `rest` is set, the remaining jobs
/// are drained too.
pub async fn depth(
    s: &TestServer,
    queued: usize,
    probe: usize,
    rest: bool,
    fill_clients: usize,
) -> Depth {
    let workers = s.service.config().workers as usize;
    let blockers = block_workers(s, workers).await;
    let fill = fill(s, queued, fill_clients).await;
    eprintln!("scale: {queued} jobs queued at {fill:.0} jobs/s");
    let submit_p99_ms = submit_p99(s, 2000).await;
    let before = s.service.attempts_recorded();
    let (drain, drain_cpu_us) = drain_first(s, &blockers, probe.min(queued)).await;
    if rest {
        drain_rest(s, before + (blockers.len() + queued) as u64).await;
    }
    Depth {
        submit_p99_ms,
        drain,
        drain_cpu_us,
        fill,
    }
}

/// The small depth is run this many times per bench run: its drain of 1k jobs
/// lasts ~25 ms, so a stall of a millisecond or two moves it by a tenth (a
/// median of three measured 22k/s in one run, 36-49k/s in the others).
const SMALL_RUNS_PER_RUN: usize = 3;

/// The scale rows: `small` (1k) and `large` (1M) queued, `runs` x
/// [`SMALL_RUNS_PER_RUN`] times for the small depth (it is quick; the median
/// is shown) and once for the large one, then a restart with the large queue
/// stored.
pub async fn run(
    workers: usize,
    small: usize,
    large: usize,
    probe: usize,
    runs: usize,
) -> Vec<(String, f64)> {
    let s = super::server(workers).await;
    let mut small_runs = Vec::new();
    for _ in 0..runs.max(1) * SMALL_RUNS_PER_RUN {
        small_runs.push(depth(&s, small, probe, true, FILL_CLIENTS).await);
    }
    let median = |f: &dyn Fn(&Depth) -> f64| {
        wasmjobs_tests::bench::median(small_runs.iter().map(f).collect())
    };
    let small_drain = median(&|d| d.drain);
    let small_p99 = median(&|d| d.submit_p99_ms);
    let big = depth(&s, large, probe, false, FILL_CLIENTS).await;
    let (s, ready) = s.restart_timed().await;
    s.shutdown().await;
    let k = |n: usize| {
        if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
            format!("{}M", n / 1_000_000)
        } else if n >= 1000 && n.is_multiple_of(1000) {
            format!("{}k", n / 1000)
        } else {
            n.to_string()
        }
    };
    let (ks, kl) = (k(small), k(large));
    vec![
        (format!("drain jobs/s, {ks} queued"), small_drain),
        (
            format!("drain jobs/s, {kl} queued (first {})", k(probe)),
            big.drain,
        ),
        (
            format!("drain with {kl} queued as % of {ks}"),
            100.0 * big.drain / small_drain,
        ),
        (format!("submit p99 ms, {ks} queued"), small_p99),
        (format!("submit p99 ms, {kl} queued"), big.submit_p99_ms),
        (
            format!("restart to ready s, {kl} stored"),
            ready.as_secs_f64(),
        ),
    ]
}
