//! The index entries a job's state implies (its queue, schedule, running or
//! uniqueness key), and what staging a change needs of the job as it was.

use ::sled::IVec;

use crate::job::{Job, Kind, Status};
use crate::store::keys;

/// What [`super::SledStore::stage`] needs of a job as stored before a change, taken
/// before the job is changed in place: a change then costs no copy of the
/// whole record (the finish and the claim of every drained job used to clone
/// it twice, once only to keep the old one for this).
#[derive(Debug)]
pub(super) struct Prior {
    pub(super) status: Status,
    pub(super) revision: u64,
    pub(super) check_in_at: Option<u64>,
    /// The keys of its index entries.
    pub(super) index: Vec<IVec>,
}

impl Prior {
    pub(super) fn of(job: &Job) -> Self {
        Self {
            status: job.status,
            revision: job.revision,
            check_in_at: job.check_in_at,
            index: index_entries(job).into_iter().map(|(k, _)| k).collect(),
        }
    }
}

/// The index entries a job in its current state must have.
/// (Key and value as `IVec`s: a key of at most 22 bytes is held inline, so
/// the running and schedule entries of every transition allocate nothing.)
pub(super) fn index_entries(job: &Job) -> Vec<(IVec, IVec)> {
    let none = || IVec::from(&[][..]);
    let mut out = Vec::with_capacity(2);
    match job.status {
        Status::Pending => out.push((
            IVec::from(&keys::queue(job.priority, job.seq, job.id)[..]),
            none(),
        )),
        Status::Scheduled => match (job.run_at, job.kind) {
            (Some(at), Kind::Periodic) => {
                out.push((IVec::from(&keys::template(at, job.id)[..]), none()))
            }
            (Some(at), _) => out.push((IVec::from(&keys::schedule(at, job.id)[..]), none())),
            (None, _) => {}
        },
        Status::Running => out.push((IVec::from(&keys::running(job.id)[..]), none())),
        _ => {}
    }
    if job.unique && !job.status.is_final() {
        out.push((
            IVec::from(&keys::unique(&job.name, &job.params)[..]),
            IVec::from(&job.id.as_bytes()[..]),
        ));
    }
    out
}
