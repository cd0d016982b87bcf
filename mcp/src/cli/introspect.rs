//! `lockplane introspect`: read a live database into its manifest, print it, and record the
//! reading in the ledger.

use clap::ValueEnum;
use lockplane_engine::connect;
use lockplane_engine::events::{self, CatalogIntrospected, Event};
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

/// Runs `lockplane introspect`.
pub(crate) async fn run(at: &ledger::LedgerAt, actor: &str, args: Args) -> Result<(), CliError> {
    // Open the ledger first: if another process holds it, say so before doing any work.
    let store = if args.no_ledger {
        None
    } else {
        Some(ledger::open(at)?)
    };
    let config = super::resolve_target(args.database_url.as_deref())?;
    // Two connections sharing one snapshot: the server reads the catalog with two backends.
    let connect_one = || connect::connect(&config);
    let (client, helper) = tokio::join!(connect_one(), connect_one());
    let (mut client, mut helper) = (client?, helper?);
    let server_version = client
        .query_one("SHOW server_version", &[])
        .await
        .ok()
        .and_then(|row| row.try_get::<_, String>(0).ok());
    let schemas = args.schemas.clone();
    let catalog =
        introspect_parallel(&mut client, &mut helper, &IntrospectOptions { schemas }).await?;
    let manifest = Manifest::new(catalog).map_err(|e| CliError::Output(e.to_string()))?;
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

    if let Some(store) = &store {
        let (bytes, address) =
            events::manifest_blob(&manifest).map_err(|e| CliError::Output(e.to_string()))?;
        let event = Event::CatalogIntrospected(CatalogIntrospected {
            actor: actor.to_owned(),
            database: args
                .db_id
                .clone()
                .unwrap_or_else(|| events::database_id(&config.pg)),
            catalog_hash: manifest.catalog_hash.clone(),
            manifest: address.clone(),
            schemas: args.schemas,
            server_version,
        });
        let head = ledger::record(store.as_ref(), &event, &[(&bytes, &address)])?;
        eprintln!(
            "lockplane: recorded {} of {} as seq {} in {}",
            event.kind(),
            event.database(),
            head.seq,
            at.location
        );
    }
    print(&text)
}
