//! Walking the chain: [`verify`], [`Checkpoint`] and the [`VerifyReport`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use crate::hash::{hash_input, sha3_256, BlobHash, Hash, GENESIS_HASH};
use crate::record::{decode_record, DecodeError, Head, Record};
use crate::store::Store;

/// How many records [`verify`] reads per call to [`Store::read_raw`].
const PAGE: u64 = 2048;

/// A point in the chain an auditor keeps outside the ledger (exported, or signed): the log must
/// still contain this exact prefix. Printed and parsed as JSON:
/// `{"seq":42,"head_hash":"sha3-256:…"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Seq of the last record the checkpoint covers.
    pub seq: u64,
    /// Hash of that record (the chain head at that seq).
    pub head_hash: Hash,
}

impl Checkpoint {
    /// The JSON form.
    pub fn to_json(&self) -> String {
        // Two plain fields into a String: serde_json can't fail here.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON form.
    pub fn from_json(json: &str) -> Result<Checkpoint, serde_json::Error> {
        serde_json::from_str(json)
    }
}

impl From<Head> for Checkpoint {
    fn from(head: Head) -> Self {
        Checkpoint {
            seq: head.seq,
            head_hash: head.hash,
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// What is wrong with the first bad record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// No record is stored at this seq, though later ones (or the head) say there should be:
    /// a deleted record or a truncated tail.
    Missing,
    /// The stored bytes are not a valid, canonical record.
    Undecodable {
        /// The decoder's complaint.
        error: String,
    },
    /// The record stored under this seq says it is another seq (moved or swapped records).
    SeqMismatch {
        /// The seq written inside the record.
        found: u64,
    },
    /// The record's fields don't hash to the hash stored with it (a changed byte).
    HashMismatch {
        /// The hash stored with the record.
        stored: Hash,
        /// The hash of the stored fields.
        computed: Hash,
    },
    /// The record's `prev_hash` is not the previous record's hash (a rewritten record).
    BrokenLink {
        /// The previous record's hash (or the genesis hash for seq 1).
        expected: Hash,
        /// The record's `prev_hash`.
        found: Hash,
    },
    /// A blob the record refers to is not stored.
    MissingBlob {
        /// The blob's address.
        blob: BlobHash,
    },
    /// A blob the record refers to no longer hashes to its address.
    CorruptBlob {
        /// The blob's address.
        blob: BlobHash,
        /// The hash of the stored bytes.
        computed: Hash,
    },
    /// The stored head doesn't match the last record (or can't be read).
    BadHead {
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint's record hashes differently: the log was rewritten at or below it.
    CheckpointMismatch {
        /// The hash the checkpoint holds.
        expected: Hash,
        /// The hash of the record now at that seq.
        found: Hash,
    },
    /// The log ends before the checkpoint's seq: records were removed (this seq is the first
    /// one missing).
    TruncatedBelowCheckpoint {
        /// The checkpoint's seq.
        checkpoint_seq: u64,
    },
    /// The store failed to read (I/O or backend error), so the walk stopped here.
    ReadFailed {
        /// The store's error.
        error: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("record is missing"),
            Problem::Undecodable { error } => write!(f, "record is undecodable: {error}"),
            Problem::SeqMismatch { found } => {
                write!(f, "record stored here says it is seq {found}")
            }
            Problem::HashMismatch { stored, computed } => write!(
                f,
                "hash mismatch: stored {stored}, fields hash to {computed}"
            ),
            Problem::BrokenLink { expected, found } => write!(
                f,
                "broken link: prev_hash is {found}, previous record hashes to {expected}"
            ),
            Problem::MissingBlob { blob } => write!(f, "referenced blob {blob} is missing"),
            Problem::CorruptBlob { blob, computed } => {
                write!(f, "referenced blob {blob} now hashes to {computed}")
            }
            Problem::BadHead { reason } => write!(f, "bad head: {reason}"),
            Problem::CheckpointMismatch { expected, found } => write!(
                f,
                "checkpoint mismatch: checkpoint says {expected}, log has {found}"
            ),
            Problem::TruncatedBelowCheckpoint { checkpoint_seq } => write!(
                f,
                "log truncated: it ends before checkpoint seq {checkpoint_seq}"
            ),
            Problem::ReadFailed { error } => write!(f, "read failed: {error}"),
        }
    }
}

/// The first bad record and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecord {
    /// The record's seq.
    pub seq: u64,
    /// What is wrong with it.
    #[serde(flatten)]
    pub problem: Problem,
}

/// The outcome of [`verify`]; serialises to JSON for the CLI and MCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The head the store reported (absent if it couldn't be read).
    pub head: Option<Head>,
    /// Records checked and found good.
    pub records_checked: u64,
    /// Stored record bytes read.
    pub bytes_read: u64,
    /// Bytes fed to SHA3-256 for record hashes (the hash inputs).
    pub bytes_hashed: u64,
    /// Distinct blobs checked.
    pub blobs_checked: u64,
    /// The checkpoint verified against, if any.
    pub checkpoint: Option<Checkpoint>,
    /// The first bad record, or `None` if the whole chain is good.
    pub first_bad: Option<BadRecord>,
}

impl VerifyReport {
    /// Whether the chain (and checkpoint, if given) checked out.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_bad {
            None => {
                write!(f, "ledger ok: {} records", self.records_checked)?;
                if let Some(head) = &self.head {
                    write!(f, ", head {head}")?;
                }
                if let Some(cp) = &self.checkpoint {
                    write!(f, ", contains checkpoint at seq {}", cp.seq)?;
                }
                Ok(())
            }
            Some(bad) => write!(
                f,
                "ledger BROKEN at seq {}: {} ({} records before it are good)",
                bad.seq, bad.problem, self.records_checked
            ),
        }
    }
}

