//! The OpenAPI document of the whole API, served at `GET /api/v1/openapi.json`.
//! It is generated from the code: every route is registered through
//! `utoipa_axum::routes!` from the `#[utoipa::path]` annotation on its handler,
//! and every body's schema is derived from the type the handler serializes, so the
//! document and the router cannot drift apart.

use std::sync::Arc;

use axum::Json;
use axum::extract::Extension;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

/// The fixed part of the document: info, tags, the security scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasmjobs",
        description = "A job runner whose jobs are sandboxed WebAssembly components. \
                       Harbor's jobservice API, with Docker Trusted Registry's operations \
                       routes, Nomad's blocking queries and task events, and Mirantis \
                       Secure Registry's health and changefeed.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "jobs", description = "Submit jobs, read their stats and logs, act on them"),
        (name = "plugins", description = "The loaded job types"),
        (name = "operations", description = "Health, workers, crons, changefeed")
    ),
    modifiers(&HarborSecret)
)]
pub struct ApiDoc;

/// `Authorization: Harbor-Secret <secret>`.
struct HarborSecret;

impl utoipa::Modify for HarborSecret {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "harbor_secret",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Harbor-Secret <secret>`: the configured secret, or the one in \
                 `<data_dir>/secret`",
            ))),
        );
    }
}

/// The document, as JSON (computed once when the router is built).
#[derive(Debug, Clone)]
pub struct Document(pub Arc<serde_json::Value>);

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
pub(super) async fn document(Extension(doc): Extension<Document>) -> Json<serde_json::Value> {
    Json(doc.0.as_ref().clone())
}
