//! How the sled store writes: every change is staged into one batch with the
//! index entries its status implies (old ones removed), its changefeed record
//! and its webhook delivery, checked against the allowed transitions, and applied
//! atomically under the write lock.

use std::sync::atomic::Ordering;

use ::sled::IVec;
use uuid::Uuid;

use super::SledStore;
use super::index::{Prior, index_entries};
use super::locks::Order;
use super::staging::Batch;
use crate::job::{Job, Status};
use crate::store::{ChangeRecord, HookRecord, READY_WAKES, StoreError, codec, keys};

/// Largest encoding buffer a thread keeps between records.
const SCRATCH_KEPT: usize = 64 * 1024;

impl SledStore {
    /// Stage a batch built by `stage` (the writer thread applies it) and wake
    /// whoever watches the index.
    /// `order` is held from the first id the batch took (in `stage`) until it is
    /// staged here, so the ids become visible in the order they were taken.
    /// A batch that took no id needs it too: the index it publishes is read
    /// under it, so it never includes an id another writer took but has not
    /// staged yet.
    pub(super) fn apply(&self, mut batch: Batch, order: Order<'_>) -> Result<(), StoreError> {
        if self.refuse_writes.load(Ordering::Acquire) {
            return Err(StoreError::Injected);
        }
        {
            let mut running = self.lock_running();
            for (id, job) in std::mem::take(&mut batch.running) {
                match job {
                    Some(job) => running.insert(id, job),
                    None => running.remove(&id),
                };
            }
        }
        let mut queued = Vec::new();
        let mut hooked = false;
        // The lowest schedule key the batch sets (see `due.rs`).
        let mut scheduled = None;
        {
            let mut queue = self.lock_queue();
            // The queue entries first, then the records of the batch's
            // pending jobs join them (a record whose entry is not in memory
            // is not kept: claims read the store).
            for (key, value) in batch.writes() {
                match key.first() {
                    Some(&keys::QUEUE) => {
                        let Ok(key) = <[u8; keys::QUEUE_KEY_LEN]>::try_from(key) else {
                            continue;
                        };
                        if value.is_some() {
                            queued.extend(keys::id_suffix(&key));
                            queue.insert(key);
                        } else {
                            queue.remove(&key);
                        }
                    }
                    Some(&keys::HOOK) => hooked |= value.is_some(),
                    Some(&keys::SCHEDULE) if value.is_some() => {
                        scheduled = Some(scheduled.map_or(key, |low: &[u8]| low.min(key)));
                    }
                    _ => {}
                }
            }
            // After the queue entries: each record joins its job's entry.
            for (key, record) in &batch.queued {
                queue.keep(key, record);
            }
            if let Some(key) = scheduled {
                self.note_scheduled(key);
            }
            // Staged while the queue is locked: a claim never sees a queue entry
            // whose job record is not readable yet, nor a job not yet noted as
            // unflushed.
            let generation = self.staging.stage(batch);
            if !queued.is_empty() {
                self.note_unflushed(&queued, generation);
            }
        }
        // Every index staged so far is readable: no writer takes one without
        // the order lock, which is still held.
        let index = self.staged_index.load(Ordering::Acquire);
        drop(order);
        self.index.send_if_modified(|current| {
            let newer = index > *current;
            if newer {
                *current = index;
            }
            newer
        });
        if hooked {
            self.hooks.notify_one();
        }
        // Claimable now: wake idle workers without waiting for the flush.
        for _ in 0..queued.len().min(READY_WAKES) {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// `value` encoded; `key` names it in the error (built only then: this
    /// runs for every record the store writes). Encoded into a buffer the
    /// thread keeps, then copied once into the value sled takes: no buffer
    /// grown and freed per record.
    pub(super) fn encode<T: serde::Serialize>(
        key: impl FnOnce() -> String,
        value: &T,
    ) -> Result<IVec, StoreError> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|buf| {
            let encoded = codec::encode_into(value, buf)
                .map(|()| IVec::from(&buf[..]))
                .map_err(|source| StoreError::Corrupt { key: key(), source });
            // A rare large record (big params) does not stay held per thread.
            if buf.capacity() > SCRATCH_KEPT {
                *buf = Vec::new();
            }
            encoded
        })
    }

