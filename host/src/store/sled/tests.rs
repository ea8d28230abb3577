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

/// The webhook dispatcher is woken when a delivery is staged, and not by
/// writes that stage none (a drain's claims and finishes).
#[tokio::test]
async fn staging_a_webhook_delivery_wakes_the_dispatcher() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SledStore::open(dir.path()).expect("store");
    let signal = store.hook_signal();
    let quiet = std::time::Duration::from_millis(50);
    store
        .job_insert_many(vec![pending_noop()])
        .await
        .expect("insert");
    assert!(
        tokio::time::timeout(quiet, signal.notified())
            .await
            .is_err(),
        "woken by a job without a webhook"
    );
    let mut hooked = pending_noop();
    hooked.status_hook = Some("http://127.0.0.1:9/hook".into());
    store.job_insert_many(vec![hooked]).await.expect("insert");
    // Staged before anyone waits: the permit is kept for the next wait.
    tokio::time::timeout(std::time::Duration::from_secs(10), signal.notified())
        .await
        .expect("woken by a staged delivery");
}

/// A claim takes a queued job's latest record, whether the queue kept it
/// (staged by this process, changed while queued) or reads it from sled
/// (queued before the store opened).
#[tokio::test]
async fn a_claim_takes_the_latest_record_of_a_queued_job() {
    let dir = tempfile::tempdir().expect("dir");
    let (kept, loaded) = (pending_noop(), pending_noop());
    {
        let store = SledStore::open(dir.path()).expect("store");
        store
            .job_insert_many(vec![loaded.clone()])
            .await
            .expect("insert");
        store
            .job_event(loaded.id, "Noted", "before the restart")
            .await
            .expect("event");
    }
    let store = open_when_free(dir.path());
    store
        .job_insert_many(vec![kept.clone()])
        .await
        .expect("insert");
    store
        .job_event(kept.id, "Noted", "while queued")
        .await
        .expect("event");
    let mut claimed = Vec::new();
    while let Some(job) = store
        .job_claim("w", 2, &mut |_: &Job| true)
        .await
        .expect("claim")
    {
        claimed.push(job);
    }
    assert_eq!(claimed.len(), 2, "both queued jobs claimed once");
    for (job, note) in [(&loaded, "before the restart"), (&kept, "while queued")] {
        let got = claimed.iter().find(|j| j.id == job.id).expect("claimed");
        assert_eq!(got.status, Status::Running);
        assert!(
            got.events
                .iter()
                .any(|e| e.kind == "Noted" && e.message == note),
            "claimed without its event {note:?}: {:?}",
            got.events
        );
    }
}

/// Queued jobs reach sled packed in blocks (no key per job) and come back
/// from them after a reopen, each once, in claim order; claimed ones are
/// retired from their blocks, and emptied blocks go.
#[tokio::test]
async fn queued_jobs_are_packed_and_come_back_in_order_after_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let mut jobs: Vec<Job> = (0..300)
        .map(|i| {
            let mut job = pending_noop();
            job.priority = i % 3;
            job
        })
        .collect();
    let prefixed = |store: &SledStore, prefix: u8| store.staging.db().scan_prefix([prefix]).count();
    {
        let store = SledStore::open(dir.path()).expect("store");
        for batch in jobs.chunks(100) {
            store.job_insert_many(batch.to_vec()).await.expect("insert");
        }
        store.staging.durable().await.expect("durable");
        let mut claimed = Vec::new();
        for _ in 0..100 {
            let job = store
                .job_claim("w", 2, &mut |_: &Job| true)
                .await
                .expect("claim");
            claimed.push(job.expect("a queued job").id);
        }
        store.staging.durable().await.expect("durable");
        store.staging.settled().await;
        assert_eq!(prefixed(&store, keys::QUEUE), 0, "no single queue keys");
        // Three turns of three priorities: nine blocks, three of them (those
        // of priority 2) emptied by the claims.
        assert_eq!(prefixed(&store, keys::QUEUE_BLOCK), 6);
        // Claim order: the highest priority first, then submission order.
        let mut order = jobs.clone();
        order.sort_by_key(|j| std::cmp::Reverse(j.priority));
        assert_eq!(
            claimed,
            order[..100].iter().map(|j| j.id).collect::<Vec<_>>()
        );
        jobs = order.split_off(100);
    }
    let store = open_when_free(dir.path());
    let mut claimed = Vec::new();
    while let Some(job) = store
        .job_claim("w", 2, &mut |_: &Job| true)
        .await
        .expect("claim")
    {
        claimed.push(job.id);
    }
    assert_eq!(claimed, jobs.iter().map(|j| j.id).collect::<Vec<_>>());
    store.staging.durable().await.expect("durable");
    store.staging.settled().await;
    assert_eq!(
        prefixed(&store, keys::QUEUE_BLOCK),
        0,
        "every block retired"
    );
}

