//! `lockplane init`: the least-privilege roles Lockplane works with, as SQL a DBA (or a
//! superuser session, once) runs against the managed database.
//!
//! - `lp_migrator` — the role plans are applied as: owns the managed schemas, everything in
//!   them and Lockplane's helper schema, may create schemas in the database; `NOSUPERUSER`,
//!   `NOBYPASSRLS`, `NOCREATEDB`, `NOREPLICATION`, and `NOCREATEROLE` unless asked
//!   ([`InitOptions::create_role`]), so a document's `GRANT`s and role memberships stay within
//!   what a DBA set up.
//! - `lp_runtime_read`, `lp_runtime_write` — group roles (`NOLOGIN`) the application's login
//!   roles are made members of: `USAGE` on the managed schemas and nothing else; their table
//!   privileges are the ones the document's `grants:` give them, subject to row-level
//!   security (neither bypasses it).
//!
//! Every statement is idempotent (a second run changes nothing and fails on nothing); pure:
//! this module writes the SQL, the caller shows it and runs it.

use crate::ident::{quote_ident, quote_literal};

/// The role plans are applied as.
pub const MIGRATOR: &str = "lp_migrator";
/// The application's read-only group role.
pub const RUNTIME_READ: &str = "lp_runtime_read";
/// The application's read-write group role.
pub const RUNTIME_WRITE: &str = "lp_runtime_write";

/// What `init` sets up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// The schemas Lockplane manages (default `public`).
    pub schemas: Vec<String>,
    /// Give `lp_migrator` `CREATEROLE` (documents that create roles need it).
    pub create_role: bool,
    /// `lp_migrator`'s password; `None` keeps the one it has (or none, for peer or
    /// certificate authentication).
    pub password: Option<String>,
}

fn ensure_role(name: &str, login: bool) -> String {
    format!(
        "DO $lp$ BEGIN\n  \
           IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {lit}) THEN\n    \
             CREATE ROLE {id} {login};\n  \
           END IF;\n\
         END $lp$",
        lit = quote_literal(name),
        id = quote_ident(name),
        login = if login { "LOGIN" } else { "NOLOGIN" }
    )
}

/// Hands every object of `schema` to `lp_migrator`: relations (sequences owned by a column
/// follow their table), types, functions and procedures.
fn own_everything_in(schema: &str) -> String {
    format!(
        "DO $lp$ DECLARE r record; BEGIN\n  \
           FOR r IN SELECT c.oid::regclass AS obj, c.relkind FROM pg_catalog.pg_class c\n      \
             WHERE c.relnamespace = {ns}::regnamespace AND c.relkind IN ('r','p','v','m','f','S')\n        \
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d\n          \
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid\n            \
                   AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))\n  \
           LOOP\n    \
             EXECUTE format('ALTER %s %s OWNER TO {migrator}',\n      \
               CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'\n        \
                 WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,\n      \
               r.obj);\n  \
           END LOOP;\n  \
           FOR r IN SELECT t.oid::regtype AS obj FROM pg_catalog.pg_type t\n      \
             WHERE t.typnamespace = {ns}::regnamespace AND t.typtype IN ('e', 'd', 'r')\n  \
           LOOP\n    \
             EXECUTE format('ALTER TYPE %s OWNER TO {migrator}', r.obj);\n  \
           END LOOP;\n  \
           FOR r IN SELECT p.oid::regprocedure AS obj, p.prokind FROM pg_catalog.pg_proc p\n      \
             WHERE p.pronamespace = {ns}::regnamespace AND p.prokind IN ('f', 'p')\n        \
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d\n          \
                 WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')\n  \
           LOOP\n    \
             EXECUTE format('ALTER %s %s OWNER TO {migrator}',\n      \
               CASE r.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, r.obj);\n  \
           END LOOP;\n\
         END $lp$",
        ns = quote_literal(&quote_ident(schema)),
        migrator = quote_ident(MIGRATOR),
    )
}

/// The statements of `lockplane init`, in order.
pub fn init_sql(opts: &InitOptions) -> Vec<String> {
    let migrator = quote_ident(MIGRATOR);
    let mut sql = vec![
        ensure_role(MIGRATOR, true),
        ensure_role(RUNTIME_READ, false),
        ensure_role(RUNTIME_WRITE, false),
        format!(
            "ALTER ROLE {migrator} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOREPLICATION {}{}",
            if opts.create_role {
                "CREATEROLE"
            } else {
                "NOCREATEROLE"
            },
            opts.password
                .as_deref()
                .map(|p| format!(" PASSWORD {}", quote_literal(p)))
                .unwrap_or_default()
        ),
    ];
    for role in [RUNTIME_READ, RUNTIME_WRITE] {
        sql.push(format!(
            "ALTER ROLE {} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION",
            quote_ident(role)
        ));
    }
    // CREATE on the database: a document may add schemas.
    sql.push(format!(
        "DO $lp$ BEGIN EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO {migrator}', \
         pg_catalog.current_database()); END $lp$"
    ));
    let schemas: Vec<String> = if opts.schemas.is_empty() {
        vec!["public".to_owned()]
    } else {
        opts.schemas.clone()
    };
    for schema in &schemas {
        let s = quote_ident(schema);
        sql.push(format!("CREATE SCHEMA IF NOT EXISTS {s}"));
        sql.push(format!("ALTER SCHEMA {s} OWNER TO {migrator}"));
        sql.push(own_everything_in(schema));
        sql.push(format!(
            "GRANT USAGE ON SCHEMA {s} TO {}, {}",
            quote_ident(RUNTIME_READ),
            quote_ident(RUNTIME_WRITE)
        ));
    }
    // Lockplane's helper schema: the helpers policies call, and where online migrations keep
    // their state; the migrator owns it so that plans can refresh the helpers.
    sql.extend(crate::dsl::helpers::install_statements());
    let helper = crate::dsl::helpers::HELPER_SCHEMA;
    sql.push(format!(
        "ALTER SCHEMA {} OWNER TO {migrator}",
        quote_ident(helper)
    ));
    sql.push(own_everything_in(helper));
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_parses_and_roles_are_least_privilege() {
        let sql = init_sql(&InitOptions::default());
        for s in &sql {
            pg_query::parse(s, 0).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        let text = sql.join(";\n");
        assert!(text.contains("NOSUPERUSER NOBYPASSRLS NOCREATEDB NOREPLICATION NOCREATEROLE"));
        assert!(!text.contains(" SUPERUSER"));
        let asked = init_sql(&InitOptions {
            create_role: true,
            password: Some("it's".into()),
            ..InitOptions::default()
        })
        .join(";\n");
        assert!(
            asked.contains("NOREPLICATION CREATEROLE PASSWORD 'it''s'"),
            "{asked}"
        );
    }
}
