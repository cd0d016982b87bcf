//! Projections: what the ledger says now, as a pure fold over its events (DESIGN §5).
//!
//! [`Projections`] holds, per database: its plans and their [`PlanStatus`], its live catalog
//! hash as last recorded, its applied history in order, the apply in progress (an
//! `ApplyStarted` without an outcome, for start-up reconciliation), the last drift finding and
//! the session context. It is built by [`Projections::apply`]ing `(seq, at, stream, event)` in
//! seq order, so it can be rebuilt from the log at any time ([`Projections::rebuild`]) and a
//! rebuilt value equals one kept up to date event by event.
//!
//! The fold is total: it never fails or panics. Events that don't fit what came before (a
//! confirmation of an unknown plan, an apply of a plan that needed confirmation and has none,
//! an event out of seq order) are applied as far as they make sense and listed in
//! [`Projections::anomalies`] for the auditor.
//!
//! # Plan status rules
//!
//! - Proposed (or merged into existence): `proposed`, or `stale` at once if the database's
//!   live hash is known and is not the plan's base.
//! - `PlanConfirmed`: records the approval; a `proposed` plan becomes `confirmed`.
//! - Whenever the live hash changes, every `proposed`, `confirmed` or `stale` plan is
//!   re-evaluated: `stale` if its base is not the live hash, else `confirmed` if it has an
//!   approval, else `proposed`. A stale plan whose base becomes live again is current again.
//! - `ApplyStarted` → `applying`; `PlanApplied` → `applied`; `ApplyFailed` → `failed`;
//!   `PlansMerged` → each source `merged` (into the new plan). These are not re-evaluated.
//!
//! Every manifest the ledger holds for a database is indexed by its catalog hash
//! ([`DatabaseView::manifests`], [`Projections::manifest`]): whole or limited introspections,
//! drift findings that kept the manifest, and plans' base and target catalogs. That is how a
//! document's `base:` is found again.
//!
//! The live hash moves on: a whole-database introspection, a step or apply that recorded its
//! resulting hash, `apply_sql` with a known resulting hash, and a drift finding (the hash
//! found live). An introspection limited to some schemas does not move it.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::events::{Approval, BlobRef, Event, PlanSummary};
use crate::hash::CatalogHash;

/// Where an apply of one plan on one database stands, folded from that database's events in
/// log order: the CLI (reading the ledger file) and the runtime (reading its store) share
/// this rule rather than each keeping a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanProgress {
    /// The phase to resume after: the plan's last `StepApplied` since it was last applied.
    pub resume_point: Option<crate::exec::ResumePoint>,
    /// Seq of the plan's last `PlanApplied`.
    pub applied_at: Option<u64>,
    /// Seq of an `ApplyStarted` no outcome followed.
    pub open_apply: Option<u64>,
}

impl PlanProgress {
    /// Takes the event at `seq` into account; events of other plans change nothing.
    pub fn take(&mut self, seq: u64, event: &Event, plan_id: &str) {
        match event {
            Event::StepApplied(e) if e.plan_id == plan_id => {
                self.resume_point =
                    e.catalog_hash
                        .clone()
                        .map(|catalog_hash| crate::exec::ResumePoint {
                            step_id: e.step_id.clone(),
                            catalog_hash,
                        });
            }
            Event::ApplyStarted(e) if e.plan_id == plan_id => self.open_apply = Some(seq),
            Event::ApplyFailed(e) if e.plan_id == plan_id => self.open_apply = None,
            Event::PlanApplied(e) if e.plan_id == plan_id => {
                self.resume_point = None;
                self.open_apply = None;
                self.applied_at = Some(seq);
            }
            _ => {}
        }
    }
}

/// All projections of one ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projections {
    /// Seq of the last event folded (0 before any).
    pub last_seq: u64,
    /// Events folded.
    pub events: u64,
    /// Per database (ledger stream), by id.
    pub databases: BTreeMap<String, DatabaseView>,
    /// Events that didn't fit what came before, in seq order.
    pub anomalies: Vec<Anomaly>,
}

/// What the ledger says about one database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseView {
    /// The database id (the stream).
    pub database: String,
    /// Events recorded for it.
    pub events: u64,
    /// Whole-database introspections recorded.
    pub introspections: u64,
    /// The live catalog hash as last recorded, and by what.
    pub live: Option<LiveHash>,
    /// Plans by id.
    pub plans: BTreeMap<String, PlanView>,
    /// Ids of the plans still waiting to be applied (proposed, confirmed or stale): the
    /// current proposals.
    pub pending: BTreeSet<String>,
    /// Every apply outcome and `apply_sql`, in order.
    pub history: Vec<HistoryEntry>,
    /// An apply that started and has no outcome yet.
    pub open_apply: Option<OpenApply>,
    /// The last drift finding.
    pub drift: Option<DriftView>,
    /// The session context as last set.
    pub context: Option<ContextView>,
    /// The manifest blob of every catalog hash the ledger holds a manifest of for this
    /// database, the first recorded kept.
    #[serde(default)]
    pub manifests: BTreeMap<CatalogHash, BlobRef>,
    /// Online migrations by version: the last phase recorded and the migration as planned.
    #[serde(default)]
    pub online: BTreeMap<String, OnlineView>,
}

