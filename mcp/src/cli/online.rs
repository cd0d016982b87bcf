//! Online (expand/contract) migrations from the CLI: `lockplane plan --online --version V`,
//! `lockplane apply` of the file it writes (expand and backfill, resumable), `lockplane
//! complete V` and `lockplane rollback V`. Every step is one runtime call.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use lockplane_actors::{Lockplane, OnlineOutcome, OnlinePlan};
use lockplane_engine::online::{BackfillProgress, OnlineMigration};
use serde::{Deserialize, Serialize};

use super::plan::{attached, LockArgs, Settings};
use super::{ledger, print, CliError};

/// The key that marks a file `lockplane plan --online --out` wrote.
pub(crate) const FILE_MARK: &str = "lockplane_online_migration";

/// What `plan --online --out` writes and `apply` reads.
#[derive(Serialize, Deserialize)]
pub(crate) struct OnlineFile {
    /// Format version of the file.
    lockplane_online_migration: u32,
    /// The database it was planned for.
    database: String,
    /// Live's catalog hash when planned.
    base_hash: String,
    /// The migration.
    migration: OnlineMigration,
}

/// Flags of `lockplane complete` and `lockplane rollback`.
#[derive(clap::Args)]
pub(crate) struct VersionArgs {
    /// The online migration's version (as given to `plan --online --version`).
    version: String,
    /// The database (else DATABASE_URL, else the PG* variables).
    #[arg(long)]
    database_url: Option<String>,
    #[command(flatten)]
    locks: LockArgs,
    /// The database's id in the ledger; default `host:port/dbname`.
    #[arg(long, env = "LOCKPLANE_DB_ID", value_name = "ID")]
    db_id: Option<String>,
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Output(e.to_string())
}

/// `lockplane plan --online`: prints what each phase runs and writes the migration file.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn plan(
    at: &ledger::LedgerAt,
    actor: &str,
    name: &str,
    text: &str,
    version: &str,
    url: Option<&str>,
    db_id: Option<&str>,
    out: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    // No shadow: an online migration is planned from live's catalog and table alone.
    let settings = Settings {
        dry_run: false,
        ..Settings::default()
    };
    let (runtime, db) = attached(at, settings, url, db_id).await?;
    let plan = runtime.plan_online(&db, name, text, version, actor).await?;
    eprintln!(
        "lockplane: recorded the online migration plan as seq {} in {}",
        plan.seq, at.location
    );
    if let Some(out) = out {
        let file = OnlineFile {
            lockplane_online_migration: 1,
            database: plan.database.clone(),
            base_hash: plan.base_hash.0.clone(),
            migration: plan.migration.clone(),
        };
        let body = serde_json::to_string_pretty(&file).map_err(failed)?;
        std::fs::write(out, body).map_err(|source| CliError::Read {
            path: out.to_path_buf(),
            source,
        })?;
    }
    if json {
        print(&serde_json::to_string_pretty(&plan).map_err(failed)?)
    } else {
        print(&readable(&plan, out))
    }
}

fn readable(plan: &OnlinePlan, out: Option<&Path>) -> String {
    let m = &plan.migration;
    let mut s = String::new();
    let table = m
        .table()
        .map(|(a, b)| format!("{a}.{b}"))
        .unwrap_or_default();
    s.push_str(&format!(
        "Online migration {} of {table} (from live {})\n",
        m.version,
        lockplane_engine::events::short(&plan.base_hash.0)
    ));
    for c in &m.changes {
        let mut what = Vec::new();
        if let Some(n) = &c.new_name {
            what.push(format!("renamed to {n}"));
        }
        if let Some(t) = &c.new_type {
            what.push(format!("type {t}"));
        }
        if c.set_not_null {
            what.push("NOT NULL".into());
        }
        s.push_str(&format!(
            "  {}: {}; up: {}; down: {}\n",
            c.column,
            what.join(", "),
            c.up_sql(),
            c.down_sql()
        ));
    }
    let numbered = |steps: &[String]| -> String {
        steps
            .iter()
            .map(|q| format!("     {};\n", q.replace('\n', "\n     ")))
            .collect()
    };
    s.push_str(&format!(
        "\n1. expand (one transaction; `lockplane apply`):\n{}",
        numbered(&plan.expand)
    ));
    if !plan.indexes.is_empty() {
        s.push_str(&format!(
            "   then the changed columns' indexes on the new ones, each alone:\n{}",
            numbered(&plan.indexes)
        ));
    }
    s.push_str(&format!(
        "2. backfill: {} rows in keyset batches, one short transaction each, resumable\n",
        plan.estimated_rows
            .map(|n| format!("~{n}"))
            .unwrap_or_else(|| "the table's".into())
    ));
    s.push_str(&format!(
        "3. complete (`lockplane complete {}`), after every application reads the new shape:\n{}{}",
        m.version,
        numbered(&plan.complete.validate),
        numbered(&plan.complete.contract)
    ));
    s.push_str(&format!(
        "   or rollback (`lockplane rollback {}`):\n{}",
        m.version,
        numbered(&plan.rollback)
    ));
    s.push_str(&format!(
        "\nDuring the migration the new application connects with \
         `SET search_path TO {}, <its schemas>`; the old one keeps its search_path.\n",
        plan.version_schema
    ));
    if let Some(out) = out {
        s.push_str(&format!(
            "Start it with: lockplane apply {}\n",
            out.display()
        ));
    }
    s
}

