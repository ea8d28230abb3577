//! The staging overlay's key: a sled key with its first bytes as a number.
//!
//! The overlay is a `BTreeMap` searched once per staged write, and Rust's
//! B-tree searches each node linearly: ~38 key comparisons per write with a
//! few thousand keys staged. Comparing two `IVec`s resolves both to slices
//! (each a branch on how the bytes are held) and calls `memcmp`; under
//! callgrind the store's finish-and-claim pass spent ~17% of its instructions
//! there. [`OverlayKey`] compares the first [`HEAD`] bytes as two big-endian
//! words first, which decides almost every comparison: the store's keys are
//! a one-byte prefix and an id or sequence number, unique within 16 bytes.

use std::borrow::Borrow;
use std::cmp::Ordering;

use ::sled::IVec;

/// Bytes of a key compared as one number.
const HEAD: usize = 16;

/// A key of the overlay, ordered as its bytes are.
///
/// The head is the key's first [`HEAD`] bytes, zero-padded, as two big-endian
/// words (compared in turn, as one 128-bit number would be). Heads order keys
/// as their bytes do wherever they differ: two keys that differ first at a
/// byte within the head compare as that byte does, and
/// a key that is a prefix of another has the lower or an equal head (its
/// padding is zeros). Equal heads fall back to the bytes. So the order, and
/// equality, are those of `[u8]`, which makes `Borrow<[u8]>` sound: the map is
/// searched by plain slices too.
#[derive(Debug, Clone)]
pub(super) struct OverlayKey {
    /// Two words rather than a `u128`, whose 16-byte alignment would pad
    /// every key (and so every search of a node) by a quarter.
    head: (u64, u64),
    key: IVec,
}

impl OverlayKey {
    pub(super) fn new(key: IVec) -> Self {
        let mut head = [0u8; HEAD];
        let n = key.len().min(HEAD);
        head[..n].copy_from_slice(&key[..n]);
        let head = u128::from_be_bytes(head);
        Self {
            head: ((head >> 64) as u64, head as u64),
            key,
        }
    }

    /// The key as sled takes it.
    pub(super) fn ivec(&self) -> &IVec {
        &self.key
    }
}

impl Ord for OverlayKey {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        self.head
            .cmp(&other.head)
            .then_with(|| self.key[..].cmp(&other.key[..]))
    }
}

impl PartialOrd for OverlayKey {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for OverlayKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && self.key == other.key
    }
}

impl Eq for OverlayKey {}

impl Borrow<[u8]> for OverlayKey {
    fn borrow(&self) -> &[u8] {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bytes: &[u8]) -> OverlayKey {
        OverlayKey::new(IVec::from(bytes))
    }

    /// Keys of every length around the head's, with bytes that make padding
    /// and prefixes matter.
    fn samples() -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        for len in [1, 2, 15, 16, 17, 29, 40] {
            for fill in [0u8, 1, 0x7f, 0xff] {
                let mut k = vec![fill; len];
                out.push(k.clone());
                k[len - 1] = fill.wrapping_add(1);
                out.push(k.clone());
                k[0] = b'j';
                out.push(k);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn overlay_keys_order_and_match_as_their_bytes_do() {
        let samples = samples();
        for a in &samples {
            for b in &samples {
                let (ka, kb) = (key(a), key(b));
                assert_eq!(ka.cmp(&kb), a[..].cmp(&b[..]), "{a:?} vs {b:?}");
                assert_eq!(ka == kb, a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn an_overlay_map_is_searched_by_plain_slices() {
        let mut map = std::collections::BTreeMap::new();
        for (n, k) in samples().into_iter().enumerate() {
            map.insert(key(&k), n);
        }
        for (n, k) in samples().into_iter().enumerate() {
            assert_eq!(map.get(&k[..]), Some(&n), "{k:?}");
        }
        let lo: &[u8] = b"j";
        let hi: &[u8] = b"k";
        let in_range: Vec<&[u8]> = map
            .range::<[u8], _>((std::ops::Bound::Included(lo), std::ops::Bound::Excluded(hi)))
            .map(|(k, _)| &k.ivec()[..])
            .collect();
        let expected: Vec<Vec<u8>> = samples()
            .into_iter()
            .filter(|k| &k[..] >= lo && &k[..] < hi)
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(
            in_range,
            expected.iter().map(|k| &k[..]).collect::<Vec<_>>()
        );
    }
}