/// An online migration as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineView {
    /// The changed table, `schema.table`.
    pub table: String,
    /// The last phase recorded (`planned`, `expanded`, `backfilled`, `completed`,
    /// `rolled_back`), a failure not counted: the database stays where the phase started.
    pub phase: String,
    /// The migration as JSON (its column changes with `up`/`down`).
    pub migration: String,
    /// Seq of the last record about it.
    pub seq: u64,
    /// The last failure, when the last attempt failed.
    pub error: Option<String>,
}

/// A catalog hash and the event that recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveHash {
    /// The hash.
    pub hash: CatalogHash,
    /// Seq of the event that recorded it.
    pub seq: u64,
    /// When (unix microseconds).
    pub at: i64,
    /// That event's kind.
    pub source: String,
}

/// A plan and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    /// The plan as proposed.
    pub plan: PlanSummary,
    /// Who proposed (or merged) it.
    pub proposed_by: String,
    /// Seq of its proposal (or merge).
    pub proposed_seq: u64,
    /// When (unix microseconds).
    pub proposed_at: i64,
    /// Its confirmation, once confirmed.
    pub approval: Option<Approval>,
    /// Indexes of the steps recorded as done by `StepApplied`, ascending.
    pub steps_done: Vec<u32>,
    /// Where it stands.
    pub status: PlanStatus,
}

/// Where a plan stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PlanStatus {
    /// Proposed, its base is live (or the live hash is unknown), not confirmed.
    Proposed,
    /// Confirmed and its base is live.
    Confirmed,
    /// Its base is not the live hash.
    Stale {
        /// The live hash it doesn't apply to.
        live_hash: CatalogHash,
    },
    /// An apply started and has no outcome yet.
    Applying {
        /// Seq of the `ApplyStarted`.
        started_seq: u64,
    },
    /// Applied.
    Applied {
        /// Seq of the `PlanApplied`.
        seq: u64,
        /// The resulting hash.
        after_hash: CatalogHash,
    },
    /// Its apply failed.
    Failed {
        /// Seq of the `ApplyFailed`.
        seq: u64,
        /// Why.
        error: String,
    },
    /// Merged into another plan, which replaces it.
    Merged {
        /// The merged plan's id.
        into: String,
    },
}

impl PlanStatus {
    /// The status name: `proposed`, `confirmed`, `stale`, `applying`, `applied`, `failed` or
    /// `merged`.
    pub fn name(&self) -> &'static str {
        match self {
            PlanStatus::Proposed => "proposed",
            PlanStatus::Confirmed => "confirmed",
            PlanStatus::Stale { .. } => "stale",
            PlanStatus::Applying { .. } => "applying",
            PlanStatus::Applied { .. } => "applied",
            PlanStatus::Failed { .. } => "failed",
            PlanStatus::Merged { .. } => "merged",
        }
    }

    /// Whether the status follows the live hash (proposed, confirmed, stale).
    fn is_pending(&self) -> bool {
        matches!(
            self,
            PlanStatus::Proposed | PlanStatus::Confirmed | PlanStatus::Stale { .. }
        )
    }
}

/// One change made to a database, in the applied history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Seq of the outcome event.
    pub seq: u64,
    /// When (unix microseconds).
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What was applied.
    pub change: Change,
    /// The live hash before, when known.
    pub before_hash: Option<CatalogHash>,
    /// The live hash after, when known.
    pub after_hash: Option<CatalogHash>,
    /// How it ended.
    pub outcome: Outcome,
    /// The receipt's hash.
    pub receipt_hash: String,
    /// The approval relied on, for a confirmed plan.
    pub approval: Option<Approval>,
}

/// What a history entry applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A plan.
    Plan {
        /// Its id.
        plan_id: String,
    },
    /// Statements through `apply_sql`.
    Sql {
        /// The statement as given.
        input: String,
    },
    /// A phase of an online migration.
    Online {
        /// The migration's version.
        version: String,
        /// The phase reached (`expanded`, `backfilled`, `completed`, `rolled_back`).
        phase: String,
    },
}

/// How a history entry ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Everything ran.
    Applied,
    /// It stopped on an error.
    Failed {
        /// Why.
        error: String,
    },
}

/// An apply with no recorded outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenApply {
    /// Seq of the `ApplyStarted`.
    pub seq: u64,
    /// The plan.
    pub plan_id: String,
    /// Who started it.
    pub actor: String,
}

/// A drift finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftView {
    /// Seq of the `DriftDetected`.
    pub seq: u64,
    /// When (unix microseconds).
    pub at: i64,
    /// The hash the ledger expected.
    pub expected_hash: CatalogHash,
    /// The hash found live.
    pub live_hash: CatalogHash,
}

