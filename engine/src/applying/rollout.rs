//! Running an online (expand/contract) migration through its phases, with its state kept in
//! the managed database so that every phase can be resumed after a crash.
//!
//! The mechanics are [`crate::online`]'s; this module decides which phase runs next and
//! records where a migration is in `lockplane.online_migrations` (Lockplane's own schema,
//! which introspection never reads), **in the same transaction as the phase's DDL**: a phase
//! is either done and recorded, or neither. The backfill commits batch by batch; its last
//! committed key is recorded when it stops (finished, or failed after its retries). After a
//! `kill -9` mid-backfill the recorded key may be behind the rows filled: resuming scans
//! those rows again and writes none of them twice (the backfill only fills `NULL`s).
//!
//! ```text
//!  start ──► expanded ──(backfill)──► backfilled ──► complete ──► completed
//!                 │                        │
//!                 └────────── rollback ────┴──► rolled_back
//! ```
//!
//! `start` is idempotent: run on a migration already expanded, it resumes the backfill;
//! already backfilled, it does nothing. `complete` on an `expanded` migration checks that no
//! row is left unfilled (the trigger and a finished backfill fill every row) before it
//! contracts. What this module does not do: take the database's advisory lock or record in
//! the ledger (the runtime does both around it), or carry dependent objects over (see
//! [`crate::online`]).

use std::time::Duration;

use tokio_postgres::Client;

use crate::exec::{backoff, PgFailure};
use crate::ident::quote_literal;
use crate::online::{
    backfill, carried_indexes, complete_sql, expand_sql, rollback_sql, run_phase, unfilled_rows,
    BackfillOptions, BackfillProgress, BackfillReport, OnlineError, OnlineMigration, TableShape,
};

/// The table holding each online migration's phase.
pub const STATE_TABLE: &str = "lockplane.online_migrations";

/// Where an online migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Expanded: new columns, trigger and version schema in place; backfill not finished.
    Expanded,
    /// Every existing row filled; ready to complete.
    Backfilled,
    /// Contracted: the table has the new shape.
    Completed,
    /// Undone: the table is as before the migration.
    RolledBack,
}

impl Phase {
    /// The name stored in the state table.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Expanded => "expanded",
            Phase::Backfilled => "backfilled",
            Phase::Completed => "completed",
            Phase::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Expanded,
            Phase::Backfilled,
            Phase::Completed,
            Phase::RolledBack,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }
}

/// One row of [`STATE_TABLE`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct State {
    /// The migration, as started.
    pub migration: OnlineMigration,
    /// Where it is.
    pub phase: Phase,
    /// The backfill's last committed key, when it stopped before the end.
    pub last_key: Option<String>,
    /// Rows the backfill filled, over every run.
    pub rows_filled: u64,
}

/// The timeouts every phase runs with.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a statement waits for a lock before the phase is rolled back and tried again.
    pub lock_timeout: Duration,
    /// Tries per phase after a lock timeout or deadlock.
    pub lock_retries: u32,
    /// How long one statement may run.
    pub statement_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            lock_timeout: crate::exec::DEFAULT_LOCK_TIMEOUT,
            lock_retries: crate::exec::DEFAULT_LOCK_RETRIES,
            statement_timeout: Duration::from_secs(60),
        }
    }
}

/// What [`start`] did.
#[derive(Debug, Clone)]
pub struct Started {
    /// Whether this run expanded (false: it resumed a migration expanded before).
    pub expanded: bool,
    /// This run's backfill, when one ran.
    pub backfill: Option<BackfillReport>,
    /// The state after it.
    pub state: State,
}

fn state_sql() -> Vec<String> {
    vec![
        "CREATE SCHEMA IF NOT EXISTS lockplane".into(),
        format!(
            "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (\n  \
               version text PRIMARY KEY,\n  \
               table_name text NOT NULL,\n  \
               migration jsonb NOT NULL,\n  \
               phase text NOT NULL,\n  \
               last_key text,\n  \
               rows_filled bigint NOT NULL DEFAULT 0,\n  \
               started_at timestamptz NOT NULL DEFAULT now(),\n  \
               updated_at timestamptz NOT NULL DEFAULT now())"
        ),
    ]
}

