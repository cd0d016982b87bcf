//! Expressions of the document, read through pg_query: normalisation, Lockplane's context
//! helpers, and the column references that decide a check constraint's default name.

use std::collections::BTreeSet;

use crate::normalize;

use super::helpers::{HELPER_FUNCTIONS, HELPER_SCHEMA};

const SELECT_PREFIX: &str = "SELECT ";

/// pg_query's message without its generic prefix.
pub fn clean(message: &str) -> String {
    message
        .strip_prefix("Invalid statement: ")
        .unwrap_or(message)
        .to_owned()
}

/// The parse tree of `SELECT <text>` as generic JSON, which reaches every node whatever its
/// type: pg_query's own walkers cover only some node types.
fn tree(text: &str) -> Result<(String, serde_json::Value), String> {
    let sql = format!("{SELECT_PREFIX}{text}");
    let parsed = pg_query::parse(&sql, 0).map_err(|e| clean(&e.to_string()))?;
    let json = serde_json::to_value(&parsed.protobuf).map_err(|e| e.to_string())?;
    Ok((sql, json))
}

fn walk<'a>(value: &'a serde_json::Value, visit: &mut dyn FnMut(&'a str, &'a serde_json::Value)) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                visit(key, child);
                walk(child, visit);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, visit)),
        _ => {}
    }
}

/// The string values of a list of `String` nodes (function names, column reference fields).
fn strings(list: Option<&serde_json::Value>) -> Vec<&str> {
    list.and_then(|l| l.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.pointer("/node/String/sval").and_then(|s| s.as_str()))
                .collect()
        })
        .unwrap_or_default()
}

/// Normalises an expression, first qualifying unqualified calls of Lockplane's context helpers
/// (`tenant_id()` → `lockplane.tenant_id()`). The calls are found in the parse tree (so a
/// column or a string that happens to read `tenant_id` is left alone) and qualified at the
/// positions the parser reports for them.
pub fn expression_with_helpers(text: &str) -> Result<String, String> {
    thread_local! {
        static WITH_HELPERS: crate::normalize::Memo<Result<String, String>> = Default::default();
    }
    crate::normalize::memoized(&WITH_HELPERS, text, expression_with_helpers_uncached)
}

fn expression_with_helpers_uncached(text: &str) -> Result<String, String> {
    // Validate first, so that errors are about the text as written.
    normalize::expression(text).map_err(|e| clean(&e.message))?;
    let (sql, json) = tree(text)?;
    let mut offsets = Vec::new();
    walk(&json, &mut |key, node| {
        if key != "FuncCall" {
            return;
        }
        let name = strings(node.get("funcname"));
        let no_args = node
            .get("args")
            .and_then(|a| a.as_array())
            .is_none_or(|a| a.is_empty());
        let plain_call = !node
            .get("agg_star")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if let [name] = name.as_slice() {
            if HELPER_FUNCTIONS.contains(name) && no_args && plain_call {
                if let Some(offset) = node.get("location").and_then(|l| l.as_u64()) {
                    offsets.push(offset as usize);
                }
            }
        }
    });
    offsets.sort_unstable();
    offsets.dedup();
    let mut qualified = sql;
    for offset in offsets.into_iter().rev() {
        if !qualified.is_char_boundary(offset) || offset < SELECT_PREFIX.len() {
            return Err("unexpected position of a helper call".into());
        }
        qualified.insert_str(offset, &format!("{HELPER_SCHEMA}."));
    }
    let body = qualified
        .strip_prefix(SELECT_PREFIX)
        .ok_or_else(|| "unexpected expression shape".to_owned())?;
    normalize::expression(body).map_err(|e| clean(&e.message))
}

/// Normalises an expression as is.
pub fn expression(text: &str) -> Result<String, String> {
    normalize::expression(text).map_err(|e| clean(&e.message))
}

/// Column names referenced by an expression (the last part of each column reference).
pub fn column_refs(text: &str) -> Result<BTreeSet<String>, String> {
    let (_, json) = tree(text)?;
    let mut names = BTreeSet::new();
    walk(&json, &mut |key, node| {
        if key == "ColumnRef" {
            if let Some(last) = strings(node.get("fields")).last() {
                names.insert((*last).to_owned());
            }
        }
    });
    Ok(names)
}

/// Whether an expression contains a sub-query (not allowed in defaults, checks, generated
/// columns and index expressions).
pub fn has_subquery(text: &str) -> Result<bool, String> {
    let (_, json) = tree(text)?;
    let mut found = false;
    walk(&json, &mut |key, _| found |= key == "SubLink");
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_are_qualified_through_the_tree() {
        assert_eq!(
            expression_with_helpers("tenant_id() = tenant_id").unwrap(),
            "lockplane.tenant_id() = tenant_id"
        );
        assert_eq!(
            expression_with_helpers(
                "owner = user_id() AND note <> 'tenant_id()' AND lockplane.tenant_id() IS NOT NULL"
            )
            .unwrap(),
            "owner = lockplane.user_id() AND note <> 'tenant_id()' AND lockplane.tenant_id() IS NOT NULL"
        );
        // Inside a sub-query, in a cast, in a CASE, with odd spacing and quoting.
        assert_eq!(
            expression_with_helpers(
                "EXISTS (SELECT 1 FROM members m WHERE m.tenant = \"tenant_id\" ( ))"
            )
            .unwrap(),
            "EXISTS (SELECT 1 FROM members m WHERE m.tenant = lockplane.tenant_id())"
        );
        assert_eq!(
            expression_with_helpers("CASE WHEN tenant_id()::text = x THEN true END").unwrap(),
            "CASE WHEN lockplane.tenant_id()::text = x THEN true END"
        );
        // Another function of the same name with arguments is not ours.
        assert_eq!(
            expression_with_helpers("tenant_id(1) = 2").unwrap(),
            "tenant_id(1) = 2"
        );
        assert!(expression_with_helpers("tenant_id(").is_err());
    }

    #[test]
    fn column_references() {
        let refs = column_refs("qty > 0 AND t.qty < max_qty").unwrap();
        assert_eq!(
            refs.into_iter().collect::<Vec<_>>(),
            ["max_qty".to_string(), "qty".to_string()]
        );
        assert!(column_refs("now() > '2020-01-01'").unwrap().is_empty());
        assert!(has_subquery("x IN (SELECT 1)").unwrap());
        assert!(!has_subquery("x IN (1, 2)").unwrap());
    }
}
