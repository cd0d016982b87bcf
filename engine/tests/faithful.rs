//! The plan tells the truth (issue 11): the regressions a new user met, against real Postgres.
//!
//! - The README's document (a policy calling `tenant_id()`, a grant to `app_reader`) plans,
//!   proves and applies on a fresh database: the helpers are a step of the plan, not something
//!   the shadow installed behind the user's back; without the roles, planning refuses naming
//!   each of them.
//! - Dropping a table that has a trigger applies: the target is what the shadow reached, so
//!   the trigger Postgres drops with the table is not expected to survive.
//! - A plan is checked inside its transaction before `COMMIT`: a catalog other than the proven
//!   one rolls back and leaves the database at its base.
//! - A forged step (two statements, or a drop the flags do not admit) is refused before
//!   anything runs.
//! - Pagila, with its triggers, functions, domain and partitions, plans to nothing against
//!   itself through the DSL.

mod common;

use common::{database_with, read};
use lockplane_engine::catalog::Catalog;
use lockplane_engine::dsl::{self, Format};
use lockplane_engine::exec::{self, ApplyError, ApplyOptions};
use lockplane_engine::plan::{assemble, read_stats, Plan};
use lockplane_engine::proposal::{self, ProposeError, ProposeOptions, Proposed};
use lockplane_engine::shadow::{LiveSource, ShadowTarget};
use lockplane_engine::{catalog_hash, testkit, CatalogHash};
use tokio_postgres::Client;

/// A live database on the shared cluster.
struct Live {
    config: lockplane_engine::connect::ConnTarget,
    client: Client,
}

async fn live(sql: &str) -> Live {
    let (name, client) = database_with(sql).await;
    let config = testkit::shared_cluster()
        .expect("cluster")
        .config(&name)
        .into();
    Live { config, client }
}

impl Live {
    async fn catalog(&mut self) -> Catalog {
        read(&mut self.client).await
    }

    async fn hash(&mut self) -> CatalogHash {
        catalog_hash(&self.catalog().await).expect("hash")
    }

    /// `lockplane plan`: the document against this database, proven on the shared cluster.
    async fn propose(&mut self, document: &str) -> Result<Proposed, ProposeError> {
        let loaded = dsl::load("doc.yaml", document, Format::Yaml)
            .unwrap_or_else(|e| panic!("document: {e}"));
        let stats = read_stats(&self.client).await.expect("stats");
        let source = LiveSource {
            client: &self.client,
            config: &self.config,
        };
        let cluster = testkit::shared_cluster().expect("cluster");
        proposal::propose(
            &source,
            &loaded.catalog,
            &dsl::renames(&loaded.document),
            &stats,
            ShadowTarget::Cluster(cluster),
            &ProposeOptions::default(),
        )
        .await
    }

    async fn apply(&mut self, plan: &Plan) -> Result<CatalogHash, ApplyError> {
        exec::apply(
            &mut self.client,
            plan,
            &ApplyOptions::default(),
            Some(&plan.plan_id),
        )
        .await
        .map(|r| r.resulting_hash)
    }
}

/// The README's DSL example, as the README shows it.
fn readme_document() -> String {
    let doc = testkit::readme_dsl_example();
    assert!(!doc.is_empty(), "the README's DSL example");
    doc
}

#[tokio::test]
async fn the_readme_example_plans_proves_and_applies() {
    let mut db = live("").await;
    let proposed = db
        .propose(&readme_document())
        .await
        .unwrap_or_else(|e| panic!("plan failed: {e}"));
    let plan = &proposed.plan;
    assert!(proposed.report.is_some(), "proven");
    assert!(
        plan.steps.iter().any(|s| s
            .sql
            .starts_with("CREATE OR REPLACE FUNCTION \"lockplane\".\"tenant_id\"")),
        "the helper is a step of the plan: {:#?}",
        plan.steps
    );
    assert!(plan.steps.iter().any(|s| s.reaches.is_some()));
    let reached = db
        .apply(plan)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    assert_eq!(reached, plan.target_hash);
    assert_eq!(db.hash().await, plan.target_hash);
    let again = db.propose(&readme_document()).await.expect("re-plan");
    assert!(again.plan.steps.is_empty(), "{:#?}", again.plan.steps);
}