/// Whether `text` (a file given to `apply`) is an online migration file.
pub(crate) fn is_online_file(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.get(FILE_MARK).is_some())
        .unwrap_or(false)
}

/// `lockplane apply` of an online migration file: expand (unless done) and backfill.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start(
    at: &ledger::LedgerAt,
    actor: &str,
    file: &Path,
    text: &str,
    url: Option<&str>,
    db_id: Option<&str>,
    locks: &LockArgs,
    batch_size: u32,
) -> Result<(), CliError> {
    let online: OnlineFile = serde_json::from_str(text).map_err(|e| {
        CliError::Usage(format!(
            "{} is not an online migration file: {e}",
            file.display()
        ))
    })?;
    let (runtime, db) = connected(at, url, db_id, locks).await?;
    let version = online.migration.version.clone();
    let terminal = std::io::stderr().is_terminal();
    let mut last_shown = Instant::now() - Duration::from_secs(10);
    let progress = Box::new(move |p: &BackfillProgress| {
        // A line a second at most (every batch on a terminal, overwritten).
        if !terminal && last_shown.elapsed() < Duration::from_secs(1) {
            return;
        }
        last_shown = Instant::now();
        let total = p
            .estimated_rows
            .map(|n| format!("/~{n}"))
            .unwrap_or_default();
        let eta = p
            .eta
            .map(|d| format!(", ETA {}s", d.as_secs()))
            .unwrap_or_default();
        let line = format!(
            "lockplane: backfill {version}: {} rows{total} ({} filled), {:.0} rows/s{eta}",
            p.rows_scanned, p.rows_filled, p.rows_per_second
        );
        if terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    });
    let outcome = runtime
        .start_online(
            &db,
            online.migration,
            batch_size.max(1),
            Some(progress),
            actor,
        )
        .await;
    if terminal {
        eprintln!();
    }
    let outcome = outcome?;
    report(&outcome, at)
}

async fn connected(
    at: &ledger::LedgerAt,
    url: Option<&str>,
    db_id: Option<&str>,
    locks: &LockArgs,
) -> Result<(Lockplane, lockplane_actors::DatabaseId), CliError> {
    let settings = Settings {
        dry_run: false,
        locks: Some(locks),
        ..Settings::default()
    };
    attached(at, settings, url, db_id).await
}

fn report(o: &OnlineOutcome, at: &ledger::LedgerAt) -> Result<(), CliError> {
    let rows = o
        .rows_filled
        .map(|n| format!("; {n} rows backfilled now, {} in all", o.rows_filled_total))
        .unwrap_or_default();
    let next = match o.phase {
        lockplane_engine::rollout::Phase::Expanded => {
            "run `lockplane apply` on the migration file again to finish the backfill".to_owned()
        }
        lockplane_engine::rollout::Phase::Backfilled => format!(
            "deploy the new application (search_path {}_{}), then `lockplane complete {}` \
             (or `lockplane rollback {}`)",
            o.table.split('.').next().unwrap_or("public"),
            o.version,
            o.version,
            o.version
        ),
        _ => String::new(),
    };
    print(&format!(
        "online migration {} of {}: {}{rows} (recorded as seq {} in {}){}",
        o.version,
        o.table,
        o.phase.name(),
        o.seq,
        at.location,
        if next.is_empty() {
            String::new()
        } else {
            format!("\nnext: {next}")
        }
    ))
}

/// `lockplane complete VERSION`.
pub(crate) async fn complete(
    at: &ledger::LedgerAt,
    actor: &str,
    args: VersionArgs,
) -> Result<(), CliError> {
    let (runtime, db) = connected(
        at,
        args.database_url.as_deref(),
        args.db_id.as_deref(),
        &args.locks,
    )
    .await?;
    let outcome = runtime.complete_online(&db, &args.version, actor).await?;
    report(&outcome, at)
}

/// `lockplane rollback VERSION`.
pub(crate) async fn rollback(
    at: &ledger::LedgerAt,
    actor: &str,
    args: VersionArgs,
) -> Result<(), CliError> {
    let (runtime, db) = connected(
        at,
        args.database_url.as_deref(),
        args.db_id.as_deref(),
        &args.locks,
    )
    .await?;
    let outcome = runtime.rollback_online(&db, &args.version, actor).await?;
    report(&outcome, at)
}
