//! Online (expand/contract) migrations as a user runs them: `lockplane plan --online`, `apply`
//! (expand and backfill) while an old and a new application read and write, `complete`,
//! `rollback`, a `kill -9` mid-backfill resumed, and the refusals a document can earn.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use lockplane_engine::testkit;

const ROWS: i64 = 200_000;

fn lockplane(ledger: &std::path::Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .args(args)
        .env("LOCKPLANE_LEDGER", ledger)
        .env("DATABASE_URL", url)
        .env("LOCKPLANE_ACTOR", "user:ops")
        .env("NO_COLOR", "1")
        .output()
        .expect("run lockplane")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "lockplane failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A database with `orders(id, qty int NULL for every tenth row, note)` of `ROWS` rows.
async fn orders() -> (String, tokio_postgres::Client) {
    let db = testkit::fresh_database("online_cli")
        .await
        .expect("database");
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster.connect(&db).await.expect("connect");
    client
        .batch_execute(&format!(
            "CREATE TABLE orders (id bigint PRIMARY KEY, qty integer, note text);
             INSERT INTO orders SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE g % 7 END, 'n' || g
               FROM generate_series(1, {ROWS}) g;
             ANALYZE orders;"
        ))
        .await
        .expect("schema");
    (cluster.url(&db), client)
}

/// `qty integer` becomes `quantity bigint NOT NULL` (NULLs read as 0).
const V2: &str = "version: 1
schemas:
  public:
    comment: standard public schema
    tables:
      orders:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: quantity, renamed_from: qty, type: bigint, not_null: true, up: \"COALESCE(qty, 0)::bigint\", down: \"quantity::integer\" }
          - { name: note, type: text }
";

/// Standard error as one line (miette wraps and frames long messages).
fn flat(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// Every row consistent in both representations: the new column is `up(old)` (or, for rows
/// the new application wrote, the old column is `down(new)`, which is the same relation here
/// for values in range).
async fn inconsistent_rows(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM orders \
             WHERE _lp_new_qty IS DISTINCT FROM COALESCE(qty, 0)::bigint \
               AND NOT (qty IS NOT DISTINCT FROM _lp_new_qty::integer)",
            &[],
        )
        .await
        .expect("check")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_and_new_applications_run_side_by_side_then_complete() {
    let (url, client) = orders().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = write(dir.path(), "v2.yaml", V2);
    let file = dir.path().join("v2.json");

    let planned = ok(&lockplane(
        &ledger,
        &url,
        &[
            "plan",
            "--online",
            "--version",
            "v2",
            "-f",
            doc.to_str().expect("path"),
            "--out",
            file.to_str().expect("path"),
        ],
    ));
    assert!(
        planned.contains("CREATE VIEW \"public_v2\".\"orders\""),
        "{planned}"
    );
    assert!(planned.contains("lockplane complete v2"), "{planned}");
    assert!(
        planned.contains(&format!("~{ROWS} rows")),
        "the backfill's estimate from statistics: {planned}"
    );

    // The old application (base schema) and the new one (version schema first) write while
    // the migration expands and backfills.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let mut apps = Vec::new();
    for (side, search_path) in [("old", "public"), ("new", "public_v2, public")] {
        let (url, stop, writes) = (url.clone(), stop.clone(), writes.clone());
        apps.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("app connects");
            tokio::spawn(conn);
            let mut i: i64 = 0;
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = if side == "old" { i * 7 % ROWS + 1 } else { i * 13 % ROWS + 1 };
                // Before expand, the version schema does not exist: the new application
                // falls back to the base schema's columns (it starts once announced).
                let exists: bool = c
                    .query_one("SELECT to_regclass('public_v2.orders') IS NOT NULL", &[])
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or(false);
                let sql = match (side, exists) {
                    ("new", true) => format!(
                        "SET search_path TO {search_path}; \
                         UPDATE orders SET quantity = quantity + 1 WHERE id = {id} AND quantity IS NOT NULL; \
                         INSERT INTO orders (id, quantity, note) VALUES ({}, {i}, 'new') ON CONFLICT DO NOTHING",
                        ROWS + 1_000_000 + i
                    ),
                    ("new", false) => {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        continue;
                    }
                    _ => format!(
                        "UPDATE orders SET qty = COALESCE(qty, 0) + 1 WHERE id = {id}; \
                         INSERT INTO orders (id, qty, note) VALUES ({}, {}, 'old') ON CONFLICT DO NOTHING",
                        ROWS + 2_000_000 + i,
                        i % 5
                    ),
                };
                match c.batch_execute(&sql).await {
                    Ok(()) => {
                        writes.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            errors
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let applied = {
        let (ledger, url, file) = (ledger.clone(), url.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            lockplane(
                &ledger,
                &url,
                &[
                    "apply",
                    file.to_str().expect("path"),
                    "--batch-size",
                    "2000",
                ],
            )
        })
        .await
        .expect("apply")
    };
    let applied = ok(&applied);
    assert!(applied.contains("backfilled"), "{applied}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for app in apps {
        let errors = app.await.expect("app");
        assert!(
            errors.is_empty(),
            "the applications' writes all succeed: {errors:?}"
        );
    }
    assert!(writes.load(Ordering::SeqCst) > 20, "the applications wrote");

    assert_eq!(
        inconsistent_rows(&client).await,
        0,
        "both representations agree"
    );
    let unfilled: i64 = client
        .query_one("SELECT count(*) FROM orders WHERE _lp_new_qty IS NULL", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(unfilled, 0, "every row backfilled");
    let new_side: i64 = client
        .query_one(
            "SELECT count(*) FROM public_v2.orders WHERE note = 'new' AND quantity IS NOT NULL",
            &[],
        )
        .await
        .expect("view")
        .get(0);
    let old_side: i64 = client
        .query_one(
            "SELECT count(*) FROM orders WHERE note = 'new' AND qty IS NOT NULL",
            &[],
        )
        .await
        .expect("old")
        .get(0);
    assert_eq!(
        new_side, old_side,
        "the old application sees the new one's rows"
    );

    let before: Vec<(i64, Option<i32>)> = client
        .query("SELECT id, qty FROM orders ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let completed = ok(&lockplane(&ledger, &url, &["complete", "v2"]));
    assert!(completed.contains("completed"), "{completed}");
    let after: Vec<(i64, i64)> = client
        .query("SELECT id, quantity FROM orders ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(before.len(), after.len());
    for ((id, qty), (id2, quantity)) in before.iter().zip(&after) {
        assert_eq!(id, id2);
        assert_eq!(i64::from(qty.unwrap_or(0)), *quantity, "row {id}");
    }
    // The table now is what the document says: a plan to it has nothing to do.
    let again = ok(&lockplane(
        &ledger,
        &url,
        &["plan", "--no-shadow", "-f", doc.to_str().expect("path")],
    ));
    assert!(again.contains("Nothing to do"), "{again}");
    let log = ok(&lockplane(&ledger, &url, &["audit", "log"]));
    for phase in ["planned", "backfilled", "completed"] {
        assert!(
            log.contains(&format!("online migration v2 of public.orders: {phase}")),
            "{log}"
        );
    }
    // Completed once: again is refused, and so is a rollback.
    for args in [["complete", "v2"], ["rollback", "v2"]] {
        let out = lockplane(&ledger, &url, &args);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("v2 is completed"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_backfill_resumes_then_rolls_back_losing_nothing() {
    let (url, client) = orders().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = write(dir.path(), "v2.yaml", V2);
    let file = dir.path().join("v2.json");
    ok(&lockplane(
        &ledger,
        &url,
        &[
            "plan",
            "--online",
            "--version",
            "v2",
            "-f",
            doc.to_str().expect("path"),
            "--out",
            file.to_str().expect("path"),
        ],
    ));
    let original: Vec<(i64, Option<i32>, String)> = client
        .query("SELECT id, qty, note FROM orders ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();

    // Small batches, so the backfill is still running when it is killed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .args(["apply", file.to_str().expect("path"), "--batch-size", "200"])
        .env("LOCKPLANE_LEDGER", &ledger)
        .env("DATABASE_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn apply");
    // Wait until some rows are filled, then kill -9.
    let started = std::time::Instant::now();
    loop {
        let filled: i64 = client
            .query_one(
                "SELECT CASE WHEN to_regclass('lockplane.online_migrations') IS NULL THEN 0 \
                 ELSE (SELECT count(*) FROM orders WHERE _lp_new_qty IS NOT NULL) END",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if filled >= 2_000 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the backfill never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let filled: i64 = client
        .query_one(
            "SELECT count(*) FROM orders WHERE _lp_new_qty IS NOT NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert!(
        filled < ROWS,
        "killed mid-backfill ({filled} of {ROWS} filled): make the batches smaller"
    );
    let phase: String = client
        .query_one(
            "SELECT phase FROM lockplane.online_migrations WHERE version = 'v2'",
            &[],
        )
        .await
        .expect("state")
        .get(0);
    assert_eq!(
        phase, "expanded",
        "the expand is recorded, the backfill is not"
    );
    // Complete refuses while rows are unfilled.
    let early = lockplane(&ledger, &url, &["complete", "v2"]);
    assert!(!early.status.success());
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("not backfilled yet"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );

    // Apply again: resumes (no second expand) and finishes.
    let resumed = ok(&lockplane(
        &ledger,
        &url,
        &["apply", file.to_str().expect("path")],
    ));
    assert!(resumed.contains("backfilled"), "{resumed}");
    assert_eq!(inconsistent_rows(&client).await, 0);
    let unfilled: i64 = client
        .query_one("SELECT count(*) FROM orders WHERE _lp_new_qty IS NULL", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(unfilled, 0);

    // Rollback: the table is as before, every value intact, nothing of the migration left.
    let rolled = ok(&lockplane(&ledger, &url, &["rollback", "v2"]));
    assert!(rolled.contains("rolled_back"), "{rolled}");
    let now: Vec<(i64, Option<i32>, String)> = client
        .query("SELECT id, qty, note FROM orders ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(now, original, "the old application lost nothing");
    let leftovers: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_attribute WHERE attrelid = 'orders'::regclass \
                       AND attname LIKE '\\_lp\\_%' AND NOT attisdropped) \
                  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'public_v2') \
                  + (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass)",
            &[],
        )
        .await
        .expect("leftovers")
        .get(0);
    assert_eq!(
        leftovers, 0,
        "no column, schema or trigger of the migration left"
    );
}

#[tokio::test]
async fn documents_an_online_migration_cannot_carry_are_refused_by_name() {
    let (url, _client) = orders().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let plan = |doc: &std::path::Path| {
        lockplane(
            &ledger,
            &url,
            &[
                "plan",
                "--online",
                "--version",
                "v2",
                "-f",
                doc.to_str().expect("path"),
            ],
        )
    };
    // A type change without `down:`: named with its place in the file.
    let no_down = write(
        dir.path(),
        "no_down.yaml",
        &V2.replace(", down: \"quantity::integer\"", ""),
    );
    let out = plan(&no_down);
    let err = flat(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no_down.yaml:9:")
            && err.contains("public.orders.quantity")
            && err.contains("`down:`"),
        "{err}"
    );
    // A new NOT NULL without `up:`.
    let no_up = write(
        dir.path(),
        "no_up.yaml",
        "version: 1
schemas:
  public:
    comment: standard public schema
    tables:
      orders:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: qty, type: integer, not_null: true }
          - { name: note, type: text }
",
    );
    let out = plan(&no_up);
    let err = flat(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no_up.yaml:9:") && err.contains("a new NOT NULL needs `up:`"),
        "{err}"
    );
    // Anything else the document changes is named, with where to plan it.
    let more = write(
        dir.path(),
        "more.yaml",
        &format!("{V2}      audit:\n        columns:\n          - {{ name: id, type: bigint, pk: true }}\n"),
    );
    let out = plan(&more);
    let err = flat(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("audit") && err.contains("without --online"),
        "{err}"
    );
    // Nothing was started.
    let log = ok(&lockplane(&ledger, &url, &["audit", "log"]));
    assert!(!log.contains("OnlineMigrated"), "{log}");
}

/// The README's online example: its document, its commands in order, and the application's
/// side of the switch (the `search_path` its snippet sets, and the statement it runs).
#[tokio::test]
async fn the_readme_online_example_runs() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let marker = "```yaml\nversion: 1\nschemas:\n  public:\n    tables:\n      orders:";
    let start = readme.find(marker).expect("the README's online example") + "```yaml\n".len();
    let document = &readme[start..start + readme[start..].find("```").expect("block end")];
    let python_at = readme[start..]
        .find("```python")
        .expect("the application snippet")
        + start;
    let snippet =
        &readme[python_at..python_at + readme[python_at..][3..].find("```").expect("end")];
    let search_path = snippet
        .split("SET search_path TO ")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the snippet sets search_path");

    let db = testkit::fresh_database("online_readme")
        .await
        .expect("database");
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster.connect(&db).await.expect("connect");
    client
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, qty integer);
             INSERT INTO orders SELECT g, NULLIF(g % 5, 0) FROM generate_series(1, 1000) g",
        )
        .await
        .expect("schema");
    let url = cluster.url(&db);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = write(dir.path(), "orders.yaml", document);
    let out = dir.path().join("v2.json");
    let (doc, out) = (doc.to_str().expect("path"), out.to_str().expect("path"));
    let planned = ok(&lockplane(
        &ledger,
        &url,
        &[
            "plan",
            "--online",
            "--version",
            "v2",
            "-f",
            doc,
            "--out",
            out,
        ],
    ));
    assert!(
        planned.contains(search_path.split(',').next().unwrap_or("?")),
        "{planned}"
    );
    ok(&lockplane(&ledger, &url, &["apply", out]));
    // The new release, as the snippet connects.
    client
        .batch_execute(&format!(
            "SET search_path TO {search_path}; \
             UPDATE orders SET quantity = quantity + 1 WHERE id = 42; RESET search_path"
        ))
        .await
        .expect("the snippet's statement");
    let old: Option<i32> = client
        .query_one("SELECT qty FROM orders WHERE id = 42", &[])
        .await
        .expect("old side")
        .get(0);
    assert_eq!(
        old,
        Some(3),
        "the old application sees the new one's write (42 % 5 + 1)"
    );
    ok(&lockplane(&ledger, &url, &["complete", "v2"]));
    let nulls: i64 = client
        .query_one("SELECT count(*) FROM orders WHERE quantity = 0", &[])
        .await
        .expect("after")
        .get(0);
    assert_eq!(nulls, 200, "rows without qty read 0, as up says");
}
