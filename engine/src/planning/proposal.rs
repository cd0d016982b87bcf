//! A desired document against a live database → a plan proven on a faithful shadow: the one
//! path every surface (CLI, runtime, MCP) takes from a document to a plan.
//!
//! 1. Live is reproduced on a shadow ([`Shadow::reproduce`], pg_dump), and read on the
//!    snapshot it was dumped from: that catalog is the plan's base. The document is scoped to
//!    it ([`crate::dsl::scope_to_live`]).
//! 2. What the plan needs and cannot create is refused now, never at apply: every role a grant
//!    or policy names must exist on the live server ([`ProposeError::MissingRoles`] names them
//!    all, with the statements that create them).
//! 3. What the plan needs and can create is a step of the plan: Lockplane's helper functions
//!    when a policy (or default, check, view) calls `tenant_id()`/`user_id()` and live lacks
//!    them.
//! 4. The document is materialised on a clone of the shadow, and the plan is made from live
//!    to what Postgres stored. A document read at a base that is no longer live
//!    ([`propose_with_base`]) aims instead at the three-way merge of that base, what Postgres
//!    stored and live ([`crate::merge::rebase_document`]): what the document did not change
//!    keeps what others changed since; both changing an object differently is
//!    [`ProposeError::Conflict`].
//! 5. Unless proving is switched off, the plan runs on a clone of the shadow, forward and
//!    back; its target becomes the hash the shadow reached and each phase carries the hash
//!    the executor must find before committing it ([`Plan::with_proof`]).

use tokio_postgres::Client;

use crate::catalog::Catalog;
use crate::diff::Renames;
use crate::exec::ApplyOptions;
use crate::hash::{catalog_hash, CanonicalError, CatalogHash};
use crate::ident::quote_ident;
use crate::merge::Conflict;
use crate::plan::{plan, LockLevel, Plan, PlanError, Step, TableStats};
use crate::shadow::{
    Forward, LiveSource, Shadow, ShadowError, ShadowOptions, ShadowReport, ShadowTarget,
};

/// How [`propose`] runs.
#[derive(Debug, Clone)]
pub struct ProposeOptions {
    /// Who asks for the plan.
    pub created_by: String,
    /// Prove the plan (forward and reverse) on the shadow; off, the plan's target is the
    /// materialised document's hash and its phases carry no proven hashes.
    pub prove: bool,
    /// Timeouts of the statements run on the shadow; `lock_wait` also bounds how long pg_dump
    /// waits for a table lock on live.
    pub apply: ApplyOptions,
    /// Hold every expression the plan carries to the SQL guard's allow-list
    /// ([`crate::guard::check_plan`]) before it is proven: set for plans agents propose,
    /// where the guard is the boundary. The CLI, run by an operator with their own
    /// credentials, leaves it off.
    pub guard: bool,
    /// Keep live's reproduction on the shadow server for the next plan
    /// ([`Shadow::reproduce_keeping`]): for a shadow server that is Lockplane's alone.
    pub keep_reproduction: bool,
}

impl Default for ProposeOptions {
    fn default() -> Self {
        ProposeOptions {
            created_by: "lockplane".into(),
            prove: true,
            apply: ApplyOptions::default(),
            guard: false,
            keep_reproduction: false,
        }
    }
}

/// A plan and what it was made from.
#[derive(Debug, Clone)]
pub struct Proposed {
    /// The plan (proven unless proving was off).
    pub plan: Plan,
    /// The live catalog the plan starts from, read on the snapshot live was dumped from.
    pub base: Catalog,
    /// The catalog the plan reaches (what the shadow reached, or the materialised document).
    pub target: Catalog,
    /// The proof, when the plan was proven and has steps.
    pub report: Option<ShadowReport>,
    /// Which pg_dump reproduced live, onto which server.
    pub dump_tool: String,
}

