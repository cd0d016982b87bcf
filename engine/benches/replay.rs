//! Replay of 100,000 domain events from a sled ledger into the projections (`audit replay`'s
//! work). Target: under 2 s.
//!
//! Writes a realistic mix of all event kinds (8 databases, each going round introspect →
//! two proposals → merge → confirm → apply start → step → applied → apply_sql → context or
//! drift, with 3-statement receipts and a manifest blob per introspection) into a ledger in a
//! temp dir, reopens it, then times reading every record from disk, decoding its event
//! (checked against the record's kind and stream) and folding it into [`Projections`]. Also
//! prints decode + fold alone (payloads already in memory), and checks the replayed
//! projections equal the ones kept up to date while writing.
//!
//! Run: `cargo bench -p lockplane-engine --bench replay` (`LOCKPLANE_BENCH_EVENTS` changes the
//! event count).

use std::time::{Duration, Instant};

use lockplane_engine::events::{
    self, ApplyStarted, Approval, BlobRef, CatalogIntrospected, ContextSet, DriftDetected, Event,
    PlanApplied, PlanConfirmed, PlanProposed, PlanSummary, PlansMerged, Receipt, SqlApplied,
    StepApplied, StepOutcome, StepReceipt, Timing,
};
use lockplane_engine::projection::Projections;
use lockplane_engine::CatalogHash;
use lockplane_store::{NewRecord, Record, SledStore, Store};

const DATABASES: u64 = 8;
const ROUND: u64 = 10;
const T0: i64 = 1_700_000_000_000_000;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn hash(db: u64, round: u64, variant: u8) -> CatalogHash {
    let digest = lockplane_engine::hash::sha3_256_hex(
        &[
            &db.to_be_bytes()[..],
            &round.to_be_bytes()[..],
            &[variant][..],
        ]
        .concat(),
    );
    CatalogHash(format!("sha3-256:{digest}"))
}

fn receipt(input: &str, statements: usize, at: i64) -> BenchResult<Receipt> {
    let steps = (0..statements)
        .map(|i| StepReceipt {
            sql: format!("ALTER TABLE app.orders_{i} ADD COLUMN note_{i} text DEFAULT ''"),
            started_at: at + i as i64 * 1000,
            duration_ms: 1 + i as u64,
            rows: Some(i as u64),
            outcome: StepOutcome::Ok,
        })
        .collect();
    let timing = Timing {
        started_at: at,
        finished_at: at + 5000,
        duration_ms: 5,
    };
    Ok(Receipt::seal(input, steps, timing)?)
}

fn plan(id: String, base: CatalogHash, target: CatalogHash, confirm: bool) -> PlanSummary {
    PlanSummary {
        body: BlobRef::of(id.as_bytes()),
        plan_id: id,
        base_hash: base,
        target_hash: target,
        step_count: 3,
        hazards: if confirm {
            vec!["data_loss".into()]
        } else {
            Vec::new()
        },
        requires_confirmation: confirm,
        base_manifest: None,
        target_manifest: None,
        renames: Default::default(),
    }
}

/// Event `i` (seq `i + 1`) of the benchmark log, and the blob it refers to, if any.
fn event(i: u64) -> BenchResult<(Event, Option<Vec<u8>>)> {
    let db = i % DATABASES;
    let k = i / DATABASES;
    let (round, step) = (k / ROUND, k % ROUND);
    let seq_of = |step: u64| (round * ROUND + step) * DATABASES + db + 1;
    let at = T0 + i as i64 * 1000;
    let actor = format!("agent:{}", i % 3);
    let database = format!("db-{db}");
    let live = hash(db, round, 0);
    let next = hash(db, round + 1, 0);
    let id = |s: &str| format!("plan-{db}-{round}-{s}");
    let event = match step {
        0 => {
            let manifest = format!(
                "{{\"catalog\":{{\"round\":{round},\"db\":{db},\"tables\":[{}]}},\"catalog_hash\":\"{}\"}}",
                (0..20).map(|t| format!("\"t{t}\"")).collect::<Vec<_>>().join(","),
                live
            )
            .into_bytes();
            let event = Event::CatalogIntrospected(CatalogIntrospected {
                actor,
                database,
                catalog_hash: live,
                manifest: BlobRef::of(&manifest),
                schemas: Vec::new(),
                server_version: Some("15.6".into()),
            });
            return Ok((event, Some(manifest)));
        }
        1 | 2 => Event::PlanProposed(PlanProposed {
            actor,
            database,
            plan: plan(
                id(if step == 1 { "a" } else { "b" }),
                live,
                hash(db, round + 1, step as u8),
                false,
            ),
        }),
        3 => Event::PlansMerged(PlansMerged {
            actor,
            database,
            sources: vec![id("a"), id("b")],
            merged: plan(id("m"), live, next, true),
        }),
        4 => Event::PlanConfirmed(PlanConfirmed {
            actor: "user:reviewer".into(),
            database,
            plan_id: id("m"),
            hazards_acknowledged: vec!["data_loss".into()],
        }),
        5 => Event::ApplyStarted(ApplyStarted {
            actor,
            database,
            plan_id: id("m"),
            base_hash: live,
            approval: Some(Approval {
                seq: seq_of(4),
                by: "user:reviewer".into(),
            }),
        }),
        6 => Event::StepApplied(StepApplied {
            actor,
            database,
            plan_id: id("m"),
            step_index: 2,
            step_id: "s3".into(),
            receipt: receipt(&id("m"), 1, at)?.steps.remove(0),
            catalog_hash: None,
        }),
        7 => Event::PlanApplied(PlanApplied {
            actor,
            database,
            plan_id: id("m"),
            started_seq: seq_of(5),
            before_hash: live,
            after_hash: next,
            approval: Some(Approval {
                seq: seq_of(4),
                by: "user:reviewer".into(),
            }),
            receipt: receipt(&id("m"), 3, at)?,
            recovered: false,
        }),
        8 => Event::SqlApplied(SqlApplied {
            actor,
            database,
            before_hash: Some(next.clone()),
            after_hash: Some(next),
            receipt: receipt("UPDATE app.orders_0 SET note_0 = 'x' WHERE id = 1", 1, at)?,
        }),
        _ if round % 2 == 0 => Event::ContextSet(ContextSet {
            actor,
            database,
            role: Some("lp_runtime_read".into()),
            user_id: Some(format!("user-{round}")),
            tenant_id: Some(format!("tenant-{db}")),
        }),
        _ => Event::DriftDetected(DriftDetected {
            actor: "scheduler".into(),
            database,
            expected_hash: next.clone(),
            live_hash: next,
            manifest: None,
        }),
    };
    Ok((event, None))
}

