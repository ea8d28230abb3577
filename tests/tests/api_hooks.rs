//! Status webhooks: every status change and check-in is POSTed, in order per job,
//! with growing revisions; failed deliveries are retried until they succeed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use wasmjobs_tests::server::TestServer;

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
    /// Answer 500 to this many requests first.
    fail_first: Arc<Mutex<u32>>,
    refused: Arc<Mutex<u32>>,
}

async fn receive(State(r): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    {
        let mut fail = r.fail_first.lock().expect("lock");
        if *fail > 0 {
            *fail -= 1;
            *r.refused.lock().expect("lock") += 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    r.got.lock().expect("lock").push(body);
    StatusCode::OK
}

async fn start_receiver(fail_first: u32) -> (String, Receiver) {
    let r = Receiver::default();
    *r.fail_first.lock().expect("lock") = fail_first;
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_and_checkins_are_delivered_in_order_despite_failures() {
    let (url, receiver) = start_receiver(2).await;
    let s = TestServer::start(&["demo"]).await;
    let id = s
        .submit_ok(json!({"name": "demo", "parameters": {"image": "demo-h", "step_ms": 150}, "status_hook": url}))
        .await;
    s.wait_status(&id, "success").await;
    let started = Instant::now();
    loop {
        let done = receiver
            .got
            .lock()
            .expect("lock")
            .iter()
            .any(|b| b["status"] == "success");
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the success hook never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = receiver.got.lock().expect("lock").clone();
    assert_eq!(
        *receiver.refused.lock().expect("lock"),
        2,
        "the receiver refused twice"
    );
    assert!(got.iter().all(|b| b["job_id"] == id.as_str()));
    let revisions: Vec<u64> = got
        .iter()
        .map(|b| b["revision"].as_u64().expect("revision"))
        .collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "in order: {revisions:?}"
    );
    let statuses: Vec<&str> = got
        .iter()
        .map(|b| b["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(statuses.first(), Some(&"pending"), "{statuses:?}");
    assert!(statuses.contains(&"running"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"success"), "{statuses:?}");
    let checkins: Vec<&str> = got.iter().filter_map(|b| b["check_in"].as_str()).collect();
    for c in ["30%", "60%", "100%"] {
        assert!(checkins.contains(&c), "check-in {c} hooked: {checkins:?}");
    }
    let last = got.last().expect("last");
    assert_eq!(last["metadata"]["id"], id.as_str());
    assert_eq!(last["metadata"]["status"], "success");
    assert_eq!(last["metadata"]["hook_status"], url.as_str());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_hooks_survive_a_server_restart() {
    // The receiver refuses everything at first: the hooks queue up.
    let (url, receiver) = start_receiver(u32::MAX).await;
    let s = TestServer::start(&["noop"]).await;
    let id = s
        .submit_ok(json!({"name": "noop", "status_hook": url}))
        .await;
    s.wait_status(&id, "success").await;
    let refused = Instant::now();
    while *receiver.refused.lock().expect("lock") == 0 {
        assert!(
            refused.elapsed() < Duration::from_secs(30),
            "no delivery was tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = s.restart().await;
    // The receiver comes back; the queued hooks arrive, in order.
    *receiver.fail_first.lock().expect("lock") = 0;
    let started = Instant::now();
    loop {
        let statuses: Vec<String> = receiver
            .got
            .lock()
            .expect("lock")
            .iter()
            .map(|b| b["status"].as_str().unwrap_or("?").to_string())
            .collect();
        if statuses.last().map(String::as_str) == Some("success") {
            assert_eq!(statuses, ["pending", "running", "success"]);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "queued hooks never arrived: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await;
}
