//! The SQL guard against its corpus (`guard_cases`), plus the properties the corpus alone does
//! not show: verdicts are monotonic in the access mode, refusals point into the text, the
//! functions the guard reports match an independent walk of the parse tree, and the walker
//! fails closed on node types and fields it does not know.

mod guard_cases;

use guard_cases::{Expect, CASES, D, R, S};
use lockplane_engine::guard::{
    check, check_tree, parse_tree, AccessMode, StatementKind, DATA_FUNCTIONS, FUNCTIONS,
    LOCKPLANE_FUNCTIONS,
};
use serde_json::Value;
use std::collections::BTreeSet;

#[test]
fn corpus_is_large_enough() {
    assert!(CASES.len() >= 80, "only {} cases", CASES.len());
    let refused = CASES
        .iter()
        .filter(|c| matches!(c.expect, Expect::Refuse(_)))
        .count();
    let accepted = CASES.len() - refused;
    assert!(
        refused >= 60 && accepted >= 40,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn corpus_verdicts() {
    let mut failures = Vec::new();
    for case in CASES {
        let verdict = check(case.sql, case.mode);
        let fine = match (&case.expect, &verdict) {
            (Expect::Accept { kind, destructive }, Ok(checked)) => {
                checked.kind == *kind && checked.destructive.is_some() == *destructive
            }
            (Expect::Refuse(needle), Err(refusal)) => refusal
                .reason
                .to_lowercase()
                .contains(&needle.to_lowercase()),
            _ => false,
        };
        if !fine {
            failures.push(format!(
                "[{}] {:?}\n  expected {:?}\n  got      {:?}",
                case.mode, case.sql, case.expect, verdict
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn accepted_statements_are_accepted_alike_in_stronger_modes_and_refused_in_weaker() {
    for case in CASES {
        let Expect::Accept { kind, .. } = case.expect else {
            continue;
        };
        let checked = check(case.sql, case.mode).expect(case.sql);
        for mode in AccessMode::ALL {
            let verdict = check(case.sql, mode);
            if mode >= case.mode {
                assert_eq!(verdict.as_ref(), Ok(&checked), "{mode}: {}", case.sql);
            } else if mode < kind.required_mode() {
                assert!(verdict.is_err(), "{mode} accepted {}", case.sql);
            }
            if let Ok(checked) = verdict {
                if mode == AccessMode::ReadOnly {
                    assert!(
                        checked.read_only,
                        "accepted in read-only mode but writes: {}",
                        case.sql
                    );
                }
            }
        }
    }
}

#[test]
fn refusals_point_into_the_text_and_read_well() {
    for case in CASES {
        if let Err(refusal) = check(case.sql, case.mode) {
            if let Some(p) = refusal.position {
                assert!(p <= case.sql.len(), "{p} beyond {:?}", case.sql);
            }
            let shown = refusal.to_string();
            assert!(shown.starts_with("statement refused: "), "{shown}");
            assert!(shown.contains(&refusal.reason));
        }
    }
}

#[test]
fn nested_function_refusals_point_at_the_call() {
    let samples = [
        "CREATE TABLE t (a text DEFAULT pg_read_file('/etc/passwd'))",
        "SELECT * FROM users WHERE name = (SELECT pg_read_file('/etc/passwd'))",
        "INSERT INTO users (id) VALUES (1) RETURNING pg_read_file('/etc/passwd')",
        "CREATE POLICY p ON notes USING (pg_read_file('/etc/passwd') IS NOT NULL)",
    ];
    for sql in samples {
        let refusal = check(sql, S).unwrap_err();
        assert_eq!(refusal.position, sql.find("pg_read_file"), "{sql}");
    }
    let sql = "SELECT 1; DROP TABLE users";
    assert_eq!(check(sql, S).unwrap_err().position, sql.find("DROP"));
}

#[test]
fn parse_errors_carry_postgres_message_and_position() {
    let refusal = check("SELECT * FROM users WHERE", R).unwrap_err();
    assert!(
        refusal.reason.contains("syntax error at end of input"),
        "{refusal}"
    );
    assert_eq!(refusal.position, Some(25));
    // "FROM" occurs three times; the parser fails on the third.
    let sql = "SELECT 'FROM' FROM t FROM u";
    let refusal = check(sql, R).unwrap_err();
    assert!(
        refusal.reason.contains("syntax error at or near \"FROM\""),
        "{refusal}"
    );
    assert_eq!(refusal.position, Some(21));
    let sql = "SELECT 1 + + FROM t";
    assert_eq!(check(sql, R).unwrap_err().position, sql.find("FROM"));
    let sql = "SELECT 'x";
    assert_eq!(check(sql, R).unwrap_err().position, Some(7));
}

#[test]
fn read_only_flag_is_conservative() {
    let read_only = |sql: &str, mode| check(sql, mode).expect(sql).read_only;
    assert!(read_only("SELECT * FROM users", R));
    assert!(read_only("SHOW search_path", R));
    assert!(!read_only("SELECT * FROM users FOR UPDATE", D));
    assert!(!read_only("SELECT nextval('s')", D));
    assert!(!read_only("SELECT setval('s', 1)", D));
    assert!(!read_only(
        "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d",
        D
    ));
    assert!(!read_only("INSERT INTO t VALUES (1)", D));
    assert!(!read_only("CREATE TABLE t (a int)", S));
}

#[test]
fn destructive_reasons_say_what_is_lost() {
    let why = |sql: &str| check(sql, S).expect(sql).destructive.expect(sql);
    assert!(why("DROP TABLE users CASCADE").contains("CASCADE"));
    assert!(why("TRUNCATE users").contains("users"));
    assert!(why("DELETE FROM users").contains("every row of users"));
    assert!(why("REVOKE SELECT ON users FROM app").contains("users"));
    let both = why("ALTER TABLE users DROP COLUMN a, ALTER COLUMN b TYPE int");
    assert!(
        both.contains("DROP COLUMN a") && both.contains("ALTER COLUMN b TYPE"),
        "{both}"
    );
    assert_eq!(
        check("DELETE FROM users WHERE id = 1", S)
            .unwrap()
            .destructive,
        None
    );
}

/// Every `FuncCall` anywhere in the JSON tree, found by key rather than by the guard's
/// node-wrapper logic, with `pg_catalog.` removed.
fn calls_in(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "FuncCall" || key == "funccall" {
                    let parts: Vec<&str> = child["funcname"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|n| n["node"]["String"]["sval"].as_str())
                        .collect();
                    let name = match parts.as_slice() {
                        ["pg_catalog", name] => (*name).to_owned(),
                        _ => parts.join("."),
                    };
                    out.insert(name);
                }
                calls_in(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| calls_in(v, out)),
        _ => {}
    }
}

fn allowed(name: &str, mode: AccessMode) -> bool {
    FUNCTIONS.contains(&name)
        || LOCKPLANE_FUNCTIONS.contains(&name)
        || (mode >= AccessMode::Data && DATA_FUNCTIONS.contains(&name))
}

#[test]
fn reported_functions_match_an_independent_walk() {
    for case in CASES {
        let Ok(checked) = check(case.sql, case.mode) else {
            continue;
        };
        // Parse again, straight through pg_query, not through the guard.
        let parsed = pg_query::parse(case.sql, 0).expect(case.sql);
        let tree = serde_json::to_value(&parsed.protobuf).unwrap();
        let mut calls = BTreeSet::new();
        calls_in(&tree, &mut calls);
        let reported: BTreeSet<String> = checked.functions.iter().cloned().collect();
        assert_eq!(reported, calls, "{}", case.sql);
        for name in &calls {
            assert!(allowed(name, case.mode), "{name} accepted in {}", case.sql);
        }
    }
}

#[test]
fn the_guard_does_not_rely_on_pg_query_functions_helper() {
    // DESIGN §8: pg_query's functions() helper misses calls nested in defaults and CHECK
    // expressions. Whatever it reports for this statement, the guard's own walk finds both.
    let sql = "CREATE TABLE t (a text DEFAULT pg_read_file('/etc/passwd') CHECK (lower(a) <> ''))";
    let parsed = pg_query::parse(sql, 0).unwrap();
    let helper = parsed.functions();
    let mut walked = BTreeSet::new();
    calls_in(
        &serde_json::to_value(&parsed.protobuf).unwrap(),
        &mut walked,
    );
    assert!(
        walked.contains("pg_read_file") && walked.contains("lower"),
        "{walked:?}"
    );
    let refusal = check(sql, S).unwrap_err();
    assert!(
        refusal.reason.contains("pg_read_file"),
        "{refusal} (helper saw {helper:?})"
    );
}

#[test]
fn unknown_node_types_are_refused() {
    let mut tree = parse_tree("SELECT 1").unwrap();
    let stmt = tree["stmts"][0]["stmt"]["node"].as_object_mut().unwrap();
    let body = stmt.remove("SelectStmt").unwrap();
    stmt.insert("FutureStmt".into(), body);
    let refusal = check_tree(&tree, S).unwrap_err();
    assert!(
        refusal
            .reason
            .contains("`FutureStmt` is not on the guard's allow-list"),
        "{refusal}"
    );

    // A future expression node nested deep inside an accepted statement.
    let mut tree = parse_tree("SELECT lower('x') FROM t WHERE a = 1").unwrap();
    let where_clause = &mut tree["stmts"][0]["stmt"]["node"]["SelectStmt"]["where_clause"];
    *where_clause = serde_json::json!({"node": {"FutureExpr": {"location": 31}}});
    let refusal = check_tree(&tree, S).unwrap_err();
    assert!(refusal.reason.contains("FutureExpr"), "{refusal}");
    assert_eq!(refusal.position, Some(31));
}

#[test]
fn unknown_fields_and_odd_shapes_are_refused() {
    // A struct-typed field the guard has no type for (as a new clause would appear).
    let mut tree = parse_tree("SELECT 1").unwrap();
    tree["stmts"][0]["stmt"]["node"]["SelectStmt"]["future_clause"] =
        serde_json::json!({"funcname": [{"node": {"String": {"sval": "pg_read_file"}}}]});
    let refusal = check_tree(&tree, S).unwrap_err();
    assert!(
        refusal.reason.contains("SelectStmt.future_clause"),
        "{refusal}"
    );

    // A list element that is not a node.
    let mut tree = parse_tree("SELECT 1").unwrap();
    tree["stmts"][0]["stmt"]["node"]["SelectStmt"]["target_list"] = serde_json::json!([{"x": 1}]);
    assert!(check_tree(&tree, S).is_err());

    // A function name that is not a plain string.
    let mut tree = parse_tree("SELECT lower('x')").unwrap();
    let target = &mut tree["stmts"][0]["stmt"]["node"]["SelectStmt"]["target_list"][0];
    target["node"]["ResTarget"]["val"]["node"]["FuncCall"]["funcname"] =
        serde_json::json!([{"node": {"Integer": {"ival": 1}}}]);
    let refusal = check_tree(&tree, S).unwrap_err();
    assert!(
        refusal.reason.contains("not a plain identifier"),
        "{refusal}"
    );

    // Not a parse result at all.
    assert!(check_tree(&serde_json::json!({"stmts": 3}), S).is_err());
    assert!(check_tree(&serde_json::json!([]), S).is_err());
}

#[test]
fn deep_nesting_is_refused_or_checked_without_crashing() {
    for depth in [50, 1_000, 20_000] {
        let parens = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
        let _ = check(&parens, R);
        let selects = format!("SELECT {}1{}", "(SELECT ".repeat(depth), ")".repeat(depth));
        let _ = check(&selects, R);
        let calls = format!("SELECT {}'x'{}", "lower(".repeat(depth), ")".repeat(depth));
        if let Ok(checked) = check(&calls, R) {
            assert_eq!(checked.functions, vec!["lower".to_owned()]);
        }
    }
    let hidden = format!(
        "SELECT {}pg_read_file('x'){}",
        "lower(".repeat(60),
        ")".repeat(60)
    );
    assert!(check(&hidden, R).is_err());
}

#[test]
fn kinds_have_names_and_modes() {
    assert_eq!(StatementKind::CreateTable.name(), "CREATE TABLE");
    assert_eq!(StatementKind::Truncate.required_mode(), AccessMode::Data);
    assert_eq!(StatementKind::Select.required_mode(), AccessMode::ReadOnly);
    assert_eq!(
        serde_json::to_value(AccessMode::ReadOnly).unwrap(),
        serde_json::json!("read-only")
    );
}

/// Plans pass the same function and catalog rules as agent SQL, wherever the expression sits.
#[test]
fn plan_expressions_pass_the_function_allow_list() {
    use lockplane_engine::guard::check_expressions;
    let refused = [
        "CREATE VIEW v AS SELECT pg_read_file('/etc/passwd') AS x",
        "CREATE TABLE t (id int, x text DEFAULT pg_read_file('/etc/passwd'))",
        "ALTER TABLE t ALTER COLUMN x SET DEFAULT lo_import('/etc/passwd')::text",
        "ALTER TABLE t ADD CONSTRAINT c CHECK (pg_terminate_backend(1))",
        "CREATE TABLE t (id int, x text GENERATED ALWAYS AS (pg_ls_dir('.')) STORED)",
        "CREATE INDEX i ON t ((query_to_xml('select 1', true, true, '')::text))",
        "CREATE POLICY p ON t USING (pg_read_file('/etc/passwd') IS NOT NULL)",
        "CREATE VIEW v AS SELECT rolpassword FROM pg_authid",
        "CREATE VIEW v AS SELECT * FROM pg_catalog.pg_shadow",
        "CREATE VIEW v AS SELECT public.my_function(1)",
        "ALTER TABLE t ALTER COLUMN x TYPE int USING dblink_exec('x')::int",
    ];
    for sql in refused {
        let e = check_expressions(sql, AccessMode::Schema).expect_err(sql);
        assert!(e.position.is_some() || !e.reason.is_empty(), "{sql}: {e}");
    }
    let accepted = [
        "CREATE VIEW v AS SELECT lower(name) AS n, now() AS at FROM users",
        "CREATE TABLE t (id bigint DEFAULT nextval('t_id_seq'::regclass), u uuid DEFAULT gen_random_uuid())",
        "CREATE POLICY p ON t USING (tenant = lockplane.tenant_id())",
        "CREATE INDEX i ON t (lower(email)) WHERE deleted_at IS NULL",
        "DROP TABLE t",
    ];
    for sql in accepted {
        check_expressions(sql, AccessMode::Schema).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}