/// Why no plan was made.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Roles the document names do not exist on the live server.
    #[error(
        "the document names role{} that the live server does not have: {}; Lockplane does not \
         create roles (they are cluster-wide, with passwords and memberships a schema document \
         should not hold): create them first, e.g. {}",
        if roles.len() == 1 { "" } else { "s" },
        roles.join(", "),
        roles.iter().map(|r| format!("CREATE ROLE {} NOLOGIN;", quote_ident(r))).collect::<Vec<_>>().join(" ")
    )]
    MissingRoles {
        /// The missing roles, sorted.
        roles: Vec<String>,
    },
    /// The planner refused, or hashing failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The shadow could not be made, or the plan failed on it.
    #[error(transparent)]
    Shadow(#[from] ShadowError),
    /// An expression of the plan is refused by the SQL guard (only with
    /// [`ProposeOptions::guard`]).
    #[error(transparent)]
    Guarded(#[from] crate::guard::GuardedStep),
    /// The document uses what the live server's version lacks.
    #[error(
        "the live server runs Postgres {major}, which lacks what the document uses: {}; \
         change the document or upgrade the server",
        features.join("; ")
    )]
    Unsupported {
        /// The server's major version.
        major: u32,
        /// Each use, with the version it needs.
        features: Vec<String>,
    },
    /// The document was read at `base`, live has moved on since, and both changed the same
    /// objects differently (ours = the document, theirs = live).
    #[error(
        "{}",
        crate::merge::ConflictSides::Document { base: base.clone(), live: live.clone() }
            .message(conflicts)
    )]
    Conflict {
        /// The document's base.
        base: CatalogHash,
        /// The live catalog's hash.
        live: CatalogHash,
        /// Each object changed both ways, with the base's, the document's and live's version.
        conflicts: Vec<Conflict>,
    },
    /// Reading the live server (roles, helpers) failed.
    #[error(
        "reading {what} from the live database failed: {}",
        crate::connect::describe_error(.source)
    )]
    Live {
        /// What was read.
        what: &'static str,
        /// The error.
        source: tokio_postgres::Error,
    },
}

impl From<CanonicalError> for ProposeError {
    fn from(e: CanonicalError) -> Self {
        ProposeError::Plan(PlanError::Canonical(e))
    }
}

/// Plans `document` (a DSL document's catalog) against `live` (see the module docs): live is
/// made to match the document.
pub async fn propose(
    live: &LiveSource<'_>,
    document: &Catalog,
    renames: &Renames,
    stats: &TableStats,
    target: ShadowTarget<'_>,
    opts: &ProposeOptions,
) -> Result<Proposed, ProposeError> {
    propose_with_base(live, document, None, renames, stats, target, opts).await
}

/// [`propose`] for a document read at `read_at` (the catalog its `base:` names, which the
/// caller looked up): when live is no longer that catalog, the plan aims at
/// `rebase_document(read_at, materialised document, live)`, so the changes made live since
/// the document was read are kept rather than reverted, and an object both changed
/// differently is [`ProposeError::Conflict`]. When live is still `read_at`, or without one,
/// this is [`propose`].
#[tracing::instrument(level = "debug", name = "propose", skip_all)]
pub async fn propose_with_base(
    live: &LiveSource<'_>,
    document: &Catalog,
    read_at: Option<&Catalog>,
    renames: &Renames,
    stats: &TableStats,
    target: ShadowTarget<'_>,
    opts: &ProposeOptions,
) -> Result<Proposed, ProposeError> {
    let shadow =
        Shadow::reproduce_keeping(live, target, opts.apply.lock_wait, opts.keep_reproduction)
            .await?;
    let result = async {
        // Live as dumped: if it moved since the caller read it, the plan starts from now.
        let base = shadow.base();
        let wanted = crate::dsl::scope_to_live(document, base);
        let leading = prerequisites(live.client, &wanted).await?;
        let shadow_opts = ShadowOptions {
            renames: renames.clone(),
            stats: stats.clone(),
            apply: opts.apply.clone(),
            keep: opts.keep_reproduction,
        };
        // The materialisation: the plan to the document as written, run on a clone with
        // live's table sizes, so that when the plan to what Postgres stored is the same one
        // (the usual case) this run is already its forward proof.
        let to_document = with_leading(
            plan(base, &wanted, renames, stats, &opts.created_by)?,
            &leading,
        )?;
        let forward = shadow.forward(&to_document, &shadow_opts).await?;
        let desired = forward.target().clone();
        // What the merge takes from live needs nothing live lacks: the prerequisites of
        // the document's part were checked above.
        let desired = match read_at {
            Some(read_at) => match rebased(read_at, desired, base) {
                Ok(desired) => desired,
                Err(e) => {
                    forward.discard().await;
                    return Err(e);
                }
            },
            None => desired,
        };
        plan_on(
            &shadow,
            forward,
            base,
            desired,
            &shadow_opts,
            &leading,
            opts,
        )
        .await
    }
    .await;
    let dump_tool = shadow.dump_tool().to_owned();
    let base = shadow.base().clone();
    shadow.destroy().await;
    let (plan, target, report) = result?;
    Ok(Proposed {
        plan,
        base,
        target,
        report,
        dump_tool,
    })
}

