//! The human CLI: argument parsing, dispatch, and the errors it renders.
//!
//! - [`introspect`]: `lockplane introspect` (reads a database, records it in the ledger);
//! - [`drift`]: `lockplane drift`, once or `--watch`;
//! - [`online`]: `plan --online`, `apply` of an online migration, `complete`, `rollback`;
//! - [`sandbox`]: `lockplane sandbox` (a throwaway Postgres for demos and trials);
//! - [`audit`]: `lockplane audit …` (read, check and export the ledger);
//! - `validate` and `schema` (here): check a DSL document, print the DSL's JSON Schema;
//! - `serve` ([`crate::serve`]): the MCP server over stdio or streamable HTTP;
//! - [`ledger`]: opening the ledger and turning its records into events, shared by the above.

mod audit;
mod drift;
mod init;
mod introspect;
pub(crate) mod ledger;
pub(crate) use drift::parse_interval;
mod online;
pub(crate) mod plan;
mod sandbox;
mod time;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use lockplane_actors::LedgerLocation;
use lockplane_engine::cluster::ClusterError;
use lockplane_engine::connect::ConnectError;
use lockplane_engine::events::EventError;
use lockplane_engine::IntrospectError;
use lockplane_store::{StoreError, DEFAULT_LEDGER_DIR};
use miette::Diagnostic;

#[derive(Parser)]
#[command(
    name = "lockplane",
    version,
    about = "Plan, apply and audit Postgres schema changes"
)]
struct Cli {
    /// The ledger of record (the hash-chained event log): a directory, or a Postgres control
    /// database `postgres://…` shared by every process and machine. Default: the user's state
    /// directory, `$XDG_STATE_HOME/lockplane/ledger` (else `~/.local/state/lockplane/ledger`).
    /// A directory another process holds (a running `lockplane serve`) is reached through it.
    #[arg(
        long,
        global = true,
        env = "LOCKPLANE_LEDGER",
        value_name = "PATH_OR_URL"
    )]
    ledger: Option<String>,
    /// Seconds to wait for a ledger that is not reachable yet (a holder that is starting).
    #[arg(
        long,
        global = true,
        env = "LOCKPLANE_LEDGER_WAIT",
        default_value_t = 0,
        value_name = "SECONDS"
    )]
    ledger_wait: u64,
    /// Who is acting, as recorded in the ledger (an agent or user id; default `user:$USER`).
    #[arg(long, global = true, env = "LOCKPLANE_ACTOR", value_name = "ID")]
    actor: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read a live database into its canonical catalog manifest and print it with its hash;
    /// record the reading (`CatalogIntrospected`, manifest as a blob) in the ledger.
    Introspect(introspect::Args),
    /// Start a throwaway Postgres cluster, print `DATABASE_URL=…`, and keep it running until
    /// standard input closes or the process is interrupted; then stop and delete it.
    Sandbox {
        /// Directory holding initdb/pg_ctl/postgres (else $LOCKPLANE_PG_BIN, PATH,
        /// /usr/lib/postgresql/*/bin).
        #[arg(long)]
        pg_bin: Option<PathBuf>,
    },
    /// Plan the change from the live database to a DSL document: the explicit SQL steps with
    /// their locks and hazards, proven (with its reverse) on a shadow database, recorded as a
    /// proposal in the ledger.
    Plan(plan::PlanArgs),
    /// Apply a plan written by `lockplane plan --out`: checks the live hash, takes the
    /// database's advisory lock, runs the steps with timeouts, verifies the target hash, and
    /// records the outcome. A plan that can lose data needs `--confirm PLAN_ID`.
    Apply(plan::ApplyArgs),
    /// Complete an online migration started with `lockplane apply`: validate its NOT NULLs,
    /// drop the old columns and the sync trigger, give the new columns their final names.
    /// Run it once every application reads the new shape.
    Complete(online::VersionArgs),
    /// Roll an online migration back before it is completed: drop what its expand added; the
    /// old columns were never touched.
    Rollback(online::VersionArgs),
    /// Create the least-privilege roles (lp_migrator owns the managed schemas, no superuser;
    /// lp_runtime_read / lp_runtime_write for the application) and the helper schema. Prints
    /// the SQL first; --dry-run only prints it.
    Init(init::Args),
    /// Check whether the live schema is still what the ledger last recorded (exit status 2 on
    /// drift, naming what differs), once or on a schedule (`--watch 5m`). A drift found again
    /// is recorded once.
    Drift(drift::Args),
    /// Check a schema document (YAML or JSON DSL): report every problem with file:line:column
    /// and path, or print the catalog hash the document describes on its own.
    Validate {
        /// The document (`.json` is read as JSON, anything else as YAML).
        file: PathBuf,
    },
    /// Print the JSON Schema of the DSL, for editors (yaml-language-server) and agents.
    Schema,
    /// Read, check and export the ledger.
    Audit {
        #[command(subcommand)]
        command: audit::Command,
    },
    /// Serve the MCP tools to agents over stdio (`--stdio`) or streamable HTTP (`--http
    /// ADDR`, bearer token required), for one database, with one runtime for every session.
    Serve(crate::serve::ServeArgs),
}

