//! Lockplane's runtime (DESIGN §6) and the embedding API: the [`Lockplane`] handle.
//!
//! A Rust program embeds Lockplane by opening a handle and attaching databases; everything
//! else is an `async` method on the handle, usable from any tokio runtime. The actors behind it
//! are an implementation detail:
//!
//! - one [actix](https://docs.rs/actix) `System` on its own thread, owned by the handle and stopped with its last
//!   clone;
//! - one **ledger writer** (a sync actor on its own thread: appends block until sled flushed
//!   them) that feeds every appended event to the **projection actor**, which answers reads
//!   (`list_plans`, what is live, open applies) from folds over the log;
//! - one **database actor** per attached database (its own arbiter thread) that runs the
//!   mutating commands — propose, merge, confirm, apply, apply_sql, recovery — one at a time.
//!
//! Reads (`introspect`, `check_drift`, `explain_sql`, `policy_evaluate`, `audit_log`,
//! `verify_ledger`) never queue behind an apply: they run on the caller's task. Across
//! processes, applies are serialised by the Postgres advisory lock `lockplane::exec` takes.
//!
//! ```
//! use lockplane_actors::{Config, Lockplane};
//! # use lockplane_actors::ShadowConfig;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     # // A throwaway server for the example; in an app the URL is the database's.
//!     # let cluster = lockplane_actors::engine::testkit::shared_cluster()?;
//!     # let name = lockplane_actors::engine::testkit::fresh_database("doc").await?;
//!     # let url = cluster.url(&name);
//!     # let dir = tempfile::tempdir()?;
//!     # let ledger = dir.path().join("ledger");
//!     let mut config = Config::new(ledger);
//!     # config.shadow = ShadowConfig::Url(cluster.url("postgres"));
//!     let lockplane = Lockplane::open(config).await?;
//!     let db = lockplane.attach(&url, None).await?;
//!
//!     let desired = "version: 1
//! schemas:
//!   public:
//!     tables:
//!       users:
//!         columns:
//!           - { name: id, type: bigint, pk: true }
//!           - { name: email, type: text, not_null: true }
//! ";
//!     let proposal = lockplane.propose(&db, "desired.yaml", desired, "my-agent").await?;
//!     println!("{} steps, predicted hash {}", proposal.plan.steps.len(), proposal.predicted_hash);
//!     assert!(!proposal.plan.requires_confirmation);
//!
//!     // Plans that lose data need `confirm` (or the plan id as confirmation) first.
//!     let applied = lockplane.apply(&db, &proposal.plan.plan_id, None, "my-agent").await?;
//!     assert_eq!(applied.resulting_hash, proposal.predicted_hash);
//!     assert!(lockplane.verify_ledger().await?.ok);
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

mod config;
mod database;
mod error;
mod ledger;
mod online;
mod ops;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use lockplane_engine::events::{self, ContextSet, Event};
use lockplane_engine::policy;
use lockplane_engine::session;
use serde::Serialize;

pub use config::{Config, LedgerLocation, ShadowConfig};
pub use error::Error;
pub use ledger::open_ledger;
/// The engine crate, for the types the embedding API takes and returns beyond those
/// re-exported here (an app needs no second dependency).
pub use lockplane_engine as engine;
pub use lockplane_engine::guard::AccessMode;
pub use lockplane_engine::plan::Plan;
pub use lockplane_engine::policy::{Command as PolicyCommand, PolicyVerdict};
pub use lockplane_engine::projection::PlanView;
pub use lockplane_engine::session::SessionContext;
pub use lockplane_engine::CatalogHash;
pub use online::{OnlineOutcome, OnlinePlan, ProgressFn};
pub use ops::{Applied, ApplyControl, Drift, Introspection, Proposal, Recovery, SqlResult};

use database::{Answer, Attach, Command, DatabaseActor, Mutate, Registry};
use ledger::{LedgerWriter, ProjectionActor};
use ops::{Db, ShadowPool, Shared};

/// A database attached to a runtime: its stable id (the ledger stream).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DatabaseId(pub String);

impl std::fmt::Display for DatabaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// The record's seq.
    pub seq: u64,
    /// When (unix microseconds).
    pub at: i64,
    /// The database (stream).
    pub database: String,
    /// The event kind.
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// One line for humans.
    pub summary: String,
    /// The whole event as JSON.
    pub event: serde_json::Value,
}

