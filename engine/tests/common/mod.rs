//! Shared helpers for the engine's integration tests: every test gets a fresh database on the
//! process-wide throwaway cluster.
#![allow(dead_code)]

use lockplane_engine::catalog::{Catalog, Table};
use lockplane_engine::{catalog_hash, introspect, testkit, CatalogHash, IntrospectOptions};
use tokio_postgres::Client;

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
