//! The hub: a process that opens a ledger directory another process holds reaches it through
//! the holder, with the same guarantees as the holder's own appends (one chain, durable before
//! acknowledged), and carries on alone when the holder exits.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lockplane_store::{
    open_dir, verify, Head, NewRecord, SledStore, Store, StoreError, HUB_SOCKET_NAME,
};

fn rec(stream: &str, n: u64) -> NewRecord {
    NewRecord::now(stream, "Test", n.to_be_bytes().to_vec())
}

/// Starts the test child in `mode` on `dir` and waits for its first line.
fn child(dir: &std::path::Path, mode: &str) -> Result<(Child, String), Box<dyn std::error::Error>> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger-crash-child"))
        .arg(dir)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Keep draining: a child writing into a closed pipe would die of it.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    Ok((child, line))
}

#[test]
fn a_held_ledger_is_reached_through_its_holder() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (mut holder, line) = child(dir.path(), "hold")?;
    assert_eq!(line.trim(), "ready");
    assert!(dir.path().join(HUB_SOCKET_NAME).exists());

    // Opening it directly still names the holder; opening the directory joins it.
    assert!(matches!(
        SledStore::open(dir.path()),
        Err(StoreError::Locked { .. })
    ));
    let ledger = Arc::new(open_dir(dir.path(), Duration::ZERO)?);
    assert!(!ledger.held_here());
    assert_eq!(ledger.holder_pid(), Some(holder.id()));

    // Concurrent appends through the hub: one chain, every acknowledgement distinct.
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                (0..25u64)
                    .map(|n| ledger.append(None, vec![rec("db1", t * 100 + n)]))
                    .collect::<Result<Vec<Head>, StoreError>>()
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in threads {
        acked.extend(t.join().map_err(|_| "writer panicked")??);
    }
    acked.sort_by_key(|h| h.seq);
    assert_eq!(
        acked.iter().map(|h| h.seq).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    let head = ledger.head()?;
    assert_eq!(head.seq, 100);
    // Optimistic concurrency holds across processes: a stale expectation conflicts.
    match ledger.append(Some(Head::GENESIS), vec![rec("db1", 0)]) {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, head),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let blob = ledger.put_blob(b"a catalog")?;
    assert_eq!(ledger.get_blob(&blob)?.as_deref(), Some(&b"a catalog"[..]));
    assert_eq!(ledger.read_stream("db1", 50, 10)?.len(), 10);
    assert!(verify(ledger.as_ref(), Some(head.into())).is_ok());
    for h in &acked {
        let stored = ledger.read_range(h.seq..h.seq + 1)?;
        assert_eq!(
            stored[0].hash(),
            h.hash,
            "acknowledged record {} kept",
            h.seq
        );
    }

    // The holder exits: the next call finds nobody holds the ledger, takes it, and carries on.
    drop(holder.stdin.take());
    holder.wait()?;
    let next = ledger.append(Some(head), vec![rec("db1", 999)])?;
    assert_eq!(next.seq, 101);
    assert!(ledger.held_here());
    assert!(verify(ledger.as_ref(), Some(next.into())).is_ok());
    Ok(())
}

#[test]
fn appends_through_the_hub_and_by_the_holder_share_one_chain(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // The holder appends as fast as it can while this process appends through its hub.
    let (mut holder, first) = child(dir.path(), "append")?;
    assert!(first.starts_with("ack "), "{first}");
    let ledger = open_dir(dir.path(), Duration::from_secs(5))?;
    assert!(!ledger.held_here());
    let mine: Vec<Head> = (0..50)
        .map(|n| ledger.append(None, vec![rec("mine", n)]))
        .collect::<Result<_, _>>()?;
    holder.kill()?;
    holder.wait()?;
    let ledger = open_dir(dir.path(), Duration::from_secs(5))?;
    let head = ledger.head()?;
    assert!(head.seq > 50);
    assert!(verify(&ledger, None).is_ok());
    for h in &mine {
        let stored = ledger.read_range(h.seq..h.seq + 1)?;
        assert_eq!(stored[0].stream, "mine");
        assert_eq!(stored[0].hash(), h.hash);
    }
    Ok(())
}
