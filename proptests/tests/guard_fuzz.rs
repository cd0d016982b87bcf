//! Properties of the SQL guard over generated input:
//!
//! - it never panics, on arbitrary strings, on soups of SQL tokens, and on random mutations of
//!   the corpus statements (insertions of dangerous fragments, semicolons, quotes and comment
//!   markers, deletions, duplications, case flips, splices of two statements);
//! - whatever it accepts is exactly one statement, calls no function outside the allow-list for
//!   its mode, and contains none of the always-refused node types: checked by walking the parse
//!   tree again here, independently of the guard's walker;
//! - what it accepts in read-only mode writes nothing, and a verdict of acceptance holds in
//!   every stronger mode;
//! - refusals point inside the text.

#[path = "../../engine/tests/guard_cases/mod.rs"]
mod guard_cases;

use lockplane_engine::guard::{
    check, parse_tree, AccessMode, Checked, DATA_FUNCTIONS, FUNCTIONS, LOCKPLANE_FUNCTIONS,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use std::collections::BTreeSet;

/// Node types that must never appear in an accepted statement, whatever the mode.
const NEVER: &[&str] = &[
    "AlterOwnerStmt",
    "AlterRoleStmt",
    "AlterSystemStmt",
    "CallStmt",
    "CopyStmt",
    "CreateEventTrigStmt",
    "CreateFunctionStmt",
    "CreatePlangStmt",
    "CreateRoleStmt",
    "CreateTableAsStmt",
    "DoStmt",
    "DropRoleStmt",
    "ExecuteStmt",
    "ExplainStmt",
    "GrantRoleStmt",
    "IntoClause",
    "ListenStmt",
    "LoadStmt",
    "NotifyStmt",
    "PrepareStmt",
    "ReassignOwnedStmt",
    "TransactionStmt",
    "VariableSetStmt",
];

/// Node types that write; never in an accepted read-only statement.
const WRITES: &[&str] = &[
    "DeleteStmt",
    "InsertStmt",
    "MergeStmt",
    "UpdateStmt",
    "TruncateStmt",
];

/// Fragments that tend to turn a harmless statement into a dangerous or malformed one.
const FRAGMENTS: &[&str] = &[
    ";",
    "; DROP TABLE users",
    "; SELECT 1",
    "--",
    "\n",
    "/*",
    "*/",
    "$$",
    "$x$",
    "'",
    "''",
    "\"",
    "E'\\\\'",
    "U&'",
    "(",
    ")",
    ",",
    "pg_read_file('/etc/passwd')",
    "pg_catalog.pg_read_file('x')",
    "\"pg_read_file\"('x')",
    "PG_SLEEP(1)",
    "lockplane.",
    "pg_catalog.",
    "public.",
    " UNION SELECT pg_ls_dir('.')",
    "WITH d AS (DELETE FROM t RETURNING *) ",
    " FOR UPDATE",
    " INTO x",
    " RETURNING set_config('role', 'x', false)",
    "nextval('s')",
    " OWNER TO postgres",
    " WHERE true",
    "DO $$ BEGIN END $$",
    "COPY t TO PROGRAM 'x'",
    "SET ROLE postgres",
    "pg_authid",
    "\u{0}",
    "é",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, String),
    Delete(usize, usize),
    Duplicate(usize, usize),
    FlipCase(usize, usize),
    Splice(usize, &'static str),
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FRAGMENTS).prop_map(str::to_owned),
        1 => "\\PC{0,6}",
    ]
}

fn seed() -> impl Strategy<Value = &'static str> {
    prop::sample::select(guard_cases::CASES.iter().map(|c| c.sql).collect::<Vec<_>>())
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), fragment()).prop_map(|(at, f)| Mutation::Insert(at, f)),
        1 => (any::<usize>(), 1usize..12).prop_map(|(at, n)| Mutation::Delete(at, n)),
        1 => (any::<usize>(), 1usize..30).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        1 => (any::<usize>(), 1usize..30).prop_map(|(at, n)| Mutation::FlipCase(at, n)),
        1 => (any::<usize>(), seed()).prop_map(|(at, s)| Mutation::Splice(at, s)),
    ]
}

