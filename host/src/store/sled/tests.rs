//! Tests of the sled store as a whole (its parts test themselves).

use super::*;

/// Idle workers are woken by the store itself when jobs become claimable
/// (not by whoever submitted them, after the flush), once per job.
#[tokio::test]
async fn staging_a_pending_job_wakes_a_waiting_worker() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SledStore::open(dir.path()).expect("store"));
    let signal = store.ready_signal();
    let pending = || pending_noop();
    let (a, b) = (signal.notified(), signal.notified());
    tokio::pin!(a, b);
    a.as_mut().enable();
    b.as_mut().enable();
    store
        .job_insert_many(vec![pending(), pending()])
        .await
        .expect("insert");
    let wait = std::time::Duration::from_secs(10);
    tokio::time::timeout(wait, a)
        .await
        .expect("first waiter woken");
    tokio::time::timeout(wait, b)
        .await
        .expect("second waiter woken");
    // A scheduled job is not claimable: nobody is woken.
    let c = signal.notified();
    tokio::pin!(c);
    c.as_mut().enable();
    let mut later = pending();
    later.status = Status::Scheduled;
    later.run_at = Some(u64::MAX / 2);
    store.job_insert_many(vec![later]).await.expect("insert");
    let quiet = std::time::Duration::from_millis(50);
    assert!(
        tokio::time::timeout(quiet, c).await.is_err(),
        "woken for a scheduled job"
    );
}

/// A worker may claim a job as soon as it is staged, but `job_durable`
/// holds it back until the job's submit is flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Holding the gate across the awaits is the point: it pauses the writer.
#[expect(clippy::await_holding_lock)]
async fn a_claimed_job_is_durable_only_once_its_submit_is_flushed() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SledStore::open(dir.path()).expect("store"));
    let job = pending_noop();
    let id = job.id;
    let paused = store.staging.pause_flushes();
    let insert = {
        let store = store.clone();
        tokio::spawn(async move { store.job_insert_many(vec![job]).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let claimed = loop {
        if let Some(job) = store
            .job_claim("w", 2, &mut |_: &Job| true)
            .await
            .expect("claim")
        {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "never claimable");
        tokio::task::yield_now().await;
    };
    assert_eq!(claimed.id, id);
    let durable = store.job_durable(id);
    tokio::pin!(durable);
    let quiet = std::time::Duration::from_millis(100);
    assert!(
        tokio::time::timeout(quiet, &mut durable).await.is_err(),
        "durable before its flush"
    );
    assert!(
        !insert.is_finished(),
        "the submit returned before its flush"
    );
    drop(paused);
    let wait = std::time::Duration::from_secs(10);
    tokio::time::timeout(wait, durable)
        .await
        .expect("durable once flushed")
        .expect("no store error");
    insert.await.expect("task").expect("insert");
    // Long since durable: no wait.
    store.job_durable(id).await.expect("durable");
    assert!(store.lock_unflushed().is_empty());
}

/// A submit abandoned while it waits for its flush (its client hung up) does
/// not let its job's guest start early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Holding the gate across the awaits is the point: it pauses the writer.
#[expect(clippy::await_holding_lock)]
async fn an_abandoned_submit_still_holds_its_job_until_it_is_durable() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SledStore::open(dir.path()).expect("store"));
    let job = pending_noop();
    let id = job.id;
    let paused = store.staging.pause_flushes();
    let insert = {
        let store = store.clone();
        tokio::spawn(async move { store.job_insert_many(vec![job]).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store
        .job_claim("w", 2, &mut |_: &Job| true)
        .await
        .expect("claim")
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "never claimable");
        tokio::task::yield_now().await;
    }
    insert.abort();
    assert!(
        insert.await.is_err_and(|e| e.is_cancelled()),
        "the submit was not abandoned"
    );
    let durable = store.job_durable(id);
    tokio::pin!(durable);
    let quiet = std::time::Duration::from_millis(100);
    assert!(
        tokio::time::timeout(quiet, &mut durable).await.is_err(),
        "durable before its flush"
    );
    drop(paused);
    let wait = std::time::Duration::from_secs(10);
    tokio::time::timeout(wait, durable)
        .await
        .expect("durable once flushed")
        .expect("no store error");
}

/// A pending `noop` job with default settings.
pub(in crate::store) fn pending_noop() -> Job {
    Job::new(
        Uuid::now_v7(),
        "noop".into(),
        Kind::Generic,
        "{}".into(),
        Status::Pending,
        1,
    )
}

/// Open the store in `dir`, retrying while a database closed just before
/// still holds the directory's lock (sled's threads let go of it
/// asynchronously).
pub(in crate::store) async fn open_when_free(dir: &Path) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match SledStore::open(dir) {
            Ok(store) => return store,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "the old database still holds the lock");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("store: {e:?}"),
        }
    }
}
