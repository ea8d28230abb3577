//! Key layout of the single sled tree. Big-endian numbers so that iteration order
//! is priority, then time, then sequence.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `j` | job id (UUIDv7: time-ordered) | job record (JSON) |
//! | `q` | inverted priority, sequence, job id | empty: the ready queue, one job (from earlier releases, or staged) |
//! | `Q` | inverted priority, first sequence | the `q` entries of one writer turn and priority, packed (see `sled/queue_blocks.rs`) |
//! | `s` | run-at ms, job id | empty: scheduled jobs and retries |
//! | `r` | job id | empty: running jobs (crash recovery without a scan) |
//! | `u` | sha256(name, params) | job id: live unique jobs |
//! | `p` | next fire ms, job id | empty: active periodic templates |
//! | `x` | upstream id, sequence | child id: executions of a job, in launch order |
//! | `h` | sequence | hook record (JSON): webhook deliveries to make |
//! | `c` | change id | change record: the audit changefeed, one change (staged, or from earlier releases) |
//! | `C` | first change id | the changes of one writer turn, packed (see `sled/logs.rs`) |
//! | `a` | creation sequence, job id | empty: every job in creation order, one job (staged, or from earlier releases) |
//! | `A` | first creation sequence | the `a` entries of one writer turn, packed (see `sled/logs.rs`) |
//! | `w` | node id | worker record (JSON): heartbeats |
//! | `m` | name | store metadata: the write probe (`p`), the reserved id bound (`ids`), the latest small writer turn (`turn`, see `sled/commit.rs`) |

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub(super) const JOB: u8 = b'j';
pub(super) const QUEUE: u8 = b'q';
pub(super) const QUEUE_BLOCK: u8 = b'Q';
pub(super) const SCHEDULE: u8 = b's';
pub(super) const RUNNING: u8 = b'r';
pub(super) const UNIQUE: u8 = b'u';
pub(super) const TEMPLATE: u8 = b'p';
pub(super) const EXECUTION: u8 = b'x';
pub(super) const HOOK: u8 = b'h';
pub(super) const CHANGE: u8 = b'c';
pub(super) const CHANGE_BLOCK: u8 = b'C';
pub(super) const ALL: u8 = b'a';
pub(super) const ALL_BLOCK: u8 = b'A';
pub(super) const WORKER: u8 = b'w';
pub(super) const META: u8 = b'm';

pub(super) fn job(id: Uuid) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = JOB;
    k[1..].copy_from_slice(id.as_bytes());
    k
}

/// Length of a ready-queue key.
pub(super) const QUEUE_KEY_LEN: usize = 29;

/// Higher priority sorts first; then older sequence numbers.
pub(super) fn queue(priority: i32, seq: u64, id: Uuid) -> [u8; QUEUE_KEY_LEN] {
    let ordered = (i64::from(priority) - i64::from(i32::MIN)) as u32; // i32 -> u32, order kept
    let mut k = [0u8; QUEUE_KEY_LEN];
    k[0] = QUEUE;
    k[1..5].copy_from_slice(&(u32::MAX - ordered).to_be_bytes());
    k[5..13].copy_from_slice(&seq.to_be_bytes());
    k[13..].copy_from_slice(id.as_bytes());
    k
}

/// Length of a schedule (or periodic template) key.
pub(super) const SCHEDULE_KEY_LEN: usize = 25;

pub(super) fn schedule(run_at: u64, id: Uuid) -> [u8; SCHEDULE_KEY_LEN] {
    let mut k = [0u8; SCHEDULE_KEY_LEN];
    k[0] = SCHEDULE;
    k[1..9].copy_from_slice(&run_at.to_be_bytes());
    k[9..].copy_from_slice(id.as_bytes());
    k
}

pub(super) fn template(run_at: u64, id: Uuid) -> [u8; SCHEDULE_KEY_LEN] {
    let mut k = schedule(run_at, id);
    k[0] = TEMPLATE;
    k
}

pub(super) fn execution(upstream: Uuid, seq: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = EXECUTION;
    k[1..17].copy_from_slice(upstream.as_bytes());
    k[17..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The prefix of every execution key of `upstream`.
pub(super) fn executions_of(upstream: Uuid) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = EXECUTION;
    k[1..].copy_from_slice(upstream.as_bytes());
    k
}

/// The sequence number at the end of an execution key.
pub(super) fn execution_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(17..25)?.try_into().ok()?))
}

pub(super) fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn all(created_seq: u64, id: Uuid) -> [u8; 25] {
    let mut k = schedule(created_seq, id);
    k[0] = ALL;
    k
}

pub(super) fn running(id: Uuid) -> [u8; 17] {
    let mut k = job(id);
    k[0] = RUNNING;
    k
}

pub(super) fn unique(name: &str, params: &str) -> [u8; 33] {
    let mut h = Sha256::new();
    h.update((name.len() as u64).to_be_bytes());
    h.update(name.as_bytes());
    h.update(params.as_bytes());
    let mut k = [0u8; 33];
    k[0] = UNIQUE;
    k[1..].copy_from_slice(&h.finalize());
    k
}

/// The job id at the end of a queue, schedule or running key.
pub(super) fn id_suffix(key: &[u8]) -> Option<Uuid> {
    let tail = key.get(key.len().checked_sub(16)?..)?;
    Uuid::from_slice(tail).ok()
}

/// The run-at time of a schedule key.
pub(super) fn schedule_time(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_orders_by_priority_then_sequence() {
        let id = Uuid::nil();
        let mut keys = [
            queue(0, 2, id),
            queue(10, 5, id),
            queue(-3, 1, id),
            queue(0, 1, id),
            queue(i32::MAX, 9, id),
            queue(i32::MIN, 0, id),
        ];
        keys.sort();
        let order: Vec<(i32, u64)> = keys
            .iter()
            .map(|k| {
                let inv = u32::from_be_bytes(k[1..5].try_into().unwrap());
                let prio = (i64::from(u32::MAX - inv) + i64::from(i32::MIN)) as i32;
                (prio, u64::from_be_bytes(k[5..13].try_into().unwrap()))
            })
            .collect();
        assert_eq!(
            order,
            [
                (i32::MAX, 9),
                (10, 5),
                (0, 1),
                (0, 2),
                (-3, 1),
                (i32::MIN, 0)
            ]
        );
    }

    #[test]
    fn schedule_orders_by_time_and_ids_round_trip() {
        let a = Uuid::new_v4();
        let (k1, k2) = (schedule(5, a), schedule(300, Uuid::new_v4()));
        assert!(k1 < k2);
        assert_eq!(schedule_time(&k2), Some(300));
        assert_eq!(id_suffix(&k1), Some(a));
        assert_eq!(id_suffix(&queue(1, 2, a)), Some(a));
    }

    #[test]
    fn unique_key_separates_name_and_params() {
        assert_ne!(unique("ab", "c"), unique("a", "bc"));
        assert_eq!(unique("a", "{}"), unique("a", "{}"));
    }
}
