//! The audit changefeed: change records in the [`CHANGES`] log (see
//! [`super::logs`]: staged one key each, packed into one block per writer turn).

use super::SledStore;
use super::logs::{CHANGES, Entry};
use super::staging::Batch;
use crate::job::now_ms;
use crate::store::codec;
use crate::store::{ChangeRecord, StoreError, keys};

fn decode(entries: Vec<Entry>) -> Result<Vec<ChangeRecord>, StoreError> {
    entries
        .into_iter()
        .map(|(id, bytes)| {
            codec::decode(&bytes).map_err(|source| StoreError::Corrupt {
                key: format!("change {id}"),
                source,
            })
        })
        .collect()
}

/// Changes after id `after` (exclusive), oldest first.
pub(super) fn list_after(
    store: &SledStore,
    after: u64,
    limit: usize,
) -> Result<Vec<ChangeRecord>, StoreError> {
    decode(CHANGES.from(&store.staging, after.saturating_add(1), limit)?)
}

/// The `limit` changes before id `before` (exclusive), oldest first.
pub(super) fn list_before(
    store: &SledStore,
    before: u64,
    limit: usize,
) -> Result<Vec<ChangeRecord>, StoreError> {
    decode(CHANGES.before(&store.staging, before, limit)?)
}

/// Whether a change with this id exists.
pub(super) fn exists(store: &SledStore, id: u64) -> Result<bool, StoreError> {
    let next = CHANGES.from(&store.staging, id, 1)?;
    Ok(next.first().is_some_and(|(found, _)| *found == id))
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
        SledStore::encode(|| format!("change {id}"), &record)?,
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
        let store = super::super::tests::open_when_free(dir.path());
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
        store.staging.settled().await;
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
        store.staging.settled().await;
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
        assert!(err.to_string().contains("log block"), "{err}");
    }
}
