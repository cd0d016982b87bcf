//! The parsed DSL document: what the file says, before any of it is checked against the rest.
//!
//! These types mirror the file's shape, not the catalog's: shorthands stay shorthands,
//! privileges stay as written (`insert_update`), types stay as written (`int`).
//! [`to_catalog`](crate::dsl::to_catalog) resolves all of that. Every item carries an [`Origin`] so that a
//! problem found later (a foreign key to a missing table) still points at the right line.

use std::collections::BTreeMap;

use crate::catalog::{ForeignKeyAction, ForeignKeyMatch, IdentityGeneration, PolicyCommand};
use crate::hash::CatalogHash;

/// The version of the DSL this module reads and writes.
pub const DSL_VERSION: u32 = 1;

/// Where something was written: line and column (1-based, in characters) and byte range.
/// All zero when unknown (a document built in code rather than parsed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// Line, from 1; 0 when unknown.
    pub line: u32,
    /// Column in characters, from 1; 0 when unknown.
    pub column: u32,
    /// Byte offset in the source text.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl Span {
    /// True when the position is not known.
    pub fn is_unknown(&self) -> bool {
        self.line == 0
    }
}

/// Where an item of the document came from, for error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// Path of the item in the document (`schemas.public.tables.todos.columns[2]`). Empty for
    /// documents built in code: the conversion then makes one up from names.
    pub path: String,
    /// Position of the item.
    pub span: Span,
    /// Positions of the item's fields (of their values), by key.
    pub fields: BTreeMap<&'static str, Span>,
}

impl Origin {
    /// The position of field `key`, or of the item when the field was not written.
    pub fn field(&self, key: &str) -> Span {
        self.fields.get(key).copied().unwrap_or(self.span)
    }
}

/// A whole DSL document (`version: 1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// Name of the file, for error messages (`schema.yaml`).
    pub file: String,
    /// DSL version; only [`DSL_VERSION`] is understood.
    pub version: u32,
    /// `base:`: the catalog hash of the live database the document was read at
    /// (`lockplane introspect --format yaml` writes it). Not part of the catalog the document
    /// describes (it does not change the document's hash): the planner uses it to merge three
    /// ways, base → document and base → live, so that what others changed since is kept
    /// rather than reverted. `None` plans the document declaratively.
    pub base: Option<CatalogHash>,
    /// Extensions, in the order written.
    pub extensions: Vec<ExtensionDecl>,
    /// Schemas, in the order written.
    pub schemas: Vec<SchemaDecl>,
    /// Where the document starts.
    pub origin: Origin,
}

/// `extensions: [{ name, schema?, required? }]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionDecl {
    /// Extension name.
    pub name: String,
    /// Schema its objects go to (`public` when not given).
    pub schema: Option<String>,
    /// `required: false` marks an extension the schema can live without (the planner may skip
    /// it where the server does not ship it). It is not part of the catalog.
    pub required: bool,
    /// Where it was written.
    pub origin: Origin,
}

impl Default for ExtensionDecl {
    fn default() -> Self {
        ExtensionDecl {
            name: String::new(),
            schema: None,
            required: true,
            origin: Origin::default(),
        }
    }
}

/// `schemas.<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaDecl {
    /// Schema name.
    pub name: String,
    /// `COMMENT ON SCHEMA`.
    pub comment: Option<String>,
    /// `enums.<name>`.
    pub enums: Vec<EnumDecl>,
    /// `sequences.<name>`.
    pub sequences: Vec<SequenceDecl>,
    /// `tables.<name>`.
    pub tables: Vec<TableDecl>,
    /// `views.<name>`.
    pub views: Vec<ViewDecl>,
    /// Where it was written.
    pub origin: Origin,
}

/// `enums.<name>: { labels, comment? }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnumDecl {
    /// Type name.
    pub name: String,
    /// Labels in sort order.
    pub labels: Vec<String>,
    /// `COMMENT ON TYPE`.
    pub comment: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// `sequences.<name>`: a free-standing sequence. Unset options take Postgres' defaults for the
