//! The Postgres backend on real servers (the engine's throwaway clusters): the conformance
//! scenario every backend runs, identical bytes, the triggers, tampering by a superuser,
//! racing writers on separate connections, reconnection, crashes of an appending process, and
//! a failover to a synchronous standby.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockplane_engine::cluster::{Cluster, ClusterSetup, PgBinaries};
use lockplane_engine::testkit;
use lockplane_store::{verify, Head, MemoryStore, PgStore, Problem, SledStore, Store, StoreError};
use tokio_postgres::NoTls;

mod common;
use common::{exercise, parse_ack, rec, Ack};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// A URL for a new, empty database on the shared cluster.
fn fresh_url() -> Result<String, Box<dyn std::error::Error>> {
    let name = runtime()?.block_on(testkit::fresh_database("ledger"))?;
    Ok(testkit::shared_cluster()?.url(&name))
}

/// Runs `sql` as the superuser on `url`, returning the error the server raised, if any.
fn sql(url: &str, sql: &str) -> Result<Result<(), tokio_postgres::Error>, std::io::Error> {
    let url = url.to_owned();
    let sql = sql.to_owned();
    runtime()?.block_on(async move {
        let (client, connection) = match tokio_postgres::connect(&url, NoTls).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        tokio::spawn(connection);
        Ok(client.batch_execute(&sql).await)
    })
}

/// The first column of the first row of `sql` on `url`, as text.
fn query_text(url: &str, sql: &str) -> Result<String, Box<dyn std::error::Error>> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    runtime()?.block_on(async move {
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
        tokio::spawn(connection);
        let row = client.query_one(&sql, &[]).await?;
        Ok(row.try_get::<_, String>(0)?)
    })
}

fn refused(result: Result<(), tokio_postgres::Error>, what: &str) -> String {
    match result {
        Ok(()) => panic!("{what} was not refused"),
        Err(e) => e
            .as_db_error()
            .map(|db| db.message().to_owned())
            .unwrap_or_else(|| e.to_string()),
    }
}

#[test]
fn pg_store_behaves_and_survives_reopen() -> TestResult {
    let url = fresh_url()?;
    let head = {
        let store = PgStore::open_url(&url, "main")?;
        exercise(&store)?;
        store.head()?
    };
    let store = PgStore::open_url(&url, "main")?;
    assert_eq!(store.head()?, head);
    let report = verify(&store, Some(head.into()));
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records_checked, 4);
    Ok(())
}

#[test]
fn every_backend_writes_identical_bytes() -> TestResult {
    let url = fresh_url()?;
    let dir = tempfile::tempdir()?;
    let pg = PgStore::open_url(&url, "bytes")?;
    let sled = SledStore::open(dir.path())?;
    let mem = MemoryStore::new();
    for store in [&pg as &dyn Store, &sled, &mem] {
        store.append(None, vec![rec("a", "K", b"x"), rec("b", "L", b"yy")])?;
        store.append(Some(store.head()?), vec![rec("a", "M", &[0, 255, 7])])?;
        store.put_blob(b"manifest")?;
    }
    assert_eq!(pg.read_raw(0..10)?, mem.read_raw(0..10)?);
    assert_eq!(sled.read_raw(0..10)?, mem.read_raw(0..10)?);
    assert_eq!(pg.head()?, mem.head()?);
    assert_eq!(pg.head()?, sled.head()?);
    let blob = lockplane_store::sha3_256(b"manifest");
    assert_eq!(pg.get_blob(&blob)?, mem.get_blob(&blob)?);
    Ok(())
}

/// Several named ledgers share one database and its blobs, and concurrent first opens of a
/// fresh database all succeed (the schema is installed once, under the advisory lock).
#[test]
fn ledgers_share_a_database() -> TestResult {
    let url = fresh_url()?;
    let stores: Vec<PgStore> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let url = &url;
                s.spawn(move || PgStore::open_url(url, &format!("ledger-{}", i % 3)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(StoreError::Closed)))
            .collect::<Result<_, _>>()
    })?;
    let a = stores[0].append(Some(Head::GENESIS), vec![rec("db", "A", b"a")])?;
    let b = stores[1].append(Some(Head::GENESIS), vec![rec("db", "B", b"b")])?;
    assert_ne!(a, b);
    assert_eq!(a.seq, 1);
    assert_eq!(stores[3].head()?, a, "same ledger name, same ledger");
    assert_eq!(stores[2].head()?, Head::GENESIS);
    let blob = stores[0].put_blob(b"shared")?;
    assert_eq!(stores[2].get_blob(&blob)?.as_deref(), Some(&b"shared"[..]));
    assert_eq!(stores[1].read_stream("db", 0, 10)?[0].kind, "B");
    for store in &stores {
        assert!(verify(store, None).is_ok());
    }
    Ok(())
}

