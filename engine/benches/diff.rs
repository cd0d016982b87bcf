//! Planning speed: diff and compile of two 2,000-table catalogs that differ in 1% of their
//! objects, next to the cost of hashing one catalog (the reference every plan pays anyway),
//! in the same process. Target (issue 4): diff < 50 ms.
//!
//! Run: `cargo bench -p lockplane-engine --bench diff`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lockplane_engine::catalog::*;
use lockplane_engine::catalog_hash;
use lockplane_engine::diff::{diff, Renames};
use lockplane_engine::plan::{plan, TableStats};

const TABLES: usize = 2000;
const RUNS: usize = 7;

fn column(data_type: &str, not_null: bool, default: Option<&str>) -> Column {
    Column {
        data_type: data_type.into(),
        not_null,
        default: default.map(Into::into),
        identity: None,
        generated: None,
        collation: None,
        grants: vec![],
        comment: None,
        position: Default::default(),
    }
}

fn key(column: &str) -> IndexKey {
    IndexKey {
        column: Some(column.into()),
        expression: None,
        opclass: None,
        collation: None,
        descending: false,
        nulls_first: false,
    }
}

/// A table shaped like the introspection benchmark's: 10 columns, a PK, a FK, a check,
/// 2 indexes, RLS with one policy, a grant.
fn table(i: usize) -> Table {
    let mut columns = BTreeMap::new();
    columns.insert("id".into(), column("bigint", true, None));
    columns.insert("parent_id".into(), column("bigint", false, None));
    columns.insert("name".into(), column("text", true, Some("''::text")));
    columns.insert("qty".into(), column("integer", false, Some("0")));
    columns.insert(
        "created".into(),
        column("timestamp with time zone", true, Some("now()")),
    );
    columns.insert("active".into(), column("boolean", false, None));
    columns.insert("price".into(), column("numeric(10,2)", false, None));
    columns.insert("code".into(), column("character varying(50)", false, None));
    columns.insert("ref".into(), column("uuid", false, None));
    columns.insert("tenant_id".into(), column("integer", true, None));
    let mut constraints = BTreeMap::new();
    let plain = |definition| Constraint {
        definition,
        deferrable: false,
        initially_deferred: false,
        validated: true,
        comment: None,
    };
    constraints.insert(
        format!("t{i}_pkey"),
        plain(ConstraintDef::PrimaryKey {
            columns: vec!["id".into()],
        }),
    );
    constraints.insert(
        format!("t{i}_parent_id_fkey"),
        plain(ConstraintDef::ForeignKey {
            columns: vec!["parent_id".into()],
            references: ForeignKeyTarget {
                schema: "public".into(),
                table: format!("t{}", i.saturating_sub(1)),
                columns: vec!["id".into()],
            },
            on_update: ForeignKeyAction::NoAction,
            on_delete: ForeignKeyAction::Cascade,
            match_type: ForeignKeyMatch::Simple,
        }),
    );
    constraints.insert(
        format!("t{i}_qty_check"),
        plain(ConstraintDef::Check {
            expression: "qty >= 0".into(),
            no_inherit: false,
        }),
    );
    let index = |keys: Vec<IndexKey>, predicate: Option<&str>| Index {
        unique: false,
        method: "btree".into(),
        keys,
        include: vec![],
        predicate: predicate.map(Into::into),
        nulls_not_distinct: false,
        comment: None,
    };
    let mut indexes = BTreeMap::new();
    indexes.insert(format!("t{i}_name_ix"), index(vec![key("name")], None));
    indexes.insert(
        format!("t{i}_tenant_ix"),
        index(vec![key("tenant_id")], Some("active")),
    );
    let mut policies = BTreeMap::new();
    policies.insert(
        "tenant".into(),
        Policy {
            command: PolicyCommand::All,
            permissive: true,
            roles: vec!["public".into()],
            using: Some("tenant_id = current_setting('app.tenant'::text, true)::int".into()),
            with_check: None,
            comment: None,
        },
    );
    Table {
        columns,
        constraints,
        indexes,
        rls: Rls {
            enabled: true,
            forced: false,
            policies,
        },
        grants: vec![Grant {
            grantee: "app_reader".into(),
            privilege: "select".into(),
            grantable: false,
        }],
        unlogged: false,
        comment: None,
    }
}

fn catalog() -> Catalog {
    let mut public = Schema::default();
    for i in 0..TABLES {
        public.tables.insert(format!("t{i}"), table(i));
    }
    let mut c = Catalog::default();
    c.schemas.insert("public".into(), public);
    c
}

/// 1% of the tables changed: a new column, a changed default, a dropped index, a new policy
/// expression, in turn.
fn changed(base: &Catalog) -> Catalog {
    let mut c = base.clone();
    let public = c.schemas.get_mut("public").expect("public");
    for (n, i) in (0..TABLES).step_by(100).enumerate() {
        let t = public.tables.get_mut(&format!("t{i}")).expect("table");
        match n % 4 {
            0 => {
                t.columns
                    .insert("extra".into(), column("text", false, None));
            }
            1 => {
                if let Some(c) = t.columns.get_mut("qty") {
                    c.default = Some("1".into());
                }
            }
            2 => {
                t.indexes.remove(&format!("t{i}_name_ix"));
            }
            _ => {
                if let Some(p) = t.rls.policies.get_mut("tenant") {
                    p.using = Some("tenant_id > 0".into());
                }
            }
        }
    }
    c
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    let live = catalog();
    let desired = changed(&live);
    let stats = TableStats::all_empty(&live);
    let renames = Renames::none();

    let mut diffs = Vec::new();
    let mut plans = Vec::new();
    let mut hashes = Vec::new();
    let mut summary = (0, 0);
    for _ in 0..RUNS {
        let t = Instant::now();
        let changes = diff(&live, &desired, &renames);
        diffs.push(t.elapsed());
        let t = Instant::now();
        let p = plan(&live, &desired, &renames, &stats, "bench").expect("plan");
        plans.push(t.elapsed());
        let t = Instant::now();
        catalog_hash(&live).expect("hash");
        hashes.push(t.elapsed());
        summary = (changes.len(), p.steps.len());
    }
    let (d, p, h) = (median(diffs), median(plans), median(hashes));
    println!(
        "{TABLES} tables, 1% changed: {} changes, {} steps (medians of {RUNS})",
        summary.0, summary.1
    );
    println!(
        "diff:                          {:>8.2} ms (target < 50 ms)",
        d.as_secs_f64() * 1e3
    );
    println!(
        "plan (diff + compile + 2 hashes): {:>5.2} ms",
        p.as_secs_f64() * 1e3
    );
    println!(
        "reference, hashing one catalog: {:>7.2} ms; diff / hash = {:.2}x",
        h.as_secs_f64() * 1e3,
        d.as_secs_f64() / h.as_secs_f64()
    );
}
