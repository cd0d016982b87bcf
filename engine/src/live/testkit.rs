//! Helpers for tests, benchmarks and demos that need a real server: one throwaway cluster per
//! process, shared, and a fresh database per caller so they stay independent.
//!
//! The shared cluster lives in a `static` and is never dropped; its reaper process (see
//! [`crate::cluster`]) stops it and removes its directory when the process exits.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::cluster::{Cluster, ClusterError};

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The process-wide shared cluster, started on first use.
pub fn shared_cluster() -> Result<&'static Cluster, ClusterError> {
    let started = SHARED.get_or_init(|| Cluster::start_default().map_err(|e| e.to_string()));
    started.as_ref().map_err(|message| ClusterError::Failed {
        program: "throwaway cluster".into(),
        status: "not started".into(),
        output: message.clone(),
    })
}

/// Creates a new, empty database on the shared cluster and returns its name.
pub async fn fresh_database(prefix: &str) -> Result<String, ClusterError> {
    let cluster = shared_cluster()?;
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    cluster.create_database(&name).await?;
    Ok(name)
}

/// Environment variable naming the folder of corpus schemas (Chinook, Pagila).
pub const CORPUS_ENV: &str = "LOCKPLANE_CORPUS";

/// The SQL of corpus schema `file` (e.g. `pagila-schema.sql`), from `$LOCKPLANE_CORPUS` or the
/// `shared/corpus` folder beside the repository. `None`, with a one-line notice on stderr,
/// when neither has it (a user's clone has no `shared/`).
pub fn corpus_sql(file: &str) -> Option<String> {
    let dir = std::env::var_os(CORPUS_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
        });
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(sql) => Some(sql),
        Err(_) => {
            eprintln!(
                "corpus {} not found (set {CORPUS_ENV}); skipping",
                path.display()
            );
            None
        }
    }
}

/// The README's DSL example (the YAML block starting with the `users` table), read from the
/// repository's README.md: tests run it through every surface, so the README cannot drift
/// from what works.
pub fn readme_dsl_example() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_default();
    let marker = "```yaml\nversion: 1\nschemas:\n  public:\n    tables:\n      users:";
    let Some(start) = readme.find(marker) else {
        return String::new();
    };
    let body = &readme[start + "```yaml\n".len()..];
    body[..body.find("```").unwrap_or(body.len())].to_owned()
}

/// SQL that installs a DDL log Lockplane cannot see (the `lockplane` schema is never part of
/// a catalog): event triggers write each DDL command's backend, transaction and time into
/// `lockplane.ddl_log`. Concurrency tests read it with [`ddl_transactions`] to prove, from
/// Postgres' own record, that no two applies ran DDL at the same time.
pub const DDL_LOG: &str = "
CREATE SCHEMA lockplane;
CREATE TABLE lockplane.ddl_log (
    id bigserial PRIMARY KEY, pid int NOT NULL, xid bigint NOT NULL,
    at timestamptz NOT NULL, tag text NOT NULL);
CREATE FUNCTION lockplane.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO lockplane.ddl_log (pid, xid, at, tag)
  VALUES (pg_backend_pid(), txid_current(), clock_timestamp(), TG_TAG);
END $$;
CREATE EVENT TRIGGER lp_ddl_start ON ddl_command_start EXECUTE FUNCTION lockplane.log_ddl();
CREATE EVENT TRIGGER lp_ddl_end ON ddl_command_end EXECUTE FUNCTION lockplane.log_ddl();
";

/// How many transactions ran DDL according to the [`DDL_LOG`]; `Err` names the first two
/// whose spans (first to last logged command) intersect.
pub async fn ddl_transactions(client: &tokio_postgres::Client) -> Result<usize, String> {
    let rows = client
        .query(
            "SELECT xid, min(at)::text, max(at)::text, min(at) AS s, max(at) AS e \
             FROM lockplane.ddl_log GROUP BY xid ORDER BY s",
            &[],
        )
        .await
        .map_err(|e| format!("reading lockplane.ddl_log: {e}"))?;
    type Span = (
        i64,
        String,
        String,
        std::time::SystemTime,
        std::time::SystemTime,
    );
    let spans: Vec<Span> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    for pair in spans.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.3 <= a.4 {
            return Err(format!(
                "transactions {} ({} – {}) and {} ({} – {}) ran DDL at the same time",
                a.0, a.1, a.2, b.0, b.1, b.2
            ));
        }
    }
    Ok(spans.len())
}
