//! Catalog → DSL → catalog: YAML and JSON round trips, a fixed point, determinism, and the
//! exact text written for the seed example.

use std::collections::BTreeMap;

use lockplane_engine::catalog::*;
use lockplane_engine::dsl::{self, Format};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/dsl/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load(file: &str, text: &str, format: Format) -> Catalog {
    match dsl::load(file, text, format) {
        Ok(l) => l.catalog,
        Err(e) => panic!("{e}\n---\n{text}"),
    }
}

/// YAML and JSON round trips of `catalog`, which must come back identical, and writing the
/// result again must give the same bytes.
fn round_trip(catalog: &Catalog) {
    let yaml = dsl::to_yaml(catalog);
    let from_yaml = load("written.yaml", &yaml, Format::Yaml);
    assert_eq!(&from_yaml, catalog, "YAML round trip\n{yaml}");
    assert_eq!(dsl::to_yaml(&from_yaml), yaml, "YAML is not a fixed point");
    let json = dsl::to_json(catalog);
    let from_json = load("written.json", &json, Format::Json);
    assert_eq!(&from_json, catalog, "JSON round trip\n{json}");
    assert_eq!(dsl::to_json(&from_json), json, "JSON is not a fixed point");
    // The JSON is JSON for every other reader too.
    serde_json::from_str::<serde_json::Value>(&json).expect("valid JSON");
}

#[test]
fn everything_round_trips() {
    let catalog = load("everything.yaml", &fixture("everything.yaml"), Format::Yaml);
    let billing = &catalog.schemas["billing"];
    // A few spot checks that the fixture means what it says.
    assert_eq!(billing.tables.len(), 4);
    assert_eq!(
        billing.sequences["invoices_id_seq"]
            .owned_by
            .as_ref()
            .map(|o| o.column.as_str()),
        Some("id")
    );
    assert_eq!(
        billing.tables["invoices"].columns["status"].data_type,
        "billing.status"
    );
    assert_eq!(
        billing.tables["invoices"].columns["odd"].data_type,
        "billing.\"Odd Enum\""
    );
    assert_eq!(
        billing.tables["customers"].columns["email"]
            .collation
            .as_deref(),
        Some("\"C\"")
    );
    assert_eq!(
        billing.tables["customers"].indexes["customers_pattern"].keys[0]
            .opclass
            .as_deref(),
        Some("\"varchar_pattern_ops\"")
    );
    assert!(billing.tables["customers"]
        .indexes
        .contains_key("customers_created_idx"));
    assert!(billing.tables["lines"]
        .constraints
        .contains_key("lines_invoice_id_fkey"));
    assert!(billing.tables["lines"]
        .constraints
        .contains_key("lines_check"));
    assert!(billing.tables["customers"]
        .constraints
        .contains_key("customers_balance_check"));
    assert_eq!(
        billing.tables["invoices"].columns["tenant_id"]
            .default
            .as_deref(),
        Some("lockplane.tenant_id()")
    );
    assert_eq!(
        billing.tables["customers"]
            .grants
            .iter()
            .filter(|g| g.grantee == "app_writer")
            .count(),
        7
    );
    round_trip(&catalog);
}

