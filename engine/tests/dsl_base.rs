//! The document's `base:` key: read and validated (position and path on a bad hash), not part
//! of the catalog (the document hash does not move), written by `to_yaml_with_base` /
//! `to_json_with_base`, described by the JSON Schema, and carried through a real
//! introspection: introspect → YAML with base → load gives the same catalog and the base.

use lockplane_engine::dsl::{self, Format};
use lockplane_engine::{catalog_hash, introspect, testkit, CatalogHash, IntrospectOptions};
use serde_json::Value;

const HASH: &str = "sha3-256:6f1ed002ab5595859014ebf0951522d9c3c2a2d3d3a5b7f0b0c1d2e3f4a5b6c7";

const BODY: &str = "schemas:\n  app:\n    tables:\n      notes:\n        columns:\n          \
                    - { name: id, type: bigint, pk: true }\n          - { name: body, type: text }\n";

fn with_base(base: &str) -> String {
    format!("version: 1\nbase: {base}\n{BODY}")
}

#[test]
fn base_is_read_and_is_not_part_of_the_catalog() {
    let plain = dsl::load("doc.yaml", &format!("version: 1\n{BODY}"), Format::Yaml).unwrap();
    let based = dsl::load("doc.yaml", &with_base(&format!("\"{HASH}\"")), Format::Yaml).unwrap();
    assert_eq!(plain.document.base, None);
    assert_eq!(based.document.base, Some(CatalogHash(HASH.into())));
    assert_eq!(based.catalog, plain.catalog);
    assert_eq!(
        catalog_hash(&based.catalog).unwrap(),
        catalog_hash(&plain.catalog).unwrap(),
        "the base does not change the document hash"
    );
    // Unquoted works too (YAML reads it as a string), and so does JSON.
    let bare = dsl::load("doc.yaml", &with_base(HASH), Format::Yaml).unwrap();
    assert_eq!(bare.document.base, based.document.base);
    let json = format!("{{\"version\": 1, \"base\": \"{HASH}\", \"schemas\": {{}}}}");
    let from_json = dsl::load("doc.json", &json, Format::Json).unwrap();
    assert_eq!(from_json.document.base, based.document.base);
    // `base: null` is the same as no base.
    let null = dsl::load("doc.yaml", &with_base("null"), Format::Yaml).unwrap();
    assert_eq!(null.document.base, None);
}

#[test]
fn a_bad_base_is_an_error_with_its_place() {
    let upper = HASH.to_uppercase().replace("SHA3-256", "sha3-256");
    for (value, message) in [
        (
            "\"sha3-256:abc\"".to_owned(),
            "`sha3-256:abc` is not a catalog hash".to_owned(),
        ),
        (
            format!("\"{upper}\""),
            format!("`{upper}` is not a catalog hash"),
        ),
        (
            format!("\"{}\"", HASH.replace("sha3-256", "sha256")),
            format!(
                "`{}` is not a catalog hash",
                HASH.replace("sha3-256", "sha256")
            ),
        ),
        (
            "12".to_owned(),
            "expected a string, found an integer".to_owned(),
        ),
    ] {
        let errors = dsl::load("doc.yaml", &with_base(&value), Format::Yaml)
            .expect_err(&value)
            .errors;
        assert_eq!(errors.len(), 1, "{value}: {errors:?}");
        let e = &errors[0];
        assert_eq!((e.path.as_str(), e.line, e.column), ("base", 2, 7), "{e}");
        assert_eq!(e.message, message);
        assert!(
            e.to_string().starts_with("doc.yaml:2:7: base: "),
            "{}",
            e.to_string()
        );
    }
    let hint = dsl::load("doc.yaml", &with_base("\"x\""), Format::Yaml)
        .expect_err("bad")
        .errors[0]
        .hint
        .clone()
        .unwrap_or_default();
    assert!(hint.contains("64 lower-case hex digits"), "{hint}");
    assert!(hint.contains("remove `base:`"), "{hint}");
    // In JSON too, with its position.
    let json = "{\n  \"version\": 1,\n  \"base\": \"nope\"\n}";
    let errors = dsl::load("doc.json", json, Format::Json)
        .expect_err("bad")
        .errors;
    assert_eq!(
        (errors[0].path.as_str(), errors[0].line, errors[0].column),
        ("base", 3, 11)
    );
}

