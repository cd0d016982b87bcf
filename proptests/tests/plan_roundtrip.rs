//! Plans against a real server: for random bounded schemas A and B, applying plan(A → B) to a
//! database holding A reaches exactly B's hash, and plan(B → B) is empty.
//!
//! Column types come in families whose members convert into each other (integer/bigint,
//! varchar(20)/text, numeric(8,2)/numeric(12,2), …), so that a column kept from A to B can
//! change type the way a real migration would; everything else (which tables and columns
//! exist, nullability, defaults, keys, foreign keys, indexes, views, RLS, grants, comments)
//! varies freely.

use lockplane_engine::diff::Renames;
use lockplane_engine::plan::{plan, read_stats, Plan};
use lockplane_engine::{catalog_hash, introspect, testkit, IntrospectOptions};
use proptest::prelude::*;

/// `(narrow type, wide type, default literal valid for both)`.
const FAMILIES: &[(&str, &str, &str)] = &[
    ("integer", "bigint", "0"),
    ("varchar(20)", "text", "'y'"),
    ("numeric(8,2)", "numeric(12,2)", "1.5"),
    ("smallint", "integer", "7"),
    ("timestamp", "timestamptz", "now()"),
    ("boolean", "boolean", "false"),
    ("jsonb", "jsonb", "'{}'::jsonb"),
];

const TABLES: usize = 3;
const COLUMNS: usize = 4;

#[derive(Debug, Clone)]
struct ColumnSpec {
    present: bool,
    wide: bool,
    not_null: bool,
    default: bool,
}

#[derive(Debug, Clone)]
struct TableSpec {
    present: bool,
    columns: Vec<ColumnSpec>,
    index_on: Option<(usize, bool)>,
    fk_to_previous: bool,
    check: bool,
    view: bool,
    comment: Option<String>,
    grant_select: bool,
    rls_policy: bool,
    /// `UNIQUE (column, id)` on a present column (with `id`, so rows never collide).
    unique_on: Option<usize>,
    /// A comment and an UPDATE grant on the first present column.
    column_extras: (bool, bool),
}

fn column() -> impl Strategy<Value = ColumnSpec> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(present, wide, not_null, default)| ColumnSpec {
            present: present || not_null,
            wide,
            not_null,
            default,
        },
    )
}

fn table() -> impl Strategy<Value = TableSpec> {
    (
        prop::bool::weighted(0.8),
        prop::collection::vec(column(), COLUMNS),
        prop::option::of((0usize..COLUMNS, any::<bool>())),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of("[a-z ']{0,8}"),
        any::<bool>(),
        any::<bool>(),
        (prop::option::of(0usize..COLUMNS), any::<(bool, bool)>()),
    )
        .prop_map(
            |(
                present,
                columns,
                index_on,
                fk_to_previous,
                check,
                view,
                comment,
                grant,
                rls,
                (unique_on, column_extras),
            )| {
                TableSpec {
                    present,
                    columns,
                    index_on,
                    fk_to_previous,
                    check,
                    view,
                    comment,
                    grant_select: grant,
                    rls_policy: rls,
                    unique_on,
                    column_extras,
                }
            },
        )
}

fn schema() -> impl Strategy<Value = Vec<TableSpec>> {
    prop::collection::vec(table(), TABLES)
}

fn family(table: usize, column: usize) -> (&'static str, &'static str, &'static str) {
    FAMILIES[(table * 3 + column) % FAMILIES.len()]
}

/// Names of the tables and columns of one side: `t{i}`/`c{j}`, or `u{i}`/`r{j}` where the
/// side renames them.
#[derive(Debug, Clone, Default)]
struct Naming {
    tables: Vec<bool>,
    columns: Vec<Vec<bool>>,
}

impl Naming {
    fn table(&self, i: usize) -> String {
        if self.tables.get(i).copied().unwrap_or(false) {
            format!("u{i}")
        } else {
            format!("t{i}")
        }
    }

    fn column(&self, i: usize, j: usize) -> String {
        let renamed = self
            .columns
            .get(i)
            .and_then(|c| c.get(j))
            .copied()
            .unwrap_or(false);
        if renamed {
            format!("r{j}")
        } else {
            format!("c{j}")
        }
    }
}

