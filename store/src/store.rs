//! The [`Store`] trait: what a ledger backend must provide.

use std::ops::Range;

use crate::error::StoreError;
use crate::hash::{sha3_256, BlobHash};
use crate::record::{decode_record, Head, NewRecord, RawRecord, Record};

/// A hash-chained, append-only event log plus a content-addressed blob store.
///
/// The trait is deliberately narrow: a backend stores opaque encoded records keyed by seq, a
/// head, and blobs keyed by hash. Chaining, hashing and encoding live in
/// [`crate::record::chain_batch`], decoding in [`crate::record::decode_record`], and integrity
/// checking in [`crate::verify`], so a new backend (redb, Postgres) is one file and all
/// backends produce byte-identical logs.
///
/// Object safe, so callers hold an `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    /// Appends `batch` atomically after the current head and returns the new head.
    ///
    /// With `expected = Some(head)`, the append happens only if the log's head is exactly
    /// `head` (seq and hash); otherwise nothing is written and the error is
    /// [`StoreError::Conflict`] carrying the actual head. Of several appenders expecting the
    /// same head, exactly one wins: the chain never forks.
    ///
    /// With `expected = None`, the batch goes after whatever the head is when the append is
    /// applied; use this only for events that don't depend on the log's state (the records
    /// still chain normally, and the returned head says where they landed).
    ///
    /// Returns only after the records are durable (for sled: flushed and fsynced). An empty
    /// batch writes nothing and returns the head (after the expectation check).
    fn append(&self, expected: Option<Head>, batch: Vec<NewRecord>) -> Result<Head, StoreError>;

    /// The head: the last acknowledged record's seq and hash ([`Head::GENESIS`] when empty).
    fn head(&self) -> Result<Head, StoreError>;

    /// The stored bytes of the records whose seq is in `seqs`, ascending by seq.
    ///
    /// A record missing from storage is simply absent from the result (which is how
    /// [`crate::verify`] finds gaps). Callers page with bounded ranges.
    fn read_raw(&self, seqs: Range<u64>) -> Result<Vec<RawRecord>, StoreError>;

    /// Stores `bytes` once, addressed by their SHA3-256, and returns that hash.
    ///
    /// Storing bytes already present is a no-op. A blob is durable no later than the
    /// acknowledgement of any append made after this call returns, so write a blob before the
    /// event that refers to it.
    fn put_blob(&self, bytes: &[u8]) -> Result<BlobHash, StoreError>;

    /// The stored bytes under `hash`, **without** checking they still hash to it (see
    /// [`Store::get_blob`]).
    fn read_blob_raw(&self, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError>;

    /// The decoded records whose seq is in `seqs`, ascending.
    ///
    /// Checks each record decodes and sits under its own seq, not the chain: that is
    /// [`crate::verify`]'s job.
    fn read_range(&self, seqs: Range<u64>) -> Result<Vec<Record>, StoreError> {
        self.read_raw(seqs)?.into_iter().map(decode_raw).collect()
    }

    /// Up to `limit` records of `stream` with seq ≥ `from_seq`, ascending.
    ///
    /// The default scans the whole log; backends with an index override it.
    fn read_stream(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        const PAGE: u64 = 4096;
        let end = self.head()?.seq.saturating_add(1);
        let mut out = Vec::new();
        let mut next = from_seq.max(1);
        while next < end && out.len() < limit {
            let upto = next.saturating_add(PAGE).min(end);
            for record in self.read_range(next..upto)? {
                if record.stream == stream && out.len() < limit {
                    out.push(record);
                }
            }
            next = upto;
        }
        Ok(out)
    }

    /// The blob under `hash`, checked to still hash to it.
    fn get_blob(&self, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        match self.read_blob_raw(hash)? {
            Some(bytes) if sha3_256(&bytes) != *hash => Err(StoreError::Corrupt {
                seq: None,
                reason: format!("blob {hash} no longer hashes to its address"),
            }),
            other => Ok(other),
        }
    }
}

/// Calls `each` with every record from `from_seq` to the head, in order, a page at a time (so
/// a long log is never held in memory whole). Stops at the first error `each` returns.
pub fn for_each_record<E: From<StoreError>>(
    store: &dyn Store,
    from_seq: u64,
    mut each: impl FnMut(Record) -> Result<(), E>,
) -> Result<(), E> {
    const PAGE: u64 = 4096;
    let end = store.head()?.seq.saturating_add(1);
    let mut next = from_seq.max(1);
    while next < end {
        let upto = next.saturating_add(PAGE).min(end);
        for record in store.read_range(next..upto)? {
            each(record)?;
        }
        next = upto;
    }
    Ok(())
}

/// Decodes a raw record for a read path, checking it is stored under its own seq.
pub(crate) fn decode_raw(raw: RawRecord) -> Result<Record, StoreError> {
    let (record, _) = decode_record(&raw.bytes).map_err(|e| StoreError::Corrupt {
        seq: Some(raw.seq),
        reason: e.to_string(),
    })?;
    if record.seq != raw.seq {
        return Err(StoreError::Corrupt {
            seq: Some(raw.seq),
            reason: format!("stored under seq {} but says seq {}", raw.seq, record.seq),
        });
    }
    Ok(record)
}