/// What a document materialised as `desired`, read at `read_at`, asks of `live`: `desired`
/// itself when live is still `read_at`, else the three-way merge.
fn rebased(read_at: &Catalog, desired: Catalog, live: &Catalog) -> Result<Catalog, ProposeError> {
    let (base_hash, live_hash) = (catalog_hash(read_at)?, catalog_hash(live)?);
    if base_hash == live_hash {
        return Ok(desired);
    }
    crate::merge::rebase_document(read_at, &desired, live).map_err(|e| ProposeError::Conflict {
        base: base_hash,
        live: live_hash,
        conflicts: e.conflicts,
    })
}

/// `made`, with `leading` steps first when there are any.
fn with_leading(made: Plan, leading: &[Step]) -> Result<Plan, PlanError> {
    if leading.is_empty() {
        Ok(made)
    } else {
        made.with_leading_steps(leading.to_vec())
    }
}

/// Plans `live` → `desired` (a materialised catalog), and proves the plan unless told not to:
/// on the materialisation's clone (`materialised`) when the plan runs exactly what it ran,
/// else on a fresh clone.
async fn plan_on(
    shadow: &Shadow<'_>,
    materialised: Forward<'_>,
    live: &Catalog,
    desired: Catalog,
    shadow_opts: &ShadowOptions,
    leading: &[Step],
    opts: &ProposeOptions,
) -> Result<(Plan, Catalog, Option<ShadowReport>), ProposeError> {
    let made = (|| -> Result<Plan, ProposeError> {
        let made = plan(
            live,
            &desired,
            &shadow_opts.renames,
            &shadow_opts.stats,
            &opts.created_by,
        )?;
        if opts.guard {
            crate::guard::check_plan(&made)?;
        }
        Ok(with_leading(made, leading)?)
    })();
    let made = match made {
        Ok(made) => made,
        Err(e) => {
            materialised.discard().await;
            return Err(e);
        }
    };
    if !opts.prove || made.steps.is_empty() {
        materialised.discard().await;
        return Ok((made, desired, None));
    }
    let report = if materialised.ran(&made) {
        materialised.prove_reverse(shadow_opts).await?
    } else {
        materialised.discard().await;
        shadow.prove(&made, shadow_opts).await?
    };
    let proven = made.with_proof(&report.reached, report.target_hash.clone())?;
    Ok((proven, report.target.clone(), Some(report)))
}

/// Proves an already made `plan` (a merge, a rebase) on a fresh reproduction of `live`, and
/// returns it with the proof's hashes ([`Plan::with_proof`]).
pub async fn prove_plan(
    live: &LiveSource<'_>,
    made: Plan,
    target: ShadowTarget<'_>,
    opts: &ShadowOptions,
) -> Result<(Plan, ShadowReport), ProposeError> {
    let report = crate::shadow::dry_run(&made, live, target, opts).await?;
    let proven = made.with_proof(&report.reached, report.target_hash.clone())?;
    Ok((proven, report))
}