#[test]
fn triggers_refuse_changes_and_verify_names_a_superuser_edit() -> TestResult {
    let url = fresh_url()?;
    let store = PgStore::open_url(&url, "guarded")?;
    let mut head = Head::GENESIS;
    for i in 0..5u8 {
        head = store.append(Some(head), vec![rec("db", "K", &[i; 20])])?;
    }
    store.put_blob(b"blob")?;

    for (statement, what) in [
        (
            "UPDATE lockplane_ledger.records SET kind = 'X' WHERE seq = 3",
            "UPDATE on lockplane_ledger.records",
        ),
        (
            "DELETE FROM lockplane_ledger.records WHERE seq = 5",
            "DELETE on lockplane_ledger.records",
        ),
        (
            "TRUNCATE lockplane_ledger.records",
            "TRUNCATE on lockplane_ledger.records",
        ),
        (
            "UPDATE lockplane_ledger.blobs SET bytes = 'x'",
            "UPDATE on lockplane_ledger.blobs",
        ),
        (
            "DELETE FROM lockplane_ledger.blobs",
            "DELETE on lockplane_ledger.blobs",
        ),
        (
            "TRUNCATE lockplane_ledger.blobs",
            "TRUNCATE on lockplane_ledger.blobs",
        ),
        (
            "DELETE FROM lockplane_ledger.heads",
            "DELETE on lockplane_ledger.heads",
        ),
        (
            "TRUNCATE lockplane_ledger.heads",
            "TRUNCATE on lockplane_ledger.heads",
        ),
        // Replica mode switches ordinary triggers off, not ENABLE ALWAYS ones.
        (
            "SET session_replication_role = replica; \
             UPDATE lockplane_ledger.records SET bytes = 'x' WHERE seq = 2",
            "UPDATE on lockplane_ledger.records",
        ),
    ] {
        let message = refused(sql(&url, statement)?, statement);
        assert!(
            message.contains(what) && message.contains("append-only"),
            "{statement}: {message}"
        );
    }
    let message = refused(
        sql(&url, "UPDATE lockplane_ledger.heads SET seq = 2, hash = (SELECT hash FROM lockplane_ledger.records WHERE ledger = 'guarded' AND seq = 2) WHERE ledger = 'guarded'")?,
        "moving the head back",
    );
    assert!(message.contains("only move forward"), "{message}");
    // A fork (a second record after record 4) is refused by the table itself.
    let message = refused(
        sql(
            &url,
            "INSERT INTO lockplane_ledger.records \
             SELECT ledger, 6, prev_hash, hash, stream, kind, bytes \
             FROM lockplane_ledger.records WHERE ledger = 'guarded' AND seq = 5",
        )?,
        "a forking insert",
    );
    assert!(
        message.contains("does not link") || message.contains("duplicate key"),
        "{message}"
    );
    let report = verify(&store, Some(head.into()));
    assert!(report.is_ok(), "{report}");

    // A superuser switches the triggers off and rewrites one byte of record 3.
    sql(
        &url,
        "ALTER TABLE lockplane_ledger.records DISABLE TRIGGER USER; \
         UPDATE lockplane_ledger.records \
            SET bytes = set_byte(bytes, 60, get_byte(bytes, 60) # 1) \
          WHERE ledger = 'guarded' AND seq = 3",
    )??;
    let report = verify(&store, Some(head.into()));
    let bad = report.first_bad.clone().ok_or("tampering not caught")?;
    assert_eq!(bad.seq, 3, "{report}");
    assert!(
        matches!(
            bad.problem,
            Problem::HashMismatch { .. } | Problem::Undecodable { .. }
        ),
        "{report}"
    );
    // Deleting the last record is named too (through the head).
    sql(
        &url,
        "DELETE FROM lockplane_ledger.records WHERE ledger = 'guarded' AND seq = 5; \
         ALTER TABLE lockplane_ledger.records ENABLE ALWAYS TRIGGER lockplane_append_only",
    )??;
    let report = verify(&store, None);
    assert_eq!(report.first_bad.map(|b| b.seq), Some(3));
    Ok(())
}

