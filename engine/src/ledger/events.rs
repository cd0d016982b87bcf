//! Domain events: what the ledger records (DESIGN §5), and their stored encoding.
//!
//! Every introspection, plan proposal, merge, confirmation, apply start, apply step, apply
//! outcome, `apply_sql`, context change and drift finding is one [`Event`]. An event names who
//! did it (`actor`, an agent or user id), the database it concerns (`database`, a stable id that
//! is also the ledger record's `stream`), the catalog hashes and plan ids involved, and, where
//! something was executed, a [`Receipt`] of exactly what ran.
//!
//! Large values are not inlined: a catalog manifest (or a plan body) is stored once as a
//! content-addressed ledger blob and the event holds its [`BlobRef`] (see [`manifest_blob`]).
//!
//! # Stored encoding (event format version 1)
//!
//! [`encode`] writes an [`EventEnvelope`] `{ version, event }` with rmp-serde's *named* (map)
//! struct encoding: every struct is a MessagePack map from field name to value, in declaration
//! order; an enum is a one-entry map from the variant name to its content, or just the variant
//! name for a unit variant. The encoding is deterministic: no `HashMap` (collections are `Vec`
//! or `BTreeMap`), no floats, no `skip_serializing_if`, no untagged or flattened enums, so one
//! event always encodes to the same bytes, and [`decode`] of those bytes gives the event back.
//!
//! Named fields keep old logs readable: a reader ignores fields it doesn't know, and a field
//! added later as an `Option` with `#[serde(default)]` reads as `None` from older records. A
//! change that can't be expressed that way bumps [`EVENT_FORMAT_VERSION`]; the old shapes are
//! then frozen in a module of their own and converted on decode, so [`decode`] keeps reading
//! every version it ever wrote. A version this build doesn't know is a clear
//! [`EventError::UnsupportedVersion`], never a guess.
//!
//! The record's `kind` string is [`Event::kind`], the variant name (`"PlanApplied"`, …);
//! [`decode_record_payload`] checks a record's kind and stream against its payload.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::Manifest;
use crate::hash::{canonical_json, sha3_256_hex, CanonicalError, CatalogHash, HASH_PREFIX};

/// The event encoding version [`encode`] writes.
pub const EVENT_FORMAT_VERSION: u16 = 1;

/// Every event kind, as written in the ledger record's `kind`, in a stable order.
pub const EVENT_KINDS: [&str; 12] = [
    "CatalogIntrospected",
    "PlanProposed",
    "PlansMerged",
    "PlanConfirmed",
    "ApplyStarted",
    "StepApplied",
    "PlanApplied",
    "ApplyFailed",
    "SqlApplied",
    "ContextSet",
    "DriftDetected",
    "OnlineMigrated",
];

/// The address of a ledger blob: `"sha3-256:" + hex(SHA3-256(bytes))`.
///
/// The same text form the store prints for its blob hashes, so it parses into one with
/// `str::parse`, and anyone can check a blob against it with standard tools.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlobRef(pub String);

impl BlobRef {
    /// The address of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobRef {
        BlobRef(format!("{HASH_PREFIX}{}", sha3_256_hex(bytes)))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bytes a manifest is stored as in the ledger (its RFC 8785 canonical JSON) and their
/// blob address.
///
/// Canonical JSON, so the blob is readable with standard tools and its `catalog` member hashes
/// to the manifest's `catalog_hash` exactly as DESIGN §2 describes.
pub fn manifest_blob(manifest: &Manifest) -> Result<(Vec<u8>, BlobRef), CanonicalError> {
    let bytes = canonical_json(manifest)?;
    let address = BlobRef::of(&bytes);
    Ok((bytes, address))
}

/// The default stable id of a database, used as its ledger stream: `host:port/dbname`
/// (the socket directory for a Unix socket), without user or password.
///
/// The same database reached under another host name gets another id; callers that need one
/// id across addresses configure it explicitly.
pub fn database_id(config: &tokio_postgres::Config) -> String {
    let (host, port) = crate::connect::host_port(config);
    let dbname = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{dbname}")
}

/// A live catalog was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogIntrospected {
    /// Who asked.
    pub actor: String,
    /// The database (its stable id, also the record's stream).
    pub database: String,
    /// The hash of what was read.
    pub catalog_hash: CatalogHash,
    /// The manifest (see [`manifest_blob`]), stored as a blob.
    pub manifest: BlobRef,
    /// The schemas the read was limited to; empty means the whole database. A limited read
    /// is not the database's catalog, so it doesn't move its live hash in projections.
    pub schemas: Vec<String>,
    /// The server's `server_version`, when known.
    pub server_version: Option<String>,
}

