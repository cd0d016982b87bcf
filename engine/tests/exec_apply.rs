//! The executor against a real server: reaching the target with receipts, rolling back a
//! failed transaction, refusing stale plans and unconfirmed data loss, failing fast on a held
//! lock, cancelling timed-out statements on the server, the per-database advisory lock, the
//! clean-up of an invalid concurrent index, and resuming after a recorded phase.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{connect_as, database_with, read};
use lockplane_engine::catalog::Catalog;
use lockplane_engine::diff::Renames;
use lockplane_engine::events::StepOutcome;
use lockplane_engine::exec::{
    apply, run_with_timeout, ApplyError, ApplyOptions, ResumePoint, StepProgress,
};
use lockplane_engine::plan::{plan, read_stats, HazardKind, Plan};
use lockplane_engine::{catalog_hash, CatalogHash};
use tokio_postgres::Client;

/// A database holding `a` (plus `data`), and the plan from it to the schema `b` (built in a
/// second database), graded with the first database's real statistics.
async fn setup(a: &str, data: &str, b: &str) -> (String, Client, Plan, Catalog) {
    let (name, mut client) = database_with(a).await;
    if !data.is_empty() {
        client.batch_execute(data).await.expect("data");
        // Statistics are what the planner grades sizes with.
        client.batch_execute("ANALYZE").await.expect("analyze");
    }
    let (_, mut other) = database_with(b).await;
    let live = read(&mut client).await;
    let desired = read(&mut other).await;
    let stats = read_stats(&client).await.expect("stats");
    let p = plan(&live, &desired, &Renames::none(), &stats, "test").expect("plan");
    (name, client, p, live)
}

async fn live_hash(client: &mut Client) -> CatalogHash {
    catalog_hash(&read(client).await).expect("hash")
}

fn quick() -> ApplyOptions {
    ApplyOptions {
        lock_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(20),
        step_timeout: Duration::from_secs(20),
        retry_delay: Duration::from_millis(100),
        lock_retries: 2,
        lock_wait: Duration::from_secs(2),
        ..ApplyOptions::default()
    }
}

const POPULATED: &str = "INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 500) g";

/// A plan with a transaction and a concurrent index build reaches the target; every step has
/// one receipt with its timing, and each committed phase is reported with the live hash.
#[tokio::test]
async fn apply_reaches_target_with_one_receipt_per_step() {
    let (_, mut client, p, _) = setup(
        "CREATE TABLE t (id int PRIMARY KEY, name text)",
        POPULATED,
        "CREATE TABLE t (id int PRIMARY KEY, name text, note text);
         CREATE INDEX t_name_idx ON t (name);",
    )
    .await;
    assert!(p.steps.iter().any(|s| s.transactional), "{:#?}", p.steps);
    assert!(p.steps.iter().any(|s| !s.transactional), "{:#?}", p.steps);

    let seen: Arc<Mutex<Vec<StepProgress>>> = Arc::default();
    let sink = seen.clone();
    let opts = ApplyOptions {
        progress: Some(Arc::new(move |p: &StepProgress| {
            sink.lock().map_err(|e| e.to_string())?.push(p.clone());
            Ok(())
        })),
        ..quick()
    };
    // The caller's session settings survive the apply.
    client
        .batch_execute("SET lock_timeout = '42s'; SET statement_timeout = '43s'")
        .await
        .expect("settings");
    let report = apply(&mut client, &p, &opts, None).await.expect("apply");
    assert_eq!(report.resulting_hash, p.target_hash);
    assert_eq!(live_hash(&mut client).await, p.target_hash);
    let settings = client
        .query_one(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')",
            &[],
        )
        .await
        .expect("settings");
    assert_eq!(
        (settings.get::<_, String>(0), settings.get::<_, String>(1)),
        ("42s".to_owned(), "43s".to_owned())
    );

    let receipts: Vec<_> = report.step_receipts().collect();
    assert_eq!(receipts.len(), p.steps.len());
    for (r, s) in receipts.iter().zip(&p.steps) {
        assert_eq!(r.sql, s.sql);
        assert_eq!(r.outcome, StepOutcome::Ok);
        assert!(r.started_at > 0);
    }
    for r in &report.receipts {
        assert!(r.hash_matches());
        assert_eq!(r.input, p.plan_id);
        assert!(r.timing.finished_at >= r.timing.started_at);
    }

    let seen = seen.lock().expect("progress");
    assert_eq!(seen.len(), report.receipts.len(), "one report per phase");
    let last = seen.last().expect("a phase");
    assert_eq!(last.catalog_hash, p.target_hash);
    assert_eq!(last.step_id, p.steps.last().expect("steps").id);
    let event = last.step_applied("agent", "db").expect("event");
    assert_eq!(event.catalog_hash.as_ref(), Some(&p.target_hash));
    assert_eq!(event.receipt.outcome, StepOutcome::Ok);

    let whole = report.receipt(&p.plan_id).expect("receipt");
    assert!(whole.hash_matches());
    assert_eq!(whole.steps.len(), p.steps.len());
    assert!(whole.timing.started_at <= report.receipts[0].timing.started_at);
}

