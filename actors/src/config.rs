//! How a [`crate::Lockplane`] runtime is set up.

use std::path::PathBuf;
use std::time::Duration;

use lockplane_engine::guard::AccessMode;

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
    /// The ledger directory (a sled database, created if missing).
    pub ledger: PathBuf,
    /// How long to wait for another process that holds the ledger (default: not at all, like
    /// the CLI: the error names the holder at once).
    pub ledger_wait: Duration,
    /// Where shadow databases live.
    pub shadow: ShadowConfig,
    /// Prove every plan (and its reverse) on a shadow before recording it. Switching this off
    /// still uses the shadow to canonicalise desired schemas.
    pub dry_run: bool,
    /// How long an apply waits for the per-database advisory lock held by another apply
    /// (this or another process) before failing with who holds it.
    pub lock_wait: Duration,
    /// `lock_timeout` of every statement an apply runs.
    pub lock_timeout: Duration,
    /// `statement_timeout` of every transactional statement and of `apply_sql`.
    pub statement_timeout: Duration,
    /// What agents may do through `apply_sql` / `explain_sql`.
    pub access_mode: AccessMode,
    /// Roles `set_context` may switch to.
    pub allowed_roles: Vec<String>,
}

impl Config {
    /// Defaults: no ledger wait, a 30 s advisory-lock wait, a throwaway shadow cluster with dry runs,
    /// 5 s `lock_timeout`, 60 s `statement_timeout`, schema access, no roles to switch to.
    pub fn new(ledger: impl Into<PathBuf>) -> Config {
        Config {
            ledger: ledger.into(),
            ledger_wait: Duration::ZERO,
            shadow: ShadowConfig::Throwaway,
            dry_run: true,
            lock_wait: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(60),
            access_mode: AccessMode::Schema,
            allowed_roles: Vec::new(),
        }
    }
}
