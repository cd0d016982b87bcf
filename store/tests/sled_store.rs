//! Behaviour of the sled backend (and the memory backend, for parity) on real disk; the
//! scenario every backend runs is `common::exercise`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use lockplane_store::{verify, Checkpoint, Head, MemoryStore, SledStore, Store, StoreError};

mod common;
use common::{exercise, rec};

#[test]
fn memory_store_behaves() -> Result<(), StoreError> {
    exercise(&MemoryStore::new())
}

#[test]
fn sled_store_behaves_and_survives_reopen() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
    let head = {
        let store = SledStore::open(dir.path())?;
        exercise(&store)?;
        store.head()?
    };
    // Reopening right after the last handle is dropped works, and everything is still there.
    let store = SledStore::open(dir.path())?;
    assert_eq!(store.head()?, head);
    let report = verify(&store, Some(head.into()));
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records_checked, 4);
    assert!(dir.path().join("lockplane.lock").exists());
    Ok(())
}

#[test]
fn both_backends_write_identical_bytes() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
    let sled = SledStore::open(dir.path())?;
    let mem = MemoryStore::new();
    for store in [&sled as &dyn Store, &mem] {
        store.append(None, vec![rec("a", "K", b"x"), rec("b", "L", b"yy")])?;
    }
    assert_eq!(sled.read_raw(0..10)?, mem.read_raw(0..10)?);
    assert_eq!(sled.head()?, mem.head()?);
    Ok(())
}

#[test]
fn checkpoint_prints_as_json() -> Result<(), StoreError> {
    let store = MemoryStore::new();
    let head = store.append(None, vec![rec("a", "K", b"x")])?;
    let cp = Checkpoint::from(head);
    let json = cp.to_string();
    assert_eq!(
        json,
        format!(
            r#"{{"seq":1,"head_hash":"sha3-256:{}"}}"#,
            head.hash.to_hex()
        )
    );
    assert_eq!(Checkpoint::from_json(&json).ok(), Some(cp));
    let report = serde_json::to_string(&verify(&store, Some(cp))).unwrap_or_default();
    assert!(report.contains(r#""first_bad":null"#), "{report}");
    Ok(())
}

#[test]
fn two_handles_in_one_process_never_fork() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
    let first = SledStore::open(dir.path())?;
    let second = SledStore::open(dir.path())?;
    let base = first.append(None, vec![rec("a", "K", b"base")])?;

    // Many contenders, same expected head, released at once: exactly one may win.
    for round in 0..20u8 {
        let expected = first.head()?;
        let contenders = 8;
        let barrier = Arc::new(Barrier::new(contenders));
        let results: Vec<Result<Head, StoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..contenders)
                .map(|i| {
                    let store = if i % 2 == 0 { &first } else { &second };
                    let barrier = Arc::clone(&barrier);
                    s.spawn(move || {
                        barrier.wait();
                        store.append(Some(expected), vec![rec("a", "Race", &[round, i as u8])])
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(StoreError::Closed)))
                .collect()
        });
        let winners: Vec<&Head> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, StoreError::Conflict { expected: e, actual } if *e == expected && actual == winners[0]),
                    "{e}"
                );
            }
        }
    }
    assert_eq!(second.head()?.seq, base.seq + 20);
    let report = verify(&second, None);
    assert!(report.is_ok(), "{report}");
    Ok(())
}

#[test]
fn a_ledger_held_by_another_process_names_its_holder() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger-crash-child"))
        .arg(dir.path())
        .arg("hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    assert_eq!(line.trim(), "ready");

    match SledStore::open(dir.path()) {
        Err(StoreError::Locked { holder, path }) => {
            assert_eq!(holder.pid, Some(child.id()));
            let cmd = holder.command.clone().unwrap_or_default();
            assert!(cmd.contains("ledger-crash-child"), "{cmd}");
            assert!(cmd.contains("hold"), "{cmd}");
            let msg = StoreError::Locked { path, holder }.to_string();
            assert!(msg.contains(&format!("pid {}", child.id())), "{msg}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(matches!(
        SledStore::open_waiting(dir.path(), Duration::from_millis(200)),
        Err(StoreError::Locked { .. })
    ));

    // Once the holder exits, a waiting open gets in.
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.flush()?;
    let waiter = std::thread::spawn({
        let path = dir.path().to_path_buf();
        move || SledStore::open_waiting(path, Duration::from_secs(20)).map(|s| s.head())
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(stdin);
    child.wait()?;
    let head = waiter.join().map_err(|_| "waiter panicked")???;
    assert_eq!(head, Head::GENESIS);
    Ok(())
}

/// What a process killed halfway through creating a ledger leaves behind (a temporary
/// directory with sled's first files cut short) is discarded by the next open, which creates
/// the ledger properly and moves it into place.
#[test]
fn an_unfinished_creation_is_discarded() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let creating = dir
        .path()
        .join(format!("{}.creating", lockplane_store::SLED_DIR_NAME));
    std::fs::create_dir_all(creating.join("blobs"))?;
    std::fs::write(creating.join("conf"), b"segment_size: 5")?;
    std::fs::write(creating.join("db"), [0x5a; 37])?;
    let store = SledStore::open(dir.path())?;
    assert!(
        !creating.exists(),
        "the unfinished creation was left in place"
    );
    assert!(dir.path().join(lockplane_store::SLED_DIR_NAME).is_dir());
    let head = store.append(None, vec![rec("db", "Created", b"first")])?;
    assert_eq!(head.seq, 1);
    assert!(verify(&store, None).is_ok());
    Ok(())
}
