//! Comparing two catalogs: what must change, object by object.
//!
//! [`diff`] lists the [`Change`]s that take the live catalog to the desired one. It decides
//! *what* changes and how (in place, or drop and re-create), not the order or the SQL: that is
//! [`crate::compile`]'s job. Decisions made here:
//!
//! - **Renames come from the caller** ([`Renames`], from the DSL's `renamed_from`): a table or
//!   column that only exists under a new name is otherwise a drop and a create, which loses
//!   data. With a rename, the live object is renamed first, then diffed against its old self
//!   (references to it — foreign keys, index keys, expressions — are renamed too).
//! - **Constraints, indexes and sequences whose only difference is their name are renamed**,
//!   not dropped and re-created (a renamed table keeps `old_pkey`; a foreign key may depend
//!   on it).
//! - **What cannot change in place is dropped and re-created**: a changed constraint or index,
//!   a policy whose command or kind changes, a view whose columns change (CREATE OR REPLACE
//!   only appends columns), an enum that loses or reorders labels (only when nothing uses it;
//!   otherwise it is refused), a column that becomes generated or whose expression changes.
//! - **Dependents are carried along**: Postgres refuses to drop or change the type of a column
//!   that a view, a policy or a generated column uses, and drops a column's indexes and
//!   constraints with it. Which columns a view reads comes from its query's parse tree (the
//!   `viewdeps` module), erring towards reading more. So a generated column reading a
//!   re-typed column is re-created, and a dropped, re-created or re-typed column forces the
//!   views reading it and its policies (and, when dropped or re-created, its indexes and
//!   constraints, and foreign keys pointing at it) to be dropped first and re-created after;
//!   views over the same table that do not read it stay. A re-created object gets its grants
//!   and comment again.
//! - **A renamed column's views stay**: Postgres rewrites them itself, keeping their column
//!   names, and the renamed live catalog models that text; a view whose query then differs
//!   from the desired one only in output names gets `ALTER VIEW … RENAME COLUMN`.
//! - **Unsupported objects are never created or dropped**: a difference in them is refused.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalog::*;
use crate::ident::quote_ident;

/// Tables and columns that exist in the desired catalog under a new name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renames {
    /// Renamed tables.
    pub tables: Vec<TableRename>,
    /// Renamed columns.
    pub columns: Vec<ColumnRename>,
}

/// `schema.from` is called `schema.to` in the desired catalog.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRename {
    /// Schema of the table (tables do not move between schemas).
    pub schema: String,
    /// Live name.
    pub from: String,
    /// Desired name.
    pub to: String,
}

/// Column `from` of `schema.table` is called `to` in the desired catalog.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ColumnRename {
    /// Schema of the table.
    pub schema: String,
    /// The table's *desired* name (after any table rename).
    pub table: String,
    /// Live column name.
    pub from: String,
    /// Desired column name.
    pub to: String,
}

impl Renames {
    /// No renames.
    pub fn none() -> Renames {
        Renames::default()
    }

    /// These renames and `other`'s (each once): what a plan merging two proposals plans with.
    pub fn merged_with(&self, other: &Renames) -> Renames {
        let mut all = self.clone();
        for t in &other.tables {
            if !all.tables.contains(t) {
                all.tables.push(t.clone());
            }
        }
        for c in &other.columns {
            if !all.columns.contains(c) {
                all.columns.push(c.clone());
            }
        }
        all
    }

    /// Adds a table rename.
    pub fn table(mut self, schema: &str, from: &str, to: &str) -> Renames {
        self.tables.push(TableRename {
            schema: schema.into(),
            from: from.into(),
            to: to.into(),
        });
        self
    }

    /// Adds a column rename (`table` is the table's desired name).
    pub fn column(mut self, schema: &str, table: &str, from: &str, to: &str) -> Renames {
        self.columns.push(ColumnRename {
            schema: schema.into(),
            table: table.into(),
            from: from.into(),
            to: to.into(),
        });
        self
    }

    /// The renames that undo these (for the reverse plan).
    pub fn inverse(&self) -> Renames {
        let old_table = |schema: &str, table: &str| {
            self.tables
                .iter()
                .find(|r| r.schema == schema && r.to == table)
                .map(|r| r.from.clone())
                .unwrap_or_else(|| table.to_owned())
        };
        Renames {
            tables: self
                .tables
                .iter()
                .map(|r| TableRename {
                    schema: r.schema.clone(),
                    from: r.to.clone(),
                    to: r.from.clone(),
                })
                .collect(),
            columns: self
                .columns
                .iter()
                .map(|r| ColumnRename {
                    schema: r.schema.clone(),
                    table: old_table(&r.schema, &r.table),
                    from: r.to.clone(),
                    to: r.from.clone(),
                })
                .collect(),
        }
    }

    /// True when there is nothing to rename.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.columns.is_empty()
    }

    /// These renames without those `live` already shows done: the old name is gone and the
    /// new one is there. A document keeps its `renamed_from` after the rename is applied, so
    /// planning it again must find the rename satisfied, not refuse it. Anything else (old
    /// name present, or both names missing) is left for [`diff`] to plan or refuse.
    pub fn pending_on(&self, live: &Catalog) -> Renames {
        let has_table = |schema: &str, table: &str| {
            live.schemas
                .get(schema)
                .is_some_and(|s| s.tables.contains_key(table))
        };
        let tables: Vec<TableRename> = self
            .tables
            .iter()
            .filter(|r| has_table(&r.schema, &r.from) || !has_table(&r.schema, &r.to))
            .cloned()
            .collect();
        let columns = self
            .columns
            .iter()
            .filter(|r| {
                // The table as live knows it: under its old name while its own rename is
                // still to come.
                let live_table = tables
                    .iter()
                    .find(|t| t.schema == r.schema && t.to == r.table)
                    .map_or(r.table.as_str(), |t| t.from.as_str());
                let table = live
                    .schemas
                    .get(&r.schema)
                    .and_then(|s| s.tables.get(live_table));
                let has = |c: &str| table.is_some_and(|t| t.columns.contains_key(c));
                has(&r.from) || !has(&r.to)
            })
            .cloned()
            .collect();
        Renames { tables, columns }
    }
}

/// Where `ALTER TYPE … ADD VALUE` puts a new label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelPosition {
    /// At the end.
    End,
    /// `BEFORE label`.
    Before(String),
    /// `AFTER label`.
    After(String),
}

/// The object a privilege is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrantObject {
    /// A table.
    Table {
        /// Schema.
        schema: String,
        /// Table.
        name: String,
    },
    /// A column of a table.
    Column {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// A view.
    View {
        /// Schema.
        schema: String,
        /// View.
        name: String,
    },
    /// A sequence.
    Sequence {
        /// Schema.
        schema: String,
        /// Sequence.
        name: String,
    },
}

/// The object a comment is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommentObject {
    /// `COMMENT ON SCHEMA`.
    Schema {
        /// Schema.
        name: String,
    },
    /// `COMMENT ON TABLE`.
    Table {
        /// Schema.
        schema: String,
        /// Table.
        name: String,
    },
    /// `COMMENT ON COLUMN`.
    Column {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// `COMMENT ON INDEX`.
    Index {
        /// Schema.
        schema: String,
        /// Table the index is on.
        table: String,
        /// Index.
        name: String,
    },
    /// `COMMENT ON CONSTRAINT … ON table`.
    Constraint {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Constraint.
        name: String,
    },
    /// `COMMENT ON VIEW`.
    View {
        /// Schema.
        schema: String,
        /// View.
        name: String,
    },
    /// `COMMENT ON SEQUENCE`.
    Sequence {
        /// Schema.
        schema: String,
        /// Sequence.
        name: String,
    },
    /// `COMMENT ON TYPE` (enums).
    Type {
        /// Schema.
        schema: String,
        /// Type.
        name: String,
    },
    /// `COMMENT ON POLICY … ON table`.
    Policy {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Policy.
        name: String,
    },
}