/// The session context as last set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextView {
    /// Seq of the `ContextSet`.
    pub seq: u64,
    /// Who set it.
    pub actor: String,
    /// The role.
    pub role: Option<String>,
    /// `app.user_id`.
    pub user_id: Option<String>,
    /// `app.tenant_id`.
    pub tenant_id: Option<String>,
}

/// An event that didn't fit what came before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The event's seq.
    pub seq: u64,
    /// The database (stream).
    pub database: String,
    /// What doesn't fit.
    pub message: String,
}

impl Projections {
    /// Empty projections (nothing folded yet).
    pub fn new() -> Projections {
        Projections::default()
    }

    /// Folds `events` (in seq order) from scratch.
    pub fn rebuild<I, S, E>(events: I) -> Projections
    where
        I: IntoIterator<Item = (u64, i64, S, E)>,
        S: AsRef<str>,
        E: Borrow<Event>,
    {
        let mut projections = Projections::new();
        for (seq, at, stream, event) in events {
            projections.apply(seq, at, stream.as_ref(), event.borrow());
        }
        projections
    }

    /// The database `id`, if any event concerned it.
    pub fn database(&self, id: &str) -> Option<&DatabaseView> {
        self.databases.get(id)
    }

    /// The manifest blob of the catalog whose hash is `hash`: recorded for `database`, else
    /// for any database of the ledger (a manifest is addressed by its content: the same hash
    /// is the same catalog). The caller should check the blob still hashes to `hash`.
    pub fn manifest(&self, database: &str, hash: &CatalogHash) -> Option<&BlobRef> {
        self.database(database)
            .and_then(|db| db.manifests.get(hash))
            .or_else(|| {
                self.databases
                    .values()
                    .find_map(|db| db.manifests.get(hash))
            })
    }

    /// Plan `plan_id` of database `database`.
    pub fn plan(&self, database: &str, plan_id: &str) -> Option<&PlanView> {
        self.databases.get(database)?.plans.get(plan_id)
    }

    /// Folds one event: the record at `seq`, written at `at` (unix microseconds) to `stream`.
    ///
    /// Events must come in ascending seq order; one at or below [`Projections::last_seq`] is
    /// ignored (and listed as an anomaly), so re-delivering an event changes nothing. The
    /// record's stream decides which database the event is filed under; an event naming
    /// another database is filed under the stream and listed as an anomaly.
    pub fn apply(&mut self, seq: u64, at: i64, stream: &str, event: &Event) {
        if seq <= self.last_seq {
            self.anomalies.push(Anomaly {
                seq,
                database: stream.to_owned(),
                message: format!(
                    "out of order: seq {seq} after seq {}; ignored",
                    self.last_seq
                ),
            });
            return;
        }
        self.last_seq = seq;
        self.events += 1;
        let mut anomalies = Vec::new();
        if event.database() != stream {
            anomalies.push(format!(
                "{} names database `{}` but is recorded in stream `{stream}`",
                event.kind(),
                event.database()
            ));
        }
        let db = self
            .databases
            .entry(stream.to_owned())
            .or_insert_with(|| DatabaseView {
                database: stream.to_owned(),
                ..DatabaseView::default()
            });
        db.events += 1;
        db.fold(seq, at, event, &mut anomalies);
        self.anomalies
            .extend(anomalies.into_iter().map(|message| Anomaly {
                seq,
                database: stream.to_owned(),
                message,
            }));
    }
}

