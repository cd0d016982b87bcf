//! Tampering with the real on-disk sled data is caught by `verify`, which names the record.
//!
//! Each case builds a ledger in a temp dir (records, some referring to blobs), checks it
//! verifies, tampers through the raw sled trees, closes and reopens the ledger (so the damage
//! is read back from disk) and checks the report's first bad seq.

use lockplane_store::record::encode_head;
use lockplane_store::{
    sha3_256, verify_with_blobs, BlobHash, Checkpoint, Head, NewRecord, Problem, Record, SledStore,
    Store, StoreError,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

/// Payload of the test events: an id and maybe a blob reference.
fn payload(id: u64, blob: Option<BlobHash>) -> Vec<u8> {
    rmp_serde::to_vec(&(id, blob)).unwrap_or_default()
}

/// The blob-reference callback verify uses: decodes the payload above.
fn refs(record: &Record) -> Vec<BlobHash> {
    rmp_serde::from_slice::<(u64, Option<BlobHash>)>(&record.payload)
        .ok()
        .and_then(|(_, blob)| blob)
        .into_iter()
        .collect()
}

struct Built {
    store: SledStore,
    head: Head,
    /// Per seq (index seq-1): the blob the record refers to.
    blob_of: Vec<Option<BlobHash>>,
    blobs: Vec<BlobHash>,
}

fn build(dir: &std::path::Path, n: usize, blob_sizes: &[usize]) -> Result<Built, StoreError> {
    let store = SledStore::open(dir)?;
    let mut blobs = Vec::new();
    for (i, size) in blob_sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
        blobs.push(store.put_blob(&bytes)?);
    }
    let mut blob_of = Vec::new();
    let mut batch = Vec::new();
    for i in 0..n {
        // Every third record refers to a blob, cycling through them.
        let blob = (i % 3 == 1 && !blobs.is_empty()).then(|| blobs[(i / 3) % blobs.len()]);
        blob_of.push(blob);
        batch.push(NewRecord {
            at: 1_700_000_000_000_000 + i as i64,
            stream: format!("db-{}", i % 2),
            kind: if blob.is_some() { "WithBlob" } else { "Plain" }.into(),
            payload: payload(i as u64, blob),
        });
    }
    // Several appends, so the log spans more than one commit group.
    let mut head = Head::GENESIS;
    for chunk in batch.chunks(7) {
        head = store.append(Some(head), chunk.to_vec())?;
    }
    Ok(Built {
        store,
        head,
        blob_of,
        blobs,
    })
}

#[derive(Debug, Clone)]
enum Tamper {
    FlipRecordByte { seq: u64, at: usize, mask: u8 },
    FlipBlobByte { blob: usize, at: usize, mask: u8 },
    DeleteRecord { seq: u64 },
    SwapRecords { a: u64, b: u64 },
    TruncateBelowCheckpoint { cut: u64 },
}

fn tamper_strategy(n: u64, blobs: usize) -> impl Strategy<Value = Tamper> {
    let blobs = blobs.max(1);
    prop_oneof![
        (1..=n, any::<usize>(), 1..=255u8).prop_map(|(seq, at, mask)| Tamper::FlipRecordByte {
            seq,
            at,
            mask
        }),
        (0..blobs, any::<usize>(), 1..=255u8).prop_map(|(blob, at, mask)| Tamper::FlipBlobByte {
            blob,
            at,
            mask
        }),
        (1..=n).prop_map(|seq| Tamper::DeleteRecord { seq }),
        (1..=n, 1..=n)
            .prop_filter("distinct", |(a, b)| a != b)
            .prop_map(|(a, b)| Tamper::SwapRecords { a, b }),
        (1..=n).prop_map(|cut| Tamper::TruncateBelowCheckpoint { cut }),
    ]
}

