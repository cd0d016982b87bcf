//! Expand/contract column changes (issue 16) on a real Postgres: a populated table is
//! expanded, an old application (base schema) and a new one (the version schema's views)
//! write concurrently while the backfill runs, and both representations must agree; then the
//! migration is completed (the table has the new shape and the data) or rolled back (the
//! table is exactly as before, with everything the applications wrote). A backfill cancelled
//! on the server mid-way resumes and fills every row exactly once.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{database_with, read};
use lockplane_engine::online::{
    backfill, complete_sql, expand_sql, rollback_sql, run_phase, unfilled_rows, BackfillOptions,
    BackfillProgress, ColumnChange, OnlineError, OnlineMigration, TableShape,
};
use lockplane_engine::rollout::{self, Timeouts};
use lockplane_engine::{catalog_hash, testkit};
use tokio_postgres::Client;

const ROWS: i64 = 200_000;
const LOCK_TIMEOUT: Duration = Duration::from_millis(500);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

async fn connect_as(db: &str, application_name: &str, search_path: Option<&str>) -> Client {
    let cluster = testkit::shared_cluster().expect("cluster");
    let mut config = cluster.config(db);
    config.application_name(application_name);
    let client = lockplane_engine::connect::connect(&config.into())
        .await
        .expect("connect");
    if let Some(path) = search_path {
        client
            .batch_execute(&format!("SET search_path = {path}"))
            .await
            .expect("search_path");
    }
    client
}

async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// Sessions running `writes` (one SQL statement per turn, given the turn number) until
/// stopped; returns how many statements ran. Any failed statement fails the test.
struct App {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<u64>>,
}

impl App {
    async fn start(
        db: &str,
        name: &str,
        search_path: &str,
        sessions: u32,
        writes: fn(u64, u32) -> String,
    ) -> App {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..sessions {
            let client = connect_as(db, &format!("{name}-{w}"), Some(search_path)).await;
            let stop = stop.clone();
            workers.push(tokio::spawn(async move {
                let mut turn = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let sql = writes(turn, w);
                    if let Err(e) = client.simple_query(&sql).await {
                        panic!("application statement failed: {sql}: {e:?}");
                    }
                    turn += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                turn
            }));
        }
        App { stop, workers }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let mut done = 0;
        for w in self.workers {
            done += w.await.expect("application worker");
        }
        done
    }
}

fn key(turn: u64, worker: u32) -> u64 {
    1 + (turn * 7919 + u64::from(worker) * 104_729) % ROWS as u64
}

/// The old application: inserts and updates through the base schema, old shape.
fn old_orders(turn: u64, w: u32) -> String {
    if turn.is_multiple_of(2) {
        format!(
            "INSERT INTO orders (qty, note) VALUES ({}, 'old')",
            turn % 500
        )
    } else {
        format!(
            "UPDATE orders SET qty = qty + 1 WHERE id = {}",
            key(turn, w)
        )
    }
}

/// The new application: the same through the version schema, new shape. It updates rows
/// written since expand (the newest row), and another column of rows the backfill may not
/// have reached yet (which must not lose their old value).
fn new_orders(turn: u64, w: u32) -> String {
    match turn % 3 {
        0 => format!(
            "INSERT INTO orders (quantity, note) VALUES ({}, 'new')",
            turn % 700
        ),
        1 => "UPDATE orders SET quantity = quantity + 2 \
              WHERE id = (SELECT max(id) FROM orders)"
            .to_owned(),
        _ => format!(
            "UPDATE orders SET note = 'touched' WHERE id = {}",
            key(turn, w + 7)
        ),
    }
}

fn orders_migration() -> OnlineMigration {
    OnlineMigration {
        version: "v2".into(),
        changes: vec![ColumnChange {
            schema: "public".into(),
            table: "orders".into(),
            column: "qty".into(),
            new_name: Some("quantity".into()),
            new_type: Some("bigint".into()),
            set_not_null: false,
            up: "qty::bigint".into(),
            down: "quantity::integer".into(),
        }],
    }
}

const ORDERS: &str = "
    CREATE TABLE orders (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                         qty integer NOT NULL DEFAULT 1, note text);";

