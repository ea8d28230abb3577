//! Status webhooks. Every status change and check-in of a job with a
//! `status_hook` is queued in the store in the same atomic write as the change
//! itself (so a crash cannot lose one), then POSTed by this dispatcher as
//! `{"job_id", "status", "check_in", "revision", "metadata": <stats>}`.
//!
//! - Delivered means a 2xx answer; anything else is retried with exponential
//!   back-off and jitter, for at most `retry_for`, then dropped (and logged).
//! - Per job, hooks are delivered in order: a hook waiting to be retried holds back
//!   the later hooks of the same job (other jobs' hooks carry on).
//! - Receivers can drop stale deliveries by `revision`, which only grows.
//! - Delivery runs on its own task: a slow or dead receiver never slows jobs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::retry::backoff_with;
use super::{JobService, PolicyResolver};
use crate::api::view::JobView;
use crate::job::now_ms;
use crate::store::HookRecord;

/// Hooks looked at per round.
const BATCH: usize = 256;
/// Longest wait between rounds when nothing woke the dispatcher.
const IDLE: Duration = Duration::from_secs(1);
/// First retry delay, and its cap.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Time allowed for one POST.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON body of one delivery.
pub fn payload(hook: &HookRecord) -> serde_json::Value {
    serde_json::json!({
        "job_id": hook.job.id,
        "status": hook.job.status,
        "check_in": hook.job.check_in,
        "revision": hook.job.revision,
        "metadata": JobView::of(&hook.job, &[]),
    })
}

impl JobService {
    /// Start the dispatcher.
    pub fn start_hooks(&self) -> JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move { service.hook_loop().await })
    }

    async fn hook_loop(self) {
        let policy = Arc::new(self.config().hook_policy.clone());
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PolicyResolver(policy)))
            .build();
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook client: hooks are not delivered");
                return;
            }
        };
        // Woken by new deliveries only: the store's index changes with every
        // write (a drain's claims and finishes kept this loop scanning).
        let staged = self.store().hook_signal();
        let mut shutdown = self.shutting_down();
        while !*shutdown.borrow() {
            let wait = match self.deliver_hooks(&client, now_ms()).await {
                Ok(Some(next)) => Duration::from_millis(next.saturating_sub(now_ms())).min(IDLE),
                Ok(None) => IDLE,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the webhook queue");
                    IDLE
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = staged.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One round: deliver every due hook whose job has no earlier hook pending.
    /// Returns the earliest time a waiting hook is due.
    pub async fn deliver_hooks(
        &self,
        client: &reqwest::Client,
        now: u64,
    ) -> Result<Option<u64>, crate::store::StoreError> {
        let hooks = self.store().hook_list(BATCH).await?;
        let retry_for = self.config().hook_retry_for.as_millis() as u64;
        let mut seen = HashSet::new();
        let mut sending = HashSet::new();
        let mut next_due: Option<u64> = None;
        let mut sends = Vec::new();
        for hook in hooks {
            if !seen.insert(hook.job.id) {
                // An earlier hook of this job goes first; if it is being sent now,
                // this one is due right after this round.
                if sending.contains(&hook.job.id) {
                    next_due = Some(now);
                }
                continue;
            }
            if hook.next_at > now {
                next_due = Some(next_due.map_or(hook.next_at, |n| n.min(hook.next_at)));
                continue;
            }
            // An address denied since the job was submitted (the policy changed
            // across a restart) is never contacted: the hook is dropped.
            if let Err(why) = self.config().hook_policy.check_url(&hook.url) {
                tracing::error!(job = %hook.job.id, url = %hook.url, %why, "webhook dropped: address denied");
                self.store().hook_done(hook.seq).await?;
                self.count_dropped_hook();
                continue;
            }
            sending.insert(hook.job.id);
            let client = client.clone();
            sends.push(async move {
                let body = payload(&hook);
                let result = client.post(&hook.url).json(&body).send().await;
                (hook, result)
            });
        }
        for (mut hook, result) in futures::future::join_all(sends).await {
            let ok = matches!(&result, Ok(r) if r.status().is_success());
            if ok {
                self.store().hook_done(hook.seq).await?;
                continue;
            }
            let why = match result {
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            hook.attempts += 1;
            if now.saturating_sub(hook.created_at) >= retry_for {
                tracing::error!(job = %hook.job.id, url = %hook.url, attempts = hook.attempts, %why, "webhook dropped after retrying");
                self.store().hook_done(hook.seq).await?;
                self.count_dropped_hook();
                continue;
            }
            let wait = backoff_with(FIRST_RETRY, MAX_RETRY, hook.attempts, fastrand::f64());
            hook.next_at = now + wait.as_millis() as u64;
            tracing::warn!(job = %hook.job.id, url = %hook.url, attempts = hook.attempts, %why, retry_in = ?wait, "webhook not delivered");
            next_due = Some(next_due.map_or(hook.next_at, |n| n.min(hook.next_at)));
            self.store().hook_retry(&hook).await?;
        }
        Ok(next_due)
    }
}