/// What the ledger keeps of a plan (DESIGN §4): its identity, hashes and risk, and its full
/// body as a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// The plan's id (its content hash).
    pub plan_id: String,
    /// The catalog hash the plan applies to.
    pub base_hash: CatalogHash,
    /// The catalog hash the plan must produce.
    pub target_hash: CatalogHash,
    /// The full plan (steps, SQL, hazards), stored as a blob.
    pub body: BlobRef,
    /// How many steps it has.
    pub step_count: u32,
    /// The kinds of hazard it carries (e.g. `data_loss`, `table_rewrite`), sorted.
    pub hazards: Vec<String>,
    /// Whether applying it needs a separate, explicit confirmation.
    pub requires_confirmation: bool,
    /// The catalog the plan starts from, as a manifest blob, so the plan can later be merged
    /// with another or rebased onto a newer live catalog (three-way, DESIGN §6). `None` for
    /// plans recorded without it (the CLI's file-based plans); those can only be re-planned.
    #[serde(default)]
    pub base_manifest: Option<BlobRef>,
    /// The catalog the plan produces, as a manifest blob (see `base_manifest`).
    #[serde(default)]
    pub target_manifest: Option<BlobRef>,
    /// The renames the plan was made with, so a rebase or merge plans them as renames again
    /// rather than as a drop and an add.
    #[serde(default)]
    pub renames: crate::diff::Renames,
}

/// A plan was proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanProposed {
    /// Who proposed it.
    pub actor: String,
    /// The database.
    pub database: String,
    /// The plan.
    pub plan: PlanSummary,
}

/// Several proposals were merged (three-way, DESIGN §6) into a new one, which supersedes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlansMerged {
    /// Who merged them.
    pub actor: String,
    /// The database.
    pub database: String,
    /// The plan ids merged, in the order given.
    pub sources: Vec<String>,
    /// The merged plan, now proposed in their place.
    pub merged: PlanSummary,
}

/// An explicit confirmation of one exact plan (DESIGN §4, two-phase confirmation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanConfirmed {
    /// Who confirmed it (the approver).
    pub actor: String,
    /// The database.
    pub database: String,
    /// The plan confirmed.
    pub plan_id: String,
    /// The hazards the approver acknowledged, as shown to them.
    pub hazards_acknowledged: Vec<String>,
}

/// Which confirmation an apply relies on: the `PlanConfirmed` record and its approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Seq of the `PlanConfirmed` record.
    pub seq: u64,
    /// Who confirmed.
    pub by: String,
}

/// An apply is about to touch the database (written before anything runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStarted {
    /// Who applies.
    pub actor: String,
    /// The database.
    pub database: String,
    /// The plan being applied.
    pub plan_id: String,
    /// The live catalog hash checked just before starting (the plan's base).
    pub base_hash: CatalogHash,
    /// The confirmation relied on, when the plan needed one.
    pub approval: Option<Approval>,
}

/// One non-transactional step of an apply finished (DESIGN §4: resumable phases).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepApplied {
    /// Who applies.
    pub actor: String,
    /// The database.
    pub database: String,
    /// The plan being applied.
    pub plan_id: String,
    /// The step's position in the plan, from 0.
    pub step_index: u32,
    /// The step's id within the plan.
    pub step_id: String,
    /// What ran and how it went.
    pub receipt: StepReceipt,
    /// The live catalog hash after the step, when it was read.
    pub catalog_hash: Option<CatalogHash>,
}

/// An apply finished and the database reached the plan's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanApplied {
    /// Who applied.
    pub actor: String,
    /// The database.
    pub database: String,
    /// The plan applied.
    pub plan_id: String,
    /// Seq of the `ApplyStarted` record this concludes.
    pub started_seq: u64,
    /// The live catalog hash before.
    pub before_hash: CatalogHash,
    /// The live catalog hash after (verified equal to the plan's target).
    pub after_hash: CatalogHash,
    /// The confirmation relied on, when the plan needed one.
    pub approval: Option<Approval>,
    /// Exactly what ran.
    pub receipt: Receipt,
    /// True when recovery recorded this outcome after a restart: the process that applied
    /// died before recording it, and introspection found the database at the plan's target.
    #[serde(default)]
    pub recovered: bool,
}

