//! Golden transitions against a real server: schema A in one fresh database, schema B in
//! another; plan(A → B) must be exactly the expected SQL, applying it to A's database must
//! reach B's hash, the reverse plan applied after it must come back to A's hash, and
//! plan(B → B) must be empty.
//!
//! Every plan is also exported as pgroll migrations, which must be valid by pgroll's schema and
//! the rules it enforces in code (`common::assert_pgroll_valid`).
//!
//! Set `LOCKPLANE_GOLDEN_PRINT=1` to print the planned SQL of every case instead of failing on
//! a difference (to write the expectation of a new case; read it before pasting it), and its
//! pgroll export.

mod common;

use common::{database_with, read};
use lockplane_engine::catalog::Catalog;
use lockplane_engine::diff::Renames;
use lockplane_engine::pgroll::{export_plan, PgrollError, PgrollOptions};
use lockplane_engine::plan::{plan, read_stats, reverse, HazardKind, Plan, PlanError};
use lockplane_engine::{catalog_hash, testkit};
use tokio_postgres::Client;

/// Runs a plan the way the executor will: the transactional steps in one transaction with a
/// lock timeout, the non-transactional ones alone, in plan order.
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

struct Case<'a> {
    name: &'a str,
    a: &'a str,
    b: &'a str,
    renames: Renames,
    expected: &'a [&'a str],
    /// The reverse must be refused (it would remove enum labels that are in use).
    one_way: bool,
}

async fn run(case: Case<'_>) -> Plan {
    let (_, mut client_a) = database_with(case.a).await;
    let (_, mut client_b) = database_with(case.b).await;
    let cat_a: Catalog = read(&mut client_a).await;
    let cat_b: Catalog = read(&mut client_b).await;
    let hash_a = catalog_hash(&cat_a).expect("hash");
    let hash_b = catalog_hash(&cat_b).expect("hash");
    assert_ne!(hash_a, hash_b, "{}: A and B are the same schema", case.name);

    let stats = read_stats(&client_a).await.expect("stats");
    let forward = plan(&cat_a, &cat_b, &case.renames, &stats, "golden")
        .unwrap_or_else(|e| panic!("{}: plan failed: {e}", case.name));
    let sql: Vec<&str> = forward.steps.iter().map(|s| s.sql.as_str()).collect();
    if std::env::var_os("LOCKPLANE_GOLDEN_PRINT").is_some() {
        eprintln!("=== {}", case.name);
        for s in &forward.steps {
            eprintln!(
                "    r#\"{}\"#,  // {} {} {:?}",
                s.sql,
                if s.transactional { "tx" } else { "NON-TX" },
                s.lock,
                s.hazards.iter().map(|h| h.kind).collect::<Vec<_>>()
            );
        }
    } else {
        assert_eq!(sql, case.expected, "{}: planned SQL", case.name);
    }
    assert_eq!(forward.base_hash, hash_a);
    assert_eq!(forward.target_hash, hash_b);
    assert_eq!(forward.computed_id().expect("id"), forward.plan_id);
    pgroll_export(&case, &forward, &cat_a, &cat_b, &stats);

    apply(&client_a, &forward).await;
    let after = read(&mut client_a).await;
    assert_eq!(
        catalog_hash(&after).expect("hash"),
        hash_b,
        "{}: applying the plan did not reach B\nafter: {after:#?}\nB: {cat_b:#?}",
        case.name
    );

    // B → B and A → A are empty.
    let same = plan(&cat_b, &cat_b, &Renames::none(), &stats, "golden").expect("plan");
    assert!(
        same.steps.is_empty(),
        "{}: B → B: {:#?}",
        case.name,
        same.steps
    );
    let same = plan(&cat_a, &cat_a, &Renames::none(), &stats, "golden").expect("plan");
    assert!(
        same.steps.is_empty(),
        "{}: A → A: {:#?}",
        case.name,
        same.steps
    );

    // The reverse takes the database back to A.
    let stats_b = read_stats(&client_a).await.expect("stats");
    let back = reverse(&cat_a, &cat_b, &case.renames, &stats_b, "golden");
    if case.one_way {
        let refused = matches!(back, Err(PlanError::Refused { .. }));
        assert!(
            refused,
            "{}: the reverse should be refused: {back:?}",
            case.name
        );
        return forward;
    }
    let back = back.unwrap_or_else(|e| panic!("{}: reverse plan failed: {e}", case.name));
    apply(&client_a, &back).await;
    let restored = read(&mut client_a).await;
    assert_eq!(
        catalog_hash(&restored).expect("hash"),
        hash_a,
        "{}: the reverse plan did not come back to A\nafter: {restored:#?}\nA: {cat_a:#?}\nreverse: {:#?}",
        case.name,
        back.steps
    );
    drop(client_b);
    let _ = testkit::shared_cluster();
    forward
}

/// The same plan as pgroll migrations must be what pgroll accepts (its JSON Schema and the
/// rules it enforces in code, against A's schema). The one refusal allowed is a column added
/// NOT NULL without default, which pgroll cannot fill without an `up` expression: then B must
/// really add such a column.
fn pgroll_export(
    case: &Case<'_>,
    forward: &Plan,
    cat_a: &Catalog,
    cat_b: &Catalog,
    stats: &lockplane_engine::plan::TableStats,
) {
    let options = PgrollOptions::default();
    match export_plan(forward, cat_a, cat_b, &case.renames, stats, &options) {
        Ok(migrations) => {
            if std::env::var_os("LOCKPLANE_GOLDEN_PRINT").is_some() {
                eprintln!(
                    "--- {} as pgroll:\n{}",
                    case.name,
                    serde_json::to_string_pretty(&migrations).unwrap_or_default()
                );
            }
            assert!(
                forward.steps.is_empty() || !migrations.is_empty(),
                "{}: a plan with steps exported to no migration",
                case.name
            );
            common::assert_pgroll_valid(case.name, &migrations, cat_a, &options.schema);
        }
        Err(PgrollError::NeedsUp { column }) => {
            let parts: Vec<&str> = column.splitn(3, '.').collect();
            let [schema, table, name] = parts.as_slice() else {
                panic!("{}: NeedsUp names {column:?}", case.name);
            };
            let added = cat_b
                .schemas
                .get(*schema)
                .and_then(|s| s.tables.get(*table))
                .and_then(|t| t.columns.get(*name))
                .expect("the refused column is in B");
            let before = cat_a
                .schemas
                .get(*schema)
                .and_then(|s| s.tables.get(*table))
                .is_some_and(|t| t.columns.contains_key(*name));
            assert!(
                !before
                    && added.not_null
                    && added.default.is_none()
                    && added.identity.is_none()
                    && added.generated.is_none(),
                "{}: pgroll export refused {column}, which is no NOT NULL column added without \
                 default",
                case.name
            );
        }
        Err(e) => panic!("{}: pgroll export failed: {e}", case.name),
    }
}

macro_rules! golden {
    ($name:ident, $a:expr, $b:expr, [$($sql:expr),* $(,)?]) => {
        golden!($name, $a, $b, Renames::none(), [$($sql),*]);
    };
    // A case whose SQL needs Postgres `$major` or newer: skipped, with a notice, on an older
    // server (faithful.rs shows such a server refusing the document at plan time).
    (since $major:literal, $name:ident, $a:expr, $b:expr, [$($sql:expr),* $(,)?]) => {
        #[tokio::test]
        async fn $name() {
            if common::server_major() < $major {
                eprintln!("{}: needs Postgres {}, the server is older", stringify!($name), $major);
                return;
            }
            run(Case {
                name: stringify!($name),
                a: $a,
                b: $b,
                renames: Renames::none(),
                expected: &[$($sql),*],
                one_way: false,
            })
            .await;
        }
    };
    ($name:ident, $a:expr, $b:expr, [$($sql:expr),* $(,)?], one_way) => {
        golden!(@case $name, $a, $b, Renames::none(), [$($sql),*], true);
    };
    ($name:ident, $a:expr, $b:expr, $renames:expr, [$($sql:expr),* $(,)?]) => {
        golden!(@case $name, $a, $b, $renames, [$($sql),*], false);
    };
    (@case $name:ident, $a:expr, $b:expr, $renames:expr, [$($sql:expr),* $(,)?], $one_way:expr) => {
        #[tokio::test]
        async fn $name() {
            run(Case {
                name: stringify!($name),
                a: $a,
                b: $b,
                renames: $renames,
                expected: &[$($sql),*],
                one_way: $one_way,
            })
            .await;
        }
    };
}

const T: &str = "CREATE TABLE t (id int PRIMARY KEY)";

// ---- columns -------------------------------------------------------------------------------

