//! What a running guest reaches, as the job service provides it: check-ins go to
//! the store (in order, coalesced under bursts), log lines to the job's log,
//! properties from the configuration, sub-jobs through the normal submit path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{JobRequest, JobService};
use crate::job::now_ms;
use crate::logs::LogWriter;
use crate::runtime::{BoxFuture, JobHost, LogLevel, LogStream, SubjobRequest};

/// The [`JobHost`] of one attempt.
pub(super) struct AttemptHost {
    job_id: Uuid,
    service: JobService,
    log: LogWriter,
    properties: Arc<HashMap<String, String>>,
    /// The check-in writer, started by the first check-in (most jobs never check in).
    checkins: Mutex<Option<CheckinWriter>>,
    subjobs: AtomicU32,
}

struct CheckinWriter {
    tx: mpsc::UnboundedSender<(String, u64)>,
    task: JoinHandle<()>,
}

impl AttemptHost {
    pub(super) fn new(service: JobService, job_id: Uuid, log: LogWriter) -> Arc<Self> {
        Arc::new(Self {
            job_id,
            properties: service.properties(),
            service,
            log,
            checkins: Mutex::new(None),
            subjobs: AtomicU32::new(0),
        })
    }

    /// Start the task that writes check-ins in order, a burst as its latest one.
    fn start_writer(&self) -> CheckinWriter {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, u64)>();
        let store = self.service.store().clone();
        let job_id = self.job_id;
        let task = tokio::spawn(async move {
            while let Some(mut latest) = rx.recv().await {
                while let Ok(next) = rx.try_recv() {
                    latest = next;
                }
                if let Err(e) = store.job_checkin(job_id, &latest.0, latest.1).await {
                    tracing::warn!(job = %job_id, error = %e, "cannot store a check-in");
                }
            }
        });
        CheckinWriter { tx, task }
    }

    /// After the attempt: wait until every check-in is written.
    pub(super) async fn finish(&self) {
        let writer = self
            .checkins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(CheckinWriter { tx, task }) = writer {
            drop(tx);
            let _ = task.await;
        }
    }
}

impl JobHost for AttemptHost {
    fn checkin(&self, message: &str) {
        let message: String = message.chars().take(1024).collect();
        let mut writer = self.checkins.lock().unwrap_or_else(|p| p.into_inner());
        let writer = writer.get_or_insert_with(|| self.start_writer());
        let _ = writer.tx.send((message, now_ms()));
    }

    fn log(&self, level: LogLevel, stream: LogStream, message: &str) {
        self.log.line(level, stream, message);
    }

    fn property(&self, key: &str) -> Option<String> {
        self.properties.get(key).cloned()
    }

    fn launch_subjob(&self, request: SubjobRequest) -> BoxFuture<'static, Result<String, String>> {
        let max = self.service.config().max_subjobs_per_attempt;
        if self.subjobs.fetch_add(1, Ordering::Relaxed) >= max {
            return Box::pin(async move {
                Err(format!(
                    "at most {max} sub-jobs per attempt (max_subjobs_per_attempt)"
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