/// An apply stopped on an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyFailed {
    /// Who applied.
    pub actor: String,
    /// The database.
    pub database: String,
    /// The plan.
    pub plan_id: String,
    /// Seq of the `ApplyStarted` record this concludes.
    pub started_seq: u64,
    /// The live catalog hash before.
    pub before_hash: CatalogHash,
    /// The live catalog hash after the failure, when it could be read (non-transactional
    /// steps may have changed the database before the failure).
    pub after_hash: Option<CatalogHash>,
    /// Why it failed.
    pub error: String,
    /// What ran, up to and including the failing statement.
    pub receipt: Receipt,
    /// True when recovery recorded this outcome after a restart: the process that applied
    /// died mid-apply, and introspection found the database still at the plan's base.
    #[serde(default)]
    pub interrupted: bool,
}

/// An allow-listed statement ran through `apply_sql`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlApplied {
    /// Who ran it.
    pub actor: String,
    /// The database.
    pub database: String,
    /// The live catalog hash before, when read.
    pub before_hash: Option<CatalogHash>,
    /// The live catalog hash after, when read.
    pub after_hash: Option<CatalogHash>,
    /// The statement (as the receipt's input), what ran and how it went.
    pub receipt: Receipt,
}

/// The session context for row-level security checks was set (`set_context`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextSet {
    /// Who set it.
    pub actor: String,
    /// The database.
    pub database: String,
    /// The role to act as.
    pub role: Option<String>,
    /// `app.user_id`.
    pub user_id: Option<String>,
    /// `app.tenant_id`.
    pub tenant_id: Option<String>,
}

/// An online (expand/contract) migration was planned or moved to another phase, or a
/// phase failed (`lockplane plan --online`, `apply`, `complete`, `rollback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineMigrated {
    /// Who did it.
    pub actor: String,
    /// The database.
    pub database: String,
    /// The migration's version (its version schema is `<schema>_<version>`).
    pub version: String,
    /// The changed table, `schema.table`.
    pub table: String,
    /// `planned`, `expanded`, `backfilled`, `completed`, `rolled_back` — the phase reached —
    /// or `failed`.
    pub phase: String,
    /// The migration (its column changes with `up`/`down`) as JSON.
    pub migration: String,
    /// The live catalog hash before, when read.
    pub before_hash: Option<CatalogHash>,
    /// The live catalog hash after, when read.
    pub after_hash: Option<CatalogHash>,
    /// Rows the backfill filled in this run, when one ran.
    pub rows_filled: Option<u64>,
    /// Why it failed, for `failed`.
    pub error: Option<String>,
}

/// The live catalog is not what the ledger last knew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftDetected {
    /// Who (or which scheduler) checked.
    pub actor: String,
    /// The database.
    pub database: String,
    /// The hash the ledger expected.
    pub expected_hash: CatalogHash,
    /// The hash found live.
    pub live_hash: CatalogHash,
    /// The live manifest, stored as a blob, when it was kept.
    pub manifest: Option<BlobRef>,
}

/// How one executed statement ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// It succeeded.
    Ok,
    /// The server returned an error.
    Error {
        /// The SQLSTATE code, when the server gave one.
        sqlstate: Option<String>,
        /// The message.
        message: String,
    },
    /// It exceeded its timeout and was cancelled on the server.
    TimedOut {
        /// The timeout that expired, in milliseconds.
        after_ms: u64,
    },
    /// It was not run (an earlier statement failed).
    Skipped,
}

impl StepOutcome {
    /// Whether the statement succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, StepOutcome::Ok)
    }
}

impl fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepOutcome::Ok => f.write_str("ok"),
            StepOutcome::Error {
                sqlstate: Some(code),
                message,
            } => write!(f, "error {code}: {message}"),
            StepOutcome::Error {
                sqlstate: None,
                message,
            } => write!(f, "error: {message}"),
            StepOutcome::TimedOut { after_ms } => write!(f, "timed out after {after_ms} ms"),
            StepOutcome::Skipped => f.write_str("skipped"),
        }
    }
}

/// One statement as it was executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReceipt {
    /// The exact SQL sent.
    pub sql: String,
    /// When it started, in unix microseconds.
    pub started_at: i64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Rows affected, when the server reported a count.
    pub rows: Option<u64>,
    /// How it ended.
    pub outcome: StepOutcome,
}

