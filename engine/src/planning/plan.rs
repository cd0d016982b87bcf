//! Plans: the explicit, hashed list of SQL steps that takes a live catalog to a desired one.
//!
//! A [`Plan`] is a value addressed by its hash (DESIGN §4). It is built in three pure stages:
//!
//! 1. [`crate::diff::diff`] compares the live and the desired catalog (with the renames the
//!    DSL declared) and lists [`crate::diff::Change`]s, object by object;
//! 2. [`crate::compile::compile`] turns the changes into ordered [`Step`]s with their exact
//!    SQL, the strongest lock each takes and the [`Hazard`]s it carries, graded with
//!    [`TableStats`];
//! 3. [`plan`] wraps the steps with the two catalog hashes and computes the plan id.
//!
//! # How a plan is executed
//!
//! Steps run in plan order. Every transactional step belongs to the one main transaction
//! (run with a `lock_timeout`); the transactional steps are contiguous in the plan. A
//! non-transactional step runs alone, in autocommit: those placed before the transactional
//! block run before the transaction (only `ALTER TYPE … ADD VALUE` whose new label the
//! transaction uses, since a label added in a transaction cannot be used before it commits),
//! those placed after it run after it commits (`CREATE`/`DROP INDEX CONCURRENTLY`,
//! `VALIDATE CONSTRAINT`, the online `SET NOT NULL` sequence, and what must follow them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::diff::{Change, Renames};
use crate::hash::{canonical_json, catalog_hash, sha3_256_hex, CanonicalError, CatalogHash};

/// A plan: the steps that take the catalog whose hash is `base_hash` to `target_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// `"sha3-256:" + hex(SHA3-256(canonical JSON of every other field))`.
    pub plan_id: String,
    /// Hash of the live catalog the plan was computed from; apply refuses any other.
    pub base_hash: CatalogHash,
    /// Hash of the desired catalog; apply verifies the result against it.
    pub target_hash: CatalogHash,
    /// The steps, in execution order.
    pub steps: Vec<Step>,
    /// Every hazard of every step, in step order (duplicates removed).
    pub hazards: Vec<Hazard>,
    /// True when a hazard needs an explicit confirmation of this `plan_id` before apply
    /// (data loss, or a change touching something Lockplane cannot see into).
    pub requires_confirmation: bool,
    /// Who asked for the plan (an agent or user name).
    pub created_by: String,
}

/// One SQL statement of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Position in the plan, `"1"`, `"2"`, …
    pub id: String,
    /// What the step does, for a human.
    pub summary: String,
    /// Exactly one SQL statement.
    pub sql: String,
    /// Whether the step runs inside the plan's main transaction (see the module docs).
    pub transactional: bool,
    /// The strongest table-level lock the statement takes.
    pub lock: LockLevel,
    /// The risks of this step.
    pub hazards: Vec<Hazard>,
    /// The catalog hash the shadow held right after this step, on steps that end a phase
    /// (the transaction's last step, each step run alone); `None` before the plan is proven.
    /// The executor checks it before `COMMIT` (and after each step run alone), so nothing
    /// the proof did not reach is committed.
    #[serde(default)]
    pub reaches: Option<CatalogHash>,
}

/// Postgres table-level lock modes, weakest first (so `Ord` says which is stronger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockLevel {
    /// Takes no lock on an existing relation (new objects, grants, schema-level objects).
    #[serde(rename = "NONE")]
    None,
    /// `ACCESS SHARE` (what `SELECT` takes).
    #[serde(rename = "ACCESS SHARE")]
    AccessShare,
    /// `ROW SHARE`.
    #[serde(rename = "ROW SHARE")]
    RowShare,
    /// `ROW EXCLUSIVE` (what writes take).
    #[serde(rename = "ROW EXCLUSIVE")]
    RowExclusive,
    /// `SHARE UPDATE EXCLUSIVE`: blocks other schema changes and VACUUM, not reads or writes.
    #[serde(rename = "SHARE UPDATE EXCLUSIVE")]
    ShareUpdateExclusive,
    /// `SHARE`: blocks writes.
    #[serde(rename = "SHARE")]
    Share,
    /// `SHARE ROW EXCLUSIVE`: blocks writes.
    #[serde(rename = "SHARE ROW EXCLUSIVE")]
    ShareRowExclusive,
    /// `EXCLUSIVE`: blocks writes and `SELECT … FOR UPDATE`.
    #[serde(rename = "EXCLUSIVE")]
    Exclusive,
    /// `ACCESS EXCLUSIVE`: blocks everything, reads included.
    #[serde(rename = "ACCESS EXCLUSIVE")]
    AccessExclusive,
}

