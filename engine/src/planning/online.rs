//! Expand/contract ("online") column changes (issue 16), the engine mechanics: pgroll- and
//! Reshape-style migrations where the old and the new application run side by side.
//!
//! A change the old application cannot live with (a type change, a rename, a new `NOT NULL`)
//! is not made in place. Instead:
//!
//! 1. **expand** ([`expand_sql`], one short transaction): each changed column `c` gets a
//!    sibling `_lp_new_c` of the new type, nullable (the new `NOT NULL` is a
//!    `CHECK (_lp_new_c IS NOT NULL) NOT VALID` constraint, so adding it scans nothing); a
//!    trigger keeps both representations in sync on every write; and a *version schema*
//!    `<schema>_<version>` holds one view per table exposing the new shape (`_lp_new_c AS
//!    new_name`, the unchanged columns as they are). Simple single-table views are
//!    auto-updatable, so the new application reads and writes through them.
//! 2. **backfill** ([`backfill`]): existing rows get `_lp_new_c = up(row)` in keyset batches
//!    by primary key, each its own short transaction with a short `lock_timeout`; resumable.
//! 3. **complete** ([`complete_sql`]) contracts: validates the check, sets `NOT NULL` with
//!    it (no second scan), drops the trigger, its function and the old column, renames
//!    `_lp_new_c` to its final name. Or **rollback** ([`rollback_sql`]): drops what expand
//!    added; the old column was never touched, so the old application loses nothing.
//!
//! # Which side wrote a row: the session's `search_path`
//!
//! A trigger cannot see through which view (if any) a row was written, and comparing `NEW`
//! with `OLD` does not work for `INSERT` (there is no `OLD`) nor for an `UPDATE` that sets
//! both columns or neither. So, like pgroll, the trigger asks the session: a write comes
//! from the **new** application when the first schema of its `search_path` that exists
//! (`current_schemas(false)[1]`) is the version schema; then `old = down(new)`. Every other
//! write (the old application, the backfill, a psql session) comes from the **old** side:
//! `new = up(old)`. The contract for the new application is therefore: connect with
//! `search_path = <schema>_<version>` (first), as pgroll's clients do.
//!
//! `up` is evaluated over the old row (the table's columns by their current names), `down`
//! over the new row (changed columns by their *new* names, the others by theirs), both as
//! PL/pgSQL expressions whose variables are named after the columns. A row written by the
//! new application keeps the value it wrote as long as `up(down(x)) = x` for such values;
//! a later write of that row from the old side recomputes the new value with `up`.
//!
//! Until the backfill is done, rows it has not reached read `NULL` in the new columns
//! through the version schema. A new-side update of such a row that leaves the new column
//! `NULL` fills it from the old value first (so `down(NULL)` never overwrites the old
//! column), but an update computed from the `NULL` it read is lost. So, as with pgroll,
//! announce the version to the new application once [`backfill`] has finished; writes
//! through it during the backfill are safe for the old application, not for the new one.
//!
//! # Not covered yet
//!
//! One table per migration; a single-column primary key (the keyset), which a change may
//! not touch; identity and generated columns are refused. Indexes and unique constraints on
//! a changed column are carried over ([`carried_indexes`]: built again on the new column
//! `CONCURRENTLY` after expand, given the old names by complete) when their keys are plain
//! columns and no predicate names the column. A column that anything else depends on
//! (expression indexes, foreign keys, checks, views, sequences) is refused, naming them
//! ([`OnlineError::Dependents`]): complete would drop them with the old column. Column grants and comments are not carried
//! over to the new column itself; the version schema's view carries the table's grants (with
//! `USAGE` on the schema) and its comments. Nothing here records state:
//! [`crate::rollout`] keeps which phase a migration is in and the
//! backfill's last key, and must not complete before the backfill has finished
//! ([`unfilled_rows`] is the check: complete would lose the values of rows never filled). The
//! views are `security_invoker` on Postgres 15 and later; Postgres 14 has no such option, so
//! there the views run with their owner's privileges (row-level security of the table is
//! then checked as the owner: grant the views carefully).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::catalog::{Catalog, ConstraintDef, Table};
use crate::diff::Change;
use crate::dsl::Document;
use crate::exec::{backoff, run_with_timeout, PgFailure};
use crate::ident::{qualified, quote_ident, quote_literal};

/// Prefix of the column that holds a changed column's new representation during a
/// migration.
pub const NEW_COLUMN_PREFIX: &str = "_lp_new_";

/// Postgres truncates identifiers longer than this many bytes; Lockplane refuses them instead
/// (a truncated name could collide with another).
const MAX_IDENT_BYTES: usize = 63;

/// One column changed incompatibly: renamed, retyped, made `NOT NULL`, or several at once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ColumnChange {
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// The column as the old application knows it.
    pub column: String,
    /// Its name in the new shape, when it changes.
    pub new_name: Option<String>,
    /// Its type in the new shape (as `format_type` prints it, e.g. `bigint`), when it changes.
    pub new_type: Option<String>,
    /// Whether the new shape makes the column `NOT NULL`.
    pub set_not_null: bool,
    /// SQL expression over the old row's columns (by their old names) giving the new value,
    /// e.g. `qty::bigint` or `COALESCE(score, 0)`. May be left empty for a plain rename
    /// (it is then the old column); a type change or a new `NOT NULL` needs it.
    pub up: String,
    /// SQL expression over the new row's columns (changed ones by their new names) giving the
    /// old value, e.g. `quantity::integer`. May be left empty when the type stays (it is then
    /// the new column); a type change needs it.
    pub down: String,
}

impl ColumnChange {
    /// The column's name in the new shape.
    pub fn final_name(&self) -> &str {
        self.new_name.as_deref().unwrap_or(&self.column)
    }

    /// The temporary column holding the new representation: `_lp_new_<column>`.
    pub fn new_column(&self) -> String {
        format!("{NEW_COLUMN_PREFIX}{}", self.column)
    }

    /// The `up` expression in effect: the given one, or the old column for a plain rename.
    pub fn up_sql(&self) -> String {
        if self.up.trim().is_empty() && self.new_type.is_none() && !self.set_not_null {
            quote_ident(&self.column)
        } else {
            self.up.clone()
        }
    }

    /// The `down` expression in effect: the given one, or the new column when the type
    /// stays (a rename, a new `NOT NULL`: every new value is a valid old one).
    pub fn down_sql(&self) -> String {
        if self.down.trim().is_empty() && self.new_type.is_none() {
            quote_ident(self.final_name())
        } else {
            self.down.clone()
        }
    }

    /// The `NOT VALID` check standing for the new `NOT NULL` until complete.
    fn not_null_check(&self) -> String {
        format!("_lp_nn_{}", self.column)
    }
}

/// A set of column changes released together as one version of the schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OnlineMigration {
    /// The version's name (lower-case letters, digits, `_`): the version schema is
    /// `<schema>_<version>`.
    pub version: String,
    /// The changes; all on one table for now.
    pub changes: Vec<ColumnChange>,
}

/// A column of a [`TableShape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeColumn {
    /// Its name.
    pub name: String,
    /// Its type as `format_type` prints it.
    pub data_type: String,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Its default expression.
    pub default: Option<String>,
    /// Identity or generated: such columns cannot be changed online.
    pub computed: bool,
    /// Objects that depend on the column (indexes, constraints, views, sequences, …), as
    /// Postgres describes them: complete would drop them with the old column, so a change
    /// of such a column is refused until the mechanics carry them over.
    pub dependents: Vec<String>,
    /// `COMMENT ON COLUMN`: carried to the version schema's view column.
    pub comment: Option<String>,
}

/// An index of the table a migration changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeIndex {
    /// Its name.
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
    /// It backs the primary key.
    pub primary: bool,
    /// The unique constraint it backs, if any.
    pub constraint: Option<String>,
    /// Key columns in order; `None` for an expression.
    pub key: Vec<Option<String>>,
    /// The partial index's predicate.
    pub predicate: Option<String>,
}

/// An index on a changed column, built again on the new column (`CREATE INDEX CONCURRENTLY`
/// after expand) and given the old one's name (and constraint) by complete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CarriedIndex {
    /// The index on the old column.
    pub old: String,
    /// The index on the new column while the migration runs: `_lp_new_<old>`.
    pub new: String,
    /// The statement that builds it.
    pub create: String,
    /// The unique constraint the old index backed, made again from the new index by
    /// complete.
    pub constraint: Option<String>,
}

