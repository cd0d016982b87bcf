//! Introspection speed against `pg_dump --schema-only` on the same database, in the same run.
//!
//! Builds 2,000 tables (10 columns, 2 indexes, 1 foreign key, 1 policy each) on a throwaway
//! cluster, then times a full Lockplane introspection (connect, read, normalise, hash; with one
//! connection and with two sharing a snapshot, the way the CLI reads) and a
//! `pg_dump --schema-only` (process start, connect, dump) several times each, and prints the
//! medians and their ratio. Target: Lockplane ≤ 0.5× pg_dump.
//!
//! Run: `cargo bench -p lockplane-engine --bench introspect` (`LOCKPLANE_BENCH_TABLES` changes
//! the table count).

use std::process::Command;
use std::time::{Duration, Instant};

use lockplane_engine::cluster::Cluster;
use lockplane_engine::introspect::introspect_parallel;
use lockplane_engine::{catalog_hash, introspect, IntrospectOptions};

const RUNS: usize = 5;

fn table_sql(i: usize) -> String {
    let parent = if i == 0 { 0 } else { i - 1 };
    format!(
        "CREATE TABLE t{i} (
           id bigint PRIMARY KEY,
           parent_id bigint REFERENCES t{parent} (id) ON DELETE CASCADE,
           name text NOT NULL DEFAULT '',
           qty integer DEFAULT 0 CHECK (qty >= 0),
           created timestamptz NOT NULL DEFAULT now(),
           active boolean,
           price numeric(10,2),
           code varchar(50),
           ref uuid,
           tenant_id integer NOT NULL);
         CREATE INDEX t{i}_name_ix ON t{i} (lower(name));
         CREATE INDEX t{i}_tenant_ix ON t{i} (tenant_id) WHERE active;
         ALTER TABLE t{i} ENABLE ROW LEVEL SECURITY;
         CREATE POLICY tenant ON t{i} USING (tenant_id = current_setting('app.tenant', true)::int);"
    )
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() {
    let tables: usize = std::env::var("LOCKPLANE_BENCH_TABLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let cluster = tokio::task::spawn_blocking(Cluster::start_default)
        .await
        .expect("join")
        .expect("start a throwaway cluster");
    cluster.create_database("bench").await.expect("create db");
    let client = cluster.connect("bench").await.expect("connect");

    let started = Instant::now();
    for chunk in (0..tables).collect::<Vec<_>>().chunks(100) {
        let sql: String = chunk.iter().map(|&i| table_sql(i)).collect();
        client.batch_execute(&sql).await.expect("create tables");
    }
    client.batch_execute("ANALYZE").await.expect("analyze");
    eprintln!(
        "built {tables} tables in {:.1} s (Postgres {})",
        started.elapsed().as_secs_f64(),
        cluster.major_version()
    );

    let config = cluster.config("bench").into();
    let connect = || async {
        lockplane_engine::connect::connect(&config)
            .await
            .expect("connect")
    };
    let options = IntrospectOptions::default();
    let mut single = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let mut c = connect().await;
        let catalog = introspect(&mut c, &options).await.expect("introspect");
        catalog_hash(&catalog).expect("hash");
        single.push(t.elapsed());
    }
    let mut ours = Vec::new();
    let mut hashing = Vec::new();
    let mut summary = String::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let (mut c, mut helper) = tokio::join!(connect(), connect());
        let catalog = introspect_parallel(&mut c, &mut helper, &options)
            .await
            .expect("introspect");
        let h = Instant::now();
        let hash = catalog_hash(&catalog).expect("hash");
        hashing.push(h.elapsed());
        ours.push(t.elapsed());
        summary = format!(
            "{} tables, {} indexes, hash {hash}",
            catalog.schemas["public"].tables.len(),
            catalog.schemas["public"]
                .tables
                .values()
                .map(|t| t.indexes.len())
                .sum::<usize>()
        );
    }

    let bin = cluster.binaries().bin_dir.join("pg_dump");
    let pg_dump = if bin.is_file() { bin } else { "pg_dump".into() };
    let mut theirs = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new(&pg_dump)
            .args([
                "--schema-only",
                "-f",
                "/dev/null",
                "-d",
                &cluster.url("bench"),
            ])
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        theirs.push(t.elapsed());
    }

    let (ours, single, theirs) = (median(ours), median(single), median(theirs));
    let hashing = median(hashing);
    println!("introspect: {summary}");
    println!(
        "lockplane introspect, one connection (median of {RUNS}): {:>8.1} ms ({:.2}x pg_dump)",
        single.as_secs_f64() * 1e3,
        single.as_secs_f64() / theirs.as_secs_f64()
    );
    println!(
        "lockplane introspect, two connections (median of {RUNS}): {:>7.1} ms (of which hashing {:.1} ms)",
        ours.as_secs_f64() * 1e3,
        hashing.as_secs_f64() * 1e3
    );
    println!(
        "pg_dump --schema-only (median of {RUNS}): {:>7.1} ms",
        theirs.as_secs_f64() * 1e3
    );
    println!(
        "ratio lockplane (two connections) / pg_dump: {:.2}x (target <= 0.50x)",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}