/// A transactional step that fails on the data (a unique constraint over duplicates inserted
/// after planning) rolls the whole transaction back: the column added before it is gone, the
/// database is at `base_hash`, and the error names the step and SQLSTATE 23505.
#[tokio::test]
async fn failing_step_rolls_back_to_base_and_names_the_step() {
    let (_, mut client, p, _) = setup(
        "CREATE TABLE t (id int PRIMARY KEY, email text)",
        "",
        "CREATE TABLE t (id int PRIMARY KEY, email text CONSTRAINT t_email_key UNIQUE, note text)",
    )
    .await;
    assert!(p.steps.iter().all(|s| s.transactional), "{:#?}", p.steps);
    let unique = p
        .steps
        .iter()
        .find(|s| s.sql.contains("UNIQUE"))
        .expect("a unique step")
        .clone();
    client
        .batch_execute("INSERT INTO t VALUES (1, 'a@x'), (2, 'a@x')")
        .await
        .expect("duplicates");

    let err = apply(&mut client, &p, &quick(), None)
        .await
        .expect_err("must fail");
    let message = err.to_string();
    match err {
        ApplyError::StepFailed {
            step_id,
            failure,
            rolled_back,
            live_hash: after,
            receipts,
            ..
        } => {
            assert_eq!(step_id, unique.id);
            assert_eq!(failure.sqlstate.as_deref(), Some("23505"));
            assert!(rolled_back);
            assert_eq!(after, Some(p.base_hash.clone()));
            let steps: Vec<_> = receipts.iter().flat_map(|r| &r.steps).collect();
            assert_eq!(
                steps.len(),
                p.steps.len(),
                "failed and skipped steps listed"
            );
            assert!(steps.iter().any(|s| matches!(
                &s.outcome,
                StepOutcome::Error { sqlstate: Some(c), .. } if c == "23505"
            )));
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(message.contains("23505"), "{message}");
    assert!(message.contains("rolled back"), "{message}");
    assert_eq!(live_hash(&mut client).await, p.base_hash);
}

/// A schema change after planning makes the plan stale: refused, naming the drifted table.
#[tokio::test]
async fn stale_base_hash_is_refused_naming_the_drift() {
    let (_, mut client, p, live) = setup(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int)",
        "",
        "CREATE TABLE t (id int PRIMARY KEY, name text); CREATE TABLE u (id int)",
    )
    .await;
    client
        .batch_execute("ALTER TABLE u ADD COLUMN sneaky int")
        .await
        .expect("drift");
    let opts = ApplyOptions {
        base_catalog: Some(live),
        ..quick()
    };
    let err = apply(&mut client, &p, &opts, None)
        .await
        .expect_err("stale");
    match &err {
        ApplyError::Stale {
            base,
            live,
            drifted,
        } => {
            assert_eq!(base, &p.base_hash);
            assert_ne!(live, &p.base_hash);
            assert_eq!(drifted, &vec!["table public.u".to_owned()]);
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(err.to_string().contains("plan again"), "{err}");
    assert!(err.is_refusal() && err.receipts().is_empty());
    // Nothing ran: the column the plan adds is not there.
    let after = read(&mut client).await;
    assert!(!common::table(&after, "t").columns.contains_key("name"));
}

/// Another session holding ACCESS EXCLUSIVE on the table makes the apply fail within the lock
/// timeout with SQLSTATE 55P03, instead of hanging; nothing is applied.
#[tokio::test]
async fn held_lock_fails_within_lock_timeout() {
    let (db, mut client, p, _) = setup(
        "CREATE TABLE t (id int PRIMARY KEY)",
        "",
        "CREATE TABLE t (id int PRIMARY KEY, name text)",
    )
    .await;
    let holder = connect_as(&db, "lock-holder").await;
    holder
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");

    let started = Instant::now();
    let err = apply(&mut client, &p, &quick(), None)
        .await
        .expect_err("must fail");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    match &err {
        ApplyError::StepFailed {
            failure,
            rolled_back,
            ..
        } => {
            assert_eq!(failure.sqlstate.as_deref(), Some("55P03"), "{err}");
            assert!(rolled_back);
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(err.to_string().contains("lock"), "{err}");
    // The failed apply released the Lockplane lock.
    let free: bool = holder
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('lockplane:' || current_database())::int8)",
            &[],
        )
        .await
        .expect("try")
        .get(0);
    assert!(free, "a failed apply kept its advisory lock");
    holder
        .batch_execute("ROLLBACK; SELECT pg_advisory_unlock_all()")
        .await
        .expect("release");
    assert_eq!(live_hash(&mut client).await, p.base_hash);
    // With the lock gone, the same plan applies.
    apply(&mut client, &p, &quick(), None)
        .await
        .expect("apply after release");
}

/// A data-loss plan needs the exact plan id: missing and wrong confirmations are refused (and
/// change nothing), the right one applies.
#[tokio::test]
async fn data_loss_needs_the_exact_plan_id() {
    let (_, mut client, p, _) = setup(
        "CREATE TABLE t (id int PRIMARY KEY, legacy text)",
        "INSERT INTO t VALUES (1, 'x')",
        "CREATE TABLE t (id int PRIMARY KEY)",
    )
    .await;
    assert!(p.requires_confirmation);
    assert!(p.hazards.iter().any(|h| h.kind == HazardKind::DataLoss));

    let err = apply(&mut client, &p, &quick(), None)
        .await
        .expect_err("unconfirmed");
    match &err {
        ApplyError::ConfirmationRequired { plan_id, hazards } => {
            assert_eq!(plan_id, &p.plan_id);
            assert!(hazards.iter().all(|h| h.kind.requires_confirmation()));
            assert!(!hazards.is_empty());
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(err.to_string().contains(&p.plan_id), "{err}");

    let wrong = "sha3-256:0000000000000000000000000000000000000000000000000000000000000000";
    let err = apply(&mut client, &p, &quick(), Some(wrong))
        .await
        .expect_err("wrong id");
    assert!(
        matches!(&err, ApplyError::WrongConfirmation { expected, given }
            if expected == &p.plan_id && given == wrong),
        "{err}"
    );
    assert_eq!(live_hash(&mut client).await, p.base_hash);

    let report = apply(&mut client, &p, &quick(), Some(&p.plan_id))
        .await
        .expect("confirmed");
    assert_eq!(report.resulting_hash, p.target_hash);
}

/// A plan edited after it was made (its id no longer matches) is refused even when confirmed.
#[tokio::test]
async fn edited_plan_is_refused() {
    let (_, mut client, mut p, _) = setup(
        "CREATE TABLE t (id int PRIMARY KEY)",
        "",
        "CREATE TABLE t (id int PRIMARY KEY, name text)",
    )
    .await;
    p.steps[0].sql = "DROP TABLE t".into();
    let id = p.plan_id.clone();
    let err = apply(&mut client, &p, &quick(), Some(&id))
        .await
        .expect_err("tampered");
    assert!(matches!(err, ApplyError::PlanTampered { .. }), "{err}");
    assert_eq!(live_hash(&mut client).await, p.base_hash);
}

/// When the client-side timer fires, the statement is cancelled on the server: it disappears
/// from pg_stat_activity, and the connection stays usable.
#[tokio::test]
async fn timed_out_statement_is_cancelled_on_the_server() {
    let (db, client, _, _) = setup("SELECT 1", "", "SELECT 1").await;
    let marker = format!("cancel-test-{}", std::process::id());
    let sql = format!("SELECT pg_sleep(30) /* {marker} */");
    let started = Instant::now();
    let failure = run_with_timeout(&client, &sql, Duration::from_millis(800))
        .await
        .expect_err("timed out");
    assert!(failure.timed_out);
    assert!(started.elapsed() < Duration::from_secs(5));

    let watcher = connect_as(&db, "watcher").await;
    let count = || async {
        watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
                &[&marker],
            )
            .await
            .expect("activity")
            .get::<_, i64>(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut running = count().await;
    while running > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        running = count().await;
    }
    assert_eq!(running, 0, "the sleep still runs on the server");
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("usable")
        .get(0);
    assert_eq!(one, 1);
}

/// While another session holds the database's Lockplane lock, apply waits `lock_wait`, then
/// fails naming the holder's pid, application_name and user; the lock is released after a
/// successful apply.
#[tokio::test]
async fn advisory_lock_names_the_holder() {
    let (db, mut client, p, _) = setup(
        "CREATE TABLE t (id int PRIMARY KEY)",
        "",
        "CREATE TABLE t (id int PRIMARY KEY, name text)",
    )
    .await;
    let other = connect_as(&db, "other-apply").await;
    let pid: i32 = other
        .query_one(
            "SELECT pg_backend_pid() FROM \
             pg_advisory_lock(hashtext('lockplane:' || current_database())::int8)",
            &[],
        )
        .await
        .expect("hold")
        .get(0);

    let opts = ApplyOptions {
        lock_wait: Duration::from_millis(700),
        ..quick()
    };
    let started = Instant::now();
    let err = apply(&mut client, &p, &opts, None).await.expect_err("busy");
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(started.elapsed() < Duration::from_secs(10));
    match &err {
        ApplyError::Busy { holders, .. } => {
            assert_eq!(holders.len(), 1, "{err}");
            assert_eq!(holders[0].pid, pid);
            assert_eq!(holders[0].application_name, "other-apply");
            assert!(!holders[0].usename.is_empty());
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(err.to_string().contains("other-apply"), "{err}");
    assert_eq!(live_hash(&mut client).await, p.base_hash);

    // Released by the other session: a second, concurrent-looking apply now gets through.
    other
        .batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .expect("unlock");
    apply(&mut client, &p, &opts, None).await.expect("apply");
    // And apply released it: another session can take it at once.
    let got: bool = other
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('lockplane:' || current_database())::int8)",
            &[],
        )
        .await
        .expect("try")
        .get(0);
    assert!(got, "apply did not release its lock");
}

/// A concurrent unique index build over duplicate keys fails and leaves an INVALID index; the
/// executor drops it, reports the step (not rolled back: it ran alone), and leaves no
/// invalid index behind.
#[tokio::test]
async fn failed_concurrent_build_leaves_no_invalid_index() {
    let (_, mut client, p, _) = setup(
        "CREATE TABLE t (id int PRIMARY KEY, name text)",
        POPULATED,
        "CREATE TABLE t (id int PRIMARY KEY, name text);
         CREATE UNIQUE INDEX t_name_key ON t (name);",
    )
    .await;
    let build = p
        .steps
        .iter()
        .find(|s| s.sql.contains("CONCURRENTLY"))
        .unwrap_or_else(|| panic!("no concurrent build: {:#?}", p.steps))
        .clone();
    client
        .batch_execute("INSERT INTO t VALUES (10001, 'n1')")
        .await
        .expect("duplicate");
    let err = apply(&mut client, &p, &quick(), None)
        .await
        .expect_err("duplicate keys");
    match &err {
        ApplyError::StepFailed {
            step_id,
            failure,
            rolled_back,
            receipts,
            ..
        } => {
            assert_eq!(step_id, &build.id);
            assert_eq!(failure.sqlstate.as_deref(), Some("23505"));
            assert!(!rolled_back);
            let sql: Vec<_> = receipts
                .iter()
                .flat_map(|r| &r.steps)
                .map(|s| &s.sql)
                .collect();
            assert!(
                sql.iter()
                    .any(|s| s.starts_with("DROP INDEX CONCURRENTLY IF EXISTS")),
                "{sql:#?}"
            );
        }
        other => panic!("unexpected: {other}"),
    }
    let invalid: i64 = client
        .query_one("SELECT count(*) FROM pg_index WHERE NOT indisvalid", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(invalid, 0);
    assert_eq!(live_hash(&mut client).await, p.base_hash);
}

/// An apply stopped after its first phase (the ledger refused to record it) resumes from the
/// recorded step and hash; a resume point whose hash is not live is refused; a resume point
/// inside the transaction is refused.
#[tokio::test]
async fn resume_after_a_recorded_phase() {
    let (_, mut client, p, _) = setup(
        "CREATE TABLE t (id int PRIMARY KEY, name text, note text)",
        POPULATED,
        "CREATE TABLE t (id int PRIMARY KEY, name text, note text, extra int);
         CREATE INDEX t_name_idx ON t (name);
         CREATE INDEX t_note_idx ON t (note);",
    )
    .await;
    let phases = p.steps.iter().filter(|s| !s.transactional).count();
    assert!(phases >= 2, "{:#?}", p.steps);

    let recorded: Arc<Mutex<Vec<StepProgress>>> = Arc::default();
    let sink = recorded.clone();
    let opts = ApplyOptions {
        // Records the first phase, then fails to record the second: the apply stops there.
        progress: Some(Arc::new(move |p: &StepProgress| {
            let mut seen = sink.lock().map_err(|e| e.to_string())?;
            if seen.is_empty() {
                seen.push(p.clone());
                Ok(())
            } else {
                Err("ledger unavailable".into())
            }
        })),
        ..quick()
    };
    let err = apply(&mut client, &p, &opts, None)
        .await
        .expect_err("stopped");
    let ApplyError::ProgressRejected {
        step_id: unrecorded_step,
        catalog_hash: unrecorded_hash,
        ..
    } = err
    else {
        panic!("unexpected: {err}");
    };
    let first = recorded.lock().expect("recorded")[0].clone();
    assert_ne!(first.step_id, unrecorded_step);

    // The plain base check now refuses: the database moved on.
    let err = apply(&mut client, &p, &quick(), None)
        .await
        .expect_err("stale");
    assert!(matches!(err, ApplyError::Stale { .. }), "{err}");

    // The phase that was not recorded did commit: resuming after the last recorded one finds
    // another live hash and is refused (the ledger and the database disagree).
    let wrong = ApplyOptions {
        resume_after: Some(ResumePoint {
            step_id: first.step_id.clone(),
            catalog_hash: first.catalog_hash.clone(),
        }),
        ..quick()
    };
    let err = apply(&mut client, &p, &wrong, None)
        .await
        .expect_err("stale resume");
    assert!(matches!(err, ApplyError::Stale { .. }), "{err}");

    // Inside the transaction: refused.
    if let Some(inner) = p
        .steps
        .windows(2)
        .find(|w| w[0].transactional && w[1].transactional)
    {
        let inside = ApplyOptions {
            resume_after: Some(ResumePoint {
                step_id: inner[0].id.clone(),
                catalog_hash: first.catalog_hash.clone(),
            }),
            ..quick()
        };
        let err = apply(&mut client, &p, &inside, None)
            .await
            .expect_err("inside");
        assert!(matches!(err, ApplyError::InvalidResume { .. }), "{err}");
    }

    // Once the rejected phase is recorded (the error carries what to record), it resumes.
    let resume = ApplyOptions {
        resume_after: Some(ResumePoint {
            step_id: unrecorded_step.clone(),
            catalog_hash: unrecorded_hash,
        }),
        ..quick()
    };
    let report = apply(&mut client, &p, &resume, None)
        .await
        .expect("resumed");
    assert_eq!(report.resulting_hash, p.target_hash);
    let skipped = p
        .steps
        .iter()
        .position(|s| s.id == unrecorded_step)
        .expect("step")
        + 1;
    assert_eq!(report.step_receipts().count(), p.steps.len() - skipped);
}

/// A concurrent index build blocked by an open writing transaction fails on the lock timeout
/// and leaves an INVALID index; the executor drops it and retries, and the retry succeeds
/// once the writer has committed. The receipts show the failed attempt, the drop and the
/// successful build.
#[tokio::test]
async fn blocked_concurrent_build_is_cleaned_up_and_retried() {
    let (db, mut client, p, _) = setup(
        "CREATE TABLE t (id int PRIMARY KEY, name text)",
        POPULATED,
        "CREATE TABLE t (id int PRIMARY KEY, name text);
         CREATE INDEX t_name_idx ON t (name);",
    )
    .await;
    assert!(p.steps.iter().all(|s| !s.transactional), "{:#?}", p.steps);
    let writer = connect_as(&db, "writer").await;
    writer
        .batch_execute("BEGIN; INSERT INTO t VALUES (100000, 'w')")
        .await
        .expect("writer");
    // The writer commits while the executor waits between attempts.
    let commit = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        writer.batch_execute("COMMIT").await.expect("commit");
        writer
    });
    let opts = ApplyOptions {
        lock_timeout: Duration::from_secs(2),
        retries: 3,
        retry_delay: Duration::from_millis(300),
        ..quick()
    };
    let report = apply(&mut client, &p, &opts, None)
        .await
        .unwrap_or_else(|e| panic!("apply failed: {e}"));
    commit.await.expect("writer task");
    assert_eq!(report.resulting_hash, p.target_hash);
    let steps: Vec<_> = report.step_receipts().collect();
    assert!(
        matches!(&steps[0].outcome, StepOutcome::Error { sqlstate: Some(c), .. } if c == "55P03"),
        "{steps:#?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.sql.starts_with("DROP INDEX CONCURRENTLY IF EXISTS")
                && s.outcome == StepOutcome::Ok),
        "{steps:#?}"
    );
    let last = steps.last().expect("steps");
    assert_eq!(last.sql, p.steps[0].sql);
    assert_eq!(last.outcome, StepOutcome::Ok);
}

/// Two applies of the same plan at once: the second waits for the first (which holds the
/// database's lock while its statement waits on a table lock), then fails naming it.
#[tokio::test]
async fn second_concurrent_apply_fails_naming_the_first() {
    let (db, _, p, _) = setup(
        "CREATE TABLE t (id int PRIMARY KEY)",
        "",
        "CREATE TABLE t (id int PRIMARY KEY, name text)",
    )
    .await;
    let blocker = connect_as(&db, "blocker").await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE")
        .await
        .expect("lock");
    let mut first = connect_as(&db, "apply-one").await;
    let mut second = connect_as(&db, "apply-two").await;
    let slow = ApplyOptions {
        lock_timeout: Duration::from_secs(4),
        ..quick()
    };
    let plan_one = p.clone();
    let one = tokio::spawn(async move {
        let r = apply(&mut first, &plan_one, &slow, None).await;
        (r, first)
    });
    // Let the first apply take the lock and block on the table.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let fast = ApplyOptions {
        lock_wait: Duration::from_millis(500),
        ..quick()
    };
    let started = Instant::now();
    let err = apply(&mut second, &p, &fast, None).await.expect_err("busy");
    assert!(started.elapsed() < Duration::from_secs(10));
    match &err {
        ApplyError::Busy { holders, .. } => {
            assert_eq!(holders.len(), 1, "{err}");
            assert_eq!(holders[0].application_name, "apply-one");
        }
        other => panic!("unexpected: {other}"),
    }
    blocker.batch_execute("ROLLBACK").await.expect("release");
    let (result, _) = one.await.expect("first apply task");
    let report = result.unwrap_or_else(|e| panic!("first apply failed: {e}"));
    assert_eq!(report.resulting_hash, p.target_hash);
}

/// An enum label the transaction uses is added before it, alone (a label added inside a
/// transaction cannot be used before it commits). When the transaction then fails, the label
/// stays: the error says so with the live hash, which is the one reported for the label's
/// step, and the apply resumes after that step once the data is fixed.
#[tokio::test]
async fn failed_transaction_after_an_enum_label_resumes_after_the_label() {
    let (_, mut client, p, _) = setup(
        "CREATE TYPE mood AS ENUM ('a', 'b'); CREATE TABLE t (id int PRIMARY KEY, email text)",
        "",
        "CREATE TYPE mood AS ENUM ('a', 'b', 'c');
         CREATE TABLE t (id int PRIMARY KEY, email text CONSTRAINT t_email_key UNIQUE,
                         m mood DEFAULT 'c')",
    )
    .await;
    assert!(!p.steps[0].transactional, "{:#?}", p.steps);
    assert!(p.steps[0].sql.contains("ADD VALUE"), "{:#?}", p.steps);
    client
        .batch_execute("INSERT INTO t VALUES (1, 'a@x'), (2, 'a@x')")
        .await
        .expect("duplicates");

    let recorded: Arc<Mutex<Vec<StepProgress>>> = Arc::default();
    let sink = recorded.clone();
    let opts = ApplyOptions {
        progress: Some(Arc::new(move |p: &StepProgress| {
            sink.lock().map_err(|e| e.to_string())?.push(p.clone());
            Ok(())
        })),
        ..quick()
    };
    let err = apply(&mut client, &p, &opts, None)
        .await
        .expect_err("duplicates");
    let label = recorded.lock().expect("recorded")[0].clone();
    assert_eq!(label.step_id, p.steps[0].id);
    assert!(!label.transactional);
    match &err {
        ApplyError::StepFailed {
            failure,
            rolled_back,
            live_hash,
            ..
        } => {
            assert_eq!(failure.sqlstate.as_deref(), Some("23505"));
            assert!(rolled_back);
            assert_eq!(live_hash.as_ref(), Some(&label.catalog_hash));
            assert_ne!(live_hash.as_ref(), Some(&p.base_hash));
        }
        other => panic!("unexpected: {other}"),
    }

    client
        .batch_execute("DELETE FROM t WHERE id = 2")
        .await
        .expect("fix data");
    let resume = ApplyOptions {
        resume_after: Some(ResumePoint {
            step_id: label.step_id.clone(),
            catalog_hash: label.catalog_hash.clone(),
        }),
        ..quick()
    };
    let report = apply(&mut client, &p, &resume, None)
        .await
        .unwrap_or_else(|e| panic!("resume failed: {e}"));
    assert_eq!(report.resulting_hash, p.target_hash);
}

/// `statement_timeout` holds inside the transaction and for each non-transactional step
/// (retried, each attempt stopped): a slow statement ends as a timeout, quickly.
#[tokio::test]
async fn slow_statements_time_out_in_and_out_of_the_transaction() {
    use lockplane_engine::plan::{assemble, LockLevel, Step};
    let (_, mut client, _, _) = setup("CREATE TABLE t (id int)", "", "SELECT 1").await;
    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect("row");
    let here = live_hash(&mut client).await;
    // A statement of a kind plans hold (the executor refuses others) that is slow: checking
    // the new constraint against the row sleeps.
    let sleep = |transactional| {
        Step {
        id: String::new(),
        summary: "add a slow check".into(),
        sql: r#"ALTER TABLE "public"."t" ADD CONSTRAINT "slow" CHECK ((pg_sleep(10))::text IS NOT NULL)"#.into(),
        transactional,
        lock: LockLevel::None,
        hazards: Vec::new(),
        reaches: None,
    }
    };
    let opts = ApplyOptions {
        statement_timeout: Duration::from_millis(500),
        step_timeout: Duration::from_millis(500),
        retries: 1,
        ..quick()
    };
    for transactional in [true, false] {
        let p = assemble(
            here.clone(),
            here.clone(),
            vec![sleep(transactional)],
            "test",
        )
        .expect("plan");
        let started = Instant::now();
        let err = apply(&mut client, &p, &opts, None)
            .await
            .expect_err("timed out");
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        match &err {
            ApplyError::StepFailed {
                failure,
                rolled_back,
                receipts,
                ..
            } => {
                assert!(failure.timed_out, "{err}");
                assert_eq!(*rolled_back, transactional);
                let attempts: Vec<_> = receipts.iter().flat_map(|r| &r.steps).collect();
                assert_eq!(attempts.len(), if transactional { 1 } else { 2 });
                assert!(attempts
                    .iter()
                    .all(|s| matches!(s.outcome, StepOutcome::TimedOut { after_ms: 500 })));
            }
            other => panic!("unexpected: {other}"),
        }
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}