/// What the mechanics need to know about the table a migration changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// Its columns in physical order (the views keep it).
    pub columns: Vec<ShapeColumn>,
    /// Primary key columns, in key order (the backfill's keyset).
    pub primary_key: Vec<String>,
    /// The server's major version (`security_invoker` views need 15).
    pub server_major: u32,
    /// Table privileges granted to roles other than the owner (`(grantee, privilege)`,
    /// grantee `public` for PUBLIC): mirrored on the version schema's view, with `USAGE` on
    /// the version schema, so the new application's roles reach the new shape as they reach
    /// the table. Column privileges are not mirrored.
    pub grants: Vec<(String, String)>,
    /// `COMMENT ON TABLE`: carried to the view.
    pub comment: Option<String>,
    /// Its indexes ([`read`](Self::read) only; from a catalog, none, so an index on a changed
    /// column stays a refused dependent).
    pub indexes: Vec<ShapeIndex>,
}

impl TableShape {
    /// The shape of `table` (`schema.name`) as an introspected catalog holds it. The catalog
    /// does not say which views read a column, and a constraint or index counts as a
    /// dependent when its definition mentions the column's name anywhere (erring towards
    /// refusing); [`read`](Self::read) asks Postgres and is exact.
    pub fn from_catalog(schema: &str, name: &str, table: &Table, server_major: u32) -> TableShape {
        let mentions = |definition: String, column: &str| definition.contains(column);
        let columns = table
            .columns_in_order()
            .into_iter()
            .map(|(col, c)| {
                let mut dependents: Vec<String> = table
                    .constraints
                    .iter()
                    .filter(|(_, k)| !matches!(k.definition, ConstraintDef::PrimaryKey { .. }))
                    .filter(|(_, k)| {
                        mentions(
                            serde_json::to_string(&k.definition).unwrap_or_default(),
                            col,
                        )
                    })
                    .map(|(n, _)| format!("constraint {n}"))
                    .collect();
                dependents.extend(
                    table
                        .indexes
                        .iter()
                        .filter(|(_, i)| {
                            mentions(serde_json::to_string(i).unwrap_or_default(), col)
                        })
                        .map(|(n, _)| format!("index {n}")),
                );
                ShapeColumn {
                    name: col.clone(),
                    data_type: c.data_type.clone(),
                    not_null: c.not_null,
                    default: c.default.clone(),
                    computed: c.identity.is_some() || c.generated.is_some(),
                    dependents,
                    comment: c.comment.clone(),
                }
            })
            .collect();
        let primary_key = table
            .constraints
            .values()
            .find_map(|c| match &c.definition {
                ConstraintDef::PrimaryKey { columns } => Some(columns.clone()),
                _ => None,
            })
            .unwrap_or_default();
        TableShape {
            schema: schema.to_owned(),
            table: name.to_owned(),
            columns,
            primary_key,
            server_major,
            grants: table
                .grants
                .iter()
                .map(|g| (g.grantee.clone(), g.privilege.clone()))
                .collect(),
            comment: table.comment.clone(),
            indexes: Vec::new(),
        }
    }

    /// Reads the shape of `schema.table` from a live database (one catalog query).
    pub async fn read(
        client: &Client,
        schema: &str,
        table: &str,
    ) -> Result<TableShape, OnlineError> {
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                        pg_get_expr(d.adbin, d.adrelid), \
                        (a.attidentity <> '' OR a.attgenerated <> ''), \
                        COALESCE(a.attnum = ANY (i.indkey), false), \
                        current_setting('server_version_num')::int / 10000, \
                        ARRAY(SELECT pg_describe_object(dep.classid, dep.objid, dep.objsubid) \
                              FROM pg_depend dep \
                              WHERE dep.refclassid = 'pg_class'::regclass \
                                AND dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum \
                                AND dep.deptype IN ('n', 'a') \
                                AND dep.classid <> 'pg_attrdef'::regclass \
                                AND NOT EXISTS (SELECT 1 FROM pg_constraint k \
                                  WHERE dep.classid = 'pg_constraint'::regclass \
                                    AND k.oid = dep.objid AND k.contype = 'n') \
                              ORDER BY 1), \
                        col_description(a.attrelid, a.attnum) \
                 FROM pg_attribute a \
                 JOIN pg_class c ON c.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                 LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 \
                   AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&schema, &table],
            )
            .await
            .map_err(|e| OnlineError::Postgres {
                what: format!("reading the shape of {}", qualified(schema, table)),
                failure: Box::new(PgFailure::from_error(&e)),
            })?;
        if rows.is_empty() {
            return Err(OnlineError::NoSuchTable {
                schema: schema.to_owned(),
                table: table.to_owned(),
            });
        }
        let extra = client
            .query_one(
                "SELECT obj_description(c.oid, 'pg_class'), \
                        ARRAY(SELECT CASE WHEN g.grantee = 0 THEN 'public' \
                                          ELSE pg_get_userbyid(g.grantee)::text END \
                              FROM aclexplode(c.relacl) g \
                              WHERE g.grantee <> c.relowner ORDER BY 1, g.privilege_type), \
                        ARRAY(SELECT lower(g.privilege_type) \
                              FROM aclexplode(c.relacl) g \
                              WHERE g.grantee <> c.relowner \
                              ORDER BY CASE WHEN g.grantee = 0 THEN 'public' \
                                            ELSE pg_get_userbyid(g.grantee)::text END, \
                                       g.privilege_type) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &table],
            )
            .await
            .map_err(|e| OnlineError::Postgres {
                what: format!("reading the grants of {}", qualified(schema, table)),
                failure: Box::new(PgFailure::from_error(&e)),
            })?;
        let decode = |e: tokio_postgres::Error| OnlineError::Postgres {
            what: format!("reading the grants of {}", qualified(schema, table)),
            failure: Box::new(PgFailure::from_error(&e)),
        };
        let comment: Option<String> = extra.try_get(0).map_err(decode)?;
        let grantees: Vec<String> = extra.try_get(1).map_err(decode)?;
        let privileges: Vec<String> = extra.try_get(2).map_err(decode)?;
        let index_rows = client
            .query(
                "SELECT ic.relname::text, pg_get_indexdef(i.indexrelid), i.indisprimary, \
                        (SELECT k.conname::text FROM pg_constraint k \
                         WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid \
                           AND k.contype = 'u'), \
                        ARRAY(SELECT a.attname::text \
                              FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                              LEFT JOIN pg_attribute a \
                                ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                              ORDER BY k.ord), \
                        pg_get_expr(i.indpred, i.indrelid) \
                 FROM pg_index i \
                 JOIN pg_class ic ON ic.oid = i.indexrelid \
                 JOIN pg_class c ON c.oid = i.indrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 \
                 ORDER BY 1",
                &[&schema, &table],
            )
            .await
            .map_err(|e| OnlineError::Postgres {
                what: format!("reading the indexes of {}", qualified(schema, table)),
                failure: Box::new(PgFailure::from_error(&e)),
            })?;
        let mut indexes = Vec::new();
        for r in &index_rows {
            indexes.push(ShapeIndex {
                name: r.try_get(0).map_err(decode)?,
                definition: r.try_get(1).map_err(decode)?,
                primary: r.try_get(2).map_err(decode)?,
                constraint: r.try_get(3).map_err(decode)?,
                key: r.try_get(4).map_err(decode)?,
                predicate: r.try_get(5).map_err(decode)?,
            });
        }
        let mut shape = TableShape {
            schema: schema.to_owned(),
            table: table.to_owned(),
            columns: Vec::new(),
            primary_key: Vec::new(),
            server_major: 0,
            grants: grantees.into_iter().zip(privileges).collect(),
            comment,
            indexes,
        };
        let mut key: Vec<(usize, String)> = Vec::new();
        for r in &rows {
            let name: String = r.get(0);
            if r.get::<_, bool>(5) {
                key.push((key.len(), name.clone()));
            }
            shape.server_major = r.get::<_, i32>(6).max(0) as u32;
            shape.columns.push(ShapeColumn {
                name,
                data_type: r.get(1),
                not_null: r.get(2),
                default: r.get(3),
                computed: r.get(4),
                dependents: r.get(7),
                comment: r.get(8),
            });
        }
        // Key order is `indkey` order; the query gives attnum order, which is the same for
        // the single-column keys the backfill supports.
        shape.primary_key = key.into_iter().map(|(_, n)| n).collect();
        Ok(shape)
    }

    fn column(&self, name: &str) -> Option<&ShapeColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn qualified(&self) -> String {
        qualified(&self.schema, &self.table)
    }
}

