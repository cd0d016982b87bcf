//! The executor: applies a [`Plan`] to a live database, safely (DESIGN §4).
//!
//! [`apply`] does, in order:
//!
//! 1. refuses a plan whose id does not match its content, and a plan that needs a
//!    confirmation unless the caller passes exactly its `plan_id`;
//! 2. takes a session-level advisory lock derived from the database's name, so two applies
//!    against one database never interleave (waiting up to [`ApplyOptions::lock_wait`], then
//!    naming the session that holds it);
//! 3. introspects and refuses when the live hash is not the plan's `base_hash` (or, when
//!    resuming, the hash recorded after the step it resumes after);
//! 4. runs the plan's phases in plan order: every non-transactional step alone (in
//!    autocommit, with a timeout and bounded retries), and the transactional steps together in
//!    one transaction with `SET LOCAL lock_timeout` and `statement_timeout`, rolled back
//!    whole on any error;
//! 5. introspects again and verifies the result is the plan's `target_hash`;
//! 6. releases the advisory lock, whatever happened.
//!
//! # Timeouts are enforced on the server
//!
//! Every statement carries a server-side `statement_timeout`, and a client-side timer a little
//! longer as a backstop (a server that stops answering, a setting overridden by a role). When
//! the client timer fires the statement is cancelled on the server with the connection's
//! cancel token ([`run_with_timeout`]): dropping the future alone would leave the backend
//! running the statement, still holding its locks. The cancel request is sent without TLS,
//! like every connection the engine makes ([`crate::connect`]).
//!
//! # Resuming (the contract with the ledger)
//!
//! After each *phase* commits — the transaction as a whole, or one non-transactional step —
//! the executor introspects and calls [`ApplyOptions::progress`] with a [`StepProgress`]
//! carrying the id of the phase's last step and the live hash after it. The caller records
//! that (a `StepApplied` event). If the apply is interrupted, a later call with
//! [`ApplyOptions::resume_after`] set to that step id *and* that hash skips every step up to
//! and including it, but only when the live hash still equals the recorded one: anything
//! else (someone changed the schema meanwhile) is refused as [`ApplyError::Stale`]. A
//! resume point inside the transaction (not its last step) is refused: a transaction either
//! committed whole or not at all.
//!
//! The sink is called after the phase committed. If it fails, the apply stops with
//! [`ApplyError::ProgressRejected`], which carries the step id and hash to record before
//! resuming. A non-transactional step placed before the transaction (`ALTER TYPE … ADD
//! VALUE` whose label the transaction uses) stays applied when the transaction then fails:
//! [`ApplyError::StepFailed`] gives the live hash, which is the one reported for that step.
//!
//! # Failures
//!
//! A refusal ([`ApplyError::is_refusal`]) happens before any plan statement runs. A failed
//! statement is reported with its step, SQL, SQLSTATE, message, detail, hint and position
//! ([`PgFailure`]). Only transient failures (lock timeout, deadlock, serialization failure,
//! timeout) of non-transactional steps are retried; an error in the SQL or the data is not.
//!
//! # Receipts
//!
//! [`ApplyReport::receipts`] holds one [`Receipt`] per phase, in execution order. Each holds
//! one [`StepReceipt`] per statement of the plan that was sent (retries and the clean-up of an
//! invalid index left by a failed concurrent build appear as extra entries; when the
//! transaction fails, its later steps are listed as skipped). The session settings and
//! `BEGIN`/`COMMIT` are not listed: they are the same for every apply.
//! [`ApplyReport::receipt`] and [`combine_receipts`] fold the phases into the one receipt the
//! ledger's `PlanApplied`/`ApplyFailed` hold; [`StepProgress::step_applied`] builds the
//! `StepApplied` event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::{ErrorPosition, SqlState};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::catalog::Catalog;
use crate::events::{Receipt, StepApplied, StepOutcome, StepReceipt, Timing};
use crate::hash::{catalog_hash, CanonicalError, CatalogHash};
use crate::ident::{qualified, quote_ident, quote_literal};
use crate::introspect::{introspect, IntrospectError, IntrospectOptions};
use crate::plan::{Hazard, Plan, Step};

/// How [`apply`] runs a plan.
#[derive(Clone)]
pub struct ApplyOptions {
    /// `lock_timeout` for every statement: how long a statement may wait for a table lock
    /// held by another session before it fails (instead of queueing every later reader).
    pub lock_timeout: Duration,
    /// `statement_timeout` for each statement of the transaction.
    pub statement_timeout: Duration,
    /// `statement_timeout` for each non-transactional step (index builds and validations
    /// legitimately take longer than the transaction's statements).
    pub step_timeout: Duration,
    /// How many times a non-transactional step that failed for another transient reason
    /// (cancellation, timeout, serialization failure) is tried again; `0` tries once.
    pub retries: u32,
    /// How many times a phase (the transaction, rolled back whole, or a step run alone) whose
    /// statement could not get its lock within `lock_timeout` (or was chosen as a deadlock
    /// victim) is tried again; `0` tries once. Each wait is reported with who blocked it
    /// ([`ProgressSink::lock_waited`]).
    pub lock_retries: u32,
    /// Pause before the first retry; doubled before each next one (at most
    /// [`MAX_RETRY_DELAY`]), each pause drawn between half and all of that so that several
    /// waiting appliers do not retry in step.
    pub retry_delay: Duration,
    /// How long to wait for the per-database advisory lock held by another apply.
    pub lock_wait: Duration,
    /// Take the per-database advisory lock (switch off only for a private shadow database).
    pub advisory_lock: bool,
    /// Check the live hash against `base_hash` before and `target_hash` after. Only a shadow
    /// that cannot reproduce objects Lockplane does not manage switches this off.
    pub check_hashes: bool,
    /// Resume an interrupted apply after a step already done (see the module docs).
    pub resume_after: Option<ResumePoint>,
    /// The plan's base catalog, when the caller has it: a stale refusal then lists what
    /// differs instead of only the two hashes.
    pub base_catalog: Option<Catalog>,
    /// The plan's target catalog, when the caller has it: a target mismatch then lists what
    /// differs.
    pub target_catalog: Option<Catalog>,
    /// Told after each phase commits (see the module docs).
    pub progress: Option<Arc<dyn ProgressSink>>,
    /// Set (by an interrupt handler) to stop the apply: no further statement starts, a
    /// transaction in progress rolls back, a failed step is not retried. The caller also
    /// cancels the running statement on the server (`Client::cancel_token`).
    pub stop: Option<Arc<AtomicBool>>,
}

/// The default `lock_timeout`: short, because every query on the table queues behind a
/// statement waiting for its lock (pgroll waits 500 ms, Reshape 1 s); a phase that could not
/// get its locks is rolled back and tried again after a pause instead.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_millis(500);

/// The default [`ApplyOptions::lock_retries`].
pub const DEFAULT_LOCK_RETRIES: u32 = 10;

/// The longest pause between two tries.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(8);

/// The pause before try `attempt + 1` (after `attempt` failed, from 1): `base` doubled per
/// earlier attempt, at most [`MAX_RETRY_DELAY`], then drawn between half and all of it.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let full = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_RETRY_DELAY);
    // Jitter needs no strong randomness: the clock's nanoseconds and the process do.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = (u64::from(nanos) ^ (u64::from(std::process::id()) << 20))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        >> 40;
    let fraction = 0.5 + 0.5 * (mixed as f64 / (1u64 << 24) as f64);
    full.mul_f64(fraction.min(1.0))
}

