//! Planning a DSL document the way `lockplane plan` does (scope it to the live catalog,
//! materialise it on a shadow database, plan, apply), against a real server: what Lockplane
//! writes must reach what the document says, keep what a person chose (column order), and
//! planning the same document again must find nothing to do.

mod common;

use common::{database_with, read};
use lockplane_engine::catalog::Catalog;
use lockplane_engine::diff::Renames;
use lockplane_engine::dsl::{self, Format};
use lockplane_engine::exec::{self, ApplyOptions};
use lockplane_engine::hash::canonical_json;
use lockplane_engine::plan::{plan, read_stats, reverse, Plan, TableStats};
use lockplane_engine::shadow::{materialize, ShadowTarget};
use lockplane_engine::{catalog_hash, testkit};
use tokio_postgres::Client;

/// A plan made from a document, with what it was made from.
struct Planned {
    live: Catalog,
    desired: Catalog,
    renames: Renames,
    stats: TableStats,
    plan: Plan,
}

/// The plan that takes the database behind `client` to `document`, made as the CLI makes it.
async fn plan_document(client: &mut Client, document: &str) -> Plan {
    planned(client, document).await.plan
}

async fn planned(client: &mut Client, document: &str) -> Planned {
    let loaded = dsl::load("schema.yaml", document, Format::Yaml)
        .unwrap_or_else(|e| panic!("document does not load: {e}\n{document}"));
    let live = read(client).await;
    let wanted = dsl::scope_to_live(&loaded.catalog, &live);
    let cluster = testkit::shared_cluster().expect("cluster");
    let desired = materialize(&wanted, ShadowTarget::Cluster(cluster))
        .await
        .unwrap_or_else(|e| panic!("materialise failed: {e}"));
    let stats = read_stats(client).await.expect("stats");
    let renames = dsl::renames(&loaded.document);
    let plan = plan(&live, &desired, &renames, &stats, "fidelity")
        .unwrap_or_else(|e| panic!("plan failed: {e}\n{document}"));
    Planned {
        live,
        desired,
        renames,
        stats,
        plan,
    }
}

/// Applies `plan` with the executor, which checks that the database reaches its target hash.
async fn apply(client: &mut Client, plan: &Plan) {
    exec::apply(client, plan, &ApplyOptions::default(), Some(&plan.plan_id))
        .await
        .unwrap_or_else(|e| panic!("apply failed: {e}\n{:#?}", plan.steps));
}

/// Plans `document`, applies it, and checks that planning it again finds nothing to do.
async fn converge(client: &mut Client, document: &str) -> Plan {
    let first = plan_document(client, document).await;
    apply(client, &first).await;
    let again = plan_document(client, document).await;
    assert!(
        again.steps.is_empty(),
        "planning the document again is not empty: {:#?}\nfirst plan: {:#?}",
        again.steps,
        first.steps
    );
    first
}

/// Column names of `public.<table>` in physical order.
async fn attnames(client: &Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT attname::text FROM pg_catalog.pg_attribute \
             WHERE attrelid = ('public.' || quote_ident($1))::regclass \
               AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table],
        )
        .await
        .expect("attnames")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Where each of `needles` first appears in `text`, which must be increasing.