/// Why an online migration cannot be planned or run.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// The migration has no changes.
    #[error("online migration {version}: no column changes")]
    Empty {
        /// The version.
        version: String,
    },
    /// A version name that cannot be part of a schema name.
    #[error("online migration version {0:?}: use lower-case letters, digits and `_`, starting with a letter")]
    BadVersion(String),
    /// An identifier that is empty, too long or holds a NUL byte.
    #[error("{what} {name:?} is not a valid identifier ({why})")]
    BadIdentifier {
        /// What the name is (`column`, `schema`, …).
        what: &'static str,
        /// The name.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// Changes on more than one table (not supported yet).
    #[error(
        "online migration {version}: changes span {first} and {other}; one table per migration"
    )]
    SeveralTables {
        /// The version.
        version: String,
        /// The first table.
        first: String,
        /// Another one.
        other: String,
    },
    /// The shape given is not the changed table's.
    #[error("the table shape is of {shape}, the changes are on {table}")]
    ShapeMismatch {
        /// The shape's table.
        shape: String,
        /// The changes' table.
        table: String,
    },
    /// The table does not exist.
    #[error("no table {schema}.{table}")]
    NoSuchTable {
        /// Its schema.
        schema: String,
        /// Its name.
        table: String,
    },
    /// A changed column the table does not have.
    #[error("{table} has no column {column:?}")]
    NoSuchColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A change that changes nothing.
    #[error("column {column:?}: the change renames, retypes or sets nothing")]
    NoOp {
        /// The column.
        column: String,
    },
    /// A change without the `up` or `down` expression it needs.
    #[error("column {column:?}: the change needs its `{which}` expression")]
    MissingExpression {
        /// The column.
        column: String,
        /// `up` or `down`.
        which: &'static str,
    },
    /// An `up`/`down` that is not one SQL expression.
    #[error("column {column:?}: the `{which}` expression is refused: {why}")]
    BadExpression {
        /// The column.
        column: String,
        /// `up` or `down`.
        which: &'static str,
        /// Why.
        why: String,
    },
    /// The document changes something an online migration does not carry.
    #[error(
        "an online migration carries column renames, type changes and new NOT NULLs only; \
         plan these first with `lockplane plan` (without --online): {}",
        changes.join("; ")
    )]
    NotOnline {
        /// What else the document changes, as the plan's steps describe it.
        changes: Vec<String>,
    },
    /// No migration of that version was started on this database.
    #[error("no online migration {0:?} was started on this database")]
    UnknownVersion(String),
    /// The migration is not in a phase the operation can run from.
    #[error("online migration {version} is {phase}; this needs it {wanted}")]
    WrongPhase {
        /// The version.
        version: String,
        /// Where it is.
        phase: &'static str,
        /// Where it must be.
        wanted: &'static str,
    },
    /// Complete asked for before every row was filled.
    #[error(
        "online migration {version}: {rows} rows are not backfilled yet; run `lockplane apply` \
         on the migration again to finish the backfill, then complete"
    )]
    Unfinished {
        /// The version.
        version: String,
        /// Rows left.
        rows: u64,
    },
    /// The recorded state does not fit.
    #[error("online migration {version}: {why}")]
    State {
        /// The version.
        version: String,
        /// What is wrong.
        why: String,
    },
    /// The document changes no column.
    #[error("the document changes no column of the live database: nothing to migrate online")]
    NothingToChange,
    /// A document column whose change needs `up:`/`down:` and lacks it.
    #[error("{at}: column {column}: {what} needs `{which}:` in the document ({hint})")]
    NeedsExpression {
        /// `file:line:col` of the column in the document.
        at: String,
        /// `schema.table.column` (its new name).
        column: String,
        /// The change (`a type change`, `a new NOT NULL`).
        what: &'static str,
        /// `up` or `down`.
        which: &'static str,
        /// What the expression computes, with an example.
        hint: String,
    },
    /// A changed column other objects depend on (complete would drop them with it).
    #[error("column {column:?} cannot be changed online yet: {} depend on it", dependents.join(", "))]
    Dependents {
        /// The column.
        column: String,
        /// The dependent objects.
        dependents: Vec<String>,
    },
    /// A column changed twice, or renamed onto a name in use.
    #[error("column {column:?}: {why}")]
    Conflict {
        /// The column.
        column: String,
        /// What collides.
        why: String,
    },
    /// A column the mechanics cannot change online.
    #[error("column {column:?} cannot be changed online: {why}")]
    Unsupported {
        /// The column.
        column: String,
        /// Why.
        why: &'static str,
    },
    /// The table has no single-column primary key to batch by.
    #[error("{table} needs a single-column primary key for keyset batches (has {key:?})")]
    NoKeyset {
        /// The table.
        table: String,
        /// Its primary key columns.
        key: Vec<String>,
    },
    /// A statement failed.
    #[error("{what}: {}", failure.describe(""))]
    Postgres {
        /// What was being done.
        what: String,
        /// Postgres' report (boxed: it is large and errors travel by value).
        failure: Box<PgFailure>,
    },
    /// A backfill batch failed (after its retries, for lock failures); resume after
    /// `resume_after`.
    #[error("backfill of {table} stopped after key {resume_after:?} ({rows_done} rows filled in this run): {}", failure.describe(""))]
    Backfill {
        /// The table.
        table: String,
        /// The last key whose batch committed (pass it as [`BackfillOptions::resume_after`]).
        resume_after: Option<String>,
        /// Rows filled by this run before the failure.
        rows_done: u64,
        /// Postgres' report (boxed: it is large and errors travel by value).
        failure: Box<PgFailure>,
    },
}

/// The online migration that takes `live` to the document: each column the document
/// renames (`renamed_from:`), retypes or makes `NOT NULL` becomes a [`ColumnChange`] with the
/// column's `up:`/`down:` from the document. `desired` is the document's catalog scoped to
/// live ([`crate::dsl::scope_to_live`]).
///
/// Refused, naming what: any other change (plan it first without `--online`), a type change
/// or new `NOT NULL` without `up:`, a type change without `down:`. Pure.
pub fn derive(
    live: &Catalog,
    desired: &Catalog,
    document: &Document,
    version: &str,
) -> Result<OnlineMigration, OnlineError> {
    let renames = crate::dsl::renames(document);
    let changes = crate::diff::diff(live, desired, &renames);
    // (schema, table, live column) → the change being built; the live name is the key the
    // mechanics use, the type change and NOT NULL may name the column by its new name.
    let mut by_column: std::collections::BTreeMap<ColumnKey, ColumnChange> =
        std::collections::BTreeMap::new();
    let mut renamed: std::collections::BTreeMap<ColumnKey, String> =
        std::collections::BTreeMap::new();
    for change in &changes {
        if let Change::RenameColumn {
            schema,
            table,
            from,
            to,
        } = change
        {
            renamed.insert((schema.clone(), table.clone(), to.clone()), from.clone());
        }
    }
    let mut other = Vec::new();
    let mut retyped: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (i, change) in changes.iter().enumerate() {
        match change {
            Change::RenameColumn {
                schema,
                table,
                from,
                to,
            } => {
                entry(&mut by_column, &renamed, schema, table, from).new_name = Some(to.clone());
            }
            Change::AlterColumnType {
                schema,
                table,
                column,
                to,
                collation_from,
                collation_to,
                ..
            } if collation_from == collation_to => {
                entry(&mut by_column, &renamed, schema, table, column).new_type = Some(to.clone());
                retyped.insert((schema.clone(), table.clone(), column.clone()));
            }
            Change::SetNotNull {
                schema,
                table,
                column,
                ..
            } => {
                entry(&mut by_column, &renamed, schema, table, column).set_not_null = true;
            }
            _ => other.push(i),
        }
    }
    // A type change drops the default before and sets it after (Postgres would print it with
    // the old type's cast); expand carries the default over to the new column itself.
    other.retain(|&i| match &changes[i] {
        Change::SetDefault {
            schema,
            table,
            column,
            ..
        }
        | Change::DropDefault {
            schema,
            table,
            column,
            ..
        } => !retyped.contains(&(schema.clone(), table.clone(), column.clone())),
        _ => true,
    });
    if !other.is_empty() {
        return Err(OnlineError::NotOnline {
            changes: describe_changes(live, desired, &changes, &other),
        });
    }
    if by_column.is_empty() {
        return Err(OnlineError::NothingToChange);
    }
    let mut out = Vec::new();
    for (_, mut c) in by_column {
        let decl = document
            .schemas
            .iter()
            .find(|s| s.name == c.schema)
            .and_then(|s| s.tables.iter().find(|t| t.name == c.table))
            .and_then(|t| t.columns.iter().find(|col| col.name == c.final_name()));
        let at = |key: &str| match decl {
            Some(d) => {
                let span = d.origin.field(key);
                format!("{}:{}:{}", document.file, span.line, span.column)
            }
            None => document.file.clone(),
        };
        let path = format!("{}.{}.{}", c.schema, c.table, c.final_name());
        c.up = decl.and_then(|d| d.up.clone()).unwrap_or_default();
        c.down = decl.and_then(|d| d.down.clone()).unwrap_or_default();
        let what = if c.new_type.is_some() {
            "a type change"
        } else {
            "a new NOT NULL"
        };
        if (c.new_type.is_some() || c.set_not_null) && c.up.trim().is_empty() {
            return Err(OnlineError::NeedsExpression {
                at: at("type"),
                column: path,
                what,
                which: "up",
                hint: format!(
                    "the new value computed from the old row, e.g. `up: {}`",
                    match &c.new_type {
                        Some(t) => format!("{}::{t}", quote_ident(&c.column)),
                        None => format!("COALESCE({}, <value>)", quote_ident(&c.column)),
                    }
                ),
            });
        }
        if c.new_type.is_some() && c.down.trim().is_empty() {
            let old_type = live
                .schemas
                .get(&c.schema)
                .and_then(|s| s.tables.get(&c.table))
                .and_then(|t| t.columns.get(&c.column))
                .map(|col| col.data_type.clone())
                .unwrap_or_else(|| "<old type>".into());
            return Err(OnlineError::NeedsExpression {
                at: at("type"),
                column: path,
                what,
                which: "down",
                hint: format!(
                    "the old value computed from the new row, e.g. `down: {}::{old_type}`",
                    quote_ident(c.final_name())
                ),
            });
        }
        out.push(c);
    }
    let m = OnlineMigration {
        version: version.to_owned(),
        changes: out,
    };
    m.validate()?;
    Ok(m)
}

