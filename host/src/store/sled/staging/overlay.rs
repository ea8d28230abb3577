//! The overlay: every staged write sled does not have yet, as one map per
//! turn.
//!
//! Writes staged since the last turn are in `next`, the latest value of each
//! key; a turn takes that map whole and keeps it in `turns` until the writer
//! has applied it to sled, when the whole map leaves at once. A read looks at
//! the newest map first: a key staged again after its turn was taken shadows
//! the taken value.
//!
//! One map used to hold every unapplied write, each tagged with its
//! generation: a turn then walked the whole map for the writes to take, and the
//! settle walked it again to drop the applied ones, both under the staging
//! lock every store operation takes. In a drain a turn is ~500 jobs and ~2,500
//! keys: the settle held that lock for hundreds of microseconds per turn,
//! stalling every worker's finish behind it (and the entries' drops ran under
//! it too). Now a settle moves maps out, and a turn's map is shared (`Arc`)
//! between the overlay and the writer, which lists its writes after letting
//! go of the lock ([`Taken::writes`]): under the lock a turn is a pointer
//! moved, not thousands of entries walked and cloned.

use std::collections::{BTreeMap, VecDeque, btree_map};
use std::ops::Bound;
use std::sync::Arc;

use ::sled::IVec;

use super::super::commit::Writes;
use super::super::overlay_key::OverlayKey;

/// A key's staged state.
#[derive(Debug)]
pub(super) struct Entry {
    /// `None`: removed.
    pub(super) value: Option<IVec>,
    /// sled does not have the key, and every staged write of it since is still
    /// waiting for the writer: if it ends removed, sled need not hear of it (a
    /// job claimed and finished within one writer turn costs its queue and
    /// running entries nothing).
    fresh: bool,
}

/// One turn's writes, the latest value of each key.
pub(super) type TurnMap = BTreeMap<OverlayKey, Entry>;

#[derive(Debug, Default)]
pub(super) struct Overlay {
    /// Staged since the last turn was taken.
    next: TurnMap,
    /// Turns taken and not yet in sled, oldest first, each with the
    /// generation it reaches.
    turns: VecDeque<(u64, Arc<TurnMap>)>,
}

/// A turn's map as taken ([`Overlay::take`]), shared with the overlay, which
/// keeps it readable until the turn settles.
#[derive(Debug)]
pub(super) struct Taken(Option<Arc<TurnMap>>);

impl Taken {
    /// The turn's writes: the latest value of each key, except keys sled
    /// never had that end removed. Listed by the writer after it let go of
    /// the staging lock.
    pub(super) fn writes(&self) -> Writes {
        let Some(map) = &self.0 else {
            return Writes::new();
        };
        let mut writes = Writes::with_capacity(map.len());
        for (k, e) in map.iter() {
            if !(e.fresh && e.value.is_none()) {
                writes.push((k.ivec().clone(), e.value.clone()));
            }
        }
        writes
    }
}

impl Overlay {
    /// Stage `value` (`None`: a removal) for `key`; `new`: sled does not have
    /// the key (an index entry that did not exist).
    pub(super) fn stage(&mut self, key: IVec, value: Option<IVec>, new: bool) {
        match self.next.entry(OverlayKey::new(key)) {
            // Staged again before its turn: still fresh if it was.
            btree_map::Entry::Occupied(mut slot) => slot.get_mut().value = value,
            // First staged since the last turn (which may have taken the key:
            // then sled has or will have it, and a removal must reach it).
            btree_map::Entry::Vacant(slot) => {
                let fresh = value.is_some() && new;
                slot.insert(Entry { value, fresh });
            }
        }
    }

