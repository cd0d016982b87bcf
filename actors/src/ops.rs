//! What the runtime does, as plain async functions over explicit handles. The database actor
//! calls the mutating ones one at a time; the handle calls the reads directly.

use std::sync::Arc;

use lockplane_engine::catalog::{Catalog, Manifest};
use lockplane_engine::cluster::{Cluster, PgBinaries};
use lockplane_engine::diff::Renames;
use lockplane_engine::events::{
    self, ApplyFailed, ApplyStarted, Approval, BlobRef, CatalogIntrospected, DriftDetected, Event,
    PlanApplied, PlanConfirmed, PlanProposed, PlanSummary, PlansMerged, Receipt, SqlApplied,
    Timing,
};
use lockplane_engine::exec::{self, ApplyOptions};
use lockplane_engine::guard::AccessMode;
use lockplane_engine::hash::canonical_json;
use lockplane_engine::plan::{self as planner, Plan, TableStats};
use lockplane_engine::projection::{DatabaseView, LiveHash, PlanStatus, PlanView};
use lockplane_engine::proposal::{self, ProposeError, ProposeOptions};
use lockplane_engine::session::{self, SessionContext};
use lockplane_engine::shadow::{LiveSource, ShadowOptions, ShadowReport, ShadowTarget};
use lockplane_engine::{catalog_hash, connect, dsl, introspect_parallel, CatalogHash};
use lockplane_engine::{introspect, IntrospectOptions};
use lockplane_store::{BlobHash, Head, NewRecord, Store};
use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{Config, ShadowConfig};
use crate::ledger::{Append, CatchUp, LedgerWriter, ProjectionActor, Read};
use crate::Error;

/// Everything an operation needs besides the database: settings, the ledger, the shadow.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) writer: actix::Addr<LedgerWriter>,
    pub(crate) projection: actix::Addr<ProjectionActor>,
    pub(crate) shadow: Arc<ShadowPool>,
}

/// A managed database: its ledger id and how to reach it.
#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) id: String,
    pub(crate) pg: connect::ConnTarget,
}

/// The shadow server, started the first time a plan needs one.
pub(crate) struct ShadowPool {
    pub(crate) config: ShadowConfig,
    /// Keep reproductions on a server given by URL (`Config::keep_reproductions`).
    pub(crate) keep_url: bool,
    pub(crate) cluster: tokio::sync::OnceCell<Cluster>,
}

impl ShadowPool {
    /// The shadow server for the database `client` is connected to: a throwaway cluster of
    /// the same major version when one is installed (see `PgBinaries::for_server`).
    /// Also says whether reproductions are kept there: on the runtime's own cluster always,
    /// on a server given by URL when configured.
    async fn target(&self, client: &Client) -> Result<(ShadowTarget<'_>, bool), Error> {
        match &self.config {
            ShadowConfig::Url(url) => Ok((ShadowTarget::Url(url), self.keep_url)),
            ShadowConfig::Throwaway => {
                let major: i32 = client
                    .query_one(
                        "SELECT pg_catalog.current_setting('server_version_num')::int / 10000",
                        &[],
                    )
                    .await
                    .map_err(|e| Error::Shadow(format!("reading the server version: {e}")))?
                    .get(0);
                let major = u32::try_from(major).unwrap_or(0);
                let cluster = self
                    .cluster
                    .get_or_try_init(|| async move {
                        tokio::task::spawn_blocking(move || {
                            PgBinaries::for_server(major).and_then(|b| Cluster::start(&b))
                        })
                        .await
                        .map_err(|e| Error::Shadow(e.to_string()))?
                        .map_err(|e| Error::Shadow(e.to_string()))
                    })
                    .await?;
                Ok((ShadowTarget::Cluster(cluster), true))
            }
        }
    }
}

/// The executor's progress during an apply: each committed phase appended to the ledger
/// (`StepApplied`), then passed on to the caller's watcher with the lock waits.
struct LedgerSink {
    actor: String,
    database: String,
    store: Arc<dyn Store>,
    watcher: Option<Arc<dyn exec::ProgressSink>>,
}

impl exec::ProgressSink for LedgerSink {
    fn step_applied(&self, progress: &exec::StepProgress) -> Result<(), String> {
        if let Some(step) = progress.step_applied(&self.actor, &self.database) {
            let event = Event::StepApplied(step);
            let record = NewRecord::now(event.database(), event.kind(), events::encode(&event));
            self.store
                .append(None, vec![record])
                .map_err(|e| e.to_string())?;
        }
        match &self.watcher {
            Some(watcher) => watcher.step_applied(progress),
            None => Ok(()),
        }
    }

    fn lock_waited(&self, wait: &exec::LockWait) {
        if let Some(watcher) = &self.watcher {
            watcher.lock_waited(wait);
        }
    }
}

/// A live catalog as read (and recorded).
#[derive(Debug, Clone, Serialize)]
pub struct Introspection {
    /// The database id.
    pub database: String,
    /// Its catalog hash.
    pub catalog_hash: CatalogHash,
    /// The catalog.
    pub catalog: Catalog,
    /// Seq of the `CatalogIntrospected` record.
    pub seq: u64,
    /// The server's version as it reports it (`SHOW server_version`).
    pub server_version: Option<String>,
}

/// Reads the live catalog of `schemas` (all user schemas when empty) and records it; a
/// reading limited to some schemas does not move what the ledger knows as live.
pub(crate) async fn introspect_schemas(
    shared: &Shared,
    db: &Db,
    actor: &str,
    schemas: &[String],
) -> Result<Introspection, Error> {
    Ok(introspect_and_record(shared, db, actor, schemas).await?.0)
}

/// A recorded proposal (or merge, or rebase).
#[derive(Debug, Clone, Serialize)]
pub struct Proposal {
    /// The database id.
    pub database: String,
    /// The plan: steps, SQL, hazards, `plan_id`.
    pub plan: Plan,
    /// The catalog hash the database will have after the plan.
    pub predicted_hash: CatalogHash,
    /// Seq of the `PlanProposed`/`PlansMerged` record.
    pub seq: u64,
    /// What the shadow dry run proved.
    pub shadow: String,
}

/// An applied plan.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The database id.
    pub database: String,
    /// The plan applied (a rebased plan when `rebased_from` is set).
    pub plan_id: String,
    /// The stale plan this one was rebased from.
    pub rebased_from: Option<String>,
    /// The live hash before.
    pub before_hash: CatalogHash,
    /// The live hash after: the plan's target, verified.
    pub resulting_hash: CatalogHash,
    /// What ran, one receipt per phase.
    pub receipts: Vec<Receipt>,
    /// Seq of the `PlanApplied` record.
    pub seq: u64,
    /// True when nothing ran: the plan's target was already live (an earlier apply finished
    /// after its process stopped, or the change was made another way) and is recorded so.
    pub recovered: bool,
}

/// A statement run through `apply_sql`.
#[derive(Debug, Clone, Serialize)]
pub struct SqlResult {
    /// The database id.
    pub database: String,
    /// The statement kind (`insert`, `create_index`, …).
    pub kind: String,
    /// Rows affected or returned.
    pub rows: u64,
    /// Column names, when the statement returned rows.
    pub columns: Vec<String>,
    /// Result rows (bounded), as Postgres prints them.
    pub result: Vec<Vec<Option<String>>>,
    /// The catalog hash before; `None` for a read-only statement (it ran in a READ ONLY
    /// transaction, which cannot change the schema, and the catalog was not read).
    pub before_hash: Option<CatalogHash>,
    /// The catalog hash after; `None` for a read-only statement.
    pub resulting_hash: Option<CatalogHash>,
    /// What was left out of `result`, when anything was (rows or bytes beyond the answer's
    /// bounds, values cut).
    pub truncation: Option<String>,
    /// What ran.
    pub receipt: Receipt,
    /// Seq of the `SqlApplied` record.
    pub seq: u64,
}

