//! Limits that keep a hostile or broken client from holding the API: the cap on
//! open connections, the time allowed for a request's headers and for a whole
//! request, and the cap on blocking queries waiting at once.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmjobs_tests::server::{SECRET, TestServer};

fn addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// Send a GET on a fresh connection; the answer's status line, or `None` when the
/// server closed the connection without answering.
async fn ping_on(conn: &mut TcpStream) -> Option<String> {
    let req = "GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n";
    conn.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_and_freed_places_are_reused() {
    let s = TestServer::start_with(&["noop"], |cfg| cfg.max_connections = 3).await;
    // The test client may keep a pooled connection: use raw ones only, and wait
    // until three are held open (each answered once, so each has been accepted).
    let mut held = Vec::new();
    let started = Instant::now();
    while held.len() < 3 {
        let mut c = TcpStream::connect(addr(&s)).await.expect("connect");
        if ping_on(&mut c).await.is_some_and(|l| l.contains("200")) {
            held.push(c);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "could not open 3 connections"
        );
    }
    // A fourth is closed without an answer.
    let mut extra = TcpStream::connect(addr(&s)).await.expect("connect");
    assert_eq!(
        ping_on(&mut extra).await,
        None,
        "a 4th connection was served"
    );
    // Closing one frees its place.
    drop(held.pop());
    let started = Instant::now();
    loop {
        let mut c = TcpStream::connect(addr(&s)).await.expect("connect");
        if ping_on(&mut c).await.is_some_and(|l| l.contains("200")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the freed place was not reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    s.shutdown().await;
}

/// Slow-loris clients, and keep-alive connections left idle, do not keep their
/// place: both are closed once the header timeout (10 s) has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_idle_connections_are_cut_off() {
    let s = TestServer::start(&["noop"]).await;
    let mut slow = TcpStream::connect(addr(&s)).await.expect("connect");
    slow.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let mut idle = TcpStream::connect(addr(&s)).await.expect("connect");
    assert!(ping_on(&mut idle).await.is_some_and(|l| l.contains("200")));
    let started = Instant::now();
    for (what, conn) in [("slow", &mut slow), ("idle", &mut idle)] {
        let mut buf = [0u8; 256];
        // Closed (0 bytes, or a 408 then the close) well before 60 s.
        let read = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "the {what} connection was still open after 60 s"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(5),
        "cut off too early: {elapsed:?}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_timeout_gets_a_503() {
    let s = TestServer::start_with(&["noop"], |cfg| {
        cfg.request_timeout = Duration::from_millis(500);
    })
    .await;
    // The body is announced but never finished: the handler waits for it.
    let mut c = TcpStream::connect(addr(&s)).await.expect("connect");
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Harbor-Secret {SECRET}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"job\":"
    );
    c.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), c.read(&mut buf))
        .await
        .expect("an answer within 30 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // Other requests are unaffected.
    let (status, _) = s.submit(json!({"name": "noop"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_queries_beyond_the_cap_get_a_429() {
    let s = TestServer::start_with(&["noop"], |cfg| cfg.max_blocking_waiters = 2).await;
    // Blocking queries on a job that does not change for an hour (a running job
    // would: its lease is renewed).
    let id = s
        .submit_ok(
            json!({"name": "noop", "metadata": {"kind": "Scheduled", "schedule_delay": 3600}}),
        )
        .await;
    let index = s
        .authed(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"))
        .send()
        .await
        .expect("get")
        .headers()["x-wasmjobs-index"]
        .to_str()
        .expect("index")
        .to_string();
    let path = |wait: &str| format!("/api/v1/jobs/{id}?index={index}&wait={wait}");
    // Three long waiters for two places: whichever comes third is refused at once,
    // the other two wait (nothing changes the job).
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..3 {
        let req = s.authed(reqwest::Method::GET, &path("60s"));
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let (status, body) = TestServer::send(req).await;
            let _ = done_tx.send((status, body));
        });
    }
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), done.recv())
        .await
        .expect("one waiter answered within 30 s")
        .expect("answer");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.to_string().contains("max_blocking_waiters"), "{body}");
    // A change of the job wakes the other two; their places are free again.
    assert_eq!(s.action(&id, "stop").await.0, StatusCode::NO_CONTENT);
    for _ in 0..2 {
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), done.recv())
            .await
            .expect("the waiters answered")
            .expect("answer");
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = TestServer::send(s.authed(reqwest::Method::GET, &path("1s"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.shutdown().await;
}