async fn populated(sql: &str, fill: &str) -> (String, Client) {
    let (db, client) = database_with(sql).await;
    client.batch_execute(fill).await.expect("populate");
    (db, client)
}

async fn orders_db() -> (String, Client) {
    populated(
        ORDERS,
        &format!(
            "INSERT INTO orders (qty, note) SELECT g % 1000, 'seed' \
             FROM generate_series(1, {ROWS}) g; ANALYZE orders;"
        ),
    )
    .await
}

fn report(label: &str, p: &BackfillProgress) {
    eprintln!(
        "{label}: {} batches, {} rows scanned, {} filled (estimate {:?}) in {:?}: {:.0} rows/s",
        p.batches, p.rows_scanned, p.rows_filled, p.estimated_rows, p.elapsed, p.rows_per_second
    );
}

/// Expands, then backfills while both applications write; returns the applications'
/// statement counts.
async fn expand_and_backfill_under_traffic(
    db: &str,
    client: &Client,
    m: &OnlineMigration,
    shape: &TableShape,
    old_app: fn(u64, u32) -> String,
    new_app: fn(u64, u32) -> String,
) -> (u64, u64, BackfillProgress) {
    let old = App::start(db, "old-app", "public", 2, old_app).await;
    run_phase(
        client,
        &expand_sql(m, shape).expect("expand sql"),
        LOCK_TIMEOUT,
        STATEMENT_TIMEOUT,
    )
    .await
    .expect("expand");
    let new = App::start(db, "new-app", "public_v2", 2, new_app).await;
    let mut reports = 0u64;
    let opts = BackfillOptions {
        batch_size: 5_000,
        ..BackfillOptions::default()
    };
    let done = backfill(client, m, shape, &opts, &mut |p| {
        reports += 1;
        assert!(p.estimated_rows.is_some());
    })
    .await
    .expect("backfill");
    // Let the applications write a little longer after the backfill too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (old_n, new_n) = (old.stop().await, new.stop().await);
    report("backfill under traffic", &done.progress);
    eprintln!(
        "old application: {old_n} statements, new application: {new_n}, {} lock retries",
        done.lock_retries
    );
    assert_eq!(reports, done.progress.batches);
    assert!(done.progress.rows_scanned >= ROWS as u64);
    assert!(old_n > 20 && new_n > 20, "applications ran {old_n}/{new_n}");
    (old_n, new_n, done.progress)
}

#[tokio::test]
async fn type_change_with_rename_under_traffic_then_complete() {
    let (db, client) = orders_db().await;
    let m = orders_migration();
    let shape = TableShape::read(&client, "public", "orders")
        .await
        .expect("shape");
    assert_eq!(shape.primary_key, vec!["id".to_owned()]);
    expand_and_backfill_under_traffic(&db, &client, &m, &shape, old_orders, new_orders).await;

    // Both representations agree on every row, whoever wrote it.
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM orders WHERE _lp_new_qty IS DISTINCT FROM qty::bigint"
        )
        .await,
        0
    );
    assert!(count(&client, "SELECT count(*) FROM orders WHERE note = 'new'").await > 0);
    assert!(count(&client, "SELECT count(*) FROM orders WHERE note = 'old'").await > 0);
    assert!(
        count(
            &client,
            "SELECT count(*) FROM orders WHERE note = 'touched'"
        )
        .await
            > 0
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM orders WHERE _lp_new_qty IS NULL"
        )
        .await,
        0
    );
    // The new application sees the new shape.
    let view = connect_as(&db, "check", Some("public_v2")).await;
    let total: i64 = count(&view, "SELECT count(*) FROM orders WHERE quantity >= 0").await;
    let sum_before: i64 = count(&client, "SELECT sum(qty)::bigint FROM orders").await;
    let rows_before = count(&client, "SELECT count(*) FROM orders").await;
    assert_eq!(total, rows_before);

    // Complete works from the shape read mid-migration (after a restart, say).
    let mid = TableShape::read(&client, "public", "orders")
        .await
        .expect("shape mid-migration");
    assert!(mid.columns.iter().any(|c| c.name == "_lp_new_qty"));
    assert!(matches!(
        expand_sql(&m, &mid),
        Err(OnlineError::Conflict { .. })
    ));
    let c = complete_sql(&m, &mid).expect("complete sql");
    run_phase(&client, &c.validate, LOCK_TIMEOUT, STATEMENT_TIMEOUT)
        .await
        .expect("validate");
    run_phase(&client, &c.contract, LOCK_TIMEOUT, STATEMENT_TIMEOUT)
        .await
        .expect("contract");

    let after = TableShape::read(&client, "public", "orders")
        .await
        .expect("shape after");
    let names: Vec<(&str, &str, bool)> = after
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.data_type.as_str(), c.not_null))
        .collect();
    assert_eq!(
        names,
        vec![
            ("id", "bigint", true),
            ("note", "text", false),
            ("quantity", "bigint", true)
        ]
    );
    assert_eq!(
        count(&client, "SELECT sum(quantity)::bigint FROM orders").await,
        sum_before
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM orders").await,
        rows_before
    );
    // No trigger, function or check left; the version schema's view follows the rename.
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_lp%'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&view, "SELECT count(*) FROM orders WHERE quantity >= 0").await,
        rows_before
    );
    // The default came along.
    client
        .batch_execute("INSERT INTO public.orders (note) VALUES ('after')")
        .await
        .expect("insert after");
    assert_eq!(
        count(&client, "SELECT quantity FROM orders WHERE note = 'after'").await,
        1
    );
}

