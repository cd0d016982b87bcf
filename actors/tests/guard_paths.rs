//! One guard on every path into Postgres (issue 12), tried through the embedding API that the
//! MCP tools call, against a real server whose connection role has
//! `standard_conforming_strings = off` (a setting an operator may have):
//!
//! - every statement of the guard corpus the guard refuses is tried through `apply_sql` and
//!   `explain_sql` in its access mode, and dangerous statements in every mode;
//! - dangerous functions and catalogs as a view body, a policy, a default, a CHECK, a
//!   generated column and an index expression, through propose (`diff_catalog`) in every mode;
//!   applying a plan in `read-only` and `data` mode is refused;
//! - widening access and MERGE deletes need confirmation; an allow-list confines roles;
//! - a held lock neither stalls reads nor holds up another session; answers are bounded.
//!
//! After the attempts, Postgres itself is checked: the other backend is alive, no large object
//! exists, no object was created, every row is present, the role's settings are unchanged.

#[path = "../../engine/tests/guard_cases/mod.rs"]
mod guard_cases;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lockplane_actors::{Config, DatabaseId, Error, Lockplane, ShadowConfig};
use lockplane_engine::guard::AccessMode;
use lockplane_engine::ident::quote_ident;
use lockplane_engine::session::SessionContext;
use lockplane_engine::testkit;
use tokio_postgres::Client;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A database owned by a dedicated superuser login role with `standard_conforming_strings =
/// off`, holding `app.notes` (rows of two tenants, row-level security by tenant) and an app
/// role; dropped with the role at the end.
struct World {
    db: String,
    owner: String,
    app: String,
    url: String,
    /// A connection as the cluster's superuser, for checks.
    admin: Client,
    /// Another session, whose backend must survive.
    victim: Client,
    victim_pid: i32,
}

impl World {
    async fn new() -> World {
        let cluster = testkit::shared_cluster().expect("cluster");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let owner = format!("lp_gp_owner_{}_{n}", std::process::id());
        let app = format!("lp_gp_app_{}_{n}", std::process::id());
        let db = testkit::fresh_database("gp").await.expect("db");
        let root = cluster.connect(&db).await.expect("connect");
        let (o, a) = (quote_ident(&owner), quote_ident(&app));
        root.batch_execute(&format!(
            "CREATE ROLE {o} LOGIN SUPERUSER;
             ALTER ROLE {o} SET standard_conforming_strings = off;
             ALTER ROLE {o} SET backslash_quote = on;
             CREATE ROLE {a};
             CREATE SCHEMA app AUTHORIZATION {o};
             SET ROLE {o};
             CREATE TABLE app.notes (id int PRIMARY KEY, tenant text NOT NULL, body text);
             INSERT INTO app.notes VALUES (1, 't1', 'one'), (2, 't2', 'two'), (3, 't1', 'three');
             ALTER TABLE app.notes ENABLE ROW LEVEL SECURITY;
             CREATE POLICY by_tenant ON app.notes TO {a}
               USING (tenant = current_setting('app.tenant_id', true));
             GRANT USAGE ON SCHEMA app TO {a};
             GRANT SELECT, INSERT, UPDATE, DELETE ON app.notes TO {a};
             RESET ROLE;"
        ))
        .await
        .expect("setup");
        let victim = cluster.connect(&db).await.expect("victim");
        let victim_pid: i32 = victim
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        let url = format!(
            "postgres://{owner}@127.0.0.1:{}/{db}",
            cluster.config("postgres").get_ports()[0]
        );
        World {
            db,
            owner,
            app,
            url,
            admin: root,
            victim,
            victim_pid,
        }
    }

    async fn runtime(&self, mode: AccessMode, roles: &[&str]) -> (Lockplane, DatabaseId, Ledger) {
        let cluster = testkit::shared_cluster().expect("cluster");
        let ledger = tempfile::tempdir().expect("tempdir");
        let mut config = Config::new(ledger.path().join("ledger"));
        config.shadow = ShadowConfig::Url(cluster.url("postgres"));
        config.access_mode = mode;
        config.allowed_roles = roles.iter().map(|r| r.to_string()).collect();
        config.statement_timeout = Duration::from_secs(20);
        let lockplane = Lockplane::open(config).await.expect("open");
        let id = lockplane.attach(&self.url, None).await.expect("attach");
        (lockplane, id, Ledger(ledger))
    }

