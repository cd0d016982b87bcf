//! Where a database is and how to reach it, the way libpq does it: a URL or key/value string,
//! else `DATABASE_URL`, else the `PG*` variables; then the `PG*` variables and the files under
//! `~/.postgresql/` and `~/.pgpass` fill in what the string leaves out.
//!
//! - [`resolve`] / [`resolve_with`]: the string and the environment → a [`ConnTarget`]
//!   (tokio-postgres' settings plus TLS, timeout and password-file warnings);
//! - [`connect`]: TLS per `sslmode`, the whole start-up bounded by `connect_timeout`
//!   (default [`DEFAULT_CONNECT_TIMEOUT`]), errors with the server's own words
//!   ([`describe_error`]);
//! - [`libpq_env`]: the same target for `pg_dump` and `psql`;
//! - [`cancel_query`]: cancelling a statement on the server over the session's TLS mode.

mod params;
mod passfile;
mod tls;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{CancelToken, Client, Config};

pub use tls::{tls_connector, RootCerts, SslMode, TlsSettings};

/// How long a connection's start-up (TCP, TLS, authentication, Lockplane's session settings)
/// may take when neither `connect_timeout` nor `PGCONNECT_TIMEOUT` says.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors finding or reaching a database. Each message holds its whole cause (the server's
/// words, the TLS or socket error) and no [`std::error::Error::source`], so it is shown once.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing says which database to use.
    #[error(
        "no database given: pass --database-url postgres://user@host:port/dbname, \
         or set DATABASE_URL, or the PGHOST/PGPORT/PGUSER/PGDATABASE variables"
    )]
    NoTarget,
    /// The URL or key/value string (or a `PG*` variable) is malformed.
    #[error("invalid connection string `{shown}`: {reason}")]
    Invalid {
        /// The connection string, with any password removed.
        shown: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS settings cannot be used (a certificate file missing or unreadable, a mode
    /// that needs a root certificate without one).
    #[error("cannot connect to {shown}: {reason}")]
    Tls {
        /// Where we meant to connect, without the password.
        shown: String,
        /// What is wrong.
        reason: String,
    },
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to {shown}: {reason}")]
    Connect {
        /// Where we tried to connect, without the password.
        shown: String,
        /// Why it failed: the server's message, detail and hint with its SQLSTATE, or the
        /// socket or TLS error, and what to do about it.
        reason: String,
        /// The server's SQLSTATE, when the server refused.
        code: Option<String>,
    },
    /// The start-up did not finish within `connect_timeout`.
    #[error(
        "cannot connect to {shown}: no answer from {host} within {} s (connect_timeout): \
         check that a Postgres server listens there, or give it longer with connect_timeout \
         in the connection string or PGCONNECT_TIMEOUT (seconds; 0 waits forever)",
        .after.as_secs_f64()
    )]
    Timeout {
        /// Where we tried to connect, without the password.
        shown: String,
        /// The host and port that did not answer.
        host: String,
        /// The limit that passed.
        after: Duration,
    },
}

/// Where to connect and how: tokio-postgres' settings plus what they cannot hold.
#[derive(Debug, Clone)]
pub struct ConnTarget {
    /// Host, port, user, database, password, application name… (`sslmode` in it is only
    /// tokio-postgres' coarse view of [`TlsSettings::mode`]).
    pub pg: Config,
    /// `sslmode` and the certificate files.
    pub tls: TlsSettings,
    /// The limit on the whole start-up; `None` waits forever (`connect_timeout=0`).
    pub connect_timeout: Option<Duration>,
    /// What resolving noticed and the user should hear (a password file ignored because
    /// others can read it). Repeated in the error when the connection then fails.
    pub warnings: Vec<String>,
}

impl From<Config> for ConnTarget {
    /// A target from tokio-postgres settings built in code (throwaway clusters, tests): its
    /// `sslmode` (disable, prefer or require) without certificate files, its
    /// `connect_timeout` or the default.
    fn from(pg: Config) -> ConnTarget {
        let mode = match pg.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let connect_timeout = Some(
            pg.get_connect_timeout()
                .copied()
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        );
        ConnTarget {
            pg,
            tls: TlsSettings {
                mode,
                ..TlsSettings::default()
            },
            connect_timeout,
            warnings: Vec::new(),
        }
    }
}