fn main() -> BenchResult<()> {
    let count: u64 = std::env::var("LOCKPLANE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    println!("lockplane-engine replay benchmark (sled, one run): {count} domain events");

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ledger");
    let mut expected = Projections::new();
    let mut payload_bytes = 0usize;
    {
        let store = SledStore::open(&path)?;
        let started = Instant::now();
        let mut head = store.head()?;
        let mut batch = Vec::new();
        for i in 0..count {
            let (event, blob) = event(i)?;
            if let Some(blob) = blob {
                store.put_blob(&blob)?;
            }
            let at = T0 + i as i64 * 1000;
            expected.apply(i + 1, at, event.database(), &event);
            let payload = events::encode(&event);
            payload_bytes += payload.len();
            batch.push(NewRecord {
                at,
                stream: event.database().to_owned(),
                kind: event.kind().to_owned(),
                payload,
            });
            if batch.len() == 1000 {
                head = store.append(Some(head), std::mem::take(&mut batch))?;
            }
        }
        store.append(Some(head), batch)?;
        println!(
            "  wrote {count} events ({:.1} MB of payload, avg {} B) in {:.2?}",
            payload_bytes as f64 / 1e6,
            payload_bytes / count.max(1) as usize,
            started.elapsed()
        );
    }
    if !expected.anomalies.is_empty() {
        return Err(format!(
            "generator produced anomalies: {:?}",
            &expected.anomalies[..1]
        )
        .into());
    }

    // Reopen, so the replay reads what is on disk.
    let store = SledStore::open(&path)?;
    let started = Instant::now();
    let (replayed, records) = replay(&store)?;
    let elapsed = started.elapsed();
    if replayed != expected {
        return Err("replayed projections differ from the incrementally built ones".into());
    }
    report("replay from sled (read + decode + fold)", count, elapsed);

    let started = Instant::now();
    let mut folded = Projections::new();
    for record in &records {
        let event = events::decode_record_payload(&record.kind, &record.stream, &record.payload)?;
        folded.apply(record.seq, record.at, &record.stream, &event);
    }
    report(
        "decode + fold only (payloads in memory)",
        count,
        started.elapsed(),
    );
    if folded != expected {
        return Err("folded projections differ".into());
    }
    let plans: usize = replayed.databases.values().map(|d| d.plans.len()).sum();
    let history: usize = replayed.databases.values().map(|d| d.history.len()).sum();
    println!(
        "  projections: {} databases, {plans} plans, {history} history entries, {} anomalies",
        replayed.databases.len(),
        replayed.anomalies.len()
    );
    let target = Duration::from_secs(2);
    println!(
        "  target: replay < {target:.0?}: {}",
        if elapsed < target { "met" } else { "MISSED" }
    );
    Ok(())
}

/// Reads every record page by page, decodes and folds it; returns the records too.
fn replay(store: &SledStore) -> BenchResult<(Projections, Vec<Record>)> {
    const PAGE: u64 = 4096;
    let end = store.head()?.seq + 1;
    let mut projections = Projections::new();
    let mut all = Vec::with_capacity(end as usize);
    let mut next = 1;
    while next < end {
        let upto = (next + PAGE).min(end);
        for record in store.read_range(next..upto)? {
            let event =
                events::decode_record_payload(&record.kind, &record.stream, &record.payload)?;
            projections.apply(record.seq, record.at, &record.stream, &event);
            all.push(record);
        }
        next = upto;
    }
    Ok((projections, all))
}

fn report(what: &str, count: u64, elapsed: Duration) {
    println!(
        "  {what}: {elapsed:.2?} ({:.0} events/s)",
        count as f64 / elapsed.as_secs_f64()
    );
}
