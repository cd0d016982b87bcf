//! Lockplane's context helpers: `lockplane.tenant_id()` and `lockplane.user_id()`.
//!
//! Policies read the request's tenant and user from settings that Lockplane's `set_context`
//! sets (`app.tenant_id`, `app.user_id`, with `set_config`). The helpers wrap
//! `current_setting(…, true)` so that an unset or empty setting reads as `NULL` (and so matches
//! no row) instead of failing the query. They live in Lockplane's own schema, which a document
//! never manages; the DSL lets policies call them unqualified and qualifies the calls (see
//! [`super::to_catalog`]).

use crate::ident::{qualified, quote_ident, quote_literal};

/// The schema Lockplane installs its helpers in.
pub const HELPER_SCHEMA: &str = "lockplane";

/// The helper functions a policy may call unqualified, and the setting each one reads.
pub const HELPERS: &[(&str, &str)] = &[("tenant_id", "app.tenant_id"), ("user_id", "app.user_id")];

/// Names of the helper functions.
pub const HELPER_FUNCTIONS: &[&str] = &["tenant_id", "user_id"];

/// SQL that installs (or refreshes) the helpers. Idempotent; run it as the migration role
/// before any policy that calls a helper is created.
///
/// The functions are `STABLE` (a setting does not change within a statement) and plain SQL, so
/// the planner inlines them; every name inside is schema-qualified because the body runs with
/// the caller's `search_path`.
pub fn install_sql() -> String {
    install_statements()
        .iter()
        .map(|s| format!("{s};\n"))
        .collect()
}

/// The statements of [`install_sql`], one by one (without their `;`): what a plan runs as
/// its first steps when a policy calls a helper the live database lacks.
pub fn install_statements() -> Vec<String> {
    let schema = quote_ident(HELPER_SCHEMA);
    let mut out = vec![
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        format!(
            "COMMENT ON SCHEMA {schema} IS {}",
            quote_literal("Lockplane helper functions (managed by Lockplane)")
        ),
    ];
    for (name, setting) in HELPERS {
        let function = qualified(HELPER_SCHEMA, name);
        out.push(format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS pg_catalog.uuid\n  \
             LANGUAGE sql STABLE PARALLEL SAFE\n  \
             AS $lockplane$ SELECT NULLIF(pg_catalog.current_setting({}, true), '')::pg_catalog.uuid $lockplane$",
            quote_literal(setting)
        ));
        out.push(format!(
            "COMMENT ON FUNCTION {function}() IS {}",
            quote_literal(&format!(
                "The current {} ({setting}), NULL when unset",
                name.replace('_', " ")
            ))
        ));
    }
    out.push(format!("GRANT USAGE ON SCHEMA {schema} TO PUBLIC"));
    for (name, _) in HELPERS {
        out.push(format!(
            "GRANT EXECUTE ON FUNCTION {}() TO PUBLIC",
            qualified(HELPER_SCHEMA, name)
        ));
    }
    out
}

/// Whether `catalog` calls a helper (a policy, default, check or view naming
/// `lockplane.tenant_id()` or `lockplane.user_id()`).
pub fn used_by(catalog: &crate::catalog::Catalog) -> bool {
    let Ok(bytes) = crate::hash::canonical_json(catalog) else {
        return true;
    };
    let text = String::from_utf8_lossy(&bytes);
    HELPER_FUNCTIONS
        .iter()
        .any(|f| text.contains(&format!("{HELPER_SCHEMA}.{f}(")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_sql_parses_and_names_both_helpers() {
        let sql = install_sql();
        let parsed = pg_query::parse(&sql, 0).unwrap();
        assert_eq!(parsed.protobuf.stmts.len(), 9, "{sql}");
        for (name, setting) in HELPERS {
            assert!(
                sql.contains(&format!("\"lockplane\".\"{name}\"()")),
                "{sql}"
            );
            assert!(
                sql.contains(&format!("current_setting('{setting}', true)")),
                "{sql}"
            );
        }
    }
}
