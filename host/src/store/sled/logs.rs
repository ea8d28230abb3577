//! Append-only key logs, packed per writer turn: the audit changefeed and the
//! list of every job in creation order.
//!
//! Each entry is staged under its own key (the log's `single` prefix, an 8-byte
//! big-endian sequence number, then the rest of the key) in the operation that
//! made it, so reads see it at once. The writer then packs every entry of its
//! turn into **one** block (the log's `block` prefix, first sequence number) in
//! the same sled batch ([`pack`]). Entries inserted one key each were among the
//! costliest writes: their keys only grow, so every one landed on sled's last
//! leaf, which sled clones on each write and splits every 16 keys. A noop drain
//! without its three changefeed records per job ran 50-70% faster, and a bulk
//! submit without the creation-order entry 20-30% faster; a block costs one
//! write per turn.
//!
//! Sequence numbers are taken and staged in order (changefeed ids under the
//! store's order lock, creation sequences under its write lock), and a turn
//! takes everything staged before it, so each block's numbers are all above the
//! previous block's: the block that may hold `n` is the last one starting at or
//! before `n`. Single keys written by earlier releases are still read.
//!
//! A read looks at the blocks in sled and at the single keys (staged, or from
//! earlier releases) while [`Staging::hold`](super::staging::Staging::hold)
//! keeps applied entries in the overlay: an entry is then found in one place or
//! both (duplicates are dropped), never in neither.

use std::collections::BTreeMap;
use std::ops::Bound;

use ::sled::IVec;

use super::staging::{Held, Staging};
use crate::store::codec::CodecError;
use crate::store::{StoreError, keys};

/// One append-only log: the prefix of its single keys and of its blocks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Log {
    single: u8,
    block: u8,
}

/// The changefeed: `c` + id -> the change record.
pub(super) const CHANGES: Log = Log {
    single: keys::CHANGE,
    block: keys::CHANGE_BLOCK,
};

/// Every job in creation order: `a` + creation sequence + job id -> nothing.
pub(super) const CREATED: Log = Log {
    single: keys::ALL,
    block: keys::ALL_BLOCK,
};

const LOGS: [Log; 2] = [CHANGES, CREATED];

/// The first byte of a block, layout version 1: then, per entry, its sequence
/// number (8 bytes), the length of its payload (4 bytes, both big-endian) and
/// the payload: the rest of its single key, then its value.
const BLOCK_V1: u8 = 1;

/// An entry: its sequence number and payload.
pub(super) type Entry = (u64, Vec<u8>);

impl Log {
    /// The sequence number and payload of a single key of this log.
    fn entry<'a>(self, key: &'a [u8], value: &'a [u8]) -> Option<(u64, [&'a [u8]; 2])> {
        match key {
            [first, seq @ ..] if *first == self.single && seq.len() >= 8 => {
                let (seq, rest) = seq.split_at(8);
                Some((u64::from_be_bytes(seq.try_into().ok()?), [rest, value]))
            }
            _ => None,
        }
    }

    fn single_key(self, seq: u64) -> IVec {
        IVec::from(&keys::seq_key(self.single, seq)[..])
    }

    fn block_key(self, seq: u64) -> IVec {
        IVec::from(&keys::seq_key(self.block, seq)[..])
    }

    /// The block that may hold `seq` (the last one starting at or before it).
    fn block_holding(self, held: Held<'_>, seq: u64) -> Result<Option<(IVec, IVec)>, StoreError> {
        let lo = Bound::Included(self.block_key(0));
        let hi = Bound::Included(self.block_key(seq));
        Ok(held.applied(lo, hi).next_back().transpose()?)
    }

    /// Up to `limit` entries numbered `from` or more, in order.
    pub(super) fn from(
        self,
        staging: &Staging,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        staging.hold(|held| {
            let mut found = BTreeMap::new();
            let start = match self.block_holding(held, from)? {
                Some((key, _)) => key,
                None => self.block_key(from),
            };
            let end = Bound::Excluded(IVec::from(&[self.block + 1][..]));
            'blocks: for block in held.applied(Bound::Included(start), end) {
                let (_, block) = block?;
                for (seq, payload) in read_block(&block)? {
                    if seq >= from {
                        found.insert(seq, payload.to_vec());
                        if found.len() >= limit {
                            break 'blocks;
                        }
                    }
                }
            }
            let singles = held.scan(
                Bound::Included(self.single_key(from)),
                Bound::Excluded(IVec::from(&[self.single + 1][..])),
                false,
            );
            for single in singles.take(limit) {
                let (key, value) = single?;
                if let Some((seq, payload)) = self.entry(&key, &value) {
                    found.insert(seq, payload.concat());
                }
            }
            Ok(found.into_iter().take(limit).collect())
        })
    }

    /// The last `limit` entries numbered below `before`, in order.
    pub(super) fn before(
        self,
        staging: &Staging,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        staging.hold(|held| {
            let mut found = BTreeMap::new();
            let blocks = held.applied(
                Bound::Included(self.block_key(0)),
                Bound::Excluded(self.block_key(before)),
            );
            for block in blocks.rev() {
                let (_, block) = block?;
                for (seq, payload) in read_block(&block)? {
                    if seq < before {
                        found.insert(seq, payload.to_vec());
                    }
                }
                if found.len() >= limit {
                    break;
                }
            }
            let singles = held.scan(
                Bound::Included(self.single_key(0)),
                Bound::Excluded(self.single_key(before)),
                true,
            );
            for single in singles.take(limit) {
                let (key, value) = single?;
                if let Some((seq, payload)) = self.entry(&key, &value) {
                    found.insert(seq, payload.concat());
                }
            }
            let skip = found.len().saturating_sub(limit);
            Ok(found.into_iter().skip(skip).collect())
        })
    }
}