    /// The staged entry of `key`, newest first.
    pub(super) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.maps().find_map(|map| map.get(key))
    }

    /// The first staged key of `window` in key order (`rev`: the last), with
    /// its newest value.
    pub(super) fn first_in(
        &self,
        window: (Bound<&[u8]>, Bound<&[u8]>),
        rev: bool,
    ) -> Option<(&OverlayKey, &Entry)> {
        let mut best: Option<(&OverlayKey, &Entry)> = None;
        // Newest map first: on a tie the newer value is kept.
        for map in self.maps() {
            let mut range = map.range::<[u8], _>(window);
            let Some(found) = (if rev { range.next_back() } else { range.next() }) else {
                continue;
            };
            let better = best.is_none_or(|(b, _)| if rev { found.0 > b } else { found.0 < b });
            if better {
                best = Some(found);
            }
        }
        best
    }

    /// Take the writes staged since the last turn, as a turn reaching
    /// `generation` ([`Taken::writes`] lists them). They stay readable until
    /// [`Overlay::settle`].
    pub(super) fn take(&mut self, generation: u64) -> Taken {
        if self.next.is_empty() {
            return Taken(None);
        }
        let map = Arc::new(std::mem::take(&mut self.next));
        self.turns.push_back((generation, map.clone()));
        Taken(Some(map))
    }

    /// The turns up to `generation` are in sled: out of the overlay. Returned
    /// for the caller to drop once it has let go of the staging lock.
    pub(super) fn settle(&mut self, generation: u64) -> Vec<Arc<TurnMap>> {
        let mut settled = Vec::new();
        while self.turns.front().is_some_and(|(g, _)| *g <= generation) {
            settled.extend(self.turns.pop_front().map(|(_, map)| map));
        }
        settled
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.next.is_empty() && self.turns.is_empty()
    }

    /// Newest first.
    fn maps(&self) -> impl Iterator<Item = &TurnMap> {
        std::iter::once(&self.next).chain(self.turns.iter().rev().map(|(_, map)| &**map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> IVec {
        IVec::from(s.as_bytes())
    }

    fn value(overlay: &Overlay, key: &str) -> Option<Option<IVec>> {
        overlay.get(key.as_bytes()).map(|e| e.value.clone())
    }

    fn first(overlay: &Overlay, rev: bool) -> Option<(IVec, Option<IVec>)> {
        overlay
            .first_in((Bound::Unbounded, Bound::Unbounded), rev)
            .map(|(k, e)| (k.ivec().clone(), e.value.clone()))
    }

    #[test]
    fn a_key_staged_again_after_its_turn_shadows_the_taken_value() {
        let mut overlay = Overlay::default();
        overlay.stage(iv("k"), Some(iv("1")), false);
        overlay.stage(iv("m"), Some(iv("1")), false);
        let taken = overlay.take(1);
        overlay.stage(iv("k"), Some(iv("2")), false);
        // Listed after later staging (the writer lists a turn once it has
        // let go of the lock): the turn as it was taken.
        assert_eq!(
            taken.writes(),
            [(iv("k"), Some(iv("1"))), (iv("m"), Some(iv("1")))]
        );
        assert_eq!(value(&overlay, "k"), Some(Some(iv("2"))), "the newer value");
        assert_eq!(value(&overlay, "m"), Some(Some(iv("1"))), "the taken value");
        assert_eq!(first(&overlay, false), Some((iv("k"), Some(iv("2")))));
        assert_eq!(first(&overlay, true), Some((iv("m"), Some(iv("1")))));
        // The first turn is in sled: only what was staged since stays.
        assert_eq!(overlay.settle(1).len(), 1);
        assert_eq!(value(&overlay, "m"), None);
        assert_eq!(value(&overlay, "k"), Some(Some(iv("2"))));
        assert_eq!(overlay.take(2).writes(), [(iv("k"), Some(iv("2")))]);
        assert!(!overlay.is_empty(), "taken, not settled");
        assert_eq!(overlay.settle(2).len(), 1);
        assert!(overlay.is_empty());
    }

    #[test]
    fn turns_settle_in_order_and_only_up_to_the_generation() {
        let mut overlay = Overlay::default();
        for (generation, key) in [(3, "a"), (5, "b"), (9, "c")] {
            overlay.stage(iv(key), None, false);
            overlay.take(generation);
        }
        assert!(
            overlay.take(10).writes().is_empty(),
            "nothing staged: no write"
        );
        assert_eq!(overlay.settle(6).len(), 2, "the turns of 3 and 5");
        assert_eq!(value(&overlay, "b"), None);
        assert_eq!(value(&overlay, "c"), Some(None), "a removal stays staged");
        assert_eq!(overlay.settle(9).len(), 1);
        assert!(overlay.is_empty());
    }

    #[test]
    fn a_new_key_removed_before_its_turn_is_not_written() {
        let mut overlay = Overlay::default();
        overlay.stage(iv("q1"), Some(iv("")), true);
        overlay.stage(iv("q1"), None, false);
        overlay.stage(iv("q2"), Some(iv("")), true);
        assert_eq!(overlay.take(1).writes(), [(iv("q2"), Some(iv("")))]);
        // Taken: sled will have it, so its removal is written.
        overlay.stage(iv("q2"), None, false);
        assert_eq!(overlay.take(2).writes(), [(iv("q2"), None)]);
    }
}
