//! The plugins API: what is loaded (digest, file, status, capacity needs, retry
//! policy), and a dry run of a plugin's `validate`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiError, ErrorBody};
use super::jobs::parse_body;
use crate::runtime::{FileStatus, PluginInfo};
use crate::service::{JobService, ServiceError};

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct PluginView {
    /// The job name (the serving version's; `null` for a file that never loaded).
    name: Option<String>,
    file: String,
    /// Digest of the file as it is now.
    digest: Option<String>,
    /// Digest of the version serving jobs (differs from `digest` when the file is
    /// invalid and its last good version serves).
    serving_digest: Option<String>,
    size: Option<u64>,
    /// Unix seconds.
    loaded_at: Option<u64>,
    status: &'static str,
    error: Option<String>,
    #[serde(flatten)]
    #[schema(inline)]
    info: Option<PluginInfo>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct PluginList {
    plugins: Vec<PluginView>,
}

/// `GET /api/v1/plugins`: every file of the plugin directory.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, description = "The plugins", body = PluginList), (status = 401, description = "Missing or wrong secret", body = ErrorBody), (status = 503, description = "The request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn list(State(service): State<JobService>) -> Json<PluginList> {
    let plugins = service
        .registry()
        .list()
        .into_iter()
        .map(|e| {
            let (status, error) = match e.status {
                FileStatus::Ready => ("ready", None),
                FileStatus::Invalid { error } => ("invalid", Some(error)),
            };
            let serving = e.serving.as_ref();
            PluginView {
                name: serving.map(|p| p.name().to_string()),
                file: e.file.display().to_string(),
                digest: e.digest,
                serving_digest: serving.map(|p| p.digest().to_string()),
                size: serving.map(|p| p.size()),
                loaded_at: serving.and_then(|p| {
                    p.loaded_at()
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs())
                }),
                status,
                error,
                info: serving.map(|p| p.info().clone()),
            }
        })
        .collect();
    Json(PluginList { plugins })
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Valid {
    valid: bool,
}

/// `POST /api/v1/plugins/{name}/validate` with the parameters as the body: runs
/// the plugin's `validate` and enqueues nothing. 200, or 400 with its message.
#[utoipa::path(post, path = "/api/v1/plugins/{name}/validate", tag = "plugins",
    params(("name" = String, Path, description = "A job name")),
    request_body(content = Object, description = "The parameters to check"),
    responses(
        (status = 200, description = "The plugin accepts them", body = Valid),
        (status = 400, description = "Refused, with the plugin's message", body = ErrorBody),
        (status = 401, description = "Missing or wrong secret", body = ErrorBody),
        (status = 404, description = "No loaded plugin has this job name", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes", body = ErrorBody), (status = 503, description = "The request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn validate(
    State(service): State<JobService>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let params: serde_json::Value = parse_body(body)?;
    let Some(plugin) = service.registry().get(&name) else {
        return Err(ApiError::not_found(format!(
            "no loaded plugin provides job name {name:?}"
        )));
    };
    if !params.is_object() {
        return Err(ApiError::bad_request(
            "the body must be the parameters: a JSON object",
        ));
    }
    let answer = service
        .runtime()
        .validate(&plugin, &params.to_string())
        .await
        .map_err(ServiceError::from)?;
    match answer {
        Ok(()) => Ok((StatusCode::OK, Json(Valid { valid: true })).into_response()),
        Err(message) => Err(ApiError::from(ServiceError::Rejected { name, message })),
    }
}