fn pg(what: &str) -> impl FnOnce(tokio_postgres::Error) -> OnlineError + '_ {
    move |e| OnlineError::Postgres {
        what: what.to_owned(),
        failure: Box::new(PgFailure::from_error(&e)),
    }
}

/// The recorded state of `version`, if it was ever started here.
pub async fn state(client: &Client, version: &str) -> Result<Option<State>, OnlineError> {
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&STATE_TABLE])
        .await
        .map_err(pg("reading the online migrations' state"))?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT migration::text, phase, last_key, rows_filled FROM {STATE_TABLE} \
                 WHERE version = $1"
            ),
            &[&version],
        )
        .await
        .map_err(pg("reading the online migrations' state"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let text: String = row.get(0);
    let migration: OnlineMigration =
        serde_json::from_str(&text).map_err(|e| OnlineError::State {
            version: version.to_owned(),
            why: format!("the recorded migration does not read back: {e}"),
        })?;
    let phase_name: String = row.get(1);
    let phase = Phase::parse(&phase_name).ok_or_else(|| OnlineError::State {
        version: version.to_owned(),
        why: format!("unknown phase {phase_name:?}"),
    })?;
    Ok(Some(State {
        migration,
        phase,
        last_key: row.get(2),
        rows_filled: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
    }))
}

fn set_phase_sql(version: &str, phase: Phase) -> String {
    format!(
        "UPDATE {STATE_TABLE} SET phase = {}, updated_at = now() WHERE version = {}",
        quote_literal(phase.name()),
        quote_literal(version)
    )
}

/// Runs one phase's statements in one transaction, retried after a lock timeout or deadlock
/// (rolled back whole each time, so the database is at the phase's start in between).
async fn run_retried(
    client: &Client,
    statements: &[String],
    t: &Timeouts,
) -> Result<(), OnlineError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match run_phase(client, statements, t.lock_timeout, t.statement_timeout).await {
            Err(OnlineError::Postgres { failure, .. })
                if attempt <= t.lock_retries
                    && matches!(failure.sqlstate.as_deref(), Some("55P03" | "40P01")) =>
            {
                tokio::time::sleep(backoff(Duration::from_millis(250), attempt)).await;
            }
            other => return other,
        }
    }
}

fn table_of(m: &OnlineMigration) -> Result<(String, String), OnlineError> {
    let (schema, table) = m.table()?;
    Ok((schema.to_owned(), table.to_owned()))
}

