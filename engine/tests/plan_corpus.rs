//! Plans over real public schemas (read from `../shared/corpus` or `$LOCKPLANE_CORPUS`;
//! skipped with a notice when absent): Chinook built from an empty database and taken down
//! again, and a realistic change to Pagila (views over the changed table, triggers, functions,
//! partitions and a materialized view that Lockplane does not manage). Each forward plan is
//! also exported as pgroll migrations, which must be valid by pgroll's schema and code rules.

mod common;

use common::{database_with, read};
use lockplane_engine::diff::Renames;
use lockplane_engine::pgroll::{export_plan, Migration, Operation, PgrollOptions};
use lockplane_engine::plan::{plan, read_stats, reverse, HazardKind, Plan};
use lockplane_engine::{catalog_hash, testkit};
use tokio_postgres::Client;

async fn apply(client: &Client, plan: &Plan) {
    let mut i = 0;
    let steps = &plan.steps;
    while i < steps.len() {
        if steps[i].transactional {
            let mut sql = String::from("BEGIN;\nSET LOCAL lock_timeout = '5s';\n");
            while i < steps.len() && steps[i].transactional {
                sql.push_str(&steps[i].sql);
                sql.push_str(";\n");
                i += 1;
            }
            sql.push_str("COMMIT;");
            if let Err(e) = client.batch_execute(&sql).await {
                let _ = client.batch_execute("ROLLBACK").await;
                panic!("transaction failed: {e:?}\n{sql}");
            }
        } else {
            client
                .batch_execute(&steps[i].sql)
                .await
                .unwrap_or_else(|e| panic!("step failed: {e:?}\n{}", steps[i].sql));
            i += 1;
        }
    }
}

/// Plans A → B, applies it, checks B's hash; then the reverse, back to A's hash. Returns the
/// forward plan and its pgroll export (checked valid).
async fn round_trip(a: &str, b: &str) -> (Plan, Vec<Migration>) {
    let (_, mut client_a) = database_with(a).await;
    let (_, mut client_b) = database_with(b).await;
    let cat_a = read(&mut client_a).await;
    let cat_b = read(&mut client_b).await;
    let stats = read_stats(&client_a).await.expect("stats");
    let forward = plan(&cat_a, &cat_b, &Renames::none(), &stats, "corpus").expect("plan");
    let options = PgrollOptions::default();
    let migrations = export_plan(&forward, &cat_a, &cat_b, &Renames::none(), &stats, &options)
        .expect("pgroll export");
    common::assert_pgroll_valid("corpus", &migrations, &cat_a, &options.schema);
    apply(&client_a, &forward).await;
    let after = read(&mut client_a).await;
    assert_eq!(
        catalog_hash(&after).expect("hash"),
        catalog_hash(&cat_b).expect("hash"),
        "forward plan did not reach B: {:#?}",
        forward.steps
    );
    let same = plan(&cat_b, &cat_b, &Renames::none(), &stats, "corpus").expect("plan");
    assert!(same.is_empty(), "{:#?}", same.steps);
    let stats = read_stats(&client_a).await.expect("stats");
    let back = reverse(&cat_a, &cat_b, &Renames::none(), &stats, "corpus").expect("reverse");
    apply(&client_a, &back).await;
    let restored = read(&mut client_a).await;
    assert_eq!(
        catalog_hash(&restored).expect("hash"),
        catalog_hash(&cat_a).expect("hash"),
        "reverse plan did not come back to A: {:#?}",
        back.steps
    );
    (forward, migrations)
}

fn operations(migrations: &[Migration]) -> impl Iterator<Item = &Operation> {
    migrations.iter().flat_map(|m| m.operations.iter())
}

