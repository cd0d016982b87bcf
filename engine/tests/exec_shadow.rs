//! Shadow dry runs against real servers: a plan proven forward and back on a throwaway
//! cluster of its own, a failing plan reported with its step and Postgres' error, the
//! refusal of catalogs a shadow cannot reproduce, a live catalog that is not the plan's base,
//! and materialising a DSL document as Postgres stores it.

mod common;

use common::{catalog_of, database_with, hash_of, read};
use lockplane_engine::diff::Renames;
use lockplane_engine::dsl::{self, Format};
use lockplane_engine::plan::{assemble, plan, read_stats, HazardKind, Plan};
use lockplane_engine::shadow::{dry_run, materialize, ShadowError, ShadowOptions, ShadowTarget};
use lockplane_engine::{catalog_hash, testkit, Catalog};

const A: &str = "CREATE TABLE t (id int PRIMARY KEY, legacy text, name text);
     GRANT SELECT ON t TO app_reader;
     INSERT INTO t VALUES (1, 'x', 'a');";
const B: &str = "CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL DEFAULT '', note text);
     CREATE INDEX t_name_idx ON t (name);
     GRANT SELECT ON t TO app_reader;
     CREATE TABLE u (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, t_id int REFERENCES t);";

/// The live catalog of A, and the plan A → B made with A's real statistics.
async fn live_and_plan(a: &str, b: &str) -> (Catalog, Plan) {
    let (_, mut client) = database_with(a).await;
    client.batch_execute("ANALYZE").await.expect("analyze");
    let live = read(&mut client).await;
    let desired = catalog_of(b).await;
    let stats = read_stats(&client).await.expect("stats");
    let p = plan(&live, &desired, &Renames::none(), &stats, "test").expect("plan");
    (live, p)
}

/// On a throwaway cluster started for the run (where the roles the grants name do not exist
/// yet), the live schema is rebuilt to the plan's base, the plan reaches its target, and its
/// reverse comes back to the base, saying the dropped column comes back empty.
#[tokio::test]
async fn dry_run_proves_forward_and_reverse_on_a_throwaway_cluster() {
    let (live, p) = live_and_plan(A, B).await;
    assert!(p.requires_confirmation, "drops a column");
    let report = dry_run(
        &p,
        &live,
        ShadowTarget::Throwaway,
        &ShadowOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("dry run failed: {e}"));
    assert_eq!(report.base_hash, p.base_hash);
    assert_eq!(report.target_hash, p.target_hash);
    assert_eq!(report.forward.resulting_hash, p.target_hash);
    assert!(report.gaps.is_empty());
    let back = report.reverse.as_ref().expect("a reverse plan");
    assert_eq!(back.base_hash, p.target_hash);
    assert_eq!(back.target_hash, p.base_hash);
    assert!(back
        .hazards
        .iter()
        .any(|h| h.kind == HazardKind::DataNotRestored && h.object == "public.t.legacy"));
    assert_eq!(
        report.reverse_run.as_ref().expect("ran").resulting_hash,
        p.base_hash
    );
}

/// A plan whose step fails on the shadow is reported with the step, SQLSTATE, Postgres'
/// message and the error's position in the statement.
#[tokio::test]
async fn failing_plan_is_reported_with_step_and_position() {
    let (live, p) = live_and_plan(
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE TABLE t (id int PRIMARY KEY, name text)",
    )
    .await;
    // The same plan with a type that does not exist, re-assembled so its id is consistent.
    let mut steps = p.steps.clone();
    steps[0].sql = r#"ALTER TABLE "public"."t" ADD COLUMN "name" no_such_type"#.into();
    let broken = assemble(p.base_hash.clone(), p.target_hash.clone(), steps, "test").expect("plan");

    let cluster = testkit::shared_cluster().expect("cluster");
    let err = dry_run(
        &broken,
        &live,
        ShadowTarget::Cluster(cluster),
        &ShadowOptions::default(),
    )
    .await
    .expect_err("must fail");
    assert!(matches!(err, ShadowError::Forward(_)), "{err}");
    let (step_id, sql, failure) = err.failed_step().expect("a failed step");
    assert_eq!(step_id, "1");
    assert!(sql.contains("no_such_type"));
    assert_eq!(failure.sqlstate.as_deref(), Some("42704"), "{err}");
    assert!(failure.message.contains("no_such_type"), "{err}");
    let position = failure.position.expect("a position") as usize;
    assert_eq!(
        sql.chars().skip(position - 1).take(12).collect::<String>(),
        "no_such_type"
    );
    let message = err.to_string();
    assert!(message.contains("fails on the shadow"), "{message}");
    assert!(message.contains("⟨here⟩no_such_type"), "{message}");
}

