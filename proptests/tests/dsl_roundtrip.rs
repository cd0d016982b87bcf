//! DSL round trips over random valid documents:
//! `to_catalog(parse(to_yaml(to_catalog(doc)))) == to_catalog(doc)` (and the same through
//! JSON), `to_yaml` is deterministic and a fixed point, and a document written back as it is
//! (shorthands, renames and all) means the same catalog.
//!
//! Documents are built from random choices by [`build`], which keeps them valid by
//! construction: names are unique where they must be, references point at what exists, every
//! expression fits its column.

use lockplane_engine::catalog::{IdentityGeneration, PolicyCommand};
use lockplane_engine::dsl::{self, *};
use lockplane_engine::ident::quote_ident;
use proptest::prelude::*;

const SCHEMAS: &[&str] = &["public", "app", "Billing Dept"];
const TABLES: &[&str] = &[
    "users",
    "todos",
    "Order",
    "user",
    "with space",
    "a_table_whose_name_is_long_enough_to_force_truncation_of_names",
    "t",
];
const COLUMNS: &[&str] = &[
    "id",
    "name",
    "select",
    "Mixed",
    "tenant_id",
    "amount",
    "a b",
    "a_column_name_that_is_exactly_sixty_three_bytes_long_xxxxxxxxxx",
];
const ROLES: &[&str] = &["app_reader", "app writer", "public", "Auditor"];
const LABELS: &[&str] = &["open", "done", "it's", "a b", "é", "NULL"];
/// Type, a valid default, whether it is numeric (for checks), whether it is text (collations).
const TYPES: &[(&str, Option<&str>, bool, bool)] = &[
    ("int", Some("0"), true, false),
    ("bigint", Some("42"), true, false),
    ("text", Some("'x'"), false, true),
    ("boolean", Some("false"), false, false),
    ("numeric(10,2)", Some("1.5"), true, false),
    ("timestamptz", Some("now()"), false, false),
    ("varchar(20)", Some("'y'"), false, true),
    ("uuid", Some("gen_random_uuid()"), false, false),
    ("text[]", None, false, false),
    ("serial", None, false, false),
    ("bigserial", None, false, false),
    ("smallint", Some("-1"), true, false),
    ("jsonb", Some("'{}'::jsonb"), false, false),
    ("double precision", None, true, false),
    ("date", Some("CURRENT_DATE"), false, false),
    ("interval day to second(3)", None, false, false),
];

#[derive(Debug, Clone)]
struct ColSpec {
    name: usize,
    ty: usize,
    enum_type: Option<usize>,
    not_null: bool,
    unique: bool,
    default: bool,
    comment: Option<String>,
    collate: bool,
    identity: Option<(bool, Option<i64>)>,
    check: bool,
    grant: Option<(usize, u8, bool)>,
    renamed: bool,
}

#[derive(Debug, Clone)]
struct IndexSpec {
    columns: Vec<usize>,
    unique: bool,
    descending: bool,
    nulls: Option<bool>,
    predicate: bool,
    include: Option<usize>,
    expression: bool,
    named: bool,
}

#[derive(Debug, Clone)]
struct PolicySpec {
    command: usize,
    permissive: bool,
    roles: Vec<usize>,
    helper: bool,
}

#[derive(Debug, Clone)]
struct TableSpec {
    name: usize,
    columns: Vec<ColSpec>,
    /// 0: none, 1: `pk: true`, 2: `primary_key` over two columns, 3: named `primary_key`.
    pk: u8,
    fk: Option<(usize, u8)>,
    indexes: Vec<IndexSpec>,
    rls: Option<(Option<bool>, bool, Vec<PolicySpec>)>,
    grants: Vec<(usize, u8, bool)>,
    comment: Option<String>,
    unlogged: bool,
    unique_pair: bool,
    renamed: bool,
}

#[derive(Debug, Clone)]
struct SequenceSpec {
    ty: u8,
    increment: i64,
    cache: Option<i64>,
    cycle: bool,
    comment: Option<String>,
}

#[derive(Debug, Clone)]
struct SchemaSpec {
    name: usize,
    comment: Option<String>,
    enums: Vec<Vec<usize>>,
    tables: Vec<TableSpec>,
    sequences: Vec<SequenceSpec>,
    view: bool,
}

/// Text that exercises YAML and JSON quoting.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 '\"\\\\:#{}\\[\\],&*!|>%@`é\n\t-]{0,16}"
}