fn case_strategy() -> impl Strategy<Value = (usize, Vec<usize>, Tamper)> {
    (2usize..40, prop::collection::vec(1usize..300, 1..4)).prop_flat_map(|(n, sizes)| {
        let blobs = sizes.len();
        (Just(n), Just(sizes), tamper_strategy(n as u64, blobs))
    })
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Applies `tamper` to the on-disk trees; returns the seq verify must name.
fn apply(built: &Built, tamper: &Tamper) -> Result<u64, TestCaseError> {
    let (log, blob_tree) = built.store.raw_trees_for_tests().map_err(fail)?;
    let key = SledStore::record_key_for_tests;
    let expect = match *tamper {
        Tamper::FlipRecordByte { seq, at, mask } => {
            let mut bytes = log
                .get(key(seq))
                .map_err(fail)?
                .ok_or_else(|| fail("no record"))?
                .to_vec();
            let at = at % bytes.len();
            bytes[at] ^= mask;
            log.insert(key(seq), bytes).map_err(fail)?;
            seq
        }
        Tamper::FlipBlobByte { blob, at, mask } => {
            let hash = built.blobs[blob % built.blobs.len()];
            let mut bytes = blob_tree
                .get(hash.0)
                .map_err(fail)?
                .ok_or_else(|| fail("no blob"))?
                .to_vec();
            let at = at % bytes.len();
            bytes[at] ^= mask;
            blob_tree.insert(hash.0, bytes).map_err(fail)?;
            match built.blob_of.iter().position(|b| *b == Some(hash)) {
                Some(i) => i as u64 + 1,
                // No record refers to this blob, so nothing may be reported: checked below.
                None => 0,
            }
        }
        Tamper::DeleteRecord { seq } => {
            log.remove(key(seq)).map_err(fail)?;
            seq
        }
        Tamper::SwapRecords { a, b } => {
            let va = log
                .get(key(a))
                .map_err(fail)?
                .ok_or_else(|| fail("no record"))?;
            let vb = log
                .get(key(b))
                .map_err(fail)?
                .ok_or_else(|| fail("no record"))?;
            log.insert(key(a), vb).map_err(fail)?;
            log.insert(key(b), va).map_err(fail)?;
            a.min(b)
        }
        Tamper::TruncateBelowCheckpoint { cut } => {
            // A careful attacker: drop the tail and rewrite the head to match what is left,
            // so only the checkpoint can tell.
            let new_head = if cut == 1 {
                Head::GENESIS
            } else {
                let prev = built.store.read_range(cut - 1..cut).map_err(fail)?;
                let prev = prev.first().ok_or_else(|| fail("no record"))?;
                Head {
                    seq: prev.seq,
                    hash: prev.hash(),
                }
            };
            for seq in cut..=built.head.seq {
                log.remove(key(seq)).map_err(fail)?;
            }
            log.insert(SledStore::HEAD_KEY_FOR_TESTS, encode_head(&new_head))
                .map_err(fail)?;
            cut
        }
    };
    log.flush().map_err(fail)?;
    Ok(expect)
}

/// 64 cases by default (each builds and reopens a real sled database); `PROPTEST_CASES` overrides.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(Config::with_cases(cases()))]

    #[test]
    fn tampering_on_disk_is_caught_and_named((n, sizes, tamper) in case_strategy()) {
        let dir = tempfile::tempdir().map_err(fail)?;
        let built = build(dir.path(), n, &sizes).map_err(fail)?;
        let checkpoint = Checkpoint::from(built.head);
        let clean = verify_with_blobs(&built.store, Some(checkpoint), &refs);
        prop_assert!(clean.is_ok(), "{}", clean);

        let expect = apply(&built, &tamper)?;
        drop(built.store);
        let store = SledStore::open(dir.path()).map_err(fail)?;
        let report = verify_with_blobs(&store, Some(checkpoint), &refs);
        if expect == 0 {
            prop_assert!(report.is_ok(), "unreferenced blob: {}", report);
        } else {
            let bad = report.first_bad.clone();
            prop_assert_eq!(bad.map(|b| b.seq), Some(expect), "{:?}: {}", tamper, report);
        }
    }
}

