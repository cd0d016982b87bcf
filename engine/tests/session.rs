//! `explain_sql` and `apply_sql` against a real server: plans come back as JSON and writes are
//! never executed by EXPLAIN; statements run under the session context; destructive ones need
//! the confirmation bound to their text; roles outside the allow-list are refused; and two
//! sessions with different contexts, even running at the same time, never see each other's
//! context, nor does a plain query on the connection afterwards.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lockplane_engine::guard::AccessMode;
use lockplane_engine::ident::quote_ident;
use lockplane_engine::session::{
    confirmation_id, explain, run_sql, validate_context, SessionContext, SessionError,
};
use lockplane_engine::testkit;
use tokio_postgres::Client;

const T: Duration = Duration::from_secs(20);
static NEXT: AtomicU32 = AtomicU32::new(0);

async fn connect(db: &str) -> Client {
    testkit::shared_cluster()
        .expect("cluster")
        .connect(db)
        .await
        .expect("connect")
}

/// A fresh database with `items` and `gate`, a role with rights on them, the body run with the
/// database name and the role, and the role dropped afterwards even when the body panics
/// (roles are cluster-wide).
async fn scenario<F, Fut>(body: F)
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = testkit::fresh_database("sess").await.expect("db");
    let admin = connect(&db).await;
    let role = format!(
        "lp_test_sess_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let r = quote_ident(&role);
    admin
        .batch_execute(&format!(
            "CREATE ROLE {r};
             CREATE TABLE items (
               id int PRIMARY KEY,
               tenant_id text DEFAULT current_setting('app.tenant_id', true),
               name text);
             CREATE TABLE gate (x int);
             CREATE TABLE private_t (x int);
             INSERT INTO gate VALUES (1);
             GRANT SELECT, INSERT, UPDATE, DELETE ON items, gate TO {r};"
        ))
        .await
        .expect("setup");
    let outcome = tokio::spawn(body(db, role)).await;
    admin
        .batch_execute(&format!("DROP OWNED BY {r}; DROP ROLE {r}"))
        .await
        .expect("drop role");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn ctx(role: Option<&str>, user: Option<&str>, tenant: Option<&str>) -> SessionContext {
    SessionContext {
        role: role.map(str::to_owned),
        user_id: user.map(str::to_owned),
        tenant_id: tenant.map(str::to_owned),
    }
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect("count").get(0)
}

#[tokio::test]
async fn explain_returns_the_json_plan() {
    scenario(|db, role| async move {
        let mut c = connect(&db).await;
        let context = ctx(Some(&role), None, Some("t1"));
        let plan = explain(
            &mut c,
            "SELECT * FROM items WHERE id = 1",
            &context,
            false,
            AccessMode::ReadOnly,
            T,
        )
        .await
        .expect("explain");
        assert!(plan[0]["Plan"]["Node Type"].is_string(), "{plan}");
        assert!(plan[0].get("Execution Time").is_none(), "{plan}");

        let analyzed = explain(
            &mut c,
            "SELECT count(*) FROM items",
            &context,
            true,
            AccessMode::ReadOnly,
            T,
        )
        .await
        .expect("explain analyze");
        assert!(analyzed[0]["Execution Time"].is_number(), "{analyzed}");

        // Errors point into the caller's text, not into the EXPLAIN wrapper.
        let err = explain(
            &mut c,
            "SELECT nosuchcol FROM items",
            &context,
            false,
            AccessMode::ReadOnly,
            T,
        )
        .await
        .unwrap_err();
        match err {
            SessionError::Postgres { failure, .. } => assert_eq!(failure.position, Some(8)),
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn explain_never_executes_writes() {
    scenario(|db, role| async move {
        let mut c = connect(&db).await;
        c.batch_execute("INSERT INTO items VALUES (1, 't1', 'keep')")
            .await
            .expect("seed");
        let context = ctx(Some(&role), None, Some("t1"));
        for sql in [
            "INSERT INTO items (id, name) VALUES (2, 'new')",
            "DELETE FROM items WHERE id = 1",
            "UPDATE items SET name = 'changed' WHERE id = 1",
        ] {
            let plan = explain(&mut c, sql, &context, false, AccessMode::Data, T)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(plan[0]["Plan"].is_object(), "{plan}");
            let err = explain(&mut c, sql, &context, true, AccessMode::Data, T)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, SessionError::Refused { reason, .. } if reason.contains("ANALYZE")),
                "{sql}: {err}"
            );
        }
        assert_eq!(count(&c, "SELECT count(*) FROM items").await, 1);
        assert_eq!(
            count(&c, "SELECT count(*) FROM items WHERE name = 'keep'").await,
            1
        );
        // A write is refused outright where the mode does not allow it.
        let err = explain(
            &mut c,
            "DELETE FROM items WHERE id = 1",
            &context,
            false,
            AccessMode::ReadOnly,
            T,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SessionError::Refused { .. }), "{err}");
    })
    .await;
}

#[tokio::test]
async fn explain_refuses_what_the_guard_refuses() {
    scenario(|db, _role| async move {
        let mut c = connect(&db).await;
        let none = SessionContext::default();
        for sql in [
            "SELECT 1; SELECT 2",
            "DO $$ BEGIN PERFORM 1; END $$",
            "EXPLAIN ANALYZE DELETE FROM items",
            "CREATE TABLE x (a int)",
            "SELECT 1; DELETE FROM items",
        ] {
            let err = explain(&mut c, sql, &none, false, AccessMode::Schema, T)
                .await
                .unwrap_err();
            assert!(
                matches!(err, SessionError::Refused { .. }),
                "{sql}: {err:?}"
            );
        }
        assert_eq!(count(&c, "SELECT count(*) FROM gate").await, 1);
    })
    .await;
}

#[tokio::test]
async fn run_sql_runs_under_the_context() {
    scenario(|db, role| async move {
        let mut c = connect(&db).await;
        let context = ctx(Some(&role), Some("u7"), Some("t1"));
        let out = run_sql(
            &mut c,
            "INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b') RETURNING tenant_id",
            &context,
            AccessMode::Data,
            None,
            T,
        )
        .await
        .expect("insert");
        assert_eq!(out.rows, 2);
        assert_eq!(out.columns, ["tenant_id"]);
        assert_eq!(
            out.result,
            vec![vec![Some("t1".to_owned())], vec![Some("t1".to_owned())]]
        );
        assert!(out.step.outcome.is_ok() && out.step.rows == Some(2));
        assert_eq!(
            count(&c, "SELECT count(*) FROM items WHERE tenant_id = 't1'").await,
            2
        );

        let who = run_sql(
            &mut c,
            "SELECT current_user::text, current_setting('app.user_id', true), \
             current_setting('app.tenant_id', true)",
            &context,
            AccessMode::ReadOnly,
            None,
            T,
        )
        .await
        .expect("select");
        assert_eq!(
            who.result,
            vec![vec![
                Some(role.clone()),
                Some("u7".to_owned()),
                Some("t1".to_owned())
            ]]
        );

        // Postgres errors carry the position in the caller's text; nothing is committed.
        let err = run_sql(
            &mut c,
            "INSERT INTO items (id, nme) VALUES (3, 'c')",
            &context,
            AccessMode::Data,
            None,
            T,
        )
        .await
        .unwrap_err();
        match &err {
            SessionError::Postgres { failure, .. } => {
                assert_eq!(failure.sqlstate.as_deref(), Some("42703"));
                assert_eq!(failure.position, Some(24), "{err}");
            }
            other => panic!("{other:?}"),
        }
        // The role has no rights on objects it was not granted.
        let err = run_sql(
            &mut c,
            "SELECT count(*) FROM private_t",
            &context,
            AccessMode::ReadOnly,
            None,
            T,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
        // The statement timeout holds and the connection stays usable.
        let err = run_sql(
            &mut c,
            "SELECT count(*) FROM generate_series(1, 1000000000)",
            &context,
            AccessMode::ReadOnly,
            None,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        match &err {
            SessionError::Postgres { failure, .. } => assert!(failure.timed_out, "{err}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(count(&c, "SELECT count(*) FROM items").await, 2);
    })
    .await;
}

#[tokio::test]
async fn destructive_statements_need_their_confirmation() {
    scenario(|db, role| async move {
        let mut c = connect(&db).await;
        c.batch_execute("INSERT INTO items VALUES (1, 't1', 'a'), (2, 't1', 'b')")
            .await
            .expect("seed");
        let context = ctx(Some(&role), None, Some("t1"));
        let sql = "DELETE FROM items";
        let err = run_sql(&mut c, sql, &context, AccessMode::Data, None, T)
            .await
            .unwrap_err();
        let id = match &err {
            SessionError::NeedsConfirmation {
                confirmation_id, ..
            } => confirmation_id.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(id, confirmation_id(sql));
        assert!(err.to_string().contains(&id), "{err}");
        assert_eq!(count(&c, "SELECT count(*) FROM items").await, 2);

        // Another statement's id does not confirm this one.
        let other = confirmation_id("DELETE FROM gate");
        let err = run_sql(&mut c, sql, &context, AccessMode::Data, Some(&other), T)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SessionError::WrongConfirmation { confirmation_id, .. } if *confirmation_id == id),
            "{err:?}"
        );
        assert_eq!(count(&c, "SELECT count(*) FROM items").await, 2);

        let out = run_sql(&mut c, sql, &context, AccessMode::Data, Some(&id), T)
            .await
            .expect("confirmed delete");
        assert_eq!(out.rows, 2);
        assert!(out.destructive.is_some());
        assert_eq!(count(&c, "SELECT count(*) FROM items").await, 0);

        // A statement with a WHERE is not destructive and runs without confirmation.
        c.batch_execute("INSERT INTO items VALUES (3, 't1', 'c')")
            .await
            .expect("seed");
        let out = run_sql(
            &mut c,
            "DELETE FROM items WHERE id = 3",
            &context,
            AccessMode::Data,
            None,
            T,
        )
        .await
        .expect("delete");
        assert_eq!((out.rows, out.destructive), (1, None));
    })
    .await;
}

#[tokio::test]
async fn roles_outside_the_allow_list_are_refused() {
    scenario(|_db, role| async move {
        let allowed = vec![role.clone()];
        assert!(validate_context(&ctx(Some(&role), Some("u"), Some("t")), &allowed).is_ok());
        // An allow-list confines: no role is refused, not run as the connection user.
        assert!(matches!(
            validate_context(&ctx(None, Some("u"), None), &allowed),
            Err(SessionError::RoleRequired { .. })
        ));
        assert!(validate_context(&ctx(None, Some("u"), None), &[]).is_ok());
        let err = validate_context(&ctx(Some("postgres"), None, None), &allowed).unwrap_err();
        match &err {
            SessionError::RoleNotAllowed {
                role: r,
                allowed: a,
            } => {
                assert_eq!(r, "postgres");
                assert_eq!(a, &allowed);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(&role), "{err}");
        // Case matters: role names are exact.
        let err =
            validate_context(&ctx(Some(&role.to_uppercase()), None, None), &allowed).unwrap_err();
        assert!(matches!(err, SessionError::RoleNotAllowed { .. }));
        // Nothing is allowed when the deployment allows no role.
        assert!(validate_context(&ctx(Some(&role), None, None), &[]).is_err());
    })
    .await;
}

#[tokio::test]
async fn sessions_never_see_each_others_context() {
    scenario(|db, role| async move {
        let admin = connect(&db).await;
        let mut a = connect(&db).await;
        let mut b = connect(&db).await;
        let ctx_a = ctx(Some(&role), Some("ua"), Some("tenant-a"));
        let ctx_b = ctx(Some(&role), Some("ub"), Some("tenant-b"));
        let probe = "SELECT current_setting('app.tenant_id', true), \
                     current_setting('app.user_id', true), (SELECT count(*) FROM gate)";

        // Hold both statements on a lock until both are running, so they really overlap.
        admin
            .batch_execute("BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock");
        let release = async {
            for _ in 0..200 {
                let waiting = count(
                    &admin,
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .await;
                if waiting == 2 {
                    admin.batch_execute("COMMIT").await.expect("unlock");
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            admin.batch_execute("COMMIT").await.expect("unlock");
            false
        };
        let (ra, rb, overlapped) = tokio::join!(
            run_sql(&mut a, probe, &ctx_a, AccessMode::ReadOnly, None, T),
            run_sql(&mut b, probe, &ctx_b, AccessMode::ReadOnly, None, T),
            release
        );
        assert!(
            overlapped,
            "both sessions should have waited on the lock together"
        );
        let row = |r: Result<lockplane_engine::session::SqlOutcome, SessionError>| {
            r.expect("probe").result.remove(0)
        };
        assert_eq!(
            row(ra),
            [Some("tenant-a".into()), Some("ua".into()), Some("1".into())]
        );
        assert_eq!(
            row(rb),
            [Some("tenant-b".into()), Some("ub".into()), Some("1".into())]
        );

        // After the call a plain query on the same connection sees no context and no role.
        for client in [&a, &b] {
            let r = client
                .query_one(
                    "SELECT current_setting('app.tenant_id', true), \
                     current_setting('app.user_id', true), current_user::text",
                    &[],
                )
                .await
                .expect("plain");
            for i in 0..2 {
                let v: Option<String> = r.get(i);
                assert!(v.as_deref().unwrap_or("").is_empty(), "leaked: {v:?}");
            }
            assert_eq!(r.get::<_, String>(2), "postgres");
        }

        // Two sessions taking turns on one (pooled) connection: each sees only its own, and
        // a session without a tenant sees none, not the previous one's.
        for (context, expect) in [
            (&ctx_a, "tenant-a"),
            (&ctx_b, "tenant-b"),
            (&ctx(None, None, None), ""),
        ] {
            let out = run_sql(&mut a, probe, context, AccessMode::ReadOnly, None, T)
                .await
                .expect("probe");
            assert_eq!(out.result[0][0].as_deref(), Some(expect));
        }
    })
    .await;
}

/// An agent's `ALTER` through `run_sql` behind a session idle in a transaction on the table
/// gives up within the short lock timeout (`55P03`) instead of queueing the application's
/// queries behind it until the statement timeout; nothing is changed.
#[tokio::test]
async fn a_blocked_write_gives_up_within_the_lock_timeout() {
    scenario(|db, _| async move {
        let blocker = connect(&db).await;
        blocker
            .batch_execute("BEGIN; SELECT count(*) FROM gate")
            .await
            .expect("block");
        let mut c = connect(&db).await;
        let started = std::time::Instant::now();
        let err = run_sql(
            &mut c,
            "ALTER TABLE gate ADD COLUMN y int",
            &ctx(None, None, None),
            AccessMode::Schema,
            None,
            T,
        )
        .await
        .expect_err("blocked");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "waited {took:?}: {err}");
        match &err {
            SessionError::Postgres { failure, .. } => {
                assert_eq!(failure.sqlstate.as_deref(), Some("55P03"), "{err}")
            }
            other => panic!("unexpected: {other}"),
        }
        blocker.batch_execute("ROLLBACK").await.expect("release");
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'gate'"
            )
            .await,
            1
        );
    })
    .await;
}