/// A worker's finish and its next claim are one write: both happen, or (the
/// write fails) neither, and the next job stays queued for a later claim.
#[tokio::test]
async fn a_finish_and_the_next_claim_are_written_together() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SledStore::open(dir.path()).expect("store");
    let (a, b) = (pending_noop(), pending_noop());
    store
        .job_insert_many(vec![a.clone(), b.clone()])
        .await
        .expect("insert");
    let all = &mut |_: &Job| true;
    let first = store.job_claim("w1", 2, all).await.expect("claim");
    assert_eq!(first.map(|j| j.id), Some(a.id));
    let success = Next::Final(Status::Success);
    let statuses =
        |store: &SledStore| [a.id, b.id].map(|id| store.load(id).expect("load").map(|j| j.status));

    store.refuse_writes(true);
    let failed = store
        .job_finish_then_claim(a.id, attempt_end("success"), success, 3, "w1", all)
        .await;
    assert!(failed.is_err(), "the write was refused");
    store.refuse_writes(false);
    assert_eq!(
        statuses(&store),
        [Some(Status::Running), Some(Status::Pending)]
    );

    let (done, next) = store
        .job_finish_then_claim(a.id, attempt_end("success"), success, 4, "w1", all)
        .await
        .expect("finish and claim");
    assert_eq!((done.id, done.status), (a.id, Status::Success));
    let next = next.expect("the next job claimed");
    assert_eq!((next.id, next.status), (b.id, Status::Running));
    assert_eq!(next.worker_id(), Some("w1"));
    assert_eq!(
        statuses(&store),
        [Some(Status::Success), Some(Status::Running)]
    );

    // Nothing left to claim: the finish alone.
    let (done, next) = store
        .job_finish_then_claim(b.id, attempt_end("success"), success, 5, "w1", all)
        .await
        .expect("finish");
    assert_eq!((done.status, next.map(|j| j.id)), (Status::Success, None));
    // A job that is not running is refused, and nothing is claimed.
    let again = store
        .job_finish_then_claim(b.id, attempt_end("success"), success, 6, "w1", all)
        .await;
    assert!(
        matches!(again, Err(StoreError::Transition { .. })),
        "{again:?}"
    );
}

/// Run `queue` (a write that queues one job and waits for its flush) in a
/// task, and claim the job once it is staged. The caller has paused flushes.
async fn claim_while_unflushed<F>(
    store: &Arc<SledStore>,
    queue: F,
) -> (tokio::task::JoinHandle<F::Output>, Job)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = tokio::spawn(queue);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(job) = store
            .job_claim("w", 2, &mut |_: &Job| true)
            .await
            .expect("claim")
        {
            return (task, job);
        }
        assert!(std::time::Instant::now() < deadline, "never claimable");
        tokio::task::yield_now().await;
    }
}

/// `job_durable(id)` is still waiting while flushes are paused, and returns
/// once `paused` is dropped.
async fn held_until_flushed(store: &SledStore, id: Uuid, paused: impl Sized) {
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

/// A worker may claim a job as soon as it is queued in the overlay, but
/// `job_durable` holds it back until the write that queued it is flushed:
/// a submit, a submit abandoned by its client while it waited, and a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_job_is_held_until_the_write_that_queued_it_is_flushed() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SledStore::open(dir.path()).expect("store"));

    // A submit.
    let (job, paused) = (pending_noop(), store.staging.pause_flushes());
    let (id, s) = (job.id, store.clone());
    let (insert, claimed) =
        claim_while_unflushed(&store, async move { s.job_insert_many(vec![job]).await }).await;
    assert_eq!(claimed.id, id);
    assert!(
        !insert.is_finished(),
        "the submit returned before its flush"
    );
    held_until_flushed(&store, id, paused).await;
    insert.await.expect("task").expect("insert");
    store.job_durable(id).await.expect("long since durable");

    // A submit abandoned while it waits for its flush (its client hung up).
    let (job, paused) = (pending_noop(), store.staging.pause_flushes());
    let (id, s) = (job.id, store.clone());
    let (insert, _) =
        claim_while_unflushed(&store, async move { s.job_insert_many(vec![job]).await }).await;
    insert.abort();
    assert!(
        insert.await.is_err_and(|e| e.is_cancelled()),
        "the submit was not abandoned"
    );
    held_until_flushed(&store, id, paused).await;

    // A retry of a job that ended in error.
    let end = attempt_end("failed");
    let next = crate::store::Next::Final(Status::Error);
    store.job_finish(id, end, next, 3).await.expect("finish");
    store.flush().await.expect("flush");
    let paused = store.staging.pause_flushes();
    let s = store.clone();
    let (retry, claimed) =
        claim_while_unflushed(&store, async move { s.job_retry(id, 4).await }).await;
    assert_eq!(claimed.id, id);
    held_until_flushed(&store, id, paused).await;
    retry.await.expect("task").expect("retry");
}

/// The end of an attempt with `outcome` and nothing else to say.
pub(in crate::store) fn attempt_end(outcome: &str) -> crate::store::AttemptEnd {
    crate::store::AttemptEnd {
        outcome: outcome.into(),
        message: None,
        plugin_digest: String::new(),
        startup_us: 0,
        duration_us: 0,
        peak_memory: 0,
        fuel_used: None,
        decision: String::new(),
    }
}

/// A pending `noop` job with default settings.
/// A store dropped cleanly checkpoints on its writer's way out: the next
/// open has nothing to replay.
#[tokio::test]
async fn a_clean_close_leaves_the_log_empty() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SledStore::open(dir.path()).expect("store");
    store
        .job_insert_many(vec![pending_noop()])
        .await
        .expect("insert");
    let (_wal, turns) = super::wal::Wal::open(dir.path()).expect("log");
    assert!(!turns.is_empty(), "the submit is in the log");
    drop(store);
    // The writer ends on its own thread, a moment after the drop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_wal, turns) = super::wal::Wal::open(dir.path()).expect("log");
        if turns.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log still holds {} turns",
            turns.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

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
/// still holds the directory's lock.
pub(in crate::store) fn open_when_free(dir: &Path) -> SledStore {
    when_free(|| SledStore::open(dir))
}

/// `open()`, retried for up to 30 s while a database on the same directory,
/// dropped just before, still holds its lock (sled's threads let go of it
/// asynchronously, later on a loaded machine).
pub(in crate::store) fn when_free<T, E: std::fmt::Debug>(
    mut open: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match open() {
            Ok(opened) => return opened,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = ?e, "the old database still holds the lock");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open: {e:?}"),
        }
    }
}
