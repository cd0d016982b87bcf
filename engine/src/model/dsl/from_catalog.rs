//! [`Catalog`] → [`Document`]: the catalog written the way a person would write it, with the
//! shorthands wherever they mean exactly the same thing and every default left out.
//!
//! The rule for every shorthand is the same: use it only when reading it back gives the same
//! catalog. A constraint is left unnamed only when its name is the one the reader would choose
//! and no other constraint of the schema has that name.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::*;

use super::convert::serial_default;
use super::document::*;
use super::names::{self, split_printed_name};
use super::privileges::{self, ObjectKind};
use super::sql;
use super::types::{self, TypeScope};

struct CatalogScope<'c> {
    catalog: &'c Catalog,
    current: &'c str,
}

impl TypeScope for CatalogScope<'_> {
    fn find_enum(&self, name: &str) -> Option<String> {
        [self.current, "public"]
            .into_iter()
            .find(|s| {
                self.catalog
                    .schemas
                    .get(*s)
                    .is_some_and(|schema| schema.enums.contains_key(name))
            })
            .map(str::to_owned)
    }

    fn check_qualified(&self, _schema: &str, _name: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Writes `catalog` as a document.
pub fn from_catalog(catalog: &Catalog) -> Document {
    let mut doc = Document {
        version: DSL_VERSION,
        ..Document::default()
    };
    for (name, ext) in &catalog.extensions {
        doc.extensions.push(ExtensionDecl {
            name: name.clone(),
            schema: (ext.schema != "public").then(|| ext.schema.clone()),
            ..ExtensionDecl::default()
        });
    }
    for (name, schema) in &catalog.schemas {
        doc.schemas.push(schema_decl(catalog, name, schema));
    }
    doc
}

fn grants_decl(grants: &[Grant], kind: ObjectKind) -> Vec<GrantDecl> {
    let mut grouped: BTreeMap<(&str, bool), Vec<&str>> = BTreeMap::new();
    for g in grants {
        grouped
            .entry((g.grantee.as_str(), g.grantable))
            .or_default()
            .push(g.privilege.as_str());
    }
    grouped
        .into_iter()
        .map(|((role, grantable), privileges)| GrantDecl {
            role: role.to_owned(),
            privileges: privileges::compress(&privileges, kind),
            grantable,
            origin: Origin::default(),
        })
        .collect()
}

/// Sequence options relative to the defaults for their type: `None` where the default applies.
fn options_decl(o: &SequenceOptions) -> [Option<i64>; 5] {
    let (type_min, type_max) = types::integer_range(&o.data_type).unwrap_or((i64::MIN, i64::MAX));
    let ascending = o.increment > 0;
    let default_min = if ascending { 1 } else { type_min };
    let default_max = if ascending { type_max } else { -1 };
    let default_start = if ascending { o.min } else { o.max };
    [
        (o.start != default_start).then_some(o.start),
        (o.increment != 1).then_some(o.increment),
        (o.min != default_min).then_some(o.min),
        (o.max != default_max).then_some(o.max),
        (o.cache != 1).then_some(o.cache),
    ]
}

/// How many constraints of the schema carry each name: a default name can only be left out
/// when it is unique in the schema (see the module docs of `dsl`).
fn constraint_name_counts(schema: &Schema) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for table in schema.tables.values() {
        for name in table.constraints.keys() {
            *counts.entry(name.as_str()).or_insert(0) += 1;
        }
    }
    counts
}

/// The serial sequence behind `schema.table.column`, when the column is exactly what
/// `serial` would make: then it is written as `serial` and the sequence is left out.
pub(crate) fn serial_of(
    schema_name: &str,
    schema: &Schema,
    table: &str,
    column_name: &str,
    column: &Column,
) -> Option<(&'static str, String)> {
    let serial_type = match column.data_type.as_str() {
        "smallint" => "smallserial",
        "integer" => "serial",
        "bigint" => "bigserial",
        _ => return None,
    };
    if !column.not_null || column.identity.is_some() || column.generated.is_some() {
        return None;
    }
    let seq_name = names::serial_sequence_name(table, column_name);
    let sequence = schema.sequences.get(&seq_name)?;
    let (_, type_max) = types::integer_range(&column.data_type)?;
    let expected = SequenceOptions {
        data_type: column.data_type.clone(),
        start: 1,
        increment: 1,
        min: 1,
        max: type_max,
        cache: 1,
        cycle: false,
    };
    let owned = sequence
        .owned_by
        .as_ref()
        .is_some_and(|o| o.table == table && o.column == column_name);
    let plain =
        sequence.options == expected && sequence.grants.is_empty() && sequence.comment.is_none();
    let default =
        column.default.as_deref() == Some(serial_default(schema_name, &seq_name).as_str());
    (owned && plain && default).then_some((serial_type, seq_name))
}

