//! Shadow dry runs against real servers: live reproduced with pg_dump (objects Lockplane does
//! not model included, nothing live lacks added), a plan proven forward and back on a
//! throwaway cluster of its own, a failing plan reported with its step and Postgres' error, a
//! plan made from another catalog than live, and materialising a DSL document as Postgres
//! stores it.

mod common;

use common::{catalog_of, database_with, hash_of, read};
use lockplane_engine::diff::Renames;
use lockplane_engine::dsl::{self, Format};
use lockplane_engine::plan::{assemble, plan, read_stats, HazardKind, Plan};
use lockplane_engine::shadow::{
    dry_run, materialize, LiveSource, Shadow, ShadowError, ShadowOptions, ShadowTarget,
};
use lockplane_engine::{catalog_hash, testkit, Catalog};
use tokio_postgres::Client;

/// A live database: its connection settings, a client, its catalog.
struct Live {
    config: lockplane_engine::connect::ConnTarget,
    client: Client,
    catalog: Catalog,
}

impl Live {
    fn source(&self) -> LiveSource<'_> {
        LiveSource {
            client: &self.client,
            config: &self.config,
        }
    }
}

const A: &str = "CREATE TABLE t (id int PRIMARY KEY, legacy text, name text);
     GRANT SELECT ON t TO app_reader;
     INSERT INTO t VALUES (1, 'x', 'a');";
const B: &str = "CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL DEFAULT '', note text);
     CREATE INDEX t_name_idx ON t (name);
     GRANT SELECT ON t TO app_reader;
     CREATE TABLE u (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, t_id int REFERENCES t);";

/// The live database A, and the plan A → B made with A's real statistics.
async fn live_and_plan(a: &str, b: &str) -> (Live, Plan) {
    let live = live_database(a).await;
    let desired = catalog_of(b).await;
    let stats = read_stats(&live.client).await.expect("stats");
    let p = plan(&live.catalog, &desired, &Renames::none(), &stats, "test").expect("plan");
    (live, p)
}

/// A fresh database after `sql`, analysed.
async fn live_database(sql: &str) -> Live {
    let (name, mut client) = database_with(sql).await;
    client.batch_execute("ANALYZE").await.expect("analyze");
    let catalog = read(&mut client).await;
    let config = testkit::shared_cluster()
        .expect("cluster")
        .config(&name)
        .into();
    Live {
        config,
        client,
        catalog,
    }
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
        &live.source(),
        ShadowTarget::Throwaway,
        &ShadowOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("dry run failed: {e}"));
    assert_eq!(report.base_hash, p.base_hash);
    assert_eq!(report.target_hash, p.target_hash);
    assert_eq!(report.forward.resulting_hash, p.target_hash);
    assert!(
        report.dump_tool.starts_with("pg_dump "),
        "{}",
        report.dump_tool
    );
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
        &live.source(),
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

