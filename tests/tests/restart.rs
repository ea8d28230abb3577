//! Durability across a crash: the real `wasmjobs serve` process is killed with
//! SIGKILL while clients submit and jobs run; restarted on the same data dir,
//! every job the API acknowledged is there and reaches a final state, and jobs
//! that were running get a new attempt (the interrupted one is visible).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use wasmjobs_tests::install;
use wasmjobs_tests::process::ServerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_job_survives_sigkill() {
    let data = tempfile::tempdir().expect("data");
    let plugins = tempfile::tempdir().expect("plugins");
    install(plugins.path(), &["sleeper", "noop"]);

    let first = Arc::new(ServerProcess::spawn(data.path(), plugins.path()));
    // Two long jobs keep both workers busy; they are running when the kill lands.
    let mut long = Vec::new();
    for _ in 0..2 {
        long.push(
            first
                .submit(json!({"name": "sleeper", "parameters": {"ms": 600000}}))
                .await
                .expect("202"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &long {
        while first.get(id).await["status"] != "running" {
            assert!(Instant::now() < deadline, "long jobs never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let scheduled = first
        .submit(json!({"name": "noop", "metadata": {"kind": "Scheduled", "schedule_delay": 2}}))
        .await
        .expect("202");
    // Clients submit as fast as they can; the process is killed mid-stream.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (server, acked) = (first.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..2000 {
                match server.submit(json!({"name": "noop"})).await {
                    Some(id) => acked.lock().expect("lock").push(id),
                    None => break, // the server is gone
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(0..200))).await;
    first.kill();
    for t in clients {
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        !acked.is_empty(),
        "some submissions were acknowledged before the kill"
    );

    let second = ServerProcess::spawn(data.path(), plugins.path());
    // The running jobs were requeued as new attempts; stop them so they end.
    for id in &long {
        let job = second.get(id).await;
        assert_eq!(job["attempts"][0]["outcome"], "interrupted", "{job}");
        assert_eq!(second.action(id, "stop").await, StatusCode::NO_CONTENT);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let all: Vec<&String> = acked
        .iter()
        .chain(&long)
        .chain(std::iter::once(&scheduled))
        .collect();
    for id in all {
        loop {
            let job = second.get(id).await;
            if job["status"] == "success" || job["status"] == "stopped" {
                break;
            }
            assert!(Instant::now() < deadline, "job {id} never finished: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "{} jobs acknowledged before SIGKILL; all present and finished after restart",
        acked.len()
    );
}

/// After a restart the ready queue is loaded from the store in chunks (the
/// first before the node starts, the rest while it runs): jobs past the first
/// chunk run too, in order, and before a job requeued at the restart, which
/// sorts after them all. (That a claim never looks past the keys loaded so far
/// is pinned by the unit tests of `store::sled::ready`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_queue_runs_in_order_after_a_restart() {
    use wasmjobs_tests::server::TestServer;
    let s = TestServer::start_with(&["sleeper", "noop"], |c| {
        c.workers = 1;
        c.runtime.max_concurrent_jobs = 1;
    })
    .await;
    let blocker = s
        .submit_ok(json!({"name": "sleeper", "parameters": {"ms": 600000}}))
        .await;
    s.wait_status(&blocker, "running").await;
    let mut ids = Vec::new();
    for _ in 0..9 {
        let batch = json!({ "jobs": vec![json!({"name": "noop"}); 1000] });
        let (status, body) = TestServer::send(
            s.authed(reqwest::Method::POST, "/api/v1/jobs/batch")
                .json(&batch),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        for j in body["jobs"].as_array().expect("jobs") {
            ids.push(
                j["id"]
                    .as_str()
                    .expect("id")
                    .parse::<uuid::Uuid>()
                    .expect("uuid"),
            );
        }
    }
    // The sleeper is interrupted by the restart and requeued behind the noops.
    let s = s.restart().await;
    let last = *ids.last().expect("ids");
    let deadline = Instant::now() + Duration::from_secs(180);
    while s.service.get(last).await.expect("job").status != wasmjobs::job::Status::Success {
        assert!(
            Instant::now() < deadline,
            "the queue was not drained after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut previous = 0;
    for (n, id) in ids.iter().enumerate() {
        let job = s.service.get(*id).await.expect("job");
        assert_eq!(job.status, wasmjobs::job::Status::Success, "job {n}");
        let started = job.started_at.expect("started");
        assert!(
            started >= previous,
            "job {n} started before the one queued ahead of it"
        );
        previous = started;
    }
    let blocker = s
        .service
        .get(blocker.parse().expect("uuid"))
        .await
        .expect("job");
    let again = blocker
        .attempts
        .get(1)
        .expect("the blocker runs again after the restart");
    assert!(
        again.started_at >= previous,
        "the requeued job ran before the queue ahead of it"
    );
    s.shutdown().await;
}
