//! The runtime's one error type: what went wrong, and what the caller should do next.

use lockplane_engine::exec::ApplyError;
use lockplane_engine::merge::{Conflict, ConflictSides};
use lockplane_engine::session::SessionError;
use lockplane_engine::CatalogHash;

/// Why a runtime call failed. Every message ends with what to do next, because agents act on
/// them; [`Error::code`] gives a stable machine-readable name.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database was never attached to this runtime.
    #[error("database `{0}` is not attached: call attach (or pass its URL) first")]
    UnknownDatabase(String),
    /// No such plan in the ledger for that database.
    #[error("no plan {plan_id} for database `{database}`: list the plans, or propose again")]
    UnknownPlan {
        /// The database.
        database: String,
        /// The plan id asked for.
        plan_id: String,
    },
    /// The desired schema document is invalid (each problem with file:line:column).
    #[error("the desired schema is invalid:\n{0}\nfix the document and propose again")]
    InvalidDocument(String),
    /// The plan loses data (or touches what Lockplane cannot see) and was not confirmed.
    #[error(
        "plan {plan_id} needs an explicit confirmation ({hazards}): confirm plan {plan_id} \
         (or pass it as the confirmation) after reviewing its hazards"
    )]
    NeedsConfirmation {
        /// The plan.
        plan_id: String,
        /// Its hazard kinds, comma-separated.
        hazards: String,
    },
    /// A confirmation was given but is not the plan's id.
    #[error(
        "confirmation `{given}` does not match plan {plan_id}: a confirmation must be the exact \
         id of the plan being applied"
    )]
    WrongConfirmation {
        /// The plan.
        plan_id: String,
        /// What was given.
        given: String,
    },
    /// The plan's base is no longer live and could not be rebased.
    #[error(
        "plan {plan_id} is stale: the live hash is {live}, the plan was made against {base}; \
         {reason}; propose again against the live schema"
    )]
    Stale {
        /// The plan.
        plan_id: String,
        /// Its base.
        base: CatalogHash,
        /// The live hash.
        live: CatalogHash,
        /// Why it could not be rebased (the conflicts, or a missing base catalog).
        reason: String,
        /// Objects changed both by the plan and on the live database since its base.
        conflicts: Vec<Conflict>,
    },
    /// Two proposals change the same objects differently, or a document read at a base and
    /// the live database since that base do ([`ConflictSides`] says which).
    #[error("{}", .sides.message(.conflicts))]
    Conflict {
        /// Each conflicting object, with both sides.
        conflicts: Vec<Conflict>,
        /// What the two sides are.
        sides: ConflictSides,
    },
    /// A document's `base:` names a catalog the ledger holds no manifest of.
    #[error(
        "the document's base {base} is not in the ledger: no introspection or plan recorded a \
         catalog with that hash, so there is nothing to merge the document against. Introspect \
         again (`lockplane introspect --format yaml` writes the hash it read as `base:`) and \
         redo the change on that document, or remove `base:` to plan the document \
         declaratively (live is then made to match it, dropping what it does not mention)"
    )]
    UnknownBase {
        /// The hash the document named.
        base: CatalogHash,
    },
    /// The plans cannot be merged for a reason other than a conflict.
    #[error("cannot merge: {0}")]
    CannotMerge(String),
    /// The plan is not waiting to be applied.
    #[error("plan {plan_id} is {status}: {hint}")]
    NotPending {
        /// The plan.
        plan_id: String,
        /// Its status.
        status: &'static str,
        /// What to do instead.
        hint: String,
    },
    /// The plan body in the ledger does not hash to its id.
    #[error(
        "plan {plan_id} in the ledger does not hash to its id ({computed}): run verify_ledger"
    )]
    Tampered {
        /// The plan.
        plan_id: String,
        /// What its body hashes to.
        computed: String,
    },
    /// The apply failed (busy advisory lock, stale base, a failing step, …).
    #[error("apply failed: {0}")]
    Apply(Box<ApplyError>),
    /// Proving the plan on the shadow failed.
    #[error("shadow: {0}; the plan was not recorded: fix the document and propose again")]
    Shadow(String),
    /// The planner refused (e.g. a change it cannot make safely).
    #[error("planning: {0}")]
    Plan(String),
    /// This server's access mode does not let agents change the schema.
    #[error(
        "this server runs in `{mode}` access mode, which never changes the schema: {what} is \
         refused. Plans can still be proposed and reviewed (diff_catalog, list_plans); a server \
         in `schema` mode, or an operator with the lockplane CLI, applies them"
    )]
    AccessDenied {
        /// The server's mode.
        mode: lockplane_engine::guard::AccessMode,
        /// What was asked.
        what: &'static str,
    },
    /// An expression a plan carries (a view query, a policy, a default, a CHECK, a generated
    /// column, an index expression) calls a function or reads a catalog the SQL guard refuses.
    #[error("{0}")]
    Guarded(lockplane_engine::guard::GuardedStep),
    /// Connecting to or reading from the database failed.
    #[error("database `{database}`: {message}")]
    Database {
        /// The database.
        database: String,
        /// What failed.
        message: String,
    },
    /// An `apply_sql`/`explain_sql`/`set_context` call was refused or failed.
    #[error("{0}")]
    Session(#[from] lockplane_engine::session::SessionError),
    /// A `policy_evaluate` call failed.
    #[error("{0}")]
    Policy(#[from] lockplane_engine::policy::PolicyError),
    /// The ledger failed (held by another process, unwritable, corrupt).
    #[error("ledger: {0}")]
    Ledger(#[from] lockplane_store::StoreError),
    /// An online migration was refused or a phase of it failed (the database and its
    /// recorded phase are at the phase's start).
    #[error("{0}")]
    Online(Box<lockplane_engine::online::OnlineError>),
    /// The runtime is shutting down or one of its actors stopped.
    #[error("the Lockplane runtime is not running: {0}")]
    Stopped(String),
}

impl Error {
    /// A stable name for the error kind, for programs and agents.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownDatabase(_) => "unknown_database",
            Error::UnknownPlan { .. } => "unknown_plan",
            Error::InvalidDocument(_) => "invalid_document",
            Error::NeedsConfirmation { .. } => "needs_confirmation",
            Error::WrongConfirmation { .. } => "wrong_confirmation",
            Error::Stale { .. } => "stale_plan",
            Error::Conflict { .. } => "conflict",
            Error::UnknownBase { .. } => "unknown_base",
            Error::CannotMerge(_) => "cannot_merge",
            Error::NotPending { .. } => "not_pending",
            Error::Tampered { .. } => "tampered",
            Error::Apply(e) if matches!(**e, ApplyError::Busy { .. }) => "busy",
            Error::Apply(_) => "apply_failed",
            Error::Shadow(_) => "shadow_failed",
            Error::Plan(_) => "plan_refused",
            Error::AccessDenied { .. } => "access_denied",
            Error::Guarded { .. } => "plan_refused",
            Error::Database { .. } => "database",
            Error::Session(SessionError::NeedsConfirmation { .. }) => "needs_confirmation",
            Error::Session(SessionError::WrongConfirmation { .. }) => "wrong_confirmation",
            Error::Session(SessionError::RoleNotAllowed { .. }) => "role_not_allowed",
            Error::Session(SessionError::InvalidContext { .. }) => "invalid_context",
            Error::Session(SessionError::RoleRequired { .. }) => "role_required",
            Error::Session(SessionError::Postgres { .. }) => "postgres_error",
            Error::Session(_) => "sql_refused",
            Error::Policy(_) => "policy",
            Error::Ledger(_) => "ledger",
            Error::Online(_) => "online_migration",
            Error::Stopped(_) => "stopped",
        }
    }
}

impl From<actix::MailboxError> for Error {
    fn from(e: actix::MailboxError) -> Self {
        Error::Stopped(e.to_string())
    }
}

impl From<lockplane_engine::online::OnlineError> for Error {
    fn from(e: lockplane_engine::online::OnlineError) -> Self {
        Error::Online(Box::new(e))
    }
}

impl From<ApplyError> for Error {
    fn from(e: ApplyError) -> Self {
        Error::Apply(Box::new(e))
    }
}