type ColumnKey = (String, String, String);

/// The change being built for `schema.table.column`, keyed by the column's live name (a
/// type change or `NOT NULL` may name it by its new one).
fn entry<'a>(
    by_column: &'a mut std::collections::BTreeMap<ColumnKey, ColumnChange>,
    renamed: &std::collections::BTreeMap<ColumnKey, String>,
    schema: &str,
    table: &str,
    column: &str,
) -> &'a mut ColumnChange {
    let live_name = renamed
        .get(&(schema.to_owned(), table.to_owned(), column.to_owned()))
        .cloned()
        .unwrap_or_else(|| column.to_owned());
    by_column
        .entry((schema.to_owned(), table.to_owned(), live_name.clone()))
        .or_insert_with(|| ColumnChange {
            schema: schema.to_owned(),
            table: table.to_owned(),
            column: live_name,
            new_name: None,
            new_type: None,
            set_not_null: false,
            up: String::new(),
            down: String::new(),
        })
}

/// The plan's step summaries for `which` of `changes` (what the user would see planned).
fn describe_changes(
    live: &Catalog,
    desired: &Catalog,
    changes: &[Change],
    which: &[usize],
) -> Vec<String> {
    let stats = crate::plan::TableStats::default();
    let steps =
        crate::compile::compile_with_origins(live, desired, changes, &stats).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for &i in which {
        let mut said = false;
        for (step, origin) in &steps {
            if *origin == i && !out.contains(&step.summary) {
                out.push(step.summary.clone());
                said = true;
            }
        }
        if !said {
            out.push(format!("{:?}", changes[i]));
        }
    }
    out
}

fn check_ident(what: &'static str, name: &str) -> Result<(), OnlineError> {
    let why = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_IDENT_BYTES {
        "longer than 63 bytes"
    } else if name.contains('\0') {
        "holds a NUL byte"
    } else {
        return Ok(());
    };
    Err(OnlineError::BadIdentifier {
        what,
        name: name.to_owned(),
        why,
    })
}

impl OnlineMigration {
    /// The schema and table the changes are on (the first change's).
    pub fn table(&self) -> Result<(&str, &str), OnlineError> {
        let first = self.changes.first().ok_or_else(|| OnlineError::Empty {
            version: self.version.clone(),
        })?;
        Ok((&first.schema, &first.table))
    }

    /// The version schema of the migration's table: `<schema>_<version>`.
    pub fn version_schema(&self) -> Result<String, OnlineError> {
        let (schema, _) = self.table()?;
        Ok(format!("{schema}_{}", self.version))
    }

    /// Checks the migration on its own: names, one table, the expressions each change needs.
    pub fn validate(&self) -> Result<(), OnlineError> {
        let v = &self.version;
        let mut chars = v.chars();
        let good = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !good {
            return Err(OnlineError::BadVersion(v.clone()));
        }
        let (schema, table) = self.table()?;
        check_ident("schema", schema)?;
        check_ident("table", table)?;
        check_ident("version schema", &self.version_schema()?)?;
        check_ident("trigger function", &sync_function(table, v))?;
        let mut seen = BTreeSet::new();
        for c in &self.changes {
            if (c.schema.as_str(), c.table.as_str()) != (schema, table) {
                return Err(OnlineError::SeveralTables {
                    version: v.clone(),
                    first: qualified(schema, table),
                    other: qualified(&c.schema, &c.table),
                });
            }
            check_ident("column", &c.column)?;
            check_ident("temporary column", &c.new_column())?;
            check_ident("check constraint", &c.not_null_check())?;
            if let Some(n) = &c.new_name {
                check_ident("new column name", n)?;
            }
            if let Some(t) = &c.new_type {
                // Type-name mode accepts exactly one type name: nothing can ride along.
                if pg_query::parse(t, pg_query::ParserOptions::TYPE_NAME).is_err() {
                    return Err(OnlineError::BadIdentifier {
                        what: "type",
                        name: t.clone(),
                        why: "not one type name",
                    });
                }
            }
            if c.new_name.as_deref().is_none_or(|n| n == c.column)
                && c.new_type.is_none()
                && !c.set_not_null
            {
                return Err(OnlineError::NoOp {
                    column: c.column.clone(),
                });
            }
            // Every online change keeps two representations in sync, so both directions are
            // needed; only the ones that are the plain column may be left out (see
            // `ColumnChange::up`).
            for (which, e) in [("up", c.up_sql()), ("down", c.down_sql())] {
                if e.trim().is_empty() {
                    return Err(OnlineError::MissingExpression {
                        column: c.column.clone(),
                        which,
                    });
                }
                check_expression(&c.column, which, &e)?;
            }
            if !seen.insert(c.column.clone()) {
                return Err(OnlineError::Conflict {
                    column: c.column.clone(),
                    why: "changed twice in one migration".into(),
                });
            }
        }
        let mut finals = BTreeSet::new();
        for c in &self.changes {
            if !finals.insert(c.final_name()) {
                return Err(OnlineError::Conflict {
                    column: c.column.clone(),
                    why: format!("another change also ends named {:?}", c.final_name()),
                });
            }
        }
        Ok(())
    }

    /// [`validate`](Self::validate), then checks the changes against the table's shape.
    pub fn validate_against(&self, shape: &TableShape) -> Result<(), OnlineError> {
        self.validate()?;
        let (schema, table) = self.table()?;
        if (shape.schema.as_str(), shape.table.as_str()) != (schema, table) {
            return Err(OnlineError::ShapeMismatch {
                shape: shape.qualified(),
                table: qualified(schema, table),
            });
        }
        let changed: BTreeSet<&str> = self.changes.iter().map(|c| c.column.as_str()).collect();
        // The trigger binds every column to a PL/pgSQL variable of its name: these would
        // shadow the trigger's own variables.
        for c in &shape.columns {
            let lower = c.name.to_ascii_lowercase();
            if ["new", "old", "found"].contains(&lower.as_str()) || lower.starts_with("tg_") {
                return Err(OnlineError::Unsupported {
                    column: c.name.clone(),
                    why: "its name shadows a PL/pgSQL trigger variable",
                });
            }
        }
        for c in &self.changes {
            let Some(col) = shape.column(&c.column) else {
                return Err(OnlineError::NoSuchColumn {
                    table: shape.qualified(),
                    column: c.column.clone(),
                });
            };
            if col.computed {
                return Err(OnlineError::Unsupported {
                    column: c.column.clone(),
                    why: "identity and generated columns are not supported",
                });
            }
            if shape.primary_key.contains(&c.column) {
                return Err(OnlineError::Unsupported {
                    column: c.column.clone(),
                    why: "primary key columns are the backfill's keyset",
                });
            }
            let carried = carried_indexes(self, shape);
            let left: Vec<String> = col
                .dependents
                .iter()
                .filter(|d| !carried.iter().any(|i| carries(i, d)))
                .cloned()
                .collect();
            if !left.is_empty() {
                return Err(OnlineError::Dependents {
                    column: c.column.clone(),
                    dependents: left,
                });
            }
            // The new name may be a changed column's old name (it is gone in the new shape),
            // not an unchanged column's.
            let target = c.final_name();
            if target != c.column && shape.column(target).is_some() && !changed.contains(target) {
                return Err(OnlineError::Conflict {
                    column: c.column.clone(),
                    why: format!("the table already has a column {target:?}"),
                });
            }
        }
        match shape.primary_key.as_slice() {
            [_] => Ok(()),
            key => Err(OnlineError::NoKeyset {
                table: shape.qualified(),
                key: key.to_vec(),
            }),
        }
    }
}