/// When a whole execution ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Start, in unix microseconds.
    pub started_at: i64,
    /// End, in unix microseconds.
    pub finished_at: i64,
    /// Wall-clock duration, in milliseconds.
    pub duration_ms: u64,
}

/// The current time in unix microseconds, as events and receipts record it (a clock before
/// 1970 reads as 0).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Timing {
    /// The timing of something that ran from `started_at` to `finished_at` (unix
    /// microseconds); a clock that went backwards counts as zero duration.
    pub fn between(started_at: i64, finished_at: i64) -> Timing {
        Timing {
            started_at,
            finished_at,
            duration_ms: ((finished_at - started_at).max(0) / 1000) as u64,
        }
    }
}

/// What was executed for one request (DESIGN §7): `{ input, steps, timing, hash }`.
///
/// `hash` is `"sha3-256:" + hex(SHA3-256(canonical JSON of {input, steps, timing}))`, so a
/// receipt handed to an agent can be checked against the ledger's copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// What was asked: the plan id for an apply, the statement for `apply_sql`.
    pub input: String,
    /// Each statement, in execution order.
    pub steps: Vec<StepReceipt>,
    /// When the whole request ran.
    pub timing: Timing,
    /// The receipt's hash (see the type docs).
    pub hash: String,
}

#[derive(Serialize)]
struct ReceiptBody<'a> {
    input: &'a str,
    steps: &'a [StepReceipt],
    timing: &'a Timing,
}

impl Receipt {
    /// A receipt with its hash computed.
    pub fn seal(
        input: impl Into<String>,
        steps: Vec<StepReceipt>,
        timing: Timing,
    ) -> Result<Receipt, CanonicalError> {
        let mut receipt = Receipt {
            input: input.into(),
            steps,
            timing,
            hash: String::new(),
        };
        receipt.hash = receipt.compute_hash()?;
        Ok(receipt)
    }

    /// The hash of the receipt's content (everything but `hash`).
    pub fn compute_hash(&self) -> Result<String, CanonicalError> {
        let bytes = canonical_json(&ReceiptBody {
            input: &self.input,
            steps: &self.steps,
            timing: &self.timing,
        })?;
        Ok(format!("{HASH_PREFIX}{}", sha3_256_hex(&bytes)))
    }

    /// Whether `hash` matches the content.
    pub fn hash_matches(&self) -> bool {
        self.compute_hash().is_ok_and(|h| h == self.hash)
    }

    /// Whether every statement succeeded.
    pub fn succeeded(&self) -> bool {
        self.steps.iter().all(|s| s.outcome.is_ok())
    }
}

/// A domain event. The variant name is the ledger record's `kind` ([`Event::kind`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// See [`CatalogIntrospected`].
    CatalogIntrospected(CatalogIntrospected),
    /// See [`PlanProposed`].
    PlanProposed(PlanProposed),
    /// See [`PlansMerged`].
    PlansMerged(PlansMerged),
    /// See [`PlanConfirmed`].
    PlanConfirmed(PlanConfirmed),
    /// See [`ApplyStarted`].
    ApplyStarted(ApplyStarted),
    /// See [`StepApplied`].
    StepApplied(StepApplied),
    /// See [`PlanApplied`].
    PlanApplied(PlanApplied),
    /// See [`ApplyFailed`].
    ApplyFailed(ApplyFailed),
    /// See [`SqlApplied`].
    SqlApplied(SqlApplied),
    /// See [`ContextSet`].
    ContextSet(ContextSet),
    /// See [`DriftDetected`].
    DriftDetected(DriftDetected),
    /// See [`OnlineMigrated`].
    OnlineMigrated(OnlineMigrated),
}

macro_rules! each_event {
    ($event:expr, $e:ident => $body:expr) => {
        match $event {
            Event::CatalogIntrospected($e) => $body,
            Event::PlanProposed($e) => $body,
            Event::PlansMerged($e) => $body,
            Event::PlanConfirmed($e) => $body,
            Event::ApplyStarted($e) => $body,
            Event::StepApplied($e) => $body,
            Event::PlanApplied($e) => $body,
            Event::ApplyFailed($e) => $body,
            Event::SqlApplied($e) => $body,
            Event::ContextSet($e) => $body,
            Event::DriftDetected($e) => $body,
            Event::OnlineMigrated($e) => $body,
        }
    };
}

