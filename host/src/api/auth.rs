//! `Authorization: Harbor-Secret <secret>` on every route but the health and
//! stats endpoints, compared in constant time. Missing or wrong gives 401.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

const SCHEME: &str = "Harbor-Secret ";

/// The configured secret.
#[derive(Clone)]
pub struct Secret(pub Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

pub async fn require_secret(
    State(secret): State<Secret>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(SCHEME));
    match given {
        Some(given) if bool::from(given.as_bytes().ct_eq(secret.0.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => unauthorized("the secret is wrong"),
        None => unauthorized("missing `Authorization: Harbor-Secret <secret>` header"),
    }
}

fn unauthorized(description: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", description).into_response()
}