/// An expression in parentheses, the closing one on its own line so a trailing `--` comment
/// cannot swallow it.
fn paren(expression: &str) -> String {
    // A line comment at the end of the expression would swallow a closing parenthesis on
    // the same line.
    if expression.contains("--") {
        format!("({expression}\n)")
    } else {
        format!("({expression})")
    }
}

/// Refuses an `up`/`down` that is not exactly one expression: it is spliced into a trigger
/// function and an `UPDATE`, so a `;`, a `FROM`, a second target or the function body's
/// dollar quote must not get through. (The caller still runs it past the SQL guard: this
/// checks its shape, not which functions it calls.)
fn check_expression(column: &str, which: &'static str, text: &str) -> Result<(), OnlineError> {
    use pg_query::NodeEnum as N;
    let bad = |why: String| OnlineError::BadExpression {
        column: column.to_owned(),
        which,
        why,
    };
    if text.contains("$lp_sync$") {
        return Err(bad("holds the trigger body's quote `$lp_sync$`".into()));
    }
    let sql = format!("SELECT {}", paren(text));
    let parsed = pg_query::parse(&sql, 0).map_err(|e| bad(e.to_string()))?;
    let stmt = match parsed.protobuf.stmts.as_slice() {
        [stmt] => stmt.stmt.as_ref().and_then(|n| n.node.as_ref()),
        _ => None,
    };
    match stmt {
        Some(N::SelectStmt(s))
            if s.target_list.len() == 1
                && s.from_clause.is_empty()
                && s.where_clause.is_none()
                && s.group_clause.is_empty()
                && s.having_clause.is_none()
                && s.sort_clause.is_empty()
                && s.limit_count.is_none()
                && s.limit_offset.is_none()
                && s.into_clause.is_none()
                && s.with_clause.is_none()
                && s.locking_clause.is_empty()
                && s.larg.is_none() =>
        {
            Ok(())
        }
        _ => Err(bad("not one expression".into())),
    }
}

/// The trigger function keeping both representations in sync (in the table's schema).
fn sync_function(table: &str, version: &str) -> String {
    format!("_lp_sync_{table}_{version}")
}

/// The trigger's name on the table.
fn sync_trigger(version: &str) -> String {
    format!("_lp_sync_{version}")
}

/// Whether `dependent` (as `pg_describe_object` names a column's dependent) is `index`, or
/// the unique constraint it backs.
fn carries(index: &CarriedIndex, dependent: &str) -> bool {
    let named = |kind: &str, name: &str| {
        dependent
            .strip_prefix(kind)
            .map(|rest| {
                let object = rest.split(" on ").next().unwrap_or(rest);
                object == name
                    || object.ends_with(&format!(".{name}"))
                    || object == quote_ident(name)
                    || object.ends_with(&format!(".{}", quote_ident(name)))
            })
            .unwrap_or(false)
    };
    named("index ", &index.old)
        || index
            .constraint
            .as_deref()
            .is_some_and(|c| named("constraint ", c))
}

/// The indexes on changed columns that are built again on the new columns: plain key columns
/// (no expression), no predicate naming a changed column, not the primary key, a new name
/// within Postgres' limit. Any other index on a changed column stays a dependent, refused.
pub fn carried_indexes(m: &OnlineMigration, shape: &TableShape) -> Vec<CarriedIndex> {
    let changed: BTreeSet<&str> = m.changes.iter().map(|c| c.column.as_str()).collect();
    let mut out = Vec::new();
    for index in &shape.indexes {
        let touched = index
            .key
            .iter()
            .flatten()
            .any(|k| changed.contains(k.as_str()));
        if !touched || index.primary || index.key.iter().any(Option::is_none) {
            continue;
        }
        if index
            .predicate
            .as_deref()
            .is_some_and(|p| changed.iter().any(|c| mentions_identifier(p, c)))
        {
            continue;
        }
        let new = format!("{NEW_COLUMN_PREFIX}{}", index.name);
        if new.len() > MAX_IDENT_BYTES {
            continue;
        }
        let Some(create) = index_on_new_columns(&index.definition, &new, &changed) else {
            continue;
        };
        out.push(CarriedIndex {
            old: index.name.clone(),
            new,
            create,
            constraint: index.constraint.clone(),
        });
    }
    out
}

/// Whether `text` (an SQL expression) holds `name` as an identifier, erring towards yes.
fn mentions_identifier(text: &str, name: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .any(|word| word.eq_ignore_ascii_case(name))
        || text.contains(&quote_ident(name))
}

/// `definition` (a `CREATE INDEX` as `pg_get_indexdef` prints it) named `name`, built
/// concurrently if it does not exist yet, on the new columns of the changed ones.
fn index_on_new_columns(definition: &str, name: &str, changed: &BTreeSet<&str>) -> Option<String> {
    use pg_query::NodeEnum;
    let mut parsed = pg_query::parse(definition, 0).ok()?;
    let stmt = parsed.protobuf.stmts.first_mut()?.stmt.as_mut()?;
    let Some(NodeEnum::IndexStmt(index)) = stmt.node.as_mut() else {
        return None;
    };
    index.idxname = name.to_owned();
    index.concurrent = true;
    index.if_not_exists = true;
    for param in index.index_params.iter_mut() {
        let Some(NodeEnum::IndexElem(elem)) = param.node.as_mut() else {
            return None;
        };
        if elem.expr.is_some() {
            return None;
        }
        if changed.contains(elem.name.as_str()) {
            elem.name = format!("{NEW_COLUMN_PREFIX}{}", elem.name);
        }
    }
    pg_query::deparse(&parsed.protobuf, Default::default()).ok()
}

fn change_of<'a>(m: &'a OnlineMigration, column: &str) -> Option<&'a ColumnChange> {
    m.changes.iter().find(|c| c.column == column)
}

/// PL/pgSQL `DECLARE` lines binding each column of one shape to a variable of its name, so
/// `up`/`down` read like SQL over the row.
fn declare(vars: &[(String, String)], table: &str) -> String {
    vars.iter()
        .map(|(name, source)| {
            format!(
                "    {} {table}.{}%TYPE := NEW.{};\n",
                quote_ident(name),
                quote_ident(source),
                quote_ident(source)
            )
        })
        .collect()
}

