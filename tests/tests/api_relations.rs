//! Unique jobs, sub-job trees (cascade and paging), log retention, and the
//! plugins API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use wasmjobs_tests::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_job_is_held_while_pending_scheduled_or_running() {
    let s = TestServer::start(&["sleeper"]).await;
    let job = json!({"name": "sleeper", "parameters": {"ms": 60000}, "metadata": {"unique": true}});
    let first = s.submit_ok(job.clone()).await;
    let (status, body) = s.submit(job.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["description"]
            .as_str()
            .is_some_and(|d| d.contains(&first)),
        "{body}"
    );
    s.wait_status(&first, "running").await;
    let (status, body) = s.submit(job.clone()).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "still held while running: {body}"
    );
    // Other parameters are another job; key order does not matter.
    let other = json!({"name": "sleeper", "parameters": {"step_ms": 5, "ms": 60000}, "metadata": {"unique": true}});
    let second = s.submit_ok(other.clone()).await;
    let same = json!({"name": "sleeper", "parameters": {"ms": 60000, "step_ms": 5}, "metadata": {"unique": true}});
    assert_eq!(s.submit(same).await.0, StatusCode::CONFLICT);
    // Once it has ended, the name and parameters are free again.
    assert_eq!(s.action(&first, "stop").await.0, StatusCode::NO_CONTENT);
    s.wait_status(&first, "stopped").await;
    let third = s.submit_ok(job).await;
    for id in [&second, &third] {
        s.action(id, "cancel").await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_parent_stops_its_unfinished_children_and_executions_page() {
    let s = TestServer::start_with(&["spawner", "sleeper"], |c| {
        c.workers = 3;
        c.runtime.max_concurrent_jobs = 3;
    })
    .await;
    let parent = s
        .submit_ok(json!({"name": "spawner", "parameters": {"child": "sleeper", "count": 5, "child_params": {"ms": 60000}}}))
        .await;
    s.wait_status(&parent, "success").await;

    // Page through the executions.
    let page = |cursor: Option<String>| {
        let path = match cursor {
            Some(c) => format!("/api/v1/jobs/{parent}/executions?limit=2&cursor={c}"),
            None => format!("/api/v1/jobs/{parent}/executions?limit=2"),
        };
        TestServer::send(s.authed(Method::GET, &path))
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (status, body) = page(cursor.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for e in body["executions"].as_array().expect("list") {
            assert_eq!(e["upstream_job_id"], parent.as_str());
            seen.push(e["id"].as_str().expect("id").to_string());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let listed: Vec<String> = s.job(&parent).await["executions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect();
    assert_eq!(
        listed, seen,
        "stats list the same executions in launch order"
    );
    for bad in ["limit=0", "limit=5000", "cursor=zz", "bogus=1"] {
        let (status, body) = TestServer::send(s.authed(
            Method::GET,
            &format!("/api/v1/jobs/{parent}/executions?{bad}"),
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // Three children run, two wait; stopping the (finished) parent stops all five.
    assert_eq!(s.action(&parent, "stop").await.0, StatusCode::NO_CONTENT);
    for child in &seen {
        s.wait_status(child, "stopped").await;
    }
    assert_eq!(
        s.job(&parent).await["status"],
        "success",
        "a finished parent keeps its status"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_logs_are_swept_but_never_those_of_running_jobs() {
    let s = TestServer::start_with(&["chatty", "demo"], |c| {
        c.job_loggers.retention = Some(Duration::from_secs(1))
    })
    .await;
    let done = s
        .submit_ok(json!({"name": "chatty", "parameters": {"lines": 2}}))
        .await;
    s.wait_status(&done, "success").await;
    let running = s
        .submit_ok(json!({"name": "demo", "parameters": {"image": "demo-r", "step_ms": 60000}}))
        .await;
    s.wait_until(&running, Duration::from_secs(30), |j| {
        j["check_in"] == "30%"
    })
    .await;
    let (status, text) = s.log(&done).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("log line 1") && text.contains("[host] attempt 1 ended"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let removed = s.service.sweep_logs(Duration::from_secs(1)).await;
    assert_eq!(removed, 1, "only the finished job's log goes");
    let (status, text) = s.log(&done).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(text.contains("removed by the log sweeper"), "{text}");
    let (status, text) = s.log(&running).await;
    assert_eq!(status, StatusCode::OK, "a running job keeps its log");
    assert!(text.contains("check in 30%"), "{text}");
    s.action(&running, "stop").await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_api_lists_plugins_and_dry_runs_validate() {
    let s = TestServer::start(&["demo", "noop"]).await;
    std::fs::write(s.plugins_dir.join("broken.wasm"), b"nope").expect("write");
    s.service.registry().scan().await.expect("scan");
    let (status, body) = TestServer::send(s.authed(Method::GET, "/api/v1/plugins")).await;
    assert_eq!(status, StatusCode::OK);
    let plugins = body["plugins"].as_array().expect("plugins");
    assert_eq!(plugins.len(), 3, "{body}");
    let demo = plugins.iter().find(|p| p["name"] == "demo").expect("demo");
    assert_eq!(demo["status"], "ready");
    assert!(
        demo["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    assert_eq!(demo["digest"], demo["serving_digest"]);
    assert_eq!(demo["max_fails"], 3);
    assert!(
        demo["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("demo.wasm"))
    );
    let broken = plugins
        .iter()
        .find(|p| p["status"] == "invalid")
        .expect("broken");
    assert!(
        broken["error"]
            .as_str()
            .is_some_and(|e| e.contains("broken.wasm")),
        "{broken}"
    );

    let validate = |name: &str, body: serde_json::Value| {
        TestServer::send(
            s.authed(Method::POST, &format!("/api/v1/plugins/{name}/validate"))
                .json(&body),
        )
    };
    let (status, body) = validate("demo", json!({"image": "demo-1"})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"valid": true})));
    let (status, body) = validate("demo", json!({"image": "prod"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["description"]
            .as_str()
            .is_some_and(|d| d.contains("start with 'demo'")),
        "{body}"
    );
    assert_eq!(validate("nope", json!({})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        validate("demo", json!([1])).await.0,
        StatusCode::BAD_REQUEST
    );
    // The dry run enqueued nothing.
    assert_eq!(s.service.store().queue_len().await.expect("queue"), 0);
    s.shutdown().await;
}