/// What `verify_ledger` found.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerVerification {
    /// True when every record and blob checked out.
    pub ok: bool,
    /// Records walked.
    pub records_checked: u64,
    /// The head's seq.
    pub head_seq: u64,
    /// The head's hash.
    pub head_hash: String,
    /// The first bad record and what is wrong with it (verification stops there).
    pub problems: Vec<String>,
}

struct Inner {
    shared: Shared,
    registry: Addr<Registry>,
    system: System,
    databases: Mutex<BTreeMap<String, (Db, Addr<DatabaseActor>)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.system.stop();
    }
}

/// The Lockplane runtime: cheap to clone, safe to share between tasks and threads.
#[derive(Clone)]
pub struct Lockplane {
    inner: Arc<Inner>,
}

impl Lockplane {
    /// Opens (or creates) the ledger, rebuilds the projections from it, and starts the actors.
    pub async fn open(config: Config) -> Result<Lockplane, Error> {
        let (location, wait) = (config.ledger.clone(), config.ledger_wait);
        let (store, projections, folded) = tokio::task::spawn_blocking(move || {
            let store = ledger::open_ledger(&location, wait)?;
            let (projections, folded) = ledger::rebuild(store.as_ref())?;
            Ok::<_, Error>((store, projections, folded))
        })
        .await
        .map_err(|e| Error::Stopped(e.to_string()))??;

        let shadow = Arc::new(ShadowPool {
            config: config.shadow.clone(),
            keep_url: config.keep_reproductions,
            cluster: tokio::sync::OnceCell::new(),
        });
        let config = Arc::new(config);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_store = store.clone();
        std::thread::Builder::new()
            .name("lockplane-actors".into())
            .spawn(move || {
                let system = System::new();
                system.block_on(async move {
                    let projection = ProjectionActor { projections }.start();
                    let writer_projection = projection.clone();
                    let writer_store = thread_store.clone();
                    let writer = SyncArbiter::start(1, move || LedgerWriter {
                        store: writer_store.clone(),
                        projection: writer_projection.clone(),
                        folded,
                    });
                    let shared = Shared {
                        config,
                        store: thread_store,
                        writer,
                        projection,
                        shadow,
                    };
                    let registry = Registry {
                        shared: shared.clone(),
                        actors: BTreeMap::new(),
                    }
                    .start();
                    let _ = tx.send((System::current(), shared, registry));
                });
                let _ = system.run();
            })
            .map_err(|e| Error::Stopped(format!("cannot start the actor thread: {e}")))?;
        let (system, shared, registry) = rx
            .await
            .map_err(|_| Error::Stopped("the actor system did not start".into()))?;
        Ok(Lockplane {
            inner: Arc::new(Inner {
                shared,
                registry,
                system,
                databases: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// Attaches a database by URL (`postgres://…` or a libpq key/value string) under `id`
    /// (default `host:port/dbname`), then reconciles an apply a previous process left without
    /// an outcome (see [`Lockplane::recover`]). The first attach of a database records its
    /// catalog as the baseline drift is measured from.
    pub async fn attach(&self, url: &str, id: Option<&str>) -> Result<DatabaseId, Error> {
        self.attach_with(url, id, true).await
    }

    /// [`Lockplane::attach`]; without `baseline`, a first attach does not record the catalog
    /// (for a caller whose next call is an introspection that records it anyway).
    pub async fn attach_with(
        &self,
        url: &str,
        id: Option<&str>,
        baseline: bool,
    ) -> Result<DatabaseId, Error> {
        let pg = lockplane_engine::connect::resolve(Some(url)).map_err(|e| Error::Database {
            database: id.unwrap_or(url).to_owned(),
            message: e.to_string(),
        })?;
        let id = id
            .map(str::to_owned)
            .unwrap_or_else(|| events::database_id(&pg.pg));
        let db = Db { id: id.clone(), pg };
        let addr = self.inner.registry.send(Attach(db.clone())).await?;
        self.databases().insert(id.clone(), (db, addr));
        let id = DatabaseId(id);
        self.recover(&id).await?;
        // The first look at a database is its baseline: a later change nobody made through
        // Lockplane is then drift, even if it happened before any other call.
        let (db, _) = self.db(&id)?;
        if baseline
            && ops::database_view(&self.inner.shared, &db)
                .await?
                .live
                .is_none()
        {
            ops::introspect_db(&self.inner.shared, &db, "lockplane-attach").await?;
        }
        Ok(id)
    }

    fn databases(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Db, Addr<DatabaseActor>)>> {
        // A poisoned map only means another thread panicked while inserting; the map itself
        // is still whole.
        self.inner
            .databases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn db(&self, id: &DatabaseId) -> Result<(Db, Addr<DatabaseActor>), Error> {
        self.databases()
            .get(&id.0)
            .cloned()
            .ok_or_else(|| Error::UnknownDatabase(id.0.clone()))
    }

    async fn mutate(
        &self,
        id: &DatabaseId,
        command: Command,
        actor: &str,
    ) -> Result<Answer, Error> {
        let (_, addr) = self.db(id)?;
        addr.send(Mutate {
            command,
            actor: actor.to_owned(),
        })
        .await?
    }

    /// The access mode agents work in (what `apply_sql` and `explain_sql` accept).
    pub fn access_mode(&self) -> AccessMode {
        self.inner.shared.config.access_mode
    }

    /// The databases attached, by id.
    pub fn attached(&self) -> Vec<DatabaseId> {
        self.databases().keys().cloned().map(DatabaseId).collect()
    }

    /// Reads the live catalog and records it.
    pub async fn introspect(&self, db: &DatabaseId, actor: &str) -> Result<Introspection, Error> {
        let (db, _) = self.db(db)?;
        ops::introspect_db(&self.inner.shared, &db, actor).await
    }

    /// Reads the live catalog of `schemas` only (all user schemas when empty) and records it.
    /// A reading limited to some schemas is kept (its manifest can be a document's base) but
    /// does not change what the ledger knows as the database's live hash.
    pub async fn introspect_schemas(
        &self,
        db: &DatabaseId,
        actor: &str,
        schemas: &[String],
    ) -> Result<Introspection, Error> {
        let (db, _) = self.db(db)?;
        ops::introspect_schemas(&self.inner.shared, &db, actor, schemas).await
    }

    /// Plans the desired schema document (`text`, YAML or JSON; `name` is how errors refer to
    /// it) against the live database, proves it on a shadow and records it as a proposal.
    pub async fn propose(
        &self,
        db: &DatabaseId,
        name: &str,
        text: &str,
        actor: &str,
    ) -> Result<Proposal, Error> {
        let command = Command::Propose {
            name: name.to_owned(),
            text: text.to_owned(),
        };
        match self.mutate(db, command, actor).await? {
            Answer::Proposal(p) => Ok(*p),
            _ => Err(unexpected()),
        }
    }

    /// Three-way merges two proposals made on the same base into one new proposal that
    /// supersedes both; changes to the same object conflict ([`Error::Conflict`]).
    pub async fn merge(
        &self,
        db: &DatabaseId,
        plan_a: &str,
        plan_b: &str,
        actor: &str,
    ) -> Result<Proposal, Error> {
        let command = Command::Merge {
            a: plan_a.to_owned(),
            b: plan_b.to_owned(),
        };
        match self.mutate(db, command, actor).await? {
            Answer::Proposal(p) => Ok(*p),
            _ => Err(unexpected()),
        }
    }

    /// Records the explicit confirmation of one exact plan; returns the record's seq.
    pub async fn confirm(&self, db: &DatabaseId, plan_id: &str, actor: &str) -> Result<u64, Error> {
        let command = Command::Confirm {
            plan_id: plan_id.to_owned(),
        };
        match self.mutate(db, command, actor).await? {
            Answer::Confirmed(seq) => Ok(seq),
            _ => Err(unexpected()),
        }
    }

    /// Applies a recorded plan. A plan that needs confirmation must have been confirmed, or
    /// `confirmation` must be its id. A plan whose base is no longer live is rebased onto the
    /// live catalog when the ledger knows how the database got there and nothing conflicts;
    /// otherwise it is refused as [`Error::Stale`].
    pub async fn apply(
        &self,
        db: &DatabaseId,
        plan_id: &str,
        confirmation: Option<&str>,
        actor: &str,
    ) -> Result<Applied, Error> {
        self.apply_with(db, plan_id, confirmation, actor, ApplyControl::default())
            .await
    }

    /// [`Lockplane::apply`], watched and stoppable through `control`.
    pub async fn apply_with(
        &self,
        db: &DatabaseId,
        plan_id: &str,
        confirmation: Option<&str>,
        actor: &str,
        control: ApplyControl,
    ) -> Result<Applied, Error> {
        let command = Command::Apply {
            plan_id: plan_id.to_owned(),
            confirmation: confirmation.map(str::to_owned),
            control,
        };
        match self.mutate(db, command, actor).await? {
            Answer::Applied(a) => Ok(*a),
            _ => Err(unexpected()),
        }
    }

    /// Continues an apply of `plan_id` that stopped after its transaction committed (a step
    /// run alone failed, say an index build): the steps after the last phase the ledger
    /// records as applied run, and the outcome is recorded like an apply's.
    pub async fn resume(
        &self,
        db: &DatabaseId,
        plan_id: &str,
        confirmation: Option<&str>,
        actor: &str,
    ) -> Result<Applied, Error> {
        self.resume_with(db, plan_id, confirmation, actor, ApplyControl::default())
            .await
    }

    /// [`Lockplane::resume`], watched and stoppable through `control`.
    pub async fn resume_with(
        &self,
        db: &DatabaseId,
        plan_id: &str,
        confirmation: Option<&str>,
        actor: &str,
        control: ApplyControl,
    ) -> Result<Applied, Error> {
        let command = Command::Resume {
            plan_id: plan_id.to_owned(),
            confirmation: confirmation.map(str::to_owned),
            control,
        };
        match self.mutate(db, command, actor).await? {
            Answer::Applied(a) => Ok(*a),
            _ => Err(unexpected()),
        }
    }

    /// Runs one allow-listed statement under `context` and records it. Destructive statements
    /// need `confirmation` = [`lockplane_engine::session::confirmation_id`] of the statement.
    pub async fn apply_sql(
        &self,
        db: &DatabaseId,
        sql: &str,
        context: &SessionContext,
        confirmation: Option<&str>,
        actor: &str,
    ) -> Result<SqlResult, Error> {
        // A read changes nothing and takes no lock, so it does not queue behind the
        // database's actor: one session's long apply (or a statement waiting on a lock)
        // never holds up another session's SELECT.
        let read_only = lockplane_engine::guard::check(sql, self.inner.shared.config.access_mode)
            .map(|c| c.read_only)
            .unwrap_or(false);
        if read_only {
            let (db, _) = self.db(db)?;
            return ops::apply_sql(&self.inner.shared, &db, sql, context, confirmation, actor)
                .await;
        }
        let command = Command::ApplySql {
            sql: sql.to_owned(),
            context: context.clone(),
            confirmation: confirmation.map(str::to_owned),
        };
        match self.mutate(db, command, actor).await? {
            Answer::Sql(r) => Ok(*r),
            _ => Err(unexpected()),
        }
    }

    /// Plans an online (expand/contract) migration of version `version` from live to the
    /// document `text` (its file `name`, for errors) and records it. Refused when the document
    /// changes anything but column renames, type changes and new `NOT NULL`s of one table, or
    /// a change lacks its `up:`/`down:`.
    pub async fn plan_online(
        &self,
        db: &DatabaseId,
        name: &str,
        text: &str,
        version: &str,
        actor: &str,
    ) -> Result<OnlinePlan, Error> {
        let command = Command::PlanOnline {
            name: name.to_owned(),
            text: text.to_owned(),
            version: version.to_owned(),
        };
        match self.mutate(db, command, actor).await? {
            Answer::OnlinePlan(p) => Ok(*p),
            _ => Err(unexpected()),
        }
    }

    /// Starts an online migration (expand, then backfill in batches of `batch_size` rows,
    /// `progress` called after each), or resumes one that stopped; under the database's
    /// advisory lock; recorded.
    pub async fn start_online(
        &self,
        db: &DatabaseId,
        migration: lockplane_engine::online::OnlineMigration,
        batch_size: u32,
        progress: Option<ProgressFn>,
        actor: &str,
    ) -> Result<OnlineOutcome, Error> {
        let step = online::Step::Start {
            migration: Box::new(migration),
            batch_size,
            progress,
        };
        self.online(db, step, actor).await
    }

    /// Starts (or resumes) the online migration `version` as `plan_online` recorded it.
    pub async fn start_online_version(
        &self,
        db: &DatabaseId,
        version: &str,
        batch_size: u32,
        progress: Option<ProgressFn>,
        actor: &str,
    ) -> Result<OnlineOutcome, Error> {
        let view = self
            .online_migrations(db)
            .await?
            .remove(version)
            .ok_or_else(|| {
                Error::from(lockplane_engine::online::OnlineError::UnknownVersion(
                    version.to_owned(),
                ))
            })?;
        let migration = serde_json::from_str(&view.migration).map_err(|e| {
            Error::from(lockplane_engine::online::OnlineError::State {
                version: version.to_owned(),
                why: format!("the recorded migration does not read back: {e}"),
            })
        })?;
        self.start_online(db, migration, batch_size, progress, actor)
            .await
    }

    /// The online migrations the ledger holds for `db`, by version.
    pub async fn online_migrations(
        &self,
        db: &DatabaseId,
    ) -> Result<std::collections::BTreeMap<String, lockplane_engine::projection::OnlineView>, Error>
    {
        let (db, _) = self.db(db)?;
        Ok(ops::database_view(&self.inner.shared, &db).await?.online)
    }

    /// Completes (contracts) the online migration `version`; recorded.
    pub async fn complete_online(
        &self,
        db: &DatabaseId,
        version: &str,
        actor: &str,
    ) -> Result<OnlineOutcome, Error> {
        let step = online::Step::Complete {
            version: version.to_owned(),
        };
        self.online(db, step, actor).await
    }

    /// Rolls the online migration `version` back (before complete); recorded.
    pub async fn rollback_online(
        &self,
        db: &DatabaseId,
        version: &str,
        actor: &str,
    ) -> Result<OnlineOutcome, Error> {
        let step = online::Step::Rollback {
            version: version.to_owned(),
        };
        self.online(db, step, actor).await
    }

    async fn online(
        &self,
        db: &DatabaseId,
        step: online::Step,
        actor: &str,
    ) -> Result<OnlineOutcome, Error> {
        match self.mutate(db, Command::Online(step), actor).await? {
            Answer::Online(o) => Ok(*o),
            _ => Err(unexpected()),
        }
    }

    /// Reconciles an apply left without an outcome by a process that died (done by
    /// [`Lockplane::attach`]); `None` when there was nothing to reconcile.
    pub async fn recover(&self, db: &DatabaseId) -> Result<Option<Recovery>, Error> {
        match self
            .mutate(db, Command::Recover, "lockplane-recovery")
            .await?
        {
            Answer::Recovered(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    /// The plans of a database and where each stands, oldest first.
    pub async fn list_plans(&self, db: &DatabaseId) -> Result<Vec<PlanView>, Error> {
        let (db, _) = self.db(db)?;
        let view = ops::database_view(&self.inner.shared, &db).await?;
        let mut plans: Vec<PlanView> = view.plans.into_values().collect();
        plans.sort_by_key(|p| p.proposed_seq);
        Ok(plans)
    }

    /// Compares the live catalog with what the ledger last recorded; records drift.
    pub async fn check_drift(&self, db: &DatabaseId, actor: &str) -> Result<Drift, Error> {
        let (db, _) = self.db(db)?;
        ops::check_drift(&self.inner.shared, &db, actor).await
    }

    /// Validates a session context and records it (`ContextSet`). The context itself lives
    /// with the caller (an MCP session) and is passed to each call that uses it.
    pub async fn set_context(
        &self,
        db: &DatabaseId,
        context: &SessionContext,
        actor: &str,
    ) -> Result<u64, Error> {
        session::validate_context(context, &self.inner.shared.config.allowed_roles)?;
        let (db, _) = self.db(db)?;
        let event = Event::ContextSet(ContextSet {
            actor: actor.to_owned(),
            database: db.id.clone(),
            role: context.role.clone(),
            user_id: context.user_id.clone(),
            tenant_id: context.tenant_id.clone(),
        });
        Ok(ops::record(&self.inner.shared, event, Vec::new())
            .await?
            .seq)
    }

    /// `EXPLAIN (FORMAT JSON)` of one guarded statement under `context`, in a rolled-back
    /// transaction; `analyze` only for read-only statements.
    pub async fn explain_sql(
        &self,
        db: &DatabaseId,
        sql: &str,
        context: &SessionContext,
        analyze: bool,
    ) -> Result<serde_json::Value, Error> {
        let config = &self.inner.shared.config;
        session::validate_context(context, &config.allowed_roles)?;
        let (db, _) = self.db(db)?;
        let mut client = ops::connect(&db).await?;
        Ok(session::explain(
            &mut client,
            sql,
            context,
            analyze,
            config.access_mode,
            config.statement_timeout,
        )
        .await?)
    }

    /// The effective row-level-security predicate of `table` for `command` under `context`,
    /// and Postgres' verdict on `row` (see [`lockplane_engine::policy::evaluate`]).
    pub async fn policy_evaluate(
        &self,
        db: &DatabaseId,
        table: (&str, &str),
        command: PolicyCommand,
        row: &serde_json::Map<String, serde_json::Value>,
        context: &SessionContext,
    ) -> Result<PolicyVerdict, Error> {
        session::validate_context(context, &self.inner.shared.config.allowed_roles)?;
        let (db, _) = self.db(db)?;
        let mut client = ops::connect(&db).await?;
        Ok(policy::evaluate(&mut client, table, command, row, context).await?)
    }

    /// The last `limit` events (of one database, or all), newest last.
    pub async fn audit_log(
        &self,
        db: Option<&DatabaseId>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, Error> {
        let store = self.inner.shared.store.clone();
        let only = db.map(|d| d.0.clone());
        tokio::task::spawn_blocking(move || {
            let head = store.head()?.seq;
            let mut entries = Vec::new();
            let mut end = head + 1;
            while end > 1 && entries.len() < limit {
                let start = end.saturating_sub(1024).max(1);
                let mut page = store.read_range(start..end)?;
                page.reverse();
                for record in page {
                    if only.as_ref().is_some_and(|d| *d != record.stream) {
                        continue;
                    }
                    let entry = match events::decode_record_payload(
                        &record.kind,
                        &record.stream,
                        &record.payload,
                    ) {
                        Ok(event) => AuditEntry {
                            seq: record.seq,
                            at: record.at,
                            database: record.stream.clone(),
                            kind: record.kind.clone(),
                            actor: event.actor().to_owned(),
                            summary: event.summary(),
                            event: event.body_json(),
                        },
                        Err(e) => AuditEntry {
                            seq: record.seq,
                            at: record.at,
                            database: record.stream.clone(),
                            kind: record.kind.clone(),
                            actor: String::new(),
                            summary: format!("undecodable: {e}"),
                            event: serde_json::Value::Null,
                        },
                    };
                    entries.push(entry);
                    if entries.len() == limit {
                        break;
                    }
                }
                end = start;
            }
            entries.reverse();
            Ok(entries)
        })
        .await
        .map_err(|e| Error::Stopped(e.to_string()))?
    }

    /// Walks the whole hash chain and every blob the events refer to.
    pub async fn verify_ledger(&self) -> Result<LedgerVerification, Error> {
        let store = self.inner.shared.store.clone();
        tokio::task::spawn_blocking(move || {
            let refs = |record: &lockplane_store::Record| -> Vec<lockplane_store::BlobHash> {
                events::decode_record_payload(&record.kind, &record.stream, &record.payload)
                    .map(|event| {
                        event
                            .blob_refs()
                            .into_iter()
                            .filter_map(|r| r.as_str().parse().ok())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let report = lockplane_store::verify_with_blobs(store.as_ref(), None, &refs);
            let head = store.head()?;
            Ok(LedgerVerification {
                ok: report.is_ok(),
                records_checked: report.records_checked,
                head_seq: head.seq,
                head_hash: head.hash.to_string(),
                problems: report
                    .first_bad
                    .iter()
                    .map(|bad| format!("seq {}: {}", bad.seq, bad.problem))
                    .collect(),
            })
        })
        .await
        .map_err(|e| Error::Stopped(e.to_string()))?
    }
}

fn unexpected() -> Error {
    Error::Stopped("the database actor answered a different command".into())
}
