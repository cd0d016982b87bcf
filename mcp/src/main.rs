//! `lockplane`: the command-line interface for humans and CI. Every command is a thin call
//! into the library; errors are rendered for humans with miette.

use std::io::Write;

use clap::{Parser, Subcommand, ValueEnum};
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