impl ApplyOptions {
    fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            statement_timeout: Duration::from_secs(60),
            step_timeout: Duration::from_secs(3600),
            retries: 2,
            lock_retries: DEFAULT_LOCK_RETRIES,
            retry_delay: Duration::from_millis(250),
            lock_wait: Duration::from_secs(30),
            advisory_lock: true,
            check_hashes: true,
            resume_after: None,
            base_catalog: None,
            target_catalog: None,
            progress: None,
            stop: None,
        }
    }
}

impl std::fmt::Debug for ApplyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyOptions")
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("step_timeout", &self.step_timeout)
            .field("retries", &self.retries)
            .field("lock_retries", &self.lock_retries)
            .field("retry_delay", &self.retry_delay)
            .field("lock_wait", &self.lock_wait)
            .field("advisory_lock", &self.advisory_lock)
            .field("check_hashes", &self.check_hashes)
            .field("resume_after", &self.resume_after)
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

/// Where to resume: a step reported by [`ProgressSink::step_applied`] and the hash reported
/// with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The id of the last step already applied.
    pub step_id: String,
    /// The live catalog hash recorded right after it.
    pub catalog_hash: CatalogHash,
}

/// One committed phase: the transaction, or one non-transactional step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepProgress {
    /// The plan.
    pub plan_id: String,
    /// Position (from 0) of the phase's last step in the plan.
    pub step_index: u32,
    /// Id of the phase's last step: what [`ResumePoint::step_id`] takes.
    pub step_id: String,
    /// Ids of every step the phase committed (one for a non-transactional step).
    pub steps: Vec<String>,
    /// Whether the phase was the transaction.
    pub transactional: bool,
    /// What ran in the phase.
    pub receipts: Vec<StepReceipt>,
    /// The live catalog hash after the phase: what [`ResumePoint::catalog_hash`] takes.
    pub catalog_hash: CatalogHash,
}

/// Receives [`StepProgress`] after each committed phase, typically to record it in the
/// ledger. Returning an error stops the apply before its next phase (what is not recorded
/// cannot be resumed from).
pub trait ProgressSink: Send + Sync {
    /// A phase committed.
    fn step_applied(&self, progress: &StepProgress) -> Result<(), String>;

    /// Told each time a phase could not get a lock and is about to be tried again: which
    /// step waited, who held the lock, and the pause before the next try.
    fn lock_waited(&self, _wait: &LockWait) {}
}

impl<F> ProgressSink for F
where
    F: Fn(&StepProgress) -> Result<(), String> + Send + Sync,
{
    fn step_applied(&self, progress: &StepProgress) -> Result<(), String> {
        self(progress)
    }
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The live catalog hash after the apply (the plan's target, verified).
    pub resulting_hash: CatalogHash,
    /// One receipt per phase, in execution order (see the module docs).
    pub receipts: Vec<Receipt>,
}

impl ApplyReport {
    /// Every statement receipt of every phase, in execution order.
    pub fn step_receipts(&self) -> impl Iterator<Item = &StepReceipt> {
        self.receipts.iter().flat_map(|r| r.steps.iter())
    }

    /// The whole apply as one receipt (what `PlanApplied` records), see [`combine_receipts`].
    pub fn receipt(&self, plan_id: &str) -> Result<Receipt, CanonicalError> {
        combine_receipts(plan_id, &self.receipts)
    }
}

/// One receipt for several phases: their statements in order, timed from the first start to
/// the last finish. For the ledger's `PlanApplied`/`ApplyFailed`, which hold one receipt.
pub fn combine_receipts(input: &str, receipts: &[Receipt]) -> Result<Receipt, CanonicalError> {
    let steps = receipts.iter().flat_map(|r| r.steps.clone()).collect();
    let started_at = receipts
        .iter()
        .map(|r| r.timing.started_at)
        .min()
        .unwrap_or_else(crate::events::now_micros);
    let finished_at = receipts
        .iter()
        .map(|r| r.timing.finished_at)
        .max()
        .unwrap_or(started_at);
    let duration_ms = u64::try_from((finished_at - started_at).max(0) / 1000).unwrap_or(0);
    Receipt::seal(
        input,
        steps,
        Timing {
            started_at,
            finished_at,
            duration_ms,
        },
    )
}

impl StepProgress {
    /// The ledger event for this phase: its last statement's receipt (the one that
    /// succeeded) and the live hash after it.
    pub fn step_applied(&self, actor: &str, database: &str) -> Option<StepApplied> {
        Some(StepApplied {
            actor: actor.to_owned(),
            database: database.to_owned(),
            plan_id: self.plan_id.clone(),
            step_index: self.step_index,
            step_id: self.step_id.clone(),
            receipt: self.receipts.last()?.clone(),
            catalog_hash: Some(self.catalog_hash.clone()),
        })
    }
}

/// A statement's failure as Postgres reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgFailure {
    /// The SQLSTATE code (`23505`), when the server gave one.
    pub sqlstate: Option<String>,
    /// The server's message (or the client's, when the connection failed).
    pub message: String,
    /// `DETAIL`, when given.
    pub detail: Option<String>,
    /// `HINT`, when given.
    pub hint: Option<String>,
    /// 1-based character position of the error in the statement, when given.
    pub position: Option<u32>,
    /// Whether the statement was stopped by a timeout (and cancelled on the server).
    pub timed_out: bool,
}

impl PgFailure {
    /// A `tokio_postgres` error as a failure: the server's fields when it is a database
    /// error, else the client's message.
    pub fn from_error(e: &tokio_postgres::Error) -> PgFailure {
        match e.as_db_error() {
            Some(db) => PgFailure {
                sqlstate: Some(db.code().code().to_owned()),
                message: db.message().to_owned(),
                detail: db.detail().map(str::to_owned),
                hint: db.hint().map(str::to_owned),
                position: db.position().map(|p| match p {
                    ErrorPosition::Original(n) => *n,
                    ErrorPosition::Internal { position, .. } => *position,
                }),
                timed_out: db.code() == &SqlState::QUERY_CANCELED,
            },
            None => PgFailure {
                sqlstate: None,
                message: crate::connect::describe_error(e),
                detail: None,
                hint: None,
                position: None,
                timed_out: false,
            },
        }
    }

    fn timed_out(after: Duration) -> PgFailure {
        PgFailure {
            sqlstate: Some(SqlState::QUERY_CANCELED.code().to_owned()),
            message: format!(
                "no answer within {} ms; the statement was cancelled on the server",
                after.as_millis()
            ),
            detail: None,
            hint: None,
            position: None,
            timed_out: true,
        }
    }

    /// Whether trying the same statement again may succeed (lock and deadlock failures,
    /// timeouts, serialization failures), as opposed to an error in the SQL or the data.
    pub fn is_transient(&self) -> bool {
        self.timed_out
            || matches!(
                self.sqlstate.as_deref(),
                Some("55P03" | "57014" | "40P01" | "40001")
            )
    }

    /// Whether the statement gave up waiting for a lock (`lock_timeout`) or was chosen as a
    /// deadlock victim: trying again later, once the other session is done, may succeed.
    pub fn is_lock_failure(&self) -> bool {
        matches!(self.sqlstate.as_deref(), Some("55P03" | "40P01"))
    }

    /// One line: `ERROR 23505: message (DETAIL …) at character N`.
    pub fn describe(&self, sql: &str) -> String {
        let mut s = match &self.sqlstate {
            Some(code) => format!("{code}: {}", self.message),
            None => self.message.clone(),
        };
        if let Some(d) = &self.detail {
            s.push_str(&format!(" (detail: {d})"));
        }
        if let Some(h) = &self.hint {
            s.push_str(&format!(" (hint: {h})"));
        }
        if let Some(p) = self.position {
            s.push_str(&format!(" at character {p}: {}", near(sql, p)));
        }
        s
    }

