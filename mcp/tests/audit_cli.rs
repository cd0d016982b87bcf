//! The `lockplane audit …` commands and `lockplane introspect`'s ledger record, run as the real
//! binary against real sled ledgers in temp dirs (and, for introspect, a real throwaway
//! Postgres).

use std::path::Path;
use std::process::{Command, Output};

use lockplane_engine::events::{
    self, ApplyFailed, ApplyStarted, Approval, BlobRef, CatalogIntrospected, ContextSet,
    DriftDetected, Event, OnlineMigrated, PlanApplied, PlanConfirmed, PlanProposed, PlanSummary,
    PlansMerged, Receipt, SqlApplied, StepApplied, StepOutcome, StepReceipt, Timing, EVENT_KINDS,
};
use lockplane_engine::projection::Projections;
use lockplane_engine::{testkit, CatalogHash};
use lockplane_store::{Head, NewRecord, SledStore, Store};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;
/// Each event of a scripted ledger, with the blobs it refers to.
type Script = Vec<(Event, Vec<Vec<u8>>)>;

/// What a run of the binary printed.
struct Run {
    ok: bool,
    stdout: String,
    /// Standard error with whitespace collapsed (miette wraps long lines).
    stderr: String,
}

fn lockplane(ledger: &Path, args: &[&str]) -> Result<Run, Box<dyn std::error::Error>> {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .arg("--ledger")
        .arg(ledger)
        .args(args)
        .env_remove("LOCKPLANE_LEDGER")
        .env_remove("LOCKPLANE_ACTOR")
        .env_remove("LOCKPLANE_DB_ID")
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("panicked") {
        return Err(format!("lockplane {args:?} panicked:\n{stderr}").into());
    }
    Ok(Run {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout)?,
        stderr: stderr.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

/// Runs and requires success.
fn ok(ledger: &Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let run = lockplane(ledger, args)?;
    if !run.ok {
        return Err(format!("lockplane {args:?} failed: {}", run.stderr).into());
    }
    Ok(run.stdout)
}

/// Runs and requires failure; returns the collapsed standard error.
fn fails(ledger: &Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let run = lockplane(ledger, args)?;
    if run.ok {
        return Err(format!("lockplane {args:?} succeeded:\n{}", run.stdout).into());
    }
    Ok(run.stderr)
}

fn h(n: u8) -> CatalogHash {
    CatalogHash(format!("sha3-256:{}", hex::encode([n; 32])))
}

fn receipt(input: &str, outcome: StepOutcome) -> Result<Receipt, Box<dyn std::error::Error>> {
    let steps = vec![StepReceipt {
        sql: "ALTER TABLE app.t ADD COLUMN c int".into(),
        started_at: 1_700_000_000_000_000,
        duration_ms: 2,
        rows: None,
        outcome,
    }];
    let timing = Timing {
        started_at: 1_700_000_000_000_000,
        finished_at: 1_700_000_000_002_000,
        duration_ms: 2,
    };
    Ok(Receipt::seal(input, steps, timing)?)
}

fn plan(id: &str, base: u8, target: u8, confirm: bool) -> (PlanSummary, Vec<u8>) {
    let body = format!("{{\"plan_id\":\"{id}\",\"steps\":[]}}").into_bytes();
    let summary = PlanSummary {
        plan_id: id.into(),
        base_hash: h(base),
        target_hash: h(target),
        body: BlobRef::of(&body),
        step_count: 1,
        hazards: if confirm {
            vec!["data_loss".into()]
        } else {
            Vec::new()
        },
        requires_confirmation: confirm,
        base_manifest: None,
        target_manifest: None,
        renames: Default::default(),
    };
    (summary, body)
}

const A: &str = "db-a";
const B: &str = "db-b";
const ACTOR: &str = "agent:test";

/// A scripted ledger using every event kind, two databases; each event with its blobs.
fn script() -> Result<Script, Box<dyn std::error::Error>> {
    let manifest = format!(
        "{{\"catalog\":{{\"schemas\":[]}},\"catalog_hash\":\"{}\"}}",
        h(1)
    )
    .into_bytes();
    let (p1, b1) = plan("p1", 1, 2, true);
    let (p2, b2) = plan("p2", 1, 3, false);
    let (m, bm) = plan("m", 1, 4, true);
    let (q, bq) = plan("q", 6, 7, false);
    let s = |x: &str| x.to_owned();
    Ok(vec![
        (
            Event::CatalogIntrospected(CatalogIntrospected {
                actor: s(ACTOR),
                database: s(A),
                catalog_hash: h(1),
                manifest: BlobRef::of(&manifest),
                schemas: Vec::new(),
                server_version: Some(s("15.6")),
            }),
            vec![manifest],
        ),
        (
            Event::PlanProposed(PlanProposed {
                actor: s(ACTOR),
                database: s(A),
                plan: p1,
            }),
            vec![b1],
        ),
        (
            Event::PlanProposed(PlanProposed {
                actor: s("agent:other"),
                database: s(A),
                plan: p2,
            }),
            vec![b2],
        ),
        (
            Event::PlansMerged(PlansMerged {
                actor: s(ACTOR),
                database: s(A),
                sources: vec![s("p1"), s("p2")],
                merged: m,
            }),
            vec![bm],
        ),
        (
            Event::PlanConfirmed(PlanConfirmed {
                actor: s("user:ann"),
                database: s(A),
                plan_id: s("m"),
                hazards_acknowledged: vec![s("data_loss")],
            }),
            vec![],
        ),
        (
            Event::ApplyStarted(ApplyStarted {
                actor: s(ACTOR),
                database: s(A),
                plan_id: s("m"),
                base_hash: h(1),
                approval: Some(Approval {
                    seq: 5,
                    by: s("user:ann"),
                }),
            }),
            vec![],
        ),
        (
            Event::StepApplied(StepApplied {
                actor: s(ACTOR),
                database: s(A),
                plan_id: s("m"),
                step_index: 0,
                step_id: s("s1"),
                receipt: receipt("m", StepOutcome::Ok)?.steps.remove(0),
                catalog_hash: None,
            }),
            vec![],
        ),
        (
            Event::PlanApplied(PlanApplied {
                actor: s(ACTOR),
                database: s(A),
                plan_id: s("m"),
                started_seq: 6,
                before_hash: h(1),
                after_hash: h(4),
                approval: Some(Approval {
                    seq: 5,
                    by: s("user:ann"),
                }),
                receipt: receipt("m", StepOutcome::Ok)?,
                recovered: false,
            }),
            vec![],
        ),
        (
            Event::SqlApplied(SqlApplied {
                actor: s("user:bob"),
                database: s(B),
                before_hash: Some(h(5)),
                after_hash: Some(h(6)),
                receipt: receipt("CREATE INDEX i ON app.t (c)", StepOutcome::Ok)?,
            }),
            vec![],
        ),
        (
            Event::ContextSet(ContextSet {
                actor: s("user:bob"),
                database: s(B),
                role: Some(s("lp_runtime_read")),
                user_id: Some(s("u1")),
                tenant_id: Some(s("t1")),
            }),
            vec![],
        ),
        (
            Event::PlanProposed(PlanProposed {
                actor: s(ACTOR),
                database: s(B),
                plan: q,
            }),
            vec![bq],
        ),
        (
            Event::ApplyStarted(ApplyStarted {
                actor: s(ACTOR),
                database: s(B),
                plan_id: s("q"),
                base_hash: h(6),
                approval: None,
            }),
            vec![],
        ),
        (
            Event::ApplyFailed(ApplyFailed {
                actor: s(ACTOR),
                database: s(B),
                plan_id: s("q"),
                started_seq: 12,
                before_hash: h(6),
                after_hash: Some(h(6)),
                error: s("lock timeout"),
                receipt: receipt(
                    "q",
                    StepOutcome::Error {
                        sqlstate: Some(s("55P03")),
                        message: s("canceling statement due to lock timeout"),
                    },
                )?,
                interrupted: false,
            }),
            vec![],
        ),
        (
            Event::DriftDetected(DriftDetected {
                actor: s("scheduler"),
                database: s(A),
                expected_hash: h(4),
                live_hash: h(9),
                manifest: None,
            }),
            vec![],
        ),
        (
            Event::OnlineMigrated(OnlineMigrated {
                actor: s("user:ops"),
                database: s(A),
                version: s("v2"),
                table: s("public.orders"),
                phase: s("expanded"),
                migration: s("{}"),
                before_hash: Some(h(9)),
                after_hash: Some(h(10)),
                rows_filled: None,
                error: None,
            }),
            vec![],
        ),
    ])
}

/// Writes the script into a ledger at `path` (through the library) and closes it.
fn build(path: &Path) -> Result<(Head, Vec<Event>), Box<dyn std::error::Error>> {
    let store = SledStore::open(path)?;
    let mut head = store.head()?;
    let mut written = Vec::new();
    for (i, (event, blobs)) in script()?.into_iter().enumerate() {
        for blob in &blobs {
            store.put_blob(blob)?;
        }
        let record = NewRecord {
            at: 1_700_000_000_000_000 + i as i64 * 1_000_000,
            stream: event.database().to_owned(),
            kind: event.kind().to_owned(),
            payload: events::encode(&event),
        };
        head = store.append(Some(head), vec![record])?;
        written.push(event);
    }
    Ok((head, written))
}

#[test]
fn audit_reads_checks_and_exports_a_ledger() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ledger = dir.path().join("ledger");
    let (head, written) = build(&ledger)?;
    let n = written.len();

    // log --json: every record, in order, with its event.
    let log: Value = serde_json::from_str(&ok(&ledger, &["audit", "log", "--json"])?)?;
    let entries = log.as_array().ok_or("log --json is not an array")?;
    assert_eq!(entries.len(), n);
    for (i, (entry, event)) in entries.iter().zip(&written).enumerate() {
        assert_eq!(entry["seq"], i as u64 + 1);
        assert_eq!(entry["kind"], event.kind());
        assert_eq!(entry["stream"], event.database());
        assert_eq!(entry["actor"], event.actor());
        assert_eq!(entry["event"], event.body_json());
    }
    let mut kinds: Vec<&str> = written.iter().map(Event::kind).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), EVENT_KINDS.len(), "the script uses every kind");

    // log filters.
    let since: Value =
        serde_json::from_str(&ok(&ledger, &["audit", "log", "--since", "12", "--json"])?)?;
    assert_eq!(since.as_array().map(Vec::len), Some(n - 11));
    let db_b = ok(&ledger, &["audit", "log", "--db", B])?;
    assert_eq!(db_b.lines().count(), 5, "{db_b}");
    assert!(
        db_b.lines().all(|l| l.contains(B) && !l.contains(A)),
        "{db_b}"
    );
    assert!(db_b.contains("plan q failed: lock timeout"), "{db_b}");

    // show: the full record, its chain hashes, and its blob.
    let show: Value = serde_json::from_str(&ok(&ledger, &["audit", "show", "1", "--blobs"])?)?;
    assert_eq!(show["kind"], "CatalogIntrospected");
    assert_eq!(show["event"]["catalog_hash"], h(1).0);
    assert_eq!(show["blobs"][0]["present"], true);
    assert_eq!(show["blobs"][0]["content"]["catalog_hash"], h(1).0);
    assert!(show["hash"]
        .as_str()
        .is_some_and(|s| s.starts_with("sha3-256:")));
    let missing = fails(&ledger, &["audit", "show", "99"])?;
    assert!(missing.contains("no record at seq 99"), "{missing}");

    // checkpoint: the head, as JSON.
    let checkpoint = ok(&ledger, &["audit", "checkpoint"])?;
    let cp: Value = serde_json::from_str(&checkpoint)?;
    assert_eq!(cp["seq"], head.seq);
    assert_eq!(cp["head_hash"], head.hash.to_string());

    // verify: passes, also against the checkpoint given inline or as a file.
    let report = ok(&ledger, &["audit", "verify"])?;
    assert!(
        report.contains(&format!("ledger ok: {n} records")),
        "{report}"
    );
    ok(
        &ledger,
        &["audit", "verify", "--checkpoint", checkpoint.trim()],
    )?;
    let cp_file = dir.path().join("checkpoint.json");
    std::fs::write(&cp_file, &checkpoint)?;
    let cp_path = cp_file.to_str().ok_or("path")?;
    ok(&ledger, &["audit", "verify", "--checkpoint", cp_path])?;
    let json_report: Value = serde_json::from_str(&ok(&ledger, &["audit", "verify", "--json"])?)?;
    assert_eq!(json_report["ok"], true);
    assert_eq!(json_report["records_checked"], n);
    assert_eq!(json_report["blobs_checked"], 5);
    let bad_cp = fails(&ledger, &["audit", "verify", "--checkpoint", "{\"seq\":1}"])?;
    assert!(bad_cp.contains("not a checkpoint"), "{bad_cp}");

    // replay: the projections rebuilt from the log equal the library's fold of the script.
    let replayed: Value = serde_json::from_str(&ok(&ledger, &["audit", "replay", "--json"])?)?;
    let expected = Projections::rebuild(written.iter().enumerate().map(|(i, e)| {
        (
            i as u64 + 1,
            1_700_000_000_000_000 + i as i64 * 1_000_000,
            e.database(),
            e,
        )
    }));
    assert_eq!(replayed, serde_json::to_value(&expected)?);
    assert_eq!(replayed["anomalies"], Value::Array(vec![]));
    let text = ok(&ledger, &["audit", "replay"])?;
    assert!(
        text.contains(&format!("ledger: {n} events, 2 databases")),
        "{text}"
    );
    let history_a = text.find("database db-a").ok_or("no db-a")?;
    let history_b = text.find("database db-b").ok_or("no db-b")?;
    let (db_a, db_b) = (&text[history_a..history_b], &text[history_b..]);
    assert!(db_a.contains("plan m by agent:test: applied"), "{db_a}");
    assert!(db_a.contains("approved by user:ann (seq 5)"), "{db_a}");
    assert!(db_a.contains("p1  merged (into m)"), "{db_a}");
    assert!(
        db_a.contains(&format!("live catalog: {} (seq 15, OnlineMigrated", h(10))),
        "{db_a}"
    );
    assert!(
        db_a.contains("online v2 expanded by user:ops: applied"),
        "{db_a}"
    );
    assert!(db_b.contains("q  failed (seq 13: lock timeout)"), "{db_b}");
    assert!(
        db_b.contains("sql \"CREATE INDEX i ON app.t (c)\" by user:bob: applied"),
        "{db_b}"
    );

    // export: one line per record, chained.
    let export = ok(&ledger, &["audit", "export", "--format", "jsonl"])?;
    let lines: Vec<Value> = export
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), n);
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    assert_eq!(lines[n - 1]["hash"], head.hash.to_string());
    let payload = lines[3]["payload"].as_str().ok_or("payload")?;
    assert_eq!(events::decode(&hex::decode(payload)?)?, written[3]);

    // Tamper one byte of record 4 on disk: verify fails and names it; no checkpoint is issued.
    {
        let store = SledStore::open(&ledger)?;
        let (log, _) = store.raw_trees_for_tests()?;
        let key = SledStore::record_key_for_tests(4);
        let mut bytes = log.get(key)?.ok_or("no record 4")?.to_vec();
        let at = bytes.len() - 40; // inside the payload
        bytes[at] ^= 0x01;
        log.insert(key, bytes)?;
    }
    let broken = fails(&ledger, &["audit", "verify"])?;
    assert!(broken.contains("ledger BROKEN at seq 4"), "{broken}");
    let broken = fails(&ledger, &["audit", "verify", "--checkpoint", cp_path])?;
    assert!(broken.contains("at seq 4"), "{broken}");
    let refused = fails(&ledger, &["audit", "checkpoint"])?;
    assert!(
        refused.contains("no checkpoint issued") && refused.contains("seq 4"),
        "{refused}"
    );
    let report: Value =
        serde_json::from_str(&lockplane(&ledger, &["audit", "verify", "--json"])?.stdout)?;
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad"]["seq"], 4);
    Ok(())
}

