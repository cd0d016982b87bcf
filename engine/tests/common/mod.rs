//! Shared helpers for the engine's integration tests: every test gets a fresh database on the
//! process-wide throwaway cluster.
#![allow(dead_code)]

use lockplane_engine::catalog::{Catalog, Table};
use lockplane_engine::{catalog_hash, introspect, testkit, CatalogHash, IntrospectOptions};
use tokio_postgres::Client;

/// A connection to `db` on the shared cluster under `application_name` (how other sessions,
/// and a blocked apply's message, tell it apart).
pub async fn connect_as(db: &str, application_name: &str) -> Client {
    let cluster = testkit::shared_cluster().expect("cluster");
    let mut config = cluster.config(db);
    config.application_name(application_name);
    lockplane_engine::connect::connect(&config.into())
        .await
        .expect("connect")
}

/// A fresh database with `sql` applied, and a connection to it.
pub async fn database_with(sql: &str) -> (String, Client) {
    let name = testkit::fresh_database("t").await.expect("fresh database");
    let client = testkit::shared_cluster()
        .expect("cluster")
        .connect(&name)
        .await
        .expect("connect");
    ensure_roles(&client, &["app_reader", "app_writer", "auditor"]).await;
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("setup SQL failed: {e:?}\n{sql}"));
    (name, client)
}

/// Roles are cluster-wide and tests run in parallel: create them tolerating races.
pub async fn ensure_roles(client: &Client, roles: &[&str]) {
    for role in roles {
        let sql = format!(
            "DO $$ BEGIN CREATE ROLE {role}; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        );
        client.batch_execute(&sql).await.expect("create role");
    }
}

/// The catalog of a fresh database after `sql`.
pub async fn catalog_of(sql: &str) -> Catalog {
    let (_, mut client) = database_with(sql).await;
    read(&mut client).await
}

/// Introspects all schemas.
pub async fn read(client: &mut Client) -> Catalog {
    introspect(client, &IntrospectOptions::default())
        .await
        .expect("introspect")
}

/// The hash of a fresh database after `sql`.
pub async fn hash_of(sql: &str) -> CatalogHash {
    catalog_hash(&catalog_of(sql).await).expect("hash")
}

/// `public.<name>`, which must exist.
pub fn table<'a>(catalog: &'a Catalog, name: &str) -> &'a Table {
    catalog
        .schemas
        .get("public")
        .and_then(|s| s.tables.get(name))
        .unwrap_or_else(|| panic!("no table public.{name}"))
}

/// Major version of the server under test.
pub fn server_major() -> u32 {
    testkit::shared_cluster().expect("cluster").major_version()
}

/// pgroll's `schema.json` from `dir`, compiled by the `jsonschema` crate.
pub fn pgroll_validator(dir: &std::path::Path) -> jsonschema::Validator {
    let path = dir.join("schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema.json is JSON");
    assert!(
        jsonschema::meta::is_valid(&schema),
        "pgroll's schema.json is not a valid JSON Schema"
    );
    jsonschema::validator_for(&schema).expect("pgroll's schema compiles")
}

/// Every way `instance` breaks the schema, located.
pub fn schema_problems(
    validator: &jsonschema::Validator,
    instance: &serde_json::Value,
) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Asserts that `migrations` (an export, in order) are what pgroll accepts from a database
/// whose schema `schema` is `base`'s: each migration valid by pgroll's JSON Schema, every rule
/// pgroll enforces in code (`check_sequence`) holding, and every column written with an
/// explicit `nullable`. `None` when pgroll's format is not available (already said).
pub fn assert_pgroll_valid(
    what: &str,
    migrations: &[lockplane_engine::pgroll::Migration],
    base: &Catalog,
    schema: &str,
) -> Option<()> {
    let dir = testkit::pgroll_dir()?;
    let validator = pgroll_validator(&dir);
    let values: Vec<serde_json::Value> = migrations
        .iter()
        .map(|m| serde_json::to_value(m).expect("migration JSON"))
        .collect();
    for (i, m) in values.iter().enumerate() {
        let problems = schema_problems(&validator, m);
        assert!(
            problems.is_empty(),
            "{what}: migration {i} breaks pgroll's schema: {problems:?}\n{}",
            serde_json::to_string_pretty(m).unwrap_or_default()
        );
        for op in m["operations"].as_array().into_iter().flatten() {
            let columns = op
                .pointer("/create_table/columns")
                .and_then(|c| c.as_array())
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .chain(op.pointer("/add_column/column").cloned());
            for column in columns {
                assert!(
                    column.get("nullable").is_some_and(|n| n.is_boolean()),
                    "{what}: a column without an explicit nullable: {column}"
                );
            }
        }
    }
    let violations = lockplane_engine::pgroll::check_sequence(&values, base, schema);
    assert!(
        violations.is_empty(),
        "{what}: pgroll's code-level rules: {violations:?}\n{}",
        serde_json::to_string_pretty(&values).unwrap_or_default()
    );
    Some(())
}
