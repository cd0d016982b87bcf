//! The DSL reader and its conversion to a catalog: the seed example field by field, and
//! shorthands against their long forms.

use std::collections::BTreeMap;

use lockplane_engine::catalog::*;
use lockplane_engine::dsl::{self, Format, RenameKind};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/dsl/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn catalog(yaml: &str) -> Catalog {
    match dsl::load("test.yaml", yaml, Format::Yaml) {
        Ok(loaded) => loaded.catalog,
        Err(e) => panic!("{e}\n---\n{yaml}"),
    }
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

fn constraint(definition: ConstraintDef) -> Constraint {
    Constraint {
        definition,
        deferrable: false,
        initially_deferred: false,
        validated: true,
        comment: None,
    }
}

fn grant(grantee: &str, privilege: &str) -> Grant {
    Grant {
        grantee: grantee.into(),
        privilege: privilege.into(),
        grantable: false,
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn seed_example_is_the_expected_catalog() {
    let loaded = dsl::load("seed.yaml", &fixture("seed.yaml"), Format::Yaml).unwrap();
    let users = Table {
        columns: BTreeMap::from([
            ("id".into(), column("uuid", true, Some("gen_random_uuid()"))),
            ("email".into(), column("text", true, None)),
        ]),
        constraints: BTreeMap::from([
            (
                "users_pkey".into(),
                constraint(ConstraintDef::PrimaryKey {
                    columns: names(&["id"]),
                }),
            ),
            (
                "users_email_key".into(),
                constraint(ConstraintDef::Unique {
                    columns: names(&["email"]),
                    nulls_not_distinct: false,
                }),
            ),
        ]),
        grants: vec![
            grant("app_reader", "select"),
            grant("app_writer", "insert"),
            grant("app_writer", "update"),
        ],
        ..Table::default()
    };
    let todos = Table {
        columns: BTreeMap::from([
            ("id".into(), column("uuid", true, Some("gen_random_uuid()"))),
            ("tenant_id".into(), column("uuid", true, None)),
            ("owner_id".into(), column("uuid", true, None)),
            ("title".into(), column("text", false, None)),
            ("done".into(), column("boolean", false, Some("false"))),
        ]),
        constraints: BTreeMap::from([
            (
                "todos_pkey".into(),
                constraint(ConstraintDef::PrimaryKey {
                    columns: names(&["id"]),
                }),
            ),
            (
                "todos_owner_id_fkey".into(),
                constraint(ConstraintDef::ForeignKey {
                    columns: names(&["owner_id"]),
                    references: ForeignKeyTarget {
                        schema: "public".into(),
                        table: "users".into(),
                        columns: names(&["id"]),
                    },
                    on_update: ForeignKeyAction::NoAction,
                    on_delete: ForeignKeyAction::NoAction,
                    match_type: ForeignKeyMatch::Simple,
                }),
            ),
        ]),
        indexes: BTreeMap::from([(
            "ix_todos_owner".into(),
            Index {
                unique: false,
                method: "btree".into(),
                keys: vec![IndexKey {
                    column: Some("owner_id".into()),
                    expression: None,
                    opclass: None,
                    collation: None,
                    descending: false,
                    nulls_first: false,
                }],
                include: vec![],
                predicate: None,
                nulls_not_distinct: false,
                comment: None,
            },
        )]),
        rls: Rls {
            enabled: true,
            forced: false,
            policies: BTreeMap::from([(
                "tenant_isolation".into(),
                Policy {
                    command: PolicyCommand::All,
                    permissive: true,
                    roles: names(&["public"]),
                    using: Some("lockplane.tenant_id() = tenant_id".into()),
                    with_check: None,
                    comment: None,
                },
            )]),
        },
        ..Table::default()
    };
    let expected = Catalog {
        extensions: BTreeMap::from([(
            "pgcrypto".into(),
            Extension {
                schema: "public".into(),
            },
        )]),
        schemas: BTreeMap::from([(
            "public".into(),
            Schema {
                tables: BTreeMap::from([("users".into(), users), ("todos".into(), todos)]),
                ..Schema::default()
            },
        )]),
        ..Catalog::default()
    };
    // Table by table first, so that a failure points at the difference.
    for (name, table) in &expected.schemas["public"].tables {
        assert_eq!(
            &loaded.catalog.schemas["public"].tables[name], table,
            "{name}"
        );
    }
    assert_eq!(loaded.catalog, expected);
    assert_eq!(loaded.document.optional_extensions(), ["pgcrypto"]);
    assert!(loaded.document.renames().is_empty());
}

/// Each pair must give the same catalog.
fn same(short: &str, long: &str) {
    let a = catalog(short);
    let b = catalog(long);
    assert_eq!(a, b, "\n--- short:\n{short}\n--- long:\n{long}");
}

fn doc(tables: &str) -> String {
    format!("version: 1\nschemas:\n  public:\n    tables:\n{tables}")
}

#[test]
fn primary_key_shorthand() {
    same(
        &doc("      t:\n        columns:\n          - { name: id, type: int, pk: true }\n"),
        &doc(
            "      t:\n        columns:\n          - { name: id, type: integer, not_null: true }\n        \
             primary_key: { name: t_pkey, columns: [id] }\n",
        ),
    );
}

#[test]
fn unique_shorthand() {
    same(
        &doc("      t:\n        columns:\n          - { name: email, type: text, unique: true }\n"),
        &doc(
            "      t:\n        columns:\n          - { name: email, type: text }\n        \
             unique:\n          - { name: t_email_key, columns: [email] }\n",
        ),
    );
}

#[test]
fn references_shorthand() {
    let parent = "      p:\n        columns:\n          - { name: id, type: bigint, pk: true }\n";
    same(
        &doc(&format!(
            "{parent}      c:\n        columns:\n          - {{ name: p_id, type: bigint, references: {{ table: p }} }}\n"
        )),
        &doc(&format!(
            "{parent}      c:\n        columns:\n          - {{ name: p_id, type: bigint }}\n        \
             foreign_keys:\n          - {{ name: c_p_id_fkey, columns: [p_id], \
             references: {{ schema: public, table: p, columns: [id], on_delete: no_action, \
             on_update: no_action, match: simple }} }}\n"
        )),
    );
}

#[test]
fn check_shorthand_and_default_names() {
    same(
        &doc("      t:\n        columns:\n          - { name: qty, type: int, check: \"qty > 0\" }\n"),
        &doc(
            "      t:\n        columns:\n          - { name: qty, type: int }\n        \
             checks:\n          - { name: t_qty_check, expression: \"(qty > 0)\" }\n",
        ),
    );
    // Two columns: `<table>_check`.
    let c = catalog(&doc(
        "      t:\n        columns:\n          - { name: a, type: int }\n          - { name: b, type: int }\n        \
         checks:\n          - { expression: \"a < b\" }\n",
    ));
    assert!(c.schemas["public"].tables["t"]
        .constraints
        .contains_key("t_check"));
}

#[test]
fn identity_and_serial_shorthands() {
    same(
        &doc("      t:\n        columns:\n          - { name: id, type: bigint, identity: always }\n"),
        &doc(
            "      t:\n        columns:\n          - { name: id, type: int8, not_null: true, \
             identity: { generation: always, start: 1, increment: 1, min: 1, max: 9223372036854775807, cache: 1 } }\n",
        ),
    );
    let serial =
        "version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          \
                  - { name: id, type: serial }\n";
    let spelled_out = "version: 1\nschemas:\n  public:\n    sequences:\n      t_id_seq:\n        \
                       type: integer\n        owned_by: { table: t, column: id }\n    tables:\n      t:\n        \
                       columns:\n          - { name: id, type: integer, not_null: true, \
                       default: \"nextval('public.t_id_seq'::regclass)\" }\n";
    same(serial, spelled_out);
    let c = catalog(serial);
    assert_eq!(
        c.schemas["public"].sequences["t_id_seq"].options,
        SequenceOptions {
            data_type: "integer".into(),
            start: 1,
            increment: 1,
            min: 1,
            max: i64::from(i32::MAX),
            cache: 1,
            cycle: false,
        }
    );
}

#[test]
fn enum_list_shorthand_and_type_resolution() {
    same(
        "version: 1\nschemas:\n  public:\n    enums:\n      todo_state: [open, done]\n    tables:\n      t:\n        \
         columns:\n          - { name: s, type: todo_state }\n          - { name: ss, type: \"todo_state[]\" }\n",
        "version: 1\nschemas:\n  public:\n    enums:\n      todo_state: { labels: [open, done] }\n    tables:\n      t:\n        \
         columns:\n          - { name: s, type: public.todo_state }\n          - { name: ss, type: \"public.todo_state[]\" }\n",
    );
    let c = catalog(
        "version: 1\nschemas:\n  public:\n    enums:\n      todo_state: [open, done]\n  app:\n    tables:\n      t:\n        \
         columns:\n          - { name: s, type: todo_state }\n",
    );
    // Not in `app`, so `public`'s, qualified as format_type prints it.
    assert_eq!(
        c.schemas["app"].tables["t"].columns["s"].data_type,
        "public.todo_state"
    );
}

#[test]
fn index_columns_shorthand() {
    same(
        &doc(
            "      t:\n        columns:\n          - { name: a, type: int }\n          - { name: b, type: int }\n        \
             indexes:\n          - { columns: [a, b] }\n",
        ),
        &doc(
            "      t:\n        columns:\n          - { name: a, type: int }\n          - { name: b, type: int }\n        \
             indexes:\n          - { name: t_a_b_idx, using: BTREE, keys: [{ column: a, order: asc, nulls: last }, { column: b }] }\n",
        ),
    );
}

#[test]
fn privilege_shorthands() {
    let cols = "        columns:\n          - { name: a, type: int }\n";
    same(
        &doc(&format!(
            "      t:\n{cols}        grants:\n          - {{ role: w, privilege: insert_update }}\n          - {{ role: r, privilege: all }}\n"
        )),
        &doc(&format!(
            "      t:\n{cols}        grants:\n          - {{ role: w, privilege: [insert, update] }}\n          \
             - {{ role: r, privilege: [select, insert, update, delete, truncate, references, trigger] }}\n"
        )),
    );
}

#[test]
fn policy_defaults_and_extension_forms() {
    let table = |policy: &str| {
        doc(&format!(
            "      t:\n        columns:\n          - {{ name: tenant_id, type: uuid }}\n        rls:\n          \
             enabled: true\n          policies:\n            - {policy}\n"
        ))
    };
    same(
        &table("{ name: p, using: \"tenant_id = tenant_id()\" }"),
        &table(
            "{ name: p, for: all, as: permissive, roles: [public], using: \"tenant_id = lockplane.tenant_id()\" }",
        ),
    );
    same(
        "version: 1\nextensions: [pgcrypto]\n",
        "version: 1\nextensions:\n  - { name: pgcrypto, schema: public, required: true }\n",
    );
}

#[test]
fn type_spellings() {
    let table = |types: [&str; 4]| {
        doc(&format!(
            "      t:\n        columns:\n          - {{ name: a, type: {} }}\n          - {{ name: b, type: \"{}\" }}\n          \
             - {{ name: c, type: {} }}\n          - {{ name: d, type: \"{}\" }}\n",
            types[0], types[1], types[2], types[3]
        ))
    };
    same(
        &table(["int", "varchar(20)", "timestamptz", "numeric(10,2)"]),
        &table([
            "integer",
            "character varying(20)",
            "timestamp with time zone",
            "decimal(10, 2)",
        ]),
    );
}

#[test]
fn yaml_and_json_give_the_same_catalog() {
    let yaml = fixture("seed.yaml");
    let json = fixture("seed.json");
    let from_yaml = dsl::load("seed.yaml", &yaml, Format::Yaml).unwrap();
    let from_json = dsl::load("seed.json", &json, Format::Json).unwrap();
    assert_eq!(from_yaml.catalog, from_json.catalog);
    assert_eq!(
        dsl::load_file_text("seed.json", &json).unwrap().catalog,
        from_yaml.catalog
    );
}

#[test]
fn renames_are_kept_for_the_planner_and_not_in_the_catalog() {
    let text = doc(
        "      accounts:\n        renamed_from: users\n        columns:\n          \
         - { name: email_address, type: text, renamed_from: email }\n          - { name: id, type: int }\n",
    );
    let loaded = dsl::load("r.yaml", &text, Format::Yaml).unwrap();
    let renames = loaded.document.renames();
    assert_eq!(renames.len(), 2);
    assert_eq!(renames[0].kind, RenameKind::Table);
    assert_eq!(
        (renames[0].from.as_str(), renames[0].to.as_str()),
        ("users", "accounts")
    );
    assert_eq!(renames[1].kind, RenameKind::Column);
    assert_eq!(renames[1].table, "accounts");
    assert_eq!(
        (renames[1].from.as_str(), renames[1].to.as_str()),
        ("email", "email_address")
    );
    let without = doc(
        "      accounts:\n        columns:\n          - { name: email_address, type: text }\n          - { name: id, type: int }\n",
    );
    assert_eq!(loaded.catalog, catalog(&without));
}

#[test]
fn helpers_install_sql_is_exposed() {
    let sql = dsl::helpers::install_sql();
    assert!(sql.contains("CREATE OR REPLACE FUNCTION \"lockplane\".\"tenant_id\"()"));
    assert!(sql.contains("nullif") || sql.contains("NULLIF"));
}