impl ConnTarget {
    /// The target as a libpq key/value connection string, every value quoted: what
    /// [`resolve`] reads back into the same target (password included, so never show it).
    pub fn to_key_value(&self) -> String {
        let quote = params::quote;
        let mut parts = Vec::new();
        let hosts: Vec<String> = self.pg.get_hosts().iter().map(host_text).collect();
        if !hosts.is_empty() {
            parts.push(format!("host={}", quote(&hosts.join(","))));
        }
        let addrs: Vec<String> = self
            .pg
            .get_hostaddrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        if !addrs.is_empty() {
            parts.push(format!("hostaddr={}", quote(&addrs.join(","))));
        }
        let ports: Vec<String> = self.pg.get_ports().iter().map(|p| p.to_string()).collect();
        if !ports.is_empty() {
            parts.push(format!("port={}", quote(&ports.join(","))));
        }
        if let Some(user) = self.pg.get_user() {
            parts.push(format!("user={}", quote(user)));
        }
        if let Some(dbname) = self.pg.get_dbname() {
            parts.push(format!("dbname={}", quote(dbname)));
        }
        if let Some(password) = self.pg.get_password() {
            parts.push(format!(
                "password={}",
                quote(&String::from_utf8_lossy(password))
            ));
        }
        if let Some(app) = self.pg.get_application_name() {
            parts.push(format!("application_name={}", quote(app)));
        }
        if let Some(options) = self.pg.get_options() {
            parts.push(format!("options={}", quote(options)));
        }
        for (key, value) in self.tls_params() {
            parts.push(format!("{key}={}", quote(&value)));
        }
        parts.join(" ")
    }

    /// `sslmode`, `sslrootcert`, `sslcert`, `sslkey` and `connect_timeout` as libpq reads them.
    fn tls_params(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("sslmode", self.tls.mode.as_str().to_owned())];
        if let Some(root) = &self.tls.root_cert {
            out.push(("sslrootcert", root.as_param()));
        }
        if let Some(cert) = &self.tls.cert {
            out.push(("sslcert", cert.display().to_string()));
        }
        if let Some(key) = &self.tls.key {
            out.push(("sslkey", key.display().to_string()));
        }
        out.push((
            "connect_timeout",
            self.connect_timeout
                .map(|t| t.as_secs().max(1).to_string())
                .unwrap_or_else(|| "0".into()),
        ));
        out
    }

    /// [`describe`] of the target, with its `sslmode` when that is not libpq's default.
    pub fn describe(&self) -> String {
        let shown = describe(&self.pg);
        if self.tls.mode == SslMode::Prefer {
            shown
        } else {
            format!("{shown}?sslmode={}", self.tls.mode)
        }
    }
}

/// Resolves connection settings from `url` (else `DATABASE_URL`, else the `PG*` variables)
/// and the process environment; see [`resolve_with`].
pub fn resolve(url: Option<&str>) -> Result<ConnTarget, ConnectError> {
    resolve_with(url, &|name| std::env::var(name).ok())
}

