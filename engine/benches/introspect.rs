//! Introspection speed against `pg_dump --schema-only` on the same database, in the same run
//! (issue 15).
//!
//! Builds a schema shaped like real applications' (`testkit::app_table_sql`: identity and
//! serial columns, generated columns, enums, every constraint kind, partial, expression and
//! multi-column indexes, comments, table and column grants, RLS policies, views, sequences,
//! triggers and functions) on a throwaway cluster at each size, then times a full Lockplane
//! introspection (connect, read, normalise, hash; with one connection and with two sharing a
//! snapshot, the way the CLI reads) and a `pg_dump --schema-only` (process start, connect,
//! dump) several times each, and prints the medians and their ratio. Target: Lockplane ≤ 0.5×
//! pg_dump, and linear growth (10k/2k ≤ 5.5×).
//!
//! Run: `cargo bench -p lockplane-engine --bench introspect` (2,000 tables);
//! `LOCKPLANE_BENCH_TABLES=2000,10000` for the growth figure (several minutes to build).

use std::process::Command;
use std::time::{Duration, Instant};

use lockplane_engine::cluster::Cluster;
use lockplane_engine::introspect::introspect_parallel;
use lockplane_engine::{catalog_hash, introspect, testkit, IntrospectOptions};

const RUNS: usize = 5;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Lockplane (two connections) and pg_dump medians on a database of `tables` tables.
async fn measure(cluster: &Cluster, tables: usize) -> (Duration, Duration) {
    let db = format!("bench{tables}");
    cluster.create_database(&db).await.expect("create db");
    let client = cluster.connect(&db).await.expect("connect");
    let started = Instant::now();
    testkit::build_app_schema(&client, tables)
        .await
        .expect("build the schema");
    eprintln!(
        "built {tables} tables in {:.1} s (Postgres {})",
        started.elapsed().as_secs_f64(),
        cluster.major_version()
    );

    let config = cluster.config(&db).into();
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
    let (mut ours, mut hashing) = (Vec::new(), Vec::new());
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
        let public = &catalog.schemas["public"];
        summary =
            format!(
            "{} tables, {} views, {} sequences, {} indexes, {} unsupported objects, hash {hash}",
            public.tables.len(),
            public.views.len(),
            public.sequences.len(),
            public.tables.values().map(|t| t.indexes.len()).sum::<usize>(),
            catalog.unsupported.len(),
        );
    }

    let bin = cluster.binaries().bin_dir.join("pg_dump");
    let pg_dump = if bin.is_file() { bin } else { "pg_dump".into() };
    let mut theirs = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new(&pg_dump)
            .args(["--schema-only", "-f", "/dev/null", "-d", &cluster.url(&db)])
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        theirs.push(t.elapsed());
    }
    let (ours, single, theirs, hashing) = (
        median(ours),
        median(single),
        median(theirs),
        median(hashing),
    );
    println!("introspect at {tables} tables: {summary}");
    println!(
        "  lockplane, one connection:  {:>8.1} ms ({:.2}x pg_dump)",
        ms(single),
        single.as_secs_f64() / theirs.as_secs_f64()
    );
    println!(
        "  lockplane, two connections: {:>8.1} ms (hashing {:.1} ms)",
        ms(ours),
        ms(hashing)
    );
    println!("  pg_dump --schema-only:      {:>8.1} ms", ms(theirs));
    println!(
        "  ratio lockplane / pg_dump:  {:.2}x (target <= 0.50x)",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    (ours, theirs)
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("LOCKPLANE_BENCH_TABLES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| {
            // Without `--bench` (a smoke run of the bench target) a small schema is enough.
            if std::env::args().any(|a| a == "--bench") {
                vec![2000]
            } else {
                vec![100]
            }
        });
    let cluster = tokio::task::spawn_blocking(Cluster::start_default)
        .await
        .expect("join")
        .expect("start a throwaway cluster");
    let mut results = Vec::new();
    for &tables in &sizes {
        results.push((tables, measure(&cluster, tables).await));
    }
    if let (Some(first), Some(last)) = (results.first(), results.last()) {
        if last.0 > first.0 {
            println!(
                "growth {} → {} tables: lockplane {:.2}x, pg_dump {:.2}x (size {:.1}x; target <= 5.5x for 5x)",
                first.0,
                last.0,
                last.1 .0.as_secs_f64() / first.1 .0.as_secs_f64(),
                last.1 .1.as_secs_f64() / first.1 .1.as_secs_f64(),
                last.0 as f64 / first.0 as f64
            );
        }
    }
}
