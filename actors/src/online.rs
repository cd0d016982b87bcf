//! Online (expand/contract) migrations through the runtime: planned from a document against
//! live, then each phase run under the database's advisory lock (so no apply runs beside it)
//! and recorded in the ledger (`OnlineMigrated`) with the catalog hash before and after.
//! The mechanics and the phase state in the database are the engine's
//! ([`lockplane_engine::online`], [`lockplane_engine::rollout`]).

use lockplane_engine::events::{Event, OnlineMigrated};
use lockplane_engine::exec;
use lockplane_engine::online::{
    self, BackfillOptions, BackfillProgress, CompleteSql, OnlineMigration, TableShape,
};
use lockplane_engine::rollout::{self, Phase, Timeouts};
use lockplane_engine::{dsl, CatalogHash};
use serde::Serialize;

use crate::ops::{connect, live_hash, record, Db, Shared};
use crate::Error;

/// A backfill progress callback (the CLI prints it; the MCP server reports it as progress).
pub type ProgressFn = Box<dyn FnMut(&BackfillProgress) + Send>;

/// An online migration planned from a document: what each phase will run.
#[derive(Debug, Clone, Serialize)]
pub struct OnlinePlan {
    /// The database.
    pub database: String,
    /// The live catalog hash it was planned from.
    pub base_hash: CatalogHash,
    /// The migration (what `start` takes).
    pub migration: OnlineMigration,
    /// The version schema the new application puts first in its `search_path`.
    pub version_schema: String,
    /// Expand: one transaction.
    pub expand: Vec<String>,
    /// Indexes of the changed columns built again on the new ones, each statement alone,
    /// before the backfill.
    pub indexes: Vec<String>,
    /// Complete: validate, then contract.
    pub complete: CompleteSql,
    /// Rollback: one transaction.
    pub rollback: Vec<String>,
    /// The table's estimated rows (what the backfill goes over), when analysed.
    pub estimated_rows: Option<u64>,
    /// The ledger position of the `OnlineMigrated` record (phase `planned`).
    pub seq: u64,
}

/// What a phase did.
#[derive(Debug, Clone, Serialize)]
pub struct OnlineOutcome {
    /// The database.
    pub database: String,
    /// The migration's version.
    pub version: String,
    /// The changed table, `schema.table`.
    pub table: String,
    /// The phase reached.
    pub phase: Phase,
    /// Whether this call expanded (for start; false when it resumed).
    pub expanded: bool,
    /// Rows the backfill filled in this call.
    pub rows_filled: Option<u64>,
    /// Rows filled over every run.
    pub rows_filled_total: u64,
    /// The live catalog hash before.
    pub before_hash: CatalogHash,
    /// The live catalog hash after.
    pub after_hash: Option<CatalogHash>,
    /// The ledger position of the `OnlineMigrated` record.
    pub seq: u64,
}

fn timeouts(shared: &Shared) -> Timeouts {
    Timeouts {
        lock_timeout: shared.config.lock_timeout,
        lock_retries: shared.config.lock_retries,
        statement_timeout: shared.config.statement_timeout,
    }
}

fn table_name(m: &OnlineMigration) -> String {
    m.table()
        .map(|(s, t)| format!("{s}.{t}"))
        .unwrap_or_default()
}

/// Plans the online migration from live to the document `text` (named `name` in errors) and
/// records it (phase `planned`).
pub(crate) async fn plan(
    shared: &Shared,
    db: &Db,
    name: &str,
    text: &str,
    version: &str,
    actor: &str,
) -> Result<OnlinePlan, Error> {
    let loaded =
        dsl::load_file_text(name, text).map_err(|e| Error::InvalidDocument(e.to_string()))?;
    let mut client = connect(db).await?;
    let (live, base_hash) = live_hash(&mut client, db).await?;
    let desired = dsl::scope_to_live(&loaded.catalog, &live);
    let migration = online::derive(&live, &desired, &loaded.document, version)?;
    let (schema, table) = migration.table()?;
    let shape = TableShape::read(&client, schema, table).await?;
    let expand = online::expand_sql(&migration, &shape)?;
    let indexes = online::carried_indexes(&migration, &shape)
        .into_iter()
        .map(|i| i.create)
        .collect();
    // Complete runs on the expanded table; its statements are the same names either way.
    let complete = online::complete_sql(&migration, &shape)?;
    let rollback = online::rollback_sql(&migration, &shape)?;
    let estimated_rows = client
        .query_one(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)",
            &[&lockplane_engine::ident::qualified(schema, table)],
        )
        .await
        .ok()
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .and_then(|n| u64::try_from(n).ok());
    let head = record(
        shared,
        Event::OnlineMigrated(OnlineMigrated {
            actor: actor.to_owned(),
            database: db.id.clone(),
            version: migration.version.clone(),
            table: table_name(&migration),
            phase: "planned".into(),
            migration: serde_json::to_string(&migration).unwrap_or_default(),
            before_hash: Some(base_hash.clone()),
            after_hash: None,
            rows_filled: None,
            error: None,
        }),
        Vec::new(),
    )
    .await?;
    Ok(OnlinePlan {
        database: db.id.clone(),
        base_hash,
        version_schema: migration.version_schema()?,
        migration,
        expand,
        indexes,
        complete,
        rollback,
        estimated_rows,
        seq: head.seq,
    })
}

