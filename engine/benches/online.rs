//! An online (expand/contract) migration under application traffic: backfill throughput on a
//! table of 1M rows, and the application's latency during the migration as a ratio of its
//! latency without one (the goal: p99 within 1.5×).
//!
//! One throwaway cluster, one database, `orders(id bigint primary key, qty integer, note
//! text)`. An application of 4 sessions does short reads and writes by primary key
//! (`SELECT … WHERE id = $1`, `UPDATE … SET qty = qty + 1 WHERE id = $1`) as fast as it can.
//! 1. Reference: the application alone, for as long as the migration will take (measured
//!    first on a copy, so both runs see the same table).
//! 2. The migration (`rollout::start`: expand, then the keyset backfill) with the same
//!    application running; its latencies while the migration runs.
//!
//! It also times the same fill as one `UPDATE orders SET _lp_new_qty = qty::bigint` on a third
//! copy (what the backfill does in one statement, holding every row lock until the end), the
//! reference for throughput.
//!
//! Run: `cargo bench -p lockplane-engine --bench online` (`LOCKPLANE_BENCH_ROWS` changes the row
//! count, `LOCKPLANE_BENCH_BATCH` the batch size, `LOCKPLANE_BENCH_PAUSE_MS` the pause between
//! batches, `LOCKPLANE_BENCH_INTERVAL_US` each session's interval, 0 for flat out,
//! `LOCKPLANE_BENCH_NO_AUTOVACUUM=1` turns autovacuum off on the table).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockplane_engine::online::{BackfillOptions, ColumnChange, OnlineMigration};
use lockplane_engine::rollout::{self, Timeouts};
use lockplane_engine::testkit;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SESSIONS: usize = 4;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn migration() -> OnlineMigration {
    OnlineMigration {
        version: "v2".into(),
        changes: vec![ColumnChange {
            schema: "public".into(),
            table: "orders".into(),
            column: "qty".into(),
            new_name: Some("quantity".into()),
            new_type: Some("bigint".into()),
            set_not_null: false,
            up: "qty::bigint".into(),
            down: "quantity::integer".into(),
        }],
    }
}

/// A fresh database holding `orders` with `rows` rows.
async fn orders(rows: u64) -> BenchResult<String> {
    let db = testkit::fresh_database("bench_online").await?;
    let client = testkit::shared_cluster()?.connect(&db).await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE orders (id bigint PRIMARY KEY, qty integer, note text);
             INSERT INTO orders SELECT g, g % 1000, 'order ' || g FROM generate_series(1, {rows}) g;"
        ))
        .await?;
    client.batch_execute("VACUUM ANALYZE orders").await?;
    if std::env::var_os("LOCKPLANE_BENCH_NO_AUTOVACUUM").is_some() {
        client
            .batch_execute("ALTER TABLE orders SET (autovacuum_enabled = false)")
            .await?;
    }
    Ok(db)
}