impl LockLevel {
    /// The name Postgres uses (`ACCESS EXCLUSIVE`), or `NONE`.
    pub fn postgres_name(self) -> &'static str {
        match self {
            LockLevel::None => "NONE",
            LockLevel::AccessShare => "ACCESS SHARE",
            LockLevel::RowShare => "ROW SHARE",
            LockLevel::RowExclusive => "ROW EXCLUSIVE",
            LockLevel::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockLevel::Share => "SHARE",
            LockLevel::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockLevel::Exclusive => "EXCLUSIVE",
            LockLevel::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// Whether the lock blocks `INSERT`/`UPDATE`/`DELETE` on the table while it is held.
    pub fn blocks_writes(self) -> bool {
        self >= LockLevel::Share
    }

    /// Whether the lock blocks plain `SELECT` while it is held.
    pub fn blocks_reads(self) -> bool {
        self == LockLevel::AccessExclusive
    }
}

impl std::fmt::Display for LockLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.postgres_name())
    }
}

/// A risk a step carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hazard {
    /// What kind of risk.
    pub kind: HazardKind,
    /// The object at risk, as a dotted path (`public.users.email`).
    pub object: String,
    /// The risk explained for a human, graded with the table's size.
    pub detail: String,
}

/// The kinds of risk a plan names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HazardKind {
    /// Data is destroyed: a dropped table or column, a narrowing type change.
    DataLoss,
    /// The whole table (and its indexes) is rewritten.
    TableRewrite,
    /// `ACCESS EXCLUSIVE` on a table with rows: reads and writes wait.
    AccessExclusiveLock,
    /// Writes to the table wait while the step runs (a plain index build, a validated FK).
    BlocksWrites,
    /// The step reads the whole table to check a constraint.
    ValidationScan,
    /// The change touches a table or column that an object Lockplane does not manage (a
    /// trigger, a function body, a materialized view) may depend on.
    DependsOnUnsupported,
    /// The step re-creates something a forward plan dropped: the structure comes back, the
    /// data does not.
    DataNotRestored,
    /// The statement can fail on existing data (a cast that rejects values, NOT NULL over
    /// NULLs); the transaction then rolls back.
    MayFail,
    /// Roles gain access to rows or objects that exist now: a permissive policy added or
    /// changed, a restrictive one dropped, row-level security disabled or no longer forced,
    /// a privilege granted. (On a table the plan creates there is nothing to widen.)
    WidensAccess,
}

impl HazardKind {
    /// Whether a plan carrying this hazard needs a confirmation of its `plan_id`.
    pub fn requires_confirmation(self) -> bool {
        matches!(
            self,
            HazardKind::DataLoss | HazardKind::DependsOnUnsupported | HazardKind::WidensAccess
        )
    }
}

/// Estimated size of one table, from `pg_class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSize {
    /// `pg_class.reltuples` rounded; `-1` when the table was never analysed or vacuumed.
    pub rows: i64,
    /// Size of the table's main fork in bytes (`pg_relation_size`).
    pub bytes: i64,
}

impl TableSize {
    /// True when the table certainly holds no rows: no heap page at all.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0 && self.rows <= 0
    }
}

/// Table sizes by schema, then table name. Tables missing from the map are treated as
/// populated with an unknown size (the safe assumption), except tables the plan creates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    /// `schema → table → size`.
    pub tables: BTreeMap<String, BTreeMap<String, TableSize>>,
}

impl TableStats {
    /// The size of `schema.table`, if known.
    pub fn get(&self, schema: &str, table: &str) -> Option<TableSize> {
        self.tables.get(schema)?.get(table).copied()
    }

    /// Records the size of `schema.table`.
    pub fn insert(&mut self, schema: &str, table: &str, size: TableSize) {
        self.tables
            .entry(schema.to_owned())
            .or_default()
            .insert(table.to_owned(), size);
    }

    /// Every table marked empty (handy for planning against a database known to be empty).
    pub fn all_empty(catalog: &Catalog) -> TableStats {
        let mut stats = TableStats::default();
        for (schema_name, schema) in &catalog.schemas {
            for table in schema.tables.keys() {
                stats.insert(schema_name, table, TableSize { rows: 0, bytes: 0 });
            }
        }
        stats
    }
}