#[test]
fn verify_catches_a_changed_blob_and_an_unreadable_event() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ledger = dir.path().join("ledger");
    build(&ledger)?;
    let manifest = &script()?[0].1[0];
    {
        let store = SledStore::open(&ledger)?;
        let (_, blobs) = store.raw_trees_for_tests()?;
        let key = lockplane_store::sha3_256(manifest).0;
        let mut bytes = manifest.clone();
        bytes[5] ^= 0x20;
        blobs.insert(key, bytes)?;
    }
    let broken = fails(&ledger, &["audit", "verify"])?;
    assert!(
        broken.contains("BROKEN at seq 1") && broken.contains("blob"),
        "{broken}"
    );

    // An intact chain whose event is from an unknown future format: verify says so.
    let dir = tempfile::tempdir()?;
    let ledger = dir.path().join("ledger");
    {
        let store = SledStore::open(&ledger)?;
        let future = rmp_like_future_payload();
        store.append(None, vec![NewRecord::now(A, "FutureKind", future)])?;
    }
    let unreadable = fails(&ledger, &["audit", "verify"])?;
    assert!(unreadable.contains("chain is intact"), "{unreadable}");
    assert!(
        unreadable.contains("seq 1") && unreadable.contains("version 7"),
        "{unreadable}"
    );
    let log = fails(&ledger, &["audit", "log"])?;
    assert!(log.contains("seq 1") && log.contains("version 7"), "{log}");
    let replay = fails(&ledger, &["audit", "replay"])?;
    assert!(
        replay.contains("seq 1") && replay.contains("version 7"),
        "{replay}"
    );
    Ok(())
}

