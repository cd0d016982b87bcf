//! CLI command latency on a ledger directory another process holds, through that process's
//! hub, against the same command on the free directory (opened directly), in one run (issue
//! 14). The command is `lockplane audit verify` (reads every record and blob) and `lockplane
//! audit checkpoint`, on a ledger of `RECORDS` records; each is run `RUNS` times alternately
//! direct and through the hub, and the medians and their ratio are printed.
//!
//! `cargo bench -p lockplane --bench hub_latency` (`HUB_BENCH_RUNS`, `HUB_BENCH_RECORDS` set
//! the sizes; without `--bench`, a short smoke run).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lockplane_store::{NewRecord, SledStore, Store};

fn size(name: &str, bench: usize, smoke: usize) -> usize {
    let default = if std::env::args().any(|a| a == "--bench") {
        bench
    } else {
        smoke
    };
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(ledger: &Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .arg("--ledger")
        .arg(ledger)
        .args(args)
        .output()
        .expect("run lockplane");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "lockplane {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let runs = size("HUB_BENCH_RUNS", 30, 3);
    let records = size("HUB_BENCH_RECORDS", 2_000, 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    {
        // Events the CLI can read: a real introspection payload is not needed for timing the
        // path, but `audit verify` decodes every event, so use an encoded one.
        let store = SledStore::open(&ledger).expect("ledger");
        let event =
            lockplane_engine::events::Event::ContextSet(lockplane_engine::events::ContextSet {
                actor: "bench".into(),
                database: "db".into(),
                role: None,
                user_id: None,
                tenant_id: None,
            });
        let payload = lockplane_engine::events::encode(&event);
        for chunk in 0..records.div_ceil(100) {
            let batch = (0..100.min(records - chunk * 100))
                .map(|_| NewRecord::now("db", event.kind(), payload.clone()))
                .collect();
            store.append(None, batch).expect("append");
        }
    }
    println!("hub latency: {records} records, {runs} runs each (medians)");
    for args in [&["audit", "checkpoint"][..], &["audit", "verify"]] {
        let (mut direct, mut hub) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            direct.push(run(&ledger, args));
            let held = SledStore::open(&ledger).expect("hold the ledger");
            hub.push(run(&ledger, args));
            drop(held);
        }
        let (d, h) = (median(direct), median(hub));
        println!(
            "  lockplane {:<18} direct {:>8.1} ms  through the hub {:>8.1} ms  ratio {:.2}",
            args.join(" "),
            d.as_secs_f64() * 1e3,
            h.as_secs_f64() * 1e3,
            h.as_secs_f64() / d.as_secs_f64()
        );
    }
}
