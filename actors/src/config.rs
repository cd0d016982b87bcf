//! How a [`crate::Lockplane`] runtime is set up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockplane_engine::guard::AccessMode;

/// Where the ledger of record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// A sled ledger directory, created if missing. The first process to open it holds it
    /// and serves it to every other process that opens it (`lockplane_store::hub`).
    Dir(PathBuf),
    /// A Postgres control database (`postgres://…` or `postgresql://…`), shared by any
    /// number of processes and machines (`lockplane_store::PgStore`).
    Postgres(String),
    /// In this process's memory, gone when it exits: for reads whose recording nobody keeps.
    Memory,
}

impl LedgerLocation {
    /// A `--ledger` value: a `postgres://` or `postgresql://` URL names a Postgres ledger,
    /// anything else a directory.
    pub fn parse(text: &str) -> LedgerLocation {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            LedgerLocation::Postgres(text.to_owned())
        } else {
            LedgerLocation::Dir(PathBuf::from(text))
        }
    }
}

impl std::fmt::Display for LedgerLocation {
    /// The directory, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerLocation::Dir(path) => write!(f, "{}", path.display()),
            LedgerLocation::Postgres(url) => match lockplane_engine::connect::resolve(Some(url)) {
                Ok(target) => f.write_str(&target.describe()),
                Err(_) => f.write_str("a Postgres ledger (unreadable URL)"),
            },
            LedgerLocation::Memory => f.write_str("(in memory)"),
        }
    }
}

impl From<PathBuf> for LedgerLocation {
    fn from(path: PathBuf) -> Self {
        LedgerLocation::Dir(path)
    }
}

impl From<&Path> for LedgerLocation {
    fn from(path: &Path) -> Self {
        LedgerLocation::Dir(path.to_path_buf())
    }
}

impl From<&PathBuf> for LedgerLocation {
    fn from(path: &PathBuf) -> Self {
        LedgerLocation::Dir(path.clone())
    }
}

impl From<&str> for LedgerLocation {
    fn from(text: &str) -> Self {
        LedgerLocation::parse(text)
    }
}

impl From<String> for LedgerLocation {
    fn from(text: String) -> Self {
        LedgerLocation::parse(&text)
    }
}

/// Where plans are proven before they touch a real database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ShadowConfig {
    /// One throwaway cluster started from the local Postgres binaries the first time a shadow
    /// is needed, shared by every database of the runtime and stopped with it.
    #[default]
    Throwaway,
    /// An existing server (a role that may create databases); each shadow run creates and
    /// drops its own database there.
    Url(String),
}

/// The runtime's settings. [`Config::new`] gives the defaults an embedding program wants.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ledger of record.
    pub ledger: LedgerLocation,
    /// How long to wait for a ledger that is not reachable yet (a directory whose holder is
    /// starting, a Postgres ledger that refuses connections); default: a few seconds for a
    /// starting holder, then the error.
    pub ledger_wait: Duration,
    /// Whether plans go through the SQL guard (`lockplane_engine::guard::check_plan`) at
    /// proposal and apply: on for agents (the MCP server, embedding); the CLI, run with an
    /// operator's own credentials, switches it off.
    pub guard_plans: bool,
    /// Where shadow databases live.
    pub shadow: ShadowConfig,
    /// Prove every plan (and its reverse) on a shadow before recording it. Switching this off
    /// still uses the shadow to canonicalise desired schemas.
    pub dry_run: bool,
    /// How long an apply waits for the per-database advisory lock held by another apply
    /// (this or another process) before failing with who holds it.
    pub lock_wait: Duration,
    /// Keep live's reproduction on a shadow server given by URL for the next plan against the
    /// same live database (see `lockplane_engine::shadow`): for a server that is Lockplane's
    /// alone. The runtime's own throwaway shadow cluster always keeps them (it lives as long
    /// as the runtime).
    pub keep_reproductions: bool,
    /// `lock_timeout` of every statement an apply runs: short, because every query on the
    /// table queues behind a statement waiting for its lock.
    pub lock_timeout: Duration,
    /// How many times an apply tries a phase again after a statement could not get its lock
    /// (the transaction rolled back whole each time), with growing pauses.
    pub lock_retries: u32,
    /// `statement_timeout` of every transactional statement and of `apply_sql`.
    pub statement_timeout: Duration,
    /// What agents may do through `apply_sql` / `explain_sql`.
    pub access_mode: AccessMode,
    /// Roles `set_context` may switch to.
    pub allowed_roles: Vec<String>,
}

impl Config {
    /// Defaults: no ledger wait, plans guarded, a 30 s advisory-lock wait, a throwaway shadow cluster with dry runs,
    /// a 500 ms `lock_timeout` tried 10 more times, 60 s `statement_timeout`, schema access, no
    /// roles to switch to.
    pub fn new(ledger: impl Into<LedgerLocation>) -> Config {
        Config {
            ledger: ledger.into(),
            ledger_wait: Duration::ZERO,
            guard_plans: true,
            shadow: ShadowConfig::Throwaway,
            dry_run: true,
            lock_wait: Duration::from_secs(30),
            keep_reproductions: false,
            lock_timeout: lockplane_engine::exec::DEFAULT_LOCK_TIMEOUT,
            lock_retries: lockplane_engine::exec::DEFAULT_LOCK_RETRIES,
            statement_timeout: Duration::from_secs(60),
            access_mode: AccessMode::Schema,
            allowed_roles: Vec::new(),
        }
    }
}
