//! Shadow dry runs (DESIGN §4): prove a plan, and its reverse, on a scratch database that
//! carries the live catalog, before the real apply touches anything.
//!
//! [`dry_run`] creates a fresh database on a [`ShadowTarget`] (a throwaway cluster by
//! default), reproduces the live catalog there by planning from the fresh database to the
//! live catalog and applying that plan with [`exec::apply`], checks the result hashes to the
//! plan's `base_hash`, applies the plan (it must reach `target_hash`), then applies the
//! reverse plan ([`crate::plan::reverse`]) and requires `base_hash` again. The scratch
//! database is dropped (or the throwaway cluster stopped) at the end, whatever happened.
//!
//! [`materialize`] uses the same machinery to turn a desired catalog written in the DSL into
//! the catalog Postgres actually stores for it (the casts, defaults and spellings Postgres
//! adds), which is what the planner must diff against.
//!
//! # What a shadow cannot reproduce
//!
//! Objects in [`Catalog::unsupported`] (functions, triggers, domains, …) are not described
//! by the catalog, so they cannot be re-created. A dry run refuses a live catalog holding
//! any ([`ShadowError::Unsupported`]) unless [`ShadowOptions::allow_unsupported`] is set; the
//! run then goes ahead without them, skips the hash checks (the hashes include them, so they
//! cannot match) and lists them in [`ShadowReport::gaps`]: the proof is weaker, and says so.
//!
//! Roles are cluster-wide and not part of the catalog: every role a grant or policy names is
//! created (`NOLOGIN`) on the shadow's cluster when missing. On a shadow given by URL this is
//! a visible side effect on that cluster; on a throwaway cluster it is not.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::Client;

use crate::catalog::{Catalog, UnsupportedObject};
use crate::cluster::{Cluster, ClusterError};
use crate::diff::Renames;
use crate::exec::{self, ApplyError, ApplyOptions, ApplyReport, PgFailure};
use crate::hash::{catalog_hash, CanonicalError, CatalogHash};
use crate::ident::{quote_ident, quote_literal};
use crate::introspect::{introspect, IntrospectError, IntrospectOptions};
use crate::plan::{plan, reverse, Plan, PlanError, Refusal, TableStats};

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

/// How [`dry_run`] runs.
#[derive(Debug, Clone)]
pub struct ShadowOptions {
    /// Go ahead when the live catalog holds objects the shadow cannot reproduce (see the
    /// module docs); they are listed in [`ShadowReport::gaps`].
    pub allow_unsupported: bool,
    /// The renames the plan was made with (the reverse plan needs them to rename back).
    pub renames: Renames,
    /// The live table sizes the plan was made with, to grade the reverse plan's hazards as
    /// they would be on the real database (unknown tables count as populated).
    pub stats: TableStats,
    /// Timeouts and retries for the statements run on the shadow (the advisory lock and the
    /// resume point are not used there).
    pub apply: ApplyOptions,
}

impl Default for ShadowOptions {
    fn default() -> Self {
        ShadowOptions {
            allow_unsupported: false,
            renames: Renames::none(),
            stats: TableStats::default(),
            apply: ApplyOptions::default(),
        }
    }
}

/// What a successful dry run proved.
#[derive(Debug, Clone)]
pub struct ShadowReport {
    /// The hash the shadow held before the plan (the plan's base, unless there are gaps).
    pub base_hash: CatalogHash,
    /// The hash the shadow reached after the plan (the plan's target, unless there are gaps).
    pub target_hash: CatalogHash,
    /// What running the plan did on the shadow.
    pub forward: ApplyReport,
    /// The reverse plan, proven to bring the shadow back to `base_hash`; `None` when the
    /// planner refuses to reverse (see `reverse_refused`).
    pub reverse: Option<Plan>,
    /// What running the reverse plan did on the shadow.
    pub reverse_run: Option<ApplyReport>,
    /// Why the plan has no reverse (for example, enum labels that cannot be removed).
    pub reverse_refused: Vec<Refusal>,
    /// Live objects the shadow could not reproduce; non-empty only with
    /// [`ShadowOptions::allow_unsupported`], and then the hashes were not checked.
    pub gaps: Vec<UnsupportedObject>,
}

