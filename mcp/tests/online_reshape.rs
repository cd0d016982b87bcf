//! The same logical change through Lockplane's online migration and through Reshape (the
//! expand/contract tool in Rust, `cargo install reshape --version 0.11.2`), each on its own
//! database holding the same rows: the new version's shape seen through each tool's version
//! schema, the values each backfilled, a write through each new version as the old
//! application sees it, and the table each leaves after completing must all be the same.
//!
//! Reshape is found at `$LOCKPLANE_RESHAPE`, else where `scripts/reshape.sh` installs it
//! (`/opt/lockplane-tools/reshape/bin/reshape`); without it the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lockplane_engine::testkit;
use tokio_postgres::Client;

const ROWS: i64 = 20_000;

fn reshape_binary() -> Option<PathBuf> {
    let path = std::env::var_os("LOCKPLANE_RESHAPE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/lockplane-tools/reshape/bin/reshape"));
    path.is_file().then_some(path)
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lockplane(ledger: &Path, url: &str, args: &[&str]) -> String {
    ok(
        Command::new(env!("CARGO_BIN_EXE_lockplane"))
            .args(args)
            .env("LOCKPLANE_LEDGER", ledger)
            .env("DATABASE_URL", url)
            .env("NO_COLOR", "1")
            .output()
            .expect("run lockplane"),
        &format!("lockplane {args:?}"),
    )
}

/// Reshape's subcommands differ in what they take: `--url` and `--dirs` only where given.
fn reshape(bin: &Path, dirs: Option<&Path>, url: Option<&str>, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    if let Some(url) = url {
        all.extend(["--url", url]);
    }
    if let Some(dirs) = dirs {
        all.extend(["--dirs", dirs.to_str().expect("path")]);
    }
    ok(
        Command::new(bin).args(&all).output().expect("run reshape"),
        &format!("reshape {args:?}"),
    )
}

const CREATE: &str = r#"
[[actions]]
type = "create_table"
name = "orders"
primary_key = ["id"]

    [[actions.columns]]
    name = "id"
    type = "BIGINT"
    nullable = false

    [[actions.columns]]
    name = "qty"
    type = "INTEGER"

    [[actions.columns]]
    name = "note"
    type = "TEXT"
"#;

const QUANTITY: &str = r#"
[[actions]]
type = "alter_column"
table = "orders"
column = "qty"
up = "COALESCE(qty, 0)::bigint"
# Reshape names the new value by the column's current name in `down`.
down = "qty::integer"

    [actions.changes]
    name = "quantity"
    type = "BIGINT"
    nullable = false
"#;

const DOCUMENT: &str = "version: 1
schemas:
  public:
    tables:
      orders:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: quantity, renamed_from: qty, type: bigint, not_null: true, up: \"COALESCE(qty, 0)::bigint\", down: \"quantity::integer\" }
          - { name: note, type: text }
";

const FILL: &str = "INSERT INTO orders (id, qty, note) \
    SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE g % 1000 END, 'order ' || g \
    FROM generate_series(1, 20000) g";

