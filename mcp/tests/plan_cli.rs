//! `lockplane plan` and `lockplane apply` as a user runs them: a real database, a DSL document,
//! a shadow dry run on a throwaway cluster, two-phase confirmation, and the ledger.

use std::process::{Command, Output};

use lockplane_engine::testkit;
use serde_json::Value;

fn lockplane(ledger: &std::path::Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .args(args)
        .env("LOCKPLANE_LEDGER", ledger)
        .env("DATABASE_URL", url)
        .env("LOCKPLANE_ACTOR", "agent:test")
        .env("NO_COLOR", "1")
        .output()
        .expect("run lockplane")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

const DESIRED: &str = "version: 1
schemas:
  public:
    comment: standard public schema
    tables:
      users:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: email, type: text, not_null: true, unique: true }
      notes:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: author, type: bigint, not_null: true, references: { table: users, columns: [id], on_delete: cascade } }
          - { name: body, type: text }
        indexes:
          - { name: notes_author_ix, columns: [author] }
";

#[tokio::test]
async fn plan_dry_runs_then_apply_needs_the_exact_confirmation() {
    let db = testkit::fresh_database("plan_cli").await.expect("database");
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster.connect(&db).await.expect("connect");
    client
        .batch_execute(
            "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, legacy text)",
        )
        .await
        .expect("schema");
    let url = cluster.url(&db);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = dir.path().join("schema.yaml");
    std::fs::write(&doc, DESIRED).expect("write");
    let plan_file = dir.path().join("plan.json");
    let (doc_s, plan_s) = (
        doc.to_str().expect("path"),
        plan_file.to_str().expect("path"),
    );

    let planned = lockplane(&ledger, &url, &["plan", "-f", doc_s, "--out", plan_s]);
    assert!(planned.status.success(), "{}", text(&planned.stderr));
    let out = text(&planned.stdout);
    assert!(out.contains("shadow dry run: ok"), "{out}");
    assert!(out.contains("DROP COLUMN \"legacy\""), "{out}");
    let plan: Value =
        serde_json::from_slice(&std::fs::read(&plan_file).expect("plan")).expect("json");
    let plan_id = plan["plan_id"].as_str().expect("plan_id").to_owned();
    assert_eq!(plan["requires_confirmation"], true);

    // Data loss: refused without the confirmation, and with another plan's id.
    let refused = lockplane(&ledger, &url, &["apply", plan_s]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("confirmation"),
        "{}",
        text(&refused.stderr)
    );
    let wrong = lockplane(
        &ledger,
        &url,
        &["apply", plan_s, "--confirm", "sha3-256:00"],
    );
    assert!(!wrong.status.success());

    // A plan file changed after planning is refused.
    let tampered = dir.path().join("tampered.json");
    std::fs::write(
        &tampered,
        std::fs::read_to_string(&plan_file)
            .expect("plan")
            .replace("notes_author_ix", "other_ix"),
    )
    .expect("write");
    let changed = lockplane(
        &ledger,
        &url,
        &[
            "apply",
            tampered.to_str().expect("path"),
            "--confirm",
            &plan_id,
        ],
    );
    assert!(!changed.status.success());
    assert!(
        text(&changed.stderr).contains("changed after it was planned"),
        "{}",
        text(&changed.stderr)
    );

    let applied = lockplane(&ledger, &url, &["apply", plan_s, "--confirm", &plan_id]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let target = plan["target_hash"].as_str().expect("target");
    assert!(text(&applied.stdout).contains(&format!("resulting hash {target}")));
    // Not a terminal: progress is plain lines on stderr, one per step and one per commit,
    // and none of it on stdout.
    let steps = plan["steps"].as_array().expect("steps").len();
    let progress = text(&applied.stderr);
    for i in 1..=steps {
        assert!(
            progress.contains(&format!("lockplane: step {i}/{steps} ")),
            "{progress}"
        );
    }
    assert!(
        progress.contains(&format!("lockplane: applied {steps}/{steps} steps")),
        "{progress}"
    );
    assert!(!text(&applied.stdout).contains("lockplane: step"));

    // The database now matches the document; the live hash is the plan's target.
    let again = lockplane(&ledger, &url, &["plan", "-f", doc_s]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("Nothing to do"),
        "{}",
        text(&again.stdout)
    );
    let manifest = lockplane(&ledger, &url, &["introspect", "--no-ledger"]);
    let manifest: Value = serde_json::from_slice(&manifest.stdout).expect("manifest");
    assert_eq!(manifest["catalog_hash"], target);

    // The ledger holds proposal, confirmation, start and outcome, and verifies.
    let log = lockplane(&ledger, &url, &["audit", "log", "--json"]);
    let records: Value = serde_json::from_slice(&log.stdout).expect("audit log JSON");
    let kinds: Vec<String> = records
        .as_array()
        .expect("a list of records")
        .iter()
        .filter_map(|v| v["kind"].as_str().map(str::to_owned))
        .collect();
    for kind in [
        "PlanProposed",
        "PlanConfirmed",
        "ApplyStarted",
        "PlanApplied",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing in {kinds:?}"
        );
    }
    let verified = lockplane(&ledger, &url, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
}