/// Whether the live schema is what the ledger last recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    /// The database id.
    pub database: String,
    /// The hash found live.
    pub live_hash: CatalogHash,
    /// The hash the ledger last recorded (none before the first introspection).
    pub recorded_hash: Option<CatalogHash>,
    /// Whether they differ.
    pub drifted: bool,
    /// What differs, object by object, when the recorded catalog is in the ledger.
    pub differences: Vec<String>,
    /// Seq of the `DriftDetected` record, when drift was found (an earlier one, when this
    /// check found the same drift again and recorded nothing).
    pub seq: Option<u64>,
}

/// What start-up recovery did about an apply left without an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// The database id.
    pub database: String,
    /// The plan whose apply was interrupted.
    pub plan_id: String,
    /// `recovered` (at target), `interrupted` (at base) or `drift` (neither).
    pub outcome: String,
    /// The live hash found.
    pub live_hash: CatalogHash,
}

/// How the caller of an apply watches and stops it (the CLI's progress display and its
/// Ctrl-C); the default does neither.
#[derive(Clone, Default)]
pub struct ApplyControl {
    /// Told of each committed phase, after the runtime recorded it (`StepApplied`). An error
    /// stops the apply before its next phase.
    pub progress: Option<Arc<dyn exec::ProgressSink>>,
    /// Notified to stop: the running statement is cancelled on the server, no further one
    /// starts, a transaction rolls back, and the outcome is recorded as interrupted.
    pub stop: Option<Arc<tokio::sync::Notify>>,
    /// Told the backend pid of the apply's connection when it starts (to watch it, e.g. in
    /// `pg_stat_progress_create_index`).
    pub on_start: Option<Arc<dyn Fn(i32) + Send + Sync>>,
}

impl std::fmt::Debug for ApplyControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyControl")
            .field("progress", &self.progress.is_some())
            .field("stop", &self.stop.is_some())
            .field("on_start", &self.on_start.is_some())
            .finish()
    }
}

// ---- plumbing -------------------------------------------------------------------------------

fn db_error(db: &Db, message: impl std::fmt::Display) -> Error {
    Error::Database {
        database: db.id.clone(),
        message: message.to_string(),
    }
}

pub(crate) async fn connect(db: &Db) -> Result<Client, Error> {
    // The error names the server and carries its whole cause (`connect::describe_error`).
    connect::connect(&db.pg).await.map_err(|e| db_error(db, e))
}

/// Appends `event` through the single writer, after storing `blobs`.
#[tracing::instrument(level = "debug", name = "ledger.append", skip_all)]
pub(crate) async fn record(
    shared: &Shared,
    event: Event,
    blobs: Vec<Vec<u8>>,
) -> Result<Head, Error> {
    shared.writer.send(Append { event, blobs }).await?
}

/// Runs `read` on the projections, once they hold every record of the ledger (whoever
/// appended it).
pub(crate) async fn read<R: Send + 'static>(
    shared: &Shared,
    read: impl FnOnce(&lockplane_engine::projection::Projections) -> R + Send + 'static,
) -> Result<R, Error> {
    shared.writer.send(CatchUp).await??;
    Ok(shared.projection.send(Read(Box::new(read))).await?)
}

pub(crate) async fn database_view(shared: &Shared, db: &Db) -> Result<DatabaseView, Error> {
    let id = db.id.clone();
    Ok(read(shared, move |p| p.database(&id).cloned())
        .await?
        .unwrap_or_default())
}

pub(crate) async fn plan_view(shared: &Shared, db: &Db, plan_id: &str) -> Result<PlanView, Error> {
    let (id, pid) = (db.id.clone(), plan_id.to_owned());
    read(shared, move |p| p.plan(&id, &pid).cloned())
        .await?
        .ok_or_else(|| Error::UnknownPlan {
            database: db.id.clone(),
            plan_id: plan_id.to_owned(),
        })
}

fn blob(shared: &Shared, address: &BlobRef) -> Result<Vec<u8>, Error> {
    let hash: BlobHash = address
        .as_str()
        .parse()
        .map_err(|e| Error::Stopped(format!("blob reference {address}: {e}")))?;
    shared.store.get_blob(&hash)?.ok_or_else(|| {
        Error::Stopped(format!(
            "blob {address} is missing from the ledger: run verify_ledger"
        ))
    })
}

fn load_catalog(shared: &Shared, address: &BlobRef) -> Result<Catalog, Error> {
    let bytes = blob(shared, address)?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Stopped(format!("manifest blob {address} does not decode: {e}")))?;
    Ok(manifest.catalog)
}

fn load_plan(shared: &Shared, view: &PlanView) -> Result<Plan, Error> {
    let bytes = blob(shared, &view.plan.body)?;
    let plan: Plan = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Stopped(format!("plan body {} does not decode: {e}", view.plan.body))
    })?;
    let computed = plan.computed_id().map_err(|e| Error::Plan(e.to_string()))?;
    if computed != view.plan.plan_id {
        return Err(Error::Tampered {
            plan_id: view.plan.plan_id.clone(),
            computed,
        });
    }
    Ok(plan)
}

#[tracing::instrument(level = "debug", name = "manifest", skip_all)]
fn manifest(catalog: &Catalog) -> Result<(Vec<u8>, BlobRef, CatalogHash), Error> {
    let manifest = Manifest::new(catalog.clone()).map_err(|e| Error::Plan(e.to_string()))?;
    let (bytes, address) =
        events::manifest_blob(&manifest).map_err(|e| Error::Plan(e.to_string()))?;
    Ok((bytes, address, manifest.catalog_hash))
}

async fn read_live(db: &Db) -> Result<(Catalog, Client), Error> {
    read_schemas(db, &[]).await
}

/// The live catalog of `schemas` (all user schemas when empty), read with two connections on
/// one snapshot.
async fn read_schemas(db: &Db, schemas: &[String]) -> Result<(Catalog, Client), Error> {
    let (a, b) = tokio::join!(connect(db), connect(db));
    let (mut client, mut helper) = (a?, b?);
    let options = IntrospectOptions {
        schemas: schemas.to_vec(),
    };
    let catalog = introspect_parallel(&mut client, &mut helper, &options)
        .await
        .map_err(|e| db_error(db, e))?;
    Ok((catalog, client))
}

pub(crate) async fn live_hash(
    client: &mut Client,
    db: &Db,
) -> Result<(Catalog, CatalogHash), Error> {
    let catalog = introspect(client, &IntrospectOptions::default())
        .await
        .map_err(|e| db_error(db, e))?;
    let hash = catalog_hash(&catalog).map_err(|e| Error::Plan(e.to_string()))?;
    Ok((catalog, hash))
}

// ---- reads ----------------------------------------------------------------------------------

/// Reads the live catalog and records it (`CatalogIntrospected`).
pub(crate) async fn introspect_db(
    shared: &Shared,
    db: &Db,
    actor: &str,
) -> Result<Introspection, Error> {
    Ok(introspect_and_record(shared, db, actor, &[]).await?.0)
}