async fn columns(client: &Client, schema: &str, table: &str) -> Vec<(String, String)> {
    client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             AND a.attname NOT LIKE '\\_\\_reshape%' \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn rows(client: &Client, search_path: &str) -> Vec<(i64, i64, String)> {
    client
        .batch_execute(&format!("SET search_path TO {search_path}"))
        .await
        .expect("search_path");
    let out = client
        .query("SELECT id, quantity, note FROM orders ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    client
        .batch_execute("RESET search_path")
        .await
        .expect("reset");
    out
}

/// The table as it stands: columns with nullability.
/// `(id, qty)` of the two rows written through the new version, as the old version reads.
async fn old_side(client: &Client) -> Vec<(i64, Option<i32>)> {
    client
        .query(
            "SELECT id, qty FROM orders WHERE id IN (10, 900001) ORDER BY id",
            &[],
        )
        .await
        .expect("old side")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn table(client: &Client) -> Vec<(String, String, bool)> {
    client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute \
             WHERE attrelid = 'public.orders'::regclass AND attnum > 0 AND NOT attisdropped \
             ORDER BY attname",
            &[],
        )
        .await
        .expect("table")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn lockplane_and_reshape_reach_the_same_schema_and_values() {
    let Some(bin) = reshape_binary() else {
        eprintln!(
            "notice: reshape is not installed (run `bash scripts/reshape.sh` or set \
             LOCKPLANE_RESHAPE); the comparison with Reshape is skipped"
        );
        return;
    };
    let cluster = testkit::shared_cluster().expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");

    // Reshape: its own migrations create the table; the rows go in directly.
    let reshape_db = testkit::fresh_database("reshape").await.expect("database");
    let reshape_url = cluster.url(&reshape_db);
    let reshape_client = cluster.connect(&reshape_db).await.expect("connect");
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).expect("dir");
    std::fs::write(migrations.join("1_create_orders.toml"), CREATE).expect("write");
    reshape(
        &bin,
        Some(&migrations),
        Some(&reshape_url),
        &["migration", "start", "--complete"],
    );
    reshape_client.batch_execute(FILL).await.expect("fill");
    std::fs::write(migrations.join("2_quantity.toml"), QUANTITY).expect("write");
    reshape(
        &bin,
        Some(&migrations),
        Some(&reshape_url),
        &["migration", "start"],
    );
    let query = reshape(&bin, Some(&migrations), None, &["schema-query"]);
    let reshape_schema = query
        .split("search_path TO ")
        .nth(1)
        .map(|s| s.trim().trim_end_matches(';').trim_matches('\'').to_owned())
        .expect("reshape's schema query");

    // Lockplane: the same table and rows, the same change as a document.
    let lp_db = testkit::fresh_database("lockplane_vs_reshape")
        .await
        .expect("database");
    let lp_url = cluster.url(&lp_db);
    let lp_client = cluster.connect(&lp_db).await.expect("connect");
    lp_client
        .batch_execute(&format!(
            "CREATE TABLE orders (id bigint PRIMARY KEY, qty integer, note text); {FILL}"
        ))
        .await
        .expect("table");
    let ledger = dir.path().join("ledger");
    let doc = dir.path().join("v2.yaml");
    std::fs::write(&doc, DOCUMENT).expect("write");
    let file = dir.path().join("v2.json");
    lockplane(
        &ledger,
        &lp_url,
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
    );
    lockplane(&ledger, &lp_url, &["apply", file.to_str().expect("path")]);

    // The new version's shape and values, through each tool's version schema.
    // By name: Lockplane's view keeps the table's column order (the changed column where the
    // old one was), Reshape's lists the new column last, where the table will have it.
    let sorted = |mut c: Vec<(String, String)>| {
        c.sort();
        c
    };
    assert_eq!(
        sorted(columns(&lp_client, "public_v2", "orders").await),
        sorted(columns(&reshape_client, &reshape_schema, "orders").await),
        "the new shape, as each version schema shows it"
    );
    let lp_rows = rows(&lp_client, "public_v2").await;
    let reshape_rows = rows(&reshape_client, &reshape_schema).await;
    assert_eq!(lp_rows.len() as i64, ROWS);
    assert_eq!(lp_rows, reshape_rows, "the backfilled values");

    // A write through each new version, as each old version sees it.
    for (client, new_schema) in [
        (&lp_client, "public_v2".to_owned()),
        (&reshape_client, reshape_schema.clone()),
    ] {
        client
            .batch_execute(&format!(
                "SET search_path TO {new_schema}; \
                 INSERT INTO orders (id, quantity, note) VALUES (900001, 77, 'new'); \
                 UPDATE orders SET quantity = 5 WHERE id = 10; RESET search_path"
            ))
            .await
            .expect("write through the new version");
    }
    // Reshape's old version is its first migration's schema; Lockplane's is the table itself.
    reshape_client
        .batch_execute("SET search_path TO migration_1_create_orders")
        .await
        .expect("reshape's old version");
    let reshape_old = old_side(&reshape_client).await;
    reshape_client
        .batch_execute("RESET search_path")
        .await
        .expect("reset");
    assert_eq!(old_side(&lp_client).await, reshape_old);
    assert_eq!(reshape_old, vec![(10, Some(5)), (900001, Some(77))]);

    // Completed, each leaves the same table with the same values.
    reshape(&bin, None, Some(&reshape_url), &["migration", "complete"]);
    lockplane(&ledger, &lp_url, &["complete", "v2"]);
    assert_eq!(table(&lp_client).await, table(&reshape_client).await);
    assert_eq!(
        rows(&lp_client, "public").await,
        rows(&reshape_client, "public").await
    );
}
