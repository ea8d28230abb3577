//! A job as the API shows it: Harbor's stats fields plus DTR's lineage and limits.
//! Times are unix seconds; absent values are `null`.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::error::ApiError;
use crate::job::{Attempt, Job, Kind, Status};

/// Bytes reserved per job view in an answer ([`sized_json`]); a new job's view
/// takes ~750 bytes (more with large parameters: the buffer then grows as usual).
pub const VIEW_BYTES: usize = 1024;

/// `value` as a JSON response, encoded into one buffer of `capacity` bytes
/// reserved up front. axum's `Json` starts from 128 bytes and grows as it
/// writes: for a bulk answer of 1000 jobs (~1 MiB) half the encoding time went
/// to growing and copying its buffer.
pub fn sized_json<T: Serialize>(status: StatusCode, value: &T, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            format!("cannot encode the answer: {e}"),
        )
        .into_response(),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub kind: Kind,
    pub status: Status,
    pub unique: bool,
    pub priority: i32,
    pub ref_link: String,
    #[schema(value_type = Object)]
    pub parameters: &'a RawValue,
    pub enqueue_time: u64,
    pub update_time: u64,
    pub run_at: Option<u64>,
    pub cron_spec: Option<&'a str>,
    pub check_in: Option<&'a str>,
    pub check_in_at: Option<u64>,
    pub die_at: Option<u64>,
    pub hook_status: Option<&'a str>,
    pub upstream_job_id: Option<Uuid>,
    pub executions: &'a [Uuid],
    pub multiple_executions: bool,
    pub worker_id: Option<&'a str>,
    pub capacity_map: &'a BTreeMap<String, u32>,
    pub retries_left: u32,
    pub retries_total: u32,
    pub retry_from_id: Option<Uuid>,
    pub deadline: Option<String>,
    pub stop_timeout: Option<String>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub plugin_digest: Option<&'a str>,
    pub revision: u64,
    pub attempts: Vec<AttemptView<'a>>,
    /// The latest 10 task events (Nomad), oldest first; times in unix nanoseconds.
    pub task_events: &'a [crate::job::TaskEvent],
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView<'a> {
    pub id: Uuid,
    pub number: u32,
    pub retry_from_id: Option<Uuid>,
    pub worker_id: &'a str,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub outcome: Option<&'a str>,
    pub message: Option<&'a str>,
    pub plugin_digest: Option<&'a str>,
    /// Microseconds from the claim to the guest's `run` call.
    pub startup_us: Option<u64>,
    pub duration_us: Option<u64>,
    pub peak_memory: Option<u64>,
    pub fuel_used: Option<u64>,
}

fn secs(ms: u64) -> u64 {
    ms / 1000
}

fn duration_text(ms: Option<u64>) -> Option<String> {
    ms.map(|ms| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string())
}

fn attempt(a: &Attempt) -> AttemptView<'_> {
    AttemptView {
        id: a.id,
        number: a.number,
        retry_from_id: a.retry_from_id,
        worker_id: &a.worker_id,
        started_at: secs(a.started_at),
        finished_at: a.finished_at.map(secs),
        outcome: a.outcome.as_deref(),
        message: a.message.as_deref(),
        plugin_digest: Some(a.plugin_digest.as_str()).filter(|d| !d.is_empty()),
        startup_us: a.startup_us,
        duration_us: a.duration_us,
        peak_memory: a.peak_memory,
        fuel_used: a.fuel_used,
    }
}

impl<'a> JobView<'a> {
    /// The view of `job`, listing `executions` (the latest ones; see the
    /// executions route for all).
    pub fn of(job: &'a Job, executions: &'a [Uuid]) -> Self {
        let last = job.last_attempt();
        let digest = job
            .attempts
            .iter()
            .rev()
            .map(|a| a.plugin_digest.as_str())
            .find(|d| !d.is_empty());
        Self {
            id: job.id,
            name: &job.name,
            kind: job.kind,
            status: job.status,
            unique: job.unique,
            priority: job.priority,
            ref_link: format!("/api/v1/jobs/{}", job.id),
            // Stored as the canonical text of a JSON object; shown as is.
            parameters: serde_json::from_str(&job.params).unwrap_or(RawValue::NULL),
            enqueue_time: secs(job.enqueue_time),
            update_time: secs(job.update_time),
            run_at: job.run_at.map(secs),
            cron_spec: job.cron_spec.as_deref(),
            check_in: job.check_in.as_deref(),
            check_in_at: job.check_in_at.map(secs),
            die_at: job.die_at.map(secs),
            hook_status: job.status_hook.as_deref(),
            upstream_job_id: job.upstream_job_id,
            executions,
            multiple_executions: job.has_executions,
            worker_id: job.worker_id(),
            capacity_map: &job.capacity_map,
            retries_left: job.retries_left,
            retries_total: job.retries_total,
            retry_from_id: last.and_then(|a| a.retry_from_id),
            deadline: duration_text(job.deadline_ms),
            stop_timeout: duration_text(job.stop_timeout_ms),
            started_at: job.started_at.map(secs),
            finished_at: job.finished_at.map(secs),
            plugin_digest: digest,
            revision: job.revision,
            attempts: job.attempts.iter().map(attempt).collect(),
            task_events: &job.events,
        }
    }
}

/// `{"job": <stats>}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobEnvelope<'a> {
    pub job: JobView<'a>,
}

/// `{"jobs": [<stats>, ...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobsEnvelope<'a> {
    pub jobs: Vec<JobView<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_jobs_view_fits_the_bytes_reserved_for_it() {
        let mut job = Job::new(
            Uuid::now_v7(),
            "wordcount".into(),
            Kind::Generic,
            r#"{"text":"a few words to count"}"#.into(),
            Status::Pending,
            3,
        );
        job.event("Received", "accepted and stored");
        let len = serde_json::to_vec(&JobView::of(&job, &[]))
            .expect("json")
            .len();
        assert!(len <= VIEW_BYTES, "a new job's view takes {len} bytes");
    }

    #[tokio::test]
    async fn a_sized_answer_is_json_with_its_status() {
        let response = sized_json(StatusCode::ACCEPTED, &serde_json::json!({"a": [1, 2]}), 4);
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], br#"{"a":[1,2]}"#);
    }
}