impl Event {
    /// The kind name, as stored in the ledger record's `kind` (one of [`EVENT_KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::CatalogIntrospected(_) => "CatalogIntrospected",
            Event::PlanProposed(_) => "PlanProposed",
            Event::PlansMerged(_) => "PlansMerged",
            Event::PlanConfirmed(_) => "PlanConfirmed",
            Event::ApplyStarted(_) => "ApplyStarted",
            Event::StepApplied(_) => "StepApplied",
            Event::PlanApplied(_) => "PlanApplied",
            Event::ApplyFailed(_) => "ApplyFailed",
            Event::SqlApplied(_) => "SqlApplied",
            Event::ContextSet(_) => "ContextSet",
            Event::DriftDetected(_) => "DriftDetected",
            Event::OnlineMigrated(_) => "OnlineMigrated",
        }
    }

    /// Who did it.
    pub fn actor(&self) -> &str {
        each_event!(self, e => &e.actor)
    }

    /// The database it concerns (the ledger stream).
    pub fn database(&self) -> &str {
        each_event!(self, e => &e.database)
    }

    /// The ledger blobs it refers to, which must be stored for the log to be complete.
    pub fn blob_refs(&self) -> Vec<&BlobRef> {
        match self {
            Event::CatalogIntrospected(e) => vec![&e.manifest],
            Event::PlanProposed(e) => vec![&e.plan.body],
            Event::PlansMerged(e) => vec![&e.merged.body],
            Event::DriftDetected(e) => e.manifest.iter().collect(),
            Event::PlanConfirmed(_)
            | Event::ApplyStarted(_)
            | Event::StepApplied(_)
            | Event::PlanApplied(_)
            | Event::ApplyFailed(_)
            | Event::SqlApplied(_)
            | Event::ContextSet(_)
            | Event::OnlineMigrated(_) => Vec::new(),
        }
    }

    /// The event's fields as JSON (without the kind), for audit output.
    pub fn body_json(&self) -> serde_json::Value {
        let value = each_event!(self, e => serde_json::to_value(e));
        // Plain structs of strings, integers, options and vectors: always representable.
        value.unwrap_or(serde_json::Value::Null)
    }

    /// A one-line human summary (hashes shortened), for logs.
    pub fn summary(&self) -> String {
        match self {
            Event::CatalogIntrospected(e) => {
                let scope = if e.schemas.is_empty() {
                    String::new()
                } else {
                    format!(" (schemas {})", e.schemas.join(", "))
                };
                format!("catalog {}{scope}", short(&e.catalog_hash.0))
            }
            Event::PlanProposed(e) => format!("proposed {}", plan_line(&e.plan)),
            Event::PlansMerged(e) => format!(
                "merged {} into {}",
                e.sources
                    .iter()
                    .map(|s| short(s))
                    .collect::<Vec<_>>()
                    .join(" + "),
                plan_line(&e.merged)
            ),
            Event::PlanConfirmed(e) => format!("confirmed plan {}", short(&e.plan_id)),
            Event::ApplyStarted(e) => format!(
                "apply of plan {} started on {}",
                short(&e.plan_id),
                short(&e.base_hash.0)
            ),
            Event::StepApplied(e) => format!(
                "plan {} step {} ({}): {}",
                short(&e.plan_id),
                e.step_index,
                e.step_id,
                e.receipt.outcome
            ),
            Event::PlanApplied(e) => format!(
                "plan {} applied: {} -> {} ({} statements)",
                short(&e.plan_id),
                short(&e.before_hash.0),
                short(&e.after_hash.0),
                e.receipt.steps.len()
            ),
            Event::ApplyFailed(e) => {
                format!("plan {} failed: {}", short(&e.plan_id), e.error)
            }
            Event::SqlApplied(e) => format!(
                "sql {}: {}",
                if e.receipt.succeeded() {
                    "applied"
                } else {
                    "failed"
                },
                one_line(&e.receipt.input, 60)
            ),
            Event::ContextSet(e) => format!(
                "context role={} user_id={} tenant_id={}",
                e.role.as_deref().unwrap_or("-"),
                e.user_id.as_deref().unwrap_or("-"),
                e.tenant_id.as_deref().unwrap_or("-")
            ),
            Event::DriftDetected(e) => format!(
                "drift: expected {}, live {}",
                short(&e.expected_hash.0),
                short(&e.live_hash.0)
            ),
            Event::OnlineMigrated(e) => match &e.error {
                None => format!("online migration {} of {}: {}", e.version, e.table, e.phase),
                Some(error) => format!(
                    "online migration {} of {}: failed: {}",
                    e.version,
                    e.table,
                    one_line(error, 60)
                ),
            },
        }
    }
}

