//! The audit changefeed (MSR): `GET /api/v1/changes?change_id=&records=`.
//!
//! - `change_id=0`: from the beginning, `records` forward;
//! - `change_id=1`: the most recent records (`records` is taken as negative);
//! - a negative `records`: the records *preceding* `change_id`;
//! - `change_id` itself is excluded; records always come oldest to newest; ids
//!   are opaque strings to clients and only grow.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use crate::service::{JobService, ServiceError};
use crate::store::ChangeRecord;

const MAX_RECORDS: i64 = 1000;

/// Where to read the changefeed from, and how far.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ChangesQuery {
    /// 0: from the start; 1: the latest; else an id returned earlier.
    #[param(value_type = Option<u64>)]
    change_id: Option<String>,
    /// How many, -1000 to 1000 but not 0 (negative: the records before).
    #[param(value_type = Option<i64>, minimum = -1000, maximum = 1000)]
    records: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ChangeView {
    id: String,
    created_at: String,
    category: String,
    job_id: Option<String>,
    name: String,
    status: String,
    version: u64,
    plugin_digest: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ChangesPage {
    count: usize,
    records: Vec<ChangeView>,
}

fn view(c: ChangeRecord) -> ChangeView {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(c.created_at);
    ChangeView {
        id: c.id.to_string(),
        created_at: humantime::format_rfc3339_millis(at).to_string(),
        category: c.category.into_owned(),
        job_id: c.job_id.map(|j| j.to_string()),
        name: c.name,
        status: c.status.into_owned(),
        version: c.version,
        plugin_digest: c.plugin_digest,
    }
}

/// The audit changefeed (MSR).
#[utoipa::path(get, path = "/api/v1/changes", tag = "operations", params(ChangesQuery),
    responses((status = 200, description = "Records, oldest first", body = ChangesPage), (status = 400, description = "Bad input; the description names the field", body = ErrorBody), (status = 404, description = "No such change id", body = ErrorBody), (status = 401, description = "Missing or wrong secret", body = ErrorBody), (status = 503, description = "The request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn list(
    State(service): State<JobService>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Json<ChangesPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (change_id, records) = parse_position(q.change_id.as_deref(), q.records.as_deref())?;
    let store = service.store();
    if change_id > 1
        && !store
            .change_exists(change_id)
            .await
            .map_err(ServiceError::from)?
    {
        return Err(ApiError::not_found(format!(
            "no change {change_id}: it was not issued by this server"
        )));
    }
    let limit = records.unsigned_abs() as usize;
    let found = match (change_id, records) {
        (1, _) => store.change_list_before(u64::MAX, limit).await,
        (0, r) if r < 0 => Ok(Vec::new()),
        (id, r) if r < 0 => store.change_list_before(id, limit).await,
        (id, _) => store.change_list(id, limit).await,
    }
    .map_err(ServiceError::from)?;
    let records: Vec<ChangeView> = found.into_iter().map(view).collect();
    Ok(Json(ChangesPage {
        count: records.len(),
        records,
    }))
}

/// The `change_id` and `records` of a changefeed query: an id (0 and 1 are the
/// start and the end) and a non-zero count of at most [`MAX_RECORDS`] either way.
fn parse_position(change_id: Option<&str>, records: Option<&str>) -> Result<(u64, i64), ApiError> {
    let change_id = match change_id {
        None => 0,
        Some(c) => c.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("change_id {c:?} was not issued by this server"))
        })?,
    };
    let records = match records {
        None => 100,
        Some(r) => r
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("records {r:?} is not an integer")))?,
    };
    if records == 0 || records.unsigned_abs() > MAX_RECORDS.unsigned_abs() {
        return Err(ApiError::bad_request(format!(
            "records must be between -{MAX_RECORDS} and {MAX_RECORDS} and not 0, not {records}"
        )));
    }
    Ok((change_id, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Property: any `change_id`/`records` strings give a position or a 400, never
    /// a panic; accepted counts are within the limit and not 0.
    #[test]
    fn random_positions_never_panic() {
        let mut rng = fastrand::Rng::with_seed(5);
        let atoms = [
            "",
            "0",
            "1",
            "-",
            "-1",
            "1000",
            "-1000",
            "1001",
            "9",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775808",
            "+5",
            " ",
            "x",
            "\u{0}",
            "1e3",
            "٣",
        ];
        for _ in 0..20_000 {
            let mut pick = || -> Option<String> {
                rng.bool().then(|| {
                    (0..rng.usize(1..4))
                        .map(|_| atoms[rng.usize(..atoms.len())])
                        .collect()
                })
            };
            let (id, records) = (pick(), pick());
            if let Ok((_, n)) = parse_position(id.as_deref(), records.as_deref()) {
                assert!(
                    n != 0 && n.unsigned_abs() <= MAX_RECORDS.unsigned_abs(),
                    "{id:?} {records:?} -> {n}"
                );
            }
        }
        assert_eq!(parse_position(None, None).ok(), Some((0, 100)));
        assert_eq!(parse_position(Some("1"), Some("-2")).ok(), Some((1, -2)));
        assert!(parse_position(Some("x"), None).is_err());
        assert!(parse_position(None, Some("0")).is_err());
    }
}