fn column() -> impl Strategy<Value = ColSpec> {
    (
        (
            0..COLUMNS.len(),
            0..TYPES.len(),
            prop::option::of(0usize..2),
        ),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        prop::option::of(text()),
        any::<bool>(),
        prop::option::of((any::<bool>(), prop::option::of(1i64..100))),
        any::<bool>(),
        prop::option::of((0..ROLES.len(), 1u8..16, any::<bool>())),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                (name, ty, enum_type),
                (not_null, unique, default),
                comment,
                collate,
                identity,
                check,
                grant,
                renamed,
            )| {
                ColSpec {
                    name,
                    ty,
                    enum_type,
                    not_null,
                    unique,
                    default,
                    comment,
                    collate,
                    identity,
                    check,
                    grant,
                    renamed,
                }
            },
        )
}

fn index() -> impl Strategy<Value = IndexSpec> {
    (
        prop::collection::vec(0usize..8, 1..3),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(any::<bool>()),
        any::<bool>(),
        prop::option::of(0usize..8),
        prop::bool::weighted(0.3),
        any::<bool>(),
    )
        .prop_map(
            |(columns, unique, descending, nulls, predicate, include, expression, named)| {
                IndexSpec {
                    columns,
                    unique,
                    descending,
                    nulls,
                    predicate,
                    include,
                    expression,
                    named,
                }
            },
        )
}

fn policy() -> impl Strategy<Value = PolicySpec> {
    (
        0usize..5,
        any::<bool>(),
        prop::collection::vec(0..ROLES.len(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(command, permissive, roles, helper)| PolicySpec {
            command,
            permissive,
            roles,
            helper,
        })
}

fn table() -> impl Strategy<Value = TableSpec> {
    (
        (
            0..TABLES.len(),
            prop::collection::vec(column(), 1..6),
            0u8..4,
        ),
        prop::option::of((0usize..4, 0u8..3)),
        prop::collection::vec(index(), 0..3),
        prop::option::of((
            prop::option::of(any::<bool>()),
            any::<bool>(),
            prop::collection::vec(policy(), 0..3),
        )),
        prop::collection::vec((0..ROLES.len(), 1u8..=255, any::<bool>()), 0..3),
        prop::option::of(text()),
        (any::<bool>(), any::<bool>(), prop::bool::weighted(0.1)),
    )
        .prop_map(
            |(
                (name, columns, pk),
                fk,
                indexes,
                rls,
                grants,
                comment,
                (unlogged, unique_pair, renamed),
            )| {
                TableSpec {
                    name,
                    columns,
                    pk,
                    fk,
                    indexes,
                    rls,
                    grants,
                    comment,
                    unlogged,
                    unique_pair,
                    renamed,
                }
            },
        )
}

fn sequence() -> impl Strategy<Value = SequenceSpec> {
    (
        0u8..3,
        prop_oneof![1i64..10, -10i64..-1],
        prop::option::of(1i64..50),
        any::<bool>(),
        prop::option::of(text()),
    )
        .prop_map(|(ty, increment, cache, cycle, comment)| SequenceSpec {
            ty,
            increment,
            cache,
            cycle,
            comment,
        })
}

fn schema() -> impl Strategy<Value = SchemaSpec> {
    (
        0..SCHEMAS.len(),
        prop::option::of(text()),
        prop::collection::vec(prop::collection::vec(0..LABELS.len(), 1..4), 0..3),
        prop::collection::vec(table(), 1..4),
        prop::collection::vec(sequence(), 0..2),
        any::<bool>(),
    )
        .prop_map(
            |(name, comment, enums, tables, sequences, view)| SchemaSpec {
                name,
                comment,
                enums,
                tables,
                sequences,
                view,
            },
        )
}

fn unique_by<T>(items: Vec<T>, key: impl Fn(&T) -> usize) -> Vec<T> {
    let mut seen = Vec::new();
    items
        .into_iter()
        .filter(|i| {
            let k = key(i);
            let fresh = !seen.contains(&k);
            seen.push(k);
            fresh
        })
        .collect()
}

const PRIVILEGES: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "truncate",
    "references",
    "trigger",
    "maintain",
];
const COLUMN_PRIVILEGES: &[&str] = &["select", "insert", "update", "references"];

fn privileges(mask: u8, from: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = from
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, p)| (*p).to_owned())
        .collect();
    if out.is_empty() {
        out.push("select".into());
    }
    // Mix the shorthands in.
    if out == ["insert", "update"] {
        out = vec!["insert_update".into()];
    }
    out
}