/// One change of one object. Each carries what the compiler needs to write its SQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// `CREATE EXTENSION`.
    CreateExtension {
        /// Extension.
        name: String,
        /// Schema for its objects.
        schema: String,
    },
    /// `DROP EXTENSION`.
    DropExtension {
        /// Extension.
        name: String,
    },
    /// `ALTER EXTENSION … SET SCHEMA`.
    SetExtensionSchema {
        /// Extension.
        name: String,
        /// New schema.
        schema: String,
    },
    /// `CREATE SCHEMA`.
    CreateSchema {
        /// Schema.
        name: String,
    },
    /// `DROP SCHEMA` (it must be empty by then).
    DropSchema {
        /// Schema.
        name: String,
    },
    /// `CREATE TYPE … AS ENUM`.
    CreateEnum {
        /// Schema.
        schema: String,
        /// Type.
        name: String,
        /// Labels in order.
        labels: Vec<String>,
    },
    /// `ALTER TYPE … ADD VALUE`.
    AddEnumLabel {
        /// Schema.
        schema: String,
        /// Type.
        name: String,
        /// New label.
        label: String,
        /// Where it goes.
        position: LabelPosition,
    },
    /// `DROP TYPE`.
    DropEnum {
        /// Schema.
        schema: String,
        /// Type.
        name: String,
        /// Dropped to be re-created with other labels (so dropped before the creates).
        recreated: bool,
    },
    /// `CREATE SEQUENCE`.
    CreateSequence {
        /// Schema.
        schema: String,
        /// Sequence.
        name: String,
        /// Options.
        options: SequenceOptions,
    },
    /// `ALTER SEQUENCE` options.
    AlterSequence {
        /// Schema.
        schema: String,
        /// Sequence.
        name: String,
        /// Live options.
        from: SequenceOptions,
        /// Desired options.
        to: SequenceOptions,
    },
    /// `ALTER SEQUENCE … RENAME TO`.
    RenameSequence {
        /// Schema.
        schema: String,
        /// Live name.
        from: String,
        /// Desired name.
        to: String,
    },
    /// `ALTER SEQUENCE … OWNED BY`.
    SetSequenceOwner {
        /// Schema.
        schema: String,
        /// Sequence.
        name: String,
        /// Owning column, or none.
        owner: Option<SequenceOwner>,
    },
    /// `DROP SEQUENCE`.
    DropSequence {
        /// Schema.
        schema: String,
        /// Sequence.
        name: String,
    },
    /// `CREATE TABLE` with its columns and its primary key, unique, check and exclusion
    /// constraints; foreign keys, indexes, RLS, policies, grants and comments are changes of
    /// their own.
    CreateTable {
        /// Schema.
        schema: String,
        /// Table.
        name: String,
        /// The desired table.
        table: Table,
    },
    /// `DROP TABLE`.
    DropTable {
        /// Schema.
        schema: String,
        /// Table.
        name: String,
        /// The live table (for grading and for the reverse plan).
        table: Table,
    },
    /// `ALTER TABLE … RENAME TO`.
    RenameTable {
        /// Schema.
        schema: String,
        /// Live name.
        from: String,
        /// Desired name.
        to: String,
    },
    /// `ALTER TABLE … SET LOGGED | UNLOGGED`.
    SetUnlogged {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Desired state.
        unlogged: bool,
    },
    /// `ALTER TABLE … ADD COLUMN`.
    AddColumn {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        name: String,
        /// The desired column.
        column: Column,
    },
    /// `ALTER TABLE … DROP COLUMN`.
    DropColumn {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        name: String,
        /// The live column.
        column: Column,
        /// Dropped to be added again as a generated column (it becomes generated, its
        /// expression changes, or a column it reads changes type).
        recreated: bool,
    },
    /// `ALTER TABLE … RENAME COLUMN`.
    RenameColumn {
        /// Schema.
        schema: String,
        /// Table (its desired name).
        table: String,
        /// Live name.
        from: String,
        /// Desired name.
        to: String,
    },
    /// `ALTER COLUMN … TYPE … [COLLATE …]`.
    AlterColumnType {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Live type.
        from: String,
        /// Desired type.
        to: String,
        /// Live collation.
        collation_from: Option<String>,
        /// Desired collation.
        collation_to: Option<String>,
    },
    /// `ALTER COLUMN … SET DEFAULT`.
    SetDefault {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Default expression.
        expression: String,
    },
    /// `ALTER COLUMN … DROP DEFAULT`.
    DropDefault {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// `ALTER COLUMN … SET NOT NULL`.
    SetNotNull {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// False when something later in the same transaction needs the column NOT NULL
        /// (an identity being added), so the online form (check, validate, set) cannot be
        /// used.
        online_allowed: bool,
    },
    /// `ALTER COLUMN … DROP NOT NULL`.
    DropNotNull {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// `ALTER COLUMN … ADD GENERATED … AS IDENTITY`.
    AddIdentity {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Desired identity.
        identity: Identity,
    },
    /// `ALTER COLUMN … SET GENERATED … / SET <sequence option>`.
    AlterIdentity {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Live identity.
        from: Identity,
        /// Desired identity.
        to: Identity,
    },
    /// `ALTER COLUMN … DROP IDENTITY`.
    DropIdentity {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// `ALTER COLUMN … DROP EXPRESSION`: a generated column becomes a plain one, keeping its
    /// values.
    DropExpression {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// `ALTER TABLE … ADD CONSTRAINT`.
    AddConstraint {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Constraint.
        name: String,
        /// The desired constraint.
        constraint: Constraint,
    },
    /// `ALTER TABLE … DROP CONSTRAINT`.
    DropConstraint {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Constraint.
        name: String,
        /// The live constraint.
        constraint: Constraint,
    },
    /// `ALTER TABLE … RENAME CONSTRAINT` (its index is renamed with it).
    RenameConstraint {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Live name.
        from: String,
        /// Desired name.
        to: String,
    },
    /// `ALTER TABLE … VALIDATE CONSTRAINT`.
    ValidateConstraint {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Constraint.
        name: String,
        /// The constraint.
        constraint: Constraint,
    },
    /// `ALTER TABLE … ALTER CONSTRAINT` (foreign key deferrability).
    AlterConstraint {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Constraint.
        name: String,
        /// `DEFERRABLE`.
        deferrable: bool,
        /// `INITIALLY DEFERRED`.
        initially_deferred: bool,
    },
    /// `CREATE INDEX`.
    CreateIndex {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Index.
        name: String,
        /// The desired index.
        index: Index,
        /// The index must exist before the transaction commits (a foreign key added in it
        /// relies on it), so it cannot be built concurrently.
        in_transaction: bool,
    },
    /// `DROP INDEX`.
    DropIndex {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Index.
        name: String,
        /// The live index.
        index: Index,
        /// The index must be gone inside the transaction (a column it uses is dropped there),
        /// so it cannot be dropped concurrently.
        in_transaction: bool,
    },
    /// `ALTER INDEX … RENAME TO`.
    RenameIndex {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Live name.
        from: String,
        /// Desired name.
        to: String,
    },
    /// `CREATE [OR REPLACE] VIEW`.
    CreateView {
        /// Schema.
        schema: String,
        /// View.
        name: String,
        /// The desired view.
        view: View,
        /// `OR REPLACE`: the view exists and the new query only appends columns.
        replace: bool,
    },
    /// `ALTER VIEW … RENAME COLUMN`: the view's query is the same but for an output name.
    RenameViewColumn {
        /// Schema.
        schema: String,
        /// View.
        view: String,
        /// Live column name.
        from: String,
        /// Desired column name.
        to: String,
    },
    /// `DROP VIEW`.
    DropView {
        /// Schema.
        schema: String,
        /// View.
        name: String,
    },
    /// `ALTER TABLE … ENABLE | DISABLE ROW LEVEL SECURITY`.
    SetRowSecurity {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Desired state.
        enabled: bool,
    },
    /// `ALTER TABLE … [NO] FORCE ROW LEVEL SECURITY`.
    SetForceRowSecurity {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Desired state.
        forced: bool,
    },
    /// `CREATE POLICY`.
    CreatePolicy {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Policy.
        name: String,
        /// The desired policy.
        policy: Policy,
    },
    /// `ALTER POLICY`: only the parts that change (roles, USING, WITH CHECK).
    AlterPolicy {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Policy.
        name: String,
        /// New roles.
        roles: Option<Vec<String>>,
        /// New USING expression.
        using: Option<String>,
        /// New WITH CHECK expression.
        with_check: Option<String>,
    },
    /// `DROP POLICY`.
    DropPolicy {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Policy.
        name: String,
    },
    /// `GRANT`.
    Grant {
        /// The object.
        object: GrantObject,
        /// Role, or `public`.
        grantee: String,
        /// Privileges (lower case, sorted).
        privileges: Vec<String>,
        /// `WITH GRANT OPTION`.
        with_grant_option: bool,
    },
    /// `REVOKE`.
    Revoke {
        /// The object.
        object: GrantObject,
        /// Role, or `public`.
        grantee: String,
        /// Privileges (lower case, sorted).
        privileges: Vec<String>,
        /// `REVOKE GRANT OPTION FOR`: the privilege stays, the right to pass it on goes.
        grant_option_only: bool,
    },
    /// `COMMENT ON … IS …`.
    Comment {
        /// The object.
        object: CommentObject,
        /// The comment, or none to remove it.
        comment: Option<String>,
    },
    /// A change that cannot be planned safely; planning fails with this reason.
    Refuse {
        /// The object.
        object: String,
        /// Why, and what to do instead.
        reason: String,
    },
}

/// The changes that take `live` to `desired`. `diff(x, x, &Renames::none())` is empty.
pub fn diff(live: &Catalog, desired: &Catalog, renames: &Renames) -> Vec<Change> {
    let renames = &renames.pending_on(live);
    let mut out = Vec::new();
    let (renamed, unmodelled_views) = match apply_renames(live, desired, renames, &mut out) {
        Ok(c) => c,
        Err(refusals) => return refusals,
    };
    let mut d = Differ {
        live: &renamed,
        desired,
        out,
        unmodelled_views,
        fresh: Fresh::default(),
        disturbed_columns: BTreeMap::new(),
        disturbed_tables: BTreeSet::new(),
        dropped_tables: BTreeSet::new(),
        new_pks: BTreeSet::new(),
        fk_targets: Vec::new(),
        seq_pairs: BTreeMap::new(),
        table_renames: renames
            .tables
            .iter()
            .map(|r| (r.schema.clone(), r.from.clone(), r.to.clone()))
            .collect(),
    };
    d.run();
    d.out
}

/// How a column is disturbed by the plan, which decides what must move with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disturb {
    /// Dropped (or dropped and added back): its indexes, constraints, policies and views go.
    Dropped,
    /// Type or collation changes: Postgres rebuilds its indexes and constraints itself, but
    /// refuses while a view or a policy uses it.
    Retyped,
}

/// Objects created by the plan (new or re-created): their grants and comments are set from
/// nothing.
#[derive(Default)]
struct Fresh {
    schemas: BTreeSet<String>,
    tables: BTreeSet<(String, String)>,
    columns: BTreeSet<(String, String, String)>,
    constraints: BTreeSet<(String, String, String)>,
    indexes: BTreeSet<(String, String, String)>,
    policies: BTreeSet<(String, String, String)>,
    views: BTreeSet<(String, String)>,
    sequences: BTreeSet<(String, String)>,
    enums: BTreeSet<(String, String)>,
}

struct Differ<'a> {
    live: &'a Catalog,
    desired: &'a Catalog,
    out: Vec<Change>,
    /// Views reading a renamed column whose text after the rename could not be modelled:
    /// they are re-created.
    unmodelled_views: BTreeSet<(String, String)>,
    fresh: Fresh,
    disturbed_columns: BTreeMap<(String, String, String), Disturb>,
    /// Tables that are dropped or have a dropped, re-created or re-typed column: views over
    /// them must be re-created.
    disturbed_tables: BTreeSet<(String, String)>,
    dropped_tables: BTreeSet<(String, String)>,
    /// `(schema, table, column)` covered by a primary key the plan adds (which sets NOT NULL
    /// itself).
    new_pks: BTreeSet<(String, String, String)>,
    /// Referenced `(schema, table, columns)` of foreign keys the plan adds.
    fk_targets: Vec<(String, String, Vec<String>)>,
    /// `(schema, desired name) → live name` of sequences renamed by pairing.
    seq_pairs: BTreeMap<(String, String), String>,
    /// `(schema, from, to)` of the tables renamed by the caller.
    table_renames: Vec<(String, String, String)>,
}

impl Differ<'_> {
    fn run(&mut self) {
        self.pair_sequences();
        self.extensions();
        self.schemas();
        self.enums();
        self.tables_and_columns();
        self.table_children();
        self.sequences();
        self.views();
        self.grants_and_comments();
        self.unsupported();
    }

    fn live_tables(&self, schema: &str) -> &BTreeMap<String, Table> {
        static EMPTY: BTreeMap<String, Table> = BTreeMap::new();
        self.live
            .schemas
            .get(schema)
            .map(|s| &s.tables)
            .unwrap_or(&EMPTY)
    }

    fn extensions(&mut self) {
        for name in self.live.extensions.keys() {
            if !self.desired.extensions.contains_key(name) {
                self.out.push(Change::DropExtension { name: name.clone() });
            }
        }
        for (name, ext) in &self.desired.extensions {
            match self.live.extensions.get(name) {
                None => self.out.push(Change::CreateExtension {
                    name: name.clone(),
                    schema: ext.schema.clone(),
                }),
                Some(l) if l.schema != ext.schema => self.out.push(Change::SetExtensionSchema {
                    name: name.clone(),
                    schema: ext.schema.clone(),
                }),
                Some(_) => {}
            }
        }
    }

    fn schemas(&mut self) {
        for name in self.live.schemas.keys() {
            if !self.desired.schemas.contains_key(name) {
                self.out.push(Change::DropSchema { name: name.clone() });
            }
        }
        for name in self.desired.schemas.keys() {
            if !self.live.schemas.contains_key(name) {
                self.out.push(Change::CreateSchema { name: name.clone() });
                self.fresh.schemas.insert(name.clone());
            }
        }
    }

    fn enums(&mut self) {
        let empty = BTreeMap::new();
        for (schema_name, schema) in &self.live.schemas {
            let desired = self
                .desired
                .schemas
                .get(schema_name)
                .map(|s| &s.enums)
                .unwrap_or(&empty);
            for name in schema.enums.keys() {
                if !desired.contains_key(name) {
                    self.out.push(Change::DropEnum {
                        schema: schema_name.clone(),
                        name: name.clone(),
                        recreated: false,
                    });
                }
            }
        }
        for (schema_name, schema) in &self.desired.schemas {
            let live = self
                .live
                .schemas
                .get(schema_name)
                .map(|s| &s.enums)
                .unwrap_or(&empty);
            for (name, wanted) in &schema.enums {
                let Some(current) = live.get(name) else {
                    self.create_enum(schema_name, name, wanted);
                    continue;
                };
                if current.labels == wanted.labels {
                    continue;
                }
                match label_additions(&current.labels, &wanted.labels) {
                    Some(adds) => {
                        for (label, position) in adds {
                            self.out.push(Change::AddEnumLabel {
                                schema: schema_name.clone(),
                                name: name.clone(),
                                label,
                                position,
                            });
                        }
                    }
                    None => {
                        if let Some(user) = enum_user(self.live, schema_name, name) {
                            self.out.push(Change::Refuse {
                                object: format!("{schema_name}.{name}"),
                                reason: format!(
                                    "labels would be removed or reordered ({:?} → {:?}), which \
                                     Postgres cannot do in place, and the type is used by \
                                     {user}; migrate that data to a new type instead",
                                    current.labels, wanted.labels
                                ),
                            });
                        } else {
                            self.out.push(Change::DropEnum {
                                schema: schema_name.clone(),
                                name: name.clone(),
                                recreated: true,
                            });
                            self.create_enum(schema_name, name, wanted);
                        }
                    }
                }
            }
        }
    }

    fn create_enum(&mut self, schema: &str, name: &str, wanted: &EnumType) {
        self.out.push(Change::CreateEnum {
            schema: schema.into(),
            name: name.into(),
            labels: wanted.labels.clone(),
        });
        self.fresh.enums.insert((schema.into(), name.into()));
    }

    /// Tables (create, drop) and the columns of tables in both catalogs. Records which
    /// columns and tables are disturbed, which decides what else must move.
    fn tables_and_columns(&mut self) {
        let mut dropped: Vec<(String, String, Table)> = Vec::new();
        for (schema_name, schema) in &self.live.schemas {
            for (name, table) in &schema.tables {
                let kept = self
                    .desired
                    .schemas
                    .get(schema_name)
                    .is_some_and(|s| s.tables.contains_key(name));
                if !kept {
                    let key = (schema_name.clone(), name.clone());
                    self.dropped_tables.insert(key.clone());
                    self.disturbed_tables.insert(key);
                    dropped.push((schema_name.clone(), name.clone(), table.clone()));
                }
            }
        }
        self.drop_tables(dropped);
        for (schema_name, schema) in &self.desired.schemas {
            for (name, wanted) in &schema.tables {
                let key = (schema_name.clone(), name.clone());
                match self.live_tables(schema_name).get(name) {
                    None => {
                        self.fresh.tables.insert(key);
                        for col in wanted.columns.keys() {
                            self.fresh.columns.insert((
                                schema_name.clone(),
                                name.clone(),
                                col.clone(),
                            ));
                        }
                        self.out.push(Change::CreateTable {
                            schema: schema_name.clone(),
                            name: name.clone(),
                            table: wanted.clone(),
                        });
                    }
                    Some(current) => {
                        let current = current.clone();
                        self.table_columns(schema_name, name, &current, wanted);
                    }
                }
            }
        }
    }

    /// Drops tables so that a table referenced by another dropped table's foreign key goes
    /// after it; foreign keys forming a cycle among dropped tables are dropped first.
    fn drop_tables(&mut self, mut remaining: Vec<(String, String, Table)>) {
        let references = |t: &Table, s: &str, n: &str| {
            t.constraints.values().any(|c| {
                matches!(&c.definition, ConstraintDef::ForeignKey { references, .. }
                    if references.schema == s && references.table == n)
            })
        };
        while !remaining.is_empty() {
            let referenced = |s: &str, n: &str, rest: &[(String, String, Table)]| {
                rest.iter()
                    .any(|(os, on, ot)| (os != s || on != n) && references(ot, s, n))
            };
            let (ready, rest): (Vec<_>, Vec<_>) = remaining
                .iter()
                .cloned()
                .partition(|(s, n, _)| !referenced(s, n, &remaining));
            if ready.is_empty() {
                // A cycle: drop the foreign keys between the remaining tables, then the tables.
                for (s, n, t) in &rest {
                    for (cname, c) in &t.constraints {
                        if let ConstraintDef::ForeignKey { references: r, .. } = &c.definition {
                            let inside = rest.iter().any(|(os, on, _)| {
                                *os == r.schema && *on == r.table && (os != s || on != n)
                            });
                            if inside {
                                self.out.push(Change::DropConstraint {
                                    schema: s.clone(),
                                    table: n.clone(),
                                    name: cname.clone(),
                                    constraint: c.clone(),
                                });
                            }
                        }
                    }
                }
                for (s, n, t) in rest {
                    self.out.push(Change::DropTable {
                        schema: s,
                        name: n,
                        table: t,
                    });
                }
                return;
            }
            for (s, n, t) in ready {
                self.out.push(Change::DropTable {
                    schema: s,
                    name: n,
                    table: t,
                });
            }
            remaining = rest;
        }
    }

    fn table_columns(&mut self, schema: &str, table: &str, live: &Table, wanted: &Table) {
        let s = || schema.to_owned();
        let t = || table.to_owned();
        if live.unlogged != wanted.unlogged {
            self.out.push(Change::SetUnlogged {
                schema: s(),
                table: t(),
                unlogged: wanted.unlogged,
            });
        }
        // Columns covered by a primary key this plan adds: ADD PRIMARY KEY sets NOT NULL.
        for (name, c) in &wanted.constraints {
            if let ConstraintDef::PrimaryKey { columns } = &c.definition {
                if !live.constraints.contains_key(name) {
                    for col in columns {
                        self.new_pks.insert((s(), t(), col.clone()));
                    }
                }
            }
        }
        for (name, column) in &live.columns {
            if !wanted.columns.contains_key(name) {
                self.disturb(schema, table, name, Disturb::Dropped);
                self.out.push(Change::DropColumn {
                    schema: s(),
                    table: t(),
                    name: name.clone(),
                    column: column.clone(),
                    recreated: false,
                });
            }
        }
        // Postgres refuses to change the type of a column a generated column reads: such a
        // generated column is dropped and added back after the type change (it is computed
        // from the other columns, so no value is lost).
        let retyped: Vec<&String> = wanted
            .columns
            .iter()
            .filter(|(n, w)| {
                live.columns
                    .get(*n)
                    .is_some_and(|l| l.data_type != w.data_type || l.collation != w.collation)
            })
            .map(|(n, _)| n)
            .collect();
        // In the table's order, so that added columns land where the document put them.
        for (name, column) in wanted.columns_in_order() {
            match live.columns.get(name) {
                None => self.add_column(schema, table, name, column),
                Some(current) => {
                    let reads_retyped = current
                        .generated
                        .as_deref()
                        .is_some_and(|g| retyped.iter().any(|r| mentions_ident(g, r)));
                    self.column(schema, table, name, current, column, reads_retyped)
                }
            }
        }
    }

    fn add_column(&mut self, schema: &str, table: &str, name: &str, column: &Column) {
        self.fresh
            .columns
            .insert((schema.into(), table.into(), name.into()));
        self.out.push(Change::AddColumn {
            schema: schema.into(),
            table: table.into(),
            name: name.into(),
            column: column.clone(),
        });
    }

    fn disturb(&mut self, schema: &str, table: &str, column: &str, how: Disturb) {
        let key = (schema.to_owned(), table.to_owned(), column.to_owned());
        let entry = self.disturbed_columns.entry(key).or_insert(how);
        if how == Disturb::Dropped {
            *entry = Disturb::Dropped;
        }
        self.disturbed_tables
            .insert((schema.to_owned(), table.to_owned()));
    }

    /// `reads_retyped`: the live column is generated from a column whose type changes.
    fn column(
        &mut self,
        schema: &str,
        table: &str,
        name: &str,
        live: &Column,
        wanted: &Column,
        reads_retyped: bool,
    ) {
        let s = || schema.to_owned();
        let t = || table.to_owned();
        let c = || name.to_owned();
        if live.generated != wanted.generated || reads_retyped {
            if wanted.generated.is_some() {
                // Postgres 15 cannot make a column generated or change the expression in
                // place, nor change the type of a column a generated one reads: drop it and
                // add it back (after any type change, see `compile`).
                self.disturb(schema, table, name, Disturb::Dropped);
                self.out.push(Change::DropColumn {
                    schema: s(),
                    table: t(),
                    name: c(),
                    column: live.clone(),
                    recreated: true,
                });
                self.add_column(schema, table, name, wanted);
                return;
            }
            self.out.push(Change::DropExpression {
                schema: s(),
                table: t(),
                column: c(),
            });
        }
        let retyped = live.data_type != wanted.data_type || live.collation != wanted.collation;
        if retyped {
            self.disturb(schema, table, name, Disturb::Retyped);
            self.out.push(Change::AlterColumnType {
                schema: s(),
                table: t(),
                column: c(),
                from: live.data_type.clone(),
                to: wanted.data_type.clone(),
                collation_from: live.collation.clone(),
                collation_to: wanted.collation.clone(),
            });
        }
        // A type change converts the default too, and Postgres then prints it with the old
        // type's cast: drop it before and set the desired text after, so the result is
        // exactly the desired default.
        let live_default = live
            .default
            .as_deref()
            .map(|d| self.after_sequence_renames(d));
        if live_default != wanted.default || (retyped && live.default.is_some()) {
            // SET DEFAULT replaces a default: drop only when there is none to set, or when
            // the type change must not see the old one.
            if live.default.is_some() && (wanted.default.is_none() || retyped) {
                self.out.push(Change::DropDefault {
                    schema: s(),
                    table: t(),
                    column: c(),
                });
            }
            if let Some(expression) = &wanted.default {
                self.out.push(Change::SetDefault {
                    schema: s(),
                    table: t(),
                    column: c(),
                    expression: expression.clone(),
                });
            }
        }
        let identity_added = live.identity.is_none() && wanted.identity.is_some();
        if live.not_null != wanted.not_null {
            if wanted.not_null {
                let by_pk = self.new_pks.contains(&(s(), t(), c()));
                if !by_pk {
                    self.out.push(Change::SetNotNull {
                        schema: s(),
                        table: t(),
                        column: c(),
                        online_allowed: !identity_added,
                    });
                }
            } else {
                self.out.push(Change::DropNotNull {
                    schema: s(),
                    table: t(),
                    column: c(),
                });
            }
        }
        match (&live.identity, &wanted.identity) {
            (None, Some(identity)) => self.out.push(Change::AddIdentity {
                schema: s(),
                table: t(),
                column: c(),
                identity: identity.clone(),
            }),
            (Some(_), None) => self.out.push(Change::DropIdentity {
                schema: s(),
                table: t(),
                column: c(),
            }),
            (Some(from), Some(to)) if from != to => self.out.push(Change::AlterIdentity {
                schema: s(),
                table: t(),
                column: c(),
                from: from.clone(),
                to: to.clone(),
            }),
            _ => {}
        }
    }

    /// Constraints, indexes, RLS and policies of every desired table, now that disturbed
    /// columns and tables are known.
    fn table_children(&mut self) {
        // Referenced columns of foreign keys the plan adds: a unique index over exactly them
        // must be built inside the transaction.
        for (schema_name, schema) in &self.desired.schemas {
            for (table_name, table) in &schema.tables {
                for (name, c) in &table.constraints {
                    if let ConstraintDef::ForeignKey { references, .. } = &c.definition {
                        let exists = self
                            .live_tables(schema_name)
                            .get(table_name)
                            .and_then(|t| t.constraints.get(name))
                            == Some(c);
                        if !exists {
                            self.fk_targets.push((
                                references.schema.clone(),
                                references.table.clone(),
                                references.columns.clone(),
                            ));
                        }
                    }
                }
            }
        }
        let empty = Table::default();
        for (schema_name, schema) in &self.desired.schemas {
            for (table_name, wanted) in &schema.tables {
                let live = self
                    .live_tables(schema_name)
                    .get(table_name)
                    .cloned()
                    .unwrap_or_else(|| empty.clone());
                let is_new = self
                    .fresh
                    .tables
                    .contains(&(schema_name.clone(), table_name.clone()));
                self.constraints(schema_name, table_name, &live, wanted, is_new);
                self.indexes(schema_name, table_name, &live, wanted);
                self.rls(schema_name, table_name, &live, wanted);
            }
        }
        // Foreign keys of kept tables whose target table is dropped: they must go first
        // (desired cannot hold them, so `constraints` dropped them already).
    }

    /// True when a live constraint must be dropped and added again because of the columns
    /// it uses (or, for a foreign key, the columns it points at).
    fn constraint_forced(&self, schema: &str, table: &str, c: &Constraint) -> bool {
        let dropped = |s: &str, t: &str, col: &str| {
            self.disturbed_columns
                .get(&(s.to_owned(), t.to_owned(), col.to_owned()))
                == Some(&Disturb::Dropped)
        };
        match &c.definition {
            ConstraintDef::PrimaryKey { columns } | ConstraintDef::Unique { columns, .. } => {
                columns.iter().any(|col| dropped(schema, table, col))
            }
            ConstraintDef::ForeignKey {
                columns,
                references,
                ..
            } => {
                columns.iter().any(|col| dropped(schema, table, col))
                    || references
                        .columns
                        .iter()
                        .any(|col| dropped(&references.schema, &references.table, col))
                    || self
                        .dropped_tables
                        .contains(&(references.schema.clone(), references.table.clone()))
            }
            ConstraintDef::Check { expression, .. } => {
                self.mentions_dropped(schema, table, expression)
            }
            ConstraintDef::Exclusion { definition } => {
                self.mentions_dropped(schema, table, definition)
            }
        }
    }

    fn mentions_dropped(&self, schema: &str, table: &str, text: &str) -> bool {
        self.disturbed_columns.iter().any(|((s, t, c), how)| {
            *how == Disturb::Dropped && s == schema && t == table && mentions_ident(text, c)
        })
    }

    fn mentions_disturbed(&self, schema: &str, table: &str, text: &str) -> bool {
        self.disturbed_columns
            .keys()
            .any(|(s, t, c)| s == schema && t == table && mentions_ident(text, c))
    }

    fn constraints(&mut self, schema: &str, table: &str, live: &Table, wanted: &Table, new: bool) {
        let s = || schema.to_owned();
        let t = || table.to_owned();
        let mut live_only: Vec<(&String, &Constraint)> = live
            .constraints
            .iter()
            .filter(|(n, _)| !wanted.constraints.contains_key(*n))
            .collect();
        let mut desired_only: Vec<(&String, &Constraint)> = wanted
            .constraints
            .iter()
            .filter(|(n, _)| !live.constraints.contains_key(*n))
            .collect();
        // Same constraint under another name: rename it.
        let mut renamed: Vec<(String, String)> = Vec::new();
        desired_only.retain(|(dname, dc)| {
            let found = live_only.iter().position(|(_, lc)| {
                same_constraint(lc, dc) && !self.constraint_forced(schema, table, lc)
            });
            match found {
                Some(i) => {
                    let (lname, _) = live_only.remove(i);
                    renamed.push((lname.clone(), (*dname).clone()));
                    false
                }
                None => true,
            }
        });
        for (from, to) in &renamed {
            self.out.push(Change::RenameConstraint {
                schema: s(),
                table: t(),
                from: from.clone(),
                to: to.clone(),
            });
            if let (Some(lc), Some(dc)) = (live.constraints.get(from), wanted.constraints.get(to)) {
                if !lc.validated && dc.validated {
                    self.out.push(Change::ValidateConstraint {
                        schema: s(),
                        table: t(),
                        name: to.clone(),
                        constraint: dc.clone(),
                    });
                }
            }
        }
        for (name, c) in &live_only {
            self.out.push(Change::DropConstraint {
                schema: s(),
                table: t(),
                name: (*name).clone(),
                constraint: (*c).clone(),
            });
        }
        for (name, c) in &desired_only {
            self.add_constraint(schema, table, name, c, new);
        }
        for (name, lc) in &live.constraints {
            let Some(dc) = wanted.constraints.get(name) else {
                continue;
            };
            let forced = self.constraint_forced(schema, table, lc);
            let only_deferral = lc.definition == dc.definition
                && matches!(dc.definition, ConstraintDef::ForeignKey { .. })
                && (lc.deferrable, lc.initially_deferred) != (dc.deferrable, dc.initially_deferred);
            let same_shape = lc.definition == dc.definition
                && lc.deferrable == dc.deferrable
                && lc.initially_deferred == dc.initially_deferred;
            // Postgres cannot un-validate a constraint.
            let unvalidate = lc.validated && !dc.validated;
            if forced || unvalidate || !(same_shape || only_deferral) {
                self.out.push(Change::DropConstraint {
                    schema: s(),
                    table: t(),
                    name: name.clone(),
                    constraint: lc.clone(),
                });
                self.add_constraint(schema, table, name, dc, false);
                continue;
            }
            if only_deferral {
                self.out.push(Change::AlterConstraint {
                    schema: s(),
                    table: t(),
                    name: name.clone(),
                    deferrable: dc.deferrable,
                    initially_deferred: dc.initially_deferred,
                });
            }
            if !lc.validated && dc.validated {
                self.out.push(Change::ValidateConstraint {
                    schema: s(),
                    table: t(),
                    name: name.clone(),
                    constraint: dc.clone(),
                });
            }
        }
        // Constraints of a new table are created with it, except foreign keys and those
        // added NOT VALID: `add_constraint` already handled `new` (all desired-only).
    }

    fn add_constraint(&mut self, schema: &str, table: &str, name: &str, c: &Constraint, new: bool) {
        self.fresh
            .constraints
            .insert((schema.into(), table.into(), name.into()));
        let inline = new
            && self
                .desired
                .schemas
                .get(schema)
                .and_then(|s| s.tables.get(table))
                .is_some_and(|t| inline_in_create(t).contains(name));
        if inline {
            return;
        }
        self.out.push(Change::AddConstraint {
            schema: schema.into(),
            table: table.into(),
            name: name.into(),
            constraint: c.clone(),
        });
    }

    fn index_forced(&self, schema: &str, table: &str, index: &Index) -> bool {
        let dropped = |col: &str| {
            self.disturbed_columns
                .get(&(schema.to_owned(), table.to_owned(), col.to_owned()))
                == Some(&Disturb::Dropped)
        };
        index.keys.iter().any(|k| {
            k.column.as_deref().is_some_and(dropped)
                || k.expression
                    .as_deref()
                    .is_some_and(|e| self.mentions_dropped(schema, table, e))
        }) || index.include.iter().any(|c| dropped(c))
            || index
                .predicate
                .as_deref()
                .is_some_and(|p| self.mentions_dropped(schema, table, p))
    }

    fn indexes(&mut self, schema: &str, table: &str, live: &Table, wanted: &Table) {
        let s = || schema.to_owned();
        let t = || table.to_owned();
        let shape = |i: &Index| Index {
            comment: None,
            ..i.clone()
        };
        let mut live_only: Vec<(&String, &Index)> = live
            .indexes
            .iter()
            .filter(|(n, _)| !wanted.indexes.contains_key(*n))
            .collect();
        let mut desired_only: Vec<(&String, &Index)> = wanted
            .indexes
            .iter()
            .filter(|(n, _)| !live.indexes.contains_key(*n))
            .collect();
        let mut renames = Vec::new();
        desired_only.retain(|(dname, di)| {
            let found = live_only.iter().position(|(_, li)| {
                shape(li) == shape(di) && !self.index_forced(schema, table, li)
            });
            match found {
                Some(i) => {
                    let (lname, _) = live_only.remove(i);
                    renames.push((lname.clone(), (*dname).clone()));
                    false
                }
                None => true,
            }
        });
        for (from, to) in renames {
            self.out.push(Change::RenameIndex {
                schema: s(),
                table: t(),
                from,
                to,
            });
        }
        let mut drops: Vec<(String, Index)> = live_only
            .iter()
            .map(|(n, i)| ((*n).clone(), (*i).clone()))
            .collect();
        let mut creates: Vec<(String, Index)> = desired_only
            .iter()
            .map(|(n, i)| ((*n).clone(), (*i).clone()))
            .collect();
        for (name, li) in &live.indexes {
            if let Some(di) = wanted.indexes.get(name) {
                if shape(li) != shape(di) || self.index_forced(schema, table, li) {
                    drops.push((name.clone(), li.clone()));
                    creates.push((name.clone(), di.clone()));
                }
            }
        }
        for (name, index) in drops {
            let in_transaction = self.index_forced(schema, table, &index);
            self.out.push(Change::DropIndex {
                schema: s(),
                table: t(),
                name,
                index,
                in_transaction,
            });
        }
        for (name, index) in creates {
            self.fresh.indexes.insert((s(), t(), name.clone()));
            let key_columns: Vec<String> = index
                .keys
                .iter()
                .map(|k| k.column.clone().unwrap_or_default())
                .collect();
            let in_transaction = index.unique
                && index.predicate.is_none()
                && self
                    .fk_targets
                    .iter()
                    .any(|(fs, ft, fc)| fs == schema && ft == table && *fc == key_columns);
            self.out.push(Change::CreateIndex {
                schema: s(),
                table: t(),
                name,
                index,
                in_transaction,
            });
        }
    }

    fn policy_forced(&self, schema: &str, table: &str, p: &Policy) -> bool {
        let texts = [p.using.as_deref(), p.with_check.as_deref()];
        texts.into_iter().flatten().any(|text| {
            self.mentions_disturbed(schema, table, text)
                || self
                    .disturbed_tables
                    .iter()
                    .any(|(s, t)| (s != schema || t != table) && mentions_ident(text, t))
        })
    }

    fn rls(&mut self, schema: &str, table: &str, live: &Table, wanted: &Table) {
        let s = || schema.to_owned();
        let t = || table.to_owned();
        if live.rls.enabled != wanted.rls.enabled {
            self.out.push(Change::SetRowSecurity {
                schema: s(),
                table: t(),
                enabled: wanted.rls.enabled,
            });
        }
        if live.rls.forced != wanted.rls.forced {
            self.out.push(Change::SetForceRowSecurity {
                schema: s(),
                table: t(),
                forced: wanted.rls.forced,
            });
        }
        for (name, lp) in &live.rls.policies {
            let recreate = match wanted.rls.policies.get(name) {
                None => true,
                Some(dp) => {
                    lp.command != dp.command
                        || lp.permissive != dp.permissive
                        // ALTER POLICY can change an expression but not remove it.
                        || (lp.using.is_some() && dp.using.is_none())
                        || (lp.with_check.is_some() && dp.with_check.is_none())
                        || self.policy_forced(schema, table, lp)
                }
            };
            if recreate {
                self.out.push(Change::DropPolicy {
                    schema: s(),
                    table: t(),
                    name: name.clone(),
                });
            }
        }
        for (name, dp) in &wanted.rls.policies {
            let create = match live.rls.policies.get(name) {
                None => true,
                Some(lp) => {
                    lp.command != dp.command
                        || lp.permissive != dp.permissive
                        || (lp.using.is_some() && dp.using.is_none())
                        || (lp.with_check.is_some() && dp.with_check.is_none())
                        || self.policy_forced(schema, table, lp)
                }
            };
            if create {
                self.fresh.policies.insert((s(), t(), name.clone()));
                self.out.push(Change::CreatePolicy {
                    schema: s(),
                    table: t(),
                    name: name.clone(),
                    policy: dp.clone(),
                });
                continue;
            }
            let Some(lp) = live.rls.policies.get(name) else {
                continue;
            };
            let roles = (lp.roles != dp.roles).then(|| dp.roles.clone());
            let using = if lp.using != dp.using {
                dp.using.clone()
            } else {
                None
            };
            let with_check = if lp.with_check != dp.with_check {
                dp.with_check.clone()
            } else {
                None
            };
            if roles.is_some() || using.is_some() || with_check.is_some() {
                self.out.push(Change::AlterPolicy {
                    schema: s(),
                    table: t(),
                    name: name.clone(),
                    roles,
                    using,
                    with_check,
                });
            }
        }
    }

    /// Pairs an owned live sequence with a desired one of another name and the same options
    /// and owner (a renamed table's serial): it is renamed, so its current value survives.
    fn pair_sequences(&mut self) {
        for (schema_name, schema) in &self.desired.schemas {
            let Some(live) = self.live.schemas.get(schema_name).map(|s| &s.sequences) else {
                continue;
            };
            let mut live_only: Vec<(&String, &Sequence)> = live
                .iter()
                .filter(|(n, _)| !schema.sequences.contains_key(*n))
                .collect();
            for (dname, ds) in &schema.sequences {
                if live.contains_key(dname) {
                    continue;
                }
                let found = live_only.iter().position(|(_, ls)| {
                    ls.options == ds.options && ls.owned_by.is_some() && ls.owned_by == ds.owned_by
                });
                if let Some(i) = found {
                    let (lname, _) = live_only.remove(i);
                    self.seq_pairs
                        .insert((schema_name.clone(), dname.clone()), lname.clone());
                    self.out.push(Change::RenameSequence {
                        schema: schema_name.clone(),
                        from: lname.clone(),
                        to: dname.clone(),
                    });
                }
            }
        }
    }

    /// A live default as Postgres prints it once the paired sequences are renamed
    /// (`nextval('public.old_seq'::regclass)` follows the sequence's OID). Only plain
    /// lower-case names are rewritten; anything else at worst gets a redundant SET DEFAULT.
    fn after_sequence_renames(&self, text: &str) -> String {
        let plain = |n: &str| {
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let mut out = text.to_owned();
        for ((schema, to), from) in &self.seq_pairs {
            if plain(schema) && plain(to) && plain(from) {
                out = out.replace(
                    &format!("'{schema}.{from}'::regclass"),
                    &format!("'{schema}.{to}'::regclass"),
                );
            }
        }
        out
    }

    fn sequences(&mut self) {
        let empty = BTreeMap::new();
        let schemas: BTreeSet<&String> = self
            .live
            .schemas
            .keys()
            .chain(self.desired.schemas.keys())
            .collect();
        for schema_name in schemas {
            let live = self
                .live
                .schemas
                .get(schema_name)
                .map(|s| &s.sequences)
                .unwrap_or(&empty);
            let wanted = self
                .desired
                .schemas
                .get(schema_name)
                .map(|s| &s.sequences)
                .unwrap_or(&empty);
            let pairs: Vec<(String, String)> = self
                .seq_pairs
                .iter()
                .filter(|((s, _), _)| s == schema_name)
                .map(|((_, d), l)| (l.clone(), d.clone()))
                .collect();
            let live_only: Vec<(&String, &Sequence)> = live
                .iter()
                .filter(|(n, _)| !wanted.contains_key(*n) && !pairs.iter().any(|(l, _)| l == *n))
                .collect();
            for (dname, ds) in wanted.iter().filter(|(n, _)| !live.contains_key(*n)) {
                match pairs.iter().find(|(_, d)| d == dname) {
                    Some(_) => {}
                    None => {
                        self.fresh
                            .sequences
                            .insert((schema_name.clone(), dname.clone()));
                        self.out.push(Change::CreateSequence {
                            schema: schema_name.clone(),
                            name: dname.clone(),
                            options: ds.options.clone(),
                        });
                        if ds.owned_by.is_some() {
                            self.out.push(Change::SetSequenceOwner {
                                schema: schema_name.clone(),
                                name: dname.clone(),
                                owner: ds.owned_by.clone(),
                            });
                        }
                    }
                }
            }
            for (name, ls) in live_only {
                // A sequence owned by a column that goes is dropped with it by Postgres.
                let owner_goes = ls.owned_by.as_ref().is_some_and(|o| {
                    self.dropped_tables
                        .contains(&(schema_name.clone(), o.table.clone()))
                        || self.disturbed_columns.get(&(
                            schema_name.clone(),
                            o.table.clone(),
                            o.column.clone(),
                        )) == Some(&Disturb::Dropped)
                });
                if !owner_goes {
                    self.out.push(Change::DropSequence {
                        schema: schema_name.clone(),
                        name: name.clone(),
                    });
                }
            }
            let common = live
                .iter()
                .filter_map(|(n, ls)| wanted.get(n).map(|ds| (n.clone(), ls, ds)))
                .map(|(n, ls, ds)| (n.clone(), n, ls, ds));
            let paired = pairs
                .iter()
                .filter_map(|(l, d)| Some((d.clone(), d.clone(), live.get(l)?, wanted.get(d)?)));
            let todo: Vec<(String, String, Sequence, Sequence)> = common
                .chain(paired)
                .map(|(a, b, l, d)| (a, b, l.clone(), d.clone()))
                .collect();
            for (name, _, ls, ds) in todo {
                if ls.options != ds.options {
                    self.out.push(Change::AlterSequence {
                        schema: schema_name.clone(),
                        name: name.clone(),
                        from: ls.options.clone(),
                        to: ds.options.clone(),
                    });
                }
                // Postgres drops a sequence with the column that owns it: a kept sequence whose
                // owner column goes is released first (OWNED BY NONE runs before any drop).
                let owner_goes = ls.owned_by.as_ref().is_some_and(|o| {
                    self.dropped_tables
                        .contains(&(schema_name.clone(), o.table.clone()))
                        || self.disturbed_columns.get(&(
                            schema_name.clone(),
                            o.table.clone(),
                            o.column.clone(),
                        )) == Some(&Disturb::Dropped)
                });
                if owner_goes && ds.owned_by.is_some() {
                    self.out.push(Change::SetSequenceOwner {
                        schema: schema_name.clone(),
                        name: name.clone(),
                        owner: None,
                    });
                }
                if ls.owned_by != ds.owned_by || (owner_goes && ds.owned_by.is_some()) {
                    self.out.push(Change::SetSequenceOwner {
                        schema: schema_name.clone(),
                        name: name.clone(),
                        owner: ds.owned_by.clone(),
                    });
                }
            }
        }
    }

    /// Whether a live view must be dropped (and re-created) for what the plan does under it:
    /// it reads a table the plan drops, or a column the plan drops, re-creates or re-types
    /// (Postgres refuses those while a view depends on the column; the other columns of the
    /// table may change freely), or it reads a renamed column in a way the rename could not
    /// be modelled.
    fn view_disturbed(
        &self,
        key: &(String, String),
        view: &View,
        live_refs: &BTreeMap<(String, String), Vec<(String, String)>>,
    ) -> bool {
        if self.unmodelled_views.contains(key) {
            return true;
        }
        let refs = live_refs.get(key).map(Vec::as_slice).unwrap_or(&[]);
        if refs.iter().any(|r| self.dropped_tables.contains(r)) {
            return true;
        }
        match crate::viewdeps::reads(&view.definition, self.live) {
            Some(reads) => self
                .disturbed_columns
                .keys()
                .any(|(s, t, c)| reads.reads(s, t, c)),
            // A query that does not parse here: anything over a disturbed table.
            None => refs.iter().any(|r| self.disturbed_tables.contains(r)),
        }
    }

    fn views(&mut self) {
        let mut live_views: BTreeMap<(String, String), &View> = BTreeMap::new();
        for (s, schema) in &self.live.schemas {
            for (n, v) in &schema.views {
                live_views.insert((s.clone(), n.clone()), v);
            }
        }
        let mut wanted_views: BTreeMap<(String, String), &View> = BTreeMap::new();
        for (s, schema) in &self.desired.schemas {
            for (n, v) in &schema.views {
                wanted_views.insert((s.clone(), n.clone()), v);
            }
        }
        let live_refs: BTreeMap<(String, String), Vec<(String, String)>> = live_views
            .iter()
            .map(|(k, v)| (k.clone(), relations_of(&v.definition)))
            .collect();
        let wanted_refs: BTreeMap<(String, String), Vec<(String, String)>> = wanted_views
            .iter()
            .map(|(k, v)| (k.clone(), relations_of(&v.definition)))
            .collect();
        // Which live views must be dropped (gone, changed incompatibly, or over something
        // disturbed), to a fixpoint: a view over a dropped view goes too.
        let mut dropped: BTreeSet<(String, String)> = BTreeSet::new();
        let mut replaced: BTreeSet<(String, String)> = BTreeSet::new();
        for (key, lv) in &live_views {
            match wanted_views.get(key) {
                None => {
                    dropped.insert(key.clone());
                }
                Some(dv) => {
                    if self.view_disturbed(key, lv, &live_refs) {
                        dropped.insert(key.clone());
                    } else if (&lv.definition, &lv.options) != (&dv.definition, &dv.options) {
                        let renames = (lv.options == dv.options)
                            .then(|| {
                                crate::viewdeps::column_renames(&lv.definition, &dv.definition)
                            })
                            .flatten();
                        if let Some(renames) = renames {
                            for (from, to) in renames {
                                self.out.push(Change::RenameViewColumn {
                                    schema: key.0.clone(),
                                    view: key.1.clone(),
                                    from,
                                    to,
                                });
                            }
                        } else if lv.definition == dv.definition
                            || replace_compatible(&lv.definition, &dv.definition)
                        {
                            replaced.insert(key.clone());
                        } else {
                            dropped.insert(key.clone());
                        }
                    }
                }
            }
        }
        loop {
            let more: Vec<(String, String)> = live_refs
                .iter()
                .filter(|(k, refs)| {
                    !dropped.contains(*k) && refs.iter().any(|r| dropped.contains(r))
                })
                .map(|(k, _)| k.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            for k in more {
                replaced.remove(&k);
                dropped.insert(k);
            }
        }
        // Drop dependents first: repeatedly drop views that no remaining dropped view uses.
        let mut remaining: Vec<(String, String)> = dropped.iter().cloned().collect();
        while !remaining.is_empty() {
            let (ready, rest): (Vec<_>, Vec<_>) = remaining.iter().cloned().partition(|k| {
                !remaining.iter().any(|other| {
                    other != k && live_refs.get(other).is_some_and(|refs| refs.contains(k))
                })
            });
            // A cycle cannot exist between views; if the parse missed something, drop the
            // rest in name order rather than loop forever.
            let ready = if ready.is_empty() {
                rest.clone()
            } else {
                ready
            };
            for (s, n) in &ready {
                self.out.push(Change::DropView {
                    schema: s.clone(),
                    name: n.clone(),
                });
            }
            remaining = if ready.len() == remaining.len() {
                Vec::new()
            } else {
                rest
            };
        }
        // Create (or replace) in dependency order.
        let mut to_create: Vec<(String, String)> = wanted_views
            .keys()
            .filter(|k| {
                !live_views.contains_key(*k) || dropped.contains(*k) || replaced.contains(*k)
            })
            .cloned()
            .collect();
        while !to_create.is_empty() {
            let (ready, rest): (Vec<_>, Vec<_>) = to_create.iter().cloned().partition(|k| {
                !to_create.iter().any(|other| {
                    other != k && wanted_refs.get(k).is_some_and(|refs| refs.contains(other))
                })
            });
            let ready = if ready.is_empty() {
                rest.clone()
            } else {
                ready
            };
            for key in &ready {
                let Some(view) = wanted_views.get(key) else {
                    continue;
                };
                let replace = replaced.contains(key);
                if !replace {
                    self.fresh.views.insert(key.clone());
                }
                self.out.push(Change::CreateView {
                    schema: key.0.clone(),
                    name: key.1.clone(),
                    view: (*view).clone(),
                    replace,
                });
            }
            to_create = if ready.len() == to_create.len() {
                Vec::new()
            } else {
                rest
            };
        }
    }

    fn grants_and_comments(&mut self) {
        let mut changes = Vec::new();
        for (name, schema) in &self.desired.schemas {
            let live_comment = if self.fresh.schemas.contains(name) {
                None
            } else {
                self.live.schemas.get(name).and_then(|s| s.comment.clone())
            };
            comment(
                &mut changes,
                CommentObject::Schema { name: name.clone() },
                live_comment,
                &schema.comment,
            );
            let live_schema = self.live.schemas.get(name);
            for (enum_name, e) in &schema.enums {
                let fresh = self
                    .fresh
                    .enums
                    .contains(&(name.clone(), enum_name.clone()));
                let lc = if fresh {
                    None
                } else {
                    live_schema
                        .and_then(|s| s.enums.get(enum_name))
                        .and_then(|e| e.comment.clone())
                };
                comment(
                    &mut changes,
                    CommentObject::Type {
                        schema: name.clone(),
                        name: enum_name.clone(),
                    },
                    lc,
                    &e.comment,
                );
            }
            for (seq_name, seq) in &schema.sequences {
                let fresh = self
                    .fresh
                    .sequences
                    .contains(&(name.clone(), seq_name.clone()));
                // A renamed sequence keeps its grants and comment: find it under its old name.
                let live_seq = if fresh {
                    None
                } else {
                    live_schema.and_then(|s| {
                        s.sequences.get(seq_name).or_else(|| {
                            self.out.iter().find_map(|c| match c {
                                Change::RenameSequence { schema, from, to }
                                    if schema == name && to == seq_name =>
                                {
                                    s.sequences.get(from)
                                }
                                _ => None,
                            })
                        })
                    })
                };
                grants(
                    &mut changes,
                    GrantObject::Sequence {
                        schema: name.clone(),
                        name: seq_name.clone(),
                    },
                    live_seq.map(|s| s.grants.as_slice()).unwrap_or(&[]),
                    &seq.grants,
                );
                comment(
                    &mut changes,
                    CommentObject::Sequence {
                        schema: name.clone(),
                        name: seq_name.clone(),
                    },
                    live_seq.and_then(|s| s.comment.clone()),
                    &seq.comment,
                );
            }
            for (view_name, view) in &schema.views {
                let fresh = self
                    .fresh
                    .views
                    .contains(&(name.clone(), view_name.clone()));
                let live_view = if fresh {
                    None
                } else {
                    live_schema.and_then(|s| s.views.get(view_name))
                };
                grants(
                    &mut changes,
                    GrantObject::View {
                        schema: name.clone(),
                        name: view_name.clone(),
                    },
                    live_view.map(|v| v.grants.as_slice()).unwrap_or(&[]),
                    &view.grants,
                );
                comment(
                    &mut changes,
                    CommentObject::View {
                        schema: name.clone(),
                        name: view_name.clone(),
                    },
                    live_view.and_then(|v| v.comment.clone()),
                    &view.comment,
                );
            }
            for (table_name, table) in &schema.tables {
                self.table_grants_and_comments(&mut changes, name, table_name, table);
            }
        }
        self.out.extend(changes);
    }

    fn table_grants_and_comments(
        &self,
        changes: &mut Vec<Change>,
        schema: &str,
        table_name: &str,
        table: &Table,
    ) {
        let key = (schema.to_owned(), table_name.to_owned());
        let empty = Table::default();
        let live = if self.fresh.tables.contains(&key) {
            &empty
        } else {
            self.live_tables(schema).get(table_name).unwrap_or(&empty)
        };
        let s = || schema.to_owned();
        let t = || table_name.to_owned();
        let before = changes.len();
        grants(
            changes,
            GrantObject::Table {
                schema: s(),
                name: t(),
            },
            &live.grants,
            &table.grants,
        );
        // A table-level REVOKE also revokes that privilege (or its grant option) on every
        // column: account for it before comparing column grants.
        let mut revoked: BTreeMap<(String, String), bool> = BTreeMap::new();
        for change in &changes[before..] {
            if let Change::Revoke {
                grantee,
                privileges,
                grant_option_only,
                ..
            } = change
            {
                for p in privileges {
                    revoked.insert((grantee.clone(), p.clone()), *grant_option_only);
                }
            }
        }
        comment(
            changes,
            CommentObject::Table {
                schema: s(),
                name: t(),
            },
            live.comment.clone(),
            &table.comment,
        );
        for (col_name, col) in &table.columns {
            let fresh = self.fresh.columns.contains(&(s(), t(), col_name.clone()));
            let live_col = if fresh {
                None
            } else {
                live.columns.get(col_name)
            };
            let live_grants: Vec<Grant> = live_col
                .map(|c| c.grants.as_slice())
                .unwrap_or(&[])
                .iter()
                .filter_map(
                    |g| match revoked.get(&(g.grantee.clone(), g.privilege.clone())) {
                        None => Some(g.clone()),
                        Some(true) => Some(Grant {
                            grantable: false,
                            ..g.clone()
                        }),
                        Some(false) => None,
                    },
                )
                .collect();
            grants(
                changes,
                GrantObject::Column {
                    schema: s(),
                    table: t(),
                    column: col_name.clone(),
                },
                &live_grants,
                &col.grants,
            );
            comment(
                changes,
                CommentObject::Column {
                    schema: s(),
                    table: t(),
                    column: col_name.clone(),
                },
                live_col.and_then(|c| c.comment.clone()),
                &col.comment,
            );
        }
        for (name, c) in &table.constraints {
            let fresh = self.fresh.constraints.contains(&(s(), t(), name.clone()));
            let lc = if fresh {
                None
            } else {
                self.renamed_from_constraint(live, name)
                    .and_then(|c| c.comment.clone())
            };
            comment(
                changes,
                CommentObject::Constraint {
                    schema: s(),
                    table: t(),
                    name: name.clone(),
                },
                lc,
                &c.comment,
            );
        }
        for (name, i) in &table.indexes {
            let fresh = self.fresh.indexes.contains(&(s(), t(), name.clone()));
            let lc = if fresh {
                None
            } else {
                self.renamed_from_index(schema, table_name, live, name)
                    .and_then(|i| i.comment.clone())
            };
            comment(
                changes,
                CommentObject::Index {
                    schema: s(),
                    table: t(),
                    name: name.clone(),
                },
                lc,
                &i.comment,
            );
        }
        for (name, p) in &table.rls.policies {
            let fresh = self.fresh.policies.contains(&(s(), t(), name.clone()));
            let lc = if fresh {
                None
            } else {
                live.rls.policies.get(name).and_then(|p| p.comment.clone())
            };
            comment(
                changes,
                CommentObject::Policy {
                    schema: s(),
                    table: t(),
                    name: name.clone(),
                },
                lc,
                &p.comment,
            );
        }
    }

    /// The live constraint that desired constraint `name` is (under its own or a former name).
    fn renamed_from_constraint<'t>(&self, live: &'t Table, name: &str) -> Option<&'t Constraint> {
        live.constraints.get(name).or_else(|| {
            self.out.iter().find_map(|c| match c {
                Change::RenameConstraint { from, to, .. } if to == name => {
                    live.constraints.get(from)
                }
                _ => None,
            })
        })
    }

    fn renamed_from_index<'t>(
        &self,
        schema: &str,
        table: &str,
        live: &'t Table,
        name: &str,
    ) -> Option<&'t Index> {
        live.indexes.get(name).or_else(|| {
            self.out.iter().find_map(|c| match c {
                Change::RenameIndex {
                    schema: s,
                    table: t,
                    from,
                    to,
                } if s == schema && t == table && to == name => live.indexes.get(from),
                _ => None,
            })
        })
    }

    /// Unsupported objects are never created or dropped. Triggers and rules on a table the
    /// plan drops go with it (the compiler flags that step); any other difference is refused.
    fn unsupported(&mut self) {
        let live: BTreeSet<&UnsupportedObject> = self.live.unsupported.iter().collect();
        // The caller carries live's unsupported objects into the desired catalog as they are;
        // a trigger on a table this plan renames is then under the table's old name, while
        // the renamed live catalog (like Postgres after the rename) has the new one.
        let moved: Vec<UnsupportedObject> = self
            .desired
            .unsupported
            .iter()
            .map(|u| {
                let mut u = u.clone();
                for (schema, from, to) in &self.table_renames {
                    let on_from = u.schema == *schema
                        && matches!(u.kind.as_str(), "trigger" | "rule")
                        && u.name
                            .strip_prefix(from.as_str())
                            .is_some_and(|r| r.starts_with('.'));
                    if on_from {
                        u.name = format!("{to}{}", &u.name[from.len()..]);
                        break;
                    }
                }
                u
            })
            .collect();
        let wanted: BTreeSet<&UnsupportedObject> = moved.iter().collect();
        for u in wanted.difference(&live) {
            self.out.push(Change::Refuse {
                object: format!("{} {}", u.kind, path2(&u.schema, &u.name)),
                reason: "this object is not in the live database and Lockplane does not \
                         create objects of this kind; create it with SQL first (apply_sql), \
                         then plan again"
                    .into(),
            });
        }
        for u in live.difference(&wanted) {
            let on_dropped_table = matches!(u.kind.as_str(), "trigger" | "rule")
                && self.dropped_tables.iter().any(|(s, t)| {
                    *s == u.schema
                        && u.name.starts_with(t.as_str())
                        && u.name[t.len()..].starts_with('.')
                });
            if !on_dropped_table {
                self.out.push(Change::Refuse {
                    object: format!("{} {}", u.kind, path2(&u.schema, &u.name)),
                    reason: "this object exists in the live database but not in the desired \
                             catalog; Lockplane never drops objects it does not manage (the \
                             desired catalog must carry the live unsupported objects)"
                        .into(),
                });
            }
        }
    }
}