/// type and direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceDecl {
    /// Sequence name.
    pub name: String,
    /// `AS type` (`bigint` when not given, as in Postgres).
    pub data_type: Option<String>,
    /// `START WITH`.
    pub start: Option<i64>,
    /// `INCREMENT BY`.
    pub increment: Option<i64>,
    /// `MINVALUE`.
    pub min: Option<i64>,
    /// `MAXVALUE`.
    pub max: Option<i64>,
    /// `CACHE`.
    pub cache: Option<i64>,
    /// `CYCLE`.
    pub cycle: bool,
    /// `OWNED BY table.column` (same schema).
    pub owned_by: Option<OwnerDecl>,
    /// Privileges.
    pub grants: Vec<GrantDecl>,
    /// `COMMENT ON SEQUENCE`.
    pub comment: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// `owned_by: { table, column }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerDecl {
    /// Owning table, in the sequence's schema.
    pub table: String,
    /// Owning column.
    pub column: String,
}

/// `views.<name>: { query, options?, grants?, comment? }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewDecl {
    /// View name.
    pub name: String,
    /// The view's query.
    pub query: String,
    /// View options (`check_option`, `security_barrier`, `security_invoker`), values as text.
    pub options: BTreeMap<String, String>,
    /// Privileges.
    pub grants: Vec<GrantDecl>,
    /// `COMMENT ON VIEW`.
    pub comment: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// `tables.<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDecl {
    /// Table name.
    pub name: String,
    /// The table's previous name: plan a rename, not a drop and a create. Not in the catalog.
    pub renamed_from: Option<String>,
    /// `COMMENT ON TABLE`.
    pub comment: Option<String>,
    /// `UNLOGGED`.
    pub unlogged: bool,
    /// Columns, in the order written.
    pub columns: Vec<ColumnDecl>,
    /// `primary_key: { name?, columns }` (the long form of `pk: true`).
    pub primary_key: Option<PrimaryKeyDecl>,
    /// `unique: [{ name?, columns }]`.
    pub unique: Vec<UniqueDecl>,
    /// `foreign_keys: [{ name?, columns, references }]`.
    pub foreign_keys: Vec<ForeignKeyDecl>,
    /// `checks: [{ name?, expression }]`.
    pub checks: Vec<CheckDecl>,
    /// `exclusions: [{ name?, definition }]`.
    pub exclusions: Vec<ExclusionDecl>,
    /// `indexes: [...]`.
    pub indexes: Vec<IndexDecl>,
    /// `rls: { enabled, forced?, policies }`.
    pub rls: Option<RlsDecl>,
    /// Table privileges.
    pub grants: Vec<GrantDecl>,
    /// Where it was written.
    pub origin: Origin,
}

/// One column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnDecl {
    /// Column name.
    pub name: String,
    /// The type as written (`int`, `varchar(20)`, `serial`, `todo_state[]`).
    pub data_type: String,
    /// The column's previous name: plan a rename. Not in the catalog.
    pub renamed_from: Option<String>,
    /// For an online (expand/contract) change: the new value as an SQL expression over the
    /// old row's columns (`qty::bigint`). Not in the catalog.
    pub up: Option<String>,
    /// For an online change: the old value as an SQL expression over the new row's columns
    /// (`quantity::integer`). Not in the catalog.
    pub down: Option<String>,
    /// `pk: true`: single-column primary key named `<table>_pkey`.
    pub pk: bool,
    /// `not_null`; `None` when not written (implied by `pk`, identity and serial).
    pub not_null: Option<bool>,
    /// `unique: true`: single-column unique constraint named `<table>_<column>_key`.
    pub unique: bool,
    /// Default expression.
    pub default: Option<String>,
    /// `references`: single-column foreign key named `<table>_<column>_fkey`.
    pub references: Option<ReferencesDecl>,
    /// `check`: a check constraint, named as Postgres names it.
    pub check: Option<String>,
    /// `identity`.
    pub identity: Option<IdentityDecl>,
    /// `generated`: a stored generated column's expression.
    pub generated: Option<String>,
    /// `collation`, as a name (`C`, `en-x-icu`, `myschema.mycoll`).
    pub collation: Option<String>,
    /// `COMMENT ON COLUMN`.
    pub comment: Option<String>,
    /// Column privileges.
    pub grants: Vec<GrantDecl>,
    /// Where it was written.
    pub origin: Origin,
}

