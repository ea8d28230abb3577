//! The API's one error type: every non-2xx response is
//! `{"code": <status>, "err": "<short message>", "description": "<detail>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::ServiceError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub err: &'static str,
    pub description: String,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// The HTTP status.
    code: u16,
    /// A short message.
    err: &'a str,
    /// What was wrong, naming the field or value.
    description: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, err: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            err,
            description: description.into(),
        }
    }

    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad request", description)
    }

    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found", description)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.status.as_u16(),
            err: self.err,
            description: &self.description,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let (status, err) = status_of(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "store failure");
        }
        ApiError::new(status, err, e.to_string())
    }
}

/// The status of a service error; a batch fails with the status of its bad job.
fn status_of(e: &ServiceError) -> (StatusCode, &'static str) {
    match e {
        ServiceError::UnknownJob(_)
        | ServiceError::Invalid { .. }
        | ServiceError::Rejected { .. } => (StatusCode::BAD_REQUEST, "invalid job"),
        // The plugin could not judge these parameters (it trapped or timed out in
        // `validate`): the request cannot be accepted as it is.
        ServiceError::PluginFailed(_) => (StatusCode::BAD_REQUEST, "invalid job"),
        ServiceError::InBatch { source, .. } => status_of(source),
        ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "job not found"),
        ServiceError::Duplicate { .. } => (StatusCode::CONFLICT, "duplicate unique job"),
        ServiceError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
        ServiceError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        ServiceError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store failure"),
    }
}