fn path2(schema: &str, name: &str) -> String {
    if schema.is_empty() {
        name.to_owned()
    } else {
        format!("{schema}.{name}")
    }
}

fn comment(
    out: &mut Vec<Change>,
    object: CommentObject,
    live: Option<String>,
    wanted: &Option<String>,
) {
    if live != *wanted {
        out.push(Change::Comment {
            object,
            comment: wanted.clone(),
        });
    }
}

/// The GRANT and REVOKE changes that take `live` privileges to `wanted`, one change per
/// grantee and kind of statement.
fn grants(out: &mut Vec<Change>, object: GrantObject, live: &[Grant], wanted: &[Grant]) {
    let map = |gs: &[Grant]| -> BTreeMap<String, BTreeMap<String, bool>> {
        let mut m: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
        for g in gs {
            let e = m
                .entry(g.grantee.clone())
                .or_default()
                .entry(g.privilege.clone())
                .or_insert(false);
            *e |= g.grantable;
        }
        m
    };
    let live = map(live);
    let wanted = map(wanted);
    let empty = BTreeMap::new();
    let grantees: BTreeSet<&String> = live.keys().chain(wanted.keys()).collect();
    for grantee in grantees {
        let l = live.get(grantee).unwrap_or(&empty);
        let w = wanted.get(grantee).unwrap_or(&empty);
        let revoke: Vec<String> = l.keys().filter(|p| !w.contains_key(*p)).cloned().collect();
        let revoke_option: Vec<String> = l
            .iter()
            .filter(|(p, g)| **g && w.get(*p) == Some(&false))
            .map(|(p, _)| p.clone())
            .collect();
        let grant: Vec<String> = w
            .iter()
            .filter(|(p, g)| !**g && !l.contains_key(*p))
            .map(|(p, _)| p.clone())
            .collect();
        let grant_option: Vec<String> = w
            .iter()
            .filter(|(p, g)| **g && l.get(*p) != Some(&true))
            .map(|(p, _)| p.clone())
            .collect();
        for (privileges, grant_option_only) in [(revoke, false), (revoke_option, true)] {
            if !privileges.is_empty() {
                out.push(Change::Revoke {
                    object: object.clone(),
                    grantee: grantee.clone(),
                    privileges,
                    grant_option_only,
                });
            }
        }
        for (privileges, with_grant_option) in [(grant, false), (grant_option, true)] {
            if !privileges.is_empty() {
                out.push(Change::Grant {
                    object: object.clone(),
                    grantee: grantee.clone(),
                    privileges,
                    with_grant_option,
                });
            }
        }
    }
}

