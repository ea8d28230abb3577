//! The job service end to end, over HTTP on a real node: the life of each job
//! kind, retries, stop/cancel, the retry action, logs, batches, priorities.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use wasmjobs_tests::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_goes_pending_running_success_with_checkins_and_a_log() {
    let s = TestServer::start(&["demo"]).await;
    let (status, body) = s
        .submit(json!({"name": "demo", "parameters": {"image": "demo-1", "step_ms": 150}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = &body["job"];
    assert!(
        matches!(job["status"].as_str(), Some("pending" | "running")),
        "{job}"
    );
    assert_eq!(job["kind"], "Generic");
    assert_eq!(
        job["parameters"],
        json!({"image": "demo-1", "step_ms": 150})
    );
    let id = job["id"].as_str().expect("id").to_string();
    assert_eq!(job["ref_link"], format!("/api/v1/jobs/{id}"));
    assert_eq!(job["retries_total"], 2, "demo's max-fails is 3");

    // Running, with check-ins visible while it runs.
    let running = s
        .wait_until(&id, Duration::from_secs(30), |j| {
            j["check_in"] == "30%" || j["check_in"] == "60%"
        })
        .await;
    assert_eq!(running["status"], "running");
    assert!(running["check_in_at"].as_u64().is_some(), "{running}");
    assert!(
        running["worker_id"]
            .as_str()
            .is_some_and(|w| w.contains("/w")),
        "{running}"
    );

    let done = s.wait_status(&id, "success").await;
    assert_eq!(done["check_in"], "100%");
    assert!(done["finished_at"].as_u64().is_some());
    assert!(
        done["plugin_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{done}"
    );
    let attempts = done["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "success");
    assert!(
        attempts[0]["duration_us"]
            .as_u64()
            .is_some_and(|d| d >= 450_000),
        "{done}"
    );
    assert!(attempts[0]["peak_memory"].as_u64().is_some_and(|m| m > 0));

    let (status, log) = s.log(&id).await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        "[INFO] check in 30%",
        "[WARNING] check in 60%",
        "[DEBUG] check in 100%",
        "[INFO] [stdout] I'm running",
        "[ERROR] [stderr] I'm close to end",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_job_runs_no_earlier_than_its_delay() {
    let s = TestServer::start(&["noop"]).await;
    let (status, body) = s
        .submit(json!({"name": "noop", "metadata": {"kind": "Scheduled", "schedule_delay": 2}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = &body["job"];
    assert_eq!(job["status"], "scheduled");
    let enqueued = job["enqueue_time"].as_u64().expect("enqueue_time");
    assert_eq!(job["run_at"].as_u64(), Some(enqueued + 2));
    let id = job["id"].as_str().expect("id");
    // The 202 shows the job as stored: a read right after (nothing has
    // happened to it yet) answers the same view, `Received` event included.
    assert_eq!(job["task_events"][0]["type"], "Received", "{job}");
    assert_eq!(s.job(id).await, *job);
    // It exists, so does its log: empty until it starts.
    let (status, text) = s.log(id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text, "");

    let done = s.wait_status(id, "success").await;
    let stored = s.service.get(id.parse().expect("uuid")).await.expect("job");
    let started = stored.attempts[0].started_at;
    assert!(
        started >= stored.enqueue_time + 2000,
        "ran {} ms after submission",
        started - stored.enqueue_time
    );
    assert_eq!(done["attempts"].as_array().map(Vec::len), Some(1));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_retries_with_backoff_then_succeeds() {
    let s = TestServer::start(&["flaky"]).await;
    let id = s
        .submit_ok(json!({"name": "flaky", "parameters": {"succeed_on": 3}}))
        .await;
    let done = s.wait_status(&id, "success").await;
    let attempts = done["attempts"].as_array().expect("attempts");
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "success"]);
    assert_eq!(attempts[1]["retry_from_id"], attempts[0]["id"]);
    assert_eq!(attempts[2]["retry_from_id"], attempts[1]["id"]);
    assert_eq!(done["retry_from_id"], attempts[1]["id"]);
    assert_eq!(
        (
            done["retries_total"].as_u64(),
            done["retries_left"].as_u64()
        ),
        (Some(4), Some(2))
    );
    assert!(done["die_at"].is_null());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_retries_or_refused_retries_end_in_error() {
    let s = TestServer::start(&["flaky"]).await;
    let never = s
        .submit_ok(json!({"name": "flaky", "parameters": {"succeed_on": 100}}))
        .await;
    let fatal = s
        .submit_ok(json!({"name": "flaky", "parameters": {"fatal": true}}))
        .await;
    let done = s.wait_status(&never, "error").await;
    assert_eq!(
        done["attempts"].as_array().map(Vec::len),
        Some(5),
        "max-fails 5: {done}"
    );
    assert_eq!(done["retries_left"], 0);
    assert!(done["die_at"].as_u64().is_some());
    let done = s.wait_status(&fatal, "error").await;
    assert_eq!(
        done["attempts"].as_array().map(Vec::len),
        Some(1),
        "should-retry refused: {done}"
    );
    assert_eq!(done["retries_left"], 4);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_cancel_of_waiting_jobs_mean_they_never_run() {
    let s = TestServer::start(&["sleeper", "noop"]).await;
    // Both workers busy.
    let busy: Vec<String> = futures_join(
        &s,
        2,
        json!({"name": "sleeper", "parameters": {"ms": 60000}}),
    )
    .await;
    for id in &busy {
        s.wait_status(id, "running").await;
    }
    let pending = s.submit_ok(json!({"name": "noop"})).await;
    let scheduled = s
        .submit_ok(json!({"name": "noop", "metadata": {"kind": "Scheduled", "schedule_delay": 1}}))
        .await;
    assert_eq!(s.action(&pending, "cancel").await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.action(&scheduled, "stop").await.0, StatusCode::NO_CONTENT);
    for id in &busy {
        assert_eq!(s.action(id, "stop").await.0, StatusCode::NO_CONTENT);
        s.wait_status(id, "stopped").await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = s.job(&pending).await;
    assert_eq!(p["status"], "cancelled");
    assert_eq!(p["attempts"], json!([]), "it never ran");
    let sc = s.job(&scheduled).await;
    assert_eq!(sc["status"], "stopped");
    assert_eq!(sc["attempts"], json!([]));
    // A finished job: 204, no change.
    assert_eq!(s.action(&pending, "stop").await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.job(&pending).await["status"], "cancelled");
    s.shutdown().await;
}

async fn futures_join(s: &TestServer, n: usize, job: serde_json::Value) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(s.submit_ok(job.clone()).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_jobs_stop_and_cancel_cooperatively() {
    let s = TestServer::start(&["sleeper"]).await;
    let a = s
        .submit_ok(json!({"name": "sleeper", "parameters": {"ms": 60000}}))
        .await;
    let b = s
        .submit_ok(json!({"name": "sleeper", "parameters": {"ms": 60000}}))
        .await;
    s.wait_status(&a, "running").await;
    s.wait_status(&b, "running").await;
    assert_eq!(s.action(&a, "stop").await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.action(&b, "cancel").await.0, StatusCode::NO_CONTENT);
    let a = s.wait_status(&a, "stopped").await;
    let b = s.wait_status(&b, "cancelled").await;
    assert_eq!(a["attempts"][0]["outcome"], "stopped");
    assert_eq!(b["attempts"][0]["outcome"], "cancelled");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_is_killed_after_its_stop_timeout() {
    let s = TestServer::start(&["spin"]).await;
    let id = s
        .submit_ok(json!({"name": "spin", "metadata": {"stop_timeout": "300ms"}}))
        .await;
    let job = s
        .wait_until(&id, Duration::from_secs(30), |j| {
            j["check_in"] == "spinning"
        })
        .await;
    assert_eq!(job["stop_timeout"], "300ms");
    let asked = std::time::Instant::now();
    assert_eq!(s.action(&id, "stop").await.0, StatusCode::NO_CONTENT);
    let done = s.wait_status(&id, "stopped").await;
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert_eq!(done["attempts"][0]["outcome"], "killed");
    assert_eq!(
        done["attempts"][0]["message"],
        "did not stop within the stop timeout"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_action_reruns_a_failed_job_only() {
    let s = TestServer::start(&["flaky", "noop"]).await;
    let id = s
        .submit_ok(json!({"name": "flaky", "parameters": {"succeed_on": 2, "fatal": true}}))
        .await;
    let failed = s.wait_status(&id, "error").await;
    assert_eq!(s.action(&id, "retry").await.0, StatusCode::NO_CONTENT);
    let done = s.wait_status(&id, "success").await;
    let attempts = done["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2);
    assert_eq!(done["retry_from_id"], failed["attempts"][0]["id"]);
    assert!(
        done["die_at"].is_null(),
        "a retried job is no longer dead: {done}"
    );
    // A successful job cannot be retried.
    let (status, body) = s.action(&id, "retry").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["description"]
            .as_str()
            .is_some_and(|d| d.contains("success")),
        "{body}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_stored_in_order_and_runs() {
    let s = TestServer::start(&["noop", "demo"]).await;
    let jobs = json!({"jobs": [
        {"name": "noop"},
        {"name": "demo", "parameters": {"image": "demo-b", "step_ms": 1}},
        {"name": "noop", "metadata": {"priority": 5}}
    ]});
    let (status, body) =
        TestServer::send(s.authed(Method::POST, "/api/v1/jobs/batch").json(&jobs)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let list = body["jobs"].as_array().expect("jobs");
    let names: Vec<&str> = list
        .iter()
        .map(|j| j["name"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(names, ["noop", "demo", "noop"]);
    assert!(
        list.iter()
            .all(|j| j["task_events"][0]["type"] == "Received"),
        "each job as stored: {body}"
    );
    // Ids are time-ordered (UUIDv7): they sort in submission order, and so do
    // the records they key in the store.
    let mut ids: Vec<String> = list
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect();
    ids.push(s.submit_ok(json!({"name": "noop"})).await);
    assert!(ids.is_sorted(), "ids in submission order: {ids:?}");
    for id in &ids {
        s.wait_status(id, "success").await;
    }
    // Every attempt the workers ran is counted once it is recorded.
    assert_eq!(s.service.attempts_recorded(), 4);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first() {
    let s = TestServer::start_with(&["sleeper", "noop"], |c| {
        c.workers = 1;
        c.runtime.max_concurrent_jobs = 1;
    })
    .await;
    let blocker = s
        .submit_ok(json!({"name": "sleeper", "parameters": {"ms": 400}}))
        .await;
    s.wait_status(&blocker, "running").await;
    let low = s
        .submit_ok(json!({"name": "noop", "metadata": {"priority": -1}}))
        .await;
    let mid = s.submit_ok(json!({"name": "noop"})).await;
    let high = s
        .submit_ok(json!({"name": "noop", "metadata": {"priority": 10}}))
        .await;
    for id in [&low, &mid, &high] {
        s.wait_status(id, "success").await;
    }
    let started = |id: &str| {
        let s = &s;
        let id = id.parse().expect("uuid");
        async move { s.service.get(id).await.expect("job").attempts[0].started_at }
    };
    let (l, m, h) = (
        started(&low).await,
        started(&mid).await,
        started(&high).await,
    );
    assert!(h <= m && m <= l, "high {h} mid {m} low {l}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjobs_launched_by_a_guest_are_executions_of_their_parent() {
    let s = TestServer::start(&["spawner", "noop"]).await;
    let id = s
        .submit_ok(json!({"name": "spawner", "parameters": {"child": "noop", "count": 3}}))
        .await;
    let parent = s.wait_status(&id, "success").await;
    let children = parent["executions"].as_array().expect("executions").clone();
    assert_eq!(children.len(), 3, "{parent}");
    assert_eq!(parent["multiple_executions"], true);
    for c in children {
        let child = s.wait_status(c.as_str().expect("id"), "success").await;
        assert_eq!(child["upstream_job_id"], id.as_str());
    }
    // A refused sub-job comes back to the guest as an error.
    let id = s
        .submit_ok(json!({"name": "spawner", "parameters": {"child": "nope", "count": 1}}))
        .await;
    let failed = s
        .wait_until(&id, Duration::from_secs(30), |j| {
            j["attempts"][0]["outcome"] == "failed"
        })
        .await;
    let message = failed["attempts"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("unknown job name \"nope\""), "{failed}");
    s.shutdown().await;
}

/// Counts the spans the subscriber it is layered into enables, by name.
#[derive(Clone, Default)]
struct SpanCounter(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanCounter {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = attrs.metadata();
        let name = format!("{}::{}", meta.target(), meta.name());
        self.0.lock().expect("span names").push(name);
    }
}

/// Under `wasmjobs serve`'s default filter (`info`) a job makes no span on its
/// way through the node: at `info` the worker's and the runtime's spans cost
/// ~2 µs of a ~21 µs noop job. (A current-thread runtime, so the node's tasks
/// all run where the subscriber is the default.)
#[tokio::test]
async fn a_job_makes_no_span_at_the_default_log_level() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = SpanCounter::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(spans.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let s = TestServer::start(&["noop"]).await;
    let id = s.submit_ok(json!({"name": "noop"})).await;
    s.wait_status(&id, "success").await;
    s.shutdown().await;
    let names = spans.0.lock().expect("span names").clone();
    assert!(names.is_empty(), "spans made at info: {names:?}");
}
