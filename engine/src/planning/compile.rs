//! Changes → SQL steps: the exact statements, their order, locks and hazards.
//!
//! Every identifier goes through [`crate::ident`]; every expression is the catalog's text,
//! which Postgres printed (schema-qualified) and [`crate::normalize`] re-printed, so it is
//! valid SQL that means the same thing whatever the `search_path`.
//!
//! # Order
//!
//! Each change lands in a `Phase`; steps are sorted by phase, and within a phase keep the
//! order [`crate::diff::diff`] gave (names sorted, columns in table order, views in
//! dependency order) except where a dependency says otherwise (generated columns). The
//! phases follow dependencies: renames first (every later statement uses the new names);
//! then drops, dependents before what they depend on (policies, views, foreign keys, tables
//! — a dropped table's own foreign keys hold on to the keys they reference until it goes —,
//! other constraints, indexes, columns with generated ones first, defaults); then creates,
//! dependencies first (extensions, schemas, enums, sequences, tables, columns, type changes,
//! generated columns (they read the others, whose types must be final), other column
//! changes, sequence owners, primary key/unique/check/exclusion
//! constraints, foreign keys, indexes, views, RLS, policies, grants, comments); then the
//! drops that must wait until nothing uses the object any more
//! (sequences, enums, schemas, extensions). Non-transactional steps come after the
//! transaction (concurrent index builds and drops, online primary keys and unique
//! constraints, validations, the online SET NOT NULL, comments on what those build), except
//! `ALTER TYPE … ADD VALUE` whose label the transaction uses, which comes before it.
//!
//! # Online forms
//!
//! On an existing table with rows: indexes are built and dropped `CONCURRENTLY`; foreign keys
//! and checks are added `NOT VALID` and validated in a separate step (`SHARE UPDATE
//! EXCLUSIVE`, reads and writes go on); `SET NOT NULL` is preceded by a validated
//! `CHECK (col IS NOT NULL)`, which lets Postgres 12+ skip its own scan under `ACCESS
//! EXCLUSIVE`, and the check is dropped after. A primary key or unique constraint on a table
//! the statistics show has rows is built as `CREATE UNIQUE INDEX CONCURRENTLY` under its name,
//! then attached with `ADD CONSTRAINT … USING INDEX` (a brief catalog change), unless a
//! foreign key the plan adds needs it in the transaction or, for a primary key, a key column
//! is not already NOT NULL. On new or empty tables the plain forms run in the transaction.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::*;
use crate::diff::{inline_in_create, Change, CommentObject, GrantObject, LabelPosition};
use crate::ident::{qualified, quote_ident, quote_literal};
use crate::plan::{Hazard, HazardKind, LockLevel, PlanError, Refusal, Step, TableSize, TableStats};

/// Where a step goes in the plan. Declaration order is execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// `ALTER TYPE … ADD VALUE` whose label the transaction uses: before it, on its own.
    PreEnumLabel,
    Rename,
    /// `OWNED BY NONE`: before any drop, so that dropping the old owner column does not take
    /// a kept sequence with it.
    Disown,
    DropPolicy,
    DropView,
    DropForeignKey,
    /// Before other constraints and indexes: a dropped table's foreign keys go with it, and
    /// until then they hold on to the key or unique index they reference.
    DropTable,
    DropConstraint,
    DropIndex,
    /// A generated column that stays as a plain one stops depending on the columns it read
    /// before any of them is dropped.
    DropExpression,
    DropColumn,
    DropColumnProperty,
    DropRecreatedEnum,
    CreateExtension,
    CreateSchema,
    CreateEnum,
    AddEnumLabel,
    CreateSequence,
    CreateTable,
    TableProperty,
    AddColumn,
    AlterColumnType,
    /// After type changes: Postgres refuses to change the type of a column that a generated
    /// column reads, so generated columns (new or re-created) are added once types are final.
    AddGeneratedColumn,
    DropNotNull,
    SetNotNull,
    SetDefault,
    Identity,
    SequenceOwner,
    AddConstraint,
    AddForeignKey,
    ValidateConstraint,
    CreateIndex,
    CreateView,
    RowSecurity,
    Policy,
    Revoke,
    Grant,
    Comment,
    DropSequence,
    DropEnum,
    DropSchema,
    DropExtension,
    // Non-transactional, after the transaction.
    PostDropIndex,
    PostCreateIndex,
    PostValidate,
    PostNotNullValidate,
    PostSetNotNull,
    PostDropNotNullCheck,
    PostComment,
}

impl Phase {
    fn transactional(self) -> bool {
        !matches!(
            self,
            Phase::PreEnumLabel
                | Phase::PostDropIndex
                | Phase::PostCreateIndex
                | Phase::PostValidate
                | Phase::PostNotNullValidate
                | Phase::PostSetNotNull
                | Phase::PostDropNotNullCheck
                | Phase::PostComment
        )
    }
}

struct Draft {
    phase: Phase,
    origin: usize,
    summary: String,
    sql: String,
    lock: LockLevel,
    hazards: Vec<Hazard>,
}

/// How much a table holds, for grading hazards and choosing online forms.
#[derive(Debug, Clone, Copy)]
enum Population {
    /// Created by this plan.
    New,
    /// Exists; size from the statistics.
    Known(TableSize),
    /// Exists, but the statistics do not mention it: assume it has rows.
    Unknown,
}

impl Population {
    /// Whether the online (non-blocking) forms are worth it.
    fn populated(self) -> bool {
        match self {
            Population::New => false,
            Population::Known(s) => !s.is_empty(),
            Population::Unknown => true,
        }
    }

    fn exists(self) -> bool {
        !matches!(self, Population::New)
    }

    /// `"public.users (~12,000 rows, 1.4 MB)"`-style grading of the table's size.
    fn describe(self) -> String {
        match self {
            Population::New => "a table created by this plan (empty): low risk".into(),
            Population::Unknown => {
                "a table of unknown size (no statistics): assume it is large".into()
            }
            Population::Known(s) if s.is_empty() => "an empty table: low risk".into(),
            Population::Known(s) => {
                let rows = if s.rows >= 0 {
                    format!("~{} rows", thousands(s.rows))
                } else {
                    "an unknown number of rows (never analysed)".into()
                };
                let large = s.rows >= 1_000_000 || s.bytes >= 1 << 30;
                format!(
                    "{}a table of {rows}, {}",
                    if large { "a large table: " } else { "" },
                    bytes(s.bytes)
                )
            }
        }
    }
}

/// The rewrite rate a plan's estimates assume: a heap rewritten and its indexes rebuilt on
/// ordinary hardware (a conservative figure: the estimate is there to size
/// `statement_timeout`, and to warn).
const REWRITE_BYTES_PER_SECOND: i64 = 50 << 20;

impl Population {
    /// How long rewriting the table may hold its lock, from its size: `"; estimated …"`.
    fn rewrite_estimate(self) -> String {
        match self {
            Population::Known(s) if !s.is_empty() && s.bytes > 0 => {
                let seconds = (s.bytes + REWRITE_BYTES_PER_SECOND - 1) / REWRITE_BYTES_PER_SECOND;
                format!(
                    "; estimated {} under ACCESS EXCLUSIVE at 50 MB/s, within the apply's \
                     statement_timeout (60 s unless set: --statement-timeout)",
                    if seconds <= 1 {
                        "about a second".to_owned()
                    } else {
                        format!("about {} s", thousands(seconds))
                    }
                )
            }
            Population::Unknown => {
                "; its duration cannot be estimated without statistics (ANALYZE the table); \
                 the apply's statement_timeout bounds it"
                    .into()
            }
            _ => String::new(),
        }
    }
}

fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut value = n.max(0) as u64;
    let mut unit = 0;
    // Integer arithmetic with one decimal: hashes must not depend on float formatting.
    let mut tenths = value * 10;
    while value >= 1024 && unit < UNITS.len() - 1 {
        tenths = value * 10 / 1024;
        value /= 1024;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
    }
}

struct Compiler<'a> {
    live: &'a Catalog,
    desired: &'a Catalog,
    changes: &'a [Change],
    stats: &'a TableStats,
    /// `(schema, desired name) → live name` of renamed tables.
    renamed: BTreeMap<(String, String), String>,
    created: BTreeSet<(String, String)>,
    /// Indexes created inside the transaction, `(schema, name)`.
    tx_indexes: BTreeSet<(String, String)>,
    /// Indexes built concurrently, `(schema, name)`: their comments must wait for them.
    concurrent_indexes: BTreeSet<(String, String)>,
    /// Primary keys and unique constraints added online (`CREATE UNIQUE INDEX CONCURRENTLY`,
    /// then `ADD CONSTRAINT … USING INDEX`), `(schema, table, name)`: their comments must
    /// wait for them.
    online_keys: BTreeSet<(String, String, String)>,
    drafts: Vec<Draft>,
    origin: usize,
    /// Changes found impossible while compiling (they depend on table sizes, which the diff
    /// does not see).
    refusals: Vec<Refusal>,
}

/// The steps for `changes`, in execution order. `live` and `desired` are the catalogs the
/// changes were computed from; `stats` grades hazards and chooses online forms.
pub fn compile(
    live: &Catalog,
    desired: &Catalog,
    changes: &[Change],
    stats: &TableStats,
) -> Result<Vec<Step>, PlanError> {
    Ok(compile_with_origins(live, desired, changes, stats)?
        .into_iter()
        .map(|(step, _)| step)
        .collect())
}

/// Like [`compile`], with the index in `changes` each step comes from.
pub(crate) fn compile_with_origins(
    live: &Catalog,
    desired: &Catalog,
    changes: &[Change],
    stats: &TableStats,
) -> Result<Vec<(Step, usize)>, PlanError> {
    Ok(compile_with_phases(live, desired, changes, stats)?
        .into_iter()
        .map(|(step, origin, _)| (step, origin))
        .collect())
}

