//! A plan as pgroll migrations (pgroll v0.16, the reference zero-downtime migration tool).
//!
//! [`export`] (and [`export_plan`], which also checks the result is the plan it is given)
//! turns what the planner knows — the base catalog, the target catalog, the renames and the
//! table statistics — into a list of pgroll [`Migration`]s, in the order to run them. Pure:
//! no server, no file.
//!
//! # Decisions
//!
//! - **Source: the plan's changes and its own steps.** [`crate::diff::diff`] gives the
//!   [`Change`]s (object by object, with their desired state) and the compiler gives the
//!   plan's steps with the change each comes from, exactly as [`crate::plan::plan`] makes
//!   them. A change pgroll models becomes its operation, placed where the change's first step
//!   is in the plan, so dependencies the compiler orders (an enum before the table using it,
//!   a view dropped before the column it reads) keep their order. A change pgroll does not
//!   model keeps the plan's SQL, as an `sql` operation.
//! - **One schema.** pgroll works in one schema (its `--schema`, `public` by default):
//!   operations name tables without a schema. Changes to tables of [`PgrollOptions::schema`]
//!   become operations; changes anywhere else are `sql`.
//! - **A list of migrations.** pgroll runs raw SQL at start only alone in its migration
//!   (`IsolatedOperation`). So: `sql` before the first operation is a migration of its own
//!   (consecutive transactional steps joined in one `sql`, which pgroll sends as one
//!   multi-statement query, i.e. one implicit transaction; a step the plan runs alone stays
//!   alone); `sql` after an operation joins that migration with `onComplete: true` (it runs
//!   once the migration's operations have completed, in order) and the next operation starts
//!   a new migration. Within one phase of the plan (all its table creations, all its index
//!   builds, …) the raw SQL goes after the operations, which it never prepares, so a phase is
//!   not cut into a migration per step. A new migration also starts when an operation would reuse a name an
//!   earlier operation of the same migration drops (pgroll's `Validate` still sees the old
//!   object until the migration completes) or would touch a column an earlier operation of the
//!   same migration already touches (pgroll duplicates a column once per migration).
//! - **Mapping.** Tables: `create_table` (columns with explicit `nullable`, defaults, identity
//!   and generated columns, comments; its primary key, unique, check and exclusion
//!   constraints; its foreign keys when what they reference exists before it), `rename_table`,
//!   `drop_table`. Columns: `add_column`, `rename_column`, `drop_column`, and one
//!   `alter_column` per column for its type, nullability, default and comment together.
//!   Constraints: one-column unique, check and foreign key as `alter_column`, several columns
//!   (and primary keys) as `create_constraint`; drops as `drop_constraint` (one column) or
//!   `drop_multicolumn_constraint`; `rename_constraint`. Indexes on plain columns:
//!   `create_index`, `drop_index`. A `serial` column (the integer column, its owned sequence
//!   and the `nextval` default, as `serial` makes them) is written `serial`.
//! - **`sql` for the rest**, with the plan's own statements: schemas, extensions, enums,
//!   sequences, views, RLS and policies, grants and revokes, identity and generation changes,
//!   unlogged tables, comments other than on tables and columns pgroll creates or alters,
//!   index renames, validations, deferrability changes, and what pgroll's operations cannot
//!   say: `NOT VALID` constraints, deferrable multi-column foreign keys and primary keys,
//!   `NULLS NOT DISTINCT`, exclusion constraints on existing tables, expression indexes,
//!   `INCLUDE`, a non-default `NULLS FIRST/LAST` (pgroll 0.16 writes the field without its
//!   `NULLS` keyword, which is a syntax error), dropping or renaming primary keys and
//!   exclusion constraints (pgroll's schema does not see them as constraints). The plan's
//!   leading steps (Lockplane's helper functions, invalid indexes to drop) are `sql` too.
//! - **`up` and `down`.** A Lockplane document carries no backfill expressions, so the ones
//!   pgroll requires are honest defaults: the column itself (a column's values are kept as they
//!   are: setting NOT NULL fails on NULLs exactly as the plan's `SET NOT NULL` would, and
//!   while a migration that drops NOT NULL runs, a NULL written through the new version is
//!   refused by the old column), and for a type change `CAST(col AS new_type)` up and
//!   `CAST(col AS old_type)` down. A column added NOT NULL without a default (nor identity,
//!   generation or serial) has no honest `up`: that is [`PgrollError::NeedsUp`], naming the
//!   column.
//! - **What pgroll runs differently.** pgroll expands, then contracts: a migration's drops
//!   take effect when it completes (the new version's views hide the object from the start),
//!   and its `onComplete` SQL runs then too, after its operations complete, in order. `sql`
//!   operations carry no `down`: rolling back a started migration leaves its raw SQL done
//!   (Lockplane's reverse plan is the way back).
//! - **Checked before it is returned.** Every migration is checked against pgroll's rules
//!   ([`check_sequence`]: the code-level rules of its `Validate` and file reader, against the
//!   schema the base catalog gives); a broken rule is [`PgrollError::Invalid`], never output.
//!   A migration has no `name`: pgroll 0.16 takes it from the file name.

mod check;
mod format;

pub use check::{check_file, check_migration, check_sequence, Violation};
pub use format::*;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

// The catalog's `Column` and `Constraint` are spelt `cat::…`: the bare names are pgroll's.
use crate::catalog::{
    self as cat, Catalog, ConstraintDef, ForeignKeyMatch, IdentityGeneration, Index, Table,
};
use crate::compile::{compile_with_phases, fk_action, sequence_options};
use crate::diff::{diff, inline_in_create, mentions_ident, Change, CommentObject, Renames};
use crate::hash::{catalog_hash, CanonicalError, CatalogHash};
use crate::ident::quote_ident;
use crate::plan::{drop_invalid_indexes, Plan, PlanError, Step, TableStats};
use check::VSchema;

/// Index methods pgroll's `create_index` accepts.
const INDEX_METHODS: [&str; 6] = ["btree", "hash", "gist", "spgist", "gin", "brin"];

/// How to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgrollOptions {
    /// The schema pgroll manages (`pgroll --schema`): its tables become operations.
    pub schema: String,
}

impl Default for PgrollOptions {
    fn default() -> Self {
        PgrollOptions {
            schema: "public".into(),
        }
    }
}