/// [`introspect_db`], keeping the connection it read with for the caller's next queries.
async fn introspect_and_record(
    shared: &Shared,
    db: &Db,
    actor: &str,
    schemas: &[String],
) -> Result<(Introspection, Client), Error> {
    let (catalog, client) = read_schemas(db, schemas).await?;
    let seen = record_introspection(shared, db, actor, schemas, catalog, &client).await?;
    Ok((seen, client))
}

/// Records `catalog`, just read from `db` (through `client`), as `CatalogIntrospected`.
async fn record_introspection(
    shared: &Shared,
    db: &Db,
    actor: &str,
    schemas: &[String],
    catalog: Catalog,
    client: &Client,
) -> Result<Introspection, Error> {
    let server_version = client
        .query_one("SHOW server_version", &[])
        .await
        .ok()
        .and_then(|row| row.try_get::<_, String>(0).ok());
    let (bytes, address, hash) = manifest(&catalog)?;
    let head = record(
        shared,
        Event::CatalogIntrospected(CatalogIntrospected {
            actor: actor.to_owned(),
            database: db.id.clone(),
            catalog_hash: hash.clone(),
            manifest: address,
            schemas: schemas.to_vec(),
            server_version: server_version.clone(),
        }),
        vec![bytes],
    )
    .await?;
    let seen = Introspection {
        database: db.id.clone(),
        catalog_hash: hash,
        catalog,
        seq: head.seq,
        server_version,
    };
    Ok(seen)
}

/// The manifest blob of the catalog the ledger last recorded as live, when it has one.
async fn recorded_catalog(shared: &Shared, view: &DatabaseView) -> Option<Catalog> {
    let live = view.live.as_ref()?;
    let record = shared
        .store
        .read_range(live.seq..live.seq + 1)
        .ok()?
        .into_iter()
        .next()?;
    let event =
        events::decode_record_payload(&record.kind, &record.stream, &record.payload).ok()?;
    let address = match event {
        Event::CatalogIntrospected(e) => e.manifest,
        Event::DriftDetected(e) => e.manifest?,
        Event::PlanApplied(e) => view.plans.get(&e.plan_id)?.plan.target_manifest.clone()?,
        _ => return None,
    };
    load_catalog(shared, &address).ok()
}

/// Compares the live catalog with what the ledger last recorded; records `DriftDetected` when
/// they differ (the first look at a database just records it).
pub(crate) async fn check_drift(shared: &Shared, db: &Db, actor: &str) -> Result<Drift, Error> {
    let view = database_view(shared, db).await?;
    let Some(recorded) = view.live.clone() else {
        let seen = introspect_db(shared, db, actor).await?;
        return Ok(Drift {
            database: db.id.clone(),
            live_hash: seen.catalog_hash,
            recorded_hash: None,
            drifted: false,
            differences: Vec::new(),
            seq: None,
        });
    };
    let (live, _client) = read_live(db).await?;
    compare_with_recorded(shared, db, &view, recorded, &live, actor).await
}

/// `live` (just read) against the catalog the ledger last recorded (`recorded`, from `view`);
/// records `DriftDetected` when they differ.
async fn compare_with_recorded(
    shared: &Shared,
    db: &Db,
    view: &DatabaseView,
    recorded: LiveHash,
    live: &Catalog,
    actor: &str,
) -> Result<Drift, Error> {
    let (bytes, address, live_hash) = manifest(live)?;
    if live_hash == recorded.hash {
        // The drift recorded last is still there (nothing applied or introspected since):
        // report it again, and record nothing, so that a schedule checking an unchanged
        // database does not grow the ledger.
        if let Some(open) = view
            .drift
            .as_ref()
            .filter(|d| recorded.source == "DriftDetected" && d.seq == recorded.seq)
        {
            let differences = match view
                .manifests
                .get(&open.expected_hash)
                .and_then(|a| load_catalog(shared, a).ok())
            {
                Some(expected) => exec::describe_drift(&expected, live),
                None => Vec::new(),
            };
            return Ok(Drift {
                database: db.id.clone(),
                live_hash,
                recorded_hash: Some(open.expected_hash.clone()),
                drifted: true,
                differences,
                seq: Some(open.seq),
            });
        }
        return Ok(Drift {
            database: db.id.clone(),
            live_hash,
            recorded_hash: Some(recorded.hash),
            drifted: false,
            differences: Vec::new(),
            seq: None,
        });
    }
    let differences = match recorded_catalog(shared, view).await {
        Some(expected) => exec::describe_drift(&expected, live),
        None => Vec::new(),
    };
    let head = record(
        shared,
        Event::DriftDetected(DriftDetected {
            actor: actor.to_owned(),
            database: db.id.clone(),
            expected_hash: recorded.hash.clone(),
            live_hash: live_hash.clone(),
            manifest: Some(address),
        }),
        vec![bytes],
    )
    .await?;
    Ok(Drift {
        database: db.id.clone(),
        live_hash,
        recorded_hash: Some(recorded.hash),
        drifted: true,
        differences,
        seq: Some(head.seq),
    })
}

// ---- proposals ------------------------------------------------------------------------------

async fn stats(client: &Client, db: &Db) -> Result<TableStats, Error> {
    planner::read_stats(client)
        .await
        .map_err(|e| db_error(db, e))
}

/// Proves a plan made from catalogs (a merge, a rebase) on a reproduction of live, unless
/// dry runs are off: the proven plan (its target is what the shadow reached), the catalog it
/// reaches, and a line saying what was proven.
async fn prove(
    shared: &Shared,
    db: &Db,
    client: &Client,
    planned: &Planned<'_>,
) -> Result<(Plan, Option<Catalog>, String), Error> {
    let plan = planned.plan.clone();
    if plan.steps.is_empty() {
        return Ok((plan, None, "nothing to prove: the plan is empty".into()));
    }
    if !shared.config.dry_run {
        return Ok((plan, None, "shadow dry run skipped (switched off)".into()));
    }
    let live_hash = catalog_hash(planned.base).map_err(|e| Error::Plan(e.to_string()))?;
    if plan.base_hash != live_hash {
        return Ok((
            plan,
            None,
            "not proven: its base is no longer live (it is rebased and proven when applied)".into(),
        ));
    }
    let (target, keep) = shared.shadow.target(client).await?;
    let opts = ShadowOptions {
        renames: planned.renames.clone(),
        stats: planned.stats.clone(),
        keep,
        ..ShadowOptions::default()
    };
    let source = LiveSource {
        client,
        config: &db.pg,
    };
    let (proven, report) = proposal::prove_plan(&source, plan, target, &opts)
        .await
        .map_err(|e| Error::Shadow(e.to_string()))?;
    let line = shadow_line(&report);
    Ok((proven, Some(report.target), line))
}

fn shadow_line(report: &ShadowReport) -> String {
    let mut line = format!(
        "proven on a shadow reproduced with {}: reached {}",
        report.dump_tool,
        events::short(&report.target_hash.0)
    );
    match &report.reverse {
        Some(_) => line.push_str(&format!(
            " and its reverse came back to {}",
            events::short(&report.base_hash.0)
        )),
        None => line.push_str("; the plan has no reverse"),
    }
    line
}