/// The target of a foreign key, and its actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferencesDecl {
    /// Schema of the referenced table (the referencing table's when not given).
    pub schema: Option<String>,
    /// Referenced table.
    pub table: String,
    /// Referenced columns; empty means the referenced table's primary key.
    pub columns: Vec<String>,
    /// `ON DELETE` (`no_action` when not given).
    pub on_delete: Option<ForeignKeyAction>,
    /// `ON UPDATE` (`no_action` when not given).
    pub on_update: Option<ForeignKeyAction>,
    /// `MATCH` (`simple` when not given).
    pub match_type: Option<ForeignKeyMatch>,
    /// `DEFERRABLE`.
    pub deferrable: bool,
    /// `INITIALLY DEFERRED`.
    pub initially_deferred: bool,
    /// Where it was written.
    pub origin: Origin,
}

/// `identity: always | by_default | { generation, start?, ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityDecl {
    /// `ALWAYS` or `BY DEFAULT`.
    pub generation: IdentityGeneration,
    /// `START WITH`.
    pub start: Option<i64>,
    /// `INCREMENT BY`.
    pub increment: Option<i64>,
    /// `MINVALUE`.
    pub min: Option<i64>,
    /// `MAXVALUE`.
    pub max: Option<i64>,
    /// `CACHE`.
    pub cache: Option<i64>,
    /// `CYCLE`.
    pub cycle: bool,
}

impl IdentityDecl {
    /// An identity with every sequence option at its default.
    pub fn new(generation: IdentityGeneration) -> Self {
        IdentityDecl {
            generation,
            start: None,
            increment: None,
            min: None,
            max: None,
            cache: None,
            cycle: false,
        }
    }
}

/// `primary_key: { name?, columns, deferrable?, initially_deferred?, comment? }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrimaryKeyDecl {
    /// Constraint name (`<table>_pkey` when not given).
    pub name: Option<String>,
    /// Key columns, in key order.
    pub columns: Vec<String>,
    /// `DEFERRABLE`.
    pub deferrable: bool,
    /// `INITIALLY DEFERRED`.
    pub initially_deferred: bool,
    /// `COMMENT ON CONSTRAINT`.
    pub comment: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// `unique: [{ name?, columns, nulls_not_distinct?, ... }]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UniqueDecl {
    /// Constraint name (`<table>_<columns>_key` when not given).
    pub name: Option<String>,
    /// Key columns, in key order.
    pub columns: Vec<String>,
    /// `NULLS NOT DISTINCT`.
    pub nulls_not_distinct: bool,
    /// `DEFERRABLE`.
    pub deferrable: bool,
    /// `INITIALLY DEFERRED`.
    pub initially_deferred: bool,
    /// `COMMENT ON CONSTRAINT`.
    pub comment: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// `foreign_keys: [{ name?, columns, references, not_valid?, comment? }]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignKeyDecl {
    /// Constraint name (`<table>_<columns>_fkey` when not given).
    pub name: Option<String>,
    /// Referencing columns, in key order.
    pub columns: Vec<String>,
    /// Target and actions.
    pub references: ReferencesDecl,
    /// `NOT VALID`: existing rows are not checked.
    pub not_valid: bool,
    /// `COMMENT ON CONSTRAINT`.
    pub comment: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// `checks: [{ name?, expression, no_inherit?, not_valid?, comment? }]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckDecl {
    /// Constraint name (as Postgres would choose it when not given).
    pub name: Option<String>,
    /// The boolean expression.
    pub expression: String,
    /// `NO INHERIT`.
    pub no_inherit: bool,
    /// `NOT VALID`.
    pub not_valid: bool,
    /// `COMMENT ON CONSTRAINT`.
    pub comment: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// `exclusions: [{ name?, definition, comment? }]`, the definition being the constraint clause