/// Starts `m` (expand, then backfill), or resumes it where it stopped. `progress` is called
/// after each backfill batch.
pub async fn start(
    client: &Client,
    m: &OnlineMigration,
    t: &Timeouts,
    batch: &BackfillOptions,
    progress: &mut (dyn FnMut(&BackfillProgress) + Send),
) -> Result<Started, OnlineError> {
    m.validate()?;
    let (schema, table) = table_of(m)?;
    let mut expanded = false;
    let mut current = match state(client, &m.version).await? {
        Some(s) if s.migration != *m => {
            return Err(OnlineError::State {
                version: m.version.clone(),
                why: "a different migration was started under this version; choose another \
                      version name"
                    .into(),
            })
        }
        Some(s) => s,
        None => {
            let shape = TableShape::read(client, &schema, &table).await?;
            let json = serde_json::to_string(m).map_err(|e| OnlineError::State {
                version: m.version.clone(),
                why: e.to_string(),
            })?;
            let mut sql = state_sql();
            sql.extend(expand_sql(m, &shape)?);
            sql.push(format!(
                "INSERT INTO {STATE_TABLE} (version, table_name, migration, phase) \
                 VALUES ({}, {}, {}::jsonb, {})",
                quote_literal(&m.version),
                quote_literal(&format!("{schema}.{table}")),
                quote_literal(&json),
                quote_literal(Phase::Expanded.name())
            ));
            run_retried(client, &sql, t).await?;
            expanded = true;
            State {
                migration: m.clone(),
                phase: Phase::Expanded,
                last_key: None,
                rows_filled: 0,
            }
        }
    };
    match current.phase {
        Phase::Expanded => {}
        Phase::Backfilled => {
            return Ok(Started {
                expanded,
                backfill: None,
                state: current,
            })
        }
        done => {
            return Err(OnlineError::WrongPhase {
                version: m.version.clone(),
                phase: done.name(),
                wanted: "expanded or backfilled",
            })
        }
    }
    let shape = TableShape::read(client, &schema, &table).await?;
    build_indexes(client, m, &schema, &table, t).await?;
    let opts = BackfillOptions {
        resume_after: current.last_key.clone(),
        lock_timeout: t.lock_timeout,
        lock_retries: t.lock_retries,
        ..batch.clone()
    };
    let record_key = |key: &Option<String>, rows: u64, phase: Phase| {
        format!(
            "UPDATE {STATE_TABLE} SET last_key = {}, rows_filled = rows_filled + {rows}, \
             phase = {}, updated_at = now() WHERE version = {}",
            key.as_deref()
                .map(quote_literal)
                .unwrap_or_else(|| "NULL".into()),
            quote_literal(phase.name()),
            quote_literal(&m.version)
        )
    };
    match backfill(client, m, &shape, &opts, progress).await {
        Ok(report) => {
            let filled = report.progress.rows_filled;
            run_retried(
                client,
                &[record_key(
                    &report.progress.last_key,
                    filled,
                    Phase::Backfilled,
                )],
                t,
            )
            .await?;
            current.phase = Phase::Backfilled;
            current.last_key = report.progress.last_key.clone();
            current.rows_filled += filled;
            Ok(Started {
                expanded,
                backfill: Some(report),
                state: current,
            })
        }
        Err(OnlineError::Backfill {
            table,
            resume_after,
            rows_done,
            failure,
        }) => {
            // Where to resume, kept even though the backfill failed.
            let _ = run_phase(
                client,
                &[record_key(&resume_after, rows_done, Phase::Expanded)],
                t.lock_timeout,
                t.statement_timeout,
            )
            .await;
            Err(OnlineError::Backfill {
                table,
                resume_after,
                rows_done,
                failure,
            })
        }
        Err(e) => Err(e),
    }
}

/// Builds the indexes of the changed columns on the new ones (`CREATE INDEX CONCURRENTLY`,
/// each statement alone: writes go on), before the backfill so that it maintains them. An
/// index a crashed build left invalid is dropped and built again.
async fn build_indexes(
    client: &Client,
    m: &OnlineMigration,
    schema: &str,
    table: &str,
    t: &Timeouts,
) -> Result<(), OnlineError> {
    // The indexes to carry are those of the table before expand: read its shape as the old
    // application sees it (the new indexes, on `_lp_new_` columns, are not changed columns).
    let shape = TableShape::read(client, schema, table).await?;
    for index in carried_indexes(m, &shape) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A build that failed (a lock it lost, a crash) leaves an invalid index, which
            // `IF NOT EXISTS` would keep.
            let invalid = client
                .query_opt(
                    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2 AND NOT i.indisvalid",
                    &[&schema, &index.new],
                )
                .await
                .map_err(pg("checking an index build"))?
                .is_some();
            let mut ran = Ok(());
            if invalid {
                ran = run_alone(
                    client,
                    &format!(
                        "DROP INDEX CONCURRENTLY IF EXISTS {}",
                        crate::ident::qualified(schema, &index.new)
                    ),
                    t,
                )
                .await;
            }
            if ran.is_ok() {
                ran = run_alone(client, &index.create, t).await;
            }
            match ran {
                Ok(()) => break,
                Err(failure)
                    if attempt <= t.lock_retries
                        && matches!(failure.sqlstate.as_deref(), Some("55P03" | "40P01")) =>
                {
                    tokio::time::sleep(backoff(Duration::from_millis(250), attempt)).await;
                }
                Err(failure) => {
                    return Err(OnlineError::Postgres {
                        what: format!("building index {} on the new columns", index.new),
                        failure: Box::new(failure),
                    })
                }
            }
        }
    }
    Ok(())
}

