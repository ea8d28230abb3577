//! Durability across a crash: the real `wasmjobs serve` process is killed with
//! SIGKILL while clients submit and jobs run; restarted on the same data dir,
//! every job the API acknowledged is there and reaches a final state, and jobs
//! that were running get a new attempt (the interrupted one is visible).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wasmjobs_tests::server::SECRET;
use wasmjobs_tests::{install, wasmjobs_binary};

struct Proc {
    child: Child,
    base: String,
}

/// Start `wasmjobs serve` on a free port and wait until it answers.
async fn spawn(data: &std::path::Path, plugins: &std::path::Path) -> Proc {
    let mut child = Command::new(wasmjobs_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--plugins-dir")
        .arg(plugins)
        .env("CORE_SECRET", SECRET)
        .env("JOB_SERVICE_POOL_WORKERS", "2")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasmjobs serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the server prints its address");
    Proc { child, base }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn submit(c: &reqwest::Client, base: &str, job: Value) -> Option<String> {
    let resp = c
        .post(format!("{base}/api/v1/jobs"))
        .header("Authorization", format!("Harbor-Secret {SECRET}"))
        .json(&json!({ "job": job }))
        .send()
        .await
        .ok()?;
    if resp.status() != StatusCode::ACCEPTED {
        return None;
    }
    let body: Value = resp.json().await.ok()?;
    body["job"]["id"].as_str().map(String::from)
}

async fn get(c: &reqwest::Client, base: &str, id: &str) -> Value {
    let resp = c
        .get(format!("{base}/api/v1/jobs/{id}"))
        .header("Authorization", format!("Harbor-Secret {SECRET}"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "job {id} must exist after the restart"
    );
    resp.json::<Value>().await.expect("json")["job"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_job_survives_sigkill() {
    let data = tempfile::tempdir().expect("data");
    let plugins = tempfile::tempdir().expect("plugins");
    install(plugins.path(), &["sleeper", "noop"]);
    let c = client();

    let mut first = spawn(data.path(), plugins.path()).await;
    // Two long jobs keep both workers busy; they are running when the kill lands.
    let mut long = Vec::new();
    for _ in 0..2 {
        long.push(
            submit(
                &c,
                &first.base,
                json!({"name": "sleeper", "parameters": {"ms": 600000}}),
            )
            .await
            .expect("202"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &long {
        while get(&c, &first.base, id).await["status"] != "running" {
            assert!(Instant::now() < deadline, "long jobs never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let scheduled = submit(
        &c,
        &first.base,
        json!({"name": "noop", "metadata": {"kind": "Scheduled", "schedule_delay": 2}}),
    )
    .await
    .expect("202");
    // Clients submit as fast as they can; the process is killed mid-stream.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (c, base, acked) = (c.clone(), first.base.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..2000 {
                match submit(&c, &base, json!({"name": "noop"})).await {
                    Some(id) => acked.lock().expect("lock").push(id),
                    None => break, // the server is gone
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(0..200))).await;
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    for t in clients {
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        !acked.is_empty(),
        "some submissions were acknowledged before the kill"
    );

    let mut second = spawn(data.path(), plugins.path()).await;
    // The running jobs were requeued as new attempts; stop them so they end.
    for id in &long {
        let job = get(&c, &second.base, id).await;
        assert_eq!(job["attempts"][0]["outcome"], "interrupted", "{job}");
        let resp = c
            .post(format!("{}/api/v1/jobs/{id}", second.base))
            .header("Authorization", format!("Harbor-Secret {SECRET}"))
            .json(&json!({"action": "stop"}))
            .send()
            .await
            .expect("stop");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let all: Vec<&String> = acked
        .iter()
        .chain(&long)
        .chain(std::iter::once(&scheduled))
        .collect();
    for id in all {
        loop {
            let job = get(&c, &second.base, id).await;
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
    let _ = second.child.kill();
    let _ = second.child.wait();
}
