//! The store's id generator (job sequences, modify indexes, changefeed ids,
//! webhook sequence numbers): one counter in memory, with a durable bound
//! reserved ahead of it.
//!
//! sled's own `generate_id` takes its global read lock, which every
//! `apply_batch` holds exclusively for the whole batch: a claim or a finish
//! that took an id (under the store's order lock) waited for the writer's batch
//! of hundreds of keys, and every other writer queued behind it. Measured in the
//! drain: a quarter of the two cores idle, the runtime threads asleep in those
//! locks.
//!
//! Crash safety as sled's: an id is handed out only below a bound that is
//! already durable (`m` key `ids`), and a reopened store starts at that bound,
//! so an id is never handed out twice, even one a crashed process gave only to
//! a reader. Reserving costs one synced write per [`RESERVE`] ids.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::keys;

/// Ids reserved per durable write of the bound.
const RESERVE: u64 = 1 << 20;

/// The `m` key that holds the reserved bound (big-endian u64).
const BOUND_KEY: [u8; 4] = [keys::META, b'i', b'd', b's'];

#[derive(Debug)]
pub(super) struct Ids {
    db: ::sled::Db,
    next: AtomicU64,
    /// Ids below it may be handed out: it is durable.
    bound: AtomicU64,
    /// Held while the bound moves up.
    reserving: Mutex<()>,
}

impl Ids {
    /// The generator of `db`: it starts above every id handed out before, by
    /// this generator (its bound) or by sled's (stores of earlier releases).
    pub(super) fn open(db: &::sled::Db) -> Result<Self, ::sled::Error> {
        let bound = db
            .get(BOUND_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let start = bound.max(db.generate_id()? + 1);
        let ids = Self {
            db: db.clone(),
            next: AtomicU64::new(start),
            bound: AtomicU64::new(start),
            reserving: Mutex::new(()),
        };
        ids.reserve_past(start)?;
        Ok(ids)
    }

    /// The next id: greater than every id taken before, in this process or an
    /// earlier one.
    pub(super) fn take(&self) -> Result<u64, ::sled::Error> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if id >= self.bound.load(Ordering::Acquire) {
            self.reserve_past(id)?;
        }
        Ok(id)
    }

    /// Make the bound durable above `id` before `id` is handed out.
    fn reserve_past(&self, id: u64) -> Result<(), ::sled::Error> {
        let _reserving = self.reserving.lock().unwrap_or_else(|p| p.into_inner());
        let bound = self.bound.load(Ordering::Acquire);
        if id < bound {
            return Ok(()); // another taker reserved it meanwhile
        }
        let new = id.saturating_add(RESERVE);
        self.db.insert(BOUND_KEY, &new.to_be_bytes()[..])?;
        self.db.flush()?;
        self.bound.store(new, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_across_reopens_and_past_a_reservation() {
        let dir = tempfile::tempdir().expect("dir");
        let last = {
            let db = ::sled::open(dir.path()).expect("sled");
            // A store of an earlier release: its ids came from sled's generator.
            let earlier = (0..5).map(|_| db.generate_id().expect("id")).max();
            let ids = Ids::open(&db).expect("ids");
            let first = ids.take().expect("id");
            assert!(Some(first) > earlier, "{first} after {earlier:?}");
            // Cross a reservation: the bound moves and ids keep growing.
            ids.next.store(first + RESERVE - 2, Ordering::Relaxed);
            let taken: Vec<u64> = (0..4).map(|_| ids.take().expect("id")).collect();
            assert!(taken.windows(2).all(|w| w[0] < w[1]), "{taken:?}");
            let last = *taken.last().expect("ids");
            assert!(ids.bound.load(Ordering::Acquire) > last);
            last
            // Dropped without any further write: as a crash would leave it.
        };
        let db = super::super::tests::when_free(|| ::sled::open(dir.path()));
        let ids = Ids::open(&db).expect("ids");
        let after = ids.take().expect("id");
        assert!(after > last, "{after} after a reopen, {last} before");
    }
}
