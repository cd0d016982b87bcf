//! The runtime against a real server and a real sled ledger: propose → apply, two-phase
//! confirmation, merging disjoint and conflicting proposals, rebasing a stale proposal,
//! refusing a plan over drift, and recovering an apply a dead process left open.

use lockplane_actors::{Config, DatabaseId, Error, Lockplane, ShadowConfig};
use lockplane_engine::events::{self, ApplyStarted, Event};
use lockplane_engine::projection::PlanStatus;
use lockplane_engine::testkit;
use lockplane_store::{NewRecord, SledStore, Store};

const BASE: &str = "CREATE SCHEMA app; \
                    CREATE TABLE app.items (id bigint PRIMARY KEY, name text, price int);";

/// The document for schema `app` with `items` holding `columns` (YAML flow maps).
fn doc(columns: &[&str]) -> String {
    let mut s =
        String::from("version: 1\nschemas:\n  app:\n    tables:\n      items:\n        columns:\n");
    for c in columns {
        s.push_str(&format!("          - {c}\n"));
    }
    s
}

const ID: &str = "{ name: id, type: bigint, pk: true }";
const NAME: &str = "{ name: name, type: text }";
const PRICE: &str = "{ name: price, type: int }";

struct Fixture {
    lockplane: Lockplane,
    db: DatabaseId,
    url: String,
    ledger: tempfile::TempDir,
}

fn config(ledger: &std::path::Path) -> Config {
    let cluster = testkit::shared_cluster().expect("cluster");
    let mut config = Config::new(ledger.join("ledger"));
    // The shared test cluster is the shadow server: no cluster start per test.
    config.shadow = ShadowConfig::Url(cluster.url("postgres"));
    config.lock_wait = std::time::Duration::from_secs(5);
    config
}

impl Fixture {
    /// `who` proposes `items` with `columns`.
    async fn propose(&self, who: &str, columns: &[&str]) -> lockplane_actors::Proposal {
        self.lockplane
            .propose(&self.db, &format!("{who}.yaml"), &doc(columns), who)
            .await
            .unwrap_or_else(|e| panic!("{who} proposes: {e}"))
    }
}

async fn fixture(sql: &str) -> Fixture {
    let cluster = testkit::shared_cluster().expect("cluster");
    let name = testkit::fresh_database("rt").await.expect("database");
    let client = cluster.connect(&name).await.expect("connect");
    client.batch_execute(sql).await.expect("setup sql");
    let ledger = tempfile::tempdir().expect("tempdir");
    let lockplane = Lockplane::open(config(ledger.path())).await.expect("open");
    let url = cluster.url(&name);
    let db = lockplane.attach(&url, None).await.expect("attach");
    Fixture {
        lockplane,
        db,
        url,
        ledger,
    }
}

