//! Every class of DSL error: message, path and position, and all of a file's errors at once.

use lockplane_engine::dsl::{self, DslError, Format};

fn errors_of(file: &str, text: &str, format: Format) -> Vec<DslError> {
    match dsl::load(file, text, format) {
        Ok(_) => panic!("no error for:\n{text}"),
        Err(e) => e.errors,
    }
}

/// The one error of `text`, checked for its path, position and full message.
fn one_error(text: &str, path: &str, line: u32, column: u32, display: &str) -> DslError {
    let errors = errors_of("schema.yaml", text, Format::Yaml);
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{shown:#?}");
    let e = &errors[0];
    assert_eq!(e.path, path, "{e}");
    assert_eq!((e.line, e.column), (line, column), "{e}");
    assert_eq!(e.to_string(), display);
    e.clone()
}

const HEAD: &str = "version: 1\nschemas:\n  public:\n    tables:\n";

#[test]
fn unknown_key_with_suggestion() {
    let text = format!(
        "{HEAD}      todos:\n        columns:\n          - name: id\n            type: uuid\n          \
         - name: title\n            type: text\n          - name: done\n            nul: true\n            type: boolean\n"
    );
    let e = one_error(
        &text,
        "schemas.public.tables.todos.columns[2]",
        12,
        13,
        "schema.yaml:12:13: schemas.public.tables.todos.columns[2]: unknown key `nul`, did you mean `not_null`?",
    );
    assert_eq!(e.message, "unknown key `nul`");
    assert_eq!(e.hint.as_deref(), Some("did you mean `not_null`?"));
    // No close match: the hint lists what is allowed.
    let text = format!("{HEAD}      t:\n        zzzzzz: 1\n");
    let errors = errors_of("schema.yaml", &text, Format::Yaml);
    assert_eq!(errors[0].message, "unknown key `zzzzzz`");
    assert!(
        errors[0]
            .hint
            .as_deref()
            .is_some_and(|h| h.starts_with("expected one of `renamed_from`")),
        "{}",
        errors[0]
    );
}

#[test]
fn wrong_value_types() {
    one_error(
        &format!("{HEAD}      t:\n        columns:\n          - {{ name: a, type: int, not_null: \"yes\" }}\n"),
        "schemas.public.tables.t.columns[0].not_null",
        7,
        45,
        "schema.yaml:7:45: schemas.public.tables.t.columns[0].not_null: expected a boolean (`true` or `false`), found a string",
    );
    one_error(
        &format!("{HEAD}      t:\n        columns: {{ a: int }}\n"),
        "schemas.public.tables.t.columns",
        6,
        18,
        "schema.yaml:6:18: schemas.public.tables.t.columns: expected a list, found a mapping",
    );
    one_error(
        "version: \"1\"\n",
        "version",
        1,
        10,
        "schema.yaml:1:10: version: expected an integer, found a string",
    );
}

#[test]
fn duplicate_names() {
    one_error(
        &format!("{HEAD}      t:\n        comment: a\n      t:\n        comment: b\n"),
        "schemas.public.tables.t",
        7,
        7,
        "schema.yaml:7:7: schemas.public.tables.t: duplicate table `t`",
    );
    one_error(
        &format!(
            "{HEAD}      t:\n        columns:\n          - {{ name: a, type: int }}\n          - {{ name: a, type: text }}\n"
        ),
        "schemas.public.tables.t.columns[1]",
        8,
        21,
        "schema.yaml:8:21: schemas.public.tables.t.columns[1]: duplicate column `a`",
    );
    one_error(
        &format!("{HEAD}      t:\n        comment: a\n        comment: b\n"),
        "schemas.public.tables.t",
        7,
        9,
        "schema.yaml:7:9: schemas.public.tables.t: duplicate key `comment`",
    );
    // Two indexes of the same name.
    let errors = errors_of(
        "schema.yaml",
        &format!(
            "{HEAD}      t:\n        columns:\n          - {{ name: a, type: int }}\n        indexes:\n          \
             - {{ name: ix, columns: [a] }}\n          - {{ name: ix, columns: [a] }}\n"
        ),
        Format::Yaml,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "schemas.public.tables.t.indexes[1]");
    assert!(errors[0].message.contains("`ix`"), "{}", errors[0]);
    assert_eq!((errors[0].line, errors[0].column), (10, 21));
}

#[test]
fn foreign_key_to_missing_table_or_column() {
    let users = "      users:\n        columns:\n          - { name: id, type: uuid, pk: true }\n";
    one_error(
        &format!(
            "{HEAD}{users}      todos:\n        columns:\n          \
             - {{ name: owner_id, type: uuid, references: {{ table: userz, columns: [id] }} }}\n"
        ),
        "schemas.public.tables.todos.columns[0].references",
        10,
        64,
        "schema.yaml:10:64: schemas.public.tables.todos.columns[0].references: foreign key to table \
         `public.userz`, which is not declared, did you mean `users`?",
    );
    one_error(
        &format!(
            "{HEAD}{users}      todos:\n        columns:\n          \
             - {{ name: owner_id, type: uuid, references: {{ table: users, columns: [uid] }} }}\n"
        ),
        "schemas.public.tables.todos.columns[0].references",
        10,
        80,
        "schema.yaml:10:80: schemas.public.tables.todos.columns[0].references: table `public.users` \
         has no column `uid`, did you mean `id`?",
    );
    // A column that exists but is not unique cannot be referenced.
    let errors = errors_of(
        "schema.yaml",
        &format!(
            "{HEAD}      users:\n        columns:\n          - {{ name: id, type: uuid, pk: true }}\n          \
             - {{ name: email, type: text }}\n      todos:\n        columns:\n          \
             - {{ name: owner, type: text, references: {{ table: users, columns: [email] }} }}\n"
        ),
        Format::Yaml,
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .message
            .starts_with("no primary key or unique constraint"),
        "{}",
        errors[0]
    );
}

#[test]
fn policy_on_table_without_rls() {
    one_error(
        &format!(
            "{HEAD}      t:\n        columns:\n          - {{ name: tenant_id, type: uuid }}\n        rls:\n          \
             policies:\n            - {{ name: p, using: \"tenant_id = tenant_id()\" }}\n"
        ),
        "schemas.public.tables.t.rls",
        9,
        11,
        "schema.yaml:9:11: schemas.public.tables.t.rls: policies on table `t`, which does not enable \
         row-level security, add `enabled: true` (or `enabled: false` to keep the policies inactive on purpose)",
    );
}

#[test]
fn invalid_identifiers() {
    let long = "x".repeat(64);
    one_error(
        &format!("{HEAD}      {long}:\n        comment: too long\n"),
        &format!("schemas.public.tables.{long}"),
        5,
        7,
        &format!(
            "schema.yaml:5:7: schemas.public.tables.{long}: invalid table name: `{long}` is 64 bytes long; \
             Postgres identifiers are at most 63"
        ),
    );
    one_error(
        &format!("{HEAD}      t:\n        columns:\n          - {{ name: \"\", type: int }}\n"),
        "schemas.public.tables.t.columns[0]",
        7,
        21,
        "schema.yaml:7:21: schemas.public.tables.t.columns[0]: invalid column name: a name must not be empty",
    );
}

#[test]
fn unknown_privilege() {
    one_error(
        &format!(
            "{HEAD}      t:\n        columns:\n          - {{ name: a, type: int }}\n        grants:\n          \
             - {{ role: app, privilege: selct }}\n"
        ),
        "schemas.public.tables.t.grants[0].privilege",
        9,
        37,
        "schema.yaml:9:37: schemas.public.tables.t.grants[0].privilege: unknown privilege `selct` for a table, \
         did you mean `select`?",
    );
    // Column grants have their own privileges.
    let errors = errors_of(
        "schema.yaml",
        &format!(
            "{HEAD}      t:\n        columns:\n          - {{ name: a, type: int, grants: [{{ role: r, privilege: delete }}] }}\n"
        ),
        Format::Yaml,
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].message, "unknown privilege `delete` for a column");
}

