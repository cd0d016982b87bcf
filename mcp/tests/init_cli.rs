//! `lockplane init` and the work after it without a superuser: the roles are least-privilege,
//! the managed schema and everything in it is handed to `lp_migrator`, a second run changes
//! nothing, `--dry-run` only prints; then plan and apply run as `lp_migrator`, and an
//! application role that is a member of `lp_runtime_read` reads what the document grants.

use std::process::{Command, Output};

use lockplane_engine::testkit;

fn lockplane(ledger: &std::path::Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .args(args)
        .env("LOCKPLANE_LEDGER", ledger)
        .env("DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .output()
        .expect("run lockplane")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "lockplane failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const DOCUMENT: &str = "version: 1
schemas:
  public:
    comment: standard public schema
    tables:
      legacy:
        columns:
          - { name: id, type: serial, pk: true }
          - { name: state, type: mood }
      notes:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: body, type: text }
        grants:
          - { role: lp_runtime_read, privilege: select }
    enums:
      mood: [happy, sad]
";

async fn owner(client: &tokio_postgres::Client) -> String {
    client
        .query_one(
            "SELECT pg_get_userbyid(relowner)::text FROM pg_class \
             WHERE oid = 'public.legacy'::regclass",
            &[],
        )
        .await
        .expect("owner")
        .get(0)
}

#[tokio::test]
async fn init_then_plan_and_apply_as_lp_migrator() {
    let db = testkit::fresh_database("init_cli").await.expect("database");
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster.connect(&db).await.expect("connect");
    client
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('happy', 'sad');
             CREATE TABLE legacy (id serial PRIMARY KEY, state mood);
             DO $$ BEGIN CREATE ROLE init_cli_app LOGIN;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;",
        )
        .await
        .expect("schema");
    let url = cluster.url(&db);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let printed = ok(lockplane(&ledger, &url, &["init", "--dry-run"]));
    assert!(
        printed.contains("CREATE ROLE \"lp_migrator\" LOGIN"),
        "{printed}"
    );
    assert_eq!(
        owner(&client).await,
        "postgres",
        "--dry-run changes nothing"
    );

    for _ in 0..2 {
        ok(lockplane(&ledger, &url, &["init"]));
    }
    assert_eq!(owner(&client).await, "lp_migrator");
    let attrs = client
        .query_one(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolcanlogin \
             FROM pg_roles WHERE rolname = 'lp_migrator'",
            &[],
        )
        .await
        .expect("role");
    let flags: (bool, bool, bool, bool, bool) = (
        attrs.get(0),
        attrs.get(1),
        attrs.get(2),
        attrs.get(3),
        attrs.get(4),
    );
    assert_eq!(flags, (false, false, false, false, true), "least privilege");
    let runtime_login: bool = client
        .query_one(
            "SELECT bool_or(rolcanlogin OR rolbypassrls OR rolsuper) FROM pg_roles \
             WHERE rolname IN ('lp_runtime_read', 'lp_runtime_write')",
            &[],
        )
        .await
        .expect("runtime roles")
        .get(0);
    assert!(
        !runtime_login,
        "the runtime roles are group roles, subject to RLS"
    );

    // Plan and apply as lp_migrator: no superuser on the live database.
    let as_migrator = url.replacen("postgres://postgres@", "postgres://lp_migrator@", 1);
    assert_ne!(as_migrator, url);
    let doc = dir.path().join("schema.yaml");
    std::fs::write(&doc, DOCUMENT).expect("write");
    let plan = dir.path().join("plan.json");
    ok(lockplane(
        &ledger,
        &as_migrator,
        &[
            "plan",
            "-f",
            doc.to_str().expect("path"),
            "--out",
            plan.to_str().expect("path"),
        ],
    ));
    ok(lockplane(
        &ledger,
        &as_migrator,
        &["apply", plan.to_str().expect("path")],
    ));
    client
        .batch_execute(
            "INSERT INTO notes VALUES (1, 'hello'); GRANT lp_runtime_read TO init_cli_app",
        )
        .await
        .expect("grant membership");
    client
        .batch_execute("BEGIN; SET LOCAL ROLE init_cli_app; SELECT body FROM notes; COMMIT")
        .await
        .expect("a member of lp_runtime_read reads what the document granted");
    let denied = client
        .batch_execute(
            "BEGIN; SET LOCAL ROLE init_cli_app; INSERT INTO notes VALUES (2, 'x'); COMMIT",
        )
        .await;
    let _ = client.batch_execute("ROLLBACK").await;
    assert!(denied.is_err(), "and nothing the document did not grant");
    let notes_owner: String = client
        .query_one(
            "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'notes'::regclass",
            &[],
        )
        .await
        .expect("owner")
        .get(0);
    assert_eq!(notes_owner, "lp_migrator");
}