#[tokio::test]
async fn roles_live_lacks_are_refused_at_plan_time_naming_each() {
    let mut db = live("").await;
    let suffix = std::process::id();
    let doc = format!(
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
         - {{ name: id, type: int, pk: true }}\n        grants:\n          \
         - {{ role: nobody_reader_{suffix}, privilege: select }}\n          \
         - {{ role: nobody_writer_{suffix}, privilege: insert }}\n"
    );
    let err = db.propose(&doc).await.expect_err("missing roles");
    let message = err.to_string();
    match &err {
        ProposeError::MissingRoles { roles } => assert_eq!(
            roles,
            &[
                format!("nobody_reader_{suffix}"),
                format!("nobody_writer_{suffix}")
            ]
        ),
        other => panic!("unexpected: {other}"),
    }
    assert!(
        message.contains(&format!("CREATE ROLE \"nobody_writer_{suffix}\" NOLOGIN")),
        "{message}"
    );
}

#[tokio::test]
async fn dropping_a_table_with_a_trigger_applies_what_the_shadow_reached() {
    let mut db = live(
        "CREATE TABLE t (id int PRIMARY KEY);
         CREATE TABLE u (id int PRIMARY KEY);
         INSERT INTO u VALUES (1);
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
         CREATE TRIGGER u_touch BEFORE INSERT ON u FOR EACH ROW EXECUTE FUNCTION touch();",
    )
    .await;
    let doc =
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
               - { name: id, type: int, pk: true }\n";
    let proposed = db
        .propose(doc)
        .await
        .unwrap_or_else(|e| panic!("plan: {e}"));
    let plan = &proposed.plan;
    assert!(plan.requires_confirmation, "drops a table with rows");
    assert!(
        !proposed
            .target
            .unsupported
            .iter()
            .any(|u| u.name == "u.u_touch"),
        "the target has no trigger on the dropped table"
    );
    let reached = db
        .apply(plan)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    assert_eq!(reached, plan.target_hash);
    let catalog = db.catalog().await;
    assert!(!catalog.schemas["public"].tables.contains_key("u"));
    assert!(
        catalog.unsupported.iter().any(|u| u.kind == "function"),
        "the function stays"
    );
}

#[tokio::test]
async fn a_catalog_other_than_the_proven_one_rolls_back() {
    let mut db = live("CREATE TABLE t (id int PRIMARY KEY)").await;
    let base = db.hash().await;
    let doc =
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
               - { name: id, type: int, pk: true }\n          - { name: note, type: text }\n";
    let proposed = db
        .propose(doc)
        .await
        .unwrap_or_else(|e| panic!("plan: {e}"));
    // The proof says where the transaction ends; claim another place, with a consistent id.
    let mut forged = proposed.plan.clone();
    let last = forged.steps.len() - 1;
    forged.steps[last].reaches = Some(base.clone());
    forged.plan_id = forged.computed_id().expect("id");
    let err = db.apply(&forged).await.expect_err("not as proven");
    match &err {
        ApplyError::NotAsProven {
            rolled_back,
            expected,
            actual,
            ..
        } => {
            assert!(rolled_back);
            assert_eq!(expected, &base);
            assert_eq!(actual, &proposed.plan.target_hash);
        }
        other => panic!("unexpected: {other}"),
    }
    assert_eq!(db.hash().await, base, "nothing committed");
}

#[tokio::test]
async fn forged_steps_are_refused_before_anything_runs() {
    let mut db = live("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE keep (id int); INSERT INTO keep VALUES (1);").await;
    let base = db.hash().await;
    let doc =
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
               - { name: id, type: int, pk: true }\n          - { name: note, type: text }\n      \
               keep:\n        columns:\n          - { name: id, type: int }\n";
    let proposed = db
        .propose(doc)
        .await
        .unwrap_or_else(|e| panic!("plan: {e}"));
    assert!(!proposed.plan.requires_confirmation);

    // A second statement appended to a step.
    let mut steps = proposed.plan.steps.clone();
    steps[0].sql.push_str("; DROP TABLE keep");
    let two = assemble(base.clone(), proposed.plan.target_hash.clone(), steps, "x").expect("plan");
    let err = db
        .apply_unconfirmed(&two)
        .await
        .expect_err("two statements");
    assert!(matches!(err, ApplyError::Foreign(_)), "{err}");
    assert!(err.to_string().contains("2 statements"), "{err}");

    // A drop that the flags do not admit: the SQL decides, confirmation is required.
    let mut steps = proposed.plan.steps.clone();
    steps[0].sql = "DROP TABLE \"public\".\"keep\"".into();
    steps[0].hazards.clear();
    let drop = assemble(base.clone(), proposed.plan.target_hash.clone(), steps, "x").expect("plan");
    assert!(!drop.requires_confirmation);
    let err = db
        .apply_unconfirmed(&drop)
        .await
        .expect_err("needs confirmation");
    assert!(
        matches!(err, ApplyError::ConfirmationRequired { .. }),
        "{err}"
    );

    // Statements the planner never writes.
    let mut steps = proposed.plan.steps.clone();
    steps[0].sql = "DELETE FROM keep".into();
    let dml = assemble(base.clone(), proposed.plan.target_hash.clone(), steps, "x").expect("plan");
    let err = db.apply_unconfirmed(&dml).await.expect_err("DML");
    assert!(err.to_string().contains("DeleteStmt"), "{err}");

    assert_eq!(db.hash().await, base);
    let rows: i64 = db
        .client
        .query_one("SELECT count(*) FROM keep", &[])
        .await
        .expect("rows")
        .get(0);
    assert_eq!(rows, 1);
}