/// Like [`compile_with_origins`], with each step's `Phase` as a rank (steps come in rank
/// order), for callers that regroup steps within a phase (the pgroll export).
pub(crate) fn compile_with_phases(
    live: &Catalog,
    desired: &Catalog,
    changes: &[Change],
    stats: &TableStats,
) -> Result<Vec<(Step, usize, u8)>, PlanError> {
    let refusals: Vec<Refusal> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Refuse { object, reason } => Some(Refusal {
                object: object.clone(),
                reason: reason.clone(),
            }),
            _ => None,
        })
        .collect();
    if !refusals.is_empty() {
        return Err(PlanError::Refused { refusals });
    }
    let mut c = Compiler {
        live,
        desired,
        changes,
        stats,
        renamed: BTreeMap::new(),
        created: BTreeSet::new(),
        tx_indexes: BTreeSet::new(),
        concurrent_indexes: BTreeSet::new(),
        online_keys: BTreeSet::new(),
        drafts: Vec::new(),
        origin: 0,
        refusals: Vec::new(),
    };
    for change in changes {
        match change {
            Change::RenameTable { schema, from, to } => {
                c.renamed.insert((schema.clone(), to.clone()), from.clone());
            }
            Change::CreateTable { schema, name, .. } => {
                c.created.insert((schema.clone(), name.clone()));
            }
            Change::CreateIndex {
                schema,
                table,
                name,
                in_transaction,
                ..
            } => {
                if *in_transaction || !c.population(schema, table).populated() {
                    c.tx_indexes.insert((schema.clone(), name.clone()));
                } else {
                    c.concurrent_indexes.insert((schema.clone(), name.clone()));
                }
            }
            _ => {}
        }
    }
    for change in changes {
        if let Change::AddConstraint {
            schema,
            table,
            name,
            constraint,
        } = change
        {
            if c.key_online(schema, table, constraint) {
                c.online_keys
                    .insert((schema.clone(), table.clone(), name.clone()));
            }
        }
    }
    for (i, change) in changes.iter().enumerate() {
        c.origin = i;
        c.change(change);
    }
    if !c.refusals.is_empty() {
        return Err(PlanError::Refused {
            refusals: c.refusals,
        });
    }
    c.place_enum_labels();
    let mut drafts = c.drafts;
    drafts.sort_by_key(|d| (d.phase, within_phase(&changes[d.origin])));
    Ok(drafts
        .into_iter()
        .map(|d| {
            (
                Step {
                    id: String::new(),
                    summary: d.summary,
                    sql: d.sql,
                    transactional: d.phase.transactional(),
                    lock: d.lock,
                    hazards: d.hazards,
                    reaches: None,
                },
                d.origin,
                d.phase as u8,
            )
        })
        .collect())
}

/// Order inside a phase where Postgres needs one beyond the diff's: a generated column reads
/// plain columns of its table (never another generated one), so it is dropped before them
/// (it is added after them by its own phase). The sort is stable, so everything else keeps
/// the diff's order.
fn within_phase(change: &Change) -> u8 {
    match change {
        Change::DropColumn { column, .. } => u8::from(column.generated.is_none()),
        _ => 0,
    }
}

fn path(parts: &[&str]) -> String {
    parts.join(".")
}

fn grantee(role: &str) -> String {
    if role == "public" {
        "PUBLIC".into()
    } else {
        quote_ident(role)
    }
}

fn roles_sql(roles: &[String]) -> String {
    roles
        .iter()
        .map(|r| grantee(r))
        .collect::<Vec<_>>()
        .join(", ")
}