#[tokio::test]
async fn rollback_leaves_the_table_as_it_was_with_every_write() {
    let (db, mut client) = orders_db().await;
    let before = catalog_hash(&read(&mut client).await).expect("hash");
    let m = orders_migration();
    let shape = TableShape::read(&client, "public", "orders")
        .await
        .expect("shape");
    expand_and_backfill_under_traffic(&db, &client, &m, &shape, old_orders, new_orders).await;
    let rows = count(&client, "SELECT count(*) FROM orders").await;
    let old_rows = count(&client, "SELECT count(*) FROM orders WHERE note = 'old'").await;
    let new_rows = count(&client, "SELECT count(*) FROM orders WHERE note = 'new'").await;
    let digest = "SELECT hashtext(string_agg(id || ':' || qty || ':' || note, ',' ORDER BY id))::bigint FROM orders";
    let data = count(&client, digest).await;
    assert!(old_rows > 0 && new_rows > 0);

    run_phase(
        &client,
        &rollback_sql(&m, &shape).expect("rollback sql"),
        LOCK_TIMEOUT,
        STATEMENT_TIMEOUT,
    )
    .await
    .expect("rollback");

    assert_eq!(
        catalog_hash(&read(&mut client).await).expect("hash"),
        before
    );
    assert_eq!(count(&client, "SELECT count(*) FROM orders").await, rows);
    assert_eq!(count(&client, digest).await, data);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'public_v2'"
        )
        .await,
        0
    );
}

fn scores_migration() -> OnlineMigration {
    OnlineMigration {
        version: "v2".into(),
        changes: vec![ColumnChange {
            schema: "public".into(),
            table: "scores".into(),
            column: "score".into(),
            new_name: None,
            new_type: None,
            set_not_null: true,
            up: "COALESCE(score, 0)".into(),
            // The type stays: `down` is the new column itself.
            down: String::new(),
        }],
    }
}

/// The old application writes NULL scores, as it always did.
fn old_scores(turn: u64, w: u32) -> String {
    match turn % 3 {
        0 => format!(
            "INSERT INTO scores (id, score) VALUES ({}, NULL)",
            10_000_000 + turn * 4 + u64::from(w)
        ),
        1 => format!("UPDATE scores SET score = NULL WHERE id = {}", key(turn, w)),
        _ => format!(
            "UPDATE scores SET score = 5 WHERE id = {}",
            key(turn, w + 3)
        ),
    }
}

/// The new application always gives a score.
fn new_scores(turn: u64, w: u32) -> String {
    if turn.is_multiple_of(2) {
        format!(
            "INSERT INTO scores (id, score) VALUES ({}, 7)",
            20_000_000 + turn * 4 + u64::from(w)
        )
    } else {
        "UPDATE scores SET score = score + 1 WHERE id = (SELECT max(id) FROM scores)".to_owned()
    }
}

