//! [`MemoryStore`]: the in-memory backend, for tests and ephemeral use.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use crate::error::StoreError;
use crate::hash::{sha3_256, BlobHash};
use crate::record::{chain_batch, Head, NewRecord, RawRecord};
use crate::store::Store;

/// A ledger held in memory. Same encoding, chaining and conflict rules as [`crate::SledStore`];
/// nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    head: Head,
    records: BTreeMap<u64, Vec<u8>>,
    blobs: BTreeMap<BlobHash, Vec<u8>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            head: Head::GENESIS,
            records: BTreeMap::new(),
            blobs: BTreeMap::new(),
        }
    }
}

impl MemoryStore {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can't leave State half-updated (each mutation is a
        // single insert after all fallible work), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces (or with `None` deletes) the stored bytes of one record, for tamper tests.
    #[cfg(any(test, feature = "test-support"))]
    #[doc(hidden)]
    pub fn tamper_record_for_tests(&self, seq: u64, bytes: Option<Vec<u8>>) {
        let mut state = self.state();
        match bytes {
            Some(b) => {
                state.records.insert(seq, b);
            }
            None => {
                state.records.remove(&seq);
            }
        }
    }
}

impl Store for MemoryStore {
    fn append(&self, expected: Option<Head>, batch: Vec<NewRecord>) -> Result<Head, StoreError> {
        let mut state = self.state();
        if let Some(expected) = expected {
            if expected != state.head {
                return Err(StoreError::Conflict {
                    expected,
                    actual: state.head,
                });
            }
        }
        let (records, head) = chain_batch(state.head, batch);
        for r in records {
            state.records.insert(r.seq, r.bytes);
        }
        state.head = head;
        Ok(head)
    }

    fn head(&self) -> Result<Head, StoreError> {
        Ok(self.state().head)
    }

    fn read_raw(&self, seqs: Range<u64>) -> Result<Vec<RawRecord>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .state()
            .records
            .range(seqs)
            .map(|(seq, bytes)| RawRecord {
                seq: *seq,
                bytes: bytes.clone(),
            })
            .collect())
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<BlobHash, StoreError> {
        let hash = sha3_256(bytes);
        self.state()
            .blobs
            .entry(hash)
            .or_insert_with(|| bytes.to_vec());
        Ok(hash)
    }

    fn read_blob_raw(&self, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state().blobs.get(hash).cloned())
    }
}
