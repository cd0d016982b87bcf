//! `lockplane sandbox`: a throwaway Postgres cluster for demos and trials.

use std::io::Write;
use std::path::PathBuf;

use lockplane_engine::cluster::{Cluster, PgBinaries};

use super::CliError;

/// Starts a cluster, prints `DATABASE_URL=…`, waits for stdin to close or a signal, stops it.
pub(crate) async fn run(pg_bin: Option<PathBuf>) -> Result<(), CliError> {
    let cluster = tokio::task::spawn_blocking(move || {
        Cluster::start(&PgBinaries::locate(pg_bin.as_deref())?)
    })
    .await
    .map_err(|e| CliError::Output(e.to_string()))??;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "DATABASE_URL={}", cluster.url("postgres"))
            .and_then(|_| out.flush())
            .map_err(|e| CliError::Output(e.to_string()))?;
    }
    eprintln!(
        "lockplane: Postgres {} running on port {}; close stdin or press Ctrl-C to stop it",
        cluster.major_version(),
        cluster.port()
    );
    // A plain thread, not tokio's stdin: a read blocked in tokio's blocking pool would keep the
    // runtime (and so the process) alive after a signal has stopped the cluster.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let stdin_closed = async {
        let _ = closed_rx.await;
    };
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .map_err(|e| CliError::Output(e.to_string()))??;
    Ok(())
}
