//! The audit changefeed in sled.
//!
//! Each change is staged under its own key (`c`, id) in the operation that made
//! it, so reads see it at once. The writer then packs every change of its turn
//! into **one** block (`C`, first id) in the same sled batch ([`pack`]). A noop
//! job makes three changes (pending, running, success), and inserted one by one
//! they were the drain's costliest writes: their keys only grow, so every one
//! landed on sled's last leaf, which sled clones on each write and splits every
//! 16 keys. A drain without them ran 50-70% faster; one block per turn costs
//! one write per a few hundred changes.
//!
//! Ids are taken and staged under the store's order lock, and a turn takes
//! everything staged before it, so each block's ids are all above the previous
//! block's: the block that may hold id `n` is the last one starting at or
//! before `n`. Changes written one key each by earlier releases are still read.
//!
//! A read looks at the blocks in sled and at the single keys (staged, or from
//! earlier releases) while [`Staging::hold`](super::staging::Staging::hold)
//! keeps applied entries in the overlay: a change is then found in one place
//! or both (duplicates are dropped), never in neither.

use std::collections::BTreeMap;
use std::ops::Bound;

use ::sled::IVec;

use super::SledStore;
use super::staging::{Batch, Held};
use crate::job::now_ms;
use crate::store::codec::{self, CodecError};
use crate::store::{ChangeRecord, StoreError, keys};

/// The first byte of a block, layout version 1: then, per change, its id (8
/// bytes), the length of its record (4 bytes, both big-endian) and the record
/// as stored under its own key.
const BLOCK_V1: u8 = 1;

/// Replace the turn's changes in `writes` with one block.
pub(super) fn pack(writes: &mut Vec<(IVec, Option<IVec>)>) {
    let mut block = vec![BLOCK_V1];
    let mut first = u64::MAX;
    writes.retain(|(key, value)| match (change_id(key), value) {
        (Some(id), Some(record)) => {
            first = first.min(id);
            block.extend_from_slice(&id.to_be_bytes());
            block.extend_from_slice(&(record.len() as u32).to_be_bytes());
            block.extend_from_slice(record);
            false
        }
        _ => true,
    });
    if first != u64::MAX {
        let key = keys::seq_key(keys::CHANGE_BLOCK, first);
        writes.push((IVec::from(&key[..]), Some(IVec::from(block))));
    }
}

/// The id of a single change's key.
fn change_id(key: &[u8]) -> Option<u64> {
    match key {
        [keys::CHANGE, id @ ..] => Some(u64::from_be_bytes(id.try_into().ok()?)),
        _ => None,
    }
}

/// A block's changes: (id, record bytes), in id order.
fn frames(block: &[u8]) -> Result<Vec<(u64, &[u8])>, CodecError> {
    let mut rest = match block.split_first() {
        Some((&BLOCK_V1, rest)) => rest,
        Some((&other, _)) => return Err(CodecError::UnknownFormat(other)),
        None => return Err(CodecError::Empty),
    };
    let mut out = Vec::new();
    while let Some((head, tail)) = rest.split_first_chunk::<12>() {
        let (id, len) = head.split_at(8);
        let id = u64::from_be_bytes(id.try_into().map_err(|_| CodecError::Truncated)?);
        let len = u32::from_be_bytes(len.try_into().map_err(|_| CodecError::Truncated)?) as usize;
        if tail.len() < len {
            return Err(CodecError::Truncated);
        }
        out.push((id, &tail[..len]));
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
        key: format!("change block of {} bytes", block.len()),
        source,
    })
}

fn decode(id: u64, bytes: &[u8]) -> Result<ChangeRecord, StoreError> {
    codec::decode(bytes).map_err(|source| StoreError::Corrupt {
        key: format!("change {id}"),
        source,
    })
}

fn block_key(id: u64) -> Bound<IVec> {
    Bound::Included(IVec::from(&keys::seq_key(keys::CHANGE_BLOCK, id)[..]))
}

fn block_end() -> Bound<IVec> {
    Bound::Excluded(IVec::from(&[keys::CHANGE_BLOCK + 1][..]))
}

