//! The REST API (Harbor's jobservice shapes): [`router`] builds the axum app,
//! tested with `tower::ServiceExt::oneshot` or served by [`crate::server`].

mod auth;
mod blocking;
mod changes;
mod error;
mod jobs;
mod openapi;
mod ops;
mod plugins;
mod timeout;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension};
use axum::http::StatusCode;
use axum::middleware;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::Secret;
pub use error::ApiError;

use crate::service::JobService;

/// The whole API. Every route needs the secret except `/_ping`,
/// `/api/v1/stats` and `/api/v1/openapi.json`.
pub fn router(service: JobService, secret: Arc<str>) -> Router {
    let (router, doc) = routes(secret).split_for_parts();
    let doc = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    let limit = service.config().max_body_bytes;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(openapi::Document(Arc::new(doc))))
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

/// Every route, registered with its OpenAPI description.
fn routes(secret: Arc<str>) -> OpenApiRouter<JobService> {
    let protected = OpenApiRouter::new()
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::submit_batch))
        .routes(routes!(jobs::get_job, jobs::action))
        .routes(routes!(jobs::log))
        .routes(routes!(jobs::executions))
        .routes(routes!(plugins::list))
        .routes(routes!(plugins::validate))
        .routes(routes!(ops::workers))
        .routes(routes!(ops::crons))
        .routes(routes!(ops::cluster_status))
        .routes(routes!(changes::list))
        .route_layer(middleware::from_fn_with_state(
            Secret(secret),
            auth::require_secret,
        ));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ops::ping))
        .routes(routes!(ops::stats))
        .routes(routes!(openapi::document))
        .merge(protected)
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