/// Objects the catalog cannot describe (a function) cannot be rebuilt: refused, naming them;
/// allowed explicitly, the run goes ahead and lists them as gaps.
#[tokio::test]
async fn unsupported_objects_are_refused_unless_allowed() {
    let (live, p) = live_and_plan(
        "CREATE TABLE t (id int PRIMARY KEY);
         CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42';",
        "CREATE TABLE t (id int PRIMARY KEY, name text);
         CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42';",
    )
    .await;
    assert!(!live.unsupported.is_empty());
    let cluster = testkit::shared_cluster().expect("cluster");
    let err = dry_run(
        &p,
        &live,
        ShadowTarget::Cluster(cluster),
        &ShadowOptions::default(),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, ShadowError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("answer"), "{err}");

    let opts = ShadowOptions {
        allow_unsupported: true,
        ..ShadowOptions::default()
    };
    let report = dry_run(&p, &live, ShadowTarget::Cluster(cluster), &opts)
        .await
        .unwrap_or_else(|e| panic!("allowed run failed: {e}"));
    assert_eq!(report.gaps, live.unsupported);
    assert!(report.reverse_run.is_some());
}

/// A live catalog that is not the one the plan was made from is caught before the plan runs.
#[tokio::test]
async fn live_catalog_other_than_the_base_is_refused() {
    let (_, p) = live_and_plan(
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE TABLE t (id int PRIMARY KEY, name text)",
    )
    .await;
    let other = catalog_of("CREATE TABLE t (id int PRIMARY KEY, x int)").await;
    let cluster = testkit::shared_cluster().expect("cluster");
    let err = dry_run(
        &p,
        &other,
        ShadowTarget::Cluster(cluster),
        &ShadowOptions::default(),
    )
    .await
    .expect_err("not the base");
    match &err {
        ShadowError::BaseNotReproduced { base, .. } => assert_eq!(base, &p.base_hash),
        other => panic!("unexpected: {other}"),
    }
}

/// A document's catalog, materialised, is exactly what Postgres stores for the same schema
/// written in SQL (the `::text` cast Postgres adds to a literal default included).
#[tokio::test]
async fn materialize_gives_the_catalog_postgres_stores() {
    const DOC: &str = r#"
version: 1
extensions:
  - { name: plpgsql, schema: pg_catalog }
schemas:
  public:
    comment: standard public schema
    tables:
      t:
        columns:
          - { name: id, type: int, pk: true }
          - { name: title, type: text, not_null: true, default: "'untitled'" }
"#;
    let loaded = dsl::load("doc.yaml", DOC, Format::Yaml).expect("document");
    let cluster = testkit::shared_cluster().expect("cluster");
    let stored = materialize(&loaded.catalog, ShadowTarget::Cluster(cluster))
        .await
        .unwrap_or_else(|e| panic!("materialize failed: {e}"));
    let expected = hash_of(
        "CREATE TABLE t (id int PRIMARY KEY, title text NOT NULL DEFAULT 'untitled');
         COMMENT ON SCHEMA public IS 'standard public schema';",
    )
    .await;
    assert_eq!(
        catalog_hash(&stored).expect("hash"),
        expected,
        "{stored:#?}"
    );
    let title = &common::table(&stored, "t").columns["title"];
    assert_eq!(title.default.as_deref(), Some("'untitled'::text"));
}

/// A shadow given by URL (`--shadow-url`): a scratch database is created on that server,
/// and the plan is proven there, forward and back.
#[tokio::test]
async fn dry_run_on_a_shadow_url() {
    let (live, p) = live_and_plan(
        "CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO auditor;",
        "CREATE TABLE t (id int PRIMARY KEY, name text); GRANT SELECT ON t TO auditor;",
    )
    .await;
    let cluster = testkit::shared_cluster().expect("cluster");
    let url = cluster.url("postgres");
    let report = dry_run(
        &p,
        &live,
        ShadowTarget::Url(&url),
        &ShadowOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("dry run failed: {e}"));
    assert_eq!(report.forward.resulting_hash, p.target_hash);
    assert_eq!(
        report.reverse_run.as_ref().expect("ran").resulting_hash,
        p.base_hash
    );
}