    fn outcome(&self, timeout: Duration) -> StepOutcome {
        if self.timed_out {
            StepOutcome::TimedOut {
                after_ms: millis(timeout),
            }
        } else {
            StepOutcome::Error {
                sqlstate: self.sqlstate.clone(),
                message: self.message.clone(),
            }
        }
    }
}

/// The text around 1-based character `position` of `sql`, marked with `⟨here⟩`.
fn near(sql: &str, position: u32) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let at = (position as usize).saturating_sub(1).min(chars.len());
    let start = at.saturating_sub(30);
    let end = (at + 30).min(chars.len());
    let before: String = chars[start..at].iter().collect();
    let after: String = chars[at..end].iter().collect();
    format!("…{before}⟨here⟩{after}…")
}

/// Who holds the advisory lock an apply waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// Backend pid.
    pub pid: i32,
    /// `application_name` of the holding session.
    pub application_name: String,
    /// The role it is connected as.
    pub usename: String,
    /// When its current transaction or statement started, as text, when known.
    pub since: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} (application_name '{}', user '{}'",
            self.pid, self.application_name, self.usename
        )?;
        if let Some(since) = &self.since {
            write!(f, ", connected since {since}")?;
        }
        f.write_str(")")
    }
}

fn holders_text(holders: &[LockHolder]) -> String {
    listed(
        holders,
        "an unknown session (it may have just ended: try again)",
        ", ",
    )
}

/// `items` shown and joined with `separator`, or `none` when there are none.
fn listed<T: std::fmt::Display>(items: &[T], none: &str, separator: &str) -> String {
    if items.is_empty() {
        none.into()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(separator)
    }
}

/// A session holding a lock on a table a step needed, read after the step gave up waiting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Blocker {
    /// Backend pid (`SELECT pg_terminate_backend(pid)` ends it).
    pub pid: i32,
    /// Its `application_name`.
    pub application_name: String,
    /// The role it is connected as.
    pub usename: String,
    /// `active`, `idle in transaction`, …
    pub state: String,
    /// When its transaction started, when it is in one.
    pub xact_start: Option<String>,
    /// The table it holds a lock on.
    pub relation: String,
    /// The lock mode (`AccessShareLock`, …).
    pub mode: String,
    /// Its current (or, when idle, last) statement, shortened.
    pub query: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} (application_name '{}', user '{}', {}",
            self.pid, self.application_name, self.usename, self.state
        )?;
        if let Some(since) = &self.xact_start {
            write!(f, ", in a transaction since {since}")?;
        }
        write!(f, ", holding {} on {}", self.mode, self.relation)?;
        if !self.query.is_empty() {
            write!(f, ", statement: {}", self.query)?;
        }
        f.write_str(")")
    }
}

/// How often a failed phase was tried, and who blocked it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tries {
    /// How many times the phase was tried.
    pub attempts: u32,
    /// For a lock failure, who held the lock after the last try (empty otherwise).
    pub blockers: Vec<Blocker>,
}

/// A phase that could not get its lock, about to be tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockWait {
    /// The step that gave up waiting.
    pub step_id: String,
    /// Which try failed, from 1.
    pub attempt: u32,
    /// How many tries there are in all.
    pub attempts: u32,
    /// What Postgres said.
    pub failure: PgFailure,
    /// Who held the lock (empty when they were gone by the time they were looked up).
    pub blockers: Vec<Blocker>,
    /// The pause before the next try.
    pub retry_in: Duration,
}