/// Reads estimated table sizes: `reltuples` from `pg_class` (an estimate kept by VACUUM and
/// ANALYZE) and the main fork's size, which is exact and tells an empty table for certain
/// even before the first ANALYZE. `pg_relation_size` takes `ACCESS SHARE` on each table, the
/// weakest lock there is.
pub async fn read_stats(
    client: &tokio_postgres::Client,
) -> Result<TableStats, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, \
               greatest(c.reltuples, -1)::float8::bigint, pg_catalog.pg_relation_size(c.oid) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' \
               AND n.nspname !~ '^pg_'",
            &[],
        )
        .await?;
    let mut stats = TableStats::default();
    for row in rows {
        let schema: String = row.get(0);
        let table: String = row.get(1);
        stats.insert(
            &schema,
            &table,
            TableSize {
                rows: row.get(2),
                bytes: row.get(3),
            },
        );
    }
    Ok(stats)
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Some changes cannot be planned safely (listed with their reasons).
    #[error("cannot plan: {}", refusals.iter().map(|r| format!("{}: {}", r.object, r.reason)).collect::<Vec<_>>().join("; "))]
    Refused {
        /// Each refused change.
        refusals: Vec<Refusal>,
    },
    /// A catalog or the plan could not be canonicalised for hashing.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
}

/// One change the planner refuses to make, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Refusal {
    /// The object (`public.mood`).
    pub object: String,
    /// Why, for a human, with what to do instead.
    pub reason: String,
}

/// The plan that takes `live` to `desired`.
///
/// `desired` must be what Postgres itself prints for the wanted schema (the DSL is
/// materialised on a scratch database and introspected), with `live`'s unsupported objects
/// carried over; `target_hash` is its hash. `renames` says which desired tables and columns
/// are live ones under a new name.
#[tracing::instrument(level = "debug", name = "plan", skip_all)]
pub fn plan(
    live: &Catalog,
    desired: &Catalog,
    renames: &Renames,
    stats: &TableStats,
    created_by: &str,
) -> Result<Plan, PlanError> {
    let changes = crate::diff::diff(live, desired, renames);
    let compiled = crate::compile::compile(live, desired, &changes, stats)?;
    let mut steps = drop_invalid_indexes(live);
    steps.extend(compiled);
    assemble(
        catalog_hash(live)?,
        catalog_hash(desired)?,
        steps,
        created_by,
    )
}

/// The steps that remove live's invalid indexes (see [`Catalog::invalid_indexes`]) before
/// anything else: a failed concurrent build left them, a new build of the same name would
/// fail on them, and they slow every write for nothing. Run alone, concurrently, so no write
/// waits; `IF EXISTS` because they are not part of the catalog a shadow reproduces.
pub(crate) fn drop_invalid_indexes(live: &Catalog) -> Vec<Step> {
    live.invalid_indexes
        .iter()
        .map(|(schema, name)| Step {
            id: String::new(),
            summary: format!(
                "drop invalid index {schema}.{name} (left by a failed concurrent build)"
            ),
            sql: format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {}",
                crate::ident::qualified(schema, name)
            ),
            transactional: false,
            lock: LockLevel::ShareUpdateExclusive,
            hazards: Vec::new(),
            reaches: None,
        })
        .collect()
}

/// The plan that undoes [`plan`]`(live, desired, renames, …)`: it takes `desired` back to
/// `live`, with the renames inverted and `stats` (sizes of `live`'s tables) carried over to
/// the renamed tables.
///
/// What the forward plan destroyed cannot come back: every step that re-creates a table or a
/// column the forward plan dropped carries a [`HazardKind::DataNotRestored`] hazard saying it
/// comes back empty.
#[tracing::instrument(level = "debug", name = "reverse", skip_all)]
pub fn reverse(
    live: &Catalog,
    desired: &Catalog,
    renames: &Renames,
    stats: &TableStats,
    created_by: &str,
) -> Result<Plan, PlanError> {
    // Only the renames the forward plan makes are undone: one `live` already shows done was
    // no step of it.
    let renames = &renames.pending_on(live);
    let inverse = renames.inverse();
    let mut moved = stats.clone();
    for r in &renames.tables {
        if let Some(size) = stats.get(&r.schema, &r.from) {
            moved.insert(&r.schema, &r.to, size);
        }
    }
    let changes = crate::diff::diff(desired, live, &inverse);
    let steps = crate::compile::compile_with_origins(desired, live, &changes, &moved)?
        .into_iter()
        .map(|(mut step, origin)| {
            if let Some(h) = changes.get(origin).and_then(not_restored) {
                step.hazards.push(h);
            }
            step
        })
        .collect();
    assemble(
        catalog_hash(desired)?,
        catalog_hash(live)?,
        steps,
        created_by,
    )
}