/// `{ "version": 7, "event": … }` as MessagePack, written by hand: a format this build
/// doesn't know.
fn rmp_like_future_payload() -> Vec<u8> {
    let mut out = vec![0x82, 0xa7];
    out.extend_from_slice(b"version");
    out.push(0x07);
    out.push(0xa5);
    out.extend_from_slice(b"event");
    out.push(0xc0); // nil
    out
}

#[test]
fn a_held_ledger_is_reached_through_its_holder() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ledger = dir.path().join("ledger");
    build(&ledger)?;
    let alone = ok(&ledger, &["audit", "log", "--json"])?;
    // This test process holds the ledger (as a running `lockplane serve` would) and serves it
    // through its hub: the commands are carried out through it, with the same answers.
    let held = SledStore::open(&ledger)?;
    assert_eq!(ok(&ledger, &["audit", "log", "--json"])?, alone);
    assert!(ok(&ledger, &["audit", "verify"])?.contains("ok"));
    let checkpoint = ok(&ledger, &["audit", "checkpoint"])?;
    assert!(
        checkpoint.contains(&held.head()?.hash.to_string()),
        "{checkpoint}"
    );
    Ok(())
}

#[test]
fn a_holder_that_does_not_answer_gives_a_clear_locked_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ledger = dir.path().join("ledger");
    build(&ledger)?;
    let _held = SledStore::open(&ledger)?;
    // A holder whose hub is gone (an older build, a socket removed by hand).
    std::fs::remove_file(ledger.join(lockplane_store::HUB_SOCKET_NAME))?;
    let holder = format!("held by pid {}", std::process::id());
    for args in [&["audit", "log"][..], &["audit", "verify"]] {
        let err = fails(&ledger, args)?;
        assert!(err.contains(&holder), "{args:?}: {err}");
        assert!(err.contains("hub"), "{args:?}: {err}");
        assert!(err.contains("--ledger"), "{args:?}: hint missing: {err}");
        assert!(err.contains("--no-ledger"), "{args:?}: hint missing: {err}");
    }
    Ok(())
}