impl DatabaseView {
    fn fold(&mut self, seq: u64, at: i64, event: &Event, anomalies: &mut Vec<String>) {
        match event {
            Event::CatalogIntrospected(e) => {
                self.keep_manifest(&e.catalog_hash, Some(&e.manifest));
                if e.schemas.is_empty() {
                    self.introspections += 1;
                    self.set_live(&e.catalog_hash, seq, at, event.kind());
                }
            }
            Event::PlanProposed(e) => self.propose(&e.plan, &e.actor, seq, at, anomalies),
            Event::PlansMerged(e) => {
                for source in &e.sources {
                    match self.plans.get_mut(source) {
                        Some(plan) if plan.status.is_pending() => {
                            plan.status = PlanStatus::Merged {
                                into: e.merged.plan_id.clone(),
                            };
                            self.pending.remove(source);
                        }
                        Some(plan) => anomalies.push(format!(
                            "merged plan {source} is already {}",
                            plan.status.name()
                        )),
                        None => anomalies.push(format!("merged plan {source} was never proposed")),
                    }
                }
                self.propose(&e.merged, &e.actor, seq, at, anomalies);
            }
            Event::PlanConfirmed(e) => match self.plans.get_mut(&e.plan_id) {
                Some(plan) => {
                    plan.approval = Some(Approval {
                        seq,
                        by: e.actor.clone(),
                    });
                    match plan.status {
                        PlanStatus::Proposed => plan.status = PlanStatus::Confirmed,
                        PlanStatus::Confirmed | PlanStatus::Stale { .. } => {}
                        _ => anomalies.push(format!(
                            "confirmation of plan {} which is already {}",
                            e.plan_id,
                            plan.status.name()
                        )),
                    }
                }
                None => anomalies.push(format!(
                    "confirmation of plan {} which was never proposed",
                    e.plan_id
                )),
            },
            Event::ApplyStarted(e) => {
                if let Some(open) = &self.open_apply {
                    anomalies.push(format!(
                        "apply of plan {} started while the apply at seq {} has no outcome",
                        e.plan_id, open.seq
                    ));
                }
                self.open_apply = Some(OpenApply {
                    seq,
                    plan_id: e.plan_id.clone(),
                    actor: e.actor.clone(),
                });
                match self.plans.get_mut(&e.plan_id) {
                    Some(plan) => {
                        if plan.plan.requires_confirmation
                            && plan.approval.is_none()
                            && e.approval.is_none()
                        {
                            anomalies.push(format!(
                                "plan {} requires confirmation but was applied without one",
                                e.plan_id
                            ));
                        }
                        plan.status = PlanStatus::Applying { started_seq: seq };
                        self.pending.remove(&e.plan_id);
                    }
                    None => anomalies.push(format!(
                        "apply of plan {} which was never proposed",
                        e.plan_id
                    )),
                }
            }
            Event::StepApplied(e) => {
                match self.plans.get_mut(&e.plan_id) {
                    Some(plan) => {
                        if let Err(i) = plan.steps_done.binary_search(&e.step_index) {
                            plan.steps_done.insert(i, e.step_index);
                        }
                    }
                    None => anomalies.push(format!(
                        "step of plan {} which was never proposed",
                        e.plan_id
                    )),
                }
                if let Some(hash) = &e.catalog_hash {
                    self.set_live(hash, seq, at, event.kind());
                }
            }
            Event::PlanApplied(e) => {
                self.close_apply(e.started_seq, &e.plan_id, anomalies);
                match self.plans.get_mut(&e.plan_id) {
                    Some(plan) => {
                        if plan.plan.target_hash != e.after_hash {
                            anomalies.push(format!(
                                "plan {} applied to {} but targets {}",
                                e.plan_id, e.after_hash, plan.plan.target_hash
                            ));
                        }
                        plan.status = PlanStatus::Applied {
                            seq,
                            after_hash: e.after_hash.clone(),
                        };
                        self.pending.remove(&e.plan_id);
                    }
                    None => anomalies.push(format!(
                        "outcome of plan {} which was never proposed",
                        e.plan_id
                    )),
                }
                self.history.push(HistoryEntry {
                    seq,
                    at,
                    actor: e.actor.clone(),
                    change: Change::Plan {
                        plan_id: e.plan_id.clone(),
                    },
                    before_hash: Some(e.before_hash.clone()),
                    after_hash: Some(e.after_hash.clone()),
                    outcome: Outcome::Applied,
                    receipt_hash: e.receipt.hash.clone(),
                    approval: e.approval.clone(),
                });
                self.set_live(&e.after_hash, seq, at, event.kind());
            }
            Event::ApplyFailed(e) => {
                self.close_apply(e.started_seq, &e.plan_id, anomalies);
                match self.plans.get_mut(&e.plan_id) {
                    Some(plan) => {
                        plan.status = PlanStatus::Failed {
                            seq,
                            error: e.error.clone(),
                        };
                        self.pending.remove(&e.plan_id);
                    }
                    None => anomalies.push(format!(
                        "outcome of plan {} which was never proposed",
                        e.plan_id
                    )),
                }
                let approval = self.plans.get(&e.plan_id).and_then(|p| p.approval.clone());
                self.history.push(HistoryEntry {
                    seq,
                    at,
                    actor: e.actor.clone(),
                    change: Change::Plan {
                        plan_id: e.plan_id.clone(),
                    },
                    before_hash: Some(e.before_hash.clone()),
                    after_hash: e.after_hash.clone(),
                    outcome: Outcome::Failed {
                        error: e.error.clone(),
                    },
                    receipt_hash: e.receipt.hash.clone(),
                    approval,
                });
                if let Some(hash) = &e.after_hash {
                    self.set_live(hash, seq, at, event.kind());
                }
            }
            Event::SqlApplied(e) => {
                let outcome = match e.receipt.steps.iter().find(|s| !s.outcome.is_ok()) {
                    None => Outcome::Applied,
                    Some(step) => Outcome::Failed {
                        error: step.outcome.to_string(),
                    },
                };
                self.history.push(HistoryEntry {
                    seq,
                    at,
                    actor: e.actor.clone(),
                    change: Change::Sql {
                        input: e.receipt.input.clone(),
                    },
                    before_hash: e.before_hash.clone(),
                    after_hash: e.after_hash.clone(),
                    outcome,
                    receipt_hash: e.receipt.hash.clone(),
                    approval: None,
                });
                if let Some(hash) = &e.after_hash {
                    self.set_live(hash, seq, at, event.kind());
                }
            }
            Event::ContextSet(e) => {
                self.context = Some(ContextView {
                    seq,
                    actor: e.actor.clone(),
                    role: e.role.clone(),
                    user_id: e.user_id.clone(),
                    tenant_id: e.tenant_id.clone(),
                });
            }
            Event::OnlineMigrated(e) => {
                let entry = self
                    .online
                    .entry(e.version.clone())
                    .or_insert_with(|| OnlineView {
                        table: e.table.clone(),
                        phase: e.phase.clone(),
                        migration: e.migration.clone(),
                        seq,
                        error: None,
                    });
                entry.seq = seq;
                match &e.error {
                    None => {
                        entry.phase = e.phase.clone();
                        entry.error = None;
                        if !e.migration.is_empty() {
                            entry.migration = e.migration.clone();
                        }
                        if !e.table.is_empty() {
                            entry.table = e.table.clone();
                        }
                    }
                    Some(error) => entry.error = Some(error.clone()),
                }
                // A plan only reads; every other phase changed the database (or failed).
                if e.phase != "planned" {
                    self.history.push(HistoryEntry {
                        seq,
                        at,
                        actor: e.actor.clone(),
                        change: Change::Online {
                            version: e.version.clone(),
                            phase: e.phase.clone(),
                        },
                        before_hash: e.before_hash.clone(),
                        after_hash: e.after_hash.clone(),
                        outcome: match &e.error {
                            None => Outcome::Applied,
                            Some(error) => Outcome::Failed {
                                error: error.clone(),
                            },
                        },
                        receipt_hash: String::new(),
                        approval: None,
                    });
                }
                if let Some(hash) = &e.after_hash {
                    self.set_live(hash, seq, at, event.kind());
                }
            }
            Event::DriftDetected(e) => {
                self.keep_manifest(&e.live_hash, e.manifest.as_ref());
                self.drift = Some(DriftView {
                    seq,
                    at,
                    expected_hash: e.expected_hash.clone(),
                    live_hash: e.live_hash.clone(),
                });
                self.set_live(&e.live_hash, seq, at, event.kind());
            }
        }
    }

