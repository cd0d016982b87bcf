//! pgroll's migration format (v0.16), as typed values serialised to its JSON.
//!
//! Field names and shapes are pgroll's own (`pkg/migrations/types.go`, `schema.json` at tag
//! v0.16.2). Optional fields that carry no information are left out rather than written with
//! their default, so a migration reads like one a person wrote; the only default always
//! written is a column's `nullable` (see [`Column::nullable`]).

use std::collections::BTreeMap;

use serde::Serialize;

/// One pgroll migration: the content of one migration file. The migration's name is its file
/// name: pgroll 0.16 refuses a `name` key in the file, so there is no such field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migration {
    /// The operations, run in order (their `start` phases, then their `complete` phases).
    pub operations: Vec<Operation>,
}

/// One pgroll operation, serialised as `{"<kind>": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `create_table`.
    CreateTable(CreateTable),
    /// `add_column`.
    AddColumn(AddColumn),
    /// `alter_column`.
    AlterColumn(AlterColumn),
    /// `rename_table`.
    RenameTable(RenameTable),
    /// `rename_column`.
    RenameColumn(RenameColumn),
    /// `rename_constraint`.
    RenameConstraint(RenameConstraint),
    /// `drop_table`.
    DropTable(DropTable),
    /// `drop_column`.
    DropColumn(DropColumn),
    /// `drop_index`.
    DropIndex(DropIndex),
    /// `drop_constraint` (a constraint over one column).
    DropConstraint(DropConstraint),
    /// `drop_multicolumn_constraint`.
    DropMulticolumnConstraint(DropMulticolumnConstraint),
    /// `create_index`.
    CreateIndex(CreateIndex),
    /// `create_constraint`.
    CreateConstraint(CreateConstraint),
    /// `sql`: raw SQL pgroll runs as given.
    Sql(RawSql),
}

impl Operation {
    /// pgroll's name for the operation (`create_table`, `sql`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::CreateTable(_) => "create_table",
            Operation::AddColumn(_) => "add_column",
            Operation::AlterColumn(_) => "alter_column",
            Operation::RenameTable(_) => "rename_table",
            Operation::RenameColumn(_) => "rename_column",
            Operation::RenameConstraint(_) => "rename_constraint",
            Operation::DropTable(_) => "drop_table",
            Operation::DropColumn(_) => "drop_column",
            Operation::DropIndex(_) => "drop_index",
            Operation::DropConstraint(_) => "drop_constraint",
            Operation::DropMulticolumnConstraint(_) => "drop_multicolumn_constraint",
            Operation::CreateIndex(_) => "create_index",
            Operation::CreateConstraint(_) => "create_constraint",
            Operation::Sql(_) => "sql",
        }
    }
}

/// `create_table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateTable {
    /// Table name (in the migration's schema).
    pub name: String,
    /// Columns, in the table's order.
    pub columns: Vec<Column>,
    /// Table constraints (primary key, unique, check, foreign key, exclusion).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// `COMMENT ON TABLE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A column of `create_table` or `add_column`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// The type as SQL (`integer`, `character varying(10)`, `serial`), with `COLLATE …` when
    /// the column has its own collation: pgroll writes `"name" <type>` verbatim.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Always written: pgroll reads a missing `nullable` as NOT NULL, the opposite of SQL, so a
    /// reader (or a hand edit) could easily take an implicit value the wrong way.
    pub nullable: bool,
    /// Default expression (SQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Identity or generation expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated: Option<Generated>,
    /// `COMMENT ON COLUMN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `generated` of a column: exactly one of the two is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Generated {
    /// `GENERATED ALWAYS AS (expression) STORED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// `GENERATED … AS IDENTITY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityOptions>,
}

/// An identity column's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityOptions {
    /// `ALWAYS` or `BY DEFAULT`.
    pub user_specified_values: String,
    /// Sequence options as in `CREATE SEQUENCE` (only those that differ from the defaults).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sequence_options: String,
}

/// A table constraint of `create_table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Constraint {
    /// Constraint name.
    pub name: String,
    /// `primary_key`, `unique`, `check`, `foreign_key` or `exclude`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Key columns (the columns a check reads, for a check).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Check expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// `NO INHERIT` (checks).
    #[serde(skip_serializing_if = "is_false")]
    pub no_inherit: bool,
    /// `NULLS NOT DISTINCT` (unique).
    #[serde(skip_serializing_if = "is_false")]
    pub nulls_not_distinct: bool,
    /// `DEFERRABLE`.
    #[serde(skip_serializing_if = "is_false")]
    pub deferrable: bool,
    /// `INITIALLY DEFERRED`.
    #[serde(skip_serializing_if = "is_false")]
    pub initially_deferred: bool,
    /// The referenced table (foreign keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<TableReference>,
    /// The exclusion (exclusion constraints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Exclude>,
    /// `INCLUDE (…)` of an exclusion constraint's index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_parameters: Option<IndexParameters>,
}

/// Index options of a constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexParameters {
    /// `INCLUDE (columns)`.
    pub include_columns: Vec<String>,
}

/// A table-level foreign key's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableReference {
    /// Referenced table (in the migration's schema).
    pub table: String,
    /// Referenced columns.
    pub columns: Vec<String>,
    /// `ON DELETE`.
    pub on_delete: String,
    /// `ON UPDATE`.
    pub on_update: String,
    /// `MATCH`.
    pub match_type: String,
}