/// Everything the CLI can fail with, with the help a human needs to act on it.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub(crate) enum CliError {
    #[error(transparent)]
    #[diagnostic(code(lockplane::connect))]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    #[diagnostic(code(lockplane::introspect))]
    Introspect(#[from] IntrospectError),
    #[error(transparent)]
    #[diagnostic(code(lockplane::cluster))]
    Cluster(#[from] ClusterError),
    #[error("cannot encode the output: {0}")]
    #[diagnostic(code(lockplane::output))]
    Output(String),
    /// The ledger failed (or is held by another process: then `help` says what to do).
    #[error("{error}")]
    #[diagnostic(code(lockplane::ledger))]
    Ledger {
        error: StoreError,
        #[help]
        help: Option<String>,
    },
    /// A record's payload is not an event this build can read.
    #[error("ledger record at seq {seq} cannot be read as an event: {source}")]
    #[diagnostic(
        code(lockplane::ledger::event),
        help("run `lockplane audit verify` to check the ledger's integrity")
    )]
    Event {
        seq: u64,
        #[source]
        source: EventError,
    },
    /// `audit verify` found a bad record (or an unreadable event).
    #[error("{0}")]
    #[diagnostic(code(lockplane::audit::verify))]
    VerifyFailed(String),
    /// A schema document has problems (every one is listed, with its place).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Dsl(#[from] lockplane_engine::dsl::DslErrors),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    #[diagnostic(code(lockplane::io))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A command was given something it can't use.
    #[error("{0}")]
    #[diagnostic(code(lockplane::usage))]
    Usage(String),
    /// The plan needs a confirmation (or got one for another plan): nothing ran.
    #[error("{message}")]
    #[diagnostic(code(lockplane::needs_confirmation))]
    NeedsConfirmation {
        message: String,
        /// What to run, with the id to confirm on a line of its own.
        #[help]
        help: String,
    },
    /// The database is no longer at the plan's base: nothing ran.
    #[error("{0}")]
    #[diagnostic(
        code(lockplane::stale),
        help("plan again against the live schema (lockplane plan -f DOCUMENT --out PLAN.json)")
    )]
    Stale(String),
    /// The plan (or its document) is refused as it is: changed after planning, not planned
    /// here, SQL the planner does not write, a feature the server lacks, …
    #[error("{0}")]
    #[diagnostic(code(lockplane::refused))]
    Refused(String),
    /// The apply ran and failed; the message says what is committed and what to do.
    #[error("{0}")]
    #[diagnostic(code(lockplane::apply_failed))]
    ApplyFailed(String),
    /// `lockplane drift` found the live schema is not what the ledger recorded.
    #[error("{0}")]
    #[diagnostic(
        code(lockplane::drift),
        help(
            "plan the document again (lockplane plan) to see what it would change, or \
              introspect to accept the live schema"
        )
    )]
    Drifted(String),
    /// Interrupted by a signal; the outcome is recorded.
    #[error("{0}")]
    #[diagnostic(code(lockplane::interrupted))]
    Interrupted(String),
    /// The database could not be reached (or refused what was asked of it).
    #[error("{0}")]
    #[diagnostic(code(lockplane::database))]
    Database(String),
    /// The runtime failed (the shadow, the actor system).
    #[error("{0}")]
    #[diagnostic(code(lockplane::runtime))]
    Runtime(String),
    /// `lockplane serve` failed to start or stopped with an error.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Serve(Box<crate::serve::ServeError>),
}

