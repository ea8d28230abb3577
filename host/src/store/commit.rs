//! Group commit: many writers wait on one flush. A writer takes a ticket after
//! its write; the flusher reads the highest ticket, flushes, and publishes it, so
//! every write with a ticket at or below it is on disk. Under load one `fsync`
//! covers hundreds of writes; when idle a lone write costs one flush.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{Notify, watch};

#[derive(Debug)]
pub(super) struct GroupCommit {
    closed: AtomicBool,
    requested: AtomicU64,
    wake: Notify,
    done: watch::Sender<Result<u64, String>>,
}

impl GroupCommit {
    /// Start the flusher task for `db`.
    pub(super) fn start(db: ::sled::Db) -> Arc<Self> {
        let gc = Arc::new(Self {
            closed: AtomicBool::new(false),
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            done: watch::channel(Ok(0)).0,
        });
        let task = gc.clone();
        tokio::spawn(async move {
            loop {
                task.wake.notified().await;
                let target = task.requested.load(Ordering::Acquire);
                let result = db.flush_async().await;
                let _previous = task.done.send_replace(match result {
                    Ok(_) => Ok(target),
                    Err(e) => Err(e.to_string()),
                });
                if task.closed.load(Ordering::Acquire) {
                    // Dropping `db` here releases the store's files.
                    return;
                }
            }
        });
        gc
    }

    /// Flush once more and end the flusher task (the store is being dropped).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Return once every write made before this call is durable.
    pub(super) async fn durable(&self) -> Result<(), ::sled::Error> {
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let mut rx = self.done.subscribe();
        self.wake.notify_one();
        loop {
            match &*rx.borrow_and_update() {
                Ok(done) if *done >= ticket => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(::sled::Error::Io(std::io::Error::other(e.clone()))),
            }
            if rx.changed().await.is_err() {
                return Err(::sled::Error::Io(std::io::Error::other(
                    "the store flusher stopped",
                )));
            }
            // A flush finished that may not cover us (it started before our
            // write): make sure another one runs.
            self.wake.notify_one();
        }
    }
}