/// A plan with what it was made from, ready to be proven and recorded.
struct Planned<'a> {
    plan: Plan,
    base: &'a Catalog,
    target: &'a Catalog,
    renames: &'a Renames,
    stats: &'a TableStats,
}

/// Plans `base` → `target` with what the plan needs first (missing roles refused, the
/// helpers installed when a policy calls them and live lacks them).
async fn plan_catalogs<'a>(
    client: &Client,
    base: &'a Catalog,
    target: &'a Catalog,
    renames: &'a Renames,
    stats: &'a TableStats,
    actor: &str,
) -> Result<Planned<'a>, Error> {
    let leading = proposal::prerequisites(client, target)
        .await
        .map_err(|e| Error::Plan(e.to_string()))?;
    let mut plan = planner::plan(base, target, renames, stats, actor)
        .map_err(|e| Error::Plan(e.to_string()))?;
    if !leading.is_empty() && !plan.steps.is_empty() {
        plan = plan
            .with_leading_steps(leading)
            .map_err(|e| Error::Plan(e.to_string()))?;
    }
    Ok(Planned {
        plan,
        base,
        target,
        renames,
        stats,
    })
}

/// Proves a plan on the shadow, then records it (as the merge of `merged_from`, or as a
/// proposal): what `merge` and a rebase end with.
async fn prove_and_record(
    shared: &Shared,
    db: &Db,
    client: &Client,
    planned: Planned<'_>,
    actor: &str,
    merged_from: Option<Vec<String>>,
) -> Result<Proposal, Error> {
    let (plan, reached, shadow) = prove(shared, db, client, &planned).await?;
    let target = reached.as_ref().unwrap_or(planned.target);
    let seq = record_plan(
        shared,
        db,
        &plan,
        (planned.base, target, planned.renames),
        actor,
        merged_from,
    )
    .await?;
    Ok(Proposal {
        database: db.id.clone(),
        predicted_hash: plan.target_hash.clone(),
        plan,
        seq,
        shadow,
    })
}

/// Records a plan with its body and both catalogs as blobs.
#[tracing::instrument(level = "debug", name = "ledger.record_plan", skip_all)]
async fn record_plan(
    shared: &Shared,
    db: &Db,
    plan: &Plan,
    (base, target, renames): (&Catalog, &Catalog, &Renames),
    actor: &str,
    merged_from: Option<Vec<String>>,
) -> Result<u64, Error> {
    let body = canonical_json(plan).map_err(|e| Error::Plan(e.to_string()))?;
    let body_ref = BlobRef::of(&body);
    let (base_bytes, base_ref, _) = manifest(base)?;
    let (target_bytes, target_ref, _) = manifest(target)?;
    let summary = PlanSummary {
        plan_id: plan.plan_id.clone(),
        base_hash: plan.base_hash.clone(),
        target_hash: plan.target_hash.clone(),
        body: body_ref,
        step_count: plan.steps.len() as u32,
        hazards: plan.hazard_names(),
        requires_confirmation: plan.requires_confirmation,
        base_manifest: Some(base_ref),
        target_manifest: Some(target_ref),
        renames: renames.clone(),
    };
    let event = match merged_from {
        None => Event::PlanProposed(PlanProposed {
            actor: actor.to_owned(),
            database: db.id.clone(),
            plan: summary,
        }),
        Some(sources) => Event::PlansMerged(PlansMerged {
            actor: actor.to_owned(),
            database: db.id.clone(),
            sources,
            merged: summary,
        }),
    };
    Ok(record(shared, event, vec![body, base_bytes, target_bytes])
        .await?
        .seq)
}

/// The catalog a document's `base:` names, from the ledger: any manifest recorded with that
/// hash (an introspection, a drift finding, a plan's base or target), checked to hash to it.
async fn base_catalog(shared: &Shared, db: &Db, base: &CatalogHash) -> Result<Catalog, Error> {
    let (id, hash) = (db.id.clone(), base.clone());
    let address = read(shared, move |p| p.manifest(&id, &hash).cloned())
        .await?
        .ok_or_else(|| Error::UnknownBase { base: base.clone() })?;
    let catalog = load_catalog(shared, &address)?;
    let found = catalog_hash(&catalog).map_err(|e| Error::Plan(e.to_string()))?;
    if &found != base {
        return Err(Error::Stopped(format!(
            "the ledger's manifest {address} of {base} hashes to {found}: run verify_ledger"
        )));
    }
    Ok(catalog)
}

/// `propose`: the desired document against the live database → a recorded, proven plan. A
/// document with `base:` is merged three ways (base, document, live) when live has moved on
/// since its base ([`proposal::propose_with_base`]); its base must be in the ledger.
pub(crate) async fn propose(
    shared: &Shared,
    db: &Db,
    name: &str,
    text: &str,
    actor: &str,
) -> Result<Proposal, Error> {
    let loaded =
        dsl::load_file_text(name, text).map_err(|e| Error::InvalidDocument(e.to_string()))?;
    // A document with a base needs live recorded first, so that a base that is live is
    // always found (the engine then plans declaratively: the merge would be the identity).
    // Without one, the catalog the engine reads on pg_dump's snapshot is recorded instead:
    // one reading of live, not two.
    let (read_at, client) = match &loaded.document.base {
        Some(base) => {
            let (_, client) = introspect_and_record(shared, db, actor, &[]).await?;
            (Some(base_catalog(shared, db, base).await?), client)
        }
        None => (None, connect(db).await?),
    };
    let stats = stats(&client, db).await?;
    let renames = dsl::renames(&loaded.document);
    let (target, keep_reproduction) = shared.shadow.target(&client).await?;
    let source = LiveSource {
        client: &client,
        config: &db.pg,
    };
    let opts = ProposeOptions {
        created_by: actor.to_owned(),
        prove: shared.config.dry_run,
        guard: shared.config.guard_plans,
        keep_reproduction,
        ..ProposeOptions::default()
    };
    let proposed = proposal::propose_with_base(
        &source,
        &loaded.catalog,
        read_at.as_ref(),
        &renames,
        &stats,
        target,
        &opts,
    )
    .await
    .map_err(|e| match e {
        ProposeError::Conflict {
            base,
            live,
            conflicts,
        } => Error::Conflict {
            conflicts,
            sides: lockplane_engine::merge::ConflictSides::Document { base, live },
        },
        ProposeError::Plan(e) => Error::Plan(e.to_string()),
        ProposeError::MissingRoles { .. } | ProposeError::Unsupported { .. } => {
            Error::Plan(e.to_string())
        }
        ProposeError::Guarded(step) => Error::Guarded(step),
        other => Error::Shadow(other.to_string()),
    })?;
    if read_at.is_none() {
        record_introspection(shared, db, actor, &[], proposed.base.clone(), &client).await?;
    }
    let shadow = match &proposed.report {
        Some(report) => shadow_line(report),
        None if proposed.plan.steps.is_empty() => "nothing to prove: the plan is empty".into(),
        None => "shadow dry run skipped (switched off)".into(),
    };
    let seq = record_plan(
        shared,
        db,
        &proposed.plan,
        (&proposed.base, &proposed.target, &renames),
        actor,
        None,
    )
    .await?;
    Ok(Proposal {
        database: db.id.clone(),
        predicted_hash: proposed.plan.target_hash.clone(),
        plan: proposed.plan,
        seq,
        shadow,
    })
}