/// Resolves connection settings as libpq does, reading the environment through `env`:
///
/// 1. the string: `url` if given, else `DATABASE_URL`; without either, the `PG*` variables
///    alone (at least one of `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE` must be set);
/// 2. what the string leaves out comes from `PGHOST` (default `localhost`), `PGHOSTADDR`, `PGPORT`,
///    `PGUSER` (default: the operating-system user), `PGDATABASE` (default: the user),
///    `PGPASSWORD`, `PGAPPNAME` (default `lockplane`), `PGSSLMODE` (default `prefer`),
///    `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` (defaults: `root.crt`, `postgresql.crt`,
///    `postgresql.key` under `~/.postgresql/` when they exist), `PGCONNECT_TIMEOUT` (default
///    [`DEFAULT_CONNECT_TIMEOUT`]);
/// 3. still no password: the password file (`passfile`, `PGPASSFILE`, else `~/.pgpass`),
///    skipped with a warning when the group or others can read it.
pub fn resolve_with(
    url: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConnTarget, ConnectError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let text = url.map(str::to_owned).or_else(|| var("DATABASE_URL"));
    let (mut pg, given, shown) = match &text {
        Some(text) => {
            let shown = params::redact(text);
            let (rest, given) = params::split(text);
            let pg = Config::from_str(&rest).map_err(|e| ConnectError::Invalid {
                shown: shown.clone(),
                reason: describe_error(&e),
            })?;
            (pg, given, shown)
        }
        None => {
            if ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE"]
                .iter()
                .all(|name| var(name).is_none())
            {
                return Err(ConnectError::NoTarget);
            }
            (
                Config::new(),
                Vec::new(),
                "the PG* environment variables".to_owned(),
            )
        }
    };
    let invalid = |reason: String| ConnectError::Invalid {
        shown: shown.clone(),
        reason,
    };
    // A parameter of the string, else its variable.
    let param = |key: &str, variable: &str| {
        given
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| var(variable))
    };

    if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
        let hosts =
            var("PGHOST").or_else(|| var("PGHOSTADDR").is_none().then(|| "localhost".into()));
        for host in hosts.iter().flat_map(|h| h.split(',')) {
            pg.host(host);
        }
    }
    if pg.get_hostaddrs().is_empty() {
        if let Some(addrs) = var("PGHOSTADDR") {
            for addr in addrs.split(',') {
                let addr = addr.parse().map_err(|_| {
                    invalid(format!("PGHOSTADDR `{addrs}` is not a numeric IP address"))
                })?;
                pg.hostaddr(addr);
            }
        }
    }
    if pg.get_ports().is_empty() {
        if let Some(ports) = var("PGPORT") {
            for port in ports.split(',') {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| invalid(format!("PGPORT `{ports}` is not a port number")))?;
                pg.port(port);
            }
        }
    }
    if pg.get_user().is_none() {
        let user = var("PGUSER")
            .or_else(os_user)
            .unwrap_or_else(|| "postgres".into());
        pg.user(user);
    }
    if pg.get_dbname().is_none() {
        let db = var("PGDATABASE").unwrap_or_else(|| pg.get_user().unwrap_or("postgres").into());
        pg.dbname(db);
    }
    if pg.get_password().is_none() {
        if let Some(password) = var("PGPASSWORD") {
            pg.password(password);
        }
    }
    if pg.get_application_name().is_none() {
        pg.application_name(var("PGAPPNAME").unwrap_or_else(|| "lockplane".into()));
    }

    let home = var("HOME").map(PathBuf::from);
    let in_home = |name: &str| {
        home.as_ref()
            .map(|h| h.join(".postgresql").join(name))
            .filter(|p| p.exists())
    };
    let mode = match param("sslmode", "PGSSLMODE") {
        Some(text) => SslMode::parse(&text).ok_or_else(|| {
            invalid(format!(
                "sslmode `{text}` is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            ))
        })?,
        None => SslMode::Prefer,
    };
    let root_cert = match param("sslrootcert", "PGSSLROOTCERT") {
        Some(text) if text == "system" => Some(RootCerts::System),
        Some(text) => Some(RootCerts::File(PathBuf::from(text))),
        None => in_home("root.crt").map(RootCerts::File),
    };
    let cert = param("sslcert", "PGSSLCERT")
        .map(PathBuf::from)
        .or_else(|| in_home("postgresql.crt"));
    let key = param("sslkey", "PGSSLKEY").map(PathBuf::from).or_else(|| {
        cert.as_ref().and(
            home.as_ref()
                .map(|h| h.join(".postgresql").join("postgresql.key")),
        )
    });
    let tls = TlsSettings {
        mode,
        root_cert,
        cert,
        key,
    };
    // tokio-postgres knows disable / prefer / require; verification is the connector's.
    // libpq ignores sslmode on Unix sockets (the server offers no TLS there).
    let all_unix =
        pg.get_hostaddrs().is_empty() && pg.get_hosts().iter().all(|h| !matches!(h, Host::Tcp(_)));
    pg.ssl_mode(match mode {
        _ if all_unix => tokio_postgres::config::SslMode::Disable,
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });

    let connect_timeout = match param("connect_timeout", "PGCONNECT_TIMEOUT") {
        Some(text) => {
            let secs = text.trim().parse::<i64>().map_err(|_| {
                invalid(format!(
                    "connect_timeout `{text}` is not a number of seconds"
                ))
            })?;
            // libpq: 0 (or less) waits forever; 1 is taken as 2.
            (secs > 0).then(|| Duration::from_secs(secs.max(2) as u64))
        }
        None => Some(DEFAULT_CONNECT_TIMEOUT),
    };

    let mut warnings = Vec::new();
    if pg.get_password().is_none() {
        let file = param("passfile", "PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".pgpass")));
        if let Some(file) = file {
            let (host, port) = host_port(&pg);
            let lookup = passfile::Lookup {
                host: &host,
                port,
                database: pg.get_dbname().unwrap_or_default(),
                user: pg.get_user().unwrap_or_default(),
            };
            if let Some(password) = passfile::password(&file, &lookup, &mut warnings) {
                pg.password(password);
            }
        }
    }
    Ok(ConnTarget {
        pg,
        tls,
        connect_timeout,
        warnings,
    })
}

/// The user this process runs as, libpq's default user name.
fn os_user() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwuid_r writes into `pwd` and
    // `buf` only, and `result` points to `pwd` or is null. The name is copied out before
    // `buf` goes away.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

fn host_text(host: &Host) -> String {
    match host {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    }
}

/// The first host (a name, or a socket directory) and port of `config`, with Postgres'
/// defaults where unset.
pub fn host_port(config: &Config) -> (String, u16) {
    let host = config
        .get_hosts()
        .first()
        .map(host_text)
        .or_else(|| config.get_hostaddrs().first().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host, port)
}

/// libpq's connection variables: a client program started for a [`libpq_env`] target has
/// these removed from what it inherits first, so that only the target decides where and how it
/// connects (a user's `PGHOSTADDR` or `PGSSLROOTCERT` meant for live must not reach the psql
/// restoring into a shadow).
pub const LIBPQ_VARIABLES: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLNEGOTIATION",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLROOTCERT",
    "PGSSLCRL",
    "PGSSLCRLDIR",
    "PGSSLSNI",
    "PGCONNECT_TIMEOUT",
    "PGCHANNELBINDING",
    "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS",
];

/// The libpq environment (`PGHOST`, `PGHOSTADDR`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
/// `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`,
/// `PGCONNECT_TIMEOUT`, `PGAPPNAME`) that makes a Postgres client program (`pg_dump`, `psql`)
/// connect where and how `target` does, so that no password ever appears on a command line.
pub fn libpq_env(target: &ConnTarget) -> Vec<(&'static str, String)> {
    let config = &target.pg;
    let hosts: Vec<String> = config.get_hosts().iter().map(host_text).collect();
    let (first, port) = host_port(config);
    let mut env = vec![(
        "PGHOST",
        if hosts.is_empty() {
            first
        } else {
            hosts.join(",")
        },
    )];
    let addrs: Vec<String> = config
        .get_hostaddrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    if !addrs.is_empty() {
        env.push(("PGHOSTADDR", addrs.join(",")));
    }
    let ports: Vec<String> = config.get_ports().iter().map(|p| p.to_string()).collect();
    env.push((
        "PGPORT",
        if ports.is_empty() {
            port.to_string()
        } else {
            ports.join(",")
        },
    ));
    if let Some(user) = config.get_user() {
        env.push(("PGUSER", user.to_owned()));
    }
    if let Some(password) = config.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(password).into_owned()));
    }
    if let Some(db) = config.get_dbname() {
        env.push(("PGDATABASE", db.to_owned()));
    }
    for (key, value) in target.tls_params() {
        let name = match key {
            "sslmode" => "PGSSLMODE",
            "sslrootcert" => "PGSSLROOTCERT",
            "sslcert" => "PGSSLCERT",
            "sslkey" => "PGSSLKEY",
            _ => "PGCONNECT_TIMEOUT",
        };
        env.push((name, value));
    }
    env.push(("PGAPPNAME", "lockplane".to_owned()));
    env
}