/// (`EXCLUDE USING gist (during WITH &&)`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExclusionDecl {
    /// Constraint name (`<table>_<columns>_excl` when not given and every element is a column).
    pub name: Option<String>,
    /// `EXCLUDE …` clause.
    pub definition: String,
    /// `COMMENT ON CONSTRAINT`.
    pub comment: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// One index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexDecl {
    /// Index name (`<table>_<columns>_idx` when not given and every key is a column).
    pub name: Option<String>,
    /// `UNIQUE`.
    pub unique: bool,
    /// `USING method` (`btree` when not given).
    pub method: Option<String>,
    /// Keys, from `columns: [...]` or `keys: [...]`.
    pub keys: Vec<IndexKeyDecl>,
    /// `INCLUDE (columns)`.
    pub include: Vec<String>,
    /// `WHERE predicate` (`where:` in the file).
    pub predicate: Option<String>,
    /// `NULLS NOT DISTINCT`.
    pub nulls_not_distinct: bool,
    /// `COMMENT ON INDEX`.
    pub comment: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// One index key: a column or an expression, with its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexKeyDecl {
    /// A column name.
    pub column: Option<String>,
    /// An expression.
    pub expression: Option<String>,
    /// Operator class name (`text_pattern_ops`, `public.gin_trgm_ops`).
    pub opclass: Option<String>,
    /// Collation name.
    pub collation: Option<String>,
    /// `order: desc`.
    pub descending: bool,
    /// `nulls: first | last`; `None` for the default (first when descending).
    pub nulls_first: Option<bool>,
}

/// `rls: { enabled, forced?, policies? }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RlsDecl {
    /// `ENABLE ROW LEVEL SECURITY`; `None` when the key is missing.
    pub enabled: Option<bool>,
    /// `FORCE ROW LEVEL SECURITY`.
    pub forced: bool,
    /// Policies.
    pub policies: Vec<PolicyDecl>,
    /// Where it was written.
    pub origin: Origin,
}

/// `policies: [{ name, for?, as?, roles?, using?, with_check?, comment? }]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecl {
    /// Policy name.
    pub name: String,
    /// `for:` the command (`all` when not given).
    pub command: PolicyCommand,
    /// `as: permissive | restrictive` (permissive when not given).
    pub permissive: bool,
    /// `roles:` (`[public]` when not given).
    pub roles: Vec<String>,
    /// `USING` expression.
    pub using: Option<String>,
    /// `WITH CHECK` expression.
    pub with_check: Option<String>,
    /// `COMMENT ON POLICY`.
    pub comment: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

impl Default for PolicyDecl {
    fn default() -> Self {
        PolicyDecl {
            name: String::new(),
            command: PolicyCommand::All,
            permissive: true,
            roles: Vec::new(),
            using: None,
            with_check: None,
            comment: None,
            origin: Origin::default(),
        }
    }
}

/// `grants: [{ role, privilege, grantable? }]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantDecl {
    /// Role name, or `public`.
    pub role: String,
    /// Privileges as written, shorthands included (`insert_update`, `all`).
    pub privileges: Vec<String>,
    /// `WITH GRANT OPTION`.
    pub grantable: bool,
    /// Where it was written.
    pub origin: Origin,
}

/// Whether a rename is of a table or of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RenameKind {
    /// `ALTER TABLE … RENAME TO`.
    Table,
    /// `ALTER TABLE … RENAME COLUMN`.
    Column,
}

/// A `renamed_from:` in the document, for the planner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rename {
    /// Table or column.
    pub kind: RenameKind,
    /// Schema of the table.
    pub schema: String,
    /// The table's name in the document (its new name when the table itself is renamed).
    pub table: String,
    /// Previous name (of the table or of the column).
    pub from: String,
    /// New name (of the table or of the column).
    pub to: String,
}

impl Document {
    /// Every `renamed_from:` in the document, tables first, in document order. The planner
    /// matches `from` against the live catalog: a rename is planned as a rename, not as a drop
    /// and an add, and only when the old name exists and the new one does not.
    pub fn renames(&self) -> Vec<Rename> {
        let mut tables = Vec::new();
        let mut columns = Vec::new();
        for schema in &self.schemas {
            for table in &schema.tables {
                if let Some(from) = &table.renamed_from {
                    tables.push(Rename {
                        kind: RenameKind::Table,
                        schema: schema.name.clone(),
                        table: table.name.clone(),
                        from: from.clone(),
                        to: table.name.clone(),
                    });
                }
                for column in &table.columns {
                    if let Some(from) = &column.renamed_from {
                        columns.push(Rename {
                            kind: RenameKind::Column,
                            schema: schema.name.clone(),
                            table: table.name.clone(),
                            from: from.clone(),
                            to: column.name.clone(),
                        });
                    }
                }
            }
        }
        tables.extend(columns);
        tables
    }

    /// Names of the extensions marked `required: false`.
    pub fn optional_extensions(&self) -> Vec<&str> {
        self.extensions
            .iter()
            .filter(|e| !e.required)
            .map(|e| e.name.as_str())
            .collect()
    }
}