/// Every expression `plan` carries through the SQL guard's rules.
fn guard_plan(plan: &Plan) -> Result<(), Error> {
    lockplane_engine::guard::check_plan(plan).map_err(Error::Guarded)
}

/// Applying changes the schema: only a server in `schema` mode does it.
pub(crate) fn schema_access(shared: &Shared, what: &'static str) -> Result<(), Error> {
    let mode = shared.config.access_mode;
    if mode.allows(AccessMode::Schema) {
        Ok(())
    } else {
        Err(Error::AccessDenied { mode, what })
    }
}

fn pending(view: &PlanView) -> Result<(), Error> {
    let hint = match &view.status {
        PlanStatus::Proposed | PlanStatus::Confirmed | PlanStatus::Stale { .. } => return Ok(()),
        PlanStatus::Failed { .. } => return Ok(()),
        PlanStatus::Applied { .. } => "it is already applied; nothing to do".to_owned(),
        PlanStatus::Applying { .. } => {
            "an apply of it is in progress; wait for it and check audit_log".to_owned()
        }
        PlanStatus::Merged { into } => format!("it was merged into {into}: use that plan"),
    };
    Err(Error::NotPending {
        plan_id: view.plan.plan_id.clone(),
        status: view.status.name(),
        hint,
    })
}

fn catalogs_of(shared: &Shared, view: &PlanView) -> Result<Option<(Catalog, Catalog)>, Error> {
    match (&view.plan.base_manifest, &view.plan.target_manifest) {
        (Some(base), Some(target)) => Ok(Some((
            load_catalog(shared, base)?,
            load_catalog(shared, target)?,
        ))),
        _ => Ok(None),
    }
}

/// `merge`: the three-way merge of two proposals on the same base, as a new proposal that
/// supersedes both.
pub(crate) async fn merge(
    shared: &Shared,
    db: &Db,
    plan_a: &str,
    plan_b: &str,
    actor: &str,
) -> Result<Proposal, Error> {
    let a = plan_view(shared, db, plan_a).await?;
    let b = plan_view(shared, db, plan_b).await?;
    pending(&a)?;
    pending(&b)?;
    let (Some((base_a, ours)), Some((base_b, theirs))) =
        (catalogs_of(shared, &a)?, catalogs_of(shared, &b)?)
    else {
        return Err(Error::CannotMerge(
            "a plan recorded without its catalogs (a CLI plan file) cannot be merged; propose it \
             through the runtime"
                .into(),
        ));
    };
    let conflict = |c: lockplane_engine::merge::MergeConflicts| Error::Conflict {
        conflicts: c.conflicts,
        sides: lockplane_engine::merge::ConflictSides::Plans,
    };
    // Proposals on different bases (the database moved between them) are both carried onto
    // the live catalog first, under the same rule as a rebase on apply.
    let mut client = connect(db).await?;
    let (base, ours, theirs) = if a.plan.base_hash == b.plan.base_hash {
        (base_a, ours, theirs)
    } else {
        let (live, live_hash) = live_hash(&mut client, db).await?;
        let gate = rebase_gate(shared, db, &live, &live_hash, actor).await?;
        for view in [&a, &b] {
            if let Some(reason) = drift_since(view, &gate) {
                return Err(Error::CannotMerge(format!(
                    "{} was made against {} and cannot be carried onto the live schema: {reason}; \
                     propose it again",
                    view.plan.plan_id, view.plan.base_hash
                )));
            }
        }
        let ours = lockplane_engine::merge::merge(&base_a, &ours, &live).map_err(conflict)?;
        let theirs = lockplane_engine::merge::merge(&base_b, &theirs, &live).map_err(conflict)?;
        (live, ours, theirs)
    };
    let merged = lockplane_engine::merge::merge(&base, &ours, &theirs).map_err(conflict)?;
    let stats = stats(&client, db).await?;
    // Both sides' renames, so a renamed column stays a rename in the merged plan.
    let renames = a.plan.renames.merged_with(&b.plan.renames);
    let planned = plan_catalogs(&client, &base, &merged, &renames, &stats, actor).await?;
    let sources = vec![plan_a.to_owned(), plan_b.to_owned()];
    prove_and_record(shared, db, &client, planned, actor, Some(sources)).await
}

/// `confirm`: the explicit approval of one exact plan.
pub(crate) async fn confirm(
    shared: &Shared,
    db: &Db,
    plan_id: &str,
    actor: &str,
) -> Result<u64, Error> {
    let view = plan_view(shared, db, plan_id).await?;
    pending(&view)?;
    let head = record(
        shared,
        Event::PlanConfirmed(PlanConfirmed {
            actor: actor.to_owned(),
            database: db.id.clone(),
            plan_id: plan_id.to_owned(),
            hazards_acknowledged: view.plan.hazards.clone(),
        }),
        Vec::new(),
    )
    .await?;
    Ok(head.seq)
}

/// The approval an apply of `plan` relies on, recording the confirmation when it comes with
/// the call.
async fn approval(
    shared: &Shared,
    db: &Db,
    plan: &Plan,
    view: Option<&PlanView>,
    confirmation: Option<&str>,
    actor: &str,
) -> Result<Option<Approval>, Error> {
    approval_check(plan, view, confirmation)?;
    if !plan.requires_confirmation {
        return Ok(None);
    }
    if confirmation.is_some() {
        let seq = confirm(shared, db, &plan.plan_id, actor).await?;
        return Ok(Some(Approval {
            seq,
            by: actor.to_owned(),
        }));
    }
    // `approval_check` passed without a confirmation in the call: the ledger holds one.
    Ok(view.and_then(|v| v.approval.clone()))
}

/// Whether plans may be carried onto the live catalog now.
enum RebaseGate {
    /// The ledger knows how the database got to `live`; `last_drift` is the seq of the last
    /// drift found, for [`drift_since`].
    Open { last_drift: Option<u64> },
    /// Why not: the live hash is not the last one recorded (the change is recorded as drift).
    Closed(String),
}

/// The rule for carrying plans onto `live` (already read, hash `live_hash`): the ledger must
/// know how the database got there (the live hash is the last one recorded). An unexplained
/// change is drift, recorded here against `live`, and plans are not carried over it.
async fn rebase_gate(
    shared: &Shared,
    db: &Db,
    live: &Catalog,
    live_hash: &CatalogHash,
    actor: &str,
) -> Result<RebaseGate, Error> {
    let view = database_view(shared, db).await?;
    let drift = match view.live.clone() {
        Some(recorded) if &recorded.hash == live_hash => {
            return Ok(RebaseGate::Open {
                last_drift: view.drift.map(|d| d.seq),
            })
        }
        Some(recorded) => compare_with_recorded(shared, db, &view, recorded, live, actor).await?,
        None => check_drift(shared, db, actor).await?,
    };
    Ok(RebaseGate::Closed(format!(
        "the database changed outside Lockplane (drift recorded{}), so the plan is not rebased \
         automatically",
        drift
            .seq
            .map(|s| format!(" as seq {s}"))
            .unwrap_or_default()
    )))
}

/// Why `view`'s plan may not be carried onto live through an open gate: drift found after it
/// was proposed (even if now recorded) is a change nobody reviewed together with it.
fn drift_since(view: &PlanView, gate: &RebaseGate) -> Option<String> {
    match gate {
        RebaseGate::Closed(reason) => Some(reason.clone()),
        RebaseGate::Open { last_drift } => {
            last_drift
                .filter(|seq| *seq > view.proposed_seq)
                .map(|seq| {
                    format!(
                    "the database changed outside Lockplane after this plan was proposed (drift \
                     recorded as seq {seq}), so the plan is not rebased automatically"
                )
                })
        }
    }
}