/// A description of `config` fit for messages and logs: never the password.
pub fn describe(config: &Config) -> String {
    let (host, port) = host_port(config);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

/// A tokio-postgres error with everything it knows: for an error the server sent, its
/// severity, message, SQLSTATE, detail and hint (tokio-postgres' own Display says only "db
/// error"); otherwise the error and each of its causes (socket, TLS, configuration).
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut out = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            out.push_str(&format!("\nDETAIL: {detail}"));
        }
        if let Some(hint) = db.hint() {
            out.push_str(&format!("\nHINT: {hint}"));
        }
        return out;
    }
    let mut parts = vec![e.to_string()];
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cause = c.source();
    }
    // tokio-postgres' generic words before a precise cause add nothing.
    if parts.len() > 1
        && ["invalid connection string", "invalid configuration"].contains(&parts[0].as_str())
    {
        parts.remove(0);
    }
    parts.join(": ")
}

/// [`describe_error`] of a failed connection, with what to do about the usual causes.
fn explain(e: &tokio_postgres::Error, target: &ConnTarget) -> String {
    let mut out = describe_error(e);
    let mut hints: Vec<String> = Vec::new();
    let text = out.clone();
    let password_problem = text.contains("password missing")
        || e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD);
    if text.contains("password missing") {
        hints.push(
            "the server asks for a password and none was given: put it in the connection \
             string, set PGPASSWORD, or add a line for this server to the password file \
             (PGPASSFILE, default ~/.pgpass)"
                .into(),
        );
    }
    if e.as_db_error()
        .is_some_and(|db| db.message().contains("no encryption"))
        && !target.tls.mode.requires_tls()
    {
        hints.push(
            "this server accepts the connection only over TLS: connect with sslmode=require, \
             or sslmode=verify-full with sslrootcert to also check the server's certificate"
                .into(),
        );
    }
    if text.contains("server does not support TLS") {
        hints.push(format!(
            "sslmode={} needs TLS and this server does not offer it (its `ssl` setting is \
             off): turn it on, or connect with sslmode=prefer",
            target.tls.mode
        ));
    }
    if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
        let roots = target
            .tls
            .root_cert
            .as_ref()
            .map(RootCerts::as_param)
            .unwrap_or_else(|| "(none)".into());
        hints.push(format!(
            "the server's certificate is not signed by a certificate authority in \
             sslrootcert ({roots}): point sslrootcert (or PGSSLROOTCERT) at the CA that \
             signed it"
        ));
    }
    if text.contains("not valid for name") || text.contains("NotValidForName") {
        hints.push(format!(
            "the server's certificate does not name the host `{}`: connect by a name the \
             certificate holds, or use sslmode=verify-ca to check the chain only",
            host_port(&target.pg).0
        ));
    }
    if password_problem {
        hints.extend(target.warnings.iter().cloned());
    }
    for hint in hints {
        out.push_str("; ");
        out.push_str(&hint);
    }
    out
}

