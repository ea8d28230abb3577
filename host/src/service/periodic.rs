//! Periodic jobs: a template (kind `Periodic`, status `scheduled`) never runs
//! itself; at each fire time the scheduler creates an execution, a Generic job
//! with the template's settings and `upstream_job_id` = the template, whose id
//! derives from (template, fire time) so that a fire time runs at most once.

use uuid::Uuid;

use super::JobService;
use crate::cron::CronSpec;
use crate::job::{Job, Kind, Status};
use crate::store::StoreError;

/// Templates fired per round.
const BATCH: usize = 256;

/// The id of the execution of `template` at fire time `fire_ms`.
pub fn execution_id(template: Uuid, fire_ms: u64) -> Uuid {
    Uuid::new_v5(&template, &fire_ms.to_be_bytes())
}

impl JobService {
    /// Fire the periodic templates due at `now`; returns the executions created.
    pub async fn fire_periodic(&self, now: u64) -> Result<usize, StoreError> {
        let mut created = 0;
        for template in self.store().job_due_templates(now, BATCH).await? {
            let (Some(due), Some(spec)) = (template.run_at, template.cron_spec.as_deref()) else {
                continue;
            };
            let cron = match CronSpec::parse(spec) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(job = %template.id, error = %e, "stored cron spec no longer parses");
                    continue;
                }
            };
            let (fire, next) = cron.fire(due, now, self.config().missed_runs);
            if fire.is_some_and(|f| f < due) || next.is_some_and(|n| n <= now) {
                continue; // clock went backwards; try again later
            }
            let execution = fire.map(|f| execution_of(&template, f, now));
            if let Some(job) = self
                .store()
                .job_fire(template.id, due, execution, next, now)
                .await?
            {
                created += 1;
                tracing::debug!(template = %template.id, execution = %job.id, "periodic execution created");
                self.inner.ready.notify_one();
            }
        }
        Ok(created)
    }
}

/// A Generic job cloned from the template's settings.
fn execution_of(template: &Job, fire_ms: u64, now: u64) -> Job {
    let id = execution_id(template.id, fire_ms);
    let fresh = Job::new(
        id,
        template.name.clone(),
        Kind::Generic,
        template.params.clone(),
        Status::Pending,
        now,
    );
    Job {
        priority: template.priority,
        status_hook: template.status_hook.clone(),
        upstream_job_id: Some(template.id),
        capacity_map: template.capacity_map.clone(),
        deadline_ms: template.deadline_ms,
        stop_timeout_ms: template.stop_timeout_ms,
        retries_total: template.retries_total,
        retries_left: template.retries_total,
        ..fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_are_stable_per_fire_time() {
        let t = Uuid::new_v4();
        assert_eq!(execution_id(t, 5000), execution_id(t, 5000));
        assert_ne!(execution_id(t, 5000), execution_id(t, 6000));
        assert_ne!(execution_id(t, 5000), execution_id(Uuid::new_v4(), 5000));
    }
}
