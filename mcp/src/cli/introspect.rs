//! `lockplane introspect`: read a live database into its manifest, print it, and record the
//! reading in the ledger.

use clap::ValueEnum;
use lockplane_engine::connect;
use lockplane_engine::{introspect_parallel, IntrospectOptions, Manifest};

use super::{ledger, print, CliError};

/// Flags of `lockplane introspect`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Database to read (else DATABASE_URL, else the PG* variables).
    #[arg(long)]
    database_url: Option<String>,
    /// Output format: `json`, the manifest `{catalog, catalog_hash}`; `yaml`, the catalog as a
    /// DSL document (reproduces the catalog when planned against an empty database) whose
    /// `base:` is the hash read: planned later, it keeps what others changed since.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Only this schema (repeatable). All user schemas when omitted.
    #[arg(long = "schema", value_name = "NAME")]
    schemas: Vec<String>,
    /// Read only: don't record the introspection in the ledger (and don't open it).
    #[arg(long)]
    no_ledger: bool,
    /// The database's id in the ledger (its stream); default `host:port/dbname`.
    #[arg(long, env = "LOCKPLANE_DB_ID", value_name = "ID")]
    db_id: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Yaml,
}

/// Runs `lockplane introspect`: through the runtime (which records the reading), or, with
/// `--no-ledger`, as a plain read (nothing is recorded or serialised, so no runtime is
/// started and the catalog is read once).
pub(crate) async fn run(at: &ledger::LedgerAt, actor: &str, args: Args) -> Result<(), CliError> {
    let manifest = if args.no_ledger {
        let config = super::resolve_target(args.database_url.as_deref())?;
        // Two connections sharing one snapshot: the server reads the catalog with two backends.
        let connect_one = || connect::connect(&config);
        let (client, helper) = tokio::join!(connect_one(), connect_one());
        let (mut client, mut helper) = (client?, helper?);
        let schemas = args.schemas.clone();
        let catalog =
            introspect_parallel(&mut client, &mut helper, &IntrospectOptions { schemas }).await?;
        Manifest::new(catalog).map_err(|e| CliError::Output(e.to_string()))?
    } else {
        let runtime = super::plan::runtime(at, super::plan::Settings::default()).await?;
        // The reading below is the first look, when there was none: no separate baseline.
        let db = super::plan::attach_with(
            &runtime,
            args.database_url.as_deref(),
            args.db_id.as_deref(),
            false,
        )
        .await?;
        let seen = runtime
            .introspect_schemas(&db, actor, &args.schemas)
            .await?;
        eprintln!(
            "lockplane: recorded CatalogIntrospected of {} as seq {} in {}",
            seen.database, seen.seq, at.location
        );
        Manifest {
            catalog: seen.catalog,
            catalog_hash: seen.catalog_hash,
        }
    };
    let text = match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&manifest).map_err(|e| CliError::Output(e.to_string()))?
        }
        // `base:` records the hash read, so the document, edited and planned later, merges
        // three ways rather than reverting what others changed in between.
        Format::Yaml => lockplane_engine::dsl::to_yaml_with_base(
            &manifest.catalog,
            Some(&manifest.catalog_hash),
        ),
    };
    print(&text)
}
