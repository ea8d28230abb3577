//! Hostile guests through the API, all at once on one node: a loop that ignores
//! stop, a memory bomb, unbounded recursion, a table bomb, a log flood, a sub-job
//! launcher in a loop, and guests asleep in a host call or spinning past a stop.
//! Each is contained within its limit and ends as documented, while a stream of
//! noop jobs beside them keeps completing, and the host's memory stays within
//! the pool's bound.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wasmjobs_tests::component_from_wat;
use wasmjobs_tests::server::TestServer;

const WORKERS: u32 = 8;

/// Resident memory of this process (the node runs in it), in bytes.
fn rss() -> u64 {
    let rss = wasmjobs_tests::bench::proc_status_bytes("VmRSS");
    assert!(rss > 0, "no VmRSS in /proc/self/status");
    rss
}

/// Submit noop jobs one after another; the time from submit to `success` of each.
async fn noop_stream(s: &TestServer, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let id = s.submit_ok(json!({"name": "noop"})).await;
        s.wait_until(&id, Duration::from_secs(30), |j| j["status"] == "success")
            .await;
        took.push(t.elapsed());
    }
    took.sort();
    took
}

fn first_attempt(job: &Value) -> &Value {
    &job["attempts"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_are_contained_while_noop_jobs_keep_running() {
    let tablebomb = component_from_wat("tablebomb.wat");
    let plugins = ["noop", "spin", "hog", "chatty", "spawner", "sleeper"];
    let s = TestServer::start_with(&plugins, |cfg| {
        cfg.workers = WORKERS;
        cfg.runtime.max_concurrent_jobs = WORKERS;
        cfg.max_subjobs_per_attempt = 5;
        std::fs::write(cfg.plugins_dir.join("tablebomb.wasm"), &tablebomb).expect("install");
    })
    .await;
    let baseline = noop_stream(&s, 20).await;
    let rss_before = rss();

    let submit = |job: Value| s.submit_ok(job);
    let spin_deadline = submit(json!({"name": "spin", "metadata": {"deadline": "2s"}})).await;
    let spin_stopped = submit(json!({"name": "spin", "metadata": {"stop_timeout": "500ms"}})).await;
    let asleep = submit(
        json!({"name": "sleeper", "parameters": {"ms": 600000, "step_ms": 600000},
        "metadata": {"stop_timeout": "500ms"}}),
    )
    .await;
    let hog = submit(json!({"name": "hog"})).await;
    let recursion = submit(json!({"name": "hog", "parameters": {"stack": true}})).await;
    let table = submit(json!({"name": "tablebomb"})).await;
    let flood = submit(json!({"name": "chatty", "parameters": {"lines": 200000}})).await;
    let spawner = submit(json!({"name": "spawner",
        "parameters": {"child": "noop", "count": 50, "tolerate_errors": true}}))
    .await;

    // Noop jobs keep completing beside them.
    let beside = noop_stream(&s, 30).await;

    // A loop ignoring stop: killed at its deadline, marked error.
    let j = s.wait_status(&spin_deadline, "error").await;
    assert_eq!(first_attempt(&j)["outcome"], "killed", "{j}");
    assert_eq!(first_attempt(&j)["message"], "deadline exceeded", "{j}");
    // Spinning past a stop, or asleep in a WASI call: killed after the stop timeout.
    for id in [&spin_stopped, &asleep] {
        s.wait_status(id, "running").await;
        assert_eq!(s.action(id, "stop").await.0, StatusCode::NO_CONTENT);
        let j = s.wait_status(id, "stopped").await;
        assert_eq!(first_attempt(&j)["outcome"], "killed", "{j}");
        assert_eq!(
            first_attempt(&j)["message"],
            "did not stop within the stop timeout",
            "{j}"
        );
    }
    // A memory bomb: killed at its 64 MiB cap.
    let j = s
        .wait_until(&hog, Duration::from_secs(60), |j| {
            first_attempt(j)["outcome"].is_string()
        })
        .await;
    assert_eq!(first_attempt(&j)["outcome"], "killed", "{j}");
    assert_eq!(first_attempt(&j)["message"], "memory cap exceeded", "{j}");
    assert!(
        first_attempt(&j)["peak_memory"].as_u64().expect("peak") <= 64 << 20,
        "{j}"
    );
    // Unbounded recursion: a trap.
    let j = s
        .wait_until(&recursion, Duration::from_secs(60), |j| {
            first_attempt(j)["outcome"].is_string()
        })
        .await;
    assert_eq!(first_attempt(&j)["outcome"], "trapped", "{j}");
    // A table bomb: growth refused at the pool's table limit; the guest gives up.
    let j = s.wait_status(&table, "error").await;
    assert_eq!(first_attempt(&j)["outcome"], "failed", "{j}");
    assert_eq!(
        first_attempt(&j)["message"],
        "table grew until refused",
        "{j}"
    );
    // A log flood: cut at the log budget, said once in the log.
    s.wait_status(&flood, "success").await;
    let (status, log) = s.log(&flood).await;
    assert_eq!(status, StatusCode::OK);
    assert!(log.contains("log limit reached"), "no budget note");
    assert!(log.len() < 4 << 20, "log of {} bytes", log.len());
    // Sub-jobs in a loop: five launched, the rest refused.
    let j = s.wait_status(&spawner, "success").await;
    assert_eq!(j["check_in"], "launched 5/50", "{j}");
    let (status, page) = TestServer::send(s.authed(
        reqwest::Method::GET,
        &format!("/api/v1/jobs/{spawner}/executions"),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page["executions"].as_array().map(Vec::len),
        Some(5),
        "{page}"
    );

    // The figures, and what the test holds them to: every noop completed (above),
    // none waited long behind the hostile jobs, and memory stayed in the pool's
    // bound (each instance is capped; hog at 64 MiB, the rest at 128 MiB).
    let rss_after = rss();
    let (b50, b_max) = (baseline[baseline.len() / 2], baseline[baseline.len() - 1]);
    let (h50, h_max) = (beside[beside.len() / 2], beside[beside.len() - 1]);
    println!(
        "noop submit->success: alone p50 {b50:?} max {b_max:?}; beside hostile jobs p50 {h50:?} max {h_max:?}; \
         RSS {} MiB -> {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(h_max < Duration::from_secs(10), "a noop waited {h_max:?}");
    let bound = u64::from(WORKERS) * (128 << 20) + (256 << 20);
    assert!(
        rss_after.saturating_sub(rss_before) < bound,
        "RSS grew from {} MiB to {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
    s.shutdown().await;
}
