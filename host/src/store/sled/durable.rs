//! Which jobs' inserts may not be durable yet (see [`Store::job_durable`](crate::store::Store::job_durable)):
//! workers are woken as soon as a job is staged, and a claimed job's guest
//! waits here for its submit's flush.

use uuid::Uuid;

use super::SledStore;
use crate::job::Job;
use crate::store::StoreError;

/// Jobs of one insert in [`SledStore`]'s `unflushed` map. They are taken out
/// once the insert's flush has returned ([`Unflushed::flushed`]). An insert
/// whose wait ended otherwise (its client hung up, the writer failed) leaves
/// them: a worker that claims one still waits for its generation (and fails
/// if the store cannot write); the next insert prunes what is durable by then.
pub(super) struct Unflushed<'a> {
    store: &'a SledStore,
    ids: Vec<Uuid>,
    pub(super) generation: u64,
    flushed: bool,
}

impl<'a> Unflushed<'a> {
    pub(super) fn register(store: &'a SledStore, jobs: &[Job], generation: u64) -> Self {
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let durable = store.staging.durable_generation();
        let mut unflushed = store.lock_unflushed();
        unflushed.retain(|_, g| *g > durable);
        for id in &ids {
            unflushed.insert(*id, generation);
        }
        Self {
            store,
            ids,
            generation,
            flushed: false,
        }
    }

    /// The insert's flush returned: its jobs are durable.
    pub(super) fn flushed(mut self) {
        self.flushed = true;
    }
}

impl Drop for Unflushed<'_> {
    fn drop(&mut self) {
        if !self.flushed {
            return;
        }
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