    fn keep_manifest(&mut self, hash: &CatalogHash, manifest: Option<&BlobRef>) {
        if let Some(manifest) = manifest {
            self.manifests
                .entry(hash.clone())
                .or_insert_with(|| manifest.clone());
        }
    }

    fn propose(
        &mut self,
        plan: &PlanSummary,
        actor: &str,
        seq: u64,
        at: i64,
        anomalies: &mut Vec<String>,
    ) {
        self.keep_manifest(&plan.base_hash, plan.base_manifest.as_ref());
        self.keep_manifest(&plan.target_hash, plan.target_manifest.as_ref());
        if let Some(existing) = self.plans.get(&plan.plan_id) {
            if !existing.status.is_pending() {
                anomalies.push(format!(
                    "plan {} proposed again while {}; proposal replaces it",
                    plan.plan_id,
                    existing.status.name()
                ));
            }
        }
        let status = pending_status(plan, None, self.live.as_ref());
        self.pending.insert(plan.plan_id.clone());
        self.plans.insert(
            plan.plan_id.clone(),
            PlanView {
                plan: plan.clone(),
                proposed_by: actor.to_owned(),
                proposed_seq: seq,
                proposed_at: at,
                approval: None,
                steps_done: Vec::new(),
                status,
            },
        );
    }

    fn close_apply(&mut self, started_seq: u64, plan_id: &str, anomalies: &mut Vec<String>) {
        match self.open_apply.take() {
            Some(open) if open.seq == started_seq && open.plan_id == plan_id => {}
            Some(open) => {
                anomalies.push(format!(
                    "outcome of the apply started at seq {started_seq} (plan {plan_id}), \
                     but the open apply is seq {} (plan {})",
                    open.seq, open.plan_id
                ));
            }
            None => anomalies.push(format!(
                "outcome of the apply started at seq {started_seq} (plan {plan_id}), \
                 but no apply is open"
            )),
        }
    }

    fn set_live(&mut self, hash: &CatalogHash, seq: u64, at: i64, source: &str) {
        let live = LiveHash {
            hash: hash.clone(),
            seq,
            at,
            source: source.to_owned(),
        };
        // Only pending plans follow the live hash; the others keep their outcome.
        for id in &self.pending {
            if let Some(plan) = self.plans.get_mut(id) {
                plan.status = pending_status(&plan.plan, plan.approval.as_ref(), Some(&live));
            }
        }
        self.live = Some(live);
    }
}

