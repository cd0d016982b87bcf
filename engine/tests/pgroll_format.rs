//! pgroll's migration format as an oracle: its JSON Schema (`schema.json`, tag v0.16.2),
//! compiled by an independent validator, together with Lockplane's copy of the rules pgroll
//! enforces in code (`lockplane_engine::pgroll::check_migration`), must give the verdict of
//! each of pgroll's own schema test cases (`testdata/*.txtar`) and accept its 56 examples.
//!
//! The files are read in place from `../shared/pgroll` (or `$LOCKPLANE_PGROLL_DIR`); without
//! them the tests print a notice and pass.

mod common;

use std::path::{Path, PathBuf};

use lockplane_engine::pgroll::{check_file, check_migration};
use lockplane_engine::testkit;
use serde_json::Value;

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

/// One txtar case: its JSON migration and its expected verdict.
fn txtar(path: &Path) -> (Value, bool) {
    let text = std::fs::read_to_string(path).expect("read txtar");
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- ").and_then(|l| l.strip_suffix(" --")) {
            sections.push((name.to_owned(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    let json = sections
        .iter()
        .find(|(n, _)| n.ends_with(".json"))
        .unwrap_or_else(|| panic!("{}: no .json section", path.display()));
    let valid = sections
        .iter()
        .find(|(n, _)| n == "valid")
        .unwrap_or_else(|| panic!("{}: no valid section", path.display()));
    let migration: Value = serde_json::from_str(&json.1)
        .unwrap_or_else(|e| panic!("{}: migration JSON: {e}", path.display()));
    let verdict = match valid.1.trim() {
        "true" => true,
        "false" => false,
        other => panic!("{}: verdict {other:?}", path.display()),
    };
    (migration, verdict)
}

#[test]
fn schema_and_code_rules_give_pgrolls_verdict_on_every_test_case() {
    let Some(dir) = testkit::pgroll_dir() else {
        return;
    };
    let validator = common::pgroll_validator(&dir);
    let cases = files(&dir.join("testdata"), "txtar");
    assert_eq!(cases.len(), 31, "pgroll v0.16.2 has 31 schema test cases");
    let (mut valid, mut invalid, mut by_code) = (0, 0, Vec::new());
    for path in &cases {
        let (migration, expected) = txtar(path);
        let schema_ok = validator.is_valid(&migration);
        let code = check_migration(&migration);
        let verdict = schema_ok && code.is_empty();
        assert_eq!(
            verdict,
            expected,
            "{}: schema says {schema_ok}, code rules say {code:?}",
            path.display()
        );
        if expected {
            valid += 1;
        } else {
            invalid += 1;
            if schema_ok {
                by_code.push(path.file_name().map(|n| n.to_string_lossy().into_owned()));
            }
        }
    }
    // Both verdicts are exercised, so neither half can pass by answering one way.
    assert_eq!((valid, invalid), (11, 20));
    // Which rejections only the code rules make (none in v0.16.2: the schema alone decides
    // every case; the code rules are still applied, so a rule wrongly refusing a valid case
    // fails above).
    assert_eq!(by_code, Vec::<Option<String>>::new());
}

#[test]
fn every_example_is_valid_by_schema_and_code_rules() {
    let Some(dir) = testkit::pgroll_dir() else {
        return;
    };
    let validator = common::pgroll_validator(&dir);
    let examples = files(&dir.join("examples"), "yaml");
    assert_eq!(examples.len(), 56, "pgroll v0.16.2 has 56 examples");
    for path in &examples {
        let text = std::fs::read_to_string(path).expect("read example");
        let migration: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: YAML: {e}", path.display()));
        let problems = common::schema_problems(&validator, &migration);
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        // Examples are files pgroll runs: the reader's rule (no `name`) holds too.
        let code = check_file(&migration);
        assert!(code.is_empty(), "{}: {code:?}", path.display());
    }
}

/// Each code-level rule, shown on a migration the schema accepts: what the schema alone
/// would let through and pgroll refuses when it validates.
#[test]
fn code_rules_refuse_what_the_schema_lets_through() {
    let Some(dir) = testkit::pgroll_dir() else {
        return;
    };
    let validator = common::pgroll_validator(&dir);
    let cases: &[(&str, Value, &str)] = &[
        (
            "raw SQL at start shares its migration",
            serde_json::json!({"operations": [
                {"sql": {"up": "SELECT 1"}},
                {"drop_table": {"name": "t"}}
            ]}),
            "cannot be executed with other operations",
        ),
        (
            "NOT NULL column added without default or up",
            serde_json::json!({"operations": [
                {"add_column": {"table": "t", "column": {"name": "c", "type": "text"}}}
            ]}),
            "field \"up\" is required",
        ),
        (
            "type change without down",
            serde_json::json!({"operations": [
                {"alter_column": {"table": "t", "column": "c", "type": "bigint",
                                  "up": "CAST(c AS bigint)", "down": ""}}
            ]}),
            "needs both \"up\" and \"down\"",
        ),
        (
            "SET NOT NULL without up",
            serde_json::json!({"operations": [
                {"alter_column": {"table": "t", "column": "c", "nullable": false,
                                  "up": "", "down": "c"}}
            ]}),
            "setting NOT NULL needs \"up\"",
        ),
        (
            "check constraint with empty index parameters",
            serde_json::json!({"operations": [
                {"create_table": {"name": "t", "columns": [{"name": "c", "type": "int"}],
                  "constraints": [{"name": "k", "type": "check", "check": "c > 0",
                                   "index_parameters": {}}]}}
            ]}),
            "cannot have index parameters",
        ),
        (
            "primary key given twice",
            serde_json::json!({"operations": [
                {"create_table": {"name": "t", "columns": [{"name": "c", "type": "int", "pk": true}],
                  "constraints": [{"name": "t_pkey", "type": "primary_key", "columns": ["c"]}]}}
            ]}),
            "already set by columns marked pk",
        ),
        (
            "identifier over 63 bytes",
            serde_json::json!({"operations": [
                {"create_table": {"name": "t".repeat(64), "columns": [{"name": "c", "type": "int"}]}}
            ]}),
            "longer than 63 bytes",
        ),
        (
            "create_constraint without a column's down",
            serde_json::json!({"operations": [
                {"create_constraint": {"table": "t", "name": "k", "type": "unique",
                  "columns": ["a", "b"], "up": {"a": "a", "b": "b"}, "down": {"a": "a"}}}
            ]}),
            "column \"b\" has no \"down\" expression",
        ),
        (
            "empty raw SQL",
            serde_json::json!({"operations": [{"sql": {"up": ""}}]}),
            "EmptyMigrationError",
        ),
    ];
    for (what, migration, expected) in cases {
        assert!(
            validator.is_valid(migration),
            "{what}: the schema should accept it: {:?}",
            common::schema_problems(&validator, migration)
        );
        let rules = check_migration(migration);
        assert!(
            rules.iter().any(|v| v.rule.contains(expected)),
            "{what}: expected a rule containing {expected:?}, got {rules:?}"
        );
    }
    // The reader's rule: pgroll 0.16 cannot run a file that names itself.
    let named = serde_json::json!({"name": "01_x", "operations": [{"drop_table": {"name": "t"}}]});
    assert!(validator.is_valid(&named));
    assert!(check_migration(&named).is_empty());
    assert!(check_file(&named).iter().any(|v| v.at == "name"));
}
