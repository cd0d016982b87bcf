//! Many agents at once against one database: 16 agents through one process, then two
//! processes with separate ledgers sharing the database. Postgres itself proves that no two
//! applies overlapped: an event trigger logs every DDL command with its transaction and time,
//! and the transactions' spans must not intersect. Every plan must end applied, merged, stale
//! or refused, and each ledger must verify.

use std::process::Command;

use lockplane_actors::{Config, Lockplane, ShadowConfig};
use lockplane_engine::testkit;
use tokio_postgres::Client;

async fn database() -> (String, Client) {
    let cluster = testkit::shared_cluster().expect("cluster");
    let name = testkit::fresh_database("swarm").await.expect("database");
    let client = cluster.connect(&name).await.expect("connect");
    client
        .batch_execute(testkit::DDL_LOG)
        .await
        .expect("ddl log");
    (cluster.url(&name), client)
}

fn swarm(ledger: &std::path::Path, url: &str, prefix: &str, agents: usize) -> std::process::Child {
    let shadow = testkit::shared_cluster().expect("cluster").url("postgres");
    Command::new(env!("CARGO_BIN_EXE_lockplane-swarm"))
        .args(["swarm", "--ledger"])
        .arg(ledger)
        .args(["--url", url, "--prefix", prefix, "--shadow-url", &shadow])
        .args([
            "--agents",
            &agents.to_string(),
            "--rounds",
            "3",
            "--dry-run",
            "false",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lockplane-swarm")
}

fn report(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("swarm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swarm failed: {stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("report");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    report
}

/// Every plan of the ledger ended applied, merged, stale or failed (refused), and the ledger
/// verifies. Returns the count per status.
async fn assert_plans_settled(
    ledger: &std::path::Path,
    url: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut config = Config::new(ledger);
    config.shadow = ShadowConfig::Url(testkit::shared_cluster().expect("cluster").url("postgres"));
    let lp = Lockplane::open(config).await.expect("open ledger");
    let db = lp.attach(url, Some("swarm-db")).await.expect("attach");
    let mut counts = std::collections::BTreeMap::new();
    for plan in lp.list_plans(&db).await.expect("plans") {
        let status = plan.status.name();
        assert!(
            matches!(status, "applied" | "merged" | "stale" | "failed"),
            "plan {} ended {status}",
            plan.plan.plan_id
        );
        *counts.entry(status.to_owned()).or_insert(0) += 1;
    }
    let verified = lp.verify_ledger().await.expect("verify");
    assert!(verified.ok, "{:?}", verified.problems);
    counts
}

async fn tables_of(client: &Client, prefix: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname LIKE $1",
            &[&format!("{prefix}\\_a%")],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_agents_through_one_process() {
    let (url, client) = database().await;
    let ledger = tempfile::tempdir().expect("tempdir");
    let path = ledger.path().join("ledger");
    let report = report(swarm(&path, &url, "one", 16));
    // 16 agents × 3 rounds; even agents add two tables in round 1.
    assert_eq!(tables_of(&client, "one").await, 16 * 3 + 8);
    let transactions = testkit::ddl_transactions(&client)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let counts = assert_plans_settled(&path, &url).await;
    assert!(transactions >= 48, "{transactions} DDL transactions");
    assert_eq!(counts.get("merged"), Some(&16), "{counts:?} {report}");
    eprintln!("one process: {report}; plans {counts:?}; {transactions} DDL transactions");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_with_separate_ledgers_share_one_database() {
    let (url, client) = database().await;
    let (l1, l2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (p1, p2) = (l1.path().join("ledger"), l2.path().join("ledger"));
    let first = swarm(&p1, &url, "p1", 8);
    let second = swarm(&p2, &url, "p2", 8);
    let (r1, r2) = (report(first), report(second));
    assert_eq!(tables_of(&client, "p1").await, 8 * 3 + 4);
    assert_eq!(tables_of(&client, "p2").await, 8 * 3 + 4);
    let transactions = testkit::ddl_transactions(&client)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let c1 = assert_plans_settled(&p1, &url).await;
    let c2 = assert_plans_settled(&p2, &url).await;
    eprintln!("two processes: {r1} {c1:?} / {r2} {c2:?}; {transactions} DDL transactions");
}