/// The changes in sled's block that may hold `id` (the last one starting at or
/// before it), or `None`.
fn block_holding(held: Held<'_>, id: u64) -> Result<Option<IVec>, StoreError> {
    match held.applied(block_key(0), block_key(id)).next_back() {
        Some(entry) => Ok(Some(entry?.1)),
        None => Ok(None),
    }
}

/// Changes after id `after` (exclusive), oldest first.
pub(super) fn list_after(
    store: &SledStore,
    after: u64,
    limit: usize,
) -> Result<Vec<ChangeRecord>, StoreError> {
    let from = after.saturating_add(1);
    store.staging.hold(|held| {
        let mut found = BTreeMap::new();
        let start = match held.applied(block_key(0), block_key(from)).next_back() {
            Some(entry) => Bound::Included(entry?.0),
            None => block_key(from),
        };
        'blocks: for entry in held.applied(start, block_end()) {
            let (_, block) = entry?;
            for (id, bytes) in read_block(&block)? {
                if id >= from {
                    found.insert(id, decode(id, bytes)?);
                    if found.len() >= limit {
                        break 'blocks;
                    }
                }
            }
        }
        let singles = held.scan(
            Bound::Included(IVec::from(&keys::seq_key(keys::CHANGE, from)[..])),
            Bound::Excluded(IVec::from(&[keys::CHANGE + 1][..])),
            false,
        );
        for entry in singles.take(limit) {
            let (key, bytes) = entry?;
            if let Some(id) = change_id(&key) {
                found.insert(id, decode(id, &bytes)?);
            }
        }
        Ok(found.into_values().take(limit).collect())
    })
}

/// The `limit` changes before id `before` (exclusive), oldest first.
pub(super) fn list_before(
    store: &SledStore,
    before: u64,
    limit: usize,
) -> Result<Vec<ChangeRecord>, StoreError> {
    store.staging.hold(|held| {
        let mut found = BTreeMap::new();
        let blocks = held.applied(
            block_key(0),
            Bound::Excluded(IVec::from(&keys::seq_key(keys::CHANGE_BLOCK, before)[..])),
        );
        for entry in blocks.rev() {
            let (_, block) = entry?;
            for (id, bytes) in read_block(&block)? {
                if id < before {
                    found.insert(id, decode(id, bytes)?);
                }
            }
            if found.len() >= limit {
                break;
            }
        }
        let singles = held.scan(
            Bound::Included(IVec::from(&keys::seq_key(keys::CHANGE, 0)[..])),
            Bound::Excluded(IVec::from(&keys::seq_key(keys::CHANGE, before)[..])),
            true,
        );
        for entry in singles.take(limit) {
            let (key, bytes) = entry?;
            if let Some(id) = change_id(&key) {
                found.insert(id, decode(id, &bytes)?);
            }
        }
        let skip = found.len().saturating_sub(limit);
        Ok(found.into_values().skip(skip).collect())
    })
}

/// Whether a change with this id exists.
pub(super) fn exists(store: &SledStore, id: u64) -> Result<bool, StoreError> {
    store.staging.hold(|held| {
        if held.get(&keys::seq_key(keys::CHANGE, id))?.is_some() {
            return Ok(true);
        }
        let Some(block) = block_holding(held, id)? else {
            return Ok(false);
        };
        Ok(read_block(&block)?.iter().any(|(found, _)| *found == id))
    })
}