/// An exclusion constraint's parts, as pgroll writes them back:
/// `EXCLUDE USING <index_method> (<elements>) [WHERE (<predicate>)]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exclude {
    /// Index method.
    pub index_method: String,
    /// `element WITH operator, …`.
    pub elements: String,
    /// Partial predicate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
}

/// `add_column`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddColumn {
    /// Table.
    pub table: String,
    /// The column.
    pub column: Column,
    /// Backfill expression for existing rows (pgroll requires it for a NOT NULL column
    /// without default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up: Option<String>,
}

/// `alter_column`: any of type, nullability, default, comment, check, unique, references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlterColumn {
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// New type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub data_type: Option<String>,
    /// New nullability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nullable: Option<bool>,
    /// New default; `Some(None)` (written `null`) drops it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Option<String>>,
    /// New comment; `Some(None)` (written `null`) removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<Option<String>>,
    /// A check constraint on this column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckConstraint>,
    /// A unique constraint on this column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique: Option<UniqueConstraint>,
    /// A foreign key on this column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<ColumnReference>,
    /// The new column's value computed from the old row (pgroll's backfill and trigger).
    pub up: String,
    /// The old column's value computed from the new row (writes through the new version).
    pub down: String,
}

/// A single-column check constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckConstraint {
    /// Constraint name.
    pub name: String,
    /// The expression.
    pub constraint: String,
    /// `NO INHERIT`.
    #[serde(skip_serializing_if = "is_false")]
    pub no_inherit: bool,
}

/// A single-column unique constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UniqueConstraint {
    /// Constraint name.
    pub name: String,
}

/// A single-column foreign key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnReference {
    /// Constraint name.
    pub name: String,
    /// Referenced table.
    pub table: String,
    /// Referenced column.
    pub column: String,
    /// `ON DELETE`.
    pub on_delete: String,
    /// `ON UPDATE`.
    pub on_update: String,
    /// `MATCH`.
    pub match_type: String,
    /// `DEFERRABLE`.
    #[serde(skip_serializing_if = "is_false")]
    pub deferrable: bool,
    /// `INITIALLY DEFERRED`.
    #[serde(skip_serializing_if = "is_false")]
    pub initially_deferred: bool,
}

/// `rename_table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenameTable {
    /// Old name.
    pub from: String,
    /// New name.
    pub to: String,
}

/// `rename_column`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenameColumn {
    /// Table.
    pub table: String,
    /// Old name.
    pub from: String,
    /// New name.
    pub to: String,
}

/// `rename_constraint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenameConstraint {
    /// Table.
    pub table: String,
    /// Old name.
    pub from: String,
    /// New name.
    pub to: String,
}

/// `drop_table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropTable {
    /// Table.
    pub name: String,
}

/// `drop_column`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropColumn {
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
}

/// `drop_index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropIndex {
    /// Index name.
    pub name: String,
}

/// `drop_constraint`: a unique, check or foreign key constraint over one column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropConstraint {
    /// Table.
    pub table: String,
    /// Constraint name.
    pub name: String,
    /// The column's new value from the old row.
    pub up: String,
    /// The column's old value from the new row.
    pub down: String,
}

/// `drop_multicolumn_constraint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropMulticolumnConstraint {
    /// Table.
    pub table: String,
    /// Constraint name.
    pub name: String,
    /// Per column: its new value from the old row.
    pub up: BTreeMap<String, String>,
    /// Per column: its old value from the new row.
    pub down: BTreeMap<String, String>,
}

/// `create_index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateIndex {
    /// Index name.
    pub name: String,
    /// Table.
    pub table: String,
    /// Key columns.
    pub columns: Vec<IndexField>,
    /// Access method.
    pub method: String,
    /// `UNIQUE`.
    #[serde(skip_serializing_if = "is_false")]
    pub unique: bool,
    /// Partial index predicate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
}

/// One key column of `create_index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexField {
    /// Column.
    pub column: String,
    /// `COLLATE` (SQL, quoted as needed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collate: Option<String>,
    /// Operator class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opclass: Option<Opclass>,
    /// `DESC` (ascending is left out, the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
}

/// An index key's operator class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opclass {
    /// Its name (SQL, quoted as needed).
    pub name: String,
}

/// `create_constraint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateConstraint {
    /// Table.
    pub table: String,
    /// Constraint name.
    pub name: String,
    /// `primary_key`, `unique`, `check` or `foreign_key`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Key columns (for a check, the columns it reads).
    pub columns: Vec<String>,
    /// Check expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// `NO INHERIT` (checks).
    #[serde(skip_serializing_if = "is_false")]
    pub no_inherit: bool,
    /// Foreign key target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<TableReference>,
    /// Per column: its new value from the old row.
    pub up: BTreeMap<String, String>,
    /// Per column: its old value from the new row.
    pub down: BTreeMap<String, String>,
}

/// `sql`: statements pgroll runs as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawSql {
    /// The SQL.
    pub up: String,
    /// Run when the migration completes, not when it starts (then it needs no isolation).
    #[serde(rename = "onComplete", skip_serializing_if = "is_false")]
    pub on_complete: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}