fn columns_sql(cols: &[String]) -> String {
    cols.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Compiler<'_> {
    fn population(&self, schema: &str, table: &str) -> Population {
        if self
            .created
            .contains(&(schema.to_owned(), table.to_owned()))
        {
            return Population::New;
        }
        let live_name = self
            .renamed
            .get(&(schema.to_owned(), table.to_owned()))
            .map(String::as_str)
            .unwrap_or(table);
        match self.stats.get(schema, live_name) {
            Some(size) => Population::Known(size),
            None => Population::Unknown,
        }
    }

    /// `ALTER TABLE … {clause} ROW LEVEL SECURITY`: a catalog change only, under a brief
    /// ACCESS EXCLUSIVE lock. `FORCE` applies the policies to the owner too.
    fn row_security(&mut self, schema: &str, table: &str, summary: String, clause: &str) {
        let mut hazards: Vec<Hazard> = self
            .lock_hazard(schema, table, "briefly (catalog change only)")
            .into_iter()
            .collect();
        let widening = match clause {
            "DISABLE" => Some(
                "row-level security is disabled: every role with privileges on the table sees \
                 and changes every row",
            ),
            "NO FORCE" => Some("the table's owner is no longer subject to its policies"),
            _ => None,
        };
        if let Some(why) = widening {
            hazards.extend(self.widens(schema, table, why.to_owned()));
        }
        let owner_too = if clause.ends_with("FORCE") {
            " for its owner too"
        } else {
            ""
        };
        self.push(
            Phase::RowSecurity,
            format!("{summary} on {schema}.{table}{owner_too}"),
            format!(
                "ALTER TABLE {} {clause} ROW LEVEL SECURITY",
                qualified(schema, table)
            ),
            LockLevel::AccessExclusive,
            hazards,
        )
    }

    fn push(
        &mut self,
        phase: Phase,
        summary: String,
        sql: String,
        lock: LockLevel,
        hazards: Vec<Hazard>,
    ) {
        self.drafts.push(Draft {
            phase,
            origin: self.origin,
            summary,
            sql,
            lock,
            hazards,
        });
    }

    /// The `ACCESS EXCLUSIVE` hazard of a statement on an existing table with rows. `held`
    /// says what happens while the lock is held.
    /// A [`HazardKind::WidensAccess`] hazard on `schema.name`, unless the object is new in
    /// this plan (no one had access to widen).
    fn widens(&self, schema: &str, name: &str, detail: String) -> Option<Hazard> {
        let existed = self.live.schemas.get(schema).is_some_and(|s| {
            s.tables.contains_key(name)
                || s.views.contains_key(name)
                || s.sequences.contains_key(name)
        });
        let created = self.created.contains(&(schema.to_owned(), name.to_owned()));
        (existed && !created).then(|| Hazard {
            kind: HazardKind::WidensAccess,
            object: path(&[schema, name]),
            detail,
        })
    }

    fn lock_hazard(&self, schema: &str, table: &str, held: &str) -> Option<Hazard> {
        let pop = self.population(schema, table);
        pop.populated().then(|| Hazard {
            kind: HazardKind::AccessExclusiveLock,
            object: path(&[schema, table]),
            detail: format!(
                "takes ACCESS EXCLUSIVE on {}: every read and write of it waits {held}; \
                 the statement itself waits behind running transactions (lock_timeout bounds \
                 that)",
                pop.describe()
            ),
        })
    }

    /// Hazards for a structural change of `schema.table` that unsupported objects may depend
    /// on: triggers and rules on the table always; for destructive changes also every
    /// function, procedure, materialized view and rule whose body Lockplane cannot read.
    fn unsupported_hazards(&self, schema: &str, table: &str, destructive: bool) -> Vec<Hazard> {
        let live_table = self
            .renamed
            .get(&(schema.to_owned(), table.to_owned()))
            .map(String::as_str)
            .unwrap_or(table);
        let on_table: Vec<String> = self
            .live
            .unsupported
            .iter()
            .filter(|u| {
                u.schema == schema
                    && matches!(u.kind.as_str(), "trigger" | "rule")
                    && u.name
                        .strip_prefix(live_table)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .map(|u| format!("{} {}.{}", u.kind, u.schema, u.name))
            .collect();
        let mut out = Vec::new();
        if !on_table.is_empty() {
            out.push(Hazard {
                kind: HazardKind::DependsOnUnsupported,
                object: path(&[schema, table]),
                detail: format!(
                    "{} on this table {} not managed by Lockplane and may depend on what this \
                     step changes: {}",
                    if on_table.len() == 1 {
                        "an object"
                    } else {
                        "objects"
                    },
                    if on_table.len() == 1 { "is" } else { "are" },
                    on_table.join(", ")
                ),
            });
        }
        if destructive {
            out.extend(self.body_hazards(&path(&[schema, table])));
        }
        out
    }

    /// The hazard of removing or renaming `object` while the database holds functions,
    /// procedures or materialized views whose bodies Lockplane cannot read (any of them may
    /// use it).
    fn body_hazards(&self, object: &str) -> Option<Hazard> {
        let bodies: Vec<String> = self
            .live
            .unsupported
            .iter()
            .filter(|u| {
                matches!(
                    u.kind.as_str(),
                    "function" | "procedure" | "window function" | "materialized view"
                )
            })
            .map(|u| format!("{} {}.{}", u.kind, u.schema, u.name))
            .collect();
        if bodies.is_empty() {
            return None;
        }
        let shown: Vec<&str> = bodies.iter().take(5).map(String::as_str).collect();
        Some(Hazard {
            kind: HazardKind::DependsOnUnsupported,
            object: object.to_owned(),
            detail: format!(
                "the database has {} object(s) whose bodies Lockplane cannot read and which \
                 may use what this step removes or renames: {}{}",
                bodies.len(),
                shown.join(", "),
                if bodies.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            ),
        })
    }

    fn change(&mut self, change: &Change) {
        use Change as C;
        match change {
            C::Refuse { .. } => {}
            C::CreateExtension { name, schema } => self.push(
                Phase::CreateExtension,
                format!("create extension {name}"),
                format!(
                    "CREATE EXTENSION {} WITH SCHEMA {}",
                    quote_ident(name),
                    quote_ident(schema)
                ),
                LockLevel::None,
                vec![],
            ),
            C::DropExtension { name } => self.push(
                Phase::DropExtension,
                format!("drop extension {name}"),
                format!("DROP EXTENSION {}", quote_ident(name)),
                LockLevel::AccessExclusive,
                vec![],
            ),
            C::SetExtensionSchema { name, schema } => self.push(
                Phase::CreateExtension,
                format!("move extension {name} to schema {schema}"),
                format!(
                    "ALTER EXTENSION {} SET SCHEMA {}",
                    quote_ident(name),
                    quote_ident(schema)
                ),
                LockLevel::None,
                vec![],
            ),
            C::CreateSchema { name } => self.push(
                Phase::CreateSchema,
                format!("create schema {name}"),
                format!("CREATE SCHEMA {}", quote_ident(name)),
                LockLevel::None,
                vec![],
            ),
            C::DropSchema { name } => self.push(
                Phase::DropSchema,
                format!("drop schema {name} (empty by now)"),
                format!("DROP SCHEMA {}", quote_ident(name)),
                LockLevel::None,
                vec![],
            ),
            C::CreateEnum {
                schema,
                name,
                labels,
            } => self.push(
                Phase::CreateEnum,
                format!("create enum {schema}.{name}"),
                format!(
                    "CREATE TYPE {} AS ENUM ({})",
                    qualified(schema, name),
                    labels
                        .iter()
                        .map(|l| quote_literal(l))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                LockLevel::None,
                vec![],
            ),
            C::AddEnumLabel {
                schema,
                name,
                label,
                position,
            } => {
                let place = match position {
                    LabelPosition::End => String::new(),
                    LabelPosition::Before(l) => format!(" BEFORE {}", quote_literal(l)),
                    LabelPosition::After(l) => format!(" AFTER {}", quote_literal(l)),
                };
                self.push(
                    Phase::AddEnumLabel,
                    format!("add label {label:?} to enum {schema}.{name}"),
                    format!(
                        "ALTER TYPE {} ADD VALUE {}{place}",
                        qualified(schema, name),
                        quote_literal(label)
                    ),
                    LockLevel::None,
                    vec![],
                )
            }
            C::DropEnum {
                schema,
                name,
                recreated,
            } => self.push(
                if *recreated {
                    Phase::DropRecreatedEnum
                } else {
                    Phase::DropEnum
                },
                if *recreated {
                    format!("drop enum {schema}.{name} to re-create it with other labels (nothing uses it)")
                } else {
                    format!("drop enum {schema}.{name}")
                },
                format!("DROP TYPE {}", qualified(schema, name)),
                LockLevel::AccessExclusive,
                vec![],
            ),
            C::CreateSequence {
                schema,
                name,
                options,
            } => {
                let opts = sequence_options(options, true);
                self.push(
                    Phase::CreateSequence,
                    format!("create sequence {schema}.{name}"),
                    format!(
                        "CREATE SEQUENCE {}{}",
                        qualified(schema, name),
                        if opts.is_empty() {
                            String::new()
                        } else {
                            format!(" {}", opts.join(" "))
                        }
                    ),
                    LockLevel::None,
                    vec![],
                )
            }
            C::AlterSequence {
                schema,
                name,
                from,
                to,
            } => {
                let opts = sequence_changes(from, to, true);
                if !opts.is_empty() {
                    self.push(
                        Phase::CreateSequence,
                        format!("change options of sequence {schema}.{name}"),
                        format!("ALTER SEQUENCE {} {}", qualified(schema, name), opts.join(" ")),
                        LockLevel::ShareRowExclusive,
                        vec![],
                    )
                }
            }
            C::RenameSequence { schema, from, to } => self.push(
                Phase::Rename,
                format!("rename sequence {schema}.{from} to {to}"),
                format!(
                    "ALTER SEQUENCE {} RENAME TO {}",
                    qualified(schema, from),
                    quote_ident(to)
                ),
                LockLevel::AccessExclusive,
                vec![],
            ),
            C::SetSequenceOwner {
                schema,
                name,
                owner,
            } => self.push(
                if owner.is_some() {
                    Phase::SequenceOwner
                } else {
                    Phase::Disown
                },
                match owner {
                    Some(o) => format!(
                        "sequence {schema}.{name} is owned by {schema}.{}.{}",
                        o.table, o.column
                    ),
                    None => format!("sequence {schema}.{name} is owned by no column"),
                },
                format!(
                    "ALTER SEQUENCE {} OWNED BY {}",
                    qualified(schema, name),
                    match owner {
                        Some(o) => format!("{}.{}", qualified(schema, &o.table), quote_ident(&o.column)),
                        None => "NONE".into(),
                    }
                ),
                LockLevel::ShareRowExclusive,
                vec![],
            ),
            C::DropSequence { schema, name } => self.push(
                Phase::DropSequence,
                format!("drop sequence {schema}.{name}"),
                format!("DROP SEQUENCE {}", qualified(schema, name)),
                LockLevel::AccessExclusive,
                vec![],
            ),
            C::CreateTable {
                schema,
                name,
                table,
            } => self.create_table(schema, name, table),
            C::DropTable {
                schema,
                name,
                table,
            } => {
                let pop = self.population(schema, name);
                let mut hazards = vec![Hazard {
                    kind: HazardKind::DataLoss,
                    object: path(&[schema, name]),
                    detail: format!(
                        "drops the table and every row in it ({}); its {} column(s) cannot be \
                         brought back by undoing the plan",
                        pop.describe(),
                        table.columns.len()
                    ),
                }];
                hazards.extend(self.unsupported_hazards(schema, name, true));
                let owned: Vec<String> = self
                    .live
                    .schemas
                    .get(schema)
                    .map(|s| {
                        s.sequences
                            .iter()
                            .filter(|(_, q)| q.owned_by.as_ref().is_some_and(|o| o.table == *name))
                            .map(|(n, _)| format!("{schema}.{n}"))
                            .collect()
                    })
                    .unwrap_or_default();
                self.push(
                    Phase::DropTable,
                    if owned.is_empty() {
                        format!("drop table {schema}.{name}")
                    } else {
                        format!(
                            "drop table {schema}.{name} (and the sequences it owns: {})",
                            owned.join(", ")
                        )
                    },
                    format!("DROP TABLE {}", qualified(schema, name)),
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::RenameTable { schema, from, to } => {
                let mut hazards: Vec<Hazard> =
                    self.lock_hazard(schema, to, "briefly (catalog change only)").into_iter().collect();
                hazards.extend(self.unsupported_hazards(schema, to, true));
                self.push(
                    Phase::Rename,
                    format!("rename table {schema}.{from} to {to}"),
                    format!(
                        "ALTER TABLE {} RENAME TO {}",
                        qualified(schema, from),
                        quote_ident(to)
                    ),
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::SetUnlogged {
                schema,
                table,
                unlogged,
            } => {
                let pop = self.population(schema, table);
                let mut hazards = vec![Hazard {
                    kind: HazardKind::TableRewrite,
                    object: path(&[schema, table]),
                    detail: format!(
                        "SET {} rewrites the whole table and its indexes ({}{})",
                        if *unlogged { "UNLOGGED" } else { "LOGGED" },
                        pop.describe(),
                        pop.rewrite_estimate()
                    ),
                }];
                hazards.extend(self.lock_hazard(schema, table, "until the rewrite finishes"));
                hazards.extend(self.unsupported_hazards(schema, table, false));
                self.push(
                    Phase::TableProperty,
                    format!(
                        "make table {schema}.{table} {}",
                        if *unlogged { "unlogged" } else { "logged" }
                    ),
                    format!(
                        "ALTER TABLE {} SET {}",
                        qualified(schema, table),
                        if *unlogged { "UNLOGGED" } else { "LOGGED" }
                    ),
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::AddColumn {
                schema,
                table,
                name,
                column,
            } => self.add_column(schema, table, name, column),
            C::DropColumn {
                schema,
                table,
                name,
                column,
                recreated,
            } => {
                let pop = self.population(schema, table);
                let mut hazards = Vec::new();
                if column.generated.is_none() {
                    hazards.push(Hazard {
                        kind: HazardKind::DataLoss,
                        object: path(&[schema, table, name]),
                        detail: format!(
                            "drops the column and its values in every row ({})",
                            pop.describe()
                        ),
                    });
                }
                hazards.extend(self.lock_hazard(schema, table, "briefly (catalog change only)"));
                hazards.extend(self.unsupported_hazards(schema, table, true));
                self.push(
                    Phase::DropColumn,
                    if *recreated {
                        format!(
                            "drop column {schema}.{table}.{name} (added back as a generated \
                             column, its values computed again)"
                        )
                    } else {
                        format!("drop column {schema}.{table}.{name}")
                    },
                    format!(
                        "ALTER TABLE {} DROP COLUMN {}",
                        qualified(schema, table),
                        quote_ident(name)
                    ),
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::RenameColumn {
                schema,
                table,
                from,
                to,
            } => {
                // Table renames run before column renames (diff emits them first), so the
                // table already has its desired name here.
                let mut hazards: Vec<Hazard> =
                    self.lock_hazard(schema, table, "briefly (catalog change only)").into_iter().collect();
                hazards.extend(self.unsupported_hazards(schema, table, true));
                self.push(
                    Phase::Rename,
                    format!("rename column {schema}.{table}.{from} to {to}"),
                    format!(
                        "ALTER TABLE {} RENAME COLUMN {} TO {}",
                        qualified(schema, table),
                        quote_ident(from),
                        quote_ident(to)
                    ),
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::AlterColumnType {
                schema,
                table,
                column,
                from,
                to,
                collation_from,
                collation_to,
            } => self.alter_type(schema, table, column, from, to, collation_from, collation_to),
            C::SetDefault {
                schema,
                table,
                column,
                expression,
            } => self.column_alter(
                Phase::SetDefault,
                schema,
                table,
                column,
                format!("set default of {schema}.{table}.{column}"),
                format!("SET DEFAULT {expression}"),
            ),
            C::DropDefault {
                schema,
                table,
                column,
            } => self.column_alter(
                Phase::DropColumnProperty,
                schema,
                table,
                column,
                format!("drop default of {schema}.{table}.{column}"),
                "DROP DEFAULT".into(),
            ),
            C::DropNotNull {
                schema,
                table,
                column,
            } => self.column_alter(
                Phase::DropNotNull,
                schema,
                table,
                column,
                format!("allow NULL in {schema}.{table}.{column}"),
                "DROP NOT NULL".into(),
            ),
            C::SetNotNull {
                schema,
                table,
                column,
                online_allowed,
            } => self.set_not_null(schema, table, column, *online_allowed),
            C::AddIdentity {
                schema,
                table,
                column,
                identity,
            } => {
                let opts = sequence_options(&identity.sequence, false);
                self.column_alter(
                    Phase::Identity,
                    schema,
                    table,
                    column,
                    format!("make {schema}.{table}.{column} an identity column"),
                    format!(
                        "ADD GENERATED {} AS IDENTITY{}",
                        generation(identity.generation),
                        if opts.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", opts.join(" "))
                        }
                    ),
                )
            }
            C::AlterIdentity {
                schema,
                table,
                column,
                from,
                to,
            } => {
                let mut sets = Vec::new();
                if from.generation != to.generation {
                    sets.push(format!("SET GENERATED {}", generation(to.generation)));
                }
                for opt in sequence_changes(&from.sequence, &to.sequence, false) {
                    sets.push(format!("SET {opt}"));
                }
                if !sets.is_empty() {
                    self.column_alter(
                        Phase::Identity,
                        schema,
                        table,
                        column,
                        format!("change identity of {schema}.{table}.{column}"),
                        sets.join(" "),
                    )
                }
            }
            C::DropIdentity {
                schema,
                table,
                column,
            } => self.column_alter(
                Phase::DropColumnProperty,
                schema,
                table,
                column,
                format!("{schema}.{table}.{column} stops being an identity column"),
                "DROP IDENTITY".into(),
            ),
            C::DropExpression {
                schema,
                table,
                column,
            } => self.column_alter(
                Phase::DropExpression,
                schema,
                table,
                column,
                format!("{schema}.{table}.{column} stops being generated (keeps its values)"),
                "DROP EXPRESSION".into(),
            ),
            C::AddConstraint {
                schema,
                table,
                name,
                constraint,
            } => self.add_constraint(schema, table, name, constraint),
            C::DropConstraint {
                schema,
                table,
                name,
                constraint,
            } => {
                let fk = matches!(constraint.definition, ConstraintDef::ForeignKey { .. });
                let hazards = self
                    .lock_hazard(schema, table, "briefly (catalog change only)")
                    .into_iter()
                    .collect();
                self.push(
                    if fk {
                        Phase::DropForeignKey
                    } else {
                        Phase::DropConstraint
                    },
                    format!("drop constraint {name} of {schema}.{table}"),
                    format!(
                        "ALTER TABLE {} DROP CONSTRAINT {}",
                        qualified(schema, table),
                        quote_ident(name)
                    ),
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::RenameConstraint {
                schema,
                table,
                from,
                to,
            } => self.push(
                Phase::Rename,
                format!("rename constraint {from} of {schema}.{table} to {to}"),
                format!(
                    "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                    qualified(schema, table),
                    quote_ident(from),
                    quote_ident(to)
                ),
                LockLevel::AccessExclusive,
                self.lock_hazard(schema, table, "briefly (catalog change only)")
                    .into_iter()
                    .collect(),
            ),
            C::ValidateConstraint {
                schema,
                table,
                name,
                constraint,
            } => {
                let pop = self.population(schema, table);
                let hazards = if pop.populated() {
                    vec![validation_hazard(schema, table, name, pop, constraint)]
                } else {
                    vec![]
                };
                self.push(
                    if pop.populated() {
                        Phase::PostValidate
                    } else {
                        Phase::ValidateConstraint
                    },
                    format!("validate constraint {name} of {schema}.{table}"),
                    format!(
                        "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                        qualified(schema, table),
                        quote_ident(name)
                    ),
                    LockLevel::ShareUpdateExclusive,
                    hazards,
                )
            }
            C::AlterConstraint {
                schema,
                table,
                name,
                deferrable,
                initially_deferred,
            } => self.push(
                Phase::AddForeignKey,
                format!("change deferrability of constraint {name} of {schema}.{table}"),
                format!(
                    "ALTER TABLE {} ALTER CONSTRAINT {} {}",
                    qualified(schema, table),
                    quote_ident(name),
                    deferral(*deferrable, *initially_deferred, true)
                ),
                LockLevel::ShareRowExclusive,
                vec![],
            ),
            C::CreateIndex {
                schema,
                table,
                name,
                index,
                in_transaction,
            } => self.create_index(schema, table, name, index, *in_transaction),
            C::DropIndex {
                schema,
                table,
                name,
                in_transaction,
                ..
            } => {
                let pop = self.population(schema, table);
                // A same-named index built inside the transaction needs this one gone first.
                let recreated_in_tx = self.tx_indexes.contains(&(schema.clone(), name.clone()));
                let concurrently = pop.populated() && !in_transaction && !recreated_in_tx;
                if concurrently {
                    self.push(
                        Phase::PostDropIndex,
                        format!("drop index {schema}.{name} without blocking writes"),
                        format!("DROP INDEX CONCURRENTLY {}", qualified(schema, name)),
                        LockLevel::ShareUpdateExclusive,
                        vec![],
                    )
                } else {
                    let hazards = self
                        .lock_hazard(schema, table, "briefly (catalog change only)")
                        .into_iter()
                        .collect();
                    self.push(
                        Phase::DropIndex,
                        format!("drop index {schema}.{name}"),
                        format!("DROP INDEX {}", qualified(schema, name)),
                        LockLevel::AccessExclusive,
                        hazards,
                    )
                }
            }
            C::RenameIndex {
                schema, from, to, ..
            } => self.push(
                Phase::Rename,
                format!("rename index {schema}.{from} to {to}"),
                format!(
                    "ALTER INDEX {} RENAME TO {}",
                    qualified(schema, from),
                    quote_ident(to)
                ),
                LockLevel::ShareUpdateExclusive,
                vec![],
            ),
            C::CreateView {
                schema,
                name,
                view,
                replace,
            } => {
                let options = if view.options.is_empty() {
                    String::new()
                } else {
                    format!(" WITH ({})", view.options.join(", "))
                };
                self.push(
                    Phase::CreateView,
                    if *replace {
                        format!("replace view {schema}.{name} (same leading columns)")
                    } else {
                        format!("create view {schema}.{name}")
                    },
                    format!(
                        "CREATE {}VIEW {}{options} AS {}",
                        if *replace { "OR REPLACE " } else { "" },
                        qualified(schema, name),
                        view.definition
                    ),
                    if *replace {
                        LockLevel::AccessExclusive
                    } else {
                        LockLevel::AccessShare
                    },
                    vec![],
                )
            }
            C::RenameViewColumn {
                schema,
                view,
                from,
                to,
            } => {
                let hazards = self
                    .body_hazards(&path(&[schema, view, from]))
                    .into_iter()
                    .collect();
                self.push(
                    Phase::Rename,
                    format!("rename column {from} of view {schema}.{view} to {to}"),
                    format!(
                        "ALTER VIEW {} RENAME COLUMN {} TO {}",
                        qualified(schema, view),
                        quote_ident(from),
                        quote_ident(to)
                    ),
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::DropView { schema, name } => {
                let hazards = self
                    .body_hazards(&path(&[schema, name]))
                    .into_iter()
                    .collect();
                self.push(
                    Phase::DropView,
                    format!("drop view {schema}.{name}"),
                    format!("DROP VIEW {}", qualified(schema, name)),
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::SetRowSecurity {
                schema,
                table,
                enabled,
            } => {
                let (verb, clause) = if *enabled {
                    ("enable", "ENABLE")
                } else {
                    ("disable", "DISABLE")
                };
                self.row_security(schema, table, format!("{verb} row-level security"), clause)
            }
            C::SetForceRowSecurity {
                schema,
                table,
                forced,
            } => {
                let (verb, clause) = if *forced {
                    ("force", "FORCE")
                } else {
                    ("stop forcing", "NO FORCE")
                };
                let summary = format!("{verb} row-level security");
                self.row_security(schema, table, summary, clause)
            }
            C::CreatePolicy {
                schema,
                table,
                name,
                policy,
            } => {
                let mut sql = format!(
                    "CREATE POLICY {} ON {}",
                    quote_ident(name),
                    qualified(schema, table)
                );
                if !policy.permissive {
                    sql.push_str(" AS RESTRICTIVE");
                }
                if policy.command != PolicyCommand::All {
                    sql.push_str(&format!(" FOR {}", command(policy.command)));
                }
                if policy.roles != ["public"] {
                    sql.push_str(&format!(" TO {}", roles_sql(&policy.roles)));
                }
                if let Some(u) = &policy.using {
                    sql.push_str(&format!(" USING ({u})"));
                }
                if let Some(w) = &policy.with_check {
                    sql.push_str(&format!(" WITH CHECK ({w})"));
                }
                let mut hazards: Vec<Hazard> = self
                    .lock_hazard(schema, table, "briefly (catalog change only)")
                    .into_iter()
                    .collect();
                if policy.permissive {
                    hazards.extend(self.widens(
                        schema,
                        table,
                        format!(
                            "permissive policy {name} admits the rows its USING/WITH CHECK \
                             allows to {}, whatever the other policies say",
                            policy.roles.join(", ")
                        ),
                    ));
                }
                self.push(
                    Phase::Policy,
                    format!("create policy {name} on {schema}.{table}"),
                    sql,
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::AlterPolicy {
                schema,
                table,
                name,
                roles,
                using,
                with_check,
            } => {
                let mut sql = format!(
                    "ALTER POLICY {} ON {}",
                    quote_ident(name),
                    qualified(schema, table)
                );
                if let Some(r) = roles {
                    sql.push_str(&format!(" TO {}", roles_sql(r)));
                }
                if let Some(u) = using {
                    sql.push_str(&format!(" USING ({u})"));
                }
                if let Some(w) = with_check {
                    sql.push_str(&format!(" WITH CHECK ({w})"));
                }
                let mut hazards: Vec<Hazard> = self
                    .lock_hazard(schema, table, "briefly (catalog change only)")
                    .into_iter()
                    .collect();
                // Whether new roles or expressions admit more rows is not decidable in
                // general: a changed policy is treated as one that may widen.
                hazards.extend(self.widens(
                    schema,
                    table,
                    format!("policy {name} changes which roles or rows it admits, which can widen access"),
                ));
                self.push(
                    Phase::Policy,
                    format!("change policy {name} on {schema}.{table}"),
                    sql,
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::DropPolicy {
                schema,
                table,
                name,
            } => {
                let mut hazards: Vec<Hazard> = self
                    .lock_hazard(schema, table, "briefly (catalog change only)")
                    .into_iter()
                    .collect();
                let restrictive = self
                    .live
                    .schemas
                    .get(schema)
                    .and_then(|s| s.tables.get(table))
                    .and_then(|t| t.rls.policies.get(name))
                    .is_some_and(|p| !p.permissive);
                if restrictive {
                    hazards.extend(self.widens(
                        schema,
                        table,
                        format!("restrictive policy {name} no longer narrows what the other policies admit"),
                    ));
                }
                self.push(
                    Phase::DropPolicy,
                    format!("drop policy {name} on {schema}.{table}"),
                    format!(
                        "DROP POLICY {} ON {}",
                        quote_ident(name),
                        qualified(schema, table)
                    ),
                    LockLevel::AccessExclusive,
                    hazards,
                )
            }
            C::Grant {
                object,
                grantee: role,
                privileges,
                with_grant_option,
            } => {
                let (target, what) = grant_target(object, privileges);
                let (schema, name) = match object {
                    GrantObject::Table { schema, name }
                    | GrantObject::View { schema, name }
                    | GrantObject::Sequence { schema, name } => (schema, name),
                    GrantObject::Column { schema, table, .. } => (schema, table),
                };
                let hazards: Vec<Hazard> = self
                    .widens(
                        schema,
                        name,
                        format!(
                            "{} gains {} on {what}",
                            if role == "public" {
                                "PUBLIC (every role)"
                            } else {
                                role.as_str()
                            },
                            privileges.join(", ")
                        ),
                    )
                    .into_iter()
                    .collect();
                self.push(
                    Phase::Grant,
                    format!(
                        "grant {} on {what} to {role}{}",
                        privileges.join(", "),
                        if *with_grant_option {
                            " with grant option"
                        } else {
                            ""
                        }
                    ),
                    format!(
                        "GRANT {target} TO {}{}",
                        grantee(role),
                        if *with_grant_option {
                            " WITH GRANT OPTION"
                        } else {
                            ""
                        }
                    ),
                    LockLevel::None,
                    hazards,
                )
            }
            C::Revoke {
                object,
                grantee: role,
                privileges,
                grant_option_only,
            } => {
                let (target, what) = grant_target(object, privileges);
                self.push(
                    Phase::Revoke,
                    if *grant_option_only {
                        format!(
                            "{role} may no longer grant {} on {what}",
                            privileges.join(", ")
                        )
                    } else {
                        format!("revoke {} on {what} from {role}", privileges.join(", "))
                    },
                    format!(
                        "REVOKE {}{target} FROM {}",
                        if *grant_option_only {
                            "GRANT OPTION FOR "
                        } else {
                            ""
                        },
                        grantee(role)
                    ),
                    LockLevel::None,
                    vec![],
                )
            }
            C::Comment { object, comment } => self.comment(object, comment.as_deref()),
        }
    }

    fn create_table(&mut self, schema: &str, name: &str, table: &Table) {
        let mut lines: Vec<String> = table
            .columns_in_order()
            .into_iter()
            .map(|(n, c)| column_definition(n, c))
            .collect();
        let inline = inline_in_create(table);
        for (n, c) in &table.constraints {
            if inline.contains(n.as_str()) {
                lines.push(format!(
                    "CONSTRAINT {} {}",
                    quote_ident(n),
                    constraint_clause(c)
                ));
            }
        }
        self.push(
            Phase::CreateTable,
            format!("create table {schema}.{name}"),
            format!(
                "CREATE {}TABLE {} (\n    {}\n)",
                if table.unlogged { "UNLOGGED " } else { "" },
                qualified(schema, name),
                lines.join(",\n    ")
            ),
            LockLevel::None,
            vec![],
        );
    }

    fn add_column(&mut self, schema: &str, table: &str, name: &str, column: &Column) {
        let pop = self.population(schema, table);
        let object = path(&[schema, table, name]);
        let mut hazards = Vec::new();
        let fills = if column.generated.is_some() {
            Some("computes the generated value for every row")
        } else if column.identity.is_some() {
            Some("fills the identity value into every row")
        } else if column.default.as_deref().is_some_and(volatile) {
            Some("evaluates the volatile default for every row")
        } else {
            None
        };
        if let (Some(why), true) = (fills, pop.exists()) {
            hazards.push(Hazard {
                kind: HazardKind::TableRewrite,
                object: object.clone(),
                detail: format!(
                    "adding the column rewrites the table: it {why} ({}{})",
                    pop.describe(),
                    pop.rewrite_estimate()
                ),
            });
            hazards.extend(self.lock_hazard(schema, table, "until the rewrite finishes"));
        } else {
            hazards.extend(self.lock_hazard(
                schema,
                table,
                "briefly (no rewrite: Postgres 11+ stores a constant default in the catalog)",
            ));
        }
        let unfillable = column.not_null
            && column.default.is_none()
            && column.identity.is_none()
            && column.generated.is_none();
        // Statistics that show rows make the failure certain (bar rows deleted since): refuse
        // now rather than fail at apply. Without statistics it stays a hazard, since the
        // table may well be empty.
        if let (true, Population::Known(size)) = (unfillable, pop) {
            if !size.is_empty() {
                self.refusals.push(Refusal {
                    object: object.clone(),
                    reason: format!(
                        "adding a NOT NULL column without a default to {} fails in Postgres \
                         (its rows would hold NULL); give the column a default, or add it \
                         nullable, backfill it, then make it NOT NULL in a second plan",
                        pop.describe()
                    ),
                });
                return;
            }
        }
        if unfillable && pop.populated() {
            hazards.push(Hazard {
                kind: HazardKind::MayFail,
                object: object.clone(),
                detail: format!(
                    "NOT NULL without a default fails when the table has rows ({}); give it a \
                     default, or add it nullable, backfill, then set NOT NULL",
                    pop.describe()
                ),
            });
        }
        hazards.extend(self.unsupported_hazards(schema, table, false));
        self.push(
            if column.generated.is_some() {
                Phase::AddGeneratedColumn
            } else {
                Phase::AddColumn
            },
            format!("add column {schema}.{table}.{name}"),
            format!(
                "ALTER TABLE {} ADD COLUMN {}",
                qualified(schema, table),
                column_definition(name, column)
            ),
            LockLevel::AccessExclusive,
            hazards,
        );
    }

    fn column_alter(
        &mut self,
        phase: Phase,
        schema: &str,
        table: &str,
        column: &str,
        summary: String,
        action: String,
    ) {
        let mut hazards: Vec<Hazard> = self
            .lock_hazard(schema, table, "briefly (catalog change only)")
            .into_iter()
            .collect();
        hazards.extend(self.unsupported_hazards(schema, table, false));
        self.push(
            phase,
            summary,
            format!(
                "ALTER TABLE {} ALTER COLUMN {} {action}",
                qualified(schema, table),
                quote_ident(column)
            ),
            LockLevel::AccessExclusive,
            hazards,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn alter_type(
        &mut self,
        schema: &str,
        table: &str,
        column: &str,
        from: &str,
        to: &str,
        collation_from: &Option<String>,
        collation_to: &Option<String>,
    ) {
        let pop = self.population(schema, table);
        let object = path(&[schema, table, column]);
        let conv = conversion(from, to);
        let mut hazards = Vec::new();
        if from != to && !conv.lossless {
            hazards.push(Hazard {
                kind: HazardKind::DataLoss,
                object: object.clone(),
                detail: format!(
                    "{from} → {to} is {}: values that do not fit are rejected or altered ({})",
                    if conv.narrowing {
                        "a narrowing conversion"
                    } else {
                        "not a known lossless conversion"
                    },
                    pop.describe()
                ),
            });
        }
        let rewrite = from != to && !conv.binary_coercible;
        if rewrite {
            hazards.push(Hazard {
                kind: HazardKind::TableRewrite,
                object: object.clone(),
                detail: format!(
                    "{from} → {to} is not binary-coercible: Postgres rewrites the table and \
                     rebuilds its indexes ({}{})",
                    pop.describe(),
                    pop.rewrite_estimate()
                ),
            });
            hazards.extend(self.lock_hazard(schema, table, "until the rewrite finishes"));
        } else {
            let what = if collation_from != collation_to {
                "while the column's indexes are rebuilt (the collation changes)"
            } else {
                "briefly (binary-coercible: no rewrite)"
            };
            hazards.extend(self.lock_hazard(schema, table, what));
        }
        if conv.using && pop.populated() {
            hazards.push(Hazard {
                kind: HazardKind::MayFail,
                object: object.clone(),
                detail: format!(
                    "the explicit cast {from} → {to} fails on values it cannot convert, and \
                     the transaction rolls back"
                ),
            });
        }
        hazards.extend(self.unsupported_hazards(schema, table, true));
        let mut action = format!("TYPE {to}");
        if collation_from != collation_to || collation_to.is_some() && from != to {
            action.push_str(&format!(
                " COLLATE {}",
                collation_to.as_deref().unwrap_or("\"default\"")
            ));
        }
        if conv.using {
            action.push_str(&format!(" USING {}::{to}", quote_ident(column)));
        }
        self.push(
            Phase::AlterColumnType,
            if from == to {
                format!("change collation of {schema}.{table}.{column}")
            } else {
                format!("change type of {schema}.{table}.{column} from {from} to {to}")
            },
            format!(
                "ALTER TABLE {} ALTER COLUMN {} {action}",
                qualified(schema, table),
                quote_ident(column)
            ),
            LockLevel::AccessExclusive,
            hazards,
        );
    }

    fn set_not_null(&mut self, schema: &str, table: &str, column: &str, online_allowed: bool) {
        let pop = self.population(schema, table);
        let object = path(&[schema, table, column]);
        let may_fail = Hazard {
            kind: HazardKind::MayFail,
            object: object.clone(),
            detail: "fails if the column holds NULLs; backfill them first".into(),
        };
        if !(online_allowed && pop.populated()) {
            let mut hazards = Vec::new();
            if pop.populated() {
                hazards.push(Hazard {
                    kind: HazardKind::ValidationScan,
                    object: object.clone(),
                    detail: format!("SET NOT NULL scans the whole table ({})", pop.describe()),
                });
                hazards.extend(self.lock_hazard(schema, table, "for the whole scan"));
                hazards.push(may_fail);
            }
            hazards.extend(self.unsupported_hazards(schema, table, false));
            self.push(
                Phase::SetNotNull,
                format!("forbid NULL in {schema}.{table}.{column}"),
                format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
                    qualified(schema, table),
                    quote_ident(column)
                ),
                LockLevel::AccessExclusive,
                hazards,
            );
            return;
        }
        let check = self.helper_constraint_name(schema, table, column);
        let t = qualified(schema, table);
        let brief: Vec<Hazard> = self
            .lock_hazard(schema, table, "briefly (catalog change only)")
            .into_iter()
            .collect();
        let mut first = brief.clone();
        first.extend(self.unsupported_hazards(schema, table, false));
        self.push(
            Phase::SetNotNull,
            format!(
                "forbid NULL in {schema}.{table}.{column}, online: add CHECK ({column} IS NOT NULL) NOT VALID"
            ),
            format!(
                "ALTER TABLE {t} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID",
                quote_ident(&check),
                quote_ident(column)
            ),
            LockLevel::AccessExclusive,
            first,
        );
        self.push(
            Phase::PostNotNullValidate,
            format!(
                "validate the NOT NULL check on {schema}.{table}.{column} (reads and writes go on)"
            ),
            format!(
                "ALTER TABLE {t} VALIDATE CONSTRAINT {}",
                quote_ident(&check)
            ),
            LockLevel::ShareUpdateExclusive,
            vec![
                Hazard {
                    kind: HazardKind::ValidationScan,
                    object: object.clone(),
                    detail: format!(
                        "scans the whole table under SHARE UPDATE EXCLUSIVE (reads and writes \
                         continue) ({})",
                        pop.describe()
                    ),
                },
                may_fail,
            ],
        );
        self.push(
            Phase::PostSetNotNull,
            format!(
                "set NOT NULL on {schema}.{table}.{column} (the validated check spares the scan)"
            ),
            format!(
                "ALTER TABLE {t} ALTER COLUMN {} SET NOT NULL",
                quote_ident(column)
            ),
            LockLevel::AccessExclusive,
            brief.clone(),
        );
        self.push(
            Phase::PostDropNotNullCheck,
            format!("drop the helper check {check} of {schema}.{table}"),
            format!("ALTER TABLE {t} DROP CONSTRAINT {}", quote_ident(&check)),
            LockLevel::AccessExclusive,
            brief,
        );
    }

    /// A constraint name for the online SET NOT NULL that clashes with nothing on the table.
    fn helper_constraint_name(&self, schema: &str, table: &str, column: &str) -> String {
        let taken = |n: &str| {
            [self.live, self.desired].iter().any(|c| {
                c.schemas
                    .get(schema)
                    .and_then(|s| s.tables.get(table))
                    .is_some_and(|t| t.constraints.contains_key(n))
            })
        };
        let base = truncate_name(&format!("{table}_{column}_not_null"), 52);
        let mut name = format!("{base}_lockplane");
        let mut n = 1;
        while taken(&name) {
            n += 1;
            name = format!("{base}_lockplane{n}");
        }
        name
    }

    fn add_constraint(&mut self, schema: &str, table: &str, name: &str, c: &Constraint) {
        let pop = self.population(schema, table);
        let t = qualified(schema, table);
        let clause = constraint_clause(c);
        let object = path(&[schema, table, name]);
        match &c.definition {
            ConstraintDef::ForeignKey { references, .. } => {
                let online = pop.populated() && c.validated;
                let mut hazards = Vec::new();
                let (note, not_valid) = not_valid_suffixes(online, c.validated);
                let target_pop = self.population(&references.schema, &references.table);
                if target_pop.populated() || pop.populated() {
                    hazards.push(Hazard {
                        kind: HazardKind::BlocksWrites,
                        object: object.clone(),
                        detail: format!(
                            "takes SHARE ROW EXCLUSIVE on {schema}.{table} and on \
                             {}.{}: writes to both wait briefly (the scan happens in a \
                             separate VALIDATE step)",
                            references.schema, references.table
                        ),
                    });
                }
                hazards.extend(self.unsupported_hazards(schema, table, false));
                self.push(
                    Phase::AddForeignKey,
                    format!(
                        "add foreign key {name} on {schema}.{table} → {}.{}{note}",
                        references.schema, references.table,
                    ),
                    format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {} {clause}{not_valid}",
                        quote_ident(name)
                    ),
                    LockLevel::ShareRowExclusive,
                    hazards,
                );
                if online {
                    self.validate_after(schema, table, name, c, pop);
                }
            }
            ConstraintDef::Check { .. } => {
                let online = pop.populated() && c.validated;
                let (note, not_valid) = not_valid_suffixes(online, c.validated);
                let mut hazards = self
                    .lock_hazard(schema, table, "briefly (added NOT VALID: no scan)")
                    .into_iter()
                    .collect::<Vec<_>>();
                hazards.extend(self.unsupported_hazards(schema, table, false));
                self.push(
                    Phase::AddConstraint,
                    format!("add check {name} on {schema}.{table}{note}"),
                    format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {} {clause}{not_valid}",
                        quote_ident(name)
                    ),
                    LockLevel::AccessExclusive,
                    hazards,
                );
                if online {
                    self.validate_after(schema, table, name, c, pop);
                }
            }
            ConstraintDef::PrimaryKey { .. } | ConstraintDef::Unique { .. }
                if self.online_keys.contains(&(
                    schema.to_owned(),
                    table.to_owned(),
                    name.to_owned(),
                )) =>
            {
                self.add_key_online(schema, table, name, c, pop)
            }
            ConstraintDef::PrimaryKey { .. }
            | ConstraintDef::Unique { .. }
            | ConstraintDef::Exclusion { .. } => {
                let mut hazards = Vec::new();
                if pop.populated() {
                    hazards.push(Hazard {
                        kind: HazardKind::BlocksWrites,
                        object: object.clone(),
                        detail: format!(
                            "builds the constraint's index while holding ACCESS EXCLUSIVE ({})",
                            pop.describe()
                        ),
                    });
                    hazards.extend(self.lock_hazard(schema, table, "until the index is built"));
                    hazards.push(Hazard {
                        kind: HazardKind::MayFail,
                        object: object.clone(),
                        detail: "fails if existing rows violate it (duplicates, NULLs in a key, \
                                 overlaps)"
                            .into(),
                    });
                }
                hazards.extend(self.unsupported_hazards(schema, table, false));
                self.push(
                    Phase::AddConstraint,
                    format!("add constraint {name} on {schema}.{table}"),
                    format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {} {clause}",
                        quote_ident(name)
                    ),
                    LockLevel::AccessExclusive,
                    hazards,
                );
            }
        }
    }

    /// Whether a primary key or unique constraint added to `schema.table` is built online:
    /// the statistics show the table has rows (unknown sizes keep the plain form), no
    /// foreign key added by the plan needs it inside the transaction, and for a primary key
    /// every key column is already NOT NULL live and desired (else `USING INDEX` would scan
    /// to set it) and no view the plan creates reads the table (a `GROUP BY` may rely on the
    /// key). Constraint keys are plain columns with default opclasses and collations, which
    /// is what `ADD CONSTRAINT … USING INDEX` takes; exclusion constraints stay plain.
    fn key_online(&self, schema: &str, table: &str, c: &Constraint) -> bool {
        let primary = match &c.definition {
            ConstraintDef::PrimaryKey { .. } => true,
            ConstraintDef::Unique { .. } => false,
            _ => return false,
        };
        let Population::Known(size) = self.population(schema, table) else {
            return false;
        };
        if size.is_empty() {
            return false;
        }
        let referenced = self.changes.iter().any(|ch| {
            matches!(ch, Change::AddConstraint { constraint, .. }
                if matches!(&constraint.definition, ConstraintDef::ForeignKey { references, .. }
                    if references.schema == schema && references.table == table))
        });
        if referenced {
            return false;
        }
        if primary {
            let ConstraintDef::PrimaryKey { columns } = &c.definition else {
                return false;
            };
            let live_name = self
                .renamed
                .get(&(schema.to_owned(), table.to_owned()))
                .map(String::as_str)
                .unwrap_or(table);
            let not_null = |catalog: &Catalog, t: &str| {
                let table = catalog.schemas.get(schema).and_then(|s| s.tables.get(t));
                columns.iter().all(|col| {
                    table
                        .and_then(|t| t.columns.get(col))
                        .is_some_and(|c| c.not_null)
                })
            };
            if !not_null(self.desired, table) || !not_null(self.live, live_name) {
                return false;
            }
            let read_by_new_view = self.changes.iter().any(|ch| {
                matches!(ch, Change::CreateView { view, .. }
                    if crate::diff::mentions_ident(&view.definition, table))
            });
            if read_by_new_view {
                return false;
            }
        }
        true
    }

    /// A primary key or unique constraint on a table with rows, without holding ACCESS
    /// EXCLUSIVE for the build: `CREATE UNIQUE INDEX CONCURRENTLY` under the constraint's
    /// name, then `ADD CONSTRAINT … USING INDEX` (a catalog change). The result is the same
    /// constraint and index as the plain `ADD CONSTRAINT`. The executor drops the INVALID
    /// index a failed build leaves, as for any concurrent build.
    fn add_key_online(
        &mut self,
        schema: &str,
        table: &str,
        name: &str,
        c: &Constraint,
        pop: Population,
    ) {
        let (kind, columns, nulls_not_distinct) = match &c.definition {
            ConstraintDef::PrimaryKey { columns } => ("PRIMARY KEY", columns, false),
            ConstraintDef::Unique {
                columns,
                nulls_not_distinct,
            } => ("UNIQUE", columns, *nulls_not_distinct),
            _ => return,
        };
        let index = Index {
            unique: true,
            method: "btree".into(),
            keys: columns
                .iter()
                .map(|col| IndexKey {
                    column: Some(col.clone()),
                    expression: None,
                    opclass: None,
                    collation: None,
                    descending: false,
                    nulls_first: false,
                })
                .collect(),
            include: vec![],
            predicate: None,
            nulls_not_distinct,
            comment: None,
        };
        let object = path(&[schema, table, name]);
        self.push(
            Phase::PostCreateIndex,
            format!(
                "build the index of constraint {name} on {schema}.{table} without blocking \
                 writes ({})",
                pop.describe()
            ),
            format!(
                "CREATE UNIQUE INDEX CONCURRENTLY {} ON {}",
                quote_ident(name),
                index_body(schema, table, &index)
            ),
            LockLevel::ShareUpdateExclusive,
            vec![Hazard {
                kind: HazardKind::MayFail,
                object: object.clone(),
                detail: "fails if existing rows hold duplicate keys; the INVALID index the \
                         failed build leaves is dropped again"
                    .into(),
            }],
        );
        let mut hazards: Vec<Hazard> = self
            .lock_hazard(
                schema,
                table,
                "briefly (the index is already built: catalog change only)",
            )
            .into_iter()
            .collect();
        hazards.extend(self.unsupported_hazards(schema, table, false));
        let deferral = deferral(c.deferrable, c.initially_deferred, false);
        self.push(
            Phase::PostCreateIndex,
            format!("add constraint {name} on {schema}.{table} using the index just built"),
            format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {kind} USING INDEX {}{}",
                qualified(schema, table),
                quote_ident(name),
                quote_ident(name),
                if deferral.is_empty() {
                    String::new()
                } else {
                    format!(" {deferral}")
                }
            ),
            LockLevel::AccessExclusive,
            hazards,
        );
    }

    fn validate_after(
        &mut self,
        schema: &str,
        table: &str,
        name: &str,
        c: &Constraint,
        pop: Population,
    ) {
        self.push(
            Phase::PostValidate,
            format!("validate constraint {name} of {schema}.{table} (reads and writes go on)"),
            format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                qualified(schema, table),
                quote_ident(name)
            ),
            LockLevel::ShareUpdateExclusive,
            vec![
                validation_hazard(schema, table, name, pop, c),
                Hazard {
                    kind: HazardKind::MayFail,
                    object: path(&[schema, table, name]),
                    detail: "fails if existing rows violate the constraint; the constraint then \
                             stays NOT VALID (still enforced for new rows)"
                        .into(),
                },
            ],
        );
    }

    /// `fk_target`: a foreign key added by the plan needs this unique index, so it is built
    /// with the primary keys and unique constraints, before the foreign keys.
    fn create_index(
        &mut self,
        schema: &str,
        table: &str,
        name: &str,
        index: &Index,
        fk_target: bool,
    ) {
        let pop = self.population(schema, table);
        let concurrent = self
            .concurrent_indexes
            .contains(&(schema.to_owned(), name.to_owned()));
        let body = index_body(schema, table, index);
        if concurrent {
            let mut hazards = Vec::new();
            if index.unique {
                hazards.push(Hazard {
                    kind: HazardKind::MayFail,
                    object: path(&[schema, table, name]),
                    detail: "fails on duplicate keys and leaves an INVALID index to drop".into(),
                });
            }
            self.push(
                Phase::PostCreateIndex,
                format!(
                    "build index {name} on {schema}.{table} without blocking writes ({})",
                    pop.describe()
                ),
                format!(
                    "CREATE {}INDEX CONCURRENTLY {} ON {body}",
                    if index.unique { "UNIQUE " } else { "" },
                    quote_ident(name)
                ),
                LockLevel::ShareUpdateExclusive,
                hazards,
            );
            return;
        }
        let mut hazards = Vec::new();
        if pop.populated() {
            hazards.push(Hazard {
                kind: HazardKind::BlocksWrites,
                object: path(&[schema, table, name]),
                detail: format!(
                    "a plain CREATE INDEX holds SHARE on the table: writes wait until the \
                     build finishes ({}); it must be built inside the transaction because a \
                     foreign key added there relies on it",
                    pop.describe()
                ),
            });
        }
        self.push(
            if fk_target {
                Phase::AddConstraint
            } else {
                Phase::CreateIndex
            },
            format!("create index {name} on {schema}.{table}"),
            format!(
                "CREATE {}INDEX {} ON {body}",
                if index.unique { "UNIQUE " } else { "" },
                quote_ident(name)
            ),
            LockLevel::Share,
            hazards,
        );
    }

    fn comment(&mut self, object: &CommentObject, comment: Option<&str>) {
        let text = comment.map(quote_literal).unwrap_or_else(|| "NULL".into());
        let (target, what, phase) = match object {
            CommentObject::Schema { name } => (
                format!("SCHEMA {}", quote_ident(name)),
                format!("schema {name}"),
                Phase::Comment,
            ),
            CommentObject::Table { schema, name } => (
                format!("TABLE {}", qualified(schema, name)),
                format!("table {schema}.{name}"),
                Phase::Comment,
            ),
            CommentObject::Column {
                schema,
                table,
                column,
            } => (
                format!(
                    "COLUMN {}.{}",
                    qualified(schema, table),
                    quote_ident(column)
                ),
                format!("column {schema}.{table}.{column}"),
                Phase::Comment,
            ),
            CommentObject::Index { schema, name, .. } => (
                format!("INDEX {}", qualified(schema, name)),
                format!("index {schema}.{name}"),
                if self
                    .concurrent_indexes
                    .contains(&(schema.clone(), name.clone()))
                {
                    Phase::PostComment
                } else {
                    Phase::Comment
                },
            ),
            CommentObject::Constraint {
                schema,
                table,
                name,
            } => (
                format!(
                    "CONSTRAINT {} ON {}",
                    quote_ident(name),
                    qualified(schema, table)
                ),
                format!("constraint {name} of {schema}.{table}"),
                if self
                    .online_keys
                    .contains(&(schema.clone(), table.clone(), name.clone()))
                {
                    Phase::PostComment
                } else {
                    Phase::Comment
                },
            ),
            CommentObject::View { schema, name } => (
                format!("VIEW {}", qualified(schema, name)),
                format!("view {schema}.{name}"),
                Phase::Comment,
            ),
            CommentObject::Sequence { schema, name } => (
                format!("SEQUENCE {}", qualified(schema, name)),
                format!("sequence {schema}.{name}"),
                Phase::Comment,
            ),
            CommentObject::Type { schema, name } => (
                format!("TYPE {}", qualified(schema, name)),
                format!("type {schema}.{name}"),
                Phase::Comment,
            ),
            CommentObject::Policy {
                schema,
                table,
                name,
            } => (
                format!(
                    "POLICY {} ON {}",
                    quote_ident(name),
                    qualified(schema, table)
                ),
                format!("policy {name} on {schema}.{table}"),
                Phase::Comment,
            ),
        };
        self.push(
            phase,
            match comment {
                Some(_) => format!("comment on {what}"),
                None => format!("remove the comment on {what}"),
            },
            format!("COMMENT ON {target} IS {text}"),
            LockLevel::ShareUpdateExclusive,
            vec![],
        );
    }

    /// `ALTER TYPE … ADD VALUE` may run in a transaction (Postgres 12+), but the new label
    /// cannot be used before that transaction commits. When another step of the plan uses the
    /// label, the ADD VALUE runs alone, before the transaction.
    fn place_enum_labels(&mut self) {
        let labels: Vec<(usize, String)> = self
            .drafts
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match &self.changes[d.origin] {
                Change::AddEnumLabel { label, .. } if d.phase == Phase::AddEnumLabel => {
                    Some((i, quote_literal(label)))
                }
                _ => None,
            })
            .collect();
        for (i, literal) in labels {
            let used =
                self.drafts.iter().enumerate().any(|(j, d)| {
                    j != i && d.phase != Phase::AddEnumLabel && d.sql.contains(&literal)
                });
            if used {
                if let Some(d) = self.drafts.get_mut(i) {
                    d.phase = Phase::PreEnumLabel;
                    d.summary.push_str(
                        " (before the transaction: the plan uses the new label, and a label \
                         added in a transaction cannot be used until it commits)",
                    );
                }
            }
        }
    }
}

fn validation_hazard(
    schema: &str,
    table: &str,
    name: &str,
    pop: Population,
    c: &Constraint,
) -> Hazard {
    let extra = match &c.definition {
        ConstraintDef::ForeignKey { references, .. } => format!(
            "; also takes ROW SHARE on {}.{}",
            references.schema, references.table
        ),
        _ => String::new(),
    };
    Hazard {
        kind: HazardKind::ValidationScan,
        object: path(&[schema, table, name]),
        detail: format!(
            "VALIDATE scans the whole table under SHARE UPDATE EXCLUSIVE: reads and writes go \
             on ({}){extra}",
            pop.describe()
        ),
    }
}

fn command(c: PolicyCommand) -> &'static str {
    match c {
        PolicyCommand::All => "ALL",
        PolicyCommand::Select => "SELECT",
        PolicyCommand::Insert => "INSERT",
        PolicyCommand::Update => "UPDATE",
        PolicyCommand::Delete => "DELETE",
    }
}

fn generation(g: IdentityGeneration) -> &'static str {
    match g {
        IdentityGeneration::Always => "ALWAYS",
        IdentityGeneration::ByDefault => "BY DEFAULT",
    }
}

/// `privileges ON object` and a human name of the object.
fn grant_target(object: &GrantObject, privileges: &[String]) -> (String, String) {
    let privs = privileges
        .iter()
        .map(|p| p.to_uppercase())
        .collect::<Vec<_>>();
    match object {
        GrantObject::Table { schema, name } => (
            format!("{} ON TABLE {}", privs.join(", "), qualified(schema, name)),
            format!("table {schema}.{name}"),
        ),
        GrantObject::View { schema, name } => (
            format!("{} ON TABLE {}", privs.join(", "), qualified(schema, name)),
            format!("view {schema}.{name}"),
        ),
        GrantObject::Sequence { schema, name } => (
            format!(
                "{} ON SEQUENCE {}",
                privs.join(", "),
                qualified(schema, name)
            ),
            format!("sequence {schema}.{name}"),
        ),
        GrantObject::Column {
            schema,
            table,
            column,
        } => (
            format!(
                "{} ON TABLE {}",
                privs
                    .iter()
                    .map(|p| format!("{p} ({})", quote_ident(column)))
                    .collect::<Vec<_>>()
                    .join(", "),
                qualified(schema, table)
            ),
            format!("column {schema}.{table}.{column}"),
        ),
    }
}

/// `"name" type [COLLATE c] [GENERATED …] [DEFAULT …] [NOT NULL]`.
fn column_definition(name: &str, c: &Column) -> String {
    let mut s = format!("{} {}", quote_ident(name), c.data_type);
    if let Some(coll) = &c.collation {
        s.push_str(&format!(" COLLATE {coll}"));
    }
    if let Some(identity) = &c.identity {
        let opts = sequence_options(&identity.sequence, false);
        s.push_str(&format!(
            " GENERATED {} AS IDENTITY{}",
            generation(identity.generation),
            if opts.is_empty() {
                String::new()
            } else {
                format!(" ({})", opts.join(" "))
            }
        ));
    }
    if let Some(g) = &c.generated {
        s.push_str(&format!(" GENERATED ALWAYS AS ({g}) STORED"));
    }
    if let Some(d) = &c.default {
        s.push_str(&format!(" DEFAULT {d}"));
    }
    if c.not_null {
        s.push_str(" NOT NULL");
    }
    s
}

fn deferral(deferrable: bool, initially_deferred: bool, explicit: bool) -> String {
    match (deferrable, initially_deferred) {
        (true, true) => "DEFERRABLE INITIALLY DEFERRED".into(),
        (true, false) if explicit => "DEFERRABLE INITIALLY IMMEDIATE".into(),
        (true, false) => "DEFERRABLE".into(),
        (false, _) if explicit => "NOT DEFERRABLE".into(),
        (false, _) => String::new(),
    }
}

/// The SQL of a referential action (`NO ACTION`, `CASCADE`, …).
pub(crate) fn fk_action(a: ForeignKeyAction) -> &'static str {
    match a {
        ForeignKeyAction::NoAction => "NO ACTION",
        ForeignKeyAction::Restrict => "RESTRICT",
        ForeignKeyAction::Cascade => "CASCADE",
        ForeignKeyAction::SetNull => "SET NULL",
        ForeignKeyAction::SetDefault => "SET DEFAULT",
    }
}

/// The constraint's clause after `CONSTRAINT name` (without NOT VALID).
fn constraint_clause(c: &Constraint) -> String {
    let mut s = match &c.definition {
        ConstraintDef::PrimaryKey { columns } => format!("PRIMARY KEY ({})", columns_sql(columns)),
        ConstraintDef::Unique {
            columns,
            nulls_not_distinct,
        } => format!(
            "UNIQUE {}({})",
            if *nulls_not_distinct {
                "NULLS NOT DISTINCT "
            } else {
                ""
            },
            columns_sql(columns)
        ),
        ConstraintDef::ForeignKey {
            columns,
            references,
            on_update,
            on_delete,
            match_type,
        } => {
            let mut s = format!(
                "FOREIGN KEY ({}) REFERENCES {} ({})",
                columns_sql(columns),
                qualified(&references.schema, &references.table),
                columns_sql(&references.columns)
            );
            match match_type {
                ForeignKeyMatch::Simple => {}
                ForeignKeyMatch::Full => s.push_str(" MATCH FULL"),
                ForeignKeyMatch::Partial => s.push_str(" MATCH PARTIAL"),
            }
            if *on_update != ForeignKeyAction::NoAction {
                s.push_str(&format!(" ON UPDATE {}", fk_action(*on_update)));
            }
            if *on_delete != ForeignKeyAction::NoAction {
                s.push_str(&format!(" ON DELETE {}", fk_action(*on_delete)));
            }
            s
        }
        ConstraintDef::Check {
            expression,
            no_inherit,
        } => format!(
            "CHECK ({expression}){}",
            if *no_inherit { " NO INHERIT" } else { "" }
        ),
        // Postgres prints an exclusion constraint's deferrability inside its definition.
        ConstraintDef::Exclusion { definition } => return definition.clone(),
    };
    let d = deferral(c.deferrable, c.initially_deferred, false);
    if !d.is_empty() {
        s.push(' ');
        s.push_str(&d);
    }
    s
}

/// `"schema"."table" USING method (keys) [INCLUDE (…)] [NULLS NOT DISTINCT] [WHERE …]`.
fn index_body(schema: &str, table: &str, index: &Index) -> String {
    let keys: Vec<String> = index
        .keys
        .iter()
        .map(|k| {
            let mut s = match (&k.column, &k.expression) {
                (Some(c), _) => quote_ident(c),
                (None, Some(e)) => format!("({e})"),
                (None, None) => "()".into(),
            };
            if let Some(coll) = &k.collation {
                s.push_str(&format!(" COLLATE {coll}"));
            }
            if let Some(op) = &k.opclass {
                s.push_str(&format!(" {op}"));
            }
            if k.descending {
                s.push_str(" DESC");
            }
            // The default is NULLS FIRST for DESC, NULLS LAST for ASC: say only the other.
            if k.nulls_first != k.descending {
                s.push_str(if k.nulls_first {
                    " NULLS FIRST"
                } else {
                    " NULLS LAST"
                });
            }
            s
        })
        .collect();
    let mut s = format!(
        "{} USING {} ({})",
        qualified(schema, table),
        index.method,
        keys.join(", ")
    );
    if !index.include.is_empty() {
        s.push_str(&format!(" INCLUDE ({})", columns_sql(&index.include)));
    }
    if index.nulls_not_distinct {
        s.push_str(" NULLS NOT DISTINCT");
    }
    if let Some(p) = &index.predicate {
        s.push_str(&format!(" WHERE {p}"));
    }
    s
}

fn type_bounds(data_type: &str) -> (i64, i64) {
    match data_type {
        "smallint" => (i16::MIN as i64, i16::MAX as i64),
        "integer" => (i32::MIN as i64, i32::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Postgres' defaults for a sequence of `data_type` going up or down by `increment`:
/// `(min, max, start)`.
fn sequence_defaults(data_type: &str, increment: i64) -> (i64, i64, i64) {
    let (tmin, tmax) = type_bounds(data_type);
    if increment > 0 {
        (1, tmax, 1)
    } else {
        (tmin, -1, -1)
    }
}

/// The options of a new sequence that differ from Postgres' defaults (`AS type` included when
/// `with_type`, i.e. for a standalone sequence; an identity's type is its column's).
pub(crate) fn sequence_options(o: &SequenceOptions, with_type: bool) -> Vec<String> {
    let mut out = Vec::new();
    if with_type && o.data_type != "bigint" {
        out.push(format!("AS {}", o.data_type));
    }
    let (min, max, _) = sequence_defaults(&o.data_type, o.increment);
    if o.increment != 1 {
        out.push(format!("INCREMENT BY {}", o.increment));
    }
    if o.min != min {
        out.push(format!("MINVALUE {}", o.min));
    }
    if o.max != max {
        out.push(format!("MAXVALUE {}", o.max));
    }
    let start = if o.increment > 0 { o.min } else { o.max };
    if o.start != start {
        out.push(format!("START WITH {}", o.start));
    }
    if o.cache != 1 {
        out.push(format!("CACHE {}", o.cache));
    }
    if o.cycle {
        out.push("CYCLE".into());
    }
    out
}

/// The options to set to take sequence options `from` to `to`. A type change states the
/// bounds explicitly, since Postgres would otherwise keep or reset them by its own rules.
fn sequence_changes(from: &SequenceOptions, to: &SequenceOptions, with_type: bool) -> Vec<String> {
    let mut out = Vec::new();
    let type_changed = from.data_type != to.data_type;
    if with_type && type_changed {
        out.push(format!("AS {}", to.data_type));
    }
    if from.increment != to.increment {
        out.push(format!("INCREMENT BY {}", to.increment));
    }
    if from.min != to.min || (with_type && type_changed) {
        out.push(format!("MINVALUE {}", to.min));
    }
    if from.max != to.max || (with_type && type_changed) {
        out.push(format!("MAXVALUE {}", to.max));
    }
    if from.start != to.start {
        out.push(format!("START WITH {}", to.start));
    }
    if from.cache != to.cache {
        out.push(format!("CACHE {}", to.cache));
    }
    if from.cycle != to.cycle {
        out.push(if to.cycle { "CYCLE" } else { "NO CYCLE" }.into());
    }
    out
}

/// Truncates to at most `max` bytes on a character boundary.
fn truncate_name(name: &str, max: usize) -> String {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// Whether a default expression calls a function that is volatile (evaluated per row on
/// ADD COLUMN, which then rewrites the table). A known-name check: the catalog does not carry
/// function volatility.
fn volatile(expression: &str) -> bool {
    const VOLATILE: [&str; 8] = [
        "random",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v4",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "txid_current",
    ];
    VOLATILE
        .iter()
        .any(|f| crate::diff::mentions_ident(expression, f))
}

/// What converting a column from one type to another means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conversion {
    /// No rewrite: Postgres only updates the catalog.
    pub binary_coercible: bool,
    /// Every value of the old type converts exactly.
    pub lossless: bool,
    /// A known narrowing (shorter length, smaller integer, less precision).
    pub narrowing: bool,
    /// Needs `USING col::type` (no implicit or assignment cast).
    pub using: bool,
}

/// `(base name, typmod numbers)` of a `format_type` string: `character varying(45)` →
/// `("character varying", [45])`.
fn split_type(t: &str) -> (String, Vec<i64>, bool) {
    let array = t.ends_with("[]");
    let t = t.trim_end_matches("[]");
    match t.find('(') {
        Some(open) => {
            let close = t[open..].find(')').map(|c| open + c).unwrap_or(t.len());
            let mods = t[open + 1..close]
                .split(',')
                .filter_map(|m| m.trim().parse().ok())
                .collect();
            let rest = t[close.saturating_add(1).min(t.len())..].trim();
            let base = if rest.is_empty() {
                t[..open].trim().to_owned()
            } else {
                // `timestamp(3) with time zone`: the modifier sits in the middle.
                format!("{} {rest}", t[..open].trim())
            };
            (base, mods, array)
        }
        None => (t.to_owned(), Vec::new(), array),
    }
}

fn is_string(base: &str) -> bool {
    matches!(
        base,
        "text" | "character varying" | "character" | "bpchar" | "name" | "citext"
    ) || base.ends_with(".citext")
}

fn int_rank(base: &str) -> Option<u8> {
    match base {
        "smallint" => Some(1),
        "integer" => Some(2),
        "bigint" => Some(3),
        _ => None,
    }
}

fn is_numeric_family(base: &str) -> bool {
    int_rank(base).is_some() || matches!(base, "numeric" | "real" | "double precision")
}

/// Classifies a type change. Unknown pairs are treated as lossy, rewriting and needing USING:
/// the safe assumptions.
pub(crate) fn conversion(from: &str, to: &str) -> Conversion {
    let (fb, fm, fa) = split_type(from);
    let (tb, tm, ta) = split_type(to);
    let mut c = Conversion {
        binary_coercible: false,
        lossless: false,
        narrowing: false,
        using: true,
    };
    if from == to {
        return Conversion {
            binary_coercible: true,
            lossless: true,
            narrowing: false,
            using: false,
        };
    }
    if fa != ta {
        return c;
    }
    let unbounded = |m: &[i64]| m.is_empty();
    // Same base type, different modifiers.
    if fb == tb {
        c.using = false;
        match fb.as_str() {
            "character varying" | "bit varying" => {
                let wider = match (fm.first(), tm.first()) {
                    (_, None) => true,
                    (Some(f), Some(t)) => t >= f,
                    (None, Some(_)) => false,
                };
                c.binary_coercible = wider && !fa;
                c.lossless = wider;
                c.narrowing = !wider;
            }
            "character" | "bit" => {
                let wider = matches!((fm.first(), tm.first()), (Some(f), Some(t)) if t >= f);
                c.lossless = wider;
                c.narrowing = !wider;
            }
            "numeric" => {
                let (fp, fs) = (fm.first().copied(), fm.get(1).copied().unwrap_or(0));
                let (tp, ts) = (tm.first().copied(), tm.get(1).copied().unwrap_or(0));
                let wider = match (fp, tp) {
                    (_, None) => true,
                    (None, Some(_)) => false,
                    (Some(fp), Some(tp)) => ts >= fs && tp - ts >= fp - fs,
                };
                // Postgres skips the rewrite when the scale is unchanged and the precision
                // does not shrink, or the new type is unconstrained.
                c.binary_coercible = !fa
                    && match (fp, tp) {
                        (_, None) => true,
                        (Some(fp), Some(tp)) => ts == fs && tp >= fp,
                        _ => false,
                    };
                c.lossless = wider;
                c.narrowing = !wider;
            }
            b if b.starts_with("timestamp") || b.starts_with("time") || b == "interval" => {
                let fp = fm.first().copied().unwrap_or(6);
                let tp = tm.first().copied().unwrap_or(6);
                c.binary_coercible = tp >= fp && !fa;
                c.lossless = tp >= fp;
                c.narrowing = tp < fp;
            }
            _ => {}
        }
        return c;
    }
    if is_string(&tb) {
        // Anything converts to text by its output function (an assignment cast), losslessly
        // unless a length limit cuts it.
        c.using = false;
        let limited = !unbounded(&tm);
        c.lossless = !limited;
        c.narrowing = limited;
        c.binary_coercible = !fa
            && !limited
            && matches!(fb.as_str(), "text" | "character varying")
            && matches!(tb.as_str(), "text" | "character varying");
        return c;
    }
    if is_numeric_family(&fb) && is_numeric_family(&tb) {
        c.using = false;
        let lossless = match (int_rank(&fb), int_rank(&tb)) {
            (Some(f), Some(t)) => t >= f,
            (Some(_), None) => match tb.as_str() {
                "numeric" => unbounded(&tm),
                "double precision" => fb != "bigint",
                "real" => fb == "smallint",
                _ => false,
            },
            (None, _) => fb == "real" && tb == "double precision",
        };
        c.lossless = lossless;
        c.narrowing = !lossless;
        return c;
    }
    match (fb.as_str(), tb.as_str()) {
        ("date", t) if t.starts_with("timestamp") => {
            c.using = false;
            c.lossless = true;
        }
        ("timestamp without time zone", "timestamp with time zone")
        | ("timestamp with time zone", "timestamp without time zone") => {
            c.using = false;
            c.lossless = true;
        }
        (f, "date") if f.starts_with("timestamp") => {
            c.using = false;
            c.narrowing = true;
        }
        ("cidr", "inet") => {
            c.using = false;
            c.lossless = true;
            c.binary_coercible = true;
        }
        _ => {}
    }
    c
}

/// The summary note and SQL suffix of a foreign key or check being added: on a populated table
/// (`online`) it is added `NOT VALID` and validated in a later step without a strong lock; a
/// constraint the desired catalog holds unvalidated stays `NOT VALID`.
fn not_valid_suffixes(online: bool, validated: bool) -> (&'static str, &'static str) {
    let note = if online {
        " (NOT VALID, validated after)"
    } else {
        ""
    };
    let not_valid = if online || !validated {
        " NOT VALID"
    } else {
        ""
    };
    (note, not_valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let c = conversion("character varying(100)", "character varying(10)");
        assert!(c.narrowing && !c.lossless && !c.using);
        let c = conversion("character varying(10)", "character varying(100)");
        assert!(c.lossless && c.binary_coercible);
        let c = conversion("character varying(10)", "text");
        assert!(c.lossless && c.binary_coercible);
        let c = conversion("text", "character varying(10)");
        assert!(c.narrowing && !c.lossless);
        let c = conversion("integer", "bigint");
        assert!(c.lossless && !c.binary_coercible && !c.using);
        let c = conversion("bigint", "integer");
        assert!(c.narrowing && !c.lossless);
        let c = conversion("text", "integer");
        assert!(!c.lossless && c.using);
        let c = conversion("numeric(10,2)", "numeric(12,2)");
        assert!(c.lossless && c.binary_coercible);
        let c = conversion("numeric(10,2)", "numeric(10,1)");
        assert!(c.narrowing);
        let c = conversion("timestamp(3) with time zone", "timestamp with time zone");
        assert!(c.lossless && c.binary_coercible);
    }

    #[test]
    fn sizes_are_readable() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(bytes(8192), "8.0 kB");
        assert_eq!(bytes(500), "500 bytes");
        assert_eq!(bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MB");
    }

    #[test]
    fn sequence_defaults_are_omitted() {
        let o = SequenceOptions {
            data_type: "bigint".into(),
            start: 1,
            increment: 1,
            min: 1,
            max: i64::MAX,
            cache: 1,
            cycle: false,
        };
        assert!(sequence_options(&o, true).is_empty());
        let o = SequenceOptions {
            data_type: "integer".into(),
            start: 10,
            increment: 5,
            max: i32::MAX as i64,
            cache: 3,
            ..o
        };
        assert_eq!(
            sequence_options(&o, true),
            ["AS integer", "INCREMENT BY 5", "START WITH 10", "CACHE 3"]
        );
    }
}