golden!(
    add_nullable_column,
    T,
    "CREATE TABLE t (id int PRIMARY KEY, name text)",
    [r#"ALTER TABLE "public"."t" ADD COLUMN "name" text"#,]
);

golden!(
    add_not_null_column_with_default,
    T,
    "CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)",
    [r#"ALTER TABLE "public"."t" ADD COLUMN "n" integer DEFAULT 0 NOT NULL"#,]
);

golden!(
    drop_column,
    "CREATE TABLE t (id int PRIMARY KEY, legacy text)",
    T,
    [r#"ALTER TABLE "public"."t" DROP COLUMN "legacy""#,]
);

golden!(
    rename_column,
    "CREATE TABLE t (id int PRIMARY KEY, name text CHECK (name <> ''));
     CREATE INDEX t_name_idx ON t (lower(name));",
    "CREATE TABLE t (id int PRIMARY KEY, full_name text CONSTRAINT t_name_check CHECK (full_name <> ''));
     CREATE INDEX t_name_idx ON t (lower(full_name));",
    Renames::none().column("public", "t", "name", "full_name"),
    [
        r#"ALTER TABLE "public"."t" RENAME COLUMN "name" TO "full_name""#,
    ]
);

golden!(
    widen_int_to_bigint,
    "CREATE TABLE t (id int PRIMARY KEY, n int DEFAULT 0)",
    "CREATE TABLE t (id int PRIMARY KEY, n bigint DEFAULT 0)",
    [
        r#"ALTER TABLE "public"."t" ALTER COLUMN "n" DROP DEFAULT"#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "n" TYPE bigint"#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "n" SET DEFAULT 0"#,
    ]
);

golden!(
    narrow_varchar,
    "CREATE TABLE t (id int PRIMARY KEY, code varchar(100))",
    "CREATE TABLE t (id int PRIMARY KEY, code varchar(10))",
    [r#"ALTER TABLE "public"."t" ALTER COLUMN "code" TYPE character varying(10)"#,]
);

golden!(
    varchar_to_text_keeps_default,
    "CREATE TABLE t (id int PRIMARY KEY, code varchar(10) DEFAULT 'x')",
    "CREATE TABLE t (id int PRIMARY KEY, code text DEFAULT 'x')",
    [
        r#"ALTER TABLE "public"."t" ALTER COLUMN "code" DROP DEFAULT"#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "code" TYPE text"#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "code" SET DEFAULT 'x'::text"#,
    ]
);

golden!(
    text_to_integer_uses_a_cast,
    "CREATE TABLE t (id int PRIMARY KEY, n text)",
    "CREATE TABLE t (id int PRIMARY KEY, n integer)",
    [r#"ALTER TABLE "public"."t" ALTER COLUMN "n" TYPE integer USING "n"::integer"#,]
);

golden!(
    set_default,
    "CREATE TABLE t (id int PRIMARY KEY, status text)",
    "CREATE TABLE t (id int PRIMARY KEY, status text DEFAULT 'new')",
    [r#"ALTER TABLE "public"."t" ALTER COLUMN "status" SET DEFAULT 'new'::text"#,]
);

golden!(
    set_not_null_on_empty_table,
    "CREATE TABLE t (id int PRIMARY KEY, email text)",
    "CREATE TABLE t (id int PRIMARY KEY, email text NOT NULL)",
    [r#"ALTER TABLE "public"."t" ALTER COLUMN "email" SET NOT NULL"#,]
);

golden!(
    add_identity,
    "CREATE TABLE t (id int PRIMARY KEY, n bigint)",
    "CREATE TABLE t (id int PRIMARY KEY, n bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 100))",
    [
        r#"ALTER TABLE "public"."t" ALTER COLUMN "n" SET NOT NULL"#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "n" ADD GENERATED BY DEFAULT AS IDENTITY (START WITH 100)"#,
    ]
);

golden!(
    alter_identity,
    "CREATE TABLE t (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)",
    "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY (INCREMENT BY 10 CACHE 5) PRIMARY KEY)",
    [
        r#"ALTER TABLE "public"."t" ALTER COLUMN "id" SET GENERATED ALWAYS SET INCREMENT BY 10 SET CACHE 5"#,
    ]
);

golden!(
    serial_to_identity,
    "CREATE TABLE t (id serial PRIMARY KEY)",
    "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY)",
    [
        r#"ALTER TABLE "public"."t" ALTER COLUMN "id" DROP DEFAULT"#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "id" ADD GENERATED ALWAYS AS IDENTITY"#,
        r#"DROP SEQUENCE "public"."t_id_seq""#,
    ]
);

golden!(
    generated_column_added_and_dropped_expression,
    "CREATE TABLE t (id int PRIMARY KEY, price numeric, doubled numeric GENERATED ALWAYS AS (price * 2) STORED)",
    "CREATE TABLE t (id int PRIMARY KEY, price numeric, doubled numeric,
       tripled numeric GENERATED ALWAYS AS (price * 3) STORED)",
    [
        r#"ALTER TABLE "public"."t" ALTER COLUMN "doubled" DROP EXPRESSION"#,
        r#"ALTER TABLE "public"."t" ADD COLUMN "tripled" numeric GENERATED ALWAYS AS (price * 3::numeric) STORED"#,
    ]
);

golden!(
    collation_change,
    "CREATE TABLE t (id int PRIMARY KEY, name text)",
    "CREATE TABLE t (id int PRIMARY KEY, name text COLLATE \"C\")",
    [r#"ALTER TABLE "public"."t" ALTER COLUMN "name" TYPE text COLLATE "C""#,]
);

golden!(
    unlogged_to_logged,
    "CREATE UNLOGGED TABLE t (id int PRIMARY KEY)",
    T,
    [r#"ALTER TABLE "public"."t" SET LOGGED"#,]
);

// ---- constraints ---------------------------------------------------------------------------

golden!(
    primary_key_add,
    "CREATE TABLE t (id int, name text)",
    "CREATE TABLE t (id int PRIMARY KEY, name text)",
    [r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_pkey" PRIMARY KEY ("id")"#,]
);

golden!(
    since 15,
    unique_add_nulls_not_distinct,
    "CREATE TABLE t (id int PRIMARY KEY, email text)",
    "CREATE TABLE t (id int PRIMARY KEY, email text CONSTRAINT t_email_key UNIQUE NULLS NOT DISTINCT)",
    [
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_email_key" UNIQUE NULLS NOT DISTINCT ("email")"#,
    ]
);

golden!(
    foreign_key_add_with_actions,
    "CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE child (id int PRIMARY KEY, parent_id int)",
    "CREATE TABLE parent (id int PRIMARY KEY);
     CREATE TABLE child (id int PRIMARY KEY, parent_id int
       CONSTRAINT child_parent_fk REFERENCES parent ON DELETE CASCADE ON UPDATE RESTRICT DEFERRABLE)",
    [
        r#"ALTER TABLE "public"."child" ADD CONSTRAINT "child_parent_fk" FOREIGN KEY ("parent_id") REFERENCES "public"."parent" ("id") ON UPDATE RESTRICT ON DELETE CASCADE DEFERRABLE"#,
    ]
);

golden!(
    foreign_key_change_action,
    "CREATE TABLE parent (id int PRIMARY KEY);
     CREATE TABLE child (id int PRIMARY KEY, parent_id int CONSTRAINT child_parent_fk REFERENCES parent)",
    "CREATE TABLE parent (id int PRIMARY KEY);
     CREATE TABLE child (id int PRIMARY KEY, parent_id int CONSTRAINT child_parent_fk REFERENCES parent ON DELETE SET NULL)",
    [
        r#"ALTER TABLE "public"."child" DROP CONSTRAINT "child_parent_fk""#,
        r#"ALTER TABLE "public"."child" ADD CONSTRAINT "child_parent_fk" FOREIGN KEY ("parent_id") REFERENCES "public"."parent" ("id") ON DELETE SET NULL"#,
    ]
);

golden!(
    foreign_key_deferrability,
    "CREATE TABLE parent (id int PRIMARY KEY);
     CREATE TABLE child (id int PRIMARY KEY, parent_id int CONSTRAINT child_parent_fk REFERENCES parent)",
    "CREATE TABLE parent (id int PRIMARY KEY);
     CREATE TABLE child (id int PRIMARY KEY, parent_id int CONSTRAINT child_parent_fk REFERENCES parent DEFERRABLE INITIALLY DEFERRED)",
    [
        r#"ALTER TABLE "public"."child" ALTER CONSTRAINT "child_parent_fk" DEFERRABLE INITIALLY DEFERRED"#,
    ]
);

golden!(
    check_add_and_change,
    "CREATE TABLE t (id int PRIMARY KEY, qty int CONSTRAINT qty_positive CHECK (qty > 0))",
    "CREATE TABLE t (id int PRIMARY KEY, qty int CONSTRAINT qty_positive CHECK (qty >= 0),
       CONSTRAINT id_small CHECK (id < 1000000))",
    [
        r#"ALTER TABLE "public"."t" DROP CONSTRAINT "qty_positive""#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "id_small" CHECK (id < 1000000)"#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "qty_positive" CHECK (qty >= 0)"#,
    ]
);

golden!(
    exclusion_add,
    "CREATE TABLE t (id int PRIMARY KEY, area circle)",
    "CREATE TABLE t (id int PRIMARY KEY, area circle, CONSTRAINT no_overlap EXCLUDE USING gist (area WITH &&))",
    [
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "no_overlap" EXCLUDE USING gist (area WITH &&)"#,
    ]
);

// ---- indexes -------------------------------------------------------------------------------

golden!(
    index_create_and_drop,
    "CREATE TABLE t (id int PRIMARY KEY, a int, b text); CREATE INDEX t_old ON t (a)",
    "CREATE TABLE t (id int PRIMARY KEY, a int, b text);
     CREATE UNIQUE INDEX t_b ON t (b DESC NULLS LAST) INCLUDE (a);
     CREATE INDEX t_expr ON t (lower(b) text_pattern_ops) WHERE a > 0",
    [
        r#"DROP INDEX "public"."t_old""#,
        r#"CREATE UNIQUE INDEX "t_b" ON "public"."t" USING btree ("b" DESC NULLS LAST) INCLUDE ("a")"#,
        r#"CREATE INDEX "t_expr" ON "public"."t" USING btree ((lower(b)) "text_pattern_ops") WHERE a > 0"#,
    ]
);

golden!(
    index_change_predicate,
    "CREATE TABLE t (id int PRIMARY KEY, a int); CREATE INDEX t_a ON t (a) WHERE a > 0",
    "CREATE TABLE t (id int PRIMARY KEY, a int); CREATE INDEX t_a ON t (a) WHERE a > 10",
    [
        r#"DROP INDEX "public"."t_a""#,
        r#"CREATE INDEX "t_a" ON "public"."t" USING btree ("a") WHERE a > 10"#,
    ]
);

golden!(
    index_rename,
    "CREATE TABLE t (id int PRIMARY KEY, a int); CREATE INDEX t_a ON t (a)",
    "CREATE TABLE t (id int PRIMARY KEY, a int); CREATE INDEX t_a_idx ON t (a)",
    [r#"ALTER INDEX "public"."t_a" RENAME TO "t_a_idx""#,]
);

// ---- enums ---------------------------------------------------------------------------------

golden!(
    enum_create_and_use,
    T,
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
     CREATE TABLE t (id int PRIMARY KEY, m mood DEFAULT 'ok')",
    [
        r#"CREATE TYPE "public"."mood" AS ENUM ('sad', 'ok', 'happy')"#,
        r#"ALTER TABLE "public"."t" ADD COLUMN "m" public.mood DEFAULT 'ok'::public.mood"#,
    ]
);

golden!(
    enum_add_labels,
    "CREATE TYPE mood AS ENUM ('sad', 'happy'); CREATE TABLE t (id int PRIMARY KEY, m mood)",
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'ecstatic'); CREATE TABLE t (id int PRIMARY KEY, m mood)",
    [
        r#"ALTER TYPE "public"."mood" ADD VALUE 'ok' BEFORE 'happy'"#,
        r#"ALTER TYPE "public"."mood" ADD VALUE 'ecstatic'"#,
    ],
    one_way
);

golden!(
    enum_label_used_by_a_default,
    "CREATE TYPE mood AS ENUM ('sad', 'happy'); CREATE TABLE t (id int PRIMARY KEY, m mood)",
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); CREATE TABLE t (id int PRIMARY KEY, m mood DEFAULT 'ok')",
    [
        r#"ALTER TYPE "public"."mood" ADD VALUE 'ok' BEFORE 'happy'"#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "m" SET DEFAULT 'ok'::public.mood"#,
    ],
    one_way
);

golden!(
    enum_recreated_when_unused,
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE TYPE mood AS ENUM ('happy', 'sad')",
    [
        r#"DROP TYPE "public"."mood""#,
        r#"CREATE TYPE "public"."mood" AS ENUM ('happy', 'sad')"#,
    ]
);

golden!(
    enum_drop,
    "CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE t (id int PRIMARY KEY, m mood)",
    T,
    [
        r#"ALTER TABLE "public"."t" DROP COLUMN "m""#,
        r#"DROP TYPE "public"."mood""#,
    ]
);

// ---- sequences -----------------------------------------------------------------------------

golden!(
    sequence_create_owned,
    T,
    "CREATE SEQUENCE counter AS integer INCREMENT BY 5 START WITH 10 CACHE 3;
     CREATE TABLE t (id int PRIMARY KEY, n int DEFAULT nextval('counter'));
     ALTER SEQUENCE counter OWNED BY t.n",
    [
        r#"CREATE SEQUENCE "public"."counter" AS integer INCREMENT BY 5 START WITH 10 CACHE 3"#,
        r#"ALTER TABLE "public"."t" ADD COLUMN "n" integer DEFAULT nextval('public.counter'::regclass)"#,
        r#"ALTER SEQUENCE "public"."counter" OWNED BY "public"."t"."n""#,
    ]
);

golden!(
    sequence_alter,
    "CREATE SEQUENCE counter",
    "CREATE SEQUENCE counter AS integer INCREMENT BY 2 MAXVALUE 1000 CYCLE",
    [
        r#"ALTER SEQUENCE "public"."counter" AS integer INCREMENT BY 2 MINVALUE 1 MAXVALUE 1000 CYCLE"#,
    ]
);

golden!(
    sequence_drop,
    "CREATE SEQUENCE counter; CREATE TABLE t (id int PRIMARY KEY, n bigint DEFAULT nextval('counter'))",
    "CREATE TABLE t (id int PRIMARY KEY, n bigint)",
    [
        r#"ALTER TABLE "public"."t" ALTER COLUMN "n" DROP DEFAULT"#,
        r#"DROP SEQUENCE "public"."counter""#,
    ]
);

// ---- views ---------------------------------------------------------------------------------

golden!(
    view_create,
    "CREATE TABLE t (id int PRIMARY KEY, name text)",
    "CREATE TABLE t (id int PRIMARY KEY, name text);
     CREATE VIEW names WITH (security_barrier) AS SELECT name FROM t WHERE id > 0",
    [
        r#"CREATE VIEW "public"."names" WITH (security_barrier=true) AS SELECT name FROM public.t WHERE id > 0"#,
    ]
);

golden!(
    view_replace_appending_a_column,
    "CREATE TABLE t (id int PRIMARY KEY, name text); CREATE VIEW v AS SELECT id FROM t",
    "CREATE TABLE t (id int PRIMARY KEY, name text); CREATE VIEW v AS SELECT id, name FROM t",
    [r#"CREATE OR REPLACE VIEW "public"."v" AS SELECT id, name FROM public.t"#,]
);

golden!(
    view_incompatible_change_and_dependent_view,
    "CREATE TABLE t (id int PRIMARY KEY, name text);
     CREATE VIEW v AS SELECT id, name FROM t;
     CREATE VIEW w AS SELECT name FROM v;
     GRANT SELECT ON w TO app_reader",
    "CREATE TABLE t (id int PRIMARY KEY, name text);
     CREATE VIEW v AS SELECT name, id FROM t;
     CREATE VIEW w AS SELECT name FROM v;
     GRANT SELECT ON w TO app_reader",
    [
        r#"DROP VIEW "public"."w""#,
        r#"DROP VIEW "public"."v""#,
        r#"CREATE VIEW "public"."v" AS SELECT name, id FROM public.t"#,
        r#"CREATE VIEW "public"."w" AS SELECT name FROM public.v"#,
        r#"GRANT SELECT ON TABLE "public"."w" TO "app_reader""#,
    ]
);

golden!(
    column_type_change_under_a_view,
    "CREATE TABLE t (id int PRIMARY KEY, n int); CREATE VIEW v AS SELECT n FROM t",
    "CREATE TABLE t (id int PRIMARY KEY, n bigint); CREATE VIEW v AS SELECT n FROM t",
    [
        r#"DROP VIEW "public"."v""#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "n" TYPE bigint"#,
        r#"CREATE VIEW "public"."v" AS SELECT n FROM public.t"#,
    ]
);

// Postgres rewrites the views reading a renamed column itself, keeping their column names:
// the views stay (with their grants), whether they keep the old output name or are given the
// new one too (`ALTER VIEW … RENAME COLUMN`).
golden!(
    column_rename_under_views_keeps_them,
    "CREATE TABLE t (id int PRIMARY KEY, name text, n int);
     CREATE VIEW v AS SELECT id, name FROM t WHERE name <> '';
     CREATE VIEW w AS SELECT t.id, upper(t.name) AS up, o.n FROM t JOIN t o ON o.id = t.id;
     CREATE VIEW x AS SELECT name FROM v;
     CREATE VIEW y AS SELECT id, name FROM t UNION SELECT n, name FROM t;
     CREATE VIEW z AS SELECT id FROM t WHERE id IN (SELECT n FROM t WHERE name IS NOT NULL)
       AND EXISTS (SELECT name FROM t);
     GRANT SELECT ON v, w, x TO app_reader",
    "CREATE TABLE t (id int PRIMARY KEY, full_name text, n int);
     CREATE VIEW v AS SELECT id, full_name AS name FROM t WHERE full_name <> '';
     CREATE VIEW w AS SELECT t.id, upper(t.full_name) AS up, o.n FROM t JOIN t o ON o.id = t.id;
     CREATE VIEW x AS SELECT name FROM v;
     CREATE VIEW y AS SELECT id, full_name AS name FROM t UNION SELECT n, full_name AS name FROM t;
     CREATE VIEW z AS SELECT id FROM t WHERE id IN (SELECT n FROM t WHERE full_name IS NOT NULL)
       AND EXISTS (SELECT full_name AS name FROM t);
     GRANT SELECT ON v, w, x TO app_reader",
    Renames::none().column("public", "t", "name", "full_name"),
    [r#"ALTER TABLE "public"."t" RENAME COLUMN "name" TO "full_name""#,]
);

golden!(
    column_rename_renames_the_view_column_too,
    "CREATE TABLE t (id int PRIMARY KEY, name text);
     CREATE VIEW v AS SELECT id, name FROM t;
     GRANT SELECT ON v TO app_reader",
    "CREATE TABLE t (id int PRIMARY KEY, full_name text);
     CREATE VIEW v AS SELECT id, full_name FROM t;
     GRANT SELECT ON v TO app_reader",
    Renames::none().column("public", "t", "name", "full_name"),
    [
        r#"ALTER TABLE "public"."t" RENAME COLUMN "name" TO "full_name""#,
        r#"ALTER VIEW "public"."v" RENAME COLUMN "name" TO "full_name""#,
    ]
);

// Undoing a column rename keeps the views too (`full_name AS name` goes back to `name`, and
// a view column renamed with the table's is renamed back).
#[tokio::test]
async fn reverse_of_a_column_rename_keeps_the_views() {
    let (_, mut a) = database_with(
        "CREATE TABLE t (id int PRIMARY KEY, name text);
         CREATE VIEW v AS SELECT id, name FROM t WHERE name <> '';
         CREATE VIEW w AS SELECT id, name AS label FROM t;
         CREATE VIEW x AS SELECT id, name FROM t",
    )
    .await;
    let (_, mut b) = database_with(
        "CREATE TABLE t (id int PRIMARY KEY, full_name text);
         CREATE VIEW v AS SELECT id, full_name AS name FROM t WHERE full_name <> '';
         CREATE VIEW w AS SELECT id, full_name AS label FROM t;
         CREATE VIEW x AS SELECT id, full_name FROM t",
    )
    .await;
    let (cat_a, cat_b) = (read(&mut a).await, read(&mut b).await);
    let renames = Renames::none().column("public", "t", "name", "full_name");
    let stats = read_stats(&a).await.expect("stats");
    let back = reverse(&cat_a, &cat_b, &renames, &stats, "golden").expect("reverse");
    let sql: Vec<&str> = back.steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        sql,
        [
            r#"ALTER TABLE "public"."t" RENAME COLUMN "full_name" TO "name""#,
            r#"ALTER VIEW "public"."x" RENAME COLUMN "full_name" TO "name""#,
        ]
    );
    apply(&b, &back).await;
    assert_eq!(
        catalog_hash(&read(&mut b).await).expect("hash"),
        catalog_hash(&cat_a).expect("hash")
    );
}

// A type change re-creates only the views that read the column (and the views over those); a
// whole-row reference reads every column.
golden!(
    column_type_change_recreates_only_the_views_reading_it,
    "CREATE TABLE t (id int PRIMARY KEY, n int, label text);
     CREATE VIEW labels AS SELECT id, label FROM t;
     CREATE VIEW ns AS SELECT id FROM t WHERE n > 0;
     CREATE VIEW ns2 AS SELECT id FROM ns;
     CREATE VIEW everything AS SELECT t FROM t",
    "CREATE TABLE t (id int PRIMARY KEY, n bigint, label text);
     CREATE VIEW labels AS SELECT id, label FROM t;
     CREATE VIEW ns AS SELECT id FROM t WHERE n > 0;
     CREATE VIEW ns2 AS SELECT id FROM ns;
     CREATE VIEW everything AS SELECT t FROM t",
    [
        r#"DROP VIEW "public"."everything""#,
        r#"DROP VIEW "public"."ns2""#,
        r#"DROP VIEW "public"."ns""#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "n" TYPE bigint"#,
        r#"CREATE VIEW "public"."everything" AS SELECT t.*::public.t AS t FROM public.t"#,
        r#"CREATE VIEW "public"."ns" AS SELECT id FROM public.t WHERE n > 0"#,
        r#"CREATE VIEW "public"."ns2" AS SELECT id FROM public.ns"#,
    ]
);

golden!(
    view_drop,
    "CREATE TABLE t (id int PRIMARY KEY); CREATE VIEW v AS SELECT id FROM t",
    T,
    [r#"DROP VIEW "public"."v""#,]
);

// ---- RLS and policies ----------------------------------------------------------------------

golden!(
    rls_enable_force_and_policy,
    "CREATE TABLE t (id int PRIMARY KEY, tenant int)",
    "CREATE TABLE t (id int PRIMARY KEY, tenant int);
     ALTER TABLE t ENABLE ROW LEVEL SECURITY; ALTER TABLE t FORCE ROW LEVEL SECURITY;
     CREATE POLICY tenant_rows ON t AS RESTRICTIVE FOR SELECT TO app_reader
       USING (tenant = current_setting('app.tenant_id')::int)",
    [
        r#"ALTER TABLE "public"."t" ENABLE ROW LEVEL SECURITY"#,
        r#"ALTER TABLE "public"."t" FORCE ROW LEVEL SECURITY"#,
        r#"CREATE POLICY "tenant_rows" ON "public"."t" AS RESTRICTIVE FOR SELECT TO "app_reader" USING (tenant = current_setting('app.tenant_id'::text)::int)"#,
    ]
);

golden!(
    policy_alter_using_and_roles,
    "CREATE TABLE t (id int PRIMARY KEY, tenant int); ALTER TABLE t ENABLE ROW LEVEL SECURITY;
     CREATE POLICY p ON t USING (tenant = 1)",
    "CREATE TABLE t (id int PRIMARY KEY, tenant int); ALTER TABLE t ENABLE ROW LEVEL SECURITY;
     CREATE POLICY p ON t TO app_reader, app_writer USING (tenant = 2) WITH CHECK (tenant > 0)",
    [
        r#"ALTER POLICY "p" ON "public"."t" TO "app_reader", "app_writer" USING (tenant = 2) WITH CHECK (tenant > 0)"#,
    ]
);

golden!(
    policy_command_change,
    "CREATE TABLE t (id int PRIMARY KEY, tenant int); ALTER TABLE t ENABLE ROW LEVEL SECURITY;
     CREATE POLICY p ON t FOR SELECT USING (tenant = 1)",
    "CREATE TABLE t (id int PRIMARY KEY, tenant int); ALTER TABLE t ENABLE ROW LEVEL SECURITY;
     CREATE POLICY p ON t FOR UPDATE USING (tenant = 1)",
    [
        r#"DROP POLICY "p" ON "public"."t""#,
        r#"CREATE POLICY "p" ON "public"."t" FOR UPDATE USING (tenant = 1)"#,
    ]
);

// ---- grants --------------------------------------------------------------------------------

golden!(
    grants_table_column_view_sequence,
    "CREATE TABLE t (id int PRIMARY KEY, secret text); CREATE VIEW v AS SELECT id FROM t;
     CREATE SEQUENCE s;
     GRANT SELECT, INSERT ON t TO app_writer",
    "CREATE TABLE t (id int PRIMARY KEY, secret text); CREATE VIEW v AS SELECT id FROM t;
     CREATE SEQUENCE s;
     GRANT SELECT ON t TO app_writer WITH GRANT OPTION;
     GRANT SELECT (id), UPDATE (secret) ON t TO app_reader;
     GRANT SELECT ON v TO PUBLIC;
     GRANT USAGE ON SEQUENCE s TO app_writer",
    [
        r#"REVOKE INSERT ON TABLE "public"."t" FROM "app_writer""#,
        r#"GRANT USAGE ON SEQUENCE "public"."s" TO "app_writer""#,
        r#"GRANT SELECT ON TABLE "public"."v" TO PUBLIC"#,
        r#"GRANT SELECT ON TABLE "public"."t" TO "app_writer" WITH GRANT OPTION"#,
        r#"GRANT SELECT ("id") ON TABLE "public"."t" TO "app_reader""#,
        r#"GRANT UPDATE ("secret") ON TABLE "public"."t" TO "app_reader""#,
    ]
);

golden!(
    revoke_table_privilege_keeps_column_grant,
    "CREATE TABLE t (id int PRIMARY KEY, a int);
     GRANT SELECT ON t TO app_reader; GRANT SELECT (a) ON t TO app_reader",
    "CREATE TABLE t (id int PRIMARY KEY, a int); GRANT SELECT (a) ON t TO app_reader",
    [
        r#"REVOKE SELECT ON TABLE "public"."t" FROM "app_reader""#,
        r#"GRANT SELECT ("a") ON TABLE "public"."t" TO "app_reader""#,
    ]
);

// ---- comments ------------------------------------------------------------------------------

golden!(
    comments_on_everything,
    "CREATE TABLE t (id int CONSTRAINT t_pkey PRIMARY KEY, a int); CREATE INDEX t_a ON t (a);
     CREATE VIEW v AS SELECT id FROM t; COMMENT ON COLUMN t.a IS 'old'",
    "CREATE TABLE t (id int CONSTRAINT t_pkey PRIMARY KEY, a int); CREATE INDEX t_a ON t (a);
     CREATE VIEW v AS SELECT id FROM t;
     COMMENT ON TABLE t IS 'things'; COMMENT ON INDEX t_a IS 'by a';
     COMMENT ON CONSTRAINT t_pkey ON t IS 'the key'; COMMENT ON VIEW v IS 'it''s a view';
     COMMENT ON SCHEMA public IS 'main'",
    [
        r#"COMMENT ON SCHEMA "public" IS 'main'"#,
        r#"COMMENT ON VIEW "public"."v" IS 'it''s a view'"#,
        r#"COMMENT ON TABLE "public"."t" IS 'things'"#,
        r#"COMMENT ON COLUMN "public"."t"."a" IS NULL"#,
        r#"COMMENT ON CONSTRAINT "t_pkey" ON "public"."t" IS 'the key'"#,
        r#"COMMENT ON INDEX "public"."t_a" IS 'by a'"#,
    ]
);

// ---- schemas and extensions ----------------------------------------------------------------

golden!(
    schema_create_with_table,
    "",
    "CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int PRIMARY KEY)",
    [
        r#"CREATE SCHEMA "billing""#,
        r#"CREATE TABLE "billing"."invoices" (
    "id" integer NOT NULL,
    CONSTRAINT "invoices_pkey" PRIMARY KEY ("id")
)"#,
    ]
);

golden!(
    extension_create_and_use,
    "",
    "CREATE EXTENSION citext; CREATE TABLE t (id int PRIMARY KEY, email public.citext)",
    [
        r#"CREATE EXTENSION "citext" WITH SCHEMA "public""#,
        r#"CREATE TABLE "public"."t" (
    "id" integer NOT NULL,
    "email" public.citext,
    CONSTRAINT "t_pkey" PRIMARY KEY ("id")
)"#,
    ]
);

// ---- tables --------------------------------------------------------------------------------

golden!(
    table_create_with_everything,
    "",
    "CREATE TABLE parent (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
     CREATE TABLE t (
       id serial PRIMARY KEY,
       parent_id bigint NOT NULL REFERENCES parent ON DELETE CASCADE,
       email text NOT NULL UNIQUE,
       qty int DEFAULT 1 CHECK (qty > 0),
       label text COLLATE \"C\",
       created timestamptz NOT NULL DEFAULT now()
     );
     CREATE INDEX t_created ON t (created DESC);
     ALTER TABLE t ENABLE ROW LEVEL SECURITY;
     CREATE POLICY own ON t TO app_reader USING (parent_id > 0);
     GRANT SELECT ON t TO app_reader; GRANT SELECT (email) ON t TO auditor;
     COMMENT ON TABLE t IS 'everything'; COMMENT ON COLUMN t.email IS 'login'",
    [
        r#"CREATE SEQUENCE "public"."t_id_seq" AS integer"#,
        r#"CREATE TABLE "public"."parent" (
    "id" bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    CONSTRAINT "parent_pkey" PRIMARY KEY ("id")
)"#,
        r#"CREATE TABLE "public"."t" (
    "id" integer DEFAULT nextval('public.t_id_seq'::regclass) NOT NULL,
    "parent_id" bigint NOT NULL,
    "email" text NOT NULL,
    "qty" integer DEFAULT 1,
    "label" text COLLATE "C",
    "created" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "t_email_key" UNIQUE ("email"),
    CONSTRAINT "t_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "t_qty_check" CHECK (qty > 0)
)"#,
        r#"ALTER SEQUENCE "public"."t_id_seq" OWNED BY "public"."t"."id""#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_parent_id_fkey" FOREIGN KEY ("parent_id") REFERENCES "public"."parent" ("id") ON DELETE CASCADE"#,
        r#"CREATE INDEX "t_created" ON "public"."t" USING btree ("created" DESC)"#,
        r#"ALTER TABLE "public"."t" ENABLE ROW LEVEL SECURITY"#,
        r#"CREATE POLICY "own" ON "public"."t" TO "app_reader" USING (parent_id > 0)"#,
        r#"GRANT SELECT ON TABLE "public"."t" TO "app_reader""#,
        r#"GRANT SELECT ("email") ON TABLE "public"."t" TO "auditor""#,
        r#"COMMENT ON TABLE "public"."t" IS 'everything'"#,
        r#"COMMENT ON COLUMN "public"."t"."email" IS 'login'"#,
    ]
);

golden!(
    table_drop,
    "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE keep (id int)",
    "CREATE TABLE keep (id int)",
    [r#"DROP TABLE "public"."t""#,]
);

golden!(
    table_rename_with_serial,
    "CREATE TABLE users (id serial PRIMARY KEY, name text)",
    "CREATE TABLE accounts (id serial PRIMARY KEY, name text)",
    Renames::none().table("public", "users", "accounts"),
    [
        r#"ALTER TABLE "public"."users" RENAME TO "accounts""#,
        r#"ALTER SEQUENCE "public"."users_id_seq" RENAME TO "accounts_id_seq""#,
        r#"ALTER TABLE "public"."accounts" RENAME CONSTRAINT "users_pkey" TO "accounts_pkey""#,
    ]
);

golden!(
    two_tables_referencing_each_other,
    "",
    "CREATE TABLE a (id int PRIMARY KEY, b_id int);
     CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a);
     ALTER TABLE a ADD CONSTRAINT a_b_id_fkey FOREIGN KEY (b_id) REFERENCES b",
    [
        r#"CREATE TABLE "public"."a" (
    "id" integer NOT NULL,
    "b_id" integer,
    CONSTRAINT "a_pkey" PRIMARY KEY ("id")
)"#,
        r#"CREATE TABLE "public"."b" (
    "id" integer NOT NULL,
    "a_id" integer,
    CONSTRAINT "b_pkey" PRIMARY KEY ("id")
)"#,
        r#"ALTER TABLE "public"."a" ADD CONSTRAINT "a_b_id_fkey" FOREIGN KEY ("b_id") REFERENCES "public"."b" ("id")"#,
        r#"ALTER TABLE "public"."b" ADD CONSTRAINT "b_a_id_fkey" FOREIGN KEY ("a_id") REFERENCES "public"."a" ("id")"#,
    ]
);

golden!(
    drop_table_referenced_by_a_foreign_key,
    "CREATE TABLE parent (id int PRIMARY KEY);
     CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent)",
    "CREATE TABLE child (id int PRIMARY KEY, parent_id int)",
    [
        r#"ALTER TABLE "public"."child" DROP CONSTRAINT "child_parent_id_fkey""#,
        r#"DROP TABLE "public"."parent""#,
    ]
);

// CREATE TABLE keeps one index where two constraints would build the same one (a UNIQUE over
// exactly the primary key, two identical UNIQUEs): the duplicates are added after the table,
// which keeps them all.
golden!(
    table_create_with_unique_duplicating_the_primary_key,
    "",
    "CREATE TABLE t (id int, code int, CONSTRAINT t_pkey PRIMARY KEY (id));
     ALTER TABLE t ADD CONSTRAINT t_id_key UNIQUE (id);
     ALTER TABLE t ADD CONSTRAINT t_code_key UNIQUE (code);
     ALTER TABLE t ADD CONSTRAINT t_code_key1 UNIQUE (code);
     ALTER TABLE t ADD CONSTRAINT t_code_later UNIQUE (code) DEFERRABLE",
    [
        r#"CREATE TABLE "public"."t" (
    "id" integer NOT NULL,
    "code" integer,
    CONSTRAINT "t_code_key" UNIQUE ("code"),
    CONSTRAINT "t_code_later" UNIQUE ("code") DEFERRABLE,
    CONSTRAINT "t_pkey" PRIMARY KEY ("id")
)"#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_code_key1" UNIQUE ("code")"#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_id_key" UNIQUE ("id")"#,
    ]
);

// ---- populated tables: online forms --------------------------------------------------------

const POPULATED: &str = "CREATE TABLE parent (id int PRIMARY KEY);
     INSERT INTO parent SELECT g FROM generate_series(1, 100) g;
     CREATE TABLE t (id int PRIMARY KEY, parent_id int, email text, qty int);
     CREATE INDEX t_old ON t (qty);
     INSERT INTO t SELECT g, g, 'u' || g, g FROM generate_series(1, 100) g;
     ANALYZE parent; ANALYZE t;";

golden!(
    populated_table_uses_online_forms,
    POPULATED,
    "CREATE TABLE parent (id int PRIMARY KEY);
     CREATE TABLE t (id int PRIMARY KEY, parent_id int REFERENCES parent, email text NOT NULL,
       qty int CONSTRAINT qty_positive CHECK (qty > 0));
     CREATE INDEX t_email ON t (email);
     COMMENT ON INDEX t_email IS 'lookup'",
    [
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_email_not_null_lockplane" CHECK ("email" IS NOT NULL) NOT VALID"#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "qty_positive" CHECK (qty > 0) NOT VALID"#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_parent_id_fkey" FOREIGN KEY ("parent_id") REFERENCES "public"."parent" ("id") NOT VALID"#,
        r#"DROP INDEX CONCURRENTLY "public"."t_old""#,
        r#"CREATE INDEX CONCURRENTLY "t_email" ON "public"."t" USING btree ("email")"#,
        r#"ALTER TABLE "public"."t" VALIDATE CONSTRAINT "qty_positive""#,
        r#"ALTER TABLE "public"."t" VALIDATE CONSTRAINT "t_parent_id_fkey""#,
        r#"ALTER TABLE "public"."t" VALIDATE CONSTRAINT "t_email_not_null_lockplane""#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "email" SET NOT NULL"#,
        r#"ALTER TABLE "public"."t" DROP CONSTRAINT "t_email_not_null_lockplane""#,
        r#"COMMENT ON INDEX "public"."t_email" IS 'lookup'"#,
    ]
);

// ---- populated tables: primary keys and unique constraints ----------------------------------

/// `t` with rows, no key yet, `id` NOT NULL and `code` nullable.
const POPULATED_KEYS: &str = "CREATE TABLE t (id int NOT NULL, email text, code int);
     INSERT INTO t SELECT g, 'u' || g, g FROM generate_series(1, 100) g;
     ANALYZE t;";

golden!(
    unique_on_a_populated_table_is_built_online,
    POPULATED_KEYS,
    "CREATE TABLE t (id int NOT NULL, email text CONSTRAINT t_email_key UNIQUE, code int)",
    [
        r#"CREATE UNIQUE INDEX CONCURRENTLY "t_email_key" ON "public"."t" USING btree ("email")"#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_email_key" UNIQUE USING INDEX "t_email_key""#,
    ]
);

golden!(
    since 15,
    deferrable_unique_with_a_comment_on_a_populated_table_is_built_online,
    POPULATED_KEYS,
    "CREATE TABLE t (id int NOT NULL, email text, code int,
       CONSTRAINT t_email_code_key UNIQUE NULLS NOT DISTINCT (email, code)
         DEFERRABLE INITIALLY DEFERRED);
     COMMENT ON CONSTRAINT t_email_code_key ON t IS 'pairs'",
    [
        r#"CREATE UNIQUE INDEX CONCURRENTLY "t_email_code_key" ON "public"."t" USING btree ("email", "code") NULLS NOT DISTINCT"#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_email_code_key" UNIQUE USING INDEX "t_email_code_key" DEFERRABLE INITIALLY DEFERRED"#,
        r#"COMMENT ON CONSTRAINT "t_email_code_key" ON "public"."t" IS 'pairs'"#,
    ]
);