/// A stale plan carried onto the live catalog: `merge(base, target, live)`, re-planned from
/// live and proven. Only done when the ledger knows the live catalog (it came from Lockplane
/// or an explicit introspection): an unexplained change is drift, and plans are not rebased
/// over drift.
async fn rebase(
    shared: &Shared,
    db: &Db,
    view: &PlanView,
    live: &Catalog,
    live_hash: &CatalogHash,
    client: &Client,
    actor: &str,
) -> Result<Proposal, Error> {
    let stale = |reason: String, conflicts| Error::Stale {
        plan_id: view.plan.plan_id.clone(),
        base: view.plan.base_hash.clone(),
        live: live_hash.clone(),
        reason,
        conflicts,
    };
    let gate = rebase_gate(shared, db, live, live_hash, actor).await?;
    if let Some(reason) = drift_since(view, &gate) {
        return Err(stale(reason, Vec::new()));
    }
    let Some((base, target)) = catalogs_of(shared, view)? else {
        return Err(stale(
            "the plan was recorded without its catalogs, so it cannot be rebased".into(),
            Vec::new(),
        ));
    };
    let rebased = lockplane_engine::merge::merge(&base, &target, live).map_err(|c| {
        let named: Vec<String> = c.conflicts.iter().map(|x| x.to_string()).collect();
        stale(
            format!(
                "it conflicts with what changed since its base: {}",
                named.join("; ")
            ),
            c.conflicts,
        )
    })?;
    let stats = stats(client, db).await?;
    let planned = plan_catalogs(client, live, &rebased, &view.plan.renames, &stats, actor).await?;
    if planned.plan.steps.is_empty() {
        return Err(stale(
            "everything it changes is already live".into(),
            Vec::new(),
        ));
    }
    prove_and_record(shared, db, client, planned, actor, None).await
}

/// `apply`: a recorded plan (rebased if its base is no longer live) applied under the advisory
/// lock, with `ApplyStarted` recorded before and the outcome after.
pub(crate) async fn apply(
    shared: &Shared,
    db: &Db,
    plan_id: &str,
    confirmation: Option<&str>,
    actor: &str,
    control: ApplyControl,
) -> Result<Applied, Error> {
    schema_access(shared, "apply_plan")?;
    let mut client = connect(db).await?;
    // The database's apply lock is held from before live is read to after the outcome is
    // recorded: another process's apply (of this ledger or another) is then either wholly
    // before this one, so its outcome is in the ledger this one reads and the plan is rebased
    // onto it, or wholly after. Recovery takes the same lock, so it never mistakes an apply
    // in progress for an abandoned one.
    let key = exec::acquire_lock(&client, shared.config.lock_wait).await?;
    let outcome = apply_locked(
        shared,
        db,
        &mut client,
        plan_id,
        confirmation,
        actor,
        control,
    )
    .await;
    exec::release_lock(&client, key).await;
    outcome
}

async fn apply_locked(
    shared: &Shared,
    db: &Db,
    client: &mut Client,
    plan_id: &str,
    confirmation: Option<&str>,
    actor: &str,
    control: ApplyControl,
) -> Result<Applied, Error> {
    let view = plan_view(shared, db, plan_id).await?;
    pending(&view)?;
    let mut plan = load_plan(shared, &view)?;
    let (live, live_hash) = live_hash(client, db).await?;
    if live_hash == plan.target_hash && live_hash != plan.base_hash {
        // The plan's target is live although no apply of it is recorded: an earlier apply
        // finished after its process stopped, or the change was made another way.
        approval_check(&plan, Some(&view), confirmation)?;
        return record_reached(shared, db, &plan, view.approval.clone(), actor).await;
    }
    let mut rebased_from = None;
    let mut own_view = Some(&view);
    let mut confirmation = confirmation;
    if live_hash != plan.base_hash {
        // Refuse an unconfirmed data-loss plan before doing any rebase work.
        approval_check(&plan, own_view, confirmation)?;
        let rebased = rebase(shared, db, &view, &live, &live_hash, client, actor)
            .await?
            .plan;
        rebased_from = Some(plan.plan_id.clone());
        // A confirmation covers exactly the plan it names; the rebased plan is another.
        if rebased.requires_confirmation {
            return Err(Error::NeedsConfirmation {
                plan_id: rebased.plan_id.clone(),
                hazards: format!(
                    "{}; rebased from {} onto the live schema",
                    rebased.hazard_names().join(", "),
                    plan.plan_id
                ),
            });
        }
        plan = rebased;
        own_view = None;
        confirmation = None;
    }
    let approval = approval(shared, db, &plan, own_view, confirmation, actor).await?;
    let targets = catalogs_of(shared, &view).ok().flatten();
    let opts = ApplyOptions {
        base_catalog: Some(live),
        target_catalog: if rebased_from.is_none() {
            targets.map(|(_, t)| t)
        } else {
            None
        },
        ..ApplyOptions::default()
    };
    run_apply(
        shared,
        db,
        client,
        &plan,
        approval,
        opts,
        actor,
        rebased_from,
        control,
    )
    .await
}

/// Records `plan` as applied (`recovered`) when its target is live without a recorded apply:
/// `ApplyStarted` then `PlanApplied`, so the history says when it was noticed.
async fn record_reached(
    shared: &Shared,
    db: &Db,
    plan: &Plan,
    approval: Option<Approval>,
    actor: &str,
) -> Result<Applied, Error> {
    let started = record(
        shared,
        Event::ApplyStarted(ApplyStarted {
            actor: actor.to_owned(),
            database: db.id.clone(),
            plan_id: plan.plan_id.clone(),
            base_hash: plan.base_hash.clone(),
            approval: approval.clone(),
        }),
        Vec::new(),
    )
    .await?;
    let now = events::now_micros();
    let receipt = Receipt::seal(plan.plan_id.clone(), Vec::new(), Timing::between(now, now))
        .map_err(|e| Error::Plan(e.to_string()))?;
    let head = record(
        shared,
        Event::PlanApplied(PlanApplied {
            actor: actor.to_owned(),
            database: db.id.clone(),
            plan_id: plan.plan_id.clone(),
            started_seq: started.seq,
            before_hash: plan.base_hash.clone(),
            after_hash: plan.target_hash.clone(),
            approval,
            receipt: receipt.clone(),
            recovered: true,
        }),
        Vec::new(),
    )
    .await?;
    Ok(Applied {
        database: db.id.clone(),
        plan_id: plan.plan_id.clone(),
        rebased_from: None,
        before_hash: plan.base_hash.clone(),
        resulting_hash: plan.target_hash.clone(),
        receipts: Vec::new(),
        seq: head.seq,
        recovered: true,
    })
}