/// Walks the whole chain and reports the first bad record (see [`verify_with_blobs`]), without
/// checking blobs.
pub fn verify(store: &dyn Store, checkpoint: Option<Checkpoint>) -> VerifyReport {
    verify_with_blobs(store, checkpoint, &|_| Vec::new())
}

/// Walks the whole chain from seq 1 to the head and reports the first bad record.
///
/// For each record, in order: it is present (no gap), decodes canonically, says the seq it is
/// stored under, hashes to the hash stored with it, links to the previous record's hash (the
/// genesis hash for seq 1), and every blob `blob_refs` says it references is stored and still
/// hashes to its address. Then the last record must hash to the stored head. With a
/// `checkpoint`, the record at its seq must hash to its `head_hash` and the log must reach it,
/// which catches truncation and rewrites below it even when the attacker fixed up the head.
///
/// Never fails: read errors are reported as [`Problem::ReadFailed`] at the seq they hit.
pub fn verify_with_blobs(
    store: &dyn Store,
    checkpoint: Option<Checkpoint>,
    blob_refs: &dyn Fn(&Record) -> Vec<BlobHash>,
) -> VerifyReport {
    let mut report = VerifyReport {
        head: None,
        records_checked: 0,
        bytes_read: 0,
        bytes_hashed: 0,
        blobs_checked: 0,
        checkpoint,
        first_bad: None,
    };
    if let Err((seq, problem)) = walk(store, checkpoint, blob_refs, &mut report) {
        report.first_bad = Some(BadRecord { seq, problem });
    }
    report
}

/// One page from the reader thread: the range asked for and each stored record, decoded.
struct Page {
    end: u64,
    records: Vec<Decoded>,
}

struct Decoded {
    /// The seq the record is stored under.
    key: u64,
    len: usize,
    decoded: Result<(Record, Hash), DecodeError>,
}

fn walk(
    store: &dyn Store,
    checkpoint: Option<Checkpoint>,
    blob_refs: &dyn Fn(&Record) -> Vec<BlobHash>,
    report: &mut VerifyReport,
) -> Result<(), (u64, Problem)> {
    let head = store.head().map_err(|e| {
        (
            0,
            Problem::BadHead {
                reason: e.to_string(),
            },
        )
    })?;
    report.head = Some(head);

    // Reading and decoding run on a second thread, ahead of the hashing and checks here: both
    // halves cost about the same, so overlapping them brings verify close to raw SHA3 speed.
    let prev = std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<Page, (u64, String)>>(4);
        let (recycle_tx, recycle_rx) = mpsc::channel::<Page>();
        scope.spawn(move || read_pages(store, head.seq, tx, recycle_rx));
        check_pages(store, checkpoint, blob_refs, report, rx, recycle_tx)
        // `rx` is dropped here, which stops the reader if we return early.
    })?;

    if prev != head.hash {
        return Err((
            head.seq,
            Problem::BadHead {
                reason: format!(
                    "stored head is {}, but the chain ends with {prev}",
                    head.hash
                ),
            },
        ));
    }
    if let Some(cp) = checkpoint {
        if cp.seq > head.seq {
            return Err((
                head.seq + 1,
                Problem::TruncatedBelowCheckpoint {
                    checkpoint_seq: cp.seq,
                },
            ));
        }
        if cp.seq == 0 && cp.head_hash != GENESIS_HASH {
            return Err((
                0,
                Problem::CheckpointMismatch {
                    expected: cp.head_hash,
                    found: GENESIS_HASH,
                },
            ));
        }
    }
    Ok(())
}

