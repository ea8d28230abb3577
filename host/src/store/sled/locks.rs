//! The sled store's locks, in the order they are taken: the write lock
//! (claims, submits, commands: one at a time), a job's stripe (every writer of
//! a running job's record), the order lock (ids published in the order they
//! were taken), and the short locks of the in-memory queue, running records and
//! unflushed jobs.

use std::collections::HashMap;
use std::sync::MutexGuard;

use uuid::Uuid;

use super::SledStore;
use crate::job::Job;

/// See [`SledStore::lock_yielding`].
const LOCK_YIELDS: usize = 64;

impl SledStore {
    pub(super) fn lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, ()>> {
        match self.write.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The write lock for a worker's claim: while another holds it, the worker
    /// yields its runtime thread to other tasks (another worker's guest)
    /// instead of putting the thread to sleep, then blocks as [`Self::lock`]
    /// after [`LOCK_YIELDS`] tries.
    pub(super) async fn lock_yielding(&self) -> MutexGuard<'_, ()> {
        for _ in 0..LOCK_YIELDS {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            tokio::task::yield_now().await;
        }
        self.lock()
    }

    /// The lock of one job's record. Whoever changes a running job's record
    /// holds it ([`SledStore::update_running`] holds only it); the write lock
    /// comes first when both are taken.
    pub(super) fn stripe(&self, id: Uuid) -> MutexGuard<'_, ()> {
        let n = (id.as_u128() % self.stripes.len() as u128) as usize;
        self.stripes[n].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The order lock, taken last (after the write lock and any stripe) and
    /// held from a batch's first id to its staging: see [`Order`].
    pub(super) fn order(&self) -> Order<'_> {
        Order {
            _held: self.order.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    pub(super) fn lock_queue(&self) -> MutexGuard<'_, super::ready::ReadyQueue> {
        super::ready::lock(&self.queue)
    }

    pub(super) fn lock_running(&self) -> MutexGuard<'_, HashMap<Uuid, Job>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn lock_unflushed(&self) -> MutexGuard<'_, HashMap<Uuid, u64>> {
        self.unflushed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Proof that the store's order lock is held. Ids that readers page or wait by
/// (modify indexes, changefeed ids, webhook sequence numbers) are taken and
/// staged under it, so they become visible in the order they were taken: a
/// blocking query that saw index 11 never misses a change at 10 staged after it.
/// (The write lock gave that order while every writer held it; check-ins and
/// finishes now hold only their job's stripe.)
pub(super) struct Order<'a> {
    _held: MutexGuard<'a, ()>,
}
