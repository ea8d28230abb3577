//! The real `wasmjobs serve` as a child process, for crash tests: started on a
//! free port of 127.0.0.1 (the address is read from its log), killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::SECRET;
use crate::wasmjobs_binary;

/// A running server process.
#[derive(Debug)]
pub struct ServerProcess {
    child: std::sync::Mutex<Child>,
    pub base: String,
    pub client: reqwest::Client,
}

impl ServerProcess {
    /// Start `wasmjobs serve` on the given directories and wait until it listens.
    pub fn spawn(data: &Path, plugins: &Path) -> Self {
        Self::spawn_binary(wasmjobs_binary(), data, plugins)
    }

    /// [`ServerProcess::spawn`] of the given build of the binary.
    pub fn spawn_binary(binary: &Path, data: &Path, plugins: &Path) -> Self {
        let mut child = Command::new(binary)
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
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!("the server did not start (exit: {status:?})");
            }
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self {
            child: std::sync::Mutex::new(child),
            base,
            client,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|p| p.into_inner()).id()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Submit a job; its id if the server acknowledged it (202).
    pub async fn submit(&self, job: Value) -> Option<String> {
        let resp = self
            .client
            .post(format!("{}/api/v1/jobs", self.base))
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

    /// A job's stats; panics if the job does not exist.
    pub async fn get(&self, id: &str) -> Value {
        let resp = self
            .client
            .get(format!("{}/api/v1/jobs/{id}", self.base))
            .header("Authorization", format!("Harbor-Secret {SECRET}"))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), StatusCode::OK, "job {id} must exist");
        resp.json::<Value>().await.expect("json")["job"].clone()
    }

    /// An action (`stop`, `cancel`, `retry`); the status code.
    pub async fn action(&self, id: &str, action: &str) -> StatusCode {
        self.client
            .post(format!("{}/api/v1/jobs/{id}", self.base))
            .header("Authorization", format!("Harbor-Secret {SECRET}"))
            .json(&json!({ "action": action }))
            .send()
            .await
            .map(|r| r.status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