#[test]
fn with_ledger_wait_a_command_gets_in_once_the_holder_lets_go() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ledger = dir.path().join("ledger");
    build(&ledger)?;
    let held = SledStore::open(&ledger)?;
    std::fs::remove_file(ledger.join(lockplane_store::HUB_SOCKET_NAME))?;
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(held);
    });
    let started = std::time::Instant::now();
    let log = ok(&ledger, &["--ledger-wait", "30", "audit", "log", "--json"])?;
    release.join().map_err(|_| "release thread panicked")?;
    assert!(started.elapsed() >= std::time::Duration::from_millis(1000));
    assert!(!log.trim().is_empty());
    Ok(())
}

#[tokio::test]
async fn introspect_records_the_reading_in_the_ledger() -> TestResult {
    let name = testkit::fresh_database("audit_cli").await?;
    let cluster = testkit::shared_cluster()?;
    let client = cluster.connect(&name).await?;
    client
        .batch_execute("CREATE SCHEMA app; CREATE TABLE app.t (id bigint PRIMARY KEY, c text)")
        .await?;
    let url = cluster.url(&name);
    let dir = tempfile::tempdir()?;
    let ledger = dir.path().join("ledger");

    let stdout = ok(
        &ledger,
        &["--actor", "agent:ci", "introspect", "--database-url", &url],
    )?;
    let manifest: Value = serde_json::from_str(&stdout)?;
    let hash = manifest["catalog_hash"]
        .as_str()
        .ok_or("no catalog_hash")?
        .to_owned();

    let log: Value = serde_json::from_str(&ok(&ledger, &["audit", "log", "--json"])?)?;
    let entries = log.as_array().ok_or("not an array")?;
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    let stream = format!("127.0.0.1:{}/{name}", cluster.port());
    assert_eq!(entry["kind"], "CatalogIntrospected");
    assert_eq!(entry["stream"], stream.as_str());
    assert_eq!(entry["actor"], "agent:ci");
    assert_eq!(entry["event"]["catalog_hash"], hash.as_str());
    assert_eq!(entry["event"]["schemas"], Value::Array(vec![]));
    assert!(entry["event"]["server_version"].as_str().is_some());

    // The manifest is a blob the event refers to, identical to what was printed.
    let show: Value = serde_json::from_str(&ok(&ledger, &["audit", "show", "1", "--blobs"])?)?;
    assert_eq!(show["blobs"][0]["content"], manifest);
    let verify = ok(&ledger, &["audit", "verify", "--json"])?;
    let verify: Value = serde_json::from_str(&verify)?;
    assert_eq!(
        (verify["ok"].clone(), verify["blobs_checked"].clone()),
        (Value::Bool(true), 1.into())
    );

    // Reading again (with an explicit id, limited to a schema) appends; the same manifest
    // blob is stored once.
    ok(
        &ledger,
        &[
            "introspect",
            "--database-url",
            &url,
            "--db-id",
            "prod-main",
            "--schema",
            "app",
            "--format",
            "yaml",
        ],
    )?;
    let replay: Value = serde_json::from_str(&ok(&ledger, &["audit", "replay", "--json"])?)?;
    assert_eq!(
        replay["databases"][stream.as_str()]["live"]["hash"],
        hash.as_str()
    );
    assert_eq!(
        replay["databases"]["prod-main"]["introspections"], 0,
        "schema-limited"
    );
    assert_eq!(replay["databases"]["prod-main"]["events"], 1);

    // --no-ledger reads without touching (or creating) a ledger.
    let other = dir.path().join("untouched");
    let stdout = ok(
        &other,
        &["introspect", "--no-ledger", "--database-url", &url],
    )?;
    assert!(stdout.contains(&hash));
    // Nor do audit commands create one.
    let none = fails(&other, &["audit", "log"])?;
    assert!(none.contains("no ledger at"), "{none}");
    assert!(!other.exists());
    Ok(())
}