/// Reads records `1..=last` page by page and sends them decoded; stops at the first read error
/// (sent as `(seq, error)`) or when the checker hangs up.
///
/// Checked pages come back on `recycle` to be freed here: freeing them on the checker's thread
/// made both threads fight over this thread's malloc arena, which cost more than the hashing.
fn read_pages(
    store: &dyn Store,
    last: u64,
    tx: mpsc::SyncSender<Result<Page, (u64, String)>>,
    recycle: mpsc::Receiver<Page>,
) {
    let mut next = 1u64;
    while next <= last {
        let end = next.saturating_add(PAGE).min(last.saturating_add(1));
        let page = match store.read_raw(next..end) {
            Ok(raws) => Ok(Page {
                end,
                records: raws
                    .into_iter()
                    .map(|raw| Decoded {
                        key: raw.seq,
                        len: raw.bytes.len(),
                        decoded: decode_record(&raw.bytes),
                    })
                    .collect(),
            }),
            Err(e) => Err((next, e.to_string())),
        };
        let failed = page.is_err();
        if tx.send(page).is_err() || failed {
            break;
        }
        recycle.try_iter().for_each(drop);
        next = end;
    }
    drop(tx);
    // Free the remaining pages here too, until the checker is done.
    recycle.iter().for_each(drop);
}

/// Checks pages in order; returns the hash of the last record (the genesis hash if none).
fn check_pages(
    store: &dyn Store,
    checkpoint: Option<Checkpoint>,
    blob_refs: &dyn Fn(&Record) -> Vec<BlobHash>,
    report: &mut VerifyReport,
    pages: mpsc::Receiver<Result<Page, (u64, String)>>,
    recycle: mpsc::Sender<Page>,
) -> Result<Hash, (u64, Problem)> {
    let mut prev = GENESIS_HASH;
    let mut next = 1u64;
    let mut good_blobs = BTreeSet::new();
    for page in pages {
        let page = page.map_err(|(seq, error)| (seq, Problem::ReadFailed { error }))?;
        for item in &page.records {
            if item.key != next {
                return Err((next, Problem::Missing));
            }
            report.bytes_read += item.len as u64;
            let (record, stored) = item.decoded.as_ref().map_err(|e| {
                (
                    next,
                    Problem::Undecodable {
                        error: e.to_string(),
                    },
                )
            })?;
            let stored = *stored;
            if record.seq != next {
                return Err((next, Problem::SeqMismatch { found: record.seq }));
            }
            let input = hash_input(record);
            report.bytes_hashed += input.len() as u64;
            let computed = sha3_256(&input);
            if computed != stored {
                return Err((next, Problem::HashMismatch { stored, computed }));
            }
            if record.prev_hash != prev {
                return Err((
                    next,
                    Problem::BrokenLink {
                        expected: prev,
                        found: record.prev_hash,
                    },
                ));
            }
            for blob in blob_refs(record) {
                if good_blobs.contains(&blob) {
                    continue;
                }
                check_blob(store, blob).map_err(|p| (next, p))?;
                good_blobs.insert(blob);
                report.blobs_checked += 1;
            }
            if let Some(cp) = checkpoint.filter(|cp| cp.seq == next) {
                if cp.head_hash != computed {
                    return Err((
                        next,
                        Problem::CheckpointMismatch {
                            expected: cp.head_hash,
                            found: computed,
                        },
                    ));
                }
            }
            prev = computed;
            report.records_checked += 1;
            next += 1;
        }
        if next < page.end {
            // The page ended early: the next record is gone.
            return Err((next, Problem::Missing));
        }
        // A closed channel only means the reader stopped; the page is then freed here.
        let _ = recycle.send(page);
    }
    Ok(prev)
}

fn check_blob(store: &dyn Store, blob: BlobHash) -> Result<(), Problem> {
    match store.read_blob_raw(&blob) {
        Err(e) => Err(Problem::ReadFailed {
            error: e.to_string(),
        }),
        Ok(None) => Err(Problem::MissingBlob { blob }),
        Ok(Some(bytes)) => {
            let computed = sha3_256(&bytes);
            if computed == blob {
                Ok(())
            } else {
                Err(Problem::CorruptBlob { blob, computed })
            }
        }
    }
}