/// Objects the catalog cannot describe (a function, a trigger, a domain column, a
/// partitioned table, a view over a function) are reproduced by pg_dump: the shadow hashes
/// exactly like live, the plan's target is compared whole, and the trigger Postgres drops with
/// its table is gone from the target the shadow reached.
#[tokio::test]
async fn objects_lockplane_does_not_model_are_reproduced() {
    const LIVE: &str = "CREATE TABLE t (id int PRIMARY KEY);
         CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42';
         CREATE DOMAIN year AS int CHECK (VALUE > 1900);
         CREATE TABLE films (id int PRIMARY KEY, released year);
         CREATE TABLE payments (id int, at date) PARTITION BY RANGE (at);
         CREATE TABLE payments_2026 PARTITION OF payments FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         CREATE VIEW answers AS SELECT answer() AS a;
         CREATE TABLE u (id int);
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
         CREATE TRIGGER u_touch BEFORE INSERT ON u FOR EACH ROW EXECUTE FUNCTION touch();";
    let live = live_database(LIVE).await;
    assert!(
        live.catalog.unsupported.len() >= 5,
        "{:?}",
        live.catalog.unsupported
    );
    let cluster = testkit::shared_cluster().expect("cluster");
    let shadow = Shadow::reproduce(
        &live.source(),
        ShadowTarget::Cluster(cluster),
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap_or_else(|e| panic!("reproduce failed: {e}"));
    assert_eq!(shadow.base(), &live.catalog);
    // Nothing live lacks: Lockplane's helper schema is not installed on the shadow.
    let mut desired = live.catalog.clone();
    desired
        .schemas
        .get_mut("public")
        .expect("public")
        .tables
        .remove("u");
    let materialized = shadow
        .materialize(&desired, &Renames::none(), &[])
        .await
        .unwrap_or_else(|e| panic!("materialize failed: {e}"));
    assert!(
        !materialized
            .unsupported
            .iter()
            .any(|u| u.name.starts_with("u.")),
        "the trigger goes with its table: {:?}",
        materialized.unsupported
    );
    let p = plan(
        &live.catalog,
        &materialized,
        &Renames::none(),
        &Default::default(),
        "test",
    )
    .expect("plan");
    let report = shadow
        .prove(&p, &ShadowOptions::default())
        .await
        .unwrap_or_else(|e| panic!("prove failed: {e}"));
    assert_eq!(
        report.target_hash,
        catalog_hash(&materialized).expect("hash")
    );
    assert_eq!(report.base_hash, catalog_hash(&live.catalog).expect("hash"));
    // The trigger cannot be re-created by Lockplane: the plan has no reverse, and says why.
    assert!(report.reverse_run.is_none());
    assert!(
        report
            .reverse_refused
            .iter()
            .any(|r| r.object.contains("u_touch")),
        "{:?}",
        report.reverse_refused
    );
    shadow.destroy().await;
}

/// A plan calling Lockplane's helpers fails on a faithful shadow when live lacks them and the
/// plan does not install them: the shadow no longer installs what live does not have.
#[tokio::test]
async fn the_shadow_holds_nothing_live_lacks() {
    let (live, p) = live_and_plan(
        "CREATE TABLE t (id int PRIMARY KEY, tenant_id uuid)",
        "CREATE TABLE t (id int PRIMARY KEY, tenant_id uuid);
         CREATE SCHEMA lockplane;
         CREATE FUNCTION lockplane.tenant_id() RETURNS uuid LANGUAGE sql STABLE
           AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;
         ALTER TABLE t ENABLE ROW LEVEL SECURITY;
         CREATE POLICY p ON t USING (tenant_id = lockplane.tenant_id());",
    )
    .await;
    let cluster = testkit::shared_cluster().expect("cluster");
    let err = dry_run(
        &p,
        &live.source(),
        ShadowTarget::Cluster(cluster),
        &ShadowOptions::default(),
    )
    .await
    .expect_err("the helper is missing on live, so on the shadow");
    let (_, _, failure) = err.failed_step().expect("a failed step");
    assert_eq!(failure.sqlstate.as_deref(), Some("3F000"), "{err}");
}

/// A live catalog that is not the one the plan was made from is caught before the plan runs.
#[tokio::test]
async fn live_catalog_other_than_the_base_is_refused() {
    let (_, p) = live_and_plan(
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE TABLE t (id int PRIMARY KEY, name text)",
    )
    .await;
    let other = live_database("CREATE TABLE t (id int PRIMARY KEY, x int)").await;
    let cluster = testkit::shared_cluster().expect("cluster");
    let err = dry_run(
        &p,
        &other.source(),
        ShadowTarget::Cluster(cluster),
        &ShadowOptions::default(),
    )
    .await
    .expect_err("not the base");
    match &err {
        ShadowError::BaseNotLive { base, .. } => assert_eq!(base, &p.base_hash),
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
        &live.source(),
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

/// The kept reproductions of `live` on the shared cluster, oldest first.
async fn kept_for(live: &Live) -> Vec<String> {
    let cluster = testkit::shared_cluster().expect("cluster");
    let admin = cluster.connect("postgres").await.expect("connect");
    admin
        .query(
            "SELECT datname::text FROM pg_database \
             WHERE datname LIKE 'lockplane\\_kept\\_%' \
               AND shobj_description(oid, 'pg_database') = $1 ORDER BY oid",
            &[&format!(
                "lockplane: reproduction of {}",
                live.config.describe()
            )],
        )
        .await
        .expect("kept databases")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn keep_reproduction(live: &Live) -> Shadow<'static> {
    let cluster = testkit::shared_cluster().expect("cluster");
    let wait = std::time::Duration::from_secs(5);
    Shadow::reproduce_keeping(&live.source(), ShadowTarget::Cluster(cluster), wait, true)
        .await
        .unwrap_or_else(|e| panic!("reproduce failed: {e}"))
}

/// A reproduction kept on the shadow server is used again only for the very same dump: a
/// function body changed on live (which the catalog hash, naming unsupported objects only,
/// does not see) makes a new one.
#[tokio::test]
async fn kept_reproductions_are_reused_only_for_the_same_dump() {
    let mut live = live_database(
        "CREATE TABLE t (id int PRIMARY KEY);
         CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42';",
    )
    .await;
    let cluster = testkit::shared_cluster().expect("cluster");
    let first = keep_reproduction(&live).await;
    assert_eq!(first.base(), &live.catalog);
    first.destroy().await;
    let kept = kept_for(&live).await;
    assert_eq!(kept.len(), 1, "{kept:?}");

    // The same live schema: the kept reproduction is the base, nothing new is kept.
    let again = keep_reproduction(&live).await;
    assert_eq!(again.base(), &live.catalog);
    again.destroy().await;
    assert_eq!(kept_for(&live).await, kept);

    live.client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 43'",
        )
        .await
        .expect("change the body");
    let changed = read(&mut live.client).await;
    assert_eq!(
        catalog_hash(&changed).expect("hash"),
        catalog_hash(&live.catalog).expect("hash"),
        "the catalog hash names functions only: the dump is what tells the two apart"
    );
    let third = keep_reproduction(&live).await;
    third.destroy().await;
    let now = kept_for(&live).await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(now[0], kept[0]);

    let admin = cluster.connect("postgres").await.expect("connect");
    for name in now {
        admin
            .batch_execute(&format!("DROP DATABASE \"{name}\""))
            .await
            .expect("drop the kept reproduction");
    }
}