/// Why a plan cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum PgrollError {
    /// A column is added NOT NULL without default: pgroll needs an `up` expression to fill
    /// the existing rows, and the document gives none.
    #[error(
        "cannot export to pgroll: column {column} is added NOT NULL without a default, and \
         pgroll needs an `up` expression to fill existing rows, which the document does not \
         give; give the column a default, or add it nullable, fill it, and make it NOT NULL \
         in a later plan"
    )]
    NeedsUp {
        /// `schema.table.column`.
        column: String,
    },
    /// The catalogs cannot be planned (the planner's refusals).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// [`export_plan`] was given catalogs other than the plan's.
    #[error("the plan's {which} catalog is {plan}, the catalog given hashes to {given}")]
    WrongCatalog {
        /// `base` or `target`.
        which: &'static str,
        /// The plan's hash.
        plan: CatalogHash,
        /// The given catalog's hash.
        given: CatalogHash,
    },
    /// [`export_plan`]: the plan's steps are not what its catalogs compile to (statistics
    /// moved since it was planned, so the online forms differ).
    #[error(
        "the plan and its catalogs disagree: {detail} (table statistics changed since it was \
         planned?); plan again"
    )]
    PlanMismatch {
        /// The step without a counterpart.
        detail: String,
    },
    /// The export broke one of pgroll's rules: a bug of the exporter, never output.
    #[error(
        "the pgroll export breaks pgroll's rules (a Lockplane bug): {}",
        violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Invalid {
        /// Each broken rule.
        violations: Vec<Violation>,
    },
    /// A catalog could not be hashed.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// A migration could not be encoded as JSON.
    #[error("cannot encode the migration as JSON: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The pgroll migrations that take `base` to `target` (with `renames`; `stats` grades the plan
/// as [`crate::plan::plan`] does, which decides the SQL of the `sql` operations), in the order
/// to run them.
///
/// ```
/// use lockplane_engine::diff::Renames;
/// use lockplane_engine::dsl::load_file_text;
/// use lockplane_engine::pgroll::{export, Operation, PgrollOptions};
/// use lockplane_engine::plan::TableStats;
///
/// let doc = |columns: &str| {
///     format!("version: 1\nschemas:\n  public:\n    tables:\n      users:\n        columns:\n{columns}")
/// };
/// let id = "          - { name: id, type: bigint, pk: true }\n";
/// let email = "          - { name: email, type: text }\n";
/// let base = load_file_text("a.yaml", &doc(id))?.catalog;
/// let target = load_file_text("b.yaml", &doc(&format!("{id}{email}")))?.catalog;
/// let stats = TableStats::all_empty(&base);
/// let migrations = export(&base, &target, &Renames::none(), &stats, &PgrollOptions::default())?;
/// assert_eq!(migrations.len(), 1);
/// let Operation::AddColumn(add) = &migrations[0].operations[0] else {
///     panic!("expected add_column, got {:?}", migrations[0].operations[0]);
/// };
/// assert_eq!(add.table, "users");
/// assert_eq!((add.column.name.as_str(), add.column.data_type.as_str()), ("email", "text"));
/// assert!(add.column.nullable);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export(
    base: &Catalog,
    target: &Catalog,
    renames: &Renames,
    stats: &TableStats,
    options: &PgrollOptions,
) -> Result<Vec<Migration>, PgrollError> {
    let changes = diff(base, target, renames);
    let compiled = compile_with_phases(base, target, &changes, stats)?;
    let leading = drop_invalid_indexes(base);
    Exporter::new(base, target, &changes, &compiled, &options.schema).run(&leading)
}

/// [`export`] of `plan`, which must be the plan of `base` → `target` with `renames` and
/// `stats` (the catalogs may come back from the ledger, without column positions): its steps
/// after those it starts with (Lockplane's helpers) must be the statements they compile to,
/// else [`PgrollError::PlanMismatch`]. The export follows the plan's order and uses its SQL;
/// the leading steps become `sql`.
pub fn export_plan(
    plan: &Plan,
    base: &Catalog,
    target: &Catalog,
    renames: &Renames,
    stats: &TableStats,
    options: &PgrollOptions,
) -> Result<Vec<Migration>, PgrollError> {
    for (which, planned, catalog) in [
        ("base", &plan.base_hash, base),
        ("target", &plan.target_hash, target),
    ] {
        let given = catalog_hash(catalog)?;
        if &given != planned {
            return Err(PgrollError::WrongCatalog {
                which,
                plan: planned.clone(),
                given,
            });
        }
    }
    let changes = diff(base, target, renames);
    let compiled = compile_with_phases(base, target, &changes, stats)?;
    // The plan starts with steps of its own (Lockplane's helpers); the rest must be the
    // compiled steps. A catalog read back from the ledger has no column positions, so the
    // compiler may order columns differently (in a CREATE TABLE, among a table's column
    // changes): each plan step is matched with the compiled statement that equals it up to
    // column order, and the plan's own order and text are kept.
    let lead = plan.steps.len().saturating_sub(compiled.len());
    let mut unmatched: BTreeMap<(String, bool), Vec<usize>> = BTreeMap::new();
    for (j, (step, _, _)) in compiled.iter().enumerate().rev() {
        unmatched
            .entry((up_to_column_order(&step.sql), step.transactional))
            .or_default()
            .push(j);
    }
    let mut ordered = Vec::with_capacity(compiled.len());
    for planned in &plan.steps[lead..] {
        let key = (up_to_column_order(&planned.sql), planned.transactional);
        let Some(j) = unmatched.get_mut(&key).and_then(Vec::pop) else {
            return Err(PgrollError::PlanMismatch {
                detail: format!(
                    "its step {} `{}` is not one its catalogs compile to",
                    planned.id, planned.sql
                ),
            });
        };
        ordered.push((planned.clone(), compiled[j].1, compiled[j].2));
    }
    if let Some(&j) = unmatched.values().flatten().next() {
        return Err(PgrollError::PlanMismatch {
            detail: format!(
                "its catalogs also compile to `{}`, which the plan lacks",
                compiled[j].0.sql
            ),
        });
    }
    Exporter::new(base, target, &changes, &ordered, &options.schema).run(&plan.steps[..lead])
}

/// A statement with the column list of a `CREATE TABLE` sorted: what stays the same whatever
/// order the table's columns come in (the compiler writes one column or constraint a line).
fn up_to_column_order(sql: &str) -> String {
    if sql.starts_with("CREATE TABLE ") || sql.starts_with("CREATE UNLOGGED TABLE ") {
        if let Some((head, body)) = sql.split_once(" (\n") {
            let body = body.strip_suffix("\n)").unwrap_or(body);
            let mut lines: Vec<&str> = body.split(",\n").map(str::trim).collect();
            lines.sort_unstable();
            return format!("{head} ({})", lines.join(", "));
        }
    }
    sql.to_owned()
}