fn schema_decl(catalog: &Catalog, name: &str, schema: &Schema) -> SchemaDecl {
    let scope = CatalogScope {
        catalog,
        current: name,
    };
    let counts = constraint_name_counts(schema);
    let mut folded_sequences = BTreeSet::new();
    let mut tables = Vec::new();
    for (table_name, table) in &schema.tables {
        tables.push(table_decl(
            name,
            schema,
            table_name,
            table,
            &scope,
            &counts,
            &mut folded_sequences,
        ));
    }
    SchemaDecl {
        name: name.to_owned(),
        comment: schema.comment.clone(),
        enums: schema
            .enums
            .iter()
            .map(|(n, e)| EnumDecl {
                name: n.clone(),
                labels: e.labels.clone(),
                comment: e.comment.clone(),
                origin: Origin::default(),
            })
            .collect(),
        sequences: schema
            .sequences
            .iter()
            .filter(|(n, _)| !folded_sequences.contains(n.as_str()))
            .map(|(n, s)| {
                let [start, increment, min, max, cache] = options_decl(&s.options);
                SequenceDecl {
                    name: n.clone(),
                    data_type: (s.options.data_type != "bigint")
                        .then(|| s.options.data_type.clone()),
                    start,
                    increment,
                    min,
                    max,
                    cache,
                    cycle: s.options.cycle,
                    owned_by: s.owned_by.as_ref().map(|o| OwnerDecl {
                        table: o.table.clone(),
                        column: o.column.clone(),
                    }),
                    grants: grants_decl(&s.grants, ObjectKind::Sequence),
                    comment: s.comment.clone(),
                    origin: Origin::default(),
                }
            })
            .collect(),
        tables,
        views: schema
            .views
            .iter()
            .map(|(n, v)| ViewDecl {
                name: n.clone(),
                query: v.definition.clone(),
                options: v
                    .options
                    .iter()
                    .map(|o| match o.split_once('=') {
                        Some((k, v)) => (k.to_owned(), v.to_owned()),
                        None => (o.clone(), "true".to_owned()),
                    })
                    .collect(),
                grants: grants_decl(&v.grants, ObjectKind::View),
                comment: v.comment.clone(),
                origin: Origin::default(),
            })
            .collect(),
        origin: Origin::default(),
    }
}

/// An operator class or index collation as the catalog holds it (every part quoted) back to
/// the DSL's form.
fn index_name_text(printed: &str, split_dots: bool) -> String {
    match split_printed_name(printed) {
        Some(parts) => {
            let simple = |p: &String| !(p.contains('"') || split_dots && p.contains('.'));
            match parts.as_slice() {
                [one] if simple(one) && (split_dots || !one.is_empty()) => one.clone(),
                [s, n] if split_dots && simple(s) && simple(n) => format!("{s}.{n}"),
                _ => printed.to_owned(),
            }
        }
        None => printed.to_owned(),
    }
}

/// A column collation (Postgres' quoting) back to the DSL's form.
fn collation_text(printed: &str) -> String {
    match split_printed_name(printed) {
        Some(parts) => match parts.as_slice() {
            [one] if !one.contains('"') => one.clone(),
            [s, n] => format!(
                "{}.{}",
                crate::ident::quote_ident(s),
                crate::ident::quote_ident(n)
            ),
            _ => printed.to_owned(),
        },
        None => printed.to_owned(),
    }
}