/// Two writers on separate connections race for the same head 1,000 times: exactly one wins
/// each round, the loser is told the winner's head, and the chain never forks.
#[test]
fn racing_writers_never_fork() -> TestResult {
    const ROUNDS: usize = 1_000;
    let url = fresh_url()?;
    let first = PgStore::open_url(&url, "race")?;
    let second = PgStore::open_url(&url, "race")?;
    let barrier = Barrier::new(2);
    let outcomes: Vec<Vec<Result<Head, StoreError>>> = std::thread::scope(|s| {
        let handles: Vec<_> = [&first, &second]
            .into_iter()
            .enumerate()
            .map(|(w, store)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut expected = Head::GENESIS;
                    let mut outcomes = Vec::with_capacity(ROUNDS);
                    for round in 0..ROUNDS {
                        barrier.wait();
                        let payload = format!("{w}:{round}").into_bytes();
                        let outcome =
                            store.append(Some(expected), vec![rec("db", "Race", &payload)]);
                        expected = match &outcome {
                            Ok(head) => *head,
                            Err(StoreError::Conflict { actual, .. }) => *actual,
                            Err(_) => expected,
                        };
                        outcomes.push(outcome);
                    }
                    outcomes
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].len(), ROUNDS);
    assert_eq!(outcomes[1].len(), ROUNDS);
    let mut wins = [0usize; 2];
    for (round, (a, b)) in outcomes[0].iter().zip(&outcomes[1]).enumerate() {
        let (winner, loser) = match (a, b) {
            (Ok(w), Err(l)) => {
                wins[0] += 1;
                (w, l)
            }
            (Err(l), Ok(w)) => {
                wins[1] += 1;
                (w, l)
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        };
        assert_eq!(winner.seq, round as u64 + 1);
        assert!(
            matches!(loser, StoreError::Conflict { actual, .. } if actual == winner),
            "round {round}: {loser}"
        );
    }
    eprintln!("wins per writer: {wins:?}");
    let head = first.head()?;
    assert_eq!(head.seq, ROUNDS as u64);
    let raws = second.read_raw(1..head.seq + 1)?;
    assert!(
        raws.iter().map(|r| r.seq).eq(1..=head.seq),
        "seqs are contiguous"
    );
    let report = verify(&first, Some(head.into()));
    assert!(report.is_ok(), "{report}");
    Ok(())
}

/// A connection the server closes is replaced: reads retry on a new one, appends go on.
#[test]
fn a_broken_connection_is_replaced() -> TestResult {
    let url = fresh_url()?;
    let store = PgStore::open_url(&url, "reconnect")?;
    let head = store.append(None, vec![rec("db", "K", b"before")])?;
    sql(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )??;
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(store.head()?, head);
    let next = store.append(Some(head), vec![rec("db", "K", b"after")])?;
    assert_eq!(next.seq, 2);
    assert!(verify(&store, None).is_ok());
    Ok(())
}

/// Every acknowledged append is stored with the acknowledged hash.
fn check_acks(store: &dyn Store, acks: &[Ack], label: &str) -> Result<(), StoreError> {
    let head = store.head()?;
    for ack in acks {
        assert!(
            head.seq >= ack.last,
            "{label}: acknowledged seq {} lost (head {head})",
            ack.last
        );
        let records = store.read_range(ack.first..ack.last + 1)?;
        assert_eq!(records.len() as u64, ack.last + 1 - ack.first, "{label}");
        assert_eq!(
            records.last().map(|r| r.hash()),
            Some(ack.hash),
            "{label}: record {} differs from what was acknowledged",
            ack.last
        );
    }
    Ok(())
}

/// A process appending through two connections is SIGKILLed at random moments, 30 times; after
/// each kill every acknowledged record is there with its hash and the chain verifies.
#[test]
fn acknowledged_appends_survive_sigkill_of_the_appender() -> TestResult {
    const KILLS: usize = 30;
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("pg crash test seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let url = fresh_url()?;
    let mut total = 0usize;
    for kill in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger-crash-child"))
            .args(["--pg", &url, "crash", "append"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ack) = parse_ack(&line) {
                    let _ = tx.send(ack);
                }
            }
        });
        // One time in five anywhere from start-up on, otherwise once appends flow.
        let first = if next().is_multiple_of(5) {
            Err(mpsc::RecvTimeoutError::Timeout)
        } else {
            rx.recv_timeout(Duration::from_secs(10))
        };
        std::thread::sleep(Duration::from_micros(next() % 30_000));
        child.kill()?;
        child.wait()?;
        let _ = reader.join();
        let acks: Vec<Ack> = first.into_iter().chain(rx.try_iter()).collect();
        let store = PgStore::open_url(&url, "crash")?;
        check_acks(&store, &acks, &format!("kill {kill}"))?;
        let report = verify(&store, None);
        assert!(report.is_ok(), "kill {kill}: {report}");
        total += acks.len();
    }
    eprintln!("{KILLS} kills, {total} acknowledged appends checked");
    assert!(total > KILLS, "the child should get appends acknowledged");
    Ok(())
}

