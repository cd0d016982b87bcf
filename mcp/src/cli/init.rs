//! `lockplane init`: creates the least-privilege roles (`lp_migrator`, `lp_runtime_read`,
//! `lp_runtime_write`), hands the managed schemas to `lp_migrator` and installs the helper
//! schema. Run once by a role that may create roles and change owners (a DBA); prints the SQL
//! first, `--dry-run` only prints it. Idempotent.

use std::path::PathBuf;

use lockplane_engine::init::{init_sql, InitOptions};

use super::{print, CliError};

/// Flags of `lockplane init`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The database, as a role that may create roles and change owners (else DATABASE_URL,
    /// else the PG* variables).
    #[arg(long)]
    database_url: Option<String>,
    /// A schema Lockplane manages (repeatable; default `public`).
    #[arg(long = "schema", value_name = "NAME")]
    schemas: Vec<String>,
    /// Give lp_migrator CREATEROLE (only for documents that create roles).
    #[arg(long)]
    create_role: bool,
    /// A file holding lp_migrator's password (else its password is left as it is).
    #[arg(long, value_name = "FILE")]
    migrator_password_file: Option<PathBuf>,
    /// Only print the SQL.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `lockplane init`.
pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let password = match &args.migrator_password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| CliError::Read {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
        None => None,
    };
    let sql = init_sql(&InitOptions {
        schemas: args.schemas,
        create_role: args.create_role,
        password,
    });
    let shown: String = sql
        .iter()
        .map(|s| {
            // The password is not printed.
            let s = match s.find(" PASSWORD '") {
                Some(at) => format!("{} PASSWORD '…'", &s[..at]),
                None => s.clone(),
            };
            format!("{s};\n")
        })
        .collect();
    print(shown.trim_end())?;
    if args.dry_run {
        return Ok(());
    }
    let target = super::resolve_target(args.database_url.as_deref())?;
    let client = lockplane_engine::connect::connect(&target).await?;
    let batch = format!("BEGIN;\n{};\nCOMMIT", sql.join(";\n"));
    if let Err(e) = client.batch_execute(&batch).await {
        let _ = client.batch_execute("ROLLBACK").await;
        let why = lockplane_engine::exec::PgFailure::from_error(&e).describe("");
        return Err(CliError::Refused(format!(
            "init changed nothing: {why}; run it as a role that may create roles and change \
             the owners of the managed schemas' objects (a superuser, or the owner with \
             CREATEROLE)"
        )));
    }
    eprintln!(
        "lockplane: roles lp_migrator, lp_runtime_read, lp_runtime_write ready; plan and apply \
         as lp_migrator"
    );
    Ok(())
}