/// The constraints of a new table written inside its `CREATE TABLE`: primary key, unique,
/// check and exclusion constraints, unless wanted NOT VALID (which only `ALTER TABLE` can
/// say); foreign keys never are, since their target may not exist yet. Nor is a constraint
/// whose index would duplicate another's: `CREATE TABLE` silently keeps one index for a
/// `UNIQUE` over exactly the primary key's columns (or two identical `UNIQUE`s), so the
/// duplicate is added by `ALTER TABLE` after the table, which keeps both, as the desired
/// catalog says.
pub(crate) fn inline_in_create(table: &Table) -> BTreeSet<&str> {
    // What Postgres compares (parse_utilcmd.c, transformIndexConstraints): key columns in
    // order, NULLS NOT DISTINCT, deferrability; an exclusion constraint by its whole clause.
    #[derive(PartialEq)]
    enum Key<'a> {
        Columns(&'a [String], bool, bool, bool),
        Exclusion(&'a str),
    }
    fn key(c: &Constraint) -> Option<Key<'_>> {
        match &c.definition {
            ConstraintDef::PrimaryKey { columns } => Some(Key::Columns(
                columns,
                false,
                c.deferrable,
                c.initially_deferred,
            )),
            ConstraintDef::Unique {
                columns,
                nulls_not_distinct,
            } => Some(Key::Columns(
                columns,
                *nulls_not_distinct,
                c.deferrable,
                c.initially_deferred,
            )),
            ConstraintDef::Exclusion { definition } => Some(Key::Exclusion(definition)),
            _ => None,
        }
    }
    let inline =
        |c: &Constraint| c.validated && !matches!(c.definition, ConstraintDef::ForeignKey { .. });
    let mut out = BTreeSet::new();
    let mut kept: Vec<Key> = Vec::new();
    // Postgres keeps the primary key's index in preference to any other.
    let pk_first = table
        .constraints
        .iter()
        .filter(|(_, c)| matches!(c.definition, ConstraintDef::PrimaryKey { .. }))
        .chain(
            table
                .constraints
                .iter()
                .filter(|(_, c)| !matches!(c.definition, ConstraintDef::PrimaryKey { .. })),
        );
    for (name, c) in pk_first {
        if !inline(c) {
            continue;
        }
        match key(c) {
            Some(k) if kept.contains(&k) => {}
            Some(k) => {
                kept.push(k);
                out.insert(name.as_str());
            }
            None => {
                out.insert(name.as_str());
            }
        }
    }
    out
}

