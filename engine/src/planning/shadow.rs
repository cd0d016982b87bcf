//! Shadow databases (DESIGN §4): prove a plan, and its reverse, on a faithful copy of live
//! before the real apply touches anything.
//!
//! [`Shadow::reproduce`] copies the live database's schema with Postgres' own
//! `pg_dump --schema-only`, restored with `psql` into a database on a shadow server (a
//! throwaway cluster of the live server's major version when one is installed, else the
//! newest, or a server given by URL), after creating live's role names there (`NOLOGIN`):
//! functions, triggers, domains, partitions, materialized views and every other object
//! Lockplane does not model are there too, so the shadow's catalog hash must equal live's, and
//! a reproduction that does not is an error ([`ShadowError::NotFaithful`]). Nothing live lacks
//! is installed: whatever a plan needs (Lockplane's helpers) is a step of the plan.
//!
//! That reproduction is kept as a template; each use works on a fresh clone of it
//! (`CREATE DATABASE … TEMPLATE`, by file copy on Postgres 15 and later). On a shadow server
//! that outlives the run (`--shadow-url`, the server `lockplane serve` starts), the proven
//! reproduction is kept after the run as `lockplane_kept_<key>`, the key being the SHA3 of
//! pg_dump's and the server's versions, live's catalog hash and the dump itself: the next plan
//! against the same live database dumps and reads it again (that is how it knows it is the
//! same) but restores nothing. The three most recent are kept.
//! - [`Shadow::materialize`] turns a desired catalog into the catalog Postgres stores for it
//!   (casts, defaults, spellings, and what cascades), by planning from live to it and running
//!   that on a clone;
//! - [`Shadow::prove`] runs a plan on a clone exactly as the executor will run it live,
//!   records the hash after each phase and at the end (the plan's target is what the shadow
//!   reached, see [`Plan::with_proof`]), then runs the reverse plan and requires the base again.
//!
//! pg_dump takes `ACCESS SHARE` on every table it dumps; it runs with `--lock-wait-timeout` so
//! that a reproduction never queues behind (and in front of) another session's `ALTER`. pg_dump
//! refuses servers newer than itself: the shadow's own pg_dump is used when it is new enough,
//! else the oldest installed one that is (`ShadowReport::dump_tool` says which).
//!
//! [`materialize`] (a free function) builds a catalog on an empty database instead: for
//! documents that do not start from a live database (tests, the corpus round trip).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio_postgres::Client;

use crate::catalog::Catalog;
use crate::cluster::PgBinaries;
use crate::cluster::{Cluster, ClusterError};
use crate::diff::Renames;
use crate::exec::{self, ApplyError, ApplyOptions, ApplyReport, PgFailure};
use crate::exec::{ProgressSink, StepProgress};
use crate::hash::{catalog_hash, CanonicalError, CatalogHash};
use crate::ident::{quote_ident, quote_literal};
use crate::introspect::{introspect, IntrospectError, IntrospectOptions};
use crate::plan::{plan, reverse, Plan, PlanError, Refusal, Step, TableStats};

/// Where the shadow database is created.
#[derive(Debug, Clone, Copy, Default)]
pub enum ShadowTarget<'a> {
    /// A throwaway cluster started for this run and stopped after it (needs the Postgres
    /// server binaries, see [`Cluster::start_default`]).
    #[default]
    Throwaway,
    /// A cluster already running (e.g. [`crate::testkit::shared_cluster`]); a fresh database
    /// is created on it and dropped after.
    Cluster(&'a Cluster),
    /// A server given by URL (`--shadow-url`), connected to as a role that may create
    /// databases; a fresh database is created on it and dropped after.
    Url(&'a str),
}

/// How a plan is proven.
#[derive(Debug, Clone)]
pub struct ShadowOptions {
    /// The renames the plan was made with (the reverse plan needs them to rename back).
    pub renames: Renames,
    /// The live table sizes the plan was made with, to grade the reverse plan's hazards as
    /// they would be on the real database (unknown tables count as populated).
    pub stats: TableStats,
    /// Timeouts and retries for the statements run on the shadow (the advisory lock and the
    /// resume point are not used there).
    pub apply: ApplyOptions,
    /// Keep the reproduction on the shadow server for later runs
    /// ([`Shadow::reproduce_keeping`]).
    pub keep: bool,
}

impl Default for ShadowOptions {
    fn default() -> Self {
        ShadowOptions {
            renames: Renames::none(),
            stats: TableStats::default(),
            apply: ApplyOptions::default(),
            keep: false,
        }
    }
}

/// The live database a shadow copies.
#[derive(Clone, Copy)]
pub struct LiveSource<'a> {
    /// A connection to it (roles and the server version are read through it).
    pub client: &'a Client,
    /// How to connect to it: `pg_dump` connects with these settings. Its catalog is read
    /// on pg_dump's snapshot ([`Shadow::base`]), not taken from the caller.
    pub config: &'a crate::connect::ConnTarget,
}

/// What a successful proof established.
#[derive(Debug, Clone)]
pub struct ShadowReport {
    /// The hash the shadow held before the plan: live's.
    pub base_hash: CatalogHash,
    /// The hash the shadow reached after the plan: the plan's true target.
    pub target_hash: CatalogHash,
    /// The catalog the shadow reached.
    pub target: Catalog,
    /// The hash after each phase, keyed by the id of the step that ends it.
    pub reached: BTreeMap<String, CatalogHash>,
    /// What running the plan did on the shadow.
    pub forward: ApplyReport,
    /// The reverse plan, proven to bring the shadow back to `base_hash`; `None` when the
    /// planner refuses to reverse (see `reverse_refused`).
    pub reverse: Option<Plan>,
    /// What running the reverse plan did on the shadow.
    pub reverse_run: Option<ApplyReport>,
    /// Why the plan has no reverse (for example, enum labels that cannot be removed).
    pub reverse_refused: Vec<Refusal>,
    /// The pg_dump that reproduced live (`pg_dump (PostgreSQL) 15.18 …`) and the shadow
    /// server's version.
    pub dump_tool: String,
}