/// The columns of a compiled `CREATE TABLE`, in its order (each column line starts with the
/// quoted name; constraint lines start with `CONSTRAINT`).
fn created_columns(sql: &str) -> Vec<String> {
    let Some((_, body)) = sql.split_once(" (\n") else {
        return Vec::new();
    };
    body.split(",\n")
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('"')?;
            let mut name = String::new();
            let mut chars = rest.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        name.push('"');
                        chars.next();
                    }
                    '"' => return Some(name),
                    c => name.push(c),
                }
            }
            None
        })
        .collect()
}

/// The columns a constraint uses, in the table's column order for a check or an exclusion
/// (the columns its text mentions, as the planner decides what a dropped column takes with
/// it); key order otherwise.
pub(crate) fn constraint_columns(
    catalog: &Catalog,
    schema: &str,
    table: &str,
    constraint: &cat::Constraint,
) -> Vec<String> {
    match &constraint.definition {
        ConstraintDef::PrimaryKey { columns }
        | ConstraintDef::Unique { columns, .. }
        | ConstraintDef::ForeignKey { columns, .. } => columns.clone(),
        ConstraintDef::Check {
            expression: text, ..
        }
        | ConstraintDef::Exclusion { definition: text } => {
            let columns = catalog
                .schemas
                .get(schema)
                .and_then(|s| s.tables.get(table))
                .map(|t| t.columns_in_order())
                .unwrap_or_default();
            columns
                .into_iter()
                .map(|(n, _)| n.clone())
                .filter(|n| mentions_ident(text, n))
                .collect()
        }
    }
}

/// What an operation touches within its migration, to know when to start a new one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Touch(String, String);

/// What one change becomes.
enum Mapping {
    /// Its steps stay, as `sql`.
    Sql,
    /// Nothing: another operation carries it.
    Skip,
    /// An operation.
    Op(Box<Operation>, Vec<Touch>),
    /// Part of the column's one `alter_column`.
    Facet(String, String, Facet),
}

/// One aspect of a column's `alter_column`.
enum Facet {
    Type {
        to: String,
        up: String,
        down: String,
    },
    SetDefault(String),
    DropDefault,
    Nullable(bool),
    Comment(Option<String>),
}

/// A column's `alter_column` being gathered.
#[derive(Default)]
struct Alter {
    data_type: Option<(String, String, String)>,
    set_default: Option<String>,
    drop_default: bool,
    nullable: Option<bool>,
    comment: Option<Option<String>>,
    /// Positions of the type, nullability and default changes: the operation goes at the last
    /// of them (after whatever the new default or type needs).
    primary: Option<usize>,
    /// Positions of a dropped default or a comment, which can move.
    secondary: Option<usize>,
}

enum Item {
    Op(Box<Operation>, Vec<Touch>),
    Sql(Step),
}

struct Exporter<'a> {
    base: &'a Catalog,
    target: &'a Catalog,
    changes: &'a [Change],
    /// The plan's steps (after its leading ones) with the change each comes from and its
    /// phase rank.
    compiled: &'a [(Step, usize, u8)],
    schema: &'a str,
    /// Tables the plan creates that become `create_table`, with their operation.
    created: BTreeMap<String, CreateTable>,
    /// Tables of the schema the plan creates that pgroll cannot (raw SQL): everything about
    /// them stays SQL too, since pgroll's view of the schema never learns of them.
    sql_tables: BTreeSet<String>,
    /// Columns the plan adds to existing tables of the schema: `(table, column)`.
    added: BTreeSet<(String, String)>,
    /// Columns written `serial` (or `smallserial`, `bigserial`): `(table, column) → type`.
    serial: BTreeMap<(String, String), &'static str>,
    /// Sequences those columns make themselves.
    serial_sequences: BTreeSet<String>,
    /// Foreign keys written inside their table's `create_table`: indexes of their changes.
    folded: BTreeSet<usize>,
    /// Desired table name → live name, for tables renamed by the plan.
    live_names: BTreeMap<String, String>,
    /// Tables of the schema the plan drops or renames (either name).
    moved_tables: BTreeSet<String>,
    /// Constraints of the schema the plan drops: `(table, name)`.
    dropped_constraints: BTreeSet<(String, String)>,
    /// For each change, the positions of its steps among `compiled`.
    steps_of: Vec<Vec<usize>>,
}