fn same_constraint(a: &Constraint, b: &Constraint) -> bool {
    a.definition == b.definition
        && a.deferrable == b.deferrable
        && a.initially_deferred == b.initially_deferred
}

/// The labels to add (with their position) when `wanted` keeps every label of `live` in the
/// same order; `None` when labels are removed or reordered.
fn label_additions(live: &[String], wanted: &[String]) -> Option<Vec<(String, LabelPosition)>> {
    let kept: Vec<&String> = wanted.iter().filter(|l| live.contains(l)).collect();
    if kept.len() != live.len() || kept.iter().zip(live).any(|(a, b)| *a != b) {
        return None;
    }
    let mut adds = Vec::new();
    for (i, label) in wanted.iter().enumerate() {
        if live.contains(label) {
            continue;
        }
        // Before the next label that already exists, else at the end: adding in desired
        // order then reproduces the desired order.
        let position = wanted[i + 1..]
            .iter()
            .find(|l| live.contains(l))
            .map(|l| LabelPosition::Before(l.clone()))
            .unwrap_or(LabelPosition::End);
        adds.push((label.clone(), position));
    }
    Some(adds)
}

/// What in `catalog` uses enum `schema.name` (a column of that type, or an expression naming
/// it), for the refusal message.
fn enum_user(catalog: &Catalog, schema: &str, name: &str) -> Option<String> {
    for (sn, s) in &catalog.schemas {
        for (tn, t) in &s.tables {
            for (cn, c) in &t.columns {
                let exprs = [c.default.as_deref(), c.generated.as_deref()];
                if type_refers_to(&c.data_type, schema, name)
                    || exprs.into_iter().flatten().any(|e| mentions_ident(e, name))
                {
                    return Some(format!("column {sn}.{tn}.{cn}"));
                }
            }
            for (con, c) in &t.constraints {
                if let ConstraintDef::Check { expression: e, .. }
                | ConstraintDef::Exclusion { definition: e } = &c.definition
                {
                    if mentions_ident(e, name) {
                        return Some(format!("constraint {sn}.{tn}.{con}"));
                    }
                }
            }
            for (pn, p) in &t.rls.policies {
                let exprs = [p.using.as_deref(), p.with_check.as_deref()];
                if exprs.into_iter().flatten().any(|e| mentions_ident(e, name)) {
                    return Some(format!("policy {sn}.{tn}.{pn}"));
                }
            }
        }
        for (vn, v) in &s.views {
            if mentions_ident(&v.definition, name) {
                return Some(format!("view {sn}.{vn}"));
            }
        }
    }
    None
}