/// Turns random choices into a valid document.
fn build(specs: Vec<SchemaSpec>) -> Document {
    let mut doc = Document {
        version: 1,
        ..Document::default()
    };
    doc.extensions.push(ExtensionDecl {
        name: "pgcrypto".into(),
        required: false,
        ..ExtensionDecl::default()
    });
    for spec in unique_by(specs, |s| s.name) {
        let schema_name = SCHEMAS[spec.name].to_owned();
        let mut schema = SchemaDecl {
            name: schema_name.clone(),
            comment: spec.comment,
            ..SchemaDecl::default()
        };
        for (i, labels) in spec.enums.iter().enumerate() {
            let labels: Vec<String> = unique_by(labels.clone(), |l| *l)
                .into_iter()
                .map(|l| LABELS[l].to_owned())
                .collect();
            schema.enums.push(EnumDecl {
                name: format!("state_{i}"),
                labels,
                ..EnumDecl::default()
            });
        }
        // (name, single-column primary key) of the tables built so far, for foreign keys.
        let mut built: Vec<(String, Option<String>)> = Vec::new();
        for t in unique_by(spec.tables, |t| t.name) {
            let table_name = TABLES[t.name].to_owned();
            let mut table = TableDecl {
                name: table_name.clone(),
                comment: t.comment,
                unlogged: t.unlogged,
                renamed_from: t.renamed.then(|| format!("old_{}", t.name)),
                ..TableDecl::default()
            };
            let specs = unique_by(t.columns, |c| c.name);
            for (ci, c) in specs.iter().enumerate() {
                let name = COLUMNS[c.name].to_owned();
                let (builtin, default, numeric, textual) = TYPES[c.ty];
                let ty: String = match c.enum_type {
                    Some(e) if !schema.enums.is_empty() => {
                        schema.enums[e % schema.enums.len()].name.clone()
                    }
                    _ => builtin.to_owned(),
                };
                let ty = ty.as_str();
                let is_enum = ty.starts_with("state_");
                let serial = ty.ends_with("serial");
                let integer = matches!(ty, "int" | "bigint" | "smallint");
                let identity =
                    c.identity
                        .filter(|_| integer && !c.default)
                        .map(|(always, start)| IdentityDecl {
                            start,
                            ..IdentityDecl::new(if always {
                                IdentityGeneration::Always
                            } else {
                                IdentityGeneration::ByDefault
                            })
                        });
                let mut column = ColumnDecl {
                    name: name.clone(),
                    data_type: ty.to_owned(),
                    not_null: c.not_null.then_some(true),
                    unique: c.unique,
                    default: default
                        .filter(|_| c.default && !is_enum && !serial)
                        .map(str::to_owned),
                    comment: c.comment.clone(),
                    collation: (c.collate && textual && !is_enum).then(|| "C".to_owned()),
                    identity,
                    check: (c.check && numeric && !is_enum)
                        .then(|| format!("{} > 0", quote_ident(&name))),
                    renamed_from: c.renamed.then(|| format!("old_{ci}")),
                    ..ColumnDecl::default()
                };
                if let Some((role, mask, grantable)) = c.grant {
                    column.grants.push(GrantDecl {
                        role: ROLES[role].into(),
                        privileges: privileges(mask, COLUMN_PRIVILEGES),
                        grantable,
                        ..GrantDecl::default()
                    });
                }
                table.columns.push(column);
            }
            let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
            let mut single_pk = None;
            match t.pk {
                1 => {
                    table.columns[0].pk = true;
                    table.columns[0].not_null = None;
                    single_pk = Some(names[0].clone());
                }
                2 if names.len() >= 2 => {
                    table.primary_key = Some(PrimaryKeyDecl {
                        columns: names[..2].to_vec(),
                        ..PrimaryKeyDecl::default()
                    });
                    for c in &mut table.columns[..2] {
                        c.not_null = None;
                    }
                }
                3 => {
                    table.primary_key = Some(PrimaryKeyDecl {
                        name: Some(format!("pk {}", t.name)),
                        columns: vec![names[0].clone()],
                        deferrable: true,
                        ..PrimaryKeyDecl::default()
                    });
                    table.columns[0].not_null = None;
                    single_pk = Some(names[0].clone());
                }
                _ => {}
            }
            if t.unique_pair && names.len() >= 2 {
                table.unique.push(UniqueDecl {
                    name: Some(format!("uq {}", t.name)),
                    columns: vec![names[1].clone(), names[0].clone()],
                    nulls_not_distinct: true,
                    ..UniqueDecl::default()
                });
            }
            if let Some((target, how)) = t.fk {
                if let Some((target_name, Some(target_pk))) =
                    built.get(target % built.len().max(1)).cloned()
                {
                    let references = ReferencesDecl {
                        table: target_name,
                        columns: if how == 0 {
                            Vec::new()
                        } else {
                            vec![target_pk]
                        },
                        on_delete: (how == 2)
                            .then_some(lockplane_engine::catalog::ForeignKeyAction::Cascade),
                        ..ReferencesDecl::default()
                    };
                    let last = names.len() - 1;
                    if how == 1 {
                        table.foreign_keys.push(ForeignKeyDecl {
                            columns: vec![names[last].clone()],
                            references,
                            not_valid: true,
                            ..ForeignKeyDecl::default()
                        });
                    } else {
                        table.columns[last].references = Some(references);
                    }
                }
            }
            for (ii, ix) in t.indexes.iter().enumerate() {
                let columns: Vec<String> = unique_by(ix.columns.clone(), |c| *c % names.len())
                    .into_iter()
                    .map(|c| names[c % names.len()].clone())
                    .collect();
                let mut keys: Vec<IndexKeyDecl> = columns
                    .iter()
                    .map(|c| IndexKeyDecl {
                        column: Some(c.clone()),
                        descending: ix.descending,
                        nulls_first: ix.nulls,
                        ..IndexKeyDecl::default()
                    })
                    .collect();
                if ix.expression {
                    keys.push(IndexKeyDecl {
                        expression: Some(format!("({}::text)", quote_ident(&columns[0]))),
                        ..IndexKeyDecl::default()
                    });
                }
                let include: Vec<String> = ix
                    .include
                    .map(|i| names[i % names.len()].clone())
                    .filter(|c| !columns.contains(c))
                    .into_iter()
                    .collect();
                table.indexes.push(IndexDecl {
                    name: (ix.named || ix.expression).then(|| format!("ix {} {ii}", t.name)),
                    unique: ix.unique,
                    keys,
                    include,
                    predicate: ix
                        .predicate
                        .then(|| format!("{} IS NOT NULL", quote_ident(&columns[0]))),
                    ..IndexDecl::default()
                });
            }
            // Unnamed indexes on the same columns would share a default name.
            let mut seen_names = Vec::new();
            table.indexes.retain(|ix| {
                // Postgres names an index after its key and INCLUDE columns together.
                let mut columns: Vec<&String> =
                    ix.keys.iter().filter_map(|k| k.column.as_ref()).collect();
                columns.extend(&ix.include);
                let key = ix.name.clone().unwrap_or_else(|| format!("{columns:?}"));
                let fresh = !seen_names.contains(&key);
                seen_names.push(key);
                fresh
            });
            if let Some((enabled, forced, policies)) = t.rls {
                let commands = [
                    PolicyCommand::All,
                    PolicyCommand::Select,
                    PolicyCommand::Insert,
                    PolicyCommand::Update,
                    PolicyCommand::Delete,
                ];
                let enabled = if policies.is_empty() {
                    enabled
                } else {
                    Some(enabled.unwrap_or(true))
                };
                let condition = |helper: bool| {
                    if helper {
                        "tenant_id() IS NOT NULL".to_owned()
                    } else {
                        format!("{} IS NOT NULL", quote_ident(&names[0]))
                    }
                };
                table.rls = Some(RlsDecl {
                    enabled,
                    forced,
                    policies: policies
                        .iter()
                        .enumerate()
                        .map(|(pi, p)| {
                            let command = commands[p.command];
                            PolicyDecl {
                                name: format!("policy {pi}"),
                                command,
                                permissive: p.permissive,
                                roles: unique_by(p.roles.clone(), |r| *r)
                                    .into_iter()
                                    .map(|r| ROLES[r].to_owned())
                                    .collect(),
                                using: (command != PolicyCommand::Insert)
                                    .then(|| condition(p.helper)),
                                with_check: matches!(
                                    command,
                                    PolicyCommand::All
                                        | PolicyCommand::Insert
                                        | PolicyCommand::Update
                                )
                                .then(|| condition(!p.helper)),
                                ..PolicyDecl::default()
                            }
                        })
                        .collect(),
                    ..RlsDecl::default()
                });
            }
            for (role, mask, grantable) in t.grants {
                table.grants.push(GrantDecl {
                    role: ROLES[role].into(),
                    privileges: if mask == 255 {
                        vec!["all".into()]
                    } else {
                        privileges(mask, PRIVILEGES)
                    },
                    grantable,
                    ..GrantDecl::default()
                });
            }
            built.push((table_name, single_pk));
            schema.tables.push(table);
        }
        for (si, s) in spec.sequences.iter().enumerate() {
            schema.sequences.push(SequenceDecl {
                name: format!("seq {si}"),
                data_type: Some(["smallint", "integer", "bigint"][usize::from(s.ty)].to_owned()),
                increment: Some(s.increment),
                cache: s.cache,
                cycle: s.cycle,
                comment: s.comment.clone(),
                ..SequenceDecl::default()
            });
        }
        if spec.view {
            let first = &schema.tables[0];
            schema.views.push(ViewDecl {
                name: "v".into(),
                query: format!(
                    "SELECT {} FROM {}.{}",
                    quote_ident(&first.columns[0].name),
                    quote_ident(&schema_name),
                    quote_ident(&first.name)
                ),
                options: [("security_barrier".to_owned(), "true".to_owned())]
                    .into_iter()
                    .collect(),
                ..ViewDecl::default()
            });
        }
        doc.schemas.push(schema);
    }
    doc
}