/// Why a shadow could not be made or a proof failed.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// The shadow cluster or database could not be set up.
    #[error("cannot set up the shadow database: {0}")]
    Cluster(#[from] ClusterError),
    /// The shadow server given by URL could not be reached or used.
    #[error("cannot use the shadow server {shown}: {}", crate::connect::describe_error(.source))]
    Server {
        /// The server (without password).
        shown: String,
        /// Why.
        source: tokio_postgres::Error,
    },
    /// The shadow URL could not be read.
    #[error(transparent)]
    Url(#[from] crate::connect::ConnectError),
    /// pg_dump could not dump the live schema.
    #[error("dumping the live schema with {tool} failed: {message}")]
    Dump {
        /// The pg_dump used.
        tool: String,
        /// What it said.
        message: String,
    },
    /// The dump could not be restored on the shadow.
    #[error(
        "restoring the live schema on the shadow ({server}) failed: {message}; the shadow \
         cannot be a faithful copy of live (an extension missing from the shadow's server is \
         the usual cause)"
    )]
    Restore {
        /// The shadow server's version.
        server: String,
        /// What psql said.
        message: String,
    },
    /// The reproduction does not hash like live.
    #[error(
        "the shadow restored from live's pg_dump hashes to {shadow}, live to {live}{}; a proof \
         on it would not say what live will do",
        if differences.is_empty() { String::new() } else { format!(" (differs in: {})", differences.join(", ")) }
    )]
    NotFaithful {
        /// Live's hash.
        live: CatalogHash,
        /// The shadow's.
        shadow: CatalogHash,
        /// What differs.
        differences: Vec<String>,
    },
    /// The plan was made from another catalog than the live one the shadow copies.
    #[error(
        "the plan's base {base} is not the live catalog {live}: the database changed since \
         the plan was made; introspect and plan again"
    )]
    BaseNotLive {
        /// The plan's base.
        base: CatalogHash,
        /// Live's hash.
        live: CatalogHash,
    },
    /// Re-creating a catalog on an empty shadow failed ([`materialize`]).
    #[error(
        "creating the desired schema on the shadow failed: the document asks for something \
         this Postgres refuses (fix the document): {0}"
    )]
    Reproduce(#[source] Box<ApplyError>),
    /// The plan failed on the shadow: the real apply would fail the same way.
    #[error("the plan fails on the shadow database: {0}")]
    Forward(#[source] Box<ApplyError>),
    /// The reverse plan failed on the shadow: the plan cannot be rolled back as planned.
    #[error("the reverse plan fails on the shadow database (the plan could not be undone): {0}")]
    Reverse(#[source] Box<ApplyError>),
    /// Planning (the materialisation or the reverse) failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Reading the shadow's catalog failed.
    #[error(transparent)]
    Introspect(#[from] IntrospectError),
    /// Hashing failed.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// A shadow setup statement failed.
    #[error("preparing the shadow database failed ({what}): {}", crate::connect::describe_error(.source))]
    Setup {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: tokio_postgres::Error,
    },
}

impl ShadowError {
    /// The failing step (id, SQL, and Postgres' error with its position), when a step failed.
    pub fn failed_step(&self) -> Option<(&str, &str, &PgFailure)> {
        match self {
            ShadowError::Reproduce(e) | ShadowError::Forward(e) | ShadowError::Reverse(e) => {
                match e.as_ref() {
                    ApplyError::StepFailed {
                        step_id,
                        sql,
                        failure,
                        ..
                    } => Some((step_id.as_str(), sql.as_str(), failure)),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// A scratch database and how to get rid of it.
struct Scratch<'a> {
    owned: Option<Cluster>,
    borrowed: Option<&'a Cluster>,
    /// Maintenance connection settings for a URL target.
    server: Option<crate::connect::ConnTarget>,
    name: String,
    client: Client,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn scratch_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "lockplane_shadow_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl<'a> Scratch<'a> {
    async fn create(target: ShadowTarget<'a>) -> Result<Scratch<'a>, ShadowError> {
        let name = scratch_name();
        match target {
            ShadowTarget::Throwaway => {
                // initdb and pg_ctl block for a second or two: keep them off the runtime.
                let cluster = tokio::task::spawn_blocking(Cluster::start_default)
                    .await
                    .map_err(|e| ClusterError::Io {
                        what: "starting the throwaway cluster".into(),
                        source: std::io::Error::other(e.to_string()),
                    })??;
                cluster.create_database(&name).await?;
                let client = cluster.connect(&name).await?;
                Ok(Scratch {
                    owned: Some(cluster),
                    borrowed: None,
                    server: None,
                    name,
                    client,
                })
            }
            ShadowTarget::Cluster(cluster) => {
                cluster.create_database(&name).await?;
                let client = cluster.connect(&name).await?;
                Ok(Scratch {
                    owned: None,
                    borrowed: Some(cluster),
                    server: None,
                    name,
                    client,
                })
            }
            ShadowTarget::Url(url) => {
                let config = crate::connect::resolve(Some(url))?;
                let shown = config.describe();
                let server_err = |source| ShadowError::Server {
                    shown: shown.clone(),
                    source,
                };
                let admin = crate::connect::connect(&config).await?;
                admin
                    .batch_execute(&format!(
                        "CREATE DATABASE {} TEMPLATE template0",
                        quote_ident(&name)
                    ))
                    .await
                    .map_err(server_err)?;
                let mut db = config.clone();
                db.pg.dbname(&name);
                let client = crate::connect::connect(&db).await?;
                Ok(Scratch {
                    owned: None,
                    borrowed: None,
                    server: Some(config),
                    name,
                    client,
                })
            }
        }
    }

    /// Drops the database (or stops the throwaway cluster). Best effort: a leftover scratch
    /// database is harmless and named `lockplane_shadow_…`.
    async fn destroy(self) {
        let Scratch {
            owned,
            borrowed,
            server,
            name,
            client,
        } = self;
        // Our own session would block the drop.
        drop(client);
        if let Some(cluster) = owned {
            let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
        } else if let Some(cluster) = borrowed {
            let _ = cluster.drop_database(&name).await;
        } else if let Some(config) = &server {
            if let Ok(admin) = crate::connect::connect(config).await {
                let _ = admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(&name)
                    ))
                    .await;
            }
        }
    }
}

/// Every role a catalog grants to or names in a policy, except `public`.
pub(crate) fn roles_of(catalog: &Catalog) -> Vec<String> {
    let mut roles = std::collections::BTreeSet::new();
    for schema in catalog.schemas.values() {
        for table in schema.tables.values() {
            roles.extend(table.grants.iter().map(|g| g.grantee.clone()));
            for column in table.columns.values() {
                roles.extend(column.grants.iter().map(|g| g.grantee.clone()));
            }
            for policy in table.rls.policies.values() {
                roles.extend(policy.roles.iter().cloned());
            }
        }
        for view in schema.views.values() {
            roles.extend(view.grants.iter().map(|g| g.grantee.clone()));
        }
        for sequence in schema.sequences.values() {
            roles.extend(sequence.grants.iter().map(|g| g.grantee.clone()));
        }
    }
    roles.remove("public");
    roles.into_iter().collect()
}

/// Prepares a fresh shadow database for `catalog`: Lockplane's helpers (policies may call
/// them) and the roles it names.
async fn prepare(client: &Client, catalog: &Catalog) -> Result<(), ShadowError> {
    let setup = |what| move |source| ShadowError::Setup { what, source };
    client
        .batch_execute(&crate::dsl::helpers::install_sql())
        .await
        .map_err(setup("installing Lockplane's helper functions"))?;
    for role in roles_of(catalog) {
        // Roles are cluster-wide and other runs may create the same one concurrently.
        let sql = format!(
            "DO $lockplane$ BEGIN \
               IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {lit}) THEN \
                 CREATE ROLE {ident} NOLOGIN; \
               END IF; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $lockplane$",
            lit = quote_literal(&role),
            ident = quote_ident(&role)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(setup("creating the roles the schema names"))?;
    }
    Ok(())
}

/// Builds `catalog` (minus its unsupported objects) on the scratch database and returns what
/// Postgres stored.
async fn build(
    client: &mut Client,
    catalog: &Catalog,
    opts: &ApplyOptions,
) -> Result<Catalog, ShadowError> {
    let mut wanted = catalog.clone();
    wanted.unsupported.clear();
    prepare(client, &wanted).await?;
    let fresh = introspect(client, &IntrospectOptions::default()).await?;
    let create = plan(
        &fresh,
        &wanted,
        &Renames::none(),
        &TableStats::all_empty(&fresh),
        "lockplane-shadow",
    )?;
    let opts = ApplyOptions {
        advisory_lock: false,
        // The reproduction is checked against the caller's expectation instead.
        check_hashes: false,
        resume_after: None,
        progress: None,
        ..opts.clone()
    };
    exec::apply(client, &create, &opts, Some(&create.plan_id))
        .await
        .map_err(|e| ShadowError::Reproduce(Box::new(e)))?;
    Ok(introspect(client, &IntrospectOptions::default()).await?)
}

/// The catalog Postgres stores for `desired` (typically a DSL document's catalog): `desired`
/// is built on a fresh shadow database and read back, so defaults, casts and spellings are
/// Postgres' own. Unsupported objects listed in `desired` cannot be built; they are carried
/// over unchanged into the result (the planner compares them by name only).
pub async fn materialize(
    desired: &Catalog,
    target: ShadowTarget<'_>,
) -> Result<Catalog, ShadowError> {
    let mut scratch = Scratch::create(target).await?;
    let built = build(&mut scratch.client, desired, &ApplyOptions::default()).await;
    scratch.destroy().await;
    let mut catalog = built?;
    catalog.unsupported = desired.unsupported.clone();
    catalog.canonicalize();
    Ok(catalog)
}

/// Where the shadow's databases live.
enum Server<'a> {
    Owned(Cluster),
    Borrowed(&'a Cluster),
    Url(Box<crate::connect::ConnTarget>),
}

impl Server<'_> {
    fn config(&self, dbname: &str) -> crate::connect::ConnTarget {
        match self {
            Server::Owned(c) => c.config(dbname).into(),
            Server::Borrowed(c) => c.config(dbname).into(),
            Server::Url(config) => {
                let mut config = (**config).clone();
                config.pg.dbname(dbname);
                config
            }
        }
    }

    /// The maintenance database: where databases are created and dropped from.
    fn admin_db(&self) -> String {
        match self {
            Server::Url(config) => config.pg.get_dbname().unwrap_or("postgres").to_owned(),
            _ => "postgres".to_owned(),
        }
    }

    fn binaries(&self) -> Option<&PgBinaries> {
        match self {
            Server::Owned(c) => Some(c.binaries()),
            Server::Borrowed(c) => Some(c.binaries()),
            Server::Url(_) => None,
        }
    }

    async fn connect(&self, dbname: &str) -> Result<Client, ShadowError> {
        Ok(crate::connect::connect(&self.config(dbname)).await?)
    }

    async fn create_database(&self, name: &str, template: &str) -> Result<(), ShadowError> {
        let admin = self.connect(&self.admin_db()).await?;
        // Postgres 15 copies a template block by block through the WAL by default; copying
        // its files is about twice as fast for a catalog-only database (a checkpoint, cheap
        // on a shadow server).
        let version: i32 = admin
            .query_one(
                "SELECT pg_catalog.current_setting('server_version_num')::int",
                &[],
            )
            .await
            .map_err(|source| ShadowError::Setup {
                what: "reading the shadow server's version",
                source,
            })?
            .get(0);
        let strategy = if version >= 150000 {
            " STRATEGY FILE_COPY"
        } else {
            ""
        };
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE {}{strategy}",
                quote_ident(name),
                quote_ident(template)
            ))
            .await
            .map_err(|source| ShadowError::Setup {
                what: "creating a shadow database",
                source,
            })
    }

    /// Best effort: a leftover shadow database is harmless and named `lockplane_shadow_…`.
    async fn drop_database(&self, name: &str) {
        if let Ok(admin) = self.connect(&self.admin_db()).await {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(name)
                ))
                .await;
        }
    }
}

/// A faithful copy of a live database's schema, kept as a template for clones (see the
/// module docs). [`Shadow::destroy`] removes it.
pub struct Shadow<'a> {
    server: Server<'a>,
    template: String,
    /// Reproductions are kept on this server ([`Shadow::reproduce_keeping`]).
    keep: bool,
    /// The template is a kept reproduction (see [`Shadow::reproduce`]): not dropped after use.
    kept: bool,
    /// A clone of the template made while live was being dumped, for the first use.
    spare: Mutex<Option<String>>,
    base: Catalog,
    base_hash: CatalogHash,
    dump_tool: String,
}

/// Collects the hash after each phase of a proof.
#[derive(Default)]
struct PhaseHashes(Mutex<BTreeMap<String, CatalogHash>>);

impl ProgressSink for PhaseHashes {
    fn step_applied(&self, progress: &StepProgress) -> Result<(), String> {
        if let Ok(mut map) = self.0.lock() {
            map.insert(progress.step_id.clone(), progress.catalog_hash.clone());
        }
        Ok(())
    }
}

impl<'a> Shadow<'a> {
    /// Copies `live`'s schema onto `target` (see the module docs). `lock_wait` bounds how long
    /// pg_dump waits for a table lock.
    pub async fn reproduce(
        live: &LiveSource<'_>,
        target: ShadowTarget<'a>,
        lock_wait: Duration,
    ) -> Result<Shadow<'a>, ShadowError> {
        Shadow::reproduce_keeping(live, target, lock_wait, false).await
    }

    /// [`Shadow::reproduce`], keeping the proven reproduction on the shadow server after use
    /// when `keep` (see the module docs), and starting from a kept one when there is one for
    /// this very dump. For a shadow server that is Lockplane's alone: kept databases name
    /// live's roles, which then cannot be dropped on that server until the databases are.
    #[tracing::instrument(level = "debug", name = "shadow.reproduce", skip_all)]
    pub async fn reproduce_keeping(
        live: &LiveSource<'_>,
        target: ShadowTarget<'a>,
        lock_wait: Duration,
        keep: bool,
    ) -> Result<Shadow<'a>, ShadowError> {
        let setup = |what| move |source| ShadowError::Setup { what, source };
        let live_major: u32 = live
            .client
            .query_one(
                "SELECT pg_catalog.current_setting('server_version_num')::int / 10000",
                &[],
            )
            .await
            .map_err(setup("reading the live server's version"))?
            .get::<_, i32>(0)
            .try_into()
            .unwrap_or(0);
        let server = match target {
            ShadowTarget::Throwaway => {
                let bins = PgBinaries::for_server(live_major)?;
                // initdb and pg_ctl block for a second or two: keep them off the runtime.
                let cluster = tokio::task::spawn_blocking(move || Cluster::start(&bins))
                    .await
                    .map_err(|e| ClusterError::Io {
                        what: "starting the throwaway cluster".into(),
                        source: std::io::Error::other(e.to_string()),
                    })??;
                Server::Owned(cluster)
            }
            ShadowTarget::Cluster(cluster) => Server::Borrowed(cluster),
            ShadowTarget::Url(url) => Server::Url(Box::new(crate::connect::resolve(Some(url))?)),
        };
        // A throwaway cluster goes with this run: nothing to keep there.
        let keep = keep && !matches!(server, Server::Owned(_));
        let mut shadow = Shadow {
            server,
            template: scratch_name(),
            keep,
            kept: false,
            spare: Mutex::new(None),
            base: Catalog::default(),
            base_hash: CatalogHash(String::new()),
            dump_tool: String::new(),
        };
        match shadow.fill(live, live_major, lock_wait).await {
            Ok(()) => Ok(shadow),
            Err(e) => {
                shadow.destroy().await;
                Err(e)
            }
        }
    }

    async fn fill(
        &mut self,
        live: &LiveSource<'_>,
        live_major: u32,
        lock_wait: Duration,
    ) -> Result<(), ShadowError> {
        let setup = |what| move |source| ShadowError::Setup { what, source };
        let tools = PgBinaries::pg_dump_for(live_major, self.server.binaries())?;
        let admin = self.server.connect(&self.server.admin_db()).await?;
        let shadow_version: String = admin
            .query_one("SELECT pg_catalog.version()", &[])
            .await
            .map_err(setup("reading the shadow server's version"))?
            .get(0);
        let shadow_version = shadow_version
            .split(" on ")
            .next()
            .unwrap_or(&shadow_version)
            .to_owned();
        self.dump_tool = format!(
            "pg_dump {} onto {shadow_version}",
            tools.version.split_whitespace().nth(2).unwrap_or("?")
        );

        // Role names first: owners, grants and policies name them.
        let roles: Vec<String> = live
            .client
            .query(
                "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_' \
                 ORDER BY 1",
                &[],
            )
            .await
            .map_err(setup("reading the live server's roles"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        create_roles(&admin, &roles).await?;
        let settings: BTreeSet<String> = admin
            .query("SELECT name::text FROM pg_catalog.pg_settings", &[])
            .await
            .map_err(setup("reading the shadow server's settings"))?
            .iter()
            .map(|r| r.get(0))
            .collect();

        // Dump and read live on one snapshot, so the reproduction is compared with exactly
        // the catalog it was dumped from, however busy live is.
        let live_err = |source| ShadowError::Server {
            shown: live.config.describe(),
            source,
        };
        let snap = crate::connect::connect(live.config).await?;
        snap.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(live_err)?;
        let snapshot: String = snap
            .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
            .await
            .map_err(live_err)?
            .get(0);
        // pg_dump is another process: it runs while this session reads the catalog, and
        // meanwhile the shadow server clones the reproduction last kept for this live
        // database, which is most likely the one this dump will find.
        let read_options = IntrospectOptions::default();
        let source = kept_source(live.config);
        let (at_dump, dump, spare) = tokio::join!(
            crate::introspect::introspect_in_transaction(&snap, &read_options),
            pg_dump(&tools, live.config, lock_wait, &snapshot),
            self.speculative_clone(&admin, &source)
        );
        let _ = snap.batch_execute("COMMIT").await;
        drop(snap);
        // From here the spare clone is the shadow's: `destroy` drops it unless it is used.
        let spare_of = match spare {
            Some((template, clone)) => {
                if let Ok(mut slot) = self.spare.lock() {
                    *slot = Some(clone);
                }
                Some(template)
            }
            None => None,
        };
        let (at_dump, dump) = (at_dump?, dump?);
        let live_hash = catalog_hash(&at_dump)?;

        // A reproduction already made of this very dump, by the same tools, that hashed like
        // this very catalog is the same database: keep it and use it again.
        // pg_dump guards its output with a random `\restrict` key: not part of the schema.
        let schema_text = without_restrict_guard(&dump).unwrap_or_else(|| dump.clone());
        let kept_name = kept_name(&[
            tools.version.as_bytes(),
            shadow_version.as_bytes(),
            live_hash.0.as_bytes(),
            schema_text.as_bytes(),
        ]);
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
                &[&kept_name],
            )
            .await
            .map_err(setup("looking for a kept reproduction"))?
            .is_some();
        let keep = self.keep;
        let spare_fits = keep && exists && spare_of.as_deref() == Some(kept_name.as_str());
        if !spare_fits {
            let unused = self.spare.lock().ok().and_then(|mut slot| slot.take());
            if let Some(clone) = unused {
                self.server.drop_database(&clone).await;
            }
        }
        if keep && exists {
            tracing::debug!(template = %kept_name, spare = spare_fits, "reusing a kept reproduction of live");
            // The next run against this live database clones it while dumping.
            let _ = admin
                .batch_execute(&format!(
                    "COMMENT ON DATABASE {} IS {}",
                    quote_ident(&kept_name),
                    quote_literal(&source)
                ))
                .await;
            self.template = kept_name;
            self.kept = true;
            self.base = at_dump;
            self.base_hash = live_hash;
            return Ok(());
        }

        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(&self.template)
            ))
            .await
            .map_err(setup("creating the shadow database"))?;
        let script = restorable(&dump, &settings);
        let restore_config = self.server.config(&self.template);
        restore(&tools, &restore_config, script)
            .await
            .map_err(|message| ShadowError::Restore {
                server: shadow_version.clone(),
                message,
            })?;

        let mut client = self.server.connect(&self.template).await?;
        let base = introspect(&mut client, &IntrospectOptions::default()).await?;
        drop(client);
        let base_hash = catalog_hash(&base)?;
        if base_hash != live_hash {
            return Err(ShadowError::NotFaithful {
                live: live_hash,
                shadow: base_hash,
                differences: exec::drift(&at_dump, &base),
            });
        }
        self.base = base;
        // pg_dump skips invalid indexes, as the manifest does; the plan still has to drop
        // live's (see `Catalog::invalid_indexes`).
        self.base.invalid_indexes = at_dump.invalid_indexes;
        self.base_hash = base_hash;
        if keep {
            self.keep_as(&admin, kept_name, &source).await;
        }
        Ok(())
    }

    /// Clones the reproduction most recently kept for `source` (a live database), if there is
    /// one: `(its name, the clone's name)`. Best effort; nothing on any failure.
    async fn speculative_clone(&self, admin: &Client, source: &str) -> Option<(String, String)> {
        if !self.keep {
            return None;
        }
        let template: String = admin
            .query_opt(
                "SELECT datname::text FROM pg_catalog.pg_database \
                 WHERE datname LIKE 'lockplane\\_kept\\_%' \
                   AND pg_catalog.shobj_description(oid, 'pg_database') = $1 \
                 ORDER BY oid DESC LIMIT 1",
                &[&source],
            )
            .await
            .ok()??
            .get(0);
        let clone = scratch_name();
        self.server.create_database(&clone, &template).await.ok()?;
        Some((template, clone))
    }

    /// Renames the proven reproduction to its kept name, and drops the oldest kept ones
    /// beyond [`KEPT_REPRODUCTIONS`]. Best effort: another process may have kept the same
    /// reproduction meanwhile (the rename fails and this one is dropped after use), and a kept
    /// one being cloned cannot be dropped (it stays until a later run).
    async fn keep_as(&mut self, admin: &Client, kept_name: String, source: &str) {
        let renamed = admin
            .batch_execute(&format!(
                "ALTER DATABASE {name} RENAME TO {kept}; COMMENT ON DATABASE {kept} IS {source}",
                name = quote_ident(&self.template),
                kept = quote_ident(&kept_name),
                source = quote_literal(source)
            ))
            .await;
        if renamed.is_err() {
            return;
        }
        self.template = kept_name;
        self.kept = true;
        let older = admin
            .query(
                "SELECT datname::text FROM pg_catalog.pg_database \
                 WHERE datname LIKE 'lockplane\\_kept\\_%' AND datname <> $1 \
                 ORDER BY oid DESC OFFSET $2",
                &[&self.template, &(KEPT_REPRODUCTIONS - 1)],
            )
            .await
            .unwrap_or_default();
        for row in older {
            let name: String = row.get(0);
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&name)))
                .await;
        }
    }

    /// The live catalog as it was when it was dumped (read on pg_dump's snapshot), which the
    /// reproduction hashes exactly like. It may be newer than the caller's [`LiveSource`]
    /// catalog when live changed in between: plans are made from this one.
    pub fn base(&self) -> &Catalog {
        &self.base
    }

    /// Which pg_dump reproduced live, onto which server.
    pub fn dump_tool(&self) -> &str {
        &self.dump_tool
    }

    /// A fresh clone of the reproduction.
    #[tracing::instrument(level = "debug", name = "shadow.clone", skip_all)]
    async fn clone_base(&self) -> Result<(String, Client), ShadowError> {
        let spare = self.spare.lock().ok().and_then(|mut slot| slot.take());
        let name = match spare {
            Some(name) => name,
            None => {
                let name = scratch_name();
                self.server.create_database(&name, &self.template).await?;
                name
            }
        };
        match self.server.connect(&name).await {
            Ok(client) => Ok((name, client)),
            Err(e) => {
                self.server.drop_database(&name).await;
                Err(e)
            }
        }
    }

    /// The catalog Postgres stores when live is taken to `desired` (with `renames`, after
    /// `leading` steps such as the helper installation): planned and run on a clone, then
    /// read back.
    pub async fn materialize(
        &self,
        desired: &Catalog,
        renames: &Renames,
        leading: &[Step],
    ) -> Result<Catalog, ShadowError> {
        let mut to_desired = plan(
            &self.base,
            desired,
            renames,
            &TableStats::all_empty(&self.base),
            "lockplane-shadow",
        )?;
        if !leading.is_empty() {
            to_desired = to_desired.with_leading_steps(leading.to_vec())?;
        }
        let forward = self.forward(&to_desired, &ShadowOptions::default()).await?;
        let reached = forward.target.clone();
        forward.discard().await;
        Ok(reached)
    }

    /// Runs `plan` on a clone as the executor will run it live, then its reverse (see the
    /// module docs).
    #[tracing::instrument(level = "debug", name = "shadow.prove", skip_all)]
    pub async fn prove(
        &self,
        forward_plan: &Plan,
        opts: &ShadowOptions,
    ) -> Result<ShadowReport, ShadowError> {
        self.forward(forward_plan, opts)
            .await?
            .prove_reverse(opts)
            .await
    }

    /// Runs `plan` (made from [`Shadow::base`]) on a fresh clone as the executor will run it
    /// live, recording the hash after each phase, and keeps the clone: the catalog it reached
    /// is what Postgres stores for the plan's target, and [`Forward::prove_reverse`] finishes
    /// the proof on the same clone. Planning live → document and running that here is the
    /// materialisation of the document and, when the final plan is the same one, its proof.
    #[tracing::instrument(level = "debug", name = "shadow.forward", skip_all)]
    pub async fn forward(
        &self,
        plan: &Plan,
        opts: &ShadowOptions,
    ) -> Result<Forward<'_>, ShadowError> {
        if plan.base_hash != self.base_hash {
            return Err(ShadowError::BaseNotLive {
                base: plan.base_hash.clone(),
                live: self.base_hash.clone(),
            });
        }
        let (name, mut client) = self.clone_base().await?;
        let phases = std::sync::Arc::new(PhaseHashes::default());
        let run_opts = ApplyOptions {
            advisory_lock: false,
            // The target is what the shadow reaches; a proven plan's phase hashes are checked.
            check_hashes: plan.steps.iter().any(|s| s.reaches.is_some()),
            resume_after: None,
            progress: Some(phases.clone()),
            ..opts.apply.clone()
        };
        let ran = exec::apply_and_read(
            &mut client,
            plan,
            &run_opts,
            Some(&plan.plan_id),
            Some(self.base_hash.clone()),
        )
        .await;
        let (report, target) = match ran {
            Ok(done) => done,
            Err(e) => {
                drop(client);
                self.server.drop_database(&name).await;
                return Err(ShadowError::Forward(Box::new(e)));
            }
        };
        let reached = phases.0.lock().map(|m| m.clone()).unwrap_or_default();
        Ok(Forward {
            shadow: self,
            name,
            client,
            plan: plan.clone(),
            target_hash: report.resulting_hash.clone(),
            target,
            reached,
            report,
        })
    }

    /// Drops the reproduction unless it is kept (or stops the throwaway cluster).
    pub async fn destroy(self) {
        let Shadow {
            server,
            template,
            kept,
            spare,
            ..
        } = self;
        if let Some(spare) = spare.into_inner().ok().flatten() {
            server.drop_database(&spare).await;
        }
        match server {
            Server::Owned(cluster) => {
                let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
            }
            _ if kept => {}
            other => other.drop_database(&template).await,
        }
    }
}

