//! `lockplane plan` against `migra` on the same pair of databases, in one run (issue 15).
//!
//! Builds `live` (the real-shaped schema of `testkit::app_table_sql`, 2,000 tables) and
//! `target` (the same with 1 % of its tables changed: a new column and a new index each) on a
//! throwaway cluster. The document is `target` introspected to YAML (its `base:` dropped, so
//! the plan is declarative). It times `lockplane plan` of that document against `live` (the
//! full path: read live, reproduce it on the shadow, materialise the document, plan, prove the
//! plan and its reverse; the cluster itself is the shadow server) and with `--no-shadow`, and
//! `migra --unsafe live target`, and prints the medians, their ratios and the peak resident
//! memory of the `lockplane plan` processes. Goal: plan ≤ 1× migra.
//!
//! `cargo bench -p lockplane --bench plan_vs_migra` (`LOCKPLANE_BENCH_TABLES` sets the size,
//! `LOCKPLANE_MIGRA` the migra executable, else `scripts/migra.sh` installs it;
//! `LOCKPLANE_BENCH_RUNS` the runs, `LOCKPLANE_LOG=debug` prints lockplane's timed spans: the
//! profile). Without `--bench`, a 40-table smoke run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lockplane_engine::cluster::Cluster;
use lockplane_engine::testkit;

const RUNS: usize = 3;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn migra() -> String {
    if let Ok(path) = std::env::var("LOCKPLANE_MIGRA") {
        if !path.is_empty() {
            return path;
        }
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/migra.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run scripts/migra.sh");
    assert!(
        out.status.success(),
        "installing migra: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `command` and returns how long it took; panics unless it exits with one of `ok`.
fn timed(command: &mut Command, ok: &[i32]) -> Duration {
    let started = Instant::now();
    let out = command.output().expect("run");
    let took = started.elapsed();
    // With LOCKPLANE_LOG set, lockplane prints its spans and their timings: the profile.
    if std::env::var_os("LOCKPLANE_LOG").is_some() {
        eprintln!("{command:?}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        out.status.code().is_some_and(|c| ok.contains(&c)),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The largest resident set of any child process waited for so far, in MiB.
fn children_peak_rss_mib() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given, which points to one.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: getrusage returned 0, so it filled the struct.
    let usage = unsafe { usage.assume_init() };
    usage.ru_maxrss as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let tables: usize = std::env::var("LOCKPLANE_BENCH_TABLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 2000 } else { 40 });
    let runs = std::env::var("LOCKPLANE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { RUNS } else { 1 });
    let migra = migra();
    let cluster = tokio::task::spawn_blocking(Cluster::start_default)
        .await
        .expect("join")
        .expect("start a throwaway cluster");
    let changed = (tables / 100).max(1);
    for db in ["live", "target"] {
        cluster.create_database(db).await.expect("create db");
        let client = cluster.connect(db).await.expect("connect");
        testkit::build_app_schema(&client, tables)
            .await
            .expect("build the schema");
        if db == "target" {
            let mut sql = String::new();
            for i in 0..changed {
                let t = i * (tables / changed);
                sql.push_str(&format!(
                    "ALTER TABLE public.t{t} ADD COLUMN extra_{t} text; \
                     CREATE INDEX t{t}_extra_ix ON public.t{t} (extra_{t});"
                ));
            }
            client.batch_execute(&sql).await.expect("change 1 %");
        }
    }
    eprintln!("built live and target: {tables} tables, {changed} changed");

    let dir = tempfile::tempdir().expect("tempdir");
    let lockplane = env!("CARGO_BIN_EXE_lockplane");
    let read = Command::new(lockplane)
        .args([
            "introspect",
            "--no-ledger",
            "--format",
            "yaml",
            "--database-url",
        ])
        .arg(cluster.url("target"))
        .output()
        .expect("introspect target");
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let yaml: String = String::from_utf8_lossy(&read.stdout)
        .lines()
        .filter(|l| !l.starts_with("base:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let doc = dir.path().join("target.yaml");
    std::fs::write(&doc, yaml).expect("write the document");

    let plan = |extra: &[&str], ledger: &Path| {
        let mut c = Command::new(lockplane);
        c.arg("--ledger")
            .arg(ledger)
            .args(["plan", "-f"])
            .arg(&doc)
            .arg("--database-url")
            .arg(cluster.url("live"))
            .arg("--shadow-url")
            .arg(cluster.url("postgres"))
            // The bench's cluster is Lockplane's alone: reproductions may be kept there.
            .arg("--keep-shadow")
            .args(extra);
        c
    };
    let (mut full, mut quick, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let ledger = dir.path().join(format!("ledger{run}"));
        full.push(timed(&mut plan(&[], &ledger), &[0]));
        quick.push(timed(&mut plan(&["--no-shadow"], &ledger), &[0]));
    }
    // Only lockplane processes (and the introspection before them) have finished so far.
    let rss = children_peak_rss_mib();
    // SQLAlchemy, under migra, knows the scheme only as `postgresql://`.
    let sqlalchemy = |db: &str| cluster.url(db).replacen("postgres://", "postgresql://", 1);
    for _ in 0..runs {
        // migra exits 2 when it found differences (here, always) and prints their SQL.
        theirs.push(timed(
            Command::new(&migra)
                .arg("--unsafe")
                .arg(sqlalchemy("live"))
                .arg(sqlalchemy("target")),
            &[2],
        ));
    }
    // The first plan restores live's dump on the shadow server; later ones find that
    // reproduction kept there (same live, same dump) and restore nothing.
    let cold = full[0];
    let warm = (runs > 1).then(|| median(full[1..].to_vec()));
    let (quick, theirs) = (median(quick), median(theirs));
    println!("plan vs migra at {tables} tables, {changed} changed (medians of {runs}):");
    println!(
        "  lockplane plan, first (restores live on the shadow):  {:>9.1} ms  ({:.2}x migra)",
        cold.as_secs_f64() * 1e3,
        cold.as_secs_f64() / theirs.as_secs_f64()
    );
    if let Some(warm) = warm {
        println!(
            "  lockplane plan, again (kept reproduction):           {:>9.1} ms  ({:.2}x migra; goal <= 1x)",
            warm.as_secs_f64() * 1e3,
            warm.as_secs_f64() / theirs.as_secs_f64()
        );
    }
    println!(
        "  lockplane plan --no-shadow:                          {:>9.1} ms  ({:.2}x migra)",
        quick.as_secs_f64() * 1e3,
        quick.as_secs_f64() / theirs.as_secs_f64()
    );
    println!(
        "  migra --unsafe live target:                          {:>9.1} ms",
        theirs.as_secs_f64() * 1e3
    );
    println!("  peak RSS of lockplane plan:                          {rss:.0} MiB");
}
