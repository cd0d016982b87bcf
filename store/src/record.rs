//! Records, the chain head and the stored (rmp-serde) encoding of a record.
//!
//! # Stored encoding (format version 1)
//!
//! A record is stored as one MessagePack array, produced by rmp-serde's compact (array) struct
//! encoding, in this order:
//!
//! `[version = 1, seq, prev_hash (bin 32), at, stream (str), kind (str), payload (bin), hash (bin 32)]`
//!
//! `hash` is the record hash of the other fields (see [`crate::hash`]); storing it lets
//! [`crate::verify`] detect a change to the last record, which no later record links to.
//! The version is always the first element, so a future format can be told apart.
//! Decoding insists on the canonical bytes: a stored value is accepted only if re-encoding the
//! decoded record yields exactly the same bytes, so no byte can change unnoticed (not even one
//! rmp-serde would tolerate, like trailing garbage or a wider integer encoding).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::hash::{record_hash, Hash, GENESIS_HASH};

/// Version of the stored record encoding, written as the first element of every record.
pub const FORMAT_VERSION: u8 = 1;

/// One immutable ledger event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, starting at 1, without gaps.
    pub seq: u64,
    /// Hash of the record at `seq - 1`, or [`GENESIS_HASH`] for `seq = 1`.
    pub prev_hash: Hash,
    /// When the event happened, in unix microseconds (as given by the appender).
    pub at: i64,
    /// The stream the event belongs to: the managed database's id.
    pub stream: String,
    /// The event kind (e.g. `ApplyStarted`), for routing without decoding the payload.
    pub kind: String,
    /// rmp-serde bytes of the domain event; opaque to the store.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl Record {
    /// This record's hash (see [`crate::hash`] for the byte layout).
    pub fn hash(&self) -> Hash {
        record_hash(self)
    }
}

/// A record to append: the store assigns `seq` and `prev_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRecord {
    /// Unix microseconds; see [`NewRecord::now`].
    pub at: i64,
    /// The stream (database id).
    pub stream: String,
    /// The event kind.
    pub kind: String,
    /// rmp-serde bytes of the domain event.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl NewRecord {
    /// A record stamped with the current wall-clock time.
    pub fn now(stream: impl Into<String>, kind: impl Into<String>, payload: Vec<u8>) -> Self {
        NewRecord {
            at: now_micros(),
            stream: stream.into(),
            kind: kind.into(),
            payload,
        }
    }
}

/// The current time in unix microseconds; a clock before 1970 reads as 0 and one past
/// year 294,247 saturates, rather than failing an append over a clock problem.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The end of the chain: the last record's seq and hash.
///
/// The empty log's head is [`Head::GENESIS`] (`seq = 0`, `hash = GENESIS_HASH`), so the first
/// append expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Seq of the last record (0 for an empty log).
    pub seq: u64,
    /// Hash of the last record ([`GENESIS_HASH`] for an empty log).
    pub hash: Hash,
}

impl Head {
    /// The head of an empty log.
    pub const GENESIS: Head = Head {
        seq: 0,
        hash: GENESIS_HASH,
    };
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {} ({})", self.seq, self.hash)
    }
}

/// A stored record as the backend holds it: its key's seq and the encoded bytes.
///
/// [`crate::verify`] works on these so it sees exactly what is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The seq the backend keys the value under.
    pub seq: u64,
    /// The encoded record (see the [module docs](self)).
    pub bytes: Vec<u8>,
}

/// Why stored bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a format-1 record array.
    #[error("not a valid record encoding: {0}")]
    Malformed(String),
    /// The record declares a format this build doesn't know.
    #[error("unsupported record format version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// The bytes decode, but are not the canonical encoding of what they decode to.
    #[error("record bytes are not in canonical form (re-encoding differs)")]
    NotCanonical,
}

#[derive(Serialize, Deserialize)]
struct StoredV1 {
    version: u8,
    seq: u64,
    prev_hash: Hash,
    at: i64,
    stream: String,
    kind: String,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    hash: Hash,
}

#[derive(Serialize)]
struct StoredV1Ref<'a> {
    version: u8,
    seq: u64,
    prev_hash: &'a Hash,
    at: i64,
    stream: &'a str,
    kind: &'a str,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    hash: &'a Hash,
}

/// Encodes a record and its hash in the stored form (format version [`FORMAT_VERSION`]).
///
/// `hash` is taken rather than computed so callers that already hashed (the append path) don't
/// hash twice; pass `record.hash()`.
pub fn encode_record(record: &Record, hash: &Hash) -> Vec<u8> {
    let stored = StoredV1Ref {
        version: FORMAT_VERSION,
        seq: record.seq,
        prev_hash: &record.prev_hash,
        at: record.at,
        stream: &record.stream,
        kind: &record.kind,
        payload: &record.payload,
        hash,
    };
    // Sized up front (fixed fields and markers take at most 110 bytes) so encoding doesn't
    // reallocate; verify re-encodes every record.
    let mut out =
        Vec::with_capacity(110 + record.stream.len() + record.kind.len() + record.payload.len());
    // Serialising this struct into a Vec can't fail: every field is a plain value and the
    // writer is infallible. Fall back to an empty (undecodable) value rather than panic.
    match rmp_serde::encode::write(&mut out, &stored) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// Decodes stored bytes into the record and the hash stored with it.
///
/// The stored hash is returned as-is, not checked: comparing it with [`Record::hash`] is
/// [`crate::verify`]'s job.
pub fn decode_record(bytes: &[u8]) -> Result<(Record, Hash), DecodeError> {
    let stored: StoredV1 = match rmp_serde::from_slice(bytes) {
        Ok(s) => s,
        Err(e) => {
            // A future format may have another shape; report its version if we can read it.
            return Err(match peek_version(bytes) {
                Some(v) if v != FORMAT_VERSION => DecodeError::UnsupportedVersion(v),
                _ => DecodeError::Malformed(e.to_string()),
            });
        }
    };
    if stored.version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(stored.version));
    }
    let record = Record {
        seq: stored.seq,
        prev_hash: stored.prev_hash,
        at: stored.at,
        stream: stored.stream,
        kind: stored.kind,
        payload: stored.payload,
    };
    if encode_record(&record, &stored.hash) != bytes {
        return Err(DecodeError::NotCanonical);
    }
    Ok((record, stored.hash))
}