#[allow(clippy::too_many_arguments)]
fn table_decl(
    schema_name: &str,
    schema: &Schema,
    name: &str,
    table: &Table,
    scope: &CatalogScope,
    counts: &BTreeMap<&str, usize>,
    folded_sequences: &mut BTreeSet<String>,
) -> TableDecl {
    let unique_default = |constraint_name: &str, default: &str| {
        constraint_name == default && counts.get(constraint_name).copied().unwrap_or(0) == 1
    };
    let plain = |c: &Constraint| {
        !c.deferrable && !c.initially_deferred && c.validated && c.comment.is_none()
    };

    let mut decl = TableDecl {
        name: name.to_owned(),
        comment: table.comment.clone(),
        unlogged: table.unlogged,
        ..TableDecl::default()
    };

    let mut pk_columns: Vec<String> = Vec::new();
    let mut pk_shorthand = false;
    let mut column_unique: BTreeSet<String> = BTreeSet::new();
    let mut column_refs: BTreeMap<String, ReferencesDecl> = BTreeMap::new();

    for (cname, c) in &table.constraints {
        match &c.definition {
            ConstraintDef::PrimaryKey { columns } => {
                pk_columns = columns.clone();
                let default = names::primary_key_name(name);
                if columns.len() == 1 && plain(c) && unique_default(cname, &default) {
                    pk_shorthand = true;
                } else {
                    decl.primary_key = Some(PrimaryKeyDecl {
                        name: (!unique_default(cname, &default)).then(|| cname.clone()),
                        columns: columns.clone(),
                        deferrable: c.deferrable,
                        initially_deferred: c.initially_deferred,
                        comment: c.comment.clone(),
                        origin: Origin::default(),
                    });
                }
            }
            ConstraintDef::Unique {
                columns,
                nulls_not_distinct,
            } => {
                let default = names::unique_name(name, columns);
                if columns.len() == 1
                    && !nulls_not_distinct
                    && plain(c)
                    && unique_default(cname, &default)
                {
                    column_unique.insert(columns[0].clone());
                } else {
                    decl.unique.push(UniqueDecl {
                        name: (!unique_default(cname, &default)).then(|| cname.clone()),
                        columns: columns.clone(),
                        nulls_not_distinct: *nulls_not_distinct,
                        deferrable: c.deferrable,
                        initially_deferred: c.initially_deferred,
                        comment: c.comment.clone(),
                        origin: Origin::default(),
                    });
                }
            }
            ConstraintDef::ForeignKey {
                columns,
                references,
                on_update,
                on_delete,
                match_type,
            } => {
                let default = names::foreign_key_name(name, columns);
                let target = ReferencesDecl {
                    schema: (references.schema != schema_name).then(|| references.schema.clone()),
                    table: references.table.clone(),
                    columns: references.columns.clone(),
                    on_delete: (*on_delete != ForeignKeyAction::NoAction).then_some(*on_delete),
                    on_update: (*on_update != ForeignKeyAction::NoAction).then_some(*on_update),
                    match_type: (*match_type != ForeignKeyMatch::Simple).then_some(*match_type),
                    deferrable: c.deferrable,
                    initially_deferred: c.initially_deferred,
                    origin: Origin::default(),
                };
                let shorthand = columns.len() == 1
                    && c.validated
                    && c.comment.is_none()
                    && unique_default(cname, &default)
                    && !column_refs.contains_key(&columns[0]);
                if shorthand {
                    column_refs.insert(columns[0].clone(), target);
                } else {
                    decl.foreign_keys.push(ForeignKeyDecl {
                        name: (!unique_default(cname, &default)).then(|| cname.clone()),
                        columns: columns.clone(),
                        references: target,
                        not_valid: !c.validated,
                        comment: c.comment.clone(),
                        origin: Origin::default(),
                    });
                }
            }
            ConstraintDef::Check {
                expression,
                no_inherit,
            } => {
                let refs = sql::column_refs(expression).unwrap_or_default();
                let single = if refs.len() == 1 {
                    refs.iter().next().map(String::as_str)
                } else {
                    None
                };
                let default = names::check_name(name, single);
                decl.checks.push(CheckDecl {
                    name: (!unique_default(cname, &default)).then(|| cname.clone()),
                    expression: expression.clone(),
                    no_inherit: *no_inherit,
                    not_valid: !c.validated,
                    comment: c.comment.clone(),
                    origin: Origin::default(),
                });
            }
            ConstraintDef::Exclusion { definition } => {
                decl.exclusions.push(ExclusionDecl {
                    name: Some(cname.clone()),
                    definition: definition.clone(),
                    comment: c.comment.clone(),
                    origin: Origin::default(),
                });
            }
        }
    }

    // The table's own order (attnum, or the document's) where the catalog knows it; columns
    // without a position follow, primary-key columns first in key order, then by name.
    let mut order: Vec<&String> = table.columns.keys().collect();
    order.sort_by_key(|c| {
        let position = table.columns.get(*c).and_then(|c| c.position.get());
        let in_key = pk_columns.iter().position(|k| k == *c);
        (position.unwrap_or(u32::MAX), in_key.unwrap_or(usize::MAX))
    });
    for cname in order {
        let Some(c) = table.columns.get(cname) else {
            continue;
        };
        let in_pk = pk_columns.contains(cname);
        let serial = serial_of(schema_name, schema, name, cname, c);
        let (data_type, default) = match &serial {
            Some((serial_type, seq)) => {
                folded_sequences.insert(seq.clone());
                ((*serial_type).to_owned(), None)
            }
            None => (
                types::to_dsl(&c.data_type, schema_name, scope),
                c.default.clone(),
            ),
        };
        let implied = in_pk || c.identity.is_some() || serial.is_some();
        decl.columns.push(ColumnDecl {
            name: cname.clone(),
            data_type,
            renamed_from: None,
            up: None,
            down: None,
            pk: pk_shorthand && in_pk,
            not_null: (c.not_null && !implied).then_some(true),
            unique: column_unique.contains(cname),
            default,
            references: column_refs.remove(cname),
            check: None,
            identity: c.identity.as_ref().map(|id| {
                let [start, increment, min, max, cache] = options_decl(&id.sequence);
                IdentityDecl {
                    generation: id.generation,
                    start,
                    increment,
                    min,
                    max,
                    cache,
                    cycle: id.sequence.cycle,
                }
            }),
            generated: c.generated.clone(),
            collation: c.collation.as_deref().map(collation_text),
            comment: c.comment.clone(),
            grants: grants_decl(&c.grants, ObjectKind::Column),
            origin: Origin::default(),
        });
    }

    for (iname, index) in &table.indexes {
        let mut columns: Vec<String> = index.keys.iter().filter_map(|k| k.column.clone()).collect();
        columns.extend(index.include.iter().cloned());
        let default_name = index.keys.iter().all(|k| k.column.is_some())
            && *iname == names::index_name(name, &columns);
        decl.indexes.push(IndexDecl {
            name: (!default_name).then(|| iname.clone()),
            unique: index.unique,
            method: (index.method != "btree").then(|| index.method.clone()),
            keys: index
                .keys
                .iter()
                .map(|k| IndexKeyDecl {
                    column: k.column.clone(),
                    expression: k.expression.clone(),
                    opclass: k.opclass.as_deref().map(|o| index_name_text(o, true)),
                    collation: k.collation.as_deref().map(|o| index_name_text(o, false)),
                    descending: k.descending,
                    nulls_first: (k.nulls_first != k.descending).then_some(k.nulls_first),
                })
                .collect(),
            include: index.include.clone(),
            predicate: index.predicate.clone(),
            nulls_not_distinct: index.nulls_not_distinct,
            comment: index.comment.clone(),
            origin: Origin::default(),
        });
    }

    if table.rls != Rls::default() {
        decl.rls = Some(RlsDecl {
            enabled: Some(table.rls.enabled),
            forced: table.rls.forced,
            policies: table
                .rls
                .policies
                .iter()
                .map(|(pname, p)| PolicyDecl {
                    name: pname.clone(),
                    command: p.command,
                    permissive: p.permissive,
                    roles: if p.roles == ["public"] {
                        Vec::new()
                    } else {
                        p.roles.clone()
                    },
                    using: p.using.clone(),
                    with_check: p.with_check.clone(),
                    comment: p.comment.clone(),
                    origin: Origin::default(),
                })
                .collect(),
            origin: Origin::default(),
        });
    }
    decl.grants = grants_decl(&table.grants, ObjectKind::Table);
    decl
}
