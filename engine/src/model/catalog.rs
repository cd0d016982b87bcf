//! The catalog model: Lockplane's canonical description of a database schema.
//!
//! Everything here is plain data. The shape *is* the manifest format: serialising a [`Catalog`]
//! gives the JSON whose canonical bytes are hashed (see [`crate::hash`]). So the rules of the
//! manifest hold for these types:
//!
//! - no OIDs, owners, grantors, sizes or any other physical or installation detail;
//! - every collection is keyed or sorted by name (maps are `BTreeMap`, lists are sorted by
//!   [`Catalog::canonicalize`]), except where order is meaning (enum labels, key columns);
//! - expressions are stored as Postgres prints them, normalised through one parser
//!   ([`crate::normalize`]) so the server version does not leak into the text;
//! - optional values are serialised as `null`, never skipped, so every field is always present
//!   and the encoding is the same in JSON and in rmp-serde.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version of the manifest format. Bump it whenever the shape of the model changes, since
/// it changes every hash.
pub const FORMAT_VERSION: u32 = 1;

/// A whole database as Lockplane sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Manifest format version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// Installed extensions, by name.
    pub extensions: BTreeMap<String, Extension>,
    /// User schemas, by name. System schemas are never listed.
    pub schemas: BTreeMap<String, Schema>,
    /// Objects that exist but that Lockplane does not manage. They are part of the hash, so a
    /// change to any of them is seen, and plans refuse to touch what depends on them.
    pub unsupported: Vec<UnsupportedObject>,
    /// Indexes Postgres marks invalid (`indisvalid = false`: what a failed or interrupted
    /// `CREATE INDEX CONCURRENTLY` leaves), as `(schema, index name)`. They are not indexes
    /// the schema has (queries do not use them, `pg_dump` skips them), so they are neither in
    /// `indexes` nor hashed; introspection records them so that a plan drops them first (they
    /// still cost every write, and their names block a new build).
    #[serde(skip)]
    pub invalid_indexes: Vec<(String, String)>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            format: FORMAT_VERSION,
            extensions: BTreeMap::new(),
            schemas: BTreeMap::new(),
            unsupported: Vec::new(),
            invalid_indexes: Vec::new(),
        }
    }
}

impl Catalog {
    /// Sorts every list whose order carries no meaning, so two catalogs describing the same
    /// schema are equal whatever order their parts were found or written in.
    pub fn canonicalize(&mut self) {
        self.unsupported.sort();
        self.unsupported.dedup();
        for schema in self.schemas.values_mut() {
            for table in schema.tables.values_mut() {
                table.grants.sort();
                table.grants.dedup();
                for column in table.columns.values_mut() {
                    column.grants.sort();
                    column.grants.dedup();
                }
                for policy in table.rls.policies.values_mut() {
                    policy.roles.sort();
                    policy.roles.dedup();
                }
            }
            for view in schema.views.values_mut() {
                view.grants.sort();
                view.grants.dedup();
                view.options.sort();
            }
            for sequence in schema.sequences.values_mut() {
                sequence.grants.sort();
                sequence.grants.dedup();
            }
        }
    }
}

/// An installed extension. Its version is deliberately not part of the manifest: the same
/// extension ships at different versions with different server builds, and the objects it
/// creates are excluded from the catalog anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// Schema the extension's objects live in.
    pub schema: String,
}

/// A schema and the objects in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// `COMMENT ON SCHEMA`.
    pub comment: Option<String>,
    /// Ordinary tables, by name.
    pub tables: BTreeMap<String, Table>,
    /// Views, by name.
    pub views: BTreeMap<String, View>,
    /// Sequences that are not identity sequences, by name.
    pub sequences: BTreeMap<String, Sequence>,
    /// Enum types, by name.
    pub enums: BTreeMap<String, EnumType>,
}

/// An ordinary table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Columns by name. Physical column order is not part of the manifest: Postgres cannot
    /// reorder columns, so a manifest that depended on it could never be reached by a plan.
    pub columns: BTreeMap<String, Column>,
    /// Primary key, unique, foreign key, check and exclusion constraints, by name.
    pub constraints: BTreeMap<String, Constraint>,
    /// Indexes that do not back a constraint, by name.
    pub indexes: BTreeMap<String, Index>,
    /// Row-level security state and policies.
    pub rls: Rls,
    /// Table privileges, excluding the owner's own.
    pub grants: Vec<Grant>,
    /// `UNLOGGED` tables lose their content on a crash: that is a semantic property.
    pub unlogged: bool,
    /// `COMMENT ON TABLE`.
    pub comment: Option<String>,
}

impl Table {
    /// The columns in the order Lockplane writes them: by [`ColumnPosition`], columns without
    /// one after those with one, and by name among equals.
    pub fn columns_in_order(&self) -> Vec<(&String, &Column)> {
        let mut columns: Vec<(&String, &Column)> = self.columns.iter().collect();
        // A stable sort over name-ordered entries: equal positions keep name order.
        columns.sort_by_key(|(_, c)| c.position.get().unwrap_or(u32::MAX));
        columns
    }
}