impl Live {
    async fn apply_unconfirmed(&mut self, plan: &Plan) -> Result<CatalogHash, ApplyError> {
        exec::apply(&mut self.client, plan, &ApplyOptions::default(), None)
            .await
            .map(|r| r.resulting_hash)
    }
}

#[tokio::test]
async fn pagila_plans_to_nothing_through_its_own_document() {
    let Some(pagila) = testkit::corpus_sql("pagila-schema.sql") else {
        eprintln!("skipped: the corpus is not available");
        return;
    };
    let mut db = live(&pagila).await;
    let catalog = db.catalog().await;
    let yaml = dsl::to_yaml(&catalog);
    let proposed = db
        .propose(&yaml)
        .await
        .unwrap_or_else(|e| panic!("plan of Pagila's own document: {e}"));
    assert!(proposed.plan.steps.is_empty(), "{:#?}", proposed.plan.steps);
    assert_eq!(
        proposed.plan.target_hash,
        catalog_hash(&catalog).expect("hash")
    );
}

/// Every server build of the matrix (`LOCKPLANE_PG_MATRIX`, `major=bin_dir` pairs, plus the
/// local server): the README's document plans, proves on a throwaway shadow of the same
/// major version (reproduced with a pg_dump new enough for it) and applies; Pagila plans to
/// nothing through its own document.
#[tokio::test]
async fn the_readme_example_and_pagila_on_every_postgres_version() {
    use lockplane_engine::cluster::Cluster;
    let all = testkit::pg_matrix().expect("the matrix's Postgres binaries");
    let pagila = testkit::corpus_sql("pagila-schema.sql");
    for bins in all {
        let major = bins.major;
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(&bins))
            .await
            .expect("join")
            .expect("start cluster");
        let mut cases = vec![("readme", "CREATE ROLE app_reader NOLOGIN".to_owned())];
        if let Some(sql) = &pagila {
            cases.push(("pagila", sql.clone()));
        }
        for (name, setup) in cases {
            cluster
                .create_database(name)
                .await
                .expect("create database");
            let client = cluster.connect(name).await.expect("connect");
            client
                .batch_execute(&setup)
                .await
                .unwrap_or_else(|e| panic!("Postgres {major}: setup: {e}"));
            let mut db = Live {
                config: cluster.config(name).into(),
                client,
            };
            let document = if name == "readme" {
                readme_document()
            } else {
                dsl::to_yaml(&db.catalog().await)
            };
            let loaded = dsl::load("doc.yaml", &document, Format::Yaml).expect("document");
            let stats = read_stats(&db.client).await.expect("stats");
            let source = LiveSource {
                client: &db.client,
                config: &db.config,
            };
            if name == "readme" {
                // A feature newer than the server is refused at plan time, naming it and the
                // version it needs; on a server that has it, it plans.
                let newer = dsl::load(
                    "newer.yaml",
                    "version: 1\nschemas:\n  public:\n    tables:\n      n:\n        \
                     columns:\n          - { name: id, type: int, pk: true }\n          \
                     - { name: code, type: text }\n        unique:\n          \
                     - { name: n_code, columns: [code], nulls_not_distinct: true }\n",
                    Format::Yaml,
                )
                .expect("document");
                let outcome = proposal::propose(
                    &source,
                    &newer.catalog,
                    &dsl::renames(&newer.document),
                    &stats,
                    ShadowTarget::Throwaway,
                    &ProposeOptions::default(),
                )
                .await;
                match outcome {
                    Err(e @ proposal::ProposeError::Unsupported { .. }) if major < 15 => {
                        let text = e.to_string();
                        assert!(
                            text.contains("public.n.constraints.n_code")
                                && text.contains("NULLS NOT DISTINCT needs Postgres 15"),
                            "{text}"
                        );
                    }
                    Ok(p) if major >= 15 => assert!(!p.plan.steps.is_empty()),
                    other => panic!("Postgres {major}: NULLS NOT DISTINCT: {other:?}"),
                }
            }
            let proposed = proposal::propose(
                &source,
                &loaded.catalog,
                &dsl::renames(&loaded.document),
                &stats,
                ShadowTarget::Throwaway,
                &ProposeOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("Postgres {major}, {name}: plan: {e}"));
            assert!(
                proposed.dump_tool.contains(&format!("PostgreSQL {major}.")),
                "Postgres {major}: the shadow runs the same major version: {}",
                proposed.dump_tool
            );
            if name == "pagila" {
                assert!(
                    proposed.plan.steps.is_empty(),
                    "Postgres {major}: {:#?}",
                    proposed.plan.steps
                );
                continue;
            }
            let reached = db
                .apply(&proposed.plan)
                .await
                .unwrap_or_else(|e| panic!("Postgres {major}: apply: {e}"));
            assert_eq!(reached, proposed.plan.target_hash, "Postgres {major}");
        }
    }
}

