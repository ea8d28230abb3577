//! Harbor's job routes: submit (one or a batch), stats, actions, log.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::blocking;
use super::error::{ApiError, ErrorBody};
use super::view::{JobEnvelope, JobView, JobsEnvelope, VIEW_BYTES, sized_json};
use crate::job::{Command, Kind, Status, now_ms};
use crate::service::{JobRequest, JobService, ServiceError};
use crate::store::JobFilter;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitBody {
    job: JobBody,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    jobs: Vec<JobBody>,
}

/// A job to submit (Harbor's job request).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobBody {
    /// The job name of a loaded plugin.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    name: String,
    /// The job's parameters: a JSON object, checked by the plugin's `validate`.
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: serde_json::Value,
    /// An http(s) URL POSTed on every status change and check-in (loopback and
    /// link-local addresses are refused unless the operator allows them).
    #[schema(
        pattern = "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$",
        max_length = 2048
    )]
    status_hook: Option<String>,
    #[serde(default)]
    metadata: Metadata,
}

/// How and when the job runs.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Metadata {
    kind: Option<Kind>,
    schedule_delay: Option<u64>,
    cron_spec: Option<String>,
    #[serde(default)]
    unique: bool,
    #[serde(default)]
    priority: i32,
    capacity_map: Option<BTreeMap<String, u32>>,
    /// Wall-clock limit of one attempt: `"30s"`, or whole seconds.
    deadline: Option<DurationField>,
    /// Time to honour stop/cancel before a kill: `"10s"`, or whole seconds.
    stop_timeout: Option<DurationField>,
}

/// A duration as text (`"30s"`, `"1m 30s"`) or whole seconds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum DurationField {
    Seconds(u64),
    Text(String),
}

impl DurationField {
    fn resolve(self, field: &str) -> Result<Duration, ApiError> {
        match self {
            DurationField::Seconds(s) => Ok(Duration::from_secs(s)),
            DurationField::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                ApiError::bad_request(format!(
                    "job.metadata.{field}: {t:?} is not a duration like \"30s\" ({e})"
                ))
            }),
        }
    }
}

impl JobBody {
    fn into_request(self) -> Result<JobRequest, ApiError> {
        let m = self.metadata;
        Ok(JobRequest {
            name: self.name,
            params: self.parameters,
            status_hook: self.status_hook,
            kind: m.kind.unwrap_or(Kind::Generic),
            schedule_delay: m.schedule_delay,
            cron_spec: m.cron_spec,
            unique: m.unique,
            priority: m.priority,
            capacity_map: m.capacity_map,
            deadline: m.deadline.map(|d| d.resolve("deadline")).transpose()?,
            stop_timeout: m
                .stop_timeout
                .map(|d| d.resolve("stop_timeout"))
                .transpose()?,
            upstream: None,
        })
    }
}