#[tokio::test]
async fn not_null_with_a_filling_up_under_traffic_then_complete() {
    let (db, client) = populated(
        "CREATE TABLE scores (id bigint PRIMARY KEY, score integer);",
        &format!(
            "INSERT INTO scores SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE g % 100 END \
             FROM generate_series(1, {ROWS}) g; ANALYZE scores;"
        ),
    )
    .await;
    let m = scores_migration();
    let shape = TableShape::read(&client, "public", "scores")
        .await
        .expect("shape");
    expand_and_backfill_under_traffic(&db, &client, &m, &shape, old_scores, new_scores).await;

    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM scores WHERE _lp_new_score IS DISTINCT FROM COALESCE(score, 0)"
        )
        .await,
        0
    );
    // Rows the new application wrote: old = down(new).
    assert!(count(&client, "SELECT count(*) FROM scores WHERE id >= 20000000").await > 0);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM scores WHERE id >= 20000000 \
             AND score IS DISTINCT FROM _lp_new_score"
        )
        .await,
        0
    );
    let nulls = count(&client, "SELECT count(*) FROM scores WHERE score IS NULL").await;
    let zeros = count(&client, "SELECT count(*) FROM scores WHERE score = 0").await;
    assert!(nulls > 0);

    let c = complete_sql(&m, &shape).expect("complete sql");
    run_phase(&client, &c.validate, LOCK_TIMEOUT, STATEMENT_TIMEOUT)
        .await
        .expect("validate");
    run_phase(&client, &c.contract, LOCK_TIMEOUT, STATEMENT_TIMEOUT)
        .await
        .expect("contract");
    let after = TableShape::read(&client, "public", "scores")
        .await
        .expect("shape after");
    let names: Vec<(&str, &str, bool)> = after
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.data_type.as_str(), c.not_null))
        .collect();
    assert_eq!(
        names,
        vec![("id", "bigint", true), ("score", "integer", true)]
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM scores WHERE score = 0").await,
        nulls + zeros
    );
    assert!(client
        .batch_execute("INSERT INTO scores (id, score) VALUES (-1, NULL)")
        .await
        .is_err());
}

#[tokio::test]
async fn backfill_cancelled_mid_way_resumes_and_fills_each_row_once() {
    let (db, client) = orders_db().await;
    let m = orders_migration();
    let shape = TableShape::read(&client, "public", "orders")
        .await
        .expect("shape");
    run_phase(
        &client,
        &expand_sql(&m, &shape).expect("expand sql"),
        LOCK_TIMEOUT,
        STATEMENT_TIMEOUT,
    )
    .await
    .expect("expand");

    let worker = connect_as(&db, "lp-backfill", None).await;
    let (batches_tx, mut batches_rx) = tokio::sync::watch::channel(0u64);
    let (m2, shape2) = (m.clone(), shape.clone());
    let run = tokio::spawn(async move {
        let opts = BackfillOptions {
            batch_size: 2_000,
            ..BackfillOptions::default()
        };
        backfill(&worker, &m2, &shape2, &opts, &mut |p| {
            let _ = batches_tx.send(p.batches);
        })
        .await
    });
    // After some batches, cancel the backfill's statement on the server until one lands
    // mid-batch (between batches there is nothing to cancel).
    while *batches_rx.borrow_and_update() < 10 {
        batches_rx.changed().await.expect("progress");
    }
    let canceller = connect_as(&db, "canceller", None).await;
    while !run.is_finished() {
        canceller
            .batch_execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'lp-backfill' AND state = 'active'",
            )
            .await
            .expect("cancel");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (resume_after, first_run) = match run.await.expect("backfill task") {
        Err(OnlineError::Backfill {
            resume_after,
            rows_done,
            failure,
            ..
        }) => {
            assert_eq!(failure.sqlstate.as_deref(), Some("57014"), "{failure:?}");
            (resume_after, rows_done)
        }
        other => panic!("the backfill was not cancelled: {other:?}"),
    };
    eprintln!("cancelled after key {resume_after:?}, {first_run} rows filled");
    assert_eq!(
        unfilled_rows(&client, &m, &shape).await.expect("unfilled"),
        ROWS as u64 - first_run
    );
    assert!(
        first_run >= 20_000 && first_run < ROWS as u64,
        "{first_run}"
    );
    // The cancelled batch was rolled back: what is filled is exactly what was reported.
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM orders WHERE _lp_new_qty IS NOT NULL"
        )
        .await,
        first_run as i64
    );

    let opts = BackfillOptions {
        batch_size: 2_000,
        resume_after: resume_after.clone(),
        ..BackfillOptions::default()
    };
    let second = backfill(&client, &m, &shape, &opts, &mut |_| {})
        .await
        .expect("resume");
    report("resumed backfill", &second.progress);
    assert_eq!(first_run + second.progress.rows_filled, ROWS as u64);
    // Run again from the start: nothing is left to fill.
    let third = backfill(
        &client,
        &m,
        &shape,
        &BackfillOptions::default(),
        &mut |_| {},
    )
    .await
    .expect("again");
    report("backfill again from the start", &third.progress);
    assert_eq!(
        unfilled_rows(&client, &m, &shape).await.expect("unfilled"),
        0
    );
    assert_eq!(third.progress.rows_filled, 0);
    assert_eq!(third.progress.rows_scanned, ROWS as u64);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM orders WHERE _lp_new_qty IS DISTINCT FROM qty::bigint"
        )
        .await,
        0
    );
}