/// A plan run forward on a clone of the reproduction ([`Shadow::forward`]), the clone kept.
pub struct Forward<'s> {
    shadow: &'s Shadow<'s>,
    name: String,
    client: Client,
    plan: Plan,
    report: ApplyReport,
    reached: BTreeMap<String, CatalogHash>,
    target: Catalog,
    target_hash: CatalogHash,
}

impl Forward<'_> {
    /// The catalog the clone reached: what Postgres stores for the plan's target.
    pub fn target(&self) -> &Catalog {
        &self.target
    }

    /// Whether `other` runs exactly the statements this run ran, phase for phase: then this
    /// run is `other`'s forward proof too.
    pub fn ran(&self, other: &Plan) -> bool {
        self.plan.base_hash == other.base_hash
            && self.plan.steps.len() == other.steps.len()
            && self
                .plan
                .steps
                .iter()
                .zip(&other.steps)
                .all(|(a, b)| a.id == b.id && a.sql == b.sql && a.transactional == b.transactional)
    }

    /// Drops the clone.
    pub async fn discard(self) {
        let Forward {
            shadow,
            name,
            client,
            ..
        } = self;
        drop(client);
        shadow.server.drop_database(&name).await;
    }

    /// Finishes the proof: the reverse plan (from what the clone reached back to live) runs
    /// on the same clone and must bring it back to live's hash. The clone is dropped.
    #[tracing::instrument(level = "debug", name = "shadow.reverse", skip_all)]
    pub async fn prove_reverse(
        mut self,
        opts: &ShadowOptions,
    ) -> Result<ShadowReport, ShadowError> {
        let result = self.reverse_on_clone(opts).await;
        self.discard().await;
        result
    }

    async fn reverse_on_clone(
        &mut self,
        opts: &ShadowOptions,
    ) -> Result<ShadowReport, ShadowError> {
        let shadow = self.shadow;
        let mut report = ShadowReport {
            base_hash: shadow.base_hash.clone(),
            target_hash: self.target_hash.clone(),
            // The clone is dropped right after: its catalog moves into the report.
            target: std::mem::take(&mut self.target),
            reached: std::mem::take(&mut self.reached),
            forward: self.report.clone(),
            reverse: None,
            reverse_run: None,
            reverse_refused: Vec::new(),
            dump_tool: shadow.dump_tool.clone(),
        };
        let reversed = match reverse(
            &shadow.base,
            &report.target,
            &opts.renames,
            &opts.stats,
            "lockplane-shadow",
        ) {
            Ok(p) => p,
            Err(PlanError::Refused { refusals }) => {
                report.reverse_refused = refusals;
                return Ok(report);
            }
            Err(e) => return Err(e.into()),
        };
        let back_opts = ApplyOptions {
            advisory_lock: false,
            check_hashes: true,
            resume_after: None,
            progress: None,
            ..opts.apply.clone()
        };
        let (back, _) = exec::apply_and_read(
            &mut self.client,
            &reversed,
            &back_opts,
            Some(&reversed.plan_id),
            Some(self.target_hash.clone()),
        )
        .await
        .map_err(|e| ShadowError::Reverse(Box::new(e)))?;
        report.reverse = Some(reversed);
        report.reverse_run = Some(back);
        Ok(report)
    }
}