/// Applies mutations on characters, so the result stays valid UTF-8.
fn mutate(sql: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = sql.chars().collect();
    for m in mutations {
        let len = chars.len();
        let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Insert(i, f) => {
                let i = at(*i);
                chars.splice(i..i, f.chars());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i);
                let end = (i + n).min(len);
                chars.drain(i..end);
            }
            Mutation::Duplicate(i, n) => {
                let i = at(*i);
                let end = (i + n).min(len);
                let copy: Vec<char> = chars[i..end].to_vec();
                chars.splice(end..end, copy);
            }
            Mutation::FlipCase(i, n) => {
                let i = at(*i);
                let end = (i + n).min(len);
                for c in &mut chars[i..end] {
                    *c = if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    };
                }
            }
            Mutation::Splice(i, other) => {
                let i = at(*i);
                let other: Vec<char> = other.chars().collect();
                let j = i.min(other.len());
                chars.truncate(i);
                chars.extend_from_slice(&other[j..]);
            }
        }
    }
    chars.into_iter().collect()
}

/// Every `FuncCall` in the tree, found by key, with `pg_catalog.` removed; and every node type
/// key, found as an object key starting with an upper-case letter directly under `node`, or as
/// the key `into_clause` holding a value.
fn walk(value: &Value, calls: &mut BTreeSet<String>, types: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(inner)) = map.get("node") {
                types.extend(inner.keys().cloned());
            }
            for (key, child) in map {
                if key == "FuncCall" {
                    let parts: Vec<&str> = child["funcname"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|n| n["node"]["String"]["sval"].as_str())
                        .collect();
                    calls.insert(match parts.as_slice() {
                        ["pg_catalog", name] => (*name).to_owned(),
                        _ => parts.join("."),
                    });
                }
                if key == "into_clause" && !child.is_null() {
                    types.insert("IntoClause".to_owned());
                }
                if (key == "larg" || key == "rarg") && !child.is_null() {
                    types.insert("SelectStmt".to_owned());
                }
                walk(child, calls, types);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, calls, types)),
        _ => {}
    }
}

/// Every relation and type the tree names, as `(schema, name)` with `""` for an unqualified
/// name: range variables and type names (a `TypeName` node or a struct-typed `type_name`
/// field). Column references and string constants are not collected: a column may be called
/// `pg_authid`, and so may a type in another schema.
fn identifiers(value: &Value, out: &mut BTreeSet<(String, String)>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(name)) = map.get("relname") {
                let schema = map.get("schemaname").and_then(Value::as_str).unwrap_or("");
                out.insert((schema.to_owned(), name.clone()));
            }
            for (key, child) in map {
                if let ("TypeName" | "type_name" | "typeName", Value::Object(t)) =
                    (key.as_str(), child)
                {
                    let parts: Vec<&str> = t
                        .get("names")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.pointer("/node/String/sval").and_then(Value::as_str))
                        .collect();
                    match parts.as_slice() {
                        [name] => {
                            out.insert((String::new(), (*name).to_owned()));
                        }
                        [schema, name] => {
                            out.insert(((*schema).to_owned(), (*name).to_owned()));
                        }
                        _ => {}
                    }
                }
                identifiers(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| identifiers(v, out)),
        _ => {}
    }
}

fn allowed(name: &str, mode: AccessMode) -> bool {
    FUNCTIONS.contains(&name)
        || LOCKPLANE_FUNCTIONS.contains(&name)
        || (mode >= AccessMode::Data && DATA_FUNCTIONS.contains(&name))
}