/// The server builds `LOCKPLANE_PG_MATRIX` lists (`major=bin_dir` pairs, as for
/// `tests/matrix.rs`), the local one always included.
fn matrix() -> Vec<lockplane_engine::cluster::PgBinaries> {
    lockplane_engine::testkit::pg_matrix().expect("the matrix's Postgres binaries")
}

/// Expand, writes from both sides, backfill, complete (and, on a second database, rollback)
/// on every listed server: `security_invoker` views from Postgres 15, plain views on 14.
#[tokio::test]
async fn expand_complete_and_rollback_on_every_listed_postgres_version() {
    for bins in matrix() {
        let major = bins.major;
        let cluster =
            tokio::task::spawn_blocking(move || lockplane_engine::cluster::Cluster::start(&bins))
                .await
                .expect("join")
                .expect("start cluster");
        for (db, complete) in [("complete", true), ("rollback", false)] {
            cluster.create_database(db).await.expect("create database");
            let mut client = cluster.connect(db).await.expect("connect");
            client
                .batch_execute(&format!(
                    "{ORDERS} INSERT INTO orders (qty, note) SELECT g % 1000, 'seed' \
                     FROM generate_series(1, 20000) g; ANALYZE orders;"
                ))
                .await
                .expect("populate");
            let before = catalog_hash(&read(&mut client).await).expect("hash");
            let m = orders_migration();
            let shape = TableShape::read(&client, "public", "orders")
                .await
                .expect("shape");
            assert_eq!(shape.server_major, major);
            run_phase(
                &client,
                &expand_sql(&m, &shape).expect("expand sql"),
                LOCK_TIMEOUT,
                STATEMENT_TIMEOUT,
            )
            .await
            .unwrap_or_else(|e| panic!("expand on {major}: {e}"));
            let invoker = count(
                &client,
                "SELECT count(*) FROM pg_class WHERE relname = 'orders' \
                 AND 'security_invoker=true' = ANY (reloptions)",
            )
            .await;
            assert_eq!(invoker, i64::from(major >= 15), "Postgres {major}");
            let new_app = cluster.connect(db).await.expect("connect");
            new_app
                .batch_execute(
                    "SET search_path = public_v2; \
                     INSERT INTO orders (quantity, note) VALUES (5000000000 / 1000, 'new'); \
                     UPDATE orders SET note = 'touched' WHERE id = 7",
                )
                .await
                .unwrap_or_else(|e| panic!("new application on {major}: {e:?}"));
            client
                .batch_execute("INSERT INTO orders (qty, note) VALUES (3, 'old')")
                .await
                .expect("old application");
            backfill(
                &client,
                &m,
                &shape,
                &BackfillOptions::default(),
                &mut |_| {},
            )
            .await
            .unwrap_or_else(|e| panic!("backfill on {major}: {e}"));
            assert_eq!(
                count(
                    &client,
                    "SELECT count(*) FROM orders WHERE _lp_new_qty IS DISTINCT FROM qty::bigint \
                     OR _lp_new_qty IS NULL"
                )
                .await,
                0,
                "Postgres {major}"
            );
            if complete {
                let c = complete_sql(&m, &shape).expect("complete sql");
                run_phase(&client, &c.validate, LOCK_TIMEOUT, STATEMENT_TIMEOUT)
                    .await
                    .expect("validate");
                run_phase(&client, &c.contract, LOCK_TIMEOUT, STATEMENT_TIMEOUT)
                    .await
                    .unwrap_or_else(|e| panic!("contract on {major}: {e}"));
                assert_eq!(
                    count(&client, "SELECT quantity FROM orders WHERE note = 'new'").await,
                    5_000_000
                );
                assert_eq!(
                    count(&new_app, "SELECT count(*) FROM orders").await,
                    20_002,
                    "the version schema's view after complete"
                );
            } else {
                run_phase(
                    &client,
                    &rollback_sql(&m, &shape).expect("rollback sql"),
                    LOCK_TIMEOUT,
                    STATEMENT_TIMEOUT,
                )
                .await
                .unwrap_or_else(|e| panic!("rollback on {major}: {e}"));
                assert_eq!(
                    catalog_hash(&read(&mut client).await).expect("hash"),
                    before,
                    "Postgres {major}"
                );
                assert_eq!(
                    count(&client, "SELECT qty::bigint FROM orders WHERE note = 'new'").await,
                    5_000_000
                );
            }
        }
        eprintln!("Postgres {major}: expand, backfill, complete and rollback pass");
    }
}

