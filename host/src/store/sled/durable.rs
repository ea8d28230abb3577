//! Which jobs' inserts may not be durable yet (see [`Store::job_durable`](crate::store::Store::job_durable)):
//! workers are woken as soon as a job is staged, and a claimed job's guest
//! waits here for its submit's flush.

use uuid::Uuid;

use super::SledStore;
use crate::job::Job;
use crate::store::StoreError;

/// Jobs of one insert in [`SledStore`]'s `unflushed` map, taken out when the
/// insert's wait for its flush ends (or is abandoned: a client that hangs up).
pub(super) struct Unflushed<'a> {
    store: &'a SledStore,
    ids: Vec<Uuid>,
    pub(super) generation: u64,
}

impl<'a> Unflushed<'a> {
    pub(super) fn register(store: &'a SledStore, jobs: &[Job], generation: u64) -> Self {
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let mut unflushed = store.lock_unflushed();
        for id in &ids {
            unflushed.insert(*id, generation);
        }
        Self {
            store,
            ids,
            generation,
        }
    }
}

impl Drop for Unflushed<'_> {
    fn drop(&mut self) {
        let mut unflushed = self.store.lock_unflushed();
        for id in &self.ids {
            unflushed.remove(id);
        }
    }
}

impl SledStore {
    /// See [`Store::job_durable`](crate::store::Store::job_durable).
    pub(super) async fn durable_job(&self, id: Uuid) -> Result<(), StoreError> {
        let generation = self.lock_unflushed().get(&id).copied();
        if let Some(generation) = generation {
            self.staging.durable_through(generation).await?;
        }
        Ok(())
    }
}