#[test]
fn seed_round_trips_to_this_exact_text() {
    // Columns come back in the document's order (tables and everything else by name).
    let catalog = load("seed.yaml", &fixture("seed.yaml"), Format::Yaml);
    round_trip(&catalog);
    let expected = "\
version: 1
extensions:
  - name: pgcrypto
schemas:
  public:
    tables:
      todos:
        columns:
          - { name: id, type: uuid, pk: true, default: gen_random_uuid() }
          - { name: tenant_id, type: uuid, not_null: true }
          - { name: owner_id, type: uuid, not_null: true, references: { table: users, columns: [id] } }
          - { name: title, type: text }
          - { name: done, type: boolean, default: false }
        indexes:
          - { name: ix_todos_owner, columns: [owner_id] }
        rls:
          enabled: true
          policies:
            - { name: tenant_isolation, using: \"lockplane.tenant_id() = tenant_id\" }
      users:
        columns:
          - { name: id, type: uuid, pk: true, default: gen_random_uuid() }
          - { name: email, type: text, not_null: true, unique: true }
        grants:
          - { role: app_reader, privilege: select }
          - { role: app_writer, privilege: insert_update }
";
    assert_eq!(dsl::to_yaml(&catalog), expected);
}

#[test]
fn writing_is_deterministic() {
    let catalog = load("everything.yaml", &fixture("everything.yaml"), Format::Yaml);
    let first = dsl::to_yaml(&catalog);
    for _ in 0..3 {
        assert_eq!(dsl::to_yaml(&catalog.clone()), first);
    }
    // Grants in another order are the same catalog once canonical, and the same text.
    let mut shuffled = catalog.clone();
    for schema in shuffled.schemas.values_mut() {
        for table in schema.tables.values_mut() {
            table.grants.reverse();
        }
    }
    shuffled.canonicalize();
    assert_eq!(dsl::to_yaml(&shuffled), first);
}

fn column(data_type: &str, not_null: bool, default: Option<&str>) -> Column {
    Column {
        data_type: data_type.into(),
        not_null,
        default: default.map(Into::into),
        identity: None,
        generated: None,
        collation: None,
        grants: vec![],
        comment: None,
        position: Default::default(),
    }
}

/// A catalog shaped the way `introspect` returns one for a fresh database with a little in
/// it: what `introspect --format yaml` writes must read back to the same catalog.
#[test]
fn an_introspected_catalog_round_trips() {
    let mut items = Table::default();
    items.columns.insert(
        "id".into(),
        column(
            "integer",
            true,
            Some("nextval('public.items_id_seq'::regclass)"),
        ),
    );
    items.columns.insert(
        "label".into(),
        Column {
            collation: Some("\"C\"".into()),
            ..column("text", false, None)
        },
    );
    items.columns.insert(
        "name".into(),
        column("character varying(45)", true, Some("'unnamed'::varchar")),
    );
    items.constraints.insert(
        "items_pkey".into(),
        Constraint {
            definition: ConstraintDef::PrimaryKey {
                columns: vec!["id".into()],
            },
            deferrable: false,
            initially_deferred: false,
            validated: true,
            comment: None,
        },
    );
    items.indexes.insert(
        "ix_pattern".into(),
        Index {
            unique: false,
            method: "btree".into(),
            keys: vec![IndexKey {
                column: Some("name".into()),
                expression: None,
                opclass: Some("\"text_pattern_ops\"".into()),
                collation: Some("\"C\"".into()),
                descending: true,
                nulls_first: true,
            }],
            include: vec![],
            predicate: None,
            nulls_not_distinct: false,
            comment: None,
        },
    );
    let mut public = Schema {
        comment: Some("standard public schema".into()),
        ..Schema::default()
    };
    public.tables.insert("items".into(), items);
    public.sequences.insert(
        "items_id_seq".into(),
        Sequence {
            options: SequenceOptions {
                data_type: "integer".into(),
                start: 1,
                increment: 1,
                min: 1,
                max: i64::from(i32::MAX),
                cache: 1,
                cycle: false,
            },
            owned_by: Some(SequenceOwner {
                table: "items".into(),
                column: "id".into(),
            }),
            grants: vec![],
            comment: None,
        },
    );
    let catalog = Catalog {
        extensions: BTreeMap::from([(
            "plpgsql".into(),
            Extension {
                schema: "pg_catalog".into(),
            },
        )]),
        schemas: BTreeMap::from([("public".into(), public)]),
        unsupported: vec![UnsupportedObject {
            kind: "function".into(),
            schema: "public".into(),
            name: "add_one(integer)".into(),
        }],
        ..Catalog::default()
    };
    let yaml = dsl::to_yaml(&catalog);
    assert!(yaml.starts_with("# Present in the database but not managed by Lockplane:\n#   function public.add_one(integer)\n"), "{yaml}");
    // The serial column is written as `serial` and its sequence is folded into it.
    assert!(
        yaml.contains("{ name: id, type: serial, pk: true }"),
        "{yaml}"
    );
    assert!(!yaml.contains("items_id_seq"), "{yaml}");
    assert!(yaml.contains("schema: pg_catalog"), "{yaml}");
    let back = load("introspected.yaml", &yaml, Format::Yaml);
    // What the DSL cannot say (unsupported objects) is only in the comments.
    let without_unsupported = Catalog {
        unsupported: vec![],
        ..catalog.clone()
    };
    assert_eq!(back, without_unsupported, "{yaml}");
}