/// The backfill's future dropped mid-way (its task aborted, its connection closed): the
/// batch in flight may still commit on the server or roll back, either way a backfill from
/// the start fills exactly the rows left.
#[tokio::test]
async fn backfill_dropped_mid_way_resumes_from_the_start() {
    let (db, client) = orders_db().await;
    let m = orders_migration();
    let shape = TableShape::read(&client, "public", "orders")
        .await
        .expect("shape");
    run_phase(
        &client,
        &expand_sql(&m, &shape).expect("expand sql"),
        LOCK_TIMEOUT,
        STATEMENT_TIMEOUT,
    )
    .await
    .expect("expand");
    let worker = connect_as(&db, "lp-backfill-dropped", None).await;
    let (batches_tx, mut batches_rx) = tokio::sync::watch::channel(0u64);
    let (m2, shape2) = (m.clone(), shape.clone());
    let run = tokio::spawn(async move {
        let opts = BackfillOptions {
            batch_size: 2_000,
            ..BackfillOptions::default()
        };
        backfill(&worker, &m2, &shape2, &opts, &mut |p| {
            let _ = batches_tx.send(p.batches);
        })
        .await
    });
    while *batches_rx.borrow_and_update() < 10 {
        batches_rx.changed().await.expect("progress");
    }
    run.abort();
    assert!(run.await.is_err_and(|e| e.is_cancelled()));
    // Wait until the server has let the session go (its last batch committed or not).
    for _ in 0..500 {
        let left = count(
            &client,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lp-backfill-dropped'",
        )
        .await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let filled = count(
        &client,
        "SELECT count(*) FROM orders WHERE _lp_new_qty IS NOT NULL",
    )
    .await;
    assert!((20_000..ROWS).contains(&filled), "{filled}");
    let rest = backfill(
        &client,
        &m,
        &shape,
        &BackfillOptions::default(),
        &mut |_| {},
    )
    .await
    .expect("resume");
    report("backfill after a dropped one", &rest.progress);
    assert_eq!(filled as u64 + rest.progress.rows_filled, ROWS as u64);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM orders WHERE _lp_new_qty IS DISTINCT FROM qty::bigint"
        )
        .await,
        0
    );
}