/// An invalid index (what a failed `CREATE INDEX CONCURRENTLY` leaves) is not the index a
/// document wants: it is not in the manifest, and the plan drops it before building the
/// index of that name.
#[tokio::test]
async fn an_invalid_index_is_dropped_and_rebuilt_not_counted() {
    let mut db =
        live("CREATE TABLE t (id int PRIMARY KEY, a int); INSERT INTO t VALUES (1, 1), (2, 1);")
            .await;
    let before = db.catalog().await;
    let failed = db
        .client
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY t_a ON t (a)")
        .await;
    assert!(failed.is_err(), "duplicates make the build fail");
    let catalog = db.catalog().await;
    assert_eq!(
        catalog.invalid_indexes,
        vec![("public".to_owned(), "t_a".to_owned())]
    );
    assert!(catalog.schemas["public"].tables["t"].indexes.is_empty());
    assert_eq!(
        catalog_hash(&catalog).expect("hash"),
        catalog_hash(&before).expect("hash"),
        "an invalid index is no index of the schema"
    );
    let doc =
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
               - { name: id, type: int, pk: true }\n          - { name: a, type: int }\n        \
               indexes:\n          - { name: t_a, columns: [a] }\n";
    let proposed = db
        .propose(doc)
        .await
        .unwrap_or_else(|e| panic!("plan: {e}"));
    let sql: Vec<&str> = proposed.plan.steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        sql[0], "DROP INDEX CONCURRENTLY IF EXISTS \"public\".\"t_a\"",
        "{sql:#?}"
    );
    let reached = db
        .apply(&proposed.plan)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    assert_eq!(reached, proposed.plan.target_hash);
    let valid: bool = db
        .client
        .query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.t_a'::regclass",
            &[],
        )
        .await
        .expect("index")
        .get(0);
    assert!(valid);
    let again = db.propose(doc).await.expect("re-plan");
    assert!(again.plan.steps.is_empty(), "{:#?}", again.plan.steps);
}