/// A table column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The type as `format_type` prints it (e.g. `character varying(45)`, `public.mpaa_rating`).
    #[serde(rename = "type")]
    pub data_type: String,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Default expression (normalised). `None` for identity and generated columns.
    pub default: Option<String>,
    /// `GENERATED … AS IDENTITY`, with its sequence options.
    pub identity: Option<Identity>,
    /// `GENERATED ALWAYS AS (expr) STORED`: the expression (normalised).
    pub generated: Option<String>,
    /// Collation when it differs from the type's default.
    pub collation: Option<String>,
    /// Column privileges, excluding the owner's own.
    pub grants: Vec<Grant>,
    /// `COMMENT ON COLUMN`.
    pub comment: Option<String>,
    /// Where the column sits in its table. Not part of the manifest (see [`ColumnPosition`]).
    #[serde(skip)]
    pub position: ColumnPosition,
}

/// Where a column sits in its table: `attnum` for an introspected column, the place in the
/// document (from 1) for a column read from the DSL, nothing for a column built in code.
///
/// Postgres cannot reorder columns, so column order is not part of the manifest: a manifest
/// that depended on it could be unreachable by any plan. What Lockplane *writes* should still
/// keep the order a person chose (`CREATE TABLE` in the document's order, `to_yaml` in the
/// table's physical order), so the position rides along as a hint: serde skips it (it is not
/// hashed, and a catalog read back from storage has none), and any two positions compare
/// equal, so catalogs that differ only in column order are equal and diff to nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ColumnPosition(pub Option<u32>);

impl ColumnPosition {
    /// A known position.
    pub fn at(position: u32) -> ColumnPosition {
        ColumnPosition(Some(position))
    }

    /// The position, if known.
    pub fn get(self) -> Option<u32> {
        self.0
    }
}

// Deliberately not a comparison: the hint must never make two catalogs differ.
impl PartialEq for ColumnPosition {
    fn eq(&self, _: &ColumnPosition) -> bool {
        true
    }
}

impl Eq for ColumnPosition {}

/// Identity column settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `always` or `by_default`.
    pub generation: IdentityGeneration,
    /// Options of the implicit sequence.
    pub sequence: SequenceOptions,
}

/// Whether identity values can be overridden by an explicit insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityGeneration {
    /// `GENERATED ALWAYS`.
    Always,
    /// `GENERATED BY DEFAULT`.
    ByDefault,
}

/// Options shared by sequences and identity columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceOptions {
    /// `smallint`, `integer` or `bigint`.
    #[serde(rename = "type")]
    pub data_type: String,
    /// `START WITH`.
    pub start: i64,
    /// `INCREMENT BY`.
    pub increment: i64,
    /// `MINVALUE`.
    pub min: i64,
    /// `MAXVALUE`.
    pub max: i64,
    /// `CACHE`.
    pub cache: i64,
    /// `CYCLE`.
    pub cycle: bool,
}

/// A table constraint. Nullability is a column property, not a constraint here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// What the constraint enforces.
    pub definition: ConstraintDef,
    /// `DEFERRABLE`.
    pub deferrable: bool,
    /// `INITIALLY DEFERRED`.
    pub initially_deferred: bool,
    /// False while a constraint added `NOT VALID` has not been validated: old rows may violate it.
    pub validated: bool,
    /// `COMMENT ON CONSTRAINT`.
    pub comment: Option<String>,
}

/// The kinds of constraint Lockplane manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConstraintDef {
    /// `PRIMARY KEY (columns)`.
    PrimaryKey {
        /// Key columns, in key order.
        columns: Vec<String>,
    },
    /// `UNIQUE [NULLS NOT DISTINCT] (columns)`.
    Unique {
        /// Key columns, in key order.
        columns: Vec<String>,
        /// `NULLS NOT DISTINCT` (Postgres 15+).
        nulls_not_distinct: bool,
    },
    /// `FOREIGN KEY (columns) REFERENCES …`.
    ForeignKey {
        /// Referencing columns, in key order.
        columns: Vec<String>,
        /// The referenced table and columns.
        references: ForeignKeyTarget,
        /// `ON UPDATE` action.
        on_update: ForeignKeyAction,
        /// `ON DELETE` action.
        on_delete: ForeignKeyAction,
        /// `MATCH` type.
        match_type: ForeignKeyMatch,
    },
    /// `CHECK (expression) [NO INHERIT]`.
    Check {
        /// The expression (normalised).
        expression: String,
        /// `NO INHERIT`.
        no_inherit: bool,
    },
    /// `EXCLUDE …`: kept as its normalised definition text.
    Exclusion {
        /// The definition as `pg_get_constraintdef` prints it (normalised).
        definition: String,
    },
}

/// The table a foreign key points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKeyTarget {
    /// Schema of the referenced table.
    pub schema: String,
    /// Referenced table.
    pub table: String,
    /// Referenced columns, in key order.
    pub columns: Vec<String>,
}

