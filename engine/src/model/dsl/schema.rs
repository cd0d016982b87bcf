//! The JSON Schema (draft 2020-12) of the DSL, for editors: yaml-language-server and VS Code
//! complete keys and flag typos with it (`# yaml-language-server: $schema=<file>` at the top
//! of a document, or a `yaml.schemas` setting).
//!
//! It checks what a schema can see: keys, value types, the words of closed choices, names
//! (not empty, at most 63 characters), reserved schema names and enum labels (at least one, none
//! twice). What needs the whole document (references, duplicates of names in lists, clashes) is
//! left to the reader and the conversion.
//!
//! It is written out here rather than derived: the reader is hand-written (to report every
//! error at once), so there are no serde types to derive from. A unit test checks that each
//! object's properties are exactly the keys the reader accepts.

use serde_json::{json, Map, Value};

use super::read::*;

fn words<T>(table: &[(&str, T)]) -> Value {
    json!({ "type": "string", "enum": table.iter().map(|(w, _)| *w).collect::<Vec<_>>() })
}

fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn boolean(description: &str) -> Value {
    json!({ "type": "boolean", "description": description })
}

fn integer(description: &str) -> Value {
    json!({ "type": "integer", "description": description })
}

fn names(description: &str) -> Value {
    json!({ "type": "array", "items": { "type": "string" }, "description": description })
}

/// SQL text; YAML scalars such as `false` or `0` are accepted as their literal.
fn sql(description: &str) -> Value {
    json!({ "type": ["string", "boolean", "number"], "description": description })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/$defs/{name}") })
}

fn list_of(name: &str) -> Value {
    json!({ "type": "array", "items": reference(name) })
}

/// What a schema can check of a Postgres identifier: not empty, and at most 63 characters (the
/// limit is 63 bytes, which a JSON Schema cannot count; the reader checks bytes).
fn identifier_rules() -> Value {
    json!({ "minLength": 1, "maxLength": 63 })
}

/// A declared name.
fn identifier(description: &str) -> Value {
    let mut value = string(description);
    if let (Value::Object(map), Value::Object(rules)) = (&mut value, identifier_rules()) {
        map.extend(rules);
    }
    value
}

/// Enum labels: at least one, no label twice, each at most 63 characters (bytes, for the
/// reader).
fn label_rules() -> Value {
    json!({
        "items": { "type": "string", "maxLength": 63 },
        "minItems": 1,
        "uniqueItems": true,
    })
}

fn map_of(name: &str, description: &str) -> Value {
    json!({
        "type": "object",
        "additionalProperties": reference(name),
        "propertyNames": identifier_rules(),
        "description": description,
    })
}

/// A closed object: `keys` must list exactly its properties, in the reader's order.
fn object(keys: &[&str], properties: Vec<(&str, Value)>, required: &[&str]) -> Value {
    let mut map = Map::new();
    for (k, v) in properties {
        map.insert(k.to_owned(), v);
    }
    debug_assert_eq!(map.len(), keys.len());
    json!({
        "type": "object",
        "properties": map,
        "required": required,
        "additionalProperties": false,
    })
}

/// An object schema that also accepts other JSON types: keywords like `properties` apply only
/// to objects, so no `oneOf` is needed and validators report errors at the offending key.
fn or_also(mut object: Value, types: &[&str], extra: Value) -> Value {
    if let Value::Object(map) = &mut object {
        let mut all: Vec<Value> = types.iter().map(|t| json!(t)).collect();
        all.push(json!("object"));
        map.insert("type".into(), Value::Array(all));
        if let Value::Object(extra) = extra {
            map.extend(extra);
        }
    }
    object
}

fn sequence_options() -> Vec<(&'static str, Value)> {
    vec![
        ("start", integer("START WITH")),
        ("increment", integer("INCREMENT BY (default 1)")),
        ("min", integer("MINVALUE")),
        ("max", integer("MAXVALUE")),
        ("cache", integer("CACHE (default 1)")),
        ("cycle", boolean("CYCLE")),
    ]
}

