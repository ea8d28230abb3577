//! Which queued jobs may not be durable yet (see
//! [`Store::job_durable`](crate::store::Store::job_durable)): workers are woken
//! as soon as a job is queued in the overlay, and a claimed job's guest waits
//! here for the flush that covers its queueing (a submit, a retry, a due
//! schedule, a periodic fire alike).

use uuid::Uuid;

use super::SledStore;
use crate::store::StoreError;

impl SledStore {
    /// `ids` were queued by the operation staged as `generation`. Called while
    /// the ready queue is locked, so before any claim can take them. Entries
    /// whose generation is durable by now are dropped on the way.
    pub(super) fn note_unflushed(&self, ids: &[Uuid], generation: u64) {
        let durable = self.staging.durable_generation();
        let mut unflushed = self.lock_unflushed();
        unflushed.retain(|_, g| *g > durable);
        for id in ids {
            unflushed.insert(*id, generation);
        }
    }

    /// See [`Store::job_durable`](crate::store::Store::job_durable).
    pub(super) async fn durable_job(&self, id: Uuid) -> Result<(), StoreError> {
        let generation = self.lock_unflushed().get(&id).copied();
        if let Some(generation) = generation {
            self.staging.durable_through(generation).await?;
        }
        Ok(())
    }
}