impl CliError {
    /// The process exit status of each class of failure (documented in the README): scripts
    /// tell them apart without reading the message.
    pub(crate) fn exit_status(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Read { .. } | CliError::Drifted(_) => 2,
            CliError::NeedsConfirmation { .. } => 3,
            CliError::Stale(_) => 4,
            CliError::Refused(_) => 5,
            CliError::Connect(_) | CliError::Database(_) => 6,
            CliError::Dsl(_) => 7,
            CliError::ApplyFailed(_) => 8,
            CliError::Interrupted(_) => 130,
            CliError::Introspect(_)
            | CliError::Cluster(_)
            | CliError::Output(_)
            | CliError::Ledger { .. }
            | CliError::Event { .. }
            | CliError::VerifyFailed(_)
            | CliError::Runtime(_)
            | CliError::Serve(_) => 1,
        }
    }
}

impl From<crate::serve::ServeError> for CliError {
    fn from(e: crate::serve::ServeError) -> Self {
        CliError::Serve(Box::new(e))
    }
}

impl From<lockplane_actors::Error> for CliError {
    /// A runtime error as the CLI class it belongs to (`plan`'s and `apply`'s own mapping
    /// refines this with what to run next).
    fn from(e: lockplane_actors::Error) -> CliError {
        use lockplane_actors::Error as E;
        match e {
            E::Ledger(error) => CliError::from(error),
            E::NeedsConfirmation { .. } | E::WrongConfirmation { .. } => {
                CliError::NeedsConfirmation {
                    message: e.to_string(),
                    help: "review the hazards, then run again with --confirm PLAN_ID".into(),
                }
            }
            E::Stale { .. } => CliError::Stale(e.to_string()),
            E::Apply(ref a)
                if matches!(
                    a.as_ref(),
                    lockplane_engine::exec::ApplyError::Interrupted { .. }
                ) =>
            {
                CliError::Interrupted(e.to_string())
            }
            E::Apply(ref a)
                if matches!(a.as_ref(), lockplane_engine::exec::ApplyError::Stale { .. }) =>
            {
                CliError::Stale(e.to_string())
            }
            E::Apply(_) => CliError::ApplyFailed(e.to_string()),
            E::Database { .. } => CliError::Database(e.to_string()),
            E::Online(ref o)
                if matches!(
                    o.as_ref(),
                    lockplane_engine::online::OnlineError::Postgres { .. }
                        | lockplane_engine::online::OnlineError::Backfill { .. }
                ) =>
            {
                CliError::ApplyFailed(e.to_string())
            }
            E::Online(_) => CliError::Refused(e.to_string()),
            E::InvalidDocument(_) => CliError::Usage(e.to_string()),
            E::UnknownPlan { .. }
            | E::Conflict { .. }
            | E::CannotMerge(_)
            | E::NotPending { .. }
            | E::Tampered { .. }
            | E::Plan(_)
            | E::AccessDenied { .. }
            | E::Guarded(_) => CliError::Refused(e.to_string()),
            other => CliError::Runtime(other.to_string()),
        }
    }
}