/// The sessions holding locks on the tables `sql` names, other than this one.
pub async fn blockers_of(client: &Client, sql: &str) -> Vec<Blocker> {
    let tables = tables_of(sql);
    if tables.is_empty() {
        return Vec::new();
    }
    let rows = client
        .query(
            "SELECT DISTINCT ON (a.pid, l.relation, l.mode) a.pid, \
                    coalesce(a.application_name, ''), coalesce(a.usename::text, ''), \
                    coalesce(a.state, ''), a.xact_start::text, l.relation::regclass::text, \
                    l.mode, pg_catalog.left(coalesce(a.query, ''), 120) \
             FROM pg_catalog.pg_locks l \
             JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
             WHERE l.granted AND l.locktype = 'relation' \
               AND l.pid <> pg_catalog.pg_backend_pid() \
               AND l.relation IN (SELECT pg_catalog.to_regclass(n) \
                                  FROM pg_catalog.unnest($1::text[]) AS n) \
             ORDER BY a.pid, l.relation, l.mode",
            &[&tables],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| Blocker {
            pid: r.get(0),
            application_name: r.get(1),
            usename: r.get(2),
            state: r.get(3),
            xact_start: r.get(4),
            relation: r.get(5),
            mode: r.get(6),
            query: r
                .get::<_, String>(7)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect()
}

/// Every table `sql` names, quoted for `to_regclass` (`"public"."t"`).
fn tables_of(sql: &str) -> Vec<String> {
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return Vec::new();
    };
    let mut out: Vec<String> = parsed
        .protobuf
        .nodes()
        .into_iter()
        .filter_map(|(node, ..)| match node {
            pg_query::NodeRef::RangeVar(rv) if rv.schemaname.is_empty() => {
                Some(quote_ident(&rv.relname))
            }
            pg_query::NodeRef::RangeVar(rv) => Some(format!(
                "{}.{}",
                quote_ident(&rv.schemaname),
                quote_ident(&rv.relname)
            )),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The sessions that blocked a step, for a message: each with what it holds and does.
pub fn blockers_text(blockers: &[Blocker]) -> String {
    listed(
        blockers,
        "a session that had let go by the time it was looked up",
        "; ",
    )
}

/// Why [`apply`] refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The plan's id does not match its content: it was edited after it was made.
    #[error(
        "plan {stated} was modified: its content hashes to {computed}; make a new plan instead \
         of editing one"
    )]
    PlanTampered {
        /// The id the plan claims.
        stated: String,
        /// The id its content hashes to.
        computed: String,
    },
    /// The plan needs an explicit confirmation of its id and none was given.
    #[error(
        "plan {plan_id} needs confirmation because of: {}; review them and apply again with \
         the confirmation {plan_id}",
        hazards.iter().map(|h| format!("{:?} on {} ({})", h.kind, h.object, h.detail)).collect::<Vec<_>>().join("; ")
    )]
    ConfirmationRequired {
        /// The id to confirm.
        plan_id: String,
        /// The hazards that need the confirmation.
        hazards: Vec<Hazard>,
    },
    /// The confirmation names another plan.
    #[error(
        "the confirmation {given} is not this plan's id {expected}: confirm exactly the plan \
         being applied (a plan changes id whenever its content changes)"
    )]
    WrongConfirmation {
        /// The plan's id.
        expected: String,
        /// What was given.
        given: String,
    },
    /// A step's SQL is not what the planner writes (see [`crate::review`]).
    #[error(transparent)]
    Foreign(Box<crate::review::ForeignStep>),
    /// The catalog after a phase is not the one the shadow reached after it. For the
    /// transaction, it was rolled back and the database is at its base; a step run alone
    /// has committed and the database is at `actual`.
    #[error(
        "after step {step_id} the database would be at {actual}, not at {expected} which the \
         proof on the shadow reached{}{}",
        if drifted.is_empty() { String::new() } else { format!(" (differs in: {})", drifted.join(", ")) },
        if *rolled_back { "; the transaction was rolled back and nothing changed: the live \
            database does not behave like its shadow (introspect and plan again)" } else { "; \
            this step ran alone and is committed: the ledger records where the database is" }
    )]
    NotAsProven {
        /// The step ending the phase.
        step_id: Box<str>,
        /// The hash the shadow reached there.
        expected: CatalogHash,
        /// The hash found.
        actual: CatalogHash,
        /// What differs, when the expected catalog is known.
        drifted: Box<[String]>,
        /// True when the transaction was rolled back.
        rolled_back: bool,
        /// What ran.
        receipts: Vec<Receipt>,
    },
    /// Another apply holds the database's advisory lock.
    #[error(
        "another apply is running on this database: the Lockplane lock is held by {}; \
         waited {waited_ms} ms; try again when it has finished",
        holders_text(holders)
    )]
    Busy {
        /// The sessions holding the lock.
        holders: Vec<LockHolder>,
        /// How long this apply waited.
        waited_ms: u64,
    },
    /// The live catalog is not the one the plan was made from.
    #[error(
        "the database changed since the plan was made: live hash {live}, plan base {base}{}; \
         introspect and plan again",
        if drifted.is_empty() { String::new() } else { format!("; differs in: {}", drifted.join(", ")) }
    )]
    Stale {
        /// The hash the plan (or the resume point) expects.
        base: CatalogHash,
        /// The live hash.
        live: CatalogHash,
        /// Top-level objects that differ (empty when the base catalog was not given).
        drifted: Vec<String>,
    },
    /// The resume point is not a point this plan can resume from.
    #[error("cannot resume plan {plan_id} after step {step_id}: {reason}")]
    InvalidResume {
        /// The plan.
        plan_id: String,
        /// The step asked for.
        step_id: String,
        /// Why not.
        reason: String,
    },
    /// A statement failed. For a transactional step the transaction was rolled back and the
    /// database is as it was before the apply.
    #[error("{}", step_failed_message(step_id, sql, failure, *rolled_back, live_hash.as_ref(), tries))]
    StepFailed {
        /// The failing step's id.
        step_id: String,
        /// Its position in the plan, from 0.
        step_index: u32,
        /// Its SQL.
        sql: String,
        /// What Postgres said (boxed: it is large and errors travel by value).
        failure: Box<PgFailure>,
        /// True when the step was in the transaction, which was rolled back.
        rolled_back: bool,
        /// The live catalog hash after the failure, when it could be read.
        live_hash: Option<CatalogHash>,
        /// How many times the phase was tried and, for a lock failure, who held the lock
        /// after the last try.
        tries: Box<Tries>,
        /// What ran, the failing statement included.
        receipts: Vec<Receipt>,
    },
    /// Every step ran but the database is not at the plan's target.
    #[error(
        "the plan ran but the database is at {actual}, not the plan's target {expected}{}; \
         this is a planner bug: introspect and report the two catalogs",
        if drifted.is_empty() { String::new() } else { format!("; differs in: {}", drifted.join(", ")) }
    )]
    TargetMismatch {
        /// The plan's target.
        expected: CatalogHash,
        /// The live hash.
        actual: CatalogHash,
        /// Top-level objects that differ (empty when the target catalog was not given).
        drifted: Vec<String>,
        /// What ran.
        receipts: Vec<Receipt>,
    },
    /// The progress sink refused a phase: the apply stopped before the next one. The phase
    /// itself is committed: record `step_id` with `catalog_hash` and resume after it.
    #[error(
        "recording step {step_id} failed: {message}; the apply stopped after it (the step is \
         applied, live hash {catalog_hash}): record it, then resume after step {step_id}"
    )]
    ProgressRejected {
        /// The phase's last step.
        step_id: String,
        /// The live hash after the phase.
        catalog_hash: CatalogHash,
        /// The sink's error.
        message: String,
    },
    /// The apply was stopped ([`ApplyOptions::stop`]) between phases: the phases before
    /// `next_step` are committed (and were reported), nothing after ran.
    #[error(
        "interrupted before step {next_step}: the phases before it stay applied (live hash \
         {live_hash}), nothing after it ran; resume it (`lockplane apply PLAN.json --resume`) \
         or plan again"
    )]
    Interrupted {
        /// The first step that did not run.
        next_step: String,
        /// The live hash when the apply stopped.
        live_hash: CatalogHash,
        /// What ran before.
        receipts: Vec<Receipt>,
    },
    /// Reading the catalog failed.
    #[error(transparent)]
    Introspect(#[from] IntrospectError),
    /// Hashing a catalog or receipt failed.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// A statement of the executor itself (locking, settings) failed.
    #[error("{what} failed: {}", crate::connect::describe_error(.source))]
    Session {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: tokio_postgres::Error,
    },
}

impl ApplyError {
    /// What ran before the error (empty for a refusal, when nothing ran).
    pub fn receipts(&self) -> &[Receipt] {
        match self {
            ApplyError::StepFailed { receipts, .. }
            | ApplyError::Interrupted { receipts, .. }
            | ApplyError::TargetMismatch { receipts, .. }
            | ApplyError::NotAsProven { receipts, .. } => receipts,
            _ => &[],
        }
    }

    /// True for refusals made before any plan statement ran (confirmation, lock, stale base,
    /// resume point, edited plan): the database was not touched.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ApplyError::PlanTampered { .. }
                | ApplyError::Foreign(_)
                | ApplyError::ConfirmationRequired { .. }
                | ApplyError::WrongConfirmation { .. }
                | ApplyError::Busy { .. }
                | ApplyError::Stale { .. }
                | ApplyError::InvalidResume { .. }
        )
    }
}

fn step_failed_message(
    step_id: &str,
    sql: &str,
    failure: &PgFailure,
    rolled_back: bool,
    live_hash: Option<&CatalogHash>,
    tries: &Tries,
) -> String {
    let (attempts, blockers) = (tries.attempts, &tries.blockers);
    if failure.is_lock_failure() {
        let state = if rolled_back {
            "the transaction was rolled back: the database is as it was before this phase"
                .to_owned()
        } else {
            format!(
                "the phases before it stay applied (live hash {}): resume from the ledger once \
                 the blocker is gone (`lockplane apply PLAN.json --resume`)",
                live_hash.map(|h| h.0.as_str()).unwrap_or("unknown")
            )
        };
        return format!(
            "step {step_id} could not get its lock in {attempts} tr{} ({}): blocked by {}\n  \
             SQL: {sql}\n  {state}; wait for that session to finish, or end it \
             (SELECT pg_terminate_backend(pid)), then apply again; --lock-retries and \
             --lock-timeout-ms wait longer",
            if attempts == 1 { "y" } else { "ies" },
            failure.describe(sql),
            blockers_text(blockers)
        );
    }
    let state = if rolled_back {
        "the transaction was rolled back: nothing of this phase was applied, the database is \
         as it was before this phase"
            .to_owned()
    } else {
        format!(
            "the phases before it stay applied (live hash {}); an invalid index a failed \
             concurrent build could not clean up is dropped first by the next plan; fix the \
             cause, then resume from the ledger (`lockplane apply PLAN.json --resume`, or the \
             MCP tool apply_plan with resume: true), or plan again",
            live_hash.map(|h| h.0.as_str()).unwrap_or("unknown")
        )
    };
    format!(
        "step {step_id} failed{}: {}\n  SQL: {sql}\n  {state}",
        if failure.timed_out {
            " (timed out)"
        } else {
            ""
        },
        failure.describe(sql)
    )
}

/// The failure a statement gets when the apply was stopped before it started.
fn interrupted_failure() -> PgFailure {
    PgFailure {
        sqlstate: Some(SqlState::QUERY_CANCELED.code().to_owned()),
        message: "interrupted: the apply was stopped before this statement".into(),
        detail: None,
        hint: None,
        position: None,
        timed_out: false,
    }
}

