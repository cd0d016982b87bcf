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