/// What to run under the lock.
pub(crate) enum Step {
    /// Expand (unless done) and backfill.
    Start {
        /// The migration.
        migration: Box<OnlineMigration>,
        /// Rows per batch.
        batch_size: u32,
        /// Called after each batch.
        progress: Option<ProgressFn>,
    },
    /// Contract.
    Complete {
        /// The version.
        version: String,
    },
    /// Undo the expand.
    Rollback {
        /// The version.
        version: String,
    },
}

/// Runs `step` under the database's advisory lock and records the phase reached, or the
/// failure (with the hash the database is at).
pub(crate) async fn run(
    shared: &Shared,
    db: &Db,
    step: Step,
    actor: &str,
) -> Result<OnlineOutcome, Error> {
    crate::ops::schema_access(
        shared,
        match &step {
            Step::Start { .. } => "starting an online migration",
            Step::Complete { .. } => "completing an online migration",
            Step::Rollback { .. } => "rolling back an online migration",
        },
    )?;
    let mut client = connect(db).await?;
    let key = exec::acquire_lock(&client, shared.config.lock_wait).await?;
    let (_, before_hash) = match live_hash(&mut client, db).await {
        Ok(h) => h,
        Err(e) => {
            exec::release_lock(&client, key).await;
            return Err(e);
        }
    };
    let t = timeouts(shared);
    let (version, migration_json, table) = match &step {
        Step::Start { migration, .. } => (
            migration.version.clone(),
            serde_json::to_string(migration).unwrap_or_default(),
            table_name(migration),
        ),
        Step::Complete { version } | Step::Rollback { version } => {
            match rollout::state(&client, version).await {
                Ok(Some(s)) => (
                    version.clone(),
                    serde_json::to_string(&s.migration).unwrap_or_default(),
                    table_name(&s.migration),
                ),
                _ => (version.clone(), String::new(), String::new()),
            }
        }
    };
    let ran = match step {
        Step::Start {
            migration,
            batch_size,
            progress,
        } => {
            let mut progress = progress.unwrap_or_else(|| Box::new(|_: &BackfillProgress| {}));
            let batch = BackfillOptions {
                batch_size,
                statement_timeout: shared.config.statement_timeout,
                ..BackfillOptions::default()
            };
            rollout::start(&client, &migration, &t, &batch, &mut *progress)
                .await
                .map(|s| {
                    let filled = s.backfill.as_ref().map(|b| b.progress.rows_filled);
                    (s.state, s.expanded, filled)
                })
        }
        Step::Complete { version } => rollout::complete(&client, &version, &t)
            .await
            .map(|s| (s, false, None)),
        Step::Rollback { version } => rollout::rollback(&client, &version, &t)
            .await
            .map(|s| (s, false, None)),
    };
    let after_hash = live_hash(&mut client, db).await.ok().map(|(_, h)| h);
    exec::release_lock(&client, key).await;
    let (phase, error) = match &ran {
        Ok((state, _, _)) => (state.phase.name().to_owned(), None),
        Err(e) => ("failed".to_owned(), Some(e.to_string())),
    };
    let head = record(
        shared,
        Event::OnlineMigrated(OnlineMigrated {
            actor: actor.to_owned(),
            database: db.id.clone(),
            version: version.clone(),
            table: table.clone(),
            phase,
            migration: migration_json,
            before_hash: Some(before_hash.clone()),
            after_hash: after_hash.clone(),
            rows_filled: ran.as_ref().ok().and_then(|(_, _, filled)| *filled),
            error,
        }),
        Vec::new(),
    )
    .await?;
    let (state, expanded, rows_filled) = ran?;
    Ok(OnlineOutcome {
        database: db.id.clone(),
        table: table_name(&state.migration),
        version,
        phase: state.phase,
        expanded,
        rows_filled,
        rows_filled_total: state.rows_filled,
        before_hash,
        after_hash,
        seq: head.seq,
    })
}