/// The application: `SESSIONS` sessions of short reads and writes until `stop`; every
/// statement's latency.
fn application(
    db: &str,
    rows: u64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<BenchResult<Vec<Duration>>>> {
    (0..SESSIONS)
        .map(|s| {
            let (db, stop) = (db.to_owned(), stop.clone());
            tokio::spawn(async move {
                let client = testkit::shared_cluster()?.connect(&db).await?;
                let read = client
                    .prepare("SELECT qty, note FROM orders WHERE id = $1")
                    .await?;
                let write = client
                    .prepare("UPDATE orders SET qty = qty + 1 WHERE id = $1")
                    .await?;
                let mut latencies = Vec::new();
                let mut i: u64 = s as u64;
                let interval =
                    Duration::from_micros(env_number("LOCKPLANE_BENCH_INTERVAL_US", 2_000));
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if !interval.is_zero() {
                        next += interval;
                        tokio::time::sleep_until(next.into()).await;
                    }
                    i += 7919;
                    let id = (i * 104_729 % rows + 1) as i64;
                    let started = Instant::now();
                    if i.is_multiple_of(2) {
                        client.query_opt(&read, &[&id]).await?;
                    } else {
                        client.execute(&write, &[&id]).await?;
                    }
                    latencies.push(started.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect()
}

async fn collect(
    workers: Vec<tokio::task::JoinHandle<BenchResult<Vec<Duration>>>>,
) -> BenchResult<Vec<Duration>> {
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await??);
    }
    all.sort();
    Ok(all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SESSIONS + 2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> BenchResult<()> {
    let rows = env_number("LOCKPLANE_BENCH_ROWS", 1_000_000);
    let batch = env_number("LOCKPLANE_BENCH_BATCH", 2_000) as u32;
    let m = migration();
    let t = Timeouts::default();
    println!("online migration bench: {rows} rows, batch {batch}, {SESSIONS} application sessions");

    // Throughput reference: the same fill in one statement.
    let db = orders(rows).await?;
    let client = testkit::shared_cluster()?.connect(&db).await?;
    client
        .batch_execute("ALTER TABLE orders ADD COLUMN _lp_new_qty bigint")
        .await?;
    let started = Instant::now();
    client
        .batch_execute("UPDATE orders SET _lp_new_qty = qty::bigint")
        .await?;
    let one_statement = started.elapsed();

    // The migration alone, for its duration and throughput.
    let db = orders(rows).await?;
    let client = testkit::shared_cluster()?.connect(&db).await?;
    let opts = BackfillOptions {
        batch_size: batch,
        pause: Duration::from_millis(env_number("LOCKPLANE_BENCH_PAUSE_MS", 0)),
        ..BackfillOptions::default()
    };
    let started = Instant::now();
    rollout::start(&client, &m, &t, &opts, &mut |_| {}).await?;
    let alone = started.elapsed();

    // Reference: the application alone for as long as the migration took.
    let db = orders(rows).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = application(&db, rows, stop.clone());
    tokio::time::sleep(alone.max(Duration::from_secs(3))).await;
    stop.store(true, Ordering::Relaxed);
    let reference = collect(workers).await?;

    // The migration with the application running.
    let client = testkit::shared_cluster()?.connect(&db).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = application(&db, rows, stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let outcome = rollout::start(&client, &m, &t, &opts, &mut |_| {}).await?;
    let under_traffic = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = collect(workers).await?;
    // After the backfill, before complete: the sync trigger alone (every write also computes
    // the other representation), to tell its cost from the backfill's.
    let stop = Arc::new(AtomicBool::new(false));
    let workers = application(&db, rows, stop.clone());
    tokio::time::sleep(alone.max(Duration::from_secs(3))).await;
    stop.store(true, Ordering::Relaxed);
    let trigger_only = collect(workers).await?;
    let filled = outcome
        .backfill
        .map(|b| b.progress.rows_filled)
        .unwrap_or(0);

    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!(
        "backfill alone:           {:>8.2} s  {:>10.0} rows/s",
        alone.as_secs_f64(),
        rate(alone)
    );
    println!(
        "one UPDATE (reference):   {:>8.2} s  {:>10.0} rows/s   backfill/UPDATE time {:.2}x",
        one_statement.as_secs_f64(),
        rate(one_statement),
        alone.as_secs_f64() / one_statement.as_secs_f64()
    );
    println!(
        "backfill under traffic:   {:>8.2} s  {:>10.0} rows/s   ({filled} rows filled)",
        under_traffic.as_secs_f64(),
        rate(under_traffic)
    );
    for (label, p) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
        let (r, d, t) = (
            percentile(&reference, p),
            percentile(&during, p),
            percentile(&trigger_only, p),
        );
        println!(
            "application {label}: without {:>7.2} ms  during {:>7.2} ms  ratio {:.2}x   \
             trigger only {:>7.2} ms  ratio {:.2}x",
            ms(r),
            ms(d),
            ms(d) / ms(r).max(0.001),
            ms(t),
            ms(t) / ms(r).max(0.001)
        );
    }
    println!(
        "application statements: without {} ({:.0}/s), during {} ({:.0}/s)",
        reference.len(),
        reference.len() as f64 / alone.max(Duration::from_secs(3)).as_secs_f64(),
        during.len(),
        during.len() as f64 / under_traffic.as_secs_f64()
    );
    Ok(())
}
