//! `policy_evaluate` verdicts against what Postgres actually lets a role do.
//!
//! A table with permissive and restrictive policies for several commands and roles (reading
//! `app.tenant_id` / `app.user_id`, a column default from the context), a forced copy, and
//! roles that are a reader, a writer, one without grants, the owner, and a BYPASSRLS role.
//! For every row × command × context × table, [`evaluate`] must agree with an oracle that
//! knows nothing about predicates: it sets the role and settings with plain SQL and really
//! runs the statement as that role in a rolled-back transaction — INSERT the row (accepted,
//! or refused by a policy or a privilege); for SELECT, UPDATE and DELETE insert the row as
//! the superuser first, then SELECT it / `UPDATE … SET id = id WHERE id = …` / `DELETE …
//! WHERE id = …` as the role and see whether it was visible / updated / deleted.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use lockplane_engine::ident::{quote_ident, quote_literal};
use lockplane_engine::policy::{evaluate, Command, PolicyError};
use lockplane_engine::session::{SessionContext, SessionError};
use lockplane_engine::testkit;
use serde_json::{json, Map, Value};
use tokio_postgres::Client;

static NEXT: AtomicU32 = AtomicU32::new(0);

async fn connect(db: &str) -> Client {
    testkit::shared_cluster()
        .expect("cluster")
        .connect(db)
        .await
        .expect("connect")
}

/// The roles of one test: unique names (roles are cluster-wide).
#[derive(Clone)]
struct Roles {
    reader: String,
    writer: String,
    nobody: String,
    owner: String,
    bypass: String,
}

impl Roles {
    fn new() -> Roles {
        let n = format!(
            "{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Roles {
            reader: format!("lp_test_reader_{n}"),
            writer: format!("lp_test_writer_{n}"),
            nobody: format!("lp_test_nobody_{n}"),
            owner: format!("lp_test_owner_{n}"),
            bypass: format!("lp_test_bypass_{n}"),
        }
    }

    fn all(&self) -> [&String; 5] {
        [
            &self.reader,
            &self.writer,
            &self.nobody,
            &self.owner,
            &self.bypass,
        ]
    }
}

/// A fresh database with the test tables and roles; the body runs with the database name,
/// and the roles are dropped afterwards even when it panics.
async fn scenario<F, Fut>(body: F)
where
    F: FnOnce(String, Roles) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = testkit::fresh_database("policy").await.expect("db");
    let admin = connect(&db).await;
    let roles = Roles::new();
    let [reader, writer, nobody, owner, bypass] = roles.all().map(|r| quote_ident(r));
    let setup = format!(
        "CREATE ROLE {reader}; CREATE ROLE {writer}; CREATE ROLE {nobody};
         CREATE ROLE {owner}; CREATE ROLE {bypass} BYPASSRLS;
         CREATE TABLE docs (
           id int PRIMARY KEY,
           tenant_id text DEFAULT current_setting('app.tenant_id', true),
           owner_id text,
           status text NOT NULL DEFAULT 'draft',
           secret boolean NOT NULL DEFAULT false);
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
         CREATE POLICY tenant_all ON docs
           USING (tenant_id = current_setting('app.tenant_id', true));
         CREATE POLICY published_read ON docs FOR SELECT TO {reader}
           USING (status = 'published');
         CREATE POLICY no_secrets ON docs AS RESTRICTIVE FOR SELECT TO {reader}
           USING (NOT secret);
         CREATE POLICY owner_update ON docs FOR UPDATE TO {writer}
           USING (owner_id = current_setting('app.user_id', true))
           WITH CHECK (status <> 'locked');
         CREATE POLICY insert_status ON docs AS RESTRICTIVE FOR INSERT TO {writer}
           WITH CHECK (status IN ('draft', 'published'));
         CREATE POLICY delete_drafts ON docs AS RESTRICTIVE FOR DELETE TO {writer}
           USING (status = 'draft');
         CREATE TABLE forced_docs (LIKE docs INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
         ALTER TABLE forced_docs ADD PRIMARY KEY (id);
         ALTER TABLE forced_docs ENABLE ROW LEVEL SECURITY;
         ALTER TABLE forced_docs FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant_only ON forced_docs
           USING (tenant_id = current_setting('app.tenant_id', true))
           WITH CHECK (tenant_id = current_setting('app.tenant_id', true) AND NOT secret);
         ALTER TABLE docs OWNER TO {owner};
         ALTER TABLE forced_docs OWNER TO {owner};
         GRANT SELECT ON docs, forced_docs TO {reader};
         GRANT SELECT, INSERT, UPDATE, DELETE ON docs, forced_docs TO {writer}, {bypass};"
    );
    admin.batch_execute(&setup).await.expect("setup");
    let outcome = tokio::spawn(body(db, roles.clone())).await;
    let names: Vec<String> = roles.all().iter().map(|r| quote_ident(r)).collect();
    let names = names.join(", ");
    admin
        .batch_execute(&format!("DROP OWNED BY {names}; DROP ROLE {names}"))
        .await
        .expect("drop roles");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn ctx(role: &str, user: Option<&str>, tenant: Option<&str>) -> SessionContext {
    SessionContext {
        role: Some(role.to_owned()),
        user_id: user.map(str::to_owned),
        tenant_id: tenant.map(str::to_owned),
    }
}

fn row(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => quote_literal(s),
        other => quote_literal(&other.to_string()),
    }
}