fn session(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ApplyError {
    move |source| ApplyError::Session { what, source }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Checks the confirmation rule (DESIGN §4, two-phase confirmation) and the plan's integrity.
pub fn check_confirmation(plan: &Plan, confirmation: Option<&str>) -> Result<(), ApplyError> {
    let computed = plan.computed_id()?;
    if computed != plan.plan_id {
        return Err(ApplyError::PlanTampered {
            stated: plan.plan_id.clone(),
            computed,
        });
    }
    // The flags of a plan file are text like the rest: what the SQL says decides too.
    let review = crate::review::review(plan).map_err(|e| ApplyError::Foreign(Box::new(e)))?;
    if !plan.requires_confirmation && !review.requires_confirmation() {
        return Ok(());
    }
    match confirmation {
        None => Err(ApplyError::ConfirmationRequired {
            plan_id: plan.plan_id.clone(),
            hazards: {
                let mut hazards: Vec<Hazard> = plan
                    .hazards
                    .iter()
                    .filter(|h| h.kind.requires_confirmation())
                    .cloned()
                    .collect();
                if hazards.is_empty() {
                    hazards = review
                        .data_loss
                        .iter()
                        .map(|(step, what)| Hazard {
                            kind: crate::plan::HazardKind::DataLoss,
                            object: format!("step {step}"),
                            detail: what.clone(),
                        })
                        .collect();
                }
                hazards
            },
        }),
        Some(given) if given != plan.plan_id => Err(ApplyError::WrongConfirmation {
            expected: plan.plan_id.clone(),
            given: given.to_owned(),
        }),
        Some(_) => Ok(()),
    }
}

/// Applies `plan` to the database `client` is connected to (see the module docs).
///
/// `confirmation` must be the plan's id when the plan requires confirmation.
#[tracing::instrument(level = "debug", name = "apply", skip_all, fields(plan = %plan.plan_id, steps = plan.steps.len()))]
pub async fn apply(
    client: &mut Client,
    plan: &Plan,
    opts: &ApplyOptions,
    confirmation: Option<&str>,
) -> Result<ApplyReport, ApplyError> {
    apply_and_read(client, plan, opts, confirmation, None)
        .await
        .map(|(report, _)| report)
}

/// [`apply`], also returning the catalog the database ended at (read anyway to check the
/// target). `base_read`: the hash of the database as the caller read it on this connection
/// just before, with nothing run in between (a private shadow database); the executor then
/// does not read it again before the first step.
pub async fn apply_and_read(
    client: &mut Client,
    plan: &Plan,
    opts: &ApplyOptions,
    confirmation: Option<&str>,
    base_read: Option<CatalogHash>,
) -> Result<(ApplyReport, Catalog), ApplyError> {
    check_confirmation(plan, confirmation)?;
    let start = resume_index(plan, opts.resume_after.as_ref())?;
    if !opts.advisory_lock {
        return run_locked(client, plan, opts, start, base_read).await;
    }
    let key = acquire_lock(client, opts.lock_wait).await?;
    let result = run_locked(client, plan, opts, start, base_read).await;
    // Always release; if the connection broke the session is gone and so is the lock.
    let _ = client
        .simple_query(&format!("SELECT pg_catalog.pg_advisory_unlock({key})"))
        .await;
    result
}

/// The index of the first step to run.
fn resume_index(plan: &Plan, resume: Option<&ResumePoint>) -> Result<usize, ApplyError> {
    let Some(resume) = resume else {
        return Ok(0);
    };
    let invalid = |reason: &str| ApplyError::InvalidResume {
        plan_id: plan.plan_id.clone(),
        step_id: resume.step_id.clone(),
        reason: reason.to_owned(),
    };
    let Some(i) = plan.steps.iter().position(|s| s.id == resume.step_id) else {
        return Err(invalid("the plan has no such step"));
    };
    let ends_phase = !plan.steps[i].transactional
        || plan.steps.get(i + 1).is_none_or(|next| !next.transactional);
    if !ends_phase {
        return Err(invalid(
            "it is inside the plan's transaction, which commits whole: resume after its last \
             step, or from the start if it did not commit",
        ));
    }
    Ok(i + 1)
}

/// Takes the connected database's advisory lock (the one every apply holds), polling until
/// `wait` has passed; returns its key for [`release_lock`]. Recovery takes it before reading
/// the catalog, so a dead process's transaction has finished (committed or not) first.
pub async fn acquire_lock(client: &Client, wait: Duration) -> Result<i64, ApplyError> {
    let key: i64 = client
        .query_one(
            "SELECT pg_catalog.hashtext('lockplane:' || pg_catalog.current_database())::int8",
            &[],
        )
        .await
        .map_err(session("computing the advisory lock key"))?
        .get(0);
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let got: bool = client
            .query_one("SELECT pg_catalog.pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(session("taking the advisory lock"))?
            .get(0);
        if got {
            return Ok(key);
        }
        let waited = started.elapsed();
        if waited >= wait {
            let holders = lock_holders(client, key).await?;
            return Err(ApplyError::Busy {
                holders,
                waited_ms: millis(waited),
            });
        }
        tokio::time::sleep(pause.min(wait.saturating_sub(waited))).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Releases the advisory lock taken by [`acquire_lock`] (a no-op if this session lost it).
pub async fn release_lock(client: &Client, key: i64) {
    let _ = client
        .simple_query(&format!("SELECT pg_catalog.pg_advisory_unlock({key})"))
        .await;
}

async fn lock_holders(client: &Client, key: i64) -> Result<Vec<LockHolder>, ApplyError> {
    // A bigint advisory key is stored split: classid the high 32 bits, objid the low ones,
    // objsubid 1.
    let rows = client
        .query(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''), \
                    a.backend_start::text \
             FROM pg_catalog.pg_locks l \
             JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.database = (SELECT oid FROM pg_catalog.pg_database \
                                 WHERE datname = pg_catalog.current_database()) \
               AND ((l.classid::int8 << 32) | l.objid::int8) = $1 \
               AND l.pid <> pg_catalog.pg_backend_pid()",
            &[&key],
        )
        .await
        .map_err(session("finding the advisory lock's holder"))?;
    Ok(rows
        .iter()
        .map(|r| LockHolder {
            pid: r.get(0),
            application_name: r.get(1),
            usename: r.get(2),
            since: r.get(3),
        })
        .collect())
}

/// Runs `sql` (one statement or several, simple protocol) and cancels it on the server when
/// `timeout` passes without an answer. Returns the last command's row count.
///
/// This is the only way the executor sends plan SQL: a statement abandoned by the client
/// keeps running (and keeps its locks) unless it is cancelled on the server.
pub async fn run_with_timeout(
    client: &Client,
    sql: &str,
    timeout: Duration,
) -> Result<Option<u64>, PgFailure> {
    let token = client.cancel_token();
    match tokio::time::timeout(timeout, client.simple_query(sql)).await {
        Ok(Ok(messages)) => Ok(messages.iter().rev().find_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })),
        Ok(Err(e)) => Err(PgFailure::from_error(&e)),
        Err(_) => {
            // The cancel travels on its own connection; if even that fails, the server-side
            // statement_timeout is the remaining guard.
            crate::connect::cancel_query(&token).await;
            Err(PgFailure::timed_out(timeout))
        }
    }
}

/// The client-side backstop: a little longer than the server's own timeout, so the server
/// normally reports the timeout itself (with its message).
fn backstop(timeout: Duration) -> Duration {
    timeout + Duration::from_secs(2).min(timeout / 2 + Duration::from_millis(200))
}

fn ms_setting(d: Duration) -> String {
    // `0` would mean "no timeout": a sub-millisecond setting is rounded up.
    format!("'{}ms'", millis(d).max(1))
}

/// A statement's receipt, started now.
struct Clock {
    started_at: i64,
    started: Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            started_at: crate::events::now_micros(),
            started: Instant::now(),
        }
    }

    fn receipt(&self, sql: &str, rows: Option<u64>, outcome: StepOutcome) -> StepReceipt {
        StepReceipt {
            sql: sql.to_owned(),
            started_at: self.started_at,
            duration_ms: millis(self.started.elapsed()),
            rows,
            outcome,
        }
    }
}