/// Parse a JSON body, naming the offending field in the error.
pub(super) fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        let err = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body too large"
        } else {
            "bad request"
        };
        ApiError::new(status, err, rejection.body_text())
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." || path == "?" {
            ApiError::bad_request(format!("malformed JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id)
        .map_err(|_| ApiError::not_found(format!("no job {id:?}: job ids are UUIDs")))
}

/// Submit a job: 202 once it is durable.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = SubmitBody,
    responses(
        (status = 202, description = "Accepted and stored", body = JobEnvelope),
        (status = 400, description = "Bad input; the description names the field", body = ErrorBody), (status = 401, description = "Missing or wrong secret", body = ErrorBody),
        (status = 409, description = "A unique job with these parameters is not finished", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes", body = ErrorBody), (status = 503, description = "Shutting down, or the request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn submit(
    State(service): State<JobService>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: SubmitBody = parse_body(body)?;
    let job = service.submit(body.job.into_request()?).await?;
    let view = JobEnvelope {
        job: JobView::of(&job, &[]),
    };
    Ok(sized_json(StatusCode::ACCEPTED, &view, VIEW_BYTES))
}

/// Submit many jobs at once, all or nothing, with one durable write.
#[utoipa::path(post, path = "/api/v1/jobs/batch", tag = "jobs", request_body = BatchBody,
    responses(
        (status = 202, description = "All accepted and stored", body = JobsEnvelope),
        (status = 400, description = "Bad input; the description names the field", body = ErrorBody), (status = 401, description = "Missing or wrong secret", body = ErrorBody),
        (status = 409, description = "A unique job with these parameters is not finished", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes", body = ErrorBody), (status = 503, description = "Shutting down, or the request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn submit_batch(
    State(service): State<JobService>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: BatchBody = parse_body(body)?;
    let mut requests = Vec::with_capacity(body.jobs.len());
    for (i, j) in body.jobs.into_iter().enumerate() {
        let r = j.into_request().map_err(|e| ApiError {
            description: format!("jobs[{i}]: {}", e.description),
            ..e
        })?;
        requests.push(r);
    }
    let jobs = service.submit_batch(requests).await?;
    let view = JobsEnvelope {
        jobs: jobs.iter().map(|j| JobView::of(j, &[])).collect(),
    };
    Ok(sized_json(
        StatusCode::ACCEPTED,
        &view,
        VIEW_BYTES * jobs.len(),
    ))
}

/// A blocking query (Nomad): answer once the data's index passes `index`, or
/// after `wait`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct BlockingQuery {
    /// Wait until the job's modify index is above this (from `X-Wasmjobs-Index`).
    #[param(value_type = Option<u64>)]
    index: Option<String>,
    /// Longest wait, `30s`-style or seconds, at most `blocking_max_wait` (5m by
    /// default, also the default wait).
    #[param(pattern = "^([0-9]{1,2}s|[0-9]{1,3}ms|[0-9]{1,2})$")]
    wait: Option<String>,
}

/// `GET /api/v1/jobs/{id}`, a blocking query with `?index=&wait=`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id"), BlockingQuery),
    responses(
        (status = 200, description = "The job's stats", body = JobEnvelope,
            headers(("x-wasmjobs-index" = u64, description = "Index for a blocking query"))),
        (status = 400, description = "Bad input; the description names the field", body = ErrorBody), (status = 401, description = "Missing or wrong secret", body = ErrorBody), (status = 404, description = "No such job (job ids are UUIDs)", body = ErrorBody), (status = 429, description = "Too many blocking queries waiting (max_blocking_waiters)", body = ErrorBody), (status = 503, description = "Shutting down, or the request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn get_job(
    State(service): State<JobService>,
    Path(id): Path<String>,
    query: Result<Query<BlockingQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let blocking = blocking::parse(
        q.index.as_deref(),
        q.wait.as_deref(),
        service.config().blocking_max_wait,
    )?;
    let job = blocking::wait_for(&service, blocking, || async {
        let job = service.get(id).await?;
        let index = job.modify_index;
        Ok((job, index))
    })
    .await?;
    let executions = if job.has_executions {
        service
            .store()
            .job_executions_latest(id, LATEST_EXECUTIONS)
            .await
            .map_err(ServiceError::from)?
    } else {
        Vec::new()
    };
    let index = job
        .modify_index
        .max(*service.store().watch_index().borrow());
    let body = Json(JobEnvelope {
        job: JobView::of(&job, &executions),
    });
    Ok(([(blocking::INDEX_HEADER, index.to_string())], body).into_response())
}

/// Filters and paging of the jobs list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    name: Option<String>,
    #[param(value_type = Option<Kind>)]
    kind: Option<String>,
    #[param(value_type = Option<uuid::Uuid>)]
    upstream_job_id: Option<String>,
    /// 1 to 1000, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^([0-9a-fA-F]{16})?$")]
    cursor: Option<String>,
    /// Blocking query: wait until the store's index is above this.
    #[param(value_type = Option<u64>)]
    index: Option<String>,
    /// Longest wait, `30s`-style or seconds, at most `blocking_max_wait`.
    #[param(pattern = "^([0-9]{1,2}s|[0-9]{1,3}ms|[0-9]{1,2})$")]
    wait: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct JobsPage<'a> {
    jobs: Vec<JobView<'a>>,
    next_cursor: Option<String>,
}

/// Jobs looked at per list request (filters may match few of them).
const LIST_SCAN: usize = 10_000;

/// `GET /api/v1/jobs?status=&name=&kind=&upstream_job_id=&limit=&cursor=`: jobs in
/// creation order; the cursor stays valid while jobs are added (they go to the
/// end). A blocking query (`index`, `wait`) waits for any change in the store.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobsPage),
        (status = 400, description = "Bad input; the description names the field", body = ErrorBody), (status = 401, description = "Missing or wrong secret", body = ErrorBody), (status = 429, description = "Too many blocking queries waiting (max_blocking_waiters)", body = ErrorBody), (status = 503, description = "Shutting down, or the request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn list(
    State(service): State<JobService>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = JobFilter {
        status: q
            .status
            .as_deref()
            .map(|s| {
                Status::parse(s).ok_or_else(|| {
                    ApiError::bad_request(format!("status {s:?} is not a job status"))
                })
            })
            .transpose()?,
        name: q.name.clone(),
        kind: q
            .kind
            .as_deref()
            .map(|k| {
                Kind::parse(k).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "kind {k:?} is not Generic, Scheduled or Periodic"
                    ))
                })
            })
            .transpose()?,
        upstream: q
            .upstream_job_id
            .as_deref()
            .map(|u| {
                Uuid::parse_str(u).map_err(|_| {
                    ApiError::bad_request(format!("upstream_job_id {u:?} is not a job id"))
                })
            })
            .transpose()?,
    };
    let limit = parse_limit(q.limit.as_deref())?;
    let after = parse_cursor(q.cursor.as_deref())?;
    let blocking = blocking::parse(
        q.index.as_deref(),
        q.wait.as_deref(),
        service.config().blocking_max_wait,
    )?;
    let (jobs, next) = blocking::wait_for(&service, blocking, || async {
        let index = *service.store().watch_index().borrow();
        let page = service
            .store()
            .job_list(&filter, after, limit, LIST_SCAN)
            .await
            .map_err(ServiceError::from)?;
        Ok((page, index))
    })
    .await?;
    let body = JobsPage {
        jobs: jobs.iter().map(|j| JobView::of(j, &[])).collect(),
        next_cursor: next.map(|n| format!("{n:016x}")),
    };
    Ok(Json(body).into_response())
}

fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit {l:?} must be a number from 1 to 1000"
            ))),
        },
    }
}

fn parse_cursor(cursor: Option<&str>) -> Result<Option<u64>, ApiError> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) if c.len() == 16 => u64::from_str_radix(c, 16).map(Some).map_err(|_| {
            ApiError::bad_request(format!("cursor {c:?} was not issued by this server"))
        }),
        Some(c) => Err(ApiError::bad_request(format!(
            "cursor {c:?} was not issued by this server"
        ))),
    }
}

/// Executions listed in a job's stats (all of them: the executions route).
const LATEST_EXECUTIONS: usize = 100;

/// Paging of a list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// 1 to 1000, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^([0-9a-fA-F]{16})?$")]
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ExecutionsPage<'a> {
    executions: Vec<JobView<'a>>,
    next_cursor: Option<String>,
}

/// `GET /api/v1/jobs/{id}/executions?limit=&cursor=`: sub-jobs and periodic
/// executions in launch order; `next_cursor` pages on (stable while new ones are
/// added, which go to the end).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/executions", tag = "jobs",
    params(("id" = String, Path, description = "The upstream job's id"), PageQuery),
    responses(
        (status = 200, description = "A page of executions", body = ExecutionsPage),
        (status = 400, description = "Bad input; the description names the field", body = ErrorBody), (status = 401, description = "Missing or wrong secret", body = ErrorBody), (status = 404, description = "No such job (job ids are UUIDs)", body = ErrorBody), (status = 503, description = "Shutting down, or the request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn executions(
    State(service): State<JobService>,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = parse_limit(q.limit.as_deref())?;
    let after = parse_cursor(q.cursor.as_deref())?;
    let page = service.executions(id, after, limit).await?;
    let next_cursor = (page.len() == limit)
        .then(|| page.last().map(|(pos, _)| format!("{pos:016x}")))
        .flatten();
    let body = ExecutionsPage {
        executions: page.iter().map(|(_, j)| JobView::of(j, &[])).collect(),
        next_cursor,
    };
    Ok(Json(body).into_response())
}

/// An operator action on a job.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionBody {
    /// `stop`, `cancel` or `retry`.
    #[schema(pattern = "^(stop|cancel|retry)$")]
    action: String,
}