/// What a plan to `target` needs before anything else, checked against the live server
/// `client` is connected to: missing roles are refused ([`ProposeError::MissingRoles`]); the
/// helper installation steps are returned when `target` calls a helper live lacks.
pub async fn prerequisites(client: &Client, target: &Catalog) -> Result<Vec<Step>, ProposeError> {
    let version: i32 = client
        .query_one(
            "SELECT pg_catalog.current_setting('server_version_num')::int",
            &[],
        )
        .await
        .map_err(|source| ProposeError::Live {
            what: "the server version",
            source,
        })?
        .get(0);
    let major = u32::try_from(version / 10_000).unwrap_or(0);
    let lacking: Vec<String> = features_needed(target)
        .into_iter()
        .filter(|(_, _, since)| major < *since)
        .map(|(path, feature, since)| format!("{path}: {feature} needs Postgres {since}"))
        .collect();
    if !lacking.is_empty() {
        return Err(ProposeError::Unsupported {
            major,
            features: lacking,
        });
    }
    let missing = missing_roles(client, target).await?;
    if !missing.is_empty() {
        return Err(ProposeError::MissingRoles { roles: missing });
    }
    if crate::dsl::helpers::used_by(target) && !has_helpers(client).await? {
        Ok(helper_steps())
    } else {
        Ok(Vec::new())
    }
}

/// What `catalog` uses that not every supported server has: `(object path, feature, first
/// major version with it)`.
pub fn features_needed(catalog: &Catalog) -> Vec<(String, &'static str, u32)> {
    use crate::catalog::ConstraintDef;
    let mut out = Vec::new();
    for (schema_name, schema) in &catalog.schemas {
        for (table_name, table) in &schema.tables {
            for (name, constraint) in &table.constraints {
                if let ConstraintDef::Unique {
                    nulls_not_distinct: true,
                    ..
                } = &constraint.definition
                {
                    out.push((
                        format!("{schema_name}.{table_name}.constraints.{name}"),
                        "UNIQUE NULLS NOT DISTINCT",
                        15,
                    ));
                }
            }
            for (name, index) in &table.indexes {
                if index.nulls_not_distinct {
                    out.push((
                        format!("{schema_name}.{table_name}.indexes.{name}"),
                        "an index with NULLS NOT DISTINCT",
                        15,
                    ));
                }
            }
        }
        for (name, view) in &schema.views {
            if view
                .options
                .iter()
                .any(|o| o.starts_with("security_invoker"))
            {
                out.push((
                    format!("{schema_name}.views.{name}"),
                    "the view option security_invoker",
                    15,
                ));
            }
        }
    }
    out
}

/// The roles `catalog` grants to or names in a policy that the live server lacks.
async fn missing_roles(client: &Client, catalog: &Catalog) -> Result<Vec<String>, ProposeError> {
    let named = crate::shadow::roles_of(catalog);
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT r FROM pg_catalog.unnest($1::text[]) AS r \
             WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) ORDER BY r",
            &[&named],
        )
        .await
        .map_err(|source| ProposeError::Live {
            what: "the roles",
            source,
        })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether live has Lockplane's helper functions.
async fn has_helpers(client: &Client) -> Result<bool, ProposeError> {
    let names: Vec<String> = crate::dsl::helpers::HELPER_FUNCTIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let row = client
        .query_one(
            "SELECT count(DISTINCT p.proname)::int FROM pg_catalog.pg_proc p \
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname = ANY($2) AND p.pronargs = 0",
            &[&crate::dsl::helpers::HELPER_SCHEMA, &names],
        )
        .await
        .map_err(|source| ProposeError::Live {
            what: "Lockplane's helper functions",
            source,
        })?;
    let found: i32 = row.get(0);
    Ok(usize::try_from(found).unwrap_or(0) == names.len())
}

/// The helper installation as plan steps, one statement each.
fn helper_steps() -> Vec<Step> {
    crate::dsl::helpers::install_statements()
        .into_iter()
        .map(|sql| Step {
            id: String::new(),
            summary: format!(
                "install Lockplane's context helpers ({}.tenant_id(), {}.user_id())",
                crate::dsl::helpers::HELPER_SCHEMA,
                crate::dsl::helpers::HELPER_SCHEMA
            ),
            sql,
            transactional: true,
            lock: LockLevel::None,
            hazards: Vec::new(),
            reaches: None,
        })
        .collect()
}