#[tokio::test]
async fn chinook_from_an_empty_database_and_back() {
    let Some(chinook) = testkit::corpus_sql("chinook-schema.sql") else {
        return;
    };
    let (forward, migrations) = round_trip("", &chinook).await;
    // Eleven tables, their keys inline; foreign keys after every table exists.
    let creates = forward
        .steps
        .iter()
        .filter(|s| s.sql.starts_with("CREATE TABLE"))
        .count();
    assert_eq!(creates, 11);
    let first_fk = forward
        .steps
        .iter()
        .position(|s| s.sql.contains("FOREIGN KEY"))
        .expect("foreign keys");
    let last_table = forward
        .steps
        .iter()
        .rposition(|s| s.sql.starts_with("CREATE TABLE"))
        .expect("tables");
    assert!(last_table < first_fk);
    assert!(!forward.requires_confirmation);
    // As pgroll: the same eleven tables, each with its foreign keys written inside it when what
    // they reference is created before it, the others added after; no raw SQL.
    let tables = operations(&migrations)
        .filter(|op| matches!(op, Operation::CreateTable(_)))
        .count();
    assert_eq!(tables, 11);
    let fks = forward
        .steps
        .iter()
        .filter(|s| s.sql.contains("FOREIGN KEY"))
        .count();
    let exported_fks = operations(&migrations)
        .map(|op| match op {
            Operation::CreateTable(t) => t
                .constraints
                .iter()
                .filter(|c| c.kind == "foreign_key")
                .count(),
            Operation::AlterColumn(a) => usize::from(a.references.is_some()),
            Operation::CreateConstraint(c) => usize::from(c.kind == "foreign_key"),
            _ => 0,
        })
        .sum::<usize>();
    assert_eq!(exported_fks, fks);
    assert!(!operations(&migrations).any(|op| matches!(op, Operation::Sql(_))));
}

#[tokio::test]
async fn pagila_column_type_change_under_views_triggers_and_functions() {
    let Some(pagila) = testkit::corpus_sql("pagila-schema.sql") else {
        return;
    };
    // B is Pagila written with the change (Postgres itself refuses to retype a column under
    // a view, which is exactly what the plan must work around).
    let retyped = pagila.replace("    length smallint,", "    length integer,");
    assert_ne!(retyped, pagila, "film.length not found");
    let changed = format!(
        "{retyped}
         ALTER TABLE public.customer ADD COLUMN loyalty integer NOT NULL DEFAULT 0;
         CREATE INDEX customer_loyalty_idx ON public.customer (loyalty);
         COMMENT ON TABLE public.film IS 'movies';"
    );
    let (forward, migrations) = round_trip(&pagila, &changed).await;
    // As pgroll: the type change is an alter_column with its casts, between raw SQL that drops
    // and re-creates the views over it.
    let retyped = operations(&migrations)
        .find_map(|op| match op {
            Operation::AlterColumn(a) if a.table == "film" && a.column == "length" => Some(a),
            _ => None,
        })
        .expect("alter_column film.length");
    assert_eq!(retyped.data_type.as_deref(), Some("integer"));
    assert_eq!(retyped.up, r#"CAST("length" AS integer)"#);
    assert_eq!(retyped.down, r#"CAST("length" AS smallint)"#);
    let sql: Vec<&str> = forward.steps.iter().map(|s| s.sql.as_str()).collect();
    // The views over film are dropped before the type change and created again after it.
    let retype = sql
        .iter()
        .position(|s| s.contains(r#"ALTER COLUMN "length" TYPE integer"#))
        .expect("type change");
    let drop_view = sql
        .iter()
        .position(|s| *s == r#"DROP VIEW "public"."film_list""#)
        .expect("film_list dropped");
    let create_view = sql
        .iter()
        .position(|s| s.starts_with(r#"CREATE VIEW "public"."film_list""#))
        .expect("film_list created");
    assert!(drop_view < retype && retype < create_view, "{sql:#?}");
    // film has triggers and the database has functions Lockplane cannot read.
    assert!(forward.requires_confirmation);
    assert!(forward.hazards.iter().any(|h| {
        h.kind == HazardKind::DependsOnUnsupported && h.detail.contains("trigger public.film.")
    }));
}
