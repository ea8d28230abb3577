//! The REST API (Harbor's jobservice shapes): [`router`] builds the axum app,
//! tested with `tower::ServiceExt::oneshot` or served by [`crate::server`].

mod auth;
mod blocking;
mod changes;
mod error;
mod jobs;
mod ops;
mod plugins;
mod timeout;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};

pub use auth::Secret;
pub use error::ApiError;

use crate::service::JobService;

/// The whole API. Every route needs the secret except `/_ping` and `/api/v1/stats`.
pub fn router(service: JobService, secret: Arc<str>) -> Router {
    let limit = service.config().max_body_bytes;
    let protected = Router::new()
        .route("/api/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/api/v1/jobs/batch", post(jobs::submit_batch))
        .route("/api/v1/jobs/{id}", get(jobs::get_job).post(jobs::action))
        .route("/api/v1/jobs/{id}/log", get(jobs::log))
        .route("/api/v1/jobs/{id}/executions", get(jobs::executions))
        .route("/api/v1/plugins", get(plugins::list))
        .route("/api/v1/workers", get(ops::workers))
        .route("/api/v1/crons", get(ops::crons))
        .route("/api/v1/changes", get(changes::list))
        .route("/api/v1/meta/cluster_status", get(ops::cluster_status))
        .route("/api/v1/plugins/{name}/validate", post(plugins::validate))
        .route_layer(middleware::from_fn_with_state(
            Secret(secret),
            auth::require_secret,
        ));
    Router::new()
        .route("/_ping", get(ops::ping))
        .route("/api/v1/stats", get(ops::stats))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            service.clone(),
            blocking::index_header,
        ))
        .layer(middleware::from_fn_with_state(
            service.clone(),
            timeout::request_timeout,
        ))
        .with_state(service)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        "this route does not take that method",
    )
}