async fn columns(url: &str) -> Vec<String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'app' AND table_name = 'items' ORDER BY column_name",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn execute(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client.batch_execute(sql).await.expect("sql");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proposal_applies_and_the_ledger_tells_the_story() {
    let f = fixture(BASE).await;
    let before = f
        .lockplane
        .introspect(&f.db, "alice")
        .await
        .expect("introspect");
    let proposal = f
        .propose("alice", &[ID, NAME, PRICE, "{ name: sku, type: text }"])
        .await;
    assert_eq!(proposal.plan.base_hash, before.catalog_hash);
    assert!(
        proposal.shadow.starts_with("proven on a shadow"),
        "{}",
        proposal.shadow
    );
    assert!(!proposal.plan.requires_confirmation);

    let applied = f
        .lockplane
        .apply(&f.db, &proposal.plan.plan_id, None, "alice")
        .await
        .expect("apply");
    assert_eq!(applied.resulting_hash, proposal.predicted_hash);
    assert_eq!(applied.rebased_from, None);
    assert_eq!(columns(&f.url).await, ["id", "name", "price", "sku"]);

    let plans = f.lockplane.list_plans(&f.db).await.expect("plans");
    assert_eq!(plans.len(), 1);
    assert!(
        matches!(plans[0].status, PlanStatus::Applied { .. }),
        "{:?}",
        plans[0].status
    );

    let kinds: Vec<String> = f
        .lockplane
        .audit_log(Some(&f.db), 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "CatalogIntrospected",
            "CatalogIntrospected",
            "CatalogIntrospected",
            "PlanProposed",
            "ApplyStarted",
            "StepApplied",
            "PlanApplied"
        ]
    );
    let verified = f.lockplane.verify_ledger().await.expect("verify");
    assert!(verified.ok, "{:?}", verified.problems);
    // Applying it again is refused: it is applied.
    let again = f
        .lockplane
        .apply(&f.db, &proposal.plan.plan_id, None, "alice")
        .await;
    assert!(
        matches!(
            again,
            Err(Error::NotPending {
                status: "applied",
                ..
            })
        ),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn data_loss_needs_a_confirmation_of_that_exact_plan() {
    let f = fixture(BASE).await;
    let proposal = f.propose("bob", &[ID, NAME]).await;
    let id = proposal.plan.plan_id.clone();
    assert!(proposal.plan.requires_confirmation);

    let refused = f.lockplane.apply(&f.db, &id, None, "bob").await;
    match refused {
        Err(e @ Error::NeedsConfirmation { .. }) => {
            assert_eq!(e.code(), "needs_confirmation");
            assert!(e.to_string().contains(&id), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let wrong = f
        .lockplane
        .apply(&f.db, &id, Some("sha3-256:0000"), "bob")
        .await;
    assert!(
        matches!(wrong, Err(Error::WrongConfirmation { .. })),
        "{wrong:?}"
    );
    assert_eq!(
        columns(&f.url).await,
        ["id", "name", "price"],
        "nothing ran"
    );

    f.lockplane
        .confirm(&f.db, &id, "carol")
        .await
        .expect("confirm");
    let applied = f
        .lockplane
        .apply(&f.db, &id, None, "bob")
        .await
        .expect("apply");
    assert_eq!(applied.resulting_hash, proposal.predicted_hash);
    assert_eq!(columns(&f.url).await, ["id", "name"]);
    let plans = f.lockplane.list_plans(&f.db).await.expect("plans");
    assert_eq!(
        plans[0].approval.as_ref().map(|a| a.by.as_str()),
        Some("carol")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disjoint_proposals_merge_and_conflicting_ones_name_the_column() {
    let f = fixture(BASE).await;
    let a = f
        .propose("agent-a", &[ID, NAME, PRICE, "{ name: sku, type: text }"])
        .await;
    let b = f
        .propose("agent-b", &[ID, NAME, PRICE, "{ name: stock, type: int }"])
        .await;
    let c = f
        .propose("agent-c", &[ID, NAME, "{ name: price, type: bigint }"])
        .await;
    let d = f
        .propose("agent-d", &[ID, NAME, "{ name: price, type: numeric }"])
        .await;

    let conflict = f
        .lockplane
        .merge(&f.db, &c.plan.plan_id, &d.plan.plan_id, "merger")
        .await;
    match conflict {
        Err(Error::Conflict { conflicts, .. }) => {
            assert_eq!(conflicts.len(), 1, "{conflicts:?}");
            assert_eq!(conflicts[0].path, "column app.items.price");
            assert!(conflicts[0].ours.is_some() && conflicts[0].theirs.is_some());
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    let merged = f
        .lockplane
        .merge(&f.db, &a.plan.plan_id, &b.plan.plan_id, "merger")
        .await
        .expect("merge");
    let plans = f.lockplane.list_plans(&f.db).await.expect("plans");
    let status = |id: &str| {
        plans
            .iter()
            .find(|p| p.plan.plan_id == id)
            .map(|p| p.status.name())
    };
    assert_eq!(status(&a.plan.plan_id), Some("merged"));
    assert_eq!(status(&b.plan.plan_id), Some("merged"));
    f.lockplane
        .apply(&f.db, &merged.plan.plan_id, None, "merger")
        .await
        .expect("apply merged");
    assert_eq!(
        columns(&f.url).await,
        ["id", "name", "price", "sku", "stock"]
    );
    // A merged-away plan points at the merge.
    let gone = f
        .lockplane
        .apply(&f.db, &a.plan.plan_id, None, "agent-a")
        .await;
    assert!(
        matches!(
            gone,
            Err(Error::NotPending {
                status: "merged",
                ..
            })
        ),
        "{gone:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_proposal_is_rebased_and_a_conflicting_one_refused() {
    let f = fixture(BASE).await;
    let a = f
        .propose("agent-a", &[ID, NAME, PRICE, "{ name: sku, type: text }"])
        .await;
    let b = f
        .propose("agent-b", &[ID, NAME, PRICE, "{ name: stock, type: int }"])
        .await;
    let c = f
        .propose("agent-c", &[ID, NAME, PRICE, "{ name: sku, type: int }"])
        .await;
    f.lockplane
        .apply(&f.db, &a.plan.plan_id, None, "agent-a")
        .await
        .expect("a applies");

    let plans = f.lockplane.list_plans(&f.db).await.expect("plans");
    let b_view = plans
        .iter()
        .find(|p| p.plan.plan_id == b.plan.plan_id)
        .expect("b");
    assert_eq!(b_view.status.name(), "stale");

    let rebased = f
        .lockplane
        .apply(&f.db, &b.plan.plan_id, None, "agent-b")
        .await
        .expect("b rebased");
    assert_eq!(
        rebased.rebased_from.as_deref(),
        Some(b.plan.plan_id.as_str())
    );
    assert_eq!(
        columns(&f.url).await,
        ["id", "name", "price", "sku", "stock"]
    );

    // c adds `sku` as int; a added it as text: same object, changed both ways.
    let refused = f
        .lockplane
        .apply(&f.db, &c.plan.plan_id, None, "agent-c")
        .await;
    match refused {
        Err(e @ Error::Stale { .. }) => {
            let Error::Stale { conflicts, .. } = &e else {
                unreachable!()
            };
            assert_eq!(conflicts.len(), 1, "{e}");
            assert_eq!(conflicts[0].path, "column app.items.sku");
            assert_eq!(e.code(), "stale_plan");
        }
        other => panic!("expected a stale refusal, got {other:?}"),
    }
    assert!(f.lockplane.verify_ledger().await.expect("verify").ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_behind_lockplanes_back_is_drift_and_the_plan_is_refused() {
    let f = fixture(BASE).await;
    let p = f
        .propose("agent", &[ID, NAME, PRICE, "{ name: sku, type: text }"])
        .await;
    execute(&f.url, "ALTER TABLE app.items ADD COLUMN note text").await;
    let drift = f
        .lockplane
        .check_drift(&f.db, "auditor")
        .await
        .expect("drift");
    assert!(drift.drifted);
    assert_ne!(drift.recorded_hash.as_ref(), Some(&drift.live_hash));
    assert!(
        drift.differences.iter().any(|d| d.contains("app.items")),
        "{:?}",
        drift.differences
    );
    // Refused, and still refused once the drift is known: nobody reviewed the plan with it.
    for _ in 0..2 {
        let refused = f
            .lockplane
            .apply(&f.db, &p.plan.plan_id, None, "agent")
            .await;
        let Err(e @ Error::Stale { .. }) = refused else {
            panic!("expected a stale refusal, got {refused:?}")
        };
        assert!(e.to_string().contains("changed outside Lockplane"), "{e}");
    }
    assert_eq!(columns(&f.url).await, ["id", "name", "note", "price"]);

    // Without a check first, the apply itself finds and records the drift.
    execute(&f.url, "ALTER TABLE app.items ADD COLUMN note2 text").await;
    let refused = f
        .lockplane
        .apply(&f.db, &p.plan.plan_id, None, "agent")
        .await;
    assert!(matches!(refused, Err(Error::Stale { .. })), "{refused:?}");
    let log = f.lockplane.audit_log(Some(&f.db), 1).await.expect("audit");
    assert_eq!(log[0].kind, "DriftDetected", "{log:?}");
}

/// Writes `ApplyStarted` for `plan_id` straight into the ledger, as a process that died right
/// after recording it would have left it.
fn leave_apply_open(ledger: &std::path::Path, db: &str, plan_id: &str, base: &str) {
    let store = SledStore::open(ledger.join("ledger")).expect("ledger");
    let event = Event::ApplyStarted(ApplyStarted {
        actor: "dead-process".into(),
        database: db.into(),
        plan_id: plan_id.into(),
        base_hash: lockplane_engine::CatalogHash(base.into()),
        approval: None,
    });
    store
        .append(
            None,
            vec![NewRecord::now(db, event.kind(), events::encode(&event))],
        )
        .expect("append");
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_closes_an_apply_left_open_by_a_dead_process() {
    for (case, expected) in [
        ("target", "recovered"),
        ("base", "interrupted"),
        ("other", "drift"),
    ] {
        let f = fixture(BASE).await;
        let p = f
            .propose("a", &[ID, NAME, PRICE, "{ name: sku, type: text }"])
            .await;
        let Fixture {
            lockplane,
            db,
            url,
            ledger,
        } = f;
        drop(lockplane);
        leave_apply_open(ledger.path(), &db.0, &p.plan.plan_id, &p.plan.base_hash.0);
        match case {
            "target" => execute(&url, "ALTER TABLE app.items ADD COLUMN sku text").await,
            "other" => execute(&url, "ALTER TABLE app.items ADD COLUMN other text").await,
            _ => {}
        }
        let lockplane = Lockplane::open(config(ledger.path()))
            .await
            .expect("reopen");
        let db = lockplane.attach(&url, None).await.expect("attach");
        let plans = lockplane.list_plans(&db).await.expect("plans");
        let status = plans[0].status.name();
        let log = lockplane.audit_log(Some(&db), 3).await.expect("audit");
        let last = log.last().expect("an outcome");
        match expected {
            "recovered" => {
                assert_eq!(status, "applied", "{case}");
                assert_eq!(last.kind, "PlanApplied");
                assert_eq!(last.event["recovered"], true, "{:?}", last.event);
            }
            _ => {
                assert_eq!(status, "failed", "{case}");
                assert_eq!(last.kind, "ApplyFailed");
                assert_eq!(last.event["interrupted"], true, "{:?}", last.event);
                let drift = log.iter().any(|e| e.kind == "DriftDetected");
                assert_eq!(drift, expected == "drift", "{case}: {log:?}");
            }
        }
        // A second start finds nothing left to reconcile.
        assert_eq!(lockplane.recover(&db).await.expect("recover"), None);
        assert!(lockplane.verify_ledger().await.expect("verify").ok);
    }
}

/// The embedding example, run for real: a plain `#[tokio::main]` program (single-threaded
/// runtime here, to show the caller's runtime flavour does not matter) against a database.
#[test]
fn the_embedding_example_runs_from_a_plain_program() {
    let cluster = testkit::shared_cluster().expect("cluster");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let name = runtime
        .block_on(testkit::fresh_database("embed"))
        .expect("database");
    // `cargo test` builds the examples beside the test binaries: target/<profile>/examples.
    let test_binary = std::env::current_exe().expect("test binary");
    let example = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("embed"))
        .expect("target directory");
    assert!(example.exists(), "{} was not built", example.display());
    let out = std::process::Command::new(&example)
        .env("DATABASE_URL", cluster.url(&name))
        .env("LOCKPLANE_SHADOW_URL", cluster.url("postgres"))
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("CREATE TABLE \"inventory\".\"items\""),
        "{stdout}"
    );
    assert!(stdout.contains("applied: now at sha3-256:"), "{stdout}");
    assert!(stdout.contains("PlanApplied"), "{stdout}");
    assert!(stdout.contains("ledger verifies: true"), "{stdout}");
}

/// Reads do not queue behind an apply: while an apply waits for a table lock another session
/// holds, listing plans, introspecting and reading the audit log all answer, and the plan is
/// seen as applying.
#[tokio::test(flavor = "multi_thread")]
async fn reads_answer_while_an_apply_is_blocked() {
    let f = fixture(BASE).await;
    let p = f
        .propose("a", &[ID, NAME, PRICE, "{ name: sku, type: text }"])
        .await;
    let (blocker, conn) = tokio_postgres::connect(&f.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    blocker
        .batch_execute("BEGIN; LOCK TABLE app.items IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");

    let lp = f.lockplane.clone();
    let (db, id) = (f.db.clone(), p.plan.plan_id.clone());
    let apply = tokio::spawn(async move { lp.apply(&db, &id, None, "a").await });
    // Wait until the apply is recorded as started (it then blocks on the table lock).
    let mut applying = false;
    for _ in 0..100 {
        let plans = f.lockplane.list_plans(&f.db).await.expect("plans");
        if plans[0].status.name() == "applying" {
            applying = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(applying, "the apply never started");
    let seen = f
        .lockplane
        .introspect(&f.db, "reader")
        .await
        .expect("introspect");
    assert_eq!(seen.catalog_hash, p.plan.base_hash);
    let log = f.lockplane.audit_log(Some(&f.db), 2).await.expect("audit");
    assert_eq!(
        log.last().map(|e| e.kind.as_str()),
        Some("CatalogIntrospected")
    );
    assert!(
        !apply.is_finished(),
        "the apply should still be waiting for the table lock"
    );

    blocker.batch_execute("COMMIT").await.expect("release");
    let applied = apply.await.expect("join").expect("apply");
    assert_eq!(applied.resulting_hash, p.predicted_hash);
}

/// Another process holding the database's apply lock: an apply and a writing `apply_sql` wait
/// `lock_wait`, then fail naming the holder; a read-only statement does not wait for it.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_apply_lock_makes_writers_fail_naming_the_holder() {
    let f = fixture(BASE).await;
    let mut config = config(f.ledger.path());
    config.ledger = f.ledger.path().join("ledger-2").into();
    config.lock_wait = std::time::Duration::from_millis(500);
    let lp = Lockplane::open(config).await.expect("open");
    let db = lp.attach(&f.url, None).await.expect("attach");
    let p = lp
        .propose(
            &db,
            "p.yaml",
            &doc(&[ID, NAME, PRICE, "{ name: sku, type: text }"]),
            "a",
        )
        .await
        .expect("propose");

    let sep = if f.url.contains('?') { '&' } else { '?' };
    let holder_url = format!("{}{sep}application_name=other-lockplane", f.url);
    let (holder, conn) = tokio_postgres::connect(&holder_url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    holder
        .batch_execute(
            "SELECT pg_advisory_lock(hashtext('lockplane:' || current_database())::int8)",
        )
        .await
        .expect("lock");

    let busy = lp.apply(&db, &p.plan.plan_id, None, "a").await;
    let Err(e) = busy else {
        panic!("the apply ran beside another holder of the lock")
    };
    assert_eq!(e.code(), "busy", "{e}");
    assert!(e.to_string().contains("other-lockplane"), "{e}");

    let ctx = lockplane_engine::session::SessionContext::default();
    let busy = lp
        .apply_sql(&db, "CREATE TABLE app.side (id int)", &ctx, None, "a")
        .await;
    let Err(e) = busy else {
        panic!("apply_sql ran beside another holder of the lock")
    };
    assert_eq!(e.code(), "busy", "{e}");
    let read = lp
        .apply_sql(&db, "SELECT count(*) FROM app.items", &ctx, None, "a")
        .await
        .expect("a read-only statement does not wait for the apply lock");
    assert_eq!(read.result, vec![vec![Some("0".to_owned())]]);

    holder
        .batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .expect("unlock");
    lp.apply(&db, &p.plan.plan_id, None, "a")
        .await
        .expect("apply once free");
    assert_eq!(columns(&f.url).await, ["id", "name", "price", "sku"]);
}

/// A stale plan that renames a column is rebased as a rename, not as a drop and an add (which
/// would lose the column's data and need a confirmation).
#[tokio::test(flavor = "multi_thread")]
async fn a_rebased_rename_stays_a_rename() {
    let f = fixture(&format!(
        "{BASE} INSERT INTO app.items VALUES (1, 'kept', 5);"
    ))
    .await;
    let renaming = f
        .propose(
            "renamer",
            &[ID, "{ name: title, type: text, renamed_from: name }", PRICE],
        )
        .await;
    assert!(
        !renaming.plan.requires_confirmation,
        "{:?}",
        renaming.plan.steps
    );
    let other = f
        .propose("other", &[ID, NAME, PRICE, "{ name: sku, type: text }"])
        .await;
    f.lockplane
        .apply(&f.db, &other.plan.plan_id, None, "other")
        .await
        .expect("other applies");

    let rebased = f
        .lockplane
        .apply(&f.db, &renaming.plan.plan_id, None, "renamer")
        .await
        .expect("the rename is rebased and applied without a confirmation");
    assert!(rebased.rebased_from.is_some());
    let sql: Vec<String> = rebased
        .receipts
        .iter()
        .flat_map(|r| r.steps.iter().map(|s| s.sql.clone()))
        .collect();
    assert!(
        sql.iter()
            .any(|s| s.contains("RENAME COLUMN \"name\" TO \"title\"")),
        "{sql:?}"
    );
    assert_eq!(columns(&f.url).await, ["id", "price", "sku", "title"]);
    let (client, conn) = tokio_postgres::connect(&f.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let title: String = client
        .query_one("SELECT title FROM app.items WHERE id = 1", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(title, "kept");
}

/// An apply stopped after its transaction committed (a unique index built concurrently over
/// duplicates fails) records the committed phase; once the data is fixed, `resume` runs the
/// rest and the plan is applied. Resuming a plan with nothing recorded is refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_apply_stopped_after_its_transaction_resumes() {
    let f = fixture(&format!(
        "{BASE} INSERT INTO app.items VALUES (1, 'a', 1), (2, 'a', 2);"
    ))
    .await;
    let text = format!(
        "{}        indexes:\n          - {{ name: items_name, columns: [name], unique: true }}\n",
        doc(&[ID, NAME, PRICE, "{ name: note, type: text }"])
    );
    let p = f
        .lockplane
        .propose(&f.db, "idx.yaml", &text, "agent")
        .await
        .unwrap_or_else(|e| panic!("propose: {e}"));
    let id = p.plan.plan_id.clone();
    assert!(
        p.plan.steps.iter().any(|s| !s.transactional),
        "an online build: {:#?}",
        p.plan.steps
    );
    let nothing = f
        .lockplane
        .resume(&f.db, &id, None, "agent")
        .await
        .expect_err("nothing to resume yet");
    assert!(
        nothing.to_string().contains("nothing to resume"),
        "{nothing}"
    );

    let failed = f
        .lockplane
        .apply(&f.db, &id, None, "agent")
        .await
        .expect_err("duplicates");
    assert!(failed.to_string().contains("resume"), "{failed}");
    assert!(
        columns(&f.url).await.contains(&"note".to_owned()),
        "the transaction committed"
    );
    let log = f.lockplane.audit_log(Some(&f.db), 50).await.expect("log");
    let kinds: Vec<&str> = log.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"StepApplied"), "{kinds:?}");

    execute(&f.url, "UPDATE app.items SET name = 'b' WHERE id = 2").await;
    let applied = f
        .lockplane
        .resume(&f.db, &id, None, "agent")
        .await
        .unwrap_or_else(|e| panic!("resume: {e}"));
    assert_eq!(applied.resulting_hash, p.plan.target_hash);
    let plans = f.lockplane.list_plans(&f.db).await.expect("plans");
    let view = plans
        .iter()
        .find(|v| v.plan.plan_id == id)
        .expect("the plan");
    assert!(
        matches!(view.status, PlanStatus::Applied { .. }),
        "{:?}",
        view.status
    );
}