    /// What Postgres itself says after the attempts.
    async fn assert_untouched(&self) {
        self.victim
            .simple_query("SELECT 1")
            .await
            .expect("the other session's backend is alive");
        let los: i64 = self
            .admin
            .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
            .await
            .expect("large objects")
            .get(0);
        assert_eq!(los, 0, "a large object was imported");
        let rows: i64 = self
            .admin
            .query_one("SELECT count(*) FROM app.notes", &[])
            .await
            .expect("rows")
            .get(0);
        assert_eq!(rows, 3, "rows of app.notes were lost");
        let objects: Vec<String> = self
            .admin
            .query(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
                 ORDER BY 1",
                &[],
            )
            .await
            .expect("objects")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(objects, ["notes", "notes_pkey"], "objects were created");
        let policies: Vec<String> = self
            .admin
            .query("SELECT polname::text FROM pg_policy ORDER BY 1", &[])
            .await
            .expect("policies")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(policies, ["by_tenant"], "policies changed");
        let public_grants: i64 = self
            .admin
            .query_one(
                "SELECT count(*) FROM information_schema.role_table_grants \
                 WHERE grantee = 'PUBLIC' AND table_schema = 'app'",
                &[],
            )
            .await
            .expect("grants")
            .get(0);
        assert_eq!(public_grants, 0, "PUBLIC gained privileges");
        let settings: Vec<String> = self
            .admin
            .query(
                "SELECT unnest(rolconfig)::text FROM pg_roles WHERE rolname = $1 ORDER BY 1",
                &[&self.owner],
            )
            .await
            .expect("settings")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            settings,
            ["backslash_quote=on", "standard_conforming_strings=off"],
            "the role's settings changed"
        );
    }

    async fn drop(self) {
        drop(self.victim);
        drop(self.admin);
        let cluster = testkit::shared_cluster().expect("cluster");
        cluster.drop_database(&self.db).await.expect("drop db");
        let root = cluster.connect("postgres").await.expect("connect");
        root.batch_execute(&format!(
            "DROP ROLE {}; DROP ROLE {}",
            quote_ident(&self.app),
            quote_ident(&self.owner)
        ))
        .await
        .expect("drop roles");
    }
}

/// Keeps the ledger directory alive as long as the runtime.
struct Ledger(#[allow(dead_code)] tempfile::TempDir);

fn code(e: &Error) -> &'static str {
    e.code()
}