fn seal(plan: &Plan, steps: Vec<StepReceipt>, clock: &Clock) -> Result<Receipt, ApplyError> {
    let finished_at = crate::events::now_micros();
    Ok(Receipt::seal(
        plan.plan_id.clone(),
        steps,
        Timing {
            started_at: clock.started_at,
            finished_at,
            duration_ms: millis(clock.started.elapsed()),
        },
    )?)
}

async fn live_catalog(client: &mut Client) -> Result<(Catalog, CatalogHash), ApplyError> {
    let catalog = introspect(client, &IntrospectOptions::default()).await?;
    let hash = catalog_hash(&catalog)?;
    Ok((catalog, hash))
}

async fn run_locked(
    client: &mut Client,
    plan: &Plan,
    opts: &ApplyOptions,
    start: usize,
    base_read: Option<CatalogHash>,
) -> Result<(ApplyReport, Catalog), ApplyError> {
    let expected_base = match &opts.resume_after {
        Some(r) => r.catalog_hash.clone(),
        None => plan.base_hash.clone(),
    };
    // Without hash checks nothing needs the catalog before the first step.
    if opts.check_hashes {
        let (live, live_hash) = match base_read {
            Some(hash) => (None, hash),
            None => {
                let (live, hash) = live_catalog(client).await?;
                (Some(live), hash)
            }
        };
        if live_hash != expected_base {
            let drifted = match (&opts.base_catalog, &opts.resume_after, &live) {
                (Some(base), None, Some(live)) => drift(base, live),
                _ => Vec::new(),
            };
            return Err(ApplyError::Stale {
                base: expected_base,
                live: live_hash,
                drifted,
            });
        }
    }

    let mut receipts: Vec<Receipt> = Vec::new();
    // The catalog as read after the last phase, when the progress report read it: the
    // end state then needs no second read.
    let mut last_read: Option<(Catalog, CatalogHash)> = None;
    let mut i = start;
    while i < plan.steps.len() {
        if opts.stopped() {
            let (_, live_hash) = live_catalog(client).await?;
            return Err(ApplyError::Interrupted {
                next_step: plan.steps[i].id.clone(),
                live_hash,
                receipts,
            });
        }
        let phase_start = i;
        last_read = None;
        let progress = if plan.steps[i].transactional {
            let mut end = i;
            while end < plan.steps.len() && plan.steps[end].transactional {
                end += 1;
            }
            let (receipt, checked) =
                run_transaction_retried(client, plan, opts, i, end, &receipts).await?;
            // On a private database (no advisory lock: a shadow) nothing else changes the
            // catalog between that check and COMMIT and the next read: it is the state now.
            if !opts.advisory_lock {
                last_read = checked;
            }
            let steps = receipt.steps.clone();
            receipts.push(receipt);
            i = end;
            (steps, true)
        } else {
            let receipt = run_alone(client, plan, opts, i, &receipts).await?;
            let steps = receipt.steps.clone();
            receipts.push(receipt);
            i += 1;
            (steps, false)
        };
        if let Some(sink) = &opts.progress {
            let (catalog, hash) = live_catalog(client).await?;
            last_read = Some((catalog, hash.clone()));
            let last = &plan.steps[i - 1];
            let report = StepProgress {
                plan_id: plan.plan_id.clone(),
                step_index: u32::try_from(i - 1).unwrap_or(u32::MAX),
                step_id: last.id.clone(),
                steps: plan.steps[phase_start..i]
                    .iter()
                    .map(|s| s.id.clone())
                    .collect(),
                transactional: progress.1,
                receipts: progress.0,
                catalog_hash: hash,
            };
            if let Err(message) = sink.step_applied(&report) {
                return Err(ApplyError::ProgressRejected {
                    step_id: last.id.clone(),
                    catalog_hash: report.catalog_hash,
                    message,
                });
            }
        }
    }

    let (after, resulting_hash) = match last_read {
        Some(read) => read,
        None => live_catalog(client).await?,
    };
    if opts.check_hashes && resulting_hash != plan.target_hash {
        return Err(ApplyError::TargetMismatch {
            expected: plan.target_hash.clone(),
            actual: resulting_hash,
            drifted: opts
                .target_catalog
                .as_ref()
                .map(|t| drift(t, &after))
                .unwrap_or_default(),
            receipts,
        });
    }
    Ok((
        ApplyReport {
            resulting_hash,
            receipts,
        },
        after,
    ))
}

/// One try of a transaction.
enum Attempt {
    /// Committed: its receipt, and the catalog it checked before COMMIT.
    Done(Receipt, Option<(Catalog, CatalogHash)>),
    /// Rolled back because step `step` could not get its lock; to be tried again.
    Blocked {
        step: usize,
        failure: PgFailure,
        steps: Vec<StepReceipt>,
    },
}

/// Runs steps `from..to` in one transaction, tried again (rolled back whole each time) while a
/// statement cannot get its lock, up to [`ApplyOptions::lock_retries`] times.
async fn run_transaction_retried(
    client: &mut Client,
    plan: &Plan,
    opts: &ApplyOptions,
    from: usize,
    to: usize,
    earlier: &[Receipt],
) -> Result<(Receipt, Option<(Catalog, CatalogHash)>), ApplyError> {
    let mut attempt = 1;
    let mut prior = Vec::new();
    loop {
        let tried = run_transaction(client, plan, opts, from, to, earlier, attempt, prior).await?;
        match tried {
            Attempt::Done(receipt, checked) => return Ok((receipt, checked)),
            Attempt::Blocked {
                step,
                failure,
                steps,
            } => {
                prior = steps;
                lock_pause(client, plan, opts, step, attempt, failure).await;
                attempt += 1;
            }
        }
    }
}

/// After try `attempt` of the phase failed on step `step`'s lock: reports who holds the lock
/// and waits before the next try.
async fn lock_pause(
    client: &Client,
    plan: &Plan,
    opts: &ApplyOptions,
    step: usize,
    attempt: u32,
    failure: PgFailure,
) {
    let pause = backoff(opts.retry_delay, attempt);
    let blockers = blockers_of(client, &plan.steps[step].sql).await;
    tracing::info!(
        step = %plan.steps[step].id,
        attempt,
        blockers = %blockers_text(&blockers),
        retry_in_ms = pause.as_millis() as u64,
        "waiting for a lock"
    );
    if let Some(sink) = &opts.progress {
        sink.lock_waited(&LockWait {
            step_id: plan.steps[step].id.clone(),
            attempt,
            attempts: opts.lock_retries.saturating_add(1),
            failure,
            blockers,
            retry_in: pause,
        });
    }
    tokio::time::sleep(pause).await;
}