/// The schema as SQL. Constraint, index, view and policy names depend only on the table's
/// position, so a renamed table keeps them (its primary key's default name does change).
/// `rows` inserts that many rows per table (values every present column accepts).
fn sql(tables: &[TableSpec], names: &Naming, rows: usize) -> String {
    let mut out = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        if !t.present {
            continue;
        }
        let tn = names.table(i);
        let mut cols = vec!["id bigint PRIMARY KEY".to_string()];
        let present: Vec<usize> = (0..COLUMNS).filter(|j| t.columns[*j].present).collect();
        for &j in &present {
            let c = &t.columns[j];
            let (narrow, wide, default) = family(i, j);
            let mut col = format!(
                "{} {}",
                names.column(i, j),
                if c.wide { wide } else { narrow }
            );
            if c.not_null {
                col.push_str(" NOT NULL");
            }
            if c.default {
                col.push_str(&format!(" DEFAULT {default}"));
            }
            cols.push(col);
        }
        cols.push("parent bigint".into());
        if t.check {
            cols.push(format!("CONSTRAINT k{i}_id_positive CHECK (id > 0)"));
        }
        if let (Some(col), false) = (t.unique_on, present.is_empty()) {
            let col = present[col % present.len()];
            cols.push(format!(
                "CONSTRAINT k{i}_uq UNIQUE ({}, id)",
                names.column(i, col)
            ));
        }
        out.push(format!("CREATE TABLE {tn} ({})", cols.join(", ")));
        if let Some(&first) = present.first() {
            let col = names.column(i, first);
            if t.column_extras.0 {
                out.push(format!("COMMENT ON COLUMN {tn}.{col} IS 'c{first}'"));
            }
            if t.column_extras.1 {
                out.push(format!("GRANT UPDATE ({col}) ON {tn} TO PUBLIC"));
            }
        }
        if rows > 0 {
            let mut names_list = vec!["id".to_string()];
            let mut values = vec!["g".to_string()];
            for &j in &present {
                names_list.push(names.column(i, j));
                values.push(family(i, j).2.to_string());
            }
            out.push(format!(
                "INSERT INTO {tn} ({}) SELECT {} FROM generate_series(1, {rows}) g",
                names_list.join(", "),
                values.join(", ")
            ));
            out.push(format!("ANALYZE {tn}"));
        }
        if t.fk_to_previous && i > 0 && tables[i - 1].present {
            out.push(format!(
                "ALTER TABLE {tn} ADD CONSTRAINT k{i}_parent_fk FOREIGN KEY (parent) REFERENCES {}(id)",
                names.table(i - 1)
            ));
        }
        if let (Some((col, partial)), false) = (t.index_on, present.is_empty()) {
            let col = present[col % present.len()];
            let predicate = if partial { " WHERE parent > 0" } else { "" };
            out.push(format!(
                "CREATE INDEX k{i}_ix ON {tn} ({}){predicate}",
                names.column(i, col)
            ));
        }
        if t.view {
            let extra = present
                .first()
                .map(|j| format!(", {}", names.column(i, *j)))
                .unwrap_or_default();
            out.push(format!("CREATE VIEW k{i}_v AS SELECT id{extra} FROM {tn}"));
        }
        if let Some(comment) = &t.comment {
            out.push(format!(
                "COMMENT ON TABLE {tn} IS {}",
                lockplane_engine::ident::quote_literal(comment)
            ));
        }
        if t.grant_select {
            out.push(format!("GRANT SELECT ON {tn} TO PUBLIC"));
        }
        if t.rls_policy {
            out.push(format!("ALTER TABLE {tn} ENABLE ROW LEVEL SECURITY"));
            out.push(format!(
                "CREATE POLICY p{i} ON {tn} USING (parent IS DISTINCT FROM 0)"
            ));
        }
    }
    out.join(";\n")
}

/// Random renames of what A and B share: which tables and columns B calls by a new name.
fn renames_for(a: &[TableSpec], b: &[TableSpec], seed: u64) -> (Naming, Renames) {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state.is_multiple_of(3)
    };
    let mut naming = Naming::default();
    let mut renames = Renames::none();
    for i in 0..TABLES {
        let shared = a[i].present && b[i].present;
        let rename_table = shared && next();
        naming.tables.push(rename_table);
        if rename_table {
            renames = renames.table("public", &format!("t{i}"), &format!("u{i}"));
        }
        let mut cols = Vec::new();
        for j in 0..COLUMNS {
            let rename = shared && a[i].columns[j].present && b[i].columns[j].present && next();
            cols.push(rename);
            if rename {
                renames = renames.column(
                    "public",
                    &naming.table(i),
                    &format!("c{j}"),
                    &format!("r{j}"),
                );
            }
        }
        naming.columns.push(cols);
    }
    (naming, renames)
}