#[test]
fn unparsable_expressions_and_types() {
    let e = one_error(
        &format!("{HEAD}      t:\n        columns:\n          - {{ name: a, type: timestamptz, default: \"now(\" }}\n"),
        "schemas.public.tables.t.columns[0].default",
        7,
        52,
        "schema.yaml:7:52: schemas.public.tables.t.columns[0].default: cannot parse the default `now(`: \
         syntax error at end of input",
    );
    assert!(e.hint.is_none());
    one_error(
        &format!("{HEAD}      t:\n        columns:\n          - {{ name: a, type: \"varchar((\" }}\n"),
        "schemas.public.tables.t.columns[0].type",
        7,
        30,
        "schema.yaml:7:30: schemas.public.tables.t.columns[0].type: invalid type `varchar((`: cannot parse type \
         `varchar((`: syntax error at or near \"(\"",
    );
    one_error(
        &format!("{HEAD}      t:\n        columns:\n          - {{ name: a, type: intt }}\n"),
        "schemas.public.tables.t.columns[0].type",
        7,
        30,
        "schema.yaml:7:30: schemas.public.tables.t.columns[0].type: invalid type `intt`: unknown type `intt`, \
         did you mean `int`?",
    );
    // A bare word as a default is a column reference, which a default cannot have.
    let e = one_error(
        &format!("{HEAD}      t:\n        columns:\n          - {{ name: s, type: text, default: open }}\n"),
        "schemas.public.tables.t.columns[0].default",
        7,
        45,
        "schema.yaml:7:45: schemas.public.tables.t.columns[0].default: a default cannot refer to column `open`, \
         for the text 'open', quote it inside the YAML string: \"'open'\"",
    );
    assert!(e.hint.is_some());
    // SQL smuggled into an expression is not one expression.
    let errors = errors_of(
        "schema.yaml",
        &format!(
            "{HEAD}      t:\n        columns:\n          - {{ name: a, type: int, check: \"a > 0); DROP TABLE t; --\" }}\n"
        ),
        Format::Yaml,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.starts_with("cannot parse the check"),
        "{}",
        errors[0]
    );
}

