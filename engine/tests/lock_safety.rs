//! Lock-safe DDL under live traffic (issue 16): an application pool runs short reads and
//! writes on a populated table while an idle-in-transaction session holds ACCESS SHARE on it,
//! and a plan whose steps need ACCESS EXCLUSIVE (a type change, a column with a volatile
//! default, a foreign key, a check, a dropped column) is applied. Each statement waits at most
//! the short `lock_timeout`, the phase is rolled back and tried again after a pause (each wait
//! reported with who blocks it), so the application never queues behind a blocked ALTER for
//! long; the apply ends applied once the blocker leaves, or refused naming it with the
//! database at its base: never half-applied.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{connect_as, database_with, read};
use lockplane_engine::diff::Renames;
use lockplane_engine::exec::{
    apply, ApplyError, ApplyOptions, LockWait, ProgressSink, StepProgress,
};
use lockplane_engine::plan::{plan, read_stats, LockLevel, Plan};
use lockplane_engine::{catalog_hash, CatalogHash};
use tokio_postgres::Client;

const BEFORE: &str = "
    CREATE TABLE parent (id int PRIMARY KEY);
    CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL, parent_id int, note text);";

const DATA: &str = "
    INSERT INTO parent SELECT g FROM generate_series(1, 100) g;
    INSERT INTO t SELECT g, g % 1000, 1 + g % 100, 'x' FROM generate_series(1, 50000) g;
    ANALYZE;";

const AFTER: &str = "
    CREATE TABLE parent (id int PRIMARY KEY);
    CREATE TABLE t (id int PRIMARY KEY, n bigint NOT NULL CHECK (n >= 0),
                    parent_id int REFERENCES parent (id),
                    seen timestamptz DEFAULT clock_timestamp());";

const LOCK_TIMEOUT: Duration = Duration::from_millis(500);

/// The populated database and the plan to [`AFTER`], graded with its real sizes.
async fn setup() -> (String, Client, Plan) {
    let (name, mut client) = database_with(BEFORE).await;
    client.batch_execute(DATA).await.expect("data");
    let (_, mut other) = database_with(AFTER).await;
    let live = read(&mut client).await;
    let desired = read(&mut other).await;
    let stats = read_stats(&client).await.expect("stats");
    let p = plan(&live, &desired, &Renames::none(), &stats, "test").expect("plan");
    assert!(
        p.steps.iter().any(|s| s.lock == LockLevel::AccessExclusive),
        "the plan must need ACCESS EXCLUSIVE: {:#?}",
        p.steps
    );
    (name, client, p)
}

/// Four sessions reading and updating single rows of `t` until stopped; returns the worst
/// latency any of their statements saw and how many ran.
struct Application {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(Duration, u64)>>,
}

impl Application {
    async fn start(db: &str) -> Application {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..4u32 {
            let client = connect_as(db, &format!("app-{w}")).await;
            let stop = stop.clone();
            workers.push(tokio::spawn(async move {
                let (mut worst, mut done) = (Duration::ZERO, 0u64);
                let mut id = 1 + w as i32 * 997;
                while !stop.load(Ordering::SeqCst) {
                    id = 1 + (id * 7919 + 13) % 50_000;
                    let started = Instant::now();
                    // Reads and writes that work on both shapes of the table.
                    let sql = if done % 2 == 0 {
                        format!("SELECT n FROM t WHERE id = {id}")
                    } else {
                        format!("UPDATE t SET n = n + 1 WHERE id = {id}")
                    };
                    client.simple_query(&sql).await.expect("application query");
                    worst = worst.max(started.elapsed());
                    done += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (worst, done)
            }));
        }
        Application { stop, workers }
    }

    async fn stop(self) -> (Duration, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut worst, mut done) = (Duration::ZERO, 0);
        for w in self.workers {
            let (w_worst, w_done) = w.await.expect("worker");
            worst = worst.max(w_worst);
            done += w_done;
        }
        (worst, done)
    }
}

/// Collects the lock waits the executor reports.
#[derive(Default)]
struct Waits(Mutex<Vec<LockWait>>);

impl ProgressSink for Waits {
    fn step_applied(&self, _: &StepProgress) -> Result<(), String> {
        Ok(())
    }

