//! `lockplane serve`: the MCP server (DESIGN §7), over stdio or streamable HTTP.
//!
//! - [`tools`]: the handler — one per MCP session, the tools, the instructions;
//! - [`schema`]: the tools' JSON Schemas as clients get them (portable; errors admitted);
//! - [`answer`]: what every tool call answers (argument errors with a code, a bounded size);
//! - [`stdio`]: the stdio transport, answering lines that are no message;
//! - [`http`]: the streamable HTTP transport behind Origin, bearer-token and session checks.
//!
//! One [`Lockplane`] runtime (ledger, actors, shadow cluster) serves every session. Standard
//! output belongs to the protocol on stdio, so everything for humans goes to standard error.

mod answer;
mod http;
mod schema;
mod stdio;
pub(crate) mod tools;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lockplane_actors::{Config, Lockplane, ShadowConfig};
use lockplane_engine::guard::AccessMode;
use rmcp::ServiceExt;

use crate::cli::ledger::LedgerAt;
use tools::{LockplaneMcp, Shared};

/// Flags of `lockplane serve`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("transport").required(true).args(["stdio", "http"])))]
pub(crate) struct ServeArgs {
    /// Serve one MCP session over standard input/output (what MCP clients spawn).
    #[arg(long)]
    stdio: bool,
    /// Serve streamable HTTP at this address (path `/mcp`), loopback by default; every
    /// request needs `Authorization: Bearer <token>`. Port 0 picks a free port (printed).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:7878")]
    http: Option<SocketAddr>,
    /// File holding the bearer token for --http (else one is generated and printed once on
    /// standard error).
    #[arg(long, value_name = "FILE", requires = "http")]
    token_file: Option<PathBuf>,
    /// Allow --http on a non-loopback address (the token is still required; the Host header
    /// check is then off, so put TLS and a host check in front).
    #[arg(long, requires = "http")]
    allow_remote: bool,
    /// A browser origin allowed to call --http besides loopback ones (repeatable;
    /// `scheme://host[:port]`, or `null`). Requests with any other Origin get 403.
    #[arg(long = "allowed-origin", value_name = "ORIGIN", requires = "http")]
    allowed_origins: Vec<String>,
    /// The most MCP sessions --http keeps open at once; a new session beyond it is refused
    /// (503). Idle sessions close after 5 minutes.
    #[arg(long, value_name = "N", default_value_t = 64, requires = "http",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions: u32,
    /// Seconds an HTTP connection may take to send a request's headers (and may stay idle
    /// between requests) before it is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, requires = "http",
          value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Over --http, also serve the 2026-07-28 protocol, which has no sessions: each request
    /// stands alone, so set_context is refused there (policy_evaluate takes a `context`).
    /// Clients of the handshake-era versions keep their sessions.
    #[arg(long, requires = "http")]
    stateless: bool,
    /// Database to manage (else DATABASE_URL, else the PG* variables); attached at start.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The database's id in the ledger (its stream); default `host:port/dbname`.
    #[arg(long, env = "LOCKPLANE_DB_ID", value_name = "ID")]
    db_id: Option<String>,
    /// What agents may run through apply_sql / explain_sql: read-only, data or schema.
    #[arg(long, value_name = "MODE", default_value = "schema")]
    access_mode: AccessMode,
    /// A role set_context may switch to (repeatable); none by default.
    #[arg(long = "allowed-role", value_name = "ROLE")]
    allowed_roles: Vec<String>,
    /// Server where plans are proven on shadow databases (a role that may create databases);
    /// default: a throwaway cluster from the local Postgres binaries, started on first use.
    #[arg(long, value_name = "URL")]
    shadow_url: Option<String>,
    /// Do not dry-run plans (and their reverse) on the shadow before recording them.
    #[arg(long)]
    no_dry_run: bool,
    #[command(flatten)]
    locks: crate::cli::plan::LockArgs,
    /// Keep live's reproduction on the --shadow-url server for the next plan (a server that
    /// is Lockplane's alone); the throwaway shadow cluster always does.
    #[arg(long, env = "LOCKPLANE_KEEP_SHADOW")]
    keep_shadow: bool,
    /// Check for drift on a schedule (`30s`, `5m`, `1h`): introspect, and record
    /// `DriftDetected` (once per drift) when the live schema is not what the ledger recorded;
    /// `check_drift` answers with the latest. Each change of state is logged on stderr.
    #[arg(long, value_name = "INTERVAL", value_parser = crate::cli::parse_interval)]
    drift_every: Option<Duration>,
    /// The most bytes one tool answer may take; a larger one is cut and answered with a
    /// `result_too_large` error (common clients refuse messages over 10 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = answer::DEFAULT_MAX_RESULT_BYTES,
          value_parser = max_result_bytes)]
    max_result_bytes: usize,
}