/// Runs steps `from..to` (all transactional) in one transaction: try `attempt` (from 1), after
/// the receipts of the statements that failed on their lock in the tries before (`prior`).
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(level = "debug", name = "phase", skip_all, fields(from = %plan.steps[from].id, steps = to - from))]
async fn run_transaction(
    client: &mut Client,
    plan: &Plan,
    opts: &ApplyOptions,
    from: usize,
    to: usize,
    earlier: &[Receipt],
    attempt: u32,
    prior: Vec<StepReceipt>,
) -> Result<Attempt, ApplyError> {
    let clock = Clock::start();
    let mut checked_catalog = None;
    client
        .simple_query(&format!(
            "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
            ms_setting(opts.lock_timeout),
            ms_setting(opts.statement_timeout)
        ))
        .await
        .map_err(session("starting the transaction"))?;
    let mut steps = prior;
    for (index, step) in plan.steps.iter().enumerate().take(to).skip(from) {
        let c = Clock::start();
        let ran = if opts.stopped() {
            Err(interrupted_failure())
        } else {
            run_with_timeout(client, &step.sql, backstop(opts.statement_timeout)).await
        };
        match ran {
            Ok(rows) => steps.push(c.receipt(&step.sql, rows, StepOutcome::Ok)),
            Err(failure) => {
                steps.push(c.receipt(&step.sql, None, failure.outcome(opts.statement_timeout)));
                // ROLLBACK also ends a transaction a cancel left aborted. If it fails the
                // connection is gone, and the server rolls back on its own.
                let _ = client.simple_query("ROLLBACK").await;
                let lock = failure.is_lock_failure();
                if lock && attempt <= opts.lock_retries && !opts.stopped() {
                    return Ok(Attempt::Blocked {
                        step: index,
                        failure,
                        steps,
                    });
                }
                for later in &plan.steps[index + 1..to] {
                    steps.push(Clock::start().receipt(&later.sql, None, StepOutcome::Skipped));
                }
                let blockers = if lock {
                    blockers_of(client, &step.sql).await
                } else {
                    Vec::new()
                };
                let live_hash = live_catalog(client).await.ok().map(|(_, h)| h);
                let mut receipts = earlier.to_vec();
                receipts.push(seal(plan, steps, &clock)?);
                return Err(step_failed(
                    step,
                    index,
                    failure,
                    (true, attempt, blockers),
                    live_hash,
                    receipts,
                ));
            }
        }
    }
    // Commit only what the proof reached: the catalog this transaction made is read before
    // COMMIT, and anything else rolls back (a cascade the plan did not foresee, a live
    // database that behaves unlike its shadow).
    if let Some(expected) = phase_expectation(plan, to - 1, opts) {
        let checked =
            crate::introspect::introspect_in_transaction(client, &IntrospectOptions::default())
                .await
                .map_err(ApplyError::from)
                .and_then(|c| Ok((catalog_hash(&c)?, c)));
        match checked {
            Ok((actual, catalog)) if actual == expected => {
                checked_catalog = Some((catalog, actual));
            }
            other => {
                let _ = client.simple_query("ROLLBACK").await;
                let mut receipts = earlier.to_vec();
                receipts.push(seal(plan, steps, &clock)?);
                let (actual, catalog) = other?;
                let drifted = if expected == plan.target_hash {
                    opts.target_catalog
                        .as_ref()
                        .map(|t| drift(t, &catalog))
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                return Err(ApplyError::NotAsProven {
                    step_id: plan.steps[to - 1].id.as_str().into(),
                    expected,
                    actual,
                    drifted: drifted.into(),
                    rolled_back: true,
                    receipts,
                });
            }
        }
    }
    if let Err(e) = client.simple_query("COMMIT").await {
        // A deferred constraint can fail at COMMIT: report it against the last step.
        let failure = PgFailure::from_error(&e);
        let _ = client.simple_query("ROLLBACK").await;
        let live_hash = live_catalog(client).await.ok().map(|(_, h)| h);
        let mut receipts = earlier.to_vec();
        receipts.push(seal(plan, steps, &clock)?);
        let last = to - 1;
        return Err(step_failed(
            &plan.steps[last],
            last,
            failure,
            (true, attempt, Vec::new()),
            live_hash,
            receipts,
        ));
    }
    Ok(Attempt::Done(seal(plan, steps, &clock)?, checked_catalog))
}

/// `how`: whether the phase was rolled back, how many tries it had, who blocked the last.
fn step_failed(
    step: &Step,
    index: usize,
    failure: PgFailure,
    how: (bool, u32, Vec<Blocker>),
    live_hash: Option<CatalogHash>,
    receipts: Vec<Receipt>,
) -> ApplyError {
    let (rolled_back, attempts, blockers) = how;
    ApplyError::StepFailed {
        step_id: step.id.clone(),
        step_index: u32::try_from(index).unwrap_or(u32::MAX),
        sql: step.sql.clone(),
        failure: Box::new(failure),
        rolled_back,
        live_hash,
        tries: Box::new(Tries { attempts, blockers }),
        receipts,
    }
}

/// Runs one non-transactional step in autocommit, with its timeout and retries.
#[tracing::instrument(level = "debug", name = "phase", skip_all, fields(from = %plan.steps[index].id, steps = 1))]
async fn run_alone(
    client: &mut Client,
    plan: &Plan,
    opts: &ApplyOptions,
    index: usize,
    earlier: &[Receipt],
) -> Result<Receipt, ApplyError> {
    let step = &plan.steps[index];
    let clock = Clock::start();
    // Session-level settings: the step runs outside any transaction, so SET LOCAL would not
    // last. The caller's own values are put back right after.
    let previous = client
        .query_one(
            "SELECT pg_catalog.current_setting('lock_timeout'), \
                    pg_catalog.current_setting('statement_timeout')",
            &[],
        )
        .await
        .map_err(session("reading the session's timeouts"))?;
    let (previous_lock, previous_statement): (String, String) = (previous.get(0), previous.get(1));
    client
        .simple_query(&format!(
            "SET lock_timeout = {}; SET statement_timeout = {}",
            ms_setting(opts.lock_timeout),
            ms_setting(opts.step_timeout)
        ))
        .await
        .map_err(session("setting the step's timeouts"))?;
    let built_index = concurrent_index(&step.sql);
    let mut steps = Vec::new();
    let mut delay = opts.retry_delay;
    // Tries again after other transient failures, and after lock failures (counted apart:
    // they have their own, larger budget).
    let (mut attempt, mut lock_attempt) = (0, 0);
    let result = loop {
        let c = Clock::start();
        let failure = match run_with_timeout(client, &step.sql, backstop(opts.step_timeout)).await {
            Ok(rows) => {
                steps.push(c.receipt(&step.sql, rows, StepOutcome::Ok));
                break Ok(());
            }
            Err(failure) => failure,
        };
        steps.push(c.receipt(&step.sql, None, failure.outcome(opts.step_timeout)));
        if let Some((schema, name)) = &built_index {
            // The build finished although the client gave up on it: done.
            if failure.timed_out && index_validity(client, schema, name).await == Some(true) {
                break Ok(());
            }
        }
        let lock = failure.is_lock_failure();
        let retry = !opts.stopped()
            && if lock {
                lock_attempt < opts.lock_retries
            } else {
                attempt < opts.retries && failure.is_transient()
            };
        if retry && lock {
            lock_attempt += 1;
            lock_pause(client, plan, opts, index, lock_attempt, failure.clone()).await;
        } else if retry {
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }

        // A failed concurrent build leaves an INVALID index behind: drop it before a retry
        // (which would otherwise fail on the name) and before giving up (an invalid index is
        // still maintained on every write, for nothing). After the pause, because the drop
        // waits for the same sessions that blocked the build.
        if let Some((schema, name)) = &built_index {
            // The drop waits for the same sessions that blocked the build, so it can time out
            // too: it gets the same retries. Retrying the build while the invalid index is
            // still there would only fail on its name.
            let mut drop_delay = opts.retry_delay;
            let mut drops = 0;
            while index_validity(client, schema, name).await == Some(false) {
                if drops > opts.retries {
                    break;
                }
                if drops > 0 {
                    tokio::time::sleep(drop_delay).await;
                    drop_delay = drop_delay.saturating_mul(2);
                }
                drops += 1;
                let drop = format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS {}",
                    qualified(schema, name)
                );
                let c = Clock::start();
                let outcome =
                    match run_with_timeout(client, &drop, backstop(opts.step_timeout)).await {
                        Ok(_) => StepOutcome::Ok,
                        Err(f) => f.outcome(opts.step_timeout),
                    };
                steps.push(c.receipt(&drop, None, outcome));
            }
            if retry && index_validity(client, schema, name).await == Some(false) {
                break Err(failure);
            }
        }
        if !retry {
            break Err(failure);
        }
    };
    let _ = client
        .simple_query(&format!(
            "SELECT pg_catalog.set_config('lock_timeout', {}, false), \
                    pg_catalog.set_config('statement_timeout', {}, false)",
            quote_literal(&previous_lock),
            quote_literal(&previous_statement)
        ))
        .await;
    match result {
        Ok(()) => {
            let receipt = seal(plan, steps, &clock)?;
            if let Some(expected) = phase_expectation(plan, index, opts) {
                let (_, actual) = live_catalog(client).await?;
                if actual != expected {
                    let mut receipts = earlier.to_vec();
                    receipts.push(receipt);
                    return Err(ApplyError::NotAsProven {
                        step_id: step.id.as_str().into(),
                        expected,
                        actual,
                        drifted: Box::default(),
                        rolled_back: false,
                        receipts,
                    });
                }
            }
            Ok(receipt)
        }
        Err(failure) => {
            let blockers = if failure.is_lock_failure() {
                blockers_of(client, &step.sql).await
            } else {
                Vec::new()
            };
            let live_hash = live_catalog(client).await.ok().map(|(_, h)| h);
            let mut receipts = earlier.to_vec();
            receipts.push(seal(plan, steps, &clock)?);
            let attempts = attempt + lock_attempt + 1;
            Err(step_failed(
                step,
                index,
                failure,
                (false, attempts, blockers),
                live_hash,
                receipts,
            ))
        }
    }
}