/// `resume`: an apply of `plan_id` that stopped after its transaction committed (a step run
/// alone failed) continues after the last phase the ledger records as applied.
pub(crate) async fn resume(
    shared: &Shared,
    db: &Db,
    plan_id: &str,
    confirmation: Option<&str>,
    actor: &str,
    control: ApplyControl,
) -> Result<Applied, Error> {
    schema_access(shared, "apply_plan (resume)")?;
    let mut client = connect(db).await?;
    // Under the apply lock, as `apply`.
    let key = exec::acquire_lock(&client, shared.config.lock_wait).await?;
    let outcome = async {
        let view = plan_view(shared, db, plan_id).await?;
        pending(&view)?;
        let plan = load_plan(shared, &view)?;
        let Some(point) = resume_point(shared, db, plan_id)? else {
            return Err(Error::NotPending {
                plan_id: plan_id.to_owned(),
                status: view.status.name(),
                hint: "the ledger records no phase of it as applied: there is nothing to \
                       resume; apply it (apply_plan without resume)"
                    .into(),
            });
        };
        let approval = approval(shared, db, &plan, Some(&view), confirmation, actor).await?;
        let opts = ApplyOptions {
            resume_after: Some(point),
            ..ApplyOptions::default()
        };
        run_apply(
            shared,
            db,
            &mut client,
            &plan,
            approval,
            opts,
            actor,
            None,
            control,
        )
        .await
    }
    .await;
    exec::release_lock(&client, key).await;
    outcome
}

/// The last phase of `plan_id` the ledger records as applied on `db`, unless the plan was
/// applied since.
fn resume_point(
    shared: &Shared,
    db: &Db,
    plan_id: &str,
) -> Result<Option<exec::ResumePoint>, Error> {
    let mut progress = lockplane_engine::projection::PlanProgress::default();
    lockplane_store::for_each_record(shared.store.as_ref(), 1, |record| {
        if record.stream == db.id {
            if let Ok(event) =
                events::decode_record_payload(&record.kind, &record.stream, &record.payload)
            {
                progress.take(record.seq, &event, plan_id);
            }
        }
        Ok::<(), Error>(())
    })?;
    Ok(progress.resume_point)
}

/// Applies `plan` with `ApplyStarted` recorded before, each committed phase (`StepApplied`)
/// and the outcome after: what `apply` and `resume` share.
#[allow(clippy::too_many_arguments)]
async fn run_apply(
    shared: &Shared,
    db: &Db,
    client: &mut Client,
    plan: &Plan,
    approval: Option<Approval>,
    opts: ApplyOptions,
    actor: &str,
    rebased_from: Option<String>,
    control: ApplyControl,
) -> Result<Applied, Error> {
    // Here, not only at proposal: a plan in the ledger may come from another surface (the
    // CLI) or be a rebase, and this is the one door every apply goes through.
    if shared.config.guard_plans {
        guard_plan(plan)?;
    }
    let before_hash = opts
        .resume_after
        .as_ref()
        .map(|r| r.catalog_hash.clone())
        .unwrap_or_else(|| plan.base_hash.clone());
    let started = record(
        shared,
        Event::ApplyStarted(ApplyStarted {
            actor: actor.to_owned(),
            database: db.id.clone(),
            plan_id: plan.plan_id.clone(),
            base_hash: before_hash.clone(),
            approval: approval.clone(),
        }),
        Vec::new(),
    )
    .await?;
    // Each committed phase is durable in the ledger before the next one starts: that is
    // where a resume continues from, even if this process dies. The executor calls the sink
    // synchronously, so the append goes straight to the store (the writer folds it with the
    // next record it handles).
    let sink = LedgerSink {
        actor: actor.to_owned(),
        database: db.id.clone(),
        store: shared.store.clone(),
        watcher: control.progress.clone(),
    };
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opts = ApplyOptions {
        lock_timeout: shared.config.lock_timeout,
        lock_retries: shared.config.lock_retries,
        statement_timeout: shared.config.statement_timeout,
        lock_wait: shared.config.lock_wait,
        progress: Some(Arc::new(sink)),
        stop: Some(stopped.clone()),
        ..opts
    };
    if let Some(on_start) = &control.on_start {
        if let Ok(row) = client
            .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
            .await
        {
            on_start(row.get(0));
        }
    }
    let cancel = client.cancel_token();
    let began = events::now_micros();
    let id = plan.plan_id.clone();
    let outcome = {
        let apply = exec::apply(client, plan, &opts, Some(&id));
        tokio::pin!(apply);
        match &control.stop {
            None => apply.await,
            Some(stop) => tokio::select! {
                outcome = &mut apply => outcome,
                () = stop.notified() => {
                    // A dropped client would leave the statement running on the server.
                    stopped.store(true, std::sync::atomic::Ordering::SeqCst);
                    connect::cancel_query(&cancel).await;
                    apply.await
                }
            },
        }
    };
    drop(opts);
    let interrupted = stopped.load(std::sync::atomic::Ordering::SeqCst);
    let finished = events::now_micros();
    let timing = Timing::between(began, finished);
    match outcome {
        Ok(report) => {
            let steps = report.step_receipts().cloned().collect();
            let receipt = Receipt::seal(plan.plan_id.clone(), steps, timing)
                .map_err(|e| Error::Plan(e.to_string()))?;
            let head = record(
                shared,
                Event::PlanApplied(PlanApplied {
                    actor: actor.to_owned(),
                    database: db.id.clone(),
                    plan_id: plan.plan_id.clone(),
                    started_seq: started.seq,
                    before_hash: before_hash.clone(),
                    after_hash: report.resulting_hash.clone(),
                    approval,
                    receipt,
                    recovered: false,
                }),
                Vec::new(),
            )
            .await?;
            Ok(Applied {
                database: db.id.clone(),
                plan_id: plan.plan_id.clone(),
                rebased_from,
                before_hash,
                resulting_hash: report.resulting_hash.clone(),
                receipts: report.receipts,
                seq: head.seq,
                recovered: false,
            })
        }
        Err(error) => {
            // The apply's connection may be the thing that broke: read with a new one then.
            let after_hash = match live_hash_after(client, db).await {
                Some(h) => Some(h),
                None => match connect(db).await {
                    Ok(mut fresh) => live_hash_after(&mut fresh, db).await,
                    Err(_) => None,
                },
            };
            let steps = error
                .receipts()
                .iter()
                .flat_map(|r| r.steps.iter().cloned())
                .collect();
            let receipt = Receipt::seal(plan.plan_id.clone(), steps, timing)
                .map_err(|e| Error::Plan(e.to_string()))?;
            record(
                shared,
                Event::ApplyFailed(ApplyFailed {
                    actor: actor.to_owned(),
                    database: db.id.clone(),
                    plan_id: plan.plan_id.clone(),
                    started_seq: started.seq,
                    before_hash,
                    after_hash,
                    error: error.to_string(),
                    receipt,
                    interrupted,
                }),
                Vec::new(),
            )
            .await?;
            Err(Error::Apply(Box::new(error)))
        }
    }
}

/// Refuses early when `plan` needs a confirmation that neither the call nor the ledger gives.
fn approval_check(
    plan: &Plan,
    view: Option<&PlanView>,
    confirmation: Option<&str>,
) -> Result<(), Error> {
    if let Some(given) = confirmation {
        if given != plan.plan_id {
            return Err(Error::WrongConfirmation {
                plan_id: plan.plan_id.clone(),
                given: given.to_owned(),
            });
        }
        return Ok(());
    }
    if plan.requires_confirmation && view.and_then(|v| v.approval.as_ref()).is_none() {
        return Err(Error::NeedsConfirmation {
            plan_id: plan.plan_id.clone(),
            hazards: plan.hazard_names().join(", "),
        });
    }
    Ok(())
}

async fn live_hash_after(client: &mut Client, db: &Db) -> Option<CatalogHash> {
    live_hash(client, db).await.ok().map(|(_, h)| h)
}