/// Append a change that is not a job's status change (plugins).
pub(super) fn append(store: &SledStore, mut record: ChangeRecord) -> Result<u64, StoreError> {
    let order = store.order();
    let id = store.next_change_id(&order)?;
    record.id = id;
    if record.created_at == 0 {
        record.created_at = now_ms();
    }
    let mut batch = Batch::default();
    batch.insert(
        &keys::seq_key(keys::CHANGE, id)[..],
        SledStore::encode(format!("change {id}"), &record)?,
    );
    store.apply(batch, order)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn change(name: &str) -> ChangeRecord {
        ChangeRecord {
            id: 0,
            created_at: 0,
            category: "plugin".into(),
            job_id: None,
            name: name.into(),
            status: "loaded".into(),
            version: 0,
            plugin_digest: None,
        }
    }

    fn ids(records: &[ChangeRecord]) -> Vec<u64> {
        records.iter().map(|c| c.id).collect()
    }

    /// Every read, from every cursor, sees the same changes whether they are
    /// packed in blocks in sled, still staged one key each, or single keys
    /// written by an earlier release.
    #[tokio::test]
    async fn packed_staged_and_old_single_changes_read_as_one_feed() {
        let dir = tempfile::tempdir().expect("dir");
        // An earlier release's changes: one key each, JSON.
        let mut old = Vec::new();
        {
            let db = ::sled::open(dir.path()).expect("sled");
            for n in 0..3 {
                let mut c = change(&format!("old{n}"));
                c.id = db.generate_id().expect("id") + 2;
                db.insert(
                    keys::seq_key(keys::CHANGE, c.id),
                    serde_json::to_vec(&c).expect("json"),
                )
                .expect("insert");
                old.push(c.id);
            }
            db.flush().expect("flush");
        }
        let store = super::super::tests::open_when_free(dir.path()).await;
        let mut all = old.clone();
        // Three writer turns of several changes (three blocks), then a few
        // that may still be staged.
        for turn in 0..3 {
            for n in 0..5 {
                all.push(
                    store
                        .change_append(change(&format!("t{turn}n{n}")))
                        .await
                        .expect("append"),
                );
            }
            store.flush().await.expect("flush");
        }
        for n in 0..2 {
            all.push(
                store
                    .change_append(change(&format!("s{n}")))
                    .await
                    .expect("append"),
            );
        }
        assert!(all.windows(2).all(|w| w[0] < w[1]), "ids grow: {all:?}");
        let blocks = store.staging.db().scan_prefix([keys::CHANGE_BLOCK]).count();
        assert!(blocks >= 3, "{blocks} blocks for three flushed turns");

        for limit in [1, 2, 4, 100] {
            for (i, &id) in all.iter().enumerate() {
                let after = store.change_list(id, limit).await.expect("after");
                let want: Vec<u64> = all[i + 1..].iter().take(limit).copied().collect();
                assert_eq!(ids(&after), want, "after {id}, limit {limit}");
                let before = store.change_list_before(id, limit).await.expect("before");
                let want: Vec<u64> = all[i.saturating_sub(limit)..i].to_vec();
                assert_eq!(ids(&before), want, "before {id}, limit {limit}");
                // A cursor between two ids reads like the id below it.
                let between = store.change_list(id + 1, limit).await.expect("after");
                if all.get(i + 1) != Some(&(id + 1)) {
                    let want: Vec<u64> = all[i + 1..].iter().take(limit).copied().collect();
                    assert_eq!(ids(&between), want, "after {}", id + 1);
                }
            }
        }
        let first = store.change_list(0, 1000).await.expect("all");
        assert_eq!(ids(&first), all);
        assert_eq!(first[0].name, "old0");
        assert_eq!(first.last().expect("last").name, "s1");
        let latest = store.change_list_before(u64::MAX, 1000).await.expect("all");
        assert_eq!(ids(&latest), all);
        for &id in &all {
            assert!(store.change_exists(id).await.expect("exists"), "{id}");
            if !all.contains(&(id + 1)) {
                assert!(!store.change_exists(id + 1).await.expect("exists"));
            }
        }
        assert!(!store.change_exists(0).await.expect("exists"));
    }

    /// A damaged block is a corruption error naming the changefeed, not a panic
    /// or a silently shorter feed.
    #[tokio::test]
    async fn a_damaged_block_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let store = SledStore::open(dir.path()).expect("store");
        let id = store.change_append(change("a")).await.expect("append");
        store.flush().await.expect("flush");
        let db = store.staging.db();
        let (key, block) = db
            .scan_prefix([keys::CHANGE_BLOCK])
            .next()
            .expect("a block")
            .expect("read");
        for cut in [0, 5, 13, block.len() - 1] {
            db.insert(&key, &block[..cut]).expect("damage");
            let err = store.change_list(0, 10).await.expect_err("damaged");
            assert!(
                matches!(err, StoreError::Corrupt { .. }),
                "cut {cut}: {err}"
            );
            assert!(store.change_exists(id).await.is_err(), "cut {cut}");
        }
        db.insert(&key, &[9u8, 0][..]).expect("damage");
        let err = store
            .change_list_before(u64::MAX, 10)
            .await
            .expect_err("damaged");
        assert!(err.to_string().contains("change block"), "{err}");
    }
}