/// One statement outside a transaction (`CONCURRENTLY` needs it) with the phase's short
/// lock timeout and its statement timeout.
async fn run_alone(client: &Client, sql: &str, t: &Timeouts) -> Result<(), PgFailure> {
    let settings = format!(
        "SET lock_timeout = '{}ms'; SET statement_timeout = '{}ms'",
        t.lock_timeout.as_millis().max(1),
        t.statement_timeout.as_millis().max(1)
    );
    client
        .batch_execute(&settings)
        .await
        .map_err(|e| PgFailure::from_error(&e))?;
    let ran =
        crate::exec::run_with_timeout(client, sql, t.statement_timeout + Duration::from_secs(2))
            .await;
    let _ = client
        .batch_execute("RESET lock_timeout; RESET statement_timeout")
        .await;
    ran.map(|_| ())
}

async fn started(client: &Client, version: &str) -> Result<State, OnlineError> {
    state(client, version)
        .await?
        .ok_or_else(|| OnlineError::UnknownVersion(version.to_owned()))
}

/// Completes `version` (contracts the table to the new shape): validates the `NOT NULL`
/// checks in one transaction (writes go on), then contracts and records `completed` in
/// another. Refused while rows are left unfilled. Running it again after a crash between the
/// two transactions validates again (nothing to scan twice) and contracts.
pub async fn complete(client: &Client, version: &str, t: &Timeouts) -> Result<State, OnlineError> {
    let mut current = started(client, version).await?;
    if !matches!(current.phase, Phase::Expanded | Phase::Backfilled) {
        return Err(OnlineError::WrongPhase {
            version: version.to_owned(),
            phase: current.phase.name(),
            wanted: "expanded or backfilled",
        });
    }
    let m = current.migration.clone();
    let (schema, table) = table_of(&m)?;
    let shape = TableShape::read(client, &schema, &table).await?;
    let left = unfilled_rows(client, &m, &shape).await?;
    if left > 0 {
        return Err(OnlineError::Unfinished {
            version: version.to_owned(),
            rows: left,
        });
    }
    let sql = complete_sql(&m, &shape)?;
    if !sql.validate.is_empty() {
        run_retried(client, &sql.validate, t).await?;
    }
    let mut contract = sql.contract;
    contract.push(set_phase_sql(version, Phase::Completed));
    run_retried(client, &contract, t).await?;
    current.phase = Phase::Completed;
    Ok(current)
}

/// Rolls `version` back (before complete): drops what expand added and records
/// `rolled_back`, in one transaction. The old columns were never touched.
pub async fn rollback(client: &Client, version: &str, t: &Timeouts) -> Result<State, OnlineError> {
    let mut current = started(client, version).await?;
    if !matches!(current.phase, Phase::Expanded | Phase::Backfilled) {
        return Err(OnlineError::WrongPhase {
            version: version.to_owned(),
            phase: current.phase.name(),
            wanted: "expanded or backfilled",
        });
    }
    let m = current.migration.clone();
    let (schema, table) = table_of(&m)?;
    let shape = TableShape::read(client, &schema, &table).await?;
    let mut sql = rollback_sql(&m, &shape)?;
    sql.push(set_phase_sql(version, Phase::RolledBack));
    run_retried(client, &sql, t).await?;
    current.phase = Phase::RolledBack;
    Ok(current)
}
