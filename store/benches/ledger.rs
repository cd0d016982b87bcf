//! Ledger figures from one run: `cargo bench -p lockplane-store`.
//!
//! - durable appends/s (every acknowledged append flushed) with 1 writer and with 16 concurrent
//!   writers, both without an expected head (they share flushes: group commit) and with
//!   expected-head retries (one winner per head, so roughly one flush per append);
//! - verify of a 100,000-record log, in records/s and MB/s, next to raw SHA3-256 over the same
//!   hash-input bytes in the same process, as a ratio (target ≥ 50 %);
//! - a replay fold of the 100,000 records (read, decode record and payload, fold into
//!   count-per-kind and last-seq-per-stream; target < 2 s).
//!
//! - the same append figures for [`PgStore`] on a throwaway Postgres cluster started for the
//!   run with durable settings (1 writer; 16 writers on one handle, group commit; 16 writers
//!   on 16 connections with expected-head retries), and the Postgres / sled ratios.
//!
//! `LEDGER_BENCH_SECS` sets how long each append figure runs (default 2) and
//! `LEDGER_BENCH_RECORDS` the size of the verified log (default 100,000). Without `--bench`
//! (`cargo test --benches`), the run is a smoke check with small sizes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockplane_engine::cluster::{Cluster, ClusterSetup, PgBinaries};
use lockplane_store::hash::hash_input;
use lockplane_store::{sha3_256, verify, Head, NewRecord, PgStore, SledStore, Store, StoreError};
use serde::{Deserialize, Serialize};

const RECORDS: u64 = 100_000;
const KINDS: [&str; 5] = [
    "Introspected",
    "PlanProposed",
    "ApplyStarted",
    "Applied",
    "DriftFound",
];

/// A stand-in domain event, encoded like the real ones (rmp-serde, versioned).
#[derive(Serialize, Deserialize)]
struct Event {
    version: u8,
    id: u64,
    catalog_hash: String,
    note: String,
}

fn event(id: u64) -> Vec<u8> {
    // 100..=900 bytes of note, so records average roughly 600 bytes.
    let len = 100 + (id.wrapping_mul(2_654_435_761) % 801) as usize;
    let e = Event {
        version: 1,
        id,
        catalog_hash: sha3_256(&id.to_be_bytes()).to_string(),
        note: "x".repeat(len),
    };
    rmp_serde::to_vec(&e).unwrap_or_default()
}

fn new_record(id: u64) -> NewRecord {
    NewRecord::now(
        format!("db-{}", id % 8),
        KINDS[(id % KINDS.len() as u64) as usize],
        event(id),
    )
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Sizes of one run. `cargo bench` passes `--bench` and gets the full figures; run any other
/// way (`cargo test --benches`, CI smoke checks) the bench only shows it still works, in about
/// a second per backend. `LEDGER_BENCH_SECS` (each append figure, default 2) and
/// `LEDGER_BENCH_RECORDS` (the verify log, default 100,000) override either.
struct Sizes {
    run_for: Duration,
    records: u64,
}

impl Sizes {
    fn from_env() -> Sizes {
        let full = std::env::args().any(|a| a == "--bench");
        let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<f64>().ok());
        Sizes {
            run_for: Duration::from_secs_f64(env("LEDGER_BENCH_SECS").unwrap_or(if full {
                2.0
            } else {
                0.2
            })),
            records: env("LEDGER_BENCH_RECORDS")
                .map(|r| r as u64)
                .unwrap_or(if full { RECORDS } else { 2_000 })
                .max(1),
        }
    }
}

/// Appends per second of one configuration.
#[derive(Clone, Copy, Default)]
struct Rate {
    per_sec: f64,
    appends: u64,
    conflicts: u64,
}