/// The "comes back empty" hazard of a reverse step: every table the reverse creates and every
/// plain column it adds existed before the forward plan dropped it.
fn not_restored(change: &Change) -> Option<Hazard> {
    let (object, what) = match change {
        Change::CreateTable { schema, name, .. } => (format!("{schema}.{name}"), "table"),
        Change::AddColumn {
            schema,
            table,
            name,
            column,
        } if column.generated.is_none() => (format!("{schema}.{table}.{name}"), "column"),
        _ => return None,
    };
    Some(Hazard {
        kind: HazardKind::DataNotRestored,
        object,
        detail: format!(
            "the forward plan dropped this {what}; undoing it re-creates the {what} empty (or \
             filled with its default): the data it held is not brought back"
        ),
    })
}

/// The id of a plan: the hash of the canonical JSON of everything but the id itself.
pub fn plan_id(
    base_hash: &CatalogHash,
    target_hash: &CatalogHash,
    steps: &[Step],
    hazards: &[Hazard],
    requires_confirmation: bool,
    created_by: &str,
) -> Result<String, CanonicalError> {
    #[derive(Serialize)]
    struct Content<'a> {
        base_hash: &'a CatalogHash,
        target_hash: &'a CatalogHash,
        steps: &'a [Step],
        hazards: &'a [Hazard],
        requires_confirmation: bool,
        created_by: &'a str,
    }
    let bytes = canonical_json(&Content {
        base_hash,
        target_hash,
        steps,
        hazards,
        requires_confirmation,
        created_by,
    })?;
    Ok(format!(
        "{}{}",
        crate::hash::HASH_PREFIX,
        sha3_256_hex(&bytes)
    ))
}

impl Plan {
    /// True when the plan has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The kinds of hazard the plan carries, sorted, each once (what the ledger's plan
    /// summary lists).
    pub fn hazard_kinds(&self) -> Vec<HazardKind> {
        let mut kinds: Vec<HazardKind> = self.hazards.iter().map(|h| h.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// The kinds of hazard by their serde names (`data_loss`, `table_rewrite`, …), sorted:
    /// what events record and agents read.
    pub fn hazard_names(&self) -> Vec<String> {
        self.hazard_kinds()
            .iter()
            .filter_map(|k| match serde_json::to_value(k) {
                Ok(serde_json::Value::String(name)) => Some(name),
                _ => None,
            })
            .collect()
    }

    /// Recomputes the id from the content: a plan read back from storage can be checked.
    pub fn computed_id(&self) -> Result<String, CanonicalError> {
        plan_id(
            &self.base_hash,
            &self.target_hash,
            &self.steps,
            &self.hazards,
            self.requires_confirmation,
            &self.created_by,
        )
    }
}

impl Plan {
    /// The plan as proven on a shadow: `reached` is the hash after each phase (keyed by the
    /// id of the step that ends it) and `target` the hash the shadow reached at the end, which
    /// becomes the plan's `target_hash`. The id is recomputed.
    pub fn with_proof(
        mut self,
        reached: &BTreeMap<String, CatalogHash>,
        target: CatalogHash,
    ) -> Result<Plan, CanonicalError> {
        for step in &mut self.steps {
            step.reaches = reached.get(&step.id).cloned();
        }
        self.target_hash = target;
        self.plan_id = self.computed_id()?;
        Ok(self)
    }

    /// The plan with `steps` put first (Lockplane's helper installation, say), renumbered,
    /// hazards and id recomputed.
    pub fn with_leading_steps(self, leading: Vec<Step>) -> Result<Plan, PlanError> {
        let created_by = self.created_by.clone();
        let mut steps = leading;
        steps.extend(self.steps);
        assemble(self.base_hash, self.target_hash, steps, &created_by)
    }
}

/// Builds a plan from compiled steps: numbers them, collects hazards, decides on
/// confirmation and computes the id.
pub fn assemble(
    base_hash: CatalogHash,
    target_hash: CatalogHash,
    mut steps: Vec<Step>,
    created_by: &str,
) -> Result<Plan, PlanError> {
    let mut hazards: Vec<Hazard> = Vec::new();
    for (i, step) in steps.iter_mut().enumerate() {
        step.id = (i + 1).to_string();
        for h in &step.hazards {
            if !hazards.contains(h) {
                hazards.push(h.clone());
            }
        }
    }
    let requires_confirmation = hazards.iter().any(|h| h.kind.requires_confirmation());
    let plan_id = plan_id(
        &base_hash,
        &target_hash,
        &steps,
        &hazards,
        requires_confirmation,
        created_by,
    )?;
    Ok(Plan {
        plan_id,
        base_hash,
        target_hash,
        steps,
        hazards,
        requires_confirmation,
        created_by: created_by.to_owned(),
    })
}