/// Reproduces live on `target`, proves `plan` there, and removes the shadow.
pub async fn dry_run(
    plan_to_prove: &Plan,
    live: &LiveSource<'_>,
    target: ShadowTarget<'_>,
    opts: &ShadowOptions,
) -> Result<ShadowReport, ShadowError> {
    let shadow = Shadow::reproduce_keeping(live, target, opts.apply.lock_wait, opts.keep).await?;
    let result = shadow.prove(plan_to_prove, opts).await;
    shadow.destroy().await;
    result
}

/// Creates the roles a reproduction needs (`NOLOGIN`), where missing. Roles are cluster-wide
/// and other runs may create the same one concurrently.
async fn create_roles(admin: &Client, roles: &[String]) -> Result<(), ShadowError> {
    for chunk in roles.chunks(500) {
        let names = chunk
            .iter()
            .map(|r| quote_literal(r))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "DO $lockplane$ DECLARE r text; BEGIN \
               FOREACH r IN ARRAY ARRAY[{names}]::text[] LOOP \
                 IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN \
                   BEGIN EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r); \
                   EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END; \
                 END IF; \
               END LOOP; END $lockplane$"
        );
        admin
            .batch_execute(&sql)
            .await
            .map_err(|source| ShadowError::Setup {
                what: "creating live's roles on the shadow server",
                source,
            })?;
    }
    Ok(())
}

