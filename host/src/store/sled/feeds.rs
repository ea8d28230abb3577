//! The sled store's reads and side records: executions, templates, the jobs
//! list, webhook deliveries, and worker heartbeats. Each is a
//! plain function of the store, called by its `Store` impl in `mod.rs`.

use uuid::Uuid;

use super::SledStore;
use super::logs::CREATED;
use super::staging::Batch;
use crate::job::Job;
use crate::store::{HookRecord, JobFilter, StoreError, WorkerRecord, codec, keys};

pub(super) fn job_executions(
    store: &SledStore,
    upstream: Uuid,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<(u64, Uuid)>, StoreError> {
    let prefix = keys::executions_of(upstream);
    let start = keys::execution(upstream, after.map_or(0, |a| a.saturating_add(1)));
    let mut out = Vec::new();
    for entry in store.staging.range_from(&start) {
        let (k, v) = entry?;
        if !k.starts_with(&prefix) || out.len() >= limit {
            break;
        }
        if let (Some(seq), Ok(id)) = (keys::execution_seq(&k), Uuid::from_slice(&v)) {
            out.push((seq, id));
        }
    }
    Ok(out)
}

pub(super) fn job_executions_latest(
    store: &SledStore,
    upstream: Uuid,
    limit: usize,
) -> Result<Vec<Uuid>, StoreError> {
    let mut out = Vec::new();
    for entry in store
        .staging
        .scan_prefix_rev(&keys::executions_of(upstream))
        .take(limit)
    {
        let (_, v) = entry?;
        if let Ok(id) = Uuid::from_slice(&v) {
            out.push(id);
        }
    }
    out.reverse();
    Ok(out)
}

pub(super) fn job_due_templates(
    store: &SledStore,
    now: u64,
    limit: usize,
) -> Result<Vec<Job>, StoreError> {
    let mut out = Vec::new();
    for entry in store.staging.scan_prefix(&[keys::TEMPLATE]) {
        let (key, _) = entry?;
        if out.len() >= limit || keys::schedule_time(&key).is_none_or(|at| at > now) {
            break;
        }
        if let Some(job) = keys::id_suffix(&key)
            .map(|id| store.load(id))
            .transpose()?
            .flatten()
        {
            out.push(job);
        }
    }
    Ok(out)
}

pub(super) fn hook_list(store: &SledStore, limit: usize) -> Result<Vec<HookRecord>, StoreError> {
    let mut out = Vec::new();
    for entry in store.staging.scan_prefix(&[keys::HOOK]).take(limit) {
        let (k, v) = entry?;
        let hook = codec::decode(&v).map_err(|source| StoreError::Corrupt {
            key: format!("hook {k:?}"),
            source,
        })?;
        out.push(hook);
    }
    Ok(out)
}

pub(super) fn hook_done(store: &SledStore, seq: u64) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    batch.remove(&keys::seq_key(keys::HOOK, seq)[..]);
    store.apply(batch, store.order())
}

pub(super) fn hook_retry(store: &SledStore, hook: &HookRecord) -> Result<(), StoreError> {
    let key = keys::seq_key(keys::HOOK, hook.seq);
    let mut batch = Batch::default();
    batch.insert(
        &key[..],
        SledStore::encode(|| format!("hook {}", hook.seq), hook)?,
    );
    store.apply(batch, store.order())
}

pub(super) fn job_list(
    store: &SledStore,
    filter: &JobFilter,
    after: Option<u64>,
    limit: usize,
    scan: usize,
) -> Result<(Vec<Job>, Option<u64>), StoreError> {
    let from = after.map_or(0, |a| a.saturating_add(1));
    let created = CREATED.from(&store.staging, from, scan.saturating_add(1))?;
    let mut out = Vec::new();
    let mut last = None;
    for (looked, (seq, id)) in created.into_iter().enumerate() {
        if out.len() >= limit || looked >= scan {
            return Ok((out, last));
        }
        last = Some(seq);
        if let Some(job) = Uuid::from_slice(&id)
            .ok()
            .map(|id| store.load(id))
            .transpose()?
            .flatten()
            && filter.matches(&job)
        {
            out.push(job);
        }
    }
    Ok((out, None))
}

pub(super) fn job_templates(store: &SledStore, limit: usize) -> Result<Vec<Job>, StoreError> {
    let mut out = Vec::new();
    for entry in store.staging.scan_prefix(&[keys::TEMPLATE]).take(limit) {
        let (k, _) = entry?;
        if let Some(job) = keys::id_suffix(&k)
            .map(|id| store.load(id))
            .transpose()?
            .flatten()
        {
            out.push(job);
        }
    }
    Ok(out)
}

pub(super) fn worker_heartbeat(store: &SledStore, worker: &WorkerRecord) -> Result<(), StoreError> {
    let mut key = vec![keys::WORKER];
    key.extend_from_slice(worker.id.as_bytes());
    let mut batch = Batch::default();
    batch.insert(
        key,
        SledStore::encode(|| format!("worker {}", worker.id), worker)?,
    );
    store.apply(batch, store.order())
}

pub(super) fn worker_list(store: &SledStore) -> Result<Vec<WorkerRecord>, StoreError> {
    let mut out = Vec::new();
    for entry in store.staging.scan_prefix(&[keys::WORKER]) {
        let (k, v) = entry?;
        out.push(codec::decode(&v).map_err(|source| StoreError::Corrupt {
            key: String::from_utf8_lossy(&k).into_owned(),
            source,
        })?);
    }
    Ok(out)
}