fn verify_accepted(sql: &str, mode: AccessMode, checked: &Checked) -> Result<(), TestCaseError> {
    let tree = parse_tree(sql).map_err(|r| TestCaseError::fail(format!("{r}")))?;
    let stmts = tree["stmts"].as_array().map(Vec::len).unwrap_or(0);
    prop_assert_eq!(stmts, 1, "accepted {} statements: {:?}", stmts, sql);
    let mut calls = BTreeSet::new();
    let mut types = BTreeSet::new();
    walk(&tree, &mut calls, &mut types);
    for name in &calls {
        prop_assert!(
            allowed(name, mode),
            "{} accepted in {} mode: {:?}",
            name,
            mode,
            sql
        );
    }
    let reported: BTreeSet<String> = checked.functions.iter().cloned().collect();
    prop_assert_eq!(&reported, &calls, "{:?}", sql);
    for ty in &types {
        prop_assert!(!NEVER.contains(&ty.as_str()), "{} accepted: {:?}", ty, sql);
    }
    if mode == AccessMode::ReadOnly {
        prop_assert!(
            checked.read_only,
            "read-only mode accepted a write: {:?}",
            sql
        );
        for ty in &types {
            prop_assert!(
                !WRITES.contains(&ty.as_str()),
                "{} in read-only: {:?}",
                ty,
                sql
            );
        }
        // Identifiers only: the text may still hold `pg_authid` inside a string literal.
        let mut names = BTreeSet::new();
        identifiers(&tree, &mut names);
        let catalog = |schema: &str| schema.is_empty() || schema == "pg_catalog";
        prop_assert!(
            !names
                .iter()
                .any(|(schema, name)| name == "pg_authid" && catalog(schema)),
            "pg_authid named in an accepted read-only statement: {:?}",
            sql
        );
    }
    Ok(())
}

fn verify(sql: &str) -> Result<(), TestCaseError> {
    let mut accepted_below: Option<Checked> = None;
    for mode in AccessMode::ALL {
        match check(sql, mode) {
            Ok(checked) => {
                verify_accepted(sql, mode, &checked)?;
                if let Some(before) = &accepted_below {
                    prop_assert_eq!(before, &checked, "verdict changed with mode: {:?}", sql);
                }
                accepted_below = Some(checked);
            }
            Err(refusal) => {
                prop_assert!(
                    accepted_below.is_none(),
                    "accepted in a weaker mode but refused in {}: {:?}: {}",
                    mode,
                    sql,
                    refusal
                );
                if let Some(p) = refusal.position {
                    prop_assert!(p <= sql.len(), "position {} beyond {:?}", p, sql);
                }
                prop_assert!(!refusal.reason.is_empty());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_statements(
        sql in seed(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        verify(&mutate(sql, &mutations))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings(sql in "\\PC{0,80}") {
        verify(&sql)?;
    }

    #[test]
    fn arbitrary_bytes_as_text(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        verify(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn token_soup(tokens in prop::collection::vec(prop::sample::select(vec![
        "SELECT", "FROM", "WHERE", "t", "users", "1", "'x'", "(", ")", ",", ";", "=", "AND",
        "pg_read_file", "lower", "pg_catalog.", "lockplane.", "tenant_id", "()", "UNION",
        "WITH", "AS", "DELETE", "INSERT", "INTO", "VALUES", "UPDATE", "SET", "RETURNING",
        "CREATE", "TABLE", "DEFAULT", "CHECK", "DROP", "ALTER", "OWNER", "TO", "ROLE",
        "DO", "$$", "--", "/*", "*/", "COPY", "PROGRAM", "FOR", "LATERAL", "nextval",
        "GRANT", "ON", "POLICY", "USING", "INDEX", "TRUNCATE", "pg_sleep", "TABLESAMPLE",
    ]), 1..24)) {
        verify(&tokens.join(" "))?;
    }
}

#[test]
fn mutation_keeps_text_valid_and_applies() {
    let out = mutate(
        "SELECT 1",
        &[Mutation::Insert(8, "; DROP TABLE t".to_owned())],
    );
    assert_eq!(out, "SELECT 1; DROP TABLE t");
    let out = mutate(
        "héllo",
        &[Mutation::Delete(1, 1), Mutation::FlipCase(0, 10)],
    );
    assert_eq!(out, "HLLO");
}