fn main() -> BenchResult<()> {
    let sizes = Sizes::from_env();
    println!(
        "lockplane-store ledger benchmark (sled and Postgres, one run; {:.1} s per append figure)",
        sizes.run_for.as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    // Verify first, before the append figures leave sled background threads behind.
    verify_and_replay(&dir.path().join("big"), sizes.records)?;

    let sled_one = {
        let sled = Arc::new(SledStore::open(dir.path().join("one"))?);
        let rate = run_writers(&[sled.clone() as Arc<dyn Store>], 1, true, sizes.run_for)?;
        report("sled", "1 writer", rate, sled.commit_groups());
        rate
    };
    let sled_any = {
        let sled = Arc::new(SledStore::open(dir.path().join("sixteen-any"))?);
        let rate = run_writers(&[sled.clone() as Arc<dyn Store>], 16, false, sizes.run_for)?;
        report(
            "sled",
            "16 writers, group commit",
            rate,
            sled.commit_groups(),
        );
        rate
    };
    let sled_occ = {
        let sled = Arc::new(SledStore::open(dir.path().join("sixteen-occ"))?);
        let rate = run_writers(&[sled.clone() as Arc<dyn Store>], 16, true, sizes.run_for)?;
        report(
            "sled",
            "16 writers, expected head",
            rate,
            sled.commit_groups(),
        );
        rate
    };

    match pg_figures(&sizes) {
        Ok([pg_one, pg_any, pg_occ]) => {
            println!("Postgres / sled, durable appends/s:");
            for (what, pg, sled) in [
                ("1 writer", pg_one, sled_one),
                ("16 writers, group commit", pg_any, sled_any),
                ("16 writers, expected head", pg_occ, sled_occ),
            ] {
                println!(
                    "  {what:<34} {:>9.0} / {:>9.0} = {:.2}",
                    pg.per_sec,
                    sled.per_sec,
                    pg.per_sec / sled.per_sec.max(f64::MIN_POSITIVE)
                );
            }
        }
        Err(e) => println!("Postgres figures skipped: {e}"),
    }
    Ok(())
}

/// The PgStore figures on a throwaway cluster configured for durability (`fsync`,
/// `synchronous_commit`, `full_page_writes` on, unlike the test clusters), on this machine's
/// disk like the sled figures: 1 writer, 16 writers sharing one PgStore (group commit), 16
/// writers each with its own PgStore (16 connections) and expected-head retries.
fn pg_figures(sizes: &Sizes) -> BenchResult<[Rate; 3]> {
    let bins = PgBinaries::locate(None)?;
    let cluster = Cluster::start_with(
        &bins,
        &ClusterSetup {
            settings: vec![
                "fsync = on".into(),
                "synchronous_commit = on".into(),
                "full_page_writes = on".into(),
            ],
            ..ClusterSetup::default()
        },
    )?;
    let url = cluster.url("postgres");
    let one = PgStore::open_url(&url, "one")?;
    let pg_one = run_writers(&[Arc::new(one.clone())], 1, true, sizes.run_for)?;
    report("Postgres", "1 writer", pg_one, one.commit_groups());
    let shared = PgStore::open_url(&url, "sixteen-any")?;
    let pg_any = run_writers(&[Arc::new(shared.clone())], 16, false, sizes.run_for)?;
    report(
        "Postgres",
        "16 writers, group commit",
        pg_any,
        shared.commit_groups(),
    );
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..16 {
        let store = PgStore::open_url(&url, "sixteen-occ")?;
        handles.push(store.clone());
        stores.push(Arc::new(store));
    }
    let pg_occ = run_writers(&stores, 16, true, sizes.run_for)?;
    let commits = handles.iter().map(PgStore::commit_groups).sum();
    report("Postgres", "16 connections, expected head", pg_occ, commits);
    drop((stores, handles, one, shared));
    cluster.stop()?;
    Ok([pg_one, pg_any, pg_occ])
}

fn report(backend: &str, what: &str, rate: Rate, commits: u64) {
    println!(
        "{backend:<8} durable appends, {what:<30} {:>9.0} appends/s  ({} appends, {} conflicts retried, {:.1} appends/commit)",
        rate.per_sec,
        rate.appends,
        rate.conflicts,
        rate.appends as f64 / commits.max(1) as f64
    );
}

/// `writers` threads append one record at a time for `run_for`, writer `i` through
/// `stores[i % len]`, either expecting the head they last saw (retrying on conflict) or
/// without an expected head; then the ledger must verify.
fn run_writers(
    stores: &[Arc<dyn Store>],
    writers: u64,
    occ: bool,
    run_for: Duration,
) -> BenchResult<Rate> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&stores[w as usize % stores.len()]);
            let (stop, done, conflicts) =
                (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&conflicts));
            std::thread::spawn(move || -> Result<(), StoreError> {
                let mut expected = store.head()?;
                let mut n = w << 32;
                while !stop.load(Ordering::Relaxed) {
                    let record = new_record(n);
                    if occ {
                        loop {
                            match store.append(Some(expected), vec![record.clone()]) {
                                Ok(h) => {
                                    expected = h;
                                    break;
                                }
                                Err(StoreError::Conflict { actual, .. }) => {
                                    conflicts.fetch_add(1, Ordering::Relaxed);
                                    expected = actual;
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    } else {
                        store.append(None, vec![record])?;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "writer panicked")??;
    }
    let secs = start.elapsed().as_secs_f64();
    let appends = done.load(Ordering::Relaxed);
    let report = verify(&*stores[0], None);
    if !report.is_ok() {
        return Err(format!("verify failed after the appends: {report}").into());
    }
    Ok(Rate {
        per_sec: appends as f64 / secs,
        appends,
        conflicts: conflicts.load(Ordering::Relaxed),
    })
}

fn verify_and_replay(path: &std::path::Path, records: u64) -> BenchResult<()> {
    {
        let store = SledStore::open(path)?;
        let mut head = Head::GENESIS;
        let build = Instant::now();
        for chunk in (0..records).collect::<Vec<_>>().chunks(1000) {
            head = store.append(Some(head), chunk.iter().map(|&i| new_record(i)).collect())?;
        }
        println!(
            "built {records} records in {:.2} s (batches of 1000)",
            build.elapsed().as_secs_f64()
        );
    }
    // Reopen so reads come from what sled recovered, as an audit would.
    let store = SledStore::open(path)?;

    // Several passes each, median reported: on a 2-core machine one pass can lose a core to sled's
    // background work or another process.
    let mut verify_runs = Vec::new();
    let mut report = None;
    for _ in 0..5 {
        let start = Instant::now();
        let r = verify(&store, None);
        verify_runs.push(start.elapsed().as_secs_f64());
        if !r.is_ok() {
            return Err(format!("verify failed: {r}").into());
        }
        report = Some(r);
    }
    let report = report.ok_or("no verify pass")?;
    let verify_secs = median(&mut verify_runs);
    let hashed_mb = report.bytes_hashed as f64 / 1e6;
    let verify_mbps = hashed_mb / verify_secs;

    // Raw SHA3-256 over exactly the bytes verify hashed, one digest per record as verify does.
    let mut inputs = Vec::with_capacity(records as usize);
    let mut next = 1;
    while next <= records {
        for record in store.read_range(next..(next + 4096).min(records + 1))? {
            inputs.push(hash_input(&record));
        }
        next += 4096;
    }
    let mut raw_runs = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let mut acc = 0u8;
        for input in &inputs {
            acc ^= sha3_256(input).0[0];
        }
        raw_runs.push(start.elapsed().as_secs_f64());
        std::hint::black_box(acc);
    }
    let raw_secs = median(&mut raw_runs);
    let raw_mbps = hashed_mb / raw_secs;

    println!(
        "verify passes (s, sorted): {:.3?}; raw SHA3 passes (s, sorted): {:.3?}; medians below",
        verify_runs, raw_runs
    );
    println!(
        "verify {} records: {:.3} s = {:>9.0} records/s, {:.1} MB/s of hash input ({:.1} MB stored read)",
        report.records_checked,
        verify_secs,
        report.records_checked as f64 / verify_secs,
        verify_mbps,
        report.bytes_read as f64 / 1e6
    );
    println!(
        "raw SHA3-256 over the same {:.1} MB:       {:.3} s = {:.1} MB/s",
        hashed_mb, raw_secs, raw_mbps
    );
    println!(
        "verify / raw SHA3-256 throughput:          {:.0} % (target >= 50 %)",
        100.0 * verify_mbps / raw_mbps
    );

    let start = Instant::now();
    let mut per_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_per_stream: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = 0u64;
    let mut next = 1;
    while next <= records {
        for record in store.read_range(next..(next + 4096).min(records + 1))? {
            let event: Event = rmp_serde::from_slice(&record.payload)?;
            ids = ids.wrapping_add(event.id);
            *per_kind.entry(record.kind).or_default() += 1;
            last_per_stream.insert(record.stream, record.seq);
        }
        next += 4096;
    }
    let fold_secs = start.elapsed().as_secs_f64();
    std::hint::black_box(ids);
    println!(
        "replay fold of {records} records:            {:.3} s (target < 2 s; {} kinds, {} streams)",
        fold_secs,
        per_kind.len(),
        last_per_stream.len()
    );
    Ok(())
}

fn median(runs: &mut [f64]) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}