    pub(super) fn load(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        if let Some(job) = self.lock_running().get(&id) {
            return Ok(Some(job.clone()));
        }
        match self.staging.get(&keys::job(id))? {
            None => Ok(None),
            Some(bytes) => self.decode_job(id, &bytes).map(Some),
        }
    }

    pub(super) fn decode_job(&self, id: Uuid, bytes: &[u8]) -> Result<Job, StoreError> {
        codec::decode(bytes).map_err(|source| StoreError::Corrupt {
            key: id.to_string(),
            source,
        })
    }

    pub(super) fn must_load(&self, id: Uuid) -> Result<Job, StoreError> {
        self.load(id)?.ok_or(StoreError::NotFound(id))
    }

    pub(super) fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.ids.take()?)
    }

    /// A changefeed id: 0 and 1 mean "the start" and "the latest" to clients.
    /// Taken under the order lock: readers page the changefeed by id.
    pub(super) fn next_change_id(&self, _order: &Order<'_>) -> Result<u64, StoreError> {
        loop {
            let id = self.next_id()?;
            if id > 1 {
                return Ok(id);
            }
        }
    }

    /// Stage `new` (replacing the job that was `old`, if any) in `batch`: the
    /// record and every index entry its status implies, with the old entries
    /// removed. The status change is checked here.
    pub(super) fn stage(
        &self,
        order: &Order<'_>,
        batch: &mut Batch,
        old: Option<Prior>,
        new: &mut Job,
    ) -> Result<(), StoreError> {
        let old = old.as_ref();
        if let Some(old) = old {
            if old.status != new.status && !old.status.can_become(new.status) {
                return Err(StoreError::Transition {
                    id: new.id,
                    from: old.status,
                    to: new.status,
                });
            }
            new.revision = old.revision + 1;
        }
        new.modify_index = self.next_id()?;
        self.staged_index
            .fetch_max(new.modify_index, Ordering::AcqRel);
        let status_changed = old.is_none_or(|o| o.status != new.status);
        let checked_in = old.is_some_and(|o| o.check_in_at != new.check_in_at);
        if status_changed {
            let id = self.next_change_id(order)?;
            let change = ChangeRecord {
                id,
                created_at: new.update_time,
                category: "job".into(),
                job_id: Some(new.id),
                name: new.name.clone(),
                status: new.status.as_str().into(),
                version: new.revision,
                plugin_digest: new
                    .attempts
                    .last()
                    .map(|a| a.plugin_digest.clone())
                    .filter(|d| !d.is_empty()),
            };
            batch.insert(
                &keys::seq_key(keys::CHANGE, id)[..],
                Self::encode(|| format!("change {id}"), &change)?,
            );
        }
        if let Some(url) = &new.status_hook
            && (status_changed || checked_in)
        {
            let seq = self.next_id()?;
            let hook = HookRecord {
                seq,
                url: url.clone(),
                job: new.clone(),
                attempts: 0,
                created_at: new.update_time,
                next_at: 0,
            };
            batch.insert(
                &keys::seq_key(keys::HOOK, seq)[..],
                Self::encode(|| format!("hook {seq}"), &hook)?,
            );
        }
        let before = old.map_or(&[][..], |o| &o.index[..]);
        let after = index_entries(new);
        for k in before {
            if !after.iter().any(|(a, _)| a == k) {
                batch.remove(k.clone());
            }
        }
        // Index values are fixed by their keys: only the entries the job did not
        // have are written.
        for (k, v) in after {
            if !before.contains(&k) {
                batch.insert_new(k, v);
            }
        }
        let record = Self::encode(|| new.id.to_string(), new)?;
        if new.status == Status::Pending {
            // Claims take it from the ready queue instead of the store.
            let key = keys::queue(new.priority, new.seq, new.id);
            batch.queued.push((key, record.clone()));
        }
        batch.insert(&keys::job(new.id)[..], record);
        // A running job's record is read back by its check-ins and its finish:
        // they take it from memory instead of decoding it again.
        if new.status == Status::Running {
            batch.running.push((new.id, Some(new.clone())));
        } else if old.is_some_and(|o| o.status == Status::Running) {
            batch.running.push((new.id, None));
        }
        Ok(())
    }

    /// Load, change and write one job under the write lock (and its stripe).
    pub(super) fn update(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Job) -> Result<(), StoreError>,
    ) -> Result<Job, StoreError> {
        let _w = self.lock();
        self.update_in_stripe(id, change)
    }

    /// [`SledStore::update`] of a job that must be running (a check-in, the end
    /// of an attempt), under its stripe only: the check-ins and the finish of
    /// one job do not wait for the claims, submits and finishes of others.
    /// Sound because every other writer of a running job's record holds its
    /// stripe too, and a job that is not running is refused (`Transition`)
    /// before anything is written.
    pub(super) fn update_running(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Job) -> Result<(), StoreError>,
    ) -> Result<Job, StoreError> {
        self.update_in_stripe(id, |job| {
            must_be_running(job)?;
            change(job)
        })
    }

    fn update_in_stripe(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Job) -> Result<(), StoreError>,
    ) -> Result<Job, StoreError> {
        let _s = self.stripe(id);
        let mut job = self.must_load(id)?;
        let prior = Prior::of(&job);
        change(&mut job)?;
        let order = self.order();
        let mut batch = Batch::default();
        self.stage(&order, &mut batch, Some(prior), &mut job)?;
        self.apply(batch, order)?;
        Ok(job)
    }

    pub(super) fn requeue(&self, job: &mut Job) -> Result<(), StoreError> {
        job.status = Status::Pending;
        job.seq = self.next_id()?;
        job.run_at = None;
        Ok(())
    }
}