/// Stop or cancel a job, or retry a failed one (Harbor's actions).
#[utoipa::path(post, path = "/api/v1/jobs/{id}", tag = "jobs", request_body = ActionBody,
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Bad input; the description names the field", body = ErrorBody), (status = 401, description = "Missing or wrong secret", body = ErrorBody), (status = 404, description = "No such job (job ids are UUIDs)", body = ErrorBody),
        (status = 409, description = "Not possible in the job's status", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes", body = ErrorBody),
        (status = 503, description = "Shutting down, or the request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn action(
    State(service): State<JobService>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let body: ActionBody = parse_body(body)?;
    match body.action.as_str() {
        "stop" | "cancel" => {
            let command = if body.action == "stop" {
                Command::Stop
            } else {
                Command::Cancel
            };
            let effect = service.command(id, command).await?;
            tracing::info!(job = %id, action = %body.action, ?effect, "operator action");
        }
        "retry" => {
            service.retry(id).await?;
        }
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown action",
                format!("action {other:?} is not one of stop, cancel, retry"),
            ));
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/jobs/{id}/log`: the job's log lines merged with its attempts'
/// start and end; empty before the job started; 410 once the sweeper removed it.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/log", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The log, one line per event (empty before the job started)", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or wrong secret", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 410, description = "The log sweeper removed this job's log", body = ErrorBody),
        (status = 503, description = "Shutting down, or the request took longer than request_timeout", body = ErrorBody)),
    security(("harbor_secret" = [])))]
pub(super) async fn log(
    State(service): State<JobService>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let job = service.get(id).await?;
    // A job that has not started exists and has an empty log (a client tailing it
    // just sees nothing yet), not a missing one.
    if job.attempts.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "").into_response());
    }
    let file = service.logs().read(id).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "log unreadable",
            format!("cannot read the log of job {id}: {e}"),
        )
    })?;
    if file.is_none()
        && let Some(keep) = service.logs().retention()
        && job
            .finished_at
            .is_some_and(|t| now_ms().saturating_sub(t) > keep.as_millis() as u64)
    {
        return Err(ApiError::new(
            StatusCode::GONE,
            "log removed",
            format!(
                "the log of job {id} was removed by the log sweeper (logs are kept {})",
                humantime::format_duration(keep)
            ),
        ));
    }
    let text = crate::logs::compose(file.as_deref(), &job.attempts);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Property: cursors and limits from clients parse or give a 400; only
    /// cursors this server issues (16 hex digits) are accepted.
    #[test]
    fn random_cursors_and_limits_never_panic() {
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..20_000 {
            let len = rng.usize(0..24);
            let text: String = (0..len).map(|_| rng.char('\u{0}'..='\u{7f}')).collect();
            if let Ok(Some(_)) = parse_cursor(Some(&text)) {
                assert_eq!(text.len(), 16);
            }
            if let Ok(n) = parse_limit(Some(&text)) {
                assert!((1..=1000).contains(&n));
            }
        }
        assert_eq!(
            parse_cursor(Some(&format!("{:016x}", 42u64))).ok(),
            Some(Some(42))
        );
    }

    /// Property: equal parameters written with keys in any order canonicalise to
    /// the same text (unique jobs compare it), and the text parses back equal.
    #[test]
    fn parameters_canonicalise_whatever_the_key_order() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..2_000 {
            let mut pairs: Vec<(String, serde_json::Value)> = (0..rng.usize(0..8))
                .map(|i| {
                    (
                        format!("k{}{}", rng.u8(..), i),
                        serde_json::json!(rng.u32(..)),
                    )
                })
                .collect();
            let text_of = |pairs: &[(String, serde_json::Value)]| {
                let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            };
            let a: serde_json::Value = serde_json::from_str(&text_of(&pairs)).unwrap();
            rng.shuffle(&mut pairs);
            let b: serde_json::Value = serde_json::from_str(&text_of(&pairs)).unwrap();
            assert_eq!(a.to_string(), b.to_string());
            let back: serde_json::Value = serde_json::from_str(&a.to_string()).unwrap();
            assert_eq!(back, a);
        }
    }
}
