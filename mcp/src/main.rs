//! `lockplane`: the command-line interface for humans and CI. Every command is a thin call
//! into the library; errors are rendered for humans with miette.

use std::io::Write;

use clap::{Parser, Subcommand, ValueEnum};
use lockplane_engine::cluster::{Cluster, ClusterError, PgBinaries};
use lockplane_engine::connect::{self, ConnectError};
use lockplane_engine::{introspect, IntrospectError, IntrospectOptions, Manifest};
use miette::Diagnostic;

#[derive(Parser)]
#[command(
    name = "lockplane",
    version,
    about = "Plan, apply and audit Postgres schema changes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read a live database into its canonical catalog manifest and print it with its hash.
    Introspect {
        /// Database to read (else DATABASE_URL, else the PG* variables).
        #[arg(long)]
        database_url: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Only this schema (repeatable). All user schemas when omitted.
        #[arg(long = "schema", value_name = "NAME")]
        schemas: Vec<String>,
    },
    /// Start a throwaway Postgres cluster, print `DATABASE_URL=…`, and keep it running until
    /// standard input closes or the process is interrupted; then stop and delete it.
    Sandbox {
        /// Directory holding initdb/pg_ctl/postgres (else $LOCKPLANE_PG_BIN, PATH,
        /// /usr/lib/postgresql/*/bin).
        #[arg(long)]
        pg_bin: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Yaml,
}

/// Everything the CLI can fail with, with the help a human needs to act on it.
#[derive(Debug, thiserror::Error, Diagnostic)]
enum CliError {
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
}

#[tokio::main]
async fn main() -> miette::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Introspect {
            database_url,
            format,
            schemas,
        } => run_introspect(database_url.as_deref(), format, schemas).await?,
        Command::Sandbox { pg_bin } => run_sandbox(pg_bin).await?,
    }
    Ok(())
}

async fn run_introspect(
    url: Option<&str>,
    format: Format,
    schemas: Vec<String>,
) -> Result<(), CliError> {
    let mut client = connect::connect_to(url).await?;
    let catalog = introspect(&mut client, &IntrospectOptions { schemas }).await?;
    let manifest = Manifest::new(catalog).map_err(|e| CliError::Output(e.to_string()))?;
    let text = match format {
        Format::Json => {
            serde_json::to_string_pretty(&manifest).map_err(|e| CliError::Output(e.to_string()))?
        }
        Format::Yaml => {
            serde_saphyr::to_string(&manifest).map_err(|e| CliError::Output(e.to_string()))?
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| CliError::Output(e.to_string()))?;
    Ok(())
}

async fn run_sandbox(pg_bin: Option<std::path::PathBuf>) -> Result<(), CliError> {
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
    let stdin_closed = async {
        use tokio::io::AsyncReadExt;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
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