fn max_result_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text.parse().map_err(|e| format!("{e}"))?;
    if bytes < answer::MIN_MAX_RESULT_BYTES {
        return Err(format!("at least {} bytes", answer::MIN_MAX_RESULT_BYTES));
    }
    Ok(bytes)
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum ServeError {
    /// The runtime failed to open the ledger or attach the database. (Not a `source`: the
    /// message already holds the whole cause, and a renderer walking sources would repeat it.)
    #[error("{0}")]
    #[diagnostic(code(lockplane::serve::runtime))]
    Runtime(lockplane_actors::Error),
    /// No database to manage, or its connection string is wrong.
    #[error("{0}")]
    #[diagnostic(
        code(lockplane::serve::database),
        help("pass --database-url, or set DATABASE_URL or the PG* variables")
    )]
    Database(lockplane_engine::connect::ConnectError),
    /// The MCP transport failed.
    #[error("MCP transport: {0}")]
    #[diagnostic(code(lockplane::serve::transport))]
    Transport(String),
    /// The HTTP listener or the token failed.
    #[error("{0}")]
    #[diagnostic(code(lockplane::serve::http))]
    Http(String),
}

impl From<lockplane_actors::Error> for ServeError {
    fn from(e: lockplane_actors::Error) -> Self {
        ServeError::Runtime(e)
    }
}

impl From<lockplane_engine::connect::ConnectError> for ServeError {
    fn from(e: lockplane_engine::connect::ConnectError) -> Self {
        ServeError::Database(e)
    }
}

/// Runs `lockplane serve` until the client disconnects (stdio) or the process is interrupted.
pub(crate) async fn run(at: &LedgerAt, actor: &str, args: ServeArgs) -> Result<(), ServeError> {
    // Flag problems first, before the ledger is opened and the database attached.
    let token = match args.http {
        Some(addr) => {
            http::check_address(addr, args.allow_remote)?;
            http::check_origins(&args.allowed_origins)?;
            Some(http::token(args.token_file.as_deref())?)
        }
        None => None,
    };
    let url = database_target(args.database_url.as_deref())?;
    let mut config = Config::new(at.location.clone());
    config.ledger_wait = at.wait;
    config.access_mode = args.access_mode;
    config.allowed_roles = args.allowed_roles.clone();
    config.dry_run = !args.no_dry_run;
    args.locks.configure(&mut config);
    config.keep_reproductions = args.keep_shadow;
    if let Some(shadow) = &args.shadow_url {
        config.shadow = ShadowConfig::Url(shadow.clone());
    }
    let runtime = Lockplane::open(config).await?;
    let db = runtime.attach(&url, args.db_id.as_deref()).await?;
    if let Some(every) = args.drift_every {
        tokio::spawn(watch_drift(runtime.clone(), db.clone(), every));
    }
    let shared = Shared {
        runtime,
        db,
        actor: actor.to_owned(),
        max_result_bytes: args.max_result_bytes,
        http: args.http.is_some(),
        stateless: args.stateless,
    };
    match (args.http, token) {
        (Some(addr), Some(token)) => {
            let options = http::HttpOptions {
                addr,
                token,
                allow_remote: args.allow_remote,
                allowed_origins: args.allowed_origins,
                max_sessions: args.max_sessions as usize,
                header_timeout: Duration::from_secs(args.header_timeout),
            };
            http::serve(shared, options).await
        }
        _ => serve_stdio(shared).await,
    }
}

/// Checks for drift every `every` for as long as the server runs (the same runtime call as the
/// `check_drift` tool, as actor `lockplane-drift`), logging each change of state.
async fn watch_drift(runtime: Lockplane, db: lockplane_actors::DatabaseId, every: Duration) {
    let mut last: Option<(bool, String)> = None;
    loop {
        tokio::time::sleep(every).await;
        match runtime.check_drift(&db, "lockplane-drift").await {
            Ok(d) => {
                let state = (d.drifted, d.live_hash.0.clone());
                if last.as_ref() != Some(&state) {
                    if d.drifted {
                        eprintln!(
                            "lockplane: drift on {}: live {} (recorded as seq {}){}",
                            d.database,
                            d.live_hash,
                            d.seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                            d.differences
                                .iter()
                                .map(|x| format!("\n  {x}"))
                                .collect::<String>()
                        );
                    } else if last.is_some() {
                        eprintln!("lockplane: no drift on {}", d.database);
                    }
                    last = Some(state);
                }
            }
            Err(e) => eprintln!("lockplane: drift check failed: {e}"),
        }
    }
}

/// One session over stdin/stdout; returns when the client closes the pipe.
async fn serve_stdio(shared: Shared) -> Result<(), ServeError> {
    eprintln!(
        "lockplane: MCP server on stdio for {} ({} access)",
        shared.db,
        shared.runtime.access_mode()
    );
    let (stdin, stdout) = rmcp::transport::stdio();
    let service = LockplaneMcp::new(shared)
        .serve(stdio::LineTransport::new(stdin, stdout))
        .await
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    service
        .waiting()
        .await
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    // The runtime stops with its last handle; give the actor thread a moment to flush.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

/// The connection string to attach: the flag, `DATABASE_URL`, or a libpq key/value string
/// built from the `PG*` variables (the runtime attaches by string, and resolves it again with
/// the same environment). The resolution's warnings (a password file skipped) are not
/// printed here: the attach error carries them when the connection fails for want of a
/// password.
pub(crate) fn database_target(flag: Option<&str>) -> Result<String, ServeError> {
    let target = lockplane_engine::connect::resolve(flag)?;
    if let Some(url) = flag {
        return Ok(url.to_owned());
    }
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        return Ok(url);
    }
    Ok(target.to_key_value())
}