fn plan_line(plan: &PlanSummary) -> String {
    let hazards = if plan.hazards.is_empty() {
        String::new()
    } else {
        format!(", hazards {}", plan.hazards.join(","))
    };
    format!(
        "plan {}: {} -> {}, {} steps{hazards}",
        short(&plan.plan_id),
        short(&plan.base_hash.0),
        short(&plan.target_hash.0),
        plan.step_count
    )
}

/// A hash (or plan id) shortened for display: its first 12 characters after any `sha3-256:`
/// prefix.
pub fn short(hash: &str) -> String {
    let digits = hash.strip_prefix(HASH_PREFIX).unwrap_or(hash);
    digits.chars().take(12).collect()
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// The stored form of an event: its format version and the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The event format version ([`EVENT_FORMAT_VERSION`] when written by this build).
    pub version: u16,
    /// The event.
    pub event: Event,
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    version: u16,
    event: &'a Event,
}

/// Only the version, read first so an unknown version is reported as such.
#[derive(Deserialize)]
struct VersionOnly {
    version: u16,
}

/// Why a payload is not an event this build can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The payload was written by a newer (or unknown) event format.
    #[error(
        "event format version {found} is not supported (this build reads version \
         {EVENT_FORMAT_VERSION}); upgrade lockplane to read this ledger"
    )]
    UnsupportedVersion {
        /// The version the payload declares.
        found: u16,
    },
    /// The payload is not a valid event envelope.
    #[error("event payload is malformed: {0}")]
    Malformed(String),
    /// The record's kind doesn't name the event its payload holds.
    #[error("record kind `{record}` does not match its payload, a `{payload}` event")]
    KindMismatch {
        /// The record's kind.
        record: String,
        /// The payload's event kind.
        payload: &'static str,
    },
    /// The record's stream is not the database its event concerns.
    #[error("record stream `{record}` does not match its event's database `{payload}`")]
    StreamMismatch {
        /// The record's stream.
        record: String,
        /// The event's database.
        payload: String,
    },
}

/// Encodes `event` in the stored form (see the [module docs](self)): deterministic bytes for
/// the ledger record's payload.
pub fn encode(event: &Event) -> Vec<u8> {
    let envelope = EnvelopeRef {
        version: EVENT_FORMAT_VERSION,
        event,
    };
    // Strings, integers, options, vectors and sized maps into a Vec: rmp-serde can't fail on
    // these (no unknown lengths, no custom errors, shallow nesting). An empty payload would
    // fail to decode loudly rather than pass for an event.
    rmp_serde::to_vec_named(&envelope).unwrap_or_default()
}

/// Decodes a payload written by [`encode`] (of any supported version).
pub fn decode(bytes: &[u8]) -> Result<Event, EventError> {
    let version = rmp_serde::from_slice::<VersionOnly>(bytes)
        .map_err(|e| EventError::Malformed(e.to_string()))?
        .version;
    if version != EVENT_FORMAT_VERSION {
        return Err(EventError::UnsupportedVersion { found: version });
    }
    let envelope: EventEnvelope =
        rmp_serde::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
    Ok(envelope.event)
}

