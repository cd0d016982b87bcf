//! Where a database is and how to reach it: a URL, `DATABASE_URL`, or the usual `PG*`
//! variables, resolved in that order.

use std::str::FromStr;

use tokio_postgres::{Client, Config, NoTls};

/// Errors finding or reaching a database.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing says which database to use.
    #[error(
        "no database given: pass --database-url postgres://user@host:port/dbname, \
         or set DATABASE_URL, or the PGHOST/PGPORT/PGUSER/PGDATABASE variables"
    )]
    NoTarget,
    /// The URL or key/value string is malformed.
    #[error("invalid connection string `{shown}`: {source}")]
    Invalid {
        /// The connection string, with any password removed.
        shown: String,
        /// The parser's reason.
        source: tokio_postgres::Error,
    },
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to {shown}: {source}")]
    Connect {
        /// Where we tried to connect, without the password.
        shown: String,
        /// Why it failed.
        source: tokio_postgres::Error,
    },
}

/// Resolves connection settings: `url` if given, else `DATABASE_URL`, else `PG*` variables.
pub fn resolve(url: Option<&str>) -> Result<Config, ConnectError> {
    let from_env = std::env::var("DATABASE_URL").ok();
    if let Some(url) = url.or(from_env.as_deref()) {
        return Config::from_str(url).map_err(|source| ConnectError::Invalid {
            shown: redact(url),
            source,
        });
    }
    from_pg_env().ok_or(ConnectError::NoTarget)
}

fn from_pg_env() -> Option<Config> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let host = var("PGHOST");
    let port = var("PGPORT");
    let user = var("PGUSER");
    let dbname = var("PGDATABASE");
    if host.is_none() && port.is_none() && user.is_none() && dbname.is_none() {
        return None;
    }
    let mut config = Config::new();
    config.host(host.as_deref().unwrap_or("localhost"));
    if let Some(port) = port.and_then(|p| p.parse::<u16>().ok()) {
        config.port(port);
    }
    let user = user
        .or_else(|| var("USER"))
        .unwrap_or_else(|| "postgres".into());
    config.dbname(dbname.as_deref().unwrap_or(&user));
    config.user(&user);
    if let Some(password) = var("PGPASSWORD") {
        config.password(password);
    }
    config.application_name(var("PGAPPNAME").unwrap_or_else(|| "lockplane".into()));
    Some(config)
}

/// The first host (a name, or a socket directory) and port of `config`, with Postgres'
/// defaults where unset.
pub fn host_port(config: &Config) -> (String, u16) {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host, port)
}

/// The libpq environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
/// `PGSSLMODE`) that makes a Postgres client program (`pg_dump`, `psql`) connect where
/// `config` does, so that no password ever appears on a command line.
pub fn libpq_env(config: &Config) -> Vec<(&'static str, String)> {
    let (host, port) = host_port(config);
    let mut env = vec![("PGHOST", host), ("PGPORT", port.to_string())];
    if let Some(user) = config.get_user() {
        env.push(("PGUSER", user.to_owned()));
    }
    if let Some(password) = config.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(password).into_owned()));
    }
    if let Some(db) = config.get_dbname() {
        env.push(("PGDATABASE", db.to_owned()));
    }
    let mode = match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => "disable",
        tokio_postgres::config::SslMode::Require => "require",
        _ => "prefer",
    };
    env.push(("PGSSLMODE", mode.to_owned()));
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

fn redact(url: &str) -> String {
    // postgres://user:secret@host → postgres://user:***@host
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, tail)) = rest.split_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{tail}");
            }
        }
    }
    url.to_owned()
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

/// Connects with `config` and pins [`pinned_settings`]; the connection task is spawned on the
/// current tokio runtime and ends when the client is dropped.
pub async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        // The error surfaces on the client's next call; nothing else can be done with it here.
        let _ = connection.await;
    });
    client.batch_execute(&pinned_settings()).await?;
    Ok(client)
}

/// [`resolve`] then [`connect`], with errors that say where.
pub async fn connect_to(url: Option<&str>) -> Result<Client, ConnectError> {
    let config = resolve(url)?;
    connect(&config)
        .await
        .map_err(|source| ConnectError::Connect {
            shown: describe(&config),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://me:hunter2@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redact("postgres://me@db/x"), "postgres://me@db/x");
    }

    #[test]
    fn rejects_malformed_urls() {
        let err = resolve(Some("postgres://me@db:notaport/x")).unwrap_err();
        assert!(matches!(err, ConnectError::Invalid { .. }), "{err}");
    }
}