/// What Postgres does when the context's role really runs `command` on the row.
async fn oracle(
    client: &Client,
    table: &str,
    command: Command,
    row: &Map<String, Value>,
    ctx: &SessionContext,
) -> bool {
    let t = quote_ident(table);
    let id = row["id"].to_string();
    let insert = |r: &Map<String, Value>| {
        let cols: Vec<String> = r.keys().map(|k| quote_ident(k)).collect();
        let vals: Vec<String> = r.values().map(literal).collect();
        format!(
            "INSERT INTO {t} ({}) VALUES ({})",
            cols.join(", "),
            vals.join(", ")
        )
    };
    client.batch_execute("BEGIN").await.expect("begin");
    if command != Command::Insert {
        // The existing row, as the superuser: columns the row omits are NULL (the documented
        // meaning of an omitted column for existing rows).
        let mut existing = row.clone();
        existing.entry("tenant_id").or_insert(Value::Null);
        client
            .batch_execute(&insert(&existing))
            .await
            .expect("superuser insert");
    }
    let role = ctx.role.as_deref().expect("role");
    client
        .batch_execute(&format!("SET LOCAL ROLE {}", quote_ident(role)))
        .await
        .expect("set role");
    client
        .query(
            "SELECT set_config('app.user_id', $1, true), set_config('app.tenant_id', $2, true)",
            &[
                &ctx.user_id.clone().unwrap_or_default(),
                &ctx.tenant_id.clone().unwrap_or_default(),
            ],
        )
        .await
        .expect("settings");
    let result = match command {
        Command::Insert => client.execute(&insert(row), &[]).await.map(|n| n == 1),
        Command::Select => client
            .query(&format!("SELECT 1 FROM {t} WHERE id = {id}"), &[])
            .await
            .map(|rows| rows.len() == 1),
        Command::Update => client
            .execute(&format!("UPDATE {t} SET id = id WHERE id = {id}"), &[])
            .await
            .map(|n| n == 1),
        Command::Delete => client
            .execute(&format!("DELETE FROM {t} WHERE id = {id}"), &[])
            .await
            .map(|n| n == 1),
    };
    client.batch_execute("ROLLBACK").await.expect("rollback");
    match result {
        Ok(done) => done,
        // 42501: "new row violates row-level security policy" or "permission denied".
        Err(e) if e.code().map(|c| c.code()) == Some("42501") => false,
        Err(e) => panic!("oracle: unexpected error {e:?}"),
    }
}