/// Replace each log's entries among the turn's `writes` with one block.
pub(super) fn pack(writes: &mut Vec<(IVec, Option<IVec>)>) {
    for log in LOGS {
        let mut block = vec![BLOCK_V1];
        let mut first = u64::MAX;
        writes.retain(|(key, value)| {
            let Some(value) = value else { return true };
            let Some((seq, payload)) = log.entry(key, value) else {
                return true;
            };
            first = first.min(seq);
            let len: usize = payload.iter().map(|p| p.len()).sum();
            block.extend_from_slice(&seq.to_be_bytes());
            block.extend_from_slice(&(len as u32).to_be_bytes());
            for part in payload {
                block.extend_from_slice(part);
            }
            false
        });
        if first != u64::MAX {
            writes.push((log.block_key(first), Some(IVec::from(block))));
        }
    }
}

/// A block's entries: (sequence number, payload), in order.
fn frames(block: &[u8]) -> Result<Vec<(u64, &[u8])>, CodecError> {
    let mut rest = match block.split_first() {
        Some((&BLOCK_V1, rest)) => rest,
        Some((&other, _)) => return Err(CodecError::UnknownFormat(other)),
        None => return Err(CodecError::Empty),
    };
    let mut out = Vec::new();
    while let Some((head, tail)) = rest.split_first_chunk::<12>() {
        let (seq, len) = head.split_at(8);
        let seq = u64::from_be_bytes(seq.try_into().map_err(|_| CodecError::Truncated)?);
        let len = u32::from_be_bytes(len.try_into().map_err(|_| CodecError::Truncated)?) as usize;
        if tail.len() < len {
            return Err(CodecError::Truncated);
        }
        out.push((seq, &tail[..len]));
        rest = &tail[len..];
    }
    if rest.is_empty() {
        Ok(out)
    } else {
        Err(CodecError::Truncated)
    }
}

/// [`frames`], or the store's error naming the block.
fn read_block(block: &[u8]) -> Result<Vec<(u64, &[u8])>, StoreError> {
    frames(block).map_err(|source| StoreError::Corrupt {
        key: format!("log block of {} bytes", block.len()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::job::Job;
    use crate::store::{JobFilter, Store};

    fn job() -> Job {
        crate::store::sled::tests::pending_noop()
    }

    /// The jobs list pages through every job once, in creation order, whether
    /// its entry is packed in a block, still staged, or a single key written
    /// by an earlier release.
    #[tokio::test]
    async fn the_jobs_list_reads_packed_staged_and_old_entries_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        // An earlier release: records and one `a` key per job.
        let mut all = Vec::new();
        {
            let db = ::sled::open(dir.path()).expect("sled");
            for _ in 0..3 {
                let mut j = job();
                j.seq = db.generate_id().expect("id") + 2;
                j.created_seq = j.seq;
                db.insert(keys::job(j.id), serde_json::to_vec(&j).expect("json"))
                    .expect("record");
                db.insert(keys::all(j.created_seq, j.id), Vec::<u8>::new())
                    .expect("entry");
                all.push(j.id);
            }
            db.flush().expect("flush");
        }
        let store = crate::store::sled::tests::open_when_free(dir.path());
        // Each insert waits for its flush: a block each.
        for _ in 0..4 {
            let jobs = vec![job(), job(), job()];
            all.extend(jobs.iter().map(|j| j.id));
            store.job_insert_many(jobs).await.expect("insert");
        }
        store.staging.settled().await;
        let blocks = store.staging.db().scan_prefix([keys::ALL_BLOCK]).count();
        assert!(blocks >= 4, "{blocks} blocks for four flushed inserts");
        assert_eq!(store.staging.db().scan_prefix([keys::ALL]).count(), 3);

        let created = CREATED.from(&store.staging, 0, 1000).expect("log");
        let ids: Vec<Uuid> = created
            .iter()
            .map(|(_, id)| Uuid::from_slice(id).expect("id"))
            .collect();
        assert_eq!(ids, all);
        let seqs: Vec<u64> = created.iter().map(|(s, _)| *s).collect();
        for (i, &seq) in seqs.iter().enumerate() {
            for limit in [1, 2, 5] {
                let from = CREATED.from(&store.staging, seq, limit).expect("from");
                let want: Vec<u64> = seqs[i..].iter().take(limit).copied().collect();
                assert_eq!(from.iter().map(|e| e.0).collect::<Vec<_>>(), want);
                let before = CREATED.before(&store.staging, seq, limit).expect("before");
                let want = seqs[i.saturating_sub(limit)..i].to_vec();
                assert_eq!(before.iter().map(|e| e.0).collect::<Vec<_>>(), want);
            }
        }
        // Paging two at a time, through the cursor, sees every job once.
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let (page, next) = store
                .job_list(&JobFilter::default(), cursor, 2, 100)
                .await
                .expect("list");
            seen.extend(page.iter().map(|j| j.id));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, all);
    }
}