/// The statements of the expand phase, to run in one transaction (each takes its lock only
/// briefly: the new columns are metadata-only, the check is `NOT VALID`, the views and the
/// trigger touch no rows). Run [`backfill`] after it.
pub fn expand_sql(m: &OnlineMigration, shape: &TableShape) -> Result<Vec<String>, OnlineError> {
    m.validate_against(shape)?;
    for c in &m.changes {
        if shape.column(&c.new_column()).is_some() {
            return Err(OnlineError::Conflict {
                column: c.column.clone(),
                why: format!(
                    "{} exists already (expanded before, or another migration under way)",
                    c.new_column()
                ),
            });
        }
    }
    let t = shape.qualified();
    let version_schema = m.version_schema()?;
    let function = qualified(&shape.schema, &sync_function(&shape.table, &m.version));
    let mut sql = Vec::new();
    for c in &m.changes {
        let old = shape
            .column(&c.column)
            .ok_or_else(|| OnlineError::NoSuchColumn {
                table: t.clone(),
                column: c.column.clone(),
            })?;
        let ty = c.new_type.as_deref().unwrap_or(&old.data_type);
        let new = quote_ident(&c.new_column());
        // Without a default: every row that exists now reads NULL, which is how the backfill
        // knows what it has not filled yet (a default would also be written to them).
        sql.push(format!("ALTER TABLE {t} ADD COLUMN {new} {ty}"));
        if let Some(d) = &old.default {
            // Future inserts of the new application that omit the column get the old default
            // (auto-updatable views fall back to the table's defaults).
            sql.push(format!(
                "ALTER TABLE {t} ALTER COLUMN {new} SET DEFAULT {d}"
            ));
        }
        if c.set_not_null || old.not_null {
            sql.push(format!(
                "ALTER TABLE {t} ADD CONSTRAINT {} CHECK ({new} IS NOT NULL) NOT VALID",
                quote_ident(&c.not_null_check())
            ));
        }
    }

    // The trigger function: variables named after the columns of the writer's shape.
    let table_ref = t.clone();
    let old_vars: Vec<(String, String)> = shape
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.name.clone()))
        .collect();
    let new_vars: Vec<(String, String)> = shape
        .columns
        .iter()
        .map(|c| match change_of(m, &c.name) {
            Some(ch) => (ch.final_name().to_owned(), ch.new_column()),
            None => (c.name.clone(), c.name.clone()),
        })
        .collect();
    let ups: String = m
        .changes
        .iter()
        .map(|c| {
            format!(
                "      NEW.{} := {};\n",
                quote_ident(&c.new_column()),
                paren(&c.up_sql())
            )
        })
        .collect();
    let downs: String = m
        .changes
        .iter()
        .map(|c| {
            format!(
                "      NEW.{} := {};\n",
                quote_ident(&c.column),
                paren(&c.down_sql())
            )
        })
        .collect();
    // A new-side update of a row the backfill has not reached yet (its new column NULL before
    // and after) first gets its new value from the old one: else `down(NULL)` would overwrite
    // the old column, and the old application would lose it.
    let unfilled: String = m
        .changes
        .iter()
        .map(|c| {
            let new = quote_ident(&c.new_column());
            format!(
                "      IF NEW.{new} IS NULL AND OLD.{new} IS NULL THEN NEW.{new} := {}; END IF;\n",
                paren(&c.up_sql())
            )
        })
        .collect();
    sql.push(format!(
        "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $lp_sync$\n\
         BEGIN\n  \
           -- Written through the version schema (the new application's search_path) or not.\n  \
           IF (pg_catalog.current_schemas(false))[1] IS NOT DISTINCT FROM {vs} THEN\n    \
             IF TG_OP = 'UPDATE' THEN\n    \
               DECLARE\n{old_decl}    BEGIN\n{unfilled}    END;\n    \
             END IF;\n    \
             DECLARE\n{new_decl}    BEGIN\n{downs}    END;\n  \
           ELSE\n    \
             DECLARE\n{old_decl}    BEGIN\n{ups}    END;\n  \
           END IF;\n  \
           RETURN NEW;\n\
         END\n$lp_sync$",
        vs = quote_literal(&version_schema),
        new_decl = declare(&new_vars, &table_ref),
        old_decl = declare(&old_vars, &table_ref),
    ));
    sql.push(format!(
        "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {function}()",
        quote_ident(&sync_trigger(&m.version))
    ));

    sql.push(format!("CREATE SCHEMA {}", quote_ident(&version_schema)));
    sql.push(view_sql(m, shape, &version_schema));
    sql.extend(view_extras_sql(m, shape, &version_schema));
    Ok(sql)
}

/// What the view carries over from the table: its grants (with `USAGE` on the version schema
/// for each grantee) and its comments, the columns' under their new names.
fn view_extras_sql(m: &OnlineMigration, shape: &TableShape, version_schema: &str) -> Vec<String> {
    let view = qualified(version_schema, &shape.table);
    let role = |g: &str| {
        if g == "public" {
            "PUBLIC".to_owned()
        } else {
            quote_ident(g)
        }
    };
    let mut sql = Vec::new();
    let grantees: BTreeSet<&str> = shape.grants.iter().map(|(g, _)| g.as_str()).collect();
    for g in grantees {
        sql.push(format!(
            "GRANT USAGE ON SCHEMA {} TO {}",
            quote_ident(version_schema),
            role(g)
        ));
    }
    for (g, privilege) in &shape.grants {
        // TRUNCATE, REFERENCES and TRIGGER mean nothing on a view.
        if matches!(
            privilege.as_str(),
            "select" | "insert" | "update" | "delete"
        ) {
            sql.push(format!(
                "GRANT {} ON {view} TO {}",
                privilege.to_uppercase(),
                role(g)
            ));
        }
    }
    if let Some(comment) = &shape.comment {
        sql.push(format!(
            "COMMENT ON VIEW {view} IS {}",
            quote_literal(comment)
        ));
    }
    for c in &shape.columns {
        if let Some(comment) = &c.comment {
            let name = change_of(m, &c.name).map_or(c.name.as_str(), |ch| ch.final_name());
            sql.push(format!(
                "COMMENT ON COLUMN {view}.{} IS {}",
                quote_ident(name),
                quote_literal(comment)
            ));
        }
    }
    sql
}

/// The version schema's view of the table in the new shape.
fn view_sql(m: &OnlineMigration, shape: &TableShape, version_schema: &str) -> String {
    let columns: Vec<String> = shape
        .columns
        .iter()
        .map(|c| match change_of(m, &c.name) {
            Some(ch) => format!(
                "{} AS {}",
                quote_ident(&ch.new_column()),
                quote_ident(ch.final_name())
            ),
            None => quote_ident(&c.name),
        })
        .collect();
    // Postgres 14 has no security_invoker: its views check privileges (and RLS) as the view's
    // owner. See the module documentation.
    let with = if shape.server_major >= 15 {
        " WITH (security_invoker = true)"
    } else {
        ""
    };
    format!(
        "CREATE VIEW {}{with} AS SELECT {} FROM {}",
        qualified(version_schema, &shape.table),
        columns.join(", "),
        shape.qualified()
    )
}

/// The two transactions of complete: `validate` scans under `SHARE UPDATE EXCLUSIVE` (writes
/// go on); `contract` takes `ACCESS EXCLUSIVE` briefly and scans nothing (`SET NOT NULL` uses
/// the validated check).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompleteSql {
    /// First transaction: validate the `NOT NULL` checks.
    pub validate: Vec<String>,
    /// Second transaction: the contract itself.
    pub contract: Vec<String>,
}

/// Complete (contract) the migration after a full [`backfill`]: the table takes the new shape
/// under the final names. The version schema's view stays valid (it follows the renamed
/// columns) so the new application keeps working until it moves to the base schema; drop it
/// then with [`drop_version_schema_sql`].
pub fn complete_sql(m: &OnlineMigration, shape: &TableShape) -> Result<CompleteSql, OnlineError> {
    m.validate_against(shape)?;
    let t = shape.qualified();
    let mut out = CompleteSql {
        validate: Vec::new(),
        contract: vec![
            format!(
                "DROP TRIGGER {} ON {t}",
                quote_ident(&sync_trigger(&m.version))
            ),
            format!(
                "DROP FUNCTION {}()",
                qualified(&shape.schema, &sync_function(&shape.table, &m.version))
            ),
        ],
    };
    for c in &m.changes {
        let old = shape
            .column(&c.column)
            .ok_or_else(|| OnlineError::NoSuchColumn {
                table: t.clone(),
                column: c.column.clone(),
            })?;
        let new = quote_ident(&c.new_column());
        let check = quote_ident(&c.not_null_check());
        if c.set_not_null || old.not_null {
            out.validate
                .push(format!("ALTER TABLE {t} VALIDATE CONSTRAINT {check}"));
            out.contract
                .push(format!("ALTER TABLE {t} ALTER COLUMN {new} SET NOT NULL"));
            out.contract
                .push(format!("ALTER TABLE {t} DROP CONSTRAINT {check}"));
        }
        out.contract.push(format!(
            "ALTER TABLE {t} DROP COLUMN {}",
            quote_ident(&c.column)
        ));
    }
    // The old indexes went with the old columns: the new ones take their names (a unique
    // constraint made again from its new index renames the index to the constraint's name).
    for i in carried_indexes(m, shape) {
        out.contract.push(match &i.constraint {
            Some(c) => format!(
                "ALTER TABLE {t} ADD CONSTRAINT {} UNIQUE USING INDEX {}",
                quote_ident(c),
                quote_ident(&i.new)
            ),
            None => format!(
                "ALTER INDEX {} RENAME TO {}",
                qualified(&shape.schema, &i.new),
                quote_ident(&i.old)
            ),
        });
    }
    // Renames last: a new name may be another changed column's old name, dropped above.
    for c in &m.changes {
        out.contract.push(format!(
            "ALTER TABLE {t} RENAME COLUMN {} TO {}",
            quote_ident(&c.new_column()),
            quote_ident(c.final_name())
        ));
    }
    Ok(out)
}