impl<'a> Exporter<'a> {
    fn new(
        base: &'a Catalog,
        target: &'a Catalog,
        changes: &'a [Change],
        compiled: &'a [(Step, usize, u8)],
        schema: &'a str,
    ) -> Exporter<'a> {
        let mut e = Exporter {
            base,
            target,
            changes,
            compiled,
            schema,
            created: BTreeMap::new(),
            sql_tables: BTreeSet::new(),
            added: BTreeSet::new(),
            serial: BTreeMap::new(),
            serial_sequences: BTreeSet::new(),
            folded: BTreeSet::new(),
            live_names: BTreeMap::new(),
            moved_tables: BTreeSet::new(),
            dropped_constraints: BTreeSet::new(),
            steps_of: vec![Vec::new(); changes.len()],
        };
        for (j, (_, origin, _)) in compiled.iter().enumerate() {
            if let Some(steps) = e.steps_of.get_mut(*origin) {
                steps.push(j);
            }
        }
        e.prepare();
        e
    }

    /// What the changes say about each other: which tables and columns pgroll creates (and so
    /// carries their comments, serial sequences and foreign keys), which tables were renamed.
    fn prepare(&mut self) {
        let (s, changes) = (self.schema, self.changes);
        let new_sequences: BTreeSet<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::CreateSequence { schema, name, .. } if schema == s => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let mut new_columns: Vec<(&str, &str, &cat::Column)> = Vec::new();
        for change in changes {
            match change {
                Change::CreateTable {
                    schema,
                    name,
                    table,
                    ..
                } if schema == s => {
                    for (c, column) in &table.columns {
                        new_columns.push((name, c, column));
                    }
                }
                Change::AddColumn {
                    schema,
                    table,
                    name,
                    column,
                } if schema == s => {
                    self.added.insert((table.clone(), name.clone()));
                    new_columns.push((table, name, column));
                }
                Change::RenameTable { schema, from, to } if schema == s => {
                    self.live_names.insert(to.clone(), from.clone());
                    self.moved_tables.insert(from.clone());
                    self.moved_tables.insert(to.clone());
                }
                Change::DropTable { schema, name, .. } if schema == s => {
                    self.moved_tables.insert(name.clone());
                }
                Change::DropConstraint {
                    schema,
                    table,
                    name,
                    ..
                } if schema == s => {
                    self.dropped_constraints
                        .insert((table.clone(), name.clone()));
                }
                _ => {}
            }
        }
        // The constraints added to each table: `table → change indexes`.
        let mut added_constraints: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (j, change) in changes.iter().enumerate() {
            if let Change::AddConstraint { schema, table, .. } = change {
                if schema == s {
                    added_constraints.entry(table.as_str()).or_default().push(j);
                }
            }
        }
        if let Some(target_schema) = self.target.schemas.get(s) {
            for (table, name, column) in new_columns {
                let serial = crate::dsl::serial_of(s, target_schema, table, name, column);
                if let Some((ty, sequence)) = serial {
                    if new_sequences.contains(sequence.as_str()) {
                        self.serial.insert((table.to_owned(), name.to_owned()), ty);
                        self.serial_sequences.insert(sequence);
                    }
                }
            }
        }
        // Tables, in plan order: a foreign key goes inside its table's `create_table` when
        // what it references exists by then.
        let mut order: Vec<(usize, usize)> = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            if let (Change::CreateTable { schema, .. }, Some(p)) = (change, self.first_step(i)) {
                if schema == s {
                    order.push((p, i));
                }
            }
        }
        order.sort();
        for (_, i) in order {
            let Change::CreateTable { name, table, .. } = &changes[i] else {
                continue;
            };
            let Some(mut op) = self.create_table(i, name, table) else {
                self.sql_tables.insert(name.clone());
                continue;
            };
            for &j in added_constraints.get(name.as_str()).into_iter().flatten() {
                if let Change::AddConstraint {
                    name: cname,
                    constraint,
                    ..
                } = &changes[j]
                {
                    if let Some(fk) = self.inline_foreign_key(name, table, cname, constraint) {
                        op.constraints.push(fk);
                        self.folded.insert(j);
                    }
                }
            }
            self.created.insert(name.clone(), op);
        }
    }

    /// Position of change `i`'s first step among the compiled steps.
    fn first_step(&self, i: usize) -> Option<usize> {
        self.steps_of
            .get(i)
            .and_then(|steps| steps.first().copied())
    }

    fn run(self, leading: &[Step]) -> Result<Vec<Migration>, PgrollError> {
        let lead = leading.len();
        let mut items: Vec<(usize, Item)> = leading
            .iter()
            .enumerate()
            .map(|(i, s)| (i, Item::Sql(s.clone())))
            .collect();
        let mut alters: BTreeMap<(String, String), Alter> = BTreeMap::new();
        for (i, change) in self.changes.iter().enumerate() {
            let Some(first) = self.first_step(i) else {
                // A change without a step (an unchanged option set) does nothing.
                continue;
            };
            let position = lead + first;
            match self.map(i, change)? {
                Mapping::Skip => {}
                Mapping::Sql => {
                    for &j in &self.steps_of[i] {
                        items.push((lead + j, Item::Sql(self.compiled[j].0.clone())));
                    }
                }
                Mapping::Op(op, touches) => items.push((position, Item::Op(op, touches))),
                Mapping::Facet(table, column, facet) => {
                    let a = alters.entry((table, column)).or_default();
                    let primary = match facet {
                        Facet::Type { to, up, down } => {
                            a.data_type = Some((to, up, down));
                            true
                        }
                        Facet::SetDefault(e) => {
                            a.set_default = Some(e);
                            true
                        }
                        Facet::Nullable(n) => {
                            a.nullable = Some(n);
                            true
                        }
                        Facet::DropDefault => {
                            a.drop_default = true;
                            false
                        }
                        Facet::Comment(c) => {
                            a.comment = Some(c);
                            false
                        }
                    };
                    let slot = if primary {
                        &mut a.primary
                    } else {
                        &mut a.secondary
                    };
                    *slot = Some(match *slot {
                        // The primary changes go last, the movable ones first.
                        Some(p) if primary => p.max(position),
                        Some(p) => p.min(position),
                        None => position,
                    });
                }
            }
        }
        for ((table, column), a) in alters {
            let Some(position) = a.primary.or(a.secondary) else {
                continue;
            };
            let same = quote_ident(&column);
            let (data_type, up, down) = match a.data_type {
                Some((t, up, down)) => (Some(t), up, down),
                None => (None, same.clone(), same),
            };
            let default = match (a.set_default, a.drop_default) {
                (Some(e), _) => Some(Some(e)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let touches = vec![Touch(table.clone(), column.clone())];
            let op = Operation::AlterColumn(AlterColumn {
                table,
                column,
                data_type,
                nullable: a.nullable,
                default,
                comment: a.comment,
                check: None,
                unique: None,
                references: None,
                up,
                down,
            });
            items.push((position, Item::Op(Box::new(op), touches)));
        }
        // Plan order, except that within a phase raw SQL goes after the operations: steps of one
        // phase do not prepare one another across change kinds (what a step needs comes from
        // an earlier phase; renames of constraints, sequences and view columns follow their
        // table's rename, an operation), and since raw SQL after an operation closes its
        // migration, SQL in the middle of a phase would cut it into one migration per step.
        let phase = |p: usize| match p.checked_sub(lead) {
            None => 0u16,
            Some(j) => self
                .compiled
                .get(j)
                .map_or(u16::MAX, |c| u16::from(c.2) + 1),
        };
        items.sort_by_key(|(p, item)| (phase(*p), matches!(item, Item::Sql(_)), *p));
        let mut builder = Builder::new(VSchema::from_catalog(self.base, self.schema));
        for (_, item) in items {
            match item {
                Item::Op(op, touches) => builder.op(*op, touches)?,
                Item::Sql(step) => builder.sql(step),
            }
        }
        let migrations = builder.finish();
        let values: Vec<Value> = migrations
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?;
        let violations = check_sequence(&values, self.base, self.schema);
        if !violations.is_empty() {
            return Err(PgrollError::Invalid { violations });
        }
        Ok(migrations)
    }

    fn map(&self, i: usize, change: &Change) -> Result<Mapping, PgrollError> {
        use Change as C;
        let s = self.schema;
        if table_of(change).is_some_and(|(schema, t)| schema == s && self.sql_tables.contains(t)) {
            return Ok(Mapping::Sql);
        }
        let op = |op: Operation, touches: Vec<Touch>| Ok(Mapping::Op(Box::new(op), touches));
        let facet = |t: &str, c: &str, f: Facet| Ok(Mapping::Facet(t.to_owned(), c.to_owned(), f));
        match change {
            C::CreateTable { schema, name, .. } if schema == s => match self.created.get(name) {
                Some(ct) => op(Operation::CreateTable(ct.clone()), vec![]),
                None => Ok(Mapping::Sql),
            },
            C::DropTable { schema, name, .. } if schema == s => op(
                Operation::DropTable(DropTable { name: name.clone() }),
                vec![],
            ),
            C::RenameTable { schema, from, to } if schema == s => op(
                Operation::RenameTable(RenameTable {
                    from: from.clone(),
                    to: to.clone(),
                }),
                vec![],
            ),
            C::AddColumn {
                schema,
                table,
                name,
                column,
            } if schema == s => {
                let col = self.column(table, name, column);
                let fills_itself = col.nullable
                    || col.default.is_some()
                    || col.generated.is_some()
                    || self.serial.contains_key(&(table.clone(), name.clone()));
                if !fills_itself {
                    return Err(PgrollError::NeedsUp {
                        column: format!("{schema}.{table}.{name}"),
                    });
                }
                op(
                    Operation::AddColumn(AddColumn {
                        table: table.clone(),
                        column: col,
                        up: None,
                    }),
                    vec![Touch(table.clone(), name.clone())],
                )
            }
            C::DropColumn {
                schema,
                table,
                name,
                ..
            } if schema == s => op(
                Operation::DropColumn(DropColumn {
                    table: table.clone(),
                    column: name.clone(),
                }),
                vec![Touch(table.clone(), name.clone())],
            ),
            C::RenameColumn {
                schema,
                table,
                from,
                to,
            } if schema == s => op(
                Operation::RenameColumn(RenameColumn {
                    table: table.clone(),
                    from: from.clone(),
                    to: to.clone(),
                }),
                vec![
                    Touch(table.clone(), from.clone()),
                    Touch(table.clone(), to.clone()),
                ],
            ),
            C::AlterColumnType {
                schema,
                table,
                column,
                from,
                to,
                collation_to,
                ..
            } if schema == s => {
                let same = quote_ident(column);
                let (up, down) = if from == to {
                    (same.clone(), same)
                } else {
                    (
                        format!("CAST({same} AS {to})"),
                        format!("CAST({same} AS {from})"),
                    )
                };
                let to = with_collation(to, collation_to.as_deref());
                facet(table, column, Facet::Type { to, up, down })
            }
            C::SetDefault {
                schema,
                table,
                column,
                expression,
            } if schema == s => facet(table, column, Facet::SetDefault(expression.clone())),
            C::DropDefault {
                schema,
                table,
                column,
            } if schema == s => facet(table, column, Facet::DropDefault),
            C::SetNotNull {
                schema,
                table,
                column,
                ..
            } if schema == s => facet(table, column, Facet::Nullable(false)),
            C::DropNotNull {
                schema,
                table,
                column,
            } if schema == s => facet(table, column, Facet::Nullable(true)),
            C::Comment {
                object:
                    CommentObject::Column {
                        schema,
                        table,
                        column,
                    },
                comment,
            } if schema == s => {
                if self.created.contains_key(table)
                    || self.added.contains(&(table.clone(), column.clone()))
                {
                    // Written with the column.
                    Ok(Mapping::Skip)
                } else {
                    facet(table, column, Facet::Comment(comment.clone()))
                }
            }
            C::Comment {
                object: CommentObject::Table { schema, name },
                ..
            } if schema == s && self.created.contains_key(name) => Ok(Mapping::Skip),
            C::CreateSequence { schema, name, .. } | C::SetSequenceOwner { schema, name, .. }
                if schema == s && self.serial_sequences.contains(name) =>
            {
                // `serial` makes and owns it.
                Ok(Mapping::Skip)
            }
            C::AddConstraint { .. } if self.folded.contains(&i) => Ok(Mapping::Skip),
            C::AddConstraint {
                schema,
                table,
                name,
                constraint,
            } if schema == s => Ok(self.add_constraint(table, name, constraint)),
            C::DropConstraint {
                schema,
                table,
                name,
                constraint,
            } if schema == s => Ok(self.drop_constraint(table, name, constraint)),
            C::RenameConstraint {
                schema,
                table,
                from,
                to,
            } if schema == s => {
                let live = self
                    .base
                    .schemas
                    .get(s)
                    .and_then(|sc| sc.tables.get(self.live_name(table)))
                    .and_then(|t| t.constraints.get(from));
                let seen = live.is_some_and(|c| {
                    matches!(
                        c.definition,
                        ConstraintDef::Unique { .. }
                            | ConstraintDef::Check { .. }
                            | ConstraintDef::ForeignKey { .. }
                    )
                });
                if seen {
                    op(
                        Operation::RenameConstraint(RenameConstraint {
                            table: table.clone(),
                            from: from.clone(),
                            to: to.clone(),
                        }),
                        vec![],
                    )
                } else {
                    Ok(Mapping::Sql)
                }
            }
            C::CreateIndex {
                schema,
                table,
                name,
                index,
                ..
            } if schema == s => Ok(match create_index(table, name, index) {
                Some(ci) => Mapping::Op(Box::new(Operation::CreateIndex(ci)), vec![]),
                None => Mapping::Sql,
            }),
            C::DropIndex { schema, name, .. } if schema == s => op(
                Operation::DropIndex(DropIndex { name: name.clone() }),
                vec![],
            ),
            _ => Ok(Mapping::Sql),
        }
    }

    fn live_name<'n>(&'n self, table: &'n str) -> &'n str {
        self.live_names.get(table).map_or(table, String::as_str)
    }

    /// A column of `create_table` or `add_column`.
    fn column(&self, table: &str, name: &str, c: &cat::Column) -> Column {
        let serial = self.serial.get(&(table.to_owned(), name.to_owned()));
        let generated = match (&c.identity, &c.generated) {
            (Some(identity), _) => Some(Generated {
                expression: None,
                identity: Some(IdentityOptions {
                    user_specified_values: match identity.generation {
                        IdentityGeneration::Always => "ALWAYS",
                        IdentityGeneration::ByDefault => "BY DEFAULT",
                    }
                    .into(),
                    sequence_options: sequence_options(&identity.sequence, false).join(" "),
                }),
            }),
            (None, Some(expression)) => Some(Generated {
                expression: Some(expression.clone()),
                identity: None,
            }),
            (None, None) => None,
        };
        Column {
            name: name.to_owned(),
            data_type: match serial {
                Some(ty) => (*ty).to_owned(),
                None => with_collation(&c.data_type, c.collation.as_deref()),
            },
            nullable: !c.not_null,
            default: if serial.is_some() {
                None
            } else {
                c.default.clone()
            },
            generated,
            comment: c.comment.clone(),
        }
    }

    /// `create_table` for new table `name` (change `i`), or `None` when pgroll cannot say all
    /// of it. Columns come in the order of the plan's `CREATE TABLE`.
    fn create_table(&self, i: usize, name: &str, table: &Table) -> Option<CreateTable> {
        if table.unlogged {
            return None;
        }
        let order: Vec<String> = self
            .first_step(i)
            .map(|j| created_columns(&self.compiled[j].0.sql))
            .unwrap_or_default();
        let mut columns = table.columns_in_order();
        // Stable: columns the statement does not name keep their own order, after the others.
        columns.sort_by_key(|(n, _)| order.iter().position(|o| o == *n).unwrap_or(usize::MAX));
        let inline = inline_in_create(table);
        let mut constraints = Vec::new();
        for (cname, c) in &table.constraints {
            if inline.contains(cname.as_str()) {
                constraints.push(self.table_constraint(name, cname, c)?);
            }
        }
        Some(CreateTable {
            name: name.to_owned(),
            columns: columns
                .into_iter()
                .map(|(n, c)| self.column(name, n, c))
                .collect(),
            constraints,
            comment: table.comment.clone(),
        })
    }

    /// A constraint written inside `create_table`.
    fn table_constraint(&self, table: &str, name: &str, c: &cat::Constraint) -> Option<Constraint> {
        let mut out = Constraint {
            name: name.to_owned(),
            kind: String::new(),
            columns: Vec::new(),
            check: None,
            no_inherit: false,
            nulls_not_distinct: false,
            deferrable: c.deferrable,
            initially_deferred: c.initially_deferred,
            references: None,
            exclude: None,
            index_parameters: None,
        };
        match &c.definition {
            ConstraintDef::PrimaryKey { columns } => {
                out.kind = "primary_key".into();
                out.columns = columns.clone();
            }
            ConstraintDef::Unique {
                columns,
                nulls_not_distinct,
            } => {
                out.kind = "unique".into();
                out.columns = columns.clone();
                out.nulls_not_distinct = *nulls_not_distinct;
            }
            ConstraintDef::Check {
                expression,
                no_inherit,
            } => {
                out.kind = "check".into();
                out.columns = constraint_columns(self.target, self.schema, table, c);
                out.check = Some(expression.clone());
                out.no_inherit = *no_inherit;
            }
            ConstraintDef::ForeignKey { .. } => {
                out.kind = "foreign_key".into();
                let (columns, references) = self.table_reference(c)?;
                out.columns = columns;
                out.references = Some(references);
            }
            ConstraintDef::Exclusion { definition } => {
                out.kind = "exclude".into();
                out.exclude = Some(parse_exclusion(definition)?);
            }
        }
        Some(out)
    }

    /// A foreign key's columns and target, when the target is in the schema.
    fn table_reference(&self, c: &cat::Constraint) -> Option<(Vec<String>, TableReference)> {
        let ConstraintDef::ForeignKey {
            columns,
            references,
            on_update,
            on_delete,
            match_type,
        } = &c.definition
        else {
            return None;
        };
        if references.schema != self.schema || self.sql_tables.contains(&references.table) {
            return None;
        }
        Some((
            columns.clone(),
            TableReference {
                table: references.table.clone(),
                columns: references.columns.clone(),
                on_delete: fk_action(*on_delete).into(),
                on_update: fk_action(*on_update).into(),
                match_type: fk_match(*match_type).into(),
            },
        ))
    }

    /// A foreign key of new table `table` that can be written inside its `create_table`:
    /// valid, and referencing a key that exists when the table is created (its own, one of a
    /// table created before it, or one the base has and the plan keeps).
    fn inline_foreign_key(
        &self,
        table: &str,
        desired: &Table,
        name: &str,
        c: &cat::Constraint,
    ) -> Option<Constraint> {
        let ConstraintDef::ForeignKey { references, .. } = &c.definition else {
            return None;
        };
        if !c.validated || references.schema != self.schema {
            return None;
        }
        let is_key = |def: &ConstraintDef| match def {
            ConstraintDef::PrimaryKey { columns } | ConstraintDef::Unique { columns, .. } => {
                *columns == references.columns
            }
            _ => false,
        };
        let target = references.table.as_str();
        let ready = if target == table {
            let inline = inline_in_create(desired);
            desired
                .constraints
                .iter()
                .any(|(n, k)| inline.contains(n.as_str()) && is_key(&k.definition))
        } else if let Some(earlier) = self.created.get(target) {
            earlier.constraints.iter().any(|k| {
                matches!(k.kind.as_str(), "primary_key" | "unique")
                    && k.columns == references.columns
            })
        } else {
            let kept = |kname: &str| {
                !self
                    .dropped_constraints
                    .contains(&(target.to_owned(), kname.to_owned()))
            };
            !self.moved_tables.contains(target)
                && self
                    .base
                    .schemas
                    .get(self.schema)
                    .and_then(|s| s.tables.get(target))
                    .is_some_and(|t| {
                        t.constraints
                            .iter()
                            .any(|(n, k)| is_key(&k.definition) && kept(n))
                    })
        };
        if !ready {
            return None;
        }
        self.table_constraint(table, name, c)
    }

    /// A constraint added to an existing table (or one a new table could not hold).
    fn add_constraint(&self, table: &str, name: &str, c: &cat::Constraint) -> Mapping {
        // pgroll validates what it adds: a constraint meant to stay NOT VALID is the plan's.
        if !c.validated {
            return Mapping::Sql;
        }
        let identity = |columns: &[String]| -> BTreeMap<String, String> {
            columns
                .iter()
                .map(|col| (col.clone(), quote_ident(col)))
                .collect()
        };
        let touches = |columns: &[String]| -> Vec<Touch> {
            columns
                .iter()
                .map(|col| Touch(table.to_owned(), col.clone()))
                .collect()
        };
        let create = |kind: &str,
                      columns: Vec<String>,
                      check: Option<String>,
                      no_inherit: bool,
                      references: Option<TableReference>| {
            let t = touches(&columns);
            Mapping::Op(
                Box::new(Operation::CreateConstraint(CreateConstraint {
                    table: table.to_owned(),
                    name: name.to_owned(),
                    kind: kind.to_owned(),
                    up: identity(&columns),
                    down: identity(&columns),
                    columns,
                    check,
                    no_inherit,
                    references,
                })),
                t,
            )
        };
        let on_column = |column: &str,
                         check: Option<CheckConstraint>,
                         unique: Option<UniqueConstraint>,
                         references: Option<ColumnReference>| {
            let same = quote_ident(column);
            Mapping::Op(
                Box::new(Operation::AlterColumn(AlterColumn {
                    table: table.to_owned(),
                    column: column.to_owned(),
                    data_type: None,
                    nullable: None,
                    default: None,
                    comment: None,
                    check,
                    unique,
                    references,
                    up: same.clone(),
                    down: same,
                })),
                vec![Touch(table.to_owned(), column.to_owned())],
            )
        };
        match &c.definition {
            ConstraintDef::PrimaryKey { columns } if !c.deferrable => {
                create("primary_key", columns.clone(), None, false, None)
            }
            ConstraintDef::Unique {
                columns,
                nulls_not_distinct: false,
            } if !c.deferrable => match columns.as_slice() {
                [column] => on_column(
                    column,
                    None,
                    Some(UniqueConstraint {
                        name: name.to_owned(),
                    }),
                    None,
                ),
                _ => create("unique", columns.clone(), None, false, None),
            },
            ConstraintDef::Check {
                expression,
                no_inherit,
            } => {
                let columns = constraint_columns(self.target, self.schema, table, c);
                match columns.as_slice() {
                    // A check that reads no column has nothing for pgroll to duplicate.
                    [] => Mapping::Sql,
                    [column] => on_column(
                        column,
                        Some(CheckConstraint {
                            name: name.to_owned(),
                            constraint: expression.clone(),
                            no_inherit: *no_inherit,
                        }),
                        None,
                        None,
                    ),
                    _ => create(
                        "check",
                        columns,
                        Some(expression.clone()),
                        *no_inherit,
                        None,
                    ),
                }
            }
            ConstraintDef::ForeignKey { .. } => {
                let Some((columns, r)) = self.table_reference(c) else {
                    return Mapping::Sql;
                };
                match (columns.as_slice(), r.columns.as_slice()) {
                    ([column], [referenced]) => on_column(
                        column,
                        None,
                        None,
                        Some(ColumnReference {
                            name: name.to_owned(),
                            table: r.table.clone(),
                            column: referenced.clone(),
                            on_delete: r.on_delete.clone(),
                            on_update: r.on_update.clone(),
                            match_type: r.match_type.clone(),
                            deferrable: c.deferrable,
                            initially_deferred: c.initially_deferred,
                        }),
                    ),
                    // create_constraint has no deferrability.
                    _ if c.deferrable => Mapping::Sql,
                    _ => create("foreign_key", columns, None, false, Some(r)),
                }
            }
            _ => Mapping::Sql,
        }
    }

    /// A constraint dropped from a table that stays.
    fn drop_constraint(&self, table: &str, name: &str, c: &cat::Constraint) -> Mapping {
        if matches!(
            c.definition,
            ConstraintDef::PrimaryKey { .. } | ConstraintDef::Exclusion { .. }
        ) {
            // pgroll's schema does not count them as constraints: it would refuse the drop.
            return Mapping::Sql;
        }
        let columns = match &c.definition {
            ConstraintDef::Check { expression, .. } => {
                // The live constraint, already speaking of renamed columns: its table's columns
                // under either name.
                let mut names: Vec<String> = Vec::new();
                for (catalog, t) in [(self.base, self.live_name(table)), (self.target, table)] {
                    if let Some(tab) = catalog
                        .schemas
                        .get(self.schema)
                        .and_then(|s| s.tables.get(t))
                    {
                        for (n, _) in tab.columns_in_order() {
                            if !names.contains(n) && mentions_ident(expression, n) {
                                names.push(n.clone());
                            }
                        }
                    }
                }
                names
            }
            _ => constraint_columns(self.base, self.schema, table, c),
        };
        let touches: Vec<Touch> = columns
            .iter()
            .map(|col| Touch(table.to_owned(), col.clone()))
            .collect();
        match columns.as_slice() {
            [] => Mapping::Sql,
            [column] => {
                let same = quote_ident(column);
                Mapping::Op(
                    Box::new(Operation::DropConstraint(DropConstraint {
                        table: table.to_owned(),
                        name: name.to_owned(),
                        up: same.clone(),
                        down: same,
                    })),
                    touches,
                )
            }
            _ => {
                let identity: BTreeMap<String, String> = columns
                    .iter()
                    .map(|col| (col.clone(), quote_ident(col)))
                    .collect();
                Mapping::Op(
                    Box::new(Operation::DropMulticolumnConstraint(
                        DropMulticolumnConstraint {
                            table: table.to_owned(),
                            name: name.to_owned(),
                            up: identity.clone(),
                            down: identity,
                        },
                    )),
                    touches,
                )
            }
        }
    }
}

/// The table a table-level change is about: `(schema, table)`.
fn table_of(change: &Change) -> Option<(&str, &str)> {
    use Change as C;
    match change {
        C::AddColumn { schema, table, .. }
        | C::DropColumn { schema, table, .. }
        | C::RenameColumn { schema, table, .. }
        | C::AlterColumnType { schema, table, .. }
        | C::SetDefault { schema, table, .. }
        | C::DropDefault { schema, table, .. }
        | C::SetNotNull { schema, table, .. }
        | C::DropNotNull { schema, table, .. }
        | C::AddConstraint { schema, table, .. }
        | C::DropConstraint { schema, table, .. }
        | C::RenameConstraint { schema, table, .. }
        | C::CreateIndex { schema, table, .. }
        | C::DropIndex { schema, table, .. }
        | C::Comment {
            object: CommentObject::Column { schema, table, .. },
            ..
        } => Some((schema, table)),
        C::Comment {
            object: CommentObject::Table { schema, name },
            ..
        } => Some((schema, name)),
        _ => None,
    }
}

/// `create_index` for an index on plain columns that pgroll can write exactly.
fn create_index(table: &str, name: &str, index: &Index) -> Option<CreateIndex> {
    if !index.include.is_empty()
        || index.nulls_not_distinct
        || !INDEX_METHODS.contains(&index.method.as_str())
    {
        return None;
    }
    let mut columns = Vec::new();
    for key in &index.keys {
        // pgroll 0.16 writes `nulls` without its NULLS keyword: only the default ordering
        // (NULLS LAST ascending, FIRST descending) can be exported.
        if key.expression.is_some() || key.nulls_first != key.descending {
            return None;
        }
        columns.push(IndexField {
            column: key.column.clone()?,
            collate: key.collation.clone(),
            opclass: key.opclass.clone().map(|name| Opclass { name }),
            sort: key.descending.then(|| "DESC".to_owned()),
        });
    }
    Some(CreateIndex {
        name: name.to_owned(),
        table: table.to_owned(),
        columns,
        method: index.method.clone(),
        unique: index.unique,
        predicate: index.predicate.clone(),
    })
}

/// `EXCLUDE USING method (elements) [WHERE (predicate)] [DEFERRABLE …]` (as the catalog
/// stores it) → pgroll's parts; `None` for anything else (`INCLUDE`, `WITH`, …), which then
/// stays the plan's SQL.
fn parse_exclusion(definition: &str) -> Option<Exclude> {
    let rest = definition.strip_prefix("EXCLUDE USING ")?;
    let (method, rest) = rest.split_once(' ')?;
    let (elements, rest) = parenthesised(rest)?;
    let mut rest = rest.trim();
    // Deferrability is the constraint's own fields.
    for suffix in [
        "DEFERRABLE INITIALLY DEFERRED",
        "DEFERRABLE INITIALLY IMMEDIATE",
        "DEFERRABLE",
    ] {
        if let Some(r) = rest.strip_suffix(suffix) {
            rest = r.trim_end();
            break;
        }
    }
    let predicate = if rest.is_empty() {
        None
    } else {
        let (p, after) = parenthesised(rest.strip_prefix("WHERE ")?)?;
        if !after.trim().is_empty() {
            return None;
        }
        Some(p.to_owned())
    };
    Some(Exclude {
        index_method: method.to_owned(),
        elements: elements.to_owned(),
        predicate,
    })
}

/// `(inner) rest` → `(inner, rest)`, skipping parentheses inside quotes.
fn parenthesised(text: &str) -> Option<(&str, &str)> {
    let body = text.strip_prefix('(')?;
    let mut depth = 1usize;
    let mut quote: Option<char> = None;
    for (i, ch) in body.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some((&body[..i], &body[i + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

fn with_collation(data_type: &str, collation: Option<&str>) -> String {
    match collation {
        Some(c) => format!("{data_type} COLLATE {c}"),
        None => data_type.to_owned(),
    }
}

fn fk_match(m: ForeignKeyMatch) -> &'static str {
    match m {
        ForeignKeyMatch::Simple => "SIMPLE",
        ForeignKeyMatch::Full => "FULL",
        ForeignKeyMatch::Partial => "PARTIAL",
    }
}

/// The migration being gathered.
struct Current {
    ops: Vec<Operation>,
    values: Vec<Value>,
    /// pgroll's view while validating this migration's operations.
    during: VSchema,
    touched: BTreeSet<Touch>,
    /// `onComplete` SQL was added: the next operation must wait for the next migration.
    sealed: bool,
    /// The last operation is `onComplete` SQL of transactional steps (more can join it).
    open_sql: bool,
}

/// Cuts the plan's items into migrations (see the module docs).
struct Builder {
    /// The schema as it is before the migration being gathered.
    state: VSchema,
    migrations: Vec<Migration>,
    current: Option<Current>,
    /// `sql` met before any operation of a migration: isolated migrations of their own.
    pending: Vec<Step>,
}

impl Builder {
    fn new(state: VSchema) -> Builder {
        Builder {
            state,
            migrations: Vec::new(),
            current: None,
            pending: Vec::new(),
        }
    }

    fn op(&mut self, op: Operation, touches: Vec<Touch>) -> Result<(), PgrollError> {
        let value = serde_json::to_value(&op)?;
        // It joins the migration being gathered when that one takes operations still, the
        // operation touches none of its columns, and pgroll would validate it there
        // (`validate` changes nothing when it refuses).
        let joined = match self.current.as_mut() {
            Some(c) if !c.sealed && !touches.iter().any(|t| c.touched.contains(t)) => {
                c.during.validate(&value).is_ok()
            }
            _ => false,
        };
        if !joined {
            self.close();
            self.flush_pending();
            let mut during = self.state.clone();
            if let Err(rule) = during.validate(&value) {
                return Err(PgrollError::Invalid {
                    violations: vec![Violation {
                        at: format!("migrations[{}].operations[0]", self.migrations.len()),
                        rule,
                    }],
                });
            }
            self.current = Some(Current {
                ops: Vec::new(),
                values: Vec::new(),
                during,
                touched: BTreeSet::new(),
                sealed: false,
                open_sql: false,
            });
        }
        if let Some(current) = self.current.as_mut() {
            current.touched.extend(touches);
            current.ops.push(op);
            current.values.push(value);
            current.open_sql = false;
        }
        Ok(())
    }

    fn sql(&mut self, step: Step) {
        let Some(current) = self.current.as_mut() else {
            self.pending.push(step);
            return;
        };
        current.sealed = true;
        if step.transactional && current.open_sql {
            if let Some(Operation::Sql(last)) = current.ops.last_mut() {
                last.up.push_str(";\n");
                last.up.push_str(&step.sql);
                return;
            }
        }
        current.open_sql = step.transactional;
        current.ops.push(Operation::Sql(RawSql {
            up: step.sql,
            on_complete: true,
        }));
        // Raw SQL is opaque to pgroll's view of the schema.
        current.values.push(Value::Null);
    }

    /// Isolated `sql` migrations for the steps met before any operation.
    fn flush_pending(&mut self) {
        let mut up: Option<String> = None;
        for step in std::mem::take(&mut self.pending) {
            if step.transactional {
                match &mut up {
                    Some(text) => {
                        text.push_str(";\n");
                        text.push_str(&step.sql);
                    }
                    None => up = Some(step.sql),
                }
            } else {
                if let Some(text) = up.take() {
                    self.isolated(text);
                }
                self.isolated(step.sql);
            }
        }
        if let Some(text) = up {
            self.isolated(text);
        }
    }

    fn isolated(&mut self, up: String) {
        self.migrations.push(Migration {
            operations: vec![Operation::Sql(RawSql {
                up,
                on_complete: false,
            })],
        });
    }

    fn close(&mut self) {
        if let Some(current) = self.current.take() {
            for value in &current.values {
                self.state.complete(value);
            }
            self.migrations.push(Migration {
                operations: current.ops,
            });
        }
    }

    fn finish(mut self) -> Vec<Migration> {
        self.close();
        self.flush_pending();
        self.migrations
    }
}
