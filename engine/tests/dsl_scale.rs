//! A document the size of a real database loads (issue 15): what `introspect --format yaml`
//! writes for 2,000 tables of the real-shaped schema is ≈ 250,000 YAML nodes, the default node
//! budget of the YAML reader, which refused it.

use lockplane_engine::dsl;

#[test]
fn a_document_of_thousands_of_tables_loads() {
    const TABLES: usize = 10_000;
    let mut text = String::from("version: 1\nschemas:\n  public:\n    tables:\n");
    for i in 0..TABLES {
        text.push_str(&format!(
            "      t{i}:\n        columns:\n\
             \x20         - {{ name: id, type: bigint, pk: true }}\n\
             \x20         - {{ name: code, type: text, not_null: true }}\n\
             \x20         - {{ name: qty, type: integer, default: \"0\" }}\n\
             \x20         - {{ name: created, type: timestamptz }}\n"
        ));
    }
    let loaded = dsl::load_file_text("big.yaml", &text)
        .unwrap_or_else(|e| panic!("a large document does not load: {e}"));
    assert_eq!(loaded.catalog.schemas["public"].tables.len(), TABLES);
}
