//! What a running guest reaches, as the job service provides it: check-ins go to
//! the store (in order, coalesced under bursts), log lines to the job's log,
//! properties from the configuration, sub-jobs through the normal submit path.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{JobRequest, JobService};
use crate::job::now_ms;
use crate::logs::LogWriter;
use crate::runtime::{BoxFuture, JobHost, LogLevel, LogStream, SubjobRequest};

/// Sub-jobs one attempt may launch.
const MAX_SUBJOBS_PER_ATTEMPT: u32 = 10_000;

/// The [`JobHost`] of one attempt.
pub(super) struct AttemptHost {
    job_id: Uuid,
    service: JobService,
    log: LogWriter,
    properties: Arc<HashMap<String, String>>,
    checkins: mpsc::UnboundedSender<(String, u64)>,
    subjobs: AtomicU32,
}

impl AttemptHost {
    /// The host, and the task writing its check-ins (await it after the attempt,
    /// once the host is dropped, so that no check-in lands after the job's end).
    pub(super) fn new(
        service: JobService,
        job_id: Uuid,
        log: LogWriter,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, u64)>();
        let store = service.store().clone();
        let writer = tokio::spawn(async move {
            while let Some(mut latest) = rx.recv().await {
                // A burst of check-ins is written as its latest one.
                while let Ok(next) = rx.try_recv() {
                    latest = next;
                }
                if let Err(e) = store.job_checkin(job_id, &latest.0, latest.1).await {
                    tracing::warn!(job = %job_id, error = %e, "cannot store a check-in");
                }
            }
        });
        let host = Arc::new(Self {
            job_id,
            properties: service.properties(),
            service,
            log,
            checkins: tx,
            subjobs: AtomicU32::new(0),
        });
        (host, writer)
    }

    pub(super) fn note(&self, level: LogLevel, message: &str) {
        self.log.line(level, LogStream::Host, message);
    }
}

impl JobHost for AttemptHost {
    fn checkin(&self, message: &str) {
        let message: String = message.chars().take(1024).collect();
        let _ = self.checkins.send((message, now_ms()));
    }

    fn log(&self, level: LogLevel, stream: LogStream, message: &str) {
        self.log.line(level, stream, message);
    }

    fn property(&self, key: &str) -> Option<String> {
        self.properties.get(key).cloned()
    }

    fn launch_subjob(&self, request: SubjobRequest) -> BoxFuture<'static, Result<String, String>> {
        if self.subjobs.fetch_add(1, Ordering::Relaxed) >= MAX_SUBJOBS_PER_ATTEMPT {
            return Box::pin(async {
                Err(format!(
                    "at most {MAX_SUBJOBS_PER_ATTEMPT} sub-jobs per attempt"
                ))
            });
        }
        let service = self.service.clone();
        let upstream = self.job_id;
        Box::pin(async move {
            let params = serde_json::from_str(&request.parameters)
                .map_err(|e| format!("sub-job parameters are not JSON: {e}"))?;
            let req = JobRequest {
                upstream: Some(upstream),
                ..JobRequest::generic(&request.name, params)
            };
            match service.submit(req).await {
                Ok(job) => Ok(job.id.to_string()),
                Err(e) => {
                    let message = e.to_string();
                    if let Err(se) = service
                        .store()
                        .job_event(upstream, "Failed Validation", &message)
                        .await
                    {
                        tracing::warn!(job = %upstream, error = %se, "cannot record a task event");
                    }
                    Err(message)
                }
            }
        })
    }
}