fn document() -> impl Strategy<Value = Document> {
    prop::collection::vec(schema(), 1..3).prop_map(build)
}

fn reload(text: &str, format: Format) -> Result<Loaded, TestCaseError> {
    dsl::load("generated", text, format)
        .map_err(|e| TestCaseError::fail(format!("{e}\n---\n{text}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn catalogs_survive_yaml_and_json(doc in document()) {
        // A few generated documents clash on a truncated default name; those are errors by
        // design (see the `dsl` module docs) and say so.
        let catalog = match dsl::to_catalog(&doc) {
            Ok(c) => c,
            Err(e) => {
                prop_assert!(
                    e.errors.iter().all(|e| e.message.contains("already taken") || e.message.contains("same name")),
                    "{e}\n{doc:#?}"
                );
                return Ok(());
            }
        };
        let yaml = dsl::to_yaml(&catalog);
        prop_assert_eq!(dsl::to_yaml(&catalog), yaml.clone(), "to_yaml is not deterministic");
        let back = reload(&yaml, Format::Yaml)?;
        prop_assert_eq!(&back.catalog, &catalog, "YAML:\n{}", yaml);
        prop_assert_eq!(dsl::to_yaml(&back.catalog), yaml.clone(), "not a fixed point");
        let json = dsl::to_json(&catalog);
        let back = reload(&json, Format::Json)?;
        prop_assert_eq!(&back.catalog, &catalog, "JSON:\n{}", json);
    }

    #[test]
    fn documents_written_as_they_are_mean_the_same(doc in document()) {
        let Ok(catalog) = dsl::to_catalog(&doc) else { return Ok(()) };
        let yaml = dsl::document_to_yaml(&doc);
        let back = reload(&yaml, Format::Yaml)?;
        prop_assert_eq!(&back.catalog, &catalog, "{}", yaml);
        prop_assert_eq!(back.document.renames(), doc.renames());
        prop_assert_eq!(back.document.optional_extensions(), doc.optional_extensions());
        let json = dsl::document_to_json(&doc);
        let back = reload(&json, Format::Json)?;
        prop_assert_eq!(&back.catalog, &catalog, "{}", json);
    }
}

/// Any text, and any small edit of a valid document, gives a document or errors with
/// positions inside the text: never a panic.
fn check_errors_point_into(text: &str, format: Format) -> Result<(), TestCaseError> {
    if let Err(e) = dsl::load("fuzz", text, format) {
        prop_assert!(!e.errors.is_empty());
        let lines = text.split('\n').count() as u32;
        for err in &e.errors {
            prop_assert!(
                err.line >= 1 && err.line <= lines + 1,
                "{err} (of {lines} lines)"
            );
            prop_assert!(err.offset <= text.len(), "{err}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_errors_point_into(&text, Format::Yaml)?;
        check_errors_point_into(&text, Format::Json)?;
    }

    #[test]
    fn edited_documents_never_panic(
        doc in document(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), "[ -~\n\t]{0,3}"), 1..4),
    ) {
        let Ok(catalog) = dsl::to_catalog(&doc) else { return Ok(()) };
        for (mut text, format) in [(dsl::to_yaml(&catalog), Format::Yaml), (dsl::to_json(&catalog), Format::Json)] {
            for (at, delete, insert) in &edits {
                let mut i = at.index(text.len() + 1);
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                if *delete {
                    let end = text[i..].chars().next().map_or(i, |c| i + c.len_utf8());
                    text.replace_range(i..end, "");
                }
                text.insert_str(i, insert);
            }
            check_errors_point_into(&text, format)?;
        }
    }
}
