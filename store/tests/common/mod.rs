//! What every backend must do, shared by the backend test files (`sled_store.rs`,
//! `pg_store.rs`, `crash.rs`): one conformance scenario run against each `Store`.

#![allow(dead_code)]

use lockplane_store::{
    sha3_256, verify, verify_with_blobs, Checkpoint, Head, NewRecord, Problem, Store, StoreError,
    GENESIS_HASH,
};

/// One line `ack <first_seq> <last_seq> <head_hash>` of `ledger-crash-child`: records it had
/// acknowledged when it was killed.
pub struct Ack {
    pub first: u64,
    pub last: u64,
    pub hash: lockplane_store::Hash,
}

/// Parses an `ack` line; anything else (a partial line cut by the kill) is `None`.
pub fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    let hash = parts.next()?.parse().ok()?;
    Some(Ack { first, last, hash })
}

/// A record with a fixed timestamp, so two backends given the same batches store the same bytes.
pub fn rec(stream: &str, kind: &str, payload: &[u8]) -> NewRecord {
    NewRecord {
        at: 1_700_000_000_000_000,
        stream: stream.into(),
        kind: kind.into(),
        payload: payload.to_vec(),
    }
}

/// The same scenario on any backend: appends, conflict, reads, streams, blobs, verify.
pub fn exercise(store: &dyn Store) -> Result<(), StoreError> {
    assert_eq!(store.head()?, Head::GENESIS);
    let h1 = store.append(
        Some(Head::GENESIS),
        vec![rec("a", "K1", b"one"), rec("b", "K2", b"two")],
    )?;
    assert_eq!(h1.seq, 2);

    match store.append(Some(Head::GENESIS), vec![rec("a", "K3", b"late")]) {
        Err(StoreError::Conflict { expected, actual }) => {
            assert_eq!((expected, actual), (Head::GENESIS, h1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.head()?, h1, "a conflicting append writes nothing");

    let h2 = store.append(Some(h1), vec![rec("a", "K3", b"three")])?;
    let h3 = store.append(None, vec![rec("b", "K4", b"four")])?;
    assert_eq!((h2.seq, h3.seq), (3, 4));
    assert_eq!(
        store.append(Some(h3), vec![])?,
        h3,
        "empty batch is a no-op"
    );

    let all = store.read_range(1..100)?;
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].prev_hash, GENESIS_HASH);
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash());
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    assert_eq!(all[3].hash(), h3.hash);
    assert_eq!(store.read_range(2..3)?[0].payload, b"two");

    let a: Vec<u64> = store
        .read_stream("a", 0, 10)?
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(a, vec![1, 3]);
    let b: Vec<u64> = store
        .read_stream("b", 3, 10)?
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(b, vec![4]);
    assert_eq!(store.read_stream("a", 0, 1)?.len(), 1);
    assert!(store.read_stream("ab", 0, 10)?.is_empty());

    let blob = store.put_blob(b"a large manifest")?;
    assert_eq!(blob, sha3_256(b"a large manifest"));
    assert_eq!(store.put_blob(b"a large manifest")?, blob, "stored once");
    assert_eq!(
        store.get_blob(&blob)?.as_deref(),
        Some(&b"a large manifest"[..])
    );
    assert_eq!(store.get_blob(&sha3_256(b"absent"))?, None);

    let report = verify(store, Some(Checkpoint::from(h2)));
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records_checked, 4);

    let refs = move |r: &lockplane_store::Record| {
        if r.seq == 2 {
            vec![blob, sha3_256(b"never stored")]
        } else {
            vec![blob]
        }
    };
    let report = verify_with_blobs(store, None, &refs);
    let bad = report
        .first_bad
        .unwrap_or_else(|| panic!("missing blob not caught"));
    assert_eq!(bad.seq, 2);
    assert!(matches!(bad.problem, Problem::MissingBlob { .. }));

    let wrong = Checkpoint {
        seq: 3,
        head_hash: h1.hash,
    };
    let report = verify(store, Some(wrong));
    assert_eq!(report.first_bad.map(|b| b.seq), Some(3));
    let ahead = Checkpoint {
        seq: 9,
        head_hash: h1.hash,
    };
    let bad = verify(store, Some(ahead)).first_bad;
    assert_eq!(
        bad.map(|b| (b.seq, b.problem)),
        Some((5, Problem::TruncatedBelowCheckpoint { checkpoint_seq: 9 }))
    );
    Ok(())
}