/// True when a `format_type` string names `schema.name` (or an array of it).
pub fn type_refers_to(data_type: &str, schema: &str, name: &str) -> bool {
    let base = data_type.trim_end_matches("[]");
    let parts = split_qualified(base);
    match parts.as_slice() {
        [s, n] => s == schema && n == name,
        _ => false,
    }
}

/// Splits `a."b c".d` into unquoted parts.
fn split_qualified(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// One token of SQL text, as far as name matching needs.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    /// An identifier (unquoted, folded to lower case; or quoted, as written).
    Ident(String, std::ops::Range<usize>),
    /// Anything else (string literals included, as one token).
    Other(&'a str),
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            let start = i;
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i = (i + 1).min(bytes.len());
            out.push(Token::Other(&text[start..i]));
        } else if c == b'"' {
            let start = i;
            let mut name = String::new();
            i += 1;
            let mut seg = i;
            while i < bytes.len() {
                if bytes[i] == b'"' {
                    name.push_str(&text[seg..i]);
                    if bytes.get(i + 1) == Some(&b'"') {
                        name.push('"');
                        i += 2;
                        seg = i;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            if i >= bytes.len() {
                name.push_str(&text[seg.min(bytes.len())..]);
            }
            i = (i + 1).min(bytes.len());
            out.push(Token::Ident(name, start..i));
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || bytes[i] == b'_'
                    || bytes[i] == b'$'
                    || bytes[i] >= 0x80)
            {
                i += 1;
            }
            out.push(Token::Ident(text[start..i].to_lowercase(), start..i));
        } else {
            let start = i;
            i += 1;
            while i < bytes.len() && !text.is_char_boundary(i) {
                i += 1;
            }
            out.push(Token::Other(&text[start..i]));
        }
    }
    out
}

/// True when SQL `text` contains identifier `name` outside string literals. Conservative
/// (a column and a function of the same name both match): it decides what to re-create, and
/// re-creating too much is only slower.
pub fn mentions_ident(text: &str, name: &str) -> bool {
    tokens(text)
        .iter()
        .any(|t| matches!(t, Token::Ident(n, _) if n == name))
}

/// `text` with identifier `from` replaced by `to`, renormalised with `normalize` (so the
/// quoting is what Postgres would print). On any failure the text is returned unchanged,
/// which at worst makes the object look changed and be re-created.
fn substitute(
    text: &str,
    from: &str,
    to: &str,
    normalize: fn(&str) -> Result<String, crate::normalize::NormalizeError>,
) -> String {
    let toks = tokens(text);
    if !toks
        .iter()
        .any(|t| matches!(t, Token::Ident(n, _) if n == from))
    {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut last = 0;
    for t in &toks {
        if let Token::Ident(n, range) = t {
            if n == from {
                out.push_str(&text[last..range.start]);
                out.push_str(&quote_ident(to));
                last = range.end;
            }
        }
    }
    out.push_str(&text[last..]);
    normalize(&out).unwrap_or_else(|_| text.to_owned())
}

/// The relations a view query reads, as `(schema, name)` (unqualified names get an empty
/// schema). Views are stored schema-qualified, so this is exact in practice.
fn relations_of(definition: &str) -> Vec<(String, String)> {
    match pg_query::parse(definition, 0) {
        Ok(parsed) => parsed
            .tables()
            .into_iter()
            .map(|t| match t.split_once('.') {
                Some((s, n)) => (s.to_owned(), n.to_owned()),
                None => (String::new(), t),
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// True when `CREATE OR REPLACE VIEW` can take `old` to `new`: the new query is the old one
/// with columns appended (and possibly another WHERE, ORDER BY or LIMIT, which do not change
/// column types). Anything else is a drop and create.
fn replace_compatible(old: &str, new: &str) -> bool {
    let stripped = |text: &str, keep: Option<usize>| -> Option<(String, usize)> {
        let mut parsed = pg_query::parse(text, 0).ok()?;
        let select = crate::normalize::plain_select(&mut parsed)?;
        let len = select.target_list.len();
        if let Some(k) = keep {
            if k > len {
                return None;
            }
            select.target_list.truncate(k);
        }
        select.where_clause = None;
        select.sort_clause.clear();
        select.limit_count = None;
        select.limit_offset = None;
        let text = pg_query::deparse(&parsed.protobuf, Default::default()).ok()?;
        Some((text, len))
    };
    let Some((old_text, old_len)) = stripped(old, None) else {
        return false;
    };
    match stripped(new, Some(old_len)) {
        Some((new_text, _)) => new_text == old_text,
        None => false,
    }
}

/// Applies `renames` to a copy of `live`: tables and columns move to their desired names and
/// every reference to them follows (foreign keys, key columns, sequence owners, expressions,
/// triggers' table prefix), as Postgres itself does on `RENAME`. Emits the rename changes.
/// Views by `(schema, name)`.
type ViewKeys = BTreeSet<(String, String)>;

/// `renames` must be pending on `live` ([`Renames::pending_on`]). Also returns the views
/// whose text after a column rename could not be modelled.
fn apply_renames(
    live: &Catalog,
    desired: &Catalog,
    renames: &Renames,
    out: &mut Vec<Change>,
) -> Result<(Catalog, ViewKeys), Vec<Change>> {
    let mut unmodelled = BTreeSet::new();
    let mut c = live.clone();
    let mut refusals = Vec::new();
    let mut refuse = |object: String, reason: String| {
        refusals.push(Change::Refuse { object, reason });
    };
    for r in &renames.tables {
        let object = format!("{}.{}", r.schema, r.to);
        let desired_has = desired
            .schemas
            .get(&r.schema)
            .is_some_and(|s| s.tables.contains_key(&r.to));
        let Some(schema) = c.schemas.get_mut(&r.schema) else {
            refuse(object, format!("schema {} does not exist", r.schema));
            continue;
        };
        let missing = format!(
            "renamed_from names {}.{}, which does not exist",
            r.schema, r.from
        );
        let moved = move_renamed(
            &mut schema.tables,
            (&r.from, &r.to),
            "table",
            desired_has,
            missing,
        );
        if let Err(reason) = moved {
            refuse(object, reason);
            continue;
        }
        out.push(Change::RenameTable {
            schema: r.schema.clone(),
            from: r.from.clone(),
            to: r.to.clone(),
        });
        rename_table_references(&mut c, &r.schema, &r.from, &r.to);
    }
    for r in &renames.columns {
        let object = format!("{}.{}.{}", r.schema, r.table, r.to);
        let desired_has = desired
            .schemas
            .get(&r.schema)
            .and_then(|s| s.tables.get(&r.table))
            .is_some_and(|t| t.columns.contains_key(&r.to));
        let table_exists = c
            .schemas
            .get(&r.schema)
            .is_some_and(|s| s.tables.contains_key(&r.table));
        if !table_exists {
            refuse(
                object,
                format!("table {}.{} does not exist", r.schema, r.table),
            );
            continue;
        }
        let missing = format!("renamed_from names column {}, which does not exist", r.from);
        // Postgres rewrites every view reading the column itself (keeping the view's column
        // names); what it will print is worked out while the column still has its old name.
        let views_after: Vec<((String, String), Option<String>)> = c
            .schemas
            .iter()
            .flat_map(|(sn, s)| {
                s.views.iter().map(|(vn, v)| {
                    let after = crate::viewdeps::rename_column(
                        &v.definition,
                        &c,
                        (&r.schema, &r.table),
                        &r.from,
                        &r.to,
                    );
                    ((sn.clone(), vn.clone()), after)
                })
            })
            .collect();
        let Some(table) = c
            .schemas
            .get_mut(&r.schema)
            .and_then(|s| s.tables.get_mut(&r.table))
        else {
            continue;
        };
        let moved = move_renamed(
            &mut table.columns,
            (&r.from, &r.to),
            "column",
            desired_has,
            missing,
        );
        if let Err(reason) = moved {
            refuse(object, reason);
            continue;
        }
        out.push(Change::RenameColumn {
            schema: r.schema.clone(),
            table: r.table.clone(),
            from: r.from.clone(),
            to: r.to.clone(),
        });
        rename_column_references(&mut c, &r.schema, &r.table, &r.from, &r.to);
        for ((sn, vn), after) in views_after {
            match after {
                Some(text) => {
                    if let Some(v) = c.schemas.get_mut(&sn).and_then(|s| s.views.get_mut(&vn)) {
                        v.definition = text;
                    }
                }
                None => {
                    unmodelled.insert((sn, vn));
                }
            }
        }
    }
    if refusals.is_empty() {
        c.canonicalize();
        Ok((c, unmodelled))
    } else {
        Err(refusals)
    }
}

/// Moves a renamed table or column (`what`) to its new name in `map`, or says why it cannot:
/// the new name must be in the desired catalog and free, and the old one must exist
/// (`missing` says otherwise).
fn move_renamed<T>(
    map: &mut BTreeMap<String, T>,
    (from, to): (&str, &str),
    what: &str,
    desired_has: bool,
    missing: String,
) -> Result<(), String> {
    if !desired_has {
        return Err(format!("the renamed {what} is not in the desired catalog"));
    }
    if map.contains_key(to) {
        return Err(format!(
            "a {what} named {to} already exists; rename or drop it first"
        ));
    }
    let item = map.remove(from).ok_or(missing)?;
    map.insert(to.to_owned(), item);
    Ok(())
}

fn rename_table_references(c: &mut Catalog, schema: &str, from: &str, to: &str) {
    use crate::normalize::{expression, view_query};
    for (sn, s) in c.schemas.iter_mut() {
        for t in s.tables.values_mut() {
            for con in t.constraints.values_mut() {
                if let ConstraintDef::ForeignKey { references, .. } = &mut con.definition {
                    if references.schema == schema && references.table == from {
                        references.table = to.to_owned();
                    }
                }
            }
            for p in t.rls.policies.values_mut() {
                for e in [&mut p.using, &mut p.with_check].into_iter().flatten() {
                    *e = substitute(e, from, to, expression);
                }
            }
        }
        for v in s.views.values_mut() {
            v.definition = substitute(&v.definition, from, to, view_query);
        }
        if sn == schema {
            for seq in s.sequences.values_mut() {
                if let Some(o) = &mut seq.owned_by {
                    if o.table == from {
                        o.table = to.to_owned();
                    }
                }
            }
        }
    }
    for u in c.unsupported.iter_mut() {
        if u.schema == schema && matches!(u.kind.as_str(), "trigger" | "rule") {
            if let Some(rest) = u.name.strip_prefix(from).filter(|r| r.starts_with('.')) {
                u.name = format!("{to}{rest}");
            }
        }
    }
}

fn rename_column_references(c: &mut Catalog, schema: &str, table: &str, from: &str, to: &str) {
    use crate::normalize::{constraint_clause, expression};
    let rename = |cols: &mut Vec<String>| {
        for col in cols.iter_mut() {
            if col == from {
                *col = to.to_owned();
            }
        }
    };
    for (sn, s) in c.schemas.iter_mut() {
        for (tn, t) in s.tables.iter_mut() {
            let this = sn == schema && tn == table;
            for con in t.constraints.values_mut() {
                match &mut con.definition {
                    ConstraintDef::ForeignKey {
                        columns,
                        references,
                        ..
                    } => {
                        if this {
                            rename(columns);
                        }
                        if references.schema == schema && references.table == table {
                            rename(&mut references.columns);
                        }
                    }
                    ConstraintDef::PrimaryKey { columns }
                    | ConstraintDef::Unique { columns, .. }
                        if this =>
                    {
                        rename(columns)
                    }
                    ConstraintDef::Check { expression: e, .. } if this => {
                        *e = substitute(e, from, to, expression);
                    }
                    ConstraintDef::Exclusion { definition } if this => {
                        *definition = substitute(definition, from, to, constraint_clause);
                    }
                    _ => {}
                }
            }
            if !this {
                continue;
            }
            for i in t.indexes.values_mut() {
                for k in i.keys.iter_mut() {
                    if k.column.as_deref() == Some(from) {
                        k.column = Some(to.to_owned());
                    }
                    if let Some(e) = &mut k.expression {
                        *e = substitute(e, from, to, expression);
                    }
                }
                rename(&mut i.include);
                if let Some(p) = &mut i.predicate {
                    *p = substitute(p, from, to, expression);
                }
            }
            for p in t.rls.policies.values_mut() {
                for e in [&mut p.using, &mut p.with_check].into_iter().flatten() {
                    *e = substitute(e, from, to, expression);
                }
            }
            for col in t.columns.values_mut() {
                for e in [&mut col.default, &mut col.generated].into_iter().flatten() {
                    *e = substitute(e, from, to, expression);
                }
            }
        }
        if sn == schema {
            for seq in s.sequences.values_mut() {
                if let Some(o) = &mut seq.owned_by {
                    if o.table == table && o.column == from {
                        o.column = to.to_owned();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schema `s` with tables named by `tables`, each holding the columns listed with it.
    fn catalog(tables: &[(&str, &[&str])]) -> Catalog {
        let mut c = Catalog::default();
        let schema = c.schemas.entry("s".into()).or_default();
        for (name, columns) in tables {
            let table = schema.tables.entry((*name).into()).or_default();
            for col in *columns {
                table.columns.insert(
                    (*col).into(),
                    crate::catalog::Column {
                        data_type: "text".into(),
                        not_null: false,
                        default: None,
                        identity: None,
                        generated: None,
                        collation: None,
                        grants: Vec::new(),
                        comment: None,
                        position: Default::default(),
                    },
                );
            }
        }
        c
    }

    fn refusal(live: &Catalog, desired: &Catalog, renames: &Renames) -> Option<String> {
        match apply_renames(live, desired, &renames.pending_on(live), &mut Vec::new()) {
            Ok(_) => None,
            Err(refusals) => refusals.into_iter().find_map(|c| match c {
                Change::Refuse { reason, .. } => Some(reason),
                _ => None,
            }),
        }
    }

    #[test]
    fn renames_that_cannot_happen_are_refused_with_the_reason() {
        let live = catalog(&[("a", &["x", "w"]), ("b", &[])]);
        let desired = catalog(&[("a2", &["x"]), ("b", &[])]);
        let table = |from: &str, to: &str| Renames::none().table("s", from, to);
        assert_eq!(refusal(&live, &desired, &table("a", "a2")), None);
        assert_eq!(
            refusal(&live, &desired, &table("a", "zz")).as_deref(),
            Some("the renamed table is not in the desired catalog")
        );
        assert_eq!(
            refusal(&live, &desired, &table("a", "b")).as_deref(),
            Some("a table named b already exists; rename or drop it first")
        );
        assert_eq!(
            refusal(&live, &desired, &table("q", "a2")).as_deref(),
            Some("renamed_from names s.q, which does not exist")
        );

        let desired = catalog(&[("a", &["y", "w"]), ("b", &[])]);
        let column = |from: &str, to: &str| Renames::none().column("s", "a", from, to);
        assert_eq!(refusal(&live, &desired, &column("x", "y")), None);
        assert_eq!(
            refusal(&live, &desired, &column("x", "zz")).as_deref(),
            Some("the renamed column is not in the desired catalog")
        );
        assert_eq!(
            refusal(&live, &desired, &column("x", "w")).as_deref(),
            Some("a column named w already exists; rename or drop it first")
        );
        assert_eq!(
            refusal(&live, &desired, &column("q", "y")).as_deref(),
            Some("renamed_from names column q, which does not exist")
        );
    }

    #[test]
    fn renames_already_done_are_satisfied() {
        let done = catalog(&[("a2", &["y", "w"])]);
        let renames = Renames::none()
            .table("s", "a", "a2")
            .column("s", "a2", "x", "y");
        assert_eq!(renames.pending_on(&done), Renames::none());
        assert_eq!(diff(&done, &done, &renames), Vec::new());
        // The table renamed already, its column not yet: only the column is pending.
        let half = catalog(&[("a2", &["x", "w"])]);
        assert_eq!(
            renames.pending_on(&half),
            Renames::none().column("s", "a2", "x", "y")
        );
        // Neither name live: still refused (a misspelt old name must not pass silently).
        let neither = catalog(&[("a2", &["w"])]);
        assert_eq!(
            refusal(&neither, &done, &renames).as_deref(),
            Some("renamed_from names column x, which does not exist")
        );
    }

    #[test]
    fn mentions_skips_literals_and_unquotes() {
        assert!(mentions_ident("a > 0", "a"));
        assert!(!mentions_ident("b = 'a'", "a"));
        assert!(mentions_ident("\"Weird Name\" IS NOT NULL", "Weird Name"));
        assert!(!mentions_ident("abc > 0", "a"));
        assert!(mentions_ident("public.users.id", "users"));
    }

    #[test]
    fn substitution_renormalises() {
        let s = substitute("a > 0 AND b <> 'a'", "a", "c", crate::normalize::expression);
        assert_eq!(s, "c > 0 AND b <> 'a'");
        let s = substitute("a > 0", "a", "Big", crate::normalize::expression);
        assert_eq!(s, "\"Big\" > 0");
    }

    #[test]
    fn label_positions() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            label_additions(&v(&["a", "c"]), &v(&["x", "a", "b", "c", "d"])),
            Some(vec![
                ("x".into(), LabelPosition::Before("a".into())),
                ("b".into(), LabelPosition::Before("c".into())),
                ("d".into(), LabelPosition::End),
            ])
        );
        assert_eq!(label_additions(&v(&["a", "c"]), &v(&["c", "a"])), None);
        assert_eq!(label_additions(&v(&["a", "c"]), &v(&["a"])), None);
    }

    #[test]
    fn types_refer() {
        assert!(type_refers_to("public.mood", "public", "mood"));
        assert!(type_refers_to("public.mood[]", "public", "mood"));
        assert!(type_refers_to("\"My\".\"Mood\"", "My", "Mood"));
        assert!(!type_refers_to("text", "public", "text"));
    }

    #[test]
    fn view_replacement() {
        assert!(replace_compatible(
            "SELECT a, b FROM public.t",
            "SELECT a, b, c FROM public.t WHERE a > 1"
        ));
        assert!(!replace_compatible(
            "SELECT a, b FROM public.t",
            "SELECT b, a FROM public.t"
        ));
        assert!(!replace_compatible(
            "SELECT a, b FROM public.t",
            "SELECT a FROM public.t"
        ));
        assert!(!replace_compatible(
            "SELECT a FROM public.t",
            "SELECT a FROM public.u"
        ));
    }

    #[test]
    fn inverse_renames() {
        let r = Renames::none()
            .table("public", "a", "b")
            .column("public", "b", "x", "y");
        let i = r.inverse();
        assert_eq!(i.tables[0].from, "b");
        assert_eq!(i.columns[0].table, "a");
        assert_eq!(i.columns[0].from, "y");
    }
}
