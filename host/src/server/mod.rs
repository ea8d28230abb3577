//! Starting and stopping a node: open the store under the data dir, load and
//! watch the plugin directory, recover jobs interrupted by the last stop, start
//! the workers and the scheduler, serve the API (HTTP, or HTTPS with the
//! configured certificate) until `shutdown` resolves, then stop gracefully:
//! stop claiming, give running jobs `shutdown_timeout` to finish (the rest are
//! requeued at the next start), flush the store.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum_server::accept::DefaultAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod limits;

use limits::ConnectionLimit;

use crate::api;
use crate::config::Config;
use crate::logs::JobLogs;
use crate::runtime::{PluginRegistry, PluginWatcher, Runtime};
use crate::service::JobService;
use crate::store::{SledStore, Store};

/// Why a node could not start (or stopped badly).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot prepare {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] crate::error::ConfigError),
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot watch the plugin directory: {0}")]
    Watch(#[from] notify::Error),
    #[error("TLS setup failed: {0}")]
    Tls(std::io::Error),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// A started node: the service and what runs it.
#[derive(Debug)]
pub struct Node {
    pub service: JobService,
    pub secret: Arc<str>,
    _watcher: PluginWatcher,
    workers: Vec<JoinHandle<()>>,
    /// Scheduler, hook dispatcher, log sweeper, plugin audit.
    background: Vec<JoinHandle<()>>,
}

fn dir(path: &Path) -> Result<(), ServerError> {
    std::fs::create_dir_all(path).map_err(|source| ServerError::Dir {
        path: path.to_path_buf(),
        source,
    })
}

impl Node {
    /// Open everything and start the workers (the API is served by [`Node::serve`]).
    pub async fn start(config: Config) -> Result<Node, ServerError> {
        dir(&config.data_dir)?;
        dir(&config.plugins_dir)?;
        let secret = resolve_secret(&config)?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.data_dir.join("store"))?);
        let logs =
            JobLogs::open(&config.data_dir, config.job_loggers.clone()).map_err(|source| {
                ServerError::Dir {
                    path: config.data_dir.join("logs"),
                    source,
                }
            })?;
        let runtime = Runtime::new(config.runtime.clone())?;
        let registry = PluginRegistry::new(runtime, &config.plugins_dir).map_err(|source| {
            ServerError::Dir {
                path: config.plugins_dir.clone(),
                source,
            }
        })?;
        let service = JobService::new(config, store, registry.clone(), logs);
        // The audit subscribes before the first scan, so initial loads are recorded.
        let mut background = vec![service.start_plugin_audit()];
        // Watch first, then scan once: a file written in between is seen by both,
        // and loading the same digest twice is a no-op.
        let watcher = PluginWatcher::start(registry.clone())?;
        registry.scan().await.map_err(|source| ServerError::Dir {
            path: service.config().plugins_dir.clone(),
            source,
        })?;
        service.recover().await?;
        let workers = service.start_workers();
        background.push(service.start_scheduler());
        background.push(service.start_hooks());
        background.push(service.start_heartbeat());
        background.extend(service.start_sweeper());
        tracing::info!(
            node = service.node_id(),
            workers = workers.len(),
            "node started"
        );
        Ok(Node {
            service,
            secret,
            _watcher: watcher,
            workers,
            background,
        })
    }

    /// Serve the API on `listener` until `shutdown` resolves, then stop the node.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let app = api::router(self.service.clone(), self.secret.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let service = self.service.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new jobs are claimed");
            service.begin_shutdown();
            let _ = stop_tx.send(());
        });
        let stopped = async move {
            let _ = stop_rx.await;
        };
        let config = self.service.config();
        let served = serve_api(
            listener,
            app,
            config.tls.clone(),
            config.max_connections,
            config.shutdown_timeout,
            stopped,
        )
        .await;
        self.stop().await;
        served
    }

    /// Stop claiming, wait for running attempts (up to `shutdown_timeout`), flush.
    pub async fn stop(self) {
        self.service.begin_shutdown();
        let grace = self.service.config().shutdown_timeout;
        let mut workers = std::collections::VecDeque::from(self.workers);
        // Finished workers leave the queue (a JoinHandle must not be awaited twice).
        let waited = tokio::time::timeout(grace, async {
            while let Some(w) = workers.front_mut() {
                let _ = w.await;
                workers.pop_front();
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                running = self.service.running_count(),
                "jobs still running after the shutdown timeout are interrupted; they run again at the next start"
            );
        }
        for task in workers.iter().chain(&self.background) {
            task.abort();
        }
        // Wait until the aborted tasks are gone, so that nothing of this node
        // touches the store after `stop` returns.
        for task in workers.into_iter().chain(self.background) {
            let _ = task.await;
        }
        if let Err(e) = self.service.store().flush().await {
            tracing::error!(error = %e, "cannot flush the store at shutdown");
        }
        tracing::info!("stopped");
    }
}

/// Serve `app` over HTTP, or HTTPS with `tls` (certificate and key files), with
/// the connection limits of [`limits`], until `stopped` resolves; then connections
/// get `grace` to finish their requests (a blocking query may wait minutes).
async fn serve_api(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    max_connections: usize,
    grace: std::time::Duration,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        stopped.await;
        h.graceful_shutdown(Some(grace));
    });
    let std_listener = listener.into_std().map_err(ServerError::Serve)?;
    let server = axum_server::from_tcp(std_listener)
        .map_err(ServerError::Serve)?
        .handle(handle);
    let limit = ConnectionLimit::new(DefaultAcceptor::new(), max_connections);
    let service = app.into_make_service();
    let served = match tls {
        None => {
            let mut server = server.acceptor(limit);
            http_limits(server.http_builder());
            server.serve(service).await
        }
        Some((cert, key)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(ServerError::Tls)?;
            let mut server = server.acceptor(RustlsAcceptor::new(tls).acceptor(limit));
            http_limits(server.http_builder());
            server.serve(service).await
        }
    };
    served.map_err(ServerError::Serve)
}

/// A request's headers must arrive within [`limits::HEADER_TIMEOUT`].
fn http_limits(builder: &mut hyper_util::server::conn::auto::Builder<TokioExecutor>) {
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits::HEADER_TIMEOUT);
}

/// The configured secret, or the one kept in `<data_dir>/secret` (created with a
/// random value on first start, readable by the owner only), so that a server
/// never runs open by accident.
fn resolve_secret(config: &Config) -> Result<Arc<str>, ServerError> {
    if let Some(s) = &config.secret {
        return Ok(Arc::from(s.as_str()));
    }
    let path = config.data_dir.join("secret");
    let io = |source| ServerError::Dir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(Arc::from(s.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        f.write_all(secret.as_bytes()).map_err(io)?;
    }
    tracing::warn!(path = %path.display(), "no secret configured: generated one (send it as `Authorization: Harbor-Secret <secret>`)");
    Ok(Arc::from(secret))
}