fn tool_name(tools: &PgBinaries) -> String {
    format!(
        "pg_dump {}",
        tools.version.split_whitespace().nth(2).unwrap_or("?")
    )
}

/// `pg_dump --schema-only` of the database `config` points at.
#[tracing::instrument(level = "debug", name = "pg_dump", skip_all)]
async fn pg_dump(
    tools: &PgBinaries,
    config: &crate::connect::ConnTarget,
    lock_wait: Duration,
    snapshot: &str,
) -> Result<String, ShadowError> {
    let mut cmd = tools.client_command("pg_dump");
    for name in crate::connect::LIBPQ_VARIABLES {
        cmd.env_remove(name);
    }
    cmd.envs(crate::connect::libpq_env(config));
    cmd.arg(format!("--snapshot={snapshot}"));
    cmd.args([
        "--schema-only",
        // Not in the manifest, and not reproducible on another server: tablespaces,
        // subscriptions (they would connect to their publisher) and security labels (they need
        // their provider loaded).
        "--no-tablespaces",
        "--no-subscriptions",
        "--no-security-labels",
    ]);
    cmd.arg(format!(
        "--lock-wait-timeout={}ms",
        lock_wait.as_millis().max(1)
    ));
    let tool = tool_name(tools);
    let out = run_captured(cmd, None)
        .await
        .map_err(|message| ShadowError::Dump {
            tool: tool.clone(),
            message,
        })?;
    String::from_utf8(out).map_err(|e| ShadowError::Dump {
        tool,
        message: format!("the dump is not UTF-8: {e}"),
    })
}