/// Drops the version schema (with its views) once the new application uses the base schema.
pub fn drop_version_schema_sql(m: &OnlineMigration) -> Result<Vec<String>, OnlineError> {
    m.validate()?;
    Ok(vec![format!(
        "DROP SCHEMA {} CASCADE",
        quote_ident(&m.version_schema()?)
    )])
}

/// Rolls back an expand (before complete), in one transaction: drops the version schema, the
/// trigger, its function, the checks and the new columns. The old columns were never touched
/// (the trigger kept them current for the new application's writes too), so the old
/// application loses nothing.
pub fn rollback_sql(m: &OnlineMigration, shape: &TableShape) -> Result<Vec<String>, OnlineError> {
    m.validate()?;
    let t = shape.qualified();
    let mut sql = vec![
        format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&m.version_schema()?)
        ),
        format!(
            "DROP TRIGGER IF EXISTS {} ON {t}",
            quote_ident(&sync_trigger(&m.version))
        ),
        format!(
            "DROP FUNCTION IF EXISTS {}()",
            qualified(&shape.schema, &sync_function(&shape.table, &m.version))
        ),
    ];
    for c in &m.changes {
        // Dropping the column drops its check with it.
        sql.push(format!(
            "ALTER TABLE {t} DROP COLUMN IF EXISTS {}",
            quote_ident(&c.new_column())
        ));
    }
    Ok(sql)
}

/// Runs `statements` in one transaction with `lock_timeout` (each statement waits at most
/// that long for its lock, so the application never queues long behind it) and a statement
/// timeout, cancelled on the server when it passes. On failure the transaction is rolled back.
pub async fn run_phase(
    client: &Client,
    statements: &[String],
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<(), OnlineError> {
    let mut sql = format!(
        "BEGIN; SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{}ms';\n",
        lock_timeout.as_millis().max(1),
        statement_timeout.as_millis().max(1)
    );
    for s in statements {
        sql.push_str(s);
        sql.push_str(";\n");
    }
    sql.push_str("COMMIT");
    match run_with_timeout(client, &sql, statement_timeout + Duration::from_secs(2)).await {
        Ok(_) => Ok(()),
        Err(failure) => {
            // A failed multi-statement query leaves the session in the aborted transaction.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(OnlineError::Postgres {
                what: "running an online migration phase".into(),
                failure: Box::new(failure),
            })
        }
    }
}

/// How [`backfill`] runs.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Rows per batch (one short transaction each).
    pub batch_size: u32,
    /// How long a batch waits for a row or table lock before it gives up and is tried again.
    pub lock_timeout: Duration,
    /// How long one batch may run.
    pub statement_timeout: Duration,
    /// Tries per batch after a lock failure or deadlock.
    pub lock_retries: u32,
    /// Pause between batches (gives the application's writes room).
    pub pause: Duration,
    /// Start after this key (as text, from [`BackfillProgress::last_key`] or
    /// [`OnlineError::Backfill`]); `None` starts at the first row. Either way rows already
    /// filled are not written again.
    pub resume_after: Option<String>,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            batch_size: 5_000,
            lock_timeout: Duration::from_millis(500),
            statement_timeout: Duration::from_secs(30),
            lock_retries: 10,
            pause: Duration::ZERO,
            resume_after: None,
        }
    }
}

/// Where a [`backfill`] is, reported after each committed batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillProgress {
    /// Batches committed by this run.
    pub batches: u64,
    /// Rows this run went over (filled or found filled).
    pub rows_scanned: u64,
    /// Rows this run filled.
    pub rows_filled: u64,
    /// The table's estimated rows (`pg_class.reltuples`), when it was ever analysed.
    pub estimated_rows: Option<u64>,
    /// The last key committed (resume after it).
    pub last_key: Option<String>,
    /// Time since this run started.
    pub elapsed: Duration,
    /// Rows scanned per second.
    pub rows_per_second: f64,
    /// Estimated time left, from the estimate and the rate.
    pub eta: Option<Duration>,
}

/// What a finished [`backfill`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillReport {
    /// The last progress reported.
    pub progress: BackfillProgress,
    /// Lock failures that were retried.
    pub lock_retries: u64,
}

/// Fills the new columns of existing rows (`_lp_new_c = up(row)` where still `NULL`), in
/// keyset batches by primary key, each batch its own transaction with a short
/// `lock_timeout` (a batch that loses a lock wait or a deadlock is rolled back and tried
/// again after a jittered pause). Idempotent and resumable: a row is written only while its
/// new column is `NULL` and `up` gives a value, so running it again (from the start or after
/// a reported key) writes nothing twice. Rows written since expand are filled by the trigger.
///
/// `progress` is called after each committed batch.
pub async fn backfill(
    client: &Client,
    m: &OnlineMigration,
    shape: &TableShape,
    opts: &BackfillOptions,
    progress: &mut (dyn FnMut(&BackfillProgress) + Send),
) -> Result<BackfillReport, OnlineError> {
    m.validate_against(shape)?;
    let t = shape.qualified();
    let (pk_name, pk_type) = match shape.primary_key.as_slice() {
        [k] => match shape.column(k) {
            Some(c) => (quote_ident(k), c.data_type.clone()),
            None => {
                return Err(OnlineError::NoSuchColumn {
                    table: t,
                    column: k.clone(),
                })
            }
        },
        key => {
            return Err(OnlineError::NoKeyset {
                table: t,
                key: key.to_vec(),
            })
        }
    };
    let estimated_rows = estimate(client, shape).await?;
    let sets: Vec<String> = m
        .changes
        .iter()
        .map(|c| {
            let new = quote_ident(&c.new_column());
            format!("{new} = COALESCE({new}, {})", paren(&c.up_sql()))
        })
        .collect();
    let unfilled: Vec<String> = m
        .changes
        .iter()
        .map(|c| {
            format!(
                "({} IS NULL AND {} IS NOT NULL)",
                quote_ident(&c.new_column()),
                paren(&c.up_sql())
            )
        })
        .collect();
    let (sets, unfilled) = (sets.join(", "), unfilled.join(" OR "));
    let batch_size = opts.batch_size.max(1);

    let started = Instant::now();
    let mut p = BackfillProgress {
        batches: 0,
        rows_scanned: 0,
        rows_filled: 0,
        estimated_rows,
        last_key: opts.resume_after.clone(),
        elapsed: Duration::ZERO,
        rows_per_second: 0.0,
        eta: None,
    };
    let mut retried = 0u64;
    loop {
        let after = match &p.last_key {
            Some(k) => format!("{pk_name} > {}::{pk_type}", quote_literal(k)),
            None => "true".to_owned(),
        };
        // One statement per batch (one snapshot): the batch's keys, its upper key, and the
        // update up to it, in one short transaction whose settings die with it.
        let sql = format!(
            "BEGIN; SET LOCAL lock_timeout = '{lt}ms'; SET LOCAL statement_timeout = '{st}ms';\n\
             WITH _lp_b AS (SELECT {pk_name} AS k FROM {t} WHERE {after} \
                            ORDER BY {pk_name} LIMIT {batch_size}), \
                  _lp_bound AS (SELECT k FROM _lp_b ORDER BY k DESC LIMIT 1), \
                  _lp_u AS (UPDATE {t} SET {sets} WHERE {after} \
                            AND {pk_name} <= (SELECT k FROM _lp_bound) AND ({unfilled}) \
                            RETURNING 1) \
             SELECT (SELECT k FROM _lp_bound)::text, (SELECT count(*) FROM _lp_b), \
                    (SELECT count(*) FROM _lp_u);\n\
             COMMIT",
            lt = opts.lock_timeout.as_millis().max(1),
            st = opts.statement_timeout.as_millis().max(1),
        );
        let mut attempt = 0u32;
        let outcome = loop {
            match batch(
                client,
                &sql,
                opts.statement_timeout + Duration::from_secs(2),
            )
            .await
            {
                Ok(o) => break o,
                Err(failure) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    if failure.is_lock_failure() && attempt < opts.lock_retries {
                        attempt += 1;
                        retried += 1;
                        tokio::time::sleep(backoff(Duration::from_millis(50), attempt)).await;
                        continue;
                    }
                    return Err(OnlineError::Backfill {
                        table: t,
                        resume_after: p.last_key,
                        rows_done: p.rows_filled,
                        failure: Box::new(failure),
                    });
                }
            }
        };
        let Some((key, scanned, filled)) = outcome else {
            break;
        };
        p.batches += 1;
        p.rows_scanned += scanned;
        p.rows_filled += filled;
        p.last_key = Some(key);
        p.elapsed = started.elapsed();
        let secs = p.elapsed.as_secs_f64();
        p.rows_per_second = if secs > 0.0 {
            p.rows_scanned as f64 / secs
        } else {
            0.0
        };
        p.eta = match (p.estimated_rows, p.rows_per_second > 0.0) {
            (Some(total), true) => Some(Duration::from_secs_f64(
                total.saturating_sub(p.rows_scanned) as f64 / p.rows_per_second,
            )),
            _ => None,
        };
        progress(&p);
        if scanned < u64::from(batch_size) {
            break;
        }
        if !opts.pause.is_zero() {
            tokio::time::sleep(opts.pause).await;
        }
    }
    p.eta = Some(Duration::ZERO);
    Ok(BackfillReport {
        progress: p,
        lock_retries: retried,
    })
}

