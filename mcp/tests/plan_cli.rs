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

    // The short id `audit log` shows confirms as well as the whole one.
    let short = plan_id["sha3-256:".len()..][..12].to_owned();
    let applied = lockplane(&ledger, &url, &["apply", plan_s, "--confirm", &short]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let target = plan["target_hash"].as_str().expect("target");
    assert!(text(&applied.stdout).contains(&format!("resulting hash {target}")));
    // Not a terminal: progress is plain lines on stderr, the transaction announced as one
    // with each of its steps, one line per commit, and none of it on stdout.
    let steps = plan["steps"].as_array().expect("steps").len();
    let progress = text(&applied.stderr);
    assert!(
        progress.contains(&format!("steps 1–{steps}/{steps} in one transaction")),
        "{progress}"
    );
    for i in 1..=steps {
        assert!(
            progress.contains(&format!("lockplane: {i}/{steps} ")),
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

/// The README's DSL example (a policy calling `tenant_id()`, a grant to `app_reader`).
fn readme_document() -> String {
    let doc = testkit::readme_dsl_example();
    assert!(!doc.is_empty(), "the README's DSL example");
    doc
}

/// A fresh database with `sql`, its URL.
async fn database(sql: &str) -> String {
    let db = testkit::fresh_database("plan_cli").await.expect("database");
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster.connect(&db).await.expect("connect");
    client.batch_execute(sql).await.expect("schema");
    cluster.url(&db)
}

/// The README's example through the CLI: planned (installing the helpers as steps of the plan),
/// proven, applied, and planned again to nothing.
#[tokio::test]
async fn the_readme_example_applies_through_the_cli() {
    let url = database(
        "DO $$ BEGIN CREATE ROLE app_reader NOLOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = dir.path().join("schema.yaml");
    std::fs::write(&doc, readme_document()).expect("write");
    let plan_file = dir.path().join("plan.json");
    let (doc_s, plan_s) = (
        doc.to_str().expect("path"),
        plan_file.to_str().expect("path"),
    );
    let planned = lockplane(&ledger, &url, &["plan", "-f", doc_s, "--out", plan_s]);
    assert!(planned.status.success(), "{}", text(&planned.stderr));
    let out = text(&planned.stdout);
    assert!(out.contains("shadow dry run: ok"), "{out}");
    assert!(out.contains("install Lockplane's context helpers"), "{out}");
    let applied = lockplane(&ledger, &url, &["apply", plan_s]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let again = lockplane(&ledger, &url, &["plan", "-f", doc_s]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("Nothing to do"),
        "{}",
        text(&again.stdout)
    );
}

/// A plan file edited to run more than it says, with its id recomputed by the README's
/// recipe, is refused: it was never proposed. A plan proposed for one database is refused on
/// another whose schema is the same.
#[tokio::test]
async fn a_forged_or_foreign_plan_file_is_refused() {
    let schema = "CREATE TABLE keep (id int PRIMARY KEY); INSERT INTO keep VALUES (1);";
    let url = database(schema).await;
    let other_url = database(schema).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = dir.path().join("schema.yaml");
    std::fs::write(
        &doc,
        "version: 1\nschemas:\n  public:\n    tables:\n      keep:\n        columns:\n          \
         - { name: id, type: int, pk: true }\n          - { name: note, type: text }\n",
    )
    .expect("write");
    let plan_file = dir.path().join("plan.json");
    let plan_s = plan_file.to_str().expect("path");
    let planned = lockplane(
        &ledger,
        &url,
        &["plan", "-f", doc.to_str().expect("path"), "--out", plan_s],
    );
    assert!(planned.status.success(), "{}", text(&planned.stderr));

    // Forge: a second statement in a step, and the id recomputed as the README shows.
    let mut plan: Value =
        serde_json::from_slice(&std::fs::read(&plan_file).expect("plan")).expect("json");
    let sql = plan["steps"][0]["sql"].as_str().expect("sql").to_owned();
    plan["steps"][0]["sql"] = Value::String(format!("{sql}; DROP TABLE keep"));
    let content = serde_json::json!({
        "base_hash": plan["base_hash"], "target_hash": plan["target_hash"],
        "steps": plan["steps"], "hazards": plan["hazards"],
        "requires_confirmation": plan["requires_confirmation"], "created_by": plan["created_by"],
    });
    let canonical = lockplane_engine::hash::canonical_json(&content).expect("canonical");
    plan["plan_id"] = Value::String(format!(
        "sha3-256:{}",
        lockplane_engine::hash::sha3_256_hex(&canonical)
    ));
    let forged = dir.path().join("forged.json");
    std::fs::write(&forged, serde_json::to_vec(&plan).expect("json")).expect("write");
    let refused = lockplane(&ledger, &url, &["apply", forged.to_str().expect("path")]);
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(
        err.contains("never proposed") || err.contains("2 statements"),
        "{err}"
    );

    // The genuine plan, on another database with the same schema.
    let foreign = lockplane(&ledger, &other_url, &["apply", plan_s]);
    assert!(!foreign.status.success());
    assert!(
        text(&foreign.stderr).contains("never proposed"),
        "{}",
        text(&foreign.stderr)
    );

    // Nothing ran: the table and its row are there.
    let cluster = testkit::shared_cluster().expect("cluster");
    for u in [&url, &other_url] {
        let db = u.rsplit('/').next().expect("db");
        let client = cluster.connect(db).await.expect("connect");
        let rows: i64 = client
            .query_one("SELECT count(*) FROM keep", &[])
            .await
            .expect("keep")
            .get(0);
        assert_eq!(rows, 1);
    }
}

/// A step run alone fails after the transaction committed (a unique index built concurrently
/// over duplicates): the ledger records the committed phase, the message names `--resume`;
/// once the data is fixed, `apply --resume` continues from there and reaches the target.
#[tokio::test]
async fn an_apply_stopped_after_its_transaction_resumes_from_the_ledger() {
    let url = database(
        "CREATE TABLE t (id int PRIMARY KEY, a int); INSERT INTO t VALUES (1, 1), (2, 1);",
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = dir.path().join("schema.yaml");
    std::fs::write(
        &doc,
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
         - { name: id, type: int, pk: true }\n          - { name: a, type: int }\n          \
         - { name: note, type: text }\n        indexes:\n          \
         - { name: t_a, columns: [a], unique: true }\n",
    )
    .expect("write");
    let plan_file = dir.path().join("plan.json");
    let plan_s = plan_file.to_str().expect("path");
    let planned = lockplane(
        &ledger,
        &url,
        &["plan", "-f", doc.to_str().expect("path"), "--out", plan_s],
    );
    assert!(planned.status.success(), "{}", text(&planned.stderr));
    let out = text(&planned.stdout);
    assert!(out.contains("CONCURRENTLY"), "built online: {out}");

    let nothing = lockplane(&ledger, &url, &["apply", plan_s, "--resume"]);
    assert!(!nothing.status.success());
    assert!(
        text(&nothing.stderr).contains("nothing to resume"),
        "{}",
        text(&nothing.stderr)
    );

    let failed = lockplane(&ledger, &url, &["apply", plan_s]);
    assert!(!failed.status.success());
    let err = text(&failed.stderr);
    assert!(err.contains("--resume"), "{err}");
    let log = lockplane(&ledger, &url, &["audit", "log"]);
    let log = text(&log.stdout);
    assert!(log.contains("StepApplied"), "{log}");
    assert!(log.contains("ApplyFailed"), "{log}");

    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster
        .connect(url.rsplit('/').next().expect("db"))
        .await
        .expect("connect");
    client
        .batch_execute("UPDATE t SET a = 2 WHERE id = 2")
        .await
        .expect("fix the data");
    let resumed = lockplane(&ledger, &url, &["apply", plan_s, "--resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(
        text(&resumed.stderr).contains("target hash verified")
            || text(&resumed.stdout).contains("resulting hash"),
        "{}",
        text(&resumed.stdout)
    );
    let again = lockplane(&ledger, &url, &["plan", "-f", doc.to_str().expect("path")]);
    assert!(
        text(&again.stdout).contains("Nothing to do"),
        "{}",
        text(&again.stdout)
    );
}

/// Sends SIGINT to a child process.
fn interrupt(child: &std::process::Child) {
    // SAFETY: kill(2) with a pid we spawned and a standard signal; no memory is involved.
    let pid = i32::try_from(child.id()).expect("pid");
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
}

/// Ctrl-C during a concurrent index build on a table large enough to take seconds: the build
/// is cancelled on the server (no backend still runs it a second later, no invalid index is
/// left), the ledger records the interrupted outcome, a second `apply` finishes, and a third
/// says it is already applied.
#[tokio::test]
async fn ctrl_c_during_apply_cancels_on_the_server_and_records_the_outcome() {
    let url = database(
        "CREATE TABLE big (id int PRIMARY KEY, a int, b text);
         INSERT INTO big SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 1500000) g;
         ANALYZE big;",
    )
    .await;
    let cluster = testkit::shared_cluster().expect("cluster");
    let dbname = url.rsplit('/').next().expect("db").to_owned();
    let client = cluster.connect(&dbname).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = dir.path().join("schema.yaml");
    std::fs::write(
        &doc,
        "version: 1\nschemas:\n  public:\n    tables:\n      big:\n        columns:\n          \
         - { name: id, type: int, pk: true }\n          - { name: a, type: int }\n          \
         - { name: b, type: text }\n        indexes:\n          \
         - { name: big_b_a, columns: [b, a] }\n",
    )
    .expect("write");
    let plan_file = dir.path().join("plan.json");
    let plan_s = plan_file.to_str().expect("path");
    let planned = lockplane(
        &ledger,
        &url,
        &["plan", "-f", doc.to_str().expect("path"), "--out", plan_s],
    );
    assert!(planned.status.success(), "{}", text(&planned.stderr));
    assert!(text(&planned.stdout).contains("CONCURRENTLY"));

    let building = "SELECT count(*) FROM pg_stat_activity \
                    WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND state = 'active'";
    let child = Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .args(["apply", plan_s])
        .env("LOCKPLANE_LEDGER", &ledger)
        .env("DATABASE_URL", &url)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn apply");
    let started = std::time::Instant::now();
    loop {
        let n: i64 = client
            .query_one(building, &[])
            .await
            .expect("activity")
            .get(0);
        if n > 0 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the index build never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    interrupt(&child);
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("interrupted"), "{err}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let n: i64 = client
        .query_one(building, &[])
        .await
        .expect("activity")
        .get(0);
    assert_eq!(n, 0, "the build still runs on the server");
    let invalid: i64 = client
        .query_one("SELECT count(*) FROM pg_index WHERE NOT indisvalid", &[])
        .await
        .expect("indexes")
        .get(0);
    assert_eq!(invalid, 0, "an invalid index was left behind");
    let log = text(&lockplane(&ledger, &url, &["audit", "log"]).stdout);
    assert!(log.contains("ApplyFailed"), "{log}");

    let again = lockplane(&ledger, &url, &["apply", plan_s]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let third = lockplane(&ledger, &url, &["apply", plan_s]);
    assert!(third.status.success(), "{}", text(&third.stderr));
    assert!(
        text(&third.stdout).contains("already applied"),
        "{}",
        text(&third.stdout)
    );
}

/// An apply whose process died after the server finished leaves the ledger "applying"; the
/// next `apply` of the same plan finds the target live and records it as applied, once.
#[tokio::test]
async fn a_plan_whose_target_is_live_is_recorded_as_applied_not_stale() {
    let url = database("CREATE TABLE t (id int PRIMARY KEY)").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = dir.path().join("schema.yaml");
    std::fs::write(
        &doc,
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
         - { name: id, type: int, pk: true }\n          - { name: note, type: text }\n",
    )
    .expect("write");
    let plan_file = dir.path().join("plan.json");
    let plan_s = plan_file.to_str().expect("path");
    let planned = lockplane(
        &ledger,
        &url,
        &["plan", "-f", doc.to_str().expect("path"), "--out", plan_s],
    );
    assert!(planned.status.success(), "{}", text(&planned.stderr));
    // A confirmation that is not this plan's id is refused, even where none is needed.
    let wrong = lockplane(&ledger, &url, &["apply", plan_s, "--confirm", "WRONG"]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("is not this plan's id"),
        "{}",
        text(&wrong.stderr)
    );
    // The change reaches the database without Lockplane recording it (a process that died
    // after COMMIT looks the same to the ledger).
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster
        .connect(url.rsplit('/').next().expect("db"))
        .await
        .expect("connect");
    client
        .batch_execute("ALTER TABLE t ADD COLUMN note text")
        .await
        .expect("alter");
    let first = lockplane(&ledger, &url, &["apply", plan_s]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    assert!(
        out.contains("already applied") && out.contains("recorded as applied at seq"),
        "{out}"
    );
    let second = lockplane(&ledger, &url, &["apply", plan_s]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(
        text(&second.stdout).contains("nothing to do"),
        "{}",
        text(&second.stdout)
    );
}

/// Ctrl-C at many points of `plan` (while its throwaway shadow cluster starts, runs, stops):
/// no `lockplane-pg-*` directory is left behind.
#[tokio::test]
async fn ctrl_c_during_plan_leaves_no_directory() {
    let url = database("CREATE TABLE t (id int PRIMARY KEY)").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("tmp");
    // The shadow's processes run as an unprivileged user: the directory must be reachable.
    let _ = std::process::Command::new("chmod")
        .args(["1777", tmp.to_str().expect("path")])
        .status();
    let doc = dir.path().join("schema.yaml");
    std::fs::write(
        &doc,
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
         - { name: id, type: int, pk: true }\n          - { name: note, type: text }\n",
    )
    .expect("write");
    let leftovers = || {
        std::fs::read_dir(&tmp)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("lockplane-pg-"))
                    .count()
            })
            .unwrap_or(0)
    };
    for delay_ms in [150u64, 400, 700, 1000, 1500, 2200] {
        // Its own process group, interrupted as a whole: what Ctrl-C in a terminal does
        // (initdb, pg_ctl and the server it starts get the signal too).
        use std::os::unix::process::CommandExt;
        let child = Command::new(env!("CARGO_BIN_EXE_lockplane"))
            .args(["plan", "-f", doc.to_str().expect("path")])
            .env("LOCKPLANE_LEDGER", dir.path().join("ledger"))
            .env("DATABASE_URL", &url)
            .env("TMPDIR", &tmp)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn plan");
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        let group = i32::try_from(child.id()).expect("pid");
        // SAFETY: killpg(2) on the group we just created; no memory is involved.
        unsafe {
            libc::killpg(group, libc::SIGINT);
        }
        let _ = child.wait_with_output();
    }
    // The reaper notices its parent is gone within a second, stops the server, removes it.
    let waited = std::time::Instant::now();
    while leftovers() > 0 && waited.elapsed() < std::time::Duration::from_secs(15) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("lockplane-pg-"))
                .map(|e| {
                    // What is inside says which stage the interrupt hit.
                    let inside: Vec<String> = std::fs::read_dir(e.path())
                        .map(|d| {
                            d.filter_map(Result::ok)
                                .map(|f| f.file_name().to_string_lossy().into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    format!("{} {inside:?}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "lockplane-pg-* directories left in {}: {left:?}",
        tmp.display()
    );
}

/// Each class of CLI failure has its own code and exit status, and its message is printed
/// once; the id to confirm is on a line of its own, unwrapped.
#[tokio::test]
async fn each_failure_class_has_its_code_and_exit_status() {
    let url = database("CREATE TABLE t (id int PRIMARY KEY, legacy text)").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        path.to_str().expect("path").to_owned()
    };
    let drop_doc = write(
        "drop.yaml",
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
         - { name: id, type: int, pk: true }\n",
    );
    let plan_file = dir.path().join("plan.json");
    let plan_s = plan_file.to_str().expect("path");
    let planned = lockplane(&ledger, &url, &["plan", "-f", &drop_doc, "--out", plan_s]);
    assert!(planned.status.success(), "{}", text(&planned.stderr));
    let plan: Value =
        serde_json::from_slice(&std::fs::read(&plan_file).expect("plan")).expect("json");
    let plan_id = plan["plan_id"].as_str().expect("id").to_owned();
    let short = plan_id["sha3-256:".len()..][..12].to_owned();

    // needs confirmation: 3, the command to run with the short id on a line of its own.
    let out = lockplane(&ledger, &url, &["apply", plan_s]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("lockplane::needs_confirmation"), "{stderr}");
    assert!(
        stderr.lines().any(|l| l
            .trim()
            .trim_start_matches(['│', '|'])
            .trim()
            .ends_with(&format!("--confirm {short}"))),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("needs confirmation because").count(),
        1,
        "{stderr}"
    );

    // invalid document: 7.
    let bad = write("bad.yaml", "version: 1\nschemas: 5\n");
    let out = lockplane(&ledger, &url, &["plan", "-f", &bad]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("lockplane::dsl"),
        "{}",
        text(&out.stderr)
    );

    // refused (a plan file changed after planning): 5.
    let tampered = write(
        "tampered.json",
        &std::fs::read_to_string(&plan_file)
            .expect("plan")
            .replace("legacy", "legacz"),
    );
    let out = lockplane(&ledger, &url, &["apply", &tampered, "--confirm", &plan_id]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("lockplane::refused"));

    // stale: 4 (the database moved since the plan).
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster
        .connect(url.rsplit('/').next().expect("db"))
        .await
        .expect("connect");
    client
        .batch_execute("ALTER TABLE t ADD COLUMN other int")
        .await
        .expect("drift");
    let out = lockplane(&ledger, &url, &["apply", plan_s, "--confirm", &plan_id]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("lockplane::stale"), "{stderr}");

    // connection: 6.
    let out = lockplane(
        &ledger,
        "postgres://nobody@127.0.0.1:1/none",
        &["plan", "-f", &drop_doc],
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
}

/// `lockplane apply` behind a session idle in a transaction on the table: each wait is printed
/// with who blocks it, and once the tries are spent the failure names the blocker and says the
/// database is as it was (exit status 8); with the blocker gone the same plan applies.
#[tokio::test]
async fn a_blocked_apply_names_the_blocker_and_changes_nothing() {
    let url = database("CREATE TABLE users (id bigint PRIMARY KEY, email text)").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = dir.path().join("schema.yaml");
    std::fs::write(
        &doc,
        "version: 1\nschemas:\n  public:\n    comment: standard public schema\n    tables:\n      users:\n        columns:\n          - { name: id, type: bigint, pk: true }\n          - { name: email, type: text }\n          - { name: nick, type: text }\n",
    )
    .expect("write");
    let plan_file = dir.path().join("plan.json");
    let (doc_s, plan_s) = (
        doc.to_str().expect("path"),
        plan_file.to_str().expect("path"),
    );
    let planned = lockplane(&ledger, &url, &["plan", "-f", doc_s, "--out", plan_s]);
    assert!(planned.status.success(), "{}", text(&planned.stderr));

    let mut config: tokio_postgres::Config = url.parse().expect("url");
    config.application_name("nightly-report");
    let (blocker, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM users")
        .await
        .expect("block");
    let refused = lockplane(
        &ledger,
        &url,
        &[
            "apply",
            plan_s,
            "--lock-timeout-ms",
            "200",
            "--lock-retries",
            "2",
        ],
    );
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(8), "{err}");
    assert!(err.contains("could not get its lock (try 1 of 3)"), "{err}");
    assert!(err.contains("could not get its lock in 3 tries"), "{err}");
    assert!(err.contains("application_name 'nightly-report'"), "{err}");
    assert!(err.contains("idle in transaction"), "{err}");
    assert!(err.contains("the database is as it was"), "{err}");
    let columns: i64 = blocker
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'",
            &[],
        )
        .await
        .expect("columns")
        .get(0);
    assert_eq!(columns, 2, "the refused apply changed the table");

    blocker.batch_execute("ROLLBACK").await.expect("release");
    let applied = lockplane(&ledger, &url, &["apply", plan_s]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
}

/// `lockplane plan --keep-shadow --shadow-url …` keeps live's reproduction on that server; a
/// second plan against the unchanged database uses it (no second one is kept) and proves the
/// same plan.
#[tokio::test]
async fn keep_shadow_keeps_one_reproduction_and_plans_the_same_again() {
    let url = database("CREATE TABLE users (id bigint PRIMARY KEY, email text)").await;
    let cluster = testkit::shared_cluster().expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = dir.path().join("schema.yaml");
    std::fs::write(&doc, DESIRED).expect("write");
    let doc_s = doc.to_str().expect("path");
    let shadow = cluster.url("postgres");
    let plan = |out: &str| {
        let out = dir.path().join(out);
        let run = lockplane(
            &ledger,
            &url,
            &[
                "plan",
                "-f",
                doc_s,
                "--shadow-url",
                &shadow,
                "--keep-shadow",
                "--out",
                out.to_str().expect("path"),
            ],
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        assert!(
            text(&run.stdout).contains("shadow dry run: ok"),
            "{}",
            text(&run.stdout)
        );
        let plan: Value =
            serde_json::from_str(&std::fs::read_to_string(out).expect("plan")).expect("json");
        plan["plan_id"].as_str().expect("plan id").to_owned()
    };
    let admin = cluster.connect("postgres").await.expect("connect");
    let source = format!(
        "lockplane: reproduction of {}",
        lockplane_engine::connect::resolve(Some(&url))
            .expect("url")
            .describe()
    );
    let kept = || async {
        admin
            .query(
                "SELECT datname::text FROM pg_database \
                 WHERE shobj_description(oid, 'pg_database') = $1",
                &[&source],
            )
            .await
            .expect("kept")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let first = plan("first.json");
    let after_first = kept().await;
    assert_eq!(after_first.len(), 1, "{after_first:?}");
    let second = plan("second.json");
    assert_eq!(kept().await, after_first);
    assert_eq!(
        first, second,
        "the same live, document and proof give the same plan"
    );
    for name in after_first {
        admin
            .batch_execute(&format!("DROP DATABASE \"{name}\""))
            .await
            .expect("drop the kept reproduction");
    }
}