/// Refuse (`Transition`) a change meant for a running job when `job` is not.
pub(super) fn must_be_running(job: &Job) -> Result<(), StoreError> {
    if job.status == Status::Running {
        return Ok(());
    }
    Err(StoreError::Transition {
        id: job.id,
        from: job.status,
        to: Status::Running,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::job::Command;
    use crate::store::Store;

    /// Check-ins racing with a stop and with task events lose no update: each
    /// bumps the revision once, and the stop survives the check-ins after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_of_a_running_job_lose_no_update() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Arc::new(SledStore::open(dir.path()).expect("store"));
        let job = super::super::tests::pending_noop();
        let id = job.id;
        store.job_insert_many(vec![job]).await.expect("insert");
        let claimed = store
            .job_claim("w", 2, &mut |_: &Job| true)
            .await
            .expect("claim")
            .expect("a job");
        let n = 300;
        let (a, b) = (store.clone(), store.clone());
        let checkins = tokio::spawn(async move {
            for i in 0..n {
                a.job_checkin(id, &i.to_string(), 3).await.expect("checkin");
            }
        });
        let others = tokio::spawn(async move {
            b.job_command(id, Command::Stop, 3).await.expect("stop");
            for _ in 0..n {
                b.job_event(id, "Note", "x").await.expect("event");
            }
        });
        checkins.await.expect("checkins");
        others.await.expect("others");
        let end = store.job_get(id).await.expect("get").expect("job");
        assert_eq!(end.revision, claimed.revision + 2 * n + 1);
        assert_eq!(end.command, Some(Command::Stop));
        assert_eq!(end.check_in.as_deref(), Some((n - 1).to_string().as_str()));
    }

    /// A data directory written by a release that stored JSON records still
    /// opens: its jobs read back, run, and are rewritten in the binary layout.
    #[tokio::test]
    async fn json_records_of_an_earlier_release_are_read_and_upgraded() {
        let dir = tempfile::tempdir().expect("dir");
        let mut job = super::super::tests::pending_noop();
        let id = job.id;
        job.seq = 7;
        {
            let db = ::sled::open(dir.path()).expect("sled");
            db.insert(keys::job(id), serde_json::to_vec(&job).expect("json"))
                .expect("record");
            db.insert(keys::queue(job.priority, job.seq, id), Vec::<u8>::new())
                .expect("queue entry");
            db.flush().expect("flush");
        }
        let store = super::super::tests::open_when_free(dir.path());
        assert_eq!(store.job_get(id).await.expect("get"), Some(job));
        let claimed = store
            .job_claim("w", 2, &mut |_: &Job| true)
            .await
            .expect("claim")
            .expect("the old job is claimable");
        assert_eq!(claimed.id, id);
        store.flush().await.expect("flush");
        let bytes = store
            .staging
            .get(&keys::job(id))
            .expect("read")
            .expect("record");
        assert_ne!(bytes.first(), Some(&b'{'), "rewritten in the binary layout");
    }

    /// Finishes and check-ins (under their jobs' stripes only) racing with
    /// claims and submits (under the write lock) publish in order: a reader
    /// paging the changefeed by id never skips a change that became visible
    /// after a later one, and a published modify index never runs ahead of a
    /// write that is not readable yet.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn ids_become_visible_in_the_order_they_were_taken() {
        use crate::store::Next;
        let dir = tempfile::tempdir().expect("dir");
        let store = Arc::new(SledStore::open(dir.path()).expect("store"));
        let (jobs, writers) = (1000, 4);
        let pending = |n: usize| {
            (0..n)
                .map(|_| super::super::tests::pending_noop())
                .collect::<Vec<_>>()
        };
        let first = pending(jobs);
        let ids: Vec<Uuid> = first.iter().map(|j| j.id).collect();
        store.job_insert_many(first).await.expect("insert");
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

        // The changefeed reader: pages by the last id it saw.
        let feed = {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let (mut cursor, mut seen) = (0, Vec::new());
                loop {
                    let last_round = done.load(Ordering::Acquire);
                    for change in store.change_list(cursor, 10_000).await.expect("feed") {
                        cursor = change.id;
                        seen.push(change.id);
                    }
                    if last_round {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        // The index watcher: snapshots of (index, every job's modify index read
        // after it). A write at or below the index must be in the snapshot.
        // Snapshots the watcher has completed: the writers wait at half way for
        // two, so some are taken while writes are under way however slow a
        // snapshot is on a loaded machine.
        let looks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let watcher = {
            let (store, done, ids, looks) =
                (store.clone(), done.clone(), ids.clone(), looks.clone());
            tokio::spawn(async move {
                let rx = store.watch_index();
                let mut snapshots = Vec::new();
                while !done.load(Ordering::Acquire) {
                    let x = *rx.borrow();
                    let mut seen = HashMap::new();
                    for id in &ids {
                        let job = store.job_get(*id).await.expect("get").expect("job");
                        seen.insert(*id, job.modify_index);
                    }
                    snapshots.push((x, seen));
                    looks.fetch_add(1, Ordering::AcqRel);
                    tokio::task::yield_now().await;
                }
                snapshots
            })
        };
        let written = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (store, written, looks) = (store.clone(), written.clone(), looks.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..jobs / writers {
                    if n == jobs / writers / 2 {
                        let deadline =
                            std::time::Instant::now() + std::time::Duration::from_secs(60);
                        while looks.load(Ordering::Acquire) < 2 {
                            assert!(std::time::Instant::now() < deadline, "the watcher stalled");
                            tokio::task::yield_now().await;
                        }
                    }
                    let job = store
                        .job_claim(&format!("w{w}"), 2, &mut |_: &Job| true)
                        .await
                        .expect("claim")
                        .expect("a job");
                    let checked = store
                        .job_checkin(job.id, "half", 3)
                        .await
                        .expect("checkin")
                        .expect("running");
                    let end = super::super::tests::attempt_end("success");
                    let finished = store
                        .job_finish(job.id, end, Next::Final(Status::Success), 4)
                        .await
                        .expect("finish");
                    let mut written = written.lock().expect("written");
                    for j in [job, checked, finished] {
                        written.push((j.id, j.modify_index));
                    }
                }
            }));
        }
        // Submits keep taking ids under the write lock meanwhile.
        let submits = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    store.job_insert_many(pending(2)).await.expect("insert");
                }
            })
        };
        for t in tasks {
            t.await.expect("writer");
        }
        submits.await.expect("submits");
        done.store(true, Ordering::Release);
        let seen = feed.await.expect("feed");
        let snapshots = watcher.await.expect("watcher");
        assert!(snapshots.len() > 1, "the watcher looked only once");
        let written = std::mem::take(&mut *written.lock().expect("written"));
        for (x, seen) in &snapshots {
            for (id, m) in written.iter().filter(|(_, m)| m <= x) {
                assert!(
                    seen[id] >= *m,
                    "index {x} was published before job {id}'s write at {m} was readable"
                );
            }
        }
        let all: Vec<u64> = store
            .change_list(0, 100_000)
            .await
            .expect("feed")
            .iter()
            .map(|c| c.id)
            .collect();
        // pending + running + success per job, pending for each later submit.
        assert_eq!(all.len(), jobs * 3 + 100);
        let missed: Vec<_> = all.iter().filter(|id| !seen.contains(id)).collect();
        assert!(missed.is_empty(), "the paging reader skipped {missed:?}");
        assert_eq!(seen, all);
    }
}