#[test]
fn five_different_errors_are_all_reported() {
    let text = "\
version: 1
schemas:
  public:
    tables:
      users:
        columns:
          - { name: id, type: uuid, pk: true }
          - { name: email, type: txt, nul: true }
        grants:
          - { role: app, privilege: selct }
      todos:
        columns:
          - { name: owner_id, type: uuid, references: { table: userz } }
        rls:
          policies:
            - { name: p, using: \"true\" }
";
    let errors = errors_of("schema.yaml", text, Format::Yaml);
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "schema.yaml:8:34: schemas.public.tables.users.columns[1].type: invalid type `txt`: unknown type \
             `txt`, did you mean `text`?",
            "schema.yaml:8:39: schemas.public.tables.users.columns[1]: unknown key `nul`, did you mean `not_null`?",
            "schema.yaml:10:37: schemas.public.tables.users.grants[0].privilege: unknown privilege `selct` for a \
             table, did you mean `select`?",
            "schema.yaml:13:64: schemas.public.tables.todos.columns[0].references: foreign key to table \
             `public.userz`, which is not declared, did you mean `users`?",
            "schema.yaml:15:11: schemas.public.tables.todos.rls: policies on table `todos`, which does not \
             enable row-level security, add `enabled: true` (or `enabled: false` to keep the policies inactive \
             on purpose)",
        ],
        "{shown:#?}"
    );
}

#[test]
fn syntax_errors_have_positions() {
    let errors = errors_of("schema.yaml", "version: 1\nschemas: [a, b\n", Format::Yaml);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.starts_with("invalid YAML"),
        "{}",
        errors[0]
    );
    assert!(errors[0].line >= 2, "{}", errors[0]);
    let errors = errors_of(
        "schema.json",
        "{\n  \"version\": 1,\n  \"schemas\": {,}\n}",
        Format::Json,
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "schema.json:3:15: invalid JSON: expected a string key"
    );
}

#[test]
fn json_documents_report_positions_too() {
    let text = "{\n  \"version\": 1,\n  \"schemas\": {\n    \"public\": {\n      \"tables\": {\n        \
                \"t\": { \"columns\": [{ \"name\": \"a\", \"type\": \"int\", \"nul\": true }] }\n      }\n    }\n  }\n}\n";
    let errors = errors_of("schema.json", text, Format::Json);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["schema.json:6:58: schemas.public.tables.t.columns[0]: unknown key `nul`, did you mean `not_null`?"]
    );
}

#[test]
fn version_is_required_and_checked() {
    one_error(
        "schemas: {}\n",
        "",
        1,
        1,
        "schema.yaml:1:1: missing key `version`, add `version: 1`",
    );
    one_error(
        "version: 2\n",
        "version",
        1,
        10,
        "schema.yaml:1:10: version: unsupported version 2, this Lockplane reads version 1",
    );
}

