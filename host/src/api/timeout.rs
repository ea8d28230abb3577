//! Every request has `request_timeout` to complete (a blocking query gets its
//! longest `wait` on top); past it the client gets a 503 naming the limit, and the
//! handler is dropped. Store writes are atomic batches, so a dropped handler leaves
//! no half-written state (a submit cut off after its write may still have stored
//! the job: the 503 says the outcome is unknown, as any timeout does).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::service::JobService;

pub async fn request_timeout(
    State(service): State<JobService>,
    request: Request,
    next: Next,
) -> Response {
    let mut limit = service.config().request_timeout;
    let blocking = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("index=")));
    if blocking {
        limit += service.config().blocking_max_wait;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request did not complete within {} (request_timeout); its outcome is unknown",
                humantime::format_duration(limit)
            ),
        )
        .into_response(),
    }
}