#[tokio::test]
async fn verdicts_match_what_postgres_lets_the_role_do() {
    scenario(|db, roles| async move {
        let admin = connect(&db).await;
        let mut client = connect(&db).await;
        let rows = [
            json!({"id": 1, "tenant_id": "t1", "owner_id": "u1", "status": "draft", "secret": false}),
            json!({"id": 2, "tenant_id": "t1", "owner_id": "u2", "status": "published", "secret": true}),
            json!({"id": 3, "tenant_id": "t2", "owner_id": "u1", "status": "published", "secret": false}),
            json!({"id": 4, "tenant_id": "t1", "owner_id": "u1", "status": "locked", "secret": false}),
            // tenant_id omitted: INSERT takes it from the context through the default.
            json!({"id": 5, "owner_id": "u1", "status": "draft", "secret": false}),
            json!({"id": 6, "tenant_id": "t2", "owner_id": "u2", "status": "archived", "secret": false}),
        ]
        .map(row);
        let contexts = [
            ctx(&roles.writer, Some("u1"), Some("t1")),
            ctx(&roles.writer, Some("u2"), Some("t2")),
            ctx(&roles.writer, Some("u1"), None),
            ctx(&roles.reader, None, Some("t1")),
            ctx(&roles.reader, None, Some("t9")),
            ctx(&roles.nobody, None, Some("t1")),
            ctx(&roles.owner, None, Some("t9")),
            ctx(&roles.bypass, None, Some("t2")),
        ];
        let mut cases = 0;
        let mut allowed = [0usize; 4];
        let mut denied = [0usize; 4];
        for table in ["docs", "forced_docs"] {
            for (ci, command) in Command::ALL.into_iter().enumerate() {
                for context in &contexts {
                    for r in &rows {
                        let verdict = evaluate(&mut client, ("public", table), command, r, context)
                            .await
                            .unwrap_or_else(|e| panic!("{table} {command} {context}: {e}"));
                        let truth = oracle(&admin, table, command, r, context).await;
                        assert_eq!(
                            verdict.allowed, truth,
                            "{table} {command} as {context}, row {}: evaluate said {} \
                             ({}; predicate {}), Postgres did {}",
                            Value::Object(r.clone()),
                            verdict.allowed,
                            verdict.reason,
                            verdict.predicate,
                            truth
                        );
                        cases += 1;
                        if truth {
                            allowed[ci] += 1;
                        } else {
                            denied[ci] += 1;
                        }
                    }
                }
            }
        }
        assert!(cases >= 20, "{cases}");
        // Every command has verdicts both ways, so the comparison means something.
        for ci in 0..4 {
            assert!(
                allowed[ci] >= 3 && denied[ci] >= 3,
                "{:?}: {} allowed, {} denied",
                Command::ALL[ci],
                allowed[ci],
                denied[ci]
            );
        }
        let version: String = admin
            .query_one("SHOW server_version", &[])
            .await
            .expect("version")
            .get(0);
        eprintln!("Postgres {version}: {cases} cases, allowed {allowed:?}, denied {denied:?}");
    })
    .await;
}