/// Why a dry run (or [`materialize`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// The shadow cluster or database could not be set up.
    #[error("cannot set up the shadow database: {0}")]
    Cluster(#[from] ClusterError),
    /// The shadow server given by URL could not be reached or used.
    #[error("cannot use the shadow server {shown}: {source}")]
    Server {
        /// The server (without password).
        shown: String,
        /// Why.
        source: tokio_postgres::Error,
    },
    /// The shadow URL could not be read.
    #[error(transparent)]
    Url(#[from] crate::connect::ConnectError),
    /// The live catalog holds objects a shadow cannot reproduce.
    #[error(
        "the live database has objects Lockplane cannot reproduce on a shadow: {}; the dry run \
         would not be a faithful proof (allow it explicitly to run without them)",
        objects.iter().map(|u| format!("{} {}.{}", u.kind, u.schema, u.name)).collect::<Vec<_>>().join(", ")
    )]
    Unsupported {
        /// The objects.
        objects: Vec<UnsupportedObject>,
    },
    /// Re-creating the live catalog on the shadow failed.
    #[error("re-creating the live schema on the shadow failed: {0}")]
    Reproduce(#[source] ApplyError),
    /// The shadow, once built, does not hash to the plan's base.
    #[error(
        "the shadow built from the live catalog hashes to {shadow}, not the plan's base {base}{}; \
         the plan was made from another catalog than the one given: introspect and plan again",
        if drifted.is_empty() { String::new() } else { format!(" (differs in: {})", drifted.join(", ")) }
    )]
    BaseNotReproduced {
        /// The plan's base.
        base: CatalogHash,
        /// The shadow's hash.
        shadow: CatalogHash,
        /// What differs between the given live catalog and the shadow.
        drifted: Vec<String>,
    },
    /// The plan failed on the shadow: the real apply would fail the same way.
    #[error("the plan fails on the shadow database: {0}")]
    Forward(#[source] ApplyError),
    /// The reverse plan failed on the shadow: the plan cannot be rolled back as planned.
    #[error("the reverse plan fails on the shadow database (the plan could not be undone): {0}")]
    Reverse(#[source] ApplyError),
    /// Planning (the reproduction or the reverse) failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Reading the shadow's catalog failed.
    #[error(transparent)]
    Introspect(#[from] IntrospectError),
    /// Hashing failed.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// A shadow setup statement failed.
    #[error("preparing the shadow database failed ({what}): {source}")]
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
                match e {
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
    server: Option<tokio_postgres::Config>,
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
                let shown = crate::connect::describe(&config);
                let server_err = |source| ShadowError::Server {
                    shown: shown.clone(),
                    source,
                };
                let admin = crate::connect::connect(&config).await.map_err(server_err)?;
                admin
                    .batch_execute(&format!(
                        "CREATE DATABASE {} TEMPLATE template0",
                        quote_ident(&name)
                    ))
                    .await
                    .map_err(server_err)?;
                let mut db = config.clone();
                db.dbname(&name);
                let client = crate::connect::connect(&db).await.map_err(server_err)?;
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
fn roles_of(catalog: &Catalog) -> Vec<String> {
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
        .map_err(ShadowError::Reproduce)?;
    Ok(introspect(client, &IntrospectOptions::default()).await?)
}

/// Proves `plan` on a shadow database holding `live` (the catalog the plan was made from):
/// forward to its target, then its reverse back to its base (see the module docs).
///
/// The shadow run does not need the plan's confirmation: nothing real is touched.
pub async fn dry_run(
    plan_to_prove: &Plan,
    live: &Catalog,
    target: ShadowTarget<'_>,
    opts: &ShadowOptions,
) -> Result<ShadowReport, ShadowError> {
    let gaps = live.unsupported.clone();
    if !gaps.is_empty() && !opts.allow_unsupported {
        return Err(ShadowError::Unsupported { objects: gaps });
    }
    let mut scratch = Scratch::create(target).await?;
    let result = prove(&mut scratch.client, plan_to_prove, live, gaps, opts).await;
    scratch.destroy().await;
    result
}

async fn prove(
    client: &mut Client,
    forward_plan: &Plan,
    live: &Catalog,
    gaps: Vec<UnsupportedObject>,
    opts: &ShadowOptions,
) -> Result<ShadowReport, ShadowError> {
    let exact = gaps.is_empty();
    let base = build(client, live, &opts.apply).await?;
    let base_hash = catalog_hash(&base)?;
    if exact && base_hash != forward_plan.base_hash {
        return Err(ShadowError::BaseNotReproduced {
            base: forward_plan.base_hash.clone(),
            shadow: base_hash,
            drifted: exec::drift(live, &base),
        });
    }
    let run_opts = ApplyOptions {
        advisory_lock: false,
        check_hashes: exact,
        resume_after: None,
        progress: None,
        ..opts.apply.clone()
    };
    let forward = exec::apply(client, forward_plan, &run_opts, Some(&forward_plan.plan_id))
        .await
        .map_err(ShadowError::Forward)?;
    let target = introspect(client, &IntrospectOptions::default()).await?;
    let target_hash = catalog_hash(&target)?;

    // The reverse is planned from what the shadow now holds, which is the plan's target
    // (checked above); with gaps both sides lack the same unsupported objects.
    let reversed = match reverse(
        &base,
        &target,
        &opts.renames,
        &opts.stats,
        "lockplane-shadow",
    ) {
        Ok(p) => p,
        Err(PlanError::Refused { refusals }) => {
            return Ok(ShadowReport {
                base_hash,
                target_hash,
                forward,
                reverse: None,
                reverse_run: None,
                reverse_refused: refusals,
                gaps,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let back = exec::apply(client, &reversed, &run_opts, Some(&reversed.plan_id))
        .await
        .map_err(ShadowError::Reverse)?;
    Ok(ShadowReport {
        base_hash,
        target_hash,
        forward,
        reverse: Some(reversed),
        reverse_run: Some(back),
        reverse_refused: Vec::new(),
        gaps,
    })
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