/// Pagila end to end: its own document plans to nothing; then ten realistic edits, one after
/// the other, each planned, proven on a reproduction of live (triggers, functions, domain,
/// partitions and all), applied, and planned again to nothing, with the whole-catalog hash
/// compared at every turn.
#[tokio::test]
async fn pagila_takes_ten_realistic_edits() {
    let Some(pagila) = testkit::corpus_sql("pagila-schema.sql") else {
        eprintln!("skipped: the corpus is not available");
        return;
    };
    let mut db = live(&pagila).await;
    let mut doc = dsl::to_yaml(&db.catalog().await);
    let edits: [(&str, &Edit); 10] = [
        ("a NOT NULL column with a default", &|d| {
            once(
                d,
                "          - { name: active, type: integer }\n",
                "          - { name: active, type: integer }\n          \
                 - { name: loyalty_points, type: integer, not_null: true, default: 0 }\n",
            )
        }),
        ("an index on rental(customer_id, rental_date)", &|d| {
            once(
                d,
                "          - { name: idx_fk_inventory_id, columns: [inventory_id] }\n",
                "          - { name: idx_fk_inventory_id, columns: [inventory_id] }\n          \
                 - { name: idx_rental_customer_date, columns: [customer_id, rental_date] }\n",
            )
        }),
        ("a column rename", &|d| {
            once(
                d,
                "- { name: picture, type: bytea }",
                "- { name: photo, type: bytea, renamed_from: picture }",
            )
        }),
        ("a check", &|d| {
            once(
                d,
                "- { name: email, type: text }\n          - { name: address_id",
                "- { name: email, type: text, check: \"email LIKE '%@%'\" }\n          \
                 - { name: address_id",
            )
        }),
        ("a length change", &|d| {
            once(d, "type: character(20)", "type: character(30)")
        }),
        ("a new table with foreign keys", &|d| {
            once(
                d,
                "    views:\n",
                "      review:\n        columns:\n          \
                 - { name: review_id, type: bigint, identity: always, pk: true }\n          \
                 - { name: film_id, type: integer, not_null: true, references: { table: film, columns: [film_id] } }\n          \
                 - { name: customer_id, type: integer, not_null: true, references: { table: customer, columns: [customer_id] } }\n          \
                 - { name: stars, type: smallint, not_null: true }\n    views:\n",
            )
        }),
        ("an RLS policy", &|d| {
            once(
                d,
                "          - { name: stars, type: smallint, not_null: true }\n",
                "          - { name: stars, type: smallint, not_null: true }\n        rls:\n          \
                 enabled: true\n          policies:\n            \
                 - { name: review_visible, for: select, using: \"stars >= 1\" }\n",
            )
        }),
        ("a view", &|d| {
            once(
                d,
                "    views:\n",
                "    views:\n      film_titles:\n        \
                 query: \"SELECT film_id, title FROM public.film WHERE length > 60\"\n",
            )
        }),
        ("dropping an index", &|d| {
            once(d, "          - { name: idx_title, columns: [title] }\n", "")
        }),
        (
            "dropping a table that has a trigger, with the views reading it",
            &|d| {
                let mut out = without_block(d, "      film_actor:\n", "      film_category:\n");
                for view in ["actor_info", "film_list", "nicer_but_slower_film_list"] {
                    out = without_lines(&out, &format!("      {view}:\n"), 2);
                }
                out
            },
        ),
    ];
    for (what, edit) in edits {
        doc = edit(&doc);
        let proposed = db
            .propose(&doc)
            .await
            .unwrap_or_else(|e| panic!("{what}: plan: {e}"));
        assert!(!proposed.plan.steps.is_empty(), "{what}: nothing planned");
        assert!(proposed.report.is_some(), "{what}: not proven");
        let reached = db
            .apply(&proposed.plan)
            .await
            .unwrap_or_else(|e| panic!("{what}: apply: {e}"));
        assert_eq!(reached, proposed.plan.target_hash, "{what}");
        assert_eq!(db.hash().await, proposed.plan.target_hash, "{what}");
        let again = db
            .propose(&doc)
            .await
            .unwrap_or_else(|e| panic!("{what}: re-plan: {e}"));
        assert!(
            again.plan.steps.is_empty(),
            "{what}: re-plan is not empty: {:#?}",
            again.plan.steps
        );
    }
    let catalog = db.catalog().await;
    let public = &catalog.schemas["public"];
    assert!(!public.tables.contains_key("film_actor"));
    assert!(public.tables["staff"].columns.contains_key("photo"));
    assert!(
        !catalog
            .unsupported
            .iter()
            .any(|u| u.name.starts_with("film_actor.")),
        "the trigger went with its table"
    );
}

/// A change to a document's text.
type Edit = dyn Fn(&str) -> String;

/// `text` with `from` replaced by `to`; `from` must occur exactly once.
fn once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in:\n{text}");
    text.replacen(from, to, 1)
}

/// `text` without the lines from the one equal to `start` up to (not including) `end`.
fn without_block(text: &str, start: &str, end: &str) -> String {
    let a = text.find(start).unwrap_or_else(|| panic!("{start:?}"));
    let b = a + text[a..].find(end).unwrap_or_else(|| panic!("{end:?}"));
    format!("{}{}", &text[..a], &text[b..])
}

/// `text` without `count` lines starting at the line equal to `start`.
fn without_lines(text: &str, start: &str, count: usize) -> String {
    let a = text.find(start).unwrap_or_else(|| panic!("{start:?}"));
    let mut b = a;
    for _ in 0..count {
        b += text[b..]
            .find('\n')
            .map(|i| i + 1)
            .unwrap_or(text.len() - b);
    }
    format!("{}{}", &text[..a], &text[b..])
}
