//! `lockplane plan --format pgroll` as a user runs it: a real database, a DSL document, the
//! plan proven on a shadow and recorded, printed as pgroll migrations. The output must be
//! what pgroll accepts: every migration valid by pgroll's own JSON Schema (read in place from
//! `../shared/pgroll` or `$LOCKPLANE_PGROLL_DIR`; absent, that part is skipped with a notice)
//! and by the rules pgroll enforces in code, run in order on the database's schema.

use std::process::{Command, Output};

use lockplane_engine::pgroll::check_sequence;
use lockplane_engine::{introspect, testkit, IntrospectOptions};
use serde_json::Value;

fn lockplane(ledger: &std::path::Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .args(args)
        .env("LOCKPLANE_LEDGER", ledger)
        .env("DATABASE_URL", url)
        .env("LOCKPLANE_ACTOR", "agent:test")
        .env("NO_COLOR", "1")
        .output()
        .expect("run lockplane")
}

/// Live: a table with a column the document drops and one it keeps.
const LIVE: &str =
    "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, legacy text)";

/// An enum (raw SQL before the operations), a dropped and an added column, a new table with a
/// foreign key, an index, a comment, and RLS whose policy calls `tenant_id()` (Lockplane's
/// helpers are installed first, then the policy completes the migration).
const DESIRED: &str = "version: 1
schemas:
  public:
    comment: standard public schema
    enums:
      mood: [sad, ok, happy]
    tables:
      users:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: email, type: text, not_null: true, unique: true }
          - { name: nickname, type: text, comment: shown to others }
      notes:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: tenant_id, type: uuid, not_null: true }
          - { name: author, type: bigint, not_null: true, references: { table: users, columns: [id], on_delete: cascade } }
          - { name: feeling, type: mood, default: \"'ok'\" }
          - { name: body, type: text }
        indexes:
          - { name: notes_author_ix, columns: [author] }
        rls:
          enabled: true
          policies:
            - { name: tenant_isolation, for: all, using: \"tenant_id() = tenant_id\" }
";

fn kinds(migrations: &[Value]) -> Vec<String> {
    migrations
        .iter()
        .flat_map(|m| m["operations"].as_array().cloned().unwrap_or_default())
        .filter_map(|op| op.as_object().and_then(|o| o.keys().next().cloned()))
        .collect()
}

#[tokio::test]
async fn plan_prints_pgroll_migrations_pgroll_accepts() {
    let db = testkit::fresh_database("pgroll_cli")
        .await
        .expect("database");
    let cluster = testkit::shared_cluster().expect("cluster");
    let mut client = cluster.connect(&db).await.expect("connect");
    client.batch_execute(LIVE).await.expect("schema");
    let base = introspect(&mut client, &IntrospectOptions::default())
        .await
        .expect("introspect");
    let url = cluster.url(&db);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let doc = dir.path().join("schema.yaml");
    std::fs::write(&doc, DESIRED).expect("write");
    let plan_file = dir.path().join("plan.json");
    let (doc_s, plan_s) = (
        doc.to_str().expect("path"),
        plan_file.to_str().expect("path"),
    );

    let out = lockplane(
        &ledger,
        &url,
        &["plan", "-f", doc_s, "--format", "pgroll", "--out", plan_s],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Standard output is the migrations and nothing else.
    let migrations: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a JSON array of migrations: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let printed = serde_json::to_string_pretty(&migrations).expect("JSON");

    // pgroll's schema, then its code-level rules against the live schema, in order.
    match testkit::pgroll_dir() {
        Some(pgroll) => {
            let text = std::fs::read_to_string(pgroll.join("schema.json")).expect("schema.json");
            let schema: Value = serde_json::from_str(&text).expect("schema JSON");
            let validator = jsonschema::validator_for(&schema).expect("pgroll's schema compiles");
            for (i, m) in migrations.iter().enumerate() {
                let problems: Vec<String> = validator
                    .iter_errors(m)
                    .map(|e| format!("{}: {e}", e.instance_path()))
                    .collect();
                assert!(
                    problems.is_empty(),
                    "migration {i}: {problems:?}\n{printed}"
                );
            }
        }
        None => eprintln!("pgroll's schema.json not found: only pgroll's code-level rules checked"),
    }
    let violations = check_sequence(&migrations, &base, "public");
    assert!(violations.is_empty(), "{violations:?}\n{printed}");

    // What the plan does, as pgroll says it.
    let kinds = kinds(&migrations);
    for expected in [
        "drop_column",
        "add_column",
        "create_table",
        "create_index",
        "sql",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "no {expected} in {kinds:?}\n{printed}"
        );
    }
    // Raw SQL, in the plan's order: Lockplane's helpers first, alone (raw SQL at start is
    // isolated); the enum before the table that uses it; the policy completing the migration
    // that creates its table.
    let sql_of = |m: &Value| -> Vec<String> {
        m["operations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|op| {
                op.pointer("/sql/up")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect()
    };
    let first = &migrations[0]["operations"];
    assert_eq!(first.as_array().map(Vec::len), Some(1), "{printed}");
    assert!(
        first[0]["sql"]["up"]
            .as_str()
            .is_some_and(|up| up.contains("lockplane.tenant_id")
                || up.contains(r#""lockplane"."tenant_id""#)),
        "{printed}"
    );
    assert!(first[0]["sql"].get("onComplete").is_none(), "{printed}");
    let index_of = |needle: &str| {
        migrations
            .iter()
            .position(|m| serde_json::to_string(m).expect("JSON").contains(needle))
            .unwrap_or_else(|| panic!("{needle} not found\n{printed}"))
    };
    let creates_notes = migrations
        .iter()
        .position(|m| {
            m["operations"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|op| op.pointer("/create_table/name") == Some(&Value::from("notes")))
        })
        .expect("create_table notes");
    assert!(index_of("CREATE TYPE") < creates_notes, "{printed}");
    let policy = index_of("CREATE POLICY");
    assert_eq!(policy, creates_notes, "{printed}");
    let policy_op = migrations[policy]["operations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|op| {
            op.pointer("/sql/up")
                .and_then(Value::as_str)
                .is_some_and(|u| u.contains("CREATE POLICY"))
        })
        .expect("policy op");
    assert_eq!(policy_op["sql"]["onComplete"], true, "{printed}");
    // The added column carries its comment; the new table its foreign key.
    assert!(
        printed.contains("\"comment\": \"shown to others\""),
        "{printed}"
    );
    assert!(printed.contains("\"type\": \"foreign_key\""), "{printed}");

    // --out still writes the Lockplane plan, for `lockplane apply`; its raw steps are in the
    // export word for word.
    let plan: Value =
        serde_json::from_slice(&std::fs::read(&plan_file).expect("plan")).expect("json");
    let raw: Vec<String> = migrations.iter().flat_map(sql_of).collect();
    for step in plan["steps"].as_array().expect("steps") {
        let sql = step["sql"].as_str().expect("sql");
        if [
            "CREATE TYPE",
            "CREATE POLICY",
            "ALTER TABLE \"public\".\"notes\" ENABLE",
        ]
        .iter()
        .any(|p| sql.starts_with(p))
        {
            assert!(raw.iter().any(|r| r.contains(sql)), "{sql}\n{printed}");
        }
    }
}

/// A column added NOT NULL without default: pgroll needs an `up` expression Lockplane has no
/// honest value for, so `--format pgroll` refuses (exit status 5), naming the column.
#[tokio::test]
async fn a_not_null_column_without_default_is_refused_naming_it() {
    let db = testkit::fresh_database("pgroll_cli")
        .await
        .expect("database");
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster.connect(&db).await.expect("connect");
    client
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        .await
        .expect("schema");
    let url = cluster.url(&db);
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = dir.path().join("schema.yaml");
    std::fs::write(
        &doc,
        "version: 1
schemas:
  public:
    comment: standard public schema
    tables:
      t:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: note, type: text, not_null: true }
",
    )
    .expect("write");
    let out = lockplane(
        &dir.path().join("ledger"),
        &url,
        &[
            "plan",
            "-f",
            doc.to_str().expect("path"),
            "--format",
            "pgroll",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("public.t.note"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