/// The hash the catalog must have after step `index`, when it ends a phase: what the shadow
/// reached there, or the plan's target for the plan's last step.
fn phase_expectation(plan: &Plan, index: usize, opts: &ApplyOptions) -> Option<CatalogHash> {
    if !opts.check_hashes {
        return None;
    }
    let step = &plan.steps[index];
    step.reaches
        .clone()
        .or_else(|| (index + 1 == plan.steps.len()).then(|| plan.target_hash.clone()))
}

/// `(schema, index name)` when `sql` is `CREATE INDEX CONCURRENTLY` with a qualified table.
fn concurrent_index(sql: &str) -> Option<(String, String)> {
    use pg_query::NodeEnum;
    let parsed = pg_query::parse(sql, 0).ok()?;
    let node = parsed
        .protobuf
        .stmts
        .first()?
        .stmt
        .as_ref()?
        .node
        .as_ref()?;
    let NodeEnum::IndexStmt(stmt) = node else {
        return None;
    };
    if !stmt.concurrent || stmt.idxname.is_empty() {
        return None;
    }
    let relation = stmt.relation.as_ref()?;
    // An index lives in its table's schema; the compiler always qualifies the table.
    let schema = if relation.schemaname.is_empty() {
        "public".to_owned()
    } else {
        relation.schemaname.clone()
    };
    Some((schema, stmt.idxname.clone()))
}

/// `Some(indisvalid)` for an existing index, `None` when there is none (or it can't be read).
async fn index_validity(client: &Client, schema: &str, name: &str) -> Option<bool> {
    let sql = format!(
        "SELECT i.indisvalid FROM pg_catalog.pg_index i \
         JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = {} AND c.relname = {}",
        quote_literal(schema),
        quote_literal(name)
    );
    let rows = client.simple_query(&sql).await.ok()?;
    rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "t"),
        _ => None,
    })
}

/// The top-level objects that differ between two catalogs, as paths: `extension pgcrypto`,
/// `schema app`, `table public.users`, `view public.v`, `sequence …`, `enum …`,
/// `unsupported function public.f(integer)`.
pub fn drift(expected: &Catalog, live: &Catalog) -> Vec<String> {
    use std::collections::BTreeSet;
    let mut out = Vec::new();
    let names: BTreeSet<&String> = expected
        .extensions
        .keys()
        .chain(live.extensions.keys())
        .collect();
    for name in names {
        if expected.extensions.get(name) != live.extensions.get(name) {
            out.push(format!("extension {name}"));
        }
    }
    let schemas: BTreeSet<&String> = expected.schemas.keys().chain(live.schemas.keys()).collect();
    for name in schemas {
        let (a, b) = (expected.schemas.get(name), live.schemas.get(name));
        let (Some(a), Some(b)) = (a, b) else {
            out.push(format!("schema {name}"));
            continue;
        };
        if a.comment != b.comment {
            out.push(format!("schema {name}"));
        }
        diff_map(&mut out, "table", name, &a.tables, &b.tables);
        diff_map(&mut out, "view", name, &a.views, &b.views);
        diff_map(&mut out, "sequence", name, &a.sequences, &b.sequences);
        diff_map(&mut out, "enum", name, &a.enums, &b.enums);
    }
    let a: BTreeSet<_> = expected.unsupported.iter().collect();
    let b: BTreeSet<_> = live.unsupported.iter().collect();
    for u in a.symmetric_difference(&b) {
        out.push(format!("unsupported {} {}.{}", u.kind, u.schema, u.name));
    }
    out
}

/// What changed from `expected` to `live`, as the plan from one to the other would say it, a
/// step summary per change (`add column public.accounts.sneaky`, `build index …`): what a
/// drift report names. The objects [`drift`] lists when the changes cannot be compiled.
pub fn describe_drift(expected: &Catalog, live: &Catalog) -> Vec<String> {
    let changes = crate::diff::diff(expected, live, &crate::diff::Renames::none());
    let stats = crate::plan::TableStats::default();
    match crate::compile::compile(expected, live, &changes, &stats) {
        Ok(steps) if !steps.is_empty() => {
            let mut out: Vec<String> = Vec::new();
            for step in steps {
                if !out.contains(&step.summary) {
                    out.push(step.summary);
                }
            }
            out
        }
        _ => drift(expected, live),
    }
}

fn diff_map<V: PartialEq>(
    out: &mut Vec<String>,
    kind: &str,
    schema: &str,
    a: &std::collections::BTreeMap<String, V>,
    b: &std::collections::BTreeMap<String, V>,
) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        if a.get(key) != b.get(key) {
            out.push(format!("{kind} {schema}.{key}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_index_names_the_index_and_its_schema() {
        assert_eq!(
            concurrent_index(r#"CREATE UNIQUE INDEX CONCURRENTLY "t_x" ON "app"."t" (x)"#),
            Some(("app".into(), "t_x".into()))
        );
        assert_eq!(
            concurrent_index(r#"CREATE INDEX "t_x" ON "app"."t" (x)"#),
            None
        );
        assert_eq!(concurrent_index("not sql at all"), None);
    }

    #[test]
    fn near_marks_the_position() {
        assert_eq!(near("SELECT x FROM", 8), "…SELECT ⟨here⟩x FROM…");
        assert_eq!(near("", 5), "…⟨here⟩…");
    }

    #[test]
    fn transient_failures() {
        let mut f = PgFailure::timed_out(Duration::from_secs(1));
        assert!(f.is_transient());
        f.timed_out = false;
        f.sqlstate = Some("23505".into());
        assert!(!f.is_transient());
        f.sqlstate = Some("55P03".into());
        assert!(f.is_transient());
    }
}
