//! Status webhooks: every status change and check-in is POSTed, in order per job,
//! with growing revisions; failed deliveries are retried until they succeed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use wasmjobs::config::Config;
use wasmjobs::service::HookPolicy;
use wasmjobs_tests::server::TestServer;

/// The receivers of these tests listen on loopback, which hooks may not reach by
/// default.
fn allow_loopback(cfg: &mut Config) {
    cfg.hook_policy = HookPolicy::new(&["127.0.0.0/8".into()], &[]).expect("policy");
}

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
    let s = TestServer::start_with(&["demo"], allow_loopback).await;
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
    let s = TestServer::start_with(&["noop"], allow_loopback).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_to_loopback_or_link_local_addresses_are_refused_at_submit() {
    let s = TestServer::start(&["noop"]).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://2130706433/hook", // 127.0.0.1 as one number
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:9/",
    ] {
        let (status, body) = s.submit(json!({"name": "noop", "status_hook": url})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        let text = body.to_string();
        assert!(
            text.contains("status_hook") && text.contains("denied network"),
            "{url}: {body}"
        );
    }
    s.shutdown().await;
}

/// A name is checked where it matters, at connect time: `localhost` passes the
/// submit check, but every address it resolves to is denied, so the receiver on
/// loopback never sees a request and the hooks are dropped (and reported).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_name_that_resolves_to_loopback_is_never_contacted() {
    let (url, receiver) = start_receiver(0).await;
    let url = url.replace("127.0.0.1", "localhost");
    let s = TestServer::start_with(&["noop"], |cfg| {
        cfg.hook_retry_for = Duration::from_millis(300);
    })
    .await;
    let id = s
        .submit_ok(json!({"name": "noop", "status_hook": url}))
        .await;
    s.wait_status(&id, "success").await;
    let started = Instant::now();
    loop {
        let (status, body) =
            TestServer::send(s.authed(reqwest::Method::GET, "/api/v1/meta/cluster_status")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body.to_string().contains("3 status hooks were dropped") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the hooks were not dropped: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        receiver.got.lock().expect("lock").is_empty()
            && *receiver.refused.lock().expect("lock") == 0,
        "the loopback receiver was contacted"
    );
    s.shutdown().await;
}