// ---- apply_sql ------------------------------------------------------------------------------

/// `apply_sql`: one guarded statement under the caller's session context, recorded with the
/// catalog hash before and after.
pub(crate) async fn apply_sql(
    shared: &Shared,
    db: &Db,
    sql: &str,
    ctx: &SessionContext,
    confirmation: Option<&str>,
    actor: &str,
) -> Result<SqlResult, Error> {
    session::validate_context(ctx, &shared.config.allowed_roles)?;
    // A statement that can write takes the apply lock, like a plan: another process's apply
    // never runs beside it, and its before/after hashes are the statement's alone.
    let checked = lockplane_engine::guard::check(sql, shared.config.access_mode)
        .map_err(session::SessionError::from)?;
    let writes = !checked.read_only;
    let mut client = connect(db).await?;
    let key = if writes {
        Some(exec::acquire_lock(&client, shared.config.lock_wait).await?)
    } else {
        None
    };
    let ran = async {
        // A read runs in a READ ONLY transaction, which cannot change the catalog, so it is
        // not introspected: a read never waits behind a lock someone holds on a table it
        // does not touch, and costs one statement, not a catalog read.
        let before_hash = if writes {
            Some(live_hash(&mut client, db).await?.1)
        } else {
            None
        };
        let outcome = session::run_checked(
            &mut client,
            sql,
            &checked,
            ctx,
            confirmation,
            shared.config.statement_timeout,
        )
        .await?;
        // A read-only statement ran in a READ ONLY transaction: the catalog cannot have moved.
        let after_hash = if writes {
            Some(live_hash(&mut client, db).await?.1)
        } else {
            None
        };
        Ok::<_, Error>((before_hash, outcome, after_hash))
    }
    .await;
    if let Some(key) = key {
        exec::release_lock(&client, key).await;
    }
    let (before_hash, outcome, after_hash) = ran?;
    let started = outcome.step.started_at;
    let duration_ms = outcome.duration.as_millis() as u64;
    let receipt = Receipt::seal(
        sql.to_owned(),
        vec![outcome.step.clone()],
        Timing {
            started_at: started,
            finished_at: started + (duration_ms as i64) * 1000,
            duration_ms,
        },
    )
    .map_err(|e| Error::Plan(e.to_string()))?;
    let head = record(
        shared,
        Event::SqlApplied(SqlApplied {
            actor: actor.to_owned(),
            database: db.id.clone(),
            before_hash: before_hash.clone(),
            after_hash: after_hash.clone(),
            receipt: receipt.clone(),
        }),
        Vec::new(),
    )
    .await?;
    Ok(SqlResult {
        database: db.id.clone(),
        kind: outcome.kind.name().to_owned(),
        rows: outcome.rows,
        columns: outcome.columns,
        result: outcome.result,
        before_hash,
        resulting_hash: after_hash,
        truncation: outcome.truncation,
        receipt,
        seq: head.seq,
    })
}

// ---- recovery -------------------------------------------------------------------------------

/// Reconciles an `ApplyStarted` left without an outcome (the process died mid-apply) by
/// introspecting the database: at the plan's target → `PlanApplied` marked recovered; at its
/// base → `ApplyFailed` marked interrupted; anything else → `DriftDetected`, and the apply is
/// closed as interrupted with the hash found, so the ledger does not keep an apply open forever.
/// How long recovery waits for the apply lock before concluding an apply is in progress.
const RECOVERY_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn recover(shared: &Shared, db: &Db) -> Result<Option<Recovery>, Error> {
    let view = database_view(shared, db).await?;
    let Some(open) = view.open_apply.clone() else {
        return Ok(None);
    };
    let actor = "lockplane-recovery";
    let summary = view
        .plans
        .get(&open.plan_id)
        .map(|v| (v.plan.clone(), v.approval.clone()));
    let mut client = connect(db).await?;
    // Under the apply lock, which an apply holds until its outcome is recorded: while another
    // session (of any process) holds it, the open apply is in progress, not abandoned. A dead
    // process's backend releases it only once it notices and its transaction finished (a few
    // milliseconds after a kill, or the end of a running statement), so wait a little; still
    // held after that, the apply is someone's live one (or a long statement finishing), and the
    // next attach or apply settles it.
    let wait = shared.config.lock_wait.min(RECOVERY_LOCK_WAIT);
    let key = match exec::acquire_lock(&client, wait).await {
        Ok(key) => key,
        Err(exec::ApplyError::Busy { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // The apply may have recorded its outcome just before letting go of the lock.
    let still_open = database_view(shared, db)
        .await
        .map(|v| v.open_apply.is_some_and(|o| o.seq == open.seq));
    let read = match still_open {
        Ok(true) => Some(live_hash(&mut client, db).await),
        Ok(false) => None,
        Err(e) => Some(Err(e)),
    };
    exec::release_lock(&client, key).await;
    let Some(read) = read else {
        return Ok(None);
    };
    let (live, live_hash) = read?;
    let receipt = Receipt::seal(
        format!("recovery of {}", open.plan_id),
        Vec::new(),
        Timing {
            started_at: events::now_micros(),
            finished_at: events::now_micros(),
            duration_ms: 0,
        },
    )
    .map_err(|e| Error::Plan(e.to_string()))?;
    let (base, target, approval) = match summary {
        Some((s, a)) => (Some(s.base_hash), Some(s.target_hash), a),
        None => (None, None, None),
    };
    let outcome = if target.as_ref() == Some(&live_hash) {
        record(
            shared,
            Event::PlanApplied(PlanApplied {
                actor: actor.into(),
                database: db.id.clone(),
                plan_id: open.plan_id.clone(),
                started_seq: open.seq,
                before_hash: base.clone().unwrap_or_else(|| live_hash.clone()),
                after_hash: live_hash.clone(),
                approval,
                receipt,
                recovered: true,
            }),
            Vec::new(),
        )
        .await?;
        "recovered"
    } else {
        let at_base = base.as_ref() == Some(&live_hash);
        if !at_base {
            let (bytes, address, _) = manifest(&live)?;
            record(
                shared,
                Event::DriftDetected(DriftDetected {
                    actor: actor.into(),
                    database: db.id.clone(),
                    expected_hash: target.clone().unwrap_or_else(|| live_hash.clone()),
                    live_hash: live_hash.clone(),
                    manifest: Some(address),
                }),
                vec![bytes],
            )
            .await?;
        }
        record(
            shared,
            Event::ApplyFailed(ApplyFailed {
                actor: actor.into(),
                database: db.id.clone(),
                plan_id: open.plan_id.clone(),
                started_seq: open.seq,
                before_hash: base.clone().unwrap_or_else(|| live_hash.clone()),
                after_hash: Some(live_hash.clone()),
                error: if at_base {
                    "interrupted: the process applying it stopped before recording an outcome; \
                     the database is still at the plan's base"
                        .into()
                } else {
                    "interrupted: the process applying it stopped before recording an outcome; \
                     the database is at neither the plan's base nor its target (drift recorded)"
                        .into()
                },
                receipt,
                interrupted: true,
            }),
            Vec::new(),
        )
        .await?;
        if at_base {
            "interrupted"
        } else {
            "drift"
        }
    };
    Ok(Some(Recovery {
        database: db.id.clone(),
        plan_id: open.plan_id,
        outcome: outcome.into(),
        live_hash,
    }))
}
