//! A scan of the store's keys in order, with the staged writes merged over
//! sled's (see [`Staging::scan`]).

use std::ops::Bound;
use std::sync::RwLockReadGuard;

use ::sled::IVec;

use super::staging::Staging;

/// The bounds of every key starting with `prefix`.
pub(super) fn prefix_bounds(prefix: &[u8]) -> (Bound<IVec>, Bound<IVec>) {
    let lo = Bound::Included(IVec::from(prefix));
    // The first key after every key with this prefix: increment the last byte
    // that is not 0xff (none: unbounded).
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (lo, Bound::Excluded(IVec::from(end)));
        }
    }
    (lo, Bound::Unbounded)
}

pub(super) type SledItem = Result<(IVec, IVec), ::sled::Error>;

/// A merged scan over staged and applied entries (see [`Staging::scan`]).
pub(super) struct Scan<'a> {
    staging: &'a Staging,
    /// The gate's read side, unless the caller holds it (see [`Staging::hold`]).
    _gate: Option<RwLockReadGuard<'a, ()>>,
    /// What is left of the range on the overlay's side.
    window: (Bound<IVec>, Bound<IVec>),
    rev: bool,
    sled: std::iter::Peekable<Box<dyn Iterator<Item = SledItem> + Send + 'a>>,
    /// The next staged entry, looked up but not yet merged.
    staged: Option<(IVec, Option<IVec>)>,
    staged_done: bool,
}

impl std::fmt::Debug for Scan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan").field("rev", &self.rev).finish()
    }
}

impl Scan<'_> {
    /// The next staged entry in scan order (the overlay is locked only for the
    /// look-up, so the scan may call back into the store).
    fn peek_staged(&mut self) {
        if self.staged.is_some() || self.staged_done {
            return;
        }
        match self.staging.next_staged(&self.window, self.rev) {
            Some((k, v)) => {
                let bound = Bound::Excluded(k.clone());
                if self.rev {
                    self.window.1 = bound;
                } else {
                    self.window.0 = bound;
                }
                self.staged = Some((k, v));
            }
            None => self.staged_done = true,
        }
    }

    /// Whether `a` comes before `b` in scan order.
    fn before(&self, a: &[u8], b: &[u8]) -> bool {
        if self.rev { a > b } else { a < b }
    }
}

impl Iterator for Scan<'_> {
    type Item = SledItem;

    fn next(&mut self) -> Option<SledItem> {
        loop {
            self.peek_staged();
            let sled_key = match self.sled.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                Some(Err(_)) => return self.sled.next(),
                None => None,
            };
            let take_staged = match (&self.staged, &sled_key) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((s, _)), Some(k)) => {
                    if s == k {
                        // The staged value shadows the applied one.
                        self.sled.next();
                        true
                    } else {
                        self.before(s, k)
                    }
                }
            };
            if !take_staged {
                return self.sled.next();
            }
            match self.staged.take() {
                Some((k, Some(v))) => return Some(Ok((k, v))),
                // A staged removal: the key is gone.
                _ => continue,
            }
        }
    }
}

impl<'a> Scan<'a> {
    /// A scan of `lo..hi` (`rev`: descending). `gate`: the gate's read side,
    /// or `None` when the caller holds it for the scan's whole life.
    pub(super) fn new(
        staging: &'a Staging,
        gate: Option<RwLockReadGuard<'a, ()>>,
        lo: Bound<IVec>,
        hi: Bound<IVec>,
        rev: bool,
    ) -> Self {
        let iter = staging.db().range::<IVec, _>((lo.clone(), hi.clone()));
        let sled: Box<dyn Iterator<Item = SledItem> + Send> = if rev {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        Scan {
            staging,
            _gate: gate,
            window: (lo, hi),
            rev,
            sled: sled.peekable(),
            staged: None,
            staged_done: false,
        }
    }
}