/// Reads the version (first array element) of an encoded record.
fn peek_version(bytes: &[u8]) -> Option<u8> {
    // fixarray marker (0x90..=0x9f) then a positive fixint version: all a version < 128 needs.
    match bytes {
        [0x90..=0x9f, v @ 0x00..=0x7f, ..] => Some(*v),
        _ => None,
    }
}

/// Extends the chain from `head` with `batch`: assigns seqs and prev hashes, hashes and encodes.
///
/// Shared by every backend so they all build identical records; a backend only has to store
/// the returned values atomically. Returns the encoded records (with their stream, for
/// indexing) and the new head.
pub fn chain_batch(head: Head, batch: Vec<NewRecord>) -> (Vec<EncodedRecord>, Head) {
    let mut out = Vec::with_capacity(batch.len());
    let mut head = head;
    for new in batch {
        let record = Record {
            seq: head.seq + 1,
            prev_hash: head.hash,
            at: new.at,
            stream: new.stream,
            kind: new.kind,
            payload: new.payload,
        };
        let hash = record.hash();
        let bytes = encode_record(&record, &hash);
        head = Head {
            seq: record.seq,
            hash,
        };
        out.push(EncodedRecord {
            seq: record.seq,
            prev_hash: record.prev_hash,
            hash,
            stream: record.stream,
            kind: record.kind,
            bytes,
        });
    }
    (out, head)
}

/// A record ready to store, produced by [`chain_batch`].
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    /// The assigned seq.
    pub seq: u64,
    /// The previous record's hash (the chain link), for backends that index or constrain it.
    pub prev_hash: Hash,
    /// This record's hash (also stored inside `bytes`).
    pub hash: Hash,
    /// The record's stream, for a backend's per-stream index.
    pub stream: String,
    /// The record's kind, for backends that keep it in a column.
    pub kind: String,
    /// The stored encoding.
    pub bytes: Vec<u8>,
}

/// Encodes a [`Head`] for backends that store it next to the records (versioned, like records).
pub fn encode_head(head: &Head) -> Vec<u8> {
    rmp_serde::to_vec(&(FORMAT_VERSION, head.seq, head.hash)).unwrap_or_default()
}

/// Decodes what [`encode_head`] wrote.
pub fn decode_head(bytes: &[u8]) -> Result<Head, DecodeError> {
    let (version, seq, hash): (u8, u64, Hash) =
        rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let head = Head { seq, hash };
    if encode_head(&head) != bytes {
        return Err(DecodeError::NotCanonical);
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            seq: 7,
            prev_hash: GENESIS_HASH,
            at: 1_700_000_000_000_000,
            stream: "db-1".into(),
            kind: "Introspected".into(),
            payload: vec![1, 2, 3, 200],
        }
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let r = sample();
        let h = r.hash();
        let a = encode_record(&r, &h);
        let b = encode_record(&r.clone(), &h);
        assert_eq!(a, b);
        assert_eq!(a[0], 0x98, "an 8-element fixarray");
        assert_eq!(a[1], FORMAT_VERSION);
        assert_eq!(decode_record(&a), Ok((r, h)));
    }

    #[test]
    fn rejects_trailing_bytes_and_other_versions() {
        let r = sample();
        let mut a = encode_record(&r, &r.hash());
        a.push(0);
        assert_eq!(decode_record(&a), Err(DecodeError::NotCanonical));
        a.pop();
        a[1] = 2;
        assert_eq!(decode_record(&a), Err(DecodeError::UnsupportedVersion(2)));
        assert!(matches!(
            decode_record(&[0x93, 5, 1, 2]),
            Err(DecodeError::UnsupportedVersion(5))
        ));
        assert!(matches!(
            decode_record(b"junk"),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn chain_batch_links_records() {
        let batch = vec![
            NewRecord::now("a", "k", vec![1]),
            NewRecord::now("b", "k", vec![2]),
        ];
        let (recs, head) = chain_batch(Head::GENESIS, batch);
        let (r1, h1) = decode_record(&recs[0].bytes).unwrap_or_else(|e| panic!("{e}"));
        let (r2, h2) = decode_record(&recs[1].bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r1.seq, r1.prev_hash), (1, GENESIS_HASH));
        assert_eq!((r2.seq, r2.prev_hash), (2, h1));
        assert_eq!(head, Head { seq: 2, hash: h2 });
        assert_eq!(r2.hash(), h2);
    }

    #[test]
    fn head_round_trips() {
        let h = Head {
            seq: 42,
            hash: GENESIS_HASH,
        };
        assert_eq!(decode_head(&encode_head(&h)), Ok(h));
    }
}