#[test]
fn the_writers_keep_the_base_and_loading_gives_it_back() {
    let loaded = dsl::load("doc.yaml", &format!("version: 1\n{BODY}"), Format::Yaml).unwrap();
    let base = CatalogHash(HASH.into());
    let yaml = dsl::to_yaml_with_base(&loaded.catalog, Some(&base));
    assert!(
        yaml.starts_with(&format!("version: 1\nbase: \"{HASH}\"\n")),
        "{yaml}"
    );
    let json = dsl::to_json_with_base(&loaded.catalog, Some(&base));
    for (text, format) in [(&yaml, Format::Yaml), (&json, Format::Json)] {
        let back = dsl::load("back", text, format).unwrap();
        assert_eq!(back.catalog, loaded.catalog, "{text}");
        assert_eq!(back.document.base.as_ref(), Some(&base), "{text}");
        // And the document writer writes what it read.
        let doc_yaml = dsl::document_to_yaml(&back.document);
        assert!(
            doc_yaml.contains(&format!("base: \"{HASH}\"")),
            "{doc_yaml}"
        );
    }
    assert_eq!(
        dsl::to_yaml_with_base(&loaded.catalog, None),
        dsl::to_yaml(&loaded.catalog)
    );
    assert!(!dsl::to_yaml(&loaded.catalog).contains("base:"));
    assert!(!dsl::to_json(&loaded.catalog).contains("\"base\""));
}

#[test]
fn the_json_schema_describes_the_base() {
    let schema = dsl::json_schema();
    assert_eq!(schema["properties"]["base"]["type"], "string");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let yaml = |text: &str| -> Value { serde_saphyr::from_str(text).expect("YAML") };
    assert!(validator.is_valid(&yaml(&with_base(&format!("\"{HASH}\"")))));
    for bad in [
        "\"sha3-256:abc\"",
        "12",
        &format!("\"{}\"", HASH.to_uppercase()),
    ] {
        let instance = yaml(&with_base(bad));
        let paths: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.instance_path().to_string())
            .collect();
        assert_eq!(paths, ["/base"], "{bad}");
    }
}

#[tokio::test]
async fn introspect_then_yaml_with_base_loads_back_the_same_catalog_and_base() {
    let name = testkit::fresh_database("dsl_base").await.expect("database");
    let mut client = testkit::shared_cluster()
        .expect("cluster")
        .connect(&name)
        .await
        .expect("connect");
    // Expressions Postgres stores as written (no casts added), so the pure conversion is
    // exact and no shadow is needed to compare.
    client
        .batch_execute(
            "CREATE SCHEMA app; CREATE TYPE app.mood AS ENUM ('ok', 'meh');
             CREATE TABLE app.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               body text NOT NULL, mood app.mood, pinned boolean NOT NULL DEFAULT false,
               created timestamptz DEFAULT now());
             CREATE INDEX notes_body ON app.notes (body) WHERE body IS NOT NULL;
             COMMENT ON TABLE app.notes IS 'notes';",
        )
        .await
        .expect("schema");
    let catalog = introspect(&mut client, &IntrospectOptions::default())
        .await
        .expect("introspect");
    let hash = catalog_hash(&catalog).expect("hash");
    let text = dsl::to_yaml_with_base(&catalog, Some(&hash));
    let back = dsl::load("introspected.yaml", &text, Format::Yaml).expect("loads");
    assert_eq!(back.document.base.as_ref(), Some(&hash));
    assert_eq!(back.catalog, catalog, "{text}");
    assert_eq!(catalog_hash(&back.catalog).expect("hash"), hash);
}