/// A column other objects depend on is refused, naming them: complete would drop them.
#[tokio::test]
async fn a_column_with_dependents_is_refused_naming_them() {
    let (_, client) = database_with(
        "CREATE TABLE orders (id bigint PRIMARY KEY, qty integer NOT NULL, note text);
         CREATE INDEX orders_qty_ix ON orders ((qty * 2));
         CREATE INDEX orders_plain_qty_ix ON orders (qty);
         CREATE VIEW big_orders AS SELECT id FROM orders WHERE qty > 100;",
    )
    .await;
    let shape = TableShape::read(&client, "public", "orders")
        .await
        .expect("shape");
    match expand_sql(&orders_migration(), &shape) {
        Err(OnlineError::Dependents { column, dependents }) => {
            assert_eq!(column, "qty");
            let text = dependents.join(", ");
            assert!(
                text.contains("orders_qty_ix"),
                "an expression index: {text}"
            );
            assert!(text.contains("big_orders"), "{text}");
            assert!(
                !text.contains("orders_plain_qty_ix"),
                "a plain index is carried over, not refused: {text}"
            );
        }
        other => panic!("{other:?}"),
    }
    let id = shape.columns.iter().find(|c| c.name == "id").expect("id");
    assert!(!id.dependents.is_empty(), "the primary key depends on id");
    let note = shape
        .columns
        .iter()
        .find(|c| c.name == "note")
        .expect("note");
    assert!(note.dependents.is_empty(), "{:?}", note.dependents);
}

/// The version schema's view carries the table's grants (with `USAGE` on the schema) and
/// comments: a role the old application used reaches the new shape the same way, and what it
/// may not do on the table it may not do through the view.
#[tokio::test]
async fn the_view_carries_grants_and_comments() {
    let (db, client) = populated(
        &format!(
            "{ORDERS}
             DO $$ BEGIN CREATE ROLE lp_online_app NOLOGIN;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
             GRANT SELECT, UPDATE ON orders TO lp_online_app;
             COMMENT ON TABLE orders IS 'what customers ordered';
             COMMENT ON COLUMN orders.qty IS 'how many';"
        ),
        "INSERT INTO orders (qty, note) SELECT g, 'seed' FROM generate_series(1, 100) g",
    )
    .await;
    let m = orders_migration();
    let shape = TableShape::read(&client, "public", "orders")
        .await
        .expect("shape");
    assert!(
        shape
            .grants
            .contains(&("lp_online_app".to_owned(), "update".to_owned())),
        "{:?}",
        shape.grants
    );
    run_phase(
        &client,
        &expand_sql(&m, &shape).expect("expand sql"),
        LOCK_TIMEOUT,
        STATEMENT_TIMEOUT,
    )
    .await
    .expect("expand");
    let (comment_table, comment_column): (Option<String>, Option<String>) = {
        let r = client
            .query_one(
                "SELECT obj_description('public_v2.orders'::regclass, 'pg_class'), \
                        col_description('public_v2.orders'::regclass, \
                          (SELECT attnum FROM pg_attribute \
                           WHERE attrelid = 'public_v2.orders'::regclass AND attname = 'quantity'))",
                &[],
            )
            .await
            .expect("comments");
        (r.get(0), r.get(1))
    };
    assert_eq!(comment_table.as_deref(), Some("what customers ordered"));
    assert_eq!(
        comment_column.as_deref(),
        Some("how many"),
        "under the new name"
    );
    let mid = TableShape::read(&client, "public", "orders")
        .await
        .expect("shape");
    backfill(&client, &m, &mid, &BackfillOptions::default(), &mut |_| {})
        .await
        .expect("backfill");
    // As the application's role, through the version schema: what the table allows.
    client
        .batch_execute(
            "BEGIN; SET LOCAL ROLE lp_online_app; SET LOCAL search_path TO public_v2, public; \
             UPDATE orders SET quantity = quantity + 1 WHERE id = 1; COMMIT",
        )
        .await
        .expect("select and update through the view as the application's role");
    let denied = client
        .batch_execute(
            "BEGIN; SET LOCAL ROLE lp_online_app; \
             INSERT INTO public_v2.orders (quantity, note) VALUES (1, 'x'); COMMIT",
        )
        .await;
    let _ = client.batch_execute("ROLLBACK").await;
    let code = denied
        .expect_err("no INSERT on the table, none through the view")
        .code()
        .map(|c| c.code().to_owned());
    assert_eq!(code.as_deref(), Some("42501"), "insufficient_privilege");
    let qty = count(&client, "SELECT qty::bigint FROM orders WHERE id = 1").await;
    assert_eq!(
        qty, 2,
        "the update reached the old column through the trigger"
    );
    let _ = db;
}