/// The status of a plan that is neither applying nor done, given the live hash.
fn pending_status(
    plan: &PlanSummary,
    approval: Option<&Approval>,
    live: Option<&LiveHash>,
) -> PlanStatus {
    match live {
        Some(live) if live.hash != plan.base_hash => PlanStatus::Stale {
            live_hash: live.hash.clone(),
        },
        _ if approval.is_some() => PlanStatus::Confirmed,
        _ => PlanStatus::Proposed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::*;
    use crate::hash::HASH_PREFIX;

    fn h(n: u8) -> CatalogHash {
        CatalogHash(format!("{HASH_PREFIX}{}", hex::encode([n; 32])))
    }

    const A: &str = "agent:a";
    const DB: &str = "db1";

    fn plan(id: &str, base: u8, target: u8, confirm: bool) -> PlanSummary {
        PlanSummary {
            plan_id: id.into(),
            base_hash: h(base),
            target_hash: h(target),
            body: BlobRef::of(id.as_bytes()),
            step_count: 1,
            hazards: if confirm {
                vec!["data_loss".into()]
            } else {
                Vec::new()
            },
            requires_confirmation: confirm,
            base_manifest: None,
            target_manifest: None,
            renames: Default::default(),
        }
    }

    fn receipt(input: &str, ok: bool) -> Receipt {
        let step = StepReceipt {
            sql: "ALTER TABLE t ADD COLUMN c int".into(),
            started_at: 10,
            duration_ms: 1,
            rows: None,
            outcome: if ok {
                StepOutcome::Ok
            } else {
                StepOutcome::Error {
                    sqlstate: Some("55P03".into()),
                    message: "lock timeout".into(),
                }
            },
        };
        let timing = Timing {
            started_at: 10,
            finished_at: 11,
            duration_ms: 1,
        };
        Receipt::seal(input, vec![step], timing).unwrap_or_else(|e| panic!("{e}"))
    }

    fn introspected(n: u8) -> Event {
        Event::CatalogIntrospected(CatalogIntrospected {
            actor: A.into(),
            database: DB.into(),
            catalog_hash: h(n),
            manifest: BlobRef::of(&[n]),
            schemas: Vec::new(),
            server_version: None,
        })
    }

    fn proposed(p: PlanSummary) -> Event {
        Event::PlanProposed(PlanProposed {
            actor: A.into(),
            database: DB.into(),
            plan: p,
        })
    }

    /// `pending` lists exactly the plans whose status is pending.
    fn check_pending(p: &Projections) {
        for db in p.databases.values() {
            let want: BTreeSet<String> = db
                .plans
                .iter()
                .filter(|(_, v)| v.status.is_pending())
                .map(|(id, _)| id.clone())
                .collect();
            assert_eq!(db.pending, want, "{}", db.database);
        }
    }

    fn status(p: &Projections, id: &str) -> PlanStatus {
        check_pending(p);
        p.plan(DB, id)
            .map(|v| v.status.clone())
            .unwrap_or_else(|| panic!("no plan {id}"))
    }

    /// A scripted life of one database: introspect, two proposals, merge, confirm, apply,
    /// a stale plan, apply_sql, a failed apply, drift.
    #[test]
    fn scripted_sequence_gives_expected_states() {
        let script = [
            introspected(1),                   // 1
            proposed(plan("p1", 1, 2, false)), // 2
            proposed(plan("p2", 1, 3, false)), // 3
            Event::PlansMerged(PlansMerged {
                actor: A.into(),
                database: DB.into(),
                sources: vec!["p1".into(), "p2".into()],
                merged: plan("m", 1, 4, true),
            }), // 4
            proposed(plan("other", 1, 5, false)), // 5
            Event::PlanConfirmed(PlanConfirmed {
                actor: "user:ann".into(),
                database: DB.into(),
                plan_id: "m".into(),
                hazards_acknowledged: vec!["data_loss".into()],
            }), // 6
            Event::ApplyStarted(ApplyStarted {
                actor: A.into(),
                database: DB.into(),
                plan_id: "m".into(),
                base_hash: h(1),
                approval: Some(Approval {
                    seq: 6,
                    by: "user:ann".into(),
                }),
            }), // 7
        ];
        let mut p = Projections::rebuild(
            script
                .iter()
                .enumerate()
                .map(|(i, e)| (i as u64 + 1, 1000 + i as i64, DB, e)),
        );
        assert_eq!(p.last_seq, 7);
        assert_eq!(status(&p, "p1"), PlanStatus::Merged { into: "m".into() });
        assert_eq!(status(&p, "p2"), PlanStatus::Merged { into: "m".into() });
        assert_eq!(status(&p, "m"), PlanStatus::Applying { started_seq: 7 });
        assert_eq!(status(&p, "other"), PlanStatus::Proposed);
        let db = p.database(DB).unwrap_or_else(|| panic!("db"));
        assert_eq!(db.open_apply.as_ref().map(|o| o.seq), Some(7));
        assert_eq!(db.live.as_ref().map(|l| l.hash.clone()), Some(h(1)));
        assert!(p.anomalies.is_empty(), "{:?}", p.anomalies);

        p.apply(
            8,
            2000,
            DB,
            &Event::PlanApplied(PlanApplied {
                actor: A.into(),
                database: DB.into(),
                plan_id: "m".into(),
                started_seq: 7,
                before_hash: h(1),
                after_hash: h(4),
                approval: Some(Approval {
                    seq: 6,
                    by: "user:ann".into(),
                }),
                receipt: receipt("m", true),
                recovered: false,
            }),
        );
        assert_eq!(
            status(&p, "m"),
            PlanStatus::Applied {
                seq: 8,
                after_hash: h(4)
            }
        );
        // The live hash moved off "other"'s base.
        assert_eq!(status(&p, "other"), PlanStatus::Stale { live_hash: h(4) });

        p.apply(
            9,
            2100,
            DB,
            &Event::SqlApplied(SqlApplied {
                actor: "user:bob".into(),
                database: DB.into(),
                before_hash: Some(h(4)),
                after_hash: Some(h(6)),
                receipt: receipt("CREATE INDEX i ON t (c)", true),
            }),
        );
        p.apply(10, 2200, DB, &proposed(plan("q", 6, 7, false)));
        p.apply(
            11,
            2300,
            DB,
            &Event::ApplyStarted(ApplyStarted {
                actor: A.into(),
                database: DB.into(),
                plan_id: "q".into(),
                base_hash: h(6),
                approval: None,
            }),
        );
        p.apply(
            12,
            2400,
            DB,
            &Event::ApplyFailed(ApplyFailed {
                actor: A.into(),
                database: DB.into(),
                plan_id: "q".into(),
                started_seq: 11,
                before_hash: h(6),
                after_hash: Some(h(6)),
                error: "lock timeout".into(),
                receipt: receipt("q", false),
                interrupted: false,
            }),
        );
        assert_eq!(
            status(&p, "q"),
            PlanStatus::Failed {
                seq: 12,
                error: "lock timeout".into()
            }
        );
        // Back on "other"'s base? No: still stale, against the new live hash.
        assert_eq!(status(&p, "other"), PlanStatus::Stale { live_hash: h(6) });
        // Someone reverts by hand; drift brings the live hash back to "other"'s base.
        p.apply(
            13,
            2500,
            DB,
            &Event::DriftDetected(DriftDetected {
                actor: "scheduler".into(),
                database: DB.into(),
                expected_hash: h(6),
                live_hash: h(1),
                manifest: None,
            }),
        );
        assert_eq!(status(&p, "other"), PlanStatus::Proposed);

        let db = p.database(DB).unwrap_or_else(|| panic!("db"));
        assert_eq!(db.open_apply, None);
        assert_eq!(
            db.live
                .as_ref()
                .map(|l| (l.hash.clone(), l.seq, l.source.as_str())),
            Some((h(1), 13, "DriftDetected"))
        );
        let history: Vec<(u64, &Change, &Outcome)> = db
            .history
            .iter()
            .map(|e| (e.seq, &e.change, &e.outcome))
            .collect();
        assert_eq!(
            history,
            vec![
                (
                    8,
                    &Change::Plan {
                        plan_id: "m".into()
                    },
                    &Outcome::Applied
                ),
                (
                    9,
                    &Change::Sql {
                        input: "CREATE INDEX i ON t (c)".into()
                    },
                    &Outcome::Applied
                ),
                (
                    12,
                    &Change::Plan {
                        plan_id: "q".into()
                    },
                    &Outcome::Failed {
                        error: "lock timeout".into()
                    }
                ),
            ]
        );
        assert_eq!(db.history[0].approval.as_ref().map(|a| a.seq), Some(6));
        assert_eq!(db.drift.as_ref().map(|d| d.seq), Some(13));
        assert_eq!(db.pending, BTreeSet::from(["other".to_owned()]));
        assert!(p.anomalies.is_empty(), "{:?}", p.anomalies);
    }

    #[test]
    fn confirmation_and_staleness_follow_the_live_hash() {
        let mut p = Projections::new();
        p.apply(1, 0, DB, &proposed(plan("p", 1, 2, true)));
        assert_eq!(status(&p, "p"), PlanStatus::Proposed, "live unknown");
        p.apply(2, 0, DB, &introspected(9));
        assert_eq!(status(&p, "p"), PlanStatus::Stale { live_hash: h(9) });
        p.apply(
            3,
            0,
            DB,
            &Event::PlanConfirmed(PlanConfirmed {
                actor: "user:ann".into(),
                database: DB.into(),
                plan_id: "p".into(),
                hazards_acknowledged: Vec::new(),
            }),
        );
        assert_eq!(status(&p, "p"), PlanStatus::Stale { live_hash: h(9) });
        // A schema-limited introspection doesn't move the live hash.
        p.apply(
            4,
            0,
            DB,
            &Event::CatalogIntrospected(CatalogIntrospected {
                actor: A.into(),
                database: DB.into(),
                catalog_hash: h(1),
                manifest: BlobRef::of(b"x"),
                schemas: vec!["public".into()],
                server_version: None,
            }),
        );
        assert_eq!(status(&p, "p"), PlanStatus::Stale { live_hash: h(9) });
        p.apply(5, 0, DB, &introspected(1));
        assert_eq!(status(&p, "p"), PlanStatus::Confirmed);
        assert_eq!(p.database(DB).map(|d| d.introspections), Some(2));
        // A proposal against a base that isn't live is stale at once.
        p.apply(6, 0, DB, &proposed(plan("late", 3, 4, false)));
        assert_eq!(status(&p, "late"), PlanStatus::Stale { live_hash: h(1) });
        assert!(p.anomalies.is_empty(), "{:?}", p.anomalies);
    }

    #[test]
    fn anomalies_are_listed_not_fatal() {
        let mut p = Projections::new();
        p.apply(
            1,
            0,
            DB,
            &Event::PlanConfirmed(PlanConfirmed {
                actor: A.into(),
                database: DB.into(),
                plan_id: "ghost".into(),
                hazards_acknowledged: Vec::new(),
            }),
        );
        p.apply(2, 0, DB, &proposed(plan("risky", 1, 2, true)));
        p.apply(
            3,
            0,
            DB,
            &Event::ApplyStarted(ApplyStarted {
                actor: A.into(),
                database: DB.into(),
                plan_id: "risky".into(),
                base_hash: h(1),
                approval: None,
            }),
        );
        p.apply(3, 0, DB, &introspected(5)); // re-delivered seq
        p.apply(4, 0, "db2", &introspected(5)); // names db1, recorded in db2
        let messages: Vec<(u64, &str)> = p
            .anomalies
            .iter()
            .map(|a| (a.seq, a.message.as_str()))
            .collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[0].1.contains("never proposed"));
        assert!(messages[1].1.contains("requires confirmation"));
        assert!(messages[2].1.contains("out of order"));
        assert!(messages[3].1.contains("recorded in stream `db2`"));
        assert_eq!(status(&p, "risky"), PlanStatus::Applying { started_seq: 3 });
        assert_eq!(p.last_seq, 4);
        assert_eq!(p.events, 4);
        assert!(p.database("db2").is_some_and(|d| d.live.is_some()));
    }

    #[test]
    fn step_receipts_track_progress_for_resume() {
        let mut p = Projections::new();
        p.apply(1, 0, DB, &proposed(plan("p", 1, 2, false)));
        for (seq, index) in [(2, 1u32), (3, 0), (4, 1)] {
            p.apply(
                seq,
                0,
                DB,
                &Event::StepApplied(StepApplied {
                    actor: A.into(),
                    database: DB.into(),
                    plan_id: "p".into(),
                    step_index: index,
                    step_id: format!("s{index}"),
                    receipt: receipt("p", true).steps[0].clone(),
                    catalog_hash: (index == 1).then(|| h(8)),
                }),
            );
        }
        assert_eq!(
            p.plan(DB, "p").map(|v| v.steps_done.clone()),
            Some(vec![0, 1])
        );
        assert_eq!(
            p.database(DB).and_then(|d| d.live.as_ref()).map(|l| l.seq),
            Some(4)
        );
    }

    #[test]
    fn manifests_are_found_by_hash_in_any_database() {
        let mut p = Projections::new();
        let mut with_manifests = plan("p", 1, 2, false);
        with_manifests.base_manifest = Some(BlobRef::of(b"base"));
        with_manifests.target_manifest = Some(BlobRef::of(b"target"));
        p.apply(1, 0, DB, &introspected(1));
        p.apply(2, 0, DB, &proposed(with_manifests));
        p.apply(
            3,
            0,
            DB,
            &Event::DriftDetected(DriftDetected {
                actor: A.into(),
                database: DB.into(),
                expected_hash: h(2),
                live_hash: h(3),
                manifest: Some(BlobRef::of(b"drift")),
            }),
        );
        p.apply(4, 0, "db2", &{
            let Event::CatalogIntrospected(mut e) = introspected(4) else {
                unreachable!()
            };
            e.database = "db2".into();
            e.schemas = vec!["app".into()];
            Event::CatalogIntrospected(e)
        });
        // The first manifest recorded for a hash is kept.
        assert_eq!(p.manifest(DB, &h(1)), Some(&BlobRef::of(&[1])));
        assert_eq!(p.manifest(DB, &h(2)), Some(&BlobRef::of(b"target")));
        assert_eq!(p.manifest(DB, &h(3)), Some(&BlobRef::of(b"drift")));
        // A limited introspection of another database is found too (same hash, same catalog).
        assert_eq!(p.manifest(DB, &h(4)), Some(&BlobRef::of(&[4])));
        assert_eq!(p.manifest(DB, &h(9)), None);
        assert_eq!(p.manifest("nowhere", &h(1)), Some(&BlobRef::of(&[1])));
    }
}