/// Every single byte of a stored record, flipped in turn on disk, is caught at that record.
#[test]
fn every_byte_of_a_record_is_covered() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let built = build(dir.path(), 5, &[64])?;
    let (log, _) = built.store.raw_trees_for_tests()?;
    let key = SledStore::record_key_for_tests(2);
    let original = log.get(key)?.ok_or("no record")?;
    for at in 0..original.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bytes = original.to_vec();
            bytes[at] ^= mask;
            log.insert(key, bytes)?;
            let report = verify_with_blobs(&built.store, None, &refs);
            let bad = report
                .first_bad
                .ok_or(format!("byte {at} mask {mask:#x} missed"))?;
            assert_eq!(bad.seq, 2, "byte {at} mask {mask:#x}");
        }
    }
    log.insert(key, original)?;
    assert!(verify_with_blobs(&built.store, None, &refs).is_ok());
    Ok(())
}

/// Each kind of damage is reported as its own problem.
#[test]
fn problems_are_classified() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let built = build(dir.path(), 9, &[10])?;
    let (log, blob_tree) = built.store.raw_trees_for_tests()?;
    let key = SledStore::record_key_for_tests;
    let check = |want: fn(&Problem) -> bool, seq: u64| -> Result<(), String> {
        let report = verify_with_blobs(&built.store, Some(built.head.into()), &refs);
        match report.first_bad {
            Some(bad) if bad.seq == seq && want(&bad.problem) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    };

    let r3 = log.get(key(3))?.ok_or("no record")?;
    log.remove(key(3))?;
    check(|p| matches!(p, Problem::Missing), 3)?;
    log.insert(key(3), log.get(key(4))?.ok_or("no record")?)?;
    check(|p| matches!(p, Problem::SeqMismatch { found: 4 }), 3)?;
    log.insert(key(3), b"not msgpack".to_vec())?;
    check(|p| matches!(p, Problem::Undecodable { .. }), 3)?;
    log.insert(key(3), r3)?;

    // A consistently re-hashed rewrite breaks the link to the next record.
    let mut records = built.store.read_range(5..6)?;
    let mut r5 = records.pop().ok_or("no record")?;
    r5.payload = payload(99, None);
    let original5 = log.get(key(5))?.ok_or("no record")?;
    log.insert(
        key(5),
        lockplane_store::record::encode_record(&r5, &r5.hash()),
    )?;
    check(|p| matches!(p, Problem::BrokenLink { .. }), 6)?;
    log.insert(key(5), original5)?;

    let blob = built.blobs[0];
    blob_tree.insert(blob.0, b"other".to_vec())?;
    check(|p| matches!(p, Problem::CorruptBlob { .. }), 2)?;
    blob_tree.remove(blob.0)?;
    check(|p| matches!(p, Problem::MissingBlob { .. }), 2)?;
    assert_eq!(built.store.put_blob(&(0..10u8).collect::<Vec<_>>())?, blob);
    assert!(verify_with_blobs(&built.store, None, &refs).is_ok());
    assert_eq!(sha3_256(&(0..10u8).collect::<Vec<_>>()), blob);

    // Deleting the last record is caught through the stored head.
    let last = built.head.seq;
    log.remove(key(last))?;
    check(|p| matches!(p, Problem::Missing), last)?;
    Ok(())
}

/// A damaged stored head doesn't stop the ledger from opening (so verify can report it), but
/// appends are refused until it is repaired.
#[test]
fn damaged_head_is_reported_and_blocks_appends() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let built = build(dir.path(), 4, &[8])?;
    let (log, _) = built.store.raw_trees_for_tests()?;
    log.insert(SledStore::HEAD_KEY_FOR_TESTS, b"garbage".to_vec())?;
    log.flush()?;
    drop((log, built.store));

    let store = SledStore::open(dir.path())?;
    assert!(matches!(store.head(), Err(StoreError::Corrupt { .. })));
    let report = verify_with_blobs(&store, None, &refs);
    assert!(
        matches!(report.first_bad, Some(ref b) if matches!(b.problem, Problem::BadHead { .. })),
        "{report}"
    );
    let append = store.append(None, vec![NewRecord::now("db", "K", vec![])]);
    assert!(matches!(append, Err(StoreError::Poisoned(_))), "{append:?}");
    // Nothing was written past the damage.
    assert_eq!(store.read_raw(5..100)?.len(), 0);
    Ok(())
}
