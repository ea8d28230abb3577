//! Health and worker-pool stats.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiError, ErrorBody};
use crate::runtime::FileStatus;
use crate::service::{JobService, ServiceError};

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Ping {
    healthy: bool,
    error: String,
}

/// `GET /_ping` (no auth): 200 when the store can be written and flushed, 503
/// with the reason if not.
/// Health of this node: 200 while the store can be written, else 503.
#[utoipa::path(get, path = "/_ping", tag = "operations",
    responses(
        (status = 200, description = "Healthy", body = Ping),
        (status = 503, description = "The store cannot be written", body = Ping)))]
pub(super) async fn ping(State(service): State<JobService>) -> Response {
    match service.store().probe().await {
        Ok(()) => Json(Ping {
            healthy: true,
            error: String::new(),
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Ping {
                healthy: false,
                error: format!("the store cannot be written: {e}"),
            }),
        )
            .into_response(),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct PoolStats {
    worker_pool_id: String,
    started_at: u64,
    heartbeat_at: u64,
    job_names: Vec<String>,
    concurrency: u32,
    status: &'static str,
}

/// `GET /api/v1/stats` (no auth): Harbor's worker pool stats.
/// The worker pool of this node (Harbor's stats); no secret needed.
#[utoipa::path(get, path = "/api/v1/stats", tag = "operations",
    responses((status = 200, description = "The pool", body = Vec<PoolStats>)))]
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

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct WorkerView {
    id: String,
    status: &'static str,
    capacity_map: std::collections::BTreeMap<String, u32>,
    in_use: std::collections::BTreeMap<String, u32>,
    concurrency: u32,
    running: u32,
    heartbeat_expiration: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Workers {
    workers: Vec<WorkerView>,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// `GET /api/v1/workers` (DTR): every node that heartbeats into the store.
/// Every node's workers, capacity maps and heartbeats (DTR).
#[utoipa::path(get, path = "/api/v1/workers", tag = "operations",
    responses((status = 200, description = "The workers", body = Workers), (status = 401, description = "Missing or wrong secret", body = ErrorBody), (status = 503, description = "The request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn workers(State(service): State<JobService>) -> Result<Json<Workers>, ApiError> {
    let now = crate::job::now_ms();
    let list = service
        .store()
        .worker_list()
        .await
        .map_err(ServiceError::from)?;
    Ok(Json(Workers {
        workers: list
            .into_iter()
            .map(|w| WorkerView {
                status: if w.heartbeat_expiration > now {
                    "running"
                } else {
                    "unreachable"
                },
                heartbeat_expiration: rfc3339(w.heartbeat_expiration),
                id: w.id,
                capacity_map: w.capacity_map,
                in_use: w.in_use,
                concurrency: w.concurrency,
                running: w.running,
            })
            .collect(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CronView<'a> {
    id: uuid::Uuid,
    name: &'a str,
    schedule: Option<&'a str>,
    retries: u32,
    capacity_map: &'a std::collections::BTreeMap<String, u32>,
    #[schema(value_type = Object)]
    parameters: &'a serde_json::value::RawValue,
    deadline: Option<String>,
    stop_timeout: Option<String>,
    next_run: Option<String>,
}

/// `GET /api/v1/crons` (DTR): the active periodic templates.
/// The periodic jobs and their next run (DTR).
#[utoipa::path(get, path = "/api/v1/crons", tag = "operations",
    responses((status = 200, description = "The periodic jobs", body = Crons), (status = 401, description = "Missing or wrong secret", body = ErrorBody), (status = 503, description = "The request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn crons(State(service): State<JobService>) -> Result<Response, ApiError> {
    let templates = service
        .store()
        .job_templates(10_000)
        .await
        .map_err(ServiceError::from)?;
    let text = |ms: Option<u64>| {
        ms.map(|ms| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string())
    };
    let crons: Vec<CronView> = templates
        .iter()
        .map(|t| CronView {
            id: t.id,
            name: &t.name,
            schedule: t.cron_spec.as_deref(),
            retries: t.retries_total,
            capacity_map: &t.capacity_map,
            parameters: serde_json::from_str(&t.params)
                .unwrap_or(serde_json::value::RawValue::NULL),
            deadline: text(t.deadline_ms),
            stop_timeout: text(t.stop_timeout_ms),
            next_run: t.run_at.map(rfc3339),
        })
        .collect();
    Ok(Json(Crons { crons }).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Crons<'a> {
    crons: Vec<CronView<'a>>,
}

/// MSR's cluster status.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ClusterStatus {
    current_issues: Vec<Issue>,
    /// Node id -> `OK`, `heartbeat expired` or `store unwritable`.
    replica_health: std::collections::BTreeMap<String, String>,
    node_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Issue {
    critical: bool,
    description: String,
}

/// `GET /api/v1/meta/cluster_status` (MSR): current issues and each node's health.
#[utoipa::path(get, path = "/api/v1/meta/cluster_status", tag = "operations",
    responses((status = 200, description = "Current issues and each node's health", body = ClusterStatus), (status = 401, description = "Missing or wrong secret", body = ErrorBody), (status = 503, description = "The request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn cluster_status(
    State(service): State<JobService>,
) -> Result<Response, ApiError> {
    let mut issues = Vec::new();
    let mut replica_health = std::collections::BTreeMap::new();
    let store_ok = service.store().probe().await;
    if let Err(e) = &store_ok {
        issues.push(Issue {
            critical: true,
            description: format!("the store cannot be written: {e}"),
        });
    }
    for entry in service.registry().list() {
        if let FileStatus::Invalid { error } = entry.status {
            issues.push(Issue {
                critical: false,
                description: format!("invalid plugin: {error}"),
            });
        }
    }
    let dropped = service.dropped_hooks();
    if dropped > 0 {
        issues.push(Issue {
            critical: false,
            description: format!("{dropped} status hooks were dropped after retrying"),
        });
    }
    let now = crate::job::now_ms();
    for w in service
        .store()
        .worker_list()
        .await
        .map_err(ServiceError::from)?
    {
        let health = if w.heartbeat_expiration <= now {
            issues.push(Issue {
                critical: true,
                description: format!(
                    "worker {} is past its heartbeat ({})",
                    w.id,
                    rfc3339(w.heartbeat_expiration)
                ),
            });
            "heartbeat expired".to_string()
        } else if w.id == service.node_id() && store_ok.is_err() {
            "store unwritable".to_string()
        } else {
            "OK".to_string()
        };
        replica_health.insert(w.id, health);
    }
    replica_health
        .entry(service.node_id().to_string())
        .or_insert_with(|| {
            if store_ok.is_ok() {
                "OK".into()
            } else {
                "store unwritable".into()
            }
        });
    Ok(Json(ClusterStatus {
        current_issues: issues,
        replica_health,
        node_id: service.node_id().to_string(),
    })
    .into_response())
}