#[test]
fn conflicting_declarations() {
    let cases: &[(&str, &str)] = &[
        (
            "      t:\n        columns:\n          - { name: id, type: serial, default: \"1\" }\n",
            "a serial column cannot have `default`",
        ),
        (
            "      t:\n        columns:\n          - { name: id, type: text, identity: always }\n",
            "an identity column must be smallint, integer or bigint, not `text`",
        ),
        (
            "      t:\n        columns:\n          - { name: id, type: int, pk: true, not_null: false }\n",
            "a primary key column is always NOT NULL",
        ),
        (
            "      t:\n        columns:\n          - { name: a, type: int, pk: true }\n          - { name: b, type: int, pk: true }\n",
            "more than one column has `pk: true`",
        ),
        (
            "      t:\n        columns:\n          - { name: a, type: int }\n        indexes:\n          - { keys: [{ expression: \"a + 1\" }] }\n",
            "an index on expressions needs a `name`",
        ),
        (
            "      t:\n        columns:\n          - { name: a, type: int }\n        indexes:\n          - { name: t, columns: [a] }\n",
            "index `t` has the same name as table `t` in this schema",
        ),
        (
            "      t:\n        columns:\n          - { name: a, type: int, unique: true }\n        unique:\n          - { columns: [a] }\n",
            "the default name `t_a_key` is already taken in this schema",
        ),
        (
            "      t:\n        columns:\n          - { name: a, type: int }\n        rls:\n          enabled: true\n          \
             policies:\n            - { name: p, for: insert, using: \"a > 0\" }\n",
            "an insert policy cannot have `using`",
        ),
        (
            "      t:\n        renamed_from: t\n        columns:\n          - { name: a, type: int }\n",
            "a table cannot be renamed from its own name",
        ),
        (
            "      t:\n        columns:\n          - { name: a, type: int, check: \"b > 0\" }\n",
            "the check refers to unknown column `b`",
        ),
    ];
    for (table, message) in cases {
        let text = format!("{HEAD}{table}");
        let errors = errors_of("schema.yaml", &text, Format::Yaml);
        assert!(
            errors.iter().any(|e| e.message == *message),
            "expected `{message}` in {:#?}",
            errors.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
        assert!(errors.iter().all(|e| e.line > 0), "{errors:?}");
    }
}

#[test]
fn errors_are_miette_diagnostics_with_source_spans() {
    use miette::Diagnostic;
    let text = format!("{HEAD}      t:\n        colums: []\n");
    let err = dsl::load("schema.yaml", &text, Format::Yaml).unwrap_err();
    assert!(err.source_code().is_some());
    let related: Vec<&dyn Diagnostic> = err.related().unwrap().collect();
    assert_eq!(related.len(), 1);
    let label = related[0].labels().unwrap().next().unwrap();
    assert_eq!(
        &text[label.offset()..label.offset() + label.len()],
        "colums"
    );
    assert_eq!(
        related[0].help().unwrap().to_string(),
        "did you mean `columns`?"
    );
}

#[test]
fn reserved_schemas() {
    for name in ["lockplane", "pg_temp_x"] {
        let errors = errors_of(
            "schema.yaml",
            &format!("version: 1\nschemas:\n  {name}: {{}}\n"),
            Format::Yaml,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].message, format!("schema `{name}` is reserved"));
        assert_eq!((errors[0].line, errors[0].column), (3, 3));
    }
}

#[test]
fn exclusion_definitions_are_checked() {
    let table = |definition: &str| {
        format!(
            "{HEAD}      t:\n        columns:\n          - {{ name: id, type: int }}\n          \
             - {{ name: during, type: tstzrange }}\n        exclusions:\n          - {{ name: x, definition: \"{definition}\" }}\n"
        )
    };
    for (definition, message) in [
        ("UNIQUE (id)", "the definition must start with `EXCLUDE`"),
        ("EXCLUDE USING gist (during WITH &&) INCLUDE (id) WHERE (id > 0)", "this exclusion definition does not survive normalisation (INCLUDE together with WHERE is not supported)"),
        ("EXCLUDE USING gist (nope WITH &&)", "table `t` has no column `nope`"),
    ] {
        let errors = errors_of("schema.yaml", &table(definition), Format::Yaml);
        assert_eq!(
            errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            [message],
            "{definition}"
        );
        assert_eq!(errors[0].path, "schemas.public.tables.t.exclusions[0]");
    }
    let ok = dsl::load(
        "schema.yaml",
        &table("EXCLUDE USING gist (during WITH &&) DEFERRABLE INITIALLY DEFERRED"),
        Format::Yaml,
    )
    .unwrap()
    .catalog;
    let x = &ok.schemas["public"].tables["t"].constraints["x"];
    assert!(x.deferrable && x.initially_deferred);
}