/// A fresh database holding `sql`, with a connection and its catalog. A macro rather than
/// a function: this crate does not depend on tokio-postgres, so the client type has no name
/// here.
macro_rules! database {
    ($sql:expr) => {{
        let sql: &str = $sql;
        let db = testkit::fresh_database("plan").await.expect("database");
        let mut client = testkit::shared_cluster()
            .expect("cluster")
            .connect(&db)
            .await
            .expect("connect");
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("schema: {e:?}\n{sql}"));
        let catalog = introspect(&mut client, &IntrospectOptions::default())
            .await
            .expect("introspect");
        (db, client, catalog)
    }};
}

/// Runs `plan` on `client` the way the executor will: transactional steps in one transaction
/// with a lock timeout, the others alone, in plan order.
macro_rules! apply {
    ($client:expr, $plan:expr) => {{
        let plan: &Plan = $plan;
        let mut outcome: Result<(), String> = Ok(());
        let mut i = 0;
        let steps = &plan.steps;
        while i < steps.len() && outcome.is_ok() {
            if steps[i].transactional {
                let mut sql = String::from("BEGIN;\nSET LOCAL lock_timeout = '5s';\n");
                while i < steps.len() && steps[i].transactional {
                    sql.push_str(&steps[i].sql);
                    sql.push_str(";\n");
                    i += 1;
                }
                sql.push_str("COMMIT;");
                if let Err(e) = $client.batch_execute(&sql).await {
                    let _ = $client.batch_execute("ROLLBACK").await;
                    outcome = Err(format!("{e:?}\n{sql}"));
                }
            } else {
                if let Err(e) = $client.batch_execute(&steps[i].sql).await {
                    outcome = Err(format!("{e:?}\n{}", steps[i].sql));
                }
                i += 1;
            }
        }
        outcome
    }};
}

/// Plans A → B, applies it to A's database, checks the result has B's hash and that
/// plan(B → B) is empty.
async fn round_trip(a_sql: &str, b_sql: &str, renames: &Renames) -> Result<(), String> {
    let (db_a, mut client_a, cat_a) = database!(a_sql);
    let (db_b, client_b, cat_b) = database!(b_sql);
    let stats = read_stats(&client_a).await.expect("stats");
    let forward = plan(&cat_a, &cat_b, renames, &stats, "proptest")
        .map_err(|e| format!("plan failed: {e}"))?;
    let steps: Vec<&str> = forward.steps.iter().map(|s| s.sql.as_str()).collect();
    apply!(client_a, &forward).map_err(|e| format!("apply failed: {e}\nsteps: {steps:#?}"))?;
    let after = introspect(&mut client_a, &IntrospectOptions::default())
        .await
        .expect("introspect");
    let reached = catalog_hash(&after).expect("hash") == catalog_hash(&cat_b).expect("hash");
    let same = plan(&cat_b, &cat_b, &Renames::none(), &stats, "proptest")
        .map_err(|e| format!("plan B → B failed: {e}"))?;
    drop(client_a);
    drop(client_b);
    let cluster = testkit::shared_cluster().expect("cluster");
    for db in [db_a, db_b] {
        cluster.drop_database(&db).await.expect("drop");
    }
    if !reached {
        return Err(format!(
            "did not reach B\nsteps: {steps:#?}\nafter: {after:#?}\nB: {cat_b:#?}"
        ));
    }
    if !same.steps.is_empty() {
        return Err(format!("B → B is not empty: {:#?}", same.steps));
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn applying_a_plan_reaches_the_target(a in schema(), b in schema()) {
        let (a_sql, b_sql) = (sql(&a, &Naming::default(), 0), sql(&b, &Naming::default(), 0));
        let outcome = runtime().block_on(round_trip(&a_sql, &b_sql, &Renames::none()));
        prop_assert!(outcome.is_ok(), "A:\n{a_sql}\n\nB:\n{b_sql}\n\n{}", outcome.err().unwrap_or_default());
    }

    /// With renames of shared tables and columns, and rows in A's tables (so the online
    /// forms run: concurrent index builds, NOT VALID + VALIDATE, the online SET NOT NULL).
    /// A column B adds as NOT NULL gets a default, as it must on a table with rows.
    #[test]
    fn renames_and_rows(a in schema(), mut b in schema(), seed in any::<u64>()) {
        for t in &mut b {
            for c in &mut t.columns {
                if c.not_null {
                    c.default = true;
                }
            }
        }
        let (naming, renames) = renames_for(&a, &b, seed);
        let (a_sql, b_sql) = (sql(&a, &Naming::default(), 3), sql(&b, &naming, 0));
        let outcome = runtime().block_on(round_trip(&a_sql, &b_sql, &renames));
        prop_assert!(outcome.is_ok(), "A:\n{a_sql}\n\nB:\n{b_sql}\n\nrenames: {renames:?}\n\n{}", outcome.err().unwrap_or_default());
    }
}