#[tokio::test]
async fn verdicts_explain_themselves() {
    scenario(|db, roles| async move {
        let mut client = connect(&db).await;
        let r = row(json!({"id": 1, "tenant_id": "t1", "owner_id": "u1", "status": "published", "secret": true}));

        // Reader: SELECT combines the ALL and SELECT permissive policies with OR, the
        // restrictive one with AND.
        let v = evaluate(&mut client, ("public", "docs"), Command::Select, &r, &ctx(&roles.reader, None, Some("t1")))
            .await
            .expect("evaluate");
        assert!(v.rls_enabled && v.rls_applies && !v.forced);
        let names: Vec<&str> = v.applicable.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["no_secrets", "published_read", "tenant_all"]);
        assert_eq!(
            v.predicate,
            "((status = 'published'::text) OR (tenant_id = current_setting('app.tenant_id'::text, true))) AND (NOT secret)"
        );
        assert!(!v.allowed);
        assert!(v.reason.contains("denied by row-level security"), "{}", v.reason);

        // Writer: INSERT sees INSERT and ALL policies only, with the default applied.
        let r5 = row(json!({"id": 5, "owner_id": "u1", "status": "draft", "secret": false}));
        let v = evaluate(&mut client, ("public", "docs"), Command::Insert, &r5, &ctx(&roles.writer, None, Some("t1")))
            .await
            .expect("evaluate");
        assert_eq!(v.defaults, ["tenant_id"]);
        assert!(v.allowed, "{}", v.reason);
        assert_eq!(v.checks.len(), 1);
        assert!(v.predicate.contains("status = ANY"), "{}", v.predicate);

        // No permissive policy for the command and role: default deny, said so.
        let no_perm = evaluate(&mut client, ("public", "forced_docs"), Command::Select, &r, &ctx(&roles.owner, None, Some("t2")))
            .await
            .expect("evaluate");
        assert!(no_perm.forced && no_perm.rls_applies && !no_perm.allowed);

        // Bypasses are reported.
        let owner = evaluate(&mut client, ("public", "docs"), Command::Delete, &r, &ctx(&roles.owner, None, None))
            .await
            .expect("evaluate");
        assert!(owner.allowed && !owner.rls_applies && owner.predicate == "true");
        assert!(owner.reason.contains("owns"), "{}", owner.reason);
        let bypass = evaluate(&mut client, ("public", "docs"), Command::Select, &r, &ctx(&roles.bypass, None, None))
            .await
            .expect("evaluate");
        assert!(bypass.allowed && bypass.reason.contains("BYPASSRLS"), "{}", bypass.reason);
        let nobody = evaluate(&mut client, ("public", "docs"), Command::Select, &r, &ctx(&roles.nobody, None, Some("t1")))
            .await
            .expect("evaluate");
        assert!(!nobody.allowed && nobody.reason.contains("lacks the SELECT privilege"), "{}", nobody.reason);
        let superuser = evaluate(&mut client, ("public", "docs"), Command::Select, &r, &SessionContext::default())
            .await
            .expect("evaluate");
        assert!(superuser.allowed && superuser.reason.contains("superuser"), "{}", superuser.reason);

        // Errors name what to fix.
        let bad = row(json!({"id": 1, "tenant": "t1"}));
        let err = evaluate(&mut client, ("public", "docs"), Command::Select, &bad, &SessionContext::default())
            .await
            .unwrap_err();
        assert!(matches!(&err, PolicyError::UnknownColumn { column, .. } if column == "tenant"), "{err}");
        let err = evaluate(&mut client, ("public", "nope"), Command::Select, &r, &SessionContext::default())
            .await
            .unwrap_err();
        assert!(matches!(err, PolicyError::TableNotFound { .. }), "{err}");
        let wrong_type = row(json!({"id": "one"}));
        let err = evaluate(&mut client, ("public", "docs"), Command::Select, &wrong_type, &SessionContext::default())
            .await
            .unwrap_err();
        assert!(matches!(err, PolicyError::Session(SessionError::Postgres { .. })), "{err}");

        // Nothing persisted and the connection holds no context afterwards.
        let r = client
            .query_one("SELECT current_user::text, current_setting('app.tenant_id', true), (SELECT count(*) FROM docs)", &[])
            .await
            .expect("plain");
        assert_eq!(r.get::<_, String>(0), "postgres");
        assert!(r.get::<_, Option<String>>(1).unwrap_or_default().is_empty());
        assert_eq!(r.get::<_, i64>(2), 0);
    })
    .await;
}
