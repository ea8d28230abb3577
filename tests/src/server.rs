//! A real node for end-to-end tests: `Node::start` + `Node::serve` on
//! `127.0.0.1:0` with a temp data dir and the bundled plugins, and a small
//! client for the API.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmjobs::config::Config;
use wasmjobs::server::{Node, ServerError};
use wasmjobs::service::JobService;

use crate::install;

pub const SECRET: &str = "test-secret-0123456789";

/// A running node and a client for it.
#[derive(Debug)]
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub service: JobService,
    pub data_dir: PathBuf,
    pub plugins_dir: PathBuf,
    dirs: Option<(tempfile::TempDir, tempfile::TempDir)>,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

/// A test configuration: two workers, temp dirs, a known secret.
pub fn test_server_config(data_dir: PathBuf, plugins_dir: PathBuf) -> Config {
    let mut cfg = Config {
        data_dir,
        plugins_dir,
        workers: 2,
        secret: Some(SECRET.to_string()),
        shutdown_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    cfg.runtime = crate::test_config();
    cfg.runtime.max_concurrent_jobs = cfg.workers;
    cfg.runtime.cache_dir = Some(cfg.data_dir.join("cache"));
    cfg
}

impl TestServer {
    /// A node with these bundled plugins and the default test configuration.
    pub async fn start(plugins: &[&str]) -> Self {
        Self::start_with(plugins, |_| {}).await
    }

    /// A node with these bundled plugins, after `tweak` edits the configuration.
    pub async fn start_with(plugins: &[&str], tweak: impl FnOnce(&mut Config)) -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let plug = tempfile::tempdir().expect("plugins dir");
        install(plug.path(), plugins);
        let mut cfg = test_server_config(data.path().to_path_buf(), plug.path().to_path_buf());
        tweak(&mut cfg);
        Self::start_on((data, plug), cfg).await
    }

    /// Stop this node gracefully and start a new one on the same directories.
    pub async fn restart(self) -> Self {
        self.restart_timed().await.0
    }

    /// [`TestServer::restart`], and how long the new node took from start to
    /// ready (store opened and recovered, plugins loaded, workers started).
    pub async fn restart_timed(mut self) -> (Self, Duration) {
        self.stop_now().await;
        let dirs = self.dirs.take().expect("the directories of a live server");
        let config = self.config.clone();
        // Drop our handle on the old node so its store can close and release the
        // data dir's lock (it does so on a task, a moment later).
        drop(self);
        let started = Instant::now();
        loop {
            let attempt = Instant::now();
            match Node::start(config.clone()).await {
                Ok(node) => {
                    let took = attempt.elapsed();
                    return (Self::serve_node(dirs, config, node).await, took);
                }
                Err(e)
                    if started.elapsed() < Duration::from_secs(10)
                        && e.to_string().contains("lock") =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("node restarts: {e}"),
            }
        }
    }

    async fn start_on(dirs: (tempfile::TempDir, tempfile::TempDir), cfg: Config) -> Self {
        let node = Node::start(cfg.clone()).await.expect("node starts");
        Self::serve_node(dirs, cfg, node).await
    }

    async fn serve_node(
        dirs: (tempfile::TempDir, tempfile::TempDir),
        config: Config,
        node: Node,
    ) -> Self {
        let (data, plug) = dirs;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let service = node.service.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("{scheme}://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            service,
            data_dir: data.path().to_path_buf(),
            plugins_dir: plug.path().to_path_buf(),
            dirs: Some((data, plug)),
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the secret.
    pub fn authed(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("Authorization", format!("Harbor-Secret {SECRET}"))
    }

    /// Send and return status and JSON body (`Value::Null` if the body is not JSON).
    pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST /api/v1/jobs` with `{"job": job}`.
    pub async fn submit(&self, job: Value) -> (StatusCode, Value) {
        Self::send(
            self.authed(reqwest::Method::POST, "/api/v1/jobs")
                .json(&json!({ "job": job })),
        )
        .await
    }

    /// Submit and expect 202; returns the job id.
    pub async fn submit_ok(&self, job: Value) -> String {
        let (status, body) = self.submit(job).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["job"]["id"].as_str().expect("id").to_string()
    }

    pub async fn job(&self, id: &str) -> Value {
        let (status, body) =
            Self::send(self.authed(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["job"].clone()
    }

    pub async fn action(&self, id: &str, action: &str) -> (StatusCode, Value) {
        Self::send(
            self.authed(reqwest::Method::POST, &format!("/api/v1/jobs/{id}"))
                .json(&json!({ "action": action })),
        )
        .await
    }

    pub async fn log(&self, id: &str) -> (StatusCode, String) {
        let resp = self
            .authed(reqwest::Method::GET, &format!("/api/v1/jobs/{id}/log"))
            .send()
            .await
            .expect("request");
        (resp.status(), resp.text().await.expect("body"))
    }

    /// Poll the job until `done(job)` holds (at most `limit`).
    pub async fn wait_until(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                started.elapsed() < limit,
                "job {id} did not get there in {limit:?}: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Poll until the job has this status.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_until(id, Duration::from_secs(60), |j| j["status"] == status)
            .await
    }

    /// Stop the node gracefully and wait for it.
    pub async fn shutdown(mut self) {
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server ended cleanly");
        }
    }
}