impl From<StoreError> for CliError {
    /// Wraps a store error, adding what to do when the ledger is held by another process.
    fn from(error: StoreError) -> CliError {
        let help = matches!(error, StoreError::Locked { .. }).then(|| {
            "the process holding the ledger did not answer through its hub (ledger/hub.sock). \
             Wait for it (--ledger-wait SECONDS), stop it, or use another ledger with --ledger \
             PATH_OR_URL (or LOCKPLANE_LEDGER); to read a database without recording it, run \
             `lockplane introspect --no-ledger`"
                .to_owned()
        });
        CliError::Ledger { error, help }
    }
}

/// [`lockplane_engine::connect::resolve`], telling the user on standard error what it
/// noticed (a password file skipped because others can read it). Said here, the warnings are
/// not repeated in a connection error.
pub(crate) fn resolve_target(
    url: Option<&str>,
) -> Result<lockplane_engine::connect::ConnTarget, ConnectError> {
    let mut target = lockplane_engine::connect::resolve(url)?;
    for warning in target.warnings.drain(..) {
        eprintln!("lockplane: warning: {warning}");
    }
    Ok(target)
}

/// Parses the command line and runs the command.
pub(crate) async fn run() -> Result<(), CliError> {
    let cli = Cli::parse();
    let actor = cli.actor.unwrap_or_else(default_actor);
    let at = ledger::LedgerAt {
        location: cli
            .ledger
            .as_deref()
            .filter(|l| !l.is_empty())
            .map(LedgerLocation::parse)
            .unwrap_or_else(default_ledger),
        wait: std::time::Duration::from_secs(cli.ledger_wait),
    };
    match cli.command {
        Command::Introspect(args) => introspect::run(&at, &actor, args).await,
        Command::Sandbox { pg_bin } => sandbox::run(pg_bin).await,
        Command::Plan(args) => plan::run_plan(&at, &actor, args).await,
        Command::Apply(args) => plan::run_apply(&at, &actor, args).await,
        Command::Init(args) => init::run(args).await,
        Command::Drift(args) => drift::run(&at, &actor, args).await,
        Command::Complete(args) => online::complete(&at, &actor, args).await,
        Command::Rollback(args) => online::rollback(&at, &actor, args).await,
        Command::Validate { file } => validate(&file),
        Command::Schema => print(
            &serde_json::to_string_pretty(&lockplane_engine::dsl::json_schema())
                .map_err(|e| CliError::Output(e.to_string()))?,
        ),
        Command::Audit { command } => audit::run(&at, command),
        Command::Serve(args) => Ok(crate::serve::run(&at, &actor, args).await?),
    }
}

/// `lockplane validate FILE`.
fn validate(file: &std::path::Path) -> Result<(), CliError> {
    let text = std::fs::read_to_string(file).map_err(|source| CliError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let name = file.display().to_string();
    let loaded = lockplane_engine::dsl::load_file_text(&name, &text)?;
    let hash = lockplane_engine::catalog_hash(&loaded.catalog)
        .map_err(|e| CliError::Output(e.to_string()))?;
    let tables: usize = loaded
        .catalog
        .schemas
        .values()
        .map(|s| s.tables.len())
        .sum();
    print(&format!(
        "{name}: ok ({} schemas, {tables} tables)\n\
         document hash: {hash}\n\
         (computed from the document alone; Postgres adds casts and qualifiers when it stores \
         expressions, so a plan's target hash comes from a shadow database)",
        loaded.catalog.schemas.len()
    ))
}

/// The ledger when none is given: in the user's state directory, so that every command of
/// one user, wherever it runs from (an MCP client started by a desktop app runs in `/`),
/// shares one ledger, and no root-only path is needed.
fn default_ledger() -> LedgerLocation {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        });
    match state {
        Some(dir) => LedgerLocation::Dir(dir.join("lockplane/ledger")),
        None => LedgerLocation::Dir(PathBuf::from(DEFAULT_LEDGER_DIR)),
    }
}

/// `user:$USER`, the actor when none is given.
fn default_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!("user:{user}")
}

/// Writes `text` and a newline to standard output.
pub(crate) fn print(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|_| out.flush())
        .map_err(|e| CliError::Output(e.to_string()))
}
