//! Hash determinism against a real server: random schemas, created in two random statement
//! orders in two databases, introspect to one hash; and the manifest survives a JSON round trip
//! with its hash intact.

use lockplane_engine::hash::canonical_json;
use lockplane_engine::{catalog_hash, introspect, testkit, Catalog, IntrospectOptions};
use proptest::prelude::*;

const TYPES: &[(&str, &str)] = &[
    ("integer", "0"),
    ("bigint", "42"),
    ("text", "'x'"),
    ("boolean", "false"),
    ("numeric(8,2)", "1.5"),
    ("timestamptz", "now()"),
    ("varchar(20)", "'y'"),
    ("uuid", "gen_random_uuid()"),
    ("jsonb", "'{}'::jsonb"),
];

#[derive(Debug, Clone)]
struct ColumnSpec {
    ty: usize,
    not_null: bool,
    default: bool,
}

#[derive(Debug, Clone)]
struct TableSpec {
    columns: Vec<ColumnSpec>,
    index_on: Option<(usize, bool)>,
    fk_to_previous: bool,
    comment: Option<String>,
    grant_select: bool,
    rls_policy: bool,
}

fn column() -> impl Strategy<Value = ColumnSpec> {
    (0..TYPES.len(), any::<bool>(), any::<bool>()).prop_map(|(ty, not_null, default)| ColumnSpec {
        ty,
        not_null,
        default,
    })
}

fn table() -> impl Strategy<Value = TableSpec> {
    (
        prop::collection::vec(column(), 1..5),
        prop::option::of((0usize..5, any::<bool>())),
        any::<bool>(),
        prop::option::of("[a-z ']{0,12}"),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(columns, index_on, fk_to_previous, comment, grant_select, rls_policy)| TableSpec {
                columns,
                index_on,
                fk_to_previous,
                comment,
                grant_select,
                rls_policy,
            },
        )
}

/// The schema as two groups of statements: table creation first (any order among them), then
/// everything that refers to tables (any order among them).
fn statements(tables: &[TableSpec]) -> (Vec<String>, Vec<String>) {
    let mut creates = Vec::new();
    let mut rest = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let mut cols = vec!["id bigint PRIMARY KEY".to_string()];
        for (j, c) in t.columns.iter().enumerate() {
            let (ty, default) = TYPES[c.ty];
            let mut col = format!("c{j} {ty}");
            if c.not_null {
                col.push_str(" NOT NULL");
            }
            if c.default {
                col.push_str(&format!(" DEFAULT {default}"));
            }
            cols.push(col);
        }
        cols.push("tenant integer".into());
        creates.push(format!("CREATE TABLE t{i} ({})", cols.join(", ")));
        if t.fk_to_previous && i > 0 {
            rest.push(format!(
                "ALTER TABLE t{i} ADD CONSTRAINT t{i}_fk FOREIGN KEY (tenant) REFERENCES t{}(id)",
                i - 1
            ));
        }
        if let Some((col, partial)) = t.index_on {
            let col = col % t.columns.len();
            let predicate = if partial { " WHERE tenant > 0" } else { "" };
            rest.push(format!("CREATE INDEX t{i}_ix ON t{i} (c{col}){predicate}"));
        }
        if let Some(comment) = &t.comment {
            rest.push(format!(
                "COMMENT ON TABLE t{i} IS {}",
                lockplane_engine::ident::quote_literal(comment)
            ));
        }
        if t.grant_select {
            rest.push(format!("GRANT SELECT ON t{i} TO PUBLIC"));
        }
        if t.rls_policy {
            rest.push(format!("ALTER TABLE t{i} ENABLE ROW LEVEL SECURITY"));
            rest.push(format!("CREATE POLICY p{i} ON t{i} USING (tenant = 1)"));
        }
    }
    (creates, rest)
}

/// A permutation of `items` that keeps `ENABLE ROW LEVEL SECURITY` statements valid (they
/// commute with everything), chosen by `seed`.
fn shuffled(items: &[String], seed: u64) -> Vec<String> {
    let mut out = items.to_vec();
    let mut state = seed | 1;
    for i in (1..out.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.swap(i, (state % (i as u64 + 1)) as usize);
    }
    out
}

async fn catalog_after(statements: &[String]) -> Catalog {
    let db = testkit::fresh_database("prop").await.expect("database");
    let mut client = testkit::shared_cluster()
        .expect("cluster")
        .connect(&db)
        .await
        .expect("connect");
    client
        .batch_execute(&statements.join(";\n"))
        .await
        .expect("schema");
    let catalog = introspect(&mut client, &IntrospectOptions::default())
        .await
        .expect("introspect");
    drop(client);
    testkit::shared_cluster()
        .expect("cluster")
        .drop_database(&db)
        .await
        .expect("drop");
    catalog
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
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(16),
        ..ProptestConfig::default()
    })]

    #[test]
    fn statement_order_does_not_change_the_hash(
        tables in prop::collection::vec(table(), 1..5),
        seed_a in any::<u64>(),
        seed_b in any::<u64>(),
    ) {
        let (creates, rest) = statements(&tables);
        let order_a: Vec<String> = creates.iter().cloned().chain(shuffled(&rest, seed_a)).collect();
        let order_b: Vec<String> = shuffled(&creates, seed_b).into_iter().chain(shuffled(&rest, seed_b ^ seed_a)).collect();
        let rt = runtime();
        let (a, b) = rt.block_on(async {
            tokio::join!(catalog_after(&order_a), catalog_after(&order_b))
        });
        prop_assert_eq!(catalog_hash(&a).unwrap(), catalog_hash(&b).unwrap());
        prop_assert_eq!(&a, &b);

        // The manifest is its own serialisation: decode the canonical bytes, get the same
        // catalog and hash back.
        let bytes = canonical_json(&a).unwrap();
        let decoded: Catalog = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&decoded, &a);
        prop_assert_eq!(canonical_json(&decoded).unwrap(), bytes);
    }
}
