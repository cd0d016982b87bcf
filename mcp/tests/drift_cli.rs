//! Drift, as CI and operators see it: `lockplane drift` (exit status 2, the difference named),
//! `drift --watch` and `serve --drift-every` noticing a DDL made behind Lockplane's back within
//! one interval, and checks of an unchanged drifted database recording nothing more.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lockplane_engine::testkit;

fn lockplane(ledger: &std::path::Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .args(args)
        .env("LOCKPLANE_LEDGER", ledger)
        .env("DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .output()
        .expect("run lockplane")
}

async fn database() -> (String, tokio_postgres::Client) {
    let db = testkit::fresh_database("drift_cli")
        .await
        .expect("database");
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster.connect(&db).await.expect("connect");
    client
        .batch_execute("CREATE TABLE accounts (id bigint PRIMARY KEY, email text)")
        .await
        .expect("schema");
    (cluster.url(&db), client)
}

/// How many `DriftDetected` records the ledger holds.
fn drift_records(ledger: &std::path::Path, url: &str) -> usize {
    let out = lockplane(ledger, url, &["audit", "log"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("DriftDetected"))
        .count()
}

#[tokio::test]
async fn drift_exits_2_naming_the_difference_and_records_it_once() {
    let (url, client) = database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    // The first look records the baseline: no drift.
    let first = lockplane(&ledger, &url, &["drift"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("no drift"));
    client
        .batch_execute("ALTER TABLE accounts ADD COLUMN sneaky integer")
        .await
        .expect("DDL behind Lockplane's back");
    for _ in 0..2 {
        let out = lockplane(&ledger, &url, &["drift"]);
        assert_eq!(out.status.code(), Some(2), "drift is exit status 2");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("sneaky"),
            "the difference is named: {stdout}"
        );
    }
    assert_eq!(
        drift_records(&ledger, &url),
        1,
        "the same drift is recorded once"
    );
    let json = lockplane(&ledger, &url, &["drift", "--json"]);
    let value: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("drift --json is JSON");
    assert_eq!(value["drifted"], true);
}

/// Reads lines from `reader` until one contains `needle` or `within` passes.
fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    within: Duration,
) -> Option<String> {
    let start = Instant::now();
    while let Some(left) = within.checked_sub(start.elapsed()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Some(line),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

fn lines_of(reader: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test]
async fn drift_watch_notices_a_ddl_within_one_interval() {
    let (url, client) = database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .args(["drift", "--watch", "1s"])
        .env("LOCKPLANE_LEDGER", &ledger)
        .env("DATABASE_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn drift --watch");
    let lines = lines_of(child.stdout.take().expect("stdout"));
    assert!(
        wait_for_line(&lines, "no drift", Duration::from_secs(30)).is_some(),
        "the first check reports the state"
    );
    client
        .batch_execute("CREATE INDEX accounts_email_idx ON accounts (email)")
        .await
        .expect("DDL");
    let seen = Instant::now();
    let line = wait_for_line(&lines, "drift:", Duration::from_secs(10));
    let waited = seen.elapsed();
    assert!(line.is_some(), "drift noticed");
    assert!(
        waited < Duration::from_secs(3),
        "within one interval (and the check's own time): {waited:?}"
    );
    // Further intervals on the unchanged database print and record nothing.
    std::thread::sleep(Duration::from_millis(2_500));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        wait_for_line(&lines, "drift", Duration::from_millis(100)).is_none(),
        "no second report"
    );
    assert_eq!(drift_records(&ledger, &url), 1);
}

#[tokio::test]
async fn serve_checks_drift_on_a_schedule() {
    let (url, client) = database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .args([
            "serve",
            "--stdio",
            "--drift-every",
            "1s",
            "--database-url",
            &url,
        ])
        .env("LOCKPLANE_LEDGER", &ledger)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let lines = lines_of(child.stderr.take().expect("stderr"));
    assert!(
        wait_for_line(&lines, "MCP server on stdio", Duration::from_secs(30)).is_some(),
        "the server starts"
    );
    client
        .batch_execute("ALTER TABLE accounts ADD COLUMN behind_our_back text")
        .await
        .expect("DDL");
    let line = wait_for_line(&lines, "drift on", Duration::from_secs(10)).expect("drift logged");
    let details = wait_for_line(&lines, "behind_our_back", Duration::from_secs(2));
    assert!(details.is_some(), "named: {line}");
    std::thread::sleep(Duration::from_millis(2_500));
    drop(child.stdin.take());
    let _ = child.wait();
    assert_eq!(drift_records(&ledger, &url), 1, "one record per drift");
}