/// Runs one batch; `None` when no row is left after the cursor, else the batch's last key,
/// the rows it went over and the rows it filled.
async fn batch(
    client: &Client,
    sql: &str,
    timeout: Duration,
) -> Result<Option<(String, u64, u64)>, PgFailure> {
    let token = client.cancel_token();
    let messages = match tokio::time::timeout(timeout, client.simple_query(sql)).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return Err(PgFailure::from_error(&e)),
        Err(_) => {
            crate::connect::cancel_query(&token).await;
            return Err(PgFailure {
                sqlstate: Some("57014".into()),
                message: "backfill batch timed out; cancelled on the server".into(),
                detail: None,
                hint: None,
                position: None,
                timed_out: true,
            });
        }
    };
    for m in &messages {
        if let SimpleQueryMessage::Row(r) = m {
            let count = |i: usize| r.get(i).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            return Ok(r.get(0).map(|k| (k.to_owned(), count(1), count(2))));
        }
    }
    Ok(None)
}

/// How many rows still need the backfill (new column `NULL` where `up` gives a value): `0`
/// is complete's precondition. One scan of the table, under no lock but `ACCESS SHARE`.
pub async fn unfilled_rows(
    client: &Client,
    m: &OnlineMigration,
    shape: &TableShape,
) -> Result<u64, OnlineError> {
    m.validate_against(shape)?;
    let unfilled: Vec<String> = m
        .changes
        .iter()
        .map(|c| {
            format!(
                "({} IS NULL AND {} IS NOT NULL)",
                quote_ident(&c.new_column()),
                paren(&c.up_sql())
            )
        })
        .collect();
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {}",
        shape.qualified(),
        unfilled.join(" OR ")
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(|e| OnlineError::Postgres {
            what: "counting the rows the backfill has not filled".into(),
            failure: Box::new(PgFailure::from_error(&e)),
        })?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

async fn estimate(client: &Client, shape: &TableShape) -> Result<Option<u64>, OnlineError> {
    let row = client
        .query_one(
            "SELECT c.reltuples::float8 FROM pg_class c JOIN pg_namespace n \
             ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[&shape.schema, &shape.table],
        )
        .await
        .map_err(|e| OnlineError::Postgres {
            what: "reading the table's estimated rows".into(),
            failure: Box::new(PgFailure::from_error(&e)),
        })?;
    let n: f64 = row.get(0);
    // -1 (Postgres 14+): never vacuumed nor analysed.
    Ok((n >= 0.0).then_some(n as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> TableShape {
        let col = |name: &str, ty: &str, nn: bool| ShapeColumn {
            name: name.into(),
            data_type: ty.into(),
            not_null: nn,
            default: None,
            computed: false,
            dependents: Vec::new(),
            comment: None,
        };
        TableShape {
            schema: "public".into(),
            table: "orders".into(),
            columns: vec![col("id", "bigint", true), col("qty", "integer", true)],
            primary_key: vec!["id".into()],
            server_major: 16,
            grants: vec![("app".into(), "select".into())],
            comment: None,
            indexes: Vec::new(),
        }
    }

    fn migration() -> OnlineMigration {
        OnlineMigration {
            version: "v2".into(),
            changes: vec![ColumnChange {
                schema: "public".into(),
                table: "orders".into(),
                column: "qty".into(),
                new_name: Some("quantity".into()),
                new_type: Some("bigint".into()),
                set_not_null: false,
                up: "qty::bigint".into(),
                down: "quantity::integer".into(),
            }],
        }
    }

    #[test]
    fn expand_complete_rollback() {
        let sql = expand_sql(&migration(), &shape()).expect("expand");
        let all = sql.join(";\n");
        assert!(all.contains("ADD COLUMN \"_lp_new_qty\" bigint"), "{all}");
        assert!(
            all.contains("CHECK (\"_lp_new_qty\" IS NOT NULL) NOT VALID"),
            "{all}"
        );
        assert!(all.contains("CREATE SCHEMA \"public_v2\""), "{all}");
        assert!(all.contains("WITH (security_invoker = true)"), "{all}");
        assert!(all.contains("\"_lp_new_qty\" AS \"quantity\""), "{all}");
        let mut old = shape();
        old.server_major = 14;
        let all14 = expand_sql(&migration(), &old).expect("expand").join(";");
        assert!(!all14.contains("security_invoker"), "{all14}");

        let c = complete_sql(&migration(), &shape()).expect("complete");
        assert_eq!(c.validate.len(), 1);
        assert!(c
            .contract
            .last()
            .is_some_and(|s| s.contains("RENAME COLUMN")));
        let r = rollback_sql(&migration(), &shape()).expect("rollback");
        assert!(r
            .iter()
            .any(|s| s.contains("DROP COLUMN IF EXISTS \"_lp_new_qty\"")));
    }

    #[test]
    fn refusals() {
        let mut m = migration();
        m.changes[0].down = " ".into();
        match expand_sql(&m, &shape()) {
            Err(OnlineError::MissingExpression { column, which }) => {
                assert_eq!((column.as_str(), which), ("qty", "down"));
            }
            other => panic!("{other:?}"),
        }
        let mut m = migration();
        m.changes[0].table = "other".into();
        m.changes.push(migration().changes[0].clone());
        assert!(matches!(
            m.validate(),
            Err(OnlineError::SeveralTables { .. })
        ));
        for evil in [
            "1); DROP TABLE x; SELECT (1",
            "qty FROM pg_class",
            "1), (2",
            "$lp_sync$",
        ] {
            let mut m = migration();
            m.changes[0].up = evil.into();
            assert!(
                matches!(m.validate(), Err(OnlineError::BadExpression { .. })),
                "{evil}"
            );
        }
        // A plain rename needs neither expression, a new NOT NULL only `up`.
        let mut m = migration();
        m.changes[0].new_type = None;
        m.changes[0].up = String::new();
        m.changes[0].down = String::new();
        m.validate().expect("a rename derives both");
        assert_eq!(
            (m.changes[0].up_sql(), m.changes[0].down_sql()),
            ("\"qty\"".to_owned(), "\"quantity\"".to_owned())
        );
        m.changes[0].set_not_null = true;
        match m.validate() {
            Err(OnlineError::MissingExpression { column, which }) => {
                assert_eq!((column.as_str(), which), ("qty", "up"));
            }
            other => panic!("{other:?}"),
        }
        let mut m = migration();
        m.changes[0].up = "(SELECT max(x) FROM y) + qty -- trailing".into();
        m.validate()
            .expect("a sub-query and a comment are one expression");
        let mut m = migration();
        m.changes[0].new_type = Some("bigint; DROP TABLE x".into());
        assert!(matches!(
            m.validate(),
            Err(OnlineError::BadIdentifier { .. })
        ));
        let mut m = migration();
        m.version = "V 2".into();
        assert!(matches!(m.validate(), Err(OnlineError::BadVersion(_))));
        let mut m = migration();
        m.changes[0].column = "x".repeat(60);
        assert!(matches!(
            m.validate(),
            Err(OnlineError::BadIdentifier { .. })
        ));
        let mut m = migration();
        m.changes[0].column = "id".into();
        assert!(matches!(
            m.validate_against(&shape()),
            Err(OnlineError::NoSuchColumn { .. } | OnlineError::Unsupported { .. })
        ));
        let mut m = migration();
        m.changes[0].new_name = Some("id".into());
        assert!(matches!(
            m.validate_against(&shape()),
            Err(OnlineError::Conflict { .. })
        ));
    }
}
