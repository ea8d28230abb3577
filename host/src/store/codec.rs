//! How records are laid out as bytes in the store.
//!
//! Records are written as one version byte followed by the record in
//! [postcard](https://docs.rs/postcard) (compact, varint-encoded serde). The
//! drain's profile put JSON encoding and decoding of the ~1.3 KB job record, and
//! sled copying its pages, at a large share of the CPU per job; the binary
//! record is about a third of the JSON one and several times faster to encode
//! and decode.
//!
//! Records written by earlier releases are JSON objects (their first byte is
//! `{`): they are still read, and become binary the next time they are written.
//! postcard is not self-describing, so a change to a stored struct's fields must
//! come with a new version byte and a decoder for the old layout.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first byte of a postcard record, layout version 1.
const POSTCARD_V1: u8 = 1;

/// Why stored bytes could not be read (or a record could not be written).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("JSON record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("binary record: {0}")]
    Binary(#[from] postcard::Error),
    #[error("unknown record format (first byte {0:#04x})")]
    UnknownFormat(u8),
    #[error("empty record")]
    Empty,
    #[error("record cut short")]
    Truncated,
    #[error("bytes after the record's end")]
    Trailing,
    #[error("checksum mismatch")]
    Checksum,
}

/// `value` as stored bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(256);
    encode_into(value, &mut out)?;
    Ok(out)
}

/// `value` as stored bytes, written into `out` (cleared first): a caller that
/// keeps `out` encodes every record without growing a new buffer for it.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.clear();
    out.push(POSTCARD_V1);
    let encoded = postcard::serialize_with_flavor(value, Appended(out));
    if encoded.is_err() {
        // Scratch space: nothing half-written is left in it.
        out.clear();
    }
    Ok(encoded?)
}

/// postcard's output appended to a caller's buffer: a byte is a `push`, a
/// run of bytes (a string, an id) one `extend_from_slice`. postcard's own
/// `to_extend` goes through `Extend<u8>`: a one-element extend per byte and a
/// loop per run, which made encoding a job record ~2,200 instructions (the
/// drain encodes two per job, a bulk submit one).
struct Appended<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Appended<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A record from stored bytes, in any layout this release reads.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.first() {
        Some(&POSTCARD_V1) => Ok(postcard::from_bytes(&bytes[1..])?),
        Some(b'{') => Ok(serde_json::from_slice(bytes)?),
        Some(&other) => Err(CodecError::UnknownFormat(other)),
        None => Err(CodecError::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Command, Job, Kind, Status};
    use crate::store::ChangeRecord;

    fn job() -> Job {
        let mut job = Job::new(
            uuid::Uuid::now_v7(),
            "noop".into(),
            Kind::Periodic,
            r#"{"a":[1,2,"x"]}"#.into(),
            Status::Scheduled,
            1_700_000_000_000,
        );
        job.cron_spec = Some("*/5 * * * * *".into());
        job.capacity_map.insert("cpu".into(), 2);
        job.command = Some(Command::Cancel);
        job.event("Received", "accepted and stored");
        job
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let job = job();
        let bytes = encode(&job).expect("encode");
        assert_eq!(bytes[0], POSTCARD_V1);
        let back: Job = decode(&bytes).expect("decode");
        assert_eq!(back, job);
    }

    /// Records written by earlier releases (through postcard's `to_extend`)
    /// and by this one are the same bytes: the layout is postcard's, whatever
    /// buffer it is written into.
    #[test]
    fn the_bytes_are_postcards_own() {
        let mut job = job();
        job.event("Started", "attempt 1 on w");
        let mut expected = vec![POSTCARD_V1];
        expected.extend(postcard::to_stdvec(&job).expect("postcard"));
        assert_eq!(encode(&job).expect("encode"), expected);
    }

    #[test]
    fn a_reused_buffer_holds_exactly_the_new_record() {
        let mut buf = Vec::new();
        let mut long = job();
        long.params = "x".repeat(4000);
        encode_into(&long, &mut buf).expect("encode");
        let short = job();
        encode_into(&short, &mut buf).expect("encode");
        assert_eq!(buf, encode(&short).expect("encode"));
        assert_eq!(decode::<Job>(&buf).expect("decode"), short);
    }

    /// A change's constant fields are borrowed when a job's transition is
    /// recorded and owned when read back: the bytes are the same either way.
    #[test]
    fn a_change_record_reads_back_the_same_borrowed_or_owned() {
        let borrowed = ChangeRecord {
            id: 9,
            created_at: 1,
            category: "job".into(),
            job_id: Some(uuid::Uuid::now_v7()),
            name: "noop".into(),
            status: Status::Success.as_str().into(),
            version: 3,
            plugin_digest: None,
        };
        let owned = ChangeRecord {
            category: String::from("job").into(),
            status: String::from("success").into(),
            ..borrowed.clone()
        };
        let bytes = encode(&borrowed).expect("encode");
        assert_eq!(bytes, encode(&owned).expect("encode"));
        let back: ChangeRecord = decode(&bytes).expect("decode");
        assert_eq!(back, borrowed);
        assert!(matches!(back.status, std::borrow::Cow::Owned(_)));
    }

    #[test]
    fn records_of_earlier_releases_are_json_and_still_read() {
        let job = job();
        let json = serde_json::to_vec(&job).expect("json");
        let back: Job = decode(&json).expect("decode");
        assert_eq!(back, job);
    }

    #[test]
    fn the_binary_record_is_much_smaller_than_the_json_one() {
        let job = job();
        let binary = encode(&job).expect("encode").len();
        let json = serde_json::to_vec(&job).expect("json").len();
        assert!(binary * 2 < json, "binary {binary} B, JSON {json} B");
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let bytes = encode(&job()).expect("encode");
        for cut in [0, 1, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode::<Job>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            decode::<ChangeRecord>(&[7, 1, 2]),
            Err(CodecError::UnknownFormat(7))
        ));
    }
}