/// Indexes and unique constraints on a changed column are built again on the new column while
/// the migration runs (concurrently, before the backfill) and take the old names at complete:
/// a plain index, a multi-column one, and a unique constraint that goes on refusing
/// duplicates throughout, on both sides.
#[tokio::test]
async fn indexes_and_unique_constraints_are_carried_to_the_new_columns() {
    let (_, client) = populated(
        "CREATE TABLE items (id bigint PRIMARY KEY, qty integer, code text UNIQUE, note text);
         CREATE INDEX items_qty_idx ON items (qty);
         CREATE INDEX items_qty_note_idx ON items (qty, note) WHERE note IS NOT NULL;",
        "INSERT INTO items SELECT g, g % 50, 'c' || g, 'n' FROM generate_series(1, 20000) g;
         ANALYZE items;",
    )
    .await;
    let m = OnlineMigration {
        version: "v2".into(),
        changes: vec![
            ColumnChange {
                schema: "public".into(),
                table: "items".into(),
                column: "qty".into(),
                new_name: Some("quantity".into()),
                new_type: Some("bigint".into()),
                set_not_null: false,
                up: "qty::bigint".into(),
                down: "quantity::integer".into(),
            },
            ColumnChange {
                schema: "public".into(),
                table: "items".into(),
                column: "code".into(),
                new_name: Some("sku".into()),
                new_type: None,
                set_not_null: false,
                up: String::new(),
                down: String::new(),
            },
        ],
    };
    let t = Timeouts::default();
    rollout::start(&client, &m, &t, &BackfillOptions::default(), &mut |_| {})
        .await
        .expect("start");
    let valid = count(
        &client,
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname LIKE '\\_lp\\_new\\_items%' AND i.indisvalid",
    )
    .await;
    assert_eq!(valid, 3, "the three indexes built on the new columns");
    // Uniqueness holds on both sides during the migration.
    let dup_old = client
        .batch_execute("INSERT INTO items (id, qty, code) VALUES (900001, 1, 'c1')")
        .await;
    assert_eq!(
        dup_old
            .err()
            .and_then(|e| e.code().map(|c| c.code().to_owned())),
        Some("23505".into())
    );
    let dup_new = client
        .batch_execute(
            "BEGIN; SET LOCAL search_path TO public_v2, public; \
             INSERT INTO items (id, quantity, sku) VALUES (900002, 1, 'c2'); COMMIT",
        )
        .await;
    let _ = client.batch_execute("ROLLBACK").await;
    assert_eq!(
        dup_new
            .err()
            .and_then(|e| e.code().map(|c| c.code().to_owned())),
        Some("23505".into())
    );
    rollout::complete(&client, "v2", &t)
        .await
        .expect("complete");
    let defs: Vec<String> = client
        .query(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'items' ORDER BY indexname",
            &[],
        )
        .await
        .expect("indexes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        defs,
        vec![
            "CREATE UNIQUE INDEX items_code_key ON public.items USING btree (sku)".to_owned(),
            "CREATE UNIQUE INDEX items_pkey ON public.items USING btree (id)".to_owned(),
            "CREATE INDEX items_qty_idx ON public.items USING btree (quantity)".to_owned(),
            "CREATE INDEX items_qty_note_idx ON public.items USING btree (quantity, note) \
             WHERE (note IS NOT NULL)"
                .to_owned(),
        ]
    );
    let constraint = count(
        &client,
        "SELECT count(*) FROM pg_constraint WHERE conname = 'items_code_key' AND contype = 'u'",
    )
    .await;
    assert_eq!(
        constraint, 1,
        "the unique constraint, made again from the new index"
    );
}
