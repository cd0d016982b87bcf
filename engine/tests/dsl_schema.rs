//! The DSL's JSON Schema, checked by an independent validator: it accepts the seed example
//! and everything the writer produces, and rejects unknown keys and wrong types.

use lockplane_engine::dsl::{self, Format};
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/dsl/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn validator() -> jsonschema::Validator {
    let schema = dsl::json_schema();
    assert!(
        jsonschema::meta::is_valid(&schema),
        "the schema is not a valid JSON Schema"
    );
    jsonschema::validator_for(&schema).expect("schema compiles")
}

/// A YAML document as the JSON value an editor's validator sees.
fn yaml_value(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("YAML")
}

fn problems(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn seed_example_is_valid() {
    let v = validator();
    for instance in [
        yaml_value(&fixture("seed.yaml")),
        serde_json::from_str(&fixture("seed.json")).unwrap(),
        yaml_value(&fixture("everything.yaml")),
    ] {
        assert_eq!(problems(&v, &instance), Vec::<String>::new());
    }
}

#[test]
fn written_documents_are_valid() {
    let v = validator();
    let catalog = dsl::load("everything.yaml", &fixture("everything.yaml"), Format::Yaml)
        .unwrap()
        .catalog;
    let json: Value = serde_json::from_str(&dsl::to_json(&catalog)).unwrap();
    assert_eq!(problems(&v, &json), Vec::<String>::new());
    assert_eq!(
        problems(&v, &yaml_value(&dsl::to_yaml(&catalog))),
        Vec::<String>::new()
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_rejected() {
    let v = validator();
    let unknown = yaml_value(
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          - { name: a, type: int, nul: true }\n",
    );
    let found = problems(&v, &unknown);
    assert!(!found.is_empty());
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("/schemas/public/tables/t/columns/0")),
        "{found:?}"
    );
    let wrong_type = yaml_value(
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          - { name: a, type: int, not_null: \"yes\" }\n",
    );
    assert!(!v.is_valid(&wrong_type));
    assert!(!v.is_valid(&yaml_value("version: 2\n")));
    assert!(!v.is_valid(&yaml_value("version: 1\nextra: true\n")));
    let bad_action = yaml_value(
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
         - { name: a, type: int, references: { table: u, on_delete: explode } }\n",
    );
    assert!(!v.is_valid(&bad_action));
}
