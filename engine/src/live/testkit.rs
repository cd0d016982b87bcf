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
