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
//! `LEDGER_BENCH_SECS` sets how long each append figure runs (default 3).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockplane_store::hash::hash_input;
use lockplane_store::{sha3_256, verify, Head, NewRecord, SledStore, Store, StoreError};
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

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let secs = std::env::var("LEDGER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let run_for = Duration::from_secs(secs);
    println!("lockplane-store ledger benchmark (sled, one run)");

    let dir = tempfile::tempdir()?;
    // Verify first, before the append figures leave sled background threads behind.
    verify_and_replay(&dir.path().join("big"))?;
    append_single(&dir.path().join("one"), run_for)?;
    append_concurrent(&dir.path().join("sixteen-any"), run_for, false)?;
    append_concurrent(&dir.path().join("sixteen-occ"), run_for, true)?;
    Ok(())
}

fn append_single(path: &std::path::Path, run_for: Duration) -> BenchResult<()> {
    let store = SledStore::open(path)?;
    let mut head = Head::GENESIS;
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < run_for {
        head = store.append(Some(head), vec![new_record(n)])?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "durable appends, 1 writer:                 {:>9.0} appends/s  ({n} appends, {} flushes)",
        n as f64 / secs,
        store.commit_groups()
    );
    Ok(())
}

fn append_concurrent(path: &std::path::Path, run_for: Duration, occ: bool) -> BenchResult<()> {
    let store = Arc::new(SledStore::open(path)?);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..16u64)
        .map(|w| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            let (done, conflicts) = (Arc::clone(&done), Arc::clone(&conflicts));
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
    let n = done.load(Ordering::Relaxed);
    let groups = store.commit_groups().max(1);
    if occ {
        println!(
            "durable appends, 16 writers, expected head: {:>9.0} appends/s  ({n} appends, {} conflicts retried, {:.1} appends/flush)",
            n as f64 / secs,
            conflicts.load(Ordering::Relaxed),
            n as f64 / groups as f64
        );
    } else {
        println!(
            "durable appends, 16 writers, group commit:  {:>9.0} appends/s  ({n} appends, {:.1} appends/flush)",
            n as f64 / secs,
            n as f64 / groups as f64
        );
    }
    let report = verify(&*store, None);
    if !report.is_ok() {
        return Err(format!("verify failed after concurrent appends: {report}").into());
    }
    Ok(())
}

fn verify_and_replay(path: &std::path::Path) -> BenchResult<()> {
    {
        let store = SledStore::open(path)?;
        let mut head = Head::GENESIS;
        let build = Instant::now();
        for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(1000) {
            head = store.append(Some(head), chunk.iter().map(|&i| new_record(i)).collect())?;
        }
        println!(
            "built {RECORDS} records in {:.2} s (batches of 1000)",
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
    let mut inputs = Vec::with_capacity(RECORDS as usize);
    let mut next = 1;
    while next <= RECORDS {
        for record in store.read_range(next..(next + 4096).min(RECORDS + 1))? {
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
    while next <= RECORDS {
        for record in store.read_range(next..(next + 4096).min(RECORDS + 1))? {
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
        "replay fold of {RECORDS} records:            {:.3} s (target < 2 s; {} kinds, {} streams)",
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