/// How long any statement on a Lockplane session waits for a lock before it fails, unless the
/// statement sets its own (`SET LOCAL lock_timeout` in an apply). A catalog read that meets a
/// table someone holds in `ACCESS EXCLUSIVE` fails with `lock_not_available` after this long
/// instead of stalling every caller behind it.
pub const SESSION_LOCK_TIMEOUT_MS: u64 = 5_000;

/// The settings pinned on every session Lockplane opens, whatever the server, database or
/// role says. `standard_conforming_strings` and `backslash_quote` decide how a backslash in a
/// string literal lexes: the SQL guard parses with Postgres' defaults (`on`, `safe_encoding`),
/// and a server lexing otherwise would see different statements in the same text (a quote the
/// guard reads as escaped ends the literal there). `lock_timeout`: see
/// [`SESSION_LOCK_TIMEOUT_MS`].
pub fn pinned_settings() -> String {
    format!(
        "SET standard_conforming_strings = on; SET backslash_quote = safe_encoding; \
         SET lock_timeout = '{SESSION_LOCK_TIMEOUT_MS}ms'"
    )
}

/// Connects to `target` and pins [`pinned_settings`]: TLS as `target.tls` says, the whole
/// start-up (TCP, TLS, authentication, the settings) within `target.connect_timeout`. The
/// connection task is spawned on the current tokio runtime and ends when the client is
/// dropped.
pub async fn connect(target: &ConnTarget) -> Result<Client, ConnectError> {
    let shown = target.describe();
    let tls = tls_connector(&target.tls).map_err(|reason| ConnectError::Tls {
        shown: shown.clone(),
        reason,
    })?;
    let start = async {
        let (client, connection) = target.pg.connect(tls).await?;
        tokio::spawn(async move {
            // The error surfaces on the client's next call; nothing else can be done with it
            // here.
            let _ = connection.await;
        });
        client.batch_execute(&pinned_settings()).await?;
        Ok::<_, tokio_postgres::Error>(client)
    };
    let timed_out = |after: Duration| {
        let (host, port) = host_port(&target.pg);
        ConnectError::Timeout {
            shown: shown.clone(),
            host: format!("{host}:{port}"),
            after,
        }
    };
    let result = match target.connect_timeout {
        Some(limit) => tokio::time::timeout(limit, start)
            .await
            .map_err(|_| timed_out(limit))?,
        None => start.await,
    };
    result.map_err(|e| {
        // tokio-postgres' own per-socket timeout (a Config built in code may set one).
        let io_timeout = std::error::Error::source(&e)
            .and_then(|c| c.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        match (io_timeout, target.pg.get_connect_timeout()) {
            (true, Some(limit)) => timed_out(*limit),
            _ => ConnectError::Connect {
                shown: shown.clone(),
                reason: explain(&e, target),
                code: e.code().map(|c| c.code().to_owned()),
            },
        }
    })
}

/// [`resolve`] then [`connect`].
pub async fn connect_to(url: Option<&str>) -> Result<Client, ConnectError> {
    connect(&resolve(url)?).await
}

/// Asks the server to cancel what the session of `token` is running. The request travels on
/// a connection of its own, over TLS when the session's `sslmode` asks for it; the server's
/// certificate is not checked there: the request carries only the session's cancel key, never
/// a credential, and libpq's `PQcancel` sends it in plain text. Best effort: a failure only
/// means the server-side timeout is the remaining guard.
pub async fn cancel_query(token: &CancelToken) {
    let _ = token.cancel_query(tls::cancel_connector()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn rejects_malformed_urls() {
        let err = resolve_with(Some("postgres://me@db:notaport/x"), &env(&[])).unwrap_err();
        assert!(matches!(err, ConnectError::Invalid { .. }), "{err}");
        let err =
            resolve_with(Some("postgres://me@db/x?sslmode=sometimes"), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("verify-full"), "{err}");
        let err = resolve_with(Some("postgres://me:pw@db/x?bogus=1"), &env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown option `bogus`"), "{text}");
        assert!(!text.contains("pw@"), "{text}");
    }

    #[test]
    fn nothing_given_is_no_target() {
        let err = resolve_with(None, &env(&[("PGPASSWORD", "x")])).unwrap_err();
        assert!(matches!(err, ConnectError::NoTarget), "{err}");
    }

    #[test]
    fn verify_modes_and_files_come_from_the_url() {
        let t = resolve_with(
            Some(
                "postgres://me@db:6543/x?sslmode=verify-full&sslrootcert=/ca.pem&\
                 sslcert=/c.pem&sslkey=/k.pem&connect_timeout=7",
            ),
            &env(&[]),
        )
        .expect("resolves");
        assert_eq!(t.tls.mode, SslMode::VerifyFull);
        assert_eq!(t.tls.root_cert, Some(RootCerts::File("/ca.pem".into())));
        assert_eq!(t.tls.cert.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(t.tls.key.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(t.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(
            t.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(host_port(&t.pg), ("db".to_owned(), 6543));
        let kv = resolve_with(
            Some("host=db user=me dbname=x sslmode=verify-ca sslrootcert=system"),
            &env(&[]),
        )
        .expect("resolves");
        assert_eq!(kv.tls.mode, SslMode::VerifyCa);
        assert_eq!(kv.tls.root_cert, Some(RootCerts::System));
    }

    #[test]
    fn the_environment_fills_in_what_the_string_leaves_out() {
        let vars = env(&[
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLROOTCERT", "/env-ca.pem"),
            ("PGSSLCERT", "/env-c.pem"),
            ("PGSSLKEY", "/env-k.pem"),
            ("PGPASSWORD", "from-env"),
            ("PGCONNECT_TIMEOUT", "3"),
        ]);
        let t = resolve_with(Some("postgres://me@db/x"), &vars).expect("resolves");
        assert_eq!(t.tls.mode, SslMode::VerifyCa);
        assert_eq!(t.tls.root_cert, Some(RootCerts::File("/env-ca.pem".into())));
        assert_eq!(t.tls.cert.as_deref(), Some(Path::new("/env-c.pem")));
        assert_eq!(t.tls.key.as_deref(), Some(Path::new("/env-k.pem")));
        assert_eq!(t.pg.get_password(), Some(&b"from-env"[..]));
        assert_eq!(t.connect_timeout, Some(Duration::from_secs(3)));
        // The string wins over the environment.
        let t = resolve_with(
            Some("postgres://me:given@db/x?sslmode=disable&connect_timeout=0"),
            &vars,
        )
        .expect("resolves");
        assert_eq!(t.tls.mode, SslMode::Disable);
        assert_eq!(t.pg.get_password(), Some(&b"given"[..]));
        assert_eq!(t.connect_timeout, None, "0 waits forever");
        // Defaults.
        let t = resolve_with(Some("postgres://me@db/x"), &env(&[])).expect("resolves");
        assert_eq!(t.tls, TlsSettings::default());
        assert_eq!(t.connect_timeout, Some(DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(t.pg.get_application_name(), Some("lockplane"));
        // The PG* variables alone.
        let t = resolve_with(
            None,
            &env(&[("PGHOST", "h"), ("PGPORT", "5433"), ("PGUSER", "u")]),
        )
        .expect("resolves");
        assert_eq!(describe(&t.pg), "postgres://u@h:5433/u");
        // libpq: a timeout of 1 s is taken as 2.
        let t = resolve_with(Some("postgres://me@db/x?connect_timeout=1"), &env(&[]))
            .expect("resolves");
        assert_eq!(t.connect_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_password_file_fills_a_missing_password() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "db:5432:x:me:from-file\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let path = file.display().to_string();
        let vars = env(&[("PGPASSFILE", &path)]);
        let t = resolve_with(Some("postgres://me@db/x"), &vars).expect("resolves");
        assert_eq!(t.pg.get_password(), Some(&b"from-file"[..]));
        // PGPASSWORD comes first; then ~/.pgpass when no PGPASSFILE.
        let t = resolve_with(
            Some("postgres://me@db/x"),
            &env(&[("PGPASSFILE", &path), ("PGPASSWORD", "env")]),
        )
        .expect("resolves");
        assert_eq!(t.pg.get_password(), Some(&b"env"[..]));
        std::fs::rename(&file, dir.path().join(".pgpass")).expect("rename");
        let home = dir.path().display().to_string();
        let t =
            resolve_with(Some("postgres://me@db/x"), &env(&[("HOME", &home)])).expect("resolves");
        assert_eq!(t.pg.get_password(), Some(&b"from-file"[..]));
        // Group-readable: ignored, with a warning.
        let file = dir.path().join(".pgpass");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let t =
            resolve_with(Some("postgres://me@db/x"), &env(&[("HOME", &home)])).expect("resolves");
        assert_eq!(t.pg.get_password(), None);
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(t.warnings[0].contains("0600"), "{:?}", t.warnings);
    }

    #[test]
    fn key_value_round_trip() {
        let t = resolve_with(
            Some(
                "postgres://me:p%27w@db:6000/x?sslmode=verify-full&sslrootcert=/ca.pem&\
                 connect_timeout=4&application_name=app",
            ),
            &env(&[]),
        )
        .expect("resolves");
        let back = resolve_with(Some(&t.to_key_value()), &env(&[])).expect("resolves");
        assert_eq!(back.to_key_value(), t.to_key_value());
        assert_eq!(back.pg.get_password(), Some(&b"p'w"[..]));
        assert_eq!(back.tls, t.tls);
        assert_eq!(back.connect_timeout, t.connect_timeout);
        let env = libpq_env(&t);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGSSLMODE"), Some("verify-full"));
        assert_eq!(get("PGSSLROOTCERT"), Some("/ca.pem"));
        assert_eq!(get("PGCONNECT_TIMEOUT"), Some("4"));
        assert_eq!(get("PGPASSWORD"), Some("p'w"));
    }
}