/// Statements that would do harm if they ran: each must be refused (or held for confirmation)
/// in every mode.
fn dangerous(victim: i32) -> Vec<String> {
    vec![
        "SELECT pg_read_file('/etc/hostname')".into(),
        format!("SELECT pg_terminate_backend({victim})"),
        "SELECT lo_import('/etc/hostname')".into(),
        "SELECT pg_ls_dir('.')".into(),
        "SELECT query_to_xml('DELETE FROM app.notes RETURNING 1', true, true, '')".into(),
        "SELECT rolpassword FROM pg_authid".into(),
        "SELECT set_config('standard_conforming_strings', 'off', false)".into(),
        "SET standard_conforming_strings = off".into(),
        "RESET ALL".into(),
        "COPY app.notes TO PROGRAM 'true'".into(),
        "CREATE FUNCTION app.f() RETURNS int LANGUAGE sql AS 'SELECT 1'".into(),
        "DO 'BEGIN DELETE FROM app.notes; END'".into(),
        "SELECT 1; DELETE FROM app.notes".into(),
        // Under standard_conforming_strings = off this is four statements to the server, one
        // to a parser with the standard setting.
        r"select 'a\''; commit; delete from app.notes; --'".into(),
        "DELETE FROM app.notes".into(),
        "MERGE INTO app.notes n USING app.notes m ON true WHEN MATCHED THEN DELETE".into(),
        "CREATE POLICY open_all ON app.notes USING (true)".into(),
        "GRANT ALL ON app.notes TO PUBLIC".into(),
        "ALTER TABLE app.notes DISABLE ROW LEVEL SECURITY".into(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_statement_path_is_guarded_in_every_mode() {
    let w = World::new().await;
    let refused_cases: Vec<&guard_cases::Case> = guard_cases::CASES
        .iter()
        .filter(|c| matches!(c.expect, guard_cases::Expect::Refuse(_)))
        .collect();
    assert!(refused_cases.len() >= 60);
    for mode in AccessMode::ALL {
        let (lp, db, _ledger) = w.runtime(mode, &[]).await;
        let ctx = SessionContext::default();
        // The corpus, through both tools, in each case's own mode.
        for case in refused_cases.iter().filter(|c| c.mode == mode) {
            let e = lp
                .apply_sql(&db, case.sql, &ctx, None, "agent:gp")
                .await
                .expect_err(case.sql);
            assert_eq!(code(&e), "sql_refused", "{}: {e}", case.sql);
            let e = lp
                .explain_sql(&db, case.sql, &ctx, false)
                .await
                .expect_err(case.sql);
            assert!(
                matches!(code(&e), "sql_refused"),
                "explain {}: {e}",
                case.sql
            );
        }
        // Dangerous statements, in every mode: refused, or held for a confirmation that is
        // never given.
        let mut statements = dangerous(w.victim_pid);
        if mode != AccessMode::Schema {
            // Schema changes are the schema mode's business only.
            statements.push("CREATE TABLE app.sneaky (x int)".into());
            statements.push("CREATE INDEX sneaky ON app.notes (body)".into());
        }
        for sql in statements {
            match lp.apply_sql(&db, &sql, &ctx, None, "agent:gp").await {
                Ok(r) => {
                    // Only the one-statement reading of the stacked text may run: a SELECT of
                    // one string, as the guard saw it.
                    assert!(sql.starts_with("select 'a"), "[{mode}] {sql} ran: {r:?}");
                    assert_eq!(r.kind, "SELECT");
                    assert_eq!(r.result.len(), 1, "{r:?}");
                }
                Err(e) => assert!(
                    matches!(code(&e), "sql_refused" | "needs_confirmation"),
                    "[{mode}] {sql}: {} {e}",
                    code(&e)
                ),
            }
            // EXPLAIN ANALYZE executes: only the one-statement reading of the stacked text
            // (a read) may get a plan.
            match lp.explain_sql(&db, &sql, &ctx, true).await {
                Ok(_) => assert!(sql.starts_with("select 'a"), "[{mode}] explained {sql}"),
                Err(e) => assert_eq!(code(&e), "sql_refused", "[{mode}] explain {sql}: {e}"),
            }
        }
    }
    w.assert_untouched().await;
    w.drop().await;
}

/// A document for schema `app` (owned whole by the document) whose `notes` table carries the
/// expression `expr` at `position`; `app` is the app role the live policy names.
fn document(position: &str, expr: &str, app: &str) -> String {
    let e = expr.replace('"', "\\\"");
    let mut doc = String::from(
        "version: 1\nschemas:\n  app:\n    tables:\n      notes:\n        columns:\n          \
         - { name: id, type: integer, pk: true }\n          \
         - { name: tenant, type: text, not_null: true }\n          \
         - { name: body, type: text }\n",
    );
    match position {
        "default" => doc.push_str(&format!(
            "          - {{ name: extra, type: text, default: \"{e}\" }}\n"
        )),
        "generated" => doc.push_str(&format!(
            "          - {{ name: extra, type: text, generated: \"{e}\" }}\n"
        )),
        _ => {}
    }
    match position {
        "check" => doc.push_str(&format!(
            "        checks:\n          - {{ name: sneaky, expression: \"({e}) IS NOT NULL\" }}\n"
        )),
        "index" => doc.push_str(&format!(
            "        indexes:\n          - {{ name: sneaky_idx, keys: [{{ expression: \"({e})\" }}] }}\n"
        )),
        _ => {}
    }
    doc.push_str(&format!(
        "        rls:\n          enabled: true\n          policies:\n            \
         - {{ name: by_tenant, roles: [{app}], using: \"tenant = current_setting('app.tenant_id', true)\" }}\n"
    ));
    match position {
        "policy" => doc.push_str(&format!(
            "            - {{ name: sneaky, roles: [{app}], as: restrictive, using: \"({e}) IS NOT NULL\" }}\n"
        )),
        "widen" => doc.push_str(&format!(
            "            - {{ name: everything, roles: [{app}], using: \"true\" }}\n"
        )),
        "view" => doc.push_str(&format!(
            "    views:\n      sneaky:\n        query: \"SELECT {e} AS x FROM app.notes\"\n"
        )),
        _ => {}
    }
    doc
}

#[tokio::test(flavor = "multi_thread")]
async fn expressions_in_documents_pass_the_same_guard() {
    let w = World::new().await;
    let expressions = [
        "pg_read_file('/etc/hostname')".to_owned(),
        format!("pg_terminate_backend({})::text", w.victim_pid),
        "lo_import('/etc/hostname')::text".to_owned(),
        "(SELECT rolpassword FROM pg_authid LIMIT 1)".to_owned(),
    ];
    let positions = ["view", "policy", "default", "check", "generated", "index"];
    let (lp, db, _ledger) = w.runtime(AccessMode::Schema, &[]).await;
    for expr in &expressions {
        for position in positions {
            let doc = document(position, expr, &w.app);
            let e = lp
                .propose(&db, "desired.yaml", &doc, "agent:gp")
                .await
                .expect_err(&format!("{position}: {expr}"));
            // The guard refuses the plan; a few positions Postgres refuses first while the
            // document is materialised on the shadow (generated columns must be immutable).
            assert!(
                matches!(
                    code(&e),
                    "plan_refused" | "shadow_failed" | "invalid_document"
                ),
                "{position} {expr}: {} {e}",
                code(&e)
            );
            // (A subquery is no valid default; the document is refused for that first.)
            let calls = !expr.starts_with("(SELECT");
            if calls && (position == "view" || position == "policy" || position == "default") {
                assert_eq!(code(&e), "plan_refused", "{position} {expr}: {e}");
                assert!(e.to_string().contains("refused by the SQL guard"), "{e}");
            }
        }
    }
    // The same document without the expression is an ordinary plan.
    let fine = document("view", "tenant", &w.app);
    let proposal = lp
        .propose(&db, "desired.yaml", &fine, "agent:gp")
        .await
        .expect("a harmless view is proposed");
    assert!(!proposal.plan.steps.is_empty());
    drop(lp);

    // read-only and data mode never change the schema: the plan is proposed, never applied.
    for mode in [AccessMode::ReadOnly, AccessMode::Data] {
        let (lp, db, _ledger) = w.runtime(mode, &[]).await;
        let e = lp
            .propose(
                &db,
                "desired.yaml",
                &document("view", &expressions[0], &w.app),
                "agent:gp",
            )
            .await
            .expect_err("refused in every mode");
        assert_eq!(code(&e), "plan_refused", "{e}");
        let p = lp
            .propose(&db, "desired.yaml", &fine, "agent:gp")
            .await
            .expect("proposing is a read");
        let e = lp
            .apply(&db, &p.plan.plan_id, None, "agent:gp")
            .await
            .expect_err("applying is refused");
        assert_eq!(code(&e), "access_denied", "{e}");
        assert!(e.to_string().contains(mode.name()), "{e}");
    }
    w.assert_untouched().await;
    w.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn widening_access_needs_confirmation_and_roles_are_confined() {
    let w = World::new().await;
    let (lp, db, _ledger) = w.runtime(AccessMode::Schema, &[&w.app]).await;
    // An allow-list confines: no role set is refused, not run as the (superuser) connection.
    let e = lp
        .apply_sql(
            &db,
            "SELECT current_user",
            &SessionContext::default(),
            None,
            "agent:gp",
        )
        .await
        .expect_err("no role");
    assert_eq!(code(&e), "role_required", "{e}");
    let tenant = SessionContext {
        role: Some(w.app.clone()),
        tenant_id: Some("t1".into()),
        user_id: None,
    };
    let r = lp
        .apply_sql(
            &db,
            "SELECT current_user::text, count(*) FROM app.notes GROUP BY 1",
            &tenant,
            None,
            "agent:gp",
        )
        .await
        .expect("as the app role");
    assert_eq!(r.result, vec![vec![Some(w.app.clone()), Some("2".into())]]);

    // Widening statements are held for confirmation, with the id to confirm.
    for sql in [
        "CREATE POLICY open_all ON app.notes USING (true)",
        "GRANT ALL ON app.notes TO PUBLIC",
        "MERGE INTO app.notes n USING app.notes m ON n.id = m.id WHEN MATCHED THEN DELETE",
    ] {
        let e = lp
            .apply_sql(&db, sql, &tenant, None, "agent:gp")
            .await
            .expect_err(sql);
        assert_eq!(code(&e), "needs_confirmation", "{sql}: {e}");
    }
    // A plan that opens rows to a role carries the hazard and needs the plan id confirmed.
    let doc = document("widen", "", &w.app);
    let p = lp
        .propose(&db, "desired.yaml", &doc, "agent:gp")
        .await
        .expect("proposed");
    assert!(p.plan.requires_confirmation, "{:#?}", p.plan.hazards);
    assert!(
        p.plan
            .hazard_names()
            .iter()
            .any(|h| h.contains("widens_access")),
        "{:?}",
        p.plan.hazard_names()
    );
    let e = lp
        .apply(&db, &p.plan.plan_id, None, "agent:gp")
        .await
        .expect_err("needs confirmation");
    assert_eq!(code(&e), "needs_confirmation", "{e}");
    drop(lp);
    w.assert_untouched().await;
    w.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_stalls_nothing_and_answers_are_bounded() {
    let w = World::new().await;
    let (lp, db, _ledger) = w.runtime(AccessMode::Data, &[]).await;
    let ctx = SessionContext::default();
    // Another session holds ACCESS EXCLUSIVE on the managed table.
    w.victim
        .batch_execute("BEGIN; LOCK TABLE app.notes IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let started = Instant::now();
    let r = lp
        .apply_sql(&db, "SELECT 1", &ctx, None, "agent:gp")
        .await
        .expect("a read that does not touch the table");
    assert_eq!(r.result, vec![vec![Some("1".into())]]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "SELECT 1 waited {:?} behind a lock on another table",
        started.elapsed()
    );
    // A write waits at most the session lock timeout, and names the lock; meanwhile another
    // session's read is not held up behind it.
    let writer = {
        let lp = lp.clone();
        let db = db.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = lp
                .apply_sql(
                    &db,
                    "INSERT INTO app.notes VALUES (9, 't9', 'x')",
                    &SessionContext::default(),
                    None,
                    "agent:gp",
                )
                .await;
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    lp.apply_sql(&db, "SELECT 2", &ctx, None, "agent:other")
        .await
        .expect("another session's read");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "read waited {:?}",
        t.elapsed()
    );
    let (written, waited) = writer.await.expect("join");
    let e = written.expect_err("the write cannot take its lock");
    assert!(waited < Duration::from_secs(15), "write waited {waited:?}");
    assert!(
        e.to_string().contains("lock"),
        "the error names the lock: {e}"
    );
    w.victim.batch_execute("ROLLBACK").await.expect("unlock");

    // Answers are bounded: rows, value size, bytes; the count stays exact.
    let r = lp
        .apply_sql(
            &db,
            "SELECT g FROM generate_series(1, 200000) g",
            &ctx,
            None,
            "agent:gp",
        )
        .await
        .expect("many rows");
    assert_eq!((r.rows, r.result.len()), (200_000, 1000));
    assert!(
        r.truncation
            .as_deref()
            .unwrap_or("")
            .contains("1000 of 200000"),
        "{:?}",
        r.truncation
    );
    let r = lp
        .apply_sql(
            &db,
            "SELECT repeat('x', 10 * 1024 * 1024)",
            &ctx,
            None,
            "agent:gp",
        )
        .await
        .expect("a large value");
    let value = r.result[0][0].clone().unwrap_or_default();
    assert!(value.len() < 70 * 1024, "{} bytes returned", value.len());
    assert!(
        value.ends_with("[cut: 10485760 bytes in all]"),
        "{}",
        &value[value.len() - 40..]
    );
    let r = lp
        .apply_sql(
            &db,
            "SELECT repeat('y', 60000) FROM generate_series(1, 100)",
            &ctx,
            None,
            "agent:gp",
        )
        .await
        .expect("many large values");
    let bytes: usize = r.result.iter().flatten().flatten().map(String::len).sum();
    assert!(
        bytes <= 1024 * 1024 && r.result.len() < 100,
        "{bytes} bytes in {} rows",
        r.result.len()
    );
    assert_eq!(r.rows, 100);
    // SHOW counts its row.
    let r = lp
        .apply_sql(
            &db,
            "SHOW standard_conforming_strings",
            &ctx,
            None,
            "agent:gp",
        )
        .await
        .expect("show");
    assert_eq!(
        (r.rows, r.result.clone()),
        (1, vec![vec![Some("on".into())]]),
        "pinned on"
    );

    // Memory: a 4 MB statement is refused by its size, and resident memory stays near where
    // it was.
    let before = resident_bytes();
    let huge = format!(
        "SELECT 1 WHERE 'x' IN ({})",
        vec!["'abcdefgh'"; 400_000].join(",")
    );
    assert!(huge.len() > 4_000_000);
    let e = lp
        .apply_sql(&db, &huge, &ctx, None, "agent:gp")
        .await
        .expect_err("too large");
    assert!(e.to_string().contains("256 KiB"), "{e}");
    // Just under the bound: accepted, parsed and run.
    let big = format!(
        "SELECT 1 WHERE 'x' IN ({})",
        vec!["'abcdefgh'"; 20_000].join(",")
    );
    assert!(big.len() < 256 * 1024);
    lp.apply_sql(&db, &big, &ctx, None, "agent:gp")
        .await
        .expect("a large statement under the bound");
    let after = resident_bytes();
    let growth = after.saturating_sub(before);
    eprintln!("resident memory: {before} → {after} bytes (+{growth})");
    assert!(
        growth < 64 * 1024 * 1024,
        "resident memory grew by {growth} bytes (bound: 64 MiB)"
    );
    drop(lp);
    w.drop().await;
}

/// This process's resident set size, from /proc.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_cannot_be_slipped_in_front_of_another_on_the_search_path() {
    let w = World::new().await;
    let (lp, db, _ledger) = w.runtime(AccessMode::Schema, &[]).await;
    let ctx = SessionContext::default();
    let run = |sql: String| {
        let (lp, db, ctx) = (lp.clone(), db.clone(), ctx.clone());
        async move { lp.apply_sql(&db, &sql, &ctx, None, "agent:gp").await }
    };
    run("CREATE TABLE public.items (id int)".into())
        .await
        .expect("a new table");
    // The connection user's own schema comes first on the default path ("$user", public).
    let own = quote_ident(&w.owner);
    run(format!("CREATE SCHEMA {own}")).await.expect("a schema");
    let e = run(format!("CREATE TABLE {own}.items (id int)"))
        .await
        .expect_err("would capture unqualified `items`");
    assert_eq!(e.code(), "sql_refused", "{e}");
    assert!(e.to_string().contains("public.items"), "{e}");
    let e = run(format!("CREATE VIEW {own}.items AS SELECT 1 AS id"))
        .await
        .expect_err("a view too");
    assert!(e.to_string().contains("search path"), "{e}");
    run(format!("CREATE TABLE {own}.other (id int)"))
        .await
        .expect("another name");
    let e = run(format!("ALTER TABLE {own}.other RENAME TO items"))
        .await
        .expect_err("renaming into the name too");
    assert!(e.to_string().contains("public.items"), "{e}");
    // Outside the search path the name is free.
    run("CREATE TABLE app.items (id int)".into())
        .await
        .expect("app is not on the path");
    let shadow: i64 = w
        .admin
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = 'items' AND n.nspname = $1",
            &[&w.owner],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(shadow, 0);
    drop(lp);
    w.admin
        .batch_execute(&format!("DROP SCHEMA {own} CASCADE"))
        .await
        .expect("drop schema");
    w.drop().await;
}
