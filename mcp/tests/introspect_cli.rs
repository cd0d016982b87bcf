//! `lockplane introspect` as a user runs it: the real binary against a real throwaway Postgres.

use std::process::{Command, Output};

use lockplane_engine::{catalog_hash, introspect, testkit, IntrospectOptions};
use serde_json::Value;

fn lockplane(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockplane"));
    cmd.args(args).env("NO_COLOR", "1");
    for var in [
        "DATABASE_URL",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run lockplane")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn without_any_database_it_says_how_to_give_one() {
    let out = lockplane(&["introspect", "--no-ledger"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no database given"), "{err}");
    assert!(err.contains("--database-url"), "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(err.contains("PGHOST"), "{err}");
}

#[test]
fn a_malformed_url_is_named_without_its_password() {
    let out = lockplane(
        &[
            "introspect",
            "--no-ledger",
            "--database-url",
            "postgres://me:secret@db:notaport/x",
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("invalid connection string"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[tokio::test]
async fn prints_the_manifest_and_the_same_hash_as_the_library() {
    let db = testkit::fresh_database("cli").await.expect("database");
    let cluster = testkit::shared_cluster().expect("cluster");
    let mut client = cluster.connect(&db).await.expect("connect");
    client
        .batch_execute(
            "CREATE SCHEMA app; CREATE TABLE app.items (id int PRIMARY KEY, name text NOT NULL);
             CREATE TABLE public.other (x int);",
        )
        .await
        .expect("schema");
    let expected = catalog_hash(
        &introspect(&mut client, &IntrospectOptions::default())
            .await
            .expect("introspect"),
    )
    .expect("hash");
    let url = cluster.url(&db);

    let out = lockplane(&["introspect", "--no-ledger", "--database-url", &url], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: Value = serde_json::from_slice(&out.stdout).expect("JSON manifest");
    assert_eq!(manifest["catalog_hash"], expected.0.as_str());
    assert_eq!(
        manifest["catalog"]["schemas"]["app"]["tables"]["items"]["columns"]["name"]["not_null"],
        true
    );

    // DATABASE_URL is used when no flag is given; --schema narrows the manifest.
    let out = lockplane(
        &["introspect", "--no-ledger", "--schema", "app"],
        &[("DATABASE_URL", &url)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let narrowed: Value = serde_json::from_slice(&out.stdout).expect("JSON manifest");
    let schemas: Vec<&String> = narrowed["catalog"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
        .collect();
    assert_eq!(schemas, ["app"]);

    // The PG* variables work too.
    let port = cluster.port().to_string();
    let out = lockplane(
        &["introspect", "--no-ledger"],
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &port),
            ("PGUSER", "postgres"),
            ("PGDATABASE", &db),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let via_env: Value = serde_json::from_slice(&out.stdout).expect("JSON manifest");
    assert_eq!(via_env["catalog_hash"], expected.0.as_str());

    // A schema that does not exist is named.
    let out = lockplane(
        &[
            "introspect",
            "--no-ledger",
            "--database-url",
            &url,
            "--schema",
            "nope",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("schema `nope` does not exist"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn yaml_output_is_a_dsl_document_that_validates_to_the_same_hash() {
    let db = testkit::fresh_database("cli_yaml").await.expect("database");
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster.connect(&db).await.expect("connect");
    client
        .batch_execute(
            "CREATE TYPE state AS ENUM ('open', 'done');
             CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text NOT NULL UNIQUE);
             CREATE TABLE todos (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               owner uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
               state state NOT NULL DEFAULT 'open', title text);
             CREATE INDEX todos_open ON todos (owner) WHERE state = 'open';
             COMMENT ON TABLE todos IS 'things to do';",
        )
        .await
        .expect("schema");
    let url = cluster.url(&db);
    let json = lockplane(&["introspect", "--no-ledger", "--database-url", &url], &[]);
    assert!(json.status.success(), "{}", stderr(&json));
    let manifest: Value = serde_json::from_slice(&json.stdout).expect("manifest");

    let yaml = lockplane(
        &[
            "introspect",
            "--no-ledger",
            "--database-url",
            &url,
            "--format",
            "yaml",
        ],
        &[],
    );
    assert!(yaml.status.success(), "{}", stderr(&yaml));
    let text = String::from_utf8(yaml.stdout).expect("utf-8");
    let hash = manifest["catalog_hash"].as_str().expect("hash");
    assert!(
        text.starts_with(&format!("version: 1\nbase: \"{hash}\"\n")),
        "{text}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schema.yaml");
    std::fs::write(&file, &text).expect("write");
    let checked = lockplane(&["validate", file.to_str().expect("path")], &[]);
    assert!(checked.status.success(), "{}", stderr(&checked));
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(out.contains(&format!("document hash: {hash}")), "{out}");

    // A broken document is refused with its place.
    std::fs::write(&file, "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          - { name: a, typ: int }\n").expect("write");
    let broken = lockplane(&["validate", file.to_str().expect("path")], &[]);
    assert!(!broken.status.success());
    let err = stderr(&broken);
    assert!(err.contains("schema.yaml:7:"), "{err}");
    assert!(err.contains("did you mean `type`"), "{err}");
}

#[test]
fn schema_prints_the_dsl_json_schema() {
    let out = lockplane(&["schema"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let schema: Value = serde_json::from_slice(&out.stdout).expect("JSON Schema");
    assert_eq!(schema, lockplane_engine::dsl::json_schema());
    assert!(schema["properties"]["schemas"].is_object(), "{schema}");
}