fn assert_in_order(text: &str, needles: &[&str]) {
    let at: Vec<usize> = needles
        .iter()
        .map(|n| {
            text.find(n)
                .unwrap_or_else(|| panic!("{n:?} not in:\n{text}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "{needles:?} not in this order:\n{text}"
    );
}

// ---- column order --------------------------------------------------------------------------

const USERS: &str = "\
version: 1
schemas:
  public:
    comment: standard public schema
    tables:
      users:
        columns:
          - { name: id, type: int, pk: true }
          - { name: email, type: text }
          - { name: created_at, type: timestamptz }
";

/// `CREATE TABLE` writes the columns in the document's order (not by name), added columns
/// follow the document too, and `to_yaml` of the introspected table keeps `attnum` order.
#[tokio::test]
async fn columns_are_created_in_document_order() {
    let (_, mut client) = database_with("").await;
    converge(&mut client, USERS).await;
    assert_eq!(
        attnames(&client, "users").await,
        ["id", "email", "created_at"]
    );
    let yaml = dsl::to_yaml(&read(&mut client).await);
    assert_in_order(&yaml, &["name: id,", "name: email,", "name: created_at,"]);

    let more = format!(
        "{USERS}          - {{ name: zeta, type: text }}\n          - {{ name: alpha, type: int }}\n"
    );
    let added = converge(&mut client, &more).await;
    assert_eq!(added.steps.len(), 2, "{:#?}", added.steps);
    assert_eq!(
        attnames(&client, "users").await,
        ["id", "email", "created_at", "zeta", "alpha"]
    );
}

/// `to_yaml` writes an introspected table's columns in physical order (a primary key that is
/// not the first column stays where it is), and column order changes neither the catalog
/// nor its hash: the position is a hint outside the manifest.
#[tokio::test]
async fn introspected_order_is_written_but_not_hashed() {
    let (_, mut client) = database_with(
        "CREATE TABLE t (zeta text, id int PRIMARY KEY, alpha int);
         ALTER TABLE t DROP COLUMN zeta; ALTER TABLE t ADD COLUMN zeta text;",
    )
    .await;
    let (_, mut other) =
        database_with("CREATE TABLE t (alpha int, id int PRIMARY KEY, zeta text)").await;
    let mine = read(&mut client).await;
    let theirs = read(&mut other).await;
    assert_in_order(
        &dsl::to_yaml(&mine),
        &["name: id,", "name: alpha,", "name: zeta,"],
    );
    assert_in_order(
        &dsl::to_yaml(&theirs),
        &["name: alpha,", "name: id,", "name: zeta,"],
    );
    assert_eq!(mine, theirs);
    assert_eq!(
        catalog_hash(&mine).expect("hash"),
        catalog_hash(&theirs).expect("hash")
    );
    let json = String::from_utf8(canonical_json(&mine).expect("json")).expect("utf-8");
    assert!(!json.contains("position"), "{json}");
    let stats = read_stats(&client).await.expect("stats");
    let none = plan(&mine, &theirs, &Default::default(), &stats, "fidelity").expect("plan");
    assert!(none.steps.is_empty(), "{:#?}", none.steps);
}

// ---- the comment Postgres puts on `public` -------------------------------------------------

/// A document that puts a table in `public` without saying anything about the schema's
/// comment keeps the one `initdb` installed: no `COMMENT ON SCHEMA` step, on the first plan
/// or any later one. Saying `comment: ""` removes it.
#[tokio::test]
async fn public_keeps_its_installed_comment() {
    let (_, mut client) = database_with("").await;
    let before = read(&mut client).await;
    assert_eq!(
        before.schemas["public"].comment.as_deref(),
        Some(dsl::PUBLIC_SCHEMA_COMMENT),
        "a fresh database"
    );
    let document = "\
version: 1
schemas:
  public:
    tables:
      t:
        columns:
          - { name: id, type: int, pk: true }
";
    let first = converge(&mut client, document).await;
    assert!(
        first.steps.iter().all(|s| !s.sql.starts_with("COMMENT")),
        "{:#?}",
        first.steps
    );
    assert_eq!(first.steps.len(), 1, "{:#?}", first.steps);
    assert_eq!(
        read(&mut client).await.schemas["public"].comment.as_deref(),
        Some(dsl::PUBLIC_SCHEMA_COMMENT)
    );

    let removed = converge(
        &mut client,
        &document.replace("  public:\n", "  public:\n    comment: \"\"\n"),
    )
    .await;
    let sql: Vec<&str> = removed.steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(sql, [r#"COMMENT ON SCHEMA "public" IS NULL"#]);
    assert_eq!(read(&mut client).await.schemas["public"].comment, None);
}

// ---- renamed_from --------------------------------------------------------------------------

const CONTACTS: &str = "\
version: 1
schemas:
  public:
    comment: standard public schema
    tables:
      contacts:
        columns:
          - { name: id, type: int, pk: true }
          - { name: fax_number, type: text }
";

/// A document keeps its `renamed_from` after the rename is applied: planning it again finds
/// the rename satisfied (old name gone, new name there) and plans nothing, and the reverse of
/// that empty plan is empty too (there is no rename to undo). For a column, then for the
/// table around it.
#[tokio::test]
async fn renamed_from_is_satisfied_once_applied() {
    let (_, mut client) = database_with("").await;
    converge(&mut client, CONTACTS).await;
    client
        .batch_execute("INSERT INTO contacts VALUES (1, '555-0100')")
        .await
        .expect("insert");

    let column = CONTACTS.replace(
        "{ name: fax_number, type: text }",
        "{ name: fax, type: text, renamed_from: fax_number }",
    );
    let renamed = converge(&mut client, &column).await;
    let sql: Vec<&str> = renamed.steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        sql,
        [r#"ALTER TABLE "public"."contacts" RENAME COLUMN "fax_number" TO "fax""#]
    );
    assert_settled(&mut client, &column).await;

    let table = column.replace(
        "      contacts:\n",
        "      people:\n        renamed_from: contacts\n",
    );
    let renamed = converge(&mut client, &table).await;
    let sql: Vec<&str> = renamed.steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        sql,
        [
            r#"ALTER TABLE "public"."contacts" RENAME TO "people""#,
            r#"ALTER TABLE "public"."people" RENAME CONSTRAINT "contacts_pkey" TO "people_pkey""#,
        ]
    );
    assert_settled(&mut client, &table).await;
    let row = client
        .query_one("SELECT fax FROM people WHERE id = 1", &[])
        .await
        .expect("the row is still there");
    assert_eq!(row.get::<_, String>(0), "555-0100");
}

/// Planning `document` once more is empty, and so is its reverse.
async fn assert_settled(client: &mut Client, document: &str) {
    let p = planned(client, document).await;
    assert!(p.plan.steps.is_empty(), "{:#?}", p.plan.steps);
    let back = reverse(&p.live, &p.desired, &p.renames, &p.stats, "fidelity")
        .unwrap_or_else(|e| panic!("reverse of the settled plan: {e}"));
    assert!(back.steps.is_empty(), "{:#?}", back.steps);
}

// ---- constraints CREATE TABLE would fold together ------------------------------------------

/// A UNIQUE over exactly the primary key's columns is a constraint of its own (a foreign key
/// may be meant to use it): the plan creates it after the table, since `CREATE TABLE` would
/// silently keep only the primary key, and the database then holds both.
#[tokio::test]
async fn unique_on_the_primary_key_columns_is_kept() {
    let (_, mut client) = database_with("").await;
    let document = "\
version: 1
schemas:
  public:
    comment: standard public schema
    tables:
      t:
        columns:
          - { name: id, type: int, pk: true }
          - { name: v, type: text }
        unique:
          - { columns: [id] }
";
    let first = converge(&mut client, document).await;
    assert_eq!(
        first.steps.last().map(|s| s.sql.as_str()),
        Some(r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_id_key" UNIQUE ("id")"#),
        "{:#?}",
        first.steps
    );
    let live = read(&mut client).await;
    let names: Vec<&str> = live.schemas["public"].tables["t"]
        .constraints
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["t_id_key", "t_pkey"]);
}

/// Renaming a column read by a view, as a document says it: the column is renamed and the
/// view's column with it, the view itself (and its grant) stays.
#[tokio::test]
async fn renamed_column_under_a_view_keeps_the_view() {
    let (_, mut client) = database_with("").await;
    let before = format!(
        "{CONTACTS}    views:
      faxes:
        query: SELECT id, fax_number FROM contacts WHERE fax_number IS NOT NULL
        grants:
          - {{ role: app_reader, privilege: select }}
"
    );
    converge(&mut client, &before).await;
    let after = before
        .replace(
            "{ name: fax_number, type: text }",
            "{ name: fax, type: text, renamed_from: fax_number }",
        )
        .replace(
            "SELECT id, fax_number FROM contacts WHERE fax_number IS NOT NULL",
            "SELECT id, fax FROM contacts WHERE fax IS NOT NULL",
        );
    let renamed = converge(&mut client, &after).await;
    let sql: Vec<&str> = renamed.steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        sql,
        [
            r#"ALTER TABLE "public"."contacts" RENAME COLUMN "fax_number" TO "fax""#,
            r#"ALTER VIEW "public"."faxes" RENAME COLUMN "fax_number" TO "fax""#,
        ]
    );
}