/// A primary with a synchronous standby: appends run on the primary (one writer still
/// appending while the standby is promoted and the primary stopped), then the ledger opens on
/// the promoted server with every acknowledged record, appends go on, and it is one chain.
#[test]
fn failover_to_a_synchronous_standby_loses_nothing_acknowledged() -> TestResult {
    let bins = PgBinaries::locate(None)?;
    let primary = Cluster::start_with(
        &bins,
        &ClusterSetup {
            settings: vec![
                "synchronous_standby_names = '*'".into(),
                "synchronous_commit = on".into(),
            ],
            ..ClusterSetup::default()
        },
    )?;
    let standby = primary.start_standby(&ClusterSetup::default())?;

    let store = Arc::new(PgStore::open_url(&primary.url("postgres"), "failover")?);
    // The open committed the head row, so the standby is connected, and synchronous.
    assert_eq!(
        query_text(
            &primary.url("postgres"),
            "SELECT string_agg(sync_state, ',') FROM pg_stat_replication"
        )?,
        "sync"
    );
    let mut acked = Vec::new();
    let mut head = Head::GENESIS;
    for i in 0..20u8 {
        head = store.append(Some(head), vec![rec("db", "Before", &[i])])?;
        acked.push(head);
    }
    // A writer that keeps appending until the primary goes away under it.
    let (tx, rx) = mpsc::channel();
    let writer = std::thread::spawn({
        let store = Arc::clone(&store);
        move || -> StoreError {
            for n in 0u64.. {
                match store.append(None, vec![rec("db", "During", &n.to_be_bytes())]) {
                    Ok(head) => {
                        let _ = tx.send(head);
                    }
                    Err(e) => return e,
                }
            }
            StoreError::Closed
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    standby.promote()?;
    primary.stop()?;
    let ended = writer.join().map_err(|_| "writer panicked")?;
    eprintln!("the writer stopped with: {ended}");
    acked.extend(rx.try_iter());
    drop(store);

    let promoted = PgStore::open_url(&standby.url("postgres"), "failover")?;
    let head = promoted.head()?;
    let last = acked.iter().map(|h| h.seq).max().unwrap_or(0);
    assert!(
        head.seq >= last,
        "acknowledged seq {last} lost (head {head})"
    );
    for ack in &acked {
        let record = promoted.read_range(ack.seq..ack.seq + 1)?;
        assert_eq!(
            record.first().map(|r| r.hash()),
            Some(ack.hash),
            "acknowledged record {} differs or is gone",
            ack.seq
        );
    }
    let after = promoted.append(Some(head), vec![rec("db", "After", b"promoted")])?;
    assert_eq!(after.seq, head.seq + 1);
    let report = verify(&promoted, Some(after.into()));
    assert!(report.is_ok(), "{report}");
    eprintln!(
        "{} acknowledged appends before and during the failover, head after it {after}",
        acked.len()
    );
    drop(promoted);
    standby.stop()?;
    Ok(())
}