    fn lock_waited(&self, wait: &LockWait) {
        if let Ok(mut waits) = self.0.lock() {
            waits.push(wait.clone());
        }
    }
}

fn options(retries: u32, waits: &Arc<Waits>) -> ApplyOptions {
    ApplyOptions {
        lock_timeout: LOCK_TIMEOUT,
        lock_retries: retries,
        retry_delay: Duration::from_millis(200),
        statement_timeout: Duration::from_secs(30),
        progress: Some(waits.clone()),
        ..ApplyOptions::default()
    }
}

async fn live_hash(client: &mut Client) -> CatalogHash {
    catalog_hash(&read(client).await).expect("hash")
}

/// A session idle in a transaction that read `t` (ACCESS SHARE, which every ALTER TABLE
/// conflicts with), as a report or a forgotten psql would.
async fn blocker(db: &str) -> Client {
    let blocker = connect_as(db, "report-job").await;
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM t")
        .await
        .expect("blocker");
    blocker
}

#[tokio::test]
async fn applies_once_the_blocker_leaves_without_stalling_the_application() {
    let (db, mut client, p) = setup().await;
    let app = Application::start(&db).await;
    let holder = blocker(&db).await;
    // The blocker's transaction ends after two seconds, while the apply waits between tries.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        holder.batch_execute("COMMIT").await.expect("commit");
        holder
    });
    let waits = Arc::new(Waits::default());
    let report = apply(&mut client, &p, &options(10, &waits), Some(&p.plan_id))
        .await
        .unwrap_or_else(|e| panic!("apply failed: {e}"));
    release.await.expect("release");
    let (worst, done) = app.stop().await;
    eprintln!("application: {done} statements, worst latency {worst:?}");

    assert_eq!(report.resulting_hash, p.target_hash);
    assert_eq!(live_hash(&mut client).await, p.target_hash);
    let waits = waits.0.lock().expect("waits").clone();
    assert!(!waits.is_empty(), "the apply never waited for the blocker");
    let named = waits.iter().any(|w| {
        w.blockers
            .iter()
            .any(|b| b.application_name == "report-job" && b.state == "idle in transaction")
    });
    assert!(named, "no wait named the blocker: {waits:#?}");
    assert!(
        waits
            .iter()
            .all(|w| w.failure.sqlstate.as_deref() == Some("55P03")),
        "{waits:#?}"
    );
    // The application kept running: none of its statements queued behind a blocked ALTER
    // for longer than one lock timeout (plus the time the change itself holds its locks).
    assert!(done > 100, "the application ran only {done} statements");
    assert!(
        worst < LOCK_TIMEOUT + Duration::from_secs(1),
        "an application statement waited {worst:?}"
    );
}

#[tokio::test]
async fn refuses_naming_the_blocker_and_leaves_the_database_at_its_base() {
    let (db, mut client, p) = setup().await;
    let app = Application::start(&db).await;
    let holder = blocker(&db).await;
    let waits = Arc::new(Waits::default());
    let err = apply(&mut client, &p, &options(2, &waits), Some(&p.plan_id))
        .await
        .expect_err("the blocker never leaves");
    let (worst, _) = app.stop().await;
    holder.batch_execute("ROLLBACK").await.expect("rollback");

    match &err {
        ApplyError::StepFailed {
            failure,
            rolled_back,
            tries,
            ..
        } => {
            assert_eq!(failure.sqlstate.as_deref(), Some("55P03"), "{err}");
            assert!(rolled_back, "{err}");
            assert_eq!(tries.attempts, 3, "{err}");
            assert!(
                tries
                    .blockers
                    .iter()
                    .any(|b| b.application_name == "report-job"),
                "{err}"
            );
        }
        other => panic!("unexpected: {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("report-job"), "{message}");
    assert!(message.contains("idle in transaction"), "{message}");
    assert!(message.contains("3 tries"), "{message}");
    assert_eq!(waits.0.lock().expect("waits").len(), 2);
    // Nothing of the plan was applied.
    assert_eq!(live_hash(&mut client).await, p.base_hash);
    assert!(
        worst < LOCK_TIMEOUT + Duration::from_secs(1),
        "an application statement waited {worst:?}"
    );
}