/// The dump without the `SET` lines of settings the shadow server does not know (a newer
/// pg_dump writes `SET transaction_timeout = 0;`, which older servers reject).
fn restorable(dump: &str, settings: &BTreeSet<String>) -> String {
    let mut out = String::with_capacity(dump.len());
    for line in dump.lines() {
        let unknown = line
            .strip_prefix("SET ")
            .and_then(|rest| rest.split_once(" = "))
            .is_some_and(|(name, _)| !settings.contains(name));
        if !unknown {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// What a kept reproduction's comment says it reproduces: the live server and database.
fn kept_source(live: &crate::connect::ConnTarget) -> String {
    format!("lockplane: reproduction of {}", live.describe())
}

/// How many reproductions a shadow server keeps (the most recent ones).
const KEPT_REPRODUCTIONS: i64 = 3;

/// The name of the kept reproduction of `parts` (pg_dump's and the shadow server's versions,
/// live's catalog hash, the dump): `lockplane_kept_` and 96 bits of their SHA3-256.
fn kept_name(parts: &[&[u8]]) -> String {
    use sha3::{Digest, Sha3_256};
    let mut hasher = Sha3_256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    format!("lockplane_kept_{}", hex::encode(&digest[..12]))
}

/// Restores a plain dump, all or nothing: sent as one multi-statement query (Postgres runs it
/// as one implicit transaction, without a round trip per statement: about 40 % faster than
/// psql at 2,000 tables) unless it holds psql meta-commands other than pg_dump's
/// `\restrict`/`\unrestrict` guard, which psql then runs.
#[tracing::instrument(level = "debug", name = "restore", skip_all)]
async fn restore(
    tools: &PgBinaries,
    config: &crate::connect::ConnTarget,
    script: String,
) -> Result<(), String> {
    let Some(batch) = without_restrict_guard(&script) else {
        return psql_restore(tools, config, script).await;
    };
    let client = crate::connect::connect(config)
        .await
        .map_err(|e| e.to_string())?;
    client.batch_execute(&batch).await.map_err(|e| {
        let failure = exec::PgFailure::from_error(&e);
        failure.describe(&batch)
    })
}

/// The dump without pg_dump's `\restrict KEY` / `\unrestrict KEY` lines, when those are its
/// only psql meta-commands (a line starting with a backslash elsewhere could be inside a
/// function body, so any other one sends the dump to psql).
fn without_restrict_guard(script: &str) -> Option<String> {
    let mut out = String::with_capacity(script.len());
    for line in script.lines() {
        if line.starts_with("\\restrict ") || line.starts_with("\\unrestrict ") {
            continue;
        }
        if line.starts_with('\\') {
            return None;
        }
        out.push_str(line);
        out.push('\n');
    }
    Some(out)
}

/// Restores a plain dump with psql, all or nothing.
async fn psql_restore(
    tools: &PgBinaries,
    config: &crate::connect::ConnTarget,
    script: String,
) -> Result<(), String> {
    let mut cmd = tools.client_command("psql");
    for name in crate::connect::LIBPQ_VARIABLES {
        cmd.env_remove(name);
    }
    cmd.envs(crate::connect::libpq_env(config));
    cmd.args([
        "--no-psqlrc",
        "--quiet",
        "--single-transaction",
        "--set",
        "ON_ERROR_STOP=1",
        "--file",
        "-",
    ]);
    run_captured(cmd, Some(script)).await.map(|_| ())
}

/// Runs a client program off the async runtime; its standard output on success, what it
/// printed on failure.
async fn run_captured(
    mut cmd: std::process::Command,
    stdin: Option<String>,
) -> Result<Vec<u8>, String> {
    use std::io::Write;
    use std::process::Stdio;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let joined = tokio::task::spawn_blocking(move || {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        // Feed stdin from its own thread: psql's output could otherwise fill its pipe while
        // we are still writing.
        let feeder = match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => Some(std::thread::spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            })),
            _ => None,
        };
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{program}: {e}"))?;
        if let Some(f) = feeder {
            let _ = f.join();
        }
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "{program} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .await;
    joined.map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restrict_guard_goes_and_other_meta_commands_send_the_dump_to_psql() {
        let dump = "--\n\\restrict abc\nCREATE TABLE t ();\n\\unrestrict abc\n";
        assert_eq!(
            without_restrict_guard(dump).as_deref(),
            Some("--\nCREATE TABLE t ();\n")
        );
        // Two dumps of one schema differ only in the guard's random key: same kept name.
        let again = dump.replace("abc", "xyz");
        let key = |d: &str| kept_name(&[without_restrict_guard(d).unwrap_or_default().as_bytes()]);
        assert_eq!(key(dump), key(&again));
        assert_ne!(key(dump), key("CREATE TABLE u ();\n"));
        assert_eq!(without_restrict_guard("\\connect other\nSELECT 1;\n"), None);
    }
}
