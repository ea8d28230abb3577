//! Health and worker-pool stats.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::runtime::FileStatus;
use crate::service::JobService;

#[derive(Serialize)]
pub(super) struct Ping {
    healthy: bool,
    error: String,
}

/// `GET /_ping` (no auth): 200 when the store answers, 503 with the reason if not.
pub(super) async fn ping(State(service): State<JobService>) -> Response {
    match service.store().job_next_due().await {
        Ok(_) => Json(Ping {
            healthy: true,
            error: String::new(),
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Ping {
                healthy: false,
                error: format!("the store does not answer: {e}"),
            }),
        )
            .into_response(),
    }
}

#[derive(Serialize)]
pub(super) struct PoolStats {
    worker_pool_id: String,
    started_at: u64,
    heartbeat_at: u64,
    job_names: Vec<String>,
    concurrency: u32,
    status: &'static str,
}

/// `GET /api/v1/stats` (no auth): Harbor's worker pool stats.
pub(super) async fn stats(State(service): State<JobService>) -> Json<Vec<PoolStats>> {
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let mut job_names: Vec<String> = service
        .registry()
        .list()
        .into_iter()
        .filter(|e| e.status == FileStatus::Ready)
        .filter_map(|e| e.serving.map(|p| p.name().to_string()))
        .collect();
    job_names.sort();
    Json(vec![PoolStats {
        worker_pool_id: service.node_id().to_string(),
        started_at: secs(service.started_at()),
        heartbeat_at: secs(std::time::SystemTime::now()),
        job_names,
        concurrency: service.config().workers,
        status: "healthy",
    }])
}