/// The JSON Schema of DSL documents.
pub fn json_schema() -> Value {
    let privilege = json!({
        "description": "select, insert, update, delete, truncate, references, trigger, maintain, usage; \
                        `all` (every privilege of the object's kind, maintain excepted) and \
                        `insert_update` (insert and update) are shorthands",
        "type": ["string", "array"],
        "items": { "type": "string" },
    });
    let mut defs = Map::new();
    let mut def = |name: &str, value: Value| {
        defs.insert(name.to_owned(), value);
    };
    def(
        "extension",
        or_also(
            object(
                EXTENSION_KEYS,
                vec![
                    ("name", identifier("extension name")),
                    ("schema", string("schema of its objects (default public)")),
                    (
                        "required",
                        boolean("false when the schema can live without it (default true)"),
                    ),
                ],
                &["name"],
            ),
            &["string"],
            identifier_rules(),
        ),
    );
    def(
        "schema",
        or_also(
            object(
                SCHEMA_KEYS,
                vec![
                    ("comment", string("COMMENT ON SCHEMA")),
                    ("enums", map_of("enum", "enum types by name")),
                    ("sequences", map_of("sequence", "sequences by name")),
                    ("tables", map_of("table", "tables by name")),
                    ("views", map_of("view", "views by name")),
                ],
                &[],
            ),
            &["null"],
            json!({}),
        ),
    );
    def(
        "enum",
        or_also(
            object(
                ENUM_KEYS,
                vec![
                    ("labels", {
                        let mut labels = names("labels in sort order");
                        if let (Value::Object(map), Value::Object(rules)) =
                            (&mut labels, label_rules())
                        {
                            map.extend(rules);
                        }
                        labels
                    }),
                    ("comment", string("COMMENT ON TYPE")),
                ],
                &["labels"],
            ),
            &["array"],
            label_rules(),
        ),
    );
    let mut seq = vec![(
        "type",
        string("smallint, integer or bigint (default bigint)"),
    )];
    seq.extend(sequence_options());
    seq.push((
        "owned_by",
        object(
            OWNER_KEYS,
            vec![("table", string("table")), ("column", string("column"))],
            &["table", "column"],
        ),
    ));
    seq.push(("grants", list_of("grant")));
    seq.push(("comment", string("COMMENT ON SEQUENCE")));
    def(
        "sequence",
        or_also(object(SEQUENCE_KEYS, seq, &[]), &["null"], json!({})),
    );
    def(
        "view",
        object(
            VIEW_KEYS,
            vec![
                ("query", string("the view's SELECT")),
                (
                    "options",
                    object(
                        VIEW_OPTION_KEYS,
                        vec![
                            (
                                "check_option",
                                json!({ "type": "string", "enum": ["local", "cascaded"] }),
                            ),
                            ("security_barrier", json!({ "type": ["boolean", "string"] })),
                            ("security_invoker", json!({ "type": ["boolean", "string"] })),
                        ],
                        &[],
                    ),
                ),
                ("grants", list_of("grant")),
                ("comment", string("COMMENT ON VIEW")),
            ],
            &["query"],
        ),
    );
    def(
        "grant",
        object(
            GRANT_KEYS,
            vec![
                ("role", identifier("role name, or public")),
                ("privilege", privilege),
                ("grantable", boolean("WITH GRANT OPTION")),
            ],
            &["role", "privilege"],
        ),
    );
    def(
        "references",
        object(
            REFERENCES_KEYS,
            vec![
                (
                    "schema",
                    string("schema of the referenced table (default: the same schema)"),
                ),
                ("table", string("referenced table")),
                (
                    "columns",
                    names("referenced columns (default: its primary key)"),
                ),
                ("on_delete", words(ACTIONS)),
                ("on_update", words(ACTIONS)),
                ("match", words(MATCHES)),
                ("deferrable", boolean("DEFERRABLE")),
                ("initially_deferred", boolean("INITIALLY DEFERRED")),
            ],
            &["table"],
        ),
    );
    let mut identity = vec![("generation", words(GENERATIONS))];
    identity.extend(sequence_options());
    def(
        "identity",
        or_also(
            object(IDENTITY_KEYS, identity, &["generation"]),
            &["string"],
            json!({ "pattern": "^(always|by_default)$" }),
        ),
    );
    def(
        "column",
        object(
            COLUMN_KEYS,
            vec![
                ("name", identifier("column name")),
                (
                    "type",
                    string("type name (int, varchar(20), timestamptz, serial, an enum, …)"),
                ),
                ("renamed_from", string("previous name: plan a rename")),
                (
                    "up",
                    sql("online change: the new value from the old row (`qty::bigint`)"),
                ),
                (
                    "down",
                    sql("online change: the old value from the new row (`quantity::int`)"),
                ),
                (
                    "pk",
                    boolean("single-column primary key named <table>_pkey"),
                ),
                (
                    "not_null",
                    boolean("NOT NULL (implied by pk, identity and serial)"),
                ),
                (
                    "unique",
                    boolean("single-column unique constraint named <table>_<column>_key"),
                ),
                ("default", sql("default expression")),
                ("references", reference("references")),
                ("check", sql("check constraint on this column")),
                ("identity", reference("identity")),
                ("generated", sql("GENERATED ALWAYS AS (expression) STORED")),
                ("collation", string("collation name")),
                ("comment", string("COMMENT ON COLUMN")),
                ("grants", list_of("grant")),
            ],
            &["name", "type"],
        ),
    );
    def(
        "primary_key",
        object(
            PRIMARY_KEY_KEYS,
            vec![
                ("name", identifier("constraint name (default <table>_pkey)")),
                ("columns", names("key columns")),
                ("deferrable", boolean("DEFERRABLE")),
                ("initially_deferred", boolean("INITIALLY DEFERRED")),
                ("comment", string("COMMENT ON CONSTRAINT")),
            ],
            &["columns"],
        ),
    );
    def(
        "unique",
        object(
            UNIQUE_KEYS,
            vec![
                (
                    "name",
                    identifier("constraint name (default <table>_<columns>_key)"),
                ),
                ("columns", names("key columns")),
                ("nulls_not_distinct", boolean("NULLS NOT DISTINCT")),
                ("deferrable", boolean("DEFERRABLE")),
                ("initially_deferred", boolean("INITIALLY DEFERRED")),
                ("comment", string("COMMENT ON CONSTRAINT")),
            ],
            &["columns"],
        ),
    );
    def(
        "foreign_key",
        object(
            FOREIGN_KEY_KEYS,
            vec![
                (
                    "name",
                    identifier("constraint name (default <table>_<columns>_fkey)"),
                ),
                ("columns", names("referencing columns")),
                ("references", reference("references")),
                ("not_valid", boolean("NOT VALID")),
                ("comment", string("COMMENT ON CONSTRAINT")),
            ],
            &["columns", "references"],
        ),
    );
    def(
        "check",
        object(
            CHECK_KEYS,
            vec![
                (
                    "name",
                    identifier("constraint name (default as Postgres chooses it)"),
                ),
                ("expression", sql("boolean expression")),
                ("no_inherit", boolean("NO INHERIT")),
                ("not_valid", boolean("NOT VALID")),
                ("comment", string("COMMENT ON CONSTRAINT")),
            ],
            &["expression"],
        ),
    );
    def(
        "exclusion",
        object(
            EXCLUSION_KEYS,
            vec![
                ("name", identifier("constraint name")),
                ("definition", string("EXCLUDE USING … (… WITH …)")),
                ("comment", string("COMMENT ON CONSTRAINT")),
            ],
            &["definition"],
        ),
    );
    def(
        "index_key",
        object(
            INDEX_KEY_KEYS,
            vec![
                ("column", string("a column")),
                ("expression", sql("an expression")),
                ("opclass", string("operator class")),
                ("collation", string("collation")),
                ("order", words(ORDERS)),
                ("nulls", words(NULLS)),
            ],
            &[],
        ),
    );
    def(
        "index",
        object(
            INDEX_KEYS,
            vec![
                (
                    "name",
                    identifier("index name (default <table>_<columns>_idx)"),
                ),
                ("columns", names("key columns")),
                ("keys", list_of("index_key")),
                ("unique", boolean("UNIQUE")),
                ("using", string("access method (default btree)")),
                ("include", names("INCLUDE columns")),
                ("where", sql("partial index predicate")),
                ("nulls_not_distinct", boolean("NULLS NOT DISTINCT")),
                ("comment", string("COMMENT ON INDEX")),
            ],
            &[],
        ),
    );
    def(
        "policy",
        object(
            POLICY_KEYS,
            vec![
                ("name", identifier("policy name")),
                ("for", words(COMMANDS)),
                ("as", words(POLICY_KINDS)),
                ("roles", names("roles (default public)")),
                (
                    "using",
                    sql("USING expression; may call tenant_id() and user_id()"),
                ),
                (
                    "with_check",
                    sql("WITH CHECK expression; may call tenant_id() and user_id()"),
                ),
                ("comment", string("COMMENT ON POLICY")),
            ],
            &["name"],
        ),
    );
    def(
        "rls",
        object(
            RLS_KEYS,
            vec![
                ("enabled", boolean("ENABLE ROW LEVEL SECURITY")),
                ("forced", boolean("FORCE ROW LEVEL SECURITY")),
                ("policies", list_of("policy")),
            ],
            &[],
        ),
    );
    def(
        "table",
        object(
            TABLE_KEYS,
            vec![
                ("renamed_from", string("previous name: plan a rename")),
                ("comment", string("COMMENT ON TABLE")),
                ("unlogged", boolean("UNLOGGED")),
                ("columns", list_of("column")),
                ("primary_key", reference("primary_key")),
                ("unique", list_of("unique")),
                ("foreign_keys", list_of("foreign_key")),
                ("checks", list_of("check")),
                ("exclusions", list_of("exclusion")),
                ("indexes", list_of("index")),
                ("rls", reference("rls")),
                ("grants", list_of("grant")),
            ],
            &[],
        ),
    );
    let mut root = object(
        DOCUMENT_KEYS,
        vec![
            (
                "version",
                json!({ "const": 1, "description": "DSL version" }),
            ),
            (
                "base",
                json!({
                    "type": "string",
                    "pattern": "^sha3-256:[0-9a-f]{64}$",
                    "description": "the catalog hash of the live database this document was \
                                    read at (`lockplane introspect --format yaml` writes it); \
                                    planning then merges three ways and keeps what others \
                                    changed since. Not part of the catalog",
                }),
            ),
            ("extensions", list_of("extension")),
            ("schemas", {
                // `lockplane` holds Lockplane's helpers; Postgres reserves `pg_` names.
                let mut schemas = map_of("schema", "schemas by name");
                schemas["propertyNames"]["not"] = json!({ "pattern": "^(pg_|lockplane$)" });
                schemas
            }),
        ],
        &["version"],
    );
    if let Value::Object(map) = &mut root {
        map.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        map.insert(
            "$id".into(),
            json!("https://lockplane.dev/schema/dsl-v1.json"),
        );
        map.insert(
            "title".into(),
            json!("Lockplane schema document (version 1)"),
        );
        map.insert("$defs".into(), Value::Object(defs));
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(schema: &Value, def: &str) -> Vec<String> {
        let object = &schema["$defs"][def];
        let mut keys: Vec<String> = object["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn schema_properties_are_the_readers_keys() {
        let s = json_schema();
        for (def, keys) in [
            ("extension", EXTENSION_KEYS),
            ("schema", SCHEMA_KEYS),
            ("enum", ENUM_KEYS),
            ("sequence", SEQUENCE_KEYS),
            ("view", VIEW_KEYS),
            ("grant", GRANT_KEYS),
            ("references", REFERENCES_KEYS),
            ("identity", IDENTITY_KEYS),
            ("column", COLUMN_KEYS),
            ("primary_key", PRIMARY_KEY_KEYS),
            ("unique", UNIQUE_KEYS),
            ("foreign_key", FOREIGN_KEY_KEYS),
            ("check", CHECK_KEYS),
            ("exclusion", EXCLUSION_KEYS),
            ("index_key", INDEX_KEY_KEYS),
            ("index", INDEX_KEYS),
            ("policy", POLICY_KEYS),
            ("rls", RLS_KEYS),
            ("table", TABLE_KEYS),
        ] {
            assert_eq!(keys_of(&s, def), sorted(keys), "{def}");
        }
        let mut root: Vec<String> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        root.sort();
        assert_eq!(root, sorted(DOCUMENT_KEYS));
    }
}