golden!(
    primary_key_over_not_null_columns_on_a_populated_table_is_built_online,
    POPULATED_KEYS,
    "CREATE TABLE t (id int NOT NULL CONSTRAINT t_pkey PRIMARY KEY, email text, code int)",
    [
        r#"CREATE UNIQUE INDEX CONCURRENTLY "t_pkey" ON "public"."t" USING btree ("id")"#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_pkey" PRIMARY KEY USING INDEX "t_pkey""#,
    ]
);

// `USING INDEX` would have to scan for NULLs under ACCESS EXCLUSIVE to set NOT NULL on `code`.
golden!(
    primary_key_over_a_nullable_column_on_a_populated_table_stays_plain,
    POPULATED_KEYS,
    "CREATE TABLE t (id int NOT NULL, email text, code int CONSTRAINT t_pkey PRIMARY KEY)",
    [r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_pkey" PRIMARY KEY ("code")"#,]
);

golden!(
    unique_on_an_empty_table_stays_plain,
    "CREATE TABLE t (id int NOT NULL, email text, code int); ANALYZE t;",
    "CREATE TABLE t (id int NOT NULL, email text CONSTRAINT t_email_key UNIQUE, code int)",
    [r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_email_key" UNIQUE ("email")"#,]
);

// The foreign key added in the transaction needs the unique constraint there.
golden!(
    unique_on_a_populated_table_needed_by_a_new_foreign_key_stays_plain,
    "CREATE TABLE parent (id int PRIMARY KEY, code int);
     INSERT INTO parent SELECT g, g FROM generate_series(1, 100) g;
     CREATE TABLE child (id int PRIMARY KEY, parent_code int);
     ANALYZE parent;",
    "CREATE TABLE parent (id int PRIMARY KEY, code int CONSTRAINT parent_code_key UNIQUE);
     CREATE TABLE child (id int PRIMARY KEY,
       parent_code int CONSTRAINT child_parent_code_fkey REFERENCES parent (code))",
    [
        r#"ALTER TABLE "public"."parent" ADD CONSTRAINT "parent_code_key" UNIQUE ("code")"#,
        r#"ALTER TABLE "public"."child" ADD CONSTRAINT "child_parent_code_fkey" FOREIGN KEY ("parent_code") REFERENCES "public"."parent" ("code")"#,
    ]
);

/// A duplicate in the data fails the online unique constraint at its index build; the
/// executor drops the INVALID index the build left, and the schema is as before.
#[tokio::test]
async fn online_unique_over_duplicates_fails_at_the_index_and_leaves_no_invalid_index() {
    use lockplane_engine::exec::{apply as execute, ApplyError, ApplyOptions};
    let a = format!("{POPULATED_KEYS} INSERT INTO t VALUES (101, 'u1', 101); ANALYZE t;");
    let (_, mut client) = database_with(&a).await;
    let (_, mut other) = database_with(
        "CREATE TABLE t (id int NOT NULL, email text CONSTRAINT t_email_key UNIQUE, code int)",
    )
    .await;
    let live = read(&mut client).await;
    let desired = read(&mut other).await;
    let stats = read_stats(&client).await.expect("stats");
    let p = plan(&live, &desired, &Renames::none(), &stats, "golden").expect("plan");
    assert_eq!(
        p.steps.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>(),
        [
            r#"CREATE UNIQUE INDEX CONCURRENTLY "t_email_key" ON "public"."t" USING btree ("email")"#,
            r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_email_key" UNIQUE USING INDEX "t_email_key""#,
        ]
    );
    let opts = ApplyOptions {
        lock_timeout: std::time::Duration::from_secs(5),
        retry_delay: std::time::Duration::from_millis(50),
        ..ApplyOptions::default()
    };
    let err = execute(&mut client, &p, &opts, None)
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
            assert_eq!(step_id, &p.steps[0].id);
            assert_eq!(failure.sqlstate.as_deref(), Some("23505"));
            assert!(!rolled_back);
            let sql: Vec<&String> = receipts
                .iter()
                .flat_map(|r| &r.steps)
                .map(|s| &s.sql)
                .collect();
            assert!(
                sql.iter()
                    .any(|s| s.starts_with("DROP INDEX CONCURRENTLY IF EXISTS")),
                "{sql:#?}"
            );
            assert!(
                !sql.iter().any(|s| s.contains("USING INDEX")),
                "the constraint step must not run: {sql:#?}"
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
    let after = read(&mut client).await;
    assert_eq!(catalog_hash(&after).expect("hash"), p.base_hash);
}

// ---- dependents and combinations -----------------------------------------------------------

golden!(
    policy_drop_and_rls_disable,
    "CREATE TABLE t (id int PRIMARY KEY, tenant int); ALTER TABLE t ENABLE ROW LEVEL SECURITY;
     CREATE POLICY p ON t USING (tenant = 1)",
    "CREATE TABLE t (id int PRIMARY KEY, tenant int)",
    [
        r#"DROP POLICY "p" ON "public"."t""#,
        r#"ALTER TABLE "public"."t" DISABLE ROW LEVEL SECURITY"#,
    ]
);

golden!(
    comments_on_sequence_type_policy,
    "CREATE SEQUENCE s; CREATE TYPE mood AS ENUM ('a');
     CREATE TABLE t (id int PRIMARY KEY); CREATE POLICY p ON t USING (true)",
    "CREATE SEQUENCE s; CREATE TYPE mood AS ENUM ('a');
     CREATE TABLE t (id int PRIMARY KEY); CREATE POLICY p ON t USING (true);
     COMMENT ON SEQUENCE s IS 'counter'; COMMENT ON TYPE mood IS 'feelings';
     COMMENT ON POLICY p ON t IS 'open'",
    [
        r#"COMMENT ON TYPE "public"."mood" IS 'feelings'"#,
        r#"COMMENT ON SEQUENCE "public"."s" IS 'counter'"#,
        r#"COMMENT ON POLICY "p" ON "public"."t" IS 'open'"#,
    ]
);

golden!(
    primary_key_drop_after_its_foreign_keys,
    "CREATE TABLE parent (id int PRIMARY KEY);
     CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent)",
    "CREATE TABLE parent (id int); CREATE TABLE child (id int PRIMARY KEY, parent_id int)",
    [
        r#"ALTER TABLE "public"."child" DROP CONSTRAINT "child_parent_id_fkey""#,
        r#"ALTER TABLE "public"."parent" DROP CONSTRAINT "parent_pkey""#,
        r#"ALTER TABLE "public"."parent" ALTER COLUMN "id" DROP NOT NULL"#,
    ]
);

golden!(
    dropped_column_takes_its_index_and_policy_along,
    "CREATE TABLE t (id int PRIMARY KEY, tenant int); CREATE INDEX t_tenant ON t (tenant);
     ALTER TABLE t ENABLE ROW LEVEL SECURITY; CREATE POLICY p ON t USING (tenant = 1);
     CREATE VIEW v AS SELECT id, tenant FROM t",
    "CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t ENABLE ROW LEVEL SECURITY;
     CREATE POLICY p ON t USING (id > 0); CREATE VIEW v AS SELECT id FROM t",
    [
        r#"DROP POLICY "p" ON "public"."t""#,
        r#"DROP VIEW "public"."v""#,
        r#"DROP INDEX "public"."t_tenant""#,
        r#"ALTER TABLE "public"."t" DROP COLUMN "tenant""#,
        r#"CREATE VIEW "public"."v" AS SELECT id FROM public.t"#,
        r#"CREATE POLICY "p" ON "public"."t" USING (id > 0)"#,
    ]
);

golden!(
    table_and_column_rename_with_incoming_foreign_key,
    "CREATE TABLE users (uid int PRIMARY KEY, name text);
     CREATE TABLE posts (id int PRIMARY KEY, author int REFERENCES users (uid));
     CREATE INDEX users_name ON users (name)",
    "CREATE TABLE accounts (id int CONSTRAINT users_pkey PRIMARY KEY, name text);
     CREATE TABLE posts (id int PRIMARY KEY, author int CONSTRAINT posts_author_fkey REFERENCES accounts (id));
     CREATE INDEX users_name ON accounts (name)",
    Renames::none()
        .table("public", "users", "accounts")
        .column("public", "accounts", "uid", "id"),
    [
        r#"ALTER TABLE "public"."users" RENAME TO "accounts""#,
        r#"ALTER TABLE "public"."accounts" RENAME COLUMN "uid" TO "id""#,
    ]
);

golden!(
    sequence_owner_change,
    "CREATE TABLE t (id int PRIMARY KEY, a bigint, b bigint); CREATE SEQUENCE s OWNED BY t.a",
    "CREATE TABLE t (id int PRIMARY KEY, a bigint, b bigint); CREATE SEQUENCE s OWNED BY t.b",
    [r#"ALTER SEQUENCE "public"."s" OWNED BY "public"."t"."b""#,]
);

golden!(
    column_becomes_generated,
    "CREATE TABLE t (id int PRIMARY KEY, price numeric, total numeric)",
    "CREATE TABLE t (id int PRIMARY KEY, price numeric, total numeric GENERATED ALWAYS AS (price * 2) STORED)",
    [
        r#"ALTER TABLE "public"."t" DROP COLUMN "total""#,
        r#"ALTER TABLE "public"."t" ADD COLUMN "total" numeric GENERATED ALWAYS AS (price * 2::numeric) STORED"#,
    ]
);

#[tokio::test]
async fn column_drop_on_a_table_with_a_trigger_needs_confirmation() {
    const FUNCTION: &str = "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
       $$ BEGIN RETURN NEW; END $$;";
    let a = format!(
        "{FUNCTION} CREATE TABLE t (id int PRIMARY KEY, note text);
         CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch()"
    );
    let b = format!(
        "{FUNCTION} CREATE TABLE t (id int PRIMARY KEY);
         CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch()"
    );
    let plan = run(Case {
        name: "column_drop_on_a_table_with_a_trigger_needs_confirmation",
        a: &a,
        b: &b,
        renames: Renames::none(),
        expected: &[r#"ALTER TABLE "public"."t" DROP COLUMN "note""#],
        one_way: false,
    })
    .await;
    assert!(plan.requires_confirmation);
    let details: Vec<&str> = plan
        .hazards
        .iter()
        .filter(|h| h.kind == HazardKind::DependsOnUnsupported)
        .map(|h| h.detail.as_str())
        .collect();
    assert_eq!(details.len(), 2, "{details:#?}");
    assert!(
        details[0].contains("trigger public.t.t_touch"),
        "{details:#?}"
    );
    assert!(
        details[1].contains("function public.touch()"),
        "{details:#?}"
    );
}

#[tokio::test]
async fn populated_hazards_are_graded() {
    let plan = run(Case {
        name: "populated_hazards_are_graded",
        a: POPULATED,
        b: "CREATE TABLE parent (id int PRIMARY KEY);
            CREATE TABLE t (id int PRIMARY KEY, parent_id bigint, email text, qty int);
            CREATE INDEX t_old ON t (qty)",
        renames: Renames::none(),
        expected: &[r#"ALTER TABLE "public"."t" ALTER COLUMN "parent_id" TYPE bigint"#],
        one_way: false,
    })
    .await;
    let rewrite = plan
        .hazards
        .iter()
        .find(|h| h.kind == HazardKind::TableRewrite)
        .expect("rewrite hazard");
    assert!(rewrite.detail.contains("~100 rows"), "{}", rewrite.detail);
    assert!(plan
        .hazards
        .iter()
        .any(|h| h.kind == HazardKind::AccessExclusiveLock && h.detail.contains("rewrite")));
    assert!(!plan.requires_confirmation, "{:#?}", plan.hazards);
}

// Postgres refuses to change the type of a column a generated column reads: the generated
// column (and its index) is dropped, the type changed, then the column added back. Both ways.
#[tokio::test]
async fn type_change_under_a_generated_column() {
    let narrow =
        "CREATE TABLE t (id int PRIMARY KEY, b int, a int GENERATED ALWAYS AS (b * 2) STORED);
         CREATE INDEX t_a_idx ON t (a);
         INSERT INTO t (id, b) VALUES (1, 21); ANALYZE t;";
    let wide =
        "CREATE TABLE t (id int PRIMARY KEY, b bigint, a int GENERATED ALWAYS AS (b * 2) STORED);
         CREATE INDEX t_a_idx ON t (a);";
    let plan = run(Case {
        name: "type_change_under_a_generated_column",
        a: narrow,
        b: wide,
        renames: Renames::none(),
        expected: &[
            r#"DROP INDEX "public"."t_a_idx""#,
            r#"ALTER TABLE "public"."t" DROP COLUMN "a""#,
            r#"ALTER TABLE "public"."t" ALTER COLUMN "b" TYPE bigint"#,
            r#"ALTER TABLE "public"."t" ADD COLUMN "a" integer GENERATED ALWAYS AS (b * 2) STORED"#,
            r#"CREATE INDEX CONCURRENTLY "t_a_idx" ON "public"."t" USING btree ("a")"#,
        ],
        one_way: false,
    })
    .await;
    // The generated values are computed again: nothing is lost, but the table is rewritten.
    assert!(
        plan.hazards.iter().all(|h| h.kind != HazardKind::DataLoss),
        "{:#?}",
        plan.hazards
    );
    assert!(!plan.requires_confirmation);
    let readd = &plan.steps[3];
    assert!(
        readd
            .hazards
            .iter()
            .any(|h| h.kind == HazardKind::TableRewrite && h.object == "public.t.a"),
        "{:#?}",
        readd.hazards
    );

    // The other way, a narrowing change: the same dance, and the narrowing is data loss.
    let back = run(Case {
        name: "type_change_under_a_generated_column (narrowing)",
        a: &format!("{wide} INSERT INTO t (id, b) VALUES (1, 21); ANALYZE t;"),
        b: narrow,
        renames: Renames::none(),
        expected: &[
            r#"DROP INDEX "public"."t_a_idx""#,
            r#"ALTER TABLE "public"."t" DROP COLUMN "a""#,
            r#"ALTER TABLE "public"."t" ALTER COLUMN "b" TYPE integer"#,
            r#"ALTER TABLE "public"."t" ADD COLUMN "a" integer GENERATED ALWAYS AS (b * 2) STORED"#,
            r#"CREATE INDEX CONCURRENTLY "t_a_idx" ON "public"."t" USING btree ("a")"#,
        ],
        one_way: false,
    })
    .await;
    let lossy: Vec<&str> = back
        .hazards
        .iter()
        .filter(|h| h.kind == HazardKind::DataLoss)
        .map(|h| h.object.as_str())
        .collect();
    assert_eq!(lossy, ["public.t.b"]);
}

#[tokio::test]
async fn table_rename_with_a_trigger_needs_confirmation() {
    const FUNCTION: &str = "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
       $$ BEGIN RETURN NEW; END $$;";
    let a = format!(
        "{FUNCTION} CREATE TABLE users (id int CONSTRAINT users_pkey PRIMARY KEY);
         CREATE TRIGGER touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch()"
    );
    let b = format!(
        "{FUNCTION} CREATE TABLE accounts (id int CONSTRAINT users_pkey PRIMARY KEY);
         CREATE TRIGGER touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch()"
    );
    let plan = run(Case {
        name: "table_rename_with_a_trigger_needs_confirmation",
        a: &a,
        b: &b,
        renames: Renames::none().table("public", "users", "accounts"),
        expected: &[r#"ALTER TABLE "public"."users" RENAME TO "accounts""#],
        one_way: false,
    })
    .await;
    assert!(plan.requires_confirmation);
    assert!(plan
        .hazards
        .iter()
        .any(|h| h.kind == HazardKind::DependsOnUnsupported
            && h.detail.contains("trigger public.users.touch")));
}

golden!(
    kept_sequence_survives_its_owner_column,
    "CREATE TABLE t (id int PRIMARY KEY, a bigint); CREATE SEQUENCE s OWNED BY t.a",
    "CREATE TABLE t (id int PRIMARY KEY); CREATE SEQUENCE s",
    [
        r#"ALTER SEQUENCE "public"."s" OWNED BY NONE"#,
        r#"ALTER TABLE "public"."t" DROP COLUMN "a""#,
    ]
);

golden!(
    retyped_column_with_a_check,
    "CREATE TABLE t (id int PRIMARY KEY, code varchar(10) CONSTRAINT code_set CHECK (code <> ''))",
    "CREATE TABLE t (id int PRIMARY KEY, code text CONSTRAINT code_set CHECK (code <> ''))",
    [
        r#"ALTER TABLE "public"."t" DROP CONSTRAINT "code_set""#,
        r#"ALTER TABLE "public"."t" ALTER COLUMN "code" TYPE text"#,
        r#"ALTER TABLE "public"."t" ADD CONSTRAINT "code_set" CHECK (code <> ''::text)"#,
    ]
);

golden!(
    recreated_column_keeps_grants_and_comment,
    "CREATE TABLE t (id int PRIMARY KEY, price numeric, total numeric);
     GRANT SELECT (total) ON t TO app_reader; COMMENT ON COLUMN t.total IS 'sum'",
    "CREATE TABLE t (id int PRIMARY KEY, price numeric,
       total numeric GENERATED ALWAYS AS (price * 2) STORED);
     GRANT SELECT (total) ON t TO app_reader; COMMENT ON COLUMN t.total IS 'sum'",
    [
        r#"ALTER TABLE "public"."t" DROP COLUMN "total""#,
        r#"ALTER TABLE "public"."t" ADD COLUMN "total" numeric GENERATED ALWAYS AS (price * 2::numeric) STORED"#,
        r#"GRANT SELECT ("total") ON TABLE "public"."t" TO "app_reader""#,
        r#"COMMENT ON COLUMN "public"."t"."total" IS 'sum'"#,
    ]
);

golden!(
    foreign_key_onto_a_new_unique_index,
    "CREATE TABLE parent (id int PRIMARY KEY, code text);
     CREATE TABLE child (id int PRIMARY KEY, parent_code text)",
    "CREATE TABLE parent (id int PRIMARY KEY, code text);
     CREATE UNIQUE INDEX parent_code_key ON parent (code);
     CREATE TABLE child (id int PRIMARY KEY,
       parent_code text CONSTRAINT child_parent_code_fkey REFERENCES parent (code))",
    [
        r#"CREATE UNIQUE INDEX "parent_code_key" ON "public"."parent" USING btree ("code")"#,
        r#"ALTER TABLE "public"."child" ADD CONSTRAINT "child_parent_code_fkey" FOREIGN KEY ("parent_code") REFERENCES "public"."parent" ("code")"#,
    ]
);

// A generated column reads a column added with it: the plain column is added first, whatever
// the names and the table's order; the reverse drops the generated column first.
golden!(
    add_column_and_a_generated_column_over_it,
    T,
    "CREATE TABLE t (id int PRIMARY KEY, a int GENERATED ALWAYS AS (b * 2) STORED, b int)",
    [
        r#"ALTER TABLE "public"."t" ADD COLUMN "b" integer"#,
        r#"ALTER TABLE "public"."t" ADD COLUMN "a" integer GENERATED ALWAYS AS (b * 2) STORED"#,
    ]
);

golden!(
    drop_column_and_the_generated_column_over_it,
    "CREATE TABLE t (id int PRIMARY KEY, b int, z int GENERATED ALWAYS AS (b * 2) STORED)",
    T,
    [
        r#"ALTER TABLE "public"."t" DROP COLUMN "z""#,
        r#"ALTER TABLE "public"."t" DROP COLUMN "b""#,
    ]
);

// The dropped table's foreign key holds on to the primary key (and the unique index) it
// references until the table goes; the reverse builds them again before the table.
golden!(
    drop_primary_key_and_the_table_referencing_it,
    "CREATE TABLE p (id int PRIMARY KEY, code int);
     CREATE UNIQUE INDEX p_code_idx ON p (code);
     CREATE TABLE c (id int, pid int REFERENCES p, code int REFERENCES p (code))",
    "CREATE TABLE p (id int NOT NULL, code int)",
    [
        r#"DROP TABLE "public"."c""#,
        r#"ALTER TABLE "public"."p" DROP CONSTRAINT "p_pkey""#,
        r#"DROP INDEX "public"."p_code_idx""#,
    ]
);

// ---- refusals ------------------------------------------------------------------------------

/// Postgres fails `ADD COLUMN … NOT NULL` without a default on a table with rows; the plan
/// refuses it up front, naming the column and the two ways out. The same change on an empty
/// table plans (and applies) normally, and without statistics it stays a hazard.
#[tokio::test]
async fn not_null_column_without_default_on_a_populated_table_is_refused() {
    const B: &str = "CREATE TABLE parent (id int PRIMARY KEY);
        CREATE TABLE t (id int PRIMARY KEY, parent_id int, email text, qty int,
          note text NOT NULL);
        CREATE INDEX t_old ON t (qty)";
    let (_, mut client_a) = database_with(POPULATED).await;
    let (_, mut client_b) = database_with(B).await;
    let cat_a = read(&mut client_a).await;
    let cat_b = read(&mut client_b).await;
    let stats = read_stats(&client_a).await.expect("stats");
    let err = plan(&cat_a, &cat_b, &Renames::none(), &stats, "golden")
        .expect_err("a NOT NULL column without a default on a table with rows");
    let PlanError::Refused { refusals } = &err else {
        panic!("not a refusal: {err}");
    };
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    assert_eq!(refusals[0].object, "public.t.note");
    let reason = &refusals[0].reason;
    assert!(reason.contains("~100 rows"), "{reason}");
    assert!(reason.contains("default"), "{reason}");
    assert!(reason.contains("backfill"), "{reason}");
    assert!(err.to_string().contains("public.t.note"), "{err}");

    // Unknown size: the table may be empty, so it plans with a may-fail hazard.
    let unknown = lockplane_engine::plan::TableStats::default();
    let p = plan(&cat_a, &cat_b, &Renames::none(), &unknown, "golden").expect("plan");
    assert_eq!(
        p.steps.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>(),
        [r#"ALTER TABLE "public"."t" ADD COLUMN "note" text NOT NULL"#]
    );
    assert!(p.hazards.iter().any(|h| h.kind == HazardKind::MayFail));
}

golden!(
    not_null_column_without_default_on_an_empty_table,
    T,
    "CREATE TABLE t (id int PRIMARY KEY, note text NOT NULL)",
    [r#"ALTER TABLE "public"."t" ADD COLUMN "note" text NOT NULL"#,]
);