/// Referential action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForeignKeyAction {
    /// `NO ACTION` (the default).
    NoAction,
    /// `RESTRICT`.
    Restrict,
    /// `CASCADE`.
    Cascade,
    /// `SET NULL`.
    SetNull,
    /// `SET DEFAULT`.
    SetDefault,
}

/// Foreign key match type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForeignKeyMatch {
    /// `MATCH SIMPLE` (the default).
    Simple,
    /// `MATCH FULL`.
    Full,
    /// `MATCH PARTIAL`.
    Partial,
}

/// An index that does not back a constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// `UNIQUE`.
    pub unique: bool,
    /// Access method (`btree`, `gin`, `gist`, …).
    pub method: String,
    /// Key columns or expressions, in key order.
    pub keys: Vec<IndexKey>,
    /// `INCLUDE (columns)`.
    pub include: Vec<String>,
    /// Partial index predicate (normalised).
    pub predicate: Option<String>,
    /// `NULLS NOT DISTINCT` (Postgres 15+).
    pub nulls_not_distinct: bool,
    /// `COMMENT ON INDEX`.
    pub comment: Option<String>,
}

/// One key of an index: a column or an expression, with its ordering options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexKey {
    /// A plain column name, or `None` for an expression key.
    pub column: Option<String>,
    /// An expression key (normalised), or `None` for a column key.
    pub expression: Option<String>,
    /// Operator class, when not the default for the type.
    pub opclass: Option<String>,
    /// Collation, when given explicitly.
    pub collation: Option<String>,
    /// `DESC`.
    pub descending: bool,
    /// Effective null ordering (`NULLS FIRST` is the default for `DESC`).
    pub nulls_first: bool,
}

/// Row-level security of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rls {
    /// `ENABLE ROW LEVEL SECURITY`.
    pub enabled: bool,
    /// `FORCE ROW LEVEL SECURITY` (applies to the owner too).
    pub forced: bool,
    /// Policies by name.
    pub policies: BTreeMap<String, Policy>,
}

/// A row-level security policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Command the policy applies to.
    pub command: PolicyCommand,
    /// Permissive policies are OR-ed, restrictive ones AND-ed.
    pub permissive: bool,
    /// Roles, sorted; `public` for all roles.
    pub roles: Vec<String>,
    /// `USING` expression (normalised).
    pub using: Option<String>,
    /// `WITH CHECK` expression (normalised).
    pub with_check: Option<String>,
    /// `COMMENT ON POLICY`.
    pub comment: Option<String>,
}

/// The command a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyCommand {
    /// `FOR ALL`.
    All,
    /// `FOR SELECT`.
    Select,
    /// `FOR INSERT`.
    Insert,
    /// `FOR UPDATE`.
    Update,
    /// `FOR DELETE`.
    Delete,
}

/// One privilege granted to one role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    /// Role name, or `public`.
    pub grantee: String,
    /// Privilege in lower case (`select`, `insert`, …).
    pub privilege: String,
    /// `WITH GRANT OPTION`.
    pub grantable: bool,
}

/// A view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The view's query (normalised).
    pub definition: String,
    /// View options (`check_option=local`, `security_barrier=true`, …), sorted.
    pub options: Vec<String>,
    /// View privileges, excluding the owner's own.
    pub grants: Vec<Grant>,
    /// `COMMENT ON VIEW`.
    pub comment: Option<String>,
}

/// A sequence that is not the implicit sequence of an identity column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    /// Sequence options. The current value is data, not schema, and is not recorded.
    pub options: SequenceOptions,
    /// `OWNED BY table.column`, as `table.column` within the same schema.
    pub owned_by: Option<SequenceOwner>,
    /// Sequence privileges, excluding the owner's own.
    pub grants: Vec<Grant>,
    /// `COMMENT ON SEQUENCE`.
    pub comment: Option<String>,
}

/// The column a sequence is owned by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceOwner {
    /// Owning table (in the sequence's schema).
    pub table: String,
    /// Owning column.
    pub column: String,
}

/// An enum type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnumType {
    /// Labels in sort order (order is meaning here).
    pub labels: Vec<String>,
    /// `COMMENT ON TYPE`.
    pub comment: Option<String>,
}

/// An object Lockplane sees but does not manage.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UnsupportedObject {
    /// What it is (`function`, `trigger`, `domain`, `partitioned table`, …).
    pub kind: String,
    /// Its schema.
    pub schema: String,
    /// Its name; functions carry their argument types, triggers and rules their table
    /// (`table.trigger`).
    pub name: String,
}

/// A catalog together with its hash: what `introspect` returns and what plans refer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The catalog.
    pub catalog: Catalog,
    /// `catalog_hash(catalog)`.
    pub catalog_hash: crate::hash::CatalogHash,
}

impl Manifest {
    /// Hashes `catalog` and pairs the two.
    pub fn new(catalog: Catalog) -> Result<Manifest, crate::hash::CanonicalError> {
        let catalog_hash = crate::hash::catalog_hash(&catalog)?;
        Ok(Manifest {
            catalog,
            catalog_hash,
        })
    }
}
