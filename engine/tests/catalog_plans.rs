//! Introspection's catalog queries use the catalogs' indexes (issue 15): on a 2,000-table
//! schema shaped like real ones (every kind the manifest covers, `testkit::app_table_sql`),
//! `EXPLAIN (ANALYZE, BUFFERS)` of each query shows no scan repeated inside a loop that reads
//! a catalog (or a catalog index) whole each time: every scan run once per outer row must be
//! a lookup of a few blocks. Without the `refclassid` predicate on the identity-sequence
//! lookup, the `columns` query read 169 blocks of `pg_depend_reference_index` per identity
//! column (quadratic in the schema's size) and this test fails.

use lockplane_engine::introspect::catalog_queries;
use lockplane_engine::testkit;
use serde_json::Value;

const TABLES: usize = 2_000;
/// Blocks a per-row lookup may touch on average (measured: at most about 4.3).
const MAX_BLOCKS_PER_LOOP: u64 = 32;

/// Every node of an `EXPLAIN (FORMAT JSON)` plan, depth first.
fn nodes<'a>(plan: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(plan);
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            nodes(child, out);
        }
    }
}

#[tokio::test]
async fn catalog_queries_scan_no_catalog_once_per_row() {
    let cluster = testkit::shared_cluster().expect("cluster");
    let name = testkit::fresh_database("catalog_plans").await.expect("db");
    let client = cluster.connect(&name).await.expect("connect");
    testkit::build_app_schema(&client, TABLES)
        .await
        .expect("build the schema");
    let version: i32 = client
        .query_one("SHOW server_version_num", &[])
        .await
        .expect("version")
        .get::<_, String>(0)
        .parse()
        .expect("number");
    client
        .batch_execute("SET search_path = ''; SET jit = off")
        .await
        .expect("settings");
    let mut checked = 0;
    for (query, sql) in catalog_queries(version) {
        // The simple protocol answers in text (the plan is `json`); the schema list the
        // queries take as `$1` is written in.
        let sql = sql.replace("$1", "ARRAY['public']::text[]");
        let messages = client
            .simple_query(&format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN of {query}: {e}"));
        let text = messages
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .expect("a plan");
        let plan: Value = serde_json::from_str(&text).expect("plan JSON");
        let mut all = Vec::new();
        nodes(&plan[0]["Plan"], &mut all);
        for node in all {
            let loops = node["Actual Loops"].as_u64().unwrap_or(0);
            let blocks = node["Shared Hit Blocks"].as_u64().unwrap_or(0)
                + node["Shared Read Blocks"].as_u64().unwrap_or(0);
            let kind = node["Node Type"].as_str().unwrap_or("");
            let relation = node["Relation Name"].as_str().unwrap_or("");
            // An index lookup touches a few blocks (a B-tree descent and the matching heap
            // rows); a scan repeated per outer row touches the whole relation or index each
            // time (169 blocks per loop on pg_depend without the refclassid predicate).
            assert!(
                !(kind.contains("Scan") && loops > 1 && blocks > MAX_BLOCKS_PER_LOOP * loops),
                "the {query} query's {kind} on {relation} reads {} blocks per loop over {loops} \
                 loops: a scan per outer row, not a lookup:\n{plan:#}",
                blocks / loops
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 13);
}