/// Decodes a ledger record's payload and checks it against the record's `kind` and `stream`.
pub fn decode_record_payload(
    kind: &str,
    stream: &str,
    payload: &[u8],
) -> Result<Event, EventError> {
    let event = decode(payload)?;
    if event.kind() != kind {
        return Err(EventError::KindMismatch {
            record: kind.to_owned(),
            payload: event.kind(),
        });
    }
    if event.database() != stream {
        return Err(EventError::StreamMismatch {
            record: stream.to_owned(),
            payload: event.database().to_owned(),
        });
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> CatalogHash {
        CatalogHash(format!("{HASH_PREFIX}{}", hex::encode([n; 32])))
    }

    fn receipt() -> Receipt {
        let steps = vec![
            StepReceipt {
                sql: "ALTER TABLE t ADD COLUMN c int".into(),
                started_at: 1_700_000_000_000_000,
                duration_ms: 3,
                rows: None,
                outcome: StepOutcome::Ok,
            },
            StepReceipt {
                sql: "CREATE INDEX CONCURRENTLY i ON t (c)".into(),
                started_at: 1_700_000_000_004_000,
                duration_ms: 5000,
                rows: Some(0),
                outcome: StepOutcome::TimedOut { after_ms: 5000 },
            },
            StepReceipt {
                sql: "UPDATE t SET c = 1".into(),
                started_at: 1_700_000_000_009_000,
                duration_ms: 1,
                rows: Some(12),
                outcome: StepOutcome::Error {
                    sqlstate: Some("23505".into()),
                    message: "duplicate key".into(),
                },
            },
            StepReceipt {
                sql: "ANALYZE t".into(),
                started_at: 1_700_000_000_010_000,
                duration_ms: 0,
                rows: None,
                outcome: StepOutcome::Skipped,
            },
        ];
        let timing = Timing {
            started_at: 1_700_000_000_000_000,
            finished_at: 1_700_000_000_010_000,
            duration_ms: 10,
        };
        Receipt::seal("plan-1", steps, timing).unwrap_or_else(|e| panic!("{e}"))
    }

    fn plan(id: &str) -> PlanSummary {
        PlanSummary {
            plan_id: id.into(),
            base_hash: h(1),
            target_hash: h(2),
            body: BlobRef::of(id.as_bytes()),
            step_count: 2,
            hazards: vec!["data_loss".into()],
            requires_confirmation: true,
            base_manifest: None,
            target_manifest: None,
            renames: Default::default(),
        }
    }

    /// One event of every kind, in [`EVENT_KINDS`] order.
    fn all_events() -> Vec<Event> {
        let (actor, database) = ("agent:a".to_string(), "db1".to_string());
        vec![
            Event::CatalogIntrospected(CatalogIntrospected {
                actor: actor.clone(),
                database: database.clone(),
                catalog_hash: h(1),
                manifest: BlobRef::of(b"{}"),
                schemas: vec!["public".into()],
                server_version: Some("15.6".into()),
            }),
            Event::PlanProposed(PlanProposed {
                actor: actor.clone(),
                database: database.clone(),
                plan: plan("p1"),
            }),
            Event::PlansMerged(PlansMerged {
                actor: actor.clone(),
                database: database.clone(),
                sources: vec!["p1".into(), "p2".into()],
                merged: plan("p3"),
            }),
            Event::PlanConfirmed(PlanConfirmed {
                actor: "user:ann".into(),
                database: database.clone(),
                plan_id: "p3".into(),
                hazards_acknowledged: vec!["data_loss".into()],
            }),
            Event::ApplyStarted(ApplyStarted {
                actor: actor.clone(),
                database: database.clone(),
                plan_id: "p3".into(),
                base_hash: h(1),
                approval: Some(Approval {
                    seq: 4,
                    by: "user:ann".into(),
                }),
            }),
            Event::StepApplied(StepApplied {
                actor: actor.clone(),
                database: database.clone(),
                plan_id: "p3".into(),
                step_index: 1,
                step_id: "s2".into(),
                receipt: receipt().steps[1].clone(),
                catalog_hash: Some(h(7)),
            }),
            Event::PlanApplied(PlanApplied {
                actor: actor.clone(),
                database: database.clone(),
                plan_id: "p3".into(),
                started_seq: 5,
                before_hash: h(1),
                after_hash: h(2),
                approval: None,
                receipt: receipt(),
                recovered: false,
            }),
            Event::ApplyFailed(ApplyFailed {
                actor: actor.clone(),
                database: database.clone(),
                plan_id: "p3".into(),
                started_seq: 5,
                before_hash: h(1),
                after_hash: None,
                error: "lock timeout".into(),
                receipt: receipt(),
                interrupted: false,
            }),
            Event::SqlApplied(SqlApplied {
                actor: actor.clone(),
                database: database.clone(),
                before_hash: Some(h(2)),
                after_hash: None,
                receipt: receipt(),
            }),
            Event::ContextSet(ContextSet {
                actor: actor.clone(),
                database: database.clone(),
                role: Some("lp_runtime_read".into()),
                user_id: None,
                tenant_id: Some("t-1".into()),
            }),
            Event::DriftDetected(DriftDetected {
                actor: actor.clone(),
                database: database.clone(),
                expected_hash: h(2),
                live_hash: h(9),
                manifest: Some(BlobRef::of(b"live")),
            }),
            Event::OnlineMigrated(OnlineMigrated {
                actor,
                database,
                version: "v2".into(),
                table: "public.orders".into(),
                phase: "backfilled".into(),
                migration: "{\"version\":\"v2\",\"changes\":[]}".into(),
                before_hash: Some(h(9)),
                after_hash: Some(h(10)),
                rows_filled: Some(200_000),
                error: None,
            }),
        ]
    }

    #[test]
    fn every_event_round_trips_and_encodes_deterministically() {
        let events = all_events();
        let kinds: Vec<&str> = events.iter().map(Event::kind).collect();
        assert_eq!(kinds, EVENT_KINDS, "one sample per kind, in order");
        for event in events {
            let bytes = encode(&event);
            assert!(!bytes.is_empty());
            assert_eq!(decode(&bytes), Ok(event.clone()), "{}", event.kind());
            assert_eq!(
                encode(&event.clone()),
                bytes,
                "{} deterministic",
                event.kind()
            );
            assert_eq!(
                decode_record_payload(event.kind(), event.database(), &bytes),
                Ok(event.clone())
            );
            // The body JSON holds the fields, and the kind is not one of them.
            let body = event.body_json();
            assert_eq!(body["actor"], event.actor());
            assert!(!event.summary().is_empty());
        }
    }

    #[test]
    fn the_envelope_is_a_named_map_with_the_version_first() {
        let bytes = encode(&all_events()[9]);
        // fixmap of 2, "version" (fixstr 7), 1
        assert_eq!(&bytes[..10], b"\x82\xa7version\x01");
        assert_eq!(&bytes[10..16], b"\xa5event");
    }

    #[test]
    fn unknown_versions_and_garbage_are_clear_errors() {
        let event = all_events().remove(3);
        let future = rmp_serde::to_vec_named(&EventEnvelope {
            version: 2,
            event: event.clone(),
        })
        .unwrap_or_default();
        let err = decode(&future);
        assert_eq!(err, Err(EventError::UnsupportedVersion { found: 2 }));
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("version 2"), "{message}");

        // A future version with a shape this build can't parse is still reported by version.
        #[derive(Serialize)]
        struct Future {
            version: u16,
            event: Vec<u32>,
            extra: bool,
        }
        let future = rmp_serde::to_vec_named(&Future {
            version: 9,
            event: vec![1, 2],
            extra: true,
        })
        .unwrap_or_default();
        assert_eq!(
            decode(&future),
            Err(EventError::UnsupportedVersion { found: 9 })
        );

        assert!(matches!(decode(b"junk"), Err(EventError::Malformed(_))));
        assert!(matches!(decode(&[]), Err(EventError::Malformed(_))));
        let mut truncated = encode(&event);
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(decode(&truncated), Err(EventError::Malformed(_))));
    }

    #[test]
    fn record_kind_and_stream_must_match_the_payload() {
        let event = all_events().remove(0);
        let bytes = encode(&event);
        assert!(matches!(
            decode_record_payload("PlanApplied", "db1", &bytes),
            Err(EventError::KindMismatch { .. })
        ));
        assert!(matches!(
            decode_record_payload("CatalogIntrospected", "db2", &bytes),
            Err(EventError::StreamMismatch { .. })
        ));
    }

    #[test]
    fn receipts_hash_their_content() {
        let r = receipt();
        assert!(r.hash.starts_with(HASH_PREFIX));
        assert!(r.hash_matches());
        assert!(!r.succeeded());
        let mut changed = r.clone();
        changed.steps[0].duration_ms += 1;
        assert!(!changed.hash_matches());
    }

    #[test]
    fn blob_refs_name_the_blobs() {
        let events = all_events();
        assert_eq!(events[0].blob_refs(), vec![&BlobRef::of(b"{}")]);
        assert_eq!(events[3].blob_refs(), Vec::<&BlobRef>::new());
        assert_eq!(events[10].blob_refs().len(), 1);
        assert_eq!(
            BlobRef::of(b"abc").as_str(),
            "sha3-256:3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
        );
    }

    #[test]
    fn database_ids_leave_out_credentials() {
        let config: tokio_postgres::Config = "postgres://me:secret@db.example:6543/app"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(database_id(&config), "db.example:6543/app");
    }
}
